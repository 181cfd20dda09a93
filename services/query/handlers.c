/* The Query gRPC handlers: validate the request, wait for min_positions
 * within the call's deadline, read the read models in one LMDB read
 * transaction and answer with the positions of that same snapshot. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/common/log.h"
#include "services/common/rpc.h"
#include "services/query/handlers.h"

#define NO_DEADLINE_WAIT_MS 60000
#define STREAM_PAGE 256
#define STREAM_IDLE_MS 500

struct qs_grpc {
    qs_db *db;
};

typedef struct cancel_flag {
    atomic_int flag;
    qs_db *db;
} cancel_flag;

static void on_cancel(void *arg)
{
    cancel_flag *c = arg;
    atomic_store(&c->flag, 1);
    qs_db_wake(c->db);
}

static void fail_es(rpc_call *call, int rc, const char *msg)
{
    grpc_status_code code = (grpc_status_code)es_status_grpc_code(rc);
    if (code == GRPC_STATUS_OK)
        code = GRPC_STATUS_INTERNAL;
    rpc_call_fail(call, code, "%s", msg && *msg ? msg : es_strerror(rc));
}

/* Waits for min_positions; false (call answered) when it cannot. */
static bool wait_min(qs_grpc *g, rpc_call *call, void *const *entries,
                     size_t n)
{
    uint64_t min[QS_NSOURCES];
    char msg[160];
    if (qs_min_positions(entries, n, min, msg, sizeof msg)) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "%s", msg);
        return false;
    }
    int64_t left = rpc_call_time_left_ms(call);
    if (left == INT64_MAX)
        left = NO_DEADLINE_WAIT_MS;
    cancel_flag cf = {0, g->db};
    rpc_call_on_cancel(call, on_cancel, &cf);
    int rc = qs_db_wait_positions(g->db, min, qs_mono_ms() + left, &cf.flag);
    rpc_call_on_cancel(call, NULL, NULL);
    if (rc == ES_OK)
        return true;
    uint64_t now[QS_NSOURCES];
    qs_db_positions_now(g->db, now);
    rpc_call_fail(call, GRPC_STATUS_DEADLINE_EXCEEDED,
                  "read model not at min_positions within the deadline "
                  "(agents %llu of %llu, memory %llu of %llu)",
                  (unsigned long long)now[QS_AGENTS],
                  (unsigned long long)min[QS_AGENTS],
                  (unsigned long long)now[QS_MEMORY],
                  (unsigned long long)min[QS_MEMORY]);
    return false;
}

static bool begin(qs_grpc *g, rpc_call *call, es_txn **txn,
                  uint64_t pos[QS_NSOURCES])
{
    int rc = es_txn_begin(qs_db_store(g->db), txn);
    if (rc) {
        fail_es(call, rc, "cannot read the read models");
        return false;
    }
    qs_db_positions(*txn, pos);
    return true;
}

/* Answers with resp, then frees it. */
static void finish(rpc_call *call, ProtobufCMessage *resp)
{
    rpc_call_reply(call, resp);
    protobuf_c_message_free_unpacked(resp, NULL);
}

static void *new_msg(const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *m = malloc(d->sizeof_message);
    if (m)
        protobuf_c_message_init(d, m);
    return m;
}

#define POSITIONS(resp, entry_desc)                                          \
    qs_positions_map(&entry_desc, pos, (void ***)&(resp)->positions,         \
                     &(resp)->n_positions)

/* One read in one snapshot: fills resp, a new message of the RPC's response
 * type; may write a message for the client into msg. ES_NOT_FOUND answers
 * NOT_FOUND. */
typedef int (*read_fn)(es_txn *txn, const void *req, void *resp, char *msg,
                       size_t msg_len);

/* A read RPC: its response type, the response's positions map and where
 * it lives in the message, and the read. */
typedef struct read_spec {
    const ProtobufCMessageDescriptor *resp;
    const ProtobufCMessageDescriptor *pos_entry;
    size_t positions_off, n_positions_off;
    read_fn fn;
} read_spec;

