/* eventstore.h: the public contract of agentmesh's event store, an append-only
 * event log in one LMDB environment with group-committed appends, stream and
 * global reads, catch-up subscriptions, a hash chain and atomic companions
 * (snapshots, checkpoints, caller keys). This header is the whole interface.
 *
 * Conventions (after lmdb.h):
 *  - Every call returns an int status: ES_OK (0) or one of the es_status codes.
 *    Outputs go in out-parameters and are written only on success (the one
 *    documented exception is es_append_result.actual_version).
 *  - Handles are opaque. Destroy/close functions accept NULL.
 *  - Strings passed in are borrowed for the duration of the call only.
 *  - Pointers handed out by a read (es_event fields, es_kv_get values) point
 *    into the memory map and stay valid until the es_txn they came from ends
 *    (es_txn_end, or the return of the callback that received the es_txn).
 *    Never write through them. Copy with es_event_copy to keep an event longer.
 *  - Thread-safety is stated per call. An es_store is shared by all threads.
 *
 * Positions: the log has a global, gap-free position; the first event is at
 * position 1, so "after position 0" means "from the start" and a checkpoint is
 * the last position already applied. Stream versions start at 0.
 */
#ifndef AGENTMESH_EVENTSTORE_H
#define AGENTMESH_EVENTSTORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Status codes --------------------------------------------------------
 * X(name, value, message, grpc_code). The gRPC code is the canonical number
 * from google/rpc/code.proto the services answer with; es_status_grpc_code is
 * the one place that mapping lives. */
#define ES_STATUS_TABLE(X)                                                       \
    X(OK, 0, "success", 0)                                                       \
    X(INVALID, 1, "invalid argument", 3)                                         \
    X(WRONG_EXPECTED_VERSION, 2, "wrong expected version", 10)                   \
    X(DUPLICATE_PARTIAL, 3, "event ids partially match an earlier append", 6)    \
    X(DUPLICATE_ID, 4, "event id already used at another place in the log", 6)   \
    X(NOT_FOUND, 5, "not found", 5)                                              \
    X(MAP_FULL, 6, "storage map full and cannot grow", 8)                        \
    X(NO_SPACE, 7, "no space left on device", 8)                                 \
    X(CORRUPT, 8, "store is corrupt or fails verification", 15)                  \
    X(IO, 9, "I/O or storage engine error", 13)                                  \
    X(NOMEM, 10, "out of memory", 8)                                             \
    X(CLOSED, 11, "store or subscription closed", 14)                            \
    X(TIMEOUT, 12, "timed out", 4)                                               \
    X(READONLY, 13, "store or transaction is read-only", 9)                      \
    X(LIMIT, 14, "resource limit reached", 8)                                    \
    X(BAD_KEY, 15, "hash chain key missing or wrong", 9)                         \
    X(BUSY, 16, "resource busy", 14)

typedef enum es_status {
#define ES_STATUS_ENUM(name, value, msg, grpc) ES_##name = value,
    ES_STATUS_TABLE(ES_STATUS_ENUM)
#undef ES_STATUS_ENUM
} es_status;

/* A static message for a status ("unknown status" for other values).
 * Thread-safe. */
const char *es_strerror(int status);
/* The symbolic name ("ES_WRONG_EXPECTED_VERSION"), static. Thread-safe. */
const char *es_errname(int status);
/* The canonical gRPC status code (google/rpc/code.proto number) the services
 * answer with for this status; 2 (UNKNOWN) for values outside the table.
 * Thread-safe. */
int es_status_grpc_code(int status);

/* ---- Limits -------------------------------------------------------------- */
#define ES_ID_SIZE 16
#define ES_HASH_SIZE 32
#define ES_STREAM_NAME_MAX 200       /* bytes; see es_stream_name_valid */
#define ES_TYPE_MAX 200              /* event type, same character set */
#define ES_META_MAX 1024             /* each metadata string */
#define ES_EVENT_SIZE_DEFAULT (1u << 20)
#define ES_EVENT_SIZE_HARD_MAX (8u << 20) /* NATS' largest recommended payload */
#define ES_EVENTS_PER_APPEND_DEFAULT 1000u
#define ES_EVENTS_PER_APPEND_HARD_MAX 10000u
#define ES_APPEND_SIZE_MAX ((size_t)64 << 20) /* all events of one append */
#define ES_PAGE_MAX 10000u           /* largest read page */
#define ES_NS_MAX 64                 /* caller key namespace name */
#define ES_KEY_MAX 400               /* caller key, bytes (LMDB's key limit less
                                        the namespace prefix) */
