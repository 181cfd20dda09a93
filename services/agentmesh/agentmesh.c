/*
 * agentmesh: the local supervisor behind `agentmesh up`. It starts a
 * nats-server with JetStream and every agentmesh process that has been built,
 * each with the embedded defaults and its data under one folder, and stops
 * them all (newest first, SIGTERM then SIGKILL after a grace period) on
 * Ctrl-C, SIGTERM, or when any of them exits.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define MAX_ARGS 16
#define GRACE_MS 15000
/* nats-server's Go collector target (OPERATIONS.md, "nats-server"): a heap
 * that may grow to five times the live one before a collection, instead of
 * twice. On two cores at 10,000 events/s, collections running beside the
 * mesh were a visible share of the projection lag's tail. GOGC in the
 * environment wins. */
#define NATS_GOGC "400"

/* nats-server's GOMAXPROCS: half the CPUs this process may run on, at least one (OPERATIONS.md,
 * "nats-server"). It shares the host with the mesh's processes; with a
 * processor per CPU, Go's scheduler wakes idle threads onto every CPU to run
 * ready goroutines, and on two CPUs that cost the projection lag's tail more
 * than the parallelism gave. GOMAXPROCS in the environment wins. */
static long nats_gomaxprocs(void)
{
    cpu_set_t set;
    long n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : sysconf(_SC_NPROCESSORS_ONLN);
    n /= 2;
    return n < 1 ? 1 : n;
}

struct component {
    const char *name;
    const char *relpath; /* below --bin, the Bazel output tree */
    const char *args[MAX_ARGS];
};

/* Started in this order, stopped in the reverse order. The services' data
 * folders follow DESIGN §1; "@" is replaced by the data folder. */
static const struct component components[] = {
    {"agent-manager", "services/agent_manager/agent-manager", {"--data-dir", "@/agents", NULL}},
    {"memory-sync", "services/memory_sync/memory-sync", {"--data-dir", "@/memory", NULL}},
    {"query", "services/query/query", {"--data-dir", "@/query", NULL}},
    {"gateway", "gateway/gateway", {"--data-dir", "@", NULL}},
};

struct child {
    const char *name;
    pid_t pid;
};

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

static void logf_(const char *level, const char *fmt, const char *a, const char *b)
{
    char msg[512];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    snprintf(msg, sizeof(msg), fmt, a, b);
    /* The messages are ours, free of quotes and backslashes. */
    fprintf(stderr, "{\"time_unix_nano\":%lld%09ld,\"level\":\"%s\",\"process\":\"agentmesh\",\"msg\":\"%s\"}\n",
            (long long)ts.tv_sec, ts.tv_nsec, level, msg);
}

static int mkdir_p(const char *path)
{
    char buf[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(buf))
        return -1;
    memcpy(buf, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (buf[i] == '/' || buf[i] == '\0') {
            char c = buf[i];
            buf[i] = '\0';
            if (mkdir(buf, 0700) != 0 && errno != EEXIST)
                return -1;
            buf[i] = c;
        }
    }
    return 0;
}

static int spawn(const char *path, char *const argv[], char *const envp[], pid_t *pid)
{
    int rc = posix_spawn(pid, path, NULL, NULL, argv, envp != NULL ? envp : environ);
    if (rc != 0) {
        errno = rc;
        return -1;
    }
    return 0;
}

/* Polls until something accepts on 127.0.0.1:port or the deadline passes. */
static int wait_port(int port, int timeout_ms)
{
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    for (;;) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa;
        memset(&sa, 0, sizeof(sa));
        sa.sin_family = AF_INET;
        sa.sin_port = htons((uint16_t)port);
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        int ok = fd >= 0 && connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0;
        if (fd >= 0)
            close(fd);
        if (ok)
            return 0;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long ms = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
        if (ms > timeout_ms || stop_signal)
            return -1;
        struct timespec d = {0, 50 * 1000 * 1000};
        nanosleep(&d, NULL);
    }
}

