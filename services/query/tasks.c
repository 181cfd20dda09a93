/* The tasks read model: one Task record per task (as AgentManager.GetTask
 * shows it), indexes by creation, agent, state and submission time, the
 * per-task timeline, the tasks-by-state counters and the agents'
 * active_tasks. The record is stored as [8-byte creation position][2-byte
 * length][requested agent][packed Task]: the creation position is the
 * immutable tail of every index key (what keeps pagination stable), and the
 * requested agent is what a retry goes back to. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentmesh/v1/events.pb-c.h"
#include "services/query/query.h"
#include "services/query/wire.h"

#define NS "q.tasks"
#define NS_POS "q.tasks.pos"
#define NS_AGENT "q.tasks.agent"
#define NS_STATE "q.tasks.state"
#define NS_TIME "q.tasks.time"
#define NS_TIMELINE "q.timeline"
#define PREFIX "task-"
#define ID_MAX 256

typedef struct rec {
    uint64_t created;
    char target[ID_MAX + 1];
    Agentmesh__V1__Task *t;
} rec;

static const char *state_name(int s)
{
    const ProtobufCEnumValue *v = protobuf_c_enum_descriptor_get_value(
        &agentmesh__v1__task_state__descriptor, s);
    return v ? v->name : "TASK_STATE_UNSPECIFIED";
}

static bool active(int s)
{
    return s == AGENTMESH__V1__TASK_STATE__TASK_STATE_ASSIGNED ||
           s == AGENTMESH__V1__TASK_STATE__TASK_STATE_RUNNING;
}

static int load(es_txn *txn, const char *id, rec *r)
{
    const void *v;
    size_t vl;
    int rc = es_kv_get(txn, NS, id, strlen(id), &v, &vl);
    if (rc)
        return rc;
    const uint8_t *b = v;
    if (vl < 10)
        return ES_CORRUPT;
    r->created = qs_get_be64(b);
    size_t tl = (size_t)b[8] << 8 | b[9];
    if (tl > ID_MAX || 10 + tl > vl)
        return ES_CORRUPT;
    memcpy(r->target, b + 10, tl);
    r->target[tl] = '\0';
    r->t = agentmesh__v1__task__unpack(NULL, vl - 10 - tl, b + 10 + tl);
    return r->t ? ES_OK : ES_CORRUPT;
}

static size_t str_len(const char *s)
{
    return s ? strlen(s) : 0;
}

size_t qs_task_packed_size(const Agentmesh__V1__Task *t)
{
    size_t n = wire_bytes_len(1, str_len(t->task_id)) +
               wire_bytes_len(2, str_len(t->agent_id));
    for (size_t i = 0; i < t->n_required_capabilities; i++)
        n += wire_elem_len(3, str_len(t->required_capabilities[i]));
    return n + wire_bytes_len(4, str_len(t->input)) +
           wire_bytes_len(5, str_len(t->output)) +
           wire_bytes_len(6, str_len(t->error)) +
           wire_bytes_len(7, str_len(t->phase)) +
           wire_u64_len(8, t->progress_percent) +
           wire_u64_len(9, wire_i32(t->priority)) +
           wire_u64_len(10, t->attempt) +
           wire_u64_len(11, wire_i32((int32_t)t->state)) +
           wire_u64_len(12, t->version) + wire_u64_len(13, t->position) +
           wire_u64_len(14, (uint64_t)t->submitted_at_unix_nano) +
           wire_u64_len(15, (uint64_t)t->updated_at_unix_nano) +
           wire_bytes_len(16, str_len(t->idempotency_key));
}

size_t qs_task_pack(const Agentmesh__V1__Task *t, uint8_t *out)
{
    uint8_t *p = wire_put_bytes(out, 1, t->task_id, str_len(t->task_id));
    p = wire_put_bytes(p, 2, t->agent_id, str_len(t->agent_id));
    for (size_t i = 0; i < t->n_required_capabilities; i++)
        p = wire_put_elem(p, 3, t->required_capabilities[i],
                          str_len(t->required_capabilities[i]));
    p = wire_put_bytes(p, 4, t->input, str_len(t->input));
    p = wire_put_bytes(p, 5, t->output, str_len(t->output));
    p = wire_put_bytes(p, 6, t->error, str_len(t->error));
    p = wire_put_bytes(p, 7, t->phase, str_len(t->phase));
    p = wire_put_u64(p, 8, t->progress_percent);
    p = wire_put_u64(p, 9, wire_i32(t->priority));
    p = wire_put_u64(p, 10, t->attempt);
    p = wire_put_u64(p, 11, wire_i32((int32_t)t->state));
    p = wire_put_u64(p, 12, t->version);
    p = wire_put_u64(p, 13, t->position);
    p = wire_put_u64(p, 14, (uint64_t)t->submitted_at_unix_nano);
    p = wire_put_u64(p, 15, (uint64_t)t->updated_at_unix_nano);
    p = wire_put_bytes(p, 16, t->idempotency_key, str_len(t->idempotency_key));
    return (size_t)(p - out);
}

/* The stored form of a record, in a new buffer from ar (NULL: malloc):
 * creation position, requested agent, the Task (qs_task_pack). */
