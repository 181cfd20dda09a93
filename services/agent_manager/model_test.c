/* Unit test of the agent manager's pure rules: every (from, to) pair of the
 * task state machine, every command in every state, the input syntax, the
 * least-loaded assignment choice and when a periodic snapshot is due. */
#include <stdio.h>
#include <string.h>

#include "services/agent_manager/model.h"
#include "services/common/test_util.h"



#define U AM_TASK_UNSPECIFIED
#define P AM_TASK_PENDING
#define A AM_TASK_ASSIGNED
#define R AM_TASK_RUNNING
#define C AM_TASK_COMPLETED
#define F AM_TASK_FAILED
#define X AM_TASK_CANCELLED

/* The DESIGN's table, written out independently of model.c: 1 = allowed. */
static const int pairs[7][7] = {
    /*        U  P  A  R  C  F  X */
    /* U */ {0, 0, 0, 0, 0, 0, 0},
    /* P */ {0, 0, 1, 0, 0, 0, 1},
    /* A */ {0, 0, 0, 1, 0, 0, 1},
    /* R */ {0, 0, 0, 1, 1, 1, 1}, /* R->R is progress */
    /* C */ {0, 0, 0, 0, 0, 0, 0},
    /* F */ {0, 1, 0, 0, 0, 0, 0},
    /* X */ {0, 0, 0, 0, 0, 0, 0},
};

/* Expected result of each command in each state: the target, or 0. */
static const int by_cmd[AM_TASK_CMD_COUNT][7] = {
    /*                U  P  A  R  C  F  X */
    [AM_CMD_ASSIGN] = {0, A, 0, 0, 0, 0, 0},
    [AM_CMD_START] = {0, 0, R, 0, 0, 0, 0},
    [AM_CMD_PROGRESS] = {0, 0, 0, R, 0, 0, 0},
    [AM_CMD_COMPLETE] = {0, 0, 0, C, 0, 0, 0},
    [AM_CMD_FAIL] = {0, 0, 0, F, 0, 0, 0},
    [AM_CMD_CANCEL] = {0, X, X, X, 0, 0, 0},
    [AM_CMD_RETRY] = {0, 0, 0, 0, 0, P, 0},
};

static void test_pairs(void)
{
    int allowed = 0;
    for (int from = 0; from < AM_TASK_STATE_COUNT; from++)
        for (int to = 0; to < AM_TASK_STATE_COUNT; to++) {
            bool got = am_task_transition_allowed((am_task_state)from, (am_task_state)to);
            if (got != (bool)pairs[from][to]) {
                fprintf(stderr, "pair %s -> %s: got %d\n",
                        am_task_state_name((am_task_state)from),
                        am_task_state_name((am_task_state)to), got);
                test_failures++;
            }
            allowed += got;
        }
    CHECK(allowed == 9);
    CHECK(!am_task_transition_allowed((am_task_state)-1, P));
    CHECK(!am_task_transition_allowed(P, (am_task_state)7));
}

static void test_commands(void)
{
    for (int c = 0; c < AM_TASK_CMD_COUNT; c++)
        for (int from = 0; from < AM_TASK_STATE_COUNT; from++) {
            am_task_state to = AM_TASK_UNSPECIFIED;
            bool ok = am_task_next_state((am_task_state)from, (am_task_cmd)c, &to);
            int want = by_cmd[c][from];
            if (ok != (want != 0) || (ok && (int)to != want)) {
                fprintf(stderr, "command %s in %s: ok=%d to=%s\n",
                        am_task_cmd_name((am_task_cmd)c),
                        am_task_state_name((am_task_state)from), ok,
                        am_task_state_name(to));
                test_failures++;
            }
            /* Whatever a command allows is a pair of the table. */
            if (ok)
                CHECK(am_task_transition_allowed((am_task_state)from, (am_task_state)to));
        }
    am_task_state to;
    CHECK(!am_task_next_state(P, (am_task_cmd)AM_TASK_CMD_COUNT, &to));
    CHECK(!am_task_next_state((am_task_state)9, AM_CMD_CANCEL, &to));
}

static void test_classes(void)
{
    CHECK(am_task_state_final(C) && am_task_state_final(X));
    CHECK(!am_task_state_final(F) && !am_task_state_final(R));
    CHECK(am_task_state_active(A) && am_task_state_active(R));
    CHECK(!am_task_state_active(P) && !am_task_state_active(C));
    CHECK(strcmp(am_task_state_name(R), "TASK_STATE_RUNNING") == 0);
    CHECK(strcmp(am_agent_status_name(AM_AGENT_OFFLINE),
                 "AGENT_STATUS_OFFLINE") == 0);
}

