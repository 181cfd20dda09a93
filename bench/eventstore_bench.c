/* eventstore_bench.c: the event store's throughput next to the raw LMDB limit
 * on the same machine in the same run: durable single-event appends from 1, 8
 * and 64 threads (group commit), 100-event appends, read-all; raw LMDB
 * MDB_APPEND batches of the same records and separate durable single-put
 * commits. Prints a table and the ratios the goals are stated in.
 * Usage: eventstore_bench [--seconds S] [--rounds N] [--dir DIR] */
#include <lmdb.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "eventstore/eventstore.h"

#define DATA_LEN 128
#define BATCH 100

static double seconds = 3.0;
static char base[512] = "/tmp/es-bench";
static uint8_t payload[DATA_LEN];
static size_t record_size; /* encoded size of one bench event */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void rmtree(const char *dir)
{
    char path[1024];
    const char *files[] = {"data.mdb", "lock.mdb"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    rmdir(dir);
}

static void fresh_dir(char *out, size_t cap, const char *name)
{
    snprintf(out, cap, "%s/%s", base, name);
    rmtree(out);
    mkdir(base, 0755);
    mkdir(out, 0755);
}

static void die(const char *what, int rc)
{
    fprintf(stderr, "eventstore_bench: %s: %s\n", what, es_strerror(rc));
    exit(1);
}

/* Event ids: UUIDv7 (48-bit unix milliseconds first, then random bits), as
 * the services generate them, or fully random UUIDv4 for comparison. */
static int random_ids;

static uint64_t mix(uint64_t *state)
{
    uint64_t x = (*state += 0x9e3779b97f4a7c15ull);
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void make_id(uint8_t id[ES_ID_SIZE], uint64_t *state)
{
    uint64_t a = mix(state), b = mix(state);
    memcpy(id, &a, 8);
    memcpy(id + 8, &b, 8);
    if (!random_ids) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
        for (int i = 0; i < 6; i++)
            id[i] = (uint8_t)(ms >> (40 - 8 * i));
        id[6] = (uint8_t)(0x70 | (id[6] & 0x0f));
    } else {
        id[6] = (uint8_t)(0x40 | (id[6] & 0x0f));
    }
    id[8] = (uint8_t)(0x80 | (id[8] & 0x3f));
}

static void make_event(es_event_data *e, uint64_t *state)
{
    memset(e, 0, sizeof *e);
    make_id(e->id, state);
    e->type = "agentmesh.v1.TaskProgressed";
    e->content_type = "application/x-protobuf";
    e->data = payload;
    e->data_len = DATA_LEN;
    e->meta.correlation_id = "6f1c1c64-8a9e-4c1b-9a55-7b3f0e0d2a11";
    e->meta.causation_id = "b0e2b6d2-63b4-4c47-8f0e-1d6f3c1a9e42";
    e->meta.traceparent =
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    e->meta.actor = "agent-7";
}

/* ---- event store runs ---------------------------------------------------- */

typedef struct run {
    es_store *s;
    int batch;
    double until;
    atomic_long events;
    atomic_int id_seq;
} run;

static void *append_loop(void *arg)
{
    run *r = arg;
    int me = atomic_fetch_add(&r->id_seq, 1);
    uint64_t state = (uint64_t)me * 0x1234567ull + 1;
    es_event_data ev[BATCH];
    char stream[32];
    long n = 0;
    snprintf(stream, sizeof stream, "task-%d", me);
    while (now() < r->until) {
        for (int i = 0; i < r->batch; i++)
            make_event(&ev[i], &state);
        int rc = es_append(r->s, stream, ES_EXPECT_ANY, ev, (size_t)r->batch,
                           NULL);
        if (rc)
            die("append", rc);
        n += r->batch;
    }
    atomic_fetch_add(&r->events, n);
    return NULL;
}

typedef struct result {
    double rate;        /* events/s */
    double batch;       /* appends per commit */
    double commit_us;   /* mean commit (flush) time */
} result;

static result es_appends(int threads, int batch, const char *name)
{
    char dir[600];
    es_store *s = NULL;
    es_options o;
    es_stats st;
    run r;
    pthread_t th[64];
    fresh_dir(dir, sizeof dir, name);
    es_options_init(&o);
    o.map_size = (size_t)1 << 30;
    int rc = es_open(dir, &o, &s);
    if (rc)
        die("open", rc);
    memset(&r, 0, sizeof r);
    r.s = s;
    r.batch = batch;
    double t0 = now();
    r.until = t0 + seconds;
    for (int i = 0; i < threads; i++)
        pthread_create(&th[i], NULL, append_loop, &r);
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    double t1 = now();
    es_stats_get(s, &st);
    es_close(s);
    rmtree(dir);
    result res = {atomic_load(&r.events) / (t1 - t0),
                  st.commits ? (double)st.appends_ok / st.commits : 0,
                  st.commits ? st.commit_ns_total / 1e3 / st.commits : 0};
    return res;
}

#define MAX_ROUNDS 9
static int rounds = 3;

static int by_rate(const void *a, const void *b)
{
    const result *x = a, *y = b;
    return x->rate < y->rate ? -1 : x->rate > y->rate;
}

static result median(const result *r, int n)
{
    result tmp[MAX_ROUNDS];
    memcpy(tmp, r, (size_t)n * sizeof *r);
    qsort(tmp, (size_t)n, sizeof *tmp, by_rate);
    return tmp[n / 2];
}

static double es_read_all_rate(uint64_t *events_out)
{
    char dir[600];
    es_store *s = NULL;
    es_options o;
    static es_event page[1000];
    fresh_dir(dir, sizeof dir, "read");
    es_options_init(&o);
    o.map_size = (size_t)1 << 30;
    o.flags = ES_OPT_NOSYNC; /* only the reads are measured */
    int rc = es_open(dir, &o, &s);
    if (rc)
        die("open", rc);
    uint64_t state = 99;
    es_event_data ev[BATCH];
    const uint64_t total = 200000;
    for (uint64_t i = 0; i < total / BATCH; i++) {
        char stream[32];
        snprintf(stream, sizeof stream, "task-%llu", (unsigned long long)(i % 50));
        for (int j = 0; j < BATCH; j++)
            make_event(&ev[j], &state);
        if ((rc = es_append(s, stream, ES_EXPECT_ANY, ev, BATCH, NULL)))
            die("append", rc);
    }
    uint64_t read = 0, sum = 0;
    double t0 = now(), t1;
    do {
        es_txn *t = NULL;
        es_page pg;
        uint64_t next = 1;
        if ((rc = es_txn_begin(s, &t)))
            die("txn", rc);
        do {
            if ((rc = es_read_all(t, next, ES_FORWARD, NULL, 1000, page, &pg)))
                die("read", rc);
            for (size_t i = 0; i < pg.count; i++)
                sum += page[i].data_len + page[i].stream_len;
            read += pg.count;
            next = pg.next;
        } while (!pg.end_of_stream);
        es_txn_end(t);
        t1 = now();
    } while (t1 - t0 < seconds / 2);
    es_close(s);
    rmtree(dir);
    *events_out = sum ? read : 0;
    return read / (t1 - t0);
}

/* ---- raw LMDB runs ------------------------------------------------------- */

static void raw_open(const char *name, MDB_env **env, MDB_dbi *dbi, char *dir,
                     size_t cap)
{
    MDB_txn *txn;
    fresh_dir(dir, cap, name);
    if (mdb_env_create(env) || mdb_env_set_mapsize(*env, (size_t)1 << 30) ||
        mdb_env_open(*env, dir, 0, 0644) || mdb_txn_begin(*env, NULL, 0, &txn) ||
        mdb_dbi_open(txn, NULL, 0, dbi) || mdb_txn_commit(txn)) {
        fprintf(stderr, "eventstore_bench: raw lmdb open failed\n");
        exit(1);
    }
}

/* Durable commits of `batch` MDB_APPEND puts each; records/s. */
static double raw_rate(int batch, const char *name)
{
    MDB_env *env;
    MDB_dbi dbi;
    char dir[600];
    static uint8_t val[4096];
    uint64_t pos = 0;
    raw_open(name, &env, &dbi, dir, sizeof dir);
    double t0 = now(), until = t0 + seconds, t1;
    do {
        MDB_txn *txn;
        if (mdb_txn_begin(env, NULL, 0, &txn))
            exit(1);
        for (int i = 0; i < batch; i++) {
            uint8_t k[8];
            pos++;
            for (int j = 0; j < 8; j++)
                k[j] = (uint8_t)(pos >> (56 - 8 * j));
            MDB_val kv = {8, k}, d = {record_size, val};
            if (mdb_put(txn, dbi, &kv, &d, MDB_APPEND))
                exit(1);
        }
        if (mdb_txn_commit(txn))
            exit(1);
        t1 = now();
    } while (t1 < until);
    mdb_env_close(env);
    rmtree(dir);
    return pos / (t1 - t0);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dir") && i + 1 < argc)
            snprintf(base, sizeof base, "%s", argv[++i]);
        else {
            fprintf(stderr, "usage: eventstore_bench [--seconds S] "
                            "[--rounds N] [--dir DIR]\n");
            return 2;
        }
    }
    if (seconds <= 0)
        seconds = 3;
    if (rounds < 1 || rounds > MAX_ROUNDS)
        rounds = 3;
    memset(payload, 0x42, sizeof payload);
    /* The encoded size of one bench event, for the raw runs' values. */
    {
        char dir[600];
        es_store *s = NULL;
        es_txn *t = NULL;
        es_event ev;
        es_page pg;
        es_event_data e;
        uint64_t st = 7;
        fresh_dir(dir, sizeof dir, "size");
        make_event(&e, &st);
        if (es_open(dir, NULL, &s) || es_append(s, "task-0", ES_EXPECT_ANY, &e, 1, NULL) ||
            es_txn_begin(s, &t) || es_read_all(t, 1, ES_FORWARD, NULL, 1, &ev, &pg))
            die("size probe", ES_IO);
        record_size = 1 + 1 + ES_ID_SIZE + 24 + 7 * 3 + ev.stream_len +
                      ev.type_len + ev.content_type_len + ev.correlation_id_len +
                      ev.causation_id_len + ev.traceparent_len + ev.actor_len +
                      4 + ev.data_len + ES_HASH_SIZE;
        es_txn_end(t);
        es_close(s);
        rmtree(dir);
    }

    printf("event store benchmark: %d rounds of %.1f s per run, medians; record "
           "%zu bytes (%d bytes of data); durable (fsync per commit); UUIDv7 "
           "event ids unless marked\n\n",
           rounds, seconds, record_size, DATA_LEN);
    /* Runs interleave round by round so that a noisy neighbour on a shared
     * disk hits every configuration alike; medians are reported. */
    enum { A1, A8, A64, B, A64R, BR, C, RAWB, RAWS, NRUNS };
    static const char *names[NRUNS] = {
        "(a) es_append, 1 event, 1 thread",
        "(a) es_append, 1 event, 8 threads",
        "(a) es_append, 1 event, 64 threads",
        "(b) es_append, 100 events, 1 thread",
        "(a) 64 threads, random UUIDv4 ids",
        "(b) 100 events, random UUIDv4 ids",
        "(c) es_read_all, zero-copy pages of 1000",
        "raw LMDB: MDB_APPEND, 100 per durable commit",
        "raw LMDB: 1 put per durable commit",
    };
    result res[NRUNS][MAX_ROUNDS];
    memset(res, 0, sizeof res);
    for (int r = 0; r < rounds; r++) {
        uint64_t nread = 0;
        res[A1][r] = es_appends(1, 1, "a1");
        res[RAWS][r].rate = raw_rate(1, "raw-single");
        res[A8][r] = es_appends(8, 1, "a8");
        res[A64][r] = es_appends(64, 1, "a64");
        res[B][r] = es_appends(1, BATCH, "b");
        res[RAWB][r].rate = raw_rate(BATCH, "raw-batched");
        random_ids = 1;
        res[A64R][r] = es_appends(64, 1, "a64r");
        res[BR][r] = es_appends(1, BATCH, "br");
        random_ids = 0;
        res[C][r].rate = es_read_all_rate(&nread);
        fprintf(stderr, "round %d of %d done\n", r + 1, rounds);
    }
    result med[NRUNS];
    for (int i = 0; i < NRUNS; i++)
        med[i] = median(res[i], rounds);

    printf("%-46s %12s %10s %10s\n", "run", "events/s", "per commit",
           "commit us");
    for (int i = 0; i < NRUNS; i++) {
        if (i == C || i == RAWB || i == RAWS)
            printf("%-46s %12.0f\n", names[i], med[i].rate);
        else
            printf("%-46s %12.0f %10.1f %10.1f\n", names[i], med[i].rate,
                   med[i].batch, med[i].commit_us);
    }
    double rb = med[B].rate / med[RAWB].rate;
    double ra = med[A64].rate / med[RAWS].rate;
    printf("\nratios of medians (goal):\n");
    printf("  (b) / raw batched             %6.2f   (>= 0.50) %s\n", rb,
           rb >= 0.5 ? "met" : "NOT met");
    printf("  (a) 64 threads / raw single   %6.2f   (>= 5.00) %s\n", ra,
           ra >= 5 ? "met" : "NOT met");
    printf("  (a) 8 threads / raw single    %6.2f\n", med[A8].rate / med[RAWS].rate);
    printf("  (a) 1 thread / raw single     %6.2f\n", med[A1].rate / med[RAWS].rate);
    printf("  (b) UUIDv4 / raw batched      %6.2f\n", med[BR].rate / med[RAWB].rate);
    printf("  (c) read-all events/s         %6.2f M (>= 1 M) %s\n",
           med[C].rate / 1e6, med[C].rate >= 1e6 ? "met" : "NOT met");
    rmdir(base);
    return 0;
}
