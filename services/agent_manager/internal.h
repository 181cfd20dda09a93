/* What the agent manager's source files share and nothing else includes:
 * the service struct, the in-flight append (op) that every command runs,
 * event building, assignment and snapshots. */
#ifndef AGENTMESH_AGENT_MANAGER_INTERNAL_H
#define AGENTMESH_AGENT_MANAGER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include <protobuf-c/protobuf-c.h>

#include "services/agent_manager/agent_manager.h"
#include "services/common/metrics.h"
#include "services/agent_manager/state.h"

#define AM_UUID_LEN 36
/* Longest stream name: "agent-" or "task-" and an id. */
#define AM_STREAM_MAX (8 + AM_ID_MAX)
/* Events in one append (TaskSubmitted + TaskAssigned at most). */
#define AM_OP_EVENTS 2

/* The events of one append, each with its packed payload (owned). */
typedef struct am_events {
    es_event_data ev[AM_OP_EVENTS];
    uint8_t *buf[AM_OP_EVENTS];
    size_t n;
} am_events;

/* Packs `payload` as the next event. `det_id` gives a deterministic id
 * (idempotent retries), NULL a random one (RAND_bytes). ctx's strings are
 * borrowed until the append. Returns 0, or -1 (out of memory, no entropy). */
int am_events_add(am_events *b, const char *type,
                  const ProtobufCMessage *payload, const am_ctx *ctx,
                  const uint8_t *det_id);
void am_events_free(am_events *b);

/* Lower-case UUID text of 16 bytes; out holds AM_UUID_LEN + 1. */
void am_uuid_format(const uint8_t id[16], char *out);
/* A new UUIDv7 (time-ordered, random below the millisecond). Returns 0, or
 * -1 without entropy. */
int am_uuid_new(char *out);
/* A fresh W3C traceparent ("00-<32 hex>-<16 hex>-01"); out holds 56. */
int am_traceparent_new(char *out);

/* Metadata of a follow-up decision (an assignment caused by an event, or a
 * timeout): its own buffers so it outlives the command that caused it. */
typedef struct am_ctx_buf {
    am_ctx ctx;
    char correlation[AM_UUID_LEN + 1];
    char causation[AM_UUID_LEN + 1];
    char traceparent[64];
    char actor[128];
} am_ctx_buf;

/* A follow-up of `parent` caused by the event with id `cause`, or, with
 * parent NULL, a decision of the manager itself (actor "agent-manager"). */
void am_ctx_followup(am_ctx_buf *b, const am_ctx *parent,
                     const uint8_t *cause);

typedef struct am_stats am_stats;

/* One append in flight: decided under the lock, run without it. */
typedef struct am_op {
    struct am_op *prev, *next;
    uint64_t mark;            /* max_applied when it began (snapshots) */
    char stream[AM_STREAM_MAX];
    int64_t expected;
    am_events events;
    am_task *task;            /* marked busy while in flight, or NULL */
    am_agent *agent;          /* marked busy while in flight, or NULL */
    am_agent *reserved;       /* load reservation released at the end */
    es_append_result res;
    uint8_t last_id[ES_ID_SIZE]; /* id of its last event (causation) */
} am_op;

struct am_service {
    am_options opts;
    es_store *store;
    pthread_mutex_t mu;
    pthread_cond_t cv;        /* an op finished (entities not busy) */
    am_state st;
    am_op *ops;               /* in flight */
    bool broken;              /* state and log diverged: refuse commands */
    uint64_t snap_applied;    /* st.applied at the last snapshot */
    uint64_t snap_entities;   /* agents and tasks the last snapshot held */
    pthread_t monitor;
    bool monitor_started;
    bool stopping;
    pthread_cond_t monitor_cv;
    am_stats *stats;          /* NULL without a metrics registry */
    unsigned async_inflight;  /* am_submit_task_async appends in flight */
    /* SubmitTask commands decided by am_submit_task_async (fast) and by
     * am_submit_task (worker), for /metrics. */
    atomic_ulong submits_fast, submits_worker;
};

/* Metrics (stats.c): created on the options' registry, refreshed by the
 * monitor thread without s->mu held. */
int am_stats_create(metrics_registry *reg, am_stats **out);
void am_stats_destroy(am_stats *st);
void am_stats_refresh(am_service *s, am_stats *st);

/* With s->mu held: registers op, marks its entities busy, appends without
 * the lock, applies what was committed and releases the entities; returns
 * with s->mu held. Returns a gRPC code (0 on success) and fills err. The op's
 * events are freed. */
int am_op_run(am_service *s, am_op *op, am_error *err);

/* am_op_run in two halves, for callers that must not wait for the commit.
 * am_op_start, with s->mu held (and kept): registers op and queues its
 * append; cb(arg, status, res) runs on the event store's writer thread once
 * it is committed, and must call am_op_finish. Returns AM_OP_PENDING, or,
 * when the append was refused at once, the gRPC code of the ended op (err
 * filled, events freed) with s->mu still held. am_op_finish, without s->mu:
 * folds what was committed and ends op like am_op_run; returns its gRPC
 * code with s->mu held. */
#define AM_OP_PENDING (-1)
int am_op_start(am_service *s, am_op *op, es_append_cb cb, void *arg,
                am_error *err);
int am_op_finish(am_service *s, am_op *op, int status,
                 const es_append_result *res, am_error *err);

/* With s->mu held: the agent to give task t now (least loaded eligible),
 * or NULL. */
am_agent *am_choose_agent(am_service *s, const am_task *t);
/* With s->mu held: assigns pending tasks, highest priority first, while
 * agents have spare capacity; returns with s->mu held. */
void am_assign_pending(am_service *s, const am_ctx *ctx);

/* Snapshots (snapshot.c). With s->mu held: encode the state. */
int am_snapshot_encode(am_service *s, uint8_t **buf, size_t *len);
/* Decodes a snapshot into an empty state (every length checked; the fuzz
 * driver feeds it arbitrary bytes). Returns ES_OK, ES_CORRUPT or ES_NOMEM;
 * on error the state holds what was decoded so far (free it). */
int am_snapshot_decode(am_state *st, const uint8_t *p, size_t len,
                       uint64_t *w);
/* Loads the snapshot into s->st and sets *after to replay from. */
int am_snapshot_load(am_service *s, uint64_t *after);

/* The monitor thread (heartbeat.c). */
int am_monitor_start(am_service *s);
void am_monitor_stop(am_service *s);

/* CLOCK_REALTIME and CLOCK_MONOTONIC readings. */
int64_t am_now_ns(void);
int64_t am_mono_ms(void);

/* Formats err->message; returns code. */
int am_fail(am_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
