/* The projection database: the query service's own LMDB env (data/query)
 * opened through the event store library for its companions (caller keys
 * and checkpoints), plus the in-memory copy of the checkpoints that reads
 * with min_positions and event streams wait on. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "services/query/query.h"

struct qs_db {
    es_store *store;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t pos[QS_NSOURCES];
    uint64_t generation;
    const char *reset_why; /* why the env was dropped on open, or NULL */
    char *dir;             /* for the open marker (NULL with --sync) */
};

void qs_db_positions(es_txn *txn, uint64_t out[QS_NSOURCES])
{
    for (int i = 0; i < QS_NSOURCES; i++)
        if (es_checkpoint_get(txn, qs_source_name(i), &out[i]) != ES_OK)
            out[i] = 0;
}

/* The layout of the read models in the env. 2: each namespace in a
 * database of its own. An env of another layout (1: one shared database,
 * no marker) is dropped and projected again from the sources, as a rebuild
 * would, instead of being read as if it were empty. */
#define LAYOUT_KEY "q.layout"
/* 3: a task's first timeline entry is implied by its record. */
#define LAYOUT 3

static int put_layout(es_txn *txn, const es_append_result *ap, void *arg)
{
    (void)ap;
    (void)arg;
    return es_checkpoint_put(txn, LAYOUT_KEY, LAYOUT);
}

static int open_env(const char *dir, bool sync, bool bulk, es_store **out)
{
    es_options eo;
    es_options_init(&eo);
    /* Growing the map undoes and re-applies the batch being written (up to
     * thousands of events in a catch-up or rebuild) and blocks readers: start
     * with room for a few million events' read models. Only address space;
     * the file grows as pages are written. */
    eo.map_size = (size_t)1 << 30;
    /* Each read model in an LMDB database of its own: log-ordered indexes
     * (the feeds, the timelines) are then appended rather than searched. */
    eo.kv_dbs = qs_namespaces;
    /* Without fsync nothing here is a promise to anyone: write through the
     * map (no copy of every dirty page at commit), which suits the live
     * path's small commits. A bulk load (a rebuild: thousands of events a
     * commit into a new file) is faster with the pages written out by
     * pwrite: through the map, each new page of the file costs a fault that
     * reads ahead and zeroes the holes (10-15% less CPU, measured on a
     * 93,000-event log). */
    if (!sync)
        eo.flags |= ES_OPT_NOSYNC | (bulk ? 0 : ES_OPT_WRITEMAP);
    return es_open(dir, &eo, out);
}

/* 0: empty env, else the layout marker (1 when absent in a used env). */
static uint64_t layout_of(es_txn *txn)
{
    uint64_t v = 0, pos[QS_NSOURCES];
    if (es_checkpoint_get(txn, LAYOUT_KEY, &v) == ES_OK)
        return v;
    qs_db_positions(txn, pos);
    for (int i = 0; i < QS_NSOURCES; i++)
        if (pos[i])
            return 1;
    return 0;
}

int qs_db_remove_env(const char *dir)
{
    static const char *const files[] = {"data.mdb", "lock.mdb"};
    for (size_t i = 0; i < 2; i++) {
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s", dir, files[i]) >=
            (int)sizeof path)
            return ES_INVALID;
        if (unlink(path) && errno != ENOENT)
            return ES_IO;
    }
    return ES_OK;
}

/* Without fsync, and on a writable map, an operating-system crash or a
 * power loss can leave the env's pages written back in any order and the
 * env unreadable; a process crash cannot (the page cache keeps every
 * page). So while the env is open a marker file holds the machine's boot
 * id: found at open with another boot id, the machine went down with the
 * env open, and the read models are dropped and projected again. */
#define OPEN_MARKER "query-open"
#define BOOT_ID "/proc/sys/kernel/random/boot_id"

static void read_line(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    out[0] = '\0';
    if (!f)
        return;
    if (!fgets(out, (int)cap, f))
        out[0] = '\0';
    fclose(f);
    out[strcspn(out, "\n")] = '\0';
}

static int marker_path(const char *dir, char *out, size_t cap)
{
    return snprintf(out, cap, "%s/" OPEN_MARKER, dir) < (int)cap ? ES_OK
                                                                : ES_INVALID;
}

/* Whether the marker says the env was open when the machine went down. */
static bool opened_before_reboot(const char *dir)
{
    char path[4096], was[64], now[64];
    if (marker_path(dir, path, sizeof path) || access(path, F_OK))
        return false;
    read_line(path, was, sizeof was);
    read_line(BOOT_ID, now, sizeof now);
    return strcmp(was, now) != 0;
}

static int write_marker(const char *dir)
{
    char path[4096], id[64];
    if (marker_path(dir, path, sizeof path))
        return ES_INVALID;
    read_line(BOOT_ID, id, sizeof id);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return ES_IO;
    size_t n = strlen(id);
    id[n++] = '\n';
    bool ok = write(fd, id, n) == (ssize_t)n && fsync(fd) == 0;
    ok = close(fd) == 0 && ok;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        ok = fsync(dfd) == 0 && ok;
        close(dfd);
    }
    return ok ? ES_OK : ES_IO;
}

