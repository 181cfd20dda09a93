/* Task assignment: which agent a task goes to (the least-loaded online agent
 * with every required capability and spare concurrency, or the one the
 * client named), and the assignment of waiting tasks when capacity appears.
 * Load counts applied ASSIGNED/RUNNING tasks plus assignments in flight, so
 * concurrent decisions never overbook an agent. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentmesh/v1/events.pb-c.h"
#include "services/agent_manager/internal.h"
#include "services/common/log.h"

/* Assignments planned per round before appending them. */
#define ROUND_MAX 64

static am_candidate candidate(const am_agent *a, const am_task *t)
{
    am_candidate c = {
        .status = a->ghost ? AM_AGENT_UNSPECIFIED : a->status,
        .busy = a->busy,
        .has_caps = am_agent_has_caps(a, t->caps, t->n_caps),
        .load = a->active + a->reserved,
        .max_concurrency = a->max_concurrency,
    };
    return c;
}

am_agent *am_choose_agent(am_service *s, const am_task *t)
{
    if (t->target) {
        am_agent *a = am_map_get(s->st.agents, t->target);
        if (!a)
            return NULL;
        am_candidate c = candidate(a, t);
        return am_pick_agent(&c, 1) == 0 ? a : NULL;
    }
    am_agent *best = NULL;
    am_candidate bc = {0};
    for (size_t i = 0; i < s->st.n_agents; i++) {
        am_agent *a = s->st.agent_list[i];
        am_candidate pair[2] = {bc, candidate(a, t)};
        /* Keep the current best at index 0 so that ties keep the earlier
         * agent, as am_pick_agent does over the whole list. */
        long k = best ? am_pick_agent(pair, 2) : am_pick_agent(&pair[1], 1);
        if (best && k == 1) {
            best = a;
            bc = pair[1];
        } else if (!best && k == 0) {
            best = a;
            bc = pair[1];
        }
    }
    return best;
}

/* True when some agent could take one more task. */
static bool any_capacity(const am_service *s)
{
    for (size_t i = 0; i < s->st.n_agents; i++) {
        const am_agent *a = s->st.agent_list[i];
        if (!a->ghost && !a->busy && a->status == AM_AGENT_ONLINE &&
            a->active + a->reserved < a->max_concurrency)
            return true;
    }
    return false;
}

/* Decides the TaskAssigned of t to a; reserves a's capacity. */
static int plan(am_op *op, am_task *t, am_agent *a, const am_ctx *ctx)
{
    Agentmesh__V1__TaskAssigned p = AGENTMESH__V1__TASK_ASSIGNED__INIT;
    memset(op, 0, sizeof *op);
    p.task_id = t->id;
    p.agent_id = a->id;
    p.attempt = t->attempt;
    if (am_events_add(&op->events, AM_EV_TASK_ASSIGNED, &p.base, ctx, NULL))
        return -1;
    snprintf(op->stream, sizeof op->stream, "%s%s", AM_TASK_STREAM_PREFIX,
             t->id);
    op->expected = (int64_t)t->version;
    op->task = t;
    op->reserved = a;
    t->busy = true;
    a->reserved++;
    return 0;
}

void am_assign_pending(am_service *s, const am_ctx *ctx)
{
    am_op *ops = NULL;
    while (!s->broken && s->st.n_pending && any_capacity(s)) {
        size_t n = 0;
        if (!ops && !(ops = calloc(ROUND_MAX, sizeof *ops)))
            break;
        for (size_t i = 0; i < s->st.n_pending && n < ROUND_MAX; i++) {
            am_task *t = s->st.pending[i];
            if (t->busy)
                continue;
            am_agent *a = am_choose_agent(s, t);
            if (a && plan(&ops[n], t, a, ctx) == 0)
                n++;
            if (!any_capacity(s))
                break;
        }
        if (!n)
            break;
        bool failed = false;
        for (size_t i = 0; i < n; i++) {
            am_error err;
            if (am_op_run(s, &ops[i], &err)) {
                LOG_WARN("agent-manager: assignment not recorded: %s",
                         err.message);
                failed = true;
            }
        }
        if (failed)
            break;
    }
    free(ops);
}
