/* The EventStore gRPC read API: unary pages of a stream or of the whole log
 * and a catch-up-then-live subscription, each event converted to
 * agentmesh.v1.Event with its payload also as JSON (see eventstore_api.h). */
#include "services/eventstore_api/eventstore_api.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "agentmesh/v1/eventstore.pb-c.h"
#include "services/pbjson/pbjson.h"
#include "services/pbjson/registry.h"

/* How long one subscription wait lasts before it checks the call again. */
#define SUB_WAIT_MS 500


struct esapi {
    es_store *store;
    char *source;
};

void esapi_uuid_format(const uint8_t id[16], char out[37])
{
    es_id_format(id, out);
}

static char *dupn(const char *s, size_t n, bool *oom)
{
    char *d = malloc(n + 1);
    if (!d) {
        *oom = true;
        return NULL;
    }
    if (n)
        memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

/* The payload as proto3 JSON, or "" when the type is not an API message or
 * the data does not parse. */
static char *payload_json(const es_event *ev, bool *oom)
{
    const ProtobufCMessageDescriptor *d = pbjson_registry_find(ev->type);
    char *json = NULL;
    if (d) {
        ProtobufCMessage *m =
            protobuf_c_message_unpack(d, NULL, ev->data_len, ev->data);
        if (m) {
            int rc = pbjson_encode(m, NULL, &json, NULL);
            protobuf_c_message_free_unpacked(m, NULL);
            if (rc == PBJSON_NOMEM)
                *oom = true;
            if (rc != PBJSON_OK)
                json = NULL;
        }
    }
    return json ? json : dupn("", 0, oom);
}

int esapi_event_to_proto(const es_event *ev, const char *source,
                         bool with_json, Agentmesh__V1__Event **out)
{
    bool oom = false;
    char id[37];
    Agentmesh__V1__Event *e = malloc(sizeof *e);
    Agentmesh__V1__EventMetadata *m = malloc(sizeof *m);
    if (!e || !m) {
        free(e);
        free(m);
        return -1;
    }
    agentmesh__v1__event__init(e);
    agentmesh__v1__event_metadata__init(m);
    e->metadata = m;
    esapi_uuid_format(ev->id, id);
    e->event_id = dupn(id, strlen(id), &oom);
    e->stream = dupn(ev->stream, ev->stream_len, &oom);
    e->stream_version = ev->stream_version;
    e->position = ev->position;
    e->type = dupn(ev->type, ev->type_len, &oom);
    e->time_unix_nano = ev->time_unix_nano;
    if (ev->data_len) {
        if ((e->data.data = malloc(ev->data_len))) {
            memcpy(e->data.data, ev->data, ev->data_len);
            e->data.len = ev->data_len;
        } else {
            oom = true;
        }
    }
    e->data_json = with_json ? payload_json(ev, &oom) : dupn("", 0, &oom);
    e->source = dupn(source ? source : "", source ? strlen(source) : 0, &oom);
    e->content_type = dupn(ev->content_type, ev->content_type_len, &oom);
    m->correlation_id = dupn(ev->correlation_id, ev->correlation_id_len, &oom);
    m->causation_id = dupn(ev->causation_id, ev->causation_id_len, &oom);
    m->traceparent = dupn(ev->traceparent, ev->traceparent_len, &oom);
    m->actor = dupn(ev->actor, ev->actor_len, &oom);
    if (oom) {
        protobuf_c_message_free_unpacked(&e->base, NULL);
        return -1;
    }
    *out = e;
    return 0;
}

static void fail_es(rpc_call *call, int rc, const char *what)
{
    grpc_status_code code = (grpc_status_code)es_status_grpc_code(rc);
    if (code == GRPC_STATUS_OK)
        code = GRPC_STATUS_INTERNAL;
    rpc_call_fail(call, code, "%s: %s", what, es_strerror(rc));
}

static bool check_limit(rpc_call *call, uint32_t limit, size_t *out)
{
    if (limit > ESAPI_PAGE_MAX) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "limit: at most %u, got %u", ESAPI_PAGE_MAX, limit);
        return false;
    }
    *out = limit ? limit : ESAPI_PAGE_DEFAULT;
    return true;
}

static bool check_direction(rpc_call *call, int dir)
{
    if (dir != AGENTMESH__V1__READ_DIRECTION__READ_DIRECTION_FORWARD &&
        dir != AGENTMESH__V1__READ_DIRECTION__READ_DIRECTION_BACKWARD) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "direction: READ_DIRECTION_FORWARD or _BACKWARD");
        return false;
    }
    return true;
}

