/* test_mapfull.c: a map that may not grow fails appends with ES_MAP_FULL and
 * keeps everything committed readable and verifiable, across a reopen; a map
 * that may grow grows by itself, also while other threads read and
 * subscribe (the growth unmaps, so it must wait for them). */
#include <pthread.h>
#include <stdatomic.h>

#include "eventstore/tests/test_util.h"

static uint8_t payload[8192];

/* Writes *arg keys of 8 KiB each. */
static int fill_kv(es_txn *t, const es_append_result *r, void *arg)
{
    int n = *(int *)arg, rc = ES_OK;
    (void)r;
    for (int i = 0; i < n && rc == ES_OK; i++)
        rc = es_kv_put(t, "test.big", &i, sizeof i, payload, sizeof payload);
    return rc;
}

static void test_no_growth(void)
{
    char dir[512];
    tu_tmpdir(dir, sizeof dir, "full");
    es_options o = tu_options();
    o.map_size = o.map_size_max = (size_t)1 << 20;
    es_store *s = NULL;
    CHECK_OK(es_open(dir, &o, &s));
    uint64_t acked = 0;
    int rc = ES_OK;
    for (uint64_t i = 0; i < 10000 && rc == ES_OK; i++) {
        es_event_data e;
        es_append_result r;
        tu_event(&e, 1, i, "test.Fill", payload, sizeof payload);
        rc = es_append(s, "task-fill", ES_EXPECT_ANY, &e, 1, &r);
        if (rc == ES_OK) {
            CHECK(r.first_position == acked + 1);
            acked++;
        }
    }
    CHECK_ES(ES_MAP_FULL, rc);
    CHECK(acked > 10);
    CHECK(es_status_grpc_code(rc) == 8);
    /* Still full, cleanly, for appends and for a caller's own writes. */
    es_event_data e;
    tu_event(&e, 1, 99999, "test.Fill", payload, sizeof payload);
    CHECK_ES(ES_MAP_FULL, es_append(s, "task-fill", ES_EXPECT_ANY, &e, 1, NULL));
    int many = 200;
    CHECK_ES(ES_MAP_FULL, es_write(s, fill_kv, &many));
    es_stats st;
    CHECK_OK(es_stats_get(s, &st));
    CHECK(st.last_position == acked && st.map_growths == 0);
    es_verify_report rep;
    CHECK_OK(es_verify(s, &rep));
    es_close(s);
    /* Reopen: everything acknowledged is there and readable. */
    CHECK_OK(es_open(dir, &o, &s));
    es_txn *t;
    es_event ev[64];
    es_page pg;
    uint64_t next = 0, seen = 0;
    CHECK_OK(es_txn_begin(s, &t));
    do {
        CHECK_OK(es_read_stream(t, "task-fill", next, ES_FORWARD, 64, ev, &pg));
        for (size_t i = 0; i < pg.count; i++) {
            CHECK(ev[i].data_len == sizeof payload);
            seen++;
        }
        next = pg.next;
    } while (!pg.end_of_stream);
    es_txn_end(t);
    CHECK(seen == acked);
    CHECK_OK(es_verify(s, &rep));
    es_close(s);
    tu_rmtree(dir);
}

static void test_growth(void)
{
    char dir[512];
    tu_tmpdir(dir, sizeof dir, "grow");
    es_options o = tu_options();
    o.map_size = (size_t)1 << 20;
    o.map_size_max = (size_t)256 << 20;
    es_store *s = NULL;
    CHECK_OK(es_open(dir, &o, &s));
    es_event_data e[8];
    for (uint64_t i = 0; i < 200; i++) {
        for (int j = 0; j < 8; j++)
            tu_event(&e[j], 2, i * 8 + (uint64_t)j, "test.Grow", payload,
                     sizeof payload);
        CHECK_OK(es_append(s, "task-grow", ES_EXPECT_ANY, e, 8, NULL));
    }
    int some = 100;
    CHECK_OK(es_write(s, fill_kv, &some));
    es_stats st;
    CHECK_OK(es_stats_get(s, &st));
    CHECK(st.map_growths > 0 && st.map_size > ((size_t)1 << 20));
    CHECK(st.last_position == 1600);
    es_verify_report rep;
    CHECK_OK(es_verify(s, &rep));
    es_close(s);
    /* A reopen keeps the grown size. */
    CHECK_OK(es_open(dir, &o, &s));
    es_stats st2;
    CHECK_OK(es_stats_get(s, &st2));
    CHECK(st2.map_size >= st.map_used);
    es_close(s);
    tu_rmtree(dir);
}

