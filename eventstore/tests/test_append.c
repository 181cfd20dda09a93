/* test_append.c: appends, expected versions, idempotence, limits, reads of
 * streams and of the whole log in both directions with filters and paging,
 * companions, status table — all through the public header. */
#include "eventstore/tests/test_util.h"

static char dir[512];

static es_store *open_store(void)
{
    es_options o = tu_options();
    es_store *s = NULL;
    CHECK_OK(es_open(dir, &o, &s));
    return s;
}

static int append1(es_store *s, const char *stream, int64_t exp, uint32_t tag,
                   uint64_t n, es_append_result *r)
{
    es_event_data e;
    tu_event(&e, tag, n, "test.Created", "x", 1);
    return es_append(s, stream, exp, &e, 1, r);
}

static void test_status_table(void)
{
    CHECK(es_status_grpc_code(ES_OK) == 0);
    CHECK(es_status_grpc_code(ES_WRONG_EXPECTED_VERSION) == 10);
    CHECK(es_status_grpc_code(ES_INVALID) == 3);
    CHECK(es_status_grpc_code(ES_MAP_FULL) == 8);
    CHECK(es_status_grpc_code(ES_NO_SPACE) == 8);
    CHECK(es_status_grpc_code(ES_NOT_FOUND) == 5);
    CHECK(es_status_grpc_code(ES_DUPLICATE_PARTIAL) == 6);
    CHECK(es_status_grpc_code(12345) == 2);
    CHECK(!strcmp(es_errname(ES_CORRUPT), "ES_CORRUPT"));
    CHECK(!strcmp(es_strerror(ES_OK), "success"));
    CHECK(!strcmp(es_strerror(-77), "unknown status"));
    for (int st = 0; st <= ES_BUSY; st++)
        CHECK(strcmp(es_errname(st), "ES_UNKNOWN") != 0);
}

static void test_names(void)
{
    CHECK(es_stream_name_valid("task-123"));
    CHECK(es_stream_name_valid("memory-team/a:b@c_d.e"));
    CHECK(!es_stream_name_valid(""));
    CHECK(!es_stream_name_valid(NULL));
    CHECK(!es_stream_name_valid("$all"));
    CHECK(!es_stream_name_valid("has space"));
    CHECK(!es_stream_name_valid("tab\t"));
    char big[ES_STREAM_NAME_MAX + 2];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = 0;
    CHECK(!es_stream_name_valid(big));
    big[ES_STREAM_NAME_MAX] = 0;
    CHECK(es_stream_name_valid(big));
}

static void test_expected_versions(es_store *s)
{
    es_append_result r;
    /* NO_STREAM on a new stream; then it fails with the actual version. */
    CHECK_OK(append1(s, "agent-a", ES_EXPECT_NO_STREAM, 1, 1, &r));
    CHECK(r.stream_version == 0 && r.first_position == r.last_position);
    CHECK(r.actual_version == ES_NO_VERSION && !r.idempotent);
    memset(&r, 0, sizeof r);
    CHECK_ES(ES_WRONG_EXPECTED_VERSION,
             append1(s, "agent-a", ES_EXPECT_NO_STREAM, 1, 2, &r));
    CHECK(r.actual_version == 0);
    /* STREAM_EXISTS on a missing stream fails with "no version". */
    CHECK_ES(ES_WRONG_EXPECTED_VERSION,
             append1(s, "agent-none", ES_EXPECT_STREAM_EXISTS, 1, 3, &r));
    CHECK(r.actual_version == ES_NO_VERSION);
    CHECK_OK(append1(s, "agent-a", ES_EXPECT_STREAM_EXISTS, 1, 4, &r));
    CHECK(r.stream_version == 1);
    /* Exact versions. */
    CHECK_OK(append1(s, "agent-a", 1, 1, 5, &r));
    CHECK(r.stream_version == 2 && r.actual_version == 1);
    CHECK_ES(ES_WRONG_EXPECTED_VERSION, append1(s, "agent-a", 1, 1, 6, &r));
    CHECK(r.actual_version == 2);
    CHECK_ES(ES_WRONG_EXPECTED_VERSION, append1(s, "agent-a", 7, 1, 6, &r));
    CHECK(r.actual_version == 2);
    CHECK_ES(ES_WRONG_EXPECTED_VERSION, append1(s, "agent-new", 0, 1, 6, &r));
    CHECK(r.actual_version == ES_NO_VERSION);
    /* ANY always appends. */
    CHECK_OK(append1(s, "agent-a", ES_EXPECT_ANY, 1, 6, &r));
    CHECK(r.stream_version == 3);
    CHECK_OK(append1(s, "agent-b", ES_EXPECT_ANY, 1, 7, &r));
    CHECK(r.stream_version == 0);
    /* Invalid expected values. */
    CHECK_ES(ES_INVALID, append1(s, "agent-a", -3, 1, 8, &r));
    /* Nothing written by the failures: version is still 3. */
    es_txn *t;
    uint64_t v;
    CHECK_OK(es_txn_begin(s, &t));
    CHECK_OK(es_stream_version(t, "agent-a", &v));
    CHECK(v == 3);
    CHECK_ES(ES_NOT_FOUND, es_stream_version(t, "agent-none", &v));
    CHECK_ES(ES_NOT_FOUND, es_stream_version(t, "agent-new", &v));
    es_txn_end(t);
}

