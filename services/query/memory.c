/* The memory read model: metadata of every live key (namespace, key,
 * content type, version, replica, hlc, position, time) by namespace and key
 * prefix. Values never reach it: they do not travel on NATS and the
 * projector drops them from catch-up events too. A forgotten namespace's
 * keys are removed; a deleted key is removed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentmesh/v1/events.pb-c.h"
#include "services/query/query.h"

#define NS "q.memory"

/* key = namespace NUL key. 0 when it does not fit. */
static size_t make_key(uint8_t *k, size_t cap, const char *ns, const char *key)
{
    size_t nl = strlen(ns), kl = strlen(key);
    if (!nl || nl + 1 + kl > cap || nl + 1 + kl > ES_KEY_MAX)
        return 0;
    memcpy(k, ns, nl);
    k[nl] = 0;
    memcpy(k + nl + 1, key, kl);
    return nl + 1 + kl;
}

/* The entry a MemoryWritten makes, packed (from ar when not NULL). */
static int entry_record(const qs_event *ev, const Agentmesh__V1__MemoryWritten *w,
                        qs_arena *ar, uint8_t **out, size_t *len)
{
    Agentmesh__V1__MemoryEntry e = AGENTMESH__V1__MEMORY_ENTRY__INIT;
    e.namespace_ = w->namespace_;
    e.key = w->key;
    e.content_type = w->content_type;
    e.version = w->version;
    e.replica_id = w->replica_id;
    e.hlc = w->hlc;
    e.position = ev->position;
    e.updated_at_unix_nano = ev->time_unix_nano;
    return qs_pack_in(ar, &e.base, out, len);
}

int qs_memory_prepare(qs_event *ev, qs_arena *ar)
{
    if (!ev->payload ||
        ev->payload->descriptor != &agentmesh__v1__memory_written__descriptor)
        return ES_OK;
    return entry_record(ev, (const void *)ev->payload, ar, &ev->rec,
                        &ev->rec_len);
}

static int written(es_txn *txn, const qs_event *ev,
                   const Agentmesh__V1__MemoryWritten *w)
{
    uint8_t k[ES_KEY_MAX + 1], *own = NULL;
    size_t kl = make_key(k, sizeof k, w->namespace_, w->key);
    if (!kl)
        return ES_OK;
    const uint8_t *buf = ev->rec;
    size_t len = ev->rec_len;
    if (!buf) {
        int rc = entry_record(ev, w, NULL, &own, &len);
        if (rc)
            return rc;
        buf = own;
    }
    int rc = es_kv_put(txn, NS, k, kl, buf, len);
    free(own);
    return rc;
}

typedef struct keys {
    uint8_t **k;
    size_t *len;
    size_t n, cap;
    const uint8_t *prefix;
    size_t prefix_len;
    bool oom;
} keys;

static int collect(void *arg, const void *key, size_t kl, const void *v,
                   size_t vl)
{
    keys *c = arg;
    (void)v;
    (void)vl;
    if (kl < c->prefix_len || memcmp(key, c->prefix, c->prefix_len))
        return 1;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 64;
        uint8_t **nk = realloc(c->k, cap * sizeof *nk);
        if (nk)
            c->k = nk;
        size_t *nl = realloc(c->len, cap * sizeof *nl);
        if (nl)
            c->len = nl;
        if (!nk || !nl) {
            c->oom = true;
            return 1;
        }
        c->cap = cap;
    }
    if (!(c->k[c->n] = malloc(kl))) {
        c->oom = true;
        return 1;
    }
    memcpy(c->k[c->n], key, kl);
    c->len[c->n++] = kl;
    return 0;
}

static int forget(es_txn *txn, const char *ns)
{
    uint8_t p[ES_KEY_MAX + 1];
    size_t nl = strlen(ns);
    if (!nl || nl + 1 > ES_KEY_MAX)
        return ES_OK;
    memcpy(p, ns, nl);
    p[nl] = 0;
    keys c = {NULL, NULL, 0, 0, p, nl + 1, false};
    int rc = es_kv_scan(txn, NS, p, nl + 1, collect, &c);
    if (!rc && c.oom)
        rc = ES_NOMEM;
    for (size_t i = 0; i < c.n; i++) {
        int d = rc ? ES_OK : es_kv_del(txn, NS, c.k[i], c.len[i]);
        if (d && d != ES_NOT_FOUND)
            rc = d;
        free(c.k[i]);
    }
    free(c.k);
    free(c.len);
    return rc;
}