static void stop_all(struct child *kids, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        if (kids[i].pid <= 0)
            continue;
        kill(kids[i].pid, SIGTERM);
        struct timespec start, now;
        clock_gettime(CLOCK_MONOTONIC, &start);
        for (;;) {
            int st;
            pid_t r = waitpid(kids[i].pid, &st, WNOHANG);
            if (r == kids[i].pid || (r < 0 && errno == ECHILD))
                break;
            clock_gettime(CLOCK_MONOTONIC, &now);
            long ms = (now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000;
            if (ms > GRACE_MS) {
                logf_("warn", "%s did not stop within the grace period%s; killing it", kids[i].name, "");
                kill(kids[i].pid, SIGKILL);
                waitpid(kids[i].pid, &st, 0);
                break;
            }
            struct timespec d = {0, 20 * 1000 * 1000};
            nanosleep(&d, NULL);
        }
        logf_("info", "stopped %s%s", kids[i].name, "");
        kids[i].pid = 0;
    }
}

static void usage(FILE *to)
{
    fprintf(to,
            "usage: agentmesh up [--data DIR] [--bin DIR] [--nats-port N]\n"
            "  Starts nats-server (JetStream) and every built agentmesh process with\n"
            "  the embedded defaults; Ctrl-C stops them all.\n"
            "  --data DIR      data folder (default ./data)\n"
            "  --bin DIR       Bazel output tree holding the binaries (default ./bazel-bin)\n"
            "  --nats-port N   nats-server client port (default 4222)\n"
            "  --nats-server P path of nats-server (default /usr/sbin/nats-server)\n");
}

