/* memory-sync's read state in the event store's caller keys: namespace
 * metadata, namespace keys, entry records (sealed values only), the
 * applied-change index; and the write batch that appends a command's events
 * and changes those keys in the same LMDB write transaction (es_append_with),
 * so the state never disagrees with the log. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "services/memory_sync/internal.h"

#define META_FORMAT 1
#define META_SIZE 15
#define ENTRY_FORMAT 1
#define ENTRY_POS_OFFSET 22
#define ENTRY_FIXED 78

static void put_be(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get_be(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | p[i];
    return v;
}

/* ---- Helpers ---------------------------------------------------------------*/

int64_t ms_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int ms_fail(ms_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

int ms_store_fail(ms_error *err, int es_rc, const char *what)
{
    int code = es_status_grpc_code(es_rc);
    if (code == 0)
        code = 13;
    return ms_fail(err, code, "%s: %s", what, es_strerror(es_rc));
}

int ms_check_ns(const char *ns, ms_error *err)
{
    if (!ms_namespace_valid(ns))
        return ms_fail(err, 3,
                       "namespace must be 1..%d characters of [A-Za-z0-9._-]",
                       MS_NS_MAX);
    return 0;
}

int ms_check_key(const char *key, ms_error *err)
{
    size_t n = strlen(key);
    if (n == 0 || n > MS_KEY_MAX || !ms_utf8_valid(key, n))
        return ms_fail(err, 3, "key must be 1..%d bytes of UTF-8 without NUL",
                       MS_KEY_MAX);
    return 0;
}

char *ms_strndup(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        if (n)
            memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

pthread_mutex_t *ms_lock_for(ms_service *s, const char *ns)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)ns; *p; p++)
        h = (h ^ *p) * 16777619u;
    return &s->locks[h % MS_LOCKS];
}

/* ---- Records ---------------------------------------------------------------*/

static void meta_encode(const ms_ns_meta *m, uint8_t out[META_SIZE])
{
    out[0] = META_FORMAT;
    put_be(out + 1, m->generation, 4);
    out[5] = m->active ? 1 : 0;
    out[6] = (uint8_t)m->strategy;
    put_be(out + 7, m->gen_start_version, 8);
}

int ms_meta_get(es_txn *txn, const char *ns, ms_ns_meta *out)
{
    const void *v = NULL;
    size_t n = 0;
    int rc = es_kv_get(txn, KV_NS, ns, strlen(ns), &v, &n);
    if (rc)
        return rc;
    const uint8_t *p = v;
    if (n != META_SIZE || p[0] != META_FORMAT)
        return ES_CORRUPT;
    out->generation = (uint32_t)get_be(p + 1, 4);
    out->active = p[5] != 0;
    out->strategy = p[6];
    out->gen_start_version = get_be(p + 7, 8);
    return ES_OK;
}

int ms_ns_load(ms_service *s, es_txn *txn, const char *ns, ms_ns_state *st)
{
    char stream[MS_STREAM_MAX];
    uint64_t version = 0;
    int rc;
    memset(st, 0, sizeof *st);
    rc = ms_meta_get(txn, ns, &st->meta);
    if (rc && rc != ES_NOT_FOUND)
        return rc;
    st->exists = rc == ES_OK;
    if (st->exists && st->meta.active) {
        uint32_t gen = 0;
        if ((rc = ms_nskey_get(s, txn, ns, &gen, &st->key)))
            return rc == ES_NOT_FOUND ? ES_CORRUPT : rc;
        if (gen != st->meta.generation)
            return ES_CORRUPT;
    }
    snprintf(stream, sizeof stream, "%s%s", MS_STREAM_PREFIX, ns);
    rc = es_stream_version(txn, stream, &version);
    if (rc == ES_NOT_FOUND) {
        st->expected = ES_EXPECT_NO_STREAM;
        st->next_version = 0;
        return ES_OK;
    }
    if (rc)
        return rc;
    st->expected = (int64_t)version;
    st->next_version = version + 1;
    return ES_OK;
}

size_t ms_kvkey(const char *ns, const void *key, size_t key_len, uint8_t *out)
{
    size_t n = strlen(ns);
    memcpy(out, ns, n);
    out[n] = 0;
    memcpy(out + n + 1, key, key_len);
    return n + 1 + key_len;
}