static void test_idempotence(es_store *s)
{
    es_event_data ev[3];
    es_append_result r1, r2;
    for (int i = 0; i < 3; i++)
        tu_event(&ev[i], 2, (uint64_t)i, "test.Batch", "abc", 3);
    CHECK_OK(es_append(s, "task-idem", ES_EXPECT_NO_STREAM, ev, 3, &r1));
    CHECK(r1.stream_version == 2 && r1.last_position == r1.first_position + 2);
    /* Same ids, same place: success with the original positions. */
    CHECK_OK(es_append(s, "task-idem", ES_EXPECT_NO_STREAM, ev, 3, &r2));
    CHECK(r2.idempotent && r2.first_position == r1.first_position &&
          r2.last_position == r1.last_position && r2.stream_version == 2);
    CHECK_OK(es_append(s, "task-idem", ES_EXPECT_ANY, ev, 3, &r2));
    CHECK(r2.idempotent && r2.first_position == r1.first_position);
    CHECK_OK(es_append(s, "task-idem", ES_EXPECT_STREAM_EXISTS, ev, 3, &r2));
    CHECK(r2.idempotent);
    /* Same ids but a later place per the expected version. */
    CHECK_ES(ES_WRONG_EXPECTED_VERSION,
             es_append(s, "task-idem", 2, ev, 3, &r2));
    CHECK(r2.actual_version == 2);
    /* A tail of the batch (ids 1,2) at exact version 0 is also an exact retry. */
    CHECK_OK(es_append(s, "task-idem", 0, ev + 1, 2, &r2));
    CHECK(r2.idempotent && r2.first_position == r1.first_position + 1);
    /* Partial overlap: two known ids and a new one. */
    es_event_data mix[3] = {ev[0], ev[1], ev[2]};
    tu_id(mix[2].id, 2, 99);
    CHECK_ES(ES_DUPLICATE_PARTIAL,
             es_append(s, "task-idem", ES_EXPECT_ANY, mix, 3, NULL));
    tu_id(mix[0].id, 2, 98);
    mix[1] = ev[1];
    CHECK_ES(ES_DUPLICATE_PARTIAL,
             es_append(s, "task-idem", ES_EXPECT_ANY, mix, 2, NULL));
    /* Known ids in another order. */
    es_event_data swapped[2] = {ev[1], ev[0]};
    CHECK_ES(ES_DUPLICATE_PARTIAL,
             es_append(s, "task-idem", ES_EXPECT_ANY, swapped, 2, NULL));
    /* Known ids on another stream. */
    CHECK_ES(ES_DUPLICATE_ID,
             es_append(s, "task-other", ES_EXPECT_ANY, ev, 3, NULL));
    /* The same id twice within one batch. */
    es_event_data twice[2] = {ev[0], ev[0]};
    tu_id(twice[0].id, 2, 500);
    tu_id(twice[1].id, 2, 500);
    CHECK_ES(ES_INVALID, es_append(s, "task-idem", ES_EXPECT_ANY, twice, 2, NULL));
    es_txn *t;
    uint64_t v;
    CHECK_OK(es_txn_begin(s, &t));
    CHECK_OK(es_stream_version(t, "task-idem", &v));
    CHECK(v == 2);
    CHECK_ES(ES_NOT_FOUND, es_stream_version(t, "task-other", &v));
    /* Each id finds its event's position; ids never appended find none. */
    uint64_t pos;
    for (int i = 0; i < 3; i++) {
        CHECK_OK(es_event_position(t, ev[i].id, &pos));
        CHECK(pos == r1.first_position + (uint64_t)i);
    }
    CHECK_ES(ES_NOT_FOUND, es_event_position(t, mix[2].id, &pos));
    CHECK_ES(ES_NOT_FOUND, es_event_position(t, twice[0].id, &pos));
    CHECK_ES(ES_INVALID, es_event_position(t, NULL, &pos));
    es_txn_end(t);
}

