/* The projector: the live path, which applies NATS events on the NATS
 * delivery thread at the end of each burst (one batch per run of a source's
 * events), and one catch-up thread per source that reads the source's
 * EventStore on start, on a gap, after a NATS outage and on an idle poll.
 * Every path ends in qs_apply, whose position check makes the effect
 * exactly-once. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "services/common/log.h"
#include "services/common/metrics.h"
#include "services/query/query.h"

#define BATCH_MAX 1000
/* Live events are applied when NATS has no more waiting for us, or when
 * this many are held: a burst is one transaction, and a steady backlog
 * still commits every LIVE_MAX events. */
#define LIVE_MAX 256

typedef struct source_state {
    int index;
    qs_projector *p;
    qs_client *client;
    pthread_t thread;
    bool started;
    bool want;
    bool failing;
    /* When the live feed last brought one of this source's events
     * (qs_mono_ms): the idle poll is skipped while the feed flows. */
    _Atomic int64_t live_ms;
} source_state;

struct qs_projector {
    qs_db *db;
    qs_projector_options opts;
    pthread_mutex_t mu;
    pthread_cond_t catch_cv; /* catch-up threads: asked for, or stop */
    bool stop;
    /* Live events held until the end of their burst: only the NATS
     * delivery thread touches them (one thread per subscription), and
     * qs_projector_stop after NATS is closed. */
    qs_event *live[LIVE_MAX];
    size_t n_live;
    source_state src[QS_NSOURCES];
    qs_nats *nats;
    metrics_family *applied, *dropped, *gaps, *lag, *position;
};

/* Seconds from each event's commit in its source to now (after our
 * commit): the projection lag of the live path. */
static const double lag_bounds[] = {0.0005, 0.001, 0.002, 0.005, 0.01,
                                    0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5};

static void create_metrics(qs_projector *p, metrics_registry *r)
{
    static const char *const src_path[] = {"source", "path"};
    static const char *const src[] = {"source"};
    if (!r)
        return;
    metrics_counter_create(r, "agentmesh_query_events_applied_total",
                           "Events applied to the read models, by source and "
                           "by path (nats or catchup)",
                           src_path, 2, &p->applied);
    metrics_counter_create(r, "agentmesh_query_duplicates_dropped_total",
                           "Live events dropped because their position was "
                           "already applied",
                           src, 1, &p->dropped);
    metrics_counter_create(r, "agentmesh_query_gaps_total",
                           "Gaps seen in the live feed (each triggers a "
                           "catch-up)",
                           src, 1, &p->gaps);
    metrics_histogram_create(r, "agentmesh_query_projection_lag_seconds",
                             "Event commit in its source to commit in the "
                             "read models, live path",
                             src, 1, lag_bounds,
                             sizeof lag_bounds / sizeof lag_bounds[0], &p->lag);
    metrics_gauge_create(r, "agentmesh_query_position",
                         "Last position applied per source", src, 1,
                         &p->position);
}

static void count(metrics_family *f, const char *source, const char *path,
                  double v)
{
    const char *labels[] = {source, path};
    if (f && v > 0)
        metrics_counter_add(f, labels, v);
}

static void set_position(qs_projector *p, int source)
{
    uint64_t pos[QS_NSOURCES];
    const char *labels[] = {qs_source_name(source)};
    if (!p->position)
        return;
    qs_db_positions_now(p->db, pos);
    metrics_gauge_set(p->position, labels, (double)pos[source]);
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void apply_live(qs_projector *p);

void qs_projector_push(qs_projector *p, qs_event *ev, bool more)
{
    /* A source without an address is not projected: its gaps could not be
     * filled. */
    const char *addr = ev ? p->opts.addr[ev->source] : NULL;
    if (ev && (!addr || !*addr))
        qs_event_free(ev);
    else if (ev)
        p->live[p->n_live++] = ev;
    /* Applied here, on the delivery thread, rather than handed to another
     * thread: a hand-off is a wake and two context switches an event, and
     * under load the woken thread waits for a CPU. */
    if (p->n_live && (!more || p->n_live == LIVE_MAX))
        apply_live(p);
}

void qs_projector_catch_up(qs_projector *p, int source)
{
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < QS_NSOURCES; i++)
        if (source < 0 || source == i)
            p->src[i].want = true;
    pthread_cond_broadcast(&p->catch_cv);
    pthread_mutex_unlock(&p->mu);
}

static void deadline_in(int64_t ms, struct timespec *ts)
{
    int64_t at = qs_mono_ms() + ms;
    ts->tv_sec = (time_t)(at / 1000);
    ts->tv_nsec = (long)(at % 1000) * 1000000;
}

/* Applies one run of a source's events (ascending positions). */
static void apply_run(qs_projector *p, int source, qs_event **evs, size_t n)
{
    uint64_t pos[QS_NSOURCES];
    atomic_store_explicit(&p->src[source].live_ms, qs_mono_ms(),
                          memory_order_relaxed);
    qs_db_positions_now(p->db, pos);
    const char *name = qs_source_name(source);
    size_t skip = 0;
    while (skip < n && evs[skip]->position <= pos[source])
        skip++;
    if (skip == n) {
        count(p->dropped, name, NULL, (double)n);
        return;
    }
    qs_apply_result res;
    int rc = qs_apply(p->db, source, evs + skip, n - skip, &res);
    if (!rc) {
        count(p->applied, name, "nats", (double)res.applied);
        count(p->dropped, name, NULL, (double)(skip + res.duplicates));
        if (res.gap)
            count(p->gaps, name, NULL, 1);
        int64_t now = now_ns();
        const char *labels[] = {name};
        for (size_t i = skip; p->lag && i < n; i++)
            if (evs[i]->position <= res.checkpoint &&
                evs[i]->position > pos[source])
                metrics_histogram_observe(
                    p->lag, labels, (double)(now - evs[i]->time_unix_nano) / 1e9);
        set_position(p, source);
    }
    if (rc) {
        LOG_ERROR("query: applying %s events failed: %s",
                  qs_source_name(source), es_strerror(rc));
        qs_projector_catch_up(p, source);
    } else if (res.gap) {
        LOG_DEBUG("query: gap in %s after %llu: catching up",
                  qs_source_name(source), (unsigned long long)res.checkpoint);
        qs_projector_catch_up(p, source);
    }
}

