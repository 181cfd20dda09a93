/* The MemorySync gRPC handlers: each builds the event metadata from the
 * call (correlation id, causation id, traceparent, actor), runs the command
 * of memory_sync.h and answers with its message or status; WatchMemory
 * follows the namespace's stream with an event-store subscription (catch-up,
 * then live) and sends one MemoryChange per matching change. */
#include "services/memory_sync/handlers.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "services/memory_sync/internal.h"

#define WATCH_WAIT_MS 500

struct ms_grpc {
    ms_service *svc;
    es_store *store;
};

/* Event metadata from the call, each string bounded well under the event
 * store's ES_META_MAX, so a long client header never fails a command: ids
 * are cut to their buffers, a traceparent that is not the 55 characters of a
 * W3C version-00 value is replaced by a fresh one. */
typedef struct call_ctx {
    ms_ctx ctx;
    char correlation[128];
    char causation[128];
    char traceparent[64];
    char actor[256];
} call_ctx;

static void hex(const uint8_t *p, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[p[i] >> 4];
        out[2 * i + 1] = digits[p[i] & 15];
    }
    out[2 * n] = '\0';
}

static void ctx_init(call_ctx *c, rpc_call *call)
{
    const char *corr = rpc_call_correlation_id(call);
    const char *req = rpc_call_request_id(call);
    const char *tp = rpc_call_traceparent(call);
    uint8_t r[40];
    char h[81];
    memset(c, 0, sizeof *c);
    if (!corr)
        corr = req;
    if (RAND_bytes(r, sizeof r) != 1)
        memset(r, 0, sizeof r);
    hex(r, sizeof r, h);
    if (corr)
        snprintf(c->correlation, sizeof c->correlation, "%s", corr);
    else
        snprintf(c->correlation, sizeof c->correlation,
                 "%.8s-%.4s-4%.3s-a%.3s-%.12s", h, h + 8, h + 12, h + 15, h + 18);
    snprintf(c->causation, sizeof c->causation, "%s", req ? req : c->correlation);
    if (tp && strlen(tp) == 55 && strncmp(tp, "00-", 3) == 0)
        snprintf(c->traceparent, sizeof c->traceparent, "%s", tp);
    else
        snprintf(c->traceparent, sizeof c->traceparent, "00-%.32s-%.16s-01",
                 h + 30, h + 62);
    snprintf(c->actor, sizeof c->actor, "%s", rpc_call_actor(call));
    c->ctx.actor = c->actor;
    c->ctx.correlation_id = c->correlation;
    c->ctx.causation_id = c->causation;
    c->ctx.traceparent = c->traceparent;
}

/* protobuf-c hands strings over NUL-terminated, so a string holding a NUL
 * would arrive cut short ("a\0b" read as "a"): walk the raw request (already
 * decoded once, so well-formed; bounds are checked anyway) and refuse any
 * string field, at any depth, that holds one. */
static bool varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80))
            return true;
    }
    return false;
}

static bool has_nul_string(const ProtobufCMessageDescriptor *d,
                           const uint8_t *p, size_t len, int depth)
{
    const uint8_t *end = p + len;
    if (depth > 8)
        return false;
    while (p < end) {
        uint64_t tag, n;
        if (!varint(&p, end, &tag))
            return false;
        switch (tag & 7) {
        case 0:
            if (!varint(&p, end, &n))
                return false;
            break;
        case 1:
            p += (size_t)(end - p) < 8 ? (size_t)(end - p) : 8;
            break;
        case 5:
            p += (size_t)(end - p) < 4 ? (size_t)(end - p) : 4;
            break;
        case 2: {
            if (!varint(&p, end, &n) || n > (uint64_t)(end - p))
                return false;
            const ProtobufCFieldDescriptor *f =
                protobuf_c_message_descriptor_get_field(d, (unsigned)(tag >> 3));
            if (f && f->type == PROTOBUF_C_TYPE_STRING && memchr(p, 0, n))
                return true;
            if (f && f->type == PROTOBUF_C_TYPE_MESSAGE &&
                has_nul_string(f->descriptor, p, n, depth + 1))
                return true;
            p += n;
            break;
        }
        default:
            return false;
        }
    }
    return false;
}

