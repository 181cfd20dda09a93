/* internal.h: what the event store's source files share and nothing outside
 * eventstore/ may include: the store and transaction structs, the LMDB
 * layout, the record codec's encoder and the hash-chain primitives. */
#ifndef AGENTMESH_EVENTSTORE_INTERNAL_H
#define AGENTMESH_EVENTSTORE_INTERNAL_H

#include <lmdb.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>

#include "eventstore/eventstore.h"

/* Record format version written by this code. */
#define ES__RECORD_V1 1
#define ES__FLAG_KEYED 0x01
/* Fixed part: version, flags, id, position, stream version, time. */
#define ES__REC_FIXED (1 + 1 + ES_ID_SIZE + 8 + 8 + 8)
#define ES__REC_NSTR 7
#define ES__REC_MIN (ES__REC_FIXED + ES__REC_NSTR * 3 + 4 + ES_HASH_SIZE)

/* The named databases of one environment. */
typedef struct es__dbs {
    MDB_dbi events;       /* position (u64 BE) -> record */
    MDB_dbi streams;      /* stream name -> stream_info (last version, ...) */
    MDB_dbi stream_index; /* stream name, NUL, version (u64 BE) -> position */
    MDB_dbi event_ids;    /* 16-byte id -> position (u64 BE) */
    MDB_dbi snapshots;    /* stream name -> version (u64 BE) + data */
    MDB_dbi checkpoints;  /* name -> position (u64 BE) */
    MDB_dbi user;         /* namespace, NUL, key -> value */
    MDB_dbi meta;         /* "head" -> position + hash; "key_check" -> mac */
} es__dbs;

/* Namespaces with a database of their own (es_options.kv_dbs). */
#define ES__KV_SLOTS 64 /* a power of two, twice ES_KV_DBS_MAX */
typedef struct es__kv_dbs {
    unsigned n;
    const char *given[ES_KV_DBS_MAX]; /* the caller's pointers, for a fast
                                         identity check before strcmp */
    char *name[ES_KV_DBS_MAX];        /* owned copies */
    MDB_dbi dbi[ES_KV_DBS_MAX];
    bool present[ES_KV_DBS_MAX];      /* false: read-only store without it */
    /* given[] by address, open addressing: slot_ptr NULL is empty. */
    const char *slot_ptr[ES__KV_SLOTS];
    unsigned char slot_idx[ES__KV_SLOTS];
} es__kv_dbs;

/* The slot where a search for the namespace pointer p starts. */
static inline unsigned es__kv_slot(const char *p)
{
    uint64_t x = (uint64_t)(uintptr_t)p;
    return (unsigned)((x * 0x9E3779B97F4A7C15ull) >> 58) & (ES__KV_SLOTS - 1);
}

#define ES__HEAD_KEY "head"
#define ES__KEYCHECK_KEY "key_check"
#define ES__HEAD_SIZE (8 + ES_HASH_SIZE)

/* Stream row: last version, count of events is last + 1. */
#define ES__STREAM_ROW 8

/* The hash chain state: SHA-256 or HMAC-SHA256 over prev hash || record. */
typedef struct es__hasher {
    EVP_MD_CTX *md;
    EVP_MD *sha256;
    EVP_MAC *mac;
    EVP_MAC_CTX *mac_tmpl; /* initialised with the key; duplicated per use */
    bool keyed;
} es__hasher;

int es__hasher_init(es__hasher *h, const void *key, size_t key_len);
void es__hasher_free(es__hasher *h);
/* out = H(prev || rec[0 .. len - ES_HASH_SIZE)) */
int es__hasher_hash(es__hasher *h, const uint8_t prev[ES_HASH_SIZE],
                    const void *rec, size_t len, uint8_t out[ES_HASH_SIZE]);
/* A fixed message MAC'd with the key so a reopen can tell a wrong key. */
int es__hasher_keycheck(es__hasher *h, uint8_t out[ES_HASH_SIZE]);

/* Encoded size of an event appended to `stream`. */
size_t es__record_size(const char *stream, const es_event_data *ev);
/* Encode into buf (es__record_size bytes) with a zero hash. */
void es__record_encode(uint8_t *buf, size_t size, const char *stream,
                       const es_event_data *ev, uint64_t position,
                       uint64_t version, int64_t time_ns, bool keyed);

typedef struct es__waitq es__waitq;

struct es_store {
    MDB_env *env;
    es__dbs dbs;
    es__kv_dbs kv;
    bool writemap;               /* ES_OPT_WRITEMAP: no nested txns */
    es_options opts;
    uint8_t *chain_key;          /* owned copy */
    bool rdonly;

    /* Readers hold it shared while a read txn is open; the writer takes it
     * exclusively to grow the map, since mdb_env_set_mapsize unmaps. */
    pthread_rwlock_t map_lock;
    size_t map_size;             /* guarded by map_lock (exclusive to write) */

    /* Group commit. */
    pthread_mutex_t mu;
    pthread_cond_t queue_cv;     /* writer: work arrived or closing */
    pthread_cond_t space_cv;     /* callers: room in the queue */
    struct es__req *head, *tail;
    unsigned queued;
    bool closing;
    bool writer_idle;            /* the writer waits on queue_cv */
    bool writer_started;
    pthread_t writer;

    /* Commit notification: guarded by notify_mu. */
    pthread_mutex_t notify_mu;
    pthread_cond_t notify_cv;
    uint64_t committed_pos;
    unsigned subs;
    bool closed;

    /* Writer-thread state: the chain head as committed. */
    es__hasher hasher;
    uint64_t last_pos;
    uint8_t last_hash[ES_HASH_SIZE];

    /* Counters, guarded by mu. */
    uint64_t appends_ok, appends_failed, events_appended, commits,
        commit_ns_total, batch_max, map_growths;
};

/* A transaction handle: a read snapshot (es_txn_begin) or the writer's
 * per-request view of the group-commit txn. */
struct es_txn {
    es_store *store;
    MDB_txn *txn;
    bool write;
    bool owns_lock;              /* read txn holding map_lock shared */
    bool map_full;               /* a write through it hit MDB_MAP_FULL */
    /* Write txns: one cursor per kv_dbs database, opened by the first put
     * into it and closed by es__txn_close_cursors. */
    MDB_cursor *kv_cur[ES_KV_DBS_MAX];
};

/* Close the cursors a write txn's puts opened (before it commits). */
void es__txn_close_cursors(es_txn *t);

/* Begin/end a raw read txn under the map lock (used by reads, verify, subs). */
int es__read_begin(es_store *s, MDB_txn **out);
void es__read_end(es_store *s, MDB_txn *txn);

/* Map an LMDB or errno value to a status. */
int es__status_from_mdb(int rc);

void es__put_u64(uint8_t *p, uint64_t v);
uint64_t es__get_u64(const uint8_t *p);

/* Grow the map (store.c); writer thread only, no write txn open. */
int es__grow_map(es_store *s);
/* The writer thread (append.c). */
void *es__writer_main(void *arg);
/* Filter matching (read.c), shared with subscriptions. */
bool es__filter_match(const es_filter *f, const es_event *ev);
int es__filter_check(const es_filter *f);

int64_t es__now_ns(void);

#endif
