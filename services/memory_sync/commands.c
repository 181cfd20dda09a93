/* The single-key commands and query: PutMemory, DeleteMemory (a tombstone
 * that keeps the key's version line), GetMemory; and the service's life.
 * A write takes its namespace's lock stripe, reads the state, decides,
 * ends the read and appends its events with the namespace stream's exact
 * expected version, the entry record riding in the same transaction. */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "services/memory_sync/internal.h"

void ms_options_init(ms_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->max_value_bytes = MS_VALUE_DEFAULT;
    opts->replica_id = "server";
    opts->max_clock_skew_ms = 300000;
}

int ms_service_create(const ms_options *opts, ms_service **out)
{
    if (!opts || !opts->store || !opts->key_dir ||
        strlen(opts->key_dir) >= sizeof ((ms_service *)0)->key_dir)
        return ES_INVALID;
    ms_service *s = calloc(1, sizeof *s);
    if (!s)
        return ES_NOMEM;
    memcpy(s->key_dir, opts->key_dir, strlen(opts->key_dir) + 1);
    s->opts.key_dir = s->key_dir;
    s->opts = *opts;
    s->store = opts->store;
    if (!s->opts.max_value_bytes || s->opts.max_value_bytes > MS_VALUE_HARD_MAX)
        s->opts.max_value_bytes = MS_VALUE_DEFAULT;
    if (s->opts.max_clock_skew_ms <= 0)
        s->opts.max_clock_skew_ms = 300000;
    const char *rid = opts->replica_id && *opts->replica_id ? opts->replica_id
                                                             : "server";
    size_t n = strlen(rid);
    if (n > MS_REPLICA_MAX)
        n = MS_REPLICA_MAX;
    memcpy(s->replica_id, rid, n);
    s->replica_id[n] = '\0';
    s->opts.replica_id = s->replica_id;
    s->opts.key_dir = s->key_dir;
    ms_hlc_init(&s->hlc);
    for (size_t i = 0; i < MS_LOCKS; i++)
        pthread_mutex_init(&s->locks[i], NULL);
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    /* A forget's rotation must not starve behind a stream of reads. */
    pthread_rwlockattr_setkind_np(&ra,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&s->master_lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    int rc = ms_master_open(s);
    if (rc) {
        ms_service_destroy(s);
        return rc;
    }
    *out = s;
    return ES_OK;
}

void ms_service_destroy(ms_service *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < MS_LOCKS; i++)
        pthread_mutex_destroy(&s->locks[i]);
    pthread_rwlock_destroy(&s->master_lock);
    ms_hlc_destroy(&s->hlc);
    ms_key_wipe(&s->master);
    free(s);
}

static int check_replica(const char *r, ms_error *err)
{
    size_t n = strlen(r);
    if (n > MS_REPLICA_MAX || !ms_utf8_valid(r, n))
        return ms_fail(err, 3, "replica_id must be 0..%d bytes of UTF-8",
                       MS_REPLICA_MAX);
    return 0;
}

static int check_ctype(const char *c, ms_error *err)
{
    size_t n = strlen(c);
    if (n > MS_CTYPE_MAX)
        return ms_fail(err, 3, "content_type longer than %d bytes", MS_CTYPE_MAX);
    for (size_t i = 0; i < n; i++)
        if (c[i] < 0x20 || c[i] > 0x7e)
            return ms_fail(err, 3, "content_type must be printable ASCII");
    return 0;
}

