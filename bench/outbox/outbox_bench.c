/*
 * outbox_bench: events from a durable append to their receipt by a NATS
 * subscriber, through the outbox relay and JetStream, next to JetStream's own
 * synchronous and asynchronous publish rates measured in the same run on the
 * same nats-server. Prints a table; results go to docs/BENCHMARKS.md.
 *
 * usage: outbox_bench [--events N] [--threads T] [--batch B] [--paced-rate R]
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>
#include <openssl/rand.h>

#include "agentmesh/v1/events.pb-c.h"
#include "services/bus/bus.h"

extern char **environ;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Per position: when its append was acknowledged, when it was received. */
static _Atomic int64_t *acked_at, *received_at;
static atomic_ulong received;
static uint64_t base_position;
static size_t capacity;

static void on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    (void)closure;
    const char *pos = NULL;
    if (natsMsgHeader_Get(msg, "agentmesh-position", &pos) == NATS_OK) {
        uint64_t p = strtoull(pos, NULL, 10);
        if (p > base_position && p - base_position <= capacity) {
            int64_t zero = 0;
            if (atomic_compare_exchange_strong(&received_at[p - base_position - 1], &zero, now_ns()))
                atomic_fetch_add(&received, 1);
        }
    }
    natsMsg_Destroy(msg);
}

struct appender {
    es_store *store;
    size_t n;        /* events */
    size_t batch;    /* events per append */
    int64_t pace_ns; /* per append; 0: as fast as possible */
    int id;
};

/* Time-ordered ids (UUIDv7 layout): the id index grows at its right edge. */
static void make_id(uint8_t id[ES_ID_SIZE])
{
    static _Atomic uint64_t counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    uint64_t c = atomic_fetch_add(&counter, 1);
    for (int i = 0; i < 6; i++)
        id[i] = (uint8_t)(ms >> (40 - 8 * i));
    for (int i = 0; i < 8; i++)
        id[6 + i] = (uint8_t)(c >> (56 - 8 * i));
    RAND_bytes(id + 14, 2);
    id[6] = (uint8_t)(0x70 | (id[6] & 0x0f));
}

