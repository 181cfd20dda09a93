/* The agentmesh gRPC server runtime: a server framework on the gRPC C core with
 * registered unary, server-streaming and bidi methods, a bounded worker pool,
 * rich error statuses, health, reflection and graceful shutdown. Every service
 * and the gateway build their gRPC servers on this header; see docs/RUNTIME.md.
 *
 * Threading: completion-queue threads never run handlers and never block;
 * handlers run on a bounded worker pool. Calls on an rpc_call are made from the
 * handler's own thread unless stated otherwise. */
#ifndef AGENTMESH_SERVICES_COMMON_RPC_H
#define AGENTMESH_SERVICES_COMMON_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <grpc/grpc.h>
#include <grpc/status.h>
#include <protobuf-c/protobuf-c.h>

#include "services/common/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes of the runtime's own calls (not gRPC codes). 0 is success. */
#define RPC_ERRORS(X)                                                          \
    X(RPC_OK, 0, "success")                                                    \
    X(RPC_ERR_NOMEM, 1, "out of memory")                                       \
    X(RPC_ERR_INVALID, 2, "invalid argument")                                  \
    X(RPC_ERR_EXISTS, 3, "already registered")                                 \
    X(RPC_ERR_NOT_FOUND, 4, "not found")                                       \
    X(RPC_ERR_STATE, 5, "not allowed in the current state")                    \
    X(RPC_ERR_BIND, 6, "cannot listen on the address")                         \
    X(RPC_ERR_GRPC, 7, "gRPC core call failed")                                \
    X(RPC_ERR_CANCELLED, 8, "call cancelled by the client or deadline")        \
    X(RPC_ERR_SHUTDOWN, 9, "server is shutting down")                          \
    X(RPC_ERR_CLOSED, 10, "client half-closed the stream")                     \
    X(RPC_ERR_TOO_LARGE, 11, "message larger than the configured limit")       \
    X(RPC_ERR_DECODE, 12, "message does not parse")                            \
    X(RPC_ERR_FULL, 13, "queue full")                                          \
    X(RPC_ERR_SYSTEM, 14, "system call failed")

typedef enum rpc_err {
#define RPC_ERR_ENUM_(name, value, text) name = value,
    RPC_ERRORS(RPC_ERR_ENUM_)
#undef RPC_ERR_ENUM_
} rpc_err;

/* A static, human-readable text for an rpc_err value; never NULL. */
const char *rpc_strerror(int err);

/* ---------------------------------------------------------------------------
 * Statuses with details (google.rpc.Status sent as grpc-status-details-bin).
 * ------------------------------------------------------------------------- */

/* A status under construction: a gRPC code, a message and google.protobuf.Any
 * details. Not thread-safe; owned by whoever holds the pointer. */
typedef struct rpc_status rpc_status;

/* Creates a status. `message` is copied (NULL means ""). Errors: NOMEM,
 * INVALID (code out of range). */
int rpc_status_create(grpc_status_code code, const char *message,
                      rpc_status **out);
/* Frees a status; NULL is a no-op. */
void rpc_status_destroy(rpc_status *st);

/* Appends any message as an Any detail, `type.googleapis.com/<full name>`.
 * The message is packed at once (the caller keeps ownership). NOMEM. */
int rpc_status_add_detail(rpc_status *st, const ProtobufCMessage *detail);
/* Appends google.rpc.RetryInfo{retry_delay}. INVALID if delay_ms < 0. */
int rpc_status_add_retry_info(rpc_status *st, int64_t retry_delay_ms);
/* Appends google.rpc.ErrorInfo{reason, domain, metadata}; `kv` holds nkv
 * key/value pairs (2*nkv strings), may be NULL when nkv is 0. Copied. */
int rpc_status_add_error_info(rpc_status *st, const char *reason,
                              const char *domain, const char *const *kv,
                              size_t nkv);
/* Adds a field violation to the status's google.rpc.BadRequest detail (one
 * BadRequest per status, created on first use). Copied. */
int rpc_status_add_bad_request(rpc_status *st, const char *field,
                               const char *description);

/* The code and message of a status (borrowed, valid until destroy). */
grpc_status_code rpc_status_code(const rpc_status *st);
const char *rpc_status_message(const rpc_status *st);

/* Serializes the status as a google.rpc.Status. On success *out is a buffer
 * the caller frees with free(). NOMEM. */
int rpc_status_encode(const rpc_status *st, uint8_t **out, size_t *len);

/* ---------------------------------------------------------------------------
 * Calls, as seen by a handler.
 * ------------------------------------------------------------------------- */

/* One incoming call. Owned by the runtime; valid from the handler's start until
 * the handler returns. */
typedef struct rpc_call rpc_call;

