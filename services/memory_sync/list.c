/* ListMemory: the live entries of a namespace under a key prefix, in key
 * byte order, a bounded page at a time. The page token carries the page's
 * last key and the next page starts strictly after it, so keys written or
 * deleted between pages never make a page skip or repeat a key that existed
 * throughout. */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "services/memory_sync/internal.h"

typedef struct lister {
    const char *ns;
    size_t ns_len;
    const char *prefix;
    size_t prefix_len;
    const char *after;           /* token key, skipped when met */
    size_t after_len;
    const ms_ns_key *key;
    uint32_t generation;
    size_t page;
    Agentmesh__V1__MemoryEntry **entries;
    size_t n;
    bool more;
    int code;
    char last[MS_KEY_MAX];
    size_t last_len;
} lister;

static int visit(void *arg, const void *kv_key, size_t kv_len, const void *val,
                 size_t val_len)
{
    lister *l = arg;
    const char *k = (const char *)kv_key + l->ns_len + 1;
    size_t klen = kv_len - l->ns_len - 1;
    ms_entry e;
    uint8_t *value = NULL;
    size_t value_len = 0;

    if (kv_len < l->ns_len + 1 || memcmp(kv_key, l->ns, l->ns_len) ||
        ((const char *)kv_key)[l->ns_len] != '\0' || klen < l->prefix_len ||
        memcmp(k, l->prefix, l->prefix_len))
        return 1;
    if (l->after && klen == l->after_len && memcmp(k, l->after, klen) == 0)
        return 0;
    if (ms_entry_decode(val, val_len, &e)) {
        l->code = 13;
        return 1;
    }
    if (e.deleted)
        return 0;
    if (l->n == l->page) {
        l->more = true;
        return 1;
    }
    int rc = e.generation == l->generation
                 ? ms_entry_value(l->key, l->ns, k, klen, &e, &value, &value_len)
                 : -2;
    if (rc) {
        l->code = rc == -1 ? 8 : 13;
        return 1;
    }
    l->entries[l->n] = ms_entry_proto(l->ns, k, klen, &e, value, value_len);
    OPENSSL_cleanse(value, value_len);
    free(value);
    if (!l->entries[l->n]) {
        l->code = 8;
        return 1;
    }
    l->n++;
    memcpy(l->last, k, klen);
    l->last_len = klen;
    return 0;
}

int ms_list(ms_service *s, const Agentmesh__V1__ListMemoryRequest *req,
            Agentmesh__V1__ListMemoryResponse **out, ms_error *err)
{
    const char *ns = req->namespace_;
    es_txn *txn = NULL;
    ms_ns_key k;
    lister l;
    char after[MS_KEY_MAX];
    uint8_t from[MS_KVKEY_MAX];
    size_t from_len;
    Agentmesh__V1__ListMemoryResponse *rep = NULL;
    bool locked = false;
    int code, rc;

    memset(&k, 0, sizeof k);
    memset(&l, 0, sizeof l);
    if ((code = ms_check_ns(ns, err)))
        return code;
    l.ns = ns;
    l.ns_len = strlen(ns);
    l.prefix = req->prefix;
    l.prefix_len = strlen(req->prefix);
    if (l.prefix_len > MS_KEY_MAX || !ms_utf8_valid(l.prefix, l.prefix_len))
        return ms_fail(err, 3, "prefix must be 0..%d bytes of UTF-8",
                       MS_KEY_MAX);
    l.page = req->page_size ? req->page_size : MS_PAGE_DEFAULT;
    if (l.page > MS_PAGE_MAX)
        l.page = MS_PAGE_MAX;
    if (*req->page_token) {
        if (ms_page_token_decode(ns, req->page_token, after, &l.after_len))
            return ms_fail(err, 3, "page_token is not a token of namespace %s",
                           ns);
        l.after = after;
    }
    /* Start at the prefix or the token's key, whichever is later. */
    if (l.after && (l.after_len > l.prefix_len
                        ? memcmp(l.after, l.prefix, l.prefix_len) >= 0
                        : memcmp(l.after, l.prefix, l.after_len) > 0))
        from_len = ms_kvkey(ns, l.after, l.after_len, from);
    else
        from_len = ms_kvkey(ns, l.prefix, l.prefix_len, from);
    rep = malloc(sizeof *rep);
    l.entries = calloc(l.page, sizeof *l.entries);
    if (!rep || !l.entries) {
        free(rep);
        rep = NULL;
        code = ms_fail(err, 8, "out of memory");
        goto out;
    }
    agentmesh__v1__list_memory_response__init(rep);
    ms_master_rdlock(s);
    locked = true;
    if ((rc = es_txn_begin(s->store, &txn))) {
        code = ms_store_fail(err, rc, "reading");
        goto out;
    }
    rc = ms_nskey_get(s, txn, ns, &l.generation, &k);
    if (rc == ES_NOT_FOUND) {
        code = ms_fail(err, 5, "namespace %s not found", ns);
        goto out;
    }
    l.key = &k;
    if (rc || (rc = es_kv_scan(txn, KV_ENTRIES, from, from_len, visit, &l))) {
        code = ms_store_fail(err, rc, "listing");
        goto out;
    }
    code = l.code ? ms_fail(err, l.code, "listing namespace %s failed", ns) : 0;
out:
    es_txn_end(txn);
    if (locked)
        ms_master_unlock(s);
    ms_key_wipe(&k);
    if (code == 0 && rep) {
        rep->entries = l.entries;
        rep->n_entries = l.n;
        l.entries = NULL;
        rep->next_page_token = malloc(MS_TOKEN_TEXT_MAX);
        if (!rep->next_page_token)
            code = ms_fail(err, 8, "out of memory");
        else if (!l.more || ms_page_token_encode(ns, l.last, l.last_len,
                                                 rep->next_page_token))
            rep->next_page_token[0] = '\0';
    }
    for (size_t i = 0; l.entries && i < l.n; i++)
        protobuf_c_message_free_unpacked(&l.entries[i]->base, NULL);
    free(l.entries);
    if (code) {
        if (rep)
            protobuf_c_message_free_unpacked(&rep->base, NULL);
        return code;
    }
    *out = rep;
    return 0;
}
