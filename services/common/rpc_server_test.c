/* In-process tests of the runtime with a gRPC C core client: concurrent unary
 * calls from several threads, a server stream read to the end and one
 * cancelled by the client (the open-stream gauge returns to 0), health
 * Check, registration rules, and a graceful shutdown that lets an in-flight
 * call finish. Run under ASan (leaks) and TSan (the threaded paths). */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>

#include "grpc/health/v1/health.pb-c.h"
#include "services/common/metrics.h"
#include "services/common/rpc.h"
#include "services/common/test_util.h"

static char target[64];

/* --- server side ---------------------------------------------------------- */

static void echo_raw(rpc_call *call, const ProtobufCMessage *req, void *user)
{
    const uint8_t *data = NULL;
    size_t len = 0;
    (void)req;
    (void)user;
    CHECK(rpc_call_request_bytes(call, &data, &len) == RPC_OK);
    CHECK(rpc_call_reply_bytes(call, data, len) == RPC_OK);
    CHECK(rpc_call_reply_bytes(call, data, len) == RPC_ERR_STATE);
}

/* Answers the worker thread's scheduling policy as one byte. */
static void policy_raw(rpc_call *call, const ProtobufCMessage *req, void *user)
{
    (void)req;
    (void)user;
    uint8_t b = (uint8_t)sched_getscheduler(0);
    CHECK(rpc_call_reply_bytes(call, &b, 1) == RPC_OK);
}

/* A fast path by the request's first byte: 'a' answers at once; 'd'
 * defers and a thread answers 20 ms later; 'r' defers and completes before
 * returning; 'n' defers, then declines; anything else declines. Declined
 * calls run fast_worker, which answers "worker". */
static void *late_answer(void *arg)
{
    rpc_call *call = arg;
    struct timespec ts = {0, 20 * 1000 * 1000};
    nanosleep(&ts, NULL);
    CHECK(rpc_call_reply_bytes(call, (const uint8_t *)"later", 5) == RPC_OK);
    rpc_call_complete(call);
    return NULL;
}

static bool fast_raw(rpc_call *call, const ProtobufCMessage *req, void *user)
{
    const uint8_t *data = NULL;
    size_t len = 0;
    pthread_t t;
    (void)req;
    (void)user;
    CHECK(rpc_call_request_bytes(call, &data, &len) == RPC_OK);
    char k = len > 0 ? (char)data[0] : '-';
    switch (k) {
    case 'a':
        CHECK(rpc_call_reply_bytes(call, (const uint8_t *)"now", 3) == RPC_OK);
        return true;
    case 'd':
        CHECK(rpc_call_defer(call) == RPC_OK);
        CHECK(rpc_call_defer(call) == RPC_ERR_STATE);
        CHECK(pthread_create(&t, NULL, late_answer, call) == 0);
        pthread_detach(t);
        return true;
    case 'r':
        CHECK(rpc_call_defer(call) == RPC_OK);
        CHECK(rpc_call_reply_bytes(call, (const uint8_t *)"early", 5) == RPC_OK);
        rpc_call_complete(call);
        rpc_call_complete(call); /* once only: a second is ignored */
        return true;
    case 'n':
        CHECK(rpc_call_defer(call) == RPC_OK);
        return false;
    default:
        return false;
    }
}

static void fast_worker(rpc_call *call, const ProtobufCMessage *req, void *user)
{
    (void)req;
    (void)user;
    CHECK(rpc_call_reply_bytes(call, (const uint8_t *)"worker", 6) == RPC_OK);
}

/* Sends N one-byte messages (N = first request byte; 0 = until cancelled). */
static void stream_raw(rpc_call *call, const ProtobufCMessage *req, void *user)
{
    const uint8_t *data = NULL;
    size_t len = 0;
    (void)req;
    (void)user;
    CHECK(rpc_call_request_bytes(call, &data, &len) == RPC_OK);
    unsigned n = len > 0 ? data[0] : 0;
    for (unsigned i = 0; n == 0 || i < n; i++) {
        uint8_t b = (uint8_t)i;
        int rc = rpc_call_send_bytes(call, &b, 1);
        if (rc != RPC_OK) {
            CHECK(rc == RPC_ERR_CANCELLED || rc == RPC_ERR_SHUTDOWN);
            break;
        }
    }
}

