/* Catch-up: reads a source's log from the projection's checkpoint to its
 * end in pages (EventStore.ReadAll, or the log's file read in place by a
 * rebuild), read ahead on a helper thread, and
 * applies what has been read so far (up to MERGE_MAX events) as one batch.
 * Used at start, on a gap in the live feed, after a NATS outage, on the idle
 * poll, and by rebuild. */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "services/common/log.h"
#include "services/query/query.h"

#define CALL_TIMEOUT_MS 10000
#define AHEAD 6 /* pages read ahead */
#define READERS_MAX 4
/* Pages already read are applied together, up to this many events in one
 * write transaction: a commit's fixed cost (the checkpoint, the counters,
 * writing the dirty pages out) is then shared by more events, and pages an
 * index touches again are written once. */
#define MERGE_MAX 4000

typedef struct page {
    qs_arena *ar; /* the events' memory */
    qs_event **evs;
    size_t n;
    bool end;
    int rc;
    char msg[256];
} page;

/* The read-ahead: pages are numbered from 0 in log order; slot k % AHEAD
 * holds page k until take() hands it out. One thread reads page after page
 * (each starting where the last ended), or, when the source's positions
 * are dense (a whole log, no filter), several threads read pages at
 * computed positions (page k starts at base + k * limit) and take() still
 * hands them out in order. */
typedef struct slot {
    page p;
    bool filled;
} slot;

typedef struct reader {
    qs_read_fn read;
    void *src;
    int source;
    unsigned limit;
    unsigned threads;
    uint64_t from; /* one thread: where the next page starts */
    uint64_t base; /* several: where page 0 starts */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    slot q[AHEAD];
    uint64_t head;    /* the page take() returns next */
    uint64_t claimed; /* the next page a reader thread takes on */
    uint64_t last;    /* the page with end or an error (UINT64_MAX: none yet) */
    bool stop;
} reader;

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void page_free(page *p)
{
    for (size_t i = 0; i < p->n; i++)
        qs_event_free(p->evs[i]);
    free(p->evs);
    qs_arena_free(p->ar);
    memset(p, 0, sizeof *p);
}

/* A page read at a computed position must be exactly the positions it was
 * computed for, or the pages around it would not join up. */
static void check_dense(page *p, uint64_t from, unsigned limit)
{
    if (p->rc || p->n == 0)
        return;
    if (p->evs[0]->position == from &&
        p->evs[p->n - 1]->position == from + p->n - 1 &&
        (p->end || p->n == limit))
        return;
    p->rc = ES_CORRUPT;
    snprintf(p->msg, sizeof p->msg,
             "page from %llu held positions %llu..%llu: the log is not dense",
             (unsigned long long)from,
             (unsigned long long)p->evs[0]->position,
             (unsigned long long)p->evs[p->n - 1]->position);
}

/* Reads pages until the end of the log, an error or stop. */
static void *reader_main(void *arg)
{
    reader *r = arg;
    for (;;) {
        pthread_mutex_lock(&r->mu);
        while (!r->stop && r->claimed <= r->last &&
               r->claimed - r->head >= AHEAD)
            pthread_cond_wait(&r->cv, &r->mu);
        if (r->stop || r->claimed > r->last) {
            pthread_mutex_unlock(&r->mu);
            break;
        }
        uint64_t k = r->claimed++;
        uint64_t from = r->threads > 1 ? r->base + k * r->limit : r->from;
        pthread_mutex_unlock(&r->mu);
        page p;
        uint64_t next = 0;
        memset(&p, 0, sizeof p);
        if (!(p.ar = qs_arena_new()))
            p.rc = ES_NOMEM;
        else
            p.rc = r->read(r->src, r->source, from, r->limit, p.ar, &p.evs,
                           &p.n, &p.end, &next, p.msg, sizeof p.msg);
        if (!p.rc && p.n == 0)
            p.end = true;
        if (r->threads > 1)
            check_dense(&p, from, r->limit);
        else if (!p.rc && !p.end)
            r->from = next > from ? next : p.evs[p.n - 1]->position + 1;
        pthread_mutex_lock(&r->mu);
        r->q[k % AHEAD].p = p;
        r->q[k % AHEAD].filled = true;
        if ((p.rc || p.end) && k < r->last)
            r->last = k;
        pthread_cond_broadcast(&r->cv);
        pthread_mutex_unlock(&r->mu);
    }
    return NULL;
}

