/* Unit test of the exactly-once apply path: batches with duplicates, a gap,
 * redelivery in any order and a reopened env, checked through the stats,
 * the task listing and the per-source feed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agentmesh/v1/events.pb-c.h"
#include "services/query/query.h"

#define CHECK(c)                                                              \
    do {                                                                      \
        if (!(c)) {                                                           \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #c);                                                      \
            exit(1);                                                          \
        }                                                                     \
    } while (0)

/* An event of `source` with payload m, as the EventStore API would hand it
 * out (its type is m's full name). */
static qs_event *event_of(int source, uint64_t position, char *stream,
                          uint64_t stream_version, const ProtobufCMessage *m,
                          int64_t time_unix_nano)
{
    uint8_t buf[256];
    char eid[40], type[80];
    CHECK(protobuf_c_message_get_packed_size(m) <= sizeof buf);
    size_t len = protobuf_c_message_pack(m, buf);
    snprintf(eid, sizeof eid, "00000000-0000-0000-%04d-%012llu", source,
             (unsigned long long)position);
    snprintf(type, sizeof type, "%s", m->descriptor->name);
    Agentmesh__V1__Event e = AGENTMESH__V1__EVENT__INIT;
    e.event_id = eid;
    e.stream = stream;
    e.position = position;
    e.stream_version = stream_version;
    e.type = type;
    e.time_unix_nano = time_unix_nano;
    e.data.data = buf;
    e.data.len = len;
    qs_event *ev = NULL;
    CHECK(qs_event_from_proto(source, &e, NULL, &ev) == ES_OK);
    return ev;
}

/* A TaskSubmitted event at `position` (task "t<position>"), as the
 * EventStore API would hand it out. */
static qs_event *submitted(uint64_t position)
{
    char id[32], stream[40];
    snprintf(id, sizeof id, "t%llu", (unsigned long long)position);
    snprintf(stream, sizeof stream, "task-%s", id);
    Agentmesh__V1__TaskSubmitted p = AGENTMESH__V1__TASK_SUBMITTED__INIT;
    char *caps[] = {"py", "gpu"};
    p.task_id = id;
    p.input = "{}";
    /* Some name an agent and capabilities, so every index is written. */
    if (position % 3 == 0) {
        p.agent_id = "agent-7";
        p.required_capabilities = caps;
        p.n_required_capabilities = 2;
        p.priority = 5;
        p.idempotency_key = "idem";
    }
    p.submitted_at_unix_nano = 1000000000ll * (int64_t)position;
    return event_of(QS_AGENTS, position, stream, 0, &p.base,
                    p.submitted_at_unix_nano + 5000000);
}

/* Task t<task> assigned to agent-7 at `position`, version 1 of its stream. */
static qs_event *assigned(uint64_t position, uint64_t task)
{
    char id[32], stream[40];
    snprintf(id, sizeof id, "t%llu", (unsigned long long)task);
    snprintf(stream, sizeof stream, "task-%s", id);
    Agentmesh__V1__TaskAssigned a = AGENTMESH__V1__TASK_ASSIGNED__INIT;
    a.task_id = id;
    a.agent_id = "agent-7";
    a.attempt = 1;
    return event_of(QS_AGENTS, position, stream, 1, &a.base,
                    1000000000ll * (int64_t)position);
}

/* A MemoryWritten at `position` of memory-sync's log: key k<position % 5>
 * of namespace n<position % 2>, so later writes overwrite earlier ones. */
static qs_event *memwritten(uint64_t position)
{
    char ns[8], key[8], stream[24];
    snprintf(ns, sizeof ns, "n%llu", (unsigned long long)(position % 2));
    snprintf(key, sizeof key, "k%llu", (unsigned long long)(position % 5));
    snprintf(stream, sizeof stream, "memory-%s", ns);
    uint8_t hash[32] = {1, 2, 3}, sealed[40] = {9};
    Agentmesh__V1__MemoryWritten w = AGENTMESH__V1__MEMORY_WRITTEN__INIT;
    w.namespace_ = ns;
    w.key = key;
    w.version = position;
    w.size = 12;
    w.content_hash.data = hash;
    w.content_hash.len = sizeof hash;
    w.content_type = "text/plain";
    w.replica_id = "r1";
    w.hlc = position << 16;
    w.sealed_value.data = sealed;
    w.sealed_value.len = sizeof sealed;
    qs_event *ev = event_of(QS_MEMORY, position, stream, position / 2, &w.base,
                            1000000000ll * (int64_t)position);
    return ev;
}

