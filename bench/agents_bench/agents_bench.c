/* agents_bench: task lifecycles per second (SubmitTask -> StartTask ->
 * CompleteTask, each a durable append) through the real agent-manager, with
 * 1, 16 and 64 concurrent clients, next to the bare runtime's echo RPC
 * (rpc_echo_server) measured in the same run with the same client: one gRPC
 * C-core completion queue driving every client's calls asynchronously.
 * It starts both servers itself on free loopback ports with a temporary data
 * directory, and prints calls/s, p50/p99 latencies and the ratio (what the
 * domain plus the durable appends cost over a bare RPC).
 * Usage: agents_bench AGENT_MANAGER ECHO_SERVER [--seconds N] [--rounds N]
 *        [--clients 1,16,64] [--no-sync] */
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>

#include "agentmesh/v1/agents.pb-c.h"

#define MAX_CLIENTS 256
#define CAP "bench"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- servers ------------------------------------------------------------ */

typedef struct proc {
    pid_t pid;
    int grpc_port;
} proc;

/* Starts bin with ports 0 and a port file; `extra` (may be NULL) are more
 * arguments, NULL-terminated. */
static int start_server(const char *bin, const char *dir, const char *name,
                        const char *const *extra, proc *p)
{
    char portfile[512], data[512], pf_arg[600], data_arg[600], log[600];
    snprintf(portfile, sizeof portfile, "%s/%s.ports", dir, name);
    snprintf(data, sizeof data, "%s/%s-data", dir, name);
    snprintf(pf_arg, sizeof pf_arg, "--port-file=%s", portfile);
    snprintf(data_arg, sizeof data_arg, "--data-dir=%s", data);
    snprintf(log, sizeof log, "%s/%s.log", dir, name);
    pid_t pid = fork();
    if (pid < 0)
        return -1;
    if (pid == 0) {
        FILE *f = freopen(log, "w", stderr);
        (void)f;
        const char *argv[16] = {bin, pf_arg, data_arg, "--listen=127.0.0.1:0",
                                "--admin=127.0.0.1:0", "--worker-threads=64",
                                "--queue-depth=512", "--log-level=warn"};
        size_t k = 8;
        for (size_t i = 0; extra && extra[i] && k < 15; i++)
            argv[k++] = extra[i];
        argv[k] = NULL;
        execv(bin, (char *const *)argv);
        _exit(127);
    }
    p->pid = pid;
    for (int i = 0; i < 3000; i++) {
        FILE *f = fopen(portfile, "r");
        if (f) {
            int g = 0, a = 0;
            int n = fscanf(f, "grpc=%d admin=%d", &g, &a);
            fclose(f);
            if (n >= 1 && g > 0) {
                p->grpc_port = g;
                return 0;
            }
        }
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "%s exited during startup (see %s)\n", bin, log);
            return -1;
        }
        struct timespec ts = {0, 10 * 1000000};
        nanosleep(&ts, NULL);
    }
    return -1;
}

static int stop_server(proc *p)
{
    int st = 0;
    kill(p->pid, SIGTERM);
    waitpid(p->pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

/* ---- one asynchronous unary call ---------------------------------------- */

typedef struct client client;

typedef struct ucall {
    grpc_call *call;
    grpc_byte_buffer *send;
    grpc_byte_buffer *recv;
    grpc_metadata_array initial, trailing;
    grpc_status_code status;
    grpc_slice details;
} ucall;

static int ucall_start(grpc_channel *ch, grpc_completion_queue *cq,
                       const char *method, const uint8_t *req, size_t len,
                       ucall *u, void *tag)
{
    grpc_op ops[6];
    memset(u, 0, sizeof *u);
    memset(ops, 0, sizeof ops);
    grpc_slice m = grpc_slice_from_static_string(method);
    u->call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m,
                                       NULL, gpr_inf_future(GPR_CLOCK_REALTIME),
                                       NULL);
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)req, len);
    u->send = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_metadata_array_init(&u->initial);
    grpc_metadata_array_init(&u->trailing);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = u->send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &u->initial;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &u->recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &u->trailing;
    ops[5].data.recv_status_on_client.status = &u->status;
    ops[5].data.recv_status_on_client.status_details = &u->details;
    return grpc_call_start_batch(u->call, ops, 6, tag, NULL) == GRPC_CALL_OK ? 0
                                                                            : -1;
}

