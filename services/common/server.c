/* The server and its completion-queue loop: options and channel arguments,
 * method registration (registered methods plus one generic request that
 * answers UNIMPLEMENTED), accepting calls and handing them to the worker pool
 * without blocking, per-method metrics, and the graceful shutdown sequence. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <openssl/evp.h>

#include "services/common/log.h"
#include "services/common/rpc_internal.h"

/* Requests kept posted per registered method and for the generic slot. */
#define POSTED_PER_METHOD 2
#define POSTED_GENERIC 2

/* One posted grpc_server_request_*call. */
struct request {
    rpc__tag tag;
    rpc_server *srv;
    const rpc__method *m; /* NULL: the generic slot */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    grpc_call_details details;
};

static const char *const code_names[] = {
    "OK",          "CANCELLED",         "UNKNOWN",
    "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
    "ALREADY_EXISTS",   "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION", "ABORTED",        "OUT_OF_RANGE",
    "UNIMPLEMENTED", "INTERNAL",            "UNAVAILABLE",
    "DATA_LOSS",     "UNAUTHENTICATED"};

const char *rpc__code_name(grpc_status_code code)
{
    if ((int)code < 0 || (size_t)code >= sizeof code_names / sizeof code_names[0])
        return "UNKNOWN";
    return code_names[code];
}

/* Called with c->mu held (from rpc__call_finish_locked). */
void rpc__record(rpc_call *c, grpc_status_code code)
{
    rpc_server *srv = c->srv;
    if (srv->m_requests == NULL)
        return;
    /* Unknown methods share one label: their names come from the network. */
    const char *labels[2] = {c->m != NULL ? c->m->name : "unknown",
                             rpc__code_name(code)};
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    double secs = (double)(now.tv_sec - c->started.tv_sec) +
                  (double)(now.tv_nsec - c->started.tv_nsec) / 1e9;
    metrics_counter_add(srv->m_requests, labels, 1);
    metrics_histogram_observe(srv->m_latency, labels, secs);
    if (log_enabled(LOG_LEVEL_DEBUG)) {
        char ms[32], tp[50];
        log_ctx ctx = {0};
        snprintf(ms, sizeof ms, "%.3f", secs * 1000);
        log_ctx_from_traceparent(c->traceparent, tp, &ctx);
        const char *kv[] = {"method", c->method_name, "code", labels[1],
                            "duration_ms", ms, "peer", rpc__call_peer_locked(c),
                            "actor", c->actor, NULL};
        log_emit(LOG_LEVEL_DEBUG, &ctx, kv, "rpc");
    }
}

void rpc_server_options_init(rpc_server_options *o)
{
    memset(o, 0, sizeof *o);
    o->listen_addr = "127.0.0.1:0";
    o->worker_threads = 8;
    o->queue_depth = 64;
    o->cq_threads = 1;
    o->stream_queue_depth = 16;
    o->max_recv_message_bytes = 4u << 20;
    o->max_send_message_bytes = 4u << 20;
    o->grace_period_ms = 10000;
    o->keepalive_time_ms = 7200000;
    o->keepalive_timeout_ms = 20000;
    o->keepalive_min_ping_interval_ms = 10000;
}

static int create_metrics(rpc_server *srv)
{
    metrics_registry *r = srv->opts.metrics;
    static const char *const mc[] = {"method", "code"};
    if (r == NULL)
        return RPC_OK;
    if (metrics_counter_create(r, "agentmesh_rpc_requests_total",
                               "gRPC calls finished, by method and status code",
                               mc, 2, &srv->m_requests) != METRICS_OK ||
        metrics_histogram_create(r, "agentmesh_rpc_request_duration_seconds",
                                 "gRPC call latency from arrival to status, by "
                                 "method and status code",
                                 mc, 2, NULL, 0, &srv->m_latency) != METRICS_OK ||
        metrics_gauge_create(r, "agentmesh_rpc_streams_open",
                             "server-streaming and bidi calls open", NULL, 0,
                             &srv->m_streams) != METRICS_OK ||
        metrics_gauge_create(r, "agentmesh_rpc_calls_inflight",
                             "gRPC calls accepted and not yet finished", NULL,
                             0, &srv->m_inflight) != METRICS_OK)
        return RPC_ERR_NOMEM;
    metrics_gauge_set(srv->m_streams, NULL, 0);
    metrics_gauge_set(srv->m_inflight, NULL, 0);
    return RPC_OK;
}

