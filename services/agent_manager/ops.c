/* The one way state changes: an op decided under the service lock is
 * appended without it (so concurrent commands share a group commit), then
 * what the log committed is read back and folded into the state under the
 * lock again. Entities an op touches stay busy meanwhile, which orders the
 * commands of one stream; see docs/AGENT_MANAGER.md. */
#include <grpc/status.h>
#include <stdio.h>
#include <string.h>

#include "services/agent_manager/internal.h"
#include "services/common/log.h"

static void link_op(am_service *s, am_op *op)
{
    op->prev = NULL;
    op->next = s->ops;
    if (s->ops)
        s->ops->prev = op;
    s->ops = op;
}

static void unlink_op(am_service *s, am_op *op)
{
    if (op->prev)
        op->prev->next = op->next;
    else
        s->ops = op->next;
    if (op->next)
        op->next->prev = op->prev;
    op->prev = op->next = NULL;
}

/* Folds the committed events of op (positions from its result) into the
 * state. With s->mu held. */
static void apply_committed(am_service *s, am_op *op, es_txn *txn)
{
    es_event evs[AM_OP_EVENTS];
    es_page pg;
    size_t n = op->events.n;
    int rc = es_read_all(txn, op->res.first_position, ES_FORWARD, NULL, n,
                         evs, &pg);
    if (rc == ES_OK && pg.count != n)
        rc = ES_CORRUPT;
    for (size_t i = 0; rc == ES_OK && i < pg.count; i++) {
        if (strcmp(evs[i].stream, op->stream) != 0) {
            rc = ES_CORRUPT;
            break;
        }
        if (am_state_apply(&s->st, &evs[i]))
            rc = ES_NOMEM;
    }
    if (rc != ES_OK) {
        s->broken = true;
        LOG_ERROR("agent-manager: cannot apply committed events of %s at %llu "
                  "(%s); refusing commands until restart",
                  op->stream, (unsigned long long)op->res.first_position,
                  es_strerror(rc));
    }
}

/* With s->mu held: op is in flight. */
static void op_begin(am_service *s, am_op *op)
{
    if (op->events.n)
        memcpy(op->last_id, op->events.ev[op->events.n - 1].id, ES_ID_SIZE);
    op->mark = s->st.max_applied;
    link_op(s, op);
    if (op->task)
        op->task->busy = true;
    if (op->agent)
        op->agent->busy = true;
}

/* Without s->mu: the append ended with rc (op->res set). Reads the committed
 * events back, then under the lock folds them and ends op. Returns the gRPC
 * code with s->mu held. */
static int op_end(am_service *s, am_op *op, int rc, am_error *err)
{
    es_txn *txn = NULL;
    int code = GRPC_STATUS_OK;
    int rrc = ES_OK;
    if (rc == ES_OK)
        rrc = es_txn_begin(s->store, &txn);

    pthread_mutex_lock(&s->mu);
    if (rc == ES_OK && rrc == ES_OK) {
        apply_committed(s, op, txn);
    } else if (rc == ES_OK) {
        s->broken = true;
        LOG_ERROR("agent-manager: cannot read back %s: %s", op->stream,
                  es_strerror(rrc));
    }
    if (rc == ES_WRONG_EXPECTED_VERSION) {
        if (op->res.actual_version == ES_NO_VERSION)
            code = am_fail(err, GRPC_STATUS_ABORTED,
                           "stream %s does not exist (concurrent change)",
                           op->stream);
        else {
            err->has_version = true;
            err->current_version = op->res.actual_version;
            code = am_fail(err, GRPC_STATUS_ABORTED,
                           "stream %s is at version %llu (concurrent change)",
                           op->stream,
                           (unsigned long long)op->res.actual_version);
        }
    } else if (rc != ES_OK) {
        code = am_fail(err, es_status_grpc_code(rc), "append to %s failed: %s",
                       op->stream, es_strerror(rc));
    } else if (s->broken) {
        code = am_fail(err, GRPC_STATUS_INTERNAL,
                       "the append to %s committed but could not be applied",
                       op->stream);
    }
    if (op->task)
        op->task->busy = false;
    if (op->agent)
        op->agent->busy = false;
    if (op->reserved) {
        op->reserved->reserved--;
        op->reserved = NULL;
    }
    unlink_op(s, op);
    pthread_cond_broadcast(&s->cv);
    am_events_free(&op->events);
    es_txn_end(txn);
    return code;
}

int am_op_run(am_service *s, am_op *op, am_error *err)
{
    op_begin(s, op);
    pthread_mutex_unlock(&s->mu);
    int rc = es_append(s->store, op->stream, op->expected, op->events.ev,
                       op->events.n, &op->res);
    return op_end(s, op, rc, err);
}

int am_op_start(am_service *s, am_op *op, es_append_cb cb, void *arg,
                am_error *err)
{
    op_begin(s, op);
    int rc = es_append_async(s->store, op->stream, op->expected,
                             op->events.ev, op->events.n, cb, arg);
    if (rc == ES_OK)
        return AM_OP_PENDING;
    /* Refused at once (closed store, out of memory): ended like a failed
     * append. */
    pthread_mutex_unlock(&s->mu);
    return op_end(s, op, rc, err);
}

int am_op_finish(am_service *s, am_op *op, int status,
                 const es_append_result *res, am_error *err)
{
    if (res)
        op->res = *res;
    return op_end(s, op, status, err);
}