static void test_limits(es_store *s)
{
    es_event_data e;
    static uint8_t big[ES_EVENT_SIZE_DEFAULT + 1];
    tu_event(&e, 3, 1, "test.Big", big, sizeof big);
    CHECK_ES(ES_INVALID, es_append(s, "task-big", ES_EXPECT_ANY, &e, 1, NULL));
    e.data_len = ES_EVENT_SIZE_DEFAULT - 1024;
    CHECK_OK(es_append(s, "task-big", ES_EXPECT_ANY, &e, 1, NULL));
    tu_event(&e, 3, 2, "bad type", "x", 1);
    CHECK_ES(ES_INVALID, es_append(s, "task-big", ES_EXPECT_ANY, &e, 1, NULL));
    tu_event(&e, 3, 3, "", "x", 1);
    CHECK_ES(ES_INVALID, es_append(s, "task-big", ES_EXPECT_ANY, &e, 1, NULL));
    tu_event(&e, 3, 4, "test.T", "x", 1);
    CHECK_ES(ES_INVALID, es_append(s, "bad name", ES_EXPECT_ANY, &e, 1, NULL));
    CHECK_ES(ES_INVALID, es_append(s, "$all", ES_EXPECT_ANY, &e, 1, NULL));
    CHECK_ES(ES_INVALID, es_append(s, "task-big", ES_EXPECT_ANY, &e, 0, NULL));
    char meta[ES_META_MAX + 2];
    memset(meta, 'm', sizeof meta - 1);
    meta[sizeof meta - 1] = 0;
    e.meta.actor = meta;
    CHECK_ES(ES_INVALID, es_append(s, "task-big", ES_EXPECT_ANY, &e, 1, NULL));
    size_t n = ES_EVENTS_PER_APPEND_DEFAULT + 1;
    es_event_data *many = calloc(n, sizeof *many);
    for (size_t i = 0; i < n; i++)
        tu_event(&many[i], 4, i, "test.Many", NULL, 0);
    CHECK_ES(ES_INVALID, es_append(s, "task-many", ES_EXPECT_ANY, many, n, NULL));
    CHECK_OK(es_append(s, "task-many", ES_EXPECT_ANY, many, n - 1, NULL));
    free(many);
}

/* A log of known shape for the read tests: streams r-0..r-2 and q-0,
 * interleaved, types alternate. */
static uint64_t base_pos;

static void fill_reads(es_store *s)
{
    es_stats st;
    CHECK_OK(es_stats_get(s, &st));
    base_pos = st.last_position;
    for (int i = 0; i < 30; i++) {
        char stream[32], body[32];
        snprintf(stream, sizeof stream, "%s-%d", i % 4 == 3 ? "q" : "r", i % 4);
        snprintf(body, sizeof body, "body-%d", i);
        es_event_data e;
        tu_event(&e, 5, (uint64_t)i, i % 2 ? "test.Odd" : "test.Even", body,
                 strlen(body));
        es_append_result r;
        CHECK_OK(es_append(s, stream, ES_EXPECT_ANY, &e, 1, &r));
        CHECK(r.first_position == base_pos + (uint64_t)i + 1);
    }
}

