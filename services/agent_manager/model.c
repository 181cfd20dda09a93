/* The agent manager's pure rules: the task state machine as a table, input
 * syntax checks and the least-loaded assignment choice (see model.h). */
#include "services/agent_manager/model.h"

#include <string.h>

/* allowed[from][to] */
static const bool allowed[AM_TASK_STATE_COUNT][AM_TASK_STATE_COUNT] = {
    [AM_TASK_PENDING] = {[AM_TASK_ASSIGNED] = true, [AM_TASK_CANCELLED] = true},
    [AM_TASK_ASSIGNED] = {[AM_TASK_RUNNING] = true, [AM_TASK_CANCELLED] = true},
    [AM_TASK_RUNNING] = {[AM_TASK_RUNNING] = true,
                         [AM_TASK_COMPLETED] = true,
                         [AM_TASK_FAILED] = true,
                         [AM_TASK_CANCELLED] = true},
    [AM_TASK_FAILED] = {[AM_TASK_PENDING] = true},
};

/* The one state each command leads to. */
static const am_task_state target[AM_TASK_CMD_COUNT] = {
    [AM_CMD_ASSIGN] = AM_TASK_ASSIGNED,   [AM_CMD_START] = AM_TASK_RUNNING,
    [AM_CMD_PROGRESS] = AM_TASK_RUNNING,  [AM_CMD_COMPLETE] = AM_TASK_COMPLETED,
    [AM_CMD_FAIL] = AM_TASK_FAILED,       [AM_CMD_CANCEL] = AM_TASK_CANCELLED,
    [AM_CMD_RETRY] = AM_TASK_PENDING,
};

static bool state_ok(int s) { return s >= 0 && s < AM_TASK_STATE_COUNT; }

bool am_task_transition_allowed(am_task_state from, am_task_state to)
{
    return state_ok((int)from) && state_ok((int)to) && allowed[from][to];
}

bool am_task_next_state(am_task_state from, am_task_cmd cmd, am_task_state *to)
{
    if ((int)cmd < 0 || cmd >= AM_TASK_CMD_COUNT || !state_ok((int)from))
        return false;
    am_task_state t = target[cmd];
    /* RUNNING->RUNNING is progress only: StartTask on a running task is a
     * repeated start, which the table must refuse. */
    if (from == AM_TASK_RUNNING && t == AM_TASK_RUNNING && cmd != AM_CMD_PROGRESS)
        return false;
    if (cmd == AM_CMD_PROGRESS && from != AM_TASK_RUNNING)
        return false;
    if (!allowed[from][t])
        return false;
    *to = t;
    return true;
}

bool am_task_state_final(am_task_state s)
{
    return s == AM_TASK_COMPLETED || s == AM_TASK_CANCELLED;
}

bool am_task_state_active(am_task_state s)
{
    return s == AM_TASK_ASSIGNED || s == AM_TASK_RUNNING;
}

const char *am_task_state_name(am_task_state s)
{
    static const char *const names[AM_TASK_STATE_COUNT] = {
        "TASK_STATE_UNSPECIFIED", "TASK_STATE_PENDING",   "TASK_STATE_ASSIGNED",
        "TASK_STATE_RUNNING",     "TASK_STATE_COMPLETED", "TASK_STATE_FAILED",
        "TASK_STATE_CANCELLED",
    };
    return state_ok((int)s) ? names[s] : "TASK_STATE_UNKNOWN";
}

const char *am_agent_status_name(am_agent_status s)
{
    switch (s) {
    case AM_AGENT_ONLINE: return "AGENT_STATUS_ONLINE";
    case AM_AGENT_OFFLINE: return "AGENT_STATUS_OFFLINE";
    case AM_AGENT_DEREGISTERED: return "AGENT_STATUS_DEREGISTERED";
    default: return "AGENT_STATUS_UNSPECIFIED";
    }
}

const char *am_task_cmd_name(am_task_cmd c)
{
    static const char *const names[AM_TASK_CMD_COUNT] = {
        "assign", "start", "progress", "complete", "fail", "cancel", "retry",
    };
    return ((int)c >= 0 && c < AM_TASK_CMD_COUNT) ? names[c] : "unknown";
}

static bool id_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
           c == '-';
}

bool am_id_valid(const char *s)
{
    if (!s || !*s)
        return false;
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= AM_ID_MAX || !id_char(s[n]))
            return false;
    return true;
}

/* No control characters (bytes < 0x20 and DEL); other bytes pass. */
static bool printable(const char *s, size_t max)
{
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= max || (unsigned char)s[n] < 0x20 || s[n] == 0x7f)
            return false;
    return true;
}

bool am_name_valid(const char *s)
{
    return s && *s && printable(s, AM_NAME_MAX);
}

static bool cap_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == '-';
}

bool am_capability_valid(const char *s)
{
    if (!s || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
        return false;
    size_t n = 0;
    for (; s[n]; n++)
        if (n >= AM_CAP_MAX || !cap_char(s[n]))
            return false;
    return true;
}

bool am_label_key_valid(const char *s)
{
    if (!s || !*s || !(id_char(s[0]) && s[0] != '.' && s[0] != '_' &&
                       s[0] != ':' && s[0] != '-'))
        return false;
    size_t n = 0;
    for (; s[n]; n++) {
        char c = s[n];
        if (n >= AM_LABEL_KEY_MAX || c == ':' || !(id_char(c) || c == '/'))
            return false;
    }
    return true;
}

bool am_label_value_valid(const char *s)
{
    return s && printable(s, AM_LABEL_VALUE_MAX);
}

bool am_text_valid(const char *s, size_t max)
{
    return !s || strnlen(s, max + 1) <= max;
}

long am_pick_agent(const am_candidate *c, size_t n)
{
    long best = -1;
    for (size_t i = 0; i < n; i++) {
        const am_candidate *a = &c[i];
        if (a->status != AM_AGENT_ONLINE || a->busy || !a->has_caps ||
            a->load >= a->max_concurrency)
            continue;
        if (best < 0) {
            best = (long)i;
            continue;
        }
        const am_candidate *b = &c[best];
        if (a->load < b->load ||
            (a->load == b->load &&
             (uint64_t)a->load * b->max_concurrency <
                 (uint64_t)b->load * a->max_concurrency))
            best = (long)i;
    }
    return best;
}

bool am_snapshot_due(uint64_t every, uint64_t since, uint64_t last_entities)
{
    return every > 0 && since >= every && since >= last_entities;
}