/* A method handler, run on a worker thread.
 * Unary: answer once with rpc_call_reply() or rpc_call_fail*(); a handler that
 *   returns without answering makes the call end with INTERNAL.
 * Server streaming: send any number of messages with rpc_call_send(), then
 *   return; the stream ends with OK unless rpc_call_fail*() was called.
 * Bidi streaming: `request` is NULL; read with rpc_call_recv() and write with
 *   rpc_call_send() until rpc_call_recv() answers RPC_ERR_CLOSED (bidi
 *   methods need a request descriptor).
 * `request` is the decoded request (borrowed; freed by the runtime after the
 * handler returns); for methods registered without descriptors it is NULL and
 * rpc_call_request_bytes() gives the raw bytes. */
typedef void (*rpc_handler_fn)(rpc_call *call, const ProtobufCMessage *request,
                               void *user);

typedef enum rpc_method_kind {
    RPC_METHOD_UNARY = 0,
    RPC_METHOD_SERVER_STREAM = 1,
    RPC_METHOD_BIDI_STREAM = 2
} rpc_method_kind;

/* A unary method's fast path, tried on the completion-queue thread before
 * the call is queued for a worker (docs/RUNTIME.md, "Fast paths"). It must
 * not block. It returns true when it took the call: it answered it, or it
 * deferred it with rpc_call_defer() and the answer comes later from another
 * thread. It returns false, having answered nothing, to let `handler` run on
 * a worker as usual (e.g. when it would have to wait). */
typedef bool (*rpc_fast_fn)(rpc_call *call, const ProtobufCMessage *request,
                            void *user);

/* A method to register. Plain data; the runtime copies what it needs. */
typedef struct rpc_method_desc {
    const char *name;                            /* "/pkg.Service/Method" */
    rpc_method_kind kind;
    const ProtobufCMessageDescriptor *request;   /* static; NULL = raw bytes */
    const ProtobufCMessageDescriptor *reply;     /* static; NULL = raw bytes */
    rpc_handler_fn handler;
    void *user;                                  /* borrowed for the server's life */
    rpc_fast_fn fast;                            /* unary only; may be NULL */
} rpc_method_desc;

/* Keeps a unary call open after its handler (or fast path) returns. The
 * call, its request and metadata stay valid until rpc_call_complete(call),
 * which must follow exactly once, from any thread, after the answer
 * (rpc_call_reply / rpc_call_fail*). Errors: STATE (not unary, or already
 * deferred). */
int rpc_call_defer(rpc_call *call);
/* Ends a deferred call with its answer (INTERNAL when none was given) and
 * drops the reference rpc_call_defer took: `call` is gone afterwards. */
void rpc_call_complete(rpc_call *call);

/* The full method name ("/pkg.Service/Method"); borrowed for the handler. */
const char *rpc_call_method(const rpc_call *call);
/* The client's address as gRPC reports it ("ipv4:127.0.0.1:5555"); "" if
 * unknown. Borrowed until the handler returns. */
const char *rpc_call_peer(const rpc_call *call);

/* The first value of request metadata `key` (lower-case, as gRPC delivers
 * it). *value is NUL-terminated (binary "-bin" values may hold NULs: use
 * *len), borrowed until the handler returns; `len` may be NULL.
 * Errors: NOT_FOUND. */
int rpc_call_metadata(const rpc_call *call, const char *key,
                      const char **value, size_t *len);

/* Who is calling: the value of x-agentmesh-principal when the call also
 * carries x-agentmesh-internal-token equal to the server's internal token
 * (constant-time compare), else "anonymous". Never NULL; borrowed. */
const char *rpc_call_actor(const rpc_call *call);
/* Comma-separated roles from x-agentmesh-roles under the same rule; "" when
 * not trusted or absent. */
const char *rpc_call_roles(const rpc_call *call);
/* Whether the internal token matched (the gateway vouched for the caller). */
bool rpc_call_trusted(const rpc_call *call);
/* Well-known metadata, or NULL when absent: traceparent, x-request-id,
 * x-correlation-id. Borrowed until the handler returns. */
const char *rpc_call_traceparent(const rpc_call *call);
const char *rpc_call_request_id(const rpc_call *call);
const char *rpc_call_correlation_id(const rpc_call *call);

/* Milliseconds until the call's deadline (0 when past, INT64_MAX when the
 * client set none). Thread-safe. */
int64_t rpc_call_time_left_ms(const rpc_call *call);
/* The deadline on CLOCK_MONOTONIC. Errors: NOT_FOUND (no deadline). */
int rpc_call_deadline(const rpc_call *call, struct timespec *out);
/* True once the client cancelled, the deadline passed, the connection broke,
 * or the server began shutting down a stream. Thread-safe. */
bool rpc_call_cancelled(const rpc_call *call);

