/* Streaming calls: the bounded per-stream send queue (the next message goes
 * out only after the previous SEND_MESSAGE completed, as the C core allows
 * one send at a time) and bidi receives. Handlers block here; completion-queue
 * threads only move the queue forward. */
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>

#include "services/common/rpc_internal.h"

grpc_byte_buffer *rpc__buffer_take(uint8_t *data, size_t len)
{
    grpc_slice s = grpc_slice_new(data, len, free);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

int rpc__buffer_read(grpc_byte_buffer *bb, grpc_slice *out)
{
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb))
        return RPC_ERR_DECODE;
    *out = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    return RPC_OK;
}

void rpc__stream_send_done(rpc__tag *tag, bool ok)
{
    rpc_call *c = (rpc_call *)((char *)tag - offsetof(rpc_call, send_tag));
    if (!ok)
        rpc__call_cancel(c, CANCEL_CLIENT);
    pthread_mutex_lock(&c->mu);
    grpc_byte_buffer_destroy(c->sending);
    c->sending = NULL;
    c->send_in_flight = false;
    rpc__stream_kick_locked(c);
    pthread_cond_broadcast(&c->cv);
    rpc__call_finish_locked(c);
    rpc__call_unref_unlock(c);
}

void rpc__stream_kick_locked(rpc_call *c)
{
    grpc_op ops[2];
    size_t n = 0;
    if (c->send_in_flight || c->qlen == 0 || c->status_started)
        return;
    if (atomic_load(&c->cancelled) == CANCEL_CLIENT)
        return;
    c->sending = c->q[c->qhead];
    c->qhead = (c->qhead + 1) % c->qcap;
    c->qlen--;
    memset(ops, 0, sizeof ops);
    n += (size_t)rpc__call_initial_md_locked(c, &ops[n]);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n].data.send_message.send_message = c->sending;
    n++;
    c->send_in_flight = true;
    c->refs++;
    if (grpc_call_start_batch(c->call, ops, n, &c->send_tag, NULL) !=
        GRPC_CALL_OK) {
        c->refs--;
        c->send_in_flight = false;
        grpc_byte_buffer_destroy(c->sending);
        c->sending = NULL;
        grpc_call_cancel(c->call, NULL);
    }
}

static int ensure_queue(rpc_call *c)
{
    if (c->q != NULL)
        return RPC_OK;
    size_t cap = c->srv->opts.stream_queue_depth;
    c->q = calloc(cap, sizeof *c->q);
    if (c->q == NULL)
        return RPC_ERR_NOMEM;
    c->qcap = cap;
    return RPC_OK;
}

int rpc__stream_push_latest(rpc_call *c, uint8_t *data, size_t len)
{
    int rc = RPC_OK;
    grpc_byte_buffer *bb = rpc__buffer_take(data, len);
    pthread_mutex_lock(&c->mu);
    if (atomic_load(&c->cancelled) != CANCEL_NONE || c->answered) {
        rc = RPC_ERR_CANCELLED;
        goto out;
    }
    rc = ensure_queue(c);
    if (rc != RPC_OK)
        goto out;
    if (c->qlen == c->qcap) {
        size_t tail = (c->qhead + c->qlen - 1) % c->qcap;
        grpc_byte_buffer_destroy(c->q[tail]);
        c->q[tail] = bb;
    } else {
        c->q[(c->qhead + c->qlen) % c->qcap] = bb;
        c->qlen++;
    }
    bb = NULL;
    rpc__stream_kick_locked(c);
out:
    pthread_mutex_unlock(&c->mu);
    if (bb != NULL)
        grpc_byte_buffer_destroy(bb);
    return rc;
}

static int cancelled_err(const rpc_call *c)
{
    int why = atomic_load(&((rpc_call *)c)->cancelled);
    if (why == CANCEL_SHUTDOWN)
        return RPC_ERR_SHUTDOWN;
    if (why == CANCEL_CLIENT)
        return RPC_ERR_CANCELLED;
    return RPC_OK;
}

/* Waits on c->cv with c->mu held, waking at the call's deadline at the
 * latest so that a stream whose client stalls cannot hold a worker forever. */
static void wait_locked(rpc_call *c)
{
    struct timespec ts;
    if (rpc_call_deadline(c, &ts) != RPC_OK) {
        pthread_cond_wait(&c->cv, &c->mu);
        return;
    }
    pthread_cond_timedwait(&c->cv, &c->mu, &ts);
}

int rpc_call_send_bytes(rpc_call *call, const uint8_t *data, size_t len)
{
    int rc = RPC_OK;
    uint8_t *copy = NULL;
    grpc_byte_buffer *bb = NULL;
    if (call == NULL || (data == NULL && len > 0))
        return RPC_ERR_INVALID;
    if (call->m == NULL || call->m->kind == RPC_METHOD_UNARY)
        return RPC_ERR_STATE;
    if (len > call->srv->opts.max_send_message_bytes)
        return RPC_ERR_TOO_LARGE;
    copy = malloc(len ? len : 1);
    if (copy == NULL)
        return RPC_ERR_NOMEM;
    if (len > 0)
        memcpy(copy, data, len);
    bb = rpc__buffer_take(copy, len);
    pthread_mutex_lock(&call->mu);
    rc = ensure_queue(call);
    while (rc == RPC_OK) {
        rc = cancelled_err(call);
        if (rc != RPC_OK)
            break;
        if (rpc_call_time_left_ms(call) == 0) {
            rc = RPC_ERR_CANCELLED;
            break;
        }
        if (call->answered) {
            rc = RPC_ERR_STATE;
            break;
        }
        if (call->qlen < call->qcap) {
            call->q[(call->qhead + call->qlen) % call->qcap] = bb;
            call->qlen++;
            bb = NULL;
            rpc__stream_kick_locked(call);
            break;
        }
        wait_locked(call);
    }
    pthread_mutex_unlock(&call->mu);
    if (bb != NULL)
        grpc_byte_buffer_destroy(bb);
    return rc;
}

