/* Rebuild and dump: `query --rebuild` drops the projection env and replays
 * every source's log from position 1 (from the log's files in place, then
 * through EventStore.ReadAll, or either alone), printing a
 * progress line per second; `query --dump` writes the read models as text,
 * so two builds can be compared byte for byte. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "services/query/query.h"

/* A log read in place: pages of 1,000 events decoded by two threads while
 * the batches read so far are applied (the decoding costs about as much
 * as the applying). */
#define LOG_PAGE 1000
#define LOG_READERS 2
/* Through the EventStore API, two ReadAll calls in flight: the source
 * encodes one page while this process decodes another. */
#define API_READERS 2

typedef struct progress {
    pthread_mutex_t mu;
    int64_t start_ms, last_ms;
    uint64_t done[QS_NSOURCES];
    uint64_t base[QS_NSOURCES]; /* applied by a source's earlier phase */
} progress;

static uint64_t total(const progress *p)
{
    uint64_t t = 0;
    for (int i = 0; i < QS_NSOURCES; i++)
        t += p->done[i];
    return t;
}

/* Called by each source's replay after every page. */
static void report(void *arg, int source, uint64_t position, uint64_t applied)
{
    progress *p = arg;
    pthread_mutex_lock(&p->mu);
    p->done[source] = p->base[source] + applied;
    int64_t now = qs_mono_ms();
    if (now - p->last_ms >= 1000) {
        p->last_ms = now;
        double s = (double)(now - p->start_ms) / 1000.0;
        fprintf(stderr,
                "rebuild: %s at position %llu, %llu events applied, %.0f "
                "events/s\n",
                qs_source_name(source), (unsigned long long)position,
                (unsigned long long)total(p),
                s > 0 ? (double)total(p) / s : 0.0);
    }
    pthread_mutex_unlock(&p->mu);
}

/* One source's replay, on a thread of its own: the sources are read and
 * decoded in parallel, their batches commit one after the other. */
typedef struct replay {
    qs_db *db;
    int source;
    const char *addr;    /* NULL/"": none */
    const char *log_dir; /* NULL/"": none */
    unsigned page;
    progress *p;
    qs_catch_up_times times;
    uint64_t applied;
    int rc;
} replay;

/* The log's files first (fast, in place), then the service for whatever
 * was appended since; either alone also works. */
static void *replay_main(void *arg)
{
    replay *r = arg;
    const char *name = qs_source_name(r->source);
    uint64_t n = 0;
    if (r->log_dir && *r->log_dir) {
        qs_log *l = NULL;
        fprintf(stderr, "rebuild: replaying %s from its log in %s\n", name,
                r->log_dir);
        if ((r->rc = qs_log_open(r->log_dir, &l)) == ES_OK)
            r->rc = qs_catch_up_from(r->db, qs_log_read_all, l, r->source,
                                     LOG_PAGE, LOG_READERS, &n, report,
                                     r->p, &r->times);
        else
            fprintf(stderr, "rebuild: cannot open the %s log in %s: %s\n",
                    name, r->log_dir, es_strerror(r->rc));
        qs_log_close(l);
        r->applied += n;
    }
    if (!r->rc && r->addr && *r->addr) {
        qs_client *c = NULL;
        fprintf(stderr, "rebuild: replaying %s from %s\n", name, r->addr);
        pthread_mutex_lock(&r->p->mu);
        r->p->base[r->source] = r->applied;
        pthread_mutex_unlock(&r->p->mu);
        n = 0;
        if ((r->rc = qs_client_create(r->addr, &c)) == ES_OK)
            r->rc = qs_catch_up(r->db, c, r->source, r->page, API_READERS,
                                &n, report, r->p, &r->times);
        qs_client_destroy(c);
        r->applied += n;
    }
    if (r->rc)
        fprintf(stderr, "rebuild: %s failed: %s\n", name,
                es_strerror(r->rc));
    return NULL;
}

