/* The agent manager's in-memory state and the fold of recorded events into
 * it (see state.h): entity lifetimes, the derived agent load, the pending
 * queue, the idempotency index, and protobuf copies for replies. */
#include "services/agent_manager/state.h"

#include <stdlib.h>
#include <string.h>

#include "agentmesh/v1/events.pb-c.h"

char *am_strdup(const char *s, bool *oom)
{
    if (!s)
        return NULL;
    char *d = strdup(s);
    if (!d)
        *oom = true;
    return d;
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

static char **dup_strv(char *const *v, size_t n, bool *oom)
{
    if (!n)
        return NULL;
    char **d = calloc(n, sizeof *d);
    if (!d) {
        *oom = true;
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        d[i] = am_strdup(v[i] ? v[i] : "", oom);
    return d;
}

static void free_labels(am_label *l, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(l[i].key);
        free(l[i].value);
    }
    free(l);
}

am_agent *am_agent_new(void)
{
    am_agent *a = calloc(1, sizeof *a);
    if (a)
        a->version = ES_NO_VERSION;
    return a;
}

am_task *am_task_new(void)
{
    am_task *t = calloc(1, sizeof *t);
    if (t)
        t->version = ES_NO_VERSION;
    return t;
}

void am_agent_free(am_agent *a)
{
    if (!a)
        return;
    free(a->id);
    free(a->name);
    free_strv(a->caps, a->n_caps);
    free_labels(a->labels, a->n_labels);
    free(a);
}

void am_task_free(am_task *t)
{
    if (!t)
        return;
    free(t->id);
    free(t->target);
    free(t->agent_id);
    free_strv(t->caps, t->n_caps);
    free(t->input);
    free(t->output);
    free(t->error);
    free(t->phase);
    free(t->idem_key);
    free(t);
}

am_task *am_task_clone(const am_task *t)
{
    bool oom = false;
    am_task *c = malloc(sizeof *c);
    if (!c)
        return NULL;
    *c = *t;
    c->id = am_strdup(t->id, &oom);
    c->target = am_strdup(t->target, &oom);
    c->agent_id = am_strdup(t->agent_id, &oom);
    c->caps = dup_strv(t->caps, t->n_caps, &oom);
    c->input = am_strdup(t->input, &oom);
    c->output = am_strdup(t->output, &oom);
    c->error = am_strdup(t->error, &oom);
    c->phase = am_strdup(t->phase, &oom);
    c->idem_key = am_strdup(t->idem_key, &oom);
    if (oom) {
        if (!c->caps)
            c->n_caps = 0;
        am_task_free(c);
        return NULL;
    }
    return c;
}

int am_state_init(am_state *st)
{
    memset(st, 0, sizeof *st);
    if (am_map_create(&st->agents) || am_map_create(&st->tasks) ||
        am_map_create(&st->idem)) {
        am_state_free(st);
        return -1;
    }
    return 0;
}

void am_state_free(am_state *st)
{
    for (size_t i = 0; i < st->n_agents; i++)
        am_agent_free(st->agent_list[i]);
    for (size_t i = 0; i < st->n_tasks; i++)
        am_task_free(st->task_list[i]);
    free(st->agent_list);
    free(st->task_list);
    free(st->pending);
    am_map_destroy(st->agents);
    am_map_destroy(st->tasks);
    am_map_destroy(st->idem);
    memset(st, 0, sizeof *st);
}

/* Appends p to a growable pointer array. */
static int push(void ***arr, size_t *n, size_t *cap, void *p)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 64;
        void **na = realloc(*arr, nc * sizeof *na);
        if (!na)
            return -1;
        *arr = na;
        *cap = nc;
    }
    (*arr)[(*n)++] = p;
    return 0;
}

static void drop(void **arr, size_t *n, void *p)
{
    for (size_t i = *n; i-- > 0;)
        if (arr[i] == p) {
            memmove(&arr[i], &arr[i + 1], (*n - i - 1) * sizeof *arr);
            (*n)--;
            return;
        }
}

int am_state_add_agent(am_state *st, am_agent *a)
{
    if (push((void ***)&st->agent_list, &st->n_agents, &st->cap_agents, a))
        return -1;
    if (am_map_put(st->agents, a->id, a)) {
        st->n_agents--;
        return -1;
    }
    return 0;
}

