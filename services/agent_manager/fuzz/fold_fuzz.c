/* fold_fuzz.c: libFuzzer driver for what the agent manager parses from its
 * own store: state snapshots (am_snapshot_decode) and event payloads folded
 * into the state (am_state_apply). Input: byte 0 odd = a snapshot follows;
 * even = records of [type index][stream selector][length][payload bytes].
 * After each step the state's indexes must stay consistent. Built with
 * -DAM_LIBFUZZER under clang -fsanitize=fuzzer (run.sh); otherwise its own
 * main replays a corpus, which is how the committed seeds run as a test. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "services/agent_manager/internal.h"

static const char *const types[] = {
    AM_EV_AGENT_REGISTERED, AM_EV_AGENT_UPDATED,   AM_EV_AGENT_DEREGISTERED,
    AM_EV_AGENT_ONLINE,     AM_EV_AGENT_OFFLINE,   AM_EV_TASK_SUBMITTED,
    AM_EV_TASK_ASSIGNED,    AM_EV_TASK_STARTED,    AM_EV_TASK_PROGRESSED,
    AM_EV_TASK_COMPLETED,   AM_EV_TASK_FAILED,     AM_EV_TASK_CANCELLED,
    AM_EV_TASK_RETRIED,     "agentmesh.v1.Unknown",
};
#define NTYPES (sizeof types / sizeof types[0])

static const char *const streams[] = {
    "agent-a0", "agent-a1", "task-t0", "task-t1", "task-t2", "other-x",
};
#define NSTREAMS (sizeof streams / sizeof streams[0])

/* The pending queue is ordered and holds PENDING tasks once each; the maps
 * agree with the lists. */
static void check(am_state *st)
{
    for (size_t i = 0; i < st->n_pending; i++) {
        if (st->pending[i]->state != AM_TASK_PENDING)
            abort();
        if (i && am_pending_cmp(st->pending[i - 1], st->pending[i]) > 0)
            abort();
        for (size_t j = 0; j < i; j++)
            if (st->pending[j] == st->pending[i])
                abort();
    }
    for (size_t i = 0; i < st->n_tasks; i++) {
        am_task *t = st->task_list[i];
        if (am_map_get(st->tasks, t->id) != t)
            abort();
        /* An entry names a task that carries its key. (A key can lose its
         * entry only in histories no service writes: a task resubmitted with
         * another key.) */
        if (t->idem_key) {
            am_task *o = am_map_get(st->idem, t->idem_key);
            if (o && (!o->idem_key || strcmp(o->idem_key, t->idem_key)))
                abort();
        }
    }
    for (size_t i = 0; i < st->n_agents; i++)
        if (am_map_get(st->agents, st->agent_list[i]->id) != st->agent_list[i])
            abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    am_state st;
    uint64_t versions[NSTREAMS] = {0};
    if (size < 1 || am_state_init(&st))
        return 0;
    if (data[0] & 1) {
        uint64_t w = 0;
        if (am_snapshot_decode(&st, data + 1, size - 1, &w) == ES_OK)
            check(&st);
        am_state_free(&st);
        return 0;
    }
    size_t at = 1;
    uint64_t position = 0;
    while (size - at >= 3) {
        size_t ti = data[at] % NTYPES, si = data[at + 1] % NSTREAMS;
        size_t len = data[at + 2];
        at += 3;
        if (len > size - at)
            len = size - at;
        es_event ev;
        memset(&ev, 0, sizeof ev);
        ev.type = types[ti];
        ev.type_len = strlen(ev.type);
        ev.stream = streams[si];
        ev.stream_len = strlen(ev.stream);
        ev.stream_version = versions[si]++;
        ev.position = ++position;
        ev.time_unix_nano = (int64_t)position * 1000;
        ev.data = data + at;
        ev.data_len = len;
        at += len;
        if (am_state_apply(&st, &ev) == -1)
            break;
        check(&st);
        /* The same event on a lone copy, as WatchTask folds it. */
        am_task *t = am_map_get(st.tasks, "t0");
        if (t) {
            am_task *copy = am_task_clone(t);
            bool changed;
            if (copy) {
                am_task_apply(copy, &ev, &changed);
                am_task_free(copy);
            }
        }
    }
    /* What was folded must survive a snapshot round trip. */
    uint8_t *buf = NULL;
    size_t len = 0;
    am_service fake;
    memset(&fake, 0, sizeof fake);
    fake.st = st;
    if (am_snapshot_encode(&fake, &buf, &len) == ES_OK) {
        am_state again;
        uint64_t w = 0;
        if (am_state_init(&again) == 0) {
            if (am_snapshot_decode(&again, buf, len, &w) != ES_OK ||
                again.n_tasks != st.n_tasks || again.n_agents != st.n_agents ||
                again.n_pending != st.n_pending)
                abort();
            check(&again);
            am_state_free(&again);
        }
        free(buf);
    }
    am_state_free(&st);
    return 0;
}

#ifndef AM_LIBFUZZER
static int replay_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    if (!f) {
        fprintf(stderr, "fold_fuzz: cannot open %s\n", path);
        return -1;
    }
    for (;;) {
        if (len == cap) {
            size_t nc = cap ? cap * 2 : 4096;
            uint8_t *nb = realloc(buf, nc);
            if (!nb) {
                rc = -1;
                goto out;
            }
            buf = nb;
            cap = nc;
        }
        size_t r = fread(buf + len, 1, cap - len, f);
        if (r == 0)
            break;
        len += r;
    }
    LLVMFuzzerTestOneInput(buf, len);
    (*n)++;
out:
    free(buf);
    fclose(f);
    return rc;
}

int main(int argc, char **argv)
{
    size_t n = 0;
    for (int i = 1; i < argc; i++) {
        struct stat sb;
        if (stat(argv[i], &sb) != 0) {
            fprintf(stderr, "fold_fuzz: no %s\n", argv[i]);
            return 1;
        }
        if (!S_ISDIR(sb.st_mode)) {
            if (replay_file(argv[i], &n))
                return 1;
            continue;
        }
        DIR *d = opendir(argv[i]);
        struct dirent *e;
        while (d && (e = readdir(d))) {
            char path[4096];
            if (e->d_name[0] == '.')
                continue;
            snprintf(path, sizeof path, "%s/%s", argv[i], e->d_name);
            if (replay_file(path, &n)) {
                closedir(d);
                return 1;
            }
        }
        if (d)
            closedir(d);
    }
    printf("fold_fuzz: replayed %zu inputs\n", n);
    return n ? 0 : 1;
}
#endif
