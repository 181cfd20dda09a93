/* rpc_echo_server: a small server on the runtime with the test-only
 * agentmesh.test.Echo service (echo, counting stream, a blocking handler, a
 * health toggle, a rich error), plus health and reflection. The runtime's
 * integration tests drive it, and the benchmark uses it as the bare-runtime
 * baseline. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "services/common/cfg.h"
#include "services/common/log.h"
#include "services/common/runtime.h"
#include "services/common/testdata/echo.pb-c.h"
#include "services/common/testdata/echo_descriptor_set.h"

static const cfg_option options[] = {
    CFG_RUNTIME_OPTIONS("AGENTMESH_ECHO_", "127.0.0.1:0", "127.0.0.1:0",
                        "data/echo"),
};

static void fill_reply(rpc_call *call, Agentmesh__Test__EchoReply *r)
{
    r->actor = (char *)rpc_call_actor(call);
    r->request_id = (char *)(rpc_call_request_id(call) ? rpc_call_request_id(call) : "");
    r->traceparent = (char *)(rpc_call_traceparent(call) ? rpc_call_traceparent(call) : "");
}

/* A wait that a cancellation interrupts. */
struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool woken;
};

static void wake(void *arg)
{
    struct waiter *w = arg;
    pthread_mutex_lock(&w->mu);
    w->woken = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static void waiter_init(struct waiter *w)
{
    pthread_mutex_init(&w->mu, NULL);
    pthread_condattr_t a;
    pthread_condattr_init(&a);
    pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
    pthread_cond_init(&w->cv, &a);
    pthread_condattr_destroy(&a);
    w->woken = false;
}

/* Waits up to ms (< 0: until woken or the call's deadline). */
static void waiter_wait(struct waiter *w, rpc_call *call, int64_t ms)
{
    int64_t left = rpc_call_time_left_ms(call);
    if (ms < 0 || ms > left)
        ms = left;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if (ms > 86400000)
        ms = 86400000;
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&w->mu);
    while (!w->woken) {
        if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) == ETIMEDOUT)
            break;
    }
    pthread_mutex_unlock(&w->mu);
}

/* Echoes the message, after interval_ms (cut short by cancellation). */
static void echo(rpc_call *call, const ProtobufCMessage *request, void *user)
{
    const Agentmesh__Test__EchoRequest *req =
        (const Agentmesh__Test__EchoRequest *)request;
    Agentmesh__Test__EchoReply r = AGENTMESH__TEST__ECHO_REPLY__INIT;
    (void)user;
    if (req->interval_ms > 0) {
        struct waiter w;
        waiter_init(&w);
        rpc_call_on_cancel(call, wake, &w);
        waiter_wait(&w, call, req->interval_ms);
        rpc_call_on_cancel(call, NULL, NULL);
        pthread_cond_destroy(&w.cv);
        pthread_mutex_destroy(&w.mu);
    }
    r.message = req->message;
    fill_reply(call, &r);
    rpc_call_reply(call, &r.base);
}

static void count(rpc_call *call, const ProtobufCMessage *request, void *user)
{
    const Agentmesh__Test__EchoRequest *req =
        (const Agentmesh__Test__EchoRequest *)request;
    struct waiter w;
    (void)user;
    waiter_init(&w);
    rpc_call_on_cancel(call, wake, &w);
    for (uint32_t i = 0; req->count == 0 || i < req->count; i++) {
        Agentmesh__Test__EchoReply r = AGENTMESH__TEST__ECHO_REPLY__INIT;
        r.message = req->message;
        r.index = i;
        fill_reply(call, &r);
        if (rpc_call_send(call, &r.base) != RPC_OK)
            break;
        if (req->interval_ms > 0) {
            waiter_wait(&w, call, req->interval_ms);
            if (rpc_call_cancelled(call))
                break;
        }
    }
    rpc_call_on_cancel(call, NULL, NULL);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
}

static void block(rpc_call *call, const ProtobufCMessage *request, void *user)
{
    struct waiter w;
    (void)request;
    (void)user;
    waiter_init(&w);
    rpc_call_on_cancel(call, wake, &w);
    while (!rpc_call_cancelled(call))
        waiter_wait(&w, call, -1);
    rpc_call_on_cancel(call, NULL, NULL);
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    if (rpc_call_time_left_ms(call) == 0)
        rpc_call_fail(call, GRPC_STATUS_DEADLINE_EXCEEDED, "deadline exceeded");
    else
        rpc_call_fail(call, GRPC_STATUS_CANCELLED, "unblocked by cancellation");
}