#define ES_VALUE_MAX ((size_t)64 << 20) /* caller value or snapshot */
#define ES_FILTER_TYPES_MAX 32

/* Expected version for es_append (EventStoreDB's values). Values >= 0 are an
 * exact stream version: the version of the stream's last event. */
#define ES_EXPECT_ANY ((int64_t)-2)
#define ES_EXPECT_NO_STREAM ((int64_t)-1)
#define ES_EXPECT_STREAM_EXISTS ((int64_t)-4)

/* "No version": a stream that does not exist (es_append_result.actual_version). */
#define ES_NO_VERSION UINT64_MAX
/* Read from the end: es_read_all backwards, es_read_stream backwards. */
#define ES_END UINT64_MAX

/* ---- Options ------------------------------------------------------------- */
enum {
    /* Do not fsync at commit (MDB_NOSYNC). RISK: a commit acknowledged to a
     * caller may be lost on an operating-system crash or power loss (never on
     * a process crash: the data is in the page cache). The store stays
     * consistent, only the newest commits can disappear. For tests and
     * benchmarks; never for a service's real data. */
    ES_OPT_NOSYNC = 1u << 0,
    /* Open read-only: no writer thread; appends and es_write return
     * ES_READONLY. Works while another process has the store open for
     * writing (tools: dump, verify, stats, backup). */
    ES_OPT_RDONLY = 1u << 1,
    /* Write through a writable memory map (MDB_WRITEMAP): a commit does not
     * copy its dirty pages and a write does not search them. LMDB cannot
     * nest transactions on such a map, so an es_write callback runs in the
     * group commit's transaction itself: a request that fails after it may
     * have written makes the writer abort the group and run the others
     * again without it (callbacks must already tolerate a re-run; see
     * es_write). The data file is as large as the map from the start
     * (sparse). RISK: a stray write through a pointer into the map
     * corrupts the store, so only for derived data that can be rebuilt
     * (read models), never for a log. */
    ES_OPT_WRITEMAP = 1u << 2,
};

/* Most namespaces es_options.kv_dbs may list. */
#define ES_KV_DBS_MAX 32

/* Plain data. Fill with es_options_init, then change what you need. */
typedef struct es_options {
    size_t map_size;             /* initial map size, bytes (default 64 MiB) */
    size_t map_size_max;         /* growth limit (default 64 GiB); set it equal
                                    to map_size to disable growth */
    unsigned max_readers;        /* LMDB reader slots (default 512): each open
                                    read es_txn and each active subscription
                                    read holds one */
    size_t max_event_size;       /* encoded size of one event (default 1 MiB,
                                    at most ES_EVENT_SIZE_HARD_MAX) */
    unsigned max_events_per_append; /* default 1000, at most 10000 */
    unsigned queue_max;          /* pending appends before callers wait
                                    (default 4096) */
    unsigned max_subscriptions;  /* default 1024 */
    unsigned flags;              /* ES_OPT_* */
    const void *chain_key;       /* HMAC-SHA256 key for the hash chain, or NULL
                                    for plain SHA-256; at most 4096 bytes.
                                    Borrowed during es_open (copied). A new
                                    store given a key is keyed for good. */
    size_t chain_key_len;
    /* Caller-key namespaces kept each in an LMDB database of its own
     * ("kv:<ns>") instead of the shared one: keys are stored without the
     * namespace, and a put whose key sorts after every key of its namespace
     * is appended (MDB_APPEND: no search, pages filled rather than split in
     * half), which is what a log-ordered index or a bulk load writes.
     * NULL-terminated, at most ES_KV_DBS_MAX names, copied by es_open.
     * The es_kv_* calls match a namespace by address before they match it
     * by name: while the store is open, a listed pointer must keep naming
     * the same string (static names, as the query service uses, do). A
     * store must be opened with the same list each time: keys written
     * under a namespace while it was not listed are not seen while it is,
     * and the other way round. NULL: every namespace shares one database. */
    const char *const *kv_dbs;
} es_options;

