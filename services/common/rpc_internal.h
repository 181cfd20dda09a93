/* Internals shared by the runtime's files (server, call, stream, pool,
 * health, reflection): the call and server structures and the `rpc__`
 * functions. Not for services: they use rpc.h only.
 *
 * Lock order: server->mu, then health->mu, then call->mu. A call is freed when
 * its reference count (one per outstanding gRPC batch, one for the handler,
 * one per internal holder such as a health watcher list) reaches zero. */
#ifndef AGENTMESH_SERVICES_COMMON_RPC_INTERNAL_H
#define AGENTMESH_SERVICES_COMMON_RPC_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "services/common/metrics.h"
#include "services/common/rpc.h"

/* Every completion-queue tag starts with this: the CQ thread calls done().
 * The pointer is set once before the tag is first used and read atomically,
 * because the hand-off through the gRPC core is invisible to TSan. */
struct rpc__tag;
typedef void (*rpc__tag_fn)(struct rpc__tag *tag, bool ok);
typedef struct rpc__tag {
    _Atomic(rpc__tag_fn) done;
} rpc__tag;

/* A handler that runs on the completion-queue thread when the call arrives,
 * instead of on a worker (health Watch): it must not block. */
typedef void (*rpc__inline_fn)(rpc_call *call, const ProtobufCMessage *request,
                               void *user);
/* Runs (without the call lock) when an inline call is cancelled or the server
 * shuts down; it must end the call with rpc__call_end(). */
typedef void (*rpc__stop_fn)(rpc_call *call, void *user);

typedef struct rpc__method {
    char *name;
    rpc_method_kind kind;
    const ProtobufCMessageDescriptor *request;
    const ProtobufCMessageDescriptor *reply;
    rpc_handler_fn handler;
    rpc_fast_fn fast;
    rpc__inline_fn inline_handler;
    rpc__stop_fn stop;
    void *user;
    void *handle; /* grpc_server_register_method */
} rpc__method;

/* Why a call was cancelled. */
enum { CANCEL_NONE = 0, CANCEL_CLIENT = 1, CANCEL_SHUTDOWN = 2 };

typedef struct rpc__md {
    char *key;
    char *value;
    size_t len;
} rpc__md;

struct rpc_call {
    rpc_server *srv;
    const rpc__method *m; /* NULL: unknown method */
    grpc_call *call;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int refs;
    atomic_int cancelled; /* CANCEL_* */
    struct rpc_call *prev, *next; /* server's live list, under srv->mu */

    char *method_name;
    char *peer;
    rpc__md *md;
    size_t nmd;
    const char *actor, *roles, *traceparent, *request_id, *correlation_id;
    bool trusted;
    gpr_timespec deadline; /* monotonic; inf_future when none */
    struct timespec started;

    grpc_byte_buffer *payload;
    grpc_slice req_slice;
    bool have_req_slice;
    ProtobufCMessage *request;

    /* RECV_CLOSE_ON_SERVER */
    rpc__tag close_tag;
    int close_cancelled;

    /* Answer: set once, under mu. */
    bool answered;
    grpc_status_code code;
    char *message;
    uint8_t *details;
    size_t details_len;
    rpc__md *trailers;
    size_t ntrailers;
    rpc__md *headers;
    size_t nheaders;
    grpc_metadata *initial; /* built from headers when first sent */
    size_t ninitial;
    grpc_byte_buffer *reply; /* unary */

    /* Stream send queue. */
    grpc_byte_buffer **q;
    size_t qhead, qlen, qcap;
    bool send_in_flight;
    bool initial_md_sent;
    rpc__tag send_tag;
    grpc_byte_buffer *sending;

    /* Bidi receive. */
    rpc__tag recv_tag;
    grpc_byte_buffer *recv_buf;
    bool recv_in_flight, recv_closed;

    /* Deferred unary calls (rpc_call_defer). */
    bool deferred;         /* the answer comes after the handler returned */
    bool handler_returned; /* ... and it has returned */
    bool completed;        /* rpc_call_complete ran */

    /* Final batch. */
    bool handler_done;
    bool status_started;
    rpc__tag status_tag;
    grpc_slice status_slice;
    grpc_metadata *trailing;
    size_t ntrailing;

    rpc_cancel_fn on_cancel;
    void *on_cancel_arg;
    bool on_cancel_fired;
    bool stop_fired;
    bool counted_stream;
    void *internal; /* owner data of inline calls (health watcher) */
};

struct rpc__pool;

struct rpc_server {
    rpc_server_options opts;
    char *listen_addr;
    char *internal_token;
    unsigned char token_hash[32];
    bool have_token;

    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t *cq_threads;
    unsigned ncq_threads;
    struct rpc__pool *pool;

    rpc__method *methods;
    size_t nmethods, capmethods;
    rpc__method fallback; /* handler NULL: unknown methods are UNIMPLEMENTED */

    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int state; /* SRV_*; written under mu */
    rpc_call *calls; /* live calls */
    size_t ncalls;
    atomic_size_t inflight;
    bool grpc_inited;

