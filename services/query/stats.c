/* The stats read model: counters (tasks by state, agents by status, events
 * in total and per source), events per second of event time, and a
 * log-linear histogram of submit-to-complete latency (eight sub-buckets per
 * power of two of microseconds: percentiles within 12.5%). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "services/query/query.h"

#define NS "q.stats"
#define NS_RATE "q.rate"
#define NS_LAT "q.latency"
#define RATE_WINDOW_S 60

static int add_u64(es_txn *txn, const char *ns, const void *k, size_t kl,
                   int64_t delta)
{
    const void *v;
    size_t vl;
    uint64_t n = 0;
    int rc = es_kv_get(txn, ns, k, kl, &v, &vl);
    if (rc == ES_OK && vl == 8)
        n = qs_get_be64(v);
    else if (rc && rc != ES_NOT_FOUND)
        return rc;
    n += (uint64_t)delta;
    if (n == 0) {
        rc = es_kv_del(txn, ns, k, kl);
        return rc == ES_NOT_FOUND ? ES_OK : rc;
    }
    uint8_t b[8];
    qs_be64(b, n);
    return es_kv_put(txn, ns, k, kl, b, 8);
}

int qs_tx_flush(qs_tx *tx)
{
    int rc = ES_OK;
    uint64_t all = 0;
    for (int i = 0; !rc && i < QS_NSOURCES; i++) {
        char k[32];
        int n = snprintf(k, sizeof k, "events:%s", qs_source_name(i));
        if (tx->events[i] && n > 0 && (size_t)n < sizeof k)
            rc = add_u64(tx->txn, NS, k, (size_t)n, (int64_t)tx->events[i]);
        all += tx->events[i];
        tx->events[i] = 0;
    }
    if (!rc && all)
        rc = add_u64(tx->txn, NS, "events:total", 12, (int64_t)all);
    for (size_t i = 0; !rc && i < tx->n_counters; i++)
        if (tx->counters[i].delta)
            rc = add_u64(tx->txn, NS, tx->counters[i].key,
                         strlen(tx->counters[i].key), tx->counters[i].delta);
    for (size_t i = 0; !rc && i < tx->n_rates; i++) {
        uint8_t sec[8];
        qs_be64(sec, tx->rates[i].second);
        rc = add_u64(tx->txn, NS_RATE, sec, 8, (int64_t)tx->rates[i].n);
    }
    tx->n_counters = tx->n_rates = 0;
    return rc;
}

/* Whether key is "<group>:<name>" (gl, nl their lengths). */
static bool key_is(const char *key, const char *group, size_t gl,
                   const char *name, size_t nl)
{
    return !memcmp(key, group, gl) && key[gl] == ':' &&
           !memcmp(key + gl + 1, name, nl) && key[gl + 1 + nl] == '\0';
}

int qs_stats_add(qs_tx *tx, const char *group, const char *name,
                 int64_t delta)
{
    /* Called several times per event: the key is compared in place and
     * formatted only when a batch first meets it. */
    size_t gl = strlen(group), nl = strlen(name);
    if (gl + 1 + nl >= sizeof tx->counters[0].key)
        return ES_INVALID;
    for (size_t i = 0; i < tx->n_counters; i++)
        if (key_is(tx->counters[i].key, group, gl, name, nl)) {
            tx->counters[i].delta += delta;
            return ES_OK;
        }
    char k[sizeof tx->counters[0].key];
    int n = snprintf(k, sizeof k, "%s:%s", group, name);
    if (n <= 0 || (size_t)n >= sizeof k)
        return ES_INVALID;
    if (tx->n_counters == QS_TX_COUNTERS) {
        int rc = qs_tx_flush(tx);
        if (rc)
            return rc;
    }
    memcpy(tx->counters[tx->n_counters].key, k, (size_t)n + 1);
    tx->counters[tx->n_counters++].delta = delta;
    return ES_OK;
}

int qs_stats_apply(qs_tx *tx, const qs_event *ev)
{
    int rc;
    uint64_t sec = (uint64_t)(ev->time_unix_nano / 1000000000);
    /* "events:total" and "events:<source>": counted here, written by
     * qs_tx_flush, as every counter is. */
    if (ev->source < 0 || ev->source >= QS_NSOURCES)
        return ES_INVALID;
    tx->events[ev->source]++;
    for (size_t i = 0; i < tx->n_rates; i++)
        if (tx->rates[i].second == sec) {
            tx->rates[i].n++;
            return ES_OK;
        }
    if (tx->n_rates == QS_TX_RATES && (rc = qs_tx_flush(tx)))
        return rc;
    tx->rates[tx->n_rates].second = sec;
    tx->rates[tx->n_rates++].n = 1;
    return ES_OK;
}

