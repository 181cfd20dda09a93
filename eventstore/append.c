/* append.c: appends and the group commit. Callers validate their request,
 * queue it and sleep; one writer thread takes everything queued, applies each
 * request in one LMDB write transaction (each checked on its own: one
 * request's failure never fails another), commits once — one flush for the
 * whole group — and only then wakes each caller with its own result, or
 * calls back the asynchronous ones (es_append_async). */
#include <semaphore.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eventstore/internal.h"

/* Most requests and bytes in one group commit: bounds the dirty pages of a
 * transaction far below LMDB's limit. */
#define BATCH_MAX_REQS 1024
#define BATCH_MAX_BYTES ES_APPEND_SIZE_MAX
/* Idle writer: reclaim stale reader slots this often. */
#define READER_CHECK_S 10
#define READER_CHECK_COMMITS 4096
/* A request's status before the writer reached it. */
#define NOT_APPLIED (-1)

typedef struct es__req {
    struct es__req *next;
    const char *stream;
    size_t stream_len;
    int64_t expected;
    const es_event_data *events;
    size_t n;
    size_t bytes;
    es_txn_fn fn;
    void *arg;
    es_append_result res;
    int status;
    bool dropped;  /* writemap: failed in an aborted attempt, left out */
    sem_t done;    /* posted by the writer once status and res are final */
    es_append_cb cb; /* es_append_async: called instead, then req freed */
    void *cb_arg;
} es__req;

/* The running state of one group commit. */
typedef struct batch {
    es_store *s;
    MDB_txn *txn;
    uint64_t pos;                 /* last position written so far */
    uint8_t hash[ES_HASH_SIZE];   /* its hash */
    int64_t now;
    int fatal;                    /* a status that ends the whole txn */
    bool redo;                    /* writemap: a request failed, run again */
} batch;

static bool type_valid(const char *t)
{
    if (!t || !*t)
        return false;
    for (size_t i = 0; t[i]; i++) {
        unsigned char c = (unsigned char)t[i];
        if (i >= ES_TYPE_MAX || c <= 0x20 || c >= 0x7f)
            return false;
    }
    return true;
}

static bool meta_valid(const char *m)
{
    return !m || strnlen(m, ES_META_MAX + 1) <= ES_META_MAX;
}

static int cmp_id(const void *a, const void *b)
{
    return memcmp(*(const uint8_t *const *)a, *(const uint8_t *const *)b,
                  ES_ID_SIZE);
}

/* Checks that need no transaction, done on the caller's thread. */
static int validate(es_store *s, es__req *r)
{
    const uint8_t **ids = NULL;
    int rc = ES_INVALID;
    if (!es_stream_name_valid(r->stream) || !r->events || r->n == 0 ||
        r->n > s->opts.max_events_per_append)
        return ES_INVALID;
    for (size_t i = 0; i < r->n; i++) {
        const es_event_data *e = &r->events[i];
        if (!type_valid(e->type) || !meta_valid(e->content_type) ||
            !meta_valid(e->meta.correlation_id) ||
            !meta_valid(e->meta.causation_id) ||
            !meta_valid(e->meta.traceparent) || !meta_valid(e->meta.actor) ||
            (e->data_len && !e->data) || e->data_len > s->opts.max_event_size)
            return ES_INVALID;
        size_t sz = es__record_size(r->stream, e);
        if (sz > s->opts.max_event_size)
            return ES_INVALID;
        r->bytes += sz;
    }
    /* One request must fit one group commit. */
    if (r->bytes > BATCH_MAX_BYTES)
        return ES_INVALID;
    if (r->n == 1)
        return ES_OK;
    if (!(ids = malloc(r->n * sizeof *ids)))
        return ES_NOMEM;
    for (size_t i = 0; i < r->n; i++)
        ids[i] = r->events[i].id;
    qsort(ids, r->n, sizeof *ids, cmp_id);
    for (size_t i = 1; i < r->n; i++)
        if (memcmp(ids[i - 1], ids[i], ES_ID_SIZE) == 0)
            goto out;
    rc = ES_OK;
out:
    free(ids);
    return rc;
}