static qs_apply_result apply(qs_db *db, const uint64_t *pos, size_t n)
{
    qs_event *evs[16] = {NULL};
    qs_apply_result res;
    for (size_t i = 0; i < n; i++)
        evs[i] = submitted(pos[i]);
    CHECK(qs_apply(db, QS_AGENTS, evs, n, &res) == ES_OK);
    for (size_t i = 0; i < n; i++)
        qs_event_free(evs[i]);
    return res;
}

/* events_total, the PENDING count, the number of listed tasks and of feed
 * events, which must all agree. */
static uint64_t counts(qs_db *db)
{
    es_txn *txn = NULL;
    CHECK(es_txn_begin(qs_db_store(db), &txn) == ES_OK);
    Agentmesh__V1__GetStatsResponse st = AGENTMESH__V1__GET_STATS_RESPONSE__INIT;
    CHECK(qs_stats_get(txn, &st) == ES_OK);
    uint64_t pending = 0;
    for (size_t i = 0; i < st.n_tasks_by_state; i++)
        if (!strcmp(st.tasks_by_state[i]->key, "TASK_STATE_PENDING"))
            pending = st.tasks_by_state[i]->value;
    qs_map_free((void **)st.tasks_by_state, st.n_tasks_by_state);
    qs_map_free((void **)st.agents_by_status, st.n_agents_by_status);
    Agentmesh__V1__ListTasksRequest rq = AGENTMESH__V1__LIST_TASKS_REQUEST__INIT;
    rq.page_size = 1000;
    Agentmesh__V1__ListTasksResponse rs = AGENTMESH__V1__LIST_TASKS_RESPONSE__INIT;
    char msg[128];
    CHECK(qs_tasks_list(txn, &rq, &rs, msg, sizeof msg) == ES_OK);
    qs_feed_filter f = {QS_AGENTS, NULL, NULL, 0};
    Agentmesh__V1__Event **evs = NULL;
    size_t n = 0;
    uint64_t cursor = 0;
    CHECK(qs_feed_list(txn, &f, 0, 1000, &evs, &n, &cursor) == ES_OK);
    for (size_t i = 0; i < n; i++)
        CHECK(evs[i]->position == i + 1);
    CHECK(st.events_total == pending && pending == rs.n_tasks && n == pending);
    for (size_t i = 0; i < rs.n_tasks; i++)
        protobuf_c_message_free_unpacked(&rs.tasks[i]->base, NULL);
    free(rs.tasks);
    qs_free_events(evs, n);
    uint64_t pos[QS_NSOURCES];
    qs_db_positions(txn, pos);
    CHECK(pos[QS_AGENTS] == pending);
    es_txn_end(txn);
    return pending;
}

/* Applies the 16 events make(first..first+15) of a source, each with its
 * prepared record, or with the record dropped (`strip`). */
static void apply_16(qs_db *db, int source, qs_event *(*make)(uint64_t),
                     uint64_t first, bool strip)
{
    qs_event *evs[16];
    qs_apply_result res;
    for (size_t i = 0; i < 16; i++) {
        evs[i] = make(first + i);
        CHECK(evs[i]->rec != NULL);
        if (strip) {
            free(evs[i]->rec);
            evs[i]->rec = NULL;
        }
    }
    CHECK(qs_apply(db, source, evs, 16, &res) == ES_OK);
    CHECK(res.applied == 16);
    for (size_t i = 0; i < 16; i++)
        qs_event_free(evs[i]);
}

/* The record of a new task and a memory entry is made where the event is
 * decoded; applied without it (as the general path does), and without the
 * writable map (as a rebuild writes), the read models are the same. */
