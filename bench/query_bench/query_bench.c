/* query_bench.c: the query service's projection lag and rebuild speed, with
 * their peers from the same run. It starts nats-server, agent-manager and
 * query, sends SubmitTask commands (one event each) at a steady rate from an
 * asynchronous gRPC client, and takes for every command the time from its
 * acknowledgement to the moment the query service's checkpoint covers its
 * position (read from the query env, read-only, every 50 us); its own NATS
 * subscriber tells when each event was on the bus, splitting that lag into
 * the outbox's part and the query service's part. Then it stops
 * query, runs `query --rebuild` over the whole agents log, and scans the
 * same log with raw LMDB cursors.
 * Run: bazel run //bench/query_bench -- [options] (from the runfiles root).
 * Usage: query_bench [--seconds S] [--rates R1,R2,...] [--dir DIR]
 *                    [--agent-manager BIN] [--query BIN] [--nats-server BIN] */
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <nats/nats.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "agentmesh/v1/agents.pb-c.h"
#include "eventstore/eventstore.h"

#define INFLIGHT_MAX 512
#define POLL_US 50

static double seconds = 5.0;
static char rates_arg[256] = "1000,10000";
static char base[512] = "/tmp/query-bench";
static const char *am_bin = "services/agent_manager/agent-manager";
static const char *query_bin = "services/query/query";
static const char *nats_bin = "/usr/sbin/nats-server";

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "query_bench: %s\n", what);
    exit(1);
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) ||
        getsockname(fd, (struct sockaddr *)&a, &len))
        die("no free port");
    close(fd);
    return ntohs(a.sin_port);
}

/* Starts argv[0] with stdout and stderr to log_path; returns its pid. */
static pid_t spawn(char *const argv[], const char *log_path)
{
    pid_t pid = fork();
    if (pid < 0)
        die("fork failed");
    if (pid == 0) {
        int fd = open(log_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execv(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* Waits for a port file's "grpc=<port>" line. */
static int read_grpc_port(const char *path, pid_t pid)
{
    double deadline = now() + 60;
    while (now() < deadline) {
        FILE *f = fopen(path, "r");
        int port = 0;
        if (f) {
            if (fscanf(f, "grpc=%d", &port) != 1)
                port = 0;
            fclose(f);
        }
        if (port)
            return port;
        if (waitpid(pid, NULL, WNOHANG) == pid)
            die("a server exited during startup (see its log in --dir)");
        usleep(20000);
    }
    die("a server did not start within 60 s");
    return 0;
}

static int stop(pid_t pid)
{
    int st = 0;
    kill(pid, SIGTERM);
    waitpid(pid, &st, 0);
    return st;
}

/* ---- Visibility: the query env's agents checkpoint, polled. ------------- */

typedef struct watch {
    es_store *store;
    double *visible; /* by position */
    double *arrived; /* by position: the event reached a NATS subscriber */
    size_t cap;
    atomic_bool stop;
    atomic_ullong seen;
} watch;

static void *watch_main(void *arg)
{
    watch *w = arg;
    uint64_t seen = 0;
    while (!atomic_load(&w->stop)) {
        es_txn *txn = NULL;
        uint64_t cp = 0;
        if (es_txn_begin(w->store, &txn) == ES_OK) {
            if (es_checkpoint_get(txn, "agents", &cp))
                cp = 0;
            es_txn_end(txn);
        }
        if (cp > seen) {
            double t = now();
            for (uint64_t p = seen + 1; p <= cp && p < w->cap; p++)
                w->visible[p] = t;
            seen = cp;
            atomic_store(&w->seen, seen);
        }
        usleep(POLL_US);
    }
    return NULL;
}

/* The bench's own NATS subscriber: when each event was on the bus, which
 * splits the lag into the outbox's part and the query service's part. */
static void on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                   void *arg)
{
    (void)nc;
    (void)sub;
    watch *w = arg;
    const char *pos = NULL;
    if (natsMsgHeader_Get(msg, "agentmesh-position", &pos) == NATS_OK && pos) {
        uint64_t p = strtoull(pos, NULL, 10);
        if (p < w->cap && !w->arrived[p])
            w->arrived[p] = now();
    }
    natsMsg_Destroy(msg);
}

/* ---- Load: SubmitTask at a steady rate over one async channel. --------- */

typedef struct call {
    grpc_call *call;
    grpc_byte_buffer *send, *recv;
    grpc_metadata_array init_md, trail_md;
    grpc_status_code status;
    grpc_slice details;
} call;

typedef struct load {
    grpc_channel *ch;
    grpc_completion_queue *cq;
    uint8_t *req;
    size_t req_len;
    double *acked; /* by position */
    size_t cap;
    uint64_t ok, failed, max_pos;
    size_t inflight;
} load;

static void start_call(load *l)
{
    call *c = calloc(1, sizeof *c);
    if (!c)
        die("out of memory");
    grpc_slice method =
        grpc_slice_from_static_string("/agentmesh.v1.AgentManager/SubmitTask");
    c->call = grpc_channel_create_call(
        l->ch, NULL, GRPC_PROPAGATE_DEFAULTS, l->cq, method, NULL,
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                     gpr_time_from_seconds(30, GPR_TIMESPAN)),
        NULL);
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)l->req, l->req_len);
    c->send = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_metadata_array_init(&c->init_md);
    grpc_metadata_array_init(&c->trail_md);
    c->details = grpc_empty_slice();
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = c->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &c->init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &c->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &c->trail_md;
    ops[5].data.recv_status_on_client.status = &c->status;
    ops[5].data.recv_status_on_client.status_details = &c->details;
    if (grpc_call_start_batch(c->call, ops, 6, c, NULL) != GRPC_CALL_OK)
        die("grpc_call_start_batch failed");
    l->inflight++;
}

