/* One server call from arrival to its final status: metadata and principal,
 * deadline and cancellation, the handler run on a worker, the unary reply and
 * the final batch (initial metadata, message, status with details). Streams'
 * message queues are in stream.c. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc.h>
#include <grpc/support/alloc.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include "services/common/rpc_internal.h"

int64_t rpc__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *dup_slice(grpc_slice s, size_t *len)
{
    size_t n = GRPC_SLICE_LENGTH(s);
    char *p = malloc(n + 1);
    if (p == NULL)
        return NULL;
    memcpy(p, GRPC_SLICE_START_PTR(s), n);
    p[n] = '\0';
    if (len != NULL)
        *len = n;
    return p;
}

static const char *md_find(const rpc_call *c, const char *key)
{
    for (size_t i = 0; i < c->nmd; i++)
        if (strcmp(c->md[i].key, key) == 0)
            return c->md[i].value;
    return NULL;
}

static bool token_matches(const rpc_server *srv, const char *token)
{
    unsigned char h[32];
    unsigned int hl = 0;
    if (!srv->have_token || token == NULL)
        return false;
    if (EVP_Digest(token, strlen(token), h, &hl, EVP_sha256(), NULL) != 1 ||
        hl != sizeof h)
        return false;
    return CRYPTO_memcmp(h, srv->token_hash, sizeof h) == 0;
}

static void close_done(rpc__tag *tag, bool ok);
static void status_done(rpc__tag *tag, bool ok);

int rpc__call_create(rpc_server *srv, const rpc__method *m, grpc_call *gcall,
                     grpc_metadata_array *md, gpr_timespec deadline,
                     const char *method_name, rpc_call **out)
{
    int rc = RPC_ERR_NOMEM;
    rpc_call *c = calloc(1, sizeof *c);
    if (c == NULL)
        return RPC_ERR_NOMEM;
    pthread_mutex_init(&c->mu, NULL);
    /* Waits are bounded by the deadline, which is on CLOCK_MONOTONIC. */
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    c->srv = srv;
    c->m = m;
    c->call = gcall;
    c->refs = 1; /* the handler's (or the runtime's decision's) reference */
    atomic_init(&c->close_tag.done, close_done);
    atomic_init(&c->status_tag.done, status_done);
    atomic_init(&c->send_tag.done, rpc__stream_send_done);
    atomic_init(&c->recv_tag.done, rpc__stream_recv_done);
    clock_gettime(CLOCK_MONOTONIC, &c->started);
    c->deadline = gpr_convert_clock_type(deadline, GPR_CLOCK_MONOTONIC);
    c->method_name = strdup(method_name);
    if (c->method_name == NULL)
        goto out;
    if (md != NULL && md->count > 0) {
        c->md = calloc(md->count, sizeof *c->md);
        if (c->md == NULL)
            goto out;
        for (size_t i = 0; i < md->count; i++) {
            c->md[i].key = dup_slice(md->metadata[i].key, NULL);
            c->md[i].value = dup_slice(md->metadata[i].value, &c->md[i].len);
            c->nmd = i + 1;
            if (c->md[i].key == NULL || c->md[i].value == NULL)
                goto out;
        }
    }
    c->traceparent = md_find(c, "traceparent");
    c->request_id = md_find(c, "x-request-id");
    c->correlation_id = md_find(c, "x-correlation-id");
    c->trusted = token_matches(srv, md_find(c, "x-agentmesh-internal-token"));
    c->actor = "anonymous";
    c->roles = "";
    if (c->trusted) {
        const char *p = md_find(c, "x-agentmesh-principal");
        const char *r = md_find(c, "x-agentmesh-roles");
        if (p != NULL && p[0] != '\0')
            c->actor = p;
        if (r != NULL)
            c->roles = r;
    }
    pthread_mutex_lock(&srv->mu);
    c->next = srv->calls;
    if (srv->calls != NULL)
        srv->calls->prev = c;
    srv->calls = c;
    srv->ncalls++;
    pthread_mutex_unlock(&srv->mu);
    atomic_fetch_add(&srv->inflight, 1);
    if (srv->m_inflight != NULL)
        metrics_gauge_add(srv->m_inflight, NULL, 1);
    if (m != NULL && m->kind != RPC_METHOD_UNARY && m != &srv->fallback) {
        c->counted_stream = true;
        if (srv->m_streams != NULL)
            metrics_gauge_add(srv->m_streams, NULL, 1);
    }
    *out = c;
    c = NULL;
    rc = RPC_OK;