int ms_entry_encode(const ms_entry *e, uint8_t **out, size_t *len)
{
    size_t n = ENTRY_FIXED + 2 + e->replica_len + 2 + e->ctype_len + 4 +
               e->sealed_len;
    uint8_t *p = malloc(n);
    if (!p)
        return -1;
    p[0] = ENTRY_FORMAT;
    p[1] = e->deleted ? 1 : 0;
    put_be(p + 2, e->generation, 4);
    put_be(p + 6, e->version, 8);
    put_be(p + 14, e->hlc, 8);
    put_be(p + ENTRY_POS_OFFSET, e->position, 8);
    put_be(p + 30, (uint64_t)e->updated_ns, 8);
    put_be(p + 38, e->size, 8);
    memcpy(p + 46, e->hash, MS_HASH_SIZE);
    size_t at = ENTRY_FIXED;
    put_be(p + at, e->replica_len, 2);
    memcpy(p + at + 2, e->replica, e->replica_len);
    at += 2 + e->replica_len;
    put_be(p + at, e->ctype_len, 2);
    memcpy(p + at + 2, e->ctype, e->ctype_len);
    at += 2 + e->ctype_len;
    put_be(p + at, e->sealed_len, 4);
    if (e->sealed_len)
        memcpy(p + at + 4, e->sealed, e->sealed_len);
    *out = p;
    *len = n;
    return 0;
}

int ms_entry_decode(const void *buf, size_t len, ms_entry *e)
{
    const uint8_t *p = buf;
    size_t at = ENTRY_FIXED, n;
    if (len < ENTRY_FIXED + 8 || p[0] != ENTRY_FORMAT)
        return ES_CORRUPT;
    e->deleted = p[1] & 1;
    e->generation = (uint32_t)get_be(p + 2, 4);
    e->version = get_be(p + 6, 8);
    e->hlc = get_be(p + 14, 8);
    e->position = get_be(p + ENTRY_POS_OFFSET, 8);
    e->updated_ns = (int64_t)get_be(p + 30, 8);
    e->size = get_be(p + 38, 8);
    memcpy(e->hash, p + 46, MS_HASH_SIZE);
    n = get_be(p + at, 2);
    if (len - at - 2 < n)
        return ES_CORRUPT;
    e->replica = (const char *)p + at + 2;
    e->replica_len = n;
    at += 2 + n;
    if (len - at < 2 || len - at - 2 < (n = get_be(p + at, 2)))
        return ES_CORRUPT;
    e->ctype = (const char *)p + at + 2;
    e->ctype_len = n;
    at += 2 + n;
    if (len - at < 4 || len - at - 4 != (n = get_be(p + at, 4)))
        return ES_CORRUPT;
    e->sealed = p + at + 4;
    e->sealed_len = n;
    return ES_OK;
}

int ms_entry_get(es_txn *txn, const char *ns, const char *key, size_t key_len,
                 ms_entry *out)
{
    uint8_t k[MS_KVKEY_MAX];
    const void *v = NULL;
    size_t n = 0;
    size_t kl = ms_kvkey(ns, key, key_len, k);
    int rc = es_kv_get(txn, KV_ENTRIES, k, kl, &v, &n);
    if (rc)
        return rc;
    return ms_entry_decode(v, n, out);
}

int ms_entry_value(const ms_ns_key *k, const char *ns, const char *key,
                   size_t key_len, const ms_entry *e, uint8_t **out,
                   size_t *len)
{
    ms_seal_ctx w = {ns, key, key_len, e->version, e->generation};
    return ms_unseal(k, &w, e->sealed, e->sealed_len, out, len);
}

Agentmesh__V1__MemoryEntry *ms_entry_proto(const char *ns, const char *key,
                                           size_t key_len, const ms_entry *e,
                                           const uint8_t *value,
                                           size_t value_len)
{
    Agentmesh__V1__MemoryEntry *p = malloc(sizeof *p);
    if (!p)
        return NULL;
    agentmesh__v1__memory_entry__init(p);
    p->namespace_ = ms_strndup(ns, strlen(ns));
    p->key = ms_strndup(key, key_len);
    p->content_type = ms_strndup(e->ctype, e->ctype_len);
    p->replica_id = ms_strndup(e->replica, e->replica_len);
    if (value_len) {
        p->value.data = malloc(value_len);
        if (p->value.data) {
            memcpy(p->value.data, value, value_len);
            p->value.len = value_len;
        }
    }
    p->version = e->version;
    p->deleted = e->deleted;
    p->hlc = e->hlc;
    p->position = e->position;
    p->updated_at_unix_nano = e->updated_ns;
    if (!p->namespace_ || !p->key || !p->content_type || !p->replica_id ||
        (value_len && !p->value.data)) {
        protobuf_c_message_free_unpacked(&p->base, NULL);
        return NULL;
    }
    return p;
}

/* ---- The write batch -------------------------------------------------------*/

