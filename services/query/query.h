/* The query service's internal interface: the normalised event every feed
 * delivers (qs_event), the projection database (qs_db: the LMDB env under
 * data/query holding the read models, per-source checkpoints and the waits
 * for min_positions), the read models' apply and read functions, page
 * tokens, the catch-up client, the NATS consumer, the projector and rebuild.
 *
 * Status: functions return 0 or an es_status (eventstore.h) unless stated.
 * Thread-safety: qs_db and qs_projector functions are thread-safe; read
 * model functions take an es_txn and run on the thread that owns it. */
#ifndef AGENTMESH_QUERY_H
#define AGENTMESH_QUERY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <protobuf-c/protobuf-c.h>

#include "agentmesh/v1/agents.pb-c.h"
#include "agentmesh/v1/common.pb-c.h"
#include "agentmesh/v1/memory.pb-c.h"
#include "agentmesh/v1/query.pb-c.h"
#include "eventstore/eventstore.h"

/* ---- Sources ------------------------------------------------------------- */

enum { QS_AGENTS = 0, QS_MEMORY = 1, QS_NSOURCES = 2 };

/* "agents" / "memory" (static), NULL for other values. */
const char *qs_source_name(int source);
/* The source index of a name (n bytes), or -1. */
int qs_source_parse(const char *name, size_t n);

/* ---- Arenas -----------------------------------------------------------------
 * Bump allocation released all at once (a catch-up page and its events).
 * Not thread-safe: one thread allocates; another may free afterwards. */
typedef struct qs_arena qs_arena;
/* NULL when out of memory. */
qs_arena *qs_arena_new(void);
/* Aligned for any type; NULL when out of memory. */
void *qs_arena_alloc(qs_arena *a, size_t size);
/* Moves b's memory into a and frees b (NULL b: no-op). */
void qs_arena_join(qs_arena *a, qs_arena *b);
/* Frees everything allocated from a, and a (NULL: no-op). */
void qs_arena_free(qs_arena *a);
/* A protobuf-c allocator over a (free is a no-op). */
ProtobufCAllocator qs_arena_allocator(qs_arena *a);
/* Freed arenas' chunks are kept for reuse (up to 32 MiB, process-wide);
 * this releases them (at shutdown, after a rebuild). Thread-safe. */
void qs_arena_cache_clear(void);

/* ---- Events ----------------------------------------------------------------
 * One event as the read models see it, whichever path brought it: the
 * payload decoded (MemoryWritten.sealed_value cleared) and packed again, so
 * that NATS (proto3 JSON) and the EventStore API (protobuf bytes) give the
 * same bytes. Correlation, causation and actor are not on NATS, so no read
 * model keeps them; the traceparent is kept. */
typedef struct qs_event {
    int source;
    uint64_t position;
    uint64_t stream_version;
    int64_t time_unix_nano;
    char event_id[40];
    char *stream;
    char *type;
    char *traceparent;          /* "" when absent */
    ProtobufCMessage *payload;  /* NULL for a type that is not an API message */
    uint8_t *data;              /* packed payload (NULL when data_len is 0) */
    size_t data_len;
    /* The feed's packed Event (qs_feed_pack), made where the event is
     * decoded rather than in the single write transaction; NULL when not
     * made yet (qs_feed_apply packs it then). */
    uint8_t *feed;
    size_t feed_len;
    /* The read-model record the event makes, encoded where the event is
     * decoded (qs_tasks_prepare, qs_memory_prepare): a task stream's
     * first event makes the task's record, a MemoryWritten its entry;
     * NULL otherwise, or when not made yet (the apply makes it then). */
    uint8_t *rec;
    size_t rec_len;
    bool inline_strings; /* stream, type, traceparent share ev's block */
    bool in_arena;       /* everything of it is in an arena: freeing the
                            event is the arena's job */
} qs_event;

/* Frees an event (NULL is a no-op). */
void qs_event_free(qs_event *ev);
/* From an EventStore API event (borrowed). *out is owned by the caller,
 * or, when ar is not NULL, allocated from ar (then qs_event_free does
 * nothing and the event lives as long as ar). Errors: ES_NOMEM. */
