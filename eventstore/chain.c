/* chain.c: the hash chain (SHA-256, or HMAC-SHA256 keyed with the operator's
 * secret, over the previous hash and the record) and es_verify, which checks
 * the chain and that every index agrees with the log. */
#include <openssl/core_names.h>
#include <stdarg.h>
#include <openssl/crypto.h>
#include <openssl/params.h>
#include <stdio.h>
#include <string.h>

#include "eventstore/internal.h"

int es__hasher_init(es__hasher *h, const void *key, size_t key_len)
{
    int rc = ES_NOMEM;
    memset(h, 0, sizeof *h);
    h->md = EVP_MD_CTX_new();
    h->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (!h->md || !h->sha256)
        goto out;
    if (key && key_len) {
        OSSL_PARAM params[2];
        params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
                                                     (char *)"SHA256", 0);
        params[1] = OSSL_PARAM_construct_end();
        h->mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        if (!h->mac || !(h->mac_tmpl = EVP_MAC_CTX_new(h->mac)) ||
            !EVP_MAC_init(h->mac_tmpl, key, key_len, params))
            goto out;
        h->keyed = true;
    }
    rc = ES_OK;
out:
    if (rc)
        es__hasher_free(h);
    return rc;
}

void es__hasher_free(es__hasher *h)
{
    EVP_MAC_CTX_free(h->mac_tmpl);
    EVP_MAC_free(h->mac);
    EVP_MD_free(h->sha256);
    EVP_MD_CTX_free(h->md);
    memset(h, 0, sizeof *h);
}

static int mac2(es__hasher *h, const void *a, size_t alen, const void *b,
                size_t blen, uint8_t out[ES_HASH_SIZE])
{
    size_t outl = 0;
    int rc = ES_IO;
    /* A duplicate of the keyed template skips re-deriving the key pads. */
    EVP_MAC_CTX *c = EVP_MAC_CTX_dup(h->mac_tmpl);
    if (!c)
        return ES_NOMEM;
    if (EVP_MAC_update(c, a, alen) && EVP_MAC_update(c, b, blen) &&
        EVP_MAC_final(c, out, &outl, ES_HASH_SIZE) && outl == ES_HASH_SIZE)
        rc = ES_OK;
    EVP_MAC_CTX_free(c);
    return rc;
}

int es__hasher_hash(es__hasher *h, const uint8_t prev[ES_HASH_SIZE],
                    const void *rec, size_t len, uint8_t out[ES_HASH_SIZE])
{
    if (len < ES_HASH_SIZE)
        return ES_INVALID;
    len -= ES_HASH_SIZE;
    if (h->keyed)
        return mac2(h, prev, ES_HASH_SIZE, rec, len, out);
    unsigned outl = 0;
    if (!EVP_DigestInit_ex(h->md, h->sha256, NULL) ||
        !EVP_DigestUpdate(h->md, prev, ES_HASH_SIZE) ||
        !EVP_DigestUpdate(h->md, rec, len) ||
        !EVP_DigestFinal_ex(h->md, out, &outl))
        return ES_IO;
    return ES_OK;
}

int es__hasher_keycheck(es__hasher *h, uint8_t out[ES_HASH_SIZE])
{
    static const char msg[] = "agentmesh eventstore chain key check v1";
    if (!h->keyed)
        return ES_INVALID;
    return mac2(h, msg, sizeof msg - 1, "", 0, out);
}

/* ---- verify ------------------------------------------------------------- */

typedef struct vctx {
    MDB_txn *txn;
    const es__dbs *dbs;
    es_verify_report *rep;
} vctx;

#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static int fail(vctx *v, uint64_t pos, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(v->rep->message, sizeof v->rep->message, fmt, ap);
    va_end(ap);
    v->rep->bad_position = pos;
    return ES_CORRUPT;
}

static int index_key(uint8_t *buf, const char *stream, size_t len,
                     uint64_t version, MDB_val *k)
{
    memcpy(buf, stream, len);
    buf[len] = 0;
    es__put_u64(buf + len + 1, version);
    k->mv_data = buf;
    k->mv_size = len + 9;
    return 0;
}

/* The value under key in dbi must be the 8-byte position pos. */
static int points_to(vctx *v, MDB_dbi dbi, MDB_val *k, uint64_t pos)
{
    MDB_val d;
    int rc = mdb_get(v->txn, dbi, k, &d);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return -1;
    return d.mv_size == 8 && es__get_u64(d.mv_data) == pos ? 1 : 0;
}