void ms_batch_init(ms_batch *b, const char *ns)
{
    memset(b, 0, sizeof *b);
    snprintf(b->stream, sizeof b->stream, "%s%s", MS_STREAM_PREFIX, ns);
}

void ms_batch_free(ms_batch *b)
{
    for (size_t i = 0; i < b->n_ev; i++)
        free(b->evbuf[i]);
    for (size_t i = 0; i < b->n_ops; i++) {
        free(b->ops[i].key);
        if (b->ops[i].val) {
            OPENSSL_cleanse(b->ops[i].val, b->ops[i].val_len);
            free(b->ops[i].val);
        }
    }
    free(b->ev);
    free(b->evbuf);
    free(b->ops);
    memset(b, 0, sizeof *b);
}

long ms_batch_event(ms_batch *b, const char *type,
                    const ProtobufCMessage *payload, const ms_ctx *ctx,
                    const uint8_t *id)
{
    if (b->n_ev == b->cap_ev) {
        size_t cap = b->cap_ev ? b->cap_ev * 2 : 4;
        es_event_data *ev = realloc(b->ev, cap * sizeof *ev);
        if (!ev)
            return -1;
        b->ev = ev;
        uint8_t **bufs = realloc(b->evbuf, cap * sizeof *bufs);
        if (!bufs)
            return -1;
        b->evbuf = bufs;
        b->cap_ev = cap;
    }
    size_t len = protobuf_c_message_get_packed_size(payload);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        return -1;
    protobuf_c_message_pack(payload, buf);
    es_event_data *e = &b->ev[b->n_ev];
    memset(e, 0, sizeof *e);
    if (id)
        memcpy(e->id, id, ES_ID_SIZE);
    else if (RAND_bytes(e->id, ES_ID_SIZE) != 1) {
        free(buf);
        return -1;
    }
    e->type = type;
    e->content_type = "application/x-protobuf";
    e->data = buf;
    e->data_len = len;
    if (ctx) {
        e->meta.actor = ctx->actor;
        e->meta.correlation_id = ctx->correlation_id;
        e->meta.causation_id = ctx->causation_id;
        e->meta.traceparent = ctx->traceparent;
    }
    b->evbuf[b->n_ev] = buf;
    return (long)b->n_ev++;
}

static int add_op(ms_batch *b, int kind, const char *kvns, const void *key,
                  size_t key_len, uint8_t *val, size_t val_len, long event)
{
    if (b->n_ops == b->cap_ops) {
        size_t cap = b->cap_ops ? b->cap_ops * 2 : 8;
        ms_kvop *ops = realloc(b->ops, cap * sizeof *ops);
        if (!ops)
            goto fail;
        b->ops = ops;
        b->cap_ops = cap;
    }
    uint8_t *k = malloc(key_len ? key_len : 1);
    if (!k)
        goto fail;
    memcpy(k, key, key_len);
    b->ops[b->n_ops++] = (ms_kvop){kind, kvns, k, key_len, val, val_len, event, NULL};
    return 0;
fail:
    free(val);
    return -1;
}

int ms_batch_put(ms_batch *b, const char *kvns, const void *key,
                 size_t key_len, uint8_t *val, size_t val_len, long event)
{
    return add_op(b, KVOP_PUT, kvns, key, key_len, val, val_len, event);
}

int ms_batch_del(ms_batch *b, const char *kvns, const void *key,
                 size_t key_len)
{
    return add_op(b, KVOP_DEL, kvns, key, key_len, NULL, 0, -1);
}

int ms_batch_wipe(ms_batch *b, const char *ns)
{
    return add_op(b, KVOP_WIPE, KV_ENTRIES, ns, strlen(ns), NULL, 0, -1);
}

int ms_batch_rotate(ms_batch *b, const ms_rotation *r)
{
    if (add_op(b, KVOP_ROTATE, KV_KEYS, "-", 1, NULL, 0, -1))
        return -1;
    b->ops[b->n_ops - 1].rot = r;
    return 0;
}

int ms_batch_put_meta(ms_batch *b, const char *ns, const ms_ns_meta *m)
{
    uint8_t *v = malloc(META_SIZE);
    if (!v)
        return -1;
    meta_encode(m, v);
    return ms_batch_put(b, KV_NS, ns, strlen(ns), v, META_SIZE, -1);
}