/* Frees the call; returns the reply bytes in *out (caller frees) or NULL. */
static int ucall_finish(ucall *u, uint8_t **out, size_t *len)
{
    int rc = u->status == GRPC_STATUS_OK && u->recv ? 0 : -1;
    *out = NULL;
    *len = 0;
    if (rc == 0) {
        grpc_byte_buffer_reader r;
        grpc_byte_buffer_reader_init(&r, u->recv);
        grpc_slice all = grpc_byte_buffer_reader_readall(&r);
        grpc_byte_buffer_reader_destroy(&r);
        *len = GRPC_SLICE_LENGTH(all);
        *out = malloc(*len ? *len : 1);
        if (*out)
            memcpy(*out, GRPC_SLICE_START_PTR(all), *len);
        grpc_slice_unref(all);
    } else {
        char *d = grpc_slice_to_c_string(u->details);
        fprintf(stderr, "call failed: status %d: %s\n", u->status, d);
        gpr_free(d);
    }
    grpc_byte_buffer_destroy(u->send);
    if (u->recv)
        grpc_byte_buffer_destroy(u->recv);
    grpc_metadata_array_destroy(&u->initial);
    grpc_metadata_array_destroy(&u->trailing);
    grpc_slice_unref(u->details);
    grpc_call_unref(u->call);
    return rc;
}

/* ---- latency samples ---------------------------------------------------- */

typedef struct samples {
    double *v;
    size_t n, cap;
} samples;

static void sample_add(samples *s, double x)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 4096;
        double *nv = realloc(s->v, nc * sizeof *nv);
        if (!nv)
            return;
        s->v = nv;
        s->cap = nc;
    }
    s->v[s->n++] = x;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double pct(samples *s, double p)
{
    if (!s->n)
        return 0;
    qsort(s->v, s->n, sizeof *s->v, cmp_double);
    size_t i = (size_t)(p * (double)(s->n - 1));
    return s->v[i];
}

/* ---- the load ----------------------------------------------------------- */

typedef enum mode { MODE_ECHO, MODE_LIFECYCLE } mode;

struct client {
    int step; /* lifecycle: 0 submit, 1 start, 2 complete */
    char task_id[160];
    double t_call, t_cycle;
    ucall u;
};

typedef struct result {
    double per_s;      /* lifecycles or echo calls per second */
    double rpc_per_s;
    double p50_ms, p99_ms;          /* per lifecycle or per echo call */
    double call_p50_ms, call_p99_ms; /* per RPC */
    size_t errors;
} result;

static const uint8_t echo_req[] = {0x0a, 0x05, 'b', 'e', 'n', 'c', 'h'};

static int issue(grpc_channel *ch, grpc_completion_queue *cq, mode m,
                 client *c)
{
    uint8_t buf[512];
    size_t len = 0;
    const char *method = NULL;
    c->t_call = now_s();
    if (m == MODE_ECHO)
        return ucall_start(ch, cq, "/agentmesh.test.Echo/Echo", echo_req,
                           sizeof echo_req, &c->u, c);
    if (c->step == 0) {
        Agentmesh__V1__SubmitTaskRequest r = AGENTMESH__V1__SUBMIT_TASK_REQUEST__INIT;
        char *caps[] = {CAP};
        r.n_required_capabilities = 1;
        r.required_capabilities = caps;
        r.input = "{\"prompt\":\"summarise the quarterly report\"}";
        len = agentmesh__v1__submit_task_request__pack(&r, buf);
        method = "/agentmesh.v1.AgentManager/SubmitTask";
        c->t_cycle = c->t_call;
    } else if (c->step == 1) {
        Agentmesh__V1__StartTaskRequest r = AGENTMESH__V1__START_TASK_REQUEST__INIT;
        r.task_id = c->task_id;
        len = agentmesh__v1__start_task_request__pack(&r, buf);
        method = "/agentmesh.v1.AgentManager/StartTask";
    } else {
        Agentmesh__V1__CompleteTaskRequest r =
            AGENTMESH__V1__COMPLETE_TASK_REQUEST__INIT;
        r.task_id = c->task_id;
        r.output = "{\"summary\":\"fine\"}";
        len = agentmesh__v1__complete_task_request__pack(&r, buf);
        method = "/agentmesh.v1.AgentManager/CompleteTask";
    }
    return ucall_start(ch, cq, method, buf, len, &c->u, c);
}

