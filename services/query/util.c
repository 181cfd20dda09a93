/* Small shared helpers of the query service: source names, big-endian keys,
 * packing, string copies, and the map<string, uint64> fields (positions,
 * min_positions) every Query reply and request carries. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "services/query/query.h"

static const char *const source_names[QS_NSOURCES] = {"agents", "memory"};

const char *qs_source_name(int source)
{
    return source >= 0 && source < QS_NSOURCES ? source_names[source] : NULL;
}

int qs_source_parse(const char *name, size_t n)
{
    for (int i = 0; i < QS_NSOURCES; i++)
        if (strlen(source_names[i]) == n && memcmp(name, source_names[i], n) == 0)
            return i;
    return -1;
}

int qs_pack(const ProtobufCMessage *m, uint8_t **out, size_t *len)
{
    return qs_pack_in(NULL, m, out, len);
}

int qs_pack_in(qs_arena *ar, const ProtobufCMessage *m, uint8_t **out,
               size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *b = ar ? qs_arena_alloc(ar, n ? n : 1) : malloc(n ? n : 1);
    if (!b)
        return ES_NOMEM;
    protobuf_c_message_pack(m, b);
    *out = b;
    *len = n;
    return ES_OK;
}

char *qs_strndup(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (!d)
        return NULL;
    if (s && n)
        memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

int64_t qs_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void qs_free_str(char *s)
{
    if (s != protobuf_c_empty_string)
        free(s);
}

int qs_map_add(const ProtobufCMessageDescriptor *desc, void ***entries,
               size_t *n, const char *key, uint64_t value)
{
    void **v = realloc(*entries, (*n + 1) * sizeof *v);
    if (!v)
        return ES_NOMEM;
    *entries = v;
    qs_u64_entry *e = malloc(desc->sizeof_message);
    if (!e)
        return ES_NOMEM;
    protobuf_c_message_init(desc, e);
    if (!(e->key = strdup(key))) {
        free(e);
        return ES_NOMEM;
    }
    e->value = value;
    v[(*n)++] = e;
    return ES_OK;
}

void qs_map_free(void **entries, size_t n)
{
    for (size_t i = 0; i < n; i++)
        protobuf_c_message_free_unpacked(entries[i], NULL);
    free(entries);
}

int qs_positions_map(const ProtobufCMessageDescriptor *desc,
                     const uint64_t pos[QS_NSOURCES], void ***out,
                     size_t *n_out)
{
    void **v = NULL;
    size_t n = 0;
    for (int i = 0; i < QS_NSOURCES; i++)
        if (qs_map_add(desc, &v, &n, source_names[i], pos[i])) {
            qs_map_free(v, n);
            return ES_NOMEM;
        }
    *out = v;
    *n_out = n;
    return ES_OK;
}

int qs_min_positions(void *const *entries, size_t n,
                     uint64_t min[QS_NSOURCES], char *msg, size_t msglen)
{
    memset(min, 0, QS_NSOURCES * sizeof *min);
    for (size_t i = 0; i < n; i++) {
        const qs_u64_entry *e = entries[i];
        const char *k = e->key ? e->key : "";
        int s = qs_source_parse(k, strlen(k));
        if (s < 0) {
            snprintf(msg, msglen,
                     "min_positions: unknown source \"%.64s\" (agents, memory)",
                     k);
            return ES_INVALID;
        }
        if (e->value > min[s])
            min[s] = e->value;
    }
    return ES_OK;
}

void qs_free_events(Agentmesh__V1__Event **evs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        protobuf_c_message_free_unpacked(&evs[i]->base, NULL);
    free(evs);
}