static void test_prepared_records(const char *base)
{
    char dir[2][600];
    char *text[2] = {NULL, NULL};
    size_t len[2] = {0, 0};
    for (int k = 0; k < 2; k++) {
        snprintf(dir[k], sizeof dir[k], "%s/prepared-%d", base, k);
        qs_db *db = NULL;
        /* The second env is also opened as a rebuild opens it. */
        CHECK((k ? qs_db_open_bulk : qs_db_open)(dir[k], false, &db) == ES_OK);
        for (uint64_t first = 1; first <= 48; first += 16) {
            apply_16(db, QS_AGENTS, submitted, first, k == 1);
            apply_16(db, QS_MEMORY, memwritten, first, k == 1);
        }
        /* Tasks t1..t8 assigned (positions 49..56): timeline entries. */
        qs_event *more[8];
        qs_apply_result res;
        for (uint64_t i = 0; i < 8; i++)
            more[i] = assigned(49 + i, 1 + i);
        CHECK(qs_apply(db, QS_AGENTS, more, 8, &res) == ES_OK && res.applied == 8);
        for (size_t i = 0; i < 8; i++)
            qs_event_free(more[i]);
        qs_db_close(db);
        FILE *f = open_memstream(&text[k], &len[k]);
        CHECK(f && qs_dump(dir[k], f) == ES_OK);
        fclose(f);
        CHECK(qs_db_remove_env(dir[k]) == ES_OK);
        rmdir(dir[k]);
    }
    CHECK(len[0] > 1000 && len[0] == len[1] && !memcmp(text[0], text[1], len[0]));
    CHECK(strstr(text[0], "q.tasks.agent ") && strstr(text[0], "q.timeline ") &&
          strstr(text[0], "q.memory "));
    free(text[0]);
    free(text[1]);
}

static int count_rows(void *arg, const void *k, size_t kl, const void *v,
                      size_t vl)
{
    (void)k;
    (void)kl;
    (void)v;
    (void)vl;
    (*(int *)arg)++;
    return 0;
}

static void check_timeline(qs_db *db, const char *task, const uint64_t *want,
                           size_t n)
{
    es_txn *txn = NULL;
    Agentmesh__V1__GetTaskTimelineResponse r =
        AGENTMESH__V1__GET_TASK_TIMELINE_RESPONSE__INIT;
    CHECK(es_txn_begin(qs_db_store(db), &txn) == ES_OK);
    int rc = qs_tasks_timeline(txn, task, &r);
    es_txn_end(txn);
    if (!n) {
        CHECK(rc == ES_NOT_FOUND);
        return;
    }
    CHECK(rc == ES_OK && r.n_events == n);
    for (size_t i = 0; i < n; i++)
        CHECK(r.events[i]->position == want[i]);
    qs_free_events(r.events, r.n_events);
}

/* A task's timeline: the event that created it (implied by its record, no
 * entry of its own), then each later event that changed it, in order; a
 * task without a record has none. */
static void test_timeline(const char *base)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s/timeline", base);
    qs_db *db = NULL;
    CHECK(qs_db_open(dir, false, &db) == ES_OK);
    qs_event *evs[4] = {submitted(1), submitted(2), assigned(3, 1), NULL};
    qs_apply_result res;
    CHECK(qs_apply(db, QS_AGENTS, evs, 3, &res) == ES_OK && res.applied == 3);
    for (size_t i = 0; i < 3; i++)
        qs_event_free(evs[i]);
    const uint64_t t1[] = {1, 3}, t2[] = {2};
    check_timeline(db, "t1", t1, 2);
    check_timeline(db, "t2", t2, 1);
    check_timeline(db, "t9", NULL, 0);
    /* The creating event makes no q.timeline row; the assignment does. */
    es_txn *txn = NULL;
    int rows = 0;
    CHECK(es_txn_begin(qs_db_store(db), &txn) == ES_OK);
    CHECK(es_kv_scan(txn, "q.timeline", NULL, 0, count_rows, &rows) == ES_OK);
    es_txn_end(txn);
    CHECK(rows == 1);
    qs_db_close(db);
    CHECK(qs_db_remove_env(dir) == ES_OK);
    rmdir(dir);
}

/* A page source for catch-up: positions 1..total, optionally with one
 * position missing (a source that is not dense). */
typedef struct fake_log {
    uint64_t total;
    uint64_t hole; /* 0: none */
} fake_log;

static int fake_read(void *src, int source, uint64_t from, unsigned limit,
                     qs_arena *ar, qs_event ***events, size_t *n, bool *end,
                     uint64_t *next, char *msg, size_t msglen)
{
    const fake_log *f = src;
    (void)source;
    (void)ar;
    (void)msg;
    (void)msglen;
    qs_event **v = calloc(limit, sizeof *v);
    size_t k = 0;
    uint64_t p = from;
    CHECK(v);
    for (; p <= f->total && k < limit; p++)
        if (p != f->hole)
            v[k++] = submitted(p);
    *events = v;
    *n = k;
    *end = p > f->total;
    *next = p;
    return ES_OK;
}