static int encode(const rec *r, qs_arena *ar, uint8_t **out, size_t *len)
{
    size_t tl = strlen(r->target);
    size_t pl = qs_task_packed_size(r->t);
    uint8_t *b = ar ? qs_arena_alloc(ar, 10 + tl + pl) : malloc(10 + tl + pl);
    if (!b)
        return ES_NOMEM;
    qs_be64(b, r->created);
    b[8] = (uint8_t)(tl >> 8);
    b[9] = (uint8_t)tl;
    memcpy(b + 10, r->target, tl);
    *len = 10 + tl + qs_task_pack(r->t, b + 10 + tl);
    *out = b;
    return ES_OK;
}

static int store(es_txn *txn, const rec *r)
{
    uint8_t *b;
    size_t len;
    int rc = encode(r, NULL, &b, &len);
    if (rc)
        return rc;
    rc = es_kv_put(txn, NS, r->t->task_id, strlen(r->t->task_id), b, len);
    free(b);
    return rc;
}

static uint64_t time_key(int64_t t)
{
    return (uint64_t)t ^ (1ull << 63);
}

/* What a task's index keys are made of, besides its creation position
 * (which never changes). */
typedef struct keys {
    int state;
    int64_t submitted;
    char agent[ID_MAX + 1]; /* cut at ID_MAX */
    bool by_agent;          /* an agent id of 1..ID_MAX bytes is indexed */
} keys;

static void keys_of(const Agentmesh__V1__Task *t, keys *k)
{
    const char *a = t->agent_id ? t->agent_id : "";
    size_t al = strlen(a);
    k->state = t->state;
    k->submitted = t->submitted_at_unix_nano;
    k->by_agent = al && al <= ID_MAX;
    if (al > ID_MAX)
        al = ID_MAX;
    memcpy(k->agent, a, al);
    k->agent[al] = '\0';
}

/* Brings a task's index entries and state counter from `old` (NULL for a
 * new task) to the record's: only the entries whose key changed are
 * deleted and written, since most events change one field of a task. */
static int index_task(qs_tx *tx, const char *id, uint64_t created,
                      const keys *nowp, const keys *old)
{
    es_txn *txn = tx->txn;
    size_t idl = strlen(id);
    const keys now = *nowp;
    uint8_t k[ID_MAX + 32];
    size_t kl;
    int rc;
#define EDIT(ns, put)                                                         \
    do {                                                                      \
        rc = (put) ? es_kv_put(txn, ns, k, kl, id, idl)                       \
                   : es_kv_del(txn, ns, k, kl);                               \
        if (rc && rc != ES_NOT_FOUND)                                         \
            return rc;                                                        \
    } while (0)
    for (int put = old ? 0 : 1; put < 2; put++) {
        const keys *x = put ? &now : old;
        if (!old) {
            qs_be64(k, created);
            kl = 8;
            EDIT(NS_POS, put);
        }
        if (!old || old->state != now.state) {
            k[0] = (uint8_t)x->state;
            qs_be64(k + 1, created);
            kl = 9;
            EDIT(NS_STATE, put);
        }
        if (!old || old->submitted != now.submitted) {
            qs_be64(k, time_key(x->submitted));
            qs_be64(k + 8, created);
            kl = 16;
            EDIT(NS_TIME, put);
        }
        size_t al = strlen(x->agent);
        if (x->by_agent && (!old || old->by_agent != now.by_agent ||
                            strcmp(old->agent, now.agent))) {
            memcpy(k, x->agent, al);
            k[al] = 0;
            qs_be64(k + al + 1, created);
            kl = al + 9;
            EDIT(NS_AGENT, put);
        }
    }
#undef EDIT
    if (old && old->state == now.state)
        return ES_OK;
    if (old && (rc = qs_stats_add(tx, "task", state_name(old->state), -1)))
        return rc;
    return qs_stats_add(tx, "task", state_name(now.state), 1);
}

