/* WatchTask: the task as it is, then one TaskUpdate per change, read from
 * the log (a subscription after the task's position, so nothing between the
 * first message and the live tail is missed) and folded onto a private copy
 * of the task with the same fold the state uses. The stream ends by itself
 * at COMPLETED or CANCELLED, else at the client's deadline or cancellation,
 * or at server shutdown. */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "services/agent_manager/handlers.h"
#include "services/agent_manager/internal.h"

#define WAIT_MS 500

typedef struct guard {
    pthread_mutex_t mu;
    es_sub *sub;
} guard;

static void on_cancel(void *arg)
{
    guard *g = arg;
    pthread_mutex_lock(&g->mu);
    if (g->sub)
        es_sub_cancel(g->sub);
    pthread_mutex_unlock(&g->mu);
}

/* Sends the task with the event type that produced it. */
static int send_update(rpc_call *call, const am_task *t, const char *type)
{
    Agentmesh__V1__TaskUpdate u = AGENTMESH__V1__TASK_UPDATE__INIT;
    u.task = am_task_to_proto(t);
    if (!u.task)
        return RPC_ERR_NOMEM;
    u.event_type = (char *)type;
    int rc = rpc_call_send(call, &u.base);
    protobuf_c_message_free_unpacked(&u.task->base, NULL);
    return rc;
}

void am_watch_task(rpc_call *call, const ProtobufCMessage *request, void *user)
{
    const Agentmesh__V1__WatchTaskRequest *req =
        (const Agentmesh__V1__WatchTaskRequest *)request;
    am_grpc *g = user;
    guard gd = {PTHREAD_MUTEX_INITIALIZER, NULL};
    char stream[AM_STREAM_MAX];
    am_task *t = NULL;
    es_sub *sub = NULL;
    am_error err;
    int rc;

    memset(&err, 0, sizeof err);
    if ((rc = am_watch_begin(g->svc, req->task_id, &t, &err))) {
        rpc_call_fail(call, (grpc_status_code)rc, "%s", err.message);
        return;
    }
    if (send_update(call, t, "") != RPC_OK || am_task_state_final(t->state))
        goto out;
    snprintf(stream, sizeof stream, "%s%s", AM_TASK_STREAM_PREFIX, t->id);
    es_filter f = {.stream_prefix = stream};
    if ((rc = es_sub_open(g->store, t->position, &f, &sub))) {
        rpc_call_fail(call, (grpc_status_code)es_status_grpc_code(rc),
                      "cannot follow task %s: %s", t->id, es_strerror(rc));
        goto out;
    }
    gd.sub = sub;
    rpc_call_on_cancel(call, on_cancel, &gd);
    for (;;) {
        es_event *ev = NULL;
        bool changed = false;
        rc = es_sub_next(sub, WAIT_MS, &ev);
        if (rc == ES_TIMEOUT) {
            if (rpc_call_cancelled(call))
                break;
            continue;
        }
        if (rc == ES_CLOSED)
            break;
        if (rc) {
            rpc_call_fail(call, (grpc_status_code)es_status_grpc_code(rc),
                          "following task %s: %s", t->id, es_strerror(rc));
            break;
        }
        /* The prefix also matches longer ids ("task-1" and "task-10"). */
        if (strcmp(ev->stream, stream) == 0 &&
            am_task_apply(t, ev, &changed) != 0) {
            es_event_free(ev);
            rpc_call_fail(call, GRPC_STATUS_INTERNAL,
                          "task %s: undecodable event", t->id);
            break;
        }
        int send_rc = changed ? send_update(call, t, ev->type) : RPC_OK;
        es_event_free(ev);
        if (send_rc != RPC_OK || am_task_state_final(t->state))
            break;
    }
    rpc_call_on_cancel(call, NULL, NULL);
    pthread_mutex_lock(&gd.mu);
    gd.sub = NULL;
    pthread_mutex_unlock(&gd.mu);
out:
    es_sub_destroy(sub);
    pthread_mutex_destroy(&gd.mu);
    am_task_free(t);
}
