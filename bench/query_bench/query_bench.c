/* query_bench.c: the query service's projection lag and rebuild speed, with
 * their peers from the same run. It starts nats-server, the sources the load
 * needs (agent-manager, memory-sync) and query, and offers a steady
 * open-loop rate of events from an asynchronous gRPC client:
 *   --load agents  SubmitTask commands to agent-manager, one event each;
 *   --load memory  SyncMemory calls to memory-sync, --batch changes each (one
 *                  append, one commit), every change a new key, so every
 *                  change is applied and is one MemoryWritten event;
 *   --load mixed   half of the events each way.
 * The lag of an event is the time from its command's reply (which carries
 * its position) to the moment the query env's checkpoint of its source
 * (`agents`, `memory`) covers that position, read from the env, read-only,
 * every 200 us while an acknowledged event is not yet visible (--poll-us:
 * each read is late by up to that, and polling faster takes CPU the mesh
 * needs at 10,000 events/s on two cores; with nothing outstanding the
 * poller sleeps until the next reply). With
 * --split 1 the bench's own NATS subscriber tells when each event was on
 * the bus, splitting that lag into the outbox's part and the query
 * service's part; it is off by default, because a second subscriber costs
 * nats-server a delivery per event and the bench about 0.07 of a core at
 * 10,000 events/s, which the lag it measures then shows. After each rate it reads the servers' /metrics:
 * events published by the outbox, and how many the query service applied
 * from NATS and how many by catch-up (EventStore.ReadAll calls), and the
 * CPU each process used over the rate's load and drain (/proc), as cores
 * busy and as CPU time per event. Then it
 * stops query, scans the logs with raw LMDB cursors, and runs
 * `query --rebuild` over them three times each way (--rebuild-rounds;
 * 0 skips the rebuild), alternating: through
 * the sources' EventStore.ReadAll, and from the logs' files read in place
 * (--agents-log, --memory-log).
 * nats-server runs as `agentmesh up` runs it: JetStream on, GOGC=400 and
 * GOMAXPROCS half the CPUs unless the environment sets them (GOGC=100 and
 * GOMAXPROCS=<CPUs> give Go's defaults, for comparison).
 * Run: bazel run //bench/query_bench -- [options] (from the runfiles root).
 * Usage: query_bench [--seconds S] [--rates R1,R2,...] (events/s)
 *                    [--load agents|memory|mixed] [--batch N]
 *                    [--namespaces N] [--value-size B] [--poll-us U]
 *                    [--jetstream 0|1] [--split 0|1] [--lag-log FILE]
 *                    [--rebuild-rounds N] [--dir DIR]
 *                    [--agent-manager BIN] [--memory-sync BIN] [--query BIN]
 *                    [--nats-server BIN] */
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
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
#include "agentmesh/v1/memory.pb-c.h"
#include "eventstore/eventstore.h"

#define INFLIGHT_MAX 512
#define BATCH_MAX 400      /* memory-sync's limit of changes per SyncMemory */
#define NAMESPACES_MAX 64
#define VALUE_MAX 4096
#define CURSOR_MAX 64      /* memory-sync's cursor text is at most 48 bytes */
#define KEY_MAX 24

enum { SRC_AGENTS, SRC_MEMORY, SRC_N };
enum { LOAD_AGENTS, LOAD_MEMORY, LOAD_MIXED };

static double seconds = 5.0;
static char rates_arg[256] = "1000,10000";
static char base[512] = "/tmp/query-bench";
static int load_mode = LOAD_AGENTS;
static size_t batch = 20;
static size_t namespaces = 4;
static size_t value_size = 64;
static size_t poll_us = 200;
static size_t rebuild_rounds = 3;
static const char *lag_log; /* --lag-log: every event's times, as CSV */
static bool jetstream = true;
static bool split = false; /* --split: the bench's own NATS subscriber */
static const char *am_bin = "services/agent_manager/agent-manager";
static const char *ms_bin = "services/memory_sync/memory-sync";
static const char *query_bin = "services/query/query";
static const char *nats_bin = "/usr/sbin/nats-server";
static char nats_gogc[32], nats_procs[32];

/* Children, stopped by die() so a failed run leaves no server behind. */
static pid_t children[8];
static size_t n_children;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void die(const char *what)
{
    fprintf(stderr, "query_bench: %s\n", what);
    for (size_t i = n_children; i-- > 0;)
        if (children[i] > 0) {
            kill(children[i], SIGTERM);
            waitpid(children[i], NULL, 0);
        }
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
/* CPU time a process has used, in seconds (utime + stime from /proc); 0
 * when it is gone. */
static double proc_cpu_s(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    const char *p = strrchr(buf, ')'); /* the name may hold spaces */
    unsigned long long ut = 0, st = 0;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                     &ut, &st) != 2)
        return 0;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static pid_t spawn(char *const argv[], const char *log_path)
{
    if (n_children == sizeof children / sizeof children[0])
        die("too many servers");
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
    children[n_children++] = pid;
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

/* The admin port from a port file's "admin=<port>" line (0 if none). */
static int read_admin_port(const char *path)
{
    FILE *f = fopen(path, "r");
    int grpc = 0, admin = 0;
    if (f) {
        if (fscanf(f, "grpc=%d admin=%d", &grpc, &admin) != 2)
            admin = 0;
        fclose(f);
    }
    return admin;
}

#define METRICS_MAX (4u << 20)

/* GET /metrics from 127.0.0.1:port into buf (at most cap - 1 bytes, NUL
 * terminated). Returns false when nothing could be read. */
static bool fetch_metrics(int port, char *buf, size_t cap)
{
    struct sockaddr_in a;
    size_t n = 0;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    buf[0] = '\0';
    if (fd < 0 || port <= 0)
        goto out;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    static const char req[] = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (connect(fd, (struct sockaddr *)&a, sizeof a) ||
        write(fd, req, sizeof req - 1) != (ssize_t)(sizeof req - 1))
        goto out;
    for (;;) {
        ssize_t k = read(fd, buf + n, cap - 1 - n);
        if (k <= 0)
            break;
        n += (size_t)k;
        if (n == cap - 1)
            break;
    }
    buf[n] = '\0';
out:
    if (fd >= 0)
        close(fd);
    return n > 0;
}

/* Sums the samples of metric `name` whose labels contain `label` and
 * `label2` (NULL: any). Histograms' _bucket/_sum/_count lines have other
 * names. */
static double metric_sum(const char *text, const char *name, const char *label,
                         const char *label2)
{
    double sum = 0;
    size_t len = strlen(name);
    for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        const char *end = strchr(l, '\n');
        size_t ll = end ? (size_t)(end - l) : strlen(l);
        char line[1024];
        if (*l == '#' || ll >= sizeof line || strncmp(l, name, len) ||
            (l[len] != '{' && l[len] != ' '))
            continue;
        memcpy(line, l, ll);
        line[ll] = '\0';
        char *sp = strrchr(line, ' ');
        if (!sp)
            continue;
        *sp = '\0';
        if ((label && !strstr(line, label)) || (label2 && !strstr(line, label2)))
            continue;
        sum += atof(sp + 1);
    }
    return sum;
}