int main(int argc, char **argv)
{
    const char *data = "data", *bin = "bazel-bin", *nats = "/usr/sbin/nats-server";
    const char *nats_port = "4222";
    struct child kids[1 + sizeof(components) / sizeof(components[0])];
    int nkids = 0, rc = 1;
    char path[4096], jsdir[4096], argbuf[MAX_ARGS][4096];

    if (argc < 2 || strcmp(argv[1], "up") != 0) {
        usage(argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) ? stdout : stderr);
        return argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) ? 0 : 2;
    }
    for (int i = 2; i < argc; i++) {
        const char **dst = NULL;
        if (strcmp(argv[i], "--data") == 0)
            dst = &data;
        else if (strcmp(argv[i], "--bin") == 0)
            dst = &bin;
        else if (strcmp(argv[i], "--nats-port") == 0)
            dst = &nats_port;
        else if (strcmp(argv[i], "--nats-server") == 0)
            dst = &nats;
        if (dst == NULL || i + 1 >= argc) {
            fprintf(stderr, "agentmesh: unknown or incomplete option '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
        *dst = argv[++i];
    }
    char *end = NULL;
    long port = strtol(nats_port, &end, 10);
    if (end == nats_port || *end != '\0' || port <= 0 || port > 65535) {
        fprintf(stderr, "agentmesh: --nats-port must be a port number, got '%s'\n", nats_port);
        return 2;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    snprintf(jsdir, sizeof(jsdir), "%s/nats", data);
    if (mkdir_p(jsdir) != 0) {
        fprintf(stderr, "agentmesh: cannot create %s: %s\n", jsdir, strerror(errno));
        return 1;
    }
    if (access(nats, X_OK) != 0) {
        fprintf(stderr, "agentmesh: %s not found: install the Debian package nats-server\n", nats);
        return 1;
    }
    char *nats_argv[] = {(char *)nats, "-js", "-sd", jsdir, "-a", "127.0.0.1", "-p", (char *)nats_port, NULL};
    /* nats-server's environment: ours, plus GOGC and GOMAXPROCS unless
     * they are set. */
    char maxprocs[48];
    snprintf(maxprocs, sizeof(maxprocs), "GOMAXPROCS=%ld", nats_gomaxprocs());
    size_t nenv = 0;
    while (environ[nenv] != NULL)
        nenv++;
    char **nats_env = calloc(nenv + 3, sizeof(*nats_env));
    if (nats_env == NULL) {
        fprintf(stderr, "agentmesh: out of memory\n");
        return 1;
    }
    memcpy(nats_env, environ, nenv * sizeof(*nats_env));
    if (getenv("GOGC") == NULL)
        nats_env[nenv++] = "GOGC=" NATS_GOGC;
    if (getenv("GOMAXPROCS") == NULL)
        nats_env[nenv++] = maxprocs;
    int spawned = spawn(nats, nats_argv, nats_env, &kids[nkids].pid);
    free(nats_env);
    if (spawned != 0) {
        fprintf(stderr, "agentmesh: cannot start nats-server: %s\n", strerror(errno));
        return 1;
    }
    kids[nkids++].name = "nats-server";
    if (wait_port((int)port, 10000) != 0) {
        logf_("error", "nats-server did not accept connections on port %s%s", nats_port, "");
        goto out;
    }
    {
        const char *gogc = getenv("GOGC"), *procs = getenv("GOMAXPROCS");
        char where[4300];
        if (procs != NULL)
            snprintf(where, sizeof(where), "%s, GOGC=%s, GOMAXPROCS=%s", jsdir,
                     gogc != NULL ? gogc : NATS_GOGC, procs);
        else
            snprintf(where, sizeof(where), "%s, GOGC=%s, %s", jsdir, gogc != NULL ? gogc : NATS_GOGC,
                     maxprocs);
        logf_("info", "nats-server (JetStream) listening on 127.0.0.1:%s, store %s", nats_port, where);
    }
    /* Every service reads the bus address from its environment. */
    {
        char url[64];
        snprintf(url, sizeof(url), "nats://127.0.0.1:%ld", port);
        setenv("AGENTMESH_NATS_URL", url, 1);
    }

    for (size_t c = 0; c < sizeof(components) / sizeof(components[0]); c++) {
        const struct component *cp = &components[c];
        char *cargv[MAX_ARGS + 2];
        int n = 0;
        snprintf(path, sizeof(path), "%s/%s", bin, cp->relpath);
        if (access(path, X_OK) != 0) {
            logf_("info", "%s is not built yet (%s): skipped", cp->name, path);
            continue;
        }
        cargv[n++] = path;
        for (int a = 0; cp->args[a] != NULL && n < MAX_ARGS; a++) {
            if (cp->args[a][0] == '@') {
                snprintf(argbuf[a], sizeof(argbuf[a]), "%s%s", data, cp->args[a] + 1);
                if (mkdir_p(argbuf[a]) != 0) {
                    fprintf(stderr, "agentmesh: cannot create %s: %s\n", argbuf[a], strerror(errno));
                    goto out;
                }
                cargv[n++] = argbuf[a];
            } else {
                cargv[n++] = (char *)cp->args[a];
            }
        }
        cargv[n] = NULL;
        if (spawn(path, cargv, NULL, &kids[nkids].pid) != 0) {
            logf_("error", "cannot start %s: %s", cp->name, strerror(errno));
            goto out;
        }
        kids[nkids++].name = cp->name;
        logf_("info", "started %s%s", cp->name, "");
    }
    logf_("info", "agentmesh is up (data in %s); Ctrl-C stops it%s", data, "");

    while (!stop_signal) {
        int st;
        pid_t r = waitpid(-1, &st, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < nkids; i++) {
            if (kids[i].pid == r) {
                kids[i].pid = 0;
                logf_("error", "%s exited unexpectedly (status %s); stopping everything", kids[i].name,
                      WIFEXITED(st) ? (WEXITSTATUS(st) == 0 ? "0" : "non-zero") : "signal");
                goto out;
            }
        }
    }
    rc = 0;
out:
    stop_all(kids, nkids);
    return rc;
}
