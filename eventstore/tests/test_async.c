/* test_async.c: es_append_async. Threads queue appends without waiting,
 * next to a thread appending synchronously; every callback runs exactly
 * once, on the writer thread, with the positions and versions the log then
 * holds. A wrong expected version comes back through the callback with the
 * stream's version; invalid requests are refused at once without one; and
 * es_close answers every queued append before it returns. */
#include <pthread.h>
#include <stdatomic.h>

#include "eventstore/tests/test_util.h"

#define THREADS 4

typedef struct slot {
    atomic_int calls;
    int status;
    es_append_result res;
    pthread_t thread;
} slot;

static es_store *store;
static long per_thread;
static slot *slots[THREADS];
static uint64_t payload[THREADS];
static es_event_data *events[THREADS];
static atomic_long done_total;
static char names[THREADS][64];

static void on_done(void *arg, int status, const es_append_result *res)
{
    slot *sl = arg;
    sl->status = status;
    sl->res = *res;
    sl->thread = pthread_self();
    atomic_fetch_add(&sl->calls, 1);
    atomic_fetch_add(&done_total, 1);
}

static void *queuer(void *arg)
{
    uint32_t me = (uint32_t)(uintptr_t)arg;
    /* Borrowed until the callback, like the events. */
    char *name = names[me];
    snprintf(name, sizeof names[me], "task-async-%u", me);
    for (long i = 0; i < per_thread; i++) {
        es_event_data *e = &events[me][i];
        tu_event(e, me + 1, (uint64_t)i, "test.Async", &payload[me],
                 sizeof payload[me]);
        /* Queued in order, so exact versions never conflict. */
        int64_t expected = i == 0 ? ES_EXPECT_NO_STREAM : (int64_t)(i - 1);
        CHECK_OK(es_append_async(store, name, expected, e, 1, on_done,
                                 &slots[me][i]));
    }
    return NULL;
}

static void *syncer(void *arg)
{
    long n = (long)(intptr_t)arg;
    for (long i = 0; i < n; i++) {
        es_event_data e;
        tu_event(&e, 99, (uint64_t)i, "test.Sync", &i, sizeof i);
        es_append_result r;
        CHECK_OK(es_append(store, "agent-sync", ES_EXPECT_ANY, &e, 1, &r));
    }
    return NULL;
}