static void test_syntax(void)
{
    char long_id[AM_ID_MAX + 2];
    memset(long_id, 'a', sizeof long_id - 1);
    long_id[sizeof long_id - 1] = '\0';
    CHECK(!am_id_valid(long_id));
    long_id[AM_ID_MAX] = '\0';
    CHECK(am_id_valid(long_id));
    CHECK(am_id_valid("task-1.a_b:c"));
    CHECK(!am_id_valid(""));
    CHECK(!am_id_valid(NULL));
    CHECK(!am_id_valid("a b"));
    CHECK(!am_id_valid("a/b"));

    CHECK(am_capability_valid("gpu"));
    CHECK(am_capability_valid("lang.python-3_11"));
    CHECK(am_capability_valid("9x"));
    CHECK(!am_capability_valid("GPU"));
    CHECK(!am_capability_valid("-gpu"));
    CHECK(!am_capability_valid(""));
    CHECK(!am_capability_valid("a b"));
    char cap[AM_CAP_MAX + 2];
    memset(cap, 'c', sizeof cap - 1);
    cap[sizeof cap - 1] = '\0';
    CHECK(!am_capability_valid(cap));
    cap[AM_CAP_MAX] = '\0';
    CHECK(am_capability_valid(cap));

    CHECK(am_name_valid("Agent Smith"));
    CHECK(!am_name_valid(""));
    CHECK(!am_name_valid("tab\there"));
    CHECK(am_label_key_valid("team"));
    CHECK(am_label_key_valid("k8s.io/zone"));
    CHECK(!am_label_key_valid("-x"));
    CHECK(!am_label_key_valid("a:b"));
    CHECK(am_label_value_valid(""));
    CHECK(!am_label_value_valid("a\nb"));
    CHECK(am_text_valid(NULL, 3) && am_text_valid("abc", 3));
    CHECK(!am_text_valid("abcd", 3));
}

static void test_pick(void)
{
    am_candidate c[4] = {
        {AM_AGENT_ONLINE, false, true, 2, 4},
        {AM_AGENT_ONLINE, false, true, 1, 4},
        {AM_AGENT_ONLINE, false, true, 1, 8},
        {AM_AGENT_ONLINE, false, false, 0, 4},
    };
    CHECK(am_pick_agent(c, 4) == 2);      /* fewest, then lower ratio */
    c[2].busy = true;
    CHECK(am_pick_agent(c, 4) == 1);
    c[1].status = AM_AGENT_OFFLINE;
    CHECK(am_pick_agent(c, 4) == 0);
    c[0].load = 4;                        /* full */
    CHECK(am_pick_agent(c, 4) == -1);
    c[3].has_caps = true;
    CHECK(am_pick_agent(c, 4) == 3);
    c[3].status = AM_AGENT_DEREGISTERED;
    CHECK(am_pick_agent(c, 4) == -1);
    CHECK(am_pick_agent(c, 0) == -1);
    am_candidate tie[2] = {{AM_AGENT_ONLINE, false, true, 0, 1},
                           {AM_AGENT_ONLINE, false, true, 0, 1}};
    CHECK(am_pick_agent(tie, 2) == 0);    /* earlier registration */
}

static void test_snapshot_due(void)
{
    CHECK(!am_snapshot_due(0, 1000000, 0));    /* 0: only at shutdown */
    CHECK(!am_snapshot_due(1000, 999, 0));
    CHECK(am_snapshot_due(1000, 1000, 0));     /* none yet, or a small one */
    CHECK(am_snapshot_due(1000, 1000, 1000));
    CHECK(!am_snapshot_due(1000, 1000, 1001)); /* a large one: its size */
    CHECK(!am_snapshot_due(1000, 99999, 100000));
    CHECK(am_snapshot_due(1000, 100000, 100000));
    CHECK(am_snapshot_due(1, 1, 0));
    /* One new task per event from an empty state, every = 1000: the
     * snapshots come at 1000, 2000, 4000, ... events, doubling. */
    uint64_t last = 0, at = 0, taken[8], n = 0;
    for (uint64_t applied = 1; applied <= 64000 && n < 8; applied++)
        if (am_snapshot_due(1000, applied - at, last)) {
            taken[n++] = applied;
            at = applied;
            last = applied; /* entities = tasks = events so far */
        }
    CHECK(n == 7);
    for (uint64_t i = 0; i < n; i++)
        CHECK(taken[i] == 1000u << i);
}

int main(void)
{
    test_pairs();
    test_commands();
    test_classes();
    test_syntax();
    test_pick();
    test_snapshot_due();
    if (test_failures) {
        fprintf(stderr, "%d failures\n", test_failures);
        return 1;
    }
    printf("model_test: all checks passed\n");
    return 0;
}
