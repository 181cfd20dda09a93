/* A bump allocator for what catch-up reads: a page's events (structs,
 * strings, decoded payloads, packed forms) and the unpacked reply they came
 * from live exactly as long as the page, so they are carved out of a few
 * large chunks and released together, instead of a dozen mallocs per event
 * on the reader thread and as many frees on another. */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "services/query/query.h"

typedef struct chunk {
    struct chunk *next;
    size_t used, cap;
    max_align_t data[];
} chunk;

struct qs_arena {
    chunk *head;
    chunk *tail;
};

#define CHUNK ((size_t)256 << 10)
/* Freed chunks of the usual size are kept for the next pages (the reader
 * allocates what the applying thread frees): fresh memory would cost a
 * page fault and a zeroed page every 4 KiB. At most 32 MiB kept. */
#define CACHE_MAX 128

static pthread_mutex_t cache_mu = PTHREAD_MUTEX_INITIALIZER;
static chunk *cache;
static unsigned cached;

static chunk *cache_take(void)
{
    pthread_mutex_lock(&cache_mu);
    chunk *c = cache;
    if (c) {
        cache = c->next;
        cached--;
    }
    pthread_mutex_unlock(&cache_mu);
    return c;
}

/* Keeps c when there is room; false if the caller must free it. */
static bool cache_put(chunk *c)
{
    bool kept = false;
    pthread_mutex_lock(&cache_mu);
    if (cached < CACHE_MAX) {
        c->next = cache;
        cache = c;
        cached++;
        kept = true;
    }
    pthread_mutex_unlock(&cache_mu);
    return kept;
}

void qs_arena_cache_clear(void)
{
    pthread_mutex_lock(&cache_mu);
    chunk *c = cache;
    cache = NULL;
    cached = 0;
    pthread_mutex_unlock(&cache_mu);
    for (chunk *next; c; c = next) {
        next = c->next;
        free(c);
    }
}

qs_arena *qs_arena_new(void)
{
    return calloc(1, sizeof(qs_arena));
}

void *qs_arena_alloc(qs_arena *a, size_t size)
{
    size_t need = (size + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
    chunk *c = a->head;
    if (need < size)
        return NULL;
    if (!need)
        need = sizeof(max_align_t);
    if (!c || c->cap - c->used < need) {
        size_t cap = need > CHUNK ? need : CHUNK;
        if (cap > SIZE_MAX - sizeof *c)
            return NULL;
        if (!(c = cap == CHUNK ? cache_take() : NULL) &&
            !(c = malloc(sizeof *c + cap)))
            return NULL;
        c->used = 0;
        c->cap = cap;
        c->next = a->head;
        a->head = c;
        if (!a->tail)
            a->tail = c;
    }
    void *p = (uint8_t *)c->data + c->used;
    c->used += need;
    return p;
}

void qs_arena_join(qs_arena *a, qs_arena *b)
{
    if (!b)
        return;
    if (b->head) {
        /* b's chunks go behind a's: a keeps allocating from its head. */
        if (a->tail)
            a->tail->next = b->head;
        else
            a->head = b->head;
        a->tail = b->tail;
    }
    free(b);
}

void qs_arena_free(qs_arena *a)
{
    if (!a)
        return;
    for (chunk *c = a->head, *next; c; c = next) {
        next = c->next;
        if (c->cap != CHUNK || !cache_put(c))
            free(c);
    }
    free(a);
}

static void *pb_alloc(void *arg, size_t size)
{
    return qs_arena_alloc(arg, size);
}

static void pb_free(void *arg, void *p)
{
    (void)arg;
    (void)p;
}

ProtobufCAllocator qs_arena_allocator(qs_arena *a)
{
    ProtobufCAllocator al = {pb_alloc, pb_free, a};
    return al;
}