static void test_read_stream(es_store *s)
{
    es_txn *t;
    es_event ev[16];
    es_page pg;
    CHECK_OK(es_txn_begin(s, &t));
    /* r-1 holds i = 1, 5, 9, ..., 29: eight events, versions 0..7. */
    CHECK_OK(es_read_stream(t, "r-1", 0, ES_FORWARD, 3, ev, &pg));
    CHECK(pg.count == 3 && pg.next == 3 && !pg.end_of_stream);
    for (int i = 0; i < 3; i++) {
        CHECK(ev[i].stream_version == (uint64_t)i);
        CHECK(ev[i].position == base_pos + 1 + 1 + 4 * (uint64_t)i);
        char want[32];
        snprintf(want, sizeof want, "body-%d", 1 + 4 * i);
        CHECK(ev[i].data_len == strlen(want) &&
              !memcmp(ev[i].data, want, ev[i].data_len));
        CHECK(!strcmp(ev[i].stream, "r-1") && ev[i].stream_len == 3);
        CHECK(!strcmp(ev[i].type, "test.Odd"));
        CHECK(!strcmp(ev[i].actor, "tester"));
        CHECK(!strcmp(ev[i].content_type, "application/x-protobuf"));
        CHECK(ev[i].traceparent_len == 55);
        CHECK(ev[i].time_unix_nano > 0);
    }
    /* Page on to the end. */
    uint64_t next = pg.next, seen = 3;
    while (!pg.end_of_stream) {
        CHECK_OK(es_read_stream(t, "r-1", next, ES_FORWARD, 3, ev, &pg));
        for (size_t i = 0; i < pg.count; i++)
            CHECK(ev[i].stream_version == seen++);
        next = pg.next;
    }
    CHECK(seen == 8 && next == 8);
    /* Past the end: empty page, end of stream. */
    CHECK_OK(es_read_stream(t, "r-1", 8, ES_FORWARD, 3, ev, &pg));
    CHECK(pg.count == 0 && pg.end_of_stream);
    /* Backwards from the end. */
    CHECK_OK(es_read_stream(t, "r-1", ES_END, ES_BACKWARD, 5, ev, &pg));
    CHECK(pg.count == 5 && pg.next == 2 && !pg.end_of_stream);
    for (int i = 0; i < 5; i++)
        CHECK(ev[i].stream_version == 7 - (uint64_t)i);
    CHECK_OK(es_read_stream(t, "r-1", pg.next, ES_BACKWARD, 5, ev, &pg));
    CHECK(pg.count == 3 && pg.end_of_stream && ev[2].stream_version == 0);
    /* Backwards from a middle version. */
    CHECK_OK(es_read_stream(t, "r-1", 4, ES_BACKWARD, 2, ev, &pg));
    CHECK(pg.count == 2 && ev[0].stream_version == 4 && ev[1].stream_version == 3);
    CHECK_ES(ES_NOT_FOUND, es_read_stream(t, "r-9", 0, ES_FORWARD, 3, ev, &pg));
    CHECK_ES(ES_INVALID, es_read_stream(t, "r-1", 0, ES_FORWARD, 0, ev, &pg));
    CHECK_ES(ES_INVALID,
             es_read_stream(t, "r-1", 0, ES_FORWARD, ES_PAGE_MAX + 1, ev, &pg));
    es_txn_end(t);
}