/* Fill *opts with the defaults. Thread-safe. */
void es_options_init(es_options *opts);

/* ---- Events -------------------------------------------------------------- */

/* Metadata carried by every event. NULL means empty. */
typedef struct es_metadata {
    const char *correlation_id;
    const char *causation_id;
    const char *traceparent;
    const char *actor;
} es_metadata;

/* An event to append (plain data, borrowed during the call). */
typedef struct es_event_data {
    uint8_t id[ES_ID_SIZE];      /* caller-chosen unique id (idempotency) */
    const char *type;            /* e.g. "agentmesh.v1.TaskCompleted" */
    const char *content_type;    /* e.g. "application/x-protobuf"; NULL is
                                    stored as empty (no default is implied) */
    const void *data;            /* may be NULL when data_len is 0 */
    size_t data_len;
    es_metadata meta;
} es_event_data;

/* A stored event as read back. Every string is NUL-terminated and its length
 * excludes the NUL. From a read: all pointers point into the map and are valid
 * until the es_txn ends. From es_event_copy / es_sub_next: one allocation owned
 * by the caller, freed with es_event_free. */
typedef struct es_event {
    uint8_t id[ES_ID_SIZE];
    uint64_t position;           /* global, from 1 */
    uint64_t stream_version;     /* from 0 */
    int64_t time_unix_nano;      /* commit time */
    const char *stream;
    size_t stream_len;
    const char *type;
    size_t type_len;
    const char *content_type;
    size_t content_type_len;
    const char *correlation_id;
    size_t correlation_id_len;
    const char *causation_id;
    size_t causation_id_len;
    const char *traceparent;
    size_t traceparent_len;
    const char *actor;
    size_t actor_len;
    const void *data;
    size_t data_len;
    uint8_t hash[ES_HASH_SIZE];  /* chain hash of this record */
    int keyed;                   /* 1 if the hash is HMAC-SHA256 */
} es_event;

/* Copy an event (e.g. from a read) into one allocation owned by the caller.
 * Errors: ES_NOMEM. Thread-safe. */
int es_event_copy(const es_event *ev, es_event **out);
/* Free an event from es_event_copy or es_sub_next. NULL is a no-op. */
void es_event_free(es_event *ev);

/* Stream names: 1..ES_STREAM_NAME_MAX bytes of [A-Za-z0-9] and "-_.:@/",
 * not starting with '$' (reserved). Returns 1 if valid. Thread-safe. */
int es_stream_name_valid(const char *name);

/* The canonical text of an event id: lower-case UUID form
 * (8-4-4-4-12 hex digits); out holds 37 bytes. Thread-safe. */
void es_id_format(const uint8_t id[ES_ID_SIZE], char out[37]);

/* ---- Record codec (exposed for tools and the fuzz driver) ---------------- */

/* Decode one encoded record (the value stored under its position) into *out
 * without copying: out's pointers point into buf. Every length is checked
 * against len before use. Errors: ES_CORRUPT (malformed, truncated, trailing
 * bytes, unknown format version), ES_INVALID (NULL arguments). Thread-safe. */
int es_record_decode(const void *buf, size_t len, es_event *out);

/* ---- Store ---------------------------------------------------------------- */
typedef struct es_store es_store;

/* Open (creating if needed) the store in directory `path` (created with its parents if
 * missing). opts may be NULL for the defaults. Reclaims stale reader slots.
 * On *out the caller owns the store; close with es_close.
 * Errors: ES_INVALID (bad options or path), ES_NOT_FOUND (ES_OPT_RDONLY and
 * no store there), ES_BAD_KEY (the chain is keyed and opts has no key or
 * another key — a read-only open without a key is allowed; or a key is given
 * for a store whose chain is not keyed), ES_CORRUPT (not an event store),
 * ES_IO, ES_NOMEM, ES_MAP_FULL.
 * Thread-safe; one open per path per process (an LMDB rule). */
