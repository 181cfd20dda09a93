/* The AgentManager gRPC handlers: each takes the decoded request, builds the
 * event metadata from the call, runs the domain command (agent_manager.h)
 * and answers with its message or its status. */
#include "services/agent_manager/handlers.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/rpc/error_details.pb-c.h"
#include "services/agent_manager/internal.h"

void am_call_ctx_init(am_call_ctx *c, rpc_call *call)
{
    const char *corr = rpc_call_correlation_id(call);
    const char *req = rpc_call_request_id(call);
    const char *tp = rpc_call_traceparent(call);
    memset(c, 0, sizeof *c);
    if (!corr)
        corr = req;
    if (corr)
        snprintf(c->correlation, sizeof c->correlation, "%s", corr);
    else if (am_uuid_new(c->correlation))
        c->correlation[0] = '\0';
    if (tp)
        snprintf(c->traceparent, sizeof c->traceparent, "%s", tp);
    else if (am_traceparent_new(c->traceparent))
        c->traceparent[0] = '\0';
    if (tp && strlen(tp) >= sizeof c->traceparent && am_traceparent_new(c->traceparent))
        c->traceparent[0] = '\0';
    snprintf(c->causation, sizeof c->causation, "%s", req ? req : c->correlation);
    snprintf(c->actor, sizeof c->actor, "%s", rpc_call_actor(call));
    c->ctx.actor = c->actor;
    c->ctx.correlation_id = c->correlation;
    c->ctx.causation_id = c->causation;
    c->ctx.traceparent = c->traceparent;
}

#define DOMAIN "agentmesh.v1.AgentManager"

/* The failure as a google.rpc.Status with details: BadRequest naming the
 * field for INVALID_ARGUMENT, ErrorInfo WRONG_EXPECTED_VERSION with the
 * current version for ABORTED, PreconditionFailure for FAILED_PRECONDITION. */
static void fail(rpc_call *call, int code, const am_error *err)
{
    rpc_status *st = NULL;
    int rc = rpc_status_create((grpc_status_code)code, err->message, &st);
    if (rc == RPC_OK && code == GRPC_STATUS_INVALID_ARGUMENT) {
        char field[64] = "";
        const char *colon = strchr(err->message, ':');
        if (colon && (size_t)(colon - err->message) < sizeof field)
            memcpy(field, err->message, (size_t)(colon - err->message));
        rc = rpc_status_add_bad_request(st, field, err->message);
    } else if (rc == RPC_OK && code == GRPC_STATUS_ABORTED && err->has_version) {
        char v[24];
        snprintf(v, sizeof v, "%llu", (unsigned long long)err->current_version);
        const char *kv[] = {"current_version", v};
        rc = rpc_status_add_error_info(st, "WRONG_EXPECTED_VERSION", DOMAIN, kv, 1);
    } else if (rc == RPC_OK && code == GRPC_STATUS_FAILED_PRECONDITION) {
        Google__Rpc__PreconditionFailure pf = GOOGLE__RPC__PRECONDITION_FAILURE__INIT;
        Google__Rpc__PreconditionFailure__Violation v =
            GOOGLE__RPC__PRECONDITION_FAILURE__VIOLATION__INIT;
        Google__Rpc__PreconditionFailure__Violation *vs[] = {&v};
        v.type = "STATE";
        v.subject = "";
        v.description = (char *)err->message;
        pf.n_violations = 1;
        pf.violations = vs;
        rc = rpc_status_add_detail(st, &pf.base);
    }
    if (rc != RPC_OK) {
        rpc_status_destroy(st);
        rpc_call_fail(call, (grpc_status_code)code, "%s", err->message);
        return;
    }
    rpc_call_fail_status(call, &st);
}

/* Sends the reply or the failure, and frees the reply. */
static void answer(rpc_call *call, int code, ProtobufCMessage *reply,
                   const am_error *err)
{
    if (code == 0) {
        rpc_call_reply(call, reply);
        protobuf_c_message_free_unpacked(reply, NULL);
    } else {
        fail(call, code, err);
    }
}

/* A command handler: request type, domain function, reply type. */
#define COMMAND(handler, ReqT, fn, RepT)                                       \
    static void handler(rpc_call *call, const ProtobufCMessage *request,       \
                        void *user)                                            \
    {                                                                          \
        am_grpc *g = user;                                                     \
        am_call_ctx c;                                                         \
        am_error err;                                                          \
        memset(&err, 0, sizeof err);                                           \
        RepT *reply = NULL;                                                    \
        am_call_ctx_init(&c, call);                                            \
        int code = fn(g->svc, &c.ctx, (const ReqT *)request, &reply, &err);    \
        answer(call, code, reply ? &reply->base : NULL, &err);                 \
    }

/* A query handler: no metadata. */
#define QUERY(handler, ReqT, fn, RepT)                                         \
    static void handler(rpc_call *call, const ProtobufCMessage *request,       \
                        void *user)                                            \
    {                                                                          \
        am_grpc *g = user;                                                     \
        am_error err;                                                          \
        memset(&err, 0, sizeof err);                                           \
        RepT *reply = NULL;                                                    \
        int code = fn(g->svc, (const ReqT *)request, &reply, &err);            \
        answer(call, code, reply ? &reply->base : NULL, &err);                 \
    }

COMMAND(h_register, Agentmesh__V1__RegisterAgentRequest, am_register_agent,
        Agentmesh__V1__Agent)
QUERY(h_get_agent, Agentmesh__V1__GetAgentRequest, am_get_agent,
      Agentmesh__V1__Agent)
