/* Agent commands: register, get, update (a PATCH merge), deregister. Each
 * validates its request, decides under the service lock and runs one op
 * (ops.c); registering and updating may free capacity for waiting tasks. */
#include <grpc/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentmesh/v1/events.pb-c.h"
#include "services/agent_manager/internal.h"

#define UNAVAILABLE_MSG "the agent manager's state diverged from its log; restart it"

static int check_caps(char *const *caps, size_t n, const char *field,
                      am_error *err)
{
    if (n > AM_CAPS_MAX)
        return am_fail(err, GRPC_STATUS_INVALID_ARGUMENT,
                       "%s: %zu capabilities, at most %d", field, n,
                       AM_CAPS_MAX);
    for (size_t i = 0; i < n; i++)
        if (!am_capability_valid(caps[i]))
            return am_fail(err, GRPC_STATUS_INVALID_ARGUMENT,
                           "%s[%zu]: a capability is 1-%d characters of "
                           "[a-z0-9._-] starting with [a-z0-9]",
                           field, i, AM_CAP_MAX);
    return 0;
}

/* Labels of a request; `allow_empty` lets an empty value through (a PATCH
 * removal). The entry type differs per request but its layout is the same. */
static int check_labels(size_t n, Agentmesh__V1__Agent__LabelsEntry *const *l,
                        bool allow_empty, am_error *err)
{
    if (n > AM_LABELS_MAX)
        return am_fail(err, GRPC_STATUS_INVALID_ARGUMENT,
                       "labels: %zu labels, at most %d", n, AM_LABELS_MAX);
    for (size_t i = 0; i < n; i++) {
        if (!am_label_key_valid(l[i]->key))
            return am_fail(err, GRPC_STATUS_INVALID_ARGUMENT,
                           "labels: key '%.64s' must be 1-%d characters of "
                           "[A-Za-z0-9._/-] starting with a letter or digit",
                           l[i]->key ? l[i]->key : "", AM_LABEL_KEY_MAX);
        if (!(allow_empty && (!l[i]->value || !*l[i]->value)) &&
            !am_label_value_valid(l[i]->value))
            return am_fail(err, GRPC_STATUS_INVALID_ARGUMENT,
                           "labels[%.64s]: a value is at most %d bytes "
                           "without control characters",
                           l[i]->key, AM_LABEL_VALUE_MAX);
    }
    return 0;
}

static int check_agent_id(const char *id, am_error *err)
{
    if (!am_id_valid(id))
        return am_fail(err, GRPC_STATUS_INVALID_ARGUMENT,
                       "agent_id: 1-%d characters of [A-Za-z0-9._:-]",
                       AM_ID_MAX);
    return 0;
}

/* With s->mu held: the agent once no append on it is in flight (and, with
 * idle, no assignment to it either); NULL when unknown. */
static am_agent *wait_agent(am_service *s, const char *id, bool idle)
{
    for (;;) {
        am_agent *a = am_map_get(s->st.agents, id);
        if (!a)
            return NULL;
        if (!a->busy && !(idle && a->reserved))
            return a->ghost ? NULL : a;
        pthread_cond_wait(&s->cv, &s->mu);
    }
}

static int check_expected(const am_agent *a, bool has, uint64_t expected,
                          am_error *err)
{
    if (has && expected != a->version) {
        err->has_version = true;
        err->current_version = a->version;
        return am_fail(err, GRPC_STATUS_ABORTED,
                       "agent %s is at version %llu, not the expected %llu",
                       a->id, (unsigned long long)a->version,
                       (unsigned long long)expected);
    }
    return 0;
}

static void op_init(am_op *op, const char *id)
{
    memset(op, 0, sizeof *op);
    snprintf(op->stream, sizeof op->stream, "%s%s", AM_AGENT_STREAM_PREFIX, id);
}

/* Runs the follow-up assignments of an agent change, then copies the agent
 * for the reply. With s->mu held. */