/* Fills the filter from a request's prefix and types (borrowed). */
static bool make_filter(rpc_call *call, const char *prefix, char **types,
                        size_t n_types, es_filter *f)
{
    memset(f, 0, sizeof *f);
    if (n_types > ES_FILTER_TYPES_MAX) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "types: at most %d", ES_FILTER_TYPES_MAX);
        return false;
    }
    if (prefix && strlen(prefix) > ES_STREAM_NAME_MAX) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "stream_prefix: at most %d bytes", ES_STREAM_NAME_MAX);
        return false;
    }
    for (size_t i = 0; i < n_types; i++)
        if (!types[i] || !*types[i] || strlen(types[i]) > ES_TYPE_MAX) {
            rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                          "types[%zu]: 1-%d bytes", i, ES_TYPE_MAX);
            return false;
        }
    f->stream_prefix = prefix && *prefix ? prefix : NULL;
    f->types = (const char *const *)types;
    f->n_types = n_types;
    return true;
}

/* Whether the call asked for pages without data_json (value "1"): a caller
 * that reads only the protobuf bytes (the query service's catch-up and
 * rebuild) spares the server the proto3 JSON of every payload, most of a
 * page's cost. */
static bool omit_json(const rpc_call *call)
{
    const char *v = NULL;
    size_t len = 0;
    return rpc_call_metadata(call, ESAPI_OMIT_JSON_METADATA, &v, &len) == 0 &&
           len == 1 && v[0] == '1';
}

/* Converts a page of events into a reply's repeated field. */
static int convert_page(const esapi *api, const es_event *evs, size_t n,
                        bool with_json, Agentmesh__V1__Event ***out)
{
    if (!n) {
        *out = NULL;
        return 0;
    }
    Agentmesh__V1__Event **v = calloc(n, sizeof *v);
    if (!v)
        return -1;
    for (size_t i = 0; i < n; i++)
        if (esapi_event_to_proto(&evs[i], api->source, with_json, &v[i])) {
            for (size_t j = 0; j < i; j++)
                protobuf_c_message_free_unpacked(&v[j]->base, NULL);
            free(v);
            return -1;
        }
    *out = v;
    return 0;
}

static void read_stream(rpc_call *call, const ProtobufCMessage *request,
                        void *user)
{
    const Agentmesh__V1__ReadStreamRequest *req =
        (const Agentmesh__V1__ReadStreamRequest *)request;
    esapi *api = user;
    es_event *evs = NULL;
    es_txn *txn = NULL;
    es_page pg;
    size_t limit;
    Agentmesh__V1__ReadStreamResponse r = AGENTMESH__V1__READ_STREAM_RESPONSE__INIT;
    int rc;

    if (!req->stream || !es_stream_name_valid(req->stream)) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "stream: 1-%d bytes of [A-Za-z0-9-_.:@/]",
                      ES_STREAM_NAME_MAX);
        return;
    }
    if (!check_limit(call, req->limit, &limit) ||
        !check_direction(call, req->direction))
        return;
    if (!(evs = calloc(limit, sizeof *evs))) {
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    if ((rc = es_txn_begin(api->store, &txn))) {
        fail_es(call, rc, "read");
        goto out;
    }
    rc = es_read_stream(txn, req->stream, req->from_version,
                        req->direction ? ES_BACKWARD : ES_FORWARD, limit, evs,
                        &pg);
    if (rc == ES_NOT_FOUND) {
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, "stream %s not found",
                      req->stream);
        goto out;
    }
    if (rc) {
        fail_es(call, rc, "read");
        goto out;
    }
    if (convert_page(api, evs, pg.count, !omit_json(call), &r.events)) {
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    r.n_events = pg.count;
    r.end_of_stream = pg.end_of_stream;
    es_txn_end(txn);
    txn = NULL;
    rpc_call_reply(call, &r.base);
    for (size_t i = 0; i < r.n_events; i++)
        protobuf_c_message_free_unpacked(&r.events[i]->base, NULL);
    free(r.events);
out:
    es_txn_end(txn);
    free(evs);
}

