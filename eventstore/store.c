/* store.c: opening and closing a store (environment, named databases, chain
 * key check, writer thread), read transactions under the map lock, map
 * growth, statistics, hot backup and restore. */
#include <errno.h>
#include <limits.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "eventstore/internal.h"

#define MAXDBS (16 + ES_KV_DBS_MAX)
/* How long a map growth waits for open read transactions to end. */
#define GROW_WAIT_S 5
/* Growth doubles up to this size, then grows by it. */
#define GROW_STEP ((size_t)1 << 30)

void es_options_init(es_options *o)
{
    memset(o, 0, sizeof *o);
    o->map_size = (size_t)64 << 20;
    o->map_size_max = sizeof(size_t) >= 8 ? (size_t)64 << 30 : (size_t)1 << 30;
    o->max_readers = 512;
    o->max_event_size = ES_EVENT_SIZE_DEFAULT;
    o->max_events_per_append = ES_EVENTS_PER_APPEND_DEFAULT;
    o->queue_max = 4096;
    o->max_subscriptions = 1024;
}

int64_t es__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int check_options(const es_options *o)
{
    if (o->map_size < ((size_t)1 << 20) || o->map_size_max < o->map_size ||
        o->max_readers < 8 || o->max_event_size < 256 ||
        o->max_event_size > ES_EVENT_SIZE_HARD_MAX ||
        o->max_events_per_append < 1 ||
        o->max_events_per_append > ES_EVENTS_PER_APPEND_HARD_MAX ||
        o->queue_max < 1 || o->max_subscriptions < 1 ||
        (o->flags &
         ~(unsigned)(ES_OPT_NOSYNC | ES_OPT_RDONLY | ES_OPT_WRITEMAP)) ||
        (o->chain_key_len && !o->chain_key) || o->chain_key_len > 4096)
        return ES_INVALID;
    return ES_OK;
}

static int open_dbs(es_store *s)
{
    MDB_txn *txn = NULL;
    unsigned flags = s->rdonly ? 0 : MDB_CREATE;
    int rc = mdb_txn_begin(s->env, NULL, s->rdonly ? MDB_RDONLY : 0, &txn);
    if (rc)
        return es__status_from_mdb(rc);
    struct {
        const char *name;
        MDB_dbi *dbi;
    } t[] = {
        {"events", &s->dbs.events},           {"streams", &s->dbs.streams},
        {"stream_index", &s->dbs.stream_index}, {"event_ids", &s->dbs.event_ids},
        {"snapshots", &s->dbs.snapshots},     {"checkpoints", &s->dbs.checkpoints},
        {"user", &s->dbs.user},               {"meta", &s->dbs.meta},
    };
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if ((rc = mdb_dbi_open(txn, t[i].name, flags, t[i].dbi))) {
            mdb_txn_abort(txn);
            return rc == MDB_NOTFOUND ? ES_NOT_FOUND : es__status_from_mdb(rc);
        }
    }
    for (unsigned i = 0; i < s->kv.n; i++) {
        char name[ES_NS_MAX + 4];
        snprintf(name, sizeof name, "kv:%s", s->kv.name[i]);
        rc = mdb_dbi_open(txn, name, flags, &s->kv.dbi[i]);
        if (rc == MDB_NOTFOUND && s->rdonly)
            continue; /* a store that never had it: reads find nothing */
        if (rc) {
            mdb_txn_abort(txn);
            return es__status_from_mdb(rc);
        }
        s->kv.present[i] = true;
    }
    rc = mdb_txn_commit(txn);
    return es__status_from_mdb(rc);
}

/* Load the chain head and settle the chain key: a keyed chain needs its key,
 * a key cannot be added to a chain that already has unkeyed events. */
