/* What memory-sync's source files share and nothing else includes: the
 * service struct, the caller-key records of the read state (namespace
 * metadata, namespace keys, entries, the applied-change index) and the
 * write batch that commits events and read-state changes in one
 * transaction. */
#ifndef AGENTMESH_MEMORY_SYNC_INTERNAL_H
#define AGENTMESH_MEMORY_SYNC_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>

#include "services/memory_sync/memory_sync.h"

#define MS_LOCKS 64
#define MS_STREAM_PREFIX "memory-"
#define MS_STREAM_MAX (sizeof MS_STREAM_PREFIX + MS_NS_MAX)
/* Caller-key namespaces in the event store. */
#define KV_NS "memory.ns"           /* ns -> ms_ns_meta */
#define KV_KEYS "memory.keys"       /* ns -> generation + namespace key */
#define KV_ENTRIES "memory.entries" /* ns \0 key -> entry record */
#define KV_APPLIED "memory.applied" /* ns \0 change id -> 1 */
#define MS_KVKEY_MAX (MS_NS_MAX + 1 + MS_KEY_MAX)
#define MS_CHANGE_ID 16

#define T_WRITTEN "agentmesh.v1.MemoryWritten"
#define T_DELETED "agentmesh.v1.MemoryDeleted"
#define T_CONFLICT "agentmesh.v1.MemoryConflictResolved"
#define T_FORGOTTEN "agentmesh.v1.NamespaceForgotten"

struct ms_service {
    ms_options opts;
    char replica_id[MS_REPLICA_MAX + 1];
    char key_dir[4096];
    es_store *store;
    ms_hlc hlc;
    pthread_mutex_t locks[MS_LOCKS];
    /* The master key: read-locked while a namespace key is wrapped or
     * unwrapped (from the read of its record to the end of the append that
     * writes it), write-locked by a forget's rotation. Never taken twice by
     * one thread; after a namespace stripe lock, never before one. */
    pthread_rwlock_t master_lock;
    uint32_t master_gen;
    ms_ns_key master;
};

/* ---- Master key and namespace key records (keys.c) ----------------------- */
#define MS_KEYREC_SIZE (1 + 4 + 4 + MS_NS_KEY_SIZE + MS_SEAL_OVERHEAD)

/* Loads the current master key (creating the first one), and removes stale
 * master files. Returns an es_status (ES_BAD_KEY: the file is missing). */
int ms_master_open(ms_service *s);
void ms_master_rdlock(ms_service *s);
void ms_master_wrlock(ms_service *s);
void ms_master_unlock(ms_service *s);
/* A namespace key record under the current master (read lock held). */
int ms_nskey_wrap(ms_service *s, const char *ns, uint32_t ns_gen,
                  const ms_ns_key *k, uint8_t out[MS_KEYREC_SIZE]);

/* A master rotation in flight (forget). */
typedef struct ms_rotation {
    uint32_t old_gen, new_gen;
    ms_ns_key old_key, new_key;
} ms_rotation;
/* Creates the next master file (durable). Write lock held. 0 or -1. */
int ms_rotation_begin(ms_service *s, ms_rotation *r);
/* In the write transaction: re-wraps every namespace key, records the new
 * generation. Returns an es_status. */
int ms_rotation_apply(es_txn *txn, const ms_rotation *r);
/* After the commit (or its failure): switches to the new master and
 * destroys the old file, or destroys the new one. */
void ms_rotation_end(ms_service *s, ms_rotation *r, bool committed);

/* ---- Records ---------------------------------------------------------------
 * A namespace's metadata: its key generation (1 for the first key, +1 after
 * each forget and reuse), whether a key exists now, the strategy a
 * SyncMemory request chose, and the stream version where the current
 * generation began. */
typedef struct ms_ns_meta {
    uint32_t generation;
    bool active;
    int strategy;
    uint64_t gen_start_version;
} ms_ns_meta;

/* A current entry (or tombstone). Strings and sealed point into the record
 * they were decoded from. */
typedef struct ms_entry {
    bool deleted;
    uint32_t generation;
    uint64_t version;
    uint64_t hlc;
    uint64_t position;
    int64_t updated_ns;
    uint64_t size;
    uint8_t hash[MS_HASH_SIZE];
    const char *replica;
    size_t replica_len;
    const char *ctype;
    size_t ctype_len;
    const uint8_t *sealed;
    size_t sealed_len;
} ms_entry;

/* The namespace as a write sees it under its lock. */
typedef struct ms_ns_state {
    ms_ns_meta meta;
    bool exists;          /* a metadata record exists */
    ms_ns_key key;        /* valid when meta.active */
    int64_t expected;     /* the stream's version, or ES_EXPECT_NO_STREAM */
    uint64_t next_version;/* stream version of the next event */
} ms_ns_state;