static int set_str(char **dst, const char *src)
{
    char *d = strdup(src ? src : "");
    if (!d)
        return ES_NOMEM;
    qs_free_str(*dst);
    *dst = d;
    return ES_OK;
}

static int fold_submitted(rec *r, const Agentmesh__V1__TaskSubmitted *p)
{
    Agentmesh__V1__Task *t = r->t;
    int rc;
    snprintf(r->target, sizeof r->target, "%s", p->agent_id ? p->agent_id : "");
    for (size_t i = 0; i < t->n_required_capabilities; i++)
        free(t->required_capabilities[i]);
    free(t->required_capabilities);
    t->required_capabilities = NULL;
    t->n_required_capabilities = 0;
    if (p->n_required_capabilities) {
        if (!(t->required_capabilities =
                  calloc(p->n_required_capabilities, sizeof(char *))))
            return ES_NOMEM;
        for (size_t i = 0; i < p->n_required_capabilities; i++) {
            if (!(t->required_capabilities[i] =
                      strdup(p->required_capabilities[i])))
                return ES_NOMEM;
            t->n_required_capabilities++;
        }
    }
    if ((rc = set_str(&t->input, p->input)) ||
        (rc = set_str(&t->agent_id, r->target)) ||
        (rc = set_str(&t->idempotency_key, p->idempotency_key)))
        return rc;
    t->priority = p->priority;
    t->submitted_at_unix_nano = p->submitted_at_unix_nano;
    t->state = AGENTMESH__V1__TASK_STATE__TASK_STATE_PENDING;
    t->attempt = 1;
    return ES_OK;
}

/* Folds one event into the task; *changed when it was a task event. */
static int fold(rec *r, const qs_event *ev, bool *changed)
{
    Agentmesh__V1__Task *t = r->t;
    const ProtobufCMessageDescriptor *d = ev->payload->descriptor;
    const void *p = ev->payload;
    int rc = ES_OK;
    *changed = true;
    if (d == &agentmesh__v1__task_submitted__descriptor) {
        rc = fold_submitted(r, p);
    } else if (d == &agentmesh__v1__task_assigned__descriptor) {
        const Agentmesh__V1__TaskAssigned *a = p;
        rc = set_str(&t->agent_id, a->agent_id);
        t->state = AGENTMESH__V1__TASK_STATE__TASK_STATE_ASSIGNED;
        if (a->attempt)
            t->attempt = a->attempt;
    } else if (d == &agentmesh__v1__task_started__descriptor) {
        t->state = AGENTMESH__V1__TASK_STATE__TASK_STATE_RUNNING;
    } else if (d == &agentmesh__v1__task_progressed__descriptor) {
        const Agentmesh__V1__TaskProgressed *g = p;
        rc = set_str(&t->phase, g->phase);
        t->progress_percent = g->progress_percent;
    } else if (d == &agentmesh__v1__task_completed__descriptor) {
        rc = set_str(&t->output, ((const Agentmesh__V1__TaskCompleted *)p)->output);
        t->state = AGENTMESH__V1__TASK_STATE__TASK_STATE_COMPLETED;
    } else if (d == &agentmesh__v1__task_failed__descriptor) {
        rc = set_str(&t->error, ((const Agentmesh__V1__TaskFailed *)p)->error);
        t->state = AGENTMESH__V1__TASK_STATE__TASK_STATE_FAILED;
    } else if (d == &agentmesh__v1__task_cancelled__descriptor) {
        t->state = AGENTMESH__V1__TASK_STATE__TASK_STATE_CANCELLED;
    } else if (d == &agentmesh__v1__task_retried__descriptor) {
        if (!(rc = set_str(&t->agent_id, r->target)))
            rc = set_str(&t->phase, "");
        t->state = AGENTMESH__V1__TASK_STATE__TASK_STATE_PENDING;
        t->attempt = ((const Agentmesh__V1__TaskRetried *)p)->attempt;
        t->progress_percent = 0;
    } else {
        *changed = false;
    }
    return rc;
}

/* A task's timeline is the event that created its record (at the record's
 * creation position) and then, in q.timeline, each later event that changed
 * it: an event makes no entry before its task's record exists, so the one
 * that creates the record is always the first, and keeping it implied
 * saves every new task a B-tree insert. */
