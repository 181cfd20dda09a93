/* The process shell around an rpc_server (see runtime.h): config to options,
 * metrics and admin HTTP, the port file, and the signal-driven graceful stop. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "services/common/admin.h"
#include "services/common/descriptor_set.h"
#include "services/common/log.h"
#include "services/common/runtime.h"
#include "services/common/signals.h"

struct rpc_runtime {
    const cfg *cfg;
    rpc_signals *signals;
    metrics_registry *metrics;
    rpc_server *server;
    admin_server *admin;
    int stop_pipe[2];
};

int rpc_server_options_from_cfg(const cfg *c, rpc_server_options *opts)
{
    int64_t workers = 0, depth = 0, cqs = 0, grace = 0;
    uint64_t maxmsg = 0;
    const char *listen = NULL, *token = NULL, *policy = NULL;
    if (c == NULL || opts == NULL)
        return RPC_ERR_INVALID;
    if (cfg_get_string(c, "listen", &listen) != CFG_OK ||
        cfg_get_int(c, "worker-threads", &workers) != CFG_OK ||
        cfg_get_int(c, "queue-depth", &depth) != CFG_OK ||
        cfg_get_int(c, "cq-threads", &cqs) != CFG_OK ||
        cfg_get_string(c, "worker-policy", &policy) != CFG_OK ||
        cfg_get_size(c, "max-message-size", &maxmsg) != CFG_OK ||
        cfg_get_duration_ms(c, "grace-period", &grace) != CFG_OK ||
        cfg_get_string(c, "internal-token", &token) != CFG_OK)
        return RPC_ERR_INVALID;
    if (policy == NULL ||
        (strcmp(policy, "batch") != 0 && strcmp(policy, "normal") != 0)) {
        LOG_ERROR("--worker-policy must be batch or normal, not \"%s\"",
                  policy ? policy : "");
        return RPC_ERR_INVALID;
    }
    if (listen == NULL || workers < 1 || workers > 4096 || depth < 0 ||
        depth > 1000000 || cqs < 1 || cqs > 64 || maxmsg < 1024 ||
        maxmsg > INT32_MAX) {
        LOG_ERROR("out of range: --worker-threads 1..4096, --queue-depth "
                  "0..1000000, --cq-threads 1..64, --max-message-size "
                  "1K..2G");
        return RPC_ERR_INVALID;
    }
    rpc_server_options_init(opts);
    opts->worker_policy = strcmp(policy, "batch") == 0
                              ? RPC_WORKER_POLICY_BATCH
                              : RPC_WORKER_POLICY_NORMAL;
    opts->listen_addr = listen;
    opts->worker_threads = (unsigned)workers;
    /* 0 means "the default" in the options struct; a queue of 0 is 1 here. */
    opts->queue_depth = depth == 0 ? 1 : (unsigned)depth;
    opts->cq_threads = (unsigned)cqs;
    opts->max_recv_message_bytes = (size_t)maxmsg;
    opts->max_send_message_bytes = (size_t)maxmsg;
    opts->grace_period_ms = grace;
    opts->internal_token = token;
    return RPC_OK;
}