int rpc_server_create(const rpc_server_options *opts, rpc_server **out)
{
    int rc = RPC_ERR_NOMEM;
    rpc_server *srv = NULL;
    rpc_server_options d;
    if (opts == NULL || out == NULL)
        return RPC_ERR_INVALID;
    rpc_server_options_init(&d);
    srv = calloc(1, sizeof *srv);
    if (srv == NULL)
        return RPC_ERR_NOMEM;
    pthread_mutex_init(&srv->mu, NULL);
    pthread_cond_init(&srv->cv, NULL);
    srv->opts = *opts;
    /* Calls routed to the fallback share one metrics label. */
    srv->fallback.name = (char *)"unknown";
#define DEFAULT_(f)        \
    if (srv->opts.f == 0)  \
        srv->opts.f = d.f;
    DEFAULT_(worker_threads)
    DEFAULT_(queue_depth)
    DEFAULT_(cq_threads)
    DEFAULT_(stream_queue_depth)
    DEFAULT_(max_recv_message_bytes)
    DEFAULT_(max_send_message_bytes)
    DEFAULT_(grace_period_ms)
    DEFAULT_(keepalive_time_ms)
    DEFAULT_(keepalive_timeout_ms)
    DEFAULT_(keepalive_min_ping_interval_ms)
#undef DEFAULT_
    if (srv->opts.worker_threads > 4096 || srv->opts.cq_threads > 64 ||
        (srv->opts.worker_policy != RPC_WORKER_POLICY_BATCH &&
         srv->opts.worker_policy != RPC_WORKER_POLICY_NORMAL) ||
        srv->opts.queue_depth > 1000000 || srv->opts.stream_queue_depth > 65536 ||
        srv->opts.max_recv_message_bytes > INT32_MAX ||
        srv->opts.max_send_message_bytes > INT32_MAX) {
        rc = RPC_ERR_INVALID;
        goto out;
    }
    srv->listen_addr = strdup(opts->listen_addr ? opts->listen_addr : d.listen_addr);
    if (srv->listen_addr == NULL)
        goto out;
    srv->opts.listen_addr = srv->listen_addr;
    if (opts->internal_token != NULL && opts->internal_token[0] != '\0') {
        unsigned int hl = 0;
        srv->internal_token = strdup(opts->internal_token);
        if (srv->internal_token == NULL)
            goto out;
        if (EVP_Digest(srv->internal_token, strlen(srv->internal_token),
                       srv->token_hash, &hl, EVP_sha256(), NULL) != 1) {
            rc = RPC_ERR_SYSTEM;
            goto out;
        }
        srv->have_token = true;
    }
    srv->opts.internal_token = srv->internal_token;
    grpc_init();
    srv->grpc_inited = true;
    rc = create_metrics(srv);
    if (rc != RPC_OK)
        goto out;
    *out = srv;
    srv = NULL;
    rc = RPC_OK;
out:
    rpc_server_destroy(srv);
    return rc;
}