static void set_health(rpc_call *call, const ProtobufCMessage *request,
                       void *user)
{
    const Agentmesh__Test__EchoRequest *req =
        (const Agentmesh__Test__EchoRequest *)request;
    rpc_server *srv = user;
    int rc = rpc_health_set(srv, req->service,
                            req->serving ? RPC_HEALTH_SERVING
                                         : RPC_HEALTH_NOT_SERVING);
    if (rc != RPC_OK) {
        rpc_call_fail(call, GRPC_STATUS_FAILED_PRECONDITION, "%s",
                      rpc_strerror(rc));
        return;
    }
    Agentmesh__Test__EchoReply r = AGENTMESH__TEST__ECHO_REPLY__INIT;
    r.message = req->service;
    fill_reply(call, &r);
    rpc_call_reply(call, &r.base);
}

static void fail(rpc_call *call, const ProtobufCMessage *request, void *user)
{
    const Agentmesh__Test__EchoRequest *req =
        (const Agentmesh__Test__EchoRequest *)request;
    rpc_status *st = NULL;
    static const char *const kv[] = {"field", "message"};
    (void)user;
    if (rpc_status_create(GRPC_STATUS_INVALID_ARGUMENT, "message must not be empty",
                          &st) != RPC_OK ||
        rpc_status_add_bad_request(st, "message", "must not be empty") != RPC_OK ||
        rpc_status_add_error_info(st, "EMPTY_MESSAGE", "agentmesh.test", kv, 1) !=
            RPC_OK ||
        rpc_status_add_retry_info(st, 1500) != RPC_OK) {
        rpc_status_destroy(st);
        rpc_call_fail(call, GRPC_STATUS_INTERNAL, "cannot build the status");
        return;
    }
    (void)req;
    rpc_call_fail_status(call, &st);
}

int main(int argc, char **argv)
{
    cfg *c = NULL;
    rpc_runtime *rt = NULL;
    int exit_code = 1;
    size_t n = sizeof options / sizeof options[0];

    int rc = cfg_parse_main(options, n, argc, argv, &c);
    if (rc >= 0)
        return rc;
    rc = rpc_runtime_create(c, &rt);
    if (rc != RPC_OK) {
        log_emit(LOG_LEVEL_ERROR, NULL, NULL, "cannot start: %s", rpc_strerror(rc));
        goto out;
    }
    rpc_server *srv = rpc_runtime_server(rt);
    size_t dlen = 0;
    const uint8_t *desc = echo_descriptor_set(&dlen);
    const ProtobufCMessageDescriptor *rq = &agentmesh__test__echo_request__descriptor;
    const ProtobufCMessageDescriptor *rp = &agentmesh__test__echo_reply__descriptor;
    const rpc_method_desc methods[] = {
        {"/agentmesh.test.Echo/Echo", RPC_METHOD_UNARY, rq, rp, echo, NULL, NULL},
        {"/agentmesh.test.Echo/Count", RPC_METHOD_SERVER_STREAM, rq, rp, count, NULL, NULL},
        {"/agentmesh.test.Echo/Block", RPC_METHOD_UNARY, rq, rp, block, NULL, NULL},
        {"/agentmesh.test.Echo/SetHealth", RPC_METHOD_UNARY, rq, rp, set_health, srv, NULL},
        {"/agentmesh.test.Echo/Fail", RPC_METHOD_UNARY, rq, rp, fail, NULL, NULL},
    };
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++) {
        rc = rpc_server_register(srv, &methods[i]);
        if (rc != RPC_OK) {
            log_emit(LOG_LEVEL_ERROR, NULL, NULL, "cannot register %s: %s",
                     methods[i].name, rpc_strerror(rc));
            goto out;
        }
    }
    rc = rpc_server_enable_reflection(srv, desc, dlen);
    if (rc != RPC_OK)
        goto out;
    rc = rpc_runtime_run(rt);
    if (rc == RPC_OK)
        exit_code = 0;
out:
    rpc_runtime_destroy(rt);
    cfg_destroy(c);
    return exit_code;
}