static atomic_int slow_started;

static void slow_raw(rpc_call *call, const ProtobufCMessage *req, void *user)
{
    (void)req;
    (void)user;
    atomic_store(&slow_started, 1);
    struct timespec ts = {0, 300 * 1000 * 1000};
    nanosleep(&ts, NULL);
    CHECK(rpc_call_reply_bytes(call, (const uint8_t *)"done", 4) == RPC_OK);
}

/* The fallback: echoes every message back, like a proxy relaying a backend,
 * with a header and a trailer; "/any.Svc/Fail" relays a non-OK status. */
static void fallback(rpc_call *call, const ProtobufCMessage *req, void *user)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int rc;
    (void)req;
    (void)user;
    CHECK(rpc_call_add_header(call, "x-proxied", "yes", 3) == RPC_OK);
    CHECK(rpc_call_add_header(call, "grpc-status", "0", 1) == RPC_ERR_INVALID);
    while ((rc = rpc_call_recv_bytes(call, &data, &len)) == RPC_OK) {
        CHECK(rpc_call_send_bytes(call, data, len) == RPC_OK);
        free(data);
    }
    CHECK(rc == RPC_ERR_CLOSED);
    CHECK(rpc_call_add_header(call, "x-late", "no", 2) == RPC_ERR_STATE ||
          strcmp(rpc_call_method(call), "/any.Svc/Fail") == 0);
    CHECK(rpc_call_add_trailer(call, "x-trailer", "t", 1) == RPC_OK);
    if (strcmp(rpc_call_method(call), "/any.Svc/Fail") == 0) {
        static const uint8_t details[] = {0x08, 0x0a};
        CHECK(rpc_call_finish_raw(call, GRPC_STATUS_ABORTED, "relayed", details,
                                  sizeof details) == RPC_OK);
    }
}

/* --- client side ---------------------------------------------------------- */