/* Answers INVALID_ARGUMENT and returns true when a string holds a NUL. */
static bool refuse_nul(rpc_call *call, const ProtobufCMessage *request)
{
    const uint8_t *data = NULL;
    size_t len = 0;
    if (rpc_call_request_bytes(call, &data, &len) != RPC_OK ||
        !has_nul_string(request->descriptor, data, len, 0))
        return false;
    rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                  "strings (namespace, key, replica_id, ...) must not contain NUL");
    return true;
}

static void answer(rpc_call *call, int code, ProtobufCMessage *reply,
                   const ms_error *err)
{
    if (code == 0) {
        rpc_call_reply(call, reply);
        protobuf_c_message_free_unpacked(reply, NULL);
    } else {
        rpc_call_fail(call, (grpc_status_code)code, "%s", err->message);
    }
}

#define COMMAND(handler, ReqT, fn, RepT)                                       \
    static void handler(rpc_call *call, const ProtobufCMessage *request,       \
                        void *user)                                            \
    {                                                                          \
        ms_grpc *g = user;                                                     \
        call_ctx c;                                                            \
        ms_error err = {{0}};                                                  \
        RepT *reply = NULL;                                                    \
        if (refuse_nul(call, request))                                         \
            return;                                                            \
        ctx_init(&c, call);                                                    \
        int code = fn(g->svc, &c.ctx, (const ReqT *)request, &reply, &err);    \
        answer(call, code, reply ? &reply->base : NULL, &err);                 \
    }

#define QUERY(handler, ReqT, fn, RepT)                                         \
    static void handler(rpc_call *call, const ProtobufCMessage *request,       \
                        void *user)                                            \
    {                                                                          \
        ms_grpc *g = user;                                                     \
        ms_error err = {{0}};                                                  \
        RepT *reply = NULL;                                                    \
        if (refuse_nul(call, request))                                         \
            return;                                                            \
        int code = fn(g->svc, (const ReqT *)request, &reply, &err);            \
        answer(call, code, reply ? &reply->base : NULL, &err);                 \
    }

COMMAND(h_put, Agentmesh__V1__PutMemoryRequest, ms_put,
        Agentmesh__V1__MemoryEntry)
QUERY(h_get, Agentmesh__V1__GetMemoryRequest, ms_get,
      Agentmesh__V1__MemoryEntry)
COMMAND(h_delete, Agentmesh__V1__DeleteMemoryRequest, ms_delete,
        Agentmesh__V1__MemoryEntry)
QUERY(h_list, Agentmesh__V1__ListMemoryRequest, ms_list,
      Agentmesh__V1__ListMemoryResponse)
COMMAND(h_sync, Agentmesh__V1__SyncMemoryRequest, ms_sync,
        Agentmesh__V1__SyncMemoryResponse)
COMMAND(h_forget, Agentmesh__V1__ForgetNamespaceRequest, ms_forget,
        Agentmesh__V1__ForgetResponse)

typedef struct guard {
    pthread_mutex_t mu;
    es_sub *sub;
} guard;

static void on_cancel(void *arg)
{
    guard *g = arg;
    pthread_mutex_lock(&g->mu);
    if (g->sub)
        es_sub_cancel(g->sub);
    pthread_mutex_unlock(&g->mu);
}