static unsigned bucket_of(uint64_t us)
{
    if (us < 16)
        return (unsigned)us;
    unsigned e = 63u - (unsigned)__builtin_clzll(us);
    unsigned sub = (unsigned)(us >> (e - 3)) & 7u;
    return 16 + (e - 4) * 8 + sub;
}

/* The middle of a bucket, in microseconds. */
static double bucket_mid(unsigned b)
{
    if (b < 16)
        return b;
    unsigned e = (b - 16) / 8 + 4, sub = (b - 16) % 8;
    double lo = (double)((uint64_t)(8 + sub) << (e - 3));
    double width = (double)(1ull << (e - 3));
    return lo + width / 2;
}

int qs_stats_latency(qs_tx *tx, int64_t nanos)
{
    uint8_t k[2];
    unsigned b = bucket_of(nanos > 0 ? (uint64_t)nanos / 1000 : 0);
    k[0] = (uint8_t)(b >> 8);
    k[1] = (uint8_t)b;
    int rc = add_u64(tx->txn, NS_LAT, k, 2, 1);
    return rc ? rc : qs_stats_add(tx, "latency", "count", 1);
}

typedef struct counters {
    const ProtobufCMessageDescriptor *state_entry, *status_entry;
    Agentmesh__V1__GetStatsResponse *r;
    int rc;
} counters;

static int visit_counter(void *arg, const void *key, size_t kl,
                         const void *val, size_t vl)
{
    counters *c = arg;
    char k[128];
    if (kl >= sizeof k || vl != 8)
        return 0;
    memcpy(k, key, kl);
    k[kl] = '\0';
    uint64_t n = qs_get_be64(val);
    Agentmesh__V1__GetStatsResponse *r = c->r;
    if (!strncmp(k, "task:", 5))
        c->rc = qs_map_add(c->state_entry, (void ***)&r->tasks_by_state,
                           &r->n_tasks_by_state, k + 5, n);
    else if (!strncmp(k, "agent:", 6))
        c->rc = qs_map_add(c->status_entry, (void ***)&r->agents_by_status,
                           &r->n_agents_by_status, k + 6, n);
    else if (!strcmp(k, "events:total"))
        r->events_total = n;
    return c->rc ? 1 : 0;
}

typedef struct hist {
    uint64_t count[2048];
    uint64_t total;
} hist;

static int visit_bucket(void *arg, const void *key, size_t kl,
                        const void *val, size_t vl)
{
    hist *h = arg;
    if (kl != 2 || vl != 8)
        return 0;
    unsigned b = (unsigned)((const uint8_t *)key)[0] << 8 |
                 ((const uint8_t *)key)[1];
    if (b < 2048) {
        h->count[b] += qs_get_be64(val);
        h->total += qs_get_be64(val);
    }
    return 0;
}

static double percentile_ms(const hist *h, double q)
{
    if (!h->total)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->total + 0.999999);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned b = 0; b < 2048; b++) {
        seen += h->count[b];
        if (seen >= rank)
            return bucket_mid(b) / 1000.0;
    }
    return 0;
}

typedef struct rate {
    uint64_t from, to, n;
} rate;

static int visit_rate(void *arg, const void *key, size_t kl, const void *val,
                      size_t vl)
{
    rate *r = arg;
    if (kl != 8 || vl != 8)
        return 0;
    uint64_t s = qs_get_be64(key);
    if (s >= r->to)
        return 1;
    r->n += qs_get_be64(val);
    return 0;
}

int qs_stats_get(es_txn *txn, Agentmesh__V1__GetStatsResponse *resp)
{
    counters c = {&agentmesh__v1__get_stats_response__tasks_by_state_entry__descriptor,
                  &agentmesh__v1__get_stats_response__agents_by_status_entry__descriptor,
                  resp, 0};
    int rc = es_kv_scan(txn, NS, NULL, 0, visit_counter, &c);
    if (rc || (rc = c.rc))
        return rc;
    hist *h = calloc(1, sizeof *h);
    if (!h)
        return ES_NOMEM;
    if ((rc = es_kv_scan(txn, NS_LAT, NULL, 0, visit_bucket, h))) {
        free(h);
        return rc;
    }
    resp->submit_to_complete_p50_ms = percentile_ms(h, 0.50);
    resp->submit_to_complete_p90_ms = percentile_ms(h, 0.90);
    resp->submit_to_complete_p99_ms = percentile_ms(h, 0.99);
    free(h);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t now = (uint64_t)ts.tv_sec;
    rate r = {now - RATE_WINDOW_S + 1, now + 1, 0};
    uint8_t from[8];
    qs_be64(from, r.from);
    if ((rc = es_kv_scan(txn, NS_RATE, from, 8, visit_rate, &r)))
        return rc;
    resp->events_per_second = (double)r.n / RATE_WINDOW_S;
    return ES_OK;
}
