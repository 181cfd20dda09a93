/* The agent manager's pure decision rules: the task state machine, the
 * syntax and size limits of every input, and the assignment choice. Nothing
 * here touches gRPC, the event store or a lock, so the whole table is
 * unit-tested on its own (model_test.c). All functions are thread-safe. */
#ifndef AGENTMESH_AGENT_MANAGER_MODEL_H
#define AGENTMESH_AGENT_MANAGER_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Task states; the values are those of agentmesh.v1.TaskState. */
typedef enum am_task_state {
    AM_TASK_UNSPECIFIED = 0,
    AM_TASK_PENDING = 1,
    AM_TASK_ASSIGNED = 2,
    AM_TASK_RUNNING = 3,
    AM_TASK_COMPLETED = 4,
    AM_TASK_FAILED = 5,
    AM_TASK_CANCELLED = 6,
} am_task_state;
#define AM_TASK_STATE_COUNT 7

/* Agent statuses; the values are those of agentmesh.v1.AgentStatus. */
typedef enum am_agent_status {
    AM_AGENT_UNSPECIFIED = 0,
    AM_AGENT_ONLINE = 1,
    AM_AGENT_OFFLINE = 2,
    AM_AGENT_DEREGISTERED = 3,
} am_agent_status;

/* What can happen to a task. ASSIGN is the manager's own decision; the
 * others are the task RPCs. */
typedef enum am_task_cmd {
    AM_CMD_ASSIGN = 0,
    AM_CMD_START,
    AM_CMD_PROGRESS,
    AM_CMD_COMPLETE,
    AM_CMD_FAIL,
    AM_CMD_CANCEL,
    AM_CMD_RETRY,
} am_task_cmd;
#define AM_TASK_CMD_COUNT 7

/* Limits on what clients send (DESIGN: bound everything the network
 * controls). The input limit is configurable; these are fixed. */
#define AM_ID_MAX 128             /* agent and task ids: [A-Za-z0-9._:-] */
#define AM_NAME_MAX 256           /* agent name, bytes, no control chars */
#define AM_CAP_MAX 64             /* capability: [a-z0-9][a-z0-9._-]{0,63} */
#define AM_CAPS_MAX 64            /* capabilities per agent or task */
#define AM_LABELS_MAX 64          /* labels per agent */
#define AM_LABEL_KEY_MAX 63       /* [A-Za-z0-9][A-Za-z0-9._/-]{0,62} */
#define AM_LABEL_VALUE_MAX 256    /* bytes, no control chars */
#define AM_CONCURRENCY_MAX 1024   /* max_concurrency; 0 at register means 1 */
#define AM_TEXT_MAX 1024          /* phase, reason, idempotency key */
#define AM_INPUT_DEFAULT (256u * 1024u) /* input, output, error: configurable */

/* True when a task may move from `from` to `to` (the DESIGN's table:
 * PENDING->ASSIGNED->RUNNING->COMPLETED|FAILED|CANCELLED, FAILED->PENDING,
 * PENDING|ASSIGNED|RUNNING->CANCELLED, and RUNNING->RUNNING for progress). */
bool am_task_transition_allowed(am_task_state from, am_task_state to);

/* The state command `cmd` leads to from `from`. Returns true and sets *to, or
 * false when the command is refused in that state (FAILED_PRECONDITION). */
bool am_task_next_state(am_task_state from, am_task_cmd cmd,
                        am_task_state *to);

/* True for COMPLETED and CANCELLED: nothing can happen to the task any more
 * (FAILED may still be retried). */
bool am_task_state_final(am_task_state s);
/* True for ASSIGNED and RUNNING: the task counts in its agent's load. */
bool am_task_state_active(am_task_state s);

/* Static names: "TASK_STATE_RUNNING", "AGENT_STATUS_ONLINE", "start". */
const char *am_task_state_name(am_task_state s);
const char *am_agent_status_name(am_agent_status s);
const char *am_task_cmd_name(am_task_cmd c);

/* Input syntax; each returns true when valid. `s` may be NULL (invalid). */
bool am_id_valid(const char *s);
bool am_name_valid(const char *s);
bool am_capability_valid(const char *s);
bool am_label_key_valid(const char *s);
bool am_label_value_valid(const char *s);
/* Free text (phase, reason, key): at most `max` bytes, NULL is empty. */
bool am_text_valid(const char *s, size_t max);

/* One agent as the assignment rule sees it (plain data). */
typedef struct am_candidate {
    am_agent_status status;
    bool busy;              /* its own stream has an append in flight */
    bool has_caps;          /* holds every required capability */
    uint32_t load;          /* active tasks plus reserved assignments */
    uint32_t max_concurrency;
} am_candidate;

/* The least-loaded eligible candidate: ONLINE, not busy, has the
 * capabilities and load < max_concurrency. Fewest tasks wins; ties go to the
 * lower load ratio, then to the lower index (registration order). Returns the
 * index, or -1 when none is eligible. */
long am_pick_agent(const am_candidate *c, size_t n);

/* Whether a periodic snapshot is due: `since` events applied since the last
 * one, which held `last_entities` agents and tasks (0 when there is none),
 * `every` the configured interval (0: never). Due after `every` events, but
 * never before as many events as the last snapshot held entities: a
 * snapshot encodes the whole state under the service lock, so its cost per
 * event stays bounded and, as the state grows, snapshots (and their stalls)
 * come at doubling intervals instead of every `every` events; a restart
 * then replays after the snapshot at most about as many events as it
 * holds entities (or `every`). */
bool am_snapshot_due(uint64_t every, uint64_t since, uint64_t last_entities);

#endif
