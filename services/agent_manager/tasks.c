/* Task commands: submit (with immediate assignment when an agent matches,
 * both events in one append), get, and the lifecycle commands start,
 * progress, complete, fail, cancel and retry, decided by the state machine
 * of model.c. Completing, failing or cancelling an active task frees its
 * agent's capacity for the pending queue. */
#include <grpc/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "agentmesh/v1/events.pb-c.h"
#include "services/agent_manager/internal.h"

#define UNAVAILABLE_MSG "the agent manager's state diverged from its log; restart it"

static int check_task_id(const char *id, am_error *err)
{
    if (!am_id_valid(id))
        return am_fail(err, GRPC_STATUS_INVALID_ARGUMENT,
                       "task_id: 1-%d characters of [A-Za-z0-9._:-]",
                       AM_ID_MAX);
    return 0;
}

static int check_size(const char *s, size_t max, const char *field,
                      am_error *err)
{
    size_t n = s ? strnlen(s, max + 1) : 0;
    if (n > max)
        return am_fail(err, GRPC_STATUS_INVALID_ARGUMENT,
                       "%s: more than the limit of %zu bytes", field, max);
    return 0;
}

/* With s->mu held: the task once no append on it is in flight; NULL when
 * unknown. */
static am_task *wait_task(am_service *s, const char *id)
{
    for (;;) {
        am_task *t = am_map_get(s->st.tasks, id);
        if (!t)
            return NULL;
        if (!t->busy)
            return t->ghost ? NULL : t;
        pthread_cond_wait(&s->cv, &s->mu);
    }
}

/* The same, found by idempotency key. */
static am_task *wait_idem(am_service *s, const char *key)
{
    for (;;) {
        am_task *t = am_map_get(s->st.idem, key);
        if (!t)
            return NULL;
        if (!t->busy)
            return t->ghost ? NULL : t;
        pthread_cond_wait(&s->cv, &s->mu);
    }
}