static void finish_call(load *l, call *c, bool success)
{
    double t = now();
    l->inflight--;
    if (success && c->status == GRPC_STATUS_OK && c->recv) {
        grpc_byte_buffer_reader rd;
        grpc_byte_buffer_reader_init(&rd, c->recv);
        grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
        Agentmesh__V1__Task *task = agentmesh__v1__task__unpack(
            NULL, GRPC_SLICE_LENGTH(all), GRPC_SLICE_START_PTR(all));
        if (task && task->position < l->cap) {
            l->acked[task->position] = t;
            if (task->position > l->max_pos)
                l->max_pos = task->position;
            l->ok++;
        } else {
            l->failed++;
        }
        if (task)
            agentmesh__v1__task__free_unpacked(task, NULL);
        grpc_slice_unref(all);
        grpc_byte_buffer_reader_destroy(&rd);
    } else {
        if (!l->failed++) {
            char *d = grpc_slice_to_c_string(c->details);
            fprintf(stderr, "query_bench: first failed command: status %d: %s\n",
                    (int)c->status, d);
            gpr_free(d);
        }
    }
    grpc_byte_buffer_destroy(c->send);
    if (c->recv)
        grpc_byte_buffer_destroy(c->recv);
    grpc_metadata_array_destroy(&c->init_md);
    grpc_metadata_array_destroy(&c->trail_md);
    grpc_slice_unref(c->details);
    grpc_call_unref(c->call);
    free(c);
}

/* Sends `rate` commands per second for `secs` seconds (open loop: a late
 * send does not shift the schedule) and waits for every reply. Returns the
 * achieved send rate. */