int qs_event_from_proto(int source, const Agentmesh__V1__Event *e,
                        qs_arena *ar, qs_event **out);
/* From an event of a source's log read in place (es_read_all; borrowed).
 * Gives the very event qs_event_from_proto gives for the same record
 * served through the EventStore API. Errors: ES_NOMEM, ES_INVALID. */
int qs_event_from_es(int source, const es_event *e, qs_arena *ar,
                     qs_event **out);
/* From a CloudEvents JSON body as the outbox publishes it (borrowed).
 * Errors: ES_NOMEM, ES_INVALID (not an agentmesh event; why says). */
int qs_event_from_cloudevent(const char *json, size_t len, qs_event **out,
                             char *why, size_t why_len);

/* ---- Byte helpers ----------------------------------------------------------- */
/* Written out so the compiler makes each one load or store and a byte
 * swap: the writer calls them a dozen times an event. */
static inline void qs_be64(uint8_t out[8], uint64_t v)
{
    out[0] = (uint8_t)(v >> 56);
    out[1] = (uint8_t)(v >> 48);
    out[2] = (uint8_t)(v >> 40);
    out[3] = (uint8_t)(v >> 32);
    out[4] = (uint8_t)(v >> 24);
    out[5] = (uint8_t)(v >> 16);
    out[6] = (uint8_t)(v >> 8);
    out[7] = (uint8_t)v;
}

static inline uint64_t qs_get_be64(const uint8_t in[8])
{
    return (uint64_t)in[0] << 56 | (uint64_t)in[1] << 48 |
           (uint64_t)in[2] << 40 | (uint64_t)in[3] << 32 |
           (uint64_t)in[4] << 24 | (uint64_t)in[5] << 16 |
           (uint64_t)in[6] << 8 | in[7];
}
/* Packs a message into a new malloc'd buffer (*out, caller frees); ES_NOMEM. */
int qs_pack(const ProtobufCMessage *m, uint8_t **out, size_t *len);
/* The same into ar's memory (ar NULL: malloc). */
int qs_pack_in(qs_arena *ar, const ProtobufCMessage *m, uint8_t **out,
               size_t *len);
/* A malloc'd NUL-terminated copy of n bytes of s (NULL s = ""), or NULL. */
char *qs_strndup(const char *s, size_t n);
int64_t qs_mono_ms(void);
/* Frees a message's string field unless it is protobuf-c's static "". */
void qs_free_str(char *s);

/* ---- Projection database ---------------------------------------------------- */
typedef struct qs_db qs_db;

/* Opens (creating) the env in dir. `sync`: fsync each commit (off by
 * default: the read models are rebuilt from the sources, and a commit lost
 * on power loss is re-applied from the checkpoint). *out owned by the
 * caller (qs_db_close). */
int qs_db_open(const char *dir, bool sync, qs_db **out);
/* The same, for a bulk load (a rebuild into an empty env): the env is not
 * written through a writable map; its contents are the same. */
int qs_db_open_bulk(const char *dir, bool sync, qs_db **out);
/* qs_db_open removes the env, to be projected again from the sources, when
 * it holds read models of an older layout (each read model has an LMDB
 * database of its own since layout 2, recorded in the env), or when,
 * opened without sync, it was still open when the machine went down (a
 * marker file with the boot id, removed by qs_db_close). This says why,
 * or NULL when it kept the env. */
const char *qs_db_reset_reason(const qs_db *db);
/* Removes the env's files in dir (missing ones are fine). */
int qs_db_remove_env(const char *dir);
void qs_db_close(qs_db *db);
/* Borrowed for the db's life. */
es_store *qs_db_store(qs_db *db);

/* The checkpoints (last applied position per source) as of txn. */
void qs_db_positions(es_txn *txn, uint64_t out[QS_NSOURCES]);
/* The in-memory copy of the checkpoints, updated after each commit. */
void qs_db_positions_now(qs_db *db, uint64_t out[QS_NSOURCES]);
/* Called after a commit that advanced `source` to `position`: wakes waits. */
void qs_db_advanced(qs_db *db, int source, uint64_t position);
/* A counter bumped by every commit (for streams waiting for news). */
uint64_t qs_db_generation(qs_db *db);
/* Waits until the generation differs from `seen` or `timeout_ms` passes, or
 * qs_db_wake is called. */