out:
    if (c != NULL) {
        for (size_t i = 0; i < c->nmd; i++) {
            free(c->md[i].key);
            free(c->md[i].value);
        }
        free(c->md);
        free(c->method_name);
        free(c->peer);
        pthread_mutex_destroy(&c->mu);
        pthread_cond_destroy(&c->cv);
        free(c);
    }
    return rc;
}

static void call_free(rpc_call *c)
{
    rpc_server *srv = c->srv;
    pthread_mutex_lock(&srv->mu);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        srv->calls = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    srv->ncalls--;
    pthread_cond_broadcast(&srv->cv);
    pthread_mutex_unlock(&srv->mu);
    atomic_fetch_sub(&srv->inflight, 1);
    if (srv->m_inflight != NULL)
        metrics_gauge_add(srv->m_inflight, NULL, -1);
    if (c->counted_stream && srv->m_streams != NULL)
        metrics_gauge_add(srv->m_streams, NULL, -1);

    if (c->request != NULL)
        protobuf_c_message_free_unpacked(c->request, NULL);
    if (c->have_req_slice)
        grpc_slice_unref(c->req_slice);
    if (c->payload != NULL)
        grpc_byte_buffer_destroy(c->payload);
    if (c->reply != NULL)
        grpc_byte_buffer_destroy(c->reply);
    while (c->qlen > 0) {
        grpc_byte_buffer_destroy(c->q[c->qhead]);
        c->qhead = (c->qhead + 1) % c->qcap;
        c->qlen--;
    }
    free(c->q);
    if (c->recv_buf != NULL)
        grpc_byte_buffer_destroy(c->recv_buf);
    if (c->status_started)
        grpc_slice_unref(c->status_slice);
    for (size_t i = 0; i < c->ntrailing; i++) {
        grpc_slice_unref(c->trailing[i].key);
        grpc_slice_unref(c->trailing[i].value);
    }
    free(c->trailing);
    for (size_t i = 0; i < c->ntrailers; i++) {
        free(c->trailers[i].key);
        free(c->trailers[i].value);
    }
    free(c->trailers);
    for (size_t i = 0; i < c->ninitial; i++) {
        grpc_slice_unref(c->initial[i].key);
        grpc_slice_unref(c->initial[i].value);
    }
    free(c->initial);
    for (size_t i = 0; i < c->nheaders; i++) {
        free(c->headers[i].key);
        free(c->headers[i].value);
    }
    free(c->headers);
    free(c->details);
    free(c->message);
    for (size_t i = 0; i < c->nmd; i++) {
        free(c->md[i].key);
        free(c->md[i].value);
    }
    free(c->md);
    free(c->method_name);
    free(c->peer);
    if (c->call != NULL)
        grpc_call_unref(c->call);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

void rpc__call_ref(rpc_call *c)
{
    pthread_mutex_lock(&c->mu);
    c->refs++;
    pthread_mutex_unlock(&c->mu);
}

void rpc__call_unref(rpc_call *c)
{
    pthread_mutex_lock(&c->mu);
    int left = --c->refs;
    pthread_mutex_unlock(&c->mu);
    if (left == 0)
        call_free(c);
}

/* Drops a reference with c->mu held; frees after unlocking when it was the
 * last one. Returns with the lock released. */
void rpc__call_unref_unlock(rpc_call *c)
{
    int left = --c->refs;
    pthread_mutex_unlock(&c->mu);
    if (left == 0)
        call_free(c);
}

void rpc__call_cancel(rpc_call *c, int why)
{
    int expected = CANCEL_NONE;
    if (!atomic_compare_exchange_strong(&c->cancelled, &expected, why))
        return;
    pthread_mutex_lock(&c->mu);
    /* A gone client will not read what is queued; a stream ended by shutdown
     * still delivers it before its status. */
    while (why == CANCEL_CLIENT && c->qlen > 0) {
        grpc_byte_buffer_destroy(c->q[c->qhead]);
        c->qhead = (c->qhead + 1) % c->qcap;
        c->qlen--;
    }
    if (c->on_cancel != NULL && !c->on_cancel_fired) {
        c->on_cancel_fired = true;
        c->on_cancel(c->on_cancel_arg);
    }
    pthread_cond_broadcast(&c->cv);
    bool stop = c->m != NULL && c->m->stop != NULL && !c->stop_fired;
    c->stop_fired = true;
    /* A send queue that was dropped may have been all that held the final
     * status back. */
    if (c->handler_done)
        rpc__call_finish_locked(c);
    pthread_mutex_unlock(&c->mu);
    if (stop)
        c->m->stop(c, c->m->user);
}

static void close_done(rpc__tag *tag, bool ok)
{
    rpc_call *c = (rpc_call *)((char *)tag - offsetof(rpc_call, close_tag));
    (void)ok;
    if (c->close_cancelled)
        rpc__call_cancel(c, CANCEL_CLIENT);
    rpc__call_unref(c);
}

int rpc__call_watch_close(rpc_call *c)
{
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    rpc__call_ref(c);
    if (grpc_call_start_batch(c->call, &op, 1, &c->close_tag, NULL) !=
        GRPC_CALL_OK) {
        rpc__call_unref(c);
        return RPC_ERR_GRPC;
    }
    return RPC_OK;
}

static void status_done(rpc__tag *tag, bool ok)
{
    rpc_call *c = (rpc_call *)((char *)tag - offsetof(rpc_call, status_tag));
    (void)ok;
    pthread_mutex_lock(&c->mu);
    /* Nothing more will be read: wake a receive still in flight. */
    if (c->recv_in_flight)
        grpc_call_cancel(c->call, NULL);
    rpc__call_unref_unlock(c);
}

bool rpc__call_is_fallback(const rpc_call *c)
{
    return c->m != NULL && c->m == &c->srv->fallback;
}

int rpc__call_initial_md_locked(rpc_call *c, grpc_op *op)
{
    if (c->initial_md_sent)
        return 0;
    c->initial_md_sent = true;
    if (c->nheaders > 0) {
        c->initial = calloc(c->nheaders, sizeof *c->initial);
        if (c->initial != NULL) {
            for (size_t i = 0; i < c->nheaders; i++) {
                c->initial[i].key = grpc_slice_from_copied_string(c->headers[i].key);
                c->initial[i].value = grpc_slice_from_copied_buffer(
                    c->headers[i].value, c->headers[i].len);
            }
            c->ninitial = c->nheaders;
        }
    }
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    op->data.send_initial_metadata.count = c->ninitial;
    op->data.send_initial_metadata.metadata = c->initial;
    return 1;
}

void rpc__call_finish_locked(rpc_call *c)
{
    grpc_op ops[3];
    size_t n = 0;
    if (c->status_started || !c->handler_done || !c->answered ||
        c->send_in_flight || c->qlen > 0)
        return;
    c->status_started = true;
    c->status_slice = grpc_slice_from_copied_string(c->message ? c->message : "");
    size_t nt = c->ntrailers + (c->details != NULL ? 1 : 0);
    if (nt > 0) {
        c->trailing = calloc(nt, sizeof *c->trailing);
        if (c->trailing != NULL) {
            for (size_t i = 0; i < c->ntrailers; i++) {
                c->trailing[i].key = grpc_slice_from_copied_string(c->trailers[i].key);
                c->trailing[i].value = grpc_slice_from_copied_buffer(
                    c->trailers[i].value, c->trailers[i].len);
            }
            if (c->details != NULL) {
                c->trailing[c->ntrailers].key =
                    grpc_slice_from_static_string("grpc-status-details-bin");
                c->trailing[c->ntrailers].value = grpc_slice_from_copied_buffer(
                    (const char *)c->details, c->details_len);
            }
            c->ntrailing = nt;
        }
    }
    memset(ops, 0, sizeof ops);
    n += (size_t)rpc__call_initial_md_locked(c, &ops[n]);
    if (c->reply != NULL && c->code == GRPC_STATUS_OK) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->reply;
        n++;
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = c->code;
    ops[n].data.send_status_from_server.status_details = &c->status_slice;
    ops[n].data.send_status_from_server.trailing_metadata = c->trailing;
    ops[n].data.send_status_from_server.trailing_metadata_count = c->ntrailing;
    n++;
    rpc__record(c, c->code);
    c->refs++;
    if (grpc_call_start_batch(c->call, ops, n, &c->status_tag, NULL) !=
        GRPC_CALL_OK) {
        /* The call is unusable; cancelling completes its other batches. */
        c->refs--;
        grpc_call_cancel(c->call, NULL);
    }
}

/* Sets the answer (first wins); with c->mu held. Takes `details`. */
static int answer_locked(rpc_call *c, grpc_status_code code, char *message,
                         uint8_t *details, size_t details_len)
{
    if (c->answered) {
        free(message);
        free(details);
        return RPC_ERR_STATE;
    }
    c->answered = true;
    c->code = code;
    c->message = message;
    c->details = details;
    c->details_len = details_len;
    return RPC_OK;
}

void rpc__call_end(rpc_call *c, grpc_status_code code, const char *msg)
{
    pthread_mutex_lock(&c->mu);
    answer_locked(c, code, msg ? strdup(msg) : NULL, NULL, 0);
    c->handler_done = true;
    rpc__call_finish_locked(c);
    pthread_mutex_unlock(&c->mu);
}

void rpc__call_run(void *item)
{
    rpc_call *c = item;
    const rpc__method *m = c->m;
    int why = atomic_load(&c->cancelled);
    bool late = rpc_call_time_left_ms(c) == 0;
    if (why != CANCEL_NONE || late) {
        /* Waited in the queue past its deadline, or gone: skip the handler. */
        grpc_status_code code = late ? GRPC_STATUS_DEADLINE_EXCEEDED
                                : why == CANCEL_SHUTDOWN ? GRPC_STATUS_UNAVAILABLE
                                                         : GRPC_STATUS_CANCELLED;
        rpc__call_end(c, code,
                      code == GRPC_STATUS_DEADLINE_EXCEEDED
                          ? "deadline exceeded before the handler started"
                          : "call ended before the handler started");
        rpc__call_unref(c);
        return;
    }
    m->handler(c, c->request, m->user);
    rpc__call_handler_returned(c);
    rpc__call_unref(c);
}

/* The end of a handler's part, with c->mu held: the answer it left (or one
 * for none) goes out in the final batch. */
static void handler_done_locked(rpc_call *c)
{
    if (!c->answered) {
        int w = atomic_load(&c->cancelled);
        if (c->m->kind == RPC_METHOD_UNARY && !rpc__call_is_fallback(c))
            answer_locked(c, GRPC_STATUS_INTERNAL,
                          strdup("handler returned without a reply"), NULL, 0);
        else if (w == CANCEL_SHUTDOWN)
            answer_locked(c, GRPC_STATUS_UNAVAILABLE,
                          strdup("server shutting down"), NULL, 0);
        else if (w == CANCEL_CLIENT && rpc_call_time_left_ms(c) == 0)
            answer_locked(c, GRPC_STATUS_DEADLINE_EXCEEDED,
                          strdup("deadline exceeded"), NULL, 0);
        else if (w == CANCEL_CLIENT)
            answer_locked(c, GRPC_STATUS_CANCELLED, strdup("cancelled"), NULL, 0);
        else
            answer_locked(c, GRPC_STATUS_OK, NULL, NULL, 0);
    }
    c->handler_done = true;
    rpc__call_finish_locked(c);
}

void rpc__call_handler_returned(rpc_call *c)
{
    pthread_mutex_lock(&c->mu);
    c->on_cancel = NULL;
    c->handler_returned = true;
    /* A deferred call ends in rpc_call_complete, unless that already ran. */
    if (!c->deferred || c->completed)
        handler_done_locked(c);
    pthread_mutex_unlock(&c->mu);
}

int rpc_call_defer(rpc_call *call)
{
    if (call == NULL)
        return RPC_ERR_INVALID;
    if (call->m == NULL || call->m->kind != RPC_METHOD_UNARY ||
        rpc__call_is_fallback(call))
        return RPC_ERR_STATE;
    pthread_mutex_lock(&call->mu);
    int rc = RPC_OK;
    if (call->deferred || call->handler_returned)
        rc = RPC_ERR_STATE;
    else {
        call->deferred = true;
        call->refs++;
    }
    pthread_mutex_unlock(&call->mu);
    return rc;
}

void rpc__call_undefer(rpc_call *c)
{
    pthread_mutex_lock(&c->mu);
    if (c->deferred && !c->completed) {
        c->deferred = false;
        c->refs--; /* the accepting reference is still held */
    }
    pthread_mutex_unlock(&c->mu);
}

void rpc_call_complete(rpc_call *call)
{
    if (call == NULL)
        return;
    pthread_mutex_lock(&call->mu);
    if (!call->deferred || call->completed) {
        pthread_mutex_unlock(&call->mu);
        return;
    }
    call->completed = true;
    /* Before the handler returned, rpc__call_handler_returned finishes. */
    if (call->handler_returned)
        handler_done_locked(call);
    rpc__call_unref_unlock(call);
}

/* --- public accessors ---------------------------------------------------- */

const char *rpc_call_method(const rpc_call *call)
{
    return call->method_name;
}

const char *rpc__call_peer_locked(rpc_call *c)
{
    /* Looked up on first use: most calls never ask. */
    if (c->peer == NULL) {
        char *peer = grpc_call_get_peer(c->call);
        c->peer = strdup(peer ? peer : "");
        gpr_free(peer);
    }
    return c->peer ? c->peer : "";
}

const char *rpc_call_peer(const rpc_call *call)
{
    rpc_call *c = (rpc_call *)call;
    pthread_mutex_lock(&c->mu);
    const char *p = rpc__call_peer_locked(c);
    pthread_mutex_unlock(&c->mu);
    return p;
}

int rpc_call_metadata(const rpc_call *call, const char *key,
                      const char **value, size_t *len)
{
    if (call == NULL || key == NULL || value == NULL)
        return RPC_ERR_INVALID;
    for (size_t i = 0; i < call->nmd; i++) {
        if (strcmp(call->md[i].key, key) == 0) {
            *value = call->md[i].value;
            if (len != NULL)
                *len = call->md[i].len;
            return RPC_OK;
        }
    }
    return RPC_ERR_NOT_FOUND;
}

const char *rpc_call_actor(const rpc_call *call)
{
    return call->actor;
}

const char *rpc_call_roles(const rpc_call *call)
{
    return call->roles;
}

bool rpc_call_trusted(const rpc_call *call)
{
    return call->trusted;
}

const char *rpc_call_traceparent(const rpc_call *call)
{
    return call->traceparent;
}

const char *rpc_call_request_id(const rpc_call *call)
{
    return call->request_id;
}

const char *rpc_call_correlation_id(const rpc_call *call)
{
    return call->correlation_id;
}

int64_t rpc_call_time_left_ms(const rpc_call *call)
{
    if (gpr_time_cmp(call->deadline, gpr_inf_future(GPR_CLOCK_MONOTONIC)) == 0)
        return INT64_MAX;
    gpr_timespec left =
        gpr_time_sub(call->deadline, gpr_now(GPR_CLOCK_MONOTONIC));
    if (left.tv_sec < 0)
        return 0;
    int64_t ms = left.tv_sec * 1000 + left.tv_nsec / 1000000;
    return ms > 0 ? ms : 0;
}

int rpc_call_deadline(const rpc_call *call, struct timespec *out)
{
    int64_t left = rpc_call_time_left_ms(call);
    if (left == INT64_MAX)
        return RPC_ERR_NOT_FOUND;
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    now.tv_sec += left / 1000;
    now.tv_nsec += (left % 1000) * 1000000;
    if (now.tv_nsec >= 1000000000) {
        now.tv_sec++;
        now.tv_nsec -= 1000000000;
    }
    *out = now;
    return RPC_OK;
}

bool rpc_call_cancelled(const rpc_call *call)
{
    return atomic_load(&((rpc_call *)call)->cancelled) != CANCEL_NONE ||
           rpc_call_time_left_ms(call) == 0;
}

int rpc_call_on_cancel(rpc_call *call, rpc_cancel_fn fn, void *arg)
{
    if (call == NULL)
        return RPC_ERR_INVALID;
    pthread_mutex_lock(&call->mu);
    call->on_cancel = fn;
    call->on_cancel_arg = arg;
    call->on_cancel_fired = false;
    if (fn != NULL && atomic_load(&call->cancelled) != CANCEL_NONE) {
        call->on_cancel_fired = true;
        fn(arg);
    }
    pthread_mutex_unlock(&call->mu);
    return RPC_OK;
}

int rpc_call_request_bytes(const rpc_call *call, const uint8_t **data,
                           size_t *len)
{
    if (call == NULL || data == NULL || len == NULL || !call->have_req_slice)
        return RPC_ERR_STATE;
    *data = GRPC_SLICE_START_PTR(call->req_slice);
    *len = GRPC_SLICE_LENGTH(call->req_slice);
    return RPC_OK;
}

grpc_call *rpc_call_grpc(rpc_call *call)
{
    return call->call;
}

/* Appends key/value to a metadata list of the call (trailers or headers). */
static int add_md(rpc_call *call, bool header, const char *key,
                  const char *value, size_t len)
{
    int rc = RPC_ERR_NOMEM;
    if (call == NULL || key == NULL || (value == NULL && len > 0) ||
        key[0] == '\0' || strncmp(key, "grpc-", 5) == 0 || key[0] == ':')
        return RPC_ERR_INVALID;
    for (const char *k = key; *k; k++)
        if (!((*k >= 'a' && *k <= 'z') || (*k >= '0' && *k <= '9') ||
              *k == '-' || *k == '_' || *k == '.'))
            return RPC_ERR_INVALID;
    pthread_mutex_lock(&call->mu);
    if (call->status_started || (header && call->initial_md_sent)) {
        rc = RPC_ERR_STATE;
        goto out;
    }
    rpc__md **list = header ? &call->headers : &call->trailers;
    size_t *n = header ? &call->nheaders : &call->ntrailers;
    rpc__md *t = realloc(*list, (*n + 1) * sizeof *t);
    if (t == NULL)
        goto out;
    *list = t;
    char *k = strdup(key);
    char *v = malloc(len + 1);
    if (k == NULL || v == NULL) {
        free(k);
        free(v);
        goto out;
    }
    if (len > 0)
        memcpy(v, value, len);
    v[len] = '\0';
    t[*n].key = k;
    t[*n].value = v;
    t[*n].len = len;
    (*n)++;
    rc = RPC_OK;
out:
    pthread_mutex_unlock(&call->mu);
    return rc;
}

int rpc_call_add_trailer(rpc_call *call, const char *key, const char *value,
                         size_t len)
{
    return add_md(call, false, key, value, len);
}

int rpc_call_add_header(rpc_call *call, const char *key, const char *value,
                        size_t len)
{
    return add_md(call, true, key, value, len);
}

int rpc_call_reply_bytes(rpc_call *call, const uint8_t *data, size_t len)
{
    if (call == NULL || (data == NULL && len > 0))
        return RPC_ERR_INVALID;
    if (call->m == NULL || call->m->kind != RPC_METHOD_UNARY)
        return RPC_ERR_STATE;
    size_t max = call->srv->opts.max_send_message_bytes;
    if (len > max)
        return RPC_ERR_TOO_LARGE;
    uint8_t *copy = malloc(len ? len : 1);
    if (copy == NULL)
        return RPC_ERR_NOMEM;
    if (len > 0)
        memcpy(copy, data, len);
    grpc_byte_buffer *bb = rpc__buffer_take(copy, len);
    pthread_mutex_lock(&call->mu);
    int rc = RPC_OK;
    if (call->answered) {
        rc = RPC_ERR_STATE;
    } else if (atomic_load(&call->cancelled) != CANCEL_NONE) {
        rc = RPC_ERR_CANCELLED;
    } else {
        call->reply = bb;
        bb = NULL;
        answer_locked(call, GRPC_STATUS_OK, NULL, NULL, 0);
    }
    pthread_mutex_unlock(&call->mu);
    if (bb != NULL)
        grpc_byte_buffer_destroy(bb);
    return rc;
}

int rpc_call_reply(rpc_call *call, const ProtobufCMessage *reply)
{
    uint8_t *data = NULL;
    size_t len = 0;
    if (call == NULL || reply == NULL)
        return RPC_ERR_INVALID;
    if (call->m == NULL || call->m->kind != RPC_METHOD_UNARY)
        return RPC_ERR_STATE;
    if (call->m->reply != NULL && reply->descriptor != call->m->reply)
        return RPC_ERR_INVALID;
    int rc = rpc__pack(reply, call->srv->opts.max_send_message_bytes, &data,
                       &len);
    if (rc != RPC_OK)
        return rc;
    rc = rpc_call_reply_bytes(call, data, len);
    free(data);
    return rc;
}

int rpc_call_fail(rpc_call *call, grpc_status_code code, const char *fmt, ...)
{
    char *msg = NULL;
    va_list ap;
    if (call == NULL || code == GRPC_STATUS_OK || fmt == NULL)
        return RPC_ERR_INVALID;
    va_start(ap, fmt);
    int n = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        return RPC_ERR_NOMEM;
    pthread_mutex_lock(&call->mu);
    int rc = answer_locked(call, code, msg, NULL, 0);
    pthread_mutex_unlock(&call->mu);
    return rc;
}

int rpc_call_fail_status(rpc_call *call, rpc_status **st)
{
    int rc = RPC_ERR_INVALID;
    uint8_t *details = NULL;
    size_t dlen = 0;
    char *msg = NULL;
    if (call == NULL || st == NULL || *st == NULL ||
        rpc_status_code(*st) == GRPC_STATUS_OK)
        goto out;
    rc = rpc_status_encode(*st, &details, &dlen);
    if (rc != RPC_OK)
        goto out;
    msg = strdup(rpc_status_message(*st));
    if (msg == NULL) {
        rc = RPC_ERR_NOMEM;
        goto out;
    }
    pthread_mutex_lock(&call->mu);
    rc = answer_locked(call, rpc_status_code(*st), msg, details, dlen);
    pthread_mutex_unlock(&call->mu);
    msg = NULL;
    details = NULL;
out:
    free(msg);
    free(details);
    if (st != NULL) {
        rpc_status_destroy(*st);
        *st = NULL;
    }
    return rc;
}

int rpc_call_finish_raw(rpc_call *call, grpc_status_code code,
                        const char *message, const uint8_t *details,
                        size_t details_len)
{
    char *msg = NULL;
    uint8_t *d = NULL;
    if (call == NULL || (int)code < 0 || (int)code > 16 ||
        (details == NULL && details_len > 0))
        return RPC_ERR_INVALID;
    msg = strdup(message ? message : "");
    if (msg == NULL)
        return RPC_ERR_NOMEM;
    if (details != NULL && details_len > 0) {
        d = malloc(details_len);
        if (d == NULL) {
            free(msg);
            return RPC_ERR_NOMEM;
        }
        memcpy(d, details, details_len);
    }
    pthread_mutex_lock(&call->mu);
    int rc = answer_locked(call, code, msg, d, d ? details_len : 0);
    pthread_mutex_unlock(&call->mu);
    return rc;
}