static int run(const char *target, mode m, int nclients, double seconds,
               result *res)
{
    grpc_channel *ch = grpc_channel_create(target, grpc_insecure_credentials_create(),
                                           NULL);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    client *cl = calloc((size_t)nclients, sizeof *cl);
    samples cyc = {0}, calls = {0};
    size_t done = 0, rpcs = 0, errors = 0, outstanding = 0;
    double warm = 0.3, t0 = now_s(), t_meas = t0 + warm, t_end = t_meas + seconds;
    bool stopping = false;
    for (int i = 0; i < nclients; i++)
        if (issue(ch, cq, m, &cl[i]) == 0)
            outstanding++;
    while (outstanding) {
        grpc_event ev = grpc_completion_queue_next(
            cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE)
            break;
        outstanding--;
        client *c = ev.tag;
        uint8_t *reply = NULL;
        size_t rlen = 0;
        double t = now_s();
        int rc = ucall_finish(&c->u, &reply, &rlen);
        bool measuring = c->t_call >= t_meas && t <= t_end;
        if (rc) {
            errors++;
            c->step = 0;
        } else {
            if (measuring) {
                rpcs++;
                sample_add(&calls, (t - c->t_call) * 1e3);
            }
            if (m == MODE_ECHO) {
                if (measuring) {
                    done++;
                    sample_add(&cyc, (t - c->t_call) * 1e3);
                }
            } else if (c->step == 0) {
                Agentmesh__V1__Task *task =
                    agentmesh__v1__task__unpack(NULL, rlen, reply);
                if (task && task->state == AGENTMESH__V1__TASK_STATE__TASK_STATE_ASSIGNED) {
                    snprintf(c->task_id, sizeof c->task_id, "%s", task->task_id);
                    c->step = 1;
                } else {
                    fprintf(stderr, "submitted task was not assigned at once\n");
                    errors++;
                }
                if (task)
                    agentmesh__v1__task__free_unpacked(task, NULL);
            } else if (c->step == 1) {
                c->step = 2;
            } else {
                if (c->t_cycle >= t_meas && t <= t_end) {
                    done++;
                    sample_add(&cyc, (t - c->t_cycle) * 1e3);
                }
                c->step = 0;
            }
        }
        free(reply);
        if (t >= t_end)
            stopping = true;
        /* After the end, lifecycles under way still finish (uncounted), so
         * that no task stays on the agent across runs. */
        bool more = !stopping || (m == MODE_LIFECYCLE && c->step != 0);
        if (more && errors < 100 && issue(ch, cq, m, c) == 0)
            outstanding++;
    }
    res->per_s = (double)done / seconds;
    res->rpc_per_s = (double)rpcs / seconds;
    res->p50_ms = pct(&cyc, 0.50);
    res->p99_ms = pct(&cyc, 0.99);
    res->call_p50_ms = pct(&calls, 0.50);
    res->call_p99_ms = pct(&calls, 0.99);
    res->errors = errors;
    free(cyc.v);
    free(calls.v);
    free(cl);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
               .type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    grpc_channel_destroy(ch);
    return errors ? -1 : 0;
}

/* Registers the agent that takes every task (enough concurrency for all). */
static int register_agent(const char *target)
{
    grpc_channel *ch = grpc_channel_create(target, grpc_insecure_credentials_create(),
                                           NULL);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    Agentmesh__V1__RegisterAgentRequest r = AGENTMESH__V1__REGISTER_AGENT_REQUEST__INIT;
    char *caps[] = {CAP};
    uint8_t buf[256], *reply = NULL;
    size_t rlen = 0;
    ucall u;
    int rc = -1;
    r.name = "bench-agent";
    r.n_capabilities = 1;
    r.capabilities = caps;
    r.max_concurrency = 1024;
    size_t len = agentmesh__v1__register_agent_request__pack(&r, buf);
    if (ucall_start(ch, cq, "/agentmesh.v1.AgentManager/RegisterAgent", buf, len,
                    &u, &u) == 0) {
        grpc_event ev = grpc_completion_queue_next(
            cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_OP_COMPLETE)
            rc = ucall_finish(&u, &reply, &rlen);
    }
    free(reply);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
               .type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    grpc_channel_destroy(ch);
    return rc;
}

static int cmp_result(const void *a, const void *b)
{
    return cmp_double(&((const result *)a)->per_s, &((const result *)b)->per_s);
}