static int add_method(rpc_server *srv, const rpc__method *src)
{
    if (srv == NULL || src->name == NULL || src->name[0] != '/' ||
        strchr(src->name + 1, '/') == NULL || (int)src->kind < 0 ||
        src->kind > RPC_METHOD_BIDI_STREAM ||
        (src->handler == NULL && src->inline_handler == NULL) ||
        (src->kind == RPC_METHOD_BIDI_STREAM && src->request == NULL))
        return RPC_ERR_INVALID;
    pthread_mutex_lock(&srv->mu);
    int rc = RPC_OK;
    if (srv->state != SRV_CREATED) {
        rc = RPC_ERR_STATE;
        goto out;
    }
    for (size_t i = 0; i < srv->nmethods; i++) {
        if (strcmp(srv->methods[i].name, src->name) == 0) {
            rc = RPC_ERR_EXISTS;
            goto out;
        }
    }
    if (srv->nmethods == srv->capmethods) {
        size_t cap = srv->capmethods ? srv->capmethods * 2 : 16;
        rpc__method *m = realloc(srv->methods, cap * sizeof *m);
        if (m == NULL) {
            rc = RPC_ERR_NOMEM;
            goto out;
        }
        srv->methods = m;
        srv->capmethods = cap;
    }
    rpc__method m = *src;
    m.name = strdup(src->name);
    if (m.name == NULL) {
        rc = RPC_ERR_NOMEM;
        goto out;
    }
    m.handle = NULL;
    srv->methods[srv->nmethods++] = m;
out:
    pthread_mutex_unlock(&srv->mu);
    return rc;
}

int rpc_server_register(rpc_server *srv, const rpc_method_desc *method)
{
    if (method == NULL)
        return RPC_ERR_INVALID;
    rpc__method m = {0};
    m.name = (char *)method->name;
    m.kind = method->kind;
    m.request = method->request;
    m.reply = method->reply;
    m.handler = method->handler;
    m.fast = method->fast;
    m.user = method->user;
    if (m.handler == NULL ||
        (m.fast != NULL && method->kind != RPC_METHOD_UNARY))
        return RPC_ERR_INVALID;
    return add_method(srv, &m);
}

int rpc__server_register_inline(rpc_server *srv, const char *name,
                                rpc_method_kind kind,
                                const ProtobufCMessageDescriptor *req,
                                rpc__inline_fn fn, rpc__stop_fn stop,
                                void *user)
{
    rpc__method m = {0};
    m.name = (char *)name;
    m.kind = kind;
    m.request = req;
    m.inline_handler = fn;
    m.stop = stop;
    m.user = user;
    return add_method(srv, &m);
}

int rpc_server_set_fallback(rpc_server *srv, rpc_handler_fn handler,
                            void *user)
{
    if (srv == NULL || handler == NULL)
        return RPC_ERR_INVALID;
    if (atomic_load(&srv->state) != SRV_CREATED)
        return RPC_ERR_STATE;
    srv->fallback.kind = RPC_METHOD_BIDI_STREAM;
    srv->fallback.handler = handler;
    srv->fallback.user = user;
    return RPC_OK;
}

static void request_done(rpc__tag *tag, bool ok);

static struct request *request_new(rpc_server *srv, const rpc__method *m)
{
    struct request *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    atomic_init(&r->tag.done, request_done);
    r->srv = srv;
    r->m = m;
    return r;
}

static void request_free(struct request *r)
{
    grpc_metadata_array_destroy(&r->md);
    if (r->m == NULL)
        grpc_call_details_destroy(&r->details);
    if (r->payload != NULL)
        grpc_byte_buffer_destroy(r->payload);
    free(r);
}

/* Posts `r` (fresh or recycled) to wait for the next call. */
static int request_post(struct request *r)
{
    rpc_server *srv = r->srv;
    grpc_call_error e;
    r->call = NULL;
    r->payload = NULL;
    grpc_metadata_array_init(&r->md);
    if (r->m == NULL) {
        grpc_call_details_init(&r->details);
        e = grpc_server_request_call(srv->server, &r->call, &r->details, &r->md,
                                     srv->cq, srv->cq, &r->tag);
    } else {
        bool payload = r->m->kind != RPC_METHOD_BIDI_STREAM;
        e = grpc_server_request_registered_call(
            srv->server, r->m->handle, &r->call, &r->deadline, &r->md,
            payload ? &r->payload : NULL, srv->cq, srv->cq, &r->tag);
    }
    if (e != GRPC_CALL_OK) {
        request_free(r);
        return RPC_ERR_GRPC;
    }
    return RPC_OK;
}