static double run_load(load *l, double rate, double secs)
{
    uint64_t total = (uint64_t)(rate * secs), sent = 0;
    double t0 = now();
    while (sent < total || l->inflight) {
        double t = now();
        while (sent < total && t0 + (double)sent / rate <= t &&
               l->inflight < INFLIGHT_MAX) {
            start_call(l);
            sent++;
        }
        double next = sent < total ? t0 + (double)sent / rate : t + 0.01;
        double wait = next - now();
        if (wait < 0)
            wait = 0;
        grpc_event ev = grpc_completion_queue_next(
            l->cq,
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                         gpr_time_from_micros((int64_t)(wait * 1e6),
                                              GPR_TIMESPAN)),
            NULL);
        if (ev.type == GRPC_OP_COMPLETE)
            finish_call(l, ev.tag, ev.success);
    }
    return (double)total / (now() - t0);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(const double *v, size_t n, double q)
{
    if (!n)
        return 0;
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i];
}

/* ---- Raw LMDB scan of the agents log (the rebuild's peer). ------------- */

static double raw_scan(const char *dir, uint64_t *events)
{
    MDB_env *env = NULL;
    MDB_txn *txn = NULL;
    MDB_dbi dbi;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    uint64_t n = 0, bytes = 0;
    if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 16) ||
        mdb_env_set_mapsize(env, (size_t)1 << 36) ||
        mdb_env_open(env, dir, MDB_RDONLY, 0644) ||
        mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) ||
        mdb_dbi_open(txn, "events", 0, &dbi) ||
        mdb_cursor_open(txn, dbi, &cur))
        die("cannot open the agents log with LMDB");
    double t0 = now();
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        n++;
        bytes += ((const uint8_t *)v.mv_data)[v.mv_size - 1];
    }
    double t = now() - t0;
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    *events = n + (bytes == UINT64_MAX);
    return t;
}