int ms_put(ms_service *s, const ms_ctx *ctx,
           const Agentmesh__V1__PutMemoryRequest *req,
           Agentmesh__V1__MemoryEntry **out, ms_error *err)
{
    const char *ns = req->namespace_, *key = req->key;
    pthread_mutex_t *lock = NULL;
    es_txn *txn = NULL;
    ms_batch b;
    ms_ns_state st;
    ms_entry cur, e;
    uint8_t *sealed = NULL, *rec = NULL, kvk[MS_KVKEY_MAX];
    size_t sealed_len = 0, rec_len = 0, key_len = strlen(key);
    uint64_t cur_version = 0;
    es_append_result res;
    int code, rc;

    ms_batch_init(&b, ns);
    memset(&st, 0, sizeof st);
    if ((code = ms_check_ns(ns, err)) || (code = ms_check_key(key, err)) ||
        (code = check_replica(req->replica_id, err)) ||
        (code = check_ctype(req->content_type, err)))
        goto out;
    if (req->value.len > s->opts.max_value_bytes) {
        code = ms_fail(err, 3, "value of %zu bytes is above the limit of %zu",
                       req->value.len, s->opts.max_value_bytes);
        goto out;
    }
    lock = ms_lock_for(s, ns);
    pthread_mutex_lock(lock);
    ms_master_rdlock(s);
    if ((rc = es_txn_begin(s->store, &txn)) ||
        (rc = ms_ns_load(s, txn, ns, &st))) {
        code = ms_store_fail(err, rc, "reading the namespace");
        goto out;
    }
    if (st.meta.active) {
        rc = ms_entry_get(txn, ns, key, key_len, &cur);
        if (rc == ES_OK)
            cur_version = cur.version;
        else if (rc != ES_NOT_FOUND) {
            code = ms_store_fail(err, rc, "reading the entry");
            goto out;
        }
    }
    es_txn_end(txn);
    txn = NULL;
    if (req->expected_case ==
            AGENTMESH__V1__PUT_MEMORY_REQUEST__EXPECTED_EXPECTED_VERSION &&
        req->expected_version != cur_version) {
        code = ms_fail(err, 10,
                       "wrong expected version %llu for key \"%s\": current "
                       "version is %llu",
                       (unsigned long long)req->expected_version, key,
                       (unsigned long long)cur_version);
        goto out;
    }
    if (ms_batch_ensure_key(s, &b, ns, &st)) {
        code = ms_fail(err, 13, "out of memory or entropy");
        goto out;
    }
    memset(&e, 0, sizeof e);
    e.generation = st.meta.generation;
    e.version = cur_version + 1;
    e.hlc = ms_hlc_now(&s->hlc);
    e.updated_ns = ms_now_ns();
    e.size = req->value.len;
    e.replica = *req->replica_id ? req->replica_id : s->replica_id;
    e.replica_len = strlen(e.replica);
    e.ctype = req->content_type;
    e.ctype_len = strlen(e.ctype);
    ms_seal_ctx w = {ns, key, key_len, e.version, e.generation};
    if (ms_seal(&st.key, &w, req->value.data, req->value.len, &sealed,
                &sealed_len) ||
        ms_content_hash(&st.key, req->value.data, req->value.len, e.hash)) {
        code = ms_fail(err, 13, "sealing the value failed");
        goto out;
    }
    e.sealed = sealed;
    e.sealed_len = sealed_len;
    Agentmesh__V1__MemoryWritten ev = AGENTMESH__V1__MEMORY_WRITTEN__INIT;
    ev.namespace_ = (char *)ns;
    ev.key = (char *)key;
    ev.version = e.version;
    ev.size = e.size;
    ev.content_hash.data = e.hash;
    ev.content_hash.len = MS_HASH_SIZE;
    ev.content_type = (char *)e.ctype;
    ev.replica_id = (char *)e.replica;
    ev.hlc = e.hlc;
    ev.sealed_value.data = sealed;
    ev.sealed_value.len = sealed_len;
    ev.key_generation = e.generation;
    long idx = ms_batch_event(&b, T_WRITTEN, &ev.base, ctx, NULL);
    if (idx < 0 || ms_entry_encode(&e, &rec, &rec_len) ||
        ms_batch_put(&b, KV_ENTRIES, kvk, ms_kvkey(ns, key, key_len, kvk), rec,
                     rec_len, idx)) {
        rec = NULL;
        code = ms_fail(err, 13, "out of memory");
        goto out;
    }
    rec = NULL;
    if ((rc = ms_batch_commit(s, &b, st.expected, &res))) {
        code = ms_store_fail(err, rc, "appending");
        goto out;
    }
    e.position = res.first_position;
    *out = ms_entry_proto(ns, key, key_len, &e, req->value.data, req->value.len);
    code = *out ? 0 : ms_fail(err, 13, "out of memory");
out:
    es_txn_end(txn);
    if (lock) {
        ms_master_unlock(s);
        pthread_mutex_unlock(lock);
    }
    ms_key_wipe(&st.key);
    free(sealed);
    free(rec);
    ms_batch_free(&b);
    return code;
}

