/* The agent manager service's life: options, loading the state at start
 * (the latest snapshot, then the log after its watermark), the monitor
 * thread, and the final snapshot at stop. */
#include <stdlib.h>
#include <string.h>

#include "services/agent_manager/internal.h"
#include "services/common/log.h"

#define REPLAY_PAGE 1000

/* Replays the log after position `after` into the state. */
static int replay(am_service *s, uint64_t after)
{
    es_event *evs = calloc(REPLAY_PAGE, sizeof *evs);
    uint64_t from = after + 1;
    int rc = ES_OK;
    if (!evs)
        return ES_NOMEM;
    for (;;) {
        es_txn *txn = NULL;
        es_page pg;
        if ((rc = es_txn_begin(s->store, &txn)))
            break;
        rc = es_read_all(txn, from, ES_FORWARD, NULL, REPLAY_PAGE, evs, &pg);
        for (size_t i = 0; rc == ES_OK && i < pg.count; i++) {
            int arc = am_state_apply(&s->st, &evs[i]);
            if (arc == -1)
                rc = ES_NOMEM;
            else if (arc == -2) {
                LOG_ERROR("agent-manager: undecodable %s at position %llu",
                          evs[i].type, (unsigned long long)evs[i].position);
                rc = ES_CORRUPT;
            }
        }
        es_txn_end(txn);
        if (rc || pg.count == 0 || pg.end_of_stream)
            break;
        from = pg.next;
    }
    free(evs);
    return rc;
}

void am_options_init(am_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->heartbeat_timeout_ms = 30000;
    opts->max_input_bytes = AM_INPUT_DEFAULT;
    opts->snapshot_every = 1000;
    opts->max_pending = 100000;
}

int am_service_create(const am_options *opts, am_service **out)
{
    am_service *s = calloc(1, sizeof *s);
    uint64_t after = 0;
    int rc;
    if (!s)
        return ES_NOMEM;
    s->opts = *opts;
    s->store = opts->store;
    if (s->opts.heartbeat_timeout_ms <= 0)
        s->opts.heartbeat_timeout_ms = 30000;
    if (!s->opts.max_input_bytes)
        s->opts.max_input_bytes = AM_INPUT_DEFAULT;
    if (!s->opts.max_pending)
        s->opts.max_pending = 100000;
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cv, NULL);
    if (am_state_init(&s->st)) {
        rc = ES_NOMEM;
        goto out;
    }
    int64_t t0 = am_mono_ms();
    if ((rc = am_snapshot_load(s, &after)))
        goto out;
    s->snap_entities = (uint64_t)s->st.n_agents + s->st.n_tasks;
    if ((rc = replay(s, after)))
        goto out;
    int64_t now = am_mono_ms();
    for (size_t i = 0; i < s->st.n_agents; i++)
        s->st.agent_list[i]->seen_mono_ms = now;
    s->snap_applied = 0;
    LOG_INFO("agent-manager: state loaded in %lld ms: %zu agents, %zu tasks, "
             "%zu pending, position %llu (snapshot at %llu, %llu events "
             "replayed)",
             (long long)(now - t0), s->st.n_agents, s->st.n_tasks,
             s->st.n_pending, (unsigned long long)s->st.max_applied,
             (unsigned long long)after, (unsigned long long)s->st.applied);
    if (opts->metrics && am_stats_create(opts->metrics, &s->stats)) {
        rc = ES_NOMEM;
        goto out;
    }
    if (am_monitor_start(s)) {
        rc = ES_IO;
        goto out;
    }
    *out = s;
    s = NULL;
out:
    if (s) {
        am_stats_destroy(s->stats);
        am_state_free(&s->st);
        pthread_cond_destroy(&s->cv);
        pthread_mutex_destroy(&s->mu);
        free(s);
    }
    return rc;
}

void am_service_destroy(am_service *s)
{
    if (!s)
        return;
    am_monitor_stop(s);
    if (s->st.applied != s->snap_applied && !s->broken) {
        int rc = am_service_snapshot(s);
        if (rc)
            LOG_WARN("agent-manager: final snapshot failed: %s",
                     es_strerror(rc));
    }
    am_stats_destroy(s->stats);
    am_state_free(&s->st);
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

void am_service_counts(am_service *s, uint64_t *position, size_t *agents,
                       size_t *tasks, size_t *pending)
{
    pthread_mutex_lock(&s->mu);
    *position = s->st.max_applied;
    *agents = s->st.n_agents;
    *tasks = s->st.n_tasks;
    *pending = s->st.n_pending;
    pthread_mutex_unlock(&s->mu);
}