static void h_watch(rpc_call *call, const ProtobufCMessage *request, void *user)
{
    const Agentmesh__V1__WatchMemoryRequest *req =
        (const Agentmesh__V1__WatchMemoryRequest *)request;
    ms_grpc *g = user;
    guard gd = {PTHREAD_MUTEX_INITIALIZER, NULL};
    char stream[MS_STREAM_MAX];
    ms_watch_start start;
    ms_error err = {{0}};
    es_sub *sub = NULL;
    int rc;

    if (refuse_nul(call, request))
        goto out;
    if ((rc = ms_watch_begin(g->svc, req, &start, &err))) {
        rpc_call_fail(call, (grpc_status_code)rc, "%s", err.message);
        goto out;
    }
    snprintf(stream, sizeof stream, "%s%s", MS_STREAM_PREFIX, req->namespace_);
    es_filter f = {.stream_prefix = stream};
    if ((rc = es_sub_open(g->store, start.after_position, &f, &sub))) {
        rpc_call_fail(call, (grpc_status_code)es_status_grpc_code(rc),
                      "cannot follow namespace %s: %s", req->namespace_,
                      es_strerror(rc));
        goto out;
    }
    gd.sub = sub;
    rpc_call_on_cancel(call, on_cancel, &gd);
    for (;;) {
        es_event *ev = NULL;
        Agentmesh__V1__MemoryChange *ch = NULL;
        rc = es_sub_next(sub, WATCH_WAIT_MS, &ev);
        if (rc == ES_TIMEOUT) {
            if (rpc_call_cancelled(call))
                break;
            continue;
        }
        if (rc == ES_CLOSED)
            break;
        if (rc) {
            rpc_call_fail(call, (grpc_status_code)es_status_grpc_code(rc),
                          "following namespace %s: %s", req->namespace_,
                          es_strerror(rc));
            break;
        }
        /* The prefix also matches longer names ("memory-a", "memory-ab"). */
        if (strcmp(ev->stream, stream) || ev->stream_version < start.from_version) {
            es_event_free(ev);
            continue;
        }
        rc = ms_watch_change(g->svc, req->namespace_, req->prefix, ev, &ch, &err);
        es_event_free(ev);
        if (rc) {
            rpc_call_fail(call, (grpc_status_code)rc, "%s", err.message);
            break;
        }
        if (!ch)
            continue;
        rc = rpc_call_send(call, &ch->base);
        protobuf_c_message_free_unpacked(&ch->base, NULL);
        if (rc != RPC_OK)
            break;
    }
    rpc_call_on_cancel(call, NULL, NULL);
    pthread_mutex_lock(&gd.mu);
    gd.sub = NULL;
    pthread_mutex_unlock(&gd.mu);
out:
    es_sub_destroy(sub);
    pthread_mutex_destroy(&gd.mu);
}

#define SVC "/agentmesh.v1.MemorySync/"
#define M(name, kind, req, rep, fn)                                            \
    {SVC name, kind, &agentmesh__v1__##req##__descriptor,                      \
     &agentmesh__v1__##rep##__descriptor, fn, NULL, NULL}

int ms_grpc_register(rpc_server *srv, ms_service *svc, es_store *store,
                     ms_grpc **out)
{
    ms_grpc *g = calloc(1, sizeof *g);
    int rc = RPC_OK;
    if (!g)
        return RPC_ERR_NOMEM;
    g->svc = svc;
    g->store = store;
    rpc_method_desc methods[] = {
        M("PutMemory", RPC_METHOD_UNARY, put_memory_request, memory_entry, h_put),
        M("GetMemory", RPC_METHOD_UNARY, get_memory_request, memory_entry, h_get),
        M("DeleteMemory", RPC_METHOD_UNARY, delete_memory_request, memory_entry,
          h_delete),
        M("ListMemory", RPC_METHOD_UNARY, list_memory_request,
          list_memory_response, h_list),
        M("SyncMemory", RPC_METHOD_UNARY, sync_memory_request,
          sync_memory_response, h_sync),
        M("WatchMemory", RPC_METHOD_SERVER_STREAM, watch_memory_request,
          memory_change, h_watch),
        M("ForgetNamespace", RPC_METHOD_UNARY, forget_namespace_request,
          forget_response, h_forget),
    };
    for (size_t i = 0; i < sizeof methods / sizeof methods[0] && !rc; i++) {
        methods[i].user = g;
        rc = rpc_server_register(srv, &methods[i]);
    }
    if (rc) {
        free(g);
        return rc;
    }
    rpc_health_set(srv, "agentmesh.v1.MemorySync", RPC_HEALTH_SERVING);
    *out = g;
    return RPC_OK;
}

void ms_grpc_destroy(ms_grpc *g) { free(g); }