static int db_open(const char *dir, bool sync, bool bulk, qs_db **out)
{
    qs_db *db = calloc(1, sizeof *db);
    es_txn *txn = NULL;
    int rc;
    if (!db)
        return ES_NOMEM;
    if (!sync && opened_before_reboot(dir)) {
        db->reset_why = "read models open when the machine went down "
                        "(written without fsync)";
        if ((rc = qs_db_remove_env(dir)))
            goto fail;
    }
    for (int attempt = 0;; attempt++) {
        if ((rc = open_env(dir, sync, bulk, &db->store)))
            goto fail;
        if ((rc = es_txn_begin(db->store, &txn)))
            goto fail;
        uint64_t layout = layout_of(txn);
        qs_db_positions(txn, db->pos);
        es_txn_end(txn);
        if (layout == LAYOUT)
            break;
        if (layout == 0) {
            if ((rc = es_write(db->store, put_layout, NULL)))
                goto fail;
            break;
        }
        /* Another layout: start over (once). */
        es_close(db->store);
        db->store = NULL;
        db->reset_why = "read models of an earlier layout";
        if (attempt || (rc = qs_db_remove_env(dir)))
            goto fail;
    }
    if (!sync) {
        if (!(db->dir = strdup(dir))) {
            rc = ES_NOMEM;
            goto fail;
        }
        if ((rc = write_marker(dir)))
            goto fail;
    }
    pthread_mutex_init(&db->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&db->cv, &ca);
    pthread_condattr_destroy(&ca);
    *out = db;
    return ES_OK;
fail:
    es_close(db->store);
    free(db->dir);
    free(db);
    return rc ? rc : ES_CORRUPT;
}

int qs_db_open(const char *dir, bool sync, qs_db **out)
{
    return db_open(dir, sync, false, out);
}

int qs_db_open_bulk(const char *dir, bool sync, qs_db **out)
{
    return db_open(dir, sync, true, out);
}

const char *qs_db_reset_reason(const qs_db *db)
{
    return db->reset_why;
}

void qs_db_close(qs_db *db)
{
    if (!db)
        return;
    es_close(db->store);
    if (db->dir) {
        /* Closed cleanly: everything is in the page cache, whatever the
         * machine does next. */
        char path[4096];
        if (!marker_path(db->dir, path, sizeof path))
            unlink(path);
        free(db->dir);
    }
    pthread_cond_destroy(&db->cv);
    pthread_mutex_destroy(&db->mu);
    free(db);
}

es_store *qs_db_store(qs_db *db)
{
    return db->store;
}

void qs_db_positions_now(qs_db *db, uint64_t out[QS_NSOURCES])
{
    pthread_mutex_lock(&db->mu);
    memcpy(out, db->pos, sizeof db->pos);
    pthread_mutex_unlock(&db->mu);
}

void qs_db_advanced(qs_db *db, int source, uint64_t position)
{
    pthread_mutex_lock(&db->mu);
    if (position > db->pos[source])
        db->pos[source] = position;
    db->generation++;
    pthread_cond_broadcast(&db->cv);
    pthread_mutex_unlock(&db->mu);
}

uint64_t qs_db_generation(qs_db *db)
{
    pthread_mutex_lock(&db->mu);
    uint64_t g = db->generation;
    pthread_mutex_unlock(&db->mu);
    return g;
}

void qs_db_wake(qs_db *db)
{
    pthread_mutex_lock(&db->mu);
    pthread_cond_broadcast(&db->cv);
    pthread_mutex_unlock(&db->mu);
}

static void abs_deadline(int64_t deadline_ms, struct timespec *ts)
{
    ts->tv_sec = (time_t)(deadline_ms / 1000);
    ts->tv_nsec = (long)(deadline_ms % 1000) * 1000000;
}

void qs_db_wait_news(qs_db *db, uint64_t seen, int64_t timeout_ms)
{
    struct timespec ts;
    abs_deadline(qs_mono_ms() + timeout_ms, &ts);
    pthread_mutex_lock(&db->mu);
    if (db->generation == seen)
        pthread_cond_timedwait(&db->cv, &db->mu, &ts);
    pthread_mutex_unlock(&db->mu);
}

static bool reached(const qs_db *db, const uint64_t min[QS_NSOURCES])
{
    for (int i = 0; i < QS_NSOURCES; i++)
        if (db->pos[i] < min[i])
            return false;
    return true;
}

int qs_db_wait_positions(qs_db *db, const uint64_t min[QS_NSOURCES],
                         int64_t deadline_ms, const atomic_int *cancelled)
{
    int rc = ES_OK;
    pthread_mutex_lock(&db->mu);
    while (!reached(db, min)) {
        if (atomic_load(cancelled) || qs_mono_ms() >= deadline_ms) {
            rc = ES_TIMEOUT;
            break;
        }
        /* Bounded slices: a deadline far away or absent still re-checks
         * cancellation now and then. */
        int64_t until = qs_mono_ms() + 1000;
        if (deadline_ms < until)
            until = deadline_ms;
        struct timespec ts;
        abs_deadline(until, &ts);
        int w = pthread_cond_timedwait(&db->cv, &db->mu, &ts);
        if (w && w != ETIMEDOUT) {
            rc = ES_IO;
            break;
        }
    }
    pthread_mutex_unlock(&db->mu);
    return rc;
}
