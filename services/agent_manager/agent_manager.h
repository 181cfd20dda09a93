/* The agent manager's domain service: agents, their tasks and the events
 * that record every change, over one event store (DESIGN §4 AgentManager).
 * Each command validates, decides under the service lock, appends through
 * the store (group-committed, with the stream's expected version) and
 * applies what was committed; the gRPC layer (handlers.c) is a thin
 * translation on top. See docs/AGENT_MANAGER.md.
 *
 * Every call is thread-safe. Commands return a canonical gRPC status code
 * (0 = OK) and, on failure, a message in *err. Replies are protobuf-c
 * messages owned by the caller: free with protobuf_c_message_free_unpacked
 * (msg, NULL). Request messages are borrowed for the call. */
#ifndef AGENTMESH_AGENT_MANAGER_H
#define AGENTMESH_AGENT_MANAGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agentmesh/v1/agents.pb-c.h"
#include "eventstore/eventstore.h"

typedef struct am_service am_service;

/* Plain data; start from am_options_init. */
typedef struct am_options {
    es_store *store;              /* borrowed for the service's life */
    int64_t heartbeat_timeout_ms; /* silence before OFFLINE (default 30000) */
    size_t max_input_bytes;       /* task input/output/error (256 KiB) */
    uint64_t snapshot_every;      /* events between snapshots (1000; 0 off) */
    size_t max_pending;           /* PENDING tasks before SubmitTask and
                                     RetryTask answer RESOURCE_EXHAUSTED
                                     (default 100000) */
    struct metrics_registry *metrics; /* borrowed for the service's life;
                                         NULL = no metrics */
} am_options;

void am_options_init(am_options *opts);

/* Who and what caused a command: event metadata (borrowed for the call).
 * NULL fields are recorded empty. */
typedef struct am_ctx {
    const char *actor;
    const char *correlation_id;
    const char *causation_id;
    const char *traceparent;
} am_ctx;

/* A failure: its message (NUL-terminated; INVALID_ARGUMENT messages start
 * with the field's name and a colon) and, for ABORTED, the entity's current
 * version. Zero-initialise it: failures set only what they know. */
typedef struct am_error {
    char message[320];
    bool has_version;
    uint64_t current_version;
} am_error;

/* Loads the latest state snapshot, replays the log after it and starts the
 * monitor thread (heartbeat timeouts, periodic snapshots). On *out the
 * caller owns the service (am_service_destroy). Errors (es_status): those of
 * the store's reads, ES_CORRUPT (an undecodable snapshot or event),
 * ES_NOMEM, ES_IO (thread start). */
int am_service_create(const am_options *opts, am_service **out);
/* Stops the monitor, writes a final snapshot and frees the service; the
 * store stays open (the caller owns it). No command may be running. NULL is
 * a no-op. */
void am_service_destroy(am_service *s);

/* Writes a snapshot of the whole state now. Returns an es_status:
 * ES_CORRUPT (nothing written) once the state is known to have missed a
 * committed event, else those of es_write, ES_NOMEM. */
int am_service_snapshot(am_service *s);
/* Position up to which the state is applied, and agent/task counts. */
void am_service_counts(am_service *s, uint64_t *position, size_t *agents,
                       size_t *tasks, size_t *pending);

typedef Agentmesh__V1__Agent am_agent_msg;
typedef Agentmesh__V1__Task am_task_msg;

int am_register_agent(am_service *s, const am_ctx *ctx,
                      const Agentmesh__V1__RegisterAgentRequest *req,
                      am_agent_msg **out, am_error *err);
int am_get_agent(am_service *s, const Agentmesh__V1__GetAgentRequest *req,
                 am_agent_msg **out, am_error *err);
int am_update_agent(am_service *s, const am_ctx *ctx,
                    const Agentmesh__V1__UpdateAgentRequest *req,
                    am_agent_msg **out, am_error *err);
int am_deregister_agent(am_service *s, const am_ctx *ctx,
                        const Agentmesh__V1__DeregisterAgentRequest *req,
                        am_agent_msg **out, am_error *err);
int am_heartbeat(am_service *s, const am_ctx *ctx,
                 const Agentmesh__V1__HeartbeatRequest *req,
                 Agentmesh__V1__HeartbeatResponse **out, am_error *err);

int am_submit_task(am_service *s, const am_ctx *ctx,
                   const Agentmesh__V1__SubmitTaskRequest *req,
                   am_task_msg **out, am_error *err);

/* SubmitTask without waiting, for the gRPC completion-queue thread
 * (docs/AGENT_MANAGER.md, "SubmitTask's fast path"). Returns AM_WOULD_BLOCK,
 * having changed nothing and called nothing, where am_submit_task would
 * wait: the service lock is held by another thread, an entity the command
 * needs has an append in flight, or AM_ASYNC_MAX submits are in flight; the
 * caller then runs am_submit_task. Otherwise returns 0 and the outcome goes
 * to done(arg, code, task, err) exactly once: before returning when nothing
 * is appended (a rejected request, a replayed idempotency key), else from
 * the event store's writer thread after the commit. done owns `task` (NULL
 * unless code is 0); `err` is borrowed. ctx's strings and req must stay
 * valid until done. */
#define AM_WOULD_BLOCK 1
#define AM_ASYNC_MAX 4096
typedef void (*am_submit_done_fn)(void *arg, int code, am_task_msg *task,
                                  const am_error *err);
int am_submit_task_async(am_service *s, const am_ctx *ctx,
                         const Agentmesh__V1__SubmitTaskRequest *req,
                         am_submit_done_fn done, void *arg);
int am_get_task(am_service *s, const Agentmesh__V1__GetTaskRequest *req,
                am_task_msg **out, am_error *err);
int am_start_task(am_service *s, const am_ctx *ctx,
                  const Agentmesh__V1__StartTaskRequest *req,
                  am_task_msg **out, am_error *err);
int am_report_progress(am_service *s, const am_ctx *ctx,
                       const Agentmesh__V1__ReportProgressRequest *req,
                       am_task_msg **out, am_error *err);
int am_complete_task(am_service *s, const am_ctx *ctx,
                     const Agentmesh__V1__CompleteTaskRequest *req,
                     am_task_msg **out, am_error *err);
int am_fail_task(am_service *s, const am_ctx *ctx,
                 const Agentmesh__V1__FailTaskRequest *req, am_task_msg **out,
                 am_error *err);
int am_cancel_task(am_service *s, const am_ctx *ctx,
                   const Agentmesh__V1__CancelTaskRequest *req,
                   am_task_msg **out, am_error *err);
int am_retry_task(am_service *s, const am_ctx *ctx,
                  const Agentmesh__V1__RetryTaskRequest *req,
                  am_task_msg **out, am_error *err);

/* For WatchTask: a copy of the task as it is now (its `position` is where
 * to follow the log from), owned by the caller (am_task_free in state.h).
 * Errors: INVALID_ARGUMENT, NOT_FOUND. */
struct am_task;
int am_watch_begin(am_service *s, const char *task_id, struct am_task **out,
                   am_error *err);

#endif