void qs_db_wait_news(qs_db *db, uint64_t seen, int64_t timeout_ms);
/* Waits until every source has reached min[i], or the deadline (monotonic
 * ms, INT64_MAX = none) passes, or *cancelled turns true. Returns 0 when
 * reached, ES_TIMEOUT otherwise. */
int qs_db_wait_positions(qs_db *db, const uint64_t min[QS_NSOURCES],
                         int64_t deadline_ms, const atomic_int *cancelled);
/* Wakes every waiter (cancellation, shutdown). */
void qs_db_wake(qs_db *db);

/* ---- Apply ------------------------------------------------------------------ */

typedef struct qs_apply_result {
    size_t applied;      /* events applied in this call */
    size_t duplicates;   /* position <= checkpoint, dropped */
    uint64_t checkpoint; /* the source's checkpoint after the call */
    bool gap;            /* stopped at an event after checkpoint + 1 */
} qs_apply_result;

/* Applies evs[0..n) (one source, ascending positions) in ONE write
 * transaction: each event with position == checkpoint + 1 updates the read
 * models and the checkpoint; lower positions are dropped; a higher one stops
 * the batch (gap). Idempotent by construction. */
int qs_apply(qs_db *db, int source, qs_event *const *evs, size_t n,
             qs_apply_result *res);

/* The write transaction of one batch as the read models see it: counter
 * changes and the merged feed's sequence are gathered here and written once
 * at the end of the batch (apply.c), instead of a read and a write per
 * event. */
#define QS_TX_COUNTERS 64
#define QS_TX_RATES 16
typedef struct qs_tx {
    es_txn *txn;
    uint64_t feed_seq;
    size_t n_counters;
    struct {
        char key[96];
        int64_t delta;
    } counters[QS_TX_COUNTERS];
    size_t n_rates;
    struct {
        uint64_t second;
        uint64_t n;
    } rates[QS_TX_RATES];
    uint64_t events[QS_NSOURCES]; /* the "events" counters, by source */
} qs_tx;
/* Writes the gathered counters and rates to tx->txn and empties them. */
int qs_tx_flush(qs_tx *tx);
/* The merged feed's sequence: loaded into tx at the start of a batch,
 * written back at its end. */
int qs_feed_begin(qs_tx *tx);
int qs_feed_flush(qs_tx *tx);

/* Read-model namespaces (static), NULL-terminated; for dump and rebuild. */
extern const char *const qs_namespaces[];

/* Each read model's share of applying one event inside the write txn. */
int qs_agents_apply(qs_tx *tx, const qs_event *ev);
int qs_tasks_apply(qs_tx *tx, const qs_event *ev);
/* Encodes the task record a task stream's first event makes into
 * ev->rec (from ar, or malloc when ar is NULL); a no-op for other
 * events. Errors: ES_NOMEM. */
int qs_tasks_prepare(qs_event *ev, qs_arena *ar);
/* A Task in the wire format (the bytes protobuf_c_message_pack writes for
 * it; unknown fields are not kept): the size, and the bytes written to out
 * (qs_task_packed_size of them). The record of every task event is one. */
size_t qs_task_packed_size(const Agentmesh__V1__Task *t);
size_t qs_task_pack(const Agentmesh__V1__Task *t, uint8_t *out);
/* Encodes the memory entry a MemoryWritten makes into ev->rec (from ar,
 * or malloc when ar is NULL); a no-op for other events. Errors: ES_NOMEM. */
int qs_memory_prepare(qs_event *ev, qs_arena *ar);
int qs_memory_apply(qs_tx *tx, const qs_event *ev);
int qs_feed_apply(qs_tx *tx, const qs_event *ev);
/* The event as the feed stores it: a packed agentmesh.v1.Event in a new
 * malloc'd buffer (*out, caller frees), or in ar's memory when ar is not
 * NULL. Errors: ES_NOMEM. */
int qs_feed_pack(const qs_event *ev, qs_arena *ar, uint8_t **out,
                 size_t *len);
