/* Open-addressing hash map (FNV-1a, linear probing, backward-shift delete)
 * from borrowed string keys to values; see map.h. */
#include "services/agent_manager/map.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct slot {
    const char *key;
    void *val;
    uint64_t hash;
} slot;

struct am_map {
    slot *slots;
    size_t cap; /* power of two */
    size_t n;
};

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return h;
}

int am_map_create(am_map **out)
{
    am_map *m = calloc(1, sizeof *m);
    if (!m)
        return -1;
    m->cap = 64;
    if (!(m->slots = calloc(m->cap, sizeof *m->slots))) {
        free(m);
        return -1;
    }
    *out = m;
    return 0;
}

void am_map_destroy(am_map *m)
{
    if (!m)
        return;
    free(m->slots);
    free(m);
}

static size_t find(const am_map *m, const char *key, uint64_t h)
{
    size_t i = h & (m->cap - 1);
    while (m->slots[i].key) {
        if (m->slots[i].hash == h && strcmp(m->slots[i].key, key) == 0)
            return i;
        i = (i + 1) & (m->cap - 1);
    }
    return i;
}

void *am_map_get(const am_map *m, const char *key)
{
    size_t i = find(m, key, fnv1a(key));
    return m->slots[i].key ? m->slots[i].val : NULL;
}

static int grow(am_map *m)
{
    size_t ncap = m->cap * 2;
    slot *ns = calloc(ncap, sizeof *ns);
    if (!ns)
        return -1;
    for (size_t i = 0; i < m->cap; i++) {
        if (!m->slots[i].key)
            continue;
        size_t j = m->slots[i].hash & (ncap - 1);
        while (ns[j].key)
            j = (j + 1) & (ncap - 1);
        ns[j] = m->slots[i];
    }
    free(m->slots);
    m->slots = ns;
    m->cap = ncap;
    return 0;
}

int am_map_put(am_map *m, const char *key, void *val)
{
    if ((m->n + 1) * 4 > m->cap * 3 && grow(m))
        return -1;
    uint64_t h = fnv1a(key);
    size_t i = find(m, key, h);
    if (!m->slots[i].key)
        m->n++;
    m->slots[i] = (slot){key, val, h};
    return 0;
}

void *am_map_del(am_map *m, const char *key)
{
    size_t i = find(m, key, fnv1a(key));
    if (!m->slots[i].key)
        return NULL;
    void *val = m->slots[i].val;
    m->slots[i].key = NULL;
    m->n--;
    /* Backward-shift the cluster that follows so probes stay unbroken. */
    size_t j = i;
    for (;;) {
        j = (j + 1) & (m->cap - 1);
        if (!m->slots[j].key)
            break;
        size_t home = m->slots[j].hash & (m->cap - 1);
        /* Move j into the hole i unless its home lies cyclically in (i, j]. */
        if ((j > i && (home <= i || home > j)) ||
            (j < i && (home <= i && home > j))) {
            m->slots[i] = m->slots[j];
            m->slots[j].key = NULL;
            i = j;
        }
    }
    return val;
}

size_t am_map_size(const am_map *m) { return m->n; }