/* A hook run once when the call is cancelled (see rpc_call_cancelled), so
 * that a handler waiting on its own condition variable can wake up. Runs on
 * a completion-queue or shutdown thread with the call's internal lock held:
 * it must not block and must not call rpc_call_* on the call. Runs at once
 * if the call is already cancelled. Replaces any earlier hook; pass NULL to
 * remove it before the hook's argument goes away (the runtime also removes
 * it when the handler returns). A deadline that merely passes does not run
 * the hook until gRPC cancels the call. */
typedef void (*rpc_cancel_fn)(void *arg);
int rpc_call_on_cancel(rpc_call *call, rpc_cancel_fn fn, void *arg);

/* The raw request bytes of a unary or server-streaming call. Borrowed until
 * the handler returns. */
int rpc_call_request_bytes(const rpc_call *call, const uint8_t **data,
                           size_t *len);

/* The underlying gRPC call, e.g. as parent of a proxied client call
 * (grpc_channel_create_call with GRPC_PROPAGATE_DEFAULTS). Borrowed until the
 * handler returns; do not start batches on it. */
grpc_call *rpc_call_grpc(rpc_call *call);

/* Adds trailing metadata sent with the final status (key lower-case, copied).
 * Errors: INVALID, STATE (status already sent), NOMEM. */
int rpc_call_add_trailer(rpc_call *call, const char *key, const char *value,
                         size_t len);
/* Adds initial (response header) metadata; only before the first message
 * or the status is sent. Same rules and errors as rpc_call_add_trailer. */
int rpc_call_add_header(rpc_call *call, const char *key, const char *value,
                        size_t len);

/* Answers a unary call with `reply` (packed at once; the caller keeps
 * ownership). Errors: INVALID (not the registered reply type), STATE
 * (already answered or not unary), TOO_LARGE, NOMEM, CANCELLED. */
int rpc_call_reply(rpc_call *call, const ProtobufCMessage *reply);
/* The same with already-serialized bytes (copied). */
int rpc_call_reply_bytes(rpc_call *call, const uint8_t *data, size_t len);

/* Ends the call with a non-OK status. printf-style message. For streams the
 * status is sent after the messages already queued. Errors: STATE (already
 * answered), INVALID (code OK). */
