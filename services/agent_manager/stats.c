/* Metrics of the agent manager for GET /metrics: its event store's appends,
 * commits (group-commit batches), flush time and map use, and the number of
 * agents by status and tasks by state. The monitor thread refreshes them
 * once per period; counters advance by the store's deltas since the last
 * refresh. */
#include <stdlib.h>
#include <string.h>

#include "services/agent_manager/internal.h"

typedef struct fam {
    const char *name;
    const char *help;
    bool counter;
} fam;

enum {
    F_APPENDS, F_APPEND_FAILURES, F_EVENTS, F_COMMITS, F_COMMIT_SECONDS,
    F_BATCH_MAX, F_LAST_POSITION, F_MAP_USED, F_MAP_SIZE, F_COUNT
};

static const fam fams[F_COUNT] = {
    {"agentmesh_eventstore_appends_total", "Appends acknowledged.", true},
    {"agentmesh_eventstore_append_failures_total", "Appends refused or failed.", true},
    {"agentmesh_eventstore_events_total", "Events appended.", true},
    {"agentmesh_eventstore_commits_total",
     "Write transactions, one flush each (appends/commits is the group-commit batch).",
     true},
    {"agentmesh_eventstore_commit_seconds_total",
     "Time spent committing (the flush).", true},
    {"agentmesh_eventstore_batch_max", "Most appends answered by one commit.", false},
    {"agentmesh_eventstore_last_position", "Position of the newest event.", false},
    {"agentmesh_eventstore_map_used_bytes", "LMDB map in use.", false},
    {"agentmesh_eventstore_map_size_bytes", "LMDB map size.", false},
};

struct am_stats {
    metrics_family *f[F_COUNT];
    metrics_family *agents, *tasks, *submits;
    double prev[F_COUNT];
    unsigned long prev_fast, prev_worker;
};

int am_stats_create(metrics_registry *reg, am_stats **out)
{
    static const char *const status_label[] = {"status"};
    static const char *const state_label[] = {"state"};
    static const char *const path_label[] = {"path"};
    am_stats *st = calloc(1, sizeof *st);
    if (!st)
        return -1;
    for (int i = 0; i < F_COUNT; i++) {
        int rc = fams[i].counter
                     ? metrics_counter_create(reg, fams[i].name, fams[i].help,
                                              NULL, 0, &st->f[i])
                     : metrics_gauge_create(reg, fams[i].name, fams[i].help,
                                            NULL, 0, &st->f[i]);
        if (rc) {
            free(st);
            return -1;
        }
    }
    if (metrics_gauge_create(reg, "agentmesh_agents", "Agents by status.",
                             status_label, 1, &st->agents) ||
        metrics_gauge_create(reg, "agentmesh_tasks", "Tasks by state.",
                             state_label, 1, &st->tasks) ||
        metrics_counter_create(reg, "agentmesh_agents_submits_total",
                               "SubmitTask commands by where they were "
                               "decided: fast (the completion-queue thread) or "
                               "worker.",
                               path_label, 1, &st->submits)) {
        free(st);
        return -1;
    }
    *out = st;
    return 0;
}

void am_stats_destroy(am_stats *st) { free(st); }

static void set(am_stats *st, int i, double v)
{
    if (fams[i].counter) {
        if (v > st->prev[i])
            metrics_counter_add(st->f[i], NULL, v - st->prev[i]);
        st->prev[i] = v;
    } else {
        metrics_gauge_set(st->f[i], NULL, v);
    }
}

void am_stats_refresh(am_service *s, am_stats *st)
{
    es_stats es;
    unsigned agents[4] = {0};
    unsigned tasks[AM_TASK_STATE_COUNT] = {0};
    if (es_stats_get(s->store, &es) == ES_OK) {
        set(st, F_APPENDS, (double)es.appends_ok);
        set(st, F_APPEND_FAILURES, (double)es.appends_failed);
        set(st, F_EVENTS, (double)es.events_appended);
        set(st, F_COMMITS, (double)es.commits);
        set(st, F_COMMIT_SECONDS, (double)es.commit_ns_total / 1e9);
        set(st, F_BATCH_MAX, (double)es.batch_max);
        set(st, F_LAST_POSITION, (double)es.last_position);
        set(st, F_MAP_USED, (double)es.map_used);
        set(st, F_MAP_SIZE, (double)es.map_size);
    }
    unsigned long fast = atomic_load(&s->submits_fast);
    unsigned long worker = atomic_load(&s->submits_worker);
    const char *fv[] = {"fast"}, *wv[] = {"worker"};
    /* Both series exist from the first refresh on, even at 0. */
    metrics_counter_add(st->submits, fv, (double)(fast - st->prev_fast));
    metrics_counter_add(st->submits, wv, (double)(worker - st->prev_worker));
    st->prev_fast = fast;
    st->prev_worker = worker;
    pthread_mutex_lock(&s->mu);
    for (size_t i = 0; i < s->st.n_agents; i++) {
        const am_agent *a = s->st.agent_list[i];
        if (!a->ghost && a->status > 0 && a->status < 4)
            agents[a->status]++;
    }
    for (size_t i = 0; i < s->st.n_tasks; i++) {
        const am_task *t = s->st.task_list[i];
        if (!t->ghost && t->state > 0 && t->state < AM_TASK_STATE_COUNT)
            tasks[t->state]++;
    }
    pthread_mutex_unlock(&s->mu);
    for (int i = 1; i < 4; i++) {
        const char *v[] = {am_agent_status_name((am_agent_status)i)};
        metrics_gauge_set(st->agents, v, agents[i]);
    }
    for (int i = 1; i < AM_TASK_STATE_COUNT; i++) {
        const char *v[] = {am_task_state_name((am_task_state)i)};
        metrics_gauge_set(st->tasks, v, tasks[i]);
    }
}