/* Decides what to do with a call that just arrived; never blocks. */
static void accept_call(rpc_server *srv, const rpc__method *m, grpc_call *gcall,
                        grpc_metadata_array *md, gpr_timespec deadline,
                        const char *name, grpc_byte_buffer **payload)
{
    rpc_call *c = NULL;
    char err[512];
    if (rpc__call_create(srv, m, gcall, md, deadline, name, &c) != RPC_OK) {
        grpc_call_cancel_with_status(gcall, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                     "out of memory", NULL);
        grpc_call_unref(gcall);
        return;
    }
    if (payload != NULL) {
        c->payload = *payload;
        *payload = NULL;
    }
    if (rpc__call_watch_close(c) != RPC_OK) {
        rpc__call_end(c, GRPC_STATUS_INTERNAL, "cannot watch the call");
        goto out;
    }
    if (m == NULL) {
        snprintf(err, sizeof err, "unknown method %s", name);
        rpc__call_end(c, GRPC_STATUS_UNIMPLEMENTED, err);
        goto out;
    }
    if (srv->state >= SRV_DRAINING) {
        rpc__call_end(c, GRPC_STATUS_UNAVAILABLE, "server shutting down");
        goto out;
    }
    if (rpc_call_time_left_ms(c) == 0) {
        rpc__call_end(c, GRPC_STATUS_DEADLINE_EXCEEDED,
                      "deadline exceeded before the call was dispatched");
        goto out;
    }
    if (m->kind != RPC_METHOD_BIDI_STREAM) {
        if (c->payload == NULL) {
            rpc__call_end(c, GRPC_STATUS_INVALID_ARGUMENT,
                          "request message missing");
            goto out;
        }
        if (rpc__buffer_read(c->payload, &c->req_slice) != RPC_OK) {
            rpc__call_end(c, GRPC_STATUS_INVALID_ARGUMENT,
                          "request message cannot be read (bad compression?)");
            goto out;
        }
        c->have_req_slice = true;
        grpc_byte_buffer_destroy(c->payload);
        c->payload = NULL;
        if (m->request != NULL &&
            rpc__decode(m->request, GRPC_SLICE_START_PTR(c->req_slice),
                        GRPC_SLICE_LENGTH(c->req_slice), &c->request, err,
                        sizeof err) != RPC_OK) {
            rpc__call_end(c, GRPC_STATUS_INVALID_ARGUMENT, err);
            goto out;
        }
    }
    if (m->inline_handler != NULL) {
        /* Inline streams end through their stop hook. */
        m->inline_handler(c, c->request, m->user);
        if (m->kind == RPC_METHOD_UNARY)
            rpc__call_handler_returned(c);
        goto out;
    }
    if (m->fast != NULL) {
        if (m->fast(c, c->request, m->user)) {
            rpc__call_handler_returned(c);
            goto out;
        }
        /* Declined: a deferral it took is dropped; the worker answers. */
        rpc__call_undefer(c);
    }
    if (rpc__pool_try_submit(srv->pool, c) != RPC_OK) {
        snprintf(err, sizeof err,
                 "server overloaded: %u workers busy and %u calls queued",
                 srv->opts.worker_threads, srv->opts.queue_depth);
        rpc__call_end(c, GRPC_STATUS_RESOURCE_EXHAUSTED, err);
        goto out;
    }
    /* The worker owns the handler reference now. */
    return;
out:
    rpc__call_unref(c);
}