int am_state_add_task(am_state *st, am_task *t)
{
    if (push((void ***)&st->task_list, &st->n_tasks, &st->cap_tasks, t))
        return -1;
    if (am_map_put(st->tasks, t->id, t)) {
        st->n_tasks--;
        return -1;
    }
    t->seq = st->next_seq++;
    return 0;
}

void am_state_remove_agent(am_state *st, am_agent *a)
{
    am_map_del(st->agents, a->id);
    drop((void **)st->agent_list, &st->n_agents, a);
    am_agent_free(a);
}

void am_state_remove_task(am_state *st, am_task *t)
{
    am_map_del(st->tasks, t->id);
    if (t->idem_key && am_map_get(st->idem, t->idem_key) == t)
        am_map_del(st->idem, t->idem_key);
    drop((void **)st->task_list, &st->n_tasks, t);
    am_task_free(t);
}

int am_pending_cmp(const am_task *a, const am_task *b)
{
    if (a->priority != b->priority)
        return a->priority > b->priority ? -1 : 1;
    if (a->submitted_at != b->submitted_at)
        return a->submitted_at < b->submitted_at ? -1 : 1;
    return a->seq < b->seq ? -1 : (a->seq > b->seq);
}

static int pending_insert(am_state *st, am_task *t)
{
    if (push((void ***)&st->pending, &st->n_pending, &st->cap_pending, t))
        return -1;
    size_t i = st->n_pending - 1;
    while (i > 0 && am_pending_cmp(t, st->pending[i - 1]) < 0) {
        st->pending[i] = st->pending[i - 1];
        i--;
    }
    st->pending[i] = t;
    return 0;
}

bool am_agent_has_caps(const am_agent *a, char *const *caps, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (size_t j = 0; j < a->n_caps && !found; j++)
            found = strcmp(a->caps[j], caps[i]) == 0;
        if (!found)
            return false;
    }
    return true;
}

/* Labels from a protobuf map (repeated entries); later duplicates win. */
static am_label *labels_from(size_t n, char *const *keys, char *const *vals,
                             size_t *out_n, bool *oom)
{
    *out_n = 0;
    if (!n)
        return NULL;
    am_label *l = calloc(n, sizeof *l);
    if (!l) {
        *oom = true;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        l[i].key = am_strdup(keys[i] ? keys[i] : "", oom);
        l[i].value = am_strdup(vals[i] ? vals[i] : "", oom);
    }
    *out_n = n;
    return l;
}

/* Every generated map entry (Agent, AgentRegistered, AgentUpdated, the
 * requests) has this layout. */
typedef struct kv_entry {
    ProtobufCMessage base;
    char *key;
    char *value;
} kv_entry;

/* Points keys/vals (AM_LABELS_MAX each) at a map's entries; returns n. */
static size_t label_arrays(size_t n, void *const *entries, char **keys,
                           char **vals)
{
    if (n > AM_LABELS_MAX)
        n = AM_LABELS_MAX;
    for (size_t i = 0; i < n; i++) {
        const kv_entry *e = entries[i];
        keys[i] = e->key;
        vals[i] = e->value;
    }
    return n;
}

/* Replaces the agent's settings with a payload's full values. */
static int set_settings(am_agent *a, size_t n_caps, char **caps,
                        size_t n_labels, char *const *keys, char *const *vals,
                        uint32_t max_concurrency)
{
    bool oom = false;
    size_t nl = 0;
    char **c = dup_strv(caps, n_caps, &oom);
    am_label *l = labels_from(n_labels, keys, vals, &nl, &oom);
    if (oom) {
        free_strv(c, c ? n_caps : 0);
        free_labels(l, nl);
        return -1;
    }
    free_strv(a->caps, a->n_caps);
    free_labels(a->labels, a->n_labels);
    a->caps = c;
    a->n_caps = n_caps;
    a->labels = l;
    a->n_labels = nl;
    a->max_concurrency = max_concurrency ? max_concurrency : 1;
    return 0;
}