static int timeline_add(es_txn *txn, const qs_event *ev, const char *id)
{
    uint8_t k[ID_MAX + 16], v[8];
    size_t idl = strlen(id);
    memcpy(k, id, idl);
    k[idl] = 0;
    qs_be64(k + idl + 1, ev->stream_version);
    qs_be64(v, ev->position);
    return es_kv_put(txn, NS_TIMELINE, k, idl + 9, v, 8);
}

/* The task id of a task stream's event, or NULL. */
static const char *task_id_of(const qs_event *ev)
{
    size_t pl = sizeof PREFIX - 1;
    if (strncmp(ev->stream, PREFIX, pl) || !ev->stream[pl] || !ev->payload ||
        strlen(ev->stream + pl) > ID_MAX)
        return NULL;
    return ev->stream + pl;
}

static bool makes_task(const qs_event *ev)
{
    return ev->stream_version == 0 &&
           ev->payload->descriptor == &agentmesh__v1__task_submitted__descriptor;
}

int qs_tasks_prepare(qs_event *ev, qs_arena *ar)
{
    const char *id = task_id_of(ev);
    if (!id || !makes_task(ev))
        return ES_OK;
    /* What fold_submitted makes of a new task, with the event's strings
     * borrowed instead of copied: the message only lives to be packed.
     * apply_test compares the two. */
    const Agentmesh__V1__TaskSubmitted *p = (const void *)ev->payload;
    Agentmesh__V1__Task t = AGENTMESH__V1__TASK__INIT;
    rec r;
    memset(&r, 0, sizeof r);
    r.t = &t;
    r.created = ev->position;
    const char *a = p->agent_id ? p->agent_id : "";
    size_t al = strnlen(a, sizeof r.target - 1); /* cut as snprintf would */
    memcpy(r.target, a, al);
    r.target[al] = '\0';
    t.task_id = (char *)id;
    t.required_capabilities = p->required_capabilities;
    t.n_required_capabilities = p->n_required_capabilities;
    t.input = p->input ? p->input : "";
    t.agent_id = r.target;
    t.idempotency_key = p->idempotency_key ? p->idempotency_key : "";
    t.priority = p->priority;
    t.submitted_at_unix_nano = p->submitted_at_unix_nano;
    t.state = AGENTMESH__V1__TASK_STATE__TASK_STATE_PENDING;
    t.attempt = 1;
    t.version = ev->stream_version;
    t.position = ev->position;
    t.updated_at_unix_nano = ev->time_unix_nano;
    return encode(&r, ar, &ev->rec, &ev->rec_len);
}

/* A new task from its prepared record: the record and the index entries
 * of a PENDING task. Its first timeline entry is the record's creation
 * position (qs_tasks_timeline), not an entry of its own. */
static int apply_prepared(qs_tx *tx, const qs_event *ev, const char *id)
{
    const Agentmesh__V1__TaskSubmitted *p = (const void *)ev->payload;
    const uint8_t *b = ev->rec;
    keys now;
    memset(&now, 0, sizeof now);
    if (ev->rec_len < 10)
        return ES_CORRUPT;
    size_t al = (size_t)b[8] << 8 | b[9]; /* the requested agent */
    if (al > ID_MAX || 10 + al > ev->rec_len)
        return ES_CORRUPT;
    memcpy(now.agent, b + 10, al);
    now.agent[al] = '\0';
    now.by_agent = al > 0;
    now.state = AGENTMESH__V1__TASK_STATE__TASK_STATE_PENDING;
    now.submitted = p->submitted_at_unix_nano;
    int rc = es_kv_put(tx->txn, NS, id, strlen(id), ev->rec,
                       ev->rec_len);
    return rc ? rc : index_task(tx, id, ev->position, &now, NULL);
}

