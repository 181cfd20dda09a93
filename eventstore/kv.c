/* kv.c: the atomic companions of the log: caller-owned keys in namespaces,
 * per-stream snapshots and named checkpoints, all in the store's environment
 * so a write callback commits them in the same transaction as an append. */
#include <stdlib.h>
#include <string.h>

#include "eventstore/internal.h"

/* The namespace's own database when ns is one of the pointers listed in
 * es_options.kv_dbs (already checked by es_open), else -1. Callers usually
 * pass the same static strings they listed: a put costs one probe, not a
 * scan and a length check. */
static int own_db_given(const es_store *s, const char *ns)
{
    for (unsigned h = es__kv_slot(ns); s->kv.slot_ptr[h];
         h = (h + 1) & (ES__KV_SLOTS - 1))
        if (s->kv.slot_ptr[h] == ns)
            return s->kv.slot_idx[h];
    return -1;
}

/* The same by name, for a pointer of the caller's own. */
static int own_db_named(const es_store *s, const char *ns)
{
    for (unsigned i = 0; i < s->kv.n; i++)
        if (!strcmp(s->kv.name[i], ns))
            return (int)i;
    return -1;
}

/* Where a key lives: its database and the LMDB key (namespace, NUL, key in
 * the shared database; the key alone in a namespace's own). *own is the
 * kv_dbs index or -1; ES_NOT_FOUND for an own database a read-only store
 * does not have. */
static int locate(const es_store *s, const char *ns, const void *key,
                  size_t key_len, uint8_t *buf, MDB_dbi *dbi, MDB_val *k,
                  int *own)
{
    size_t n = 0;
    if ((!key && key_len) || key_len > ES_KEY_MAX)
        return ES_INVALID;
    if (!ns || (*own = own_db_given(s, ns)) < 0) {
        n = ns ? strnlen(ns, ES_NS_MAX + 1) : 0;
        if (n == 0 || n > ES_NS_MAX)
            return ES_INVALID;
        *own = own_db_named(s, ns);
    }
    if (*own >= 0) {
        if (!s->kv.present[*own])
            return ES_NOT_FOUND;
        *dbi = s->kv.dbi[*own];
        k->mv_data = (void *)key;
        k->mv_size = key_len;
        return ES_OK;
    }
    memcpy(buf, ns, n);
    buf[n] = 0;
    if (key_len)
        memcpy(buf + n + 1, key, key_len);
    *dbi = s->dbs.user;
    k->mv_data = buf;
    k->mv_size = n + 1 + key_len;
    return ES_OK;
}

static int write_status(es_txn *t, int rc)
{
    if (rc == MDB_MAP_FULL)
        t->map_full = true;
    return es__status_from_mdb(rc);
}

static int put(es_txn *t, MDB_dbi dbi, MDB_val *k, MDB_val *d)
{
    if (!t->write)
        return ES_READONLY;
    return write_status(t, mdb_put(t->txn, dbi, k, d, 0));
}

void es__txn_close_cursors(es_txn *t)
{
    for (unsigned i = 0; i < ES_KV_DBS_MAX; i++) {
        if (t->kv_cur[i])
            mdb_cursor_close(t->kv_cur[i]);
        t->kv_cur[i] = NULL;
    }
}

/* A put into a namespace's own database: first as an append, which LMDB
 * refuses (MDB_KEYEXIST) unless the key sorts after the last one, then as
 * an ordinary put. The cursor stays at the end between appends. */
static int put_own(es_txn *t, int own, MDB_dbi dbi, MDB_val *k, MDB_val *d)
{
    int rc;
    if (!t->write)
        return ES_READONLY;
    if (!t->kv_cur[own] &&
        (rc = mdb_cursor_open(t->txn, dbi, &t->kv_cur[own])))
        return write_status(t, rc);
    rc = mdb_cursor_put(t->kv_cur[own], k, d, MDB_APPEND);
    if (rc == MDB_KEYEXIST)
        rc = mdb_cursor_put(t->kv_cur[own], k, d, 0);
    return rc ? write_status(t, rc) : ES_OK;
}

int es_kv_put(es_txn *t, const char *ns, const void *key, size_t key_len,
              const void *val, size_t val_len)
{
    uint8_t buf[ES_NS_MAX + 1 + ES_KEY_MAX];
    MDB_val k, d = {val_len, (void *)val};
    MDB_dbi dbi;
    int own;
    if (!t || key_len == 0 || (!val && val_len) || val_len > ES_VALUE_MAX)
        return ES_INVALID;
    int rc = locate(t->store, ns, key, key_len, buf, &dbi, &k, &own);
    if (rc)
        return rc == ES_NOT_FOUND ? ES_READONLY : rc;
    return own >= 0 ? put_own(t, own, dbi, &k, &d) : put(t, dbi, &k, &d);
}

int es_kv_get(es_txn *t, const char *ns, const void *key, size_t key_len,
              const void **val, size_t *val_len)
{
    uint8_t buf[ES_NS_MAX + 1 + ES_KEY_MAX];
    MDB_val k, d;
    MDB_dbi dbi;
    int own;
    if (!t || !val || !val_len || key_len == 0)
        return ES_INVALID;
    int rc = locate(t->store, ns, key, key_len, buf, &dbi, &k, &own);
    if (rc)
        return rc;
    if ((rc = mdb_get(t->txn, dbi, &k, &d)))
        return es__status_from_mdb(rc);
    *val = d.mv_data;
    *val_len = d.mv_size;
    return ES_OK;
}