/* The counters that tell which path brought the events: the query
 * service's applied events by path, gaps and duplicates; the source's
 * EventStore.ReadAll calls (the query service's catch-up). */
typedef struct paths {
    double nats, catchup, gaps, dups, readall, published;
} paths;

static paths read_paths(int q_admin, int src_admin, const char *source,
                        char *buf)
{
    paths p;
    char sl[48];
    snprintf(sl, sizeof sl, "source=\"%s\"", source);
    memset(&p, 0, sizeof p);
    if (fetch_metrics(q_admin, buf, METRICS_MAX)) {
        p.nats = metric_sum(buf, "agentmesh_query_events_applied_total", sl,
                            "path=\"nats\"");
        p.catchup = metric_sum(buf, "agentmesh_query_events_applied_total", sl,
                               "path=\"catchup\"");
        p.gaps = metric_sum(buf, "agentmesh_query_gaps_total", sl, NULL);
        p.dups = metric_sum(buf, "agentmesh_query_duplicates_dropped_total", sl,
                            NULL);
    }
    if (fetch_metrics(src_admin, buf, METRICS_MAX)) {
        p.readall = metric_sum(buf, "agentmesh_rpc_requests_total",
                               "EventStore/ReadAll", NULL);
        p.published = metric_sum(buf, "agentmesh_outbox_published_total", NULL,
                                 NULL);
    }
    return p;
}

static int stop(pid_t pid)
{
    int st = 0;
    if (pid <= 0)
        return 0;
    kill(pid, SIGTERM);
    waitpid(pid, &st, 0);
    for (size_t i = 0; i < n_children; i++)
        if (children[i] == pid)
            children[i] = 0;
    return st;
}

/* ---- Per source: when each position was acked, on NATS, visible. ------- */

typedef struct source {
    const char *name; /* the query env's checkpoint name */
    bool on;
    double *acked;    /* by position: the command's reply arrived */
    double *arrived;  /* by position: the event reached our NATS subscriber */
    double *visible;  /* by position: the query checkpoint covered it */
    size_t cap;
    atomic_ullong max_pos; /* highest position acknowledged */
    atomic_ullong seen; /* the query checkpoint last read */
    /* Messages destroyed 64 at a time (nats.c wakes its collector thread
     * for every destroy that finds it asleep); only on_msg touches them,
     * and the rest are destroyed after the subscription is. */
    natsMsg *held[64];
    size_t n_held;
} source;

static void release_held(source *src)
{
    for (size_t i = 0; i < src->n_held; i++)
        natsMsg_Destroy(src->held[i]);
    src->n_held = 0;
}

/* ---- Visibility: the query env's checkpoints, polled. ------------------ */

/* The poller sleeps while every acknowledged event is already visible, and
 * a reply that acknowledges a new one wakes it: polling every 200 us
 * regardless cost the benchmark about 0.1 of a core of the machine it
 * measures, at any rate. */
static pthread_mutex_t watch_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t watch_cv = PTHREAD_COND_INITIALIZER;
static atomic_bool watch_asleep;

/* After a reply raised a source's max_pos. */
static void watch_kick(void)
{
    if (atomic_load(&watch_asleep)) {
        pthread_mutex_lock(&watch_mu);
        pthread_cond_signal(&watch_cv);
        pthread_mutex_unlock(&watch_mu);
    }
}

typedef struct watch {
    es_store *store;
    source *src; /* SRC_N of them */
    atomic_bool stop;
} watch;

static void *watch_main(void *arg)
{
    watch *w = arg;
    uint64_t seen[SRC_N] = {0};
    while (!atomic_load(&w->stop)) {
        es_txn *txn = NULL;
        uint64_t cp[SRC_N] = {0};
        if (es_txn_begin(w->store, &txn) == ES_OK) {
            for (int s = 0; s < SRC_N; s++)
                if (w->src[s].on && es_checkpoint_get(txn, w->src[s].name, &cp[s]))
                    cp[s] = 0;
            es_txn_end(txn);
        }
        double t = now();
        for (int s = 0; s < SRC_N; s++) {
            source *src = &w->src[s];
            if (cp[s] <= seen[s])
                continue;
            for (uint64_t p = seen[s] + 1; p <= cp[s] && p < src->cap; p++)
                src->visible[p] = t;
            seen[s] = cp[s];
            atomic_store(&src->seen, seen[s]);
        }
        bool behind = false;
        for (int s = 0; s < SRC_N; s++)
            behind |= w->src[s].on && atomic_load(&w->src[s].max_pos) > seen[s];
        if (behind) {
            usleep((useconds_t)poll_us);
            continue;
        }
        /* Asleep is announced before max_pos is read again: a reply either
         * finds it set and signals (under the mutex, so not before the
         * wait), or its max_pos is seen here. */
        pthread_mutex_lock(&watch_mu);
        atomic_store(&watch_asleep, true);
        for (int s = 0; s < SRC_N; s++)
            behind |= w->src[s].on && atomic_load(&w->src[s].max_pos) > seen[s];
        if (!behind && !atomic_load(&w->stop)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 20 * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&watch_cv, &watch_mu, &ts);
        }
        atomic_store(&watch_asleep, false);
        pthread_mutex_unlock(&watch_mu);
    }
    return NULL;
}