static void test_read_all(es_store *s)
{
    es_txn *t;
    es_event ev[64];
    es_page pg;
    CHECK_OK(es_txn_begin(s, &t));
    /* Forwards over the read log, in pages of 7. */
    uint64_t next = base_pos + 1, expect = base_pos + 1;
    do {
        CHECK_OK(es_read_all(t, next, ES_FORWARD, NULL, 7, ev, &pg));
        for (size_t i = 0; i < pg.count; i++)
            CHECK(ev[i].position == expect++);
        next = pg.next;
    } while (!pg.end_of_stream);
    CHECK(expect == base_pos + 31 && next == base_pos + 31);
    /* From 0 means from the start: position 1 first. */
    CHECK_OK(es_read_all(t, 0, ES_FORWARD, NULL, 2, ev, &pg));
    CHECK(pg.count == 2 && ev[0].position == 1 && ev[1].position == 2);
    /* Backwards from the end. */
    CHECK_OK(es_read_all(t, ES_END, ES_BACKWARD, NULL, 4, ev, &pg));
    CHECK(pg.count == 4 && ev[0].position == base_pos + 30 &&
          ev[3].position == base_pos + 27 && pg.next == base_pos + 26);
    CHECK_OK(es_read_all(t, 3, ES_BACKWARD, NULL, 10, ev, &pg));
    CHECK(pg.count == 3 && ev[0].position == 3 && ev[2].position == 1 &&
          pg.end_of_stream);
    /* Stream-prefix filter. */
    es_filter f = {.stream_prefix = "q-"};
    CHECK_OK(es_read_all(t, base_pos + 1, ES_FORWARD, &f, 64, ev, &pg));
    CHECK(pg.count == 7 && pg.end_of_stream);
    for (size_t i = 0; i < pg.count; i++)
        CHECK(!strcmp(ev[i].stream, "q-3"));
    /* Type filter, backwards, paged. */
    const char *types[] = {"test.Even"};
    es_filter g = {.stream_prefix = "r-", .types = types, .n_types = 1};
    size_t total = 0;
    next = ES_END;
    do {
        CHECK_OK(es_read_all(t, next, ES_BACKWARD, &g, 4, ev, &pg));
        for (size_t i = 0; i < pg.count; i++) {
            CHECK(!strcmp(ev[i].type, "test.Even"));
            CHECK(ev[i].position > base_pos);
            if (i)
                CHECK(ev[i].position < ev[i - 1].position);
        }
        total += pg.count;
        next = pg.next;
    } while (!pg.end_of_stream && next > base_pos);
    CHECK(total == 15);
    /* Bounded scan: a page may come back short but says where to go on. */
    const char *none[] = {"test.Nothing"};
    es_filter h = {.types = none, .n_types = 1, .max_scan = 5};
    CHECK_OK(es_read_all(t, 1, ES_FORWARD, &h, 10, ev, &pg));
    CHECK(pg.count == 0 && pg.next == 6 && !pg.end_of_stream);
    es_filter bad = {.types = NULL, .n_types = 1};
    CHECK_ES(ES_INVALID, es_read_all(t, 1, ES_FORWARD, &bad, 10, ev, &pg));
    /* Copies outlive the transaction. */
    es_event *copy = NULL;
    CHECK_OK(es_read_all(t, base_pos + 1, ES_FORWARD, NULL, 1, ev, &pg));
    CHECK_OK(es_event_copy(&ev[0], &copy));
    es_txn_end(t);
    CHECK(copy->position == base_pos + 1 && !strcmp(copy->stream, "r-0") &&
          copy->data_len == 6 && !memcmp(copy->data, "body-0", 6));
    es_event_free(copy);
}

/* Companions: a caller's keys and a checkpoint commit with an append. */
typedef struct proj {
    int fail;
    uint64_t seen;
} proj;

static int project(es_txn *t, const es_append_result *r, void *arg)
{
    proj *p = arg;
    char val[32];
    int n = snprintf(val, sizeof val, "%llu", (unsigned long long)r->last_position);
    int rc = es_kv_put(t, "test.model", "last", 4, val, (size_t)n);
    if (rc)
        return rc;
    if ((rc = es_checkpoint_put(t, "test.proj", r->last_position)))
        return rc;
    p->seen = r->last_position;
    return p->fail ? ES_INVALID : ES_OK;
}