int qs_tasks_apply(qs_tx *tx, const qs_event *ev)
{
    es_txn *txn = tx->txn;
    const char *id = task_id_of(ev);
    if (!id)
        return ES_OK;
    if (ev->rec && makes_task(ev))
        return apply_prepared(tx, ev, id);
    rec r;
    memset(&r, 0, sizeof r);
    /* A stream's first event (version 0) finds no record: records are made
     * only by their own stream's events and each event is applied once, so
     * a new task (most events of a rebuild) skips the lookup. */
    int rc = ev->stream_version == 0 ? ES_NOT_FOUND : load(txn, id, &r);
    bool existed = rc == ES_OK;
    bool changed = false;
    if (rc && rc != ES_NOT_FOUND)
        return rc;
    if (!existed) {
        if (ev->payload->descriptor != &agentmesh__v1__task_submitted__descriptor)
            return ES_OK;
        if (!(r.t = malloc(sizeof *r.t)))
            return ES_NOMEM;
        agentmesh__v1__task__init(r.t);
        if (!(r.t->task_id = strdup(id))) {
            rc = ES_NOMEM;
            goto out;
        }
        r.created = ev->position;
    } else if (ev->stream_version <= r.t->version) {
        rc = ES_OK;
        goto out;
    }
    keys old;
    keys_of(r.t, &old);
    if ((rc = fold(&r, ev, &changed)) || !changed)
        goto out;
    r.t->version = ev->stream_version;
    r.t->position = ev->position;
    r.t->updated_at_unix_nano = ev->time_unix_nano;
    keys now;
    keys_of(r.t, &now);
    if ((rc = store(txn, &r)) ||
        (rc = index_task(tx, id, r.created, &now, existed ? &old : NULL)) ||
        (existed && (rc = timeline_add(txn, ev, id))))
        goto out;
    if (existed && active(old.state) &&
        (rc = qs_agents_adjust_active(tx, old.agent, -1)))
        goto out;
    if (active(r.t->state) &&
        (rc = qs_agents_adjust_active(tx, r.t->agent_id, 1)))
        goto out;
    if (r.t->state == AGENTMESH__V1__TASK_STATE__TASK_STATE_COMPLETED &&
        old.state != (int)r.t->state)
        rc = qs_stats_latency(tx, ev->time_unix_nano -
                                       r.t->submitted_at_unix_nano);
out:
    if (r.t)
        protobuf_c_message_free_unpacked(&r.t->base, NULL);
    return rc;
}

typedef struct list_ctx {
    const Agentmesh__V1__ListTasksRequest *req;
    bool by_time;
    Agentmesh__V1__Task **out;
    size_t n;
} list_ctx;

static int take_task(void *arg, es_txn *txn, const uint8_t *suffix,
                     size_t sl, const void *val, size_t vl)
{
    list_ctx *c = arg;
    const Agentmesh__V1__ListTasksRequest *q = c->req;
    char id[ID_MAX + 1];
    rec r;
    (void)suffix;
    (void)sl;
    if (vl > ID_MAX)
        return 0;
    if (c->by_time && q->until_unix_nano &&
        (int64_t)(qs_get_be64(suffix) ^ (1ull << 63)) >= q->until_unix_nano)
        return QS_STOP;
    memcpy(id, val, vl);
    id[vl] = '\0';
    memset(&r, 0, sizeof r);
    int rc = load(txn, id, &r);
    if (rc == ES_NOT_FOUND)
        return 0;
    if (rc)
        return -rc;
    const Agentmesh__V1__Task *t = r.t;
    bool ok = (!q->state || (int)t->state == (int)q->state) &&
              (!q->agent_id || !*q->agent_id ||
               !strcmp(t->agent_id, q->agent_id)) &&
              (!q->since_unix_nano ||
               t->submitted_at_unix_nano >= q->since_unix_nano) &&
              (!q->until_unix_nano ||
               t->submitted_at_unix_nano < q->until_unix_nano);
    if (!ok) {
        protobuf_c_message_free_unpacked(&r.t->base, NULL);
        return 0;
    }
    c->out[c->n++] = r.t;
    return 1;
}