int es_kv_del(es_txn *t, const char *ns, const void *key, size_t key_len)
{
    uint8_t buf[ES_NS_MAX + 1 + ES_KEY_MAX];
    MDB_val k;
    MDB_dbi dbi;
    int own;
    if (!t || key_len == 0)
        return ES_INVALID;
    int rc = locate(t->store, ns, key, key_len, buf, &dbi, &k, &own);
    if (rc) /* only a read-only store lacks an own database */
        return rc == ES_NOT_FOUND ? ES_READONLY : rc;
    if (!t->write)
        return ES_READONLY;
    if (own >= 0 && t->kv_cur[own]) {
        /* Deleting through the put cursor keeps it valid for the next put. */
        MDB_val d;
        rc = mdb_cursor_get(t->kv_cur[own], &k, &d, MDB_SET);
        if (rc == 0)
            rc = mdb_cursor_del(t->kv_cur[own], 0);
        return rc ? write_status(t, rc) : ES_OK;
    }
    return write_status(t, mdb_del(t->txn, dbi, &k, NULL));
}

int es_kv_scan(es_txn *t, const char *ns, const void *from_key,
               size_t from_len, es_kv_visit_fn fn, void *arg)
{
    uint8_t buf[ES_NS_MAX + 1 + ES_KEY_MAX];
    MDB_cursor *cur = NULL;
    MDB_val k, d;
    MDB_dbi dbi;
    int own, rc;
    if (!t || !fn)
        return ES_INVALID;
    rc = locate(t->store, ns, from_key, from_key ? from_len : 0, buf, &dbi, &k,
                &own);
    if (rc)
        return rc == ES_NOT_FOUND ? ES_OK : rc;
    size_t plen = own >= 0 ? 0 : strlen(ns) + 1;
    if ((rc = mdb_cursor_open(t->txn, dbi, &cur)))
        return es__status_from_mdb(rc);
    rc = k.mv_size ? mdb_cursor_get(cur, &k, &d, MDB_SET_RANGE)
                   : mdb_cursor_get(cur, &k, &d, MDB_FIRST);
    for (; rc == 0; rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
        if (k.mv_size < plen || memcmp(k.mv_data, buf, plen) != 0)
            break;
        if (fn(arg, (uint8_t *)k.mv_data + plen, k.mv_size - plen, d.mv_data,
               d.mv_size))
            break;
    }
    mdb_cursor_close(cur);
    return rc == 0 || rc == MDB_NOTFOUND ? ES_OK : es__status_from_mdb(rc);
}

int es_snapshot_put(es_txn *t, const char *stream, uint64_t version,
                    const void *data, size_t len)
{
    if (!t || !es_stream_name_valid(stream) || (!data && len) ||
        len > ES_VALUE_MAX)
        return ES_INVALID;
    if (!t->write)
        return ES_READONLY;
    MDB_val k = {strlen(stream), (void *)stream}, d = {8 + len, NULL};
    int rc = mdb_put(t->txn, t->store->dbs.snapshots, &k, &d, MDB_RESERVE);
    if (rc)
        return write_status(t, rc);
    es__put_u64(d.mv_data, version);
    if (len)
        memcpy((uint8_t *)d.mv_data + 8, data, len);
    return ES_OK;
}

int es_snapshot_get(es_txn *t, const char *stream, uint64_t *version,
                    const void **data, size_t *len)
{
    if (!t || !es_stream_name_valid(stream) || !version || !data || !len)
        return ES_INVALID;
    MDB_val k = {strlen(stream), (void *)stream}, d;
    int rc = mdb_get(t->txn, t->store->dbs.snapshots, &k, &d);
    if (rc)
        return es__status_from_mdb(rc);
    if (d.mv_size < 8)
        return ES_CORRUPT;
    *version = es__get_u64(d.mv_data);
    *data = (uint8_t *)d.mv_data + 8;
    *len = d.mv_size - 8;
    return ES_OK;
}

static bool name_ok(const char *name)
{
    size_t n = name ? strnlen(name, ES_NS_MAX + 1) : 0;
    return n > 0 && n <= ES_NS_MAX;
}

int es_checkpoint_put(es_txn *t, const char *name, uint64_t position)
{
    uint8_t v[8];
    if (!t || !name_ok(name))
        return ES_INVALID;
    es__put_u64(v, position);
    MDB_val k = {strlen(name), (void *)name}, d = {8, v};
    return put(t, t->store->dbs.checkpoints, &k, &d);
}

int es_checkpoint_get(es_txn *t, const char *name, uint64_t *position)
{
    if (!t || !name_ok(name) || !position)
        return ES_INVALID;
    MDB_val k = {strlen(name), (void *)name}, d;
    int rc = mdb_get(t->txn, t->store->dbs.checkpoints, &k, &d);
    if (rc)
        return es__status_from_mdb(rc);
    if (d.mv_size != 8)
        return ES_CORRUPT;
    *position = es__get_u64(d.mv_data);
    return ES_OK;
}