static int write_snapshot(es_txn *t, const es_append_result *r, void *arg)
{
    (void)arg;
    CHECK(r == NULL);
    int rc = es_snapshot_put(t, "task-snap", 41, "state", 5);
    if (rc == ES_OK)
        rc = es_kv_put(t, "test.model", "a", 1, "1", 1);
    if (rc == ES_OK)
        rc = es_kv_put(t, "test.model", "b", 1, "2", 1);
    if (rc == ES_OK)
        rc = es_kv_put(t, "test.other", "a", 1, "x", 1);
    return rc;
}

static int count_keys(void *arg, const void *k, size_t kl, const void *v,
                      size_t vl)
{
    (void)k;
    (void)v;
    CHECK(kl >= 1 && vl >= 1);
    (*(int *)arg)++;
    return 0;
}

static void test_companions(es_store *s)
{
    es_event_data e;
    es_append_result r;
    proj p = {0, 0};
    tu_event(&e, 6, 1, "test.P", "p", 1);
    CHECK_OK(es_append_with(s, "task-proj", ES_EXPECT_NO_STREAM, &e, 1, project,
                            &p, &r));
    CHECK(p.seen == r.last_position);
    /* A failing callback undoes its writes and the append. */
    p.fail = 1;
    tu_event(&e, 6, 2, "test.P", "p", 1);
    CHECK_ES(ES_INVALID, es_append_with(s, "task-proj", 0, &e, 1, project, &p,
                                        NULL));
    CHECK_OK(es_write(s, write_snapshot, NULL));
    es_txn *t;
    const void *val;
    size_t len;
    uint64_t v;
    CHECK_OK(es_txn_begin(s, &t));
    CHECK_OK(es_stream_version(t, "task-proj", &v));
    CHECK(v == 0);
    CHECK_OK(es_kv_get(t, "test.model", "last", 4, &val, &len));
    char want[32];
    snprintf(want, sizeof want, "%llu", (unsigned long long)r.last_position);
    CHECK(len == strlen(want) && !memcmp(val, want, len));
    CHECK_OK(es_checkpoint_get(t, "test.proj", &v));
    CHECK(v == r.last_position);
    CHECK_ES(ES_NOT_FOUND, es_checkpoint_get(t, "test.none", &v));
    CHECK_OK(es_snapshot_get(t, "task-snap", &v, &val, &len));
    CHECK(v == 41 && len == 5 && !memcmp(val, "state", 5));
    CHECK_ES(ES_NOT_FOUND, es_snapshot_get(t, "task-none", &v, &val, &len));
    int n = 0;
    CHECK_OK(es_kv_scan(t, "test.model", NULL, 0, count_keys, &n));
    CHECK(n == 3);
    n = 0;
    CHECK_OK(es_kv_scan(t, "test.model", "b", 1, count_keys, &n));
    CHECK(n == 2);
    CHECK_ES(ES_READONLY, es_kv_put(t, "test.model", "z", 1, "1", 1));
    CHECK_ES(ES_READONLY, es_checkpoint_put(t, "test.proj", 1));
    CHECK_ES(ES_INVALID, es_kv_put(t, "", "z", 1, "1", 1));
    es_txn_end(t);
}

static void test_reopen_and_verify(es_store **sp)
{
    es_stats st1, st2;
    es_verify_report rep;
    CHECK_OK(es_stats_get(*sp, &st1));
    CHECK_OK(es_verify(*sp, &rep));
    CHECK(rep.events_checked == st1.last_position);
    es_close(*sp);
    *sp = open_store();
    CHECK_OK(es_stats_get(*sp, &st2));
    CHECK(st2.last_position == st1.last_position && st2.events == st1.events &&
          st2.streams == st1.streams);
    es_append_result r;
    CHECK_OK(append1(*sp, "agent-a", 3, 1, 1000, &r));
    CHECK(r.first_position == st1.last_position + 1 && r.stream_version == 4);
    CHECK_OK(es_verify(*sp, &rep));
}