static void request_done(rpc__tag *tag, bool ok)
{
    struct request *r = (struct request *)tag;
    rpc_server *srv = r->srv;
    if (!ok) {
        /* The server is shutting down: the slot is not re-posted. */
        if (r->call != NULL)
            grpc_call_unref(r->call);
        request_free(r);
        return;
    }
    grpc_call *gcall = r->call;
    if (r->m == NULL) {
        char *name = malloc(GRPC_SLICE_LENGTH(r->details.method) + 1);
        if (name != NULL) {
            memcpy(name, GRPC_SLICE_START_PTR(r->details.method),
                   GRPC_SLICE_LENGTH(r->details.method));
            name[GRPC_SLICE_LENGTH(r->details.method)] = '\0';
            accept_call(srv, srv->fallback.handler ? &srv->fallback : NULL,
                        gcall, &r->md, r->details.deadline, name, NULL);
            free(name);
        } else {
            grpc_call_cancel_with_status(gcall, GRPC_STATUS_RESOURCE_EXHAUSTED,
                                         "out of memory", NULL);
            grpc_call_unref(gcall);
        }
        grpc_call_details_destroy(&r->details);
    } else {
        accept_call(srv, r->m, gcall, &r->md, r->deadline, r->m->name,
                    &r->payload);
    }
    grpc_metadata_array_destroy(&r->md);
    if (r->payload != NULL)
        grpc_byte_buffer_destroy(r->payload);
    r->payload = NULL;
    /* Re-post the slot; after shutdown began grpc completes it at once with
     * ok = false. */
    if (request_post(r) != RPC_OK)
        log_emit(LOG_LEVEL_WARN, NULL, NULL, "cannot re-post a call request");
}

static void *cq_loop(void *arg)
{
    rpc_server *srv = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(
            srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        rpc__tag *t = ev.tag;
        rpc__tag_fn fn = atomic_load_explicit(&t->done, memory_order_acquire);
        fn(t, ev.success != 0);
    }
    return NULL;
}

int rpc_server_start(rpc_server *srv, int *port)
{
    int rc = RPC_ERR_GRPC;
    grpc_arg args[10];
    size_t n = 0;
    if (srv == NULL)
        return RPC_ERR_INVALID;
    pthread_mutex_lock(&srv->mu);
    if (srv->state != SRV_CREATED) {
        pthread_mutex_unlock(&srv->mu);
        return RPC_ERR_STATE;
    }
    srv->state = SRV_STARTED;
    pthread_mutex_unlock(&srv->mu);

    memset(args, 0, sizeof args);
#define INT_ARG_(k, v)                      \
    args[n].type = GRPC_ARG_INTEGER;        \
    args[n].key = (char *)(k);              \
    args[n].value.integer = (int)(v);       \
    n++;
    INT_ARG_(GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, srv->opts.max_recv_message_bytes)
    INT_ARG_(GRPC_ARG_MAX_SEND_MESSAGE_LENGTH, srv->opts.max_send_message_bytes)
    INT_ARG_(GRPC_ARG_KEEPALIVE_TIME_MS, srv->opts.keepalive_time_ms)
    INT_ARG_(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, srv->opts.keepalive_timeout_ms)
    INT_ARG_(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
             srv->opts.keepalive_min_ping_interval_ms)
    INT_ARG_(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1)
    /* Two servers on one port would split traffic silently. */
    INT_ARG_(GRPC_ARG_ALLOW_REUSEPORT, 0)
    INT_ARG_(GRPC_ARG_MAX_METADATA_SIZE, RPC_MAX_METADATA_BYTES)
    INT_ARG_(GRPC_ARG_MAX_CONCURRENT_STREAMS, RPC_MAX_STREAMS_PER_CONNECTION)
#undef INT_ARG_
    grpc_channel_args cargs = {.num_args = n, .args = args};

    srv->cq = grpc_completion_queue_create_for_next(NULL);
    srv->server = grpc_server_create(&cargs, NULL);
    if (srv->cq == NULL || srv->server == NULL)
        goto out;
    grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
    for (size_t i = 0; i < srv->nmethods; i++) {
        rpc__method *m = &srv->methods[i];
        m->handle = grpc_server_register_method(
            srv->server, m->name, NULL,
            m->kind == RPC_METHOD_BIDI_STREAM
                ? GRPC_SRM_PAYLOAD_NONE
                : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER,
            0);
        if (m->handle == NULL)
            goto out;
    }
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int bound = grpc_server_add_http2_port(srv->server, srv->listen_addr, creds);
    grpc_server_credentials_release(creds);
    if (bound == 0) {
        rc = RPC_ERR_BIND;
        goto out;
    }
    rc = rpc__pool_create(srv->opts.worker_threads, srv->opts.queue_depth,
                          srv->opts.worker_policy == RPC_WORKER_POLICY_BATCH,
                          rpc__call_run, &srv->pool);
    if (rc != RPC_OK)
        goto out;
    grpc_server_start(srv->server);
    rc = RPC_ERR_GRPC;
    for (size_t i = 0; i < srv->nmethods; i++)
        for (int k = 0; k < POSTED_PER_METHOD; k++) {
            struct request *r = request_new(srv, &srv->methods[i]);
            if (r == NULL || request_post(r) != RPC_OK) {
                free(r);
                goto out;
            }
        }
    for (int k = 0; k < POSTED_GENERIC; k++) {
        struct request *r = request_new(srv, NULL);
        if (r == NULL || request_post(r) != RPC_OK) {
            free(r);
            goto out;
        }
    }
    srv->cq_threads = calloc(srv->opts.cq_threads, sizeof *srv->cq_threads);
    if (srv->cq_threads == NULL) {
        rc = RPC_ERR_NOMEM;
        goto out;
    }
    for (unsigned i = 0; i < srv->opts.cq_threads; i++) {
        if (pthread_create(&srv->cq_threads[i], NULL, cq_loop, srv) != 0) {
            rc = RPC_ERR_SYSTEM;
            goto out;
        }
        pthread_setname_np(srv->cq_threads[i], "rpc-cq");
        srv->ncq_threads++;
    }
    if (srv->health != NULL)
        rpc__health_start(srv);
    if (port != NULL)
        *port = bound;
    rc = RPC_OK;
out:
    /* A half-started server is torn down by rpc_server_destroy. */
    if (rc != RPC_OK)
        atomic_store(&srv->state, SRV_STOPPED);
    return rc;
}