static atomic_int stop;
static es_store *grow_store;

/* Reads the newest events again and again, touching their bytes. */
static void *reader(void *arg)
{
    es_event ev[16];
    unsigned long sum = 0;
    (void)arg;
    while (!atomic_load(&stop)) {
        es_txn *t = NULL;
        es_page pg;
        CHECK_OK(es_txn_begin(grow_store, &t));
        CHECK_OK(es_read_all(t, ES_END, ES_BACKWARD, NULL, 16, ev, &pg));
        for (size_t i = 0; i < pg.count; i++)
            sum += ((const uint8_t *)ev[i].data)[ev[i].data_len - 1];
        es_txn_end(t);
    }
    return (void *)(uintptr_t)(sum & 1);
}

/* Follows the log to its end. */
static void *follower(void *arg)
{
    uint64_t want = *(uint64_t *)arg, seen = 0;
    es_sub *sub = NULL;
    CHECK_OK(es_sub_open(grow_store, 0, NULL, &sub));
    double deadline = tu_now() + 120;
    while (seen < want) {
        es_event *ev = NULL;
        int rc = es_sub_next(sub, 1000, &ev);
        CHECK(tu_now() < deadline);
        if (rc == ES_TIMEOUT)
            continue;
        CHECK_OK(rc);
        CHECK(ev->position == seen + 1);
        seen++;
        es_event_free(ev);
    }
    es_sub_destroy(sub);
    return NULL;
}

static void test_growth_under_readers(void)
{
    char dir[512];
    tu_tmpdir(dir, sizeof dir, "growrd");
    es_options o = tu_options();
    o.map_size = (size_t)1 << 20;
    o.map_size_max = (size_t)256 << 20;
    o.flags = ES_OPT_NOSYNC; /* the growth is under test, not the flush */
    CHECK_OK(es_open(dir, &o, &grow_store));
    es_event_data e;
    tu_event(&e, 3, 0, "test.Grow", payload, sizeof payload);
    CHECK_OK(es_append(grow_store, "task-grow", ES_EXPECT_ANY, &e, 1, NULL));
    uint64_t total = (uint64_t)tu_scale(1500, 1000, 400);
    pthread_t rd[2], fl;
    for (int i = 0; i < 2; i++)
        CHECK(pthread_create(&rd[i], NULL, reader, NULL) == 0);
    CHECK(pthread_create(&fl, NULL, follower, &total) == 0);
    for (uint64_t i = 1; i < total; i++) {
        tu_event(&e, 3, i, "test.Grow", payload, sizeof payload);
        CHECK_OK(es_append(grow_store, "task-grow", ES_EXPECT_ANY, &e, 1, NULL));
    }
    pthread_join(fl, NULL);
    atomic_store(&stop, 1);
    for (int i = 0; i < 2; i++)
        pthread_join(rd[i], NULL);
    es_stats st;
    CHECK_OK(es_stats_get(grow_store, &st));
    CHECK(st.map_growths >= 3 && st.last_position == total);
    es_verify_report rep;
    CHECK_OK(es_verify(grow_store, &rep));
    es_close(grow_store);
    tu_rmtree(dir);
}

int main(void)
{
    memset(payload, 0xab, sizeof payload);
    test_no_growth();
    test_growth();
    test_growth_under_readers();
    printf("mapfull: ok\n");
    return 0;
}
