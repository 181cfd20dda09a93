/* memory_bench: memory-sync's events from append to receipt on NATS, next to
 * JetStream's own publish rates measured in the same run. It starts a
 * nats-server with JetStream on a free loopback port, runs the memory-sync
 * core (PutMemory with sealing, durable group-committed appends) with the
 * outbox relay, and receives the CloudEvents with a nats.c subscriber on
 * agentmesh.events.memory.>, timing each event from the start of its
 * PutMemory to its receipt; then it measures js_Publish (sync) and
 * js_PublishAsync + js_PublishAsyncComplete with messages of the same size.
 * A benchmark program, not a test: results go to docs/BENCHMARKS.md.
 *
 * usage: memory_bench [--events N] [--threads T] [--value-size B]
 *                     [--peer-messages M] [--nosync 0|1] [--nats-server PATH]
 * --nosync 1 opens the store without fsync (ES_OPT_NOSYNC) to show what the
 * relay carries when the disk is not the limit; never for real data. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>

#include "eventstore/eventstore.h"
#include "services/bus/bus.h"
#include "services/memory_sync/memory_sync.h"

typedef struct bench {
    size_t events, threads, value_size, peer_msgs, nosync;
    const char *nats_bin;
    char url[64];
    ms_service *svc;
    int64_t *sent_ns;              /* by position */
    int64_t *recv_ns;              /* by position */
    int64_t *done_ns;              /* by position: PutMemory returned */
    size_t cap;
    atomic_size_t received;
    atomic_size_t bytes;
    atomic_size_t failures;
} bench;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int free_port(void)
{
    struct sockaddr_in a = {.sin_family = AF_INET};
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

static pid_t start_nats(const char *bin, int port, const char *dir)
{
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    pid_t pid = fork();
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        if (null >= 0) {
            dup2(null, 1);
            dup2(null, 2);
        }
        execl(bin, bin, "-a", "127.0.0.1", "-p", p, "-js", "-sd", dir, (char *)NULL);
        _exit(127);
    }
    return pid;
}

static void on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                   void *arg)
{
    bench *b = arg;
    int64_t t = now_ns();
    const char *d = natsMsg_GetData(msg);
    const char *seq = d ? strstr(d, "\"sequence\":\"") : NULL;
    (void)nc;
    (void)sub;
    if (seq) {
        unsigned long long pos = strtoull(seq + 12, NULL, 10);
        if (pos < b->cap && b->recv_ns[pos] == 0) {
            b->recv_ns[pos] = t;
            atomic_fetch_add(&b->bytes, (size_t)natsMsg_GetDataLength(msg));
            atomic_fetch_add(&b->received, 1);
        }
    }
    natsMsg_Destroy(msg);
}

typedef struct writer {
    bench *b;
    size_t id, count;
} writer;