int rpc_call_send(rpc_call *call, const ProtobufCMessage *msg)
{
    uint8_t *data = NULL;
    size_t len = 0;
    if (call == NULL || msg == NULL)
        return RPC_ERR_INVALID;
    if (call->m != NULL && call->m->reply != NULL &&
        msg->descriptor != call->m->reply)
        return RPC_ERR_INVALID;
    int rc = rpc__pack(msg, call->srv->opts.max_send_message_bytes, &data, &len);
    if (rc != RPC_OK)
        return rc;
    rc = rpc_call_send_bytes(call, data, len);
    free(data);
    return rc;
}

void rpc__stream_recv_done(rpc__tag *tag, bool ok)
{
    rpc_call *c = (rpc_call *)((char *)tag - offsetof(rpc_call, recv_tag));
    pthread_mutex_lock(&c->mu);
    c->recv_in_flight = false;
    if (!ok || c->recv_buf == NULL)
        c->recv_closed = true;
    pthread_cond_broadcast(&c->cv);
    rpc__call_unref_unlock(c);
}

/* Waits for the next message of a bidi or fallback call; *out is the read
 * slice (caller unrefs). */
static int recv_slice(rpc_call *call, grpc_slice *out)
{
    int rc = RPC_OK;
    grpc_byte_buffer *bb = NULL;
    pthread_mutex_lock(&call->mu);
    if (!call->recv_in_flight && call->recv_buf == NULL && !call->recv_closed &&
        cancelled_err(call) == RPC_OK) {
        grpc_op op;
        memset(&op, 0, sizeof op);
        op.op = GRPC_OP_RECV_MESSAGE;
        op.data.recv_message.recv_message = &call->recv_buf;
        call->recv_in_flight = true;
        call->refs++;
        if (grpc_call_start_batch(call->call, &op, 1, &call->recv_tag, NULL) !=
            GRPC_CALL_OK) {
            call->refs--;
            call->recv_in_flight = false;
            call->recv_closed = true;
        }
    }
    for (;;) {
        rc = cancelled_err(call);
        if (rc != RPC_OK)
            break;
        if (!call->recv_in_flight) {
            bb = call->recv_buf;
            call->recv_buf = NULL;
            if (bb == NULL)
                rc = RPC_ERR_CLOSED;
            break;
        }
        if (rpc_call_time_left_ms(call) == 0) {
            rc = RPC_ERR_CANCELLED;
            break;
        }
        wait_locked(call);
    }
    pthread_mutex_unlock(&call->mu);
    if (bb == NULL)
        return rc;
    rc = rpc__buffer_read(bb, out);
    grpc_byte_buffer_destroy(bb);
    if (rc != RPC_OK)
        return rc;
    if (GRPC_SLICE_LENGTH(*out) > call->srv->opts.max_recv_message_bytes) {
        grpc_slice_unref(*out);
        return RPC_ERR_TOO_LARGE;
    }
    return RPC_OK;
}

int rpc_call_recv(rpc_call *call, ProtobufCMessage **msg)
{
    grpc_slice s;
    char err[256];
    if (call == NULL || msg == NULL)
        return RPC_ERR_INVALID;
    if (call->m == NULL || call->m->kind != RPC_METHOD_BIDI_STREAM ||
        call->m->request == NULL)
        return RPC_ERR_STATE;
    int rc = recv_slice(call, &s);
    if (rc != RPC_OK)
        return rc;
    rc = rpc__decode(call->m->request, GRPC_SLICE_START_PTR(s),
                     GRPC_SLICE_LENGTH(s), msg, err, sizeof err);
    grpc_slice_unref(s);
    return rc;
}

int rpc_call_recv_bytes(rpc_call *call, uint8_t **data, size_t *len)
{
    grpc_slice s;
    if (call == NULL || data == NULL || len == NULL)
        return RPC_ERR_INVALID;
    if (call->m == NULL || call->m->kind != RPC_METHOD_BIDI_STREAM)
        return RPC_ERR_STATE;
    int rc = recv_slice(call, &s);
    if (rc != RPC_OK)
        return rc;
    size_t n = GRPC_SLICE_LENGTH(s);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf == NULL) {
        grpc_slice_unref(s);
        return RPC_ERR_NOMEM;
    }
    if (n > 0)
        memcpy(buf, GRPC_SLICE_START_PTR(s), n);
    grpc_slice_unref(s);
    *data = buf;
    *len = n;
    return RPC_OK;
}
