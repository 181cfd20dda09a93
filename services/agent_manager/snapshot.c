/* Whole-state snapshots, so a restart reads one value and the log's tail
 * instead of the whole log. A snapshot holds every agent and task (as
 * agentmesh.v1.Agent / Task messages) and a watermark W: every event at or
 * below W is in it. Events above W may be in it too (appends in flight when
 * it was taken); replay skips them by stream version. */
#include <stdlib.h>
#include <string.h>

#include "services/agent_manager/internal.h"

#define SNAP_NS "agent-manager"
#define SNAP_KEY "state"
#define SNAP_MAGIC "AMS1"

typedef struct wbuf {
    uint8_t *p;
    size_t len, cap;
    bool oom;
} wbuf;

static void put(wbuf *b, const void *src, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n > b->cap) {
        size_t nc = b->cap ? b->cap : 4096;
        while (nc < b->len + n)
            nc *= 2;
        uint8_t *np = realloc(b->p, nc);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->len, src, n);
    b->len += n;
}

static void put_u32(wbuf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
                    (uint8_t)(v >> 24)};
    put(b, x, 4);
}

static void put_u64(wbuf *b, uint64_t v)
{
    put_u32(b, (uint32_t)v);
    put_u32(b, (uint32_t)(v >> 32));
}

static void put_msg(wbuf *b, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    put_u32(b, (uint32_t)n);
    if (b->oom || b->len + n > b->cap) {
        uint8_t *tmp = malloc(n ? n : 1);
        if (!tmp) {
            b->oom = true;
            return;
        }
        protobuf_c_message_pack(m, tmp);
        put(b, tmp, n);
        free(tmp);
        return;
    }
    protobuf_c_message_pack(m, b->p + b->len);
    b->len += n;
}

int am_snapshot_encode(am_service *s, uint8_t **buf, size_t *len)
{
    wbuf b = {0};
    uint64_t w = s->st.max_applied;
    for (const am_op *op = s->ops; op; op = op->next)
        if (op->mark < w)
            w = op->mark;
    put(&b, SNAP_MAGIC, 4);
    put_u64(&b, w);
    put_u32(&b, (uint32_t)s->st.n_agents);
    for (size_t i = 0; i < s->st.n_agents && !b.oom; i++) {
        const am_agent *a = s->st.agent_list[i];
        if (a->ghost || a->version == ES_NO_VERSION) {
            put_u32(&b, 0);
            continue;
        }
        Agentmesh__V1__Agent *m = am_agent_to_proto(a);
        if (!m) {
            b.oom = true;
            break;
        }
        put_msg(&b, &m->base);
        protobuf_c_message_free_unpacked(&m->base, NULL);
    }
    put_u32(&b, (uint32_t)s->st.n_tasks);
    for (size_t i = 0; i < s->st.n_tasks && !b.oom; i++) {
        const am_task *t = s->st.task_list[i];
        if (t->ghost || t->version == ES_NO_VERSION) {
            put_u32(&b, 0);
            put_u32(&b, 0);
            continue;
        }
        const char *target = t->target ? t->target : "";
        put_u32(&b, (uint32_t)strlen(target));
        put(&b, target, strlen(target));
        Agentmesh__V1__Task *m = am_task_to_proto(t);
        if (!m) {
            b.oom = true;
            break;
        }
        put_msg(&b, &m->base);
        protobuf_c_message_free_unpacked(&m->base, NULL);
    }
    if (b.oom) {
        free(b.p);
        return ES_NOMEM;
    }
    *buf = b.p;
    *len = b.len;
    return ES_OK;
}

typedef struct rbuf {
    const uint8_t *p;
    size_t len, at;
} rbuf;

static int get_u32(rbuf *r, uint32_t *v)
{
    if (r->len - r->at < 4)
        return -1;
    const uint8_t *x = r->p + r->at;
    *v = (uint32_t)x[0] | (uint32_t)x[1] << 8 | (uint32_t)x[2] << 16 |
         (uint32_t)x[3] << 24;
    r->at += 4;
    return 0;
}

static int get_bytes(rbuf *r, uint32_t n, const uint8_t **out)
{
    if (r->len - r->at < n)
        return -1;
    *out = r->p + r->at;
    r->at += n;
    return 0;
}

