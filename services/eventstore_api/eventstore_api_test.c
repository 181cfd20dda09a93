/* Unit test of the EventStore API's event conversion: every field of a
 * stored event reaches agentmesh.v1.Event, the payload of a known type is
 * also written as proto3 JSON, an unknown type or undecodable payload gets an
 * empty data_json, and UUID text is canonical. */
#include <stdio.h>
#include <string.h>

#include "agentmesh/v1/events.pb-c.h"
#include "services/eventstore_api/eventstore_api.h"

static int failures;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
            failures++;                                                        \
        }                                                                      \
    } while (0)

static void set(const char **p, size_t *n, const char *s)
{
    *p = s;
    *n = strlen(s);
}

int main(void)
{
    Agentmesh__V1__TaskCompleted tc = AGENTMESH__V1__TASK_COMPLETED__INIT;
    uint8_t data[128];
    es_event ev;
    Agentmesh__V1__Event *out = NULL;
    char uuid[37];

    tc.task_id = "t-1";
    tc.agent_id = "a-1";
    tc.output = "done";
    memset(&ev, 0, sizeof ev);
    for (int i = 0; i < 16; i++)
        ev.id[i] = (uint8_t)(0xa0 + i);
    ev.position = 42;
    ev.stream_version = 3;
    ev.time_unix_nano = 1700000000123456789LL;
    set(&ev.stream, &ev.stream_len, "task-t-1");
    set(&ev.type, &ev.type_len, "agentmesh.v1.TaskCompleted");
    set(&ev.content_type, &ev.content_type_len, "application/x-protobuf");
    set(&ev.correlation_id, &ev.correlation_id_len, "corr");
    set(&ev.causation_id, &ev.causation_id_len, "cause");
    set(&ev.traceparent, &ev.traceparent_len,
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    set(&ev.actor, &ev.actor_len, "alice");
    ev.data_len = agentmesh__v1__task_completed__pack(&tc, data);
    ev.data = data;

    esapi_uuid_format(ev.id, uuid);
    CHECK(strcmp(uuid, "a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeaf") == 0);

    CHECK(esapi_event_to_proto(&ev, "agents", true, &out) == 0);
    if (out) {
        CHECK(strcmp(out->event_id, uuid) == 0);
        CHECK(strcmp(out->stream, "task-t-1") == 0);
        CHECK(out->stream_version == 3 && out->position == 42);
        CHECK(out->time_unix_nano == 1700000000123456789LL);
        CHECK(strcmp(out->type, "agentmesh.v1.TaskCompleted") == 0);
        CHECK(strcmp(out->content_type, "application/x-protobuf") == 0);
        CHECK(strcmp(out->source, "agents") == 0);
        CHECK(out->data.len == ev.data_len &&
              memcmp(out->data.data, data, ev.data_len) == 0);
        CHECK(strstr(out->data_json, "\"taskId\":\"t-1\"") != NULL);
        CHECK(strstr(out->data_json, "\"output\":\"done\"") != NULL);
        CHECK(strcmp(out->metadata->correlation_id, "corr") == 0);
        CHECK(strcmp(out->metadata->causation_id, "cause") == 0);
        CHECK(strcmp(out->metadata->actor, "alice") == 0);
        CHECK(strncmp(out->metadata->traceparent, "00-0af7", 7) == 0);
        protobuf_c_message_free_unpacked(&out->base, NULL);
        out = NULL;
    }

    /* Without JSON, with an unknown type, with bytes that do not parse. */
    CHECK(esapi_event_to_proto(&ev, NULL, false, &out) == 0);
    if (out) {
        CHECK(strcmp(out->data_json, "") == 0 && strcmp(out->source, "") == 0);
        protobuf_c_message_free_unpacked(&out->base, NULL);
        out = NULL;
    }
    set(&ev.type, &ev.type_len, "example.Unknown");
    CHECK(esapi_event_to_proto(&ev, "agents", true, &out) == 0);
    if (out) {
        CHECK(strcmp(out->data_json, "") == 0);
        protobuf_c_message_free_unpacked(&out->base, NULL);
        out = NULL;
    }
    static const uint8_t junk[] = {0xff, 0xff, 0xff};
    set(&ev.type, &ev.type_len, "agentmesh.v1.TaskCompleted");
    ev.data = junk;
    ev.data_len = sizeof junk;
    CHECK(esapi_event_to_proto(&ev, "agents", true, &out) == 0);
    if (out) {
        CHECK(strcmp(out->data_json, "") == 0 && out->data.len == sizeof junk);
        protobuf_c_message_free_unpacked(&out->base, NULL);
    }
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("eventstore_api_test: all checks passed\n");
    return 0;
}