static int load_head(es_store *s)
{
    MDB_txn *txn = NULL;
    MDB_val k = {sizeof ES__HEAD_KEY - 1, (void *)ES__HEAD_KEY}, d;
    uint8_t check[ES_HASH_SIZE];
    int rc = mdb_txn_begin(s->env, NULL, s->rdonly ? MDB_RDONLY : 0, &txn);
    if (rc)
        return es__status_from_mdb(rc);
    rc = mdb_get(txn, s->dbs.meta, &k, &d);
    if (rc == 0 && d.mv_size == ES__HEAD_SIZE) {
        s->last_pos = es__get_u64(d.mv_data);
        memcpy(s->last_hash, (uint8_t *)d.mv_data + 8, ES_HASH_SIZE);
    } else if (rc == 0) {
        rc = ES_CORRUPT;
        goto out;
    } else if (rc != MDB_NOTFOUND) {
        rc = es__status_from_mdb(rc);
        goto out;
    }
    k.mv_data = (void *)ES__KEYCHECK_KEY;
    k.mv_size = sizeof ES__KEYCHECK_KEY - 1;
    rc = mdb_get(txn, s->dbs.meta, &k, &d);
    if (rc == 0) {
        if (!s->hasher.keyed) {
            rc = s->rdonly ? ES_OK : ES_BAD_KEY;
            goto out;
        }
        if ((rc = es__hasher_keycheck(&s->hasher, check)))
            goto out;
        rc = d.mv_size == ES_HASH_SIZE &&
                     CRYPTO_memcmp(d.mv_data, check, ES_HASH_SIZE) == 0
                 ? ES_OK
                 : ES_BAD_KEY;
    } else if (rc == MDB_NOTFOUND) {
        rc = ES_OK;
        if (!s->hasher.keyed)
            goto out;
        if (s->last_pos != 0 || s->rdonly) {
            rc = ES_BAD_KEY;
            goto out;
        }
        if ((rc = es__hasher_keycheck(&s->hasher, check)))
            goto out;
        d.mv_data = check;
        d.mv_size = ES_HASH_SIZE;
        rc = es__status_from_mdb(mdb_put(txn, s->dbs.meta, &k, &d, 0));
    } else {
        rc = es__status_from_mdb(rc);
    }
out:
    if (rc == ES_OK && !s->rdonly) {
        rc = es__status_from_mdb(mdb_txn_commit(txn));
        txn = NULL;
    }
    if (txn)
        mdb_txn_abort(txn);
    return rc;
}

/* mkdir -p: a service's data folder may be several levels deep and new. */
static int make_dirs(const char *path)
{
    char buf[PATH_MAX];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof buf)
        return ENAMETOOLONG;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        char saved = buf[i];
        buf[i] = '\0';
        if (mkdir(buf, 0755) != 0 && errno != EEXIST)
            return errno;
        buf[i] = saved;
    }
    return 0;
}