static void test_parallel_catch_up(const char *base)
{
    char dir[600];
    snprintf(dir, sizeof dir, "%s/parallel", base);
    for (int threads = 1; threads <= 3; threads++) {
        qs_db *db = NULL;
        uint64_t applied = 0;
        fake_log dense = {950, 0};
        CHECK(qs_db_open(dir, false, &db) == ES_OK);
        CHECK(qs_catch_up_from(db, fake_read, &dense, QS_AGENTS, 100,
                               (unsigned)threads, &applied, NULL, NULL,
                               NULL) == ES_OK);
        CHECK(applied == 950 && counts(db) == 950);
        qs_db_close(db);
        CHECK(qs_db_remove_env(dir) == ES_OK);
        /* Read at computed positions, a page short of one position would
         * leave a hole: refused. (One thread reads on from where the page
         * ended, so it sees a gap in the log instead: refused too.) */
        fake_log holed = {950, 534};
        CHECK(qs_db_open(dir, false, &db) == ES_OK);
        CHECK(qs_catch_up_from(db, fake_read, &holed, QS_AGENTS, 100,
                               (unsigned)threads, &applied, NULL, NULL,
                               NULL) == ES_CORRUPT);
        uint64_t pos[QS_NSOURCES];
        qs_db_positions_now(db, pos);
        CHECK(pos[QS_AGENTS] < 534);
        qs_db_close(db);
        CHECK(qs_db_remove_env(dir) == ES_OK);
    }
    rmdir(dir);
}

/* What the first layout wrote: a task index key and a checkpoint. */
static int old_layout(es_txn *txn, const es_append_result *ap, void *arg)
{
    (void)ap;
    (void)arg;
    int rc = es_kv_put(txn, "q.tasks", "t1", 2, "x", 1);
    return rc ? rc : es_checkpoint_put(txn, "agents", 5);
}

/* What layout 2 wrote: per-namespace databases, q.layout = 2, and a
 * q.timeline row for the event that created a task. */
static int layout_2(es_txn *txn, const es_append_result *ap, void *arg)
{
    (void)ap;
    (void)arg;
    uint8_t k[11] = {'t', '1', 0}, v[8] = {0, 0, 0, 0, 0, 0, 0, 1};
    int rc = es_kv_put(txn, "q.timeline", k, sizeof k, v, sizeof v);
    if (!rc)
        rc = es_checkpoint_put(txn, "q.layout", 2);
    return rc ? rc : es_checkpoint_put(txn, "agents", 5);
}

/* Writes an env of an earlier layout in dir (with `fn`, the namespaces'
 * own databases when kv_dbs is set) and opens it as the service does: it
 * is dropped, and the projection starts again from position 1. */
static qs_db *reopen_layout(const char *dir, const char *const *kv_dbs,
                            es_txn_fn fn)
{
    es_store *old = NULL;
    es_options eo;
    qs_db *db = NULL;
    uint64_t pos[QS_NSOURCES];
    CHECK(qs_db_remove_env(dir) == ES_OK);
    es_options_init(&eo);
    eo.flags |= ES_OPT_NOSYNC;
    eo.kv_dbs = kv_dbs;
    CHECK(es_open(dir, &eo, &old) == ES_OK);
    CHECK(es_write(old, fn, NULL) == ES_OK);
    es_close(old);
    CHECK(qs_db_open(dir, false, &db) == ES_OK);
    CHECK(qs_db_reset_reason(db) != NULL &&
          strstr(qs_db_reset_reason(db), "layout"));
    qs_db_positions_now(db, pos);
    CHECK(pos[QS_AGENTS] == 0 && counts(db) == 0);
    qs_apply_result r = apply(db, (uint64_t[]){1, 2}, 2);
    CHECK(r.applied == 2 && counts(db) == 2);
    return db;
}