int qs_tasks_list(es_txn *txn, const Agentmesh__V1__ListTasksRequest *req,
                  Agentmesh__V1__ListTasksResponse *resp, char *msg,
                  size_t msglen)
{
    list_ctx c = {req, false, NULL, 0};
    size_t limit = qs_page_size(req->page_size);
    uint64_t h = qs_hash(0, req->agent_id, strlen(req->agent_id));
    h = qs_hash(h, &req->state, sizeof req->state);
    h = qs_hash(h, &req->since_unix_nano, sizeof req->since_unix_nano);
    h = qs_hash(h, &req->until_unix_nano, sizeof req->until_unix_nano);
    uint8_t after[QS_KEY_CAP], last[QS_KEY_CAP], prefix[ID_MAX + 2];
    size_t after_len = 0, last_len = 0, prefix_len = 0;
    if (qs_token_decode(req->page_token, 't', h, after, sizeof after,
                        &after_len)) {
        snprintf(msg, msglen, "page_token: malformed or issued for other "
                              "filters");
        return ES_INVALID;
    }
    if (req->until_unix_nano && req->since_unix_nano > req->until_unix_nano) {
        snprintf(msg, msglen, "since_unix_nano is after until_unix_nano");
        return ES_INVALID;
    }
    const char *ns = NS_POS;
    size_t al = strlen(req->agent_id);
    if (al) {
        if (al > ID_MAX)
            return ES_OK;
        ns = NS_AGENT;
        memcpy(prefix, req->agent_id, al);
        prefix[al] = 0;
        prefix_len = al + 1;
    } else if (req->state) {
        ns = NS_STATE;
        prefix[0] = (uint8_t)req->state;
        prefix_len = 1;
    } else if (req->since_unix_nano || req->until_unix_nano) {
        ns = NS_TIME;
        c.by_time = true;
        if (!after_len && req->since_unix_nano) {
            /* Strictly after (since - 1, last position) = from since. */
            qs_be64(after, time_key(req->since_unix_nano - 1));
            memset(after + 8, 0xff, 8);
            after_len = 16;
        }
    }
    if (!(c.out = calloc(limit, sizeof *c.out)))
        return ES_NOMEM;
    bool more = false;
    int rc = qs_scan_page(txn, ns, prefix, prefix_len, after, after_len,
                          limit, take_task, &c, last, &last_len, &more);
    if (!rc && more && last_len)
        rc = qs_token_encode('t', h, last, last_len, &resp->next_page_token);
    if (rc) {
        for (size_t i = 0; i < c.n; i++)
            protobuf_c_message_free_unpacked(&c.out[i]->base, NULL);
        free(c.out);
        return rc;
    }
    resp->tasks = c.out;
    resp->n_tasks = c.n;
    return ES_OK;
}

typedef struct tl_ctx {
    Agentmesh__V1__Event **evs;
    size_t n, cap;
    int rc;
} tl_ctx;

/* Appends the feed's event at `position`; 1, 0 when the feed lacks it,
 * or a negated error. */
static int take_position(tl_ctx *c, es_txn *txn, uint64_t position)
{
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 16;
        Agentmesh__V1__Event **v = realloc(c->evs, cap * sizeof *v);
        if (!v)
            return -ES_NOMEM;
        c->evs = v;
        c->cap = cap;
    }
    int rc = qs_feed_get(txn, QS_AGENTS, position, &c->evs[c->n]);
    if (rc == ES_NOT_FOUND)
        return 0;
    if (rc)
        return -rc;
    c->n++;
    return 1;
}

static int take_event(void *arg, es_txn *txn, const uint8_t *suffix,
                      size_t sl, const void *val, size_t vl)
{
    (void)suffix;
    (void)sl;
    return vl == 8 ? take_position(arg, txn, qs_get_be64(val)) : 0;
}

int qs_tasks_timeline(es_txn *txn, const char *task_id,
                      Agentmesh__V1__GetTaskTimelineResponse *resp)
{
    uint8_t prefix[ID_MAX + 2], last[QS_KEY_CAP];
    size_t idl = task_id ? strlen(task_id) : 0, last_len;
    tl_ctx c = {NULL, 0, 0, 0};
    bool more = true;
    if (!idl || idl > ID_MAX)
        return ES_NOT_FOUND;
    memcpy(prefix, task_id, idl);
    prefix[idl] = 0;
    /* First the event that created the record (see timeline_add). */
    const void *v;
    size_t vl;
    int rc = es_kv_get(txn, NS, task_id, idl, &v, &vl);
    if (rc == ES_OK && vl < 10) {
        rc = ES_CORRUPT;
    } else if (rc == ES_OK) {
        int took = take_position(&c, txn, qs_get_be64(v));
        rc = took < 0 ? -took : ES_OK;
    } else if (rc == ES_NOT_FOUND) {
        rc = ES_OK;
    }
    size_t after_len = 0;
    uint8_t after[QS_KEY_CAP];
    while (!rc && more) {
        rc = qs_scan_page(txn, NS_TIMELINE, prefix, idl + 1, after, after_len,
                          QS_PAGE_MAX, take_event, &c, last, &last_len, &more);
        memcpy(after, last, last_len);
        after_len = last_len;
        if (!last_len)
            break;
    }
    if (!rc && c.n == 0)
        rc = ES_NOT_FOUND;
    if (rc) {
        qs_free_events(c.evs, c.n);
        return rc;
    }
    resp->events = c.evs;
    resp->n_events = c.n;
    return ES_OK;
}