int am_snapshot_decode(am_state *st, const uint8_t *p, size_t len, uint64_t *w)
{
    rbuf r = {p, len, 0};
    uint32_t n, lo, hi, k;
    const uint8_t *bytes;
    if (len < 12 || memcmp(p, SNAP_MAGIC, 4) != 0)
        return ES_CORRUPT;
    r.at = 4;
    if (get_u32(&r, &lo) || get_u32(&r, &hi) || get_u32(&r, &n))
        return ES_CORRUPT;
    *w = (uint64_t)hi << 32 | lo;
    for (uint32_t i = 0; i < n; i++) {
        if (get_u32(&r, &k) || get_bytes(&r, k, &bytes))
            return ES_CORRUPT;
        if (!k)
            continue;
        Agentmesh__V1__Agent *m = agentmesh__v1__agent__unpack(NULL, k, bytes);
        if (!m)
            return ES_CORRUPT;
        if (!am_id_valid(m->agent_id) || am_map_get(st->agents, m->agent_id)) {
            agentmesh__v1__agent__free_unpacked(m, NULL);
            return ES_CORRUPT;
        }
        am_agent *a = am_agent_from_proto(m);
        agentmesh__v1__agent__free_unpacked(m, NULL);
        if (!a || am_state_add_agent(st, a)) {
            am_agent_free(a);
            return ES_NOMEM;
        }
        a->active = 0;
    }
    if (get_u32(&r, &n))
        return ES_CORRUPT;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *tb;
        char target[AM_ID_MAX + 1];
        if (get_u32(&r, &k))
            return ES_CORRUPT;
        if (k > AM_ID_MAX || get_bytes(&r, k, &tb))
            return ES_CORRUPT;
        memcpy(target, tb, k);
        target[k] = '\0';
        uint32_t mlen;
        if (get_u32(&r, &mlen) || get_bytes(&r, mlen, &bytes))
            return ES_CORRUPT;
        if (!mlen)
            continue;
        Agentmesh__V1__Task *m = agentmesh__v1__task__unpack(NULL, mlen, bytes);
        if (!m)
            return ES_CORRUPT;
        if (!am_id_valid(m->task_id) || am_map_get(st->tasks, m->task_id)) {
            agentmesh__v1__task__free_unpacked(m, NULL);
            return ES_CORRUPT;
        }
        am_task *t = am_task_from_proto(m, target);
        agentmesh__v1__task__free_unpacked(m, NULL);
        if (!t || am_state_add_task(st, t)) {
            am_task_free(t);
            return ES_NOMEM;
        }
        if (am_state_index_task(st, t))
            return ES_NOMEM;
    }
    return r.at == r.len ? ES_OK : ES_CORRUPT;
}

typedef struct put_arg {
    const uint8_t *buf;
    size_t len;
} put_arg;

static int put_snapshot(es_txn *txn, const es_append_result *appended,
                        void *arg)
{
    (void)appended;
    put_arg *a = arg;
    return es_kv_put(txn, SNAP_NS, SNAP_KEY, strlen(SNAP_KEY), a->buf, a->len);
}

int am_service_snapshot(am_service *s)
{
    uint8_t *buf = NULL;
    size_t len = 0;
    pthread_mutex_lock(&s->mu);
    uint64_t applied = s->st.applied;
    uint64_t entities = (uint64_t)s->st.n_agents + s->st.n_tasks;
    /* A state that missed a committed event must never be saved: the next
     * start rebuilds from the log instead. */
    int rc = s->broken ? ES_CORRUPT : am_snapshot_encode(s, &buf, &len);
    pthread_mutex_unlock(&s->mu);
    if (rc)
        return rc;
    put_arg a = {buf, len};
    rc = es_write(s->store, put_snapshot, &a);
    free(buf);
    if (rc == ES_OK) {
        pthread_mutex_lock(&s->mu);
        s->snap_applied = applied;
        s->snap_entities = entities;
        pthread_mutex_unlock(&s->mu);
    }
    return rc;
}

int am_snapshot_load(am_service *s, uint64_t *after)
{
    es_txn *txn = NULL;
    const void *val = NULL;
    size_t len = 0;
    uint64_t w = 0;
    int rc = es_txn_begin(s->store, &txn);
    if (rc)
        return rc;
    rc = es_kv_get(txn, SNAP_NS, SNAP_KEY, strlen(SNAP_KEY), &val, &len);
    if (rc == ES_NOT_FOUND) {
        rc = ES_OK;
    } else if (rc == ES_OK) {
        rc = am_snapshot_decode(&s->st, val, len, &w);
        if (rc == ES_OK && w > s->st.max_applied)
            s->st.max_applied = w;
    }
    es_txn_end(txn);
    if (rc == ES_OK)
        *after = w;
    return rc;
}

