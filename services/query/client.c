/* The catch-up client: unary EventStore.ReadAll calls to a source service
 * with the gRPC C core, each on a completion queue of its own plucked by
 * the calling (catch-up) thread, never on the runtime's queues. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include "agentmesh/v1/eventstore.pb-c.h"
#include "services/query/query.h"

#define METHOD "/agentmesh.v1.EventStore/ReadAll"
#define MAX_REPLY (64 << 20)
/* The events' data_json is never read here (the payload is decoded from its
 * bytes): asking the source to leave it out saves it a JSON encoding per
 * event (eventstore_api.h). */
#define OMIT_JSON_KEY "x-agentmesh-omit-data-json"

struct qs_client {
    grpc_channel *ch;
};

int qs_client_create(const char *target, qs_client **out)
{
    qs_client *c = calloc(1, sizeof *c);
    if (!c)
        return ES_NOMEM;
    grpc_arg args[1];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = MAX_REPLY;
    grpc_channel_args ca = {1, args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    c->ch = grpc_channel_create(target, creds, &ca);
    grpc_channel_credentials_release(creds);
    if (!c->ch) {
        free(c);
        return ES_NOMEM;
    }
    *out = c;
    return ES_OK;
}

void qs_client_destroy(qs_client *c)
{
    if (!c)
        return;
    grpc_channel_destroy(c->ch);
    free(c);
}

static void *tag(intptr_t t)
{
    return (void *)t;
}

/* One unary call: request bytes in, reply bytes out (*reply malloc'd). */
static int unary(qs_client *c, const uint8_t *req, size_t req_len,
                 int64_t timeout_ms, uint8_t **reply, size_t *reply_len,
                 char *msg, size_t msglen)
{
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    gpr_timespec deadline = gpr_time_add(
        gpr_now(GPR_CLOCK_MONOTONIC),
        gpr_time_from_millis(timeout_ms, GPR_TIMESPAN));
    grpc_slice method = grpc_slice_from_static_string(METHOD);
    grpc_call *call = grpc_channel_create_call(
        c->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL, deadline, NULL);
    grpc_slice s = grpc_slice_from_copied_buffer((const char *)req, req_len);
    grpc_byte_buffer *send = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_byte_buffer *recv = NULL;
    grpc_metadata_array init_md, trail_md;
    grpc_metadata_array_init(&init_md);
    grpc_metadata_array_init(&trail_md);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_metadata omit;
    memset(&omit, 0, sizeof omit);
    omit.key = grpc_slice_from_static_string(OMIT_JSON_KEY);
    omit.value = grpc_slice_from_static_string("1");
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = 1;
    ops[0].data.send_initial_metadata.metadata = &omit;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &init_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trail_md;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;
    int rc = ES_CLOSED;
    if (grpc_call_start_batch(call, ops, 6, tag(1), NULL) == GRPC_CALL_OK) {
        grpc_event ev = grpc_completion_queue_pluck(
            cq, tag(1), gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_OP_COMPLETE && status == GRPC_STATUS_OK && recv) {
            grpc_byte_buffer_reader rd;
            if (grpc_byte_buffer_reader_init(&rd, recv)) {
                grpc_slice all = grpc_byte_buffer_reader_readall(&rd);
                size_t n = GRPC_SLICE_LENGTH(all);
                if ((*reply = malloc(n ? n : 1))) {
                    memcpy(*reply, GRPC_SLICE_START_PTR(all), n);
                    *reply_len = n;
                    rc = ES_OK;
                } else {
                    rc = ES_NOMEM;
                }
                grpc_slice_unref(all);
                grpc_byte_buffer_reader_destroy(&rd);
            }
        } else {
            char *d = grpc_slice_to_c_string(details);
            snprintf(msg, msglen, "ReadAll: status %d: %s", (int)status, d);
            gpr_free(d);
        }
    }
    grpc_byte_buffer_destroy(send);
    if (recv)
        grpc_byte_buffer_destroy(recv);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&init_md);
    grpc_metadata_array_destroy(&trail_md);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL,
                                       gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
               .type != GRPC_QUEUE_SHUTDOWN)
        ;
    grpc_completion_queue_destroy(cq);
    return rc;
}

int qs_client_read_all(qs_client *c, int source, uint64_t from, unsigned limit,
                       int64_t timeout_ms, qs_arena *ar, qs_event ***events,
                       size_t *n, bool *end, uint64_t *next, char *msg,
                       size_t msglen)
{
    Agentmesh__V1__ReadAllRequest req = AGENTMESH__V1__READ_ALL_REQUEST__INIT;
    uint8_t *rb = NULL, *reply = NULL;
    size_t rl = 0, reply_len = 0;
    qs_event **v = NULL;
    size_t nv = 0;
    req.from_position = from;
    req.limit = limit;
    int rc = qs_pack(&req.base, &rb, &rl);
    if (rc)
        return rc;
    rc = unary(c, rb, rl, timeout_ms, &reply, &reply_len, msg, msglen);
    free(rb);
    if (rc)
        return rc;
    /* The unpacked reply (a dozen small allocations per event) comes from
     * an arena of its own, released at once below; the events from ar, or
     * from malloc when ar is NULL. */
    qs_arena *tmp = qs_arena_new();
    if (!tmp) {
        free(reply);
        return ES_NOMEM;
    }
    ProtobufCAllocator alloc = qs_arena_allocator(tmp);
    Agentmesh__V1__ReadAllResponse *r =
        agentmesh__v1__read_all_response__unpack(&alloc, reply_len, reply);
    free(reply);
    if (!r) {
        qs_arena_free(tmp);
        snprintf(msg, msglen, "ReadAll: reply does not parse (or no memory)");
        return ES_CLOSED;
    }
    if (r->n_events && !(v = calloc(r->n_events, sizeof *v)))
        rc = ES_NOMEM;
    for (size_t i = 0; !rc && i < r->n_events; i++) {
        if ((rc = qs_event_from_proto(source, r->events[i], ar, &v[nv])) ==
            ES_INVALID) {
            snprintf(msg, msglen, "event at position %llu: bad payload",
                     (unsigned long long)r->events[i]->position);
            rc = ES_CORRUPT;
        }
        if (!rc)
            nv++;
    }
    if (!rc) {
        *events = v;
        *n = nv;
        *end = r->end_of_stream;
        *next = r->next_position;
        v = NULL;
        nv = 0;
    }
    for (size_t i = 0; i < nv; i++)
        qs_event_free(v[i]);
    free(v);
    qs_arena_free(tmp);
    return rc;
}
