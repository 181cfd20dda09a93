/* test_concurrency.c: 16 threads x 10,000 appends over shared and private
 * streams, group-committed. Every success has a unique position, each
 * stream's final version equals its successful appends, and the log holds
 * exactly the acknowledged events: none lost, none duplicated. */
#include <pthread.h>

#include "eventstore/tests/test_util.h"

#define THREADS 16
#define SHARED 4

typedef struct ack {
    uint64_t position;
    uint64_t version;
    uint32_t thread;
    uint32_t seq;
    int stream; /* 0..SHARED-1 shared, SHARED + thread private */
} ack;

static es_store *store;
static long per_thread;
static ack *acks[THREADS];
static long nacks[THREADS];
static long conflicts[THREADS];

static void stream_name(char *buf, size_t cap, int stream)
{
    if (stream < SHARED)
        snprintf(buf, cap, "task-shared-%d", stream);
    else
        snprintf(buf, cap, "agent-private-%d", stream - SHARED);
}

static void *worker(void *arg)
{
    uint32_t me = (uint32_t)(uintptr_t)arg;
    uint64_t guess[SHARED] = {0};
    unsigned seed = me * 7919u + 1;
    for (long i = 0; i < per_thread; i++) {
        int stream = (i % 2) ? (int)(rand_r(&seed) % SHARED) : SHARED + (int)me;
        char name[64];
        stream_name(name, sizeof name, stream);
        es_event_data e;
        tu_event(&e, me + 100, (uint64_t)i, "test.Concurrent", &i, sizeof i);
        /* Shared streams: half optimistic exact versions (some conflict),
         * half ANY; private streams: always exact, never conflicting. */
        int64_t expected = ES_EXPECT_ANY;
        if (stream >= SHARED)
            expected = i == 0 ? ES_EXPECT_NO_STREAM : (int64_t)(i / 2 - 1);
        else if (rand_r(&seed) % 2)
            expected = (int64_t)guess[stream];
        es_append_result r;
        int rc = es_append(store, name, expected, &e, 1, &r);
        if (rc == ES_WRONG_EXPECTED_VERSION) {
            CHECK(stream < SHARED);
            if (r.actual_version != ES_NO_VERSION)
                guess[stream] = r.actual_version;
            conflicts[me]++;
            continue;
        }
        CHECK_OK(rc);
        CHECK(r.first_position == r.last_position && !r.idempotent);
        if (stream < SHARED)
            guess[stream] = r.stream_version;
        acks[me][nacks[me]++] = (ack){r.first_position, r.stream_version, me,
                                      (uint32_t)i, stream};
    }
    return NULL;
}

static int by_position(const void *a, const void *b)
{
    const ack *x = a, *y = b;
    return x->position < y->position ? -1 : x->position > y->position;
}

int main(void)
{
    char dir[512];
    tu_tmpdir(dir, sizeof dir, "conc");
    per_thread = tu_scale(10000, 3000, 1000);
    es_options o = tu_options();
    CHECK_OK(es_open(dir, &o, &store));
    double t0 = tu_now();
    pthread_t th[THREADS];
    for (int i = 0; i < THREADS; i++) {
        CHECK((acks[i] = calloc((size_t)per_thread, sizeof(ack))) != NULL);
        CHECK(pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)i) == 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    double t1 = tu_now();

    long total = 0, nconf = 0;
    for (int i = 0; i < THREADS; i++) {
        total += nacks[i];
        nconf += conflicts[i];
    }
    ack *all = calloc((size_t)total, sizeof *all);
    CHECK(all != NULL);
    long k = 0;
    for (int i = 0; i < THREADS; i++)
        for (long j = 0; j < nacks[i]; j++)
            all[k++] = acks[i][j];
    qsort(all, (size_t)total, sizeof *all, by_position);
    /* Positions: unique and gap-free 1..total (one event per append). */
    for (long i = 0; i < total; i++)
        CHECK(all[i].position == (uint64_t)i + 1);

    /* Versions per stream: 0..count-1, each exactly once. */
    long count[SHARED + THREADS] = {0};
    for (long i = 0; i < total; i++)
        count[all[i].stream]++;
    es_txn *t;
    CHECK_OK(es_txn_begin(store, &t));
    for (int st = 0; st < SHARED + THREADS; st++) {
        char name[64];
        uint64_t v;
        stream_name(name, sizeof name, st);
        CHECK_OK(es_stream_version(t, name, &v));
        CHECK(v + 1 == (uint64_t)count[st]);
        char *seen = calloc((size_t)count[st], 1);
        for (long i = 0; i < total; i++)
            if (all[i].stream == st) {
                CHECK(all[i].version < (uint64_t)count[st]);
                CHECK(!seen[all[i].version]);
                seen[all[i].version] = 1;
            }
        free(seen);
    }
    /* The log holds exactly the acknowledged events, in position order. */
    static es_event page[1000];
    es_page pg;
    uint64_t next = 1;
    long i = 0;
    do {
        CHECK_OK(es_read_all(t, next, ES_FORWARD, NULL, 1000, page, &pg));
        for (size_t j = 0; j < pg.count; j++, i++) {
            CHECK(i < total);
            const es_event *ev = &page[j];
            uint8_t id[ES_ID_SIZE];
            tu_id(id, all[i].thread + 100, all[i].seq);
            CHECK(ev->position == all[i].position);
            CHECK(!memcmp(ev->id, id, ES_ID_SIZE));
            CHECK(ev->stream_version == all[i].version);
        }
        next = pg.next;
    } while (!pg.end_of_stream);
    CHECK(i == total);
    es_txn_end(t);

    es_stats st;
    es_verify_report rep;
    CHECK_OK(es_stats_get(store, &st));
    CHECK(st.last_position == (uint64_t)total);
    CHECK(st.appends_ok == (uint64_t)total);
    CHECK(st.appends_failed == (uint64_t)nconf);
    CHECK_OK(es_verify(store, &rep));
    printf("concurrency: %d threads x %ld appends: %ld ok, %ld conflicts, "
           "%llu commits (batch max %llu) in %.2f s\n",
           THREADS, per_thread, total, nconf, (unsigned long long)st.commits,
           (unsigned long long)st.batch_max, t1 - t0);
    es_close(store);
    for (int j = 0; j < THREADS; j++)
        free(acks[j]);
    free(all);
    tu_rmtree(dir);
    return 0;
}