static void test_keyed_chain(void)
{
    char kdir[512];
    tu_tmpdir(kdir, sizeof kdir, "keyed");
    es_options o = tu_options();
    o.chain_key = "secret-1";
    o.chain_key_len = 8;
    es_store *s = NULL;
    CHECK_OK(es_open(kdir, &o, &s));
    CHECK_OK(append1(s, "task-k", ES_EXPECT_ANY, 9, 1, NULL));
    es_verify_report rep;
    CHECK_OK(es_verify(s, &rep));
    es_event ev;
    es_page pg;
    es_txn *t;
    CHECK_OK(es_txn_begin(s, &t));
    CHECK_OK(es_read_all(t, 1, ES_FORWARD, NULL, 1, &ev, &pg));
    CHECK(ev.keyed == 1);
    es_txn_end(t);
    es_close(s);
    /* Wrong key, no key: refused for writing. */
    o.chain_key = "secret-2";
    CHECK_ES(ES_BAD_KEY, es_open(kdir, &o, &s));
    es_options plain = tu_options();
    CHECK_ES(ES_BAD_KEY, es_open(kdir, &plain, &s));
    /* Read-only without the key: reads work, verify needs the key. */
    plain.flags = ES_OPT_RDONLY;
    CHECK_OK(es_open(kdir, &plain, &s));
    CHECK_ES(ES_BAD_KEY, es_verify(s, &rep));
    CHECK_ES(ES_READONLY, append1(s, "task-k", ES_EXPECT_ANY, 9, 2, NULL));
    es_close(s);
    tu_rmtree(kdir);
}

/* A service's data folder may be several new levels deep. */
static void test_open_creates_parents(void)
{
    char base[512], deep[600];
    tu_tmpdir(base, sizeof base, "parents");
    snprintf(deep, sizeof deep, "%s/data/agents/log", base);
    es_options o = tu_options();
    es_store *s = NULL;
    CHECK_OK(es_open(deep, &o, &s));
    CHECK_OK(append1(s, "task-p", ES_EXPECT_ANY, 11, 1, NULL));
    es_close(s);
    /* Read-only never creates anything. */
    snprintf(deep, sizeof deep, "%s/absent/log", base);
    o.flags = ES_OPT_RDONLY;
    CHECK(es_open(deep, &o, &s) != ES_OK);
    tu_rmtree(base);
}

static void test_backup_restore(es_store *s)
{
    char bdir[600], rdir[600];
    snprintf(bdir, sizeof bdir, "%s-backup", dir);
    snprintf(rdir, sizeof rdir, "%s-restored", dir);
    CHECK_OK(es_backup(s, bdir));
    CHECK_ES(ES_BUSY, es_backup(s, bdir));
    CHECK_OK(es_restore(bdir, rdir, NULL, 0));
    CHECK_ES(ES_BUSY, es_restore(bdir, rdir, NULL, 0));
    CHECK_OK(es_restore(bdir, rdir, NULL, 1));
    es_store *r = NULL;
    es_stats a, b;
    CHECK_OK(es_open(rdir, NULL, &r));
    CHECK_OK(es_stats_get(s, &a));
    CHECK_OK(es_stats_get(r, &b));
    CHECK(a.last_position == b.last_position && a.streams == b.streams);
    es_verify_report rep;
    CHECK_OK(es_verify(r, &rep));
    /* The restored store goes on from where the backup ended. */
    es_append_result res;
    CHECK_OK(append1(r, "task-after", ES_EXPECT_NO_STREAM, 10, 1, &res));
    CHECK(res.first_position == a.last_position + 1);
    es_close(r);
    tu_rmtree(bdir);
    tu_rmtree(rdir);
}

int main(void)
{
    tu_tmpdir(dir, sizeof dir, "append");
    test_status_table();
    test_names();
    es_store *s = open_store();
    test_expected_versions(s);
    test_idempotence(s);
    test_limits(s);
    fill_reads(s);
    test_read_stream(s);
    test_read_all(s);
    test_companions(s);
    test_reopen_and_verify(&s);
    test_backup_restore(s);
    es_close(s);
    test_keyed_chain();
    test_open_creates_parents();
    es_close(NULL);
    tu_rmtree(dir);
    printf("test_append: ok\n");
    return 0;
}