static int reply_task(const am_task *t, am_task_msg **out, am_error *err)
{
    if (!(*out = am_task_to_proto(t)))
        return am_fail(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return 0;
}

/* Event ids of a submit with an idempotency key: SHA-256 of the key, so a
 * retried append of the same submission is recognised by the store too. */
static void derive_ids(const char *key, uint8_t ids[2][ES_ID_SIZE])
{
    uint8_t h[EVP_MAX_MD_SIZE];
    unsigned hl = 0;
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c || EVP_DigestInit_ex(c, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(c, "agentmesh.submit", 17) != 1 ||
        EVP_DigestUpdate(c, key, strlen(key)) != 1 ||
        EVP_DigestFinal_ex(c, h, &hl) != 1 || hl < 2 * ES_ID_SIZE) {
        /* Without a digest the ids are random: the idempotency index still
         * answers retries; only the store-level check is lost. */
        for (int i = 0; i < 2; i++)
            RAND_bytes(ids[i], ES_ID_SIZE);
        EVP_MD_CTX_free(c);
        return;
    }
    EVP_MD_CTX_free(c);
    memcpy(ids[0], h, ES_ID_SIZE);
    memcpy(ids[1], h + ES_ID_SIZE, ES_ID_SIZE);
}

static int queue_full(const am_service *s, am_error *err)
{
    return am_fail(err, GRPC_STATUS_RESOURCE_EXHAUSTED,
                   "%zu tasks are waiting for an agent, the limit; retry later",
                   s->st.n_pending);
}

/* Adds TaskAssigned of t to a (attempt) to op and reserves a's capacity. */
static int add_assigned(am_op *op, const am_task *t, am_agent *a,
                        uint32_t attempt, const am_ctx *ctx,
                        const uint8_t *det_id)
{
    Agentmesh__V1__TaskAssigned p = AGENTMESH__V1__TASK_ASSIGNED__INIT;
    p.task_id = t->id;
    p.agent_id = a->id;
    p.attempt = attempt;
    if (am_events_add(&op->events, AM_EV_TASK_ASSIGNED, &p.base, ctx, det_id))
        return -1;
    a->reserved++;
    op->reserved = a;
    return 0;
}

static int submit_checks(const am_service *s,
                         const Agentmesh__V1__SubmitTaskRequest *req,
                         am_error *err)
{
    int rc;
    if (req->agent_id && *req->agent_id && !am_id_valid(req->agent_id))
        return am_fail(err, GRPC_STATUS_INVALID_ARGUMENT,
                       "agent_id: 1-%d characters of [A-Za-z0-9._:-]",
                       AM_ID_MAX);
    if (req->task_id && *req->task_id && (rc = check_task_id(req->task_id, err)))
        return rc;
    if (req->n_required_capabilities > AM_CAPS_MAX)
        return am_fail(err, GRPC_STATUS_INVALID_ARGUMENT,
                       "required_capabilities: at most %d", AM_CAPS_MAX);
    for (size_t i = 0; i < req->n_required_capabilities; i++)
        if (!am_capability_valid(req->required_capabilities[i]))
            return am_fail(err, GRPC_STATUS_INVALID_ARGUMENT,
                           "required_capabilities[%zu]: a capability is 1-%d "
                           "characters of [a-z0-9._-] starting with [a-z0-9]",
                           i, AM_CAP_MAX);
    if ((rc = check_size(req->input, s->opts.max_input_bytes, "input", err)) ||
        (rc = check_size(req->idempotency_key, AM_TEXT_MAX, "idempotency_key",
                         err)))
        return rc;
    return 0;
}

/* A ghost task carrying what the assignment rule reads. */
static am_task *ghost_task(const char *id,
                           const Agentmesh__V1__SubmitTaskRequest *req)
{
    bool oom = false;
    am_task *t = am_task_new();
    if (!t)
        return NULL;
    t->ghost = true;
    t->id = am_strdup(id, &oom);
    if (req->agent_id && *req->agent_id)
        t->target = am_strdup(req->agent_id, &oom);
    if (req->idempotency_key && *req->idempotency_key)
        t->idem_key = am_strdup(req->idempotency_key, &oom);
    if (req->n_required_capabilities &&
        (t->caps = calloc(req->n_required_capabilities, sizeof *t->caps))) {
        for (; t->n_caps < req->n_required_capabilities; t->n_caps++)
            t->caps[t->n_caps] =
                am_strdup(req->required_capabilities[t->n_caps], &oom);
    } else if (req->n_required_capabilities) {
        oom = true;
    }
    if (oom) {
        am_task_free(t);
        return NULL;
    }
    return t;
}

/* submit_begin's outcomes besides a final gRPC code. */
#define SUBMIT_APPEND (-2) /* op holds the events to append; *tp the task */
#define SUBMIT_WAIT (-3)   /* nowait: an entity it needs is busy */

/* Decides a submit, with s->mu held: the checks against the state, the
 * task's ghost, the assignment and the events. Returns SUBMIT_APPEND, or a
 * final code (0 with *out for a replay of an idempotency key; nothing left
 * in the state), or, with nowait, SUBMIT_WAIT where am_submit_task would
 * wait for an append in flight (nothing changed). */
static int submit_begin(am_service *s, const am_ctx *ctx,
                        const Agentmesh__V1__SubmitTaskRequest *req,
                        const char *id, uint8_t ids[2][ES_ID_SIZE],
                        bool nowait, am_op *op, am_task **tp,
                        am_task_msg **out, am_error *err)
{
    const char *key = req->idempotency_key;
    bool has_key = key && *key;
    am_task *t = NULL;
    int rc;

    if (s->broken)
        return am_fail(err, GRPC_STATUS_UNAVAILABLE, UNAVAILABLE_MSG);
    if (nowait) {
        am_task *x = has_key ? am_map_get(s->st.idem, key) : NULL;
        am_task *y = am_map_get(s->st.tasks, id);
        if ((x && x->busy) || (y && y->busy))
            return SUBMIT_WAIT;
    }
    if (has_key) {
        am_task *first = wait_idem(s, key);
        if (first)
            return reply_task(first, out, err);
    }
    if (wait_task(s, id))
        return am_fail(err, GRPC_STATUS_ALREADY_EXISTS,
                       "task %s already exists", id);
    if (req->agent_id && *req->agent_id) {
        am_agent *a = am_map_get(s->st.agents, req->agent_id);
        if (!a || a->ghost)
            return am_fail(err, GRPC_STATUS_NOT_FOUND, "agent %s not found",
                           req->agent_id);
        if (a->status == AM_AGENT_DEREGISTERED)
            return am_fail(err, GRPC_STATUS_FAILED_PRECONDITION,
                           "agent %s is deregistered", a->id);
        if (!am_agent_has_caps(a, req->required_capabilities,
                               req->n_required_capabilities))
            return am_fail(err, GRPC_STATUS_FAILED_PRECONDITION,
                           "agent %s lacks a required capability", a->id);
    }
    if (!(t = ghost_task(id, req)) || am_state_add_task(&s->st, t)) {
        am_task_free(t);
        return am_fail(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    }
    if (has_key && am_map_put(s->st.idem, t->idem_key, t)) {
        rc = am_fail(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto fail;
    }
    Agentmesh__V1__TaskSubmitted p = AGENTMESH__V1__TASK_SUBMITTED__INIT;
    p.task_id = t->id;
    p.agent_id = req->agent_id ? req->agent_id : "";
    p.n_required_capabilities = req->n_required_capabilities;
    p.required_capabilities = req->required_capabilities;
    p.input = req->input ? req->input : "";
    p.priority = req->priority;
    p.idempotency_key = has_key ? (char *)key : "";
    p.submitted_at_unix_nano = am_now_ns();
    am_agent *a = am_choose_agent(s, t);
    if (!a && s->st.n_pending >= s->opts.max_pending) {
        rc = queue_full(s, err);
        goto fail;
    }
    if (am_events_add(&op->events, AM_EV_TASK_SUBMITTED, &p.base, ctx,
                      has_key ? ids[0] : NULL) ||
        (a && add_assigned(op, t, a, 1, ctx, has_key ? ids[1] : NULL))) {
        rc = am_fail(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto fail;
    }
    snprintf(op->stream, sizeof op->stream, "%s%s", AM_TASK_STREAM_PREFIX, id);
    op->expected = ES_EXPECT_NO_STREAM;
    op->task = t;
    *tp = t;
    return SUBMIT_APPEND;
fail:
    if (op->reserved) {
        op->reserved->reserved--;
        op->reserved = NULL;
    }
    am_events_free(&op->events);
    am_state_remove_task(&s->st, t);
    return rc;
}

/* After the op of a submit ended with code, with s->mu held: the reply, or
 * the ghost left by a failed append goes. */
static int submit_end(am_service *s, am_task *t, int code, am_task_msg **out,
                      am_error *err)
{
    if (code == 0)
        return reply_task(t, out, err);
    if (t->ghost)
        am_state_remove_task(&s->st, t);
    return code;
}

/* The checks that need no lock, and the task id. */
static int submit_prepare(const am_service *s,
                          const Agentmesh__V1__SubmitTaskRequest *req,
                          char idbuf[AM_UUID_LEN + 1], const char **id,
                          uint8_t ids[2][ES_ID_SIZE], am_error *err)
{
    int rc;
    if ((rc = submit_checks(s, req, err)))
        return rc;
    *id = req->task_id;
    if (!*id || !**id) {
        if (am_uuid_new(idbuf))
            return am_fail(err, GRPC_STATUS_INTERNAL, "no entropy for an id");
        *id = idbuf;
    }
    if (req->idempotency_key && *req->idempotency_key)
        derive_ids(req->idempotency_key, ids);
    return 0;
}

int am_submit_task(am_service *s, const am_ctx *ctx,
                   const Agentmesh__V1__SubmitTaskRequest *req,
                   am_task_msg **out, am_error *err)
{
    char idbuf[AM_UUID_LEN + 1];
    uint8_t ids[2][ES_ID_SIZE];
    const char *id = NULL;
    am_task *t = NULL;
    am_op op;
    int rc;

    atomic_fetch_add(&s->submits_worker, 1);
    if ((rc = submit_prepare(s, req, idbuf, &id, ids, err)))
        return rc;
    memset(&op, 0, sizeof op);
    pthread_mutex_lock(&s->mu);
    rc = submit_begin(s, ctx, req, id, ids, false, &op, &t, out, err);
    if (rc == SUBMIT_APPEND) {
        rc = am_op_run(s, &op, err);
        rc = submit_end(s, t, rc, out, err);
    }
    pthread_mutex_unlock(&s->mu);
    am_events_free(&op.events);
    return rc;
}

/* One am_submit_task_async in flight. */
typedef struct submit_async {
    am_op op;
    am_service *s;
    am_task *t;
    am_submit_done_fn done;
    void *arg;
} submit_async;

/* On the event store's writer thread, once the append committed (or
 * failed). */
static void submit_committed(void *arg, int status,
                             const es_append_result *res)
{
    submit_async *sa = arg;
    am_service *s = sa->s;
    am_task_msg *out = NULL;
    am_error err;
    memset(&err, 0, sizeof err);
    int rc = am_op_finish(s, &sa->op, status, res, &err);
    rc = submit_end(s, sa->t, rc, &out, &err);
    s->async_inflight--;
    pthread_mutex_unlock(&s->mu);
    sa->done(sa->arg, rc, out, &err);
    free(sa);
}

int am_submit_task_async(am_service *s, const am_ctx *ctx,
                         const Agentmesh__V1__SubmitTaskRequest *req,
                         am_submit_done_fn done, void *arg)
{
    char idbuf[AM_UUID_LEN + 1];
    uint8_t ids[2][ES_ID_SIZE];
    const char *id = NULL;
    am_task_msg *out = NULL;
    am_error err;
    int rc;

    memset(&err, 0, sizeof err);
    if ((rc = submit_prepare(s, req, idbuf, &id, ids, &err))) {
        atomic_fetch_add(&s->submits_fast, 1);
        done(arg, rc, NULL, &err);
        return 0;
    }
    submit_async *sa = calloc(1, sizeof *sa);
    if (!sa)
        return AM_WOULD_BLOCK;
    if (pthread_mutex_trylock(&s->mu) != 0) {
        free(sa);
        return AM_WOULD_BLOCK;
    }
    if (s->async_inflight >= AM_ASYNC_MAX) {
        pthread_mutex_unlock(&s->mu);
        free(sa);
        return AM_WOULD_BLOCK;
    }
    sa->s = s;
    sa->done = done;
    sa->arg = arg;
    rc = submit_begin(s, ctx, req, id, ids, true, &sa->op, &sa->t, &out,
                      &err);
    if (rc == SUBMIT_WAIT) {
        pthread_mutex_unlock(&s->mu);
        free(sa);
        return AM_WOULD_BLOCK;
    }
    atomic_fetch_add(&s->submits_fast, 1);
    if (rc == SUBMIT_APPEND) {
        s->async_inflight++;
        rc = am_op_start(s, &sa->op, submit_committed, sa, &err);
        if (rc == AM_OP_PENDING) {
            pthread_mutex_unlock(&s->mu);
            return 0;
        }
        s->async_inflight--;
        rc = submit_end(s, sa->t, rc, &out, &err);
    }
    pthread_mutex_unlock(&s->mu);
    done(arg, rc, out, &err);
    free(sa);
    return 0;
}

int am_get_task(am_service *s, const Agentmesh__V1__GetTaskRequest *req,
                am_task_msg **out, am_error *err)
{
    int rc;
    if ((rc = check_task_id(req->task_id, err)))
        return rc;
    pthread_mutex_lock(&s->mu);
    am_task *t = am_map_get(s->st.tasks, req->task_id);
    if (!t || t->ghost)
        rc = am_fail(err, GRPC_STATUS_NOT_FOUND, "task %s not found",
                     req->task_id);
    else
        rc = reply_task(t, out, err);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int am_watch_begin(am_service *s, const char *task_id, struct am_task **out,
                   am_error *err)
{
    int rc;
    if ((rc = check_task_id(task_id, err)))
        return rc;
    pthread_mutex_lock(&s->mu);
    am_task *t = wait_task(s, task_id);
    if (!t)
        rc = am_fail(err, GRPC_STATUS_NOT_FOUND, "task %s not found", task_id);
    else if (!(*out = am_task_clone(t)))
        rc = am_fail(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* What a lifecycle command carries besides the task id. */
typedef struct task_args {
    am_task_cmd cmd;
    bool has_expected;
    uint64_t expected;
    const char *text;         /* output, error, reason or phase */
    uint32_t progress;
} task_args;

/* Builds the command's event(s) into op. With s->mu held. Returns 0, -1
 * out of memory, or 1 when a retried task would exceed the pending limit. */
static int build(am_service *s, am_op *op, am_task *t, const task_args *a,
                 const am_ctx *ctx)
{
    const char *text = a->text ? a->text : "";
    char *agent = t->agent_id ? t->agent_id : "";
    ProtobufCMessage *m = NULL;
    const char *type = NULL;
    Agentmesh__V1__TaskStarted st = AGENTMESH__V1__TASK_STARTED__INIT;
    Agentmesh__V1__TaskProgressed pr = AGENTMESH__V1__TASK_PROGRESSED__INIT;
    Agentmesh__V1__TaskCompleted co = AGENTMESH__V1__TASK_COMPLETED__INIT;
    Agentmesh__V1__TaskFailed fa = AGENTMESH__V1__TASK_FAILED__INIT;
    Agentmesh__V1__TaskCancelled ca = AGENTMESH__V1__TASK_CANCELLED__INIT;
    Agentmesh__V1__TaskRetried re = AGENTMESH__V1__TASK_RETRIED__INIT;
    switch (a->cmd) {
    case AM_CMD_START:
        st.task_id = t->id, st.agent_id = agent, st.attempt = t->attempt;
        m = &st.base, type = AM_EV_TASK_STARTED;
        break;
    case AM_CMD_PROGRESS:
        pr.task_id = t->id, pr.phase = (char *)text;
        pr.progress_percent = a->progress;
        m = &pr.base, type = AM_EV_TASK_PROGRESSED;
        break;
    case AM_CMD_COMPLETE:
        co.task_id = t->id, co.agent_id = agent, co.output = (char *)text;
        m = &co.base, type = AM_EV_TASK_COMPLETED;
        break;
    case AM_CMD_FAIL:
        fa.task_id = t->id, fa.agent_id = agent, fa.error = (char *)text;
        m = &fa.base, type = AM_EV_TASK_FAILED;
        break;
    case AM_CMD_CANCEL:
        ca.task_id = t->id, ca.reason = (char *)text;
        m = &ca.base, type = AM_EV_TASK_CANCELLED;
        break;
    case AM_CMD_RETRY:
        re.task_id = t->id, re.attempt = t->attempt + 1, re.reason = (char *)text;
        m = &re.base, type = AM_EV_TASK_RETRIED;
        break;
    default:
        return -1;
    }
    if (am_events_add(&op->events, type, m, ctx, NULL))
        return -1;
    if (a->cmd == AM_CMD_RETRY) {
        /* The retried task is matched like a new one; the target agent and
         * the capabilities are unchanged, so t can be read as it will be. */
        am_agent *ag = am_choose_agent(s, t);
        if (!ag && s->st.n_pending >= s->opts.max_pending)
            return 1;
        if (ag && add_assigned(op, t, ag, t->attempt + 1, ctx, NULL))
            return -1;
    }
    return 0;
}

static int task_command(am_service *s, const am_ctx *ctx, const char *id,
                        const task_args *a, am_task_msg **out, am_error *err)
{
    am_task_state to;
    am_op op;
    int rc;

    if ((rc = check_task_id(id, err)))
        return rc;
    memset(&op, 0, sizeof op);
    snprintf(op.stream, sizeof op.stream, "%s%s", AM_TASK_STREAM_PREFIX, id);
    pthread_mutex_lock(&s->mu);
    am_task *t = NULL;
    if (s->broken) {
        rc = am_fail(err, GRPC_STATUS_UNAVAILABLE, UNAVAILABLE_MSG);
        goto out;
    }
    if (!(t = wait_task(s, id))) {
        rc = am_fail(err, GRPC_STATUS_NOT_FOUND, "task %s not found", id);
        goto out;
    }
    if (a->has_expected && a->expected != t->version) {
        err->has_version = true;
        err->current_version = t->version;
        rc = am_fail(err, GRPC_STATUS_ABORTED,
                     "task %s is at version %llu, not the expected %llu", id,
                     (unsigned long long)t->version,
                     (unsigned long long)a->expected);
        goto out;
    }
    if (!am_task_next_state(t->state, a->cmd, &to)) {
        rc = am_fail(err, GRPC_STATUS_FAILED_PRECONDITION,
                     "cannot %s task %s in state %s", am_task_cmd_name(a->cmd),
                     id, am_task_state_name(t->state));
        goto out;
    }
    bool frees = am_task_state_active(t->state) && !am_task_state_active(to);
    int brc = build(s, &op, t, a, ctx);
    if (brc) {
        rc = brc > 0 ? queue_full(s, err)
                     : am_fail(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        if (op.reserved)
            op.reserved->reserved--;
        goto out;
    }
    op.expected = (int64_t)t->version;
    op.task = t;
    if ((rc = am_op_run(s, &op, err)))
        goto out;
    if ((rc = reply_task(t, out, err)))
        goto out;
    if (frees) {
        am_ctx_buf fb;
        am_ctx_followup(&fb, ctx, op.last_id);
        am_assign_pending(s, &fb.ctx);
    }
out:
    pthread_mutex_unlock(&s->mu);
    am_events_free(&op.events);
    return rc;
}

#define HAS_EXPECTED(req, CASE) ((req)->expected_case == (CASE))

int am_start_task(am_service *s, const am_ctx *ctx,
                  const Agentmesh__V1__StartTaskRequest *req,
                  am_task_msg **out, am_error *err)
{
    task_args a = {.cmd = AM_CMD_START,
                   .has_expected = HAS_EXPECTED(
                       req, AGENTMESH__V1__START_TASK_REQUEST__EXPECTED_EXPECTED_VERSION),
                   .expected = req->expected_version};
    return task_command(s, ctx, req->task_id, &a, out, err);
}

int am_report_progress(am_service *s, const am_ctx *ctx,
                       const Agentmesh__V1__ReportProgressRequest *req,
                       am_task_msg **out, am_error *err)
{
    int rc;
    if (req->progress_percent > 100)
        return am_fail(err, GRPC_STATUS_INVALID_ARGUMENT,
                       "progress_percent: 0-100, got %u", req->progress_percent);
    if ((rc = check_size(req->phase, AM_TEXT_MAX, "phase", err)))
        return rc;
    task_args a = {.cmd = AM_CMD_PROGRESS,
                   .has_expected = HAS_EXPECTED(
                       req, AGENTMESH__V1__REPORT_PROGRESS_REQUEST__EXPECTED_EXPECTED_VERSION),
                   .expected = req->expected_version,
                   .text = req->phase,
                   .progress = req->progress_percent};
    return task_command(s, ctx, req->task_id, &a, out, err);
}

int am_complete_task(am_service *s, const am_ctx *ctx,
                     const Agentmesh__V1__CompleteTaskRequest *req,
                     am_task_msg **out, am_error *err)
{
    int rc;
    if ((rc = check_size(req->output, s->opts.max_input_bytes, "output", err)))
        return rc;
    task_args a = {.cmd = AM_CMD_COMPLETE,
                   .has_expected = HAS_EXPECTED(
                       req, AGENTMESH__V1__COMPLETE_TASK_REQUEST__EXPECTED_EXPECTED_VERSION),
                   .expected = req->expected_version,
                   .text = req->output};
    return task_command(s, ctx, req->task_id, &a, out, err);
}

int am_fail_task(am_service *s, const am_ctx *ctx,
                 const Agentmesh__V1__FailTaskRequest *req, am_task_msg **out,
                 am_error *err)
{
    int rc;
    if ((rc = check_size(req->error, s->opts.max_input_bytes, "error", err)))
        return rc;
    task_args a = {.cmd = AM_CMD_FAIL,
                   .has_expected = HAS_EXPECTED(
                       req, AGENTMESH__V1__FAIL_TASK_REQUEST__EXPECTED_EXPECTED_VERSION),
                   .expected = req->expected_version,
                   .text = req->error};
    return task_command(s, ctx, req->task_id, &a, out, err);
}

int am_cancel_task(am_service *s, const am_ctx *ctx,
                   const Agentmesh__V1__CancelTaskRequest *req,
                   am_task_msg **out, am_error *err)
{
    int rc;
    if ((rc = check_size(req->reason, AM_TEXT_MAX, "reason", err)))
        return rc;
    task_args a = {.cmd = AM_CMD_CANCEL,
                   .has_expected = HAS_EXPECTED(
                       req, AGENTMESH__V1__CANCEL_TASK_REQUEST__EXPECTED_EXPECTED_VERSION),
                   .expected = req->expected_version,
                   .text = req->reason};
    return task_command(s, ctx, req->task_id, &a, out, err);
}

int am_retry_task(am_service *s, const am_ctx *ctx,
                  const Agentmesh__V1__RetryTaskRequest *req,
                  am_task_msg **out, am_error *err)
{
    int rc;
    if ((rc = check_size(req->reason, AM_TEXT_MAX, "reason", err)))
        return rc;
    task_args a = {.cmd = AM_CMD_RETRY,
                   .has_expected = HAS_EXPECTED(
                       req, AGENTMESH__V1__RETRY_TASK_REQUEST__EXPECTED_EXPECTED_VERSION),
                   .expected = req->expected_version,
                   .text = req->reason};
    return task_command(s, ctx, req->task_id, &a, out, err);
}