COMMAND(h_update, Agentmesh__V1__UpdateAgentRequest, am_update_agent,
        Agentmesh__V1__Agent)
COMMAND(h_deregister, Agentmesh__V1__DeregisterAgentRequest,
        am_deregister_agent, Agentmesh__V1__Agent)
COMMAND(h_heartbeat, Agentmesh__V1__HeartbeatRequest, am_heartbeat,
        Agentmesh__V1__HeartbeatResponse)
COMMAND(h_submit, Agentmesh__V1__SubmitTaskRequest, am_submit_task,
        Agentmesh__V1__Task)

/* SubmitTask's fast path, on the completion-queue thread: decided there and
 * answered from the event store's writer once committed, so no worker
 * thread is woken and none waits for the commit. Declines (the worker runs
 * h_submit) whenever the command would have to wait. */
typedef struct fast_submit {
    am_call_ctx c;
    rpc_call *call;
} fast_submit;

static void submit_done(void *arg, int code, am_task_msg *task,
                        const am_error *err)
{
    fast_submit *f = arg;
    answer(f->call, code, task ? &task->base : NULL, err);
    rpc_call_complete(f->call);
    free(f);
}

static bool h_submit_fast(rpc_call *call, const ProtobufCMessage *request,
                          void *user)
{
    am_grpc *g = user;
    fast_submit *f = malloc(sizeof *f);
    if (!f)
        return false;
    if (rpc_call_defer(call) != RPC_OK) {
        free(f);
        return false;
    }
    am_call_ctx_init(&f->c, call);
    f->call = call;
    if (am_submit_task_async(g->svc, &f->c.ctx,
                             (const Agentmesh__V1__SubmitTaskRequest *)request,
                             submit_done, f) == AM_WOULD_BLOCK) {
        free(f);
        return false; /* the runtime drops the deferral */
    }
    return true;
}
QUERY(h_get_task, Agentmesh__V1__GetTaskRequest, am_get_task,
      Agentmesh__V1__Task)
COMMAND(h_start, Agentmesh__V1__StartTaskRequest, am_start_task,
        Agentmesh__V1__Task)
COMMAND(h_progress, Agentmesh__V1__ReportProgressRequest, am_report_progress,
        Agentmesh__V1__Task)
COMMAND(h_complete, Agentmesh__V1__CompleteTaskRequest, am_complete_task,
        Agentmesh__V1__Task)
COMMAND(h_fail, Agentmesh__V1__FailTaskRequest, am_fail_task,
        Agentmesh__V1__Task)
COMMAND(h_cancel, Agentmesh__V1__CancelTaskRequest, am_cancel_task,
        Agentmesh__V1__Task)
COMMAND(h_retry, Agentmesh__V1__RetryTaskRequest, am_retry_task,
        Agentmesh__V1__Task)

#define SVC "/agentmesh.v1.AgentManager/"
#define M(name, kind, req, rep, fn)                                            \
    {SVC name, kind, &agentmesh__v1__##req##__descriptor,                      \
     &agentmesh__v1__##rep##__descriptor, fn, NULL, NULL}

int am_grpc_register(rpc_server *srv, am_service *svc, es_store *store,
                     bool fast_submit, am_grpc **out)
{
    am_grpc *g = calloc(1, sizeof *g);
    int rc = RPC_OK;
    if (!g)
        return RPC_ERR_NOMEM;
    g->svc = svc;
    g->store = store;
    g->fast_submit = fast_submit;
    rpc_method_desc methods[] = {
        M("RegisterAgent", RPC_METHOD_UNARY, register_agent_request, agent, h_register),
        M("GetAgent", RPC_METHOD_UNARY, get_agent_request, agent, h_get_agent),
        M("UpdateAgent", RPC_METHOD_UNARY, update_agent_request, agent, h_update),
        M("DeregisterAgent", RPC_METHOD_UNARY, deregister_agent_request, agent,
          h_deregister),
        M("Heartbeat", RPC_METHOD_UNARY, heartbeat_request, heartbeat_response,
          h_heartbeat),
        M("SubmitTask", RPC_METHOD_UNARY, submit_task_request, task, h_submit),
        M("GetTask", RPC_METHOD_UNARY, get_task_request, task, h_get_task),
        M("StartTask", RPC_METHOD_UNARY, start_task_request, task, h_start),
        M("ReportProgress", RPC_METHOD_UNARY, report_progress_request, task,
          h_progress),
        M("CompleteTask", RPC_METHOD_UNARY, complete_task_request, task,
          h_complete),
        M("FailTask", RPC_METHOD_UNARY, fail_task_request, task, h_fail),
        M("CancelTask", RPC_METHOD_UNARY, cancel_task_request, task, h_cancel),
        M("RetryTask", RPC_METHOD_UNARY, retry_task_request, task, h_retry),
        M("WatchTask", RPC_METHOD_SERVER_STREAM, watch_task_request,
          task_update, am_watch_task),
    };
    for (size_t i = 0; i < sizeof methods / sizeof methods[0] && !rc; i++) {
        methods[i].user = g;
        if (methods[i].handler == h_submit && g->fast_submit)
            methods[i].fast = h_submit_fast;
        rc = rpc_server_register(srv, &methods[i]);
    }
    if (rc) {
        free(g);
        return rc;
    }
    rpc_health_set(srv, "agentmesh.v1.AgentManager", RPC_HEALTH_SERVING);
    *out = g;
    return RPC_OK;
}

void am_grpc_destroy(am_grpc *g) { free(g); }