int es_open(const char *path, const es_options *opts, es_store **out);

/* Stop the writer after committing everything queued, wake all subscription
 * waiters (they get ES_CLOSED), and free the store. Every es_txn must have
 * ended and every es_sub been destroyed first; appends in flight on other
 * threads are answered before close returns. NULL is a no-op. */
void es_close(es_store *store);

/* Plain data. */
typedef struct es_stats {
    uint64_t last_position;      /* 0 when empty */
    uint64_t events;
    uint64_t streams;
    uint64_t map_size;           /* current map size, bytes */
    uint64_t map_size_max;
    uint64_t map_used;           /* bytes of the map in use */
    unsigned readers_used;       /* live reader slots (this call's included) */
    unsigned readers_max;
    /* Since open, this process: */
    uint64_t appends_ok;
    uint64_t appends_failed;
    uint64_t events_appended;
    uint64_t commits;            /* write transactions (one flush each) */
    uint64_t commit_ns_total;    /* time in mdb_txn_commit, i.e. the flush */
    uint64_t batch_max;          /* most requests in one commit */
    uint64_t map_growths;
    unsigned subscriptions;
    int keyed;                   /* chain is HMAC-keyed */
} es_stats;

/* Fill *out. Errors: ES_IO. Thread-safe. */
int es_stats_get(es_store *store, es_stats *out);

/* Hot, compacting copy of the whole store into directory `dest_dir` (created
 * if missing, must not hold a store) while appends go on (mdb_env_copy2 with
 * MDB_CP_COMPACT). The copy is one long read transaction: a map growth waits
 * for it (see es_txn_begin). Errors: ES_BUSY (dest holds a store),
 * ES_INVALID, ES_IO, ES_NO_SPACE. Thread-safe. */
int es_backup(es_store *store, const char *dest_dir);

/* Restore a backup directory into `dest_dir`: opens the backup read-only,
 * verifies it (hash chain with opts' key, indexes), then writes a compacted
 * copy. dest_dir must not hold a store unless `force` is set (then its
 * data.mdb is replaced; no process may have it open). opts may be NULL.
 * Errors: ES_CORRUPT (the backup fails verification), ES_BAD_KEY, ES_BUSY
 * (dest holds a store and !force), ES_INVALID, ES_IO. */
int es_restore(const char *backup_dir, const char *dest_dir,
               const es_options *opts, int force);

/* ---- Transactions (read handles and write-callback handles) -------------- */
typedef struct es_txn es_txn;

/* Begin a read snapshot. Everything read through it is a consistent view as
 * of this call and stays valid until es_txn_end. Holds one reader slot; keep it
 * short: a map growth waits for open read transactions, and an open one on
 * the calling thread while it appends can make that append fail with
 * ES_MAP_FULL instead of growing. Usable from one thread at a time, any thread.
 * Errors: ES_LIMIT (no reader slot), ES_CLOSED, ES_IO, ES_NOMEM. */
int es_txn_begin(es_store *store, es_txn **out);
/* End a read transaction from es_txn_begin; its pointers become invalid.
 * NULL is a no-op. Never call it on a callback's es_txn. */
void es_txn_end(es_txn *txn);

/* The version of the stream's last event. Errors: ES_NOT_FOUND (no stream),
 * ES_INVALID, ES_IO. */
int es_stream_version(es_txn *txn, const char *stream, uint64_t *version);
/* The position of the event with this id (in any stream): what an append
 * of an event with the id would find. Errors: ES_NOT_FOUND, ES_INVALID,
 * ES_CORRUPT, ES_IO. */
int es_event_position(es_txn *txn, const uint8_t id[ES_ID_SIZE],
                      uint64_t *position);

/* ---- Append -------------------------------------------------------------- */

typedef struct es_append_result {
    uint64_t first_position;     /* position of the first event of the batch */
    uint64_t last_position;
    uint64_t stream_version;     /* version of the batch's last event */
    /* Written on ES_OK and on ES_WRONG_EXPECTED_VERSION: the stream's version
     * before this append, or ES_NO_VERSION if the stream does not exist. */
    uint64_t actual_version;
    int idempotent;              /* 1: an exact retry, answered with the
                                    original positions; nothing written */
} es_append_result;