/* Queue the request and sleep until the writer answered it. The caller
 * sleeps on its own semaphore, not on s->mu: a group commit then wakes each
 * of its callers once, and none of them queues behind the others (or the
 * writer) for the store's lock on the way out. The writer is signalled only
 * when it waits for work; a busy writer looks at the queue before it
 * sleeps again. */
/* With s->mu held, which it releases: queues r (unless the store is
 * closing: ES_CLOSED) and signals an idle writer. */
static int enqueue_unlock(es_store *s, es__req *r)
{
    if (s->closing) {
        pthread_mutex_unlock(&s->mu);
        return ES_CLOSED;
    }
    if (s->tail)
        s->tail->next = r;
    else
        s->head = r;
    s->tail = r;
    s->queued++;
    bool wake = s->writer_idle;
    pthread_mutex_unlock(&s->mu);
    if (wake)
        pthread_cond_signal(&s->queue_cv);
    return ES_OK;
}

static int submit(es_store *s, es__req *r)
{
    if (sem_init(&r->done, 0, 0) != 0)
        return ES_NOMEM;
    pthread_mutex_lock(&s->mu);
    while (!s->closing && s->queued >= s->opts.queue_max)
        pthread_cond_wait(&s->space_cv, &s->mu);
    if (enqueue_unlock(s, r) != ES_OK) {
        sem_destroy(&r->done);
        return ES_CLOSED;
    }
    while (sem_wait(&r->done) != 0)
        ; /* EINTR */
    sem_destroy(&r->done);
    return r->status;
}

/* Fills and checks an append request (r zeroed before). */
static int prepare(es_store *s, es__req *r, const char *stream,
                   int64_t expected, const es_event_data *events, size_t n)
{
    int rc;
    if (s->rdonly)
        return ES_READONLY;
    if (expected < 0 && expected != ES_EXPECT_ANY &&
        expected != ES_EXPECT_NO_STREAM && expected != ES_EXPECT_STREAM_EXISTS)
        return ES_INVALID;
    r->stream = stream;
    r->expected = expected;
    r->events = events;
    r->n = n;
    if ((rc = validate(s, r)))
        return rc;
    r->stream_len = strlen(stream);
    return ES_OK;
}

int es_append_with(es_store *s, const char *stream, int64_t expected,
                   const es_event_data *events, size_t n, es_txn_fn fn,
                   void *arg, es_append_result *result)
{
    es__req r;
    int rc;
    if (!s)
        return ES_INVALID;
    memset(&r, 0, sizeof r);
    r.fn = fn;
    r.arg = arg;
    if ((rc = prepare(s, &r, stream, expected, events, n)))
        return rc;
    rc = submit(s, &r);
    if (result && (rc == ES_OK || rc == ES_WRONG_EXPECTED_VERSION)) {
        if (rc == ES_OK)
            *result = r.res;
        else
            result->actual_version = r.res.actual_version;
    }
    return rc;
}

int es_append_async(es_store *s, const char *stream, int64_t expected,
                    const es_event_data *events, size_t n, es_append_cb cb,
                    void *arg)
{
    int rc;
    if (!s || !cb)
        return ES_INVALID;
    es__req *r = calloc(1, sizeof *r);
    if (!r)
        return ES_NOMEM;
    r->cb = cb;
    r->cb_arg = arg;
    if ((rc = prepare(s, r, stream, expected, events, n))) {
        free(r);
        return rc;
    }
    pthread_mutex_lock(&s->mu);
    if ((rc = enqueue_unlock(s, r)) != ES_OK)
        free(r);
    return rc;
}

