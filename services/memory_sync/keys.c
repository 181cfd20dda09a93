/* Namespace keys at rest. Each namespace key is stored in the event store
 * wrapped (AES-256-GCM) under a master key that lives in a file of its own
 * beside the store (<data-dir>/memory-master-<generation>.key, mode 0600).
 * LMDB is copy-on-write: every write near a key record leaves stale copies of
 * its page in the file until they are reused, so deleting a record cannot
 * shred it. Forgetting a namespace therefore also rotates the master key: in
 * the forget's own transaction every remaining namespace key is re-wrapped
 * under a new master, and once that is durable the old master file is
 * overwritten and unlinked — after which no stale copy of any forgotten key
 * can be unwrapped. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "services/memory_sync/internal.h"

#define KEYREC_FORMAT 2
#define KV_MASTER "memory.master"
#define MASTER_CURRENT "current"
#define MASTER_PREFIX "memory-master-"

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void master_path(const ms_service *s, uint32_t gen, char *out, size_t n)
{
    snprintf(out, n, "%s/%s%u.key", s->key_dir, MASTER_PREFIX, gen);
}

static int sync_dir(const char *dir)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd < 0)
        return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* Writes a new master key file durably (temporary name, fsync, rename). */
static int master_write(const ms_service *s, uint32_t gen, const ms_ns_key *k)
{
    char path[4200], tmp[4300];
    master_path(s, gen, path, sizeof path);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        return -1;
    ssize_t n = write(fd, k->bytes, sizeof k->bytes);
    int rc = n == (ssize_t)sizeof k->bytes && fsync(fd) == 0 ? 0 : -1;
    close(fd);
    if (rc == 0)
        rc = rename(tmp, path);
    if (rc == 0)
        rc = sync_dir(s->key_dir);
    if (rc)
        unlink(tmp);
    return rc;
}

static int master_read(const ms_service *s, uint32_t gen, ms_ns_key *k)
{
    char path[4200];
    master_path(s, gen, path, sizeof path);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, k->bytes, sizeof k->bytes);
    close(fd);
    return n == (ssize_t)sizeof k->bytes ? 0 : -1;
}

/* Overwrites a master file with zeros, flushes, and unlinks it. */
static void master_destroy(const ms_service *s, const char *name)
{
    char path[4200];
    uint8_t zeros[MS_NS_KEY_SIZE] = {0};
    snprintf(path, sizeof path, "%s/%s", s->key_dir, name);
    int fd = open(path, O_WRONLY);
    if (fd >= 0) {
        if (write(fd, zeros, sizeof zeros) == (ssize_t)sizeof zeros)
            fsync(fd);
        close(fd);
    }
    unlink(path);
    sync_dir(s->key_dir);
}

/* Removes every master file but the current generation's (left over from a
 * rotation that crashed before or after its commit). */
static void master_sweep(const ms_service *s)
{
    char keep[64];
    DIR *d = opendir(s->key_dir);
    struct dirent *de;
    if (!d)
        return;
    snprintf(keep, sizeof keep, "%s%u.key", MASTER_PREFIX, s->master_gen);
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, MASTER_PREFIX, sizeof MASTER_PREFIX - 1) == 0 &&
            strcmp(de->d_name, keep) != 0)
            master_destroy(s, de->d_name);
    }
    closedir(d);
}

static int put_current(es_txn *txn, const es_append_result *r, void *arg)
{
    uint8_t v[4];
    (void)r;
    put_be32(v, *(const uint32_t *)arg);
    return es_kv_put(txn, KV_MASTER, MASTER_CURRENT, sizeof MASTER_CURRENT - 1,
                     v, sizeof v);
}

int ms_master_open(ms_service *s)
{
    es_txn *txn = NULL;
    const void *v = NULL;
    size_t n = 0;
    int rc = es_txn_begin(s->store, &txn);
    if (rc)
        return rc;
    rc = es_kv_get(txn, KV_MASTER, MASTER_CURRENT, sizeof MASTER_CURRENT - 1,
                   &v, &n);
    if (rc == ES_OK && n == 4)
        s->master_gen = get_be32(v);
    else if (rc == ES_OK)
        rc = ES_CORRUPT;
    es_txn_end(txn);
    if (rc == ES_NOT_FOUND) {
        uint32_t first = 1;
        if (ms_key_generate(&s->master) || master_write(s, first, &s->master))
            return ES_IO;
        if ((rc = es_write(s->store, put_current, &first)))
            return rc;
        s->master_gen = first;
    } else if (rc) {
        return rc;
    } else if (master_read(s, s->master_gen, &s->master)) {
        return ES_BAD_KEY;
    }
    master_sweep(s);
    return ES_OK;
}

void ms_master_rdlock(ms_service *s) { pthread_rwlock_rdlock(&s->master_lock); }
void ms_master_unlock(ms_service *s) { pthread_rwlock_unlock(&s->master_lock); }
void ms_master_wrlock(ms_service *s) { pthread_rwlock_wrlock(&s->master_lock); }

static ms_seal_ctx wrap_ctx(const char *ns, uint32_t ns_gen, uint32_t master_gen)
{
    ms_seal_ctx w = {ns, "namespace-key", 13, ns_gen, master_gen};
    return w;
}