/* Called on the writer thread inside the write transaction. `appended` is the
 * result of the append it accompanies (NULL for es_write). Return ES_OK to
 * keep its writes and the append, any other value to undo both: that value is
 * returned to the caller of es_append_with/es_write and nothing of that
 * request is written (other requests in the same group commit are not
 * affected). The callback may read and write through txn (es_kv_*,
 * es_snapshot_*, es_checkpoint_*, es_read_*) and must not call any other es_
 * function, block, or keep txn or its pointers after returning. It may run
 * more than once for one request: when the map must grow, the whole group is
 * undone and applied again, and only the last run's writes commit — so keep
 * its effects inside txn. */
typedef int (*es_txn_fn)(es_txn *txn, const es_append_result *appended,
                         void *arg);

/* Append n events to `stream` atomically, iff `expected` holds
 * (ES_EXPECT_ANY, ES_EXPECT_NO_STREAM, ES_EXPECT_STREAM_EXISTS, or the exact
 * version of the stream's last event). Blocks until the group commit holding
 * it is durable (flushed unless ES_OPT_NOSYNC), then fills *result.
 *
 * Idempotence (EventStoreDB's rules): if every event id of the batch is
 * already stored, in this stream, as consecutive events in the same order, and
 * `expected` is consistent with where they are (exact: the first is at
 * expected+1; NO_STREAM: the first is version 0; ANY/STREAM_EXISTS: anywhere),
 * the call succeeds with the original positions and result->idempotent = 1.
 *
 * Errors:
 *  ES_WRONG_EXPECTED_VERSION  nothing written; result->actual_version set.
 *  ES_DUPLICATE_PARTIAL  some ids of the batch are stored, others not, or the
 *      stored ones are not this batch in this order (nothing written).
 *  ES_DUPLICATE_ID  all ids are stored but elsewhere (another stream or not
 *      consecutive): a different append reused them (nothing written).
 *  ES_INVALID  bad stream name or type, n == 0 or above the per-append limit,
 *      an event above max_event_size, all events above ES_APPEND_SIZE_MAX,
 *      a metadata string above ES_META_MAX, the same id twice in the batch.
 *  ES_MAP_FULL  the map is full and may not (or cannot now) grow;
 *  ES_NO_SPACE  the disk is full. Nothing committed is lost in either case.
 *  ES_READONLY, ES_CLOSED, ES_IO, ES_NOMEM.
 * result may be NULL. Thread-safe: call from any number of threads. */
int es_append(es_store *store, const char *stream, int64_t expected,
              const es_event_data *events, size_t n, es_append_result *result);

/* es_append, then fn(txn, result, arg) in the same write transaction: the
 * caller's writes commit atomically with the events, or neither does. fn is
 * not called if the append itself fails or is an idempotent retry. Errors: those of
 * es_append, or fn's return value. Thread-safe. */
int es_append_with(es_store *store, const char *stream, int64_t expected,
                   const es_event_data *events, size_t n, es_txn_fn fn,
                   void *arg, es_append_result *result);

/* The end of an es_append_async: status as es_append would return it, and
 * res (on ES_OK; actual_version also on ES_WRONG_EXPECTED_VERSION). */
typedef void (*es_append_cb)(void *arg, int status, const es_append_result *res);

/* es_append without waiting: queues the append and returns. cb(arg, ...) runs
 * exactly once, on the store's writer thread, after the group commit that
 * holds the append (or that failed it); until then stream and events must
 * stay valid. cb must not wait for anything that waits for the writer (an
 * append, es_write, es_close). The store's queue bound (queue_max) does not
 * apply: the caller bounds how many it has in flight. Errors, returned at
 * once and without calling cb: ES_INVALID (as es_append), ES_READONLY,
 * ES_CLOSED, ES_NOMEM. Thread-safe; never blocks on the writer. */
int es_append_async(es_store *store, const char *stream, int64_t expected,
                    const es_event_data *events, size_t n, es_append_cb cb,
                    void *arg);

/* Run fn(txn, NULL, arg) in a write transaction of its own (group-committed
 * with concurrent appends) and wait until it is durable. Errors: fn's return
 * value, ES_MAP_FULL, ES_NO_SPACE, ES_READONLY, ES_CLOSED, ES_IO. Thread-safe. */