int rpc_call_fail(rpc_call *call, grpc_status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Ends the call with a status carrying details; takes ownership of *st and
 * sets it to NULL (also on error). */
int rpc_call_fail_status(rpc_call *call, rpc_status **st);
/* Ends the call with a code, message and already-serialized google.rpc.Status
 * details (copied; may be NULL), e.g. relayed from a backend by a proxy. Any
 * code, OK included. Errors: STATE (already answered), INVALID, NOMEM. */
int rpc_call_finish_raw(rpc_call *call, grpc_status_code code,
                        const char *message, const uint8_t *details,
                        size_t details_len);

/* Queues a stream message (server-streaming or bidi). The message is packed at
 * once (caller keeps ownership). Blocks while the per-stream send queue is
 * full. Errors: INVALID (not the registered reply type), CANCELLED (client
 * gone or deadline: stop producing),
 * SHUTDOWN (server stopping: return from the handler), STATE (not a stream,
 * or status already set), TOO_LARGE, NOMEM. */
int rpc_call_send(rpc_call *call, const ProtobufCMessage *msg);
int rpc_call_send_bytes(rpc_call *call, const uint8_t *data, size_t len);

/* Reads the next request message of a bidi stream, decoded with the method's
 * request descriptor; the caller frees *msg with protobuf_c_message_free_unpacked
 * (NULL allocator). Blocks until a message arrives. Errors: CLOSED (client
 * half-closed: reply and return), CANCELLED, SHUTDOWN, DECODE (malformed
 * message; the stream stays usable), TOO_LARGE, STATE (not bidi). */
int rpc_call_recv(rpc_call *call, ProtobufCMessage **msg);

/* Reads the next raw message of a bidi or fallback call. *data is freed by
 * the caller with free(). Errors as rpc_call_recv, except DECODE. */
int rpc_call_recv_bytes(rpc_call *call, uint8_t **data, size_t *len);

/* ---------------------------------------------------------------------------
 * Server.
 * ------------------------------------------------------------------------- */

typedef struct rpc_server rpc_server;

/* Fixed bounds (see docs/RUNTIME.md): request metadata per call, concurrent
 * HTTP/2 streams per client connection, health Watch streams per server. */
#define RPC_MAX_METADATA_BYTES 16384
#define RPC_MAX_STREAMS_PER_CONNECTION 1000
#define RPC_MAX_HEALTH_WATCHERS 4096

/* The Linux scheduling policy of the worker threads (docs/RUNTIME.md,
 * "Worker scheduling"). BATCH: a woken worker waits for the running thread's
 * time slice instead of preempting it. NORMAL: the kernel's default. */
typedef enum rpc_worker_policy {
    RPC_WORKER_POLICY_BATCH = 0,
    RPC_WORKER_POLICY_NORMAL = 1,
} rpc_worker_policy;

/* Plain options; start from rpc_server_options_init(). Zero values mean the
 * documented defaults. Strings are copied by rpc_server_create. */
typedef struct rpc_server_options {
    const char *listen_addr;        /* "127.0.0.1:50051"; port 0 picks one */
    unsigned worker_threads;        /* handler threads, default 8 */
    unsigned queue_depth;           /* calls waiting for a worker, default 64 */
    unsigned cq_threads;            /* completion-queue threads, default 1 */
    unsigned stream_queue_depth;    /* per-stream send queue, default 16 */
    rpc_worker_policy worker_policy; /* default RPC_WORKER_POLICY_BATCH */
    size_t max_recv_message_bytes;  /* default 4 MiB */
    size_t max_send_message_bytes;  /* default 4 MiB */
    int64_t grace_period_ms;        /* shutdown grace, default 10000 */
    int64_t keepalive_time_ms;      /* server pings idle clients, default 7200000 */
    int64_t keepalive_timeout_ms;   /* ping ack timeout, default 20000 */
    int64_t keepalive_min_ping_interval_ms; /* client ping floor, default 10000 */
    const char *internal_token;     /* NULL/"" = never trust principal metadata */
    metrics_registry *metrics;      /* borrowed for the server's life; may be NULL */
} rpc_server_options;

void rpc_server_options_init(rpc_server_options *opts);

/* Creates a server (not yet listening). Errors: NOMEM, INVALID. */
int rpc_server_create(const rpc_server_options *opts, rpc_server **out);

/* Registers a method. Only before rpc_server_start. Errors: INVALID (bad name
 * or kind, missing handler), EXISTS, STATE, NOMEM. */
int rpc_server_register(rpc_server *srv, const rpc_method_desc *method);

/* Serves grpc.health.v1.Health (Check, Watch). Before start. The whole-server
 * entry "" is SERVING once started (unless set before start) and every entry
 * is NOT_SERVING once shutdown begins. */
int rpc_server_enable_health(rpc_server *srv);

/* Serves grpc.reflection.v1 and v1alpha ServerReflection from a serialized
 * google.protobuf.FileDescriptorSet (e.g. the embedded rpc_descriptor_set();
 * parsed at once, the bytes need not outlive the call). May be called again
 * with more sets: their files add up (a file name already known is skipped).
 * Before start. Errors: DECODE, NOMEM, STATE, FULL. */
int rpc_server_enable_reflection(rpc_server *srv, const uint8_t *fds,
                                 size_t len);

/* Routes every method nobody registered to `handler` (instead of answering
 * UNIMPLEMENTED), e.g. the gateway's transparent proxy. The handler runs on a
 * worker like a raw bidi call: `request` is NULL, rpc_call_method() names the
 * method, rpc_call_recv_bytes() reads the client's messages until CLOSED,
 * rpc_call_send_bytes() writes, rpc_call_finish_raw() or rpc_call_fail*()
 * ends it (returning without an answer ends it OK). Such calls are counted
 * under the method label "unknown" and, at shutdown, get the grace period
 * like unary calls. Before start. Errors: INVALID, STATE. */
int rpc_server_set_fallback(rpc_server *srv, rpc_handler_fn handler,
                            void *user);

typedef enum rpc_health_status {
    RPC_HEALTH_SERVING = 1,
    RPC_HEALTH_NOT_SERVING = 2
} rpc_health_status;

/* Sets the health of `service` ("" = whole server) and wakes its Watch
 * streams. Thread-safe. Errors: STATE (health not enabled), NOMEM, INVALID. */
int rpc_health_set(rpc_server *srv, const char *service,
                   rpc_health_status status);

/* Binds and starts serving. *port (may be NULL) receives the bound port.
 * Errors: BIND, GRPC, NOMEM, STATE (already started). */
int rpc_server_start(rpc_server *srv, int *port);

/* Graceful stop: stops accepting calls, sets health NOT_SERVING, tells
 * streams to end (rpc_call_cancelled() turns true, send/recv answer
 * SHUTDOWN), waits up to grace_ms (< 0: the configured grace period) for
 * in-flight calls, then cancels the rest and waits for the handlers to return.
 * Blocking; call from one thread (not a handler). Idempotent. *all_finished
 * (may be NULL) tells whether everything ended within the grace period. */
int rpc_server_shutdown(rpc_server *srv, int64_t grace_ms, bool *all_finished);

/* Stops the server if needed (no grace) and frees it; NULL is a no-op. */
void rpc_server_destroy(rpc_server *srv);

/* Number of calls accepted and not yet finished; thread-safe. */
size_t rpc_server_inflight(const rpc_server *srv);

#ifdef __cplusplus
}
#endif

#endif
