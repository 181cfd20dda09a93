/* ForgetNamespace: crypto-shredding. One append records NamespaceForgotten
 * and, in the same transaction, overwrites and deletes the namespace key,
 * deletes every entry and applied-change id of the namespace, and re-wraps
 * every other namespace key under a new master key (keys.c), whose old file
 * is destroyed once the commit is durable. The log keeps
 * the sealed values of the old generation, which nothing can open any more.
 * A forgotten namespace may be written again: it gets a new key generation,
 * and its keys start again at version 1. */
#include <stdlib.h>
#include <string.h>

#include "services/memory_sync/internal.h"

typedef struct counter {
    const char *ns;
    size_t ns_len;
    uint64_t live;
    int bad;
} counter;

static int count_live(void *arg, const void *key, size_t key_len,
                      const void *val, size_t val_len)
{
    counter *c = arg;
    ms_entry e;
    if (key_len <= c->ns_len || memcmp(key, c->ns, c->ns_len) ||
        ((const char *)key)[c->ns_len] != '\0')
        return 1;
    if (ms_entry_decode(val, val_len, &e)) {
        c->bad = 1;
        return 1;
    }
    if (!e.deleted)
        c->live++;
    return 0;
}

int ms_forget(ms_service *s, const ms_ctx *ctx,
              const Agentmesh__V1__ForgetNamespaceRequest *req,
              Agentmesh__V1__ForgetResponse **out, ms_error *err)
{
    const char *ns = req->namespace_;
    pthread_mutex_t *lock = NULL;
    es_txn *txn = NULL;
    ms_batch b;
    ms_ns_state st;
    counter c = {ns, strlen(ns), 0, 0};
    uint8_t from[MS_NS_MAX + 1];
    es_append_result res;
    ms_rotation rot;
    int64_t now = ms_now_ns();
    int code, rc;

    ms_batch_init(&b, ns);
    memset(&st, 0, sizeof st);
    if ((code = ms_check_ns(ns, err)))
        goto out;
    if (strlen(req->reason) > 1024) {
        code = ms_fail(err, 3, "reason longer than 1024 bytes");
        goto out;
    }
    lock = ms_lock_for(s, ns);
    pthread_mutex_lock(lock);
    ms_master_wrlock(s);
    if ((rc = es_txn_begin(s->store, &txn)) ||
        (rc = ms_ns_load(s, txn, ns, &st))) {
        code = ms_store_fail(err, rc, "reading the namespace");
        goto out;
    }
    if (!st.meta.active) {
        code = ms_fail(err, 5, "namespace %s not found", ns);
        goto out;
    }
    memcpy(from, ns, c.ns_len);
    from[c.ns_len] = 0;
    if ((rc = es_kv_scan(txn, KV_ENTRIES, from, c.ns_len + 1, count_live, &c)) ||
        c.bad) {
        code = ms_store_fail(err, rc ? rc : ES_CORRUPT, "counting entries");
        goto out;
    }
    es_txn_end(txn);
    txn = NULL;
    Agentmesh__V1__NamespaceForgotten ev = AGENTMESH__V1__NAMESPACE_FORGOTTEN__INIT;
    ev.namespace_ = (char *)ns;
    ev.at_unix_nano = now;
    ev.keys_forgotten = c.live;
    st.meta.active = false;
    st.meta.strategy = MS_STRATEGY_UNSPECIFIED;
    if (ms_batch_event(&b, T_FORGOTTEN, &ev.base, ctx, NULL) < 0 ||
        ms_batch_wipe(&b, ns) || ms_batch_put_meta(&b, ns, &st.meta) ||
        ms_batch_rotate(&b, &rot)) {
        code = ms_fail(err, 8, "out of memory");
        goto out;
    }
    if (ms_rotation_begin(s, &rot)) {
        ms_key_wipe(&rot.old_key);
        ms_key_wipe(&rot.new_key);
        code = ms_fail(err, 13, "cannot write the next master key");
        goto out;
    }
    rc = ms_batch_commit(s, &b, st.expected, &res);
    ms_rotation_end(s, &rot, rc == ES_OK);
    if (rc) {
        code = ms_store_fail(err, rc, "appending");
        goto out;
    }
    Agentmesh__V1__ForgetResponse *rep = malloc(sizeof *rep);
    if (!rep || !(rep->namespace_ = ms_strndup(ns, c.ns_len))) {
        free(rep);
        code = ms_fail(err, 8, "out of memory");
        goto out;
    }
    {
        char *name = rep->namespace_;
        agentmesh__v1__forget_response__init(rep);
        rep->namespace_ = name;
    }
    rep->keys_forgotten = c.live;
    rep->position = res.first_position;
    rep->forgotten_at_unix_nano = now;
    *out = rep;
out:
    es_txn_end(txn);
    if (lock) {
        ms_master_unlock(s);
        pthread_mutex_unlock(lock);
    }
    ms_key_wipe(&st.key);
    ms_batch_free(&b);
    return code;
}