int es_write(es_store *store, es_txn_fn fn, void *arg);

/* es_write on the calling thread, in a write transaction of its own (not
 * group-committed; LMDB runs one write at a time, so it waits while another
 * is open). For a store whose writes come one at a time from one or two
 * threads (a projection), where handing each write to the writer thread and
 * waiting to be woken costs more than the commit. fn may run again after a
 * map growth, as with es_write; it must not append. Errors: fn's return
 * value, ES_MAP_FULL, ES_NO_SPACE, ES_READONLY, ES_IO. Thread-safe. */
int es_write_inline(es_store *store, es_txn_fn fn, void *arg);

/* ---- Reads ---------------------------------------------------------------- */

typedef enum es_direction { ES_FORWARD = 0, ES_BACKWARD = 1 } es_direction;

/* Filter for es_read_all and subscriptions (plain data, borrowed). */
typedef struct es_filter {
    const char *stream_prefix;   /* NULL or "" = all streams */
    const char *const *types;    /* exact event types; n_types == 0 = all */
    size_t n_types;              /* at most ES_FILTER_TYPES_MAX */
    /* Stop after examining this many events even if the page is not full
     * (0 = no bound), so a selective filter over a long log answers in bounded
     * time; the page's `next` says where to continue. */
    size_t max_scan;
} es_filter;

/* What a page read returned (plain data). */
typedef struct es_page {
    size_t count;                /* events written to the caller's array */
    /* Where the next page starts (inclusive: pass it as from_*): a version
     * for es_read_stream, a position for es_read_all. */
    uint64_t next;
    /* 1 when the page holds the last event in its direction, or is empty
     * after it: there is nothing more to read right now. */
    int end_of_stream;
} es_page;

/* Read up to `limit` (1..ES_PAGE_MAX) events of `stream` starting at version
 * from_version (inclusive; ES_END with ES_BACKWARD = from the last) into
 * events[0..limit). Zero-copy: the events' pointers are valid until txn ends.
 * Errors: ES_NOT_FOUND (no such stream), ES_INVALID, ES_CORRUPT, ES_IO. */
int es_read_stream(es_txn *txn, const char *stream, uint64_t from_version,
                   es_direction dir, size_t limit, es_event *events,
                   es_page *page);

/* Read up to `limit` events of the whole log matching `filter` (NULL = all)
 * from position from_position (inclusive; 0 or 1 forwards = the start; ES_END
 * backwards = the last). Zero-copy as es_read_stream.
 * Errors: ES_INVALID, ES_CORRUPT, ES_IO. */
int es_read_all(es_txn *txn, uint64_t from_position, es_direction dir,
                const es_filter *filter, size_t limit, es_event *events,
                es_page *page);

/* ---- Subscriptions -------------------------------------------------------- */
typedef struct es_sub es_sub;

/* Subscribe to every event after position `after` (0 = from the start)
 * matching `filter` (NULL = all; copied): catch-up from the log, then live,
 * with no gap and no duplicate at the switch-over, since a subscription only
 * ever reads the log in position order. Each subscription reads at its own
 * pace: a slow one never blocks appends and buffers at most a bounded page.
 * On *out the caller owns the subscription (es_sub_destroy).
 * Errors: ES_LIMIT (max_subscriptions), ES_INVALID, ES_CLOSED, ES_NOMEM.
 * Thread-safe. */
int es_sub_open(es_store *store, uint64_t after, const es_filter *filter,
                es_sub **out);

/* Next event, waiting up to timeout_ms (< 0: no limit; 0: do not wait) for a
 * commit to bring one; woken by commits, never polling. *out is owned by the
 * caller (es_event_free). Errors: ES_TIMEOUT, ES_CLOSED (es_sub_cancel or
 * es_close), ES_CORRUPT, ES_IO, ES_NOMEM, ES_LIMIT (no reader slot).
 * One thread at a time per subscription. */
int es_sub_next(es_sub *sub, int timeout_ms, es_event **out);

/* The position of the last event returned by es_sub_next (or `after`).
 * Thread-safe with respect to es_sub_cancel only. */