/* The bench's own NATS subscriber (one subscription per source): when each
 * event was on the bus, which splits the lag into the outbox's part and the
 * query service's part. The outbox puts the position in a header. */
static void on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                   void *arg)
{
    (void)nc;
    (void)sub;
    source *src = arg;
    const char *pos = NULL;
    if (natsMsgHeader_Get(msg, "agentmesh-position", &pos) == NATS_OK && pos) {
        uint64_t p = strtoull(pos, NULL, 10);
        if (p < src->cap && !src->arrived[p])
            src->arrived[p] = now();
    }
    src->held[src->n_held++] = msg;
    if (src->n_held == sizeof src->held / sizeof src->held[0])
        release_held(src);
}

/* ---- Load: commands at a steady rate over one async completion queue. -- */

typedef struct call {
    int kind;   /* SRC_* */
    size_t ns;  /* memory: namespace index */
    grpc_call *call;
    grpc_byte_buffer *send, *recv;
    grpc_metadata_array init_md, trail_md;
    grpc_status_code status;
    grpc_slice details;
} call;

typedef struct load {
    grpc_channel *ch[SRC_N];
    grpc_completion_queue *cq;
    source *src;
    uint8_t *task_req; /* the one SubmitTask request, packed */
    size_t task_req_len;
    /* SyncMemory: the changes of one request, rebuilt per call. */
    Agentmesh__V1__SyncChange *changes;
    Agentmesh__V1__SyncChange **change_ptrs;
    char (*keys)[KEY_MAX];
    uint8_t value[VALUE_MAX];
    uint64_t next_key;
    size_t next_ns;
    char ns_name[NAMESPACES_MAX][32];
    char cursor[NAMESPACES_MAX][CURSOR_MAX];
    /* Counters, by source. */
    uint64_t cmds_ok[SRC_N], events_ok[SRC_N], failed;
    double last_reply[SRC_N];
    size_t inflight;
} load;

static grpc_byte_buffer *buffer_of(const uint8_t *data, size_t len)
{
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)data, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

/* One SyncMemory request: `batch` changes to new keys of the next namespace,
 * each based on version 0 (the key never existed), so each is applied. The
 * namespace's last cursor is sent, as a replica would, with page_size =
 * batch: the reply echoes at most that many changes. */
static grpc_byte_buffer *sync_request(load *l, size_t *ns_out)
{
    Agentmesh__V1__SyncMemoryRequest req = AGENTMESH__V1__SYNC_MEMORY_REQUEST__INIT;
    size_t ns = l->next_ns++ % namespaces;
    for (size_t i = 0; i < batch; i++) {
        Agentmesh__V1__SyncChange *c = &l->changes[i];
        agentmesh__v1__sync_change__init(c);
        snprintf(l->keys[i], KEY_MAX, "k%012llu",
                 (unsigned long long)l->next_key++);
        c->key = l->keys[i];
        c->value.data = l->value;
        c->value.len = value_size;
        c->content_type = "text/plain";
        l->change_ptrs[i] = c;
    }
    req.namespace_ = l->ns_name[ns];
    req.replica_id = "query-bench";
    req.cursor = l->cursor[ns];
    req.changes = l->change_ptrs;
    req.n_changes = batch;
    req.page_size = (uint32_t)batch;
    size_t len = agentmesh__v1__sync_memory_request__get_packed_size(&req);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf)
        die("out of memory");
    agentmesh__v1__sync_memory_request__pack(&req, buf);
    grpc_byte_buffer *bb = buffer_of(buf, len);
    free(buf);
    *ns_out = ns;
    return bb;
}

static void start_call(load *l, int kind)
{
    call *c = calloc(1, sizeof *c);
    if (!c)
        die("out of memory");
    c->kind = kind;
    const char *m = kind == SRC_AGENTS ? "/agentmesh.v1.AgentManager/SubmitTask"
                                       : "/agentmesh.v1.MemorySync/SyncMemory";
    grpc_slice method = grpc_slice_from_static_string(m);
    c->call = grpc_channel_create_call(
        l->ch[kind], NULL, GRPC_PROPAGATE_DEFAULTS, l->cq, method, NULL,
        gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                     gpr_time_from_seconds(30, GPR_TIMESPAN)),
        NULL);
    c->send = kind == SRC_AGENTS ? buffer_of(l->task_req, l->task_req_len)
                                 : sync_request(l, &c->ns);
    if (!c->call || !c->send)
        die("cannot create a call");
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

/* A SubmitTask reply: its task's position. Returns false if unusable. */
static bool task_reply(load *l, const uint8_t *data, size_t len, double t)
{
    source *src = &l->src[SRC_AGENTS];
    Agentmesh__V1__Task *task = agentmesh__v1__task__unpack(NULL, len, data);
    bool ok = task && task->position < src->cap;
    if (ok) {
        src->acked[task->position] = t;
        if (task->position > atomic_load(&src->max_pos)) {
            atomic_store(&src->max_pos, task->position);
            watch_kick();
        }
        l->events_ok[SRC_AGENTS]++;
    }
    if (task)
        agentmesh__v1__task__free_unpacked(task, NULL);
    return ok;
}

/* A SyncMemory reply: every change must have been applied (new keys cannot
 * conflict); anything else means the load is not what it claims, so the
 * run stops. Each applied entry carries its event's position. */