int es_open(const char *path, const es_options *opts, es_store **out)
{
    es_options defaults;
    es_store *s = NULL;
    int rc;

    if (!path || !*path || !out)
        return ES_INVALID;
    if (!opts) {
        es_options_init(&defaults);
        opts = &defaults;
    }
    if ((rc = check_options(opts)))
        return rc;
    size_t nkv = 0;
    for (; opts->kv_dbs && opts->kv_dbs[nkv]; nkv++) {
        size_t n = strnlen(opts->kv_dbs[nkv], ES_NS_MAX + 1);
        if (nkv == ES_KV_DBS_MAX || n == 0 || n > ES_NS_MAX)
            return ES_INVALID;
    }
    if (!(opts->flags & ES_OPT_RDONLY) && (rc = make_dirs(path)) != 0)
        return es__status_from_mdb(rc);
    if (!(s = calloc(1, sizeof *s)))
        return ES_NOMEM;
    s->opts = *opts;
    s->opts.kv_dbs = NULL;
    s->rdonly = (opts->flags & ES_OPT_RDONLY) != 0;
    s->writemap = (opts->flags & ES_OPT_WRITEMAP) && !s->rdonly;
    for (; s->kv.n < nkv; s->kv.n++) {
        s->kv.given[s->kv.n] = opts->kv_dbs[s->kv.n];
        if (!(s->kv.name[s->kv.n] = strdup(opts->kv_dbs[s->kv.n]))) {
            for (unsigned i = 0; i < s->kv.n; i++)
                free(s->kv.name[i]);
            free(s);
            return ES_NOMEM;
        }
        unsigned h = es__kv_slot(s->kv.given[s->kv.n]);
        while (s->kv.slot_ptr[h] && s->kv.slot_ptr[h] != s->kv.given[s->kv.n])
            h = (h + 1) & (ES__KV_SLOTS - 1);
        if (!s->kv.slot_ptr[h]) { /* a repeated pointer keeps its first */
            s->kv.slot_ptr[h] = s->kv.given[s->kv.n];
            s->kv.slot_idx[h] = (unsigned char)s->kv.n;
        }
    }
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    /* Writer preference: a pending growth is not starved by a stream of new
     * readers; the growth's wait is bounded, so a reader that takes the lock
     * twice on one thread delays it rather than deadlocking. */
    pthread_rwlockattr_setkind_np(&ra,
                                  PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&s->map_lock, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->queue_cv, NULL);
    pthread_cond_init(&s->space_cv, NULL);
    pthread_mutex_init(&s->notify_mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    /* Subscription deadlines are measured on the monotonic clock. */
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->notify_cv, &ca);
    pthread_condattr_destroy(&ca);

    if (opts->chain_key_len) {
        if (!(s->chain_key = malloc(opts->chain_key_len))) {
            rc = ES_NOMEM;
            goto out;
        }
        memcpy(s->chain_key, opts->chain_key, opts->chain_key_len);
        s->opts.chain_key = s->chain_key;
    } else {
        s->opts.chain_key = NULL;
    }
    if ((rc = es__hasher_init(&s->hasher, s->chain_key, opts->chain_key_len)))
        goto out;

    unsigned flags = MDB_NOTLS;
    if (opts->flags & ES_OPT_NOSYNC)
        flags |= MDB_NOSYNC;
    if (s->writemap)
        flags |= MDB_WRITEMAP;
    if (s->rdonly)
        flags |= MDB_RDONLY;
    if ((rc = mdb_env_create(&s->env)) ||
        (rc = mdb_env_set_maxreaders(s->env, opts->max_readers)) ||
        (rc = mdb_env_set_maxdbs(s->env, MAXDBS)) ||
        (rc = mdb_env_set_mapsize(s->env, opts->map_size))) {
        rc = es__status_from_mdb(rc);
        goto out;
    }
    if ((rc = mdb_env_open(s->env, path, flags, 0644))) {
        rc = rc == ENOENT ? ES_NOT_FOUND : es__status_from_mdb(rc);
        goto out;
    }
    /* Adopt the size a previous run grew the map to, if larger. */
    MDB_envinfo info;
    if ((rc = mdb_env_set_mapsize(s->env, 0)) ||
        (rc = mdb_env_info(s->env, &info))) {
        rc = es__status_from_mdb(rc);
        goto out;
    }
    s->map_size = info.me_mapsize;
    if (!s->rdonly && s->map_size < opts->map_size) {
        if ((rc = mdb_env_set_mapsize(s->env, opts->map_size))) {
            rc = es__status_from_mdb(rc);
            goto out;
        }
        s->map_size = opts->map_size;
    }
    int dead = 0;
    mdb_reader_check(s->env, &dead);
    if ((rc = open_dbs(s)) || (rc = load_head(s)))
        goto out;
    s->committed_pos = s->last_pos;
    if (!s->rdonly) {
        if (pthread_create(&s->writer, NULL, es__writer_main, s) != 0) {
            rc = ES_NOMEM;
            goto out;
        }
        pthread_setname_np(s->writer, "es-writer");
        s->writer_started = true;
    }
    *out = s;
    s = NULL;
out:
    es_close(s);
    return rc;
}

void es_close(es_store *s)
{
    if (!s)
        return;
    pthread_mutex_lock(&s->mu);
    s->closing = true;
    pthread_cond_broadcast(&s->queue_cv);
    pthread_cond_broadcast(&s->space_cv);
    pthread_mutex_unlock(&s->mu);
    if (s->writer_started)
        pthread_join(s->writer, NULL);
    pthread_mutex_lock(&s->notify_mu);
    s->closed = true;
    pthread_cond_broadcast(&s->notify_cv);
    pthread_mutex_unlock(&s->notify_mu);
    if (s->env)
        mdb_env_close(s->env);
    es__hasher_free(&s->hasher);
    if (s->chain_key) {
        OPENSSL_cleanse(s->chain_key, s->opts.chain_key_len);
        free(s->chain_key);
    }
    pthread_cond_destroy(&s->notify_cv);
    pthread_mutex_destroy(&s->notify_mu);
    pthread_cond_destroy(&s->space_cv);
    pthread_cond_destroy(&s->queue_cv);
    pthread_mutex_destroy(&s->mu);
    pthread_rwlock_destroy(&s->map_lock);
    for (unsigned i = 0; i < s->kv.n; i++)
        free(s->kv.name[i]);
    free(s);
}

/* ---- read transactions and the map lock ------------------------------- */

static void deadline_in(struct timespec *ts, int seconds)
{
    clock_gettime(CLOCK_REALTIME, ts);
    ts->tv_sec += seconds;
}

