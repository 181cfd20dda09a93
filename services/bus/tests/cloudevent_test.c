/*
 * cloudevent_test: the CloudEvents body and NATS subject of stored events,
 * table-driven: subjects and their sanitising, UUID text, traceparent
 * validation, the envelope's fields, and refusals (unknown type, bad
 * payload, a hook's refusal).
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "agentmesh/v1/events.pb-c.h"
#include "services/bus/bus.h"

static int failures, checks;

#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        checks++;                                                               \
        if (!(cond)) {                                                          \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                 \
            fprintf(stderr, __VA_ARGS__);                                       \
            fputc('\n', stderr);                                                \
            failures++;                                                         \
        }                                                                       \
    } while (0)

static es_event make_event(const char *stream, const char *type, const void *data, size_t len)
{
    es_event ev;
    memset(&ev, 0, sizeof(ev));
    for (int i = 0; i < ES_ID_SIZE; i++)
        ev.id[i] = (uint8_t)(0xa0 + i);
    ev.position = 42;
    ev.stream_version = 7;
    ev.time_unix_nano = 1795316400123456789LL;
    ev.stream = stream;
    ev.stream_len = strlen(stream);
    ev.type = type;
    ev.type_len = strlen(type);
    ev.traceparent = "";
    ev.data = data;
    ev.data_len = len;
    return ev;
}

static int refuse(const es_event *ev, ProtobufCMessage *payload, void *arg)
{
    (void)ev;
    (void)payload;
    (void)arg;
    return 5;
}

static int clear_sealed(const es_event *ev, ProtobufCMessage *payload, void *arg)
{
    (void)ev;
    (void)arg;
    Agentmesh__V1__MemoryWritten *w = (Agentmesh__V1__MemoryWritten *)payload;
    w->sealed_value.len = 0;
    return 0;
}

int main(void)
{
    char buf[256], id[37];
    es_event ev = make_event("task-1", "agentmesh.v1.TaskCompleted", "", 0);

    struct {
        const char *stream, *type, *want;
    } subjects[] = {
        {"task-1", "agentmesh.v1.TaskCompleted", "agentmesh.events.agents.task.TaskCompleted"},
        {"agent-x-y", "agentmesh.v1.AgentRegistered", "agentmesh.events.agents.agent.AgentRegistered"},
        {"memory-ns.a", "agentmesh.v1.MemoryWritten", "agentmesh.events.agents.memory.MemoryWritten"},
        {"odd.name*>", "Plain", "agentmesh.events.agents.odd_name__.Plain"},
    };
    for (size_t i = 0; i < sizeof(subjects) / sizeof(subjects[0]); i++) {
        es_event e = make_event(subjects[i].stream, subjects[i].type, "", 0);
        CHECK(bus_subject("agents", &e, buf, sizeof(buf)) == BUS_OK && strcmp(buf, subjects[i].want) == 0,
              "subject %zu: %s", i, buf);
    }
    CHECK(bus_subject("agents", &ev, buf, 20) == BUS_INVALID, "subject must not be truncated");

    bus_uuid_format(ev.id, id);
    CHECK(strcmp(id, "a0a1a2a3-a4a5-a6a7-a8a9-aaabacadaeaf") == 0, "uuid %s", id);

    CHECK(bus_traceparent_valid("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", 55), "valid tp");
    CHECK(!bus_traceparent_valid("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", 55), "upper hex");
    CHECK(!bus_traceparent_valid("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331", 52), "short");
    CHECK(!bus_traceparent_valid("00-0af7651916cd43dd8448eb211c80319c\"b7ad6b7169203331-01", 55), "quote");

    /* A full envelope. */
    Agentmesh__V1__TaskCompleted tc = AGENTMESH__V1__TASK_COMPLETED__INIT;
    uint8_t pb[128];
    tc.task_id = "1";
    tc.output = "done \"quoted\"";
    size_t n = agentmesh__v1__task_completed__pack(&tc, pb);
    ev = make_event("task-1", "agentmesh.v1.TaskCompleted", pb, n);
    ev.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    ev.traceparent_len = strlen(ev.traceparent);
    char *json = NULL, why[256];
    size_t len = 0;
    CHECK(bus_cloudevent_build("agents", &ev, NULL, NULL, &json, &len, why, sizeof(why)) == BUS_OK, "%s", why);
    json_error_t jerr;
    json_t *j = json ? json_loadb(json, len, 0, &jerr) : NULL;
    CHECK(j != NULL, "envelope is JSON: %s", json);
    if (j != NULL) {
        CHECK(strcmp(json_string_value(json_object_get(j, "specversion")), "1.0") == 0, "specversion");
        CHECK(strcmp(json_string_value(json_object_get(j, "id")), id) == 0, "id");
        CHECK(strcmp(json_string_value(json_object_get(j, "source")), "agentmesh/agents") == 0, "source");
        CHECK(strcmp(json_string_value(json_object_get(j, "type")), "agentmesh.v1.TaskCompleted") == 0, "type");
        CHECK(strcmp(json_string_value(json_object_get(j, "subject")), "task-1") == 0, "subject");
        CHECK(strcmp(json_string_value(json_object_get(j, "time")), "2026-11-22T03:00:00.123456789Z") == 0,
              "time %s", json_string_value(json_object_get(j, "time")));
        CHECK(strcmp(json_string_value(json_object_get(j, "sequence")), "42") == 0, "sequence");
        CHECK(strcmp(json_string_value(json_object_get(j, "streamversion")), "7") == 0, "streamversion");
        CHECK(strcmp(json_string_value(json_object_get(j, "traceparent")), ev.traceparent) == 0, "traceparent");
        json_t *data = json_object_get(j, "data");
        CHECK(strcmp(json_string_value(json_object_get(data, "output")), "done \"quoted\"") == 0, "data");
        json_decref(j);
    }
    free(json);

    /* No traceparent attribute when the stored value is not a W3C one. */
    ev.traceparent = "garbage";
    ev.traceparent_len = 7;
    json = NULL;
    CHECK(bus_cloudevent_build("agents", &ev, NULL, NULL, &json, &len, NULL, 0) == BUS_OK &&
              strstr(json, "traceparent") == NULL,
          "invalid traceparent dropped: %s", json);
    free(json);

    es_event unknown = make_event("task-1", "agentmesh.v1.Nope", "", 0);
    CHECK(bus_cloudevent_build("agents", &unknown, NULL, NULL, &json, &len, why, sizeof(why)) ==
                  BUS_UNKNOWN_TYPE && strstr(why, "agentmesh.v1.Nope"),
          "unknown type: %s", why);
    es_event bad = make_event("task-1", "agentmesh.v1.TaskCompleted", "\xff\xff\xff", 3);
    CHECK(bus_cloudevent_build("agents", &bad, NULL, NULL, &json, &len, why, sizeof(why)) == BUS_BAD_PAYLOAD,
          "bad payload: %s", why);
    CHECK(bus_cloudevent_build("agents", &ev, refuse, NULL, &json, &len, why, sizeof(why)) == BUS_BAD_PAYLOAD &&
              strstr(why, "hook"),
          "hook refusal: %s", why);

    /* The hook sees the decoded payload: sealed values stay out of JSON. */
    Agentmesh__V1__MemoryWritten mw = AGENTMESH__V1__MEMORY_WRITTEN__INIT;
    mw.namespace_ = "ns";
    mw.key = "k";
    mw.sealed_value.data = (uint8_t *)"SECRETSECRET";
    mw.sealed_value.len = 12;
    n = agentmesh__v1__memory_written__pack(&mw, pb);
    es_event mem = make_event("memory-ns", "agentmesh.v1.MemoryWritten", pb, n);
    json = NULL;
    CHECK(bus_cloudevent_build("memory", &mem, clear_sealed, NULL, &json, &len, why, sizeof(why)) == BUS_OK &&
              strstr(json, "sealedValue") == NULL && strstr(json, "\"namespace\":\"ns\""),
          "sealed value removed: %s", json);
    free(json);

    printf("cloudevent_test: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
