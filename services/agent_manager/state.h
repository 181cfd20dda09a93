/* The agent manager's in-memory state: agents, tasks, the idempotency index
 * and the pending queue, and the fold that applies one recorded event to it.
 * The same fold runs at start (replay after a snapshot) and after every
 * append (on the events read back from the log), so live state and rebuilt
 * state cannot differ. Not thread-safe: the service mutex guards a state. */
#ifndef AGENTMESH_AGENT_MANAGER_STATE_H
#define AGENTMESH_AGENT_MANAGER_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agentmesh/v1/agents.pb-c.h"
#include "eventstore/eventstore.h"
#include "services/agent_manager/map.h"
#include "services/agent_manager/model.h"

/* Full event type names. */
#define AM_EV_AGENT_REGISTERED "agentmesh.v1.AgentRegistered"
#define AM_EV_AGENT_UPDATED "agentmesh.v1.AgentUpdated"
#define AM_EV_AGENT_DEREGISTERED "agentmesh.v1.AgentDeregistered"
#define AM_EV_AGENT_ONLINE "agentmesh.v1.AgentWentOnline"
#define AM_EV_AGENT_OFFLINE "agentmesh.v1.AgentWentOffline"
#define AM_EV_TASK_SUBMITTED "agentmesh.v1.TaskSubmitted"
#define AM_EV_TASK_ASSIGNED "agentmesh.v1.TaskAssigned"
#define AM_EV_TASK_STARTED "agentmesh.v1.TaskStarted"
#define AM_EV_TASK_PROGRESSED "agentmesh.v1.TaskProgressed"
#define AM_EV_TASK_COMPLETED "agentmesh.v1.TaskCompleted"
#define AM_EV_TASK_FAILED "agentmesh.v1.TaskFailed"
#define AM_EV_TASK_CANCELLED "agentmesh.v1.TaskCancelled"
#define AM_EV_TASK_RETRIED "agentmesh.v1.TaskRetried"

#define AM_AGENT_STREAM_PREFIX "agent-"
#define AM_TASK_STREAM_PREFIX "task-"

typedef struct am_label {
    char *key;
    char *value;
} am_label;

/* One agent. Every string is owned by the struct. */
typedef struct am_agent {
    char *id;
    char *name;
    char **caps;
    size_t n_caps;
    am_label *labels;
    size_t n_labels;
    uint32_t max_concurrency;
    am_agent_status status;
    uint32_t active;          /* its ASSIGNED + RUNNING tasks (applied) */
    uint64_t version;         /* last version of agent-<id> */
    uint64_t position;
    int64_t registered_at;
    int64_t last_seen;        /* unix nanos of the last heartbeat or event */
    /* Not persisted: */
    int64_t seen_mono_ms;     /* CLOCK_MONOTONIC of the last sign of life */
    uint32_t reserved;        /* assignments decided, not yet applied */
    bool busy;                /* an append to agent-<id> is in flight */
    bool ghost;               /* being registered: not visible yet */
} am_agent;

/* One task. Every string is owned by the struct (NULL reads as ""). */
typedef struct am_task {
    char *id;
    char *target;             /* the agent the client asked for, or NULL */
    char *agent_id;           /* assigned agent (else target), or NULL */
    char **caps;
    size_t n_caps;
    char *input;
    char *output;
    char *error;
    char *phase;
    char *idem_key;
    uint32_t progress;
    int32_t priority;
    uint32_t attempt;
    am_task_state state;
    uint64_t version;         /* last version of task-<id> */
    uint64_t position;
    int64_t submitted_at;
    int64_t updated_at;
    /* Not persisted: */
    uint64_t seq;             /* creation order, breaks pending-queue ties */
    bool busy;                /* an append to task-<id> is in flight */
    bool ghost;               /* being submitted: not visible yet */
} am_task;

typedef struct am_state {
    am_map *agents;           /* id -> am_agent* */
    am_map *tasks;            /* id -> am_task* */
    am_map *idem;             /* idempotency key -> am_task* (borrowed) */
    am_agent **agent_list;    /* registration order; owns the agents */
    size_t n_agents, cap_agents;
    am_task **task_list;      /* creation order; owns the tasks */
    size_t n_tasks, cap_tasks;
    am_task **pending;        /* PENDING tasks, queue order */
    size_t n_pending, cap_pending;
    uint64_t next_seq;
    uint64_t max_applied;     /* highest position applied */
    uint64_t applied;         /* events applied since start */
} am_state;

/* Errors of the state functions: 0, or -1 out of memory. */
int am_state_init(am_state *st);
void am_state_free(am_state *st);

/* Adds a new entity (the state takes ownership; on error the caller keeps
 * it). Ghosts are added this way by the command layer before their first
 * append and removed with am_state_remove_* if it fails. */
int am_state_add_agent(am_state *st, am_agent *a);
int am_state_add_task(am_state *st, am_task *t);
/* Adds a task loaded from a snapshot (already in the state) to the derived
 * indexes: idempotency key, its agent's load, the pending queue. */
int am_state_index_task(am_state *st, am_task *t);
/* Removes and frees a ghost (never a real entity). */
void am_state_remove_agent(am_state *st, am_agent *a);
void am_state_remove_task(am_state *st, am_task *t);

/* Applies one recorded event. Events of a stream whose version is not
 * above the entity's are skipped (replay over a snapshot is idempotent).
 * Unknown types and streams are skipped. Errors: -1 out of memory, -2
 * undecodable payload (both leave the state as it was). */
int am_state_apply(am_state *st, const es_event *ev);

/* Applies a task event to a lone task copy (WatchTask follows one task with
 * this). *changed tells whether the event was for it and newer. */
int am_task_apply(am_task *t, const es_event *ev, bool *changed);

/* Pending-queue order: higher priority first, then older submit time. */
int am_pending_cmp(const am_task *a, const am_task *b);

am_agent *am_agent_new(void);
am_task *am_task_new(void);
void am_agent_free(am_agent *a);
void am_task_free(am_task *t);
/* Deep copy; NULL out of memory. Caller frees with am_task_free. */
am_task *am_task_clone(const am_task *t);

/* True when the agent holds every capability in caps[0..n). */
bool am_agent_has_caps(const am_agent *a, char *const *caps, size_t n);

/* Deep copies as protobuf-c messages whose every field is heap-allocated:
 * free with protobuf_c_message_free_unpacked(msg, NULL). NULL out of memory. */
Agentmesh__V1__Agent *am_agent_to_proto(const am_agent *a);
Agentmesh__V1__Task *am_task_to_proto(const am_task *t);
/* The reverse, for snapshots; NULL out of memory. */
am_agent *am_agent_from_proto(const Agentmesh__V1__Agent *p);
am_task *am_task_from_proto(const Agentmesh__V1__Task *p, const char *target);

/* strdup that maps NULL to NULL and reports failure through *oom. */
char *am_strdup(const char *s, bool *oom);

#endif