#define READ_SPEC(type, lower, fn)                                                {&lower##__descriptor, &lower##__positions_entry__descriptor,                  offsetof(type, positions), offsetof(type, n_positions), fn}

/* Waits for min_positions, reads in one read transaction and answers with
 * the positions of that snapshot. */
static void serve(qs_grpc *g, rpc_call *call, const void *req,
                  void *const *min, size_t n_min, const read_spec *s)
{
    es_txn *txn = NULL;
    uint64_t pos[QS_NSOURCES];
    char msg[256] = "";
    if (!wait_min(g, call, min, n_min) || !begin(g, call, &txn, pos))
        return;
    char *r = new_msg(s->resp);
    int rc = r ? s->fn(txn, req, r, msg, sizeof msg) : ES_NOMEM;
    if (!rc)
        rc = qs_positions_map(s->pos_entry, pos,
                              (void ***)(void *)(r + s->positions_off),
                              (size_t *)(void *)(r + s->n_positions_off));
    es_txn_end(txn);
    if (rc) {
        fail_es(call, rc, msg);
        if (r)
            protobuf_c_message_free_unpacked((ProtobufCMessage *)r, NULL);
        return;
    }
    finish(call, (ProtobufCMessage *)r);
}

static int read_agents(es_txn *txn, const void *req, void *resp, char *msg,
                       size_t msg_len)
{
    return qs_agents_list(txn, req, resp, msg, msg_len);
}

static void list_agents(rpc_call *call, const ProtobufCMessage *request,
                        void *user)
{
    static const read_spec spec =
        READ_SPEC(Agentmesh__V1__ListAgentsResponse,
                  agentmesh__v1__list_agents_response, read_agents);
    const Agentmesh__V1__ListAgentsRequest *req = (const void *)request;
    serve(user, call, req, (void *const *)req->min_positions,
          req->n_min_positions, &spec);
}

static void get_agent(rpc_call *call, const ProtobufCMessage *request,
                      void *user)
{
    const Agentmesh__V1__QueryGetAgentRequest *req = (const void *)request;
    qs_grpc *g = user;
    es_txn *txn = NULL;
    uint64_t pos[QS_NSOURCES];
    Agentmesh__V1__Agent *a = NULL;
    if (!req->agent_id || !*req->agent_id) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "agent_id: required");
        return;
    }
    if (!wait_min(g, call, (void *const *)req->min_positions,
                  req->n_min_positions) ||
        !begin(g, call, &txn, pos))
        return;
    int rc = qs_agents_get(txn, req->agent_id, &a);
    es_txn_end(txn);
    if (rc == ES_NOT_FOUND) {
        rpc_call_fail(call, GRPC_STATUS_NOT_FOUND, "agent %s not found",
                      req->agent_id);
        return;
    }
    if (rc) {
        fail_es(call, rc, NULL);
        return;
    }
    finish(call, &a->base);
}

static int read_tasks(es_txn *txn, const void *req, void *resp, char *msg,
                      size_t msg_len)
{
    return qs_tasks_list(txn, req, resp, msg, msg_len);
}

static void list_tasks(rpc_call *call, const ProtobufCMessage *request,
                       void *user)
{
    static const read_spec spec =
        READ_SPEC(Agentmesh__V1__ListTasksResponse,
                  agentmesh__v1__list_tasks_response, read_tasks);
    const Agentmesh__V1__ListTasksRequest *req = (const void *)request;
    serve(user, call, req, (void *const *)req->min_positions,
          req->n_min_positions, &spec);
}

static int read_timeline(es_txn *txn, const void *req, void *resp, char *msg,
                         size_t msg_len)
{
    const char *id = ((const Agentmesh__V1__GetTaskTimelineRequest *)req)->task_id;
    int rc = qs_tasks_timeline(txn, id, resp);
    if (rc == ES_NOT_FOUND)
        snprintf(msg, msg_len, "task %s not found", id);
    return rc;
}