int qs_stats_apply(qs_tx *tx, const qs_event *ev);
/* Stats counters in namespace q.stats, key "<group>:<name>" (8-byte
 * big-endian), changed by delta at the end of the batch. */
int qs_stats_add(qs_tx *tx, const char *group, const char *name,
                 int64_t delta);
/* Records one submit-to-complete latency (nanoseconds). */
int qs_stats_latency(qs_tx *tx, int64_t nanos);
/* Adjusts an agent's active_tasks (delta +1/-1); no-op for unknown agents. */
int qs_agents_adjust_active(qs_tx *tx, const char *agent_id, int delta);

/* ---- Reads (inside a read txn; replies are owned by the caller) ----------- */

#define QS_PAGE_DEFAULT 100u
#define QS_PAGE_MAX 1000u
#define QS_SCAN_MAX 100000u /* entries examined per page with filters */

/* The list functions fill the reply's repeated field and next_page_token
 * (freed with the reply). Errors also include ES_INVALID with msg (a bad
 * token or filter). qs_agents_get and qs_tasks_timeline: ES_NOT_FOUND. */
int qs_agents_get(es_txn *txn, const char *agent_id, Agentmesh__V1__Agent **out);
int qs_agents_list(es_txn *txn, const Agentmesh__V1__ListAgentsRequest *req,
                   Agentmesh__V1__ListAgentsResponse *resp, char *msg,
                   size_t msglen);
int qs_tasks_list(es_txn *txn, const Agentmesh__V1__ListTasksRequest *req,
                  Agentmesh__V1__ListTasksResponse *resp, char *msg,
                  size_t msglen);
int qs_tasks_timeline(es_txn *txn, const char *task_id,
                      Agentmesh__V1__GetTaskTimelineResponse *resp);
int qs_memory_search(es_txn *txn, const Agentmesh__V1__SearchMemoryRequest *req,
                     Agentmesh__V1__SearchMemoryResponse *resp, char *msg,
                     size_t msglen);
int qs_stats_get(es_txn *txn, Agentmesh__V1__GetStatsResponse *resp);

/* Feed reads: events after `after` (a source position, or the merged feed
 * sequence when source < 0) matching the filter, at most limit, into
 * *events (n of them; free with qs_free_events). *last_cursor is the last
 * entry examined (what the next read passes as `after`). */
typedef struct qs_feed_filter {
    int source;                 /* -1: merged */
    const char *stream_prefix;  /* NULL or "" = all */
    char *const *types;
    size_t n_types;
} qs_feed_filter;
int qs_feed_list(es_txn *txn, const qs_feed_filter *f, uint64_t after,
                 size_t limit, Agentmesh__V1__Event ***events, size_t *n,
                 uint64_t *last_cursor);
/* The stored event at (source, position), as a new message. ES_NOT_FOUND. */
int qs_feed_get(es_txn *txn, int source, uint64_t position,
                Agentmesh__V1__Event **out);
/* The merged feed's last sequence. */
uint64_t qs_feed_last_seq(es_txn *txn);

/* Frees an array of events and the array. */
void qs_free_events(Agentmesh__V1__Event **evs, size_t n);
/* Every map<string, uint64> entry of the API (positions, min_positions,
 * tasks_by_state) has this layout; `desc` is the generated entry type. */
typedef struct qs_u64_entry {
    ProtobufCMessage base;
    char *key;
    uint64_t value;
} qs_u64_entry;
/* Fills a map field with one entry per source from pos: *out (n_out
 * entries) is freed with the reply (protobuf_c_message_free_unpacked of each
 * entry, then free). Errors: ES_NOMEM. */
int qs_positions_map(const ProtobufCMessageDescriptor *desc,
                     const uint64_t pos[QS_NSOURCES], void ***out,
                     size_t *n_out);
/* Adds one entry (key copied) to a map field being built. ES_NOMEM. */
int qs_map_add(const ProtobufCMessageDescriptor *desc, void ***entries,
               size_t *n, const char *key, uint64_t value);
/* Frees a map field's entries and array. */
void qs_map_free(void **entries, size_t n);
/* Reads min_positions entries into min[]; ES_INVALID (msg) for an unknown
 * source name. */