static void *append_loop(void *arg)
{
    struct appender *a = arg;
    static const size_t max_batch = 128;
    uint8_t buf[128][256];
    char task[32], stream[48], input[200];
    es_event_data ev[128];
    int64_t next = now_ns();
    size_t batch = a->batch < 1 ? 1 : a->batch > max_batch ? max_batch : a->batch;
    memset(input, 'x', 160);
    input[160] = '\0';
    for (size_t i = 0; i + batch <= a->n; i += batch) {
        snprintf(task, sizeof(task), "b%d-%zu", a->id, i);
        snprintf(stream, sizeof(stream), "task-%s", task);
        memset(ev, 0, sizeof(ev));
        for (size_t k = 0; k < batch; k++) {
            Agentmesh__V1__TaskSubmitted p = AGENTMESH__V1__TASK_SUBMITTED__INIT;
            p.task_id = task;
            p.input = input;
            make_id(ev[k].id);
            ev[k].type = "agentmesh.v1.TaskSubmitted";
            ev[k].data_len = agentmesh__v1__task_submitted__pack(&p, buf[k]);
            ev[k].data = buf[k];
        }
        if (a->pace_ns > 0) {
            int64_t wait = next - now_ns();
            if (wait > 0) {
                struct timespec d = {wait / 1000000000, wait % 1000000000};
                nanosleep(&d, NULL);
            }
            next += a->pace_ns;
        }
        es_append_result r;
        if (es_append(a->store, stream, ES_EXPECT_NO_STREAM, ev, batch, &r) != ES_OK) {
            fprintf(stderr, "append failed\n");
            exit(1);
        }
        int64_t t = now_ns();
        for (uint64_t p = r.first_position; p <= r.last_position; p++)
            atomic_store(&acked_at[p - base_position - 1], t);
    }
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

struct run_result {
    double events_per_s, p50_ms, p99_ms;
};

static struct run_result run(es_store *store, size_t n, int threads, size_t batch, double rate)
{
    es_stats st;
    es_stats_get(store, &st);
    base_position = st.last_position;
    capacity = n;
    acked_at = calloc(n, sizeof(*acked_at));
    received_at = calloc(n, sizeof(*received_at));
    atomic_store(&received, 0);
    pthread_t th[64];
    struct appender ap[64];
    int64_t start = now_ns();
    for (int t = 0; t < threads; t++) {
        ap[t].store = store;
        ap[t].n = n / (size_t)threads / batch * batch;
        ap[t].batch = batch;
        ap[t].id = (int)(start % 100000) * 64 + t;
        ap[t].pace_ns = rate > 0 ? (int64_t)(1e9 * threads * batch / rate) : 0;
        pthread_create(&th[t], NULL, append_loop, &ap[t]);
    }
    for (int t = 0; t < threads; t++)
        pthread_join(th[t], NULL);
    size_t total = (n / (size_t)threads / batch * batch) * (size_t)threads;
    while (atomic_load(&received) < total && now_ns() - start < 120 * 1000000000LL) {
        struct timespec d = {0, 1000000};
        nanosleep(&d, NULL);
    }
    int64_t last = 0;
    int64_t *lat = calloc(total, sizeof(int64_t));
    size_t k = 0;
    for (size_t i = 0; i < total; i++) {
        int64_t r = atomic_load(&received_at[i]), a = atomic_load(&acked_at[i]);
        if (r > last)
            last = r;
        if (r && a)
            lat[k++] = r > a ? r - a : 0;
    }
    qsort(lat, k, sizeof(int64_t), cmp_i64);
    struct run_result res = {0, 0, 0};
    if (k > 0) {
        res.events_per_s = (double)k / ((double)(last - start) / 1e9);
        res.p50_ms = lat[k / 2] / 1e6;
        res.p99_ms = lat[(k * 99) / 100] / 1e6;
    }
    if (k != total)
        fprintf(stderr, "warning: received %zu of %zu\n", k, total);
    free(lat);
    free((void *)acked_at);
    free((void *)received_at);
    return res;
}

/* JetStream's own publish rates on a stream of its own, same message size. */
static void jetstream_peer(natsConnection *nc, size_t n, double *sync_rate, double *async_rate)
{
    jsCtx *js = NULL;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = 256;
    natsConnection_JetStream(&js, nc, &jo);
    jsStreamConfig cfg;
    const char *subjects[] = {"peer.>"};
    jsStreamConfig_Init(&cfg);
    cfg.Name = "PEER";
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    jsStreamInfo *si = NULL;
    js_AddStream(&si, js, &cfg, NULL, NULL);
    jsStreamInfo_Destroy(si);
    char body[520];
    memset(body, 'y', sizeof(body));
    size_t ns = n / 4;
    int64_t t0 = now_ns();
    for (size_t i = 0; i < ns; i++) {
        jsPubAck *pa = NULL;
        if (js_Publish(&pa, js, "peer.sync", body, sizeof(body), NULL, NULL) == NATS_OK)
            jsPubAck_Destroy(pa);
    }
    *sync_rate = ns / ((now_ns() - t0) / 1e9);
    t0 = now_ns();
    for (size_t i = 0; i < n; i++)
        js_PublishAsync(js, "peer.async", body, sizeof(body), NULL);
    jsPubOptions wo;
    jsPubOptions_Init(&wo);
    wo.MaxWait = 60000;
    js_PublishAsyncComplete(js, &wo);
    *async_rate = n / ((now_ns() - t0) / 1e9);
    jsCtx_Destroy(js);
}

int main(int argc, char **argv)
{
    size_t n = 50000, batch = 20;
    int threads = 8;
    double paced = 1000;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--events") == 0)
            n = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--threads") == 0)
            threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--batch") == 0)
            batch = strtoull(argv[i + 1], NULL, 10);
        else if (strcmp(argv[i], "--paced-rate") == 0)
            paced = atof(argv[i + 1]);
    }
    if (threads < 1 || threads > 64)
        threads = 16;
    char dir[] = "/tmp/outbox-bench-XXXXXX";
    if (mkdtemp(dir) == NULL)
        return 1;
    char js_dir[256], es_dir[256], url[64], port_s[16];
    snprintf(js_dir, sizeof(js_dir), "%s/js", dir);
    snprintf(es_dir, sizeof(es_dir), "%s/es", dir);
    int port = 20000 + (int)(getpid() % 20000);
    snprintf(port_s, sizeof(port_s), "%d", port);
    snprintf(url, sizeof(url), "nats://127.0.0.1:%d", port);
    char *nargv[] = {"/usr/sbin/nats-server", "-js", "-sd", js_dir, "-a", "127.0.0.1", "-p", port_s, NULL};
    pid_t nats_pid;
    if (posix_spawn(&nats_pid, nargv[0], NULL, NULL, nargv, environ) != 0) {
        fprintf(stderr, "cannot start nats-server\n");
        return 1;
    }
    natsConnection *nc = NULL;
    for (int i = 0; i < 200 && natsConnection_ConnectTo(&nc, url) != NATS_OK; i++)
        usleep(50000);
    if (nc == NULL) {
        fprintf(stderr, "nats-server did not come up\n");
        kill(nats_pid, SIGKILL);
        return 1;
    }

    es_options eo;
    es_options_init(&eo);
    eo.map_size = 512u << 20;
    es_store *store = NULL;
    if (es_open(es_dir, &eo, &store) != ES_OK)
        return 1;
    bus_outbox_options bo;
    bus_outbox_options_init(&bo);
    bo.nats_url = url;
    bo.service = "bench";
    bus_outbox *ob = NULL;
    if (bus_outbox_start(store, &bo, &ob) != BUS_OK)
        return 1;
    natsSubscription *sub = NULL;
    natsConnection_Subscribe(&sub, nc, "agentmesh.events.>", on_msg, NULL);
    natsSubscription_SetPendingLimits(sub, -1, -1);
    natsConnection_Flush(nc);

    double sync_rate = 0, async_rate = 0;
    jetstream_peer(nc, n, &sync_rate, &async_rate);
    struct run_result full = run(store, n, threads, batch, 0);
    struct run_result slow = run(store, (size_t)(paced * 5), 1, 1, paced);
    struct run_result fast = run(store, (size_t)(paced * 10 * 5), 1, 10, paced * 10);

    printf("outbox_bench: %zu events (~520-byte CloudEvents); saturated: durable appends of %zu events from "
           "%d threads; paced: 1 event per append at %.0f/s\n",
           n, batch, threads, paced);
    printf("%-46s %14s %10s %10s\n", "measure", "events/s", "p50 ms", "p99 ms");
    printf("%-46s %14.0f %10.2f %10.2f\n", "append -> NATS subscriber (saturated)", full.events_per_s,
           full.p50_ms, full.p99_ms);
    printf("%-46s %14.0f %10.2f %10.2f\n", "append -> NATS subscriber (paced)", slow.events_per_s, slow.p50_ms,
           slow.p99_ms);
    printf("%-46s %14.0f %10.2f %10.2f\n", "append -> NATS subscriber (paced x10, 10/append)", fast.events_per_s,
           fast.p50_ms, fast.p99_ms);
    printf("%-46s %14.0f %10s %10s\n", "peer: JetStream js_Publish (sync)", sync_rate, "-", "-");
    printf("%-46s %14.0f %10s %10s\n", "peer: JetStream js_PublishAsync (window 256)", async_rate, "-", "-");
    printf("ratio saturated outbox / JetStream async: %.2f; / JetStream sync: %.2f\n",
           full.events_per_s / async_rate, full.events_per_s / sync_rate);

    natsSubscription_Destroy(sub);
    bus_outbox_stop(ob, 5000);
    es_close(store);
    natsConnection_Destroy(nc);
    kill(nats_pid, SIGTERM);
    waitpid(nats_pid, NULL, 0);
    nats_Close();
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return 0;
}