static int check_log(vctx *v, es__hasher *h, uint64_t *count,
                     uint8_t last_hash[ES_HASH_SIZE])
{
    MDB_cursor *cur = NULL;
    MDB_val k, d;
    uint8_t prev[ES_HASH_SIZE] = {0}, calc[ES_HASH_SIZE];
    uint8_t ikey[ES_STREAM_NAME_MAX + 16];
    uint64_t expect = 1;
    int rc = mdb_cursor_open(v->txn, v->dbs->events, &cur);
    if (rc)
        return es__status_from_mdb(rc);
    for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT), expect++) {
        es_event ev;
        if (k.mv_size != 8) {
            rc = fail(v, expect, "log key of %zu bytes near position %llu",
                      k.mv_size, (unsigned long long)expect);
            goto out;
        }
        uint64_t pos = es__get_u64(k.mv_data);
        if (pos != expect) {
            rc = fail(v, expect, "position %llu missing (next stored is %llu)",
                      (unsigned long long)expect, (unsigned long long)pos);
            goto out;
        }
        if (es_record_decode(d.mv_data, d.mv_size, &ev) != ES_OK) {
            rc = fail(v, pos, "record at position %llu does not decode",
                      (unsigned long long)pos);
            goto out;
        }
        if (ev.position != pos) {
            rc = fail(v, pos, "record at position %llu says position %llu",
                      (unsigned long long)pos,
                      (unsigned long long)ev.position);
            goto out;
        }
        if (ev.keyed != h->keyed) {
            rc = fail(v, pos, "record at position %llu is %s, chain is %s",
                      (unsigned long long)pos, ev.keyed ? "keyed" : "unkeyed",
                      h->keyed ? "keyed" : "unkeyed");
            goto out;
        }
        if ((rc = es__hasher_hash(h, prev, d.mv_data, d.mv_size, calc)))
            goto out;
        if (CRYPTO_memcmp(calc, ev.hash, ES_HASH_SIZE) != 0) {
            rc = fail(v, pos, "hash mismatch at position %llu",
                      (unsigned long long)pos);
            goto out;
        }
        memcpy(prev, calc, ES_HASH_SIZE);
        MDB_val ik = {ES_ID_SIZE, ev.id};
        int p = points_to(v, v->dbs->event_ids, &ik, pos);
        if (p <= 0) {
            rc = p < 0 ? ES_IO
                       : fail(v, pos, "event id index wrong for position %llu",
                              (unsigned long long)pos);
            goto out;
        }
        index_key(ikey, ev.stream, ev.stream_len, ev.stream_version, &ik);
        p = points_to(v, v->dbs->stream_index, &ik, pos);
        if (p <= 0) {
            rc = p < 0 ? ES_IO
                       : fail(v, pos, "stream index wrong for position %llu",
                              (unsigned long long)pos);
            goto out;
        }
        v->rep->events_checked++;
    }
    if (rc != MDB_NOTFOUND) {
        rc = es__status_from_mdb(rc);
        goto out;
    }
    rc = ES_OK;
    *count = expect - 1;
    memcpy(last_hash, prev, ES_HASH_SIZE);
out:
    mdb_cursor_close(cur);
    return rc;
}

static int check_head(vctx *v, uint64_t count, const uint8_t *last_hash)
{
    MDB_val k = {sizeof ES__HEAD_KEY - 1, (void *)ES__HEAD_KEY}, d;
    int rc = mdb_get(v->txn, v->dbs->meta, &k, &d);
    if (rc == MDB_NOTFOUND)
        return count == 0 ? ES_OK
                          : fail(v, count, "head record missing");
    if (rc)
        return es__status_from_mdb(rc);
    if (d.mv_size != ES__HEAD_SIZE)
        return fail(v, 0, "head record malformed");
    uint64_t hp = es__get_u64(d.mv_data);
    if (hp != count)
        return fail(v, hp > count ? count + 1 : hp + 1,
                    "head says last position %llu, log ends at %llu",
                    (unsigned long long)hp, (unsigned long long)count);
    if (count && CRYPTO_memcmp((uint8_t *)d.mv_data + 8, last_hash,
                               ES_HASH_SIZE) != 0)
        return fail(v, count, "head hash differs from the last record's");
    return ES_OK;
}

static int entries(vctx *v, MDB_dbi dbi, uint64_t *n)
{
    MDB_stat st;
    int rc = mdb_stat(v->txn, dbi, &st);
    if (rc)
        return es__status_from_mdb(rc);
    *n = st.ms_entries;
    return ES_OK;
}

/* Close one stream's run of index entries: the streams table must hold it
 * with the same last version. */