int qs_min_positions(void *const *entries, size_t n,
                     uint64_t min[QS_NSOURCES], char *msg, size_t msglen);

/* ---- Page tokens -----------------------------------------------------------
 * Opaque text (base64url) binding a cursor key to the request's kind and
 * filter hash, so a token used with other filters is refused. */
int qs_token_encode(char kind, uint64_t filter_hash, const void *key,
                    size_t key_len, char **out);
/* Decodes into key (at most cap bytes). ES_INVALID for a malformed token or
 * one issued for another kind or filter. "" gives key_len 0. */
int qs_token_decode(const char *token, char kind, uint64_t filter_hash,
                    void *key, size_t cap, size_t *key_len);
uint64_t qs_hash(uint64_t h, const void *p, size_t n);

/* One page of an index scan: visits the keys of ns that start with prefix
 * and come strictly after prefix+after (after_len 0: from the first), and
 * calls fn(arg, txn, suffix, suffix_len, val, val_len) for each (suffix =
 * the key past the prefix); fn returns 1 when it took the item, 0 to skip
 * it, QS_STOP to end the scan there, or a negative es_status negated to
 * fail. Stops after `limit` items taken or QS_SCAN_MAX keys examined;
 * *more tells whether keys remain, and last/last_len (QS_KEY_CAP bytes)
 * the suffix to continue after. */
#define QS_KEY_CAP 512
#define QS_STOP 2
typedef int (*qs_take_fn)(void *arg, es_txn *txn, const uint8_t *suffix,
                          size_t suffix_len, const void *val, size_t val_len);
int qs_scan_page(es_txn *txn, const char *ns, const void *prefix,
                 size_t prefix_len, const void *after, size_t after_len,
                 size_t limit, qs_take_fn fn, void *arg, uint8_t *last,
                 size_t *last_len, bool *more);
/* The page size of a request: 0 means QS_PAGE_DEFAULT, larger than
 * QS_PAGE_MAX is capped. */
size_t qs_page_size(uint32_t requested);

/* ---- Projector: live queue, catch-up and NATS --------------------------- */
typedef struct qs_projector qs_projector;

typedef struct qs_projector_options {
    const char *addr[QS_NSOURCES]; /* EventStore gRPC targets; NULL/"" = off */
    const char *nats_url;          /* NULL/"" = no NATS (catch-up polling only) */
    int64_t poll_ms;               /* idle catch-up interval */
    unsigned page;                 /* ReadAll page size, at most 1000 */
    struct metrics_registry *metrics; /* borrowed for the projector's life;
                                         may be NULL */
} qs_projector_options;

/* Starts the projector thread, one catch-up thread per configured source
 * (each catches up at once) and the NATS consumer. db is borrowed until
 * qs_projector_stop. */
int qs_projector_start(qs_db *db, const qs_projector_options *opts,
                       qs_projector **out);
/* Stops the threads, closes NATS (waiting for its closed callback) and
 * frees. NULL is a no-op. */
void qs_projector_stop(qs_projector *p);
/* An event from NATS (takes ownership of ev; NULL adds none), on the
 * delivery thread: held while `more` (NATS has further messages waiting for
 * this subscription) and fewer than 256 are held, then applied with those
 * held, on the caller's thread. Only one thread may call it. */
void qs_projector_push(qs_projector *p, qs_event *ev, bool more);
/* Asks source's catch-up thread (or every source's when < 0) to run. */
void qs_projector_catch_up(qs_projector *p, int source);

/* The NATS consumer: subscribes to agentmesh.events.> and pushes decoded
 * events; a reconnect asks for catch-up of every source. */
typedef struct qs_nats qs_nats;
int qs_nats_start(const char *url, qs_projector *p, qs_nats **out);
void qs_nats_stop(qs_nats *n);

/* The catch-up client: ReadAll pages from a source's EventStore, on the
 * calling thread with its own completion queue, asking the source to leave
 * data_json out (x-agentmesh-omit-data-json). */