    struct rpc__health *health;
    struct rpc__reflection *reflection;

    metrics_family *m_requests;
    metrics_family *m_latency;
    metrics_family *m_streams;
    metrics_family *m_inflight;
};

enum { SRV_CREATED = 0, SRV_STARTED = 1, SRV_DRAINING = 2, SRV_STOPPED = 3 };

/* Worker pool (pool.c): fixed threads and a bounded FIFO of calls. */
typedef void (*rpc__pool_fn)(void *item);
/* batch: the workers run under SCHED_BATCH (rpc_worker_policy). */
int rpc__pool_create(unsigned threads, unsigned depth, bool batch,
                     rpc__pool_fn fn, struct rpc__pool **out);
/* Queues an item without blocking; RPC_ERR_FULL when every worker is busy
 * and the queue holds `depth` items. */
int rpc__pool_try_submit(struct rpc__pool *p, void *item);
/* Runs what is queued, joins the threads and frees the pool. */
void rpc__pool_destroy(struct rpc__pool *p);

/* Call lifecycle (call.c). */
int rpc__call_create(rpc_server *srv, const rpc__method *m, grpc_call *gcall,
                     grpc_metadata_array *md, gpr_timespec deadline,
                     const char *method_name, rpc_call **out);
void rpc__call_ref(rpc_call *c);
void rpc__call_unref(rpc_call *c);
/* Drops a reference with c->mu held and releases the lock (frees the call
 * when it was the last). */
void rpc__call_unref_unlock(rpc_call *c);
/* Starts RECV_CLOSE_ON_SERVER. */
int rpc__call_watch_close(rpc_call *c);
/* Ends the call with a status (the first answer wins) and, once the send
 * queue is empty and no handler runs, sends it. */
void rpc__call_end(rpc_call *c, grpc_status_code code, const char *msg);
/* With c->mu held: sends the final batch when everything before it is done. */
void rpc__call_finish_locked(rpc_call *c);
/* Marks the call cancelled (CANCEL_*), wakes waiters, drops queued messages,
 * runs hooks. */
void rpc__call_cancel(rpc_call *c, int why);
/* Worker entry: runs the handler of an accepted call. */
void rpc__call_run(void *item);
/* After a handler returned: a default answer if it gave none, then the final
 * status once the send queue drains. Keeps the handler's reference. */
void rpc__call_handler_returned(rpc_call *c);
/* Drops a deferral a fast path took before it declined the call. */
void rpc__call_undefer(rpc_call *c);

/* With c->mu held: fills `op` with SEND_INITIAL_METADATA (the call's headers)
 * if it was not sent yet; returns 1 when it did, else 0. */
int rpc__call_initial_md_locked(rpc_call *c, grpc_op *op);
/* The peer address, looked up on first use; with c->mu held. */
const char *rpc__call_peer_locked(rpc_call *c);
/* Whether the call is routed to the fallback handler. */
bool rpc__call_is_fallback(const rpc_call *c);

/* Streams (stream.c). */
/* Queues a packed message from any thread without blocking; when the queue
 * is full the newest queued message is replaced (health status updates). */
int rpc__stream_push_latest(rpc_call *c, uint8_t *data, size_t len);
/* With mu held: starts sending the head of the queue if nothing is in flight. */
void rpc__stream_kick_locked(rpc_call *c);
/* Completion callbacks of a stream's send and receive batches. */
void rpc__stream_send_done(rpc__tag *tag, bool ok);
void rpc__stream_recv_done(rpc__tag *tag, bool ok);
grpc_byte_buffer *rpc__buffer_take(uint8_t *data, size_t len);
int rpc__buffer_read(grpc_byte_buffer *bb, grpc_slice *out);

/* Request decoding with a precise error (decode.c). */
int rpc__decode(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                size_t len, ProtobufCMessage **out, char *err, size_t errlen);
/* Packs a message into a malloc'd buffer; TOO_LARGE above `max`. */
int rpc__pack(const ProtobufCMessage *msg, size_t max, uint8_t **out,
              size_t *len);

/* Metrics helpers (server.c). */
const char *rpc__code_name(grpc_status_code code);
/* Records a finished call's metrics (and debug log line); c->mu held. */
void rpc__record(rpc_call *c, grpc_status_code code);

/* Internal registration (server.c). */
int rpc__server_register_inline(rpc_server *srv, const char *name,
                                rpc_method_kind kind,
                                const ProtobufCMessageDescriptor *req,
                                rpc__inline_fn fn, rpc__stop_fn stop,
                                void *user);

/* Health (health.c). */
struct rpc__health;
void rpc__health_destroy(struct rpc__health *h);
/* Start: "" becomes SERVING unless the service set it already. */
void rpc__health_start(rpc_server *srv);
/* Shutdown: everything NOT_SERVING. */
void rpc__health_shutdown(rpc_server *srv);

/* Reflection (reflection.c). */
struct rpc__reflection;
void rpc__reflection_destroy(struct rpc__reflection *r);

int64_t rpc__now_ms(void);

#endif