uint64_t es_sub_position(const es_sub *sub);

/* Make a waiting and every later es_sub_next return ES_CLOSED. Thread-safe:
 * call it from any thread, e.g. when a gRPC stream is cancelled. */
void es_sub_cancel(es_sub *sub);

/* Free the subscription. No es_sub_next may be running. NULL is a no-op. */
void es_sub_destroy(es_sub *sub);

/* ---- Companions: caller keys, snapshots, checkpoints --------------------- */

/* Caller keys live in namespaces (1..ES_NS_MAX bytes, no NUL; by convention
 * the owner's name, e.g. "query.tasks"). Writes need a write txn (a callback's
 * txn); reads work in any txn.
 * es_kv_put errors: ES_READONLY (read txn), ES_INVALID (bad namespace, key of
 * 0 or above ES_KEY_MAX bytes), ES_MAP_FULL, ES_IO. */
int es_kv_put(es_txn *txn, const char *ns, const void *key, size_t key_len,
              const void *val, size_t val_len);
/* *val points into the map, valid until txn ends (or, in a write txn, until
 * the next write through txn). Errors: ES_NOT_FOUND, ES_INVALID, ES_IO. */
int es_kv_get(es_txn *txn, const char *ns, const void *key, size_t key_len,
              const void **val, size_t *val_len);
/* Errors: ES_NOT_FOUND, ES_READONLY, ES_INVALID, ES_IO. */
int es_kv_del(es_txn *txn, const char *ns, const void *key, size_t key_len);

/* Visit the keys of `ns` from `from_key` (inclusive; NULL = first) in
 * ascending byte order. fn returns 0 to go on, non-zero to stop (es_kv_scan
 * then returns ES_OK). Pointers are valid during the call only; fn must not
 * write through txn. Errors: ES_INVALID, ES_IO. */
typedef int (*es_kv_visit_fn)(void *arg, const void *key, size_t key_len,
                              const void *val, size_t val_len);
int es_kv_scan(es_txn *txn, const char *ns, const void *from_key,
               size_t from_len, es_kv_visit_fn fn, void *arg);

/* The latest snapshot of a stream (one per stream; a newer version replaces
 * it). put errors: ES_READONLY, ES_INVALID, ES_MAP_FULL, ES_IO.
 * get: *data is valid as es_kv_get's; errors ES_NOT_FOUND, ES_INVALID, ES_IO. */
int es_snapshot_put(es_txn *txn, const char *stream, uint64_t version,
                    const void *data, size_t len);
int es_snapshot_get(es_txn *txn, const char *stream, uint64_t *version,
                    const void **data, size_t *len);

/* Named checkpoints (a position per name, 1..ES_NS_MAX bytes), e.g. a
 * projection's or the outbox's last applied position. put errors:
 * ES_READONLY, ES_INVALID, ES_MAP_FULL, ES_IO; get: ES_NOT_FOUND, ES_INVALID. */
int es_checkpoint_put(es_txn *txn, const char *name, uint64_t position);
int es_checkpoint_get(es_txn *txn, const char *name, uint64_t *position);

/* ---- Verification -------------------------------------------------------- */

/* Plain data. */
typedef struct es_verify_report {
    uint64_t events_checked;
    uint64_t streams_checked;
    uint64_t bad_position;       /* first failing position; 0 if not tied to
                                    one event (e.g. a stream index entry) */
    char message[256];           /* what failed, NUL-terminated */
} es_verify_report;

/* Check the whole store in one read snapshot: every record decodes, positions
 * are 1..N without a gap, each record's hash chains to its predecessor (keyed
 * with the store's key when the chain is keyed), the head record matches the
 * last event, and the stream, stream-index and event-id indexes agree with the
 * log exactly. Returns ES_OK when all holds, ES_CORRUPT with *report saying
 * where otherwise (report is written in both cases), ES_BAD_KEY if the chain is
 * keyed and the store was opened without its key, ES_LIMIT, ES_IO, ES_NOMEM.
 * Thread-safe; runs alongside appends. */
int es_verify(es_store *store, es_verify_report *report);

#ifdef __cplusplus
}
#endif
#endif