int ms_delete(ms_service *s, const ms_ctx *ctx,
              const Agentmesh__V1__DeleteMemoryRequest *req,
              Agentmesh__V1__MemoryEntry **out, ms_error *err)
{
    const char *ns = req->namespace_, *key = req->key;
    pthread_mutex_t *lock = NULL;
    es_txn *txn = NULL;
    ms_batch b;
    ms_ns_state st;
    ms_entry cur, e;
    uint8_t *rec = NULL, kvk[MS_KVKEY_MAX];
    size_t rec_len = 0, key_len = strlen(key);
    char ctype[MS_CTYPE_MAX + 1] = "";
    es_append_result res;
    int code, rc;

    ms_batch_init(&b, ns);
    memset(&st, 0, sizeof st);
    if ((code = ms_check_ns(ns, err)) || (code = ms_check_key(key, err)))
        goto out;
    lock = ms_lock_for(s, ns);
    pthread_mutex_lock(lock);
    ms_master_rdlock(s);
    if ((rc = es_txn_begin(s->store, &txn)) ||
        (rc = ms_ns_load(s, txn, ns, &st))) {
        code = ms_store_fail(err, rc, "reading the namespace");
        goto out;
    }
    rc = st.meta.active ? ms_entry_get(txn, ns, key, key_len, &cur) : ES_NOT_FOUND;
    if (rc == ES_NOT_FOUND || (rc == ES_OK && cur.deleted)) {
        code = ms_fail(err, 5, "key \"%s\" not found in namespace %s", key, ns);
        goto out;
    }
    if (rc) {
        code = ms_store_fail(err, rc, "reading the entry");
        goto out;
    }
    if (req->expected_case ==
            AGENTMESH__V1__DELETE_MEMORY_REQUEST__EXPECTED_EXPECTED_VERSION &&
        req->expected_version != cur.version) {
        code = ms_fail(err, 10,
                       "wrong expected version %llu for key \"%s\": current "
                       "version is %llu",
                       (unsigned long long)req->expected_version, key,
                       (unsigned long long)cur.version);
        goto out;
    }
    memcpy(ctype, cur.ctype, cur.ctype_len);
    memset(&e, 0, sizeof e);
    e.deleted = true;
    e.generation = st.meta.generation;
    e.version = cur.version + 1;
    e.hlc = ms_hlc_now(&s->hlc);
    e.updated_ns = ms_now_ns();
    e.replica = s->replica_id;
    e.replica_len = strlen(e.replica);
    e.ctype = ctype;
    e.ctype_len = strlen(ctype);
    es_txn_end(txn);
    txn = NULL;
    Agentmesh__V1__MemoryDeleted ev = AGENTMESH__V1__MEMORY_DELETED__INIT;
    ev.namespace_ = (char *)ns;
    ev.key = (char *)key;
    ev.version = e.version;
    ev.replica_id = s->replica_id;
    ev.hlc = e.hlc;
    long idx = ms_batch_event(&b, T_DELETED, &ev.base, ctx, NULL);
    if (idx < 0 || ms_entry_encode(&e, &rec, &rec_len) ||
        ms_batch_put(&b, KV_ENTRIES, kvk, ms_kvkey(ns, key, key_len, kvk), rec,
                     rec_len, idx)) {
        rec = NULL;
        code = ms_fail(err, 13, "out of memory");
        goto out;
    }
    rec = NULL;
    if ((rc = ms_batch_commit(s, &b, st.expected, &res))) {
        code = ms_store_fail(err, rc, "appending");
        goto out;
    }
    e.position = res.first_position;
    *out = ms_entry_proto(ns, key, key_len, &e, NULL, 0);
    code = *out ? 0 : ms_fail(err, 13, "out of memory");
out:
    es_txn_end(txn);
    if (lock) {
        ms_master_unlock(s);
        pthread_mutex_unlock(lock);
    }
    ms_key_wipe(&st.key);
    free(rec);
    ms_batch_free(&b);
    return code;
}

int ms_get(ms_service *s, const Agentmesh__V1__GetMemoryRequest *req,
           Agentmesh__V1__MemoryEntry **out, ms_error *err)
{
    const char *ns = req->namespace_, *key = req->key;
    es_txn *txn = NULL;
    ms_ns_key k;
    ms_entry e;
    uint8_t *value = NULL;
    size_t value_len = 0, key_len = strlen(key);
    uint32_t gen = 0;
    bool locked = false;
    int code, rc;

    memset(&k, 0, sizeof k);
    if ((code = ms_check_ns(ns, err)) || (code = ms_check_key(key, err)))
        return code;
    ms_master_rdlock(s);
    locked = true;
    if ((rc = es_txn_begin(s->store, &txn))) {
        code = ms_store_fail(err, rc, "reading");
        goto out;
    }
    rc = ms_nskey_get(s, txn, ns, &gen, &k);
    if (rc == ES_OK)
        rc = ms_entry_get(txn, ns, key, key_len, &e);
    if (rc == ES_NOT_FOUND || (rc == ES_OK && e.deleted)) {
        code = ms_fail(err, 5, "key \"%s\" not found in namespace %s", key, ns);
        goto out;
    }
    if (rc) {
        code = ms_store_fail(err, rc, "reading the entry");
        goto out;
    }
    if (e.generation != gen ||
        (rc = ms_entry_value(&k, ns, key, key_len, &e, &value, &value_len))) {
        code = ms_fail(err, rc == -1 ? 8 : 13,
                       "the value of \"%s\" cannot be opened", key);
        goto out;
    }
    *out = ms_entry_proto(ns, key, key_len, &e, value, value_len);
    code = *out ? 0 : ms_fail(err, 13, "out of memory");
out:
    es_txn_end(txn);
    if (locked)
        ms_master_unlock(s);
    ms_key_wipe(&k);
    if (value) {
        OPENSSL_cleanse(value, value_len);
        free(value);
    }
    return code;
}