int main(void)
{
    char dir[512];
    const char *tmp = getenv("TEST_TMPDIR");
    snprintf(dir, sizeof dir, "%s/qs-apply-test-XXXXXX", tmp ? tmp : "/tmp");
    CHECK(mkdtemp(dir));
    test_prepared_records(dir);
    test_timeline(dir);
    test_parallel_catch_up(dir);
    qs_db *db = NULL;
    CHECK(qs_db_open(dir, false, &db) == ES_OK);

    qs_apply_result r = apply(db, (uint64_t[]){1, 2, 3}, 3);
    CHECK(r.applied == 3 && r.duplicates == 0 && !r.gap && r.checkpoint == 3);
    CHECK(counts(db) == 3);
    /* Redelivery overlapping the checkpoint: only 4 is new. */
    r = apply(db, (uint64_t[]){2, 3, 4}, 3);
    CHECK(r.applied == 1 && r.duplicates == 2 && r.checkpoint == 4);
    CHECK(counts(db) == 4);
    /* A gap: 5 applies, 7 stops the batch, 8 is not looked at. */
    r = apply(db, (uint64_t[]){5, 7, 8}, 3);
    CHECK(r.applied == 1 && r.gap && r.checkpoint == 5);
    CHECK(counts(db) == 5);
    /* Everything again, then the missing one and beyond. */
    r = apply(db, (uint64_t[]){1, 2, 3, 4, 5}, 5);
    CHECK(r.applied == 0 && r.duplicates == 5);
    r = apply(db, (uint64_t[]){6, 7, 8}, 3);
    CHECK(r.applied == 3 && !r.gap && r.checkpoint == 8);
    CHECK(counts(db) == 8);
    /* A reopened env continues from its checkpoint. */
    qs_db_close(db);
    CHECK(qs_db_open(dir, false, &db) == ES_OK);
    uint64_t pos[QS_NSOURCES];
    qs_db_positions_now(db, pos);
    CHECK(pos[QS_AGENTS] == 8 && pos[QS_MEMORY] == 0);
    r = apply(db, (uint64_t[]){8, 9}, 2);
    CHECK(r.applied == 1 && r.duplicates == 1);
    CHECK(counts(db) == 9);
    /* A wait for a reached position returns at once, for an unreached one
     * at its deadline. */
    atomic_int cancelled = 0;
    CHECK(qs_db_wait_positions(db, (uint64_t[]){9, 0}, qs_mono_ms() + 1000,
                               &cancelled) == ES_OK);
    CHECK(qs_db_wait_positions(db, (uint64_t[]){10, 0}, qs_mono_ms() + 50,
                               &cancelled) == ES_TIMEOUT);
    CHECK(qs_db_reset_reason(db) == NULL);
    qs_db_close(db);

    /* An env of the older layout (read models in the one shared database,
     * no layout marker) is not read as empty: it is dropped, and the
     * projection starts again from position 1. */
    db = reopen_layout(dir, NULL, old_layout);
    qs_db_close(db);
    CHECK(qs_db_open(dir, false, &db) == ES_OK);
    CHECK(qs_db_reset_reason(db) == NULL && counts(db) == 2);

    /* Layout 2 (a task's creating event had a timeline row of its own) is
     * dropped the same way. */
    qs_db_close(db);
    db = reopen_layout(dir, qs_namespaces, layout_2);

    /* Open without sync, the env carries a marker with the boot id. A
     * process that dies leaves it with this boot's id: the env is kept (the
     * page cache has every page). Left by another boot, the machine went
     * down with the env open: dropped and projected again. A clean close
     * removes it. */
    char marker[600];
    snprintf(marker, sizeof marker, "%s/query-open", dir);
    CHECK(access(marker, F_OK) == 0);
    char boot[64] = "", seen[64] = "";
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f) {
        CHECK(fgets(boot, sizeof boot, f) != NULL);
        fclose(f);
    }
    f = fopen(marker, "r");
    CHECK(f && fgets(seen, sizeof seen, f));
    fclose(f);
    CHECK(!strcmp(seen, boot));
    qs_db_close(db);
    CHECK(access(marker, F_OK) != 0);
    f = fopen(marker, "w"); /* a process crash: this boot's id */
    CHECK(f && fputs(boot, f) >= 0);
    fclose(f);
    CHECK(qs_db_open(dir, false, &db) == ES_OK);
    CHECK(qs_db_reset_reason(db) == NULL && counts(db) == 2);
    qs_db_close(db);
    f = fopen(marker, "w"); /* the machine went down */
    CHECK(f && fputs("00000000-0000-0000-0000-000000000000\n", f) >= 0);
    fclose(f);
    CHECK(qs_db_open(dir, false, &db) == ES_OK);
    CHECK(qs_db_reset_reason(db) != NULL &&
          strstr(qs_db_reset_reason(db), "went down"));
    qs_db_positions_now(db, pos);
    CHECK(pos[QS_AGENTS] == 0 && counts(db) == 0);
    qs_db_close(db);
    /* With sync each commit is durable: no marker. */
    CHECK(qs_db_open(dir, true, &db) == ES_OK);
    CHECK(access(marker, F_OK) != 0);
    qs_db_close(db);
    char path[600];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/lock.mdb", dir);
    unlink(path);
    rmdir(dir);
    puts("apply_test: ok");
    return 0;
}