int es_append(es_store *s, const char *stream, int64_t expected,
              const es_event_data *events, size_t n, es_append_result *result)
{
    return es_append_with(s, stream, expected, events, n, NULL, NULL, result);
}

int es_write(es_store *s, es_txn_fn fn, void *arg)
{
    es__req r;
    if (!s || !fn)
        return ES_INVALID;
    if (s->rdonly)
        return ES_READONLY;
    memset(&r, 0, sizeof r);
    r.fn = fn;
    r.arg = arg;
    return submit(s, &r);
}

int es_write_inline(es_store *s, es_txn_fn fn, void *arg)
{
    if (!s || !fn)
        return ES_INVALID;
    if (s->rdonly)
        return ES_READONLY;
    for (;;) {
        MDB_txn *txn = NULL;
        pthread_rwlock_rdlock(&s->map_lock);
        int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
        if (rc) {
            pthread_rwlock_unlock(&s->map_lock);
            return es__status_from_mdb(rc);
        }
        es_txn t;
        memset(&t, 0, sizeof t);
        t.store = s;
        t.txn = txn;
        t.write = true;
        rc = fn(&t, NULL, arg);
        es__txn_close_cursors(&t);
        if (!rc && !t.map_full) {
            rc = mdb_txn_commit(txn);
            if (rc == MDB_MAP_FULL)
                t.map_full = true;
            rc = es__status_from_mdb(rc);
        } else {
            mdb_txn_abort(txn);
        }
        pthread_rwlock_unlock(&s->map_lock);
        if (!t.map_full)
            return rc;
        /* Undone: grow the map (no txn open here now) and run fn again. */
        if ((rc = es__grow_map(s)))
            return rc;
    }
}

/* ---- the writer ---------------------------------------------------------- */

/* A put failed: a full map or any engine error poisons the transaction. */
static int put_failed(batch *b, int rc)
{
    b->fatal = es__status_from_mdb(rc);
    return b->fatal;
}

/* Idempotent retry or conflict: every id already stored. */
static int check_retry(batch *b, es__req *r, const uint64_t *found,
                       bool exists, uint64_t cur)
{
    const es__dbs *dbs = &b->s->dbs;
    uint64_t v0 = 0;
    for (size_t i = 0; i < r->n; i++) {
        uint8_t key[8];
        MDB_val k = {8, key}, d;
        es_event ev;
        es__put_u64(key, found[i]);
        int rc = mdb_get(b->txn, dbs->events, &k, &d);
        if (rc == MDB_NOTFOUND)
            return ES_CORRUPT;
        if (rc)
            return put_failed(b, rc);
        if (es_record_decode(d.mv_data, d.mv_size, &ev))
            return ES_CORRUPT;
        bool same_stream = ev.stream_len == r->stream_len &&
                           memcmp(ev.stream, r->stream, r->stream_len) == 0;
        if (i == 0)
            v0 = ev.stream_version;
        if (!same_stream || ev.stream_version != v0 + i)
            return i == 0 && !same_stream ? ES_DUPLICATE_ID
                                          : ES_DUPLICATE_PARTIAL;
    }
    r->res.actual_version = exists ? cur : ES_NO_VERSION;
    bool fits = r->expected == ES_EXPECT_ANY ||
                r->expected == ES_EXPECT_STREAM_EXISTS ||
                (r->expected == ES_EXPECT_NO_STREAM && v0 == 0) ||
                (r->expected >= 0 && v0 == (uint64_t)r->expected + 1);
    if (!fits)
        return ES_WRONG_EXPECTED_VERSION;
    r->res.first_position = found[0];
    r->res.last_position = found[r->n - 1];
    r->res.stream_version = v0 + r->n - 1;
    r->res.idempotent = 1;
    return ES_OK;
}