int rpc_runtime_create(const cfg *c, rpc_runtime **out)
{
    int rc = RPC_ERR_NOMEM;
    rpc_server_options opts;
    const char *level = NULL;
    log_level lv;
    rpc_runtime *rt = calloc(1, sizeof *rt);
    if (rt == NULL)
        return RPC_ERR_NOMEM;
    rt->cfg = c;
    rt->stop_pipe[0] = rt->stop_pipe[1] = -1;
    rc = rpc_signals_create(&rt->signals);
    if (rc != RPC_OK)
        goto out;
    if (pipe2(rt->stop_pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        rc = RPC_ERR_SYSTEM;
        goto out;
    }
    if (cfg_get_string(c, "log-level", &level) == CFG_OK && level != NULL) {
        if (log_level_parse(level, &lv) != 0) {
            rc = RPC_ERR_INVALID;
            goto out;
        }
        log_set_level(lv);
    }
    rc = rpc_server_options_from_cfg(c, &opts);
    if (rc != RPC_OK)
        goto out;
    if (metrics_registry_create(&rt->metrics) != METRICS_OK) {
        rc = RPC_ERR_NOMEM;
        goto out;
    }
    opts.metrics = rt->metrics;
    rc = rpc_server_create(&opts, &rt->server);
    if (rc != RPC_OK)
        goto out;
    rc = rpc_server_enable_health(rt->server);
    if (rc != RPC_OK)
        goto out;
    size_t len = 0;
    const uint8_t *fds = rpc_descriptor_set(&len);
    rc = rpc_server_enable_reflection(rt->server, fds, len);
    if (rc != RPC_OK)
        goto out;
    *out = rt;
    rt = NULL;
out:
    rpc_runtime_destroy(rt);
    return rc;
}

rpc_server *rpc_runtime_server(rpc_runtime *rt)
{
    return rt->server;
}

metrics_registry *rpc_runtime_metrics(rpc_runtime *rt)
{
    return rt->metrics;
}

static int write_port_file(const char *path, int grpc_port, int admin_port)
{
    char tmp[4096];
    char body[64];
    int n = snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (n < 0 || (size_t)n >= sizeof tmp)
        return -1;
    int blen = snprintf(body, sizeof body, "grpc=%d\nadmin=%d\n", grpc_port,
                        admin_port);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return -1;
    bool ok = write(fd, body, (size_t)blen) == blen;
    ok = close(fd) == 0 && ok;
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

void rpc_runtime_stop(rpc_runtime *rt)
{
    char b = 1;
    if (rt != NULL && rt->stop_pipe[1] >= 0) {
        ssize_t w = write(rt->stop_pipe[1], &b, 1);
        (void)w;
    }
}


/* Waits for SIGTERM/SIGINT or rpc_runtime_stop; returns the signal or 0. */
static int wait_stop(rpc_runtime *rt)
{
    struct pollfd p[2] = {
        {.fd = rpc_signals_fd(rt->signals), .events = POLLIN},
        {.fd = rt->stop_pipe[0], .events = POLLIN},
    };
    for (;;) {
        int n = poll(p, 2, -1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (p[0].revents & POLLIN) {
            int signo = 0;
            if (rpc_signals_wait(rt->signals, 0, &signo) == RPC_OK && signo != 0)
                return signo;
        }
        if (p[1].revents & POLLIN)
            return 0;
    }
}

int rpc_runtime_run(rpc_runtime *rt)
{
    int rc;
    int grpc_port = 0, admin_port = 0;
    const char *admin_addr = NULL, *port_file = NULL, *listen = NULL;
    char gp[16], ap[16];
    cfg_get_string(rt->cfg, "admin", &admin_addr);
    cfg_get_string(rt->cfg, "port-file", &port_file);
    cfg_get_string(rt->cfg, "listen", &listen);
    rc = rpc_server_start(rt->server, &grpc_port);
    if (rc != RPC_OK) {
        log_emit(LOG_LEVEL_ERROR, NULL, NULL, "cannot serve gRPC on %s: %s",
                 listen ? listen : "", rpc_strerror(rc));
        return rc;
    }
    if (admin_addr != NULL && admin_addr[0] != '\0') {
        int arc = admin_server_create(admin_addr, rt->metrics, &rt->admin,
                                      &admin_port);
        if (arc != ADMIN_OK) {
            log_emit(LOG_LEVEL_ERROR, NULL, NULL,
                     "cannot serve admin HTTP on %s: %s", admin_addr,
                     admin_strerror(arc));
            rpc_server_shutdown(rt->server, 0, NULL);
            return RPC_ERR_BIND;
        }
    }
    if (port_file != NULL && port_file[0] != '\0' &&
        write_port_file(port_file, grpc_port, admin_port) != 0) {
        log_emit(LOG_LEVEL_ERROR, NULL, NULL, "cannot write port file %s",
                 port_file);
        rpc_server_shutdown(rt->server, 0, NULL);
        return RPC_ERR_SYSTEM;
    }
    snprintf(gp, sizeof gp, "%d", grpc_port);
    snprintf(ap, sizeof ap, "%d", admin_port);
    const char *kv[] = {"grpc_port", gp, "admin_port", ap, NULL};
    log_emit(LOG_LEVEL_INFO, NULL, kv, "serving");

    int signo = wait_stop(rt);
    log_emit(LOG_LEVEL_INFO, NULL, NULL, "shutting down (%s)",
             signo == SIGTERM ? "SIGTERM" : signo == SIGINT ? "SIGINT" : "stop");
    admin_server_set_serving(rt->admin, false);
    bool all = false;
    rpc_server_shutdown(rt->server, -1, &all);
    const char *kv2[] = {"all_finished", all ? "true" : "false", NULL};
    log_emit(LOG_LEVEL_INFO, NULL, kv2, "stopped");
    return RPC_OK;
}

void rpc_runtime_destroy(rpc_runtime *rt)
{
    if (rt == NULL)
        return;
    admin_server_destroy(rt->admin);
    rpc_server_destroy(rt->server);
    metrics_registry_destroy(rt->metrics);
    rpc_signals_destroy(rt->signals);
    if (rt->stop_pipe[0] >= 0)
        close(rt->stop_pipe[0]);
    if (rt->stop_pipe[1] >= 0)
        close(rt->stop_pipe[1]);
    free(rt);
}