int qs_memory_apply(qs_tx *tx, const qs_event *ev)
{
    es_txn *txn = tx->txn;
    if (!ev->payload)
        return ES_OK;
    const ProtobufCMessageDescriptor *d = ev->payload->descriptor;
    if (d == &agentmesh__v1__memory_written__descriptor)
        return written(txn, ev, (const void *)ev->payload);
    if (d == &agentmesh__v1__memory_deleted__descriptor) {
        const Agentmesh__V1__MemoryDeleted *m = (const void *)ev->payload;
        uint8_t k[ES_KEY_MAX + 1];
        size_t kl = make_key(k, sizeof k, m->namespace_, m->key);
        int rc = kl ? es_kv_del(txn, NS, k, kl) : ES_OK;
        return rc == ES_NOT_FOUND ? ES_OK : rc;
    }
    if (d == &agentmesh__v1__namespace_forgotten__descriptor)
        return forget(txn, ((const Agentmesh__V1__NamespaceForgotten *)
                                ev->payload)->namespace_);
    return ES_OK;
}

typedef struct search_ctx {
    const char *prefix; /* key prefix, used when scanning every namespace */
    Agentmesh__V1__MemoryEntry **out;
    size_t n;
} search_ctx;

static int take_entry(void *arg, es_txn *txn, const uint8_t *suffix, size_t sl,
                      const void *val, size_t vl)
{
    search_ctx *c = arg;
    (void)txn;
    (void)suffix;
    (void)sl;
    Agentmesh__V1__MemoryEntry *e =
        agentmesh__v1__memory_entry__unpack(NULL, vl, val);
    if (!e)
        return -ES_CORRUPT;
    if (c->prefix && strncmp(e->key, c->prefix, strlen(c->prefix))) {
        protobuf_c_message_free_unpacked(&e->base, NULL);
        return 0;
    }
    c->out[c->n++] = e;
    return 1;
}

int qs_memory_search(es_txn *txn, const Agentmesh__V1__SearchMemoryRequest *req,
                     Agentmesh__V1__SearchMemoryResponse *resp, char *msg,
                     size_t msglen)
{
    search_ctx c = {NULL, NULL, 0};
    size_t limit = qs_page_size(req->page_size);
    uint64_t h = qs_hash(0, req->namespace_, strlen(req->namespace_));
    h = qs_hash(h, req->prefix, strlen(req->prefix));
    uint8_t after[QS_KEY_CAP], last[QS_KEY_CAP], prefix[ES_KEY_MAX + 1];
    size_t after_len = 0, last_len = 0, prefix_len = 0;
    if (qs_token_decode(req->page_token, 'm', h, after, sizeof after,
                        &after_len)) {
        snprintf(msg, msglen, "page_token: malformed or issued for other "
                              "filters");
        return ES_INVALID;
    }
    if (*req->namespace_) {
        size_t nl = strlen(req->namespace_), pl = strlen(req->prefix);
        if (nl + 1 + pl > ES_KEY_MAX)
            return ES_OK;
        memcpy(prefix, req->namespace_, nl);
        prefix[nl] = 0;
        memcpy(prefix + nl + 1, req->prefix, pl);
        prefix_len = nl + 1 + pl;
    } else if (*req->prefix) {
        c.prefix = req->prefix;
    }
    if (!(c.out = calloc(limit, sizeof *c.out)))
        return ES_NOMEM;
    bool more = false;
    int rc = qs_scan_page(txn, NS, prefix, prefix_len, after, after_len,
                          limit, take_entry, &c, last, &last_len, &more);
    if (!rc && more && last_len)
        rc = qs_token_encode('m', h, last, last_len, &resp->next_page_token);
    if (rc) {
        for (size_t i = 0; i < c.n; i++)
            protobuf_c_message_free_unpacked(&c.out[i]->base, NULL);
        free(c.out);
        return rc;
    }
    resp->entries = c.out;
    resp->n_entries = c.n;
    return ES_OK;
}