/* Another process grew the map: adopt its size with no reader inside. */
static void adopt_map_size(es_store *s)
{
    struct timespec ts;
    deadline_in(&ts, GROW_WAIT_S);
    if (pthread_rwlock_timedwrlock(&s->map_lock, &ts) != 0)
        return;
    if (mdb_env_set_mapsize(s->env, 0) == 0) {
        MDB_envinfo info;
        if (mdb_env_info(s->env, &info) == 0)
            s->map_size = info.me_mapsize;
    }
    pthread_rwlock_unlock(&s->map_lock);
}

int es__read_begin(es_store *s, MDB_txn **out)
{
    MDB_txn *txn = NULL;
    int rc = 0;
    for (int tries = 0; tries < 4; tries++) {
        pthread_rwlock_rdlock(&s->map_lock);
        rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
        if (rc == 0) {
            *out = txn;
            return ES_OK;
        }
        pthread_rwlock_unlock(&s->map_lock);
        if (rc == MDB_MAP_RESIZED) {
            adopt_map_size(s);
        } else if (rc == MDB_READERS_FULL) {
            int dead = 0;
            mdb_reader_check(s->env, &dead);
            if (dead == 0)
                break;
        } else {
            break;
        }
    }
    return es__status_from_mdb(rc);
}

void es__read_end(es_store *s, MDB_txn *txn)
{
    mdb_txn_abort(txn);
    pthread_rwlock_unlock(&s->map_lock);
}

/* Called by the writer with no write txn open: grow the map by doubling
 * (by GROW_STEP past it) up to map_size_max. */
int es__grow_map(es_store *s)
{
    struct timespec ts;
    deadline_in(&ts, GROW_WAIT_S);
    if (pthread_rwlock_timedwrlock(&s->map_lock, &ts) != 0)
        return ES_MAP_FULL;
    /* Read under the lock: two writers (the writer thread and an
     * es_write_inline caller) may both have found the map full. */
    size_t cur = s->map_size, max = s->opts.map_size_max, next;
    if (cur >= max) {
        pthread_rwlock_unlock(&s->map_lock);
        return ES_MAP_FULL;
    }
    next = cur < GROW_STEP ? cur * 2 : cur + GROW_STEP;
    if (next > max || next < cur)
        next = max;
    int rc = mdb_env_set_mapsize(s->env, next);
    if (rc == 0)
        s->map_size = next;
    pthread_rwlock_unlock(&s->map_lock);
    if (rc)
        return es__status_from_mdb(rc);
    pthread_mutex_lock(&s->mu);
    s->map_growths++;
    pthread_mutex_unlock(&s->mu);
    return ES_OK;
}

int es_txn_begin(es_store *s, es_txn **out)
{
    es_txn *t;
    int rc;
    if (!s || !out)
        return ES_INVALID;
    if (!(t = calloc(1, sizeof *t)))
        return ES_NOMEM;
    if ((rc = es__read_begin(s, &t->txn))) {
        free(t);
        return rc;
    }
    t->store = s;
    t->owns_lock = true;
    *out = t;
    return ES_OK;
}

void es_txn_end(es_txn *t)
{
    if (!t || !t->owns_lock)
        return;
    es__read_end(t->store, t->txn);
    free(t);
}

int es_stream_version(es_txn *t, const char *stream, uint64_t *version)
{
    if (!t || !version || !es_stream_name_valid(stream))
        return ES_INVALID;
    MDB_val k = {strlen(stream), (void *)stream}, d;
    int rc = mdb_get(t->txn, t->store->dbs.streams, &k, &d);
    if (rc)
        return es__status_from_mdb(rc);
    if (d.mv_size < ES__STREAM_ROW)
        return ES_CORRUPT;
    *version = es__get_u64(d.mv_data);
    return ES_OK;
}

int es_event_position(es_txn *t, const uint8_t id[ES_ID_SIZE],
                      uint64_t *position)
{
    if (!t || !id || !position)
        return ES_INVALID;
    MDB_val k = {ES_ID_SIZE, (void *)id}, d;
    int rc = mdb_get(t->txn, t->store->dbs.event_ids, &k, &d);
    if (rc)
        return es__status_from_mdb(rc);
    if (d.mv_size != 8)
        return ES_CORRUPT;
    *position = es__get_u64(d.mv_data);
    return ES_OK;
}

/* ---- stats, backup, restore ------------------------------------------- */