static bool sync_reply(load *l, size_t ns, const uint8_t *data, size_t len,
                       double t)
{
    source *src = &l->src[SRC_MEMORY];
    Agentmesh__V1__SyncMemoryResponse *rep =
        agentmesh__v1__sync_memory_response__unpack(NULL, len, data);
    if (!rep)
        return false;
    if (rep->n_applied != batch || rep->n_conflicts) {
        fprintf(stderr,
                "query_bench: SyncMemory on %s applied %zu of %zu changes "
                "(%zu conflicts): the load would not be %zu events per call\n",
                l->ns_name[ns], rep->n_applied, batch, rep->n_conflicts, batch);
        agentmesh__v1__sync_memory_response__free_unpacked(rep, NULL);
        die("SyncMemory did not apply every change");
    }
    bool ok = true;
    for (size_t i = 0; i < rep->n_applied; i++) {
        uint64_t p = rep->applied[i]->position;
        if (p == 0 || p >= src->cap) {
            ok = false;
            continue;
        }
        src->acked[p] = t;
        if (p > atomic_load(&src->max_pos))
            atomic_store(&src->max_pos, p);
        l->events_ok[SRC_MEMORY]++;
    }
    watch_kick();
    if (rep->cursor && strlen(rep->cursor) < CURSOR_MAX)
        snprintf(l->cursor[ns], CURSOR_MAX, "%s", rep->cursor);
    agentmesh__v1__sync_memory_response__free_unpacked(rep, NULL);
    return ok;
}