/* fmt, namespace generation, master generation, sealed key. */
static int wrap(const ms_ns_key *master, uint32_t master_gen, const char *ns,
                uint32_t ns_gen, const ms_ns_key *k, uint8_t out[MS_KEYREC_SIZE])
{
    uint8_t *sealed = NULL;
    size_t len = 0;
    ms_seal_ctx w = wrap_ctx(ns, ns_gen, master_gen);
    if (ms_seal(master, &w, k->bytes, sizeof k->bytes, &sealed, &len) ||
        len != MS_KEYREC_SIZE - 9) {
        free(sealed);
        return -1;
    }
    out[0] = KEYREC_FORMAT;
    put_be32(out + 1, ns_gen);
    put_be32(out + 5, master_gen);
    memcpy(out + 9, sealed, len);
    free(sealed);
    return 0;
}

static int unwrap(const ms_ns_key *master, uint32_t master_gen, const char *ns,
                  const uint8_t *rec, size_t n, uint32_t *ns_gen, ms_ns_key *k)
{
    uint8_t *pt = NULL;
    size_t len = 0;
    if (n != MS_KEYREC_SIZE || rec[0] != KEYREC_FORMAT ||
        get_be32(rec + 5) != master_gen)
        return -1;
    ms_seal_ctx w = wrap_ctx(ns, get_be32(rec + 1), master_gen);
    if (ms_unseal(master, &w, rec + 9, n - 9, &pt, &len))
        return -1;
    int rc = len == sizeof k->bytes ? 0 : -1;
    if (rc == 0) {
        memcpy(k->bytes, pt, len);
        *ns_gen = get_be32(rec + 1);
    }
    OPENSSL_cleanse(pt, len);
    free(pt);
    return rc;
}

int ms_nskey_wrap(ms_service *s, const char *ns, uint32_t ns_gen,
                  const ms_ns_key *k, uint8_t out[MS_KEYREC_SIZE])
{
    return wrap(&s->master, s->master_gen, ns, ns_gen, k, out);
}

int ms_nskey_get(ms_service *s, es_txn *txn, const char *ns,
                 uint32_t *generation, ms_ns_key *out)
{
    const void *v = NULL;
    size_t n = 0;
    int rc = es_kv_get(txn, KV_KEYS, ns, strlen(ns), &v, &n);
    if (rc)
        return rc;
    return unwrap(&s->master, s->master_gen, ns, v, n, generation, out)
               ? ES_BAD_KEY
               : ES_OK;
}

int ms_rotation_begin(ms_service *s, ms_rotation *r)
{
    memset(r, 0, sizeof *r);
    r->old_gen = s->master_gen;
    r->old_key = s->master;
    r->new_gen = s->master_gen + 1;
    if (ms_key_generate(&r->new_key) || master_write(s, r->new_gen, &r->new_key))
        return -1;
    return 0;
}

typedef struct rec_list {
    char (*names)[MS_NS_MAX + 1];
    uint8_t (*recs)[MS_KEYREC_SIZE];
    size_t n, cap;
    int bad;
} rec_list;

static int collect_rec(void *arg, const void *key, size_t key_len,
                       const void *val, size_t val_len)
{
    rec_list *l = arg;
    if (key_len > MS_NS_MAX || val_len != MS_KEYREC_SIZE) {
        l->bad = 1;
        return 1;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        void *a = realloc(l->names, cap * sizeof *l->names);
        if (a)
            l->names = a;
        void *b = a ? realloc(l->recs, cap * sizeof *l->recs) : NULL;
        if (!a || !b) {
            l->bad = 1;
            return 1;
        }
        l->recs = b;
        l->cap = cap;
    }
    memcpy(l->names[l->n], key, key_len);
    l->names[l->n][key_len] = '\0';
    memcpy(l->recs[l->n++], val, val_len);
    return 0;
}

int ms_rotation_apply(es_txn *txn, const ms_rotation *r)
{
    rec_list l = {NULL, NULL, 0, 0, 0};
    uint8_t cur[4];
    int rc = es_kv_scan(txn, KV_KEYS, NULL, 0, collect_rec, &l);
    if (rc == ES_OK && l.bad)
        rc = ES_CORRUPT;
    for (size_t i = 0; i < l.n && rc == ES_OK; i++) {
        ms_ns_key k;
        uint32_t ns_gen = 0;
        uint8_t rec[MS_KEYREC_SIZE];
        if (unwrap(&r->old_key, r->old_gen, l.names[i], l.recs[i],
                   MS_KEYREC_SIZE, &ns_gen, &k) ||
            wrap(&r->new_key, r->new_gen, l.names[i], ns_gen, &k, rec))
            rc = ES_BAD_KEY;
        else
            rc = es_kv_put(txn, KV_KEYS, l.names[i], strlen(l.names[i]), rec,
                           sizeof rec);
        ms_key_wipe(&k);
    }
    if (l.recs)
        OPENSSL_cleanse(l.recs, l.cap * sizeof *l.recs);
    free(l.names);
    free(l.recs);
    put_be32(cur, r->new_gen);
    if (rc == ES_OK)
        rc = es_kv_put(txn, KV_MASTER, MASTER_CURRENT, sizeof MASTER_CURRENT - 1,
                       cur, sizeof cur);
    return rc;
}

void ms_rotation_end(ms_service *s, ms_rotation *r, bool committed)
{
    char name[64];
    if (committed) {
        s->master = r->new_key;
        s->master_gen = r->new_gen;
        snprintf(name, sizeof name, "%s%u.key", MASTER_PREFIX, r->old_gen);
    } else {
        snprintf(name, sizeof name, "%s%u.key", MASTER_PREFIX, r->new_gen);
    }
    master_destroy(s, name);
    ms_key_wipe(&r->old_key);
    ms_key_wipe(&r->new_key);
}