static int apply_agent(am_state *st, const char *id, const es_event *ev)
{
    am_agent *a = am_map_get(st->agents, id);
    bool created = false;
    int rc = 0;
    if (a && !a->ghost && a->version != ES_NO_VERSION &&
        ev->stream_version <= a->version)
        return 0;
    if (!a) {
        bool oom = false;
        if (!(a = am_agent_new()) || !(a->id = am_strdup(id, &oom))) {
            am_agent_free(a);
            return -1;
        }
        created = true;
    }
    if (strcmp(ev->type, AM_EV_AGENT_REGISTERED) == 0) {
        Agentmesh__V1__AgentRegistered *p =
            agentmesh__v1__agent_registered__unpack(NULL, ev->data_len, ev->data);
        if (!p) {
            rc = -2;
            goto out;
        }
        char *keys[AM_LABELS_MAX], *vals[AM_LABELS_MAX];
        size_t nl = label_arrays(p->n_labels, (void *const *)p->labels, keys, vals);
        bool oom = false;
        char *name = am_strdup(p->name ? p->name : "", &oom);
        if (oom || set_settings(a, p->n_capabilities, p->capabilities,
                                nl, keys, vals, p->max_concurrency)) {
            free(name);
            agentmesh__v1__agent_registered__free_unpacked(p, NULL);
            rc = -1;
            goto out;
        }
        free(a->name);
        a->name = name;
        a->registered_at = p->registered_at_unix_nano;
        a->status = AM_AGENT_ONLINE;
        agentmesh__v1__agent_registered__free_unpacked(p, NULL);
    } else if (strcmp(ev->type, AM_EV_AGENT_UPDATED) == 0) {
        Agentmesh__V1__AgentUpdated *p =
            agentmesh__v1__agent_updated__unpack(NULL, ev->data_len, ev->data);
        if (!p) {
            rc = -2;
            goto out;
        }
        char *keys[AM_LABELS_MAX], *vals[AM_LABELS_MAX];
        size_t nl = label_arrays(p->n_labels, (void *const *)p->labels, keys, vals);
        rc = set_settings(a, p->n_capabilities, p->capabilities, nl,
                          keys, vals, p->max_concurrency);
        agentmesh__v1__agent_updated__free_unpacked(p, NULL);
        if (rc)
            goto out;
    } else if (strcmp(ev->type, AM_EV_AGENT_DEREGISTERED) == 0) {
        a->status = AM_AGENT_DEREGISTERED;
    } else if (strcmp(ev->type, AM_EV_AGENT_ONLINE) == 0) {
        a->status = AM_AGENT_ONLINE;
    } else if (strcmp(ev->type, AM_EV_AGENT_OFFLINE) == 0) {
        a->status = AM_AGENT_OFFLINE;
    } else {
        goto out;
    }
    if (created && am_state_add_agent(st, a)) {
        rc = -1;
        goto out;
    }
    created = false;
    a->ghost = false;
    a->version = ev->stream_version;
    a->position = ev->position;
    if (ev->time_unix_nano > a->last_seen)
        a->last_seen = ev->time_unix_nano;
out:
    if (created)
        am_agent_free(a);
    return rc;
}

/* Replaces *dst with a copy of src ("" and NULL both clear it). */
static int set_str(char **dst, const char *src)
{
    char *d = NULL;
    if (src && *src && !(d = strdup(src)))
        return -1;
    free(*dst);
    *dst = d;
    return 0;
}

static int fold_submitted(am_task *t, const es_event *ev)
{
    Agentmesh__V1__TaskSubmitted *p =
        agentmesh__v1__task_submitted__unpack(NULL, ev->data_len, ev->data);
    if (!p)
        return -2;
    bool oom = false;
    char **caps = dup_strv(p->required_capabilities, p->n_required_capabilities,
                           &oom);
    char *input = am_strdup(p->input ? p->input : "", &oom);
    char *target = (p->agent_id && *p->agent_id) ? am_strdup(p->agent_id, &oom)
                                                 : NULL;
    char *agent = target ? am_strdup(target, &oom) : NULL;
    char *key = (p->idempotency_key && *p->idempotency_key)
                    ? am_strdup(p->idempotency_key, &oom)
                    : NULL;
    if (oom) {
        free_strv(caps, caps ? p->n_required_capabilities : 0);
        free(input);
        free(target);
        free(agent);
        free(key);
        agentmesh__v1__task_submitted__free_unpacked(p, NULL);
        return -1;
    }
    free_strv(t->caps, t->n_caps);
    free(t->input);
    free(t->target);
    free(t->agent_id);
    free(t->idem_key);
    t->caps = caps;
    t->n_caps = p->n_required_capabilities;
    t->input = input;
    t->target = target;
    t->agent_id = agent;
    t->idem_key = key;
    t->priority = p->priority;
    t->submitted_at = p->submitted_at_unix_nano;
    t->state = AM_TASK_PENDING;
    t->attempt = 1;
    agentmesh__v1__task_submitted__free_unpacked(p, NULL);
    return 0;
}