static int write_events(batch *b, es__req *r, MDB_txn *txn, bool exists,
                        uint64_t cur)
{
    const es__dbs *dbs = &b->s->dbs;
    uint8_t ikey[ES_STREAM_NAME_MAX + 9], pkey[8], ver[8];
    uint64_t v = exists ? cur + 1 : 0;
    int rc;

    memcpy(ikey, r->stream, r->stream_len);
    ikey[r->stream_len] = 0;
    r->res.first_position = b->pos + 1;
    for (size_t i = 0; i < r->n; i++, v++) {
        const es_event_data *e = &r->events[i];
        uint64_t pos = b->pos + 1;
        size_t size = es__record_size(r->stream, e);
        MDB_val k = {8, pkey}, d = {size, NULL};
        es__put_u64(pkey, pos);
        /* Encode straight into the map page and hash it in place. */
        if ((rc = mdb_put(txn, dbs->events, &k, &d, MDB_APPEND | MDB_RESERVE)))
            return put_failed(b, rc);
        es__record_encode(d.mv_data, size, r->stream, e, pos, v, b->now,
                          b->s->hasher.keyed);
        uint8_t *hash = (uint8_t *)d.mv_data + size - ES_HASH_SIZE;
        if ((rc = es__hasher_hash(&b->s->hasher, b->hash, d.mv_data, size,
                                  hash))) {
            b->fatal = rc;
            return rc;
        }
        memcpy(b->hash, hash, ES_HASH_SIZE);
        b->pos = pos;
        MDB_val ik = {ES_ID_SIZE, (void *)e->id}, pd = {8, pkey};
        if ((rc = mdb_put(txn, dbs->event_ids, &ik, &pd, MDB_NOOVERWRITE)))
            return put_failed(b, rc);
        es__put_u64(ikey + r->stream_len + 1, v);
        MDB_val sk = {r->stream_len + 9, ikey};
        if ((rc = mdb_put(txn, dbs->stream_index, &sk, &pd, 0)))
            return put_failed(b, rc);
    }
    es__put_u64(ver, v - 1);
    MDB_val sk = {r->stream_len, (void *)r->stream}, sd = {8, ver};
    if ((rc = mdb_put(txn, dbs->streams, &sk, &sd, 0)))
        return put_failed(b, rc);
    r->res.last_position = b->pos;
    r->res.stream_version = v - 1;
    r->res.actual_version = exists ? cur : ES_NO_VERSION;
    r->res.idempotent = 0;
    return ES_OK;
}

static int append_events(batch *b, es__req *r, MDB_txn *txn)
{
    const es__dbs *dbs = &b->s->dbs;
    uint64_t *found = NULL, cur = 0;
    size_t nfound = 0;
    bool exists = false;
    int rc;

    MDB_val k = {r->stream_len, (void *)r->stream}, d;
    rc = mdb_get(txn, dbs->streams, &k, &d);
    if (rc == 0 && d.mv_size >= ES__STREAM_ROW) {
        exists = true;
        cur = es__get_u64(d.mv_data);
    } else if (rc != MDB_NOTFOUND) {
        return rc ? put_failed(b, rc) : ES_CORRUPT;
    }
    if (!(found = malloc(r->n * sizeof *found)))
        return ES_NOMEM;
    for (size_t i = 0; i < r->n; i++) {
        MDB_val ik = {ES_ID_SIZE, (void *)r->events[i].id}, pd;
        rc = mdb_get(txn, dbs->event_ids, &ik, &pd);
        if (rc == 0 && pd.mv_size == 8) {
            found[nfound++] = es__get_u64(pd.mv_data);
        } else if (rc != MDB_NOTFOUND) {
            rc = rc ? put_failed(b, rc) : ES_CORRUPT;
            goto out;
        } else if (nfound) {
            break;
        }
    }
    if (nfound) {
        rc = nfound < r->n ? ES_DUPLICATE_PARTIAL
                           : check_retry(b, r, found, exists, cur);
        goto out;
    }
    r->res.actual_version = exists ? cur : ES_NO_VERSION;
    bool ok = r->expected == ES_EXPECT_ANY ||
              (r->expected == ES_EXPECT_NO_STREAM && !exists) ||
              (r->expected == ES_EXPECT_STREAM_EXISTS && exists) ||
              (r->expected >= 0 && exists && cur == (uint64_t)r->expected);
    if (!ok) {
        rc = ES_WRONG_EXPECTED_VERSION;
        goto out;
    }
    rc = write_events(b, r, txn, exists, cur);
out:
    free(found);
    return rc;
}