int main(int argc, char **argv)
{
    double seconds = 3;
    int rounds = 3;
    int levels[8] = {1, 16, 64};
    int nlevels = 3;
    bool no_sync = false;
    if (argc < 3) {
        fprintf(stderr, "usage: %s AGENT_MANAGER ECHO_SERVER [--seconds N] "
                        "[--rounds N] [--clients 1,16,64] [--no-sync]\n",
                argv[0]);
        return 2;
    }
    for (int i = 3; i < argc; i++) {
        if (strcmp(argv[i], "--seconds") == 0 && i + 1 < argc)
            seconds = atof(argv[++i]);
        else if (strcmp(argv[i], "--rounds") == 0 && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (strcmp(argv[i], "--no-sync") == 0)
            no_sync = true;
        else if (strcmp(argv[i], "--clients") == 0 && i + 1 < argc) {
            nlevels = 0;
            for (char *tok = strtok(argv[++i], ","); tok && nlevels < 8;
                 tok = strtok(NULL, ","))
                levels[nlevels++] = atoi(tok);
        } else {
            fprintf(stderr, "unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (seconds <= 0 || rounds < 1 || rounds > 15)
        return 2;
    for (int i = 0; i < nlevels; i++)
        if (levels[i] < 1 || levels[i] > MAX_CLIENTS)
            return 2;
    char dir[] = "/tmp/agents-bench-XXXXXX";
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    grpc_init();
    proc am = {0}, echo = {0};
    int exit_code = 1;
    /* No outbox: the figures are the domain and the durable appends. */
    const char *am_extra[] = {"--nats-url=", "--heartbeat-timeout=24h",
                              no_sync ? "--no-sync" : NULL, NULL};
    if (start_server(argv[1], dir, "agent-manager", am_extra, &am) ||
        start_server(argv[2], dir, "echo", NULL, &echo)) {
        fprintf(stderr, "cannot start the servers (logs in %s)\n", dir);
        goto out;
    }
    char am_target[64], echo_target[64];
    snprintf(am_target, sizeof am_target, "127.0.0.1:%d", am.grpc_port);
    snprintf(echo_target, sizeof echo_target, "127.0.0.1:%d", echo.grpc_port);
    if (register_agent(am_target)) {
        fprintf(stderr, "cannot register the agent\n");
        goto out;
    }
    printf("agents benchmark: %d round(s) of %.1f s per run, medians; %s; "
           "servers with --worker-threads=64; one client thread, one "
           "completion queue\n\n",
           rounds, seconds,
           no_sync ? "NO fsync (--no-sync)" : "durable appends (fsync per group commit)");
    printf("%-8s %12s %9s %9s %12s %9s %9s %12s %9s %9s %7s\n", "clients",
           "cycles/s", "p50 ms", "p99 ms", "am rpc/s", "p50 ms", "p99 ms",
           "echo rpc/s", "p50 ms", "p99 ms", "ratio");
    for (int l = 0; l < nlevels; l++) {
        result am_r[15], echo_r[15];
        for (int r = 0; r < rounds; r++) {
            if (run(echo_target, MODE_ECHO, levels[l], seconds, &echo_r[r]) ||
                run(am_target, MODE_LIFECYCLE, levels[l], seconds, &am_r[r])) {
                fprintf(stderr, "calls failed (logs in %s)\n", dir);
                goto out;
            }
        }
        qsort(am_r, (size_t)rounds, sizeof *am_r, cmp_result);
        qsort(echo_r, (size_t)rounds, sizeof *echo_r, cmp_result);
        result a = am_r[rounds / 2], e = echo_r[rounds / 2];
        printf("%-8d %12.0f %9.2f %9.2f %12.0f %9.2f %9.2f %12.0f %9.2f %9.2f "
               "%7.1f\n",
               levels[l], a.per_s, a.p50_ms, a.p99_ms, a.rpc_per_s,
               a.call_p50_ms, a.call_p99_ms, e.per_s, e.p50_ms, e.p99_ms,
               a.rpc_per_s > 0 ? e.rpc_per_s / a.rpc_per_s : 0);
        fflush(stdout);
    }
    printf("\ncycles/s: SubmitTask -> StartTask -> CompleteTask lifecycles "
           "(3 RPCs, 3 appends); p50/p99 per lifecycle.\n"
           "am rpc/s: those RPCs; p50/p99 per RPC. ratio: echo rpc/s over am "
           "rpc/s (the cost of the domain and the durable append per RPC).\n");
    exit_code = 0;
out:
    if (am.pid && stop_server(&am) != 0) {
        fprintf(stderr, "agent-manager did not exit cleanly\n");
        exit_code = 1;
    }
    if (echo.pid)
        stop_server(&echo);
    grpc_shutdown();
    if (exit_code == 0) {
        char cmd[128];
        snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", dir);
    }
    return exit_code;
}