static void apply_live(qs_projector *p)
{
    qs_event *by_source[LIVE_MAX];
    size_t n = p->n_live;
    /* Each source's events together (their order among sources does not
     * matter; within a source it is kept): interleaved sources would
     * otherwise make a transaction of every few events. */
    for (int src = 0; src < QS_NSOURCES; src++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (p->live[i]->source == src)
                by_source[m++] = p->live[i];
        size_t i = 0;
        while (i < m) {
            size_t j = i + 1;
            /* A run: ascending positions (NATS may redeliver or reorder
             * across a reconnect), bounded size. */
            while (j < m && j - i < BATCH_MAX &&
                   by_source[j]->position > by_source[j - 1]->position)
                j++;
            apply_run(p, src, by_source + i, j - i);
            i = j;
        }
    }
    for (size_t i = 0; i < n; i++)
        qs_event_free(p->live[i]);
    p->n_live = 0;
}

static void *catch_up_main(void *arg)
{
    source_state *s = arg;
    qs_projector *p = s->p;
    const char *name = qs_source_name(s->index);
    for (;;) {
        pthread_mutex_lock(&p->mu);
        /* Until asked (a gap, a reconnect, an apply error), stopped, or
         * the idle poll is due. */
        struct timespec ts;
        deadline_in(p->opts.poll_ms, &ts);
        while (!s->want && !p->stop &&
               pthread_cond_timedwait(&p->catch_cv, &p->mu, &ts) == 0)
            ;
        bool stop = p->stop, asked = s->want;
        s->want = false;
        pthread_mutex_unlock(&p->mu);
        if (stop)
            break;
        /* A poll when nothing asked finds what NATS did not bring: the
         * last events before a silence (a lost event followed by others is
         * a gap, and the gap asks). While the live feed brings this
         * source's events, there is no silence to cover, and reading
         * what is still on its way through NATS would only apply it
         * twice over: the poll waits for a quiet interval. */
        if (!asked && !s->failing &&
            qs_mono_ms() - atomic_load_explicit(&s->live_ms,
                                                memory_order_relaxed) <
                p->opts.poll_ms)
            continue;
        uint64_t applied = 0;
        int rc = qs_catch_up(p->db, s->client, s->index, p->opts.page, 1,
                             &applied, NULL, NULL, NULL);
        if (rc && !s->failing)
            LOG_WARN("query: cannot catch up %s from %s: %s; retrying", name,
                     p->opts.addr[s->index],
                     rc == ES_CLOSED ? "EventStore.ReadAll failed (source "
                                       "unreachable or refusing)"
                                     : es_strerror(rc));
        else if (!rc && s->failing)
            LOG_INFO("query: %s reachable again", name);
        s->failing = rc != 0;
        count(p->applied, name, "catchup", (double)applied);
        if (applied)
            set_position(p, s->index);
        if (applied)
            LOG_DEBUG("query: caught up %llu %s events",
                      (unsigned long long)applied, name);
    }
    return NULL;
}

int qs_projector_start(qs_db *db, const qs_projector_options *opts,
                       qs_projector **out)
{
    qs_projector *p = calloc(1, sizeof *p);
    int rc = ES_OK;
    if (!p)
        return ES_NOMEM;
    p->db = db;
    p->opts = *opts;
    if (p->opts.poll_ms <= 0)
        p->opts.poll_ms = 250;
    if (!p->opts.page || p->opts.page > 1000)
        p->opts.page = 1000;
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->catch_cv, &ca);
    pthread_condattr_destroy(&ca);
    create_metrics(p, opts->metrics);
    for (int i = 0; i < QS_NSOURCES; i++) {
        source_state *s = &p->src[i];
        s->index = i;
        s->p = p;
        s->want = true;
        if (!opts->addr[i] || !*opts->addr[i])
            continue;
        if ((rc = qs_client_create(opts->addr[i], &s->client)))
            goto out;
        if (pthread_create(&s->thread, NULL, catch_up_main, s)) {
            rc = ES_IO;
            goto out;
        }
        pthread_setname_np(s->thread, "q-catchup");
        s->started = true;
    }
    if (opts->nats_url && *opts->nats_url &&
        (rc = qs_nats_start(opts->nats_url, p, &p->nats)))
        goto out;
    *out = p;
    p = NULL;
out:
    qs_projector_stop(p);
    return rc;
}

void qs_projector_stop(qs_projector *p)
{
    if (!p)
        return;
    /* NATS first: after its closed callback nothing pushes any more. */
    qs_nats_stop(p->nats);
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    pthread_cond_broadcast(&p->catch_cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < QS_NSOURCES; i++) {
        if (p->src[i].started)
            pthread_join(p->src[i].thread, NULL);
        qs_client_destroy(p->src[i].client);
    }
    /* Held events are not applied: they are in the sources' logs, and the
     * next start catches up from the checkpoint. */
    for (size_t i = 0; i < p->n_live; i++)
        qs_event_free(p->live[i]);
    pthread_cond_destroy(&p->catch_cv);
    pthread_mutex_destroy(&p->mu);
    free(p);
    qs_arena_cache_clear();
}