typedef struct qs_client qs_client;
int qs_client_create(const char *target, qs_client **out);
void qs_client_destroy(qs_client *c);
/* One ReadAll page from `from` (inclusive). *events (n) are owned by the
 * caller (qs_event_free each, free the array); with ar, the events are
 * allocated from it (see qs_event_from_proto). *end set on the last page.
 * Errors: ES_CLOSED (unreachable or failed call; msg says), ES_NOMEM. */
int qs_client_read_all(qs_client *c, int source, uint64_t from, unsigned limit,
                       int64_t timeout_ms, qs_arena *ar, qs_event ***events,
                       size_t *n, bool *end, uint64_t *next, char *msg,
                       size_t msglen);

/* Catches source up from its checkpoint to the end of its log through c:
 * `threads` helper threads (1, or more for a whole log: see
 * qs_catch_up_from) read up to six pages ahead, and the pages read so far
 * are applied together (up to 4,000 events a batch). *applied counts the
 * events applied. progress (may be NULL) is called after each page that
 * applied events, times (may be NULL) adds up where the time went.
 * Errors: those of the client and qs_apply, ES_IO (no thread). */
typedef void (*qs_progress_fn)(void *arg, int source, uint64_t position,
                               uint64_t applied);
/* Where a catch-up's time went (seconds, added to), for rebuild's report. */
typedef struct qs_catch_up_times {
    double reading; /* waiting for ReadAll pages */
    double applying; /* in qs_apply */
} qs_catch_up_times;
int qs_catch_up(qs_db *db, qs_client *c, int source, unsigned page,
                unsigned threads, uint64_t *applied, qs_progress_fn progress,
                void *arg, qs_catch_up_times *times);

/* Where catch-up pages come from: qs_client_read_all's contract (events
 * from `from` inclusive, *end on the last page, *next where the next page
 * starts), on the reader thread. */
typedef int (*qs_read_fn)(void *src, int source, uint64_t from,
                          unsigned limit, qs_arena *ar, qs_event ***events,
                          size_t *n, bool *end, uint64_t *next, char *msg,
                          size_t msglen);
/* qs_catch_up over any page source. threads: 1 reads page after page;
 * more (at most 4) read pages in parallel at computed positions (page k
 * starts k pages after the checkpoint), which needs a thread-safe read and
 * a source whose positions are dense (a whole log, no filter): a page that
 * does not hold exactly its positions fails the catch-up (ES_CORRUPT). */
int qs_catch_up_from(qs_db *db, qs_read_fn read, void *src, int source,
                     unsigned page, unsigned threads, uint64_t *applied,
                     qs_progress_fn progress, void *arg,
                     qs_catch_up_times *times);

/* A source's log read in place: its event store env opened read-only
 * (LMDB allows this while the owning service appends; same host only).
 * For rebuilds from the files of a running service or of a backup. */
typedef struct qs_log qs_log;
/* Errors: ES_NOT_FOUND (no store in dir), those of es_open. */
int qs_log_open(const char *dir, qs_log **out);
void qs_log_close(qs_log *log);
/* A qs_read_fn over a qs_log (src): up to limit (1..ES_PAGE_MAX) events.
 * Thread-safe: pages may be read in parallel. */
int qs_log_read_all(void *src, int source, uint64_t from, unsigned limit,
                    qs_arena *ar, qs_event ***events, size_t *n, bool *end,
                    uint64_t *next, char *msg, size_t msglen);

/* ---- Rebuild and dump ------------------------------------------------------- */

/* Drops the env in dir and replays every source from position 1, one
 * thread per source, printing progress lines to stderr. A source with
 * log_dir[i] set is read from its log's files in place first; then, when
 * addr[i] is set, whatever was appended since comes through its
 * EventStore API (a source with neither is not projected). The service
 * must not have dir open. */
int qs_rebuild(const char *dir, const char *const addr[QS_NSOURCES],
               const char *const log_dir[QS_NSOURCES], unsigned page,
               bool sync);
/* Writes every read-model namespace and checkpoint of dir's env, one line
 * per key ("ns hexkey hexvalue"), to f. The merged feed's order is the
 * apply order, so it is written as its content only (see docs/QUERY.md). */
int qs_dump(const char *dir, FILE *f);

#endif