int am_task_apply(am_task *t, const es_event *ev, bool *changed)
{
    int rc = 0;
    *changed = false;
    if (t->version != ES_NO_VERSION && !t->ghost &&
        ev->stream_version <= t->version)
        return 0;
    if (strcmp(ev->type, AM_EV_TASK_SUBMITTED) == 0) {
        if ((rc = fold_submitted(t, ev)))
            return rc;
    } else if (strcmp(ev->type, AM_EV_TASK_ASSIGNED) == 0) {
        Agentmesh__V1__TaskAssigned *p =
            agentmesh__v1__task_assigned__unpack(NULL, ev->data_len, ev->data);
        if (!p)
            return -2;
        if (set_str(&t->agent_id, p->agent_id))
            rc = -1;
        else {
            t->state = AM_TASK_ASSIGNED;
            if (p->attempt)
                t->attempt = p->attempt;
        }
        agentmesh__v1__task_assigned__free_unpacked(p, NULL);
    } else if (strcmp(ev->type, AM_EV_TASK_STARTED) == 0) {
        t->state = AM_TASK_RUNNING;
    } else if (strcmp(ev->type, AM_EV_TASK_PROGRESSED) == 0) {
        Agentmesh__V1__TaskProgressed *p =
            agentmesh__v1__task_progressed__unpack(NULL, ev->data_len, ev->data);
        if (!p)
            return -2;
        if (set_str(&t->phase, p->phase))
            rc = -1;
        else
            t->progress = p->progress_percent;
        agentmesh__v1__task_progressed__free_unpacked(p, NULL);
    } else if (strcmp(ev->type, AM_EV_TASK_COMPLETED) == 0) {
        Agentmesh__V1__TaskCompleted *p =
            agentmesh__v1__task_completed__unpack(NULL, ev->data_len, ev->data);
        if (!p)
            return -2;
        if (set_str(&t->output, p->output))
            rc = -1;
        else
            t->state = AM_TASK_COMPLETED;
        agentmesh__v1__task_completed__free_unpacked(p, NULL);
    } else if (strcmp(ev->type, AM_EV_TASK_FAILED) == 0) {
        Agentmesh__V1__TaskFailed *p =
            agentmesh__v1__task_failed__unpack(NULL, ev->data_len, ev->data);
        if (!p)
            return -2;
        if (set_str(&t->error, p->error))
            rc = -1;
        else
            t->state = AM_TASK_FAILED;
        agentmesh__v1__task_failed__free_unpacked(p, NULL);
    } else if (strcmp(ev->type, AM_EV_TASK_CANCELLED) == 0) {
        t->state = AM_TASK_CANCELLED;
    } else if (strcmp(ev->type, AM_EV_TASK_RETRIED) == 0) {
        Agentmesh__V1__TaskRetried *p =
            agentmesh__v1__task_retried__unpack(NULL, ev->data_len, ev->data);
        if (!p)
            return -2;
        if (set_str(&t->agent_id, t->target) || set_str(&t->phase, NULL))
            rc = -1;
        else {
            t->state = AM_TASK_PENDING;
            t->attempt = p->attempt;
            t->progress = 0;
        }
        agentmesh__v1__task_retried__free_unpacked(p, NULL);
    } else {
        return 0;
    }
    if (rc)
        return rc;
    t->ghost = false;
    t->version = ev->stream_version;
    t->position = ev->position;
    t->updated_at = ev->time_unix_nano;
    *changed = true;
    return 0;
}

static am_agent *load_agent(am_state *st, const am_task *t)
{
    if (!t->agent_id || !am_task_state_active(t->state))
        return NULL;
    return am_map_get(st->agents, t->agent_id);
}