static void read_all(rpc_call *call, const ProtobufCMessage *request,
                     void *user)
{
    const Agentmesh__V1__ReadAllRequest *req =
        (const Agentmesh__V1__ReadAllRequest *)request;
    esapi *api = user;
    es_event *evs = NULL;
    es_txn *txn = NULL;
    es_filter f;
    es_page pg;
    size_t limit;
    Agentmesh__V1__ReadAllResponse r = AGENTMESH__V1__READ_ALL_RESPONSE__INIT;
    int rc;

    if (!check_limit(call, req->limit, &limit) ||
        !check_direction(call, req->direction) ||
        !make_filter(call, req->stream_prefix, req->types, req->n_types, &f))
        return;
    f.max_scan = ESAPI_SCAN_MAX;
    bool back = req->direction == AGENTMESH__V1__READ_DIRECTION__READ_DIRECTION_BACKWARD;
    /* Backward from 0 (the default) reads from the end. */
    uint64_t from = back && req->from_position == 0 ? ES_END : req->from_position;
    if (!(evs = calloc(limit, sizeof *evs))) {
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    if ((rc = es_txn_begin(api->store, &txn)) ||
        (rc = es_read_all(txn, from, back ? ES_BACKWARD : ES_FORWARD, &f, limit,
                          evs, &pg))) {
        fail_es(call, rc, "read");
        goto out;
    }
    if (convert_page(api, evs, pg.count, !omit_json(call), &r.events)) {
        rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    r.n_events = pg.count;
    r.end_of_stream = pg.end_of_stream;
    r.next_position = pg.next;
    es_txn_end(txn);
    txn = NULL;
    rpc_call_reply(call, &r.base);
    for (size_t i = 0; i < r.n_events; i++)
        protobuf_c_message_free_unpacked(&r.events[i]->base, NULL);
    free(r.events);
out:
    es_txn_end(txn);
    free(evs);
}

/* The subscription a cancelled call must wake, guarded against the handler
 * freeing it meanwhile. */
typedef struct sub_guard {
    pthread_mutex_t mu;
    es_sub *sub;
} sub_guard;

static void on_cancel(void *arg)
{
    sub_guard *g = arg;
    pthread_mutex_lock(&g->mu);
    if (g->sub)
        es_sub_cancel(g->sub);
    pthread_mutex_unlock(&g->mu);
}

static void subscribe_all(rpc_call *call, const ProtobufCMessage *request,
                          void *user)
{
    const Agentmesh__V1__SubscribeAllRequest *req =
        (const Agentmesh__V1__SubscribeAllRequest *)request;
    esapi *api = user;
    sub_guard g = {PTHREAD_MUTEX_INITIALIZER, NULL};
    es_sub *sub = NULL;
    es_filter f;
    int rc;

    if (!make_filter(call, req->stream_prefix, req->types, req->n_types, &f))
        return;
    uint64_t after = req->from_position ? req->from_position - 1 : 0;
    if ((rc = es_sub_open(api->store, after, &f, &sub))) {
        fail_es(call, rc, "subscribe");
        return;
    }
    g.sub = sub;
    rpc_call_on_cancel(call, on_cancel, &g);
    for (;;) {
        es_event *ev = NULL;
        rc = es_sub_next(sub, SUB_WAIT_MS, &ev);
        if (rc == ES_TIMEOUT) {
            if (rpc_call_cancelled(call))
                break;
            continue;
        }
        if (rc == ES_CLOSED)
            break;
        if (rc) {
            fail_es(call, rc, "subscription");
            break;
        }
        Agentmesh__V1__Event *msg = NULL;
        if (esapi_event_to_proto(ev, api->source, true, &msg)) {
            es_event_free(ev);
            rpc_call_fail(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            break;
        }
        es_event_free(ev);
        int src = rpc_call_send(call, &msg->base);
        protobuf_c_message_free_unpacked(&msg->base, NULL);
        if (src != RPC_OK)
            break;
    }
    rpc_call_on_cancel(call, NULL, NULL);
    pthread_mutex_lock(&g.mu);
    g.sub = NULL;
    pthread_mutex_unlock(&g.mu);
    es_sub_destroy(sub);
    pthread_mutex_destroy(&g.mu);
}

int esapi_register(rpc_server *srv, es_store *store, const char *source,
                   esapi **out)
{
    esapi *api = calloc(1, sizeof *api);
    int rc = RPC_ERR_NOMEM;
    if (!api || !(api->source = strdup(source ? source : "")))
        goto out;
    api->store = store;
    const rpc_method_desc methods[] = {
        {"/agentmesh.v1.EventStore/ReadStream", RPC_METHOD_UNARY,
         &agentmesh__v1__read_stream_request__descriptor,
         &agentmesh__v1__read_stream_response__descriptor, read_stream, api, NULL},
        {"/agentmesh.v1.EventStore/ReadAll", RPC_METHOD_UNARY,
         &agentmesh__v1__read_all_request__descriptor,
         &agentmesh__v1__read_all_response__descriptor, read_all, api, NULL},
        {"/agentmesh.v1.EventStore/SubscribeAll", RPC_METHOD_SERVER_STREAM,
         &agentmesh__v1__subscribe_all_request__descriptor,
         &agentmesh__v1__event__descriptor, subscribe_all, api, NULL},
    };
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if ((rc = rpc_server_register(srv, &methods[i])))
            goto out;
    /* Health may not be enabled on this server: that is not an error. */
    rpc_health_set(srv, "agentmesh.v1.EventStore", RPC_HEALTH_SERVING);
    *out = api;
    api = NULL;
    rc = RPC_OK;
out:
    esapi_destroy(api);
    return rc;
}

void esapi_destroy(esapi *api)
{
    if (!api)
        return;
    free(api->source);
    free(api);
}