int ms_meta_get(es_txn *txn, const char *ns, ms_ns_meta *out);
/* Reads and unwraps the namespace key (master read lock held).
 * ES_NOT_FOUND if none, ES_BAD_KEY if it does not unwrap. */
int ms_nskey_get(ms_service *s, es_txn *txn, const char *ns,
                 uint32_t *generation, ms_ns_key *out);
/* Loads meta, key and stream version (master read lock held). */
int ms_ns_load(ms_service *s, es_txn *txn, const char *ns, ms_ns_state *st);

/* ns \0 key into out (MS_KVKEY_MAX); returns the length. */
size_t ms_kvkey(const char *ns, const void *key, size_t key_len, uint8_t *out);
int ms_entry_decode(const void *buf, size_t len, ms_entry *out);
/* Encodes e with sealed; *out (caller frees) */
int ms_entry_encode(const ms_entry *e, uint8_t **out, size_t *len);
/* The entry of a key. ES_NOT_FOUND, ES_CORRUPT. Pointers valid as es_kv_get's. */
int ms_entry_get(es_txn *txn, const char *ns, const char *key, size_t key_len,
                 ms_entry *out);

/* A MemoryEntry message from parts (all copied); NULL when out of memory. */
Agentmesh__V1__MemoryEntry *ms_entry_proto(const char *ns, const char *key,
                                           size_t key_len, const ms_entry *e,
                                           const uint8_t *value,
                                           size_t value_len);
/* The entry's plaintext (unsealed with k). 0, -1 nomem, -2 cannot open. */
int ms_entry_value(const ms_ns_key *k, const char *ns, const char *key,
                   size_t key_len, const ms_entry *e, uint8_t **out,
                   size_t *len);

/* ---- The write batch ------------------------------------------------------- */
enum { KVOP_PUT = 0, KVOP_DEL = 1, KVOP_WIPE = 2, KVOP_ROTATE = 3 };

typedef struct ms_kvop {
    int kind;
    const char *kvns;
    uint8_t *key;         /* owned */
    size_t key_len;
    uint8_t *val;         /* owned */
    size_t val_len;
    long event;           /* >= 0: an entry record whose position is that
                             event's (patched at commit) */
    const ms_rotation *rot; /* KVOP_ROTATE: borrowed until the commit */
} ms_kvop;

typedef struct ms_batch {
    char stream[MS_STREAM_MAX];
    es_event_data *ev;
    uint8_t **evbuf;
    size_t n_ev, cap_ev;
    ms_kvop *ops;
    size_t n_ops, cap_ops;
} ms_batch;

void ms_batch_init(ms_batch *b, const char *ns);
void ms_batch_free(ms_batch *b);
/* Adds an event (payload packed now); id NULL = random. Returns its index
 * or -1 (out of memory). */
long ms_batch_event(ms_batch *b, const char *type,
                    const ProtobufCMessage *payload, const ms_ctx *ctx,
                    const uint8_t *id);
/* Takes ownership of val. Returns 0 or -1. */
int ms_batch_put(ms_batch *b, const char *kvns, const void *key,
                 size_t key_len, uint8_t *val, size_t val_len, long event);
int ms_batch_del(ms_batch *b, const char *kvns, const void *key,
                 size_t key_len);
/* At commit: removes every entry and applied id of ns and shreds its key. */
int ms_batch_wipe(ms_batch *b, const char *ns);
/* At commit: re-wraps every namespace key under r's new master. */
int ms_batch_rotate(ms_batch *b, const ms_rotation *r);
/* Makes the namespace writable: a fresh key and generation if it has none
 * (adds the key and metadata records). Returns 0 or -1. */
int ms_batch_ensure_key(ms_service *s, ms_batch *b, const char *ns,
                        ms_ns_state *st);
int ms_batch_put_meta(ms_batch *b, const char *ns, const ms_ns_meta *m);
/* Appends the events with st's expected version and applies the ops in the
 * same write transaction. Returns an es_status. */
int ms_batch_commit(ms_service *s, ms_batch *b, int64_t expected,
                    es_append_result *res);

/* ---- Helpers ----------------------------------------------------------------*/
pthread_mutex_t *ms_lock_for(ms_service *s, const char *ns);
int64_t ms_now_ns(void);
int ms_fail(ms_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The gRPC code and message for an event store failure. */
int ms_store_fail(ms_error *err, int es_rc, const char *what);
/* Checks a key (1..MS_KEY_MAX bytes of UTF-8); returns 0 or the code. */
int ms_check_key(const char *key, ms_error *err);
int ms_check_ns(const char *ns, ms_error *err);
char *ms_strndup(const char *s, size_t n);

#endif