static void get_timeline(rpc_call *call, const ProtobufCMessage *request,
                         void *user)
{
    static const read_spec spec =
        READ_SPEC(Agentmesh__V1__GetTaskTimelineResponse,
                  agentmesh__v1__get_task_timeline_response, read_timeline);
    const Agentmesh__V1__GetTaskTimelineRequest *req = (const void *)request;
    if (!req->task_id || !*req->task_id) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "task_id: required");
        return;
    }
    serve(user, call, req, (void *const *)req->min_positions,
          req->n_min_positions, &spec);
}

static int read_stats(es_txn *txn, const void *req, void *resp, char *msg,
                      size_t msg_len)
{
    (void)req;
    (void)msg;
    (void)msg_len;
    return qs_stats_get(txn, resp);
}

static void get_stats(rpc_call *call, const ProtobufCMessage *request,
                      void *user)
{
    static const read_spec spec =
        READ_SPEC(Agentmesh__V1__GetStatsResponse,
                  agentmesh__v1__get_stats_response, read_stats);
    const Agentmesh__V1__GetStatsRequest *req = (const void *)request;
    serve(user, call, req, (void *const *)req->min_positions,
          req->n_min_positions, &spec);
}

static int read_memory(es_txn *txn, const void *req, void *resp, char *msg,
                       size_t msg_len)
{
    return qs_memory_search(txn, req, resp, msg, msg_len);
}

static void search_memory(rpc_call *call, const ProtobufCMessage *request,
                          void *user)
{
    static const read_spec spec =
        READ_SPEC(Agentmesh__V1__SearchMemoryResponse,
                  agentmesh__v1__search_memory_response, read_memory);
    const Agentmesh__V1__SearchMemoryRequest *req = (const void *)request;
    serve(user, call, req, (void *const *)req->min_positions,
          req->n_min_positions, &spec);
}

/* The feed filter of a request; false (call answered) when invalid. */
static bool feed_filter(rpc_call *call, const char *source, const char *prefix,
                        char *const *types, size_t n_types, qs_feed_filter *f)
{
    memset(f, 0, sizeof *f);
    f->source = -1;
    if (source && *source &&
        (f->source = qs_source_parse(source, strlen(source))) < 0) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT,
                      "source: \"agents\", \"memory\" or empty for both");
        return false;
    }
    if (n_types > ES_FILTER_TYPES_MAX) {
        rpc_call_fail(call, GRPC_STATUS_INVALID_ARGUMENT, "types: at most %d",
                      ES_FILTER_TYPES_MAX);
        return false;
    }
    f->stream_prefix = prefix;
    f->types = types;
    f->n_types = n_types;
    return true;
}

static void list_events(rpc_call *call, const ProtobufCMessage *request,
                        void *user)
{
    const Agentmesh__V1__ListEventsRequest *req = (const void *)request;
    qs_grpc *g = user;
    es_txn *txn = NULL;
    uint64_t pos[QS_NSOURCES], cursor = 0;
    qs_feed_filter f;
    if (!feed_filter(call, req->source, req->stream_prefix, req->types,
                     req->n_types, &f) ||
        !begin(g, call, &txn, pos))
        return;
    Agentmesh__V1__ListEventsResponse *r =
        new_msg(&agentmesh__v1__list_events_response__descriptor);
    int rc = r ? qs_feed_list(txn, &f, req->after_position,
                              qs_page_size(req->limit), &r->events,
                              &r->n_events, &cursor)
               : ES_NOMEM;
    if (!rc)
        rc = POSITIONS(r, agentmesh__v1__list_events_response__positions_entry__descriptor);
    if (!rc)
        rc = qs_map_add(&agentmesh__v1__list_events_response__positions_entry__descriptor,
                        (void ***)&r->positions, &r->n_positions, "cursor",
                        cursor);
    es_txn_end(txn);
    if (rc) {
        fail_es(call, rc, NULL);
        if (r)
            protobuf_c_message_free_unpacked(&r->base, NULL);
        return;
    }
    finish(call, &r->base);
}