static int close_stream(vctx *v, const uint8_t *name, size_t len,
                        uint64_t last, uint64_t pos)
{
    MDB_val k = {len, (void *)name}, d;
    int rc = mdb_get(v->txn, v->dbs->streams, &k, &d);
    if (rc == MDB_NOTFOUND || (rc == 0 && d.mv_size < ES__STREAM_ROW))
        return fail(v, pos, "stream '%.*s' missing from the streams table",
                    (int)len, (const char *)name);
    if (rc)
        return es__status_from_mdb(rc);
    if (es__get_u64(d.mv_data) != last)
        return fail(v, pos, "stream '%.*s' says last version %llu, index %llu",
                    (int)len, (const char *)name,
                    (unsigned long long)es__get_u64(d.mv_data),
                    (unsigned long long)last);
    v->rep->streams_checked++;
    return ES_OK;
}

static int check_streams(vctx *v)
{
    MDB_cursor *cur = NULL;
    MDB_val k, d;
    uint8_t name[ES_STREAM_NAME_MAX + 1];
    size_t name_len = 0;
    uint64_t next = 0, last_pos = 0, nstreams = 0;
    bool have = false;
    int rc = mdb_cursor_open(v->txn, v->dbs->stream_index, &cur);
    if (rc)
        return es__status_from_mdb(rc);
    for (rc = mdb_cursor_get(cur, &k, &d, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &d, MDB_NEXT)) {
        const uint8_t *kp = k.mv_data;
        if (k.mv_size < 10 || k.mv_size - 9 > ES_STREAM_NAME_MAX ||
            kp[k.mv_size - 9] != 0 || d.mv_size != 8) {
            rc = fail(v, 0, "malformed stream index entry");
            goto out;
        }
        size_t len = k.mv_size - 9;
        uint64_t ver = es__get_u64(kp + len + 1);
        uint64_t pos = es__get_u64(d.mv_data);
        if (!have || len != name_len || memcmp(kp, name, len) != 0) {
            if (have && (rc = close_stream(v, name, name_len, next - 1,
                                           last_pos)))
                goto out;
            memcpy(name, kp, len);
            name_len = len;
            next = 0;
            have = true;
            nstreams++;
        }
        if (ver != next) {
            rc = fail(v, pos, "stream '%.*s' jumps from version %llu to %llu",
                      (int)len, (const char *)kp,
                      (unsigned long long)next, (unsigned long long)ver);
            goto out;
        }
        next = ver + 1;
        last_pos = pos;
    }
    if (rc != MDB_NOTFOUND) {
        rc = es__status_from_mdb(rc);
        goto out;
    }
    rc = ES_OK;
    if (have && (rc = close_stream(v, name, name_len, next - 1, last_pos)))
        goto out;
    uint64_t rows = 0;
    if ((rc = entries(v, v->dbs->streams, &rows)))
        goto out;
    if (rows != nstreams)
        rc = fail(v, 0, "streams table has %llu rows, index has %llu streams",
                  (unsigned long long)rows, (unsigned long long)nstreams);
out:
    mdb_cursor_close(cur);
    return rc;
}

int es_verify(es_store *s, es_verify_report *report)
{
    es_verify_report scratch;
    es__hasher h;
    MDB_txn *txn = NULL;
    uint8_t last_hash[ES_HASH_SIZE];
    uint64_t count = 0, n = 0;
    int rc;

    if (!s)
        return ES_INVALID;
    if (!report)
        report = &scratch;
    memset(report, 0, sizeof *report);
    if ((rc = es__hasher_init(&h, s->chain_key, s->opts.chain_key_len)))
        return rc;
    if ((rc = es__read_begin(s, &txn)))
        goto out;
    vctx v = {txn, &s->dbs, report};

    MDB_val k = {sizeof ES__KEYCHECK_KEY - 1, (void *)ES__KEYCHECK_KEY}, d;
    int krc = mdb_get(txn, s->dbs.meta, &k, &d);
    if (krc == 0 && !h.keyed) {
        snprintf(report->message, sizeof report->message,
                 "the chain is keyed: open the store with its key");
        rc = ES_BAD_KEY;
        goto out;
    }
    if ((rc = check_log(&v, &h, &count, last_hash)) ||
        (rc = check_head(&v, count, last_hash)))
        goto out;
    if ((rc = entries(&v, s->dbs.event_ids, &n)))
        goto out;
    if (n != count) {
        rc = fail(&v, 0, "event id index has %llu entries, log has %llu",
                  (unsigned long long)n, (unsigned long long)count);
        goto out;
    }
    if ((rc = entries(&v, s->dbs.stream_index, &n)))
        goto out;
    if (n != count) {
        rc = fail(&v, 0, "stream index has %llu entries, log has %llu",
                  (unsigned long long)n, (unsigned long long)count);
        goto out;
    }
    if ((rc = check_streams(&v)))
        goto out;
    snprintf(report->message, sizeof report->message,
             "ok: %llu events, %llu streams",
             (unsigned long long)report->events_checked,
             (unsigned long long)report->streams_checked);
out:
    if (txn)
        es__read_end(s, txn);
    es__hasher_free(&h);
    return rc;
}
