/* Unit test of generated ids: UUIDv7 text (version, variant, the time in
 * its first 48 bits) and traceparents, from several threads at once, each
 * taking its random bits from its own block; no id may repeat. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "services/agent_manager/internal.h"
#include "services/common/test_util.h"

#define THREADS 4
#define PER_THREAD 5000 /* enough ids to refill each thread's block often */



typedef struct {
    char uuid[PER_THREAD][AM_UUID_LEN + 1];
    char tp[PER_THREAD][56];
} batch;

static batch batches[THREADS];

static unsigned long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (unsigned long long)ts.tv_sec * 1000 + (unsigned long long)ts.tv_nsec / 1000000;
}

static bool is_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strchr("0123456789abcdef", s[i]) || s[i] == '\0')
            return false;
    return true;
}

static void *make(void *arg)
{
    batch *b = arg;
    for (int i = 0; i < PER_THREAD; i++) {
        CHECK(am_uuid_new(b->uuid[i]) == 0);
        CHECK(am_traceparent_new(b->tp[i]) == 0);
    }
    return NULL;
}

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(void)
{
    pthread_t t[THREADS];
    unsigned long long t0 = now_ms();
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&t[i], NULL, make, &batches[i]) == 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    unsigned long long t1 = now_ms();

    size_t n = (size_t)THREADS * PER_THREAD;
    char **u = calloc(n, sizeof *u), **tr = calloc(2 * n, sizeof *tr);
    CHECK(u && tr);
    if (!u || !tr)
        return 1;
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < PER_THREAD; j++) {
            const char *id = batches[i].uuid[j], *tp = batches[i].tp[j];
            /* 8-4-4-4-12, version 7, variant 10xx */
            CHECK(strlen(id) == 36 && id[8] == '-' && id[13] == '-' &&
                  id[18] == '-' && id[23] == '-');
            CHECK(id[14] == '7');
            CHECK(strchr("89ab", id[19]) != NULL);
            char ms_hex[13];
            memcpy(ms_hex, id, 8);
            memcpy(ms_hex + 8, id + 9, 4);
            ms_hex[12] = '\0';
            unsigned long long ms = strtoull(ms_hex, NULL, 16);
            CHECK(ms >= t0 && ms <= t1);
            /* 00-<32 hex>-<16 hex>-01 */
            CHECK(strlen(tp) == 55 && !strncmp(tp, "00-", 3) && tp[35] == '-' &&
                  !strcmp(tp + 52, "-01"));
            CHECK(is_hex(tp + 3, 32) && is_hex(tp + 36, 16));
            u[i * PER_THREAD + j] = batches[i].uuid[j];
            tr[2 * (i * PER_THREAD + j)] = batches[i].tp[j] + 3;      /* trace id .. */
            tr[2 * (i * PER_THREAD + j) + 1] = batches[i].tp[j] + 36; /* span id .. */
        }
    /* The random tails: no UUID repeats, and no trace or span id text
     * (compared up to its end) equals another. */
    qsort(u, n, sizeof *u, cmp);
    for (size_t i = 1; i < n; i++)
        CHECK(strcmp(u[i - 1], u[i]) != 0);
    qsort(tr, 2 * n, sizeof *tr, cmp);
    for (size_t i = 1; i < 2 * n; i++)
        CHECK(strcmp(tr[i - 1], tr[i]) != 0);
    free(u);
    free(tr);
    if (test_failures) {
        fprintf(stderr, "%d failures\n", test_failures);
        return 1;
    }
    printf("ids_test: %zu UUIDs and traceparents from %d threads, all distinct\n", n, THREADS);
    return 0;
}