static void finish_call(load *l, call *c, bool success)
{
    double t = now();
    l->inflight--;
    if (success && c->status == GRPC_STATUS_OK && c->recv) {
        grpc_byte_buffer_reader rd;
        if (!grpc_byte_buffer_reader_init(&rd, c->recv))
            die("cannot read a reply");
        grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
        const uint8_t *d = GRPC_SLICE_START_PTR(all);
        size_t n = GRPC_SLICE_LENGTH(all);
        bool ok = c->kind == SRC_AGENTS ? task_reply(l, d, n, t)
                                        : sync_reply(l, c->ns, d, n, t);
        if (ok) {
            l->cmds_ok[c->kind]++;
            l->last_reply[c->kind] = t;
        } else {
            l->failed++;
        }
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

/* One steady schedule of commands. */
typedef struct sched {
    int kind;
    double rate; /* commands/s */
    uint64_t total, sent;
} sched;

typedef struct achieved {
    double events_s[SRC_N], cmds_s[SRC_N];
} achieved;

/* Offers `rate` events per second for `secs` seconds (open loop: a late
 * send does not shift the schedule) as the load mode's commands, and waits
 * for every reply. Achieved rates are replies over the time from the start
 * to the last reply: below the offered rate when the path saturates. */
static achieved run_load(load *l, double rate, double secs)
{
    sched sc[SRC_N];
    size_t n = 0;
    double share = load_mode == LOAD_MIXED ? rate / 2 : rate;
    if (load_mode != LOAD_MEMORY)
        sc[n++] = (sched){SRC_AGENTS, share, 0, 0};
    if (load_mode != LOAD_AGENTS)
        sc[n++] = (sched){SRC_MEMORY, share / (double)batch, 0, 0};
    for (size_t i = 0; i < n; i++)
        sc[i].total = (uint64_t)(sc[i].rate * secs + 0.5);
    uint64_t cmds0[SRC_N], events0[SRC_N];
    memcpy(cmds0, l->cmds_ok, sizeof cmds0);
    memcpy(events0, l->events_ok, sizeof events0);
    double t0 = now();
    for (;;) {
        double t = now(), next = t + 0.01;
        bool pending = false;
        for (size_t i = 0; i < n; i++) {
            sched *s = &sc[i];
            while (s->sent < s->total && t0 + (double)s->sent / s->rate <= t &&
                   l->inflight < INFLIGHT_MAX) {
                start_call(l, s->kind);
                s->sent++;
            }
            if (s->sent < s->total) {
                pending = true;
                double due = t0 + (double)s->sent / s->rate;
                if (due < next)
                    next = due;
            }
        }
        if (!pending && !l->inflight)
            break;
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
    achieved a;
    memset(&a, 0, sizeof a);
    for (int k = 0; k < SRC_N; k++) {
        double span = l->last_reply[k] - t0;
        if (span <= 0)
            continue;
        a.cmds_s[k] = (double)(l->cmds_ok[k] - cmds0[k]) / span;
        a.events_s[k] = (double)(l->events_ok[k] - events0[k]) / span;
    }
    return a;
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

/* --lag-log: one line per event of the rate just run, times in seconds
 * from the first event's reply (empty when not seen), to look at the tail
 * over time (a stall hits a run of neighbours, a slow event only itself). */
static void log_lags(FILE *f, const char *label, const char *name,
                     const source *src, uint64_t first, uint64_t last)
{
    double t0 = first < src->cap ? src->acked[first] : 0;
    for (uint64_t p = first; p <= last && p < src->cap; p++) {
        fprintf(f, "%s,%s,%llu", label, name, (unsigned long long)p);
        const double *t[3] = {src->acked, src->arrived, src->visible};
        for (int i = 0; i < 3; i++)
            if (t[i][p])
                fprintf(f, ",%.6f", t[i][p] - t0);
            else
                fputs(",", f);
        fputc('\n', f);
    }
}

/* Prints one row: the lag of every event of `src` in positions first..last. */
static void report(const char *label, const char *name, source *src,
                   uint64_t first, uint64_t last, double ev_s, double cmd_s)
{
    size_t span = last >= first ? (size_t)(last - first + 1) : 0, n = 0, na = 0,
           nq = 0;
    double *lag = calloc(span + 1, sizeof *lag);
    double *out = calloc(span + 1, sizeof *out);
    double *proj = calloc(span + 1, sizeof *proj);
    if (!lag || !out || !proj)
        die("out of memory");
    for (uint64_t p = first; p <= last && span; p++) {
        if (!src->acked[p] || !src->visible[p])
            continue;
        double d = src->visible[p] - src->acked[p];
        lag[n++] = d > 0 ? d * 1e3 : 0;
        if (!src->arrived[p])
            continue;
        d = src->arrived[p] - src->acked[p];
        out[na++] = d > 0 ? d * 1e3 : 0;
        d = src->visible[p] - src->arrived[p];
        proj[nq++] = d > 0 ? d * 1e3 : 0;
    }
    qsort(lag, n, sizeof *lag, cmp_double);
    qsort(out, na, sizeof *out, cmp_double);
    qsort(proj, nq, sizeof *proj, cmp_double);
    printf("%-7s %-6s %7.0f %7.0f %8zu | %6.2f %6.2f %6.2f %7.2f |", label,
           name, ev_s, cmd_s, n, pct(lag, n, 0.5), pct(lag, n, 0.9),
           pct(lag, n, 0.99), n ? lag[n - 1] : 0.0);
    if (na) /* the split needs the bench's own subscriber (--split 1) */
        printf(" %8.2f %8.2f | %8.2f %8.2f\n", pct(out, na, 0.5),
               pct(out, na, 0.99), pct(proj, nq, 0.5), pct(proj, nq, 0.99));
    else
        printf(" %8s %8s | %8s %8s\n", "-", "-", "-", "-");
    free(lag);
    free(out);
    free(proj);
}

/* ---- Raw LMDB scan of a log (the rebuild's peer). ---------------------- */

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
        die("cannot open a source's log with LMDB");
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

static const char usage[] =
    "usage: query_bench [--seconds S] [--rates R1,R2 (events/s)] "
    "[--load agents|memory|mixed] [--batch N (1..400)] [--namespaces N "
    "(1..64)] [--value-size B (1..4096)] [--poll-us U (1..100000)] "
    "[--jetstream 0|1 (memory-sync's outbox)] [--rebuild-rounds N (0..10, default 3)] [--split 0|1 (the bench's "
    "own NATS subscriber, which splits the lag; default 0: nats-server serves only "
    "query)] [--lag-log FILE (CSV: rate, "
    "source, position, acked, on NATS, visible)] [--dir DIR] [--agent-manager BIN] "
    "[--memory-sync BIN] [--query BIN] [--nats-server BIN]";

static size_t size_arg(const char *s, size_t lo, size_t hi)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || !end || *end || v < lo || v > hi)
        die(usage);
    return (size_t)v;
}

static void parse_args(int argc, char **argv)
{
    if (argc % 2 == 0)
        die(usage);
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *a = argv[i], *v = argv[i + 1];
        if (!strcmp(a, "--seconds"))
            seconds = atof(v);
        else if (!strcmp(a, "--rates"))
            snprintf(rates_arg, sizeof rates_arg, "%s", v);
        else if (!strcmp(a, "--dir"))
            snprintf(base, sizeof base, "%s", v);
        else if (!strcmp(a, "--load")) {
            if (!strcmp(v, "agents"))
                load_mode = LOAD_AGENTS;
            else if (!strcmp(v, "memory"))
                load_mode = LOAD_MEMORY;
            else if (!strcmp(v, "mixed"))
                load_mode = LOAD_MIXED;
            else
                die(usage);
        } else if (!strcmp(a, "--batch"))
            batch = size_arg(v, 1, BATCH_MAX);
        else if (!strcmp(a, "--namespaces"))
            namespaces = size_arg(v, 1, NAMESPACES_MAX);
        else if (!strcmp(a, "--value-size"))
            value_size = size_arg(v, 1, VALUE_MAX);
        else if (!strcmp(a, "--poll-us"))
            poll_us = size_arg(v, 1, 100000);
        else if (!strcmp(a, "--rebuild-rounds"))
            rebuild_rounds = size_arg(v, 0, 10);
        else if (!strcmp(a, "--split"))
            split = size_arg(v, 0, 1) == 1;
        else if (!strcmp(a, "--lag-log"))
            lag_log = v;
        else if (!strcmp(a, "--jetstream"))
            jetstream = size_arg(v, 0, 1) == 1;
        else if (!strcmp(a, "--agent-manager"))
            am_bin = v;
        else if (!strcmp(a, "--memory-sync"))
            ms_bin = v;
        else if (!strcmp(a, "--query"))
            query_bin = v;
        else if (!strcmp(a, "--nats-server"))
            nats_bin = v;
        else
            die(usage);
    }
    if (!(seconds > 0))
        die(usage);
}

int main(int argc, char **argv)
{
    parse_args(argc, argv);
    bool use_am = load_mode != LOAD_MEMORY, use_ms = load_mode != LOAD_AGENTS;
    char cmd[6000], path[1024], am_dir[1024], ms_dir[1024], q_dir[1024],
        js_dir[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", base);
    if (system(cmd) != 0)
        die("cannot clear --dir");
    mkdir(base, 0755);
    snprintf(am_dir, sizeof am_dir, "%s/agents", base);
    snprintf(ms_dir, sizeof ms_dir, "%s/memory", base);
    snprintf(q_dir, sizeof q_dir, "%s/query", base);
    snprintf(js_dir, sizeof js_dir, "%s/js", base);

    /* nats-server, the sources (outbox on, no fsync: the lag measured is the
     * projection's, not the disk's), query. */
    char port[16], url[64], am_addr[64] = "", ms_addr[64] = "", arg[10][1100];
    snprintf(port, sizeof port, "%d", free_port());
    snprintf(url, sizeof url, "nats://127.0.0.1:%s", port);
    char *nats_argv[] = {(char *)nats_bin, "-a", "127.0.0.1", "-p", port,
                         "-js", "-sd", js_dir, NULL};
    snprintf(path, sizeof path, "%s/nats.log", base);
    /* As `agentmesh up` starts it: GOGC=400 and GOMAXPROCS half the CPUs
     * (at least 1) unless the environment sets them (OPERATIONS.md,
     * "nats-server"). */
    bool gogc_set = getenv("GOGC") != NULL;
    bool procs_set = getenv("GOMAXPROCS") != NULL;
    if (!gogc_set)
        setenv("GOGC", "400", 1);
    if (!procs_set) {
        cpu_set_t cpus;
        long n = sched_getaffinity(0, sizeof cpus, &cpus) == 0
                     ? CPU_COUNT(&cpus)
                     : sysconf(_SC_NPROCESSORS_ONLN);
        char v[24];
        snprintf(v, sizeof v, "%ld", n / 2 < 1 ? 1 : n / 2);
        setenv("GOMAXPROCS", v, 1);
    }
    snprintf(nats_gogc, sizeof nats_gogc, "%s", getenv("GOGC"));
    snprintf(nats_procs, sizeof nats_procs, "%s", getenv("GOMAXPROCS"));
    pid_t nats = spawn(nats_argv, path);
    if (!gogc_set)
        unsetenv("GOGC");
    if (!procs_set)
        unsetenv("GOMAXPROCS");
    usleep(300000);
    snprintf(arg[2], sizeof arg[2], "--nats-url=%s", url);
    snprintf(arg[9], sizeof arg[9], "--jetstream=%s", jetstream ? "true" : "false");
    pid_t am = 0, ms = 0;
    int src_admin[SRC_N] = {0, 0};
    if (use_am) {
        snprintf(arg[0], sizeof arg[0], "--data-dir=%s", am_dir);
        snprintf(arg[1], sizeof arg[1], "--port-file=%s/am.ports", base);
        char *am_argv[] = {(char *)am_bin, arg[0], arg[1], arg[2],
                           "--listen=127.0.0.1:0", "--admin=127.0.0.1:0", "--no-sync",
                           "--queue-depth=4096", "--log-level=warn",
                           /* no agent takes the tasks: room for every one */
                           "--max-pending=100000000", NULL};
        snprintf(path, sizeof path, "%s/agent-manager.log", base);
        am = spawn(am_argv, path);
        snprintf(path, sizeof path, "%s/am.ports", base);
        snprintf(am_addr, sizeof am_addr, "127.0.0.1:%d", read_grpc_port(path, am));
        src_admin[SRC_AGENTS] = read_admin_port(path);
    }
    if (use_ms) {
        snprintf(arg[6], sizeof arg[6], "--data-dir=%s", ms_dir);
        snprintf(arg[7], sizeof arg[7], "--port-file=%s/ms.ports", base);
        char *ms_argv[] = {(char *)ms_bin, arg[6], arg[7], arg[2],
                           "--listen=127.0.0.1:0", "--admin=127.0.0.1:0", "--no-sync",
                           "--queue-depth=4096", "--log-level=warn", arg[9],
                           NULL};
        snprintf(path, sizeof path, "%s/memory-sync.log", base);
        ms = spawn(ms_argv, path);
        snprintf(path, sizeof path, "%s/ms.ports", base);
        snprintf(ms_addr, sizeof ms_addr, "127.0.0.1:%d", read_grpc_port(path, ms));
        src_admin[SRC_MEMORY] = read_admin_port(path);
    }
    snprintf(arg[3], sizeof arg[3], "--data-dir=%s", q_dir);
    snprintf(arg[4], sizeof arg[4], "--port-file=%s/q.ports", base);
    snprintf(arg[5], sizeof arg[5], "--agents-addr=%s", am_addr);
    snprintf(arg[8], sizeof arg[8], "--memory-addr=%s", ms_addr);
    char *q_argv[] = {(char *)query_bin, arg[3], arg[4], arg[5], arg[2],
                      arg[8], "--listen=127.0.0.1:0", "--admin=127.0.0.1:0",
                      "--log-level=warn", NULL};
    snprintf(path, sizeof path, "%s/query.log", base);
    pid_t q = spawn(q_argv, path);
    snprintf(path, sizeof path, "%s/q.ports", base);
    read_grpc_port(path, q);
    int q_admin = read_admin_port(path);
    fprintf(stderr, "query_bench: pids: nats-server %d, agent-manager %d, "
                    "memory-sync %d, query %d, bench %d\n",
            (int)nats, (int)am, (int)ms, (int)q, (int)getpid());

    grpc_init();
    source src[SRC_N];
    memset(src, 0, sizeof src);
    src[SRC_AGENTS].name = "agents";
    src[SRC_AGENTS].on = use_am;
    src[SRC_MEMORY].name = "memory";
    src[SRC_MEMORY].on = use_ms;
    double total_events = 0;
    for (const char *r = rates_arg; r && *r; r = strchr(r, ',') ? strchr(r, ',') + 1 : NULL)
        total_events += atof(r) * seconds;
    for (int s = 0; s < SRC_N; s++) {
        if (!src[s].on)
            continue;
        src[s].cap = (size_t)total_events + 100000;
        src[s].acked = calloc(src[s].cap, sizeof *src[s].acked);
        src[s].arrived = calloc(src[s].cap, sizeof *src[s].arrived);
        src[s].visible = calloc(src[s].cap, sizeof *src[s].visible);
        if (!src[s].acked || !src[s].arrived || !src[s].visible)
            die("out of memory");
    }
    load l;
    memset(&l, 0, sizeof l);
    l.src = src;
    watch w;
    memset(&w, 0, sizeof w);
    w.src = src;
    es_options eo;
    es_options_init(&eo);
    eo.flags |= ES_OPT_RDONLY;
    if (es_open(q_dir, &eo, &w.store) != ES_OK)
        die("cannot open the query env read-only");
    pthread_t wt;
    if (pthread_create(&wt, NULL, watch_main, &w))
        die("cannot start the watch thread");
    natsConnection *nc = NULL;
    natsSubscription *ns[SRC_N] = {NULL, NULL};
    if (natsConnection_ConnectTo(&nc, url) != NATS_OK)
        die("cannot connect to NATS");
    for (int s = 0; s < SRC_N; s++) {
        char subject[64];
        if (!src[s].on || !split)
            continue;
        snprintf(subject, sizeof subject, "agentmesh.events.%s.>", src[s].name);
        if (natsConnection_Subscribe(&ns[s], nc, subject, on_msg, &src[s]) != NATS_OK ||
            natsSubscription_SetPendingLimits(ns[s], 10000000, 1 << 30) != NATS_OK)
            die("cannot subscribe to NATS");
    }

    l.cq = grpc_completion_queue_create_for_next(NULL);
    if (use_am) {
        grpc_channel_credentials *creds = grpc_insecure_credentials_create();
        l.ch[SRC_AGENTS] = grpc_channel_create(am_addr, creds, NULL);
        grpc_channel_credentials_release(creds);
        Agentmesh__V1__SubmitTaskRequest req = AGENTMESH__V1__SUBMIT_TASK_REQUEST__INIT;
        char *caps[] = {"bench-none"};
        req.required_capabilities = caps;
        req.n_required_capabilities = 1;
        req.input = "{\"bench\":true}";
        l.task_req_len = agentmesh__v1__submit_task_request__get_packed_size(&req);
        l.task_req = malloc(l.task_req_len);
        if (!l.task_req)
            die("out of memory");
        agentmesh__v1__submit_task_request__pack(&req, l.task_req);
    }
    if (use_ms) {
        grpc_channel_credentials *creds = grpc_insecure_credentials_create();
        l.ch[SRC_MEMORY] = grpc_channel_create(ms_addr, creds, NULL);
        grpc_channel_credentials_release(creds);
        l.changes = calloc(batch, sizeof *l.changes);
        l.change_ptrs = calloc(batch, sizeof *l.change_ptrs);
        l.keys = calloc(batch, sizeof *l.keys);
        if (!l.changes || !l.change_ptrs || !l.keys)
            die("out of memory");
        memset(l.value, 'v', sizeof l.value);
        for (size_t i = 0; i < namespaces; i++)
            snprintf(l.ns_name[i], sizeof l.ns_name[i], "qbench-%zu", i);
    }

    /* Warm-up: connections, the JetStream stream, namespaces, first pages.
     * Its events are projected and their publication recorded (the outbox
     * checkpoints at most every 20 ms) before the counters' baseline is
     * read, so that the first rate's "paths" count only its own events. */
    run_load(&l, 500, 1.0);
    {
        double until = now() + 60;
        for (int s = 0; s < SRC_N; s++)
            while (src[s].on && atomic_load(&src[s].seen) < atomic_load(&src[s].max_pos) &&
                   now() < until)
                usleep(1000);
        usleep(100000);
    }
    char *mbuf = malloc(METRICS_MAX);
    if (!mbuf)
        die("out of memory");
    paths before[SRC_N];
    for (int s = 0; s < SRC_N; s++)
        if (src[s].on)
            before[s] = read_paths(q_admin, src_admin[s], src[s].name, mbuf);

    static const char *const load_text[] = {
        "SubmitTask commands (1 event each)",
        "SyncMemory calls (--batch changes each, one append)",
        "SubmitTask commands and SyncMemory calls (half of the events each)"};
    printf("query benchmark: %s at a steady rate of events for %.1f s per rate",
           load_text[load_mode], seconds);
    if (use_ms)
        printf("; batch %zu, %zu namespaces, values of %zu B", batch,
               namespaces, value_size);
    printf("; nats-server JetStream%s, GOGC=%s, GOMAXPROCS=%s",
           use_ms && !jetstream ? " (memory-sync's outbox: core NATS)" : "",
           nats_gogc, nats_procs);
    printf("\nlag = command acknowledged -> query checkpoint covers the event's "
           "position (polled every %d us); ev/s, cmd/s = achieved (replies)\n\n",
           (int)poll_us);
    printf("%-7s %-6s %7s %7s %8s | %-29s | %-17s | %-17s\n", "", "", "", "",
           "", "ack -> visible (ms)", "ack -> on NATS", "on NATS -> visible");
    printf("%-7s %-6s %7s %7s %8s | %6s %6s %6s %7s | %8s %8s | %8s %8s\n",
           "rate", "source", "ev/s", "cmd/s", "events", "p50", "p90", "p99",
           "max", "p50", "p99", "p50", "p99");
    fflush(stdout);
    for (const char *r = rates_arg; r && *r;
         r = strchr(r, ',') ? strchr(r, ',') + 1 : NULL) {
        double rate = atof(r);
        uint64_t first[SRC_N];
        for (int s = 0; s < SRC_N; s++)
            first[s] = atomic_load(&src[s].max_pos) + 1;
        /* CPU of every process over the load and its drain. */
        const pid_t cpu_pid[] = {nats, am, ms, q, getpid()};
        static const char *const cpu_name[] = {"nats-server", "agent-manager",
                                               "memory-sync", "query", "bench"};
        enum { CPU_N = sizeof cpu_pid / sizeof cpu_pid[0] };
        double cpu0[CPU_N], t_load = now();
        for (int i = 0; i < CPU_N; i++)
            cpu0[i] = cpu_pid[i] ? proc_cpu_s(cpu_pid[i]) : 0;
        achieved a = run_load(&l, rate, seconds);
        double deadline = now() + 60;
        for (int s = 0; s < SRC_N; s++)
            while (src[s].on && atomic_load(&src[s].seen) < atomic_load(&src[s].max_pos) &&
                   now() < deadline)
                usleep(1000);
        double wall = now() - t_load, cpu_total = 0;
        uint64_t n_events = 0;
        for (int s = 0; s < SRC_N; s++)
            if (src[s].on && atomic_load(&src[s].max_pos) >= first[s])
                n_events += atomic_load(&src[s].max_pos) - first[s] + 1;
        char label[32];
        snprintf(label, sizeof label, "%.0f", rate);
        for (int s = 0; s < SRC_N; s++)
            if (src[s].on)
                report(label, src[s].name, &src[s], first[s], atomic_load(&src[s].max_pos),
                       a.events_s[s], a.cmds_s[s]);
        if (lag_log) {
            FILE *f = fopen(lag_log, "a");
            if (!f)
                die("cannot open --lag-log");
            for (int s = 0; s < SRC_N; s++)
                if (src[s].on)
                    log_lags(f, label, src[s].name, &src[s], first[s],
                             atomic_load(&src[s].max_pos));
            fclose(f);
        }
        printf("        cpu (cores busy over %.1f s):", wall);
        for (int i = 0; i < CPU_N; i++) {
            if (!cpu_pid[i])
                continue;
            double used = proc_cpu_s(cpu_pid[i]) - cpu0[i];
            cpu_total += used;
            printf(" %s %.2f,", cpu_name[i], wall > 0 ? used / wall : 0);
        }
        printf(" all %.2f of %ld; %.0f us of CPU per event\n",
               wall > 0 ? cpu_total / wall : 0, sysconf(_SC_NPROCESSORS_ONLN),
               n_events ? cpu_total * 1e6 / (double)n_events : 0);
        /* The outbox counts an event published once its checkpoint is
         * recorded, at most 20 ms after the acknowledgement. */
        usleep(100000);
        for (int s = 0; s < SRC_N; s++) {
            if (!src[s].on)
                continue;
            paths now_p = read_paths(q_admin, src_admin[s], src[s].name, mbuf);
            printf("        %-6s paths: outbox published %.0f; query applied "
                   "%.0f from NATS, %.0f by catch-up (%.0f ReadAll calls to "
                   "the source); %.0f gaps, %.0f duplicates dropped\n",
                   src[s].name, now_p.published - before[s].published,
                   now_p.nats - before[s].nats,
                   now_p.catchup - before[s].catchup,
                   now_p.readall - before[s].readall, now_p.gaps - before[s].gaps,
                   now_p.dups - before[s].dups);
            before[s] = now_p;
        }
        fflush(stdout);
    }
    if (l.failed)
        printf("(%llu commands failed)\n", (unsigned long long)l.failed);
    for (int s = 0; s < SRC_N; s++)
        if (ns[s]) {
            natsSubscription_Unsubscribe(ns[s]);
            natsSubscription_Destroy(ns[s]);
        }
    natsConnection_Destroy(nc);
    for (int s = 0; s < SRC_N; s++)
        release_held(&src[s]);
    atomic_store(&w.stop, true);
    watch_kick();
    pthread_join(wt, NULL);
    es_close(w.store);
    for (int s = 0; s < SRC_N; s++)
        if (l.ch[s])
            grpc_channel_destroy(l.ch[s]);
    grpc_completion_queue_shutdown(l.cq);
    while (grpc_completion_queue_next(l.cq, gpr_inf_future(GPR_CLOCK_REALTIME),
                                      NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(l.cq);
    grpc_shutdown();

    /* Rebuild over the whole of each log, next to a raw LMDB scan of it. */
    stop(q);
    uint64_t raw_events = 0, n_raw = 0;
    double raw_t = 0;
    if (use_am) {
        raw_t += raw_scan(am_dir, &n_raw);
        raw_events += n_raw;
    }
    if (use_ms) {
        raw_t += raw_scan(ms_dir, &n_raw);
        raw_events += n_raw;
    }
    const char *logs = use_am && use_ms ? "agents and memory logs"
                       : use_am         ? "agents log"
                                        : "memory log";
    /* Two ways to rebuild, alternating, three rounds each: through the
     * sources' EventStore.ReadAll (the services running), and from the
     * logs' files read in place (--agents-log/--memory-log, no service
     * asked). The raw scan is the peer of both. */
    char via_api[1024], via_logs[2400];
    snprintf(via_api, sizeof via_api, "--agents-addr=%s --memory-addr=%s",
             am_addr, ms_addr);
    snprintf(via_logs, sizeof via_logs,
             "--agents-addr= --memory-addr= --agents-log='%s' "
             "--memory-log='%s'",
             use_am ? am_dir : "", use_ms ? ms_dir : "");
    double raw_rate = raw_t > 0 ? (double)raw_events / raw_t : 0;
    if (rebuild_rounds > 0)
        printf("\nrebuild of the %s (%llu events), raw LMDB cursor scan of the "
           "same log%s: %.0f events/s (%.3f s)\n",
           logs, (unsigned long long)raw_events, use_am && use_ms ? "s" : "",
           raw_rate, raw_t);
    if (rebuild_rounds > 0)
        printf("  round  query --rebuild from            events/s  wall s   "
               "/ raw scan\n");
    for (int round = 1; round <= (int)rebuild_rounds; round++) {
        for (int mode = 0; mode < 2; mode++) {
            snprintf(cmd, sizeof cmd,
                     "'%s' --rebuild --data-dir='%s' %s 2>&1 | tail -1",
                     query_bin, q_dir, mode ? via_logs : via_api);
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
            if (done != raw_events)
                die("query --rebuild did not apply every event");
            const char *rs = strrchr(line, ',');
            if (rs)
                rate = atof(rs + 1);
            printf("  %5d  %-30s %10.0f  %6.3f   %8.4f\n", round,
                   mode ? "the logs' files, in place" : "ReadAll over gRPC",
                   rate, rebuild_t, raw_rate > 0 ? rate / raw_rate : 0);
        }
    }
    stop(ms);
    stop(am);
    stop(nats);
    free(mbuf);
    free(l.task_req);
    free(l.changes);
    free(l.change_ptrs);
    free(l.keys);
    for (int s = 0; s < SRC_N; s++) {
        free(src[s].acked);
        free(src[s].arrived);
        free(src[s].visible);
    }
    return 0;
}