static grpc_byte_buffer *bytes(const void *data, size_t len)
{
    grpc_slice s = grpc_slice_from_copied_buffer(data, len);
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

/* One unary call; returns the status and copies up to cap reply bytes. */
static grpc_status_code unary(grpc_channel *ch, const char *method,
                              const void *req, size_t len, uint8_t *reply,
                              size_t cap, size_t *reply_len)
{
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_slice m = grpc_slice_from_static_string(method);
    grpc_call *call = grpc_channel_create_call(
        ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL,
        gpr_time_add(gpr_now(GPR_CLOCK_REALTIME),
                     gpr_time_from_seconds(60, GPR_TIMESPAN)),
        NULL);
    grpc_metadata_array init_md, trail_md;
    grpc_metadata_array_init(&init_md);
    grpc_metadata_array_init(&trail_md);
    grpc_byte_buffer *out = bytes(req, len), *in = NULL;
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details;
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = out;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &in;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trail_md;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    CHECK(grpc_call_start_batch(call, ops, 6, (void *)1, NULL) == GRPC_CALL_OK);
    grpc_event ev = grpc_completion_queue_pluck(
        cq, (void *)1, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    CHECK(ev.type == GRPC_OP_COMPLETE && ev.success);
    if (reply_len != NULL)
        *reply_len = 0;
    if (in != NULL) {
        grpc_byte_buffer_reader r;
        grpc_byte_buffer_reader_init(&r, in);
        grpc_slice s = grpc_byte_buffer_reader_readall(&r);
        size_t n = GRPC_SLICE_LENGTH(s) < cap ? GRPC_SLICE_LENGTH(s) : cap;
        if (reply != NULL)
            memcpy(reply, GRPC_SLICE_START_PTR(s), n);
        if (reply_len != NULL)
            *reply_len = n;
        grpc_slice_unref(s);
        grpc_byte_buffer_reader_destroy(&r);
        grpc_byte_buffer_destroy(in);
    }
    grpc_slice_unref(details);
    grpc_byte_buffer_destroy(out);
    grpc_metadata_array_destroy(&init_md);
    grpc_metadata_array_destroy(&trail_md);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    grpc_completion_queue_destroy(cq);
    return status;
}

static void *client_thread(void *arg)
{
    grpc_channel *ch = arg;
    for (int i = 0; i < 100; i++) {
        char req[32], got[32];
        size_t n = 0;
        int len = snprintf(req, sizeof req, "msg-%lu-%d",
                           (unsigned long)pthread_self() % 1000, i);
        CHECK(unary(ch, "/t.Raw/Echo", req, (size_t)len, (uint8_t *)got,
                    sizeof got, &n) == GRPC_STATUS_OK);
        CHECK(n == (size_t)len && memcmp(got, req, n) == 0);
    }
    return NULL;
}

static void test_concurrent_unary(grpc_channel *ch)
{
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&t[i], NULL, client_thread, ch) == 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    CHECK(unary(ch, "/t.Raw/Missing", "", 0, NULL, 0, NULL) ==
          GRPC_STATUS_UNIMPLEMENTED);
}

/* Fast paths: answered on the completion-queue thread, deferred and
 * answered by another thread (before or after the fast path returned), or
 * declined to a worker, also after a deferral. Many at once, so that the
 * deferred answers race the calls' other completions (TSan). */
static void *fast_client(void *arg)
{
    grpc_channel *ch = arg;
    static const struct {
        const char *req, *want;
    } cases[] = {{"a", "now"}, {"d", "later"}, {"r", "early"},
                 {"n", "worker"}, {"x", "worker"}};
    for (int round = 0; round < 10; round++)
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            char got[16];
            size_t n = 0;
            CHECK(unary(ch, "/t.Raw/Fast", cases[i].req, 1, (uint8_t *)got,
                        sizeof got, &n) == GRPC_STATUS_OK);
            CHECK(n == strlen(cases[i].want) &&
                  memcmp(got, cases[i].want, n) == 0);
        }
    return NULL;
}

static void test_fast_path(grpc_channel *ch)
{
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&t[i], NULL, fast_client, ch) == 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
}

/* The default policy: every worker that answers runs under SCHED_BATCH. */
static void test_worker_policy(grpc_channel *ch)
{
    for (int i = 0; i < 16; i++) {
        uint8_t b = 0xff;
        size_t n = 0;
        CHECK(unary(ch, "/t.Raw/Policy", "", 0, &b, 1, &n) == GRPC_STATUS_OK);
        CHECK(n == 1 && b == SCHED_BATCH);
    }
}

static void test_health(grpc_channel *ch)
{
    Grpc__Health__V1__HealthCheckRequest req =
        GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    uint8_t buf[64], reply[64];
    size_t n = 0;
    size_t len = grpc__health__v1__health_check_request__pack(&req, buf);
    CHECK(unary(ch, "/grpc.health.v1.Health/Check", buf, len, reply,
                sizeof reply, &n) == GRPC_STATUS_OK);
    Grpc__Health__V1__HealthCheckResponse *r =
        grpc__health__v1__health_check_response__unpack(NULL, n, reply);
    CHECK(r != NULL && r->status == 1);
    grpc__health__v1__health_check_response__free_unpacked(r, NULL);
    req.service = "x.Y";
    len = grpc__health__v1__health_check_request__pack(&req, buf);
    CHECK(unary(ch, "/grpc.health.v1.Health/Check", buf, len, NULL, 0, NULL) ==
          GRPC_STATUS_NOT_FOUND);
    uint8_t junk[] = {0x0a, 0x7f};
    CHECK(unary(ch, "/grpc.health.v1.Health/Check", junk, sizeof junk, NULL, 0,
                NULL) == GRPC_STATUS_INVALID_ARGUMENT);
}