static int apply_task(am_state *st, const char *id, const es_event *ev)
{
    am_task *t = am_map_get(st->tasks, id);
    bool created = false, changed = false;
    int rc;
    if (!t) {
        if (strcmp(ev->type, AM_EV_TASK_SUBMITTED) != 0)
            return 0;
        bool oom = false;
        if (!(t = am_task_new()) || !(t->id = am_strdup(id, &oom))) {
            am_task_free(t);
            return -1;
        }
        created = true;
    }
    /* Ghosts and new tasks may not be PENDING before their first event. */
    bool was_pending = !t->ghost && !created && t->state == AM_TASK_PENDING;
    am_agent *old = created ? NULL : load_agent(st, t);
    /* The index borrows the key string, which the fold may replace. */
    bool indexed = t->idem_key && am_map_get(st->idem, t->idem_key) == t;
    if (indexed)
        am_map_del(st->idem, t->idem_key);
    rc = am_task_apply(t, ev, &changed);
    if (indexed && t->idem_key && !am_map_get(st->idem, t->idem_key) &&
        am_map_put(st->idem, t->idem_key, t))
        rc = -1;
    if (rc || !changed) {
        if (created)
            am_task_free(t);
        return rc;
    }
    if (created && am_state_add_task(st, t)) {
        am_task_free(t);
        return -1;
    }
    if (t->idem_key && !am_map_get(st->idem, t->idem_key) &&
        am_map_put(st->idem, t->idem_key, t))
        return -1;
    am_agent *now = load_agent(st, t);
    if (old)
        old->active--;
    if (now)
        now->active++;
    /* Re-queued even when it stays PENDING: its priority or submit time
     * may have changed (never in a log this service wrote, but the fold
     * keeps the queue ordered whatever it reads). */
    if (was_pending)
        drop((void **)st->pending, &st->n_pending, t);
    if (t->state == AM_TASK_PENDING && pending_insert(st, t))
        return -1;
    return 0;
}

int am_state_index_task(am_state *st, am_task *t)
{
    if (t->idem_key && !am_map_get(st->idem, t->idem_key) &&
        am_map_put(st->idem, t->idem_key, t))
        return -1;
    am_agent *a = load_agent(st, t);
    if (a)
        a->active++;
    if (t->state == AM_TASK_PENDING && pending_insert(st, t))
        return -1;
    return 0;
}

int am_state_apply(am_state *st, const es_event *ev)
{
    int rc = 0;
    if (ev->stream_len > strlen(AM_AGENT_STREAM_PREFIX) &&
        strncmp(ev->stream, AM_AGENT_STREAM_PREFIX,
                strlen(AM_AGENT_STREAM_PREFIX)) == 0)
        rc = apply_agent(st, ev->stream + strlen(AM_AGENT_STREAM_PREFIX), ev);
    else if (ev->stream_len > strlen(AM_TASK_STREAM_PREFIX) &&
             strncmp(ev->stream, AM_TASK_STREAM_PREFIX,
                     strlen(AM_TASK_STREAM_PREFIX)) == 0)
        rc = apply_task(st, ev->stream + strlen(AM_TASK_STREAM_PREFIX), ev);
    if (rc == 0) {
        if (ev->position > st->max_applied)
            st->max_applied = ev->position;
        st->applied++;
    }
    return rc;
}

/* ---- protobuf copies ---------------------------------------------------- */

static char *dup_or_empty(const char *s, bool *oom)
{
    return am_strdup(s ? s : "", oom);
}

Agentmesh__V1__Agent *am_agent_to_proto(const am_agent *a)
{
    bool oom = false;
    Agentmesh__V1__Agent *p = malloc(sizeof *p);
    if (!p)
        return NULL;
    agentmesh__v1__agent__init(p);
    p->agent_id = dup_or_empty(a->id, &oom);
    p->name = dup_or_empty(a->name, &oom);
    p->capabilities = dup_strv(a->caps, a->n_caps, &oom);
    p->n_capabilities = p->capabilities ? a->n_caps : 0;
    if (a->n_labels && (p->labels = calloc(a->n_labels, sizeof *p->labels))) {
        for (size_t i = 0; i < a->n_labels; i++) {
            Agentmesh__V1__Agent__LabelsEntry *e = malloc(sizeof *e);
            if (!e) {
                oom = true;
                break;
            }
            agentmesh__v1__agent__labels_entry__init(e);
            e->key = dup_or_empty(a->labels[i].key, &oom);
            e->value = dup_or_empty(a->labels[i].value, &oom);
            p->labels[p->n_labels++] = e;
        }
    } else if (a->n_labels) {
        oom = true;
    }
    p->max_concurrency = a->max_concurrency;
    p->status = (Agentmesh__V1__AgentStatus)a->status;
    p->active_tasks = a->active;
    p->version = a->version;
    p->position = a->position;
    p->registered_at_unix_nano = a->registered_at;
    p->last_seen_unix_nano = a->last_seen;
    if (oom) {
        protobuf_c_message_free_unpacked(&p->base, NULL);
        return NULL;
    }
    return p;
}