static void subscribe_events(rpc_call *call, const ProtobufCMessage *request,
                             void *user)
{
    const Agentmesh__V1__SubscribeEventsRequest *req = (const void *)request;
    qs_grpc *g = user;
    qs_feed_filter f;
    uint64_t cursor = req->after_position;
    if (!feed_filter(call, req->source, req->stream_prefix, req->types,
                     req->n_types, &f))
        return;
    cancel_flag cf = {0, g->db};
    rpc_call_on_cancel(call, on_cancel, &cf);
    while (!atomic_load(&cf.flag) && !rpc_call_cancelled(call)) {
        uint64_t gen = qs_db_generation(g->db);
        es_txn *txn = NULL;
        Agentmesh__V1__Event **evs = NULL;
        size_t n = 0;
        uint64_t next = cursor;
        int rc = es_txn_begin(qs_db_store(g->db), &txn);
        if (!rc)
            rc = qs_feed_list(txn, &f, cursor, STREAM_PAGE, &evs, &n, &next);
        es_txn_end(txn);
        if (rc) {
            fail_es(call, rc, NULL);
            break;
        }
        bool ok = true;
        for (size_t i = 0; ok && i < n; i++)
            ok = rpc_call_send(call, &evs[i]->base) == RPC_OK;
        qs_free_events(evs, n);
        if (!ok)
            break;
        if (next == cursor)
            qs_db_wait_news(g->db, gen, STREAM_IDLE_MS);
        cursor = next;
    }
    rpc_call_on_cancel(call, NULL, NULL);
}

int qs_grpc_register(rpc_server *srv, qs_db *db, qs_grpc **out)
{
    qs_grpc *g = calloc(1, sizeof *g);
    int rc = RPC_ERR_NOMEM;
    if (!g)
        return rc;
    g->db = db;
#define M(name, kind, req, rep, fn)                                           \
    {"/agentmesh.v1.Query/" name, kind, &req, &rep, fn, g, NULL}
    const rpc_method_desc methods[] = {
        M("ListAgents", RPC_METHOD_UNARY,
          agentmesh__v1__list_agents_request__descriptor,
          agentmesh__v1__list_agents_response__descriptor, list_agents),
        M("GetAgent", RPC_METHOD_UNARY,
          agentmesh__v1__query_get_agent_request__descriptor,
          agentmesh__v1__agent__descriptor, get_agent),
        M("ListTasks", RPC_METHOD_UNARY,
          agentmesh__v1__list_tasks_request__descriptor,
          agentmesh__v1__list_tasks_response__descriptor, list_tasks),
        M("GetTaskTimeline", RPC_METHOD_UNARY,
          agentmesh__v1__get_task_timeline_request__descriptor,
          agentmesh__v1__get_task_timeline_response__descriptor, get_timeline),
        M("GetStats", RPC_METHOD_UNARY,
          agentmesh__v1__get_stats_request__descriptor,
          agentmesh__v1__get_stats_response__descriptor, get_stats),
        M("SearchMemory", RPC_METHOD_UNARY,
          agentmesh__v1__search_memory_request__descriptor,
          agentmesh__v1__search_memory_response__descriptor, search_memory),
        M("ListEvents", RPC_METHOD_UNARY,
          agentmesh__v1__list_events_request__descriptor,
          agentmesh__v1__list_events_response__descriptor, list_events),
        M("SubscribeEvents", RPC_METHOD_SERVER_STREAM,
          agentmesh__v1__subscribe_events_request__descriptor,
          agentmesh__v1__event__descriptor, subscribe_events),
    };
#undef M
    for (size_t i = 0; i < sizeof methods / sizeof methods[0]; i++)
        if ((rc = rpc_server_register(srv, &methods[i]))) {
            free(g);
            return rc;
        }
    rpc_health_set(srv, "agentmesh.v1.Query", RPC_HEALTH_SERVING);
    *out = g;
    return RPC_OK;
}

void qs_grpc_destroy(qs_grpc *g)
{
    free(g);
}