int ms_batch_ensure_key(ms_service *s, ms_batch *b, const char *ns,
                        ms_ns_state *st)
{
    if (st->meta.active)
        return 0;
    if (ms_key_generate(&st->key))
        return -1;
    uint8_t *rec = malloc(MS_KEYREC_SIZE);
    if (!rec)
        return -1;
    st->meta.generation++;
    st->meta.active = true;
    st->meta.gen_start_version = st->next_version;
    if (ms_nskey_wrap(s, ns, st->meta.generation, &st->key, rec)) {
        free(rec);
        return -1;
    }
    if (ms_batch_put(b, KV_KEYS, ns, strlen(ns), rec, MS_KEYREC_SIZE, -1))
        return -1;
    return ms_batch_put_meta(b, ns, &st->meta);
}

/* Keys of one caller-key namespace under a prefix, collected before deleting
 * (a scan must not write). */
typedef struct collect {
    const uint8_t *prefix;
    size_t prefix_len;
    uint8_t **keys;
    size_t *lens;
    size_t n, cap;
    int oom;
} collect;

static int collect_visit(void *arg, const void *key, size_t key_len,
                         const void *val, size_t val_len)
{
    collect *c = arg;
    (void)val;
    (void)val_len;
    if (key_len < c->prefix_len || memcmp(key, c->prefix, c->prefix_len))
        return 1;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        uint8_t **keys = realloc(c->keys, cap * sizeof *keys);
        size_t *lens = keys ? realloc(c->lens, cap * sizeof *lens) : NULL;
        if (keys)
            c->keys = keys;
        if (!keys || !lens) {
            c->oom = 1;
            return 1;
        }
        c->lens = lens;
        c->cap = cap;
    }
    uint8_t *k = malloc(key_len);
    if (!k) {
        c->oom = 1;
        return 1;
    }
    memcpy(k, key, key_len);
    c->keys[c->n] = k;
    c->lens[c->n++] = key_len;
    return 0;
}

static int wipe_prefix(es_txn *txn, const char *kvns, const uint8_t *prefix,
                       size_t prefix_len)
{
    collect c = {prefix, prefix_len, NULL, NULL, 0, 0, 0};
    int rc = es_kv_scan(txn, kvns, prefix, prefix_len, collect_visit, &c);
    if (rc == ES_OK && c.oom)
        rc = ES_NOMEM;
    for (size_t i = 0; i < c.n; i++) {
        if (rc == ES_OK)
            rc = es_kv_del(txn, kvns, c.keys[i], c.lens[i]);
        free(c.keys[i]);
    }
    free(c.keys);
    free(c.lens);
    return rc;
}

/* Forgetting: the key record is first overwritten with zeros (its dirty
 * page in this transaction holds no key) and then deleted; every entry and
 * applied id of the namespace goes too. */
static int wipe_namespace(es_txn *txn, const ms_kvop *op)
{
    uint8_t prefix[MS_NS_MAX + 1], zeros[MS_KEYREC_SIZE];
    int rc;
    memcpy(prefix, op->key, op->key_len);
    prefix[op->key_len] = 0;
    memset(zeros, 0, sizeof zeros);
    if ((rc = es_kv_put(txn, KV_KEYS, op->key, op->key_len, zeros,
                        sizeof zeros)) ||
        (rc = es_kv_del(txn, KV_KEYS, op->key, op->key_len)))
        return rc;
    if ((rc = wipe_prefix(txn, KV_ENTRIES, prefix, op->key_len + 1)))
        return rc;
    return wipe_prefix(txn, KV_APPLIED, prefix, op->key_len + 1);
}

static int apply_ops(es_txn *txn, const es_append_result *res, void *arg)
{
    ms_batch *b = arg;
    int rc = ES_OK;
    for (size_t i = 0; i < b->n_ops && rc == ES_OK; i++) {
        ms_kvop *op = &b->ops[i];
        switch (op->kind) {
        case KVOP_PUT:
            if (op->event >= 0 && res)
                put_be(op->val + ENTRY_POS_OFFSET,
                       res->first_position + (uint64_t)op->event, 8);
            rc = es_kv_put(txn, op->kvns, op->key, op->key_len, op->val,
                           op->val_len);
            break;
        case KVOP_DEL:
            rc = es_kv_del(txn, op->kvns, op->key, op->key_len);
            if (rc == ES_NOT_FOUND)
                rc = ES_OK;
            break;
        case KVOP_ROTATE:
            rc = ms_rotation_apply(txn, op->rot);
            break;
        default:
            rc = wipe_namespace(txn, op);
            break;
        }
    }
    return rc;
}

int ms_batch_commit(ms_service *s, ms_batch *b, int64_t expected,
                    es_append_result *res)
{
    if (b->n_ev == 0)
        return ES_INVALID;
    return es_append_with(s->store, b->stream, expected, b->ev, b->n_ev,
                          apply_ops, b, res);
}