Agentmesh__V1__Task *am_task_to_proto(const am_task *t)
{
    bool oom = false;
    Agentmesh__V1__Task *p = malloc(sizeof *p);
    if (!p)
        return NULL;
    agentmesh__v1__task__init(p);
    p->task_id = dup_or_empty(t->id, &oom);
    p->agent_id = dup_or_empty(t->agent_id, &oom);
    p->required_capabilities = dup_strv(t->caps, t->n_caps, &oom);
    p->n_required_capabilities = p->required_capabilities ? t->n_caps : 0;
    p->input = dup_or_empty(t->input, &oom);
    p->output = dup_or_empty(t->output, &oom);
    p->error = dup_or_empty(t->error, &oom);
    p->phase = dup_or_empty(t->phase, &oom);
    p->idempotency_key = dup_or_empty(t->idem_key, &oom);
    p->progress_percent = t->progress;
    p->priority = t->priority;
    p->attempt = t->attempt;
    p->state = (Agentmesh__V1__TaskState)t->state;
    p->version = t->version;
    p->position = t->position;
    p->submitted_at_unix_nano = t->submitted_at;
    p->updated_at_unix_nano = t->updated_at;
    if (oom) {
        protobuf_c_message_free_unpacked(&p->base, NULL);
        return NULL;
    }
    return p;
}

am_agent *am_agent_from_proto(const Agentmesh__V1__Agent *p)
{
    bool oom = false;
    am_agent *a = am_agent_new();
    if (!a)
        return NULL;
    a->id = am_strdup(p->agent_id, &oom);
    a->name = am_strdup(p->name, &oom);
    char *keys[AM_LABELS_MAX], *vals[AM_LABELS_MAX];
        size_t nl = label_arrays(p->n_labels, (void *const *)p->labels, keys, vals);
    if (oom || set_settings(a, p->n_capabilities, p->capabilities,
                            nl, keys, vals, p->max_concurrency)) {
        am_agent_free(a);
        return NULL;
    }
    a->status = (am_agent_status)p->status;
    a->version = p->version;
    a->position = p->position;
    a->registered_at = p->registered_at_unix_nano;
    a->last_seen = p->last_seen_unix_nano;
    return a;
}

static char *dup_nonempty(const char *s, bool *oom)
{
    return (s && *s) ? am_strdup(s, oom) : NULL;
}

am_task *am_task_from_proto(const Agentmesh__V1__Task *p, const char *target)
{
    bool oom = false;
    am_task *t = am_task_new();
    if (!t)
        return NULL;
    t->id = am_strdup(p->task_id, &oom);
    t->target = dup_nonempty(target, &oom);
    t->agent_id = dup_nonempty(p->agent_id, &oom);
    t->caps = dup_strv(p->required_capabilities, p->n_required_capabilities,
                       &oom);
    t->n_caps = t->caps ? p->n_required_capabilities : 0;
    t->input = dup_nonempty(p->input, &oom);
    t->output = dup_nonempty(p->output, &oom);
    t->error = dup_nonempty(p->error, &oom);
    t->phase = dup_nonempty(p->phase, &oom);
    t->idem_key = dup_nonempty(p->idempotency_key, &oom);
    t->progress = p->progress_percent;
    t->priority = p->priority;
    t->attempt = p->attempt;
    t->state = (am_task_state)p->state;
    t->version = p->version;
    t->position = p->position;
    t->submitted_at = p->submitted_at_unix_nano;
    t->updated_at = p->updated_at_unix_nano;
    if (oom || !t->id) {
        am_task_free(t);
        return NULL;
    }
    return t;
}