size_t rpc_server_inflight(const rpc_server *srv)
{
    return atomic_load(&((rpc_server *)srv)->inflight);
}

static gpr_timespec after_ms(int64_t ms)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                        gpr_time_from_millis(ms, GPR_TIMESPAN));
}

int rpc_server_shutdown(rpc_server *srv, int64_t grace_ms, bool *all_finished)
{
    bool finished = true;
    if (srv == NULL)
        return RPC_ERR_INVALID;
    pthread_mutex_lock(&srv->mu);
    int prev = srv->state;
    if (prev == SRV_CREATED || prev == SRV_STOPPED) {
        srv->state = SRV_STOPPED;
        pthread_mutex_unlock(&srv->mu);
        if (all_finished != NULL)
            *all_finished = true;
        return RPC_OK;
    }
    if (prev == SRV_DRAINING) {
        pthread_mutex_unlock(&srv->mu);
        return RPC_ERR_STATE;
    }
    srv->state = SRV_DRAINING;
    pthread_mutex_unlock(&srv->mu);
    if (grace_ms < 0)
        grace_ms = srv->opts.grace_period_ms;

    if (srv->health != NULL)
        rpc__health_shutdown(srv);

    grpc_completion_queue *pluck = grpc_completion_queue_create_for_pluck(NULL);
    int shutdown_tag;
    grpc_server_shutdown_and_notify(srv->server, pluck, &shutdown_tag);

    /* Streams are open-ended: tell them to end now, unary calls get the
     * grace period. */
    rpc_call **streams = NULL;
    size_t nstreams = 0;
    pthread_mutex_lock(&srv->mu);
    streams = calloc(srv->ncalls ? srv->ncalls : 1, sizeof *streams);
    for (rpc_call *c = srv->calls; c != NULL && streams != NULL; c = c->next) {
        if (c->m != NULL && c->m->kind != RPC_METHOD_UNARY &&
            !rpc__call_is_fallback(c)) {
            rpc__call_ref(c);
            streams[nstreams++] = c;
        }
    }
    pthread_mutex_unlock(&srv->mu);
    /* Outside srv->mu: the last unref frees a call, which takes srv->mu. */
    for (size_t i = 0; i < nstreams; i++) {
        rpc__call_cancel(streams[i], CANCEL_SHUTDOWN);
        rpc__call_unref(streams[i]);
    }
    free(streams);

    grpc_event ev = grpc_completion_queue_pluck(pluck, &shutdown_tag,
                                                after_ms(grace_ms), NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
        finished = false;
        log_emit(LOG_LEVEL_WARN, NULL, NULL,
                 "grace period of %lld ms over: cancelling %zu calls",
                 (long long)grace_ms, rpc_server_inflight(srv));
        grpc_server_cancel_all_calls(srv->server);
        grpc_completion_queue_pluck(pluck, &shutdown_tag,
                                    gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    }
    /* The only tag was plucked: the queue is empty. */
    grpc_completion_queue_shutdown(pluck);
    grpc_completion_queue_destroy(pluck);

    /* Handlers still running see their calls cancelled; wait for them. */
    pthread_mutex_lock(&srv->mu);
    while (srv->ncalls > 0)
        pthread_cond_wait(&srv->cv, &srv->mu);
    srv->state = SRV_STOPPED;
    pthread_mutex_unlock(&srv->mu);

    rpc__pool_destroy(srv->pool);
    srv->pool = NULL;
    grpc_server_destroy(srv->server);
    srv->server = NULL;
    grpc_completion_queue_shutdown(srv->cq);
    for (unsigned i = 0; i < srv->ncq_threads; i++)
        pthread_join(srv->cq_threads[i], NULL);
    srv->ncq_threads = 0;
    grpc_completion_queue_destroy(srv->cq);
    srv->cq = NULL;
    if (all_finished != NULL)
        *all_finished = finished;
    return RPC_OK;
}

void rpc_server_destroy(rpc_server *srv)
{
    if (srv == NULL)
        return;
    if (srv->state == SRV_STARTED || srv->state == SRV_DRAINING)
        rpc_server_shutdown(srv, 0, NULL);
    if (srv->server != NULL) {
        /* Start failed half way: nothing was accepted. */
        grpc_completion_queue *pluck = grpc_completion_queue_create_for_pluck(NULL);
        int tag;
        grpc_server_shutdown_and_notify(srv->server, pluck, &tag);
        grpc_server_cancel_all_calls(srv->server);
        grpc_completion_queue_pluck(pluck, &tag,
                                    gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        grpc_completion_queue_shutdown(pluck);
        grpc_completion_queue_destroy(pluck);
        grpc_server_destroy(srv->server);
    }
    rpc__pool_destroy(srv->pool);
    if (srv->cq != NULL) {
        grpc_completion_queue_shutdown(srv->cq);
        for (unsigned i = 0; i < srv->ncq_threads; i++)
            pthread_join(srv->cq_threads[i], NULL);
        if (srv->ncq_threads == 0) {
            grpc_event ev;
            do {
                ev = grpc_completion_queue_next(
                    srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
                if (ev.type == GRPC_OP_COMPLETE) {
                    rpc__tag *t = ev.tag;
                    atomic_load(&t->done)(t, false);
                }
            } while (ev.type != GRPC_QUEUE_SHUTDOWN);
        }
        grpc_completion_queue_destroy(srv->cq);
    }
    rpc__health_destroy(srv->health);
    rpc__reflection_destroy(srv->reflection);
    for (size_t i = 0; i < srv->nmethods; i++)
        free(srv->methods[i].name);
    free(srv->methods);
    free(srv->cq_threads);
    free(srv->listen_addr);
    free(srv->internal_token);
    if (srv->grpc_inited)
        grpc_shutdown();
    pthread_cond_destroy(&srv->cv);
    pthread_mutex_destroy(&srv->mu);
    free(srv);
}
