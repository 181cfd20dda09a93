/* The gRPC face of the agent manager: the agentmesh.v1.AgentManager methods
 * (handlers.c) including the WatchTask stream (watch.c), registered on an
 * rpc_server over an am_service. */
#ifndef AGENTMESH_AGENT_MANAGER_HANDLERS_H
#define AGENTMESH_AGENT_MANAGER_HANDLERS_H

#include "eventstore/eventstore.h"
#include "services/agent_manager/agent_manager.h"
#include "services/common/rpc.h"

typedef struct am_grpc am_grpc;

/* Registers every AgentManager method on srv (before it starts) and marks
 * "agentmesh.v1.AgentManager" SERVING in health. svc and store are borrowed;
 * *out is owned by the caller and must outlive the server (am_grpc_destroy
 * after rpc_server_destroy). fast_submit: SubmitTask is tried on the
 * completion-queue thread first (am_submit_task_async). Returns an rpc_err. */
int am_grpc_register(rpc_server *srv, am_service *svc, es_store *store,
                     bool fast_submit, am_grpc **out);
void am_grpc_destroy(am_grpc *g);

/* The WatchTask handler (watch.c); user is the am_grpc. */
void am_watch_task(rpc_call *call, const ProtobufCMessage *request,
                   void *user);

/* What the handlers share (plain data). */
struct am_grpc {
    am_service *svc;
    es_store *store;
    bool fast_submit; /* SubmitTask's fast path (h_submit_fast) */
};

/* Event metadata of a call: its actor, correlation id (x-correlation-id,
 * else x-request-id, else a new UUID), causation id (x-request-id, else the
 * correlation id) and traceparent (the caller's, else a new one). Client
 * values are cut to the buffers below, well inside the store's per-string
 * limit, so a long header never fails a command. */
typedef struct am_call_ctx {
    am_ctx ctx;
    char correlation[129];
    char causation[129];
    char traceparent[64];
    char actor[257];
} am_call_ctx;
void am_call_ctx_init(am_call_ctx *c, rpc_call *call);

#endif