/* Apply one request. Its own failure leaves the batch as it was; a failure of
 * the transaction itself sets b->fatal. */
static int apply(batch *b, es__req *r)
{
    MDB_txn *child = NULL, *txn = b->txn;
    uint64_t save_pos = b->pos;
    uint8_t save_hash[ES_HASH_SIZE];
    int rc = ES_OK;

    memset(&r->res, 0, sizeof r->res);
    if (r->fn && !b->s->writemap) {
        /* The callback may fail after writing: a nested txn undoes it. */
        if ((rc = mdb_txn_begin(b->s->env, b->txn, 0, &child)))
            return put_failed(b, rc);
        txn = child;
        memcpy(save_hash, b->hash, ES_HASH_SIZE);
    }
    if (r->events) {
        rc = append_events(b, r, txn);
        if (rc || b->fatal || r->res.idempotent)
            goto out;
    }
    if (r->fn) {
        es_txn t;
        memset(&t, 0, sizeof t);
        t.store = b->s;
        t.txn = txn;
        t.write = true;
        rc = r->fn(&t, r->events ? &r->res : NULL, r->arg);
        es__txn_close_cursors(&t);
        if (t.map_full)
            b->fatal = ES_MAP_FULL;
        if (rc || b->fatal || !child)
            goto out;
        child = NULL;
        if ((rc = mdb_txn_commit(txn)))
            rc = put_failed(b, rc);
    }
out:
    /* Without nested txns a failed request may have written part of itself:
     * only aborting the whole group undoes that. */
    if (rc && !b->fatal && b->s->writemap)
        b->redo = true;
    if (child) {
        mdb_txn_abort(child);
        b->pos = save_pos;
        memcpy(b->hash, save_hash, ES_HASH_SIZE);
    }
    return rc;
}

static int put_head(batch *b)
{
    uint8_t head[ES__HEAD_SIZE];
    es__put_u64(head, b->pos);
    memcpy(head + 8, b->hash, ES_HASH_SIZE);
    MDB_val k = {sizeof ES__HEAD_KEY - 1, (void *)ES__HEAD_KEY};
    MDB_val d = {sizeof head, head};
    int rc = mdb_put(b->txn, b->s->dbs.meta, &k, &d, 0);
    return rc ? put_failed(b, rc) : ES_OK;
}

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Run one group commit; retried from scratch after the map grew. */
static void run_batch(es_store *s, es__req *list)
{
    batch b;
    int rc;
    for (;;) {
        memset(&b, 0, sizeof b);
        b.s = s;
        b.pos = s->last_pos;
        memcpy(b.hash, s->last_hash, ES_HASH_SIZE);
        b.now = es__now_ns();
        /* Held shared while the txn is open, so that a growth (which takes
         * it exclusively) never runs under a write txn of another thread
         * (es_write_inline). */
        pthread_rwlock_rdlock(&s->map_lock);
        if ((rc = mdb_txn_begin(s->env, NULL, 0, &b.txn))) {
            pthread_rwlock_unlock(&s->map_lock);
            for (es__req *r = list; r; r = r->next)
                r->status = es__status_from_mdb(rc);
            return;
        }
        for (es__req *r = list; r; r = r->next)
            if (!r->dropped)
                r->status = NOT_APPLIED;
        for (es__req *r = list; r && !b.fatal; r = r->next) {
            if (r->dropped)
                continue;
            r->status = apply(&b, r);
            if (b.redo) {
                /* It keeps its answer; the others run again without it. */
                r->dropped = true;
                break;
            }
        }
        if (b.redo && !b.fatal) {
            mdb_txn_abort(b.txn);
            pthread_rwlock_unlock(&s->map_lock);
            continue;
        }
        if (!b.fatal && b.pos != s->last_pos)
            put_head(&b);
        int64_t t0 = mono_ns();
        if (!b.fatal && (rc = mdb_txn_commit(b.txn)))
            b.fatal = es__status_from_mdb(rc);
        else if (b.fatal)
            mdb_txn_abort(b.txn);
        pthread_rwlock_unlock(&s->map_lock);
        int64_t t1 = mono_ns();
        if (b.fatal == ES_MAP_FULL && es__grow_map(s) == ES_OK)
            continue;
        if (b.fatal) {
            /* A request that failed on its own keeps its answer: it did not
             * depend on the commit. */
            for (es__req *r = list; r; r = r->next)
                if (r->status == ES_OK || r->status == NOT_APPLIED)
                    r->status = b.fatal;
            return;
        }
        pthread_mutex_lock(&s->mu);
        s->commits++;
        s->commit_ns_total += (uint64_t)(t1 - t0);
        pthread_mutex_unlock(&s->mu);
        break;
    }
    if (b.pos != s->last_pos) {
        s->last_pos = b.pos;
        memcpy(s->last_hash, b.hash, ES_HASH_SIZE);
        pthread_mutex_lock(&s->notify_mu);
        s->committed_pos = b.pos;
        pthread_cond_broadcast(&s->notify_cv);
        pthread_mutex_unlock(&s->notify_mu);
    }
}