int qs_rebuild(const char *dir, const char *const addr[QS_NSOURCES],
               const char *const log_dir[QS_NSOURCES], unsigned page,
               bool sync)
{
    qs_db *db = NULL;
    progress p;
    replay r[QS_NSOURCES];
    pthread_t th[QS_NSOURCES];
    bool started[QS_NSOURCES] = {false};
    memset(&p, 0, sizeof p);
    memset(r, 0, sizeof r);
    int rc = qs_db_remove_env(dir);
    if (rc || (rc = qs_db_open_bulk(dir, sync, &db))) {
        fprintf(stderr, "rebuild: cannot reset %s: %s\n", dir, es_strerror(rc));
        return rc;
    }
    pthread_mutex_init(&p.mu, NULL);
    p.start_ms = p.last_ms = qs_mono_ms();
    for (int i = 0; i < QS_NSOURCES; i++) {
        bool by_addr = addr[i] && *addr[i];
        bool by_log = log_dir && log_dir[i] && *log_dir[i];
        if (!by_addr && !by_log)
            continue;
        r[i] = (replay){db,     i,          addr[i], log_dir ? log_dir[i] : NULL,
                        page,   &p,         {0, 0},  0,
                        ES_OK};
        if (pthread_create(&th[i], NULL, replay_main, &r[i]))
            r[i].rc = ES_IO;
        else {
            pthread_setname_np(th[i], "q-replay");
            started[i] = true;
        }
    }
    qs_catch_up_times times = {0, 0};
    for (int i = 0; i < QS_NSOURCES; i++) {
        if (started[i])
            pthread_join(th[i], NULL);
        if (r[i].rc && !rc)
            rc = r[i].rc;
        times.reading += r[i].times.reading;
        times.applying += r[i].times.applying;
        p.done[i] = r[i].applied;
    }
    double s = (double)(qs_mono_ms() - p.start_ms) / 1000.0;
    uint64_t pos[QS_NSOURCES];
    qs_db_positions_now(db, pos);
    if (!rc)
        fprintf(stderr,
                "rebuild: done: %llu events (agents at %llu, memory at %llu) "
                "in %.3f s (%.3f s reading pages, %.3f s applying, summed "
                "over sources), %.0f events/s\n",
                (unsigned long long)total(&p), (unsigned long long)pos[QS_AGENTS],
                (unsigned long long)pos[QS_MEMORY], s, times.reading,
                times.applying, s > 0 ? (double)total(&p) / s : 0.0);
    pthread_mutex_destroy(&p.mu);
    qs_db_close(db);
    qs_arena_cache_clear();
    return rc;
}
typedef struct dump_ctx {
    FILE *f;
    const char *ns;
    uint8_t (*merged)[9];
    size_t n, cap;
    bool oom;
} dump_ctx;

static void hex(FILE *f, const void *p, size_t n)
{
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++)
        fprintf(f, "%02x", b[i]);
}

static int visit(void *arg, const void *key, size_t kl, const void *val,
                 size_t vl)
{
    dump_ctx *c = arg;
    fprintf(c->f, "%s ", c->ns);
    hex(c->f, key, kl);
    fputc(' ', c->f);
    hex(c->f, val, vl);
    fputc('\n', c->f);
    return 0;
}

static int collect_merged(void *arg, const void *key, size_t kl,
                          const void *val, size_t vl)
{
    dump_ctx *c = arg;
    (void)key;
    (void)kl;
    if (vl != 9)
        return 0;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 1024;
        uint8_t(*m)[9] = realloc(c->merged, cap * sizeof *m);
        if (!m) {
            c->oom = true;
            return 1;
        }
        c->merged = m;
        c->cap = cap;
    }
    memcpy(c->merged[c->n++], val, 9);
    return 0;
}

static int cmp9(const void *a, const void *b)
{
    return memcmp(a, b, 9);
}

int qs_dump(const char *dir, FILE *fp)
{
    es_store *st = NULL;
    es_txn *txn = NULL;
    es_options eo;
    es_options_init(&eo);
    eo.flags |= ES_OPT_RDONLY;
    eo.kv_dbs = qs_namespaces;
    dump_ctx c = {fp, NULL, NULL, 0, 0, false};
    int rc = es_open(dir, &eo, &st);
    if (rc || (rc = es_txn_begin(st, &txn)))
        goto out;
    uint64_t pos[QS_NSOURCES];
    qs_db_positions(txn, pos);
    for (int i = 0; i < QS_NSOURCES; i++)
        fprintf(c.f, "checkpoint %s %llu\n", qs_source_name(i),
                (unsigned long long)pos[i]);
    fprintf(c.f, "checkpoint feed %llu\n",
            (unsigned long long)qs_feed_last_seq(txn));
    for (size_t i = 0; qs_namespaces[i] && !rc; i++) {
        c.ns = qs_namespaces[i];
        if (!strcmp(c.ns, "q.feed")) {
            /* Apply order differs between live runs and a rebuild: the
             * merged feed is compared as the set of events it lists. */
            rc = es_kv_scan(txn, c.ns, NULL, 0, collect_merged, &c);
            if (!rc && c.oom)
                rc = ES_NOMEM;
            if (rc)
                break;
            qsort(c.merged, c.n, 9, cmp9);
            for (size_t j = 0; j < c.n; j++) {
                fprintf(c.f, "q.feed %s %llu\n", qs_source_name(c.merged[j][0]),
                        (unsigned long long)qs_get_be64(c.merged[j] + 1));
            }
            continue;
        }
        rc = es_kv_scan(txn, c.ns, NULL, 0, visit, &c);
    }
out:
    if (rc)
        fprintf(stderr, "dump: %s: %s\n", dir, es_strerror(rc));
    free(c.merged);
    es_txn_end(txn);
    es_close(st);
    return rc;
}
