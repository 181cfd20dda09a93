/*
 * bus: agentmesh on NATS. The outbox relay publishes every committed event of
 * a service's log, in position order, as a CloudEvents 1.0 JSON message on
 * agentmesh.events.<service>.<category>.<EventType>, and advances its
 * checkpoint (in the same LMDB env as the log) only after NATS acknowledged
 * the message. NATS being down delays publication and loses nothing; an event
 * that can never be published is recorded with its reason and sent to
 * agentmesh.deadletter.<service>, and the relay goes on.
 *
 * Thread-safety: bus_cloudevent_* are reentrant. A bus_outbox runs its own
 * thread; its functions are thread-safe unless stated otherwise.
 */
#ifndef AGENTMESH_BUS_H
#define AGENTMESH_BUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "eventstore/eventstore.h"
#include "services/common/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

#define BUS_STATUS_TABLE(X)                                                   \
    X(OK, 0, "success")                                                       \
    X(NOMEM, 1, "out of memory")                                              \
    X(INVALID, 2, "invalid argument")                                         \
    X(UNKNOWN_TYPE, 3, "event type has no known payload message")             \
    X(BAD_PAYLOAD, 4, "event data does not parse as its payload type")        \
    X(TOO_LARGE, 5, "message larger than the server's maximum payload")      \
    X(NATS, 6, "NATS call failed")                                            \
    X(STORE, 7, "event store call failed")                                    \
    X(STATE, 8, "not allowed in the current state")

typedef enum bus_status {
#define BUS_ENUM_(name, value, text) BUS_##name = value,
    BUS_STATUS_TABLE(BUS_ENUM_)
#undef BUS_ENUM_
} bus_status;

/* A static text for a bus_status; never NULL. */
const char *bus_strerror(int status);

/* Lets a service change an event's decoded payload before it is written as
 * JSON, e.g. memory-sync clears MemoryWritten.sealed_value so that values
 * never travel on NATS. Return 0 to publish, non-zero to refuse (the event is
 * dead-lettered with that refusal as reason). Runs on the relay thread. */
typedef int (*bus_payload_fn)(const es_event *ev, ProtobufCMessage *payload, void *arg);

/* ---- CloudEvents ---------------------------------------------------------- */

/* The subject of an event: agentmesh.events.<service>.<category>.<Type>, the
 * category being the stream name up to its first '-' ("task-1" -> "task")
 * and Type the last token of the full type name. Characters NATS reserves
 * ('.', '*', '>', whitespace) become '_'. Errors: INVALID (does not fit). */
int bus_subject(const char *service, const es_event *ev, char *buf, size_t len);

/* Whether s (n bytes) is a W3C traceparent (version 00); only such values
 * are forwarded into CloudEvents and NATS headers. */
bool bus_traceparent_valid(const char *s, size_t n);

/* The event id as UUID text (36 characters and a NUL). */
void bus_uuid_format(const uint8_t id[ES_ID_SIZE], char out[37]);

/* Builds the CloudEvents 1.0 structured JSON of an event: specversion, id,
 * source ("agentmesh/<service>"), type, subject (the stream), time (RFC 3339
 * with nanoseconds), datacontenttype "application/json", data (the payload in
 * the proto3 JSON mapping), and the extensions sequence (the position),
 * streamversion and traceparent (when a valid W3C value is present); sequence and streamversion
 * are decimal strings, as 64-bit values do not fit CloudEvents' Integer.
 * On success *out is a NUL-terminated buffer the caller frees with free().
 * Errors: UNKNOWN_TYPE, BAD_PAYLOAD (and the hook's refusal), NOMEM; `why`
 * (may be NULL) receives a reason. */
int bus_cloudevent_build(const char *service, const es_event *ev, bus_payload_fn hook,
                         void *hook_arg, char **out, size_t *len, char *why, size_t why_len);

/* ---- Outbox relay --------------------------------------------------------- */

typedef struct bus_outbox bus_outbox;

/* Plain options; start from bus_outbox_options_init. Strings are copied. */
typedef struct bus_outbox_options {
    const char *nats_url;         /* default "nats://127.0.0.1:4222" */
    const char *service;          /* subject token and source: "agents", "memory" */
    bool jetstream;               /* default true: JetStream publish with acks */
    const char *stream_name;      /* JetStream stream, default "AGENTMESH" */
    unsigned window;              /* events taken from the log and not yet
                                     checkpointed (in flight at most), default 1024 */
    int64_t ack_wait_ms;          /* wait for a window's acks, default 5000 */
    int64_t retry_min_ms;         /* backoff after a failed window, default 50 */
    int64_t retry_max_ms;         /* backoff ceiling, default 5000 */
    unsigned max_attempts;        /* server refusals before dead-lettering, default 3 */
    const char *checkpoint_name;  /* default "outbox" */
    bus_payload_fn payload_hook;  /* may be NULL */
    void *payload_hook_arg;
    metrics_registry *metrics;    /* borrowed for the outbox's life; may be NULL */
} bus_outbox_options;

void bus_outbox_options_init(bus_outbox_options *opts);

/* Starts the relay thread on `store` (borrowed until bus_outbox_stop returns):
 * it connects to NATS (retrying in the background while NATS is down),
 * creates the JetStream stream over agentmesh.events.> when missing, and
 * publishes every event after its checkpoint. Errors: INVALID, NOMEM, NATS
 * (options rejected), STORE (checkpoint unreadable). */
int bus_outbox_start(es_store *store, const bus_outbox_options *opts, bus_outbox **out);

/* Stops the relay: tries for up to flush_ms (< 0: forever) to publish what
 * is committed, then stops, closes the connection and frees the outbox.
 * Everything not published stays in the log after the checkpoint and goes out
 * on the next start. NULL is a no-op. Call from one thread. */
void bus_outbox_stop(bus_outbox *ob, int64_t flush_ms);

/* Plain data. */
typedef struct bus_outbox_stats {
    uint64_t checkpoint;          /* last position acknowledged and recorded */
    uint64_t last_position;       /* last position in the log */
    uint64_t published;           /* since start */
    uint64_t dead_lettered;       /* since start */
    uint64_t publish_failures;    /* failed windows since start */
    bool connected;
} bus_outbox_stats;

/* Errors: STORE. */
int bus_outbox_stats_get(bus_outbox *ob, bus_outbox_stats *out);

/* Namespace of the dead-letter records in the store (key: position, 8 bytes
 * big-endian; value: the reason text). */
#define BUS_DEADLETTER_NS "outbox.deadletter"

#ifdef __cplusplus
}
#endif

#endif