/* Waits for the next page, then appends to it the events of the pages
 * ready behind it, while they are good, fit in MERGE_MAX and the page
 * taken so far is not the last. A page with an error stays for the next
 * call, so its events never mix with an error. */
static void take(reader *r, page *out)
{
    pthread_mutex_lock(&r->mu);
    while (!r->q[r->head % AHEAD].filled)
        pthread_cond_wait(&r->cv, &r->mu);
    slot *s = &r->q[r->head++ % AHEAD];
    *out = s->p;
    s->filled = false;
    while (!out->rc && !out->end && r->q[r->head % AHEAD].filled) {
        page *p = &r->q[r->head % AHEAD].p;
        if (p->rc || out->n + p->n > MERGE_MAX)
            break;
        qs_event **v = realloc(out->evs, (out->n + p->n) * sizeof *v);
        if (!v)
            break;
        memcpy(v + out->n, p->evs, p->n * sizeof *v);
        out->evs = v;
        out->n += p->n;
        out->end = p->end;
        qs_arena_join(out->ar, p->ar);
        free(p->evs);
        memset(p, 0, sizeof *p);
        r->q[r->head++ % AHEAD].filled = false;
    }
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static int read_client(void *src, int source, uint64_t from, unsigned limit,
                       qs_arena *ar, qs_event ***events, size_t *n, bool *end,
                       uint64_t *next, char *msg, size_t msglen)
{
    return qs_client_read_all(src, source, from, limit, CALL_TIMEOUT_MS, ar,
                              events, n, end, next, msg, msglen);
}

int qs_catch_up(qs_db *db, qs_client *c, int source, unsigned limit,
                unsigned threads, uint64_t *applied, qs_progress_fn progress,
                void *arg, qs_catch_up_times *times)
{
    return qs_catch_up_from(db, read_client, c, source, limit, threads,
                            applied, progress, arg, times);
}

int qs_catch_up_from(qs_db *db, qs_read_fn read, void *src, int source,
                     unsigned limit, unsigned threads, uint64_t *applied,
                     qs_progress_fn progress, void *arg,
                     qs_catch_up_times *times)
{
    uint64_t pos[QS_NSOURCES], total = 0;
    int rc = ES_OK;
    reader r;
    memset(&r, 0, sizeof r);
    r.read = read;
    r.src = src;
    r.source = source;
    r.limit = limit;
    r.threads = threads < 1 ? 1 : threads > READERS_MAX ? READERS_MAX : threads;
    r.last = UINT64_MAX;
    qs_db_positions_now(db, pos);
    r.from = r.base = pos[source] + 1;
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    pthread_t th[READERS_MAX];
    unsigned started = 0;
    for (; started < r.threads; started++) {
        if (pthread_create(&th[started], NULL, reader_main, &r))
            break;
        pthread_setname_np(th[started], "q-reader");
    }
    if (!started) {
        pthread_cond_destroy(&r.cv);
        pthread_mutex_destroy(&r.mu);
        return ES_IO;
    }
    for (;;) {
        page p;
        double t0 = mono_s();
        take(&r, &p);
        double t1 = mono_s();
        if ((rc = p.rc)) {
            LOG_DEBUG("query: catch-up of %s: %s (%s)", qs_source_name(source),
                      es_strerror(rc), p.msg);
            page_free(&p);
            break;
        }
        qs_apply_result res = {0, 0, 0, false};
        if (p.n)
            rc = qs_apply(db, source, p.evs, p.n, &res);
        if (times) {
            times->reading += t1 - t0;
            times->applying += mono_s() - t1;
        }
        bool end = p.end;
        page_free(&p);
        if (rc)
            break;
        total += res.applied;
        if (progress && res.applied)
            progress(arg, source, res.checkpoint, total);
        if (res.gap) {
            LOG_ERROR("query: %s's log skipped positions after %llu",
                      qs_source_name(source),
                      (unsigned long long)res.checkpoint);
            rc = ES_CORRUPT;
            break;
        }
        if (end)
            break;
    }
    pthread_mutex_lock(&r.mu);
    r.stop = true;
    pthread_cond_broadcast(&r.cv);
    pthread_mutex_unlock(&r.mu);
    for (unsigned i = 0; i < started; i++)
        pthread_join(th[i], NULL);
    for (size_t i = 0; i < AHEAD; i++)
        if (r.q[i].filled)
            page_free(&r.q[i].p);
    pthread_cond_destroy(&r.cv);
    pthread_mutex_destroy(&r.mu);
    if (applied)
        *applied = total;
    return rc;
}