/* Reads `want` messages of a stream, then cancels it (want > 0) or reads it
 * to the end (want == 0 with a bounded count request). */
static void test_streams(grpc_channel *ch, metrics_family *open)
{
    for (int round = 0; round < 2; round++) {
        grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
        grpc_slice m = grpc_slice_from_static_string("/t.Raw/Stream");
        grpc_call *call = grpc_channel_create_call(
            ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, m, NULL,
            gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        uint8_t count = round == 0 ? 20 : 0;
        grpc_byte_buffer *out = bytes(&count, 1);
        grpc_metadata_array init_md;
        grpc_metadata_array_init(&init_md);
        grpc_op ops[4];
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[1].op = GRPC_OP_SEND_MESSAGE;
        ops[1].data.send_message.send_message = out;
        ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
        ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[3].data.recv_initial_metadata.recv_initial_metadata = &init_md;
        CHECK(grpc_call_start_batch(call, ops, 4, (void *)1, NULL) == GRPC_CALL_OK);
        grpc_completion_queue_pluck(cq, (void *)1, gpr_inf_future(GPR_CLOCK_REALTIME),
                                    NULL);
        int received = 0;
        for (;;) {
            grpc_byte_buffer *in = NULL;
            memset(ops, 0, sizeof ops);
            ops[0].op = GRPC_OP_RECV_MESSAGE;
            ops[0].data.recv_message.recv_message = &in;
            CHECK(grpc_call_start_batch(call, ops, 1, (void *)2, NULL) == GRPC_CALL_OK);
            grpc_completion_queue_pluck(cq, (void *)2,
                                        gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            if (in == NULL)
                break;
            grpc_byte_buffer_destroy(in);
            received++;
            if (round == 1 && received == 50) {
                grpc_call_cancel(call, NULL);
            }
        }
        grpc_status_code status;
        grpc_slice details;
        grpc_metadata_array trail;
        grpc_metadata_array_init(&trail);
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
        ops[0].data.recv_status_on_client.trailing_metadata = &trail;
        ops[0].data.recv_status_on_client.status = &status;
        ops[0].data.recv_status_on_client.status_details = &details;
        CHECK(grpc_call_start_batch(call, ops, 1, (void *)3, NULL) == GRPC_CALL_OK);
        grpc_completion_queue_pluck(cq, (void *)3, gpr_inf_future(GPR_CLOCK_REALTIME),
                                    NULL);
        if (round == 0) {
            CHECK(status == GRPC_STATUS_OK && received == 20);
        } else {
            CHECK(status == GRPC_STATUS_CANCELLED && received >= 50);
        }
        grpc_slice_unref(details);
        grpc_metadata_array_destroy(&trail);
        grpc_metadata_array_destroy(&init_md);
        grpc_byte_buffer_destroy(out);
        grpc_call_unref(call);
        grpc_completion_queue_shutdown(cq);
        grpc_completion_queue_destroy(cq);
    }
    /* The server frees the cancelled stream on its own schedule: poll. */
    double v = -1;
    for (int i = 0; i < 3000; i++) {
        CHECK(metrics_value(open, NULL, &v) == METRICS_OK);
        if (v == 0)
            break;
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    CHECK(v == 0);
}

static void test_registration_rules(rpc_server *srv)
{
    rpc_method_desc bad = {"NoSlash", RPC_METHOD_UNARY, NULL, NULL, echo_raw, NULL, NULL};
    rpc_server_options o;
    rpc_server *s2 = NULL;
    rpc_server_options_init(&o);
    CHECK(rpc_server_create(&o, &s2) == RPC_OK);
    CHECK(rpc_server_register(s2, &bad) == RPC_ERR_INVALID);
    rpc_method_desc ok = {"/t.Raw/Echo", RPC_METHOD_UNARY, NULL, NULL, echo_raw, NULL, NULL};
    CHECK(rpc_server_register(s2, &ok) == RPC_OK);
    CHECK(rpc_server_register(s2, &ok) == RPC_ERR_EXISTS);
    rpc_method_desc bidi = {"/t.Raw/Bidi", RPC_METHOD_BIDI_STREAM, NULL, NULL,
                            echo_raw, NULL, NULL};
    CHECK(rpc_server_register(s2, &bidi) == RPC_ERR_INVALID);
    rpc_method_desc fast_stream = {"/t.Raw/FastStream", RPC_METHOD_SERVER_STREAM,
                                   NULL, NULL, stream_raw, NULL, fast_raw};
    CHECK(rpc_server_register(s2, &fast_stream) == RPC_ERR_INVALID);
    CHECK(rpc_health_set(s2, "", RPC_HEALTH_SERVING) == RPC_ERR_STATE);
    rpc_server_destroy(s2);
    rpc_server_destroy(NULL);
    CHECK(rpc_server_register(srv, &ok) == RPC_ERR_STATE);

    /* A port already in use fails at start, and the server still frees. */
    rpc_server_options_init(&o);
    o.listen_addr = target;
    CHECK(rpc_server_create(&o, &s2) == RPC_OK);
    CHECK(rpc_server_register(s2, &ok) == RPC_OK);
    CHECK(rpc_server_start(s2, NULL) == RPC_ERR_BIND);
    rpc_server_destroy(s2);
    CHECK(rpc_server_enable_health(srv) == RPC_ERR_STATE);
}

static void test_fallback(void)
{
    rpc_server *srv = NULL;
    rpc_server_options o;
    int port = 0;
    char t[64], got[32];
    size_t n = 0;
    rpc_server_options_init(&o);
    o.worker_threads = 2;
    o.worker_policy = (rpc_worker_policy)7;
    CHECK(rpc_server_create(&o, &srv) == RPC_ERR_INVALID && srv == NULL);
    o.worker_policy = RPC_WORKER_POLICY_NORMAL;
    CHECK(rpc_server_create(&o, &srv) == RPC_OK);
    const rpc_method_desc pm = {"/t.Raw/Policy", RPC_METHOD_UNARY, NULL, NULL,
                                policy_raw, NULL, NULL};
    CHECK(rpc_server_register(srv, &pm) == RPC_OK);
    CHECK(rpc_server_set_fallback(srv, NULL, NULL) == RPC_ERR_INVALID);
    CHECK(rpc_server_set_fallback(srv, fallback, NULL) == RPC_OK);
    CHECK(rpc_server_start(srv, &port) == RPC_OK);
    CHECK(rpc_server_set_fallback(srv, fallback, NULL) == RPC_ERR_STATE);
    snprintf(t, sizeof t, "127.0.0.1:%d", port);
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(t, creds, NULL);
    grpc_channel_credentials_release(creds);
    CHECK(unary(ch, "/any.Svc/Do", "relay me", 8, (uint8_t *)got, sizeof got,
                &n) == GRPC_STATUS_OK);
    CHECK(n == 8 && memcmp(got, "relay me", 8) == 0);
    /* This server's workers keep the kernel's default policy. */
    CHECK(unary(ch, "/t.Raw/Policy", "", 0, (uint8_t *)got, sizeof got, &n) ==
              GRPC_STATUS_OK &&
          n == 1 && got[0] == SCHED_OTHER);
    CHECK(unary(ch, "/any.Svc/Fail", "x", 1, NULL, 0, NULL) ==
          GRPC_STATUS_ABORTED);
    grpc_channel_destroy(ch);
    bool all = false;
    CHECK(rpc_server_shutdown(srv, 5000, &all) == RPC_OK && all);
    rpc_server_destroy(srv);
}

struct shutdown_arg {
    rpc_server *srv;
    bool all;
};

static void *shutdown_thread(void *arg)
{
    struct shutdown_arg *a = arg;
    CHECK(rpc_server_shutdown(a->srv, 30000, &a->all) == RPC_OK);
    return NULL;
}

struct slow_arg {
    grpc_channel *ch;
    grpc_status_code status;
    char reply[8];
};

static void *slow_client(void *arg)
{
    struct slow_arg *a = arg;
    size_t n = 0;
    a->status = unary(a->ch, "/t.Raw/Slow", "", 0, (uint8_t *)a->reply,
                      sizeof a->reply - 1, &n);
    a->reply[n] = '\0';
    return NULL;
}

int main(void)
{
    metrics_registry *reg = NULL;
    rpc_server *srv = NULL;
    rpc_server_options o;
    int port = 0;
    CHECK(metrics_registry_create(&reg) == METRICS_OK);
    rpc_server_options_init(&o);
    o.worker_threads = 4;
    o.queue_depth = 64;
    o.stream_queue_depth = 4;
    o.metrics = reg;
    CHECK(rpc_server_create(&o, &srv) == RPC_OK);
    const rpc_method_desc methods[] = {
        {"/t.Raw/Echo", RPC_METHOD_UNARY, NULL, NULL, echo_raw, NULL, NULL},
        {"/t.Raw/Stream", RPC_METHOD_SERVER_STREAM, NULL, NULL, stream_raw, NULL, NULL},
        {"/t.Raw/Slow", RPC_METHOD_UNARY, NULL, NULL, slow_raw, NULL, NULL},
        {"/t.Raw/Policy", RPC_METHOD_UNARY, NULL, NULL, policy_raw, NULL, NULL},
        {"/t.Raw/Fast", RPC_METHOD_UNARY, NULL, NULL, fast_worker, NULL,
         fast_raw},
    };
    for (size_t i = 0; i < 5; i++)
        CHECK(rpc_server_register(srv, &methods[i]) == RPC_OK);
    CHECK(rpc_server_enable_health(srv) == RPC_OK);
    CHECK(rpc_server_start(srv, &port) == RPC_OK && port > 0);
    CHECK(rpc_server_start(srv, &port) == RPC_ERR_STATE);
    snprintf(target, sizeof target, "127.0.0.1:%d", port);

    grpc_init();
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, creds, NULL);
    grpc_channel_credentials_release(creds);

    metrics_family *open = NULL;
    CHECK(metrics_gauge_create(reg, "agentmesh_rpc_streams_open",
                               "server-streaming and bidi calls open", NULL, 0,
                               &open) == METRICS_OK);
    test_concurrent_unary(ch);
    fprintf(stderr, "done test_concurrent_unary\n");
    test_worker_policy(ch);
    fprintf(stderr, "done test_worker_policy\n");
    test_fast_path(ch);
    fprintf(stderr, "done test_fast_path\n");
    test_health(ch);
    fprintf(stderr, "done test_health\n");
    test_streams(ch, open);
    fprintf(stderr, "done test_streams\n");
    test_registration_rules(srv);
    fprintf(stderr, "done test_registration_rules\n");
    test_fallback();
    fprintf(stderr, "done test_fallback\n");

    /* Graceful shutdown with a call in flight: it completes. */
    struct slow_arg sa = {ch, GRPC_STATUS_UNKNOWN, ""};
    pthread_t ct, st;
    CHECK(pthread_create(&ct, NULL, slow_client, &sa) == 0);
    while (!atomic_load(&slow_started)) {
        struct timespec ts = {0, 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    struct shutdown_arg sh = {srv, false};
    CHECK(pthread_create(&st, NULL, shutdown_thread, &sh) == 0);
    pthread_join(ct, NULL);
    pthread_join(st, NULL);
    CHECK(sa.status == GRPC_STATUS_OK && strcmp(sa.reply, "done") == 0);
    CHECK(sh.all);
    CHECK(rpc_server_inflight(srv) == 0);
    fprintf(stderr, "done test_graceful_shutdown\n");

    grpc_channel_destroy(ch);
    grpc_shutdown();
    rpc_server_destroy(srv);
    metrics_registry_destroy(reg);
    return TEST_EXIT();
}