static void reader_check(es_store *s)
{
    int dead = 0;
    mdb_reader_check(s->env, &dead);
}

void *es__writer_main(void *arg)
{
    es_store *s = arg;
    uint64_t since_check = 0;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (!s->head && !s->closing) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += READER_CHECK_S;
            s->writer_idle = true;
            int w = pthread_cond_timedwait(&s->queue_cv, &s->mu, &ts);
            s->writer_idle = false;
            if (w != 0 && !s->head) {
                pthread_mutex_unlock(&s->mu);
                reader_check(s);
                pthread_mutex_lock(&s->mu);
            }
        }
        if (!s->head)
            break;
        /* Take a bounded group off the queue. */
        es__req *list = s->head, *last = list;
        size_t nreq = 1, bytes = list->bytes;
        while (last->next && nreq < BATCH_MAX_REQS &&
               bytes + last->next->bytes <= BATCH_MAX_BYTES) {
            last = last->next;
            bytes += last->bytes;
            nreq++;
        }
        s->head = last->next;
        if (!s->head)
            s->tail = NULL;
        last->next = NULL;
        s->queued -= (unsigned)nreq;
        pthread_cond_broadcast(&s->space_cv);
        pthread_mutex_unlock(&s->mu);

        run_batch(s, list);
        if (++since_check >= READER_CHECK_COMMITS) {
            since_check = 0;
            reader_check(s);
        }

        pthread_mutex_lock(&s->mu);
        if (nreq > s->batch_max)
            s->batch_max = nreq;
        for (es__req *r = list; r; r = r->next) {
            if (r->events && r->status == ES_OK) {
                s->appends_ok++;
                if (!r->res.idempotent)
                    s->events_appended += r->n;
            } else if (r->events) {
                s->appends_failed++;
            }
        }
        pthread_mutex_unlock(&s->mu);
        /* Outside the lock: a woken caller returns at once (and its request,
         * on its stack, goes away), so read next before posting. */
        for (es__req *r = list, *next; r; r = next) {
            next = r->next;
            if (r->cb) {
                r->cb(r->cb_arg, r->status, &r->res);
                free(r);
            } else {
                sem_post(&r->done);
            }
        }
        pthread_mutex_lock(&s->mu);
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}