static void wait_for(long want)
{
    double t0 = tu_now();
    while (atomic_load(&done_total) < want) {
        CHECK(tu_now() - t0 < 120.0);
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static void test_many(void)
{
    pthread_t t[THREADS], st;
    long nsync = per_thread / 4;
    for (int i = 0; i < THREADS; i++) {
        slots[i] = calloc((size_t)per_thread, sizeof *slots[i]);
        events[i] = calloc((size_t)per_thread, sizeof *events[i]);
        CHECK(slots[i] && events[i]);
        payload[i] = 1000 + (uint64_t)i;
    }
    CHECK(pthread_create(&st, NULL, syncer, (void *)(intptr_t)nsync) == 0);
    for (int i = 0; i < THREADS; i++)
        CHECK(pthread_create(&t[i], NULL, queuer, (void *)(uintptr_t)i) == 0);
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_join(st, NULL);
    wait_for(THREADS * per_thread);

    /* Exactly once each, on one thread that is none of the callers, in
     * order within a stream, at the positions the log holds. */
    pthread_t writer = slots[0][0].thread;
    es_txn *txn = NULL;
    CHECK_OK(es_txn_begin(store, &txn));
    for (int i = 0; i < THREADS; i++) {
        for (long j = 0; j < per_thread; j++) {
            slot *sl = &slots[i][j];
            CHECK(atomic_load(&sl->calls) == 1);
            if (sl->status != ES_OK)
                fprintf(stderr, "thread %d append %ld: %s, version %llu\n", i,
                        j, es_errname(sl->status),
                        (unsigned long long)sl->res.actual_version);
            CHECK_OK(sl->status);
            CHECK(pthread_equal(sl->thread, writer));
            CHECK(sl->res.stream_version == (uint64_t)j);
            CHECK(sl->res.first_position == sl->res.last_position);
            if (j > 0)
                CHECK(sl->res.first_position >
                      slots[i][j - 1].res.first_position);
            uint64_t pos = 0;
            CHECK_OK(es_event_position(txn, events[i][j].id, &pos));
            CHECK(pos == sl->res.first_position);
        }
        CHECK(!pthread_equal(writer, t[i]));
    }
    es_txn_end(txn);
    es_stats stats;
    CHECK_OK(es_stats_get(store, &stats));
    CHECK(stats.events == (uint64_t)(THREADS * per_thread + nsync));
    CHECK(stats.last_position == stats.events);
}

static void test_conflict_and_refusals(void)
{
    slot sl;
    es_event_data e;
    uint64_t v = 7;
    memset(&sl, 0, sizeof sl);
    long before = atomic_load(&done_total);
    /* task-async-0 is at version per_thread - 1. */
    tu_event(&e, 50, 1, "test.Async", &v, sizeof v);
    CHECK_OK(es_append_async(store, "task-async-0", 0, &e, 1, on_done, &sl));
    wait_for(before + 1);
    CHECK(atomic_load(&sl.calls) == 1);
    CHECK_ES(ES_WRONG_EXPECTED_VERSION, sl.status);
    CHECK(sl.res.actual_version == (uint64_t)(per_thread - 1));

    /* Refused at once, never called back. */
    CHECK_ES(ES_INVALID, es_append_async(store, "bad name", ES_EXPECT_ANY, &e,
                                         1, on_done, &sl));
    CHECK_ES(ES_INVALID, es_append_async(store, "task-x", ES_EXPECT_ANY, &e, 0,
                                         on_done, &sl));
    CHECK_ES(ES_INVALID, es_append_async(store, "task-x", -17, &e, 1, on_done,
                                         &sl));
    CHECK_ES(ES_INVALID, es_append_async(store, "task-x", ES_EXPECT_ANY, &e, 1,
                                         NULL, &sl));
    CHECK_ES(ES_INVALID, es_append_async(NULL, "task-x", ES_EXPECT_ANY, &e, 1,
                                         on_done, &sl));
    struct timespec ts = {0, 50 * 1000 * 1000};
    nanosleep(&ts, NULL);
    CHECK(atomic_load(&sl.calls) == 1);
    CHECK(atomic_load(&done_total) == before + 1);
}

/* Appends still queued when the store closes are committed and answered
 * before es_close returns. */
static void test_close_answers_queued(const char *dir)
{
    long n = tu_scale(2000, 500, 200);
    slot *sl = calloc((size_t)n, sizeof *sl);
    es_event_data *ev = calloc((size_t)n, sizeof *ev);
    uint64_t x = 5;
    CHECK(sl && ev);
    long before = atomic_load(&done_total);
    for (long i = 0; i < n; i++) {
        tu_event(&ev[i], 77, (uint64_t)i, "test.Close", &x, sizeof x);
        CHECK_OK(es_append_async(store, "task-close", ES_EXPECT_ANY, &ev[i], 1,
                                 on_done, &sl[i]));
    }
    es_close(store);
    store = NULL;
    CHECK(atomic_load(&done_total) == before + n);
    for (long i = 0; i < n; i++) {
        CHECK(atomic_load(&sl[i].calls) == 1);
        CHECK_OK(sl[i].status);
    }
    es_options o = tu_options();
    CHECK_OK(es_open(dir, &o, &store));
    es_txn *txn = NULL;
    uint64_t version = 0;
    CHECK_OK(es_txn_begin(store, &txn));
    CHECK_OK(es_stream_version(txn, "task-close", &version));
    CHECK(version == (uint64_t)(n - 1));
    es_txn_end(txn);
    free(sl);
    free(ev);
}

int main(void)
{
    char dir[512];
    tu_tmpdir(dir, sizeof dir, "async");
    per_thread = tu_scale(5000, 1000, 300);
    es_options o = tu_options();
    o.flags |= ES_OPT_NOSYNC;
    CHECK_OK(es_open(dir, &o, &store));
    test_many();
    test_conflict_and_refusals();
    test_close_answers_queued(dir);
    es_close(store);
    for (int i = 0; i < THREADS; i++) {
        free(slots[i]);
        free(events[i]);
    }
    tu_rmtree(dir);
    printf("test_async: ok\n");
    return 0;
}