/* mdb_reader_list writes a header, then one line per live reader slot. */
static int count_reader(const char *msg, void *arg)
{
    if (strncmp(msg, "    pid", 7) != 0 && strncmp(msg, "(no active", 10) != 0)
        (*(unsigned *)arg)++;
    return 0;
}

int es_stats_get(es_store *s, es_stats *out)
{
    MDB_txn *txn = NULL;
    MDB_stat ev, st;
    MDB_envinfo info;
    es_stats r;
    int rc;
    if (!s || !out)
        return ES_INVALID;
    memset(&r, 0, sizeof r);
    if ((rc = es__read_begin(s, &txn)))
        return rc;
    MDB_val k = {sizeof ES__HEAD_KEY - 1, (void *)ES__HEAD_KEY}, d;
    if (mdb_get(txn, s->dbs.meta, &k, &d) == 0 && d.mv_size == ES__HEAD_SIZE)
        r.last_position = es__get_u64(d.mv_data);
    if ((rc = mdb_stat(txn, s->dbs.events, &ev)) ||
        (rc = mdb_stat(txn, s->dbs.streams, &st)) ||
        (rc = mdb_env_info(s->env, &info))) {
        es__read_end(s, txn);
        return es__status_from_mdb(rc);
    }
    r.events = ev.ms_entries;
    r.streams = st.ms_entries;
    r.map_size = info.me_mapsize;
    r.map_used = (uint64_t)(info.me_last_pgno + 1) * ev.ms_psize;
    r.readers_max = info.me_maxreaders;
    mdb_reader_list(s->env, count_reader, &r.readers_used);
    es__read_end(s, txn);
    r.map_size_max = s->opts.map_size_max;
    r.keyed = s->hasher.keyed;
    pthread_mutex_lock(&s->mu);
    r.appends_ok = s->appends_ok;
    r.appends_failed = s->appends_failed;
    r.events_appended = s->events_appended;
    r.commits = s->commits;
    r.commit_ns_total = s->commit_ns_total;
    r.batch_max = s->batch_max;
    r.map_growths = s->map_growths;
    pthread_mutex_unlock(&s->mu);
    pthread_mutex_lock(&s->notify_mu);
    r.subscriptions = s->subs;
    pthread_mutex_unlock(&s->notify_mu);
    *out = r;
    return ES_OK;
}

static int data_file(const char *dir, char *buf, size_t cap, const char *name)
{
    int n = snprintf(buf, cap, "%s/%s", dir, name);
    return n < 0 || (size_t)n >= cap ? ES_INVALID : ES_OK;
}

static int prepare_dest(const char *dir, int force)
{
    char file[PATH_MAX];
    int rc;
    if ((rc = make_dirs(dir)) != 0)
        return es__status_from_mdb(rc);
    if ((rc = data_file(dir, file, sizeof file, "data.mdb")))
        return rc;
    if (access(file, F_OK) == 0) {
        if (!force)
            return ES_BUSY;
        if (unlink(file) != 0)
            return es__status_from_mdb(errno);
        if (data_file(dir, file, sizeof file, "lock.mdb") == ES_OK)
            unlink(file);
    }
    return ES_OK;
}

static int copy_env(es_store *s, const char *dest)
{
    /* mdb_env_copy2 reads through its own read txn: hold the map lock shared
     * so a growth cannot unmap under it. */
    pthread_rwlock_rdlock(&s->map_lock);
    int rc = mdb_env_copy2(s->env, dest, MDB_CP_COMPACT);
    pthread_rwlock_unlock(&s->map_lock);
    return es__status_from_mdb(rc);
}

int es_backup(es_store *s, const char *dest_dir)
{
    int rc;
    if (!s || !dest_dir || !*dest_dir)
        return ES_INVALID;
    if ((rc = prepare_dest(dest_dir, 0)))
        return rc;
    return copy_env(s, dest_dir);
}

int es_restore(const char *backup_dir, const char *dest_dir,
               const es_options *opts, int force)
{
    es_options o;
    es_store *s = NULL;
    es_verify_report rep;
    int rc;
    if (!backup_dir || !dest_dir || !*dest_dir)
        return ES_INVALID;
    if (opts)
        o = *opts;
    else
        es_options_init(&o);
    o.flags |= ES_OPT_RDONLY;
    if ((rc = es_open(backup_dir, &o, &s)))
        return rc;
    if ((rc = es_verify(s, &rep)))
        goto out;
    if ((rc = prepare_dest(dest_dir, force)))
        goto out;
    rc = copy_env(s, dest_dir);
out:
    es_close(s);
    return rc;
}
