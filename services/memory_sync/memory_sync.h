/* memory-sync's service interface (DESIGN §4 MemorySync): shared agent
 * memory in namespaces, each namespace one event stream "memory-<ns>" in the
 * service's event store, values sealed with a per-namespace key, the current
 * entries kept as caller keys written in the same transaction as their
 * events. Each command returns a canonical gRPC code (0 = OK) and on failure
 * fills err->message. See docs/MEMORY_SYNC.md.
 *
 * Thread-safety: every function may be called from any number of threads;
 * writes to one namespace are serialised by a lock stripe, reads never lock. */
#ifndef AGENTMESH_MEMORY_SYNC_H
#define AGENTMESH_MEMORY_SYNC_H

#include <stddef.h>
#include <stdint.h>

#include "agentmesh/v1/events.pb-c.h"
#include "agentmesh/v1/memory.pb-c.h"
#include "eventstore/eventstore.h"
#include "services/memory_sync/model.h"

#ifdef __cplusplus
extern "C" {
#endif

#define MS_VALUE_DEFAULT (256u << 10)  /* largest value, default */
#define MS_VALUE_HARD_MAX (768u << 10) /* keeps an event under 1 MiB */
#define MS_PAGE_DEFAULT 100u           /* ListMemory / SyncMemory page */
#define MS_PAGE_MAX 1000u
#define MS_SYNC_CHANGES_MAX 400u       /* changes in one SyncMemory request */

typedef struct ms_service ms_service;

/* Plain options; start from ms_options_init. */
typedef struct ms_options {
    es_store *store;             /* borrowed for the service's life */
    size_t max_value_bytes;      /* default MS_VALUE_DEFAULT */
    const char *replica_id;      /* the server's replica id for PutMemory and
                                    DeleteMemory without one (copied);
                                    default "server" */
    const ms_rules *rules;       /* borrowed for the service's life; may be
                                    NULL (every namespace LAST_WRITER_WINS) */
    int64_t max_clock_skew_ms;   /* client hlc ahead of the wall clock by more
                                    is refused; default 300000 */
    const char *key_dir;         /* where the master key files live (copied;
                                    required): the store's directory */
} ms_options;

void ms_options_init(ms_options *opts);

/* Loads (or creates) the master key in opts->key_dir.
 * Errors: ES_INVALID (no store or key_dir), ES_BAD_KEY (the store's master
 * key file is missing), ES_IO, ES_NOMEM. *out owned by the caller. */
int ms_service_create(const ms_options *opts, ms_service **out);
/* NULL is a no-op. No call may be running. */
void ms_service_destroy(ms_service *s);

/* Event metadata of a command (borrowed strings, NULL = empty). */
typedef struct ms_ctx {
    const char *actor;
    const char *correlation_id;
    const char *causation_id;
    const char *traceparent;
} ms_ctx;

typedef struct ms_error {
    char message[256];
} ms_error;

/* The commands and queries. Requests are borrowed; on success *out is a new
 * message owned by the caller (protobuf_c_message_free_unpacked(.., NULL)).
 * Codes: INVALID_ARGUMENT (3) bad names, sizes, tokens, cursors or clocks;
 * NOT_FOUND (5) no such key, a deleted key, or a namespace that does not
 * exist (never written, or forgotten); ABORTED (10) a stale
 * expected_version, the message naming the current version; RESOURCE_
 * EXHAUSTED (8) storage full; INTERNAL (13) / UNAVAILABLE (14) otherwise. */
int ms_put(ms_service *s, const ms_ctx *ctx,
           const Agentmesh__V1__PutMemoryRequest *req,
           Agentmesh__V1__MemoryEntry **out, ms_error *err);
int ms_get(ms_service *s, const Agentmesh__V1__GetMemoryRequest *req,
           Agentmesh__V1__MemoryEntry **out, ms_error *err);
int ms_delete(ms_service *s, const ms_ctx *ctx,
              const Agentmesh__V1__DeleteMemoryRequest *req,
              Agentmesh__V1__MemoryEntry **out, ms_error *err);
int ms_list(ms_service *s, const Agentmesh__V1__ListMemoryRequest *req,
            Agentmesh__V1__ListMemoryResponse **out, ms_error *err);
int ms_sync(ms_service *s, const ms_ctx *ctx,
            const Agentmesh__V1__SyncMemoryRequest *req,
            Agentmesh__V1__SyncMemoryResponse **out, ms_error *err);
int ms_forget(ms_service *s, const ms_ctx *ctx,
              const Agentmesh__V1__ForgetNamespaceRequest *req,
              Agentmesh__V1__ForgetResponse **out, ms_error *err);

/* ---- Watching (the gRPC layer streams what these give) ------------------- */

/* Where a watch starts: validated request, the subscription position and
 * the first stream version that counts. */
typedef struct ms_watch_start {
    uint64_t after_position;     /* es_sub_open's `after` */
    uint64_t from_version;       /* events of the stream below are skipped */
    uint32_t generation;
} ms_watch_start;

/* Checks a WatchMemory request and finds where it starts. Codes as above. */
int ms_watch_begin(ms_service *s, const Agentmesh__V1__WatchMemoryRequest *req,
                   ms_watch_start *out, ms_error *err);

/* Turns one event of namespace ns into a change, when it is a
 * MemoryWritten or MemoryDeleted whose key starts with `prefix` (else
 * *out = NULL and 0). A NamespaceForgotten answers NOT_FOUND. *out is owned
 * by the caller. Codes: NOT_FOUND, INTERNAL. */
int ms_watch_change(ms_service *s, const char *ns, const char *prefix,
                    const es_event *ev, Agentmesh__V1__MemoryChange **out,
                    ms_error *err);

/* The outbox hook (bus_payload_fn): clears MemoryWritten.sealed_value so
 * values never travel on NATS. */
int ms_payload_hook(const es_event *ev, ProtobufCMessage *payload, void *arg);

#ifdef __cplusplus
}
#endif

#endif