static int reply_agent(am_service *s, const am_ctx *ctx, am_op *op,
                       am_agent *a, bool assign, am_agent_msg **out,
                       am_error *err)
{
    if (assign) {
        am_ctx_buf fb;
        am_ctx_followup(&fb, ctx, op->last_id);
        am_assign_pending(s, &fb.ctx);
    }
    if (!(*out = am_agent_to_proto(a)))
        return am_fail(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return 0;
}

int am_register_agent(am_service *s, const am_ctx *ctx,
                      const Agentmesh__V1__RegisterAgentRequest *req,
                      am_agent_msg **out, am_error *err)
{
    char idbuf[AM_UUID_LEN + 1];
    const char *id = req->agent_id;
    am_op op;
    int rc;
    bool ghost = false;

    if (!am_name_valid(req->name))
        return am_fail(err, GRPC_STATUS_INVALID_ARGUMENT,
                       "name: 1-%d bytes without control characters",
                       AM_NAME_MAX);
    if ((rc = check_caps(req->capabilities, req->n_capabilities,
                         "capabilities", err)) ||
        (rc = check_labels(req->n_labels,
                           (Agentmesh__V1__Agent__LabelsEntry *const *)req->labels,
                           false, err)))
        return rc;
    if (req->max_concurrency > AM_CONCURRENCY_MAX)
        return am_fail(err, GRPC_STATUS_INVALID_ARGUMENT,
                       "max_concurrency: at most %d", AM_CONCURRENCY_MAX);
    if (id && *id) {
        if ((rc = check_agent_id(id, err)))
            return rc;
    } else {
        if (am_uuid_new(idbuf))
            return am_fail(err, GRPC_STATUS_INTERNAL, "no entropy for an id");
        id = idbuf;
    }

    Agentmesh__V1__AgentRegistered p = AGENTMESH__V1__AGENT_REGISTERED__INIT;
    p.agent_id = (char *)id;
    p.name = req->name;
    p.n_capabilities = req->n_capabilities;
    p.capabilities = req->capabilities;
    p.n_labels = req->n_labels;
    p.labels = (Agentmesh__V1__AgentRegistered__LabelsEntry **)req->labels;
    p.max_concurrency = req->max_concurrency ? req->max_concurrency : 1;
    p.registered_at_unix_nano = am_now_ns();

    op_init(&op, id);
    pthread_mutex_lock(&s->mu);
    if (s->broken) {
        rc = am_fail(err, GRPC_STATUS_UNAVAILABLE, UNAVAILABLE_MSG);
        goto out;
    }
    am_agent *a = wait_agent(s, id, true);
    if (a && a->status != AM_AGENT_DEREGISTERED) {
        rc = am_fail(err, GRPC_STATUS_ALREADY_EXISTS,
                     "agent %s already exists (%s); deregister it first",
                     id, am_agent_status_name(a->status));
        goto out;
    }
    if (a) {
        op.expected = (int64_t)a->version;
    } else {
        bool oom = false;
        op.expected = ES_EXPECT_NO_STREAM;
        if (!(a = am_agent_new()) || !(a->id = am_strdup(id, &oom)) ||
            am_state_add_agent(&s->st, a)) {
            am_agent_free(a);
            rc = am_fail(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
        a->ghost = ghost = true;
    }
    if (am_events_add(&op.events, AM_EV_AGENT_REGISTERED, &p.base, ctx, NULL)) {
        rc = am_fail(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    op.agent = a;
    if ((rc = am_op_run(s, &op, err)))
        goto out;
    ghost = false;
    a->seen_mono_ms = am_mono_ms();
    rc = reply_agent(s, ctx, &op, a, true, out, err);
out:
    if (ghost)
        am_state_remove_agent(&s->st, a);
    pthread_mutex_unlock(&s->mu);
    am_events_free(&op.events);
    return rc;
}

int am_get_agent(am_service *s, const Agentmesh__V1__GetAgentRequest *req,
                 am_agent_msg **out, am_error *err)
{
    int rc;
    if ((rc = check_agent_id(req->agent_id, err)))
        return rc;
    pthread_mutex_lock(&s->mu);
    am_agent *a = am_map_get(s->st.agents, req->agent_id);
    if (!a || a->ghost)
        rc = am_fail(err, GRPC_STATUS_NOT_FOUND, "agent %s not found",
                     req->agent_id);
    else if (!(*out = am_agent_to_proto(a)))
        rc = am_fail(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    pthread_mutex_unlock(&s->mu);
    return rc;
}

/* The merged label set of an update: current labels, then the request's
 * (set, or removed by an empty value). Entries borrow their strings. */
static int merge_labels(const am_agent *a,
                        const Agentmesh__V1__UpdateAgentRequest *req,
                        Agentmesh__V1__AgentUpdated__LabelsEntry *store,
                        Agentmesh__V1__AgentUpdated__LabelsEntry **ptrs,
                        size_t *n, am_error *err)
{
    size_t cap = AM_LABELS_MAX * 2, k = 0;
    for (size_t i = 0; i < a->n_labels && k < cap; i++) {
        agentmesh__v1__agent_updated__labels_entry__init(&store[k]);
        store[k].key = a->labels[i].key;
        store[k].value = a->labels[i].value;
        k++;
    }
    for (size_t i = 0; i < req->n_labels; i++) {
        const char *key = req->labels[i]->key;
        const char *val = req->labels[i]->value ? req->labels[i]->value : "";
        size_t j = 0;
        while (j < k && strcmp(store[j].key, key) != 0)
            j++;
        if (!*val) {
            if (j < k) {
                memmove(&store[j], &store[j + 1], (k - j - 1) * sizeof *store);
                k--;
            }
            continue;
        }
        if (j == k) {
            if (k == cap)
                break;
            agentmesh__v1__agent_updated__labels_entry__init(&store[k]);
            store[k].key = (char *)key;
            k++;
        }
        store[j].value = (char *)val;
    }
    if (k > AM_LABELS_MAX)
        return am_fail(err, GRPC_STATUS_INVALID_ARGUMENT,
                       "labels: the update would leave %zu labels, at most %d",
                       k, AM_LABELS_MAX);
    for (size_t i = 0; i < k; i++)
        ptrs[i] = &store[i];
    *n = k;
    return 0;
}

int am_update_agent(am_service *s, const am_ctx *ctx,
                    const Agentmesh__V1__UpdateAgentRequest *req,
                    am_agent_msg **out, am_error *err)
{
    Agentmesh__V1__AgentUpdated__LabelsEntry store[AM_LABELS_MAX * 2];
    Agentmesh__V1__AgentUpdated__LabelsEntry *ptrs[AM_LABELS_MAX * 2];
    am_op op;
    int rc;

    if ((rc = check_agent_id(req->agent_id, err)) ||
        (rc = check_caps(req->capabilities, req->n_capabilities,
                         "capabilities", err)) ||
        (rc = check_labels(req->n_labels,
                           (Agentmesh__V1__Agent__LabelsEntry *const *)req->labels,
                           true, err)))
        return rc;
    if (req->max_concurrency > AM_CONCURRENCY_MAX)
        return am_fail(err, GRPC_STATUS_INVALID_ARGUMENT,
                       "max_concurrency: at most %d", AM_CONCURRENCY_MAX);

    op_init(&op, req->agent_id);
    pthread_mutex_lock(&s->mu);
    am_agent *a = NULL;
    if (s->broken) {
        rc = am_fail(err, GRPC_STATUS_UNAVAILABLE, UNAVAILABLE_MSG);
        goto out;
    }
    if (!(a = wait_agent(s, req->agent_id, true))) {
        rc = am_fail(err, GRPC_STATUS_NOT_FOUND, "agent %s not found",
                     req->agent_id);
        goto out;
    }
    if (a->status == AM_AGENT_DEREGISTERED) {
        rc = am_fail(err, GRPC_STATUS_FAILED_PRECONDITION,
                     "agent %s is deregistered", a->id);
        goto out;
    }
    if ((rc = check_expected(a, req->expected_case ==
                                    AGENTMESH__V1__UPDATE_AGENT_REQUEST__EXPECTED_EXPECTED_VERSION,
                             req->expected_version, err)))
        goto out;
    Agentmesh__V1__AgentUpdated p = AGENTMESH__V1__AGENT_UPDATED__INIT;
    p.agent_id = a->id;
    if (req->n_capabilities) {
        p.n_capabilities = req->n_capabilities;
        p.capabilities = req->capabilities;
    } else {
        p.n_capabilities = a->n_caps;
        p.capabilities = a->caps;
    }
    p.max_concurrency = req->max_concurrency ? req->max_concurrency
                                             : a->max_concurrency;
    if ((rc = merge_labels(a, req, store, ptrs, &p.n_labels, err)))
        goto out;
    p.labels = ptrs;
    op.expected = (int64_t)a->version;
    op.agent = a;
    if (am_events_add(&op.events, AM_EV_AGENT_UPDATED, &p.base, ctx, NULL)) {
        rc = am_fail(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if ((rc = am_op_run(s, &op, err)))
        goto out;
    rc = reply_agent(s, ctx, &op, a, true, out, err);
out:
    pthread_mutex_unlock(&s->mu);
    am_events_free(&op.events);
    return rc;
}

int am_deregister_agent(am_service *s, const am_ctx *ctx,
                        const Agentmesh__V1__DeregisterAgentRequest *req,
                        am_agent_msg **out, am_error *err)
{
    am_op op;
    int rc;

    if ((rc = check_agent_id(req->agent_id, err)))
        return rc;
    if (!am_text_valid(req->reason, AM_TEXT_MAX))
        return am_fail(err, GRPC_STATUS_INVALID_ARGUMENT,
                       "reason: at most %d bytes", AM_TEXT_MAX);
    op_init(&op, req->agent_id);
    pthread_mutex_lock(&s->mu);
    am_agent *a = NULL;
    if (s->broken) {
        rc = am_fail(err, GRPC_STATUS_UNAVAILABLE, UNAVAILABLE_MSG);
        goto out;
    }
    if (!(a = wait_agent(s, req->agent_id, true))) {
        rc = am_fail(err, GRPC_STATUS_NOT_FOUND, "agent %s not found",
                     req->agent_id);
        goto out;
    }
    if ((rc = check_expected(a, req->expected_case ==
                                    AGENTMESH__V1__DEREGISTER_AGENT_REQUEST__EXPECTED_EXPECTED_VERSION,
                             req->expected_version, err)))
        goto out;
    if (a->status == AM_AGENT_DEREGISTERED) {
        rc = am_fail(err, GRPC_STATUS_FAILED_PRECONDITION,
                     "agent %s is already deregistered", a->id);
        goto out;
    }
    Agentmesh__V1__AgentDeregistered p = AGENTMESH__V1__AGENT_DEREGISTERED__INIT;
    p.agent_id = a->id;
    p.reason = req->reason ? req->reason : "";
    op.expected = (int64_t)a->version;
    op.agent = a;
    if (am_events_add(&op.events, AM_EV_AGENT_DEREGISTERED, &p.base, ctx,
                      NULL)) {
        rc = am_fail(err, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    if ((rc = am_op_run(s, &op, err)))
        goto out;
    rc = reply_agent(s, ctx, &op, a, false, out, err);
out:
    pthread_mutex_unlock(&s->mu);
    am_events_free(&op.events);
    return rc;
}
