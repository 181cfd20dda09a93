/* Liveness: the Heartbeat command and the monitor thread. A heartbeat from
 * an ONLINE agent only refreshes its last-seen time in memory (no event); one
 * from an OFFLINE agent records AgentWentOnline. The monitor records
 * AgentWentOffline for agents silent longer than the timeout, writes the
 * periodic state snapshots and refreshes the metrics. */
#include <errno.h>
#include <grpc/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agentmesh/v1/events.pb-c.h"
#include "services/agent_manager/internal.h"
#include "services/common/log.h"

static int64_t next_due(const am_service *s)
{
    return am_now_ns() + s->opts.heartbeat_timeout_ms * 1000000;
}

int am_heartbeat(am_service *s, const am_ctx *ctx,
                 const Agentmesh__V1__HeartbeatRequest *req,
                 Agentmesh__V1__HeartbeatResponse **out, am_error *err)
{
    Agentmesh__V1__HeartbeatResponse *r = NULL;
    am_op op;
    int rc = 0;

    if (!am_id_valid(req->agent_id))
        return am_fail(err, GRPC_STATUS_INVALID_ARGUMENT,
                       "agent_id: 1-%d characters of [A-Za-z0-9._:-]",
                       AM_ID_MAX);
    memset(&op, 0, sizeof op);
    snprintf(op.stream, sizeof op.stream, "%s%s", AM_AGENT_STREAM_PREFIX,
             req->agent_id);
    if (!(r = malloc(sizeof *r)))
        return am_fail(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    agentmesh__v1__heartbeat_response__init(r);

    pthread_mutex_lock(&s->mu);
    am_agent *a = NULL;
    for (;;) {
        a = am_map_get(s->st.agents, req->agent_id);
        if (!a || !a->busy)
            break;
        /* An ONLINE agent's heartbeat writes nothing: no need to wait. */
        if (a->status == AM_AGENT_ONLINE && !a->ghost)
            break;
        pthread_cond_wait(&s->cv, &s->mu);
    }
    if (!a || a->ghost) {
        rc = am_fail(err, GRPC_STATUS_NOT_FOUND, "agent %s not found",
                     req->agent_id);
        goto out;
    }
    if (a->status == AM_AGENT_DEREGISTERED) {
        rc = am_fail(err, GRPC_STATUS_FAILED_PRECONDITION,
                     "agent %s is deregistered; register it again", a->id);
        goto out;
    }
    a->seen_mono_ms = am_mono_ms();
    a->last_seen = am_now_ns();
    if (a->status == AM_AGENT_OFFLINE) {
        if (s->broken) {
            rc = am_fail(err, GRPC_STATUS_UNAVAILABLE,
                         "the agent manager's state diverged from its log");
            goto out;
        }
        Agentmesh__V1__AgentWentOnline p = AGENTMESH__V1__AGENT_WENT_ONLINE__INIT;
        p.agent_id = a->id;
        p.at_unix_nano = a->last_seen;
        op.expected = (int64_t)a->version;
        op.agent = a;
        if (am_events_add(&op.events, AM_EV_AGENT_ONLINE, &p.base, ctx, NULL)) {
            rc = am_fail(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
        if ((rc = am_op_run(s, &op, err)))
            goto out;
        r->position = op.res.last_position;
        am_ctx_buf fb;
        am_ctx_followup(&fb, ctx, op.last_id);
        am_assign_pending(s, &fb.ctx);
    }
    r->next_heartbeat_due_unix_nano = next_due(s);
    if (!(r->agent = am_agent_to_proto(a)))
        rc = am_fail(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
out:
    pthread_mutex_unlock(&s->mu);
    am_events_free(&op.events);
    if (rc)
        protobuf_c_message_free_unpacked(&r->base, NULL);
    else
        *out = r;
    return rc;
}

/* With s->mu held: records AgentWentOffline for one silent agent. */
static void go_offline(am_service *s, am_agent *a, int64_t silent_ms)
{
    am_ctx_buf cb;
    am_op op;
    am_error err;
    char reason[96];

    am_ctx_followup(&cb, NULL, NULL);
    memset(&op, 0, sizeof op);
    snprintf(op.stream, sizeof op.stream, "%s%s", AM_AGENT_STREAM_PREFIX, a->id);
    snprintf(reason, sizeof reason, "no heartbeat for %lld ms",
             (long long)silent_ms);
    Agentmesh__V1__AgentWentOffline p = AGENTMESH__V1__AGENT_WENT_OFFLINE__INIT;
    p.agent_id = a->id;
    p.reason = reason;
    p.last_seen_unix_nano = a->last_seen;
    op.expected = (int64_t)a->version;
    op.agent = a;
    if (am_events_add(&op.events, AM_EV_AGENT_OFFLINE, &p.base, &cb.ctx, NULL))
        return;
    if (am_op_run(s, &op, &err))
        LOG_WARN("agent-manager: cannot record agent %s offline: %s", a->id,
                 err.message);
}

/* With s->mu held: every ONLINE agent silent past the timeout goes OFFLINE.
 * Agents with an append or an assignment in flight wait for the next pass. */
static void check_silence(am_service *s)
{
    int64_t now = am_mono_ms();
    for (size_t i = 0; i < s->st.n_agents && !s->broken; i++) {
        am_agent *a = s->st.agent_list[i];
        int64_t silent = now - a->seen_mono_ms;
        if (a->ghost || a->busy || a->reserved || a->status != AM_AGENT_ONLINE ||
            silent < s->opts.heartbeat_timeout_ms)
            continue;
        /* go_offline drops the lock while appending: agents are never
         * freed, but a failed registration's ghost leaving the list may make
         * this pass skip one agent, which the next pass then checks. */
        go_offline(s, a, silent);
    }
}

static void *monitor_main(void *arg)
{
    am_service *s = arg;
    int64_t period = s->opts.heartbeat_timeout_ms / 4;
    if (period < 10)
        period = 10;
    if (period > 1000)
        period = 1000;
    pthread_mutex_lock(&s->mu);
    while (!s->stopping) {
        struct timespec dl;
        clock_gettime(CLOCK_MONOTONIC, &dl);
        dl.tv_sec += period / 1000;
        dl.tv_nsec += (period % 1000) * 1000000;
        if (dl.tv_nsec >= 1000000000) {
            dl.tv_sec++;
            dl.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&s->monitor_cv, &s->mu, &dl);
        if (s->stopping)
            break;
        check_silence(s);
        bool due = am_snapshot_due(s->opts.snapshot_every,
                                   s->st.applied - s->snap_applied,
                                   s->snap_entities);
        pthread_mutex_unlock(&s->mu);
        if (due) {
            int rc = am_service_snapshot(s);
            if (rc)
                LOG_WARN("agent-manager: snapshot failed: %s", es_strerror(rc));
        }
        if (s->stats)
            am_stats_refresh(s, s->stats);
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

int am_monitor_start(am_service *s)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int rc = pthread_cond_init(&s->monitor_cv, &ca);
    pthread_condattr_destroy(&ca);
    if (rc)
        return -1;
    if (pthread_create(&s->monitor, NULL, monitor_main, s)) {
        pthread_cond_destroy(&s->monitor_cv);
        return -1;
    }
    pthread_setname_np(s->monitor, "am-heartbeat");
    s->monitor_started = true;
    return 0;
}

void am_monitor_stop(am_service *s)
{
    if (!s->monitor_started)
        return;
    pthread_mutex_lock(&s->mu);
    s->stopping = true;
    pthread_cond_signal(&s->monitor_cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->monitor, NULL);
    pthread_cond_destroy(&s->monitor_cv);
    s->monitor_started = false;
}