int main(int argc, char **argv)
{
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--seconds"))
            seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--rates"))
            snprintf(rates_arg, sizeof rates_arg, "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "--dir"))
            snprintf(base, sizeof base, "%s", argv[i + 1]);
        else if (!strcmp(argv[i], "--agent-manager"))
            am_bin = argv[i + 1];
        else if (!strcmp(argv[i], "--query"))
            query_bin = argv[i + 1];
        else if (!strcmp(argv[i], "--nats-server"))
            nats_bin = argv[i + 1];
        else
            die("usage: query_bench [--seconds S] [--rates R1,R2] [--dir DIR] "
                "[--agent-manager BIN] [--query BIN] [--nats-server BIN]");
    }
    char cmd[1200], path[1024], am_dir[1024], q_dir[1024], js_dir[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    if (system(cmd) != 0)
        die("cannot clear --dir");
    mkdir(base, 0755);
    snprintf(am_dir, sizeof am_dir, "%s/agents", base);
    snprintf(q_dir, sizeof q_dir, "%s/query", base);
    snprintf(js_dir, sizeof js_dir, "%s/js", base);

    /* nats-server, agent-manager (outbox on, no fsync: the lag measured is
     * the projection's, not the disk's), query. */
    char port[16], url[64], am_addr[64], arg[6][1100];
    snprintf(port, sizeof port, "%d", free_port());
    snprintf(url, sizeof url, "nats://127.0.0.1:%s", port);
    char *nats_argv[] = {(char *)nats_bin, "-a", "127.0.0.1", "-p", port,
                         "-js", "-sd", js_dir, NULL};
    snprintf(path, sizeof path, "%s/nats.log", base);
    pid_t nats = spawn(nats_argv, path);
    usleep(300000);
    snprintf(arg[0], sizeof arg[0], "--data-dir=%s", am_dir);
    snprintf(arg[1], sizeof arg[1], "--port-file=%s/am.ports", base);
    snprintf(arg[2], sizeof arg[2], "--nats-url=%s", url);
    char *am_argv[] = {(char *)am_bin, arg[0], arg[1], arg[2],
                       "--listen=127.0.0.1:0", "--admin=", "--no-sync",
                       "--queue-depth=4096", "--log-level=warn", NULL};
    snprintf(path, sizeof path, "%s/agent-manager.log", base);
    pid_t am = spawn(am_argv, path);
    snprintf(path, sizeof path, "%s/am.ports", base);
    snprintf(am_addr, sizeof am_addr, "127.0.0.1:%d", read_grpc_port(path, am));
    snprintf(arg[3], sizeof arg[3], "--data-dir=%s", q_dir);
    snprintf(arg[4], sizeof arg[4], "--port-file=%s/q.ports", base);
    snprintf(arg[5], sizeof arg[5], "--agents-addr=%s", am_addr);
    char *q_argv[] = {(char *)query_bin, arg[3], arg[4], arg[5], arg[2],
                      "--memory-addr=", "--listen=127.0.0.1:0", "--admin=",
                      "--log-level=warn", NULL};
    snprintf(path, sizeof path, "%s/query.log", base);
    pid_t q = spawn(q_argv, path);
    snprintf(path, sizeof path, "%s/q.ports", base);
    read_grpc_port(path, q);

    grpc_init();
    load l;
    memset(&l, 0, sizeof l);
    double total_secs = 0;
    for (const char *r = rates_arg; r && *r; r = strchr(r, ',') ? strchr(r, ',') + 1 : NULL)
        total_secs += atof(r) * seconds;
    l.cap = (size_t)total_secs + 100000;
    l.acked = calloc(l.cap, sizeof *l.acked);
    watch w;
    memset(&w, 0, sizeof w);
    w.cap = l.cap;
    w.visible = calloc(w.cap, sizeof *w.visible);
    w.arrived = calloc(w.cap, sizeof *w.arrived);
    if (!l.acked || !w.visible || !w.arrived)
        die("out of memory");
    es_options eo;
    es_options_init(&eo);
    eo.flags |= ES_OPT_RDONLY;
    if (es_open(q_dir, &eo, &w.store) != ES_OK)
        die("cannot open the query env read-only");
    pthread_t wt;
    pthread_create(&wt, NULL, watch_main, &w);
    natsConnection *nc = NULL;
    natsSubscription *ns = NULL;
    if (natsConnection_ConnectTo(&nc, url) != NATS_OK ||
        natsConnection_Subscribe(&ns, nc, "agentmesh.events.agents.>", on_msg,
                                 &w) != NATS_OK ||
        natsSubscription_SetPendingLimits(ns, 10000000, 1 << 30) != NATS_OK)
        die("cannot subscribe to NATS");

    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    l.ch = grpc_channel_create(am_addr, creds, NULL);
    grpc_channel_credentials_release(creds);
    l.cq = grpc_completion_queue_create_for_next(NULL);
    Agentmesh__V1__SubmitTaskRequest req = AGENTMESH__V1__SUBMIT_TASK_REQUEST__INIT;
    char *caps[] = {"bench-none"};
    req.required_capabilities = caps;
    req.n_required_capabilities = 1;
    req.input = "{\"bench\":true}";
    l.req_len = agentmesh__v1__submit_task_request__get_packed_size(&req);
    l.req = malloc(l.req_len);
    agentmesh__v1__submit_task_request__pack(&req, l.req);

    /* Warm-up: connections, the JetStream stream, the first pages. */
    run_load(&l, 500, 1.0);

    printf("query benchmark: SubmitTask (1 event each) at a steady rate for "
           "%.1f s per rate; lag = command acknowledged -> query checkpoint "
           "covers its position (polled every %d us)\n\n",
           seconds, POLL_US);
    printf("%-7s %7s %8s | %-29s | %-17s | %-17s\n", "", "", "",
           "ack -> visible (ms)", "ack -> on NATS", "on NATS -> visible");
    printf("%-7s %7s %8s | %6s %6s %6s %7s | %8s %8s | %8s %8s\n", "rate",
           "sent/s", "commands", "p50", "p90", "p99", "max", "p50", "p99",
           "p50", "p99");
    for (const char *r = rates_arg; r && *r;
         r = strchr(r, ',') ? strchr(r, ',') + 1 : NULL) {
        double rate = atof(r);
        uint64_t first = l.max_pos + 1;
        uint64_t ok0 = l.ok;
        double achieved = run_load(&l, rate, seconds);
        uint64_t last = l.max_pos;
        double deadline = now() + 60;
        while (atomic_load(&w.seen) < last && now() < deadline)
            usleep(1000);
        size_t n = 0, na = 0, nq = 0;
        size_t span = last - first + 1;
        double *lag = calloc(span, sizeof *lag);
        double *out = calloc(span, sizeof *out);
        double *proj = calloc(span, sizeof *proj);
        for (uint64_t p = first; p <= last; p++) {
            if (!l.acked[p] || !w.visible[p])
                continue;
            double d = w.visible[p] - l.acked[p];
            lag[n++] = d > 0 ? d * 1e3 : 0;
            if (!w.arrived[p])
                continue;
            d = w.arrived[p] - l.acked[p];
            out[na++] = d > 0 ? d * 1e3 : 0;
            d = w.visible[p] - w.arrived[p];
            proj[nq++] = d > 0 ? d * 1e3 : 0;
        }
        qsort(lag, n, sizeof *lag, cmp_double);
        qsort(out, na, sizeof *out, cmp_double);
        qsort(proj, nq, sizeof *proj, cmp_double);
        printf("%-7.0f %7.0f %8llu | %6.2f %6.2f %6.2f %7.2f | %8.2f %8.2f | "
               "%8.2f %8.2f\n",
               rate, achieved, (unsigned long long)(l.ok - ok0),
               pct(lag, n, 0.5), pct(lag, n, 0.9), pct(lag, n, 0.99),
               n ? lag[n - 1] : 0.0, pct(out, na, 0.5), pct(out, na, 0.99),
               pct(proj, nq, 0.5), pct(proj, nq, 0.99));
        free(lag);
        free(out);
        free(proj);
    }
    if (l.failed)
        printf("(%llu commands failed)\n", (unsigned long long)l.failed);
    natsSubscription_Unsubscribe(ns);
    natsSubscription_Destroy(ns);
    natsConnection_Destroy(nc);
    atomic_store(&w.stop, true);
    pthread_join(wt, NULL);
    es_close(w.store);
    grpc_channel_destroy(l.ch);
    grpc_completion_queue_shutdown(l.cq);
    while (grpc_completion_queue_next(l.cq, gpr_inf_future(GPR_CLOCK_REALTIME),
                                      NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(l.cq);
    grpc_shutdown();

    /* Rebuild over the whole agents log, next to a raw LMDB scan of it. */
    stop(q);
    uint64_t raw_events = 0;
    double raw_t = raw_scan(am_dir, &raw_events);
    snprintf(cmd, sizeof cmd,
             "'%s' --rebuild --data-dir='%s' --agents-addr=%s --memory-addr= "
             "2>&1 | tail -1",
             query_bin, q_dir, am_addr);
    double t0 = now();
    FILE *p = popen(cmd, "r");
    char line[512] = "";
    if (!p || !fgets(line, sizeof line, p))
        die("query --rebuild printed nothing");
    pclose(p);
    double rebuild_t = now() - t0;
    unsigned long long done = 0;
    double rate = 0;
    const char *at = strstr(line, "done: ");
    if (!at || sscanf(at, "done: %llu events", &done) != 1)
        die(line);
    const char *rs = strrchr(line, ',');
    if (rs)
        rate = atof(rs + 1);
    printf("\nrebuild of the agents log (%llu events):\n", done);
    printf("  query --rebuild (ReadAll pages of 1000 over gRPC, apply)  "
           "%10.0f events/s (process %.2f s)\n",
           rate, rebuild_t);
    printf("  raw LMDB cursor scan of the same log                    "
           "%10.0f events/s (%llu events, %.3f s)\n",
           raw_t > 0 ? (double)raw_events / raw_t : 0,
           (unsigned long long)raw_events, raw_t);
    printf("  rebuild / raw scan                                      "
           "%10.4f\n",
           raw_t > 0 ? rate / ((double)raw_events / raw_t) : 0);
    stop(am);
    stop(nats);
    return 0;
}