static void *write_loop(void *arg)
{
    writer *w = arg;
    bench *b = w->b;
    char ns[32], key[32];
    uint8_t *value = malloc(b->value_size ? b->value_size : 1);
    if (!value)
        return NULL;
    for (size_t i = 0; i < b->value_size; i++)
        value[i] = (uint8_t)(i * 131 + w->id);
    snprintf(ns, sizeof ns, "bench-%zu", w->id);
    for (size_t i = 0; i < w->count; i++) {
        Agentmesh__V1__PutMemoryRequest req = AGENTMESH__V1__PUT_MEMORY_REQUEST__INIT;
        Agentmesh__V1__MemoryEntry *e = NULL;
        ms_error err;
        ms_ctx ctx = {"bench", NULL, NULL,
                      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"};
        snprintf(key, sizeof key, "k%zu", i % 100);
        req.namespace_ = ns;
        req.key = key;
        req.value.data = value;
        req.value.len = b->value_size;
        int64_t t0 = now_ns();
        if (ms_put(b->svc, &ctx, &req, &e, &err)) {
            atomic_fetch_add(&b->failures, 1);
            continue;
        }
        if (e->position < b->cap) {
            b->sent_ns[e->position] = t0;
            b->done_ns[e->position] = now_ns();
        }
        protobuf_c_message_free_unpacked(&e->base, NULL);
    }
    free(value);
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static int rm_entry(const char *path, const struct stat *st, int flag,
                    struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

/* JetStream's own rates with messages of `size` bytes on a stream of its own. */
static int peer_rates(bench *b, size_t size, double *sync_rate, double *async_rate)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    jsStreamInfo *si = NULL;
    jsErrCode code = 0;
    jsOptions jo;
    jsStreamConfig cfg;
    const char *subjects[] = {"bench.>"};
    char *data = malloc(size ? size : 1), subj[64];
    int rc = -1;
    if (!data)
        return -1;
    memset(data, 'x', size);
    jsOptions_Init(&jo);
    jo.PublishAsync.MaxPending = 4096;
    jsStreamConfig_Init(&cfg);
    cfg.Name = "BENCH";
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    if (natsConnection_ConnectTo(&nc, b->url) != NATS_OK ||
        natsConnection_JetStream(&js, nc, &jo) != NATS_OK ||
        js_AddStream(&si, js, &cfg, NULL, &code) != NATS_OK)
        goto out;
    int64_t t0 = now_ns();
    for (size_t i = 0; i < b->peer_msgs; i++) {
        jsPubAck *pa = NULL;
        snprintf(subj, sizeof subj, "bench.sync.%zu", i % 16);
        if (js_Publish(&pa, js, subj, data, (int)size, NULL, &code) != NATS_OK)
            goto out;
        jsPubAck_Destroy(pa);
    }
    *sync_rate = (double)b->peer_msgs * 1e9 / (double)(now_ns() - t0);
    t0 = now_ns();
    for (size_t i = 0; i < b->peer_msgs; i++) {
        snprintf(subj, sizeof subj, "bench.async.%zu", i % 16);
        if (js_PublishAsync(js, subj, data, (int)size, NULL) != NATS_OK)
            goto out;
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = 60000;
    if (js_PublishAsyncComplete(js, &po) != NATS_OK)
        goto out;
    *async_rate = (double)b->peer_msgs * 1e9 / (double)(now_ns() - t0);
    rc = 0;
out:
    jsStreamInfo_Destroy(si);
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    free(data);
    return rc;
}

int main(int argc, char **argv)
{
    bench b = {.events = 20000, .threads = 16, .value_size = 256,
               .peer_msgs = 20000, .nats_bin = "/usr/sbin/nats-server"};
    char dir[] = "/tmp/memory-bench-XXXXXX", path[256], jsdir[256];
    es_store *store = NULL;
    bus_outbox *ob = NULL;
    natsConnection *nc = NULL;
    natsSubscription *sub = NULL;
    pid_t nats = -1;
    int rc = 1;

    for (int i = 1; i + 1 < argc; i += 2) {
        size_t v = strtoull(argv[i + 1], NULL, 10);
        if (strcmp(argv[i], "--events") == 0)
            b.events = v;
        else if (strcmp(argv[i], "--threads") == 0)
            b.threads = v;
        else if (strcmp(argv[i], "--value-size") == 0)
            b.value_size = v;
        else if (strcmp(argv[i], "--peer-messages") == 0)
            b.peer_msgs = v;
        else if (strcmp(argv[i], "--nosync") == 0)
            b.nosync = v;
        else if (strcmp(argv[i], "--nats-server") == 0)
            b.nats_bin = argv[i + 1];
        else {
            fprintf(stderr, "usage: %s [--events N] [--threads T] [--value-size B] "
                            "[--peer-messages M] [--nosync 0|1] [--nats-server PATH]\n", argv[0]);
            return 2;
        }
    }
    if (!b.events || !b.threads || b.threads > 256 || !b.peer_msgs ||
        b.value_size > MS_VALUE_DEFAULT || !mkdtemp(dir))
        return 2;
    b.cap = b.events + 2;
    b.sent_ns = calloc(b.cap, sizeof *b.sent_ns);
    b.recv_ns = calloc(b.cap, sizeof *b.recv_ns);
    b.done_ns = calloc(b.cap, sizeof *b.done_ns);
    int port = free_port();
    snprintf(jsdir, sizeof jsdir, "%s/js", dir);
    snprintf(path, sizeof path, "%s/store", dir);
    snprintf(b.url, sizeof b.url, "nats://127.0.0.1:%d", port);
    if (!b.sent_ns || !b.recv_ns || !b.done_ns || port < 0 ||
        (nats = start_nats(b.nats_bin, port, jsdir)) < 0)
        goto out;
    for (int i = 0; i < 200 && natsConnection_ConnectTo(&nc, b.url) != NATS_OK; i++)
        usleep(50000);
    if (!nc) {
        fprintf(stderr, "memory_bench: nats-server did not start\n");
        goto out;
    }
    if (natsConnection_Subscribe(&sub, nc, "agentmesh.events.memory.>", on_msg, &b) != NATS_OK ||
        natsSubscription_SetPendingLimits(sub, -1, -1) != NATS_OK ||
        natsConnection_Flush(nc) != NATS_OK)
        goto out;
    es_options eo;
    es_options_init(&eo);
    if (b.nosync)
        eo.flags |= ES_OPT_NOSYNC;
    ms_options mo;
    ms_options_init(&mo);
    if (es_open(path, &eo, &store) != ES_OK)
        goto out;
    mo.store = store;
    mo.key_dir = path;
    bus_outbox_options bo;
    bus_outbox_options_init(&bo);
    bo.nats_url = b.url;
    bo.service = "memory";
    bo.payload_hook = ms_payload_hook;
    if (ms_service_create(&mo, &b.svc) != ES_OK ||
        bus_outbox_start(store, &bo, &ob) != BUS_OK)
        goto out;

    pthread_t th[256];
    writer ws[256];
    int64_t t0 = now_ns();
    for (size_t i = 0; i < b.threads; i++) {
        ws[i] = (writer){&b, i, b.events / b.threads + (i < b.events % b.threads)};
        pthread_create(&th[i], NULL, write_loop, &ws[i]);
    }
    for (size_t i = 0; i < b.threads; i++)
        pthread_join(th[i], NULL);
    int64_t t_appended = now_ns();
    int64_t deadline = t_appended + 120 * 1000000000LL;
    while (atomic_load(&b.received) < b.events && now_ns() < deadline)
        usleep(2000);
    int64_t t_done = now_ns();
    size_t got = atomic_load(&b.received);
    int64_t last_recv = 0;
    int64_t *lat = calloc(b.events + 1, sizeof *lat);
    int64_t *put = calloc(b.events + 1, sizeof *put);
    int64_t *relay = calloc(b.events + 1, sizeof *relay);
    size_t nl = 0;
    for (size_t p = 1; p < b.cap && lat && put && relay; p++) {
        if (b.recv_ns[p] && b.sent_ns[p]) {
            put[nl] = b.done_ns[p] - b.sent_ns[p];
            relay[nl] = b.recv_ns[p] - b.done_ns[p];
            lat[nl++] = b.recv_ns[p] - b.sent_ns[p];
            if (b.recv_ns[p] > last_recv)
                last_recv = b.recv_ns[p];
        }
    }
    if (!lat || !put || !relay || nl == 0) {
        fprintf(stderr, "memory_bench: no event arrived\n");
        free(lat);
        free(put);
        free(relay);
        goto out;
    }
    qsort(lat, nl, sizeof *lat, cmp_i64);
    qsort(put, nl, sizeof *put, cmp_i64);
    qsort(relay, nl, sizeof *relay, cmp_i64);
    double append_rate = (double)b.events * 1e9 / (double)(t_appended - t0);
    double e2e_rate = (double)got * 1e9 / (double)(last_recv - t0);
    size_t avg = atomic_load(&b.bytes) / (got ? got : 1);
    (void)t_done;

    double sync_rate = 0, async_rate = 0;
    if (peer_rates(&b, avg, &sync_rate, &async_rate)) {
        fprintf(stderr, "memory_bench: JetStream peer runs failed\n");
        free(lat);
        free(put);
        free(relay);
        goto out;
    }
    printf("memory-sync benchmark: %zu PutMemory calls from %zu threads (%zu-byte values, "
           "%s appends, sealed), outbox with JetStream acks, nats.c subscriber\n",
           b.events, b.threads, b.value_size, b.nosync ? "no-fsync" : "durable");
    printf("%-52s %12s\n", "run", "per second");
    printf("%-52s %12.0f\n", "PutMemory committed (append rate)", append_rate);
    printf("%-52s %12.0f\n", "append -> NATS subscriber (end to end)", e2e_rate);
    printf("%-52s %12.0f\n", "JetStream js_Publish, sync (peer)", sync_rate);
    printf("%-52s %12.0f\n", "JetStream js_PublishAsync + Complete (peer)", async_rate);
    printf("events received %zu of %zu; CloudEvent size %zu bytes (peer messages the same)\n",
           got, b.events, avg);
    printf("end-to-end latency (PutMemory start -> receipt): p50 %.2f ms, p99 %.2f ms, max %.2f ms\n",
           (double)lat[nl / 2] / 1e6, (double)lat[nl * 99 / 100] / 1e6,
           (double)lat[nl - 1] / 1e6);
    printf("  of which PutMemory (until committed):    p50 %.2f ms, p99 %.2f ms\n",
           (double)put[nl / 2] / 1e6, (double)put[nl * 99 / 100] / 1e6);
    printf("  of which relay (commit -> receipt):      p50 %.2f ms, p99 %.2f ms\n",
           (double)relay[nl / 2] / 1e6, (double)relay[nl * 99 / 100] / 1e6);
    printf("ratios: end to end / js sync %.2f, end to end / js async %.2f, "
           "end to end / append %.2f\n",
           e2e_rate / sync_rate, e2e_rate / async_rate, e2e_rate / append_rate);
    free(lat);
    free(put);
    free(relay);
    rc = got == b.events && atomic_load(&b.failures) == 0 ? 0 : 1;
out:
    bus_outbox_stop(ob, 5000);
    ms_service_destroy(b.svc);
    es_close(store);
    natsSubscription_Destroy(sub);
    natsConnection_Destroy(nc);
    if (nats > 0) {
        kill(nats, SIGTERM);
        waitpid(nats, NULL, 0);
    }
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(b.sent_ns);
    free(b.recv_ns);
    free(b.done_ns);
    return rc;
}
