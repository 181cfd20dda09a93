/*
 * api_test checks the API contract at its two ends: every request and reply
 * type of every agentmesh.v1 service packs and unpacks losslessly when every
 * field is populated, and the descriptor set names every service, method and
 * event payload of DESIGN §4 with a google.api.http rule on each public RPC.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentmesh/v1/agents.pb-c.h"
#include "agentmesh/v1/eventstore.pb-c.h"
#include "agentmesh/v1/events.pb-c.h"
#include "agentmesh/v1/memory.pb-c.h"
#include "agentmesh/v1/query.pb-c.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "api/tests/populate.h"

#define HTTP_RULE_TAG 72295728u

static int failures;

#define CHECK(cond, ...)                                                      \
    do {                                                                      \
        if (!(cond)) {                                                        \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);               \
            fprintf(stderr, __VA_ARGS__);                                     \
            fputc('\n', stderr);                                              \
            failures++;                                                       \
        }                                                                     \
    } while (0)

/* Packs a populated message, unpacks it and packs again: the bytes must be
 * identical and must differ from an empty message's. */
static void roundtrip(const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *m = populate_message(d);
    size_t n1 = protobuf_c_message_get_packed_size(m);
    uint8_t *b1 = malloc(n1 + 1);
    CHECK(protobuf_c_message_pack(m, b1) == n1, "%s: pack size", d->name);
    ProtobufCMessage *u = protobuf_c_message_unpack(d, NULL, n1, b1);
    CHECK(u != NULL, "%s: unpack failed", d->name);
    if (u != NULL) {
        size_t n2 = protobuf_c_message_get_packed_size(u);
        uint8_t *b2 = malloc(n2 + 1);
        protobuf_c_message_pack(u, b2);
        CHECK(n1 == n2 && memcmp(b1, b2, n1) == 0, "%s: repack differs", d->name);
        CHECK(d->n_fields == 0 || n1 > 0, "%s: populated message packs empty", d->name);
        free(b2);
        protobuf_c_message_free_unpacked(u, NULL);
    }
    /* A truncated copy must be refused or decoded without crashing. */
    if (n1 > 1) {
        ProtobufCMessage *t = protobuf_c_message_unpack(d, NULL, n1 - 1, b1);
        if (t != NULL)
            protobuf_c_message_free_unpacked(t, NULL);
    }
    free(b1);
    protobuf_c_message_free_unpacked(m, NULL);
}

static int roundtrip_service(const ProtobufCServiceDescriptor *s)
{
    for (unsigned i = 0; i < s->n_methods; i++) {
        roundtrip(s->methods[i].input);
        roundtrip(s->methods[i].output);
    }
    return (int)s->n_methods * 2;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf = NULL;
    long n;
    if (f == NULL)
        return NULL;
    if (fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0)
        goto out;
    buf = malloc(n ? (size_t)n : 1);
    if (buf == NULL)
        goto out;
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
        goto out;
    }
    *len = (size_t)n;
out:
    fclose(f);
    return buf;
}

static const Google__Protobuf__ServiceDescriptorProto *
find_service(const Google__Protobuf__FileDescriptorSet *set, const char *name)
{
    for (size_t i = 0; i < set->n_file; i++) {
        const Google__Protobuf__FileDescriptorProto *f = set->file[i];
        if (f->package == NULL || strcmp(f->package, "agentmesh.v1") != 0)
            continue;
        for (size_t j = 0; j < f->n_service; j++)
            if (strcmp(f->service[j]->name, name) == 0)
                return f->service[j];
    }
    return NULL;
}

static int has_message(const Google__Protobuf__FileDescriptorSet *set, const char *name)
{
    for (size_t i = 0; i < set->n_file; i++) {
        const Google__Protobuf__FileDescriptorProto *f = set->file[i];
        if (f->package == NULL || strcmp(f->package, "agentmesh.v1") != 0)
            continue;
        for (size_t j = 0; j < f->n_message_type; j++)
            if (strcmp(f->message_type[j]->name, name) == 0)
                return 1;
    }
    return 0;
}

static int has_http_rule(const Google__Protobuf__MethodDescriptorProto *m)
{
    if (m->options == NULL)
        return 0;
    const ProtobufCMessage *opts = &m->options->base;
    for (unsigned i = 0; i < opts->n_unknown_fields; i++)
        if (opts->unknown_fields[i].tag == HTTP_RULE_TAG)
            return 1;
    return 0;
}

struct service_names {
    const char *service;
    int public_http; /* 1: every method needs a google.api.http rule */
    const char *methods[16];
};

/* The names DESIGN §4 promises; clients in other languages rely on them. */
static const struct service_names contract[] = {
    {"AgentManager", 1,
     {"RegisterAgent", "GetAgent", "UpdateAgent", "DeregisterAgent", "Heartbeat", "SubmitTask",
      "GetTask", "StartTask", "ReportProgress", "CompleteTask", "FailTask", "CancelTask",
      "RetryTask", "WatchTask", NULL}},
    {"MemorySync", 1,
     {"PutMemory", "GetMemory", "DeleteMemory", "ListMemory", "SyncMemory", "WatchMemory",
      "ForgetNamespace", NULL}},
    {"Query", 1,
     {"ListAgents", "GetAgent", "ListTasks", "GetTaskTimeline", "GetStats", "SearchMemory",
      "ListEvents", "SubscribeEvents", NULL}},
    {"EventStore", 0, {"ReadStream", "ReadAll", "SubscribeAll", NULL}},
};

static const char *const event_types[] = {
    "AgentRegistered", "AgentUpdated", "AgentDeregistered", "AgentWentOnline",
    "AgentWentOffline", "TaskSubmitted", "TaskAssigned", "TaskStarted",
    "TaskProgressed", "TaskCompleted", "TaskFailed", "TaskCancelled",
    "TaskRetried", "MemoryWritten", "MemoryDeleted", "MemoryConflictResolved",
    "NamespaceForgotten",
};

static const char *const entity_messages[] = {
    "Agent", "Task", "MemoryEntry", "Event", "EventMetadata", "TaskUpdate",
    "MemoryConflict", "MemoryChange", "HeartbeatResponse", "ForgetResponse",
};

static void check_descriptor_set(const char *path)
{
    size_t len = 0;
    uint8_t *buf = read_file(path, &len);
    CHECK(buf != NULL, "cannot read descriptor set %s", path);
    if (buf == NULL)
        return;
    Google__Protobuf__FileDescriptorSet *set =
        google__protobuf__file_descriptor_set__unpack(NULL, len, buf);
    CHECK(set != NULL, "descriptor set does not unpack");
    if (set == NULL)
        goto out;
    for (size_t i = 0; i < sizeof(contract) / sizeof(contract[0]); i++) {
        const Google__Protobuf__ServiceDescriptorProto *s = find_service(set, contract[i].service);
        CHECK(s != NULL, "service agentmesh.v1.%s missing", contract[i].service);
        if (s == NULL)
            continue;
        size_t want = 0;
        for (const char *const *m = contract[i].methods; *m; m++, want++) {
            const Google__Protobuf__MethodDescriptorProto *found = NULL;
            for (size_t j = 0; j < s->n_method; j++)
                if (strcmp(s->method[j]->name, *m) == 0)
                    found = s->method[j];
            CHECK(found != NULL, "%s.%s missing", contract[i].service, *m);
            if (found != NULL && contract[i].public_http)
                CHECK(has_http_rule(found), "%s.%s has no google.api.http rule",
                      contract[i].service, *m);
            if (found != NULL && !contract[i].public_http)
                CHECK(!has_http_rule(found), "%s.%s is internal but has a REST route",
                      contract[i].service, *m);
        }
        CHECK(s->n_method == want, "%s has %zu methods, the contract names %zu",
              contract[i].service, s->n_method, want);
    }
    for (size_t i = 0; i < sizeof(event_types) / sizeof(event_types[0]); i++)
        CHECK(has_message(set, event_types[i]), "event payload %s missing", event_types[i]);
    for (size_t i = 0; i < sizeof(entity_messages) / sizeof(entity_messages[0]); i++)
        CHECK(has_message(set, entity_messages[i]), "message %s missing", entity_messages[i]);
    google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
out:
    free(buf);
}

int main(int argc, char **argv)
{
    const char *desc = argc > 1 ? argv[1] : "api/agentmesh_c.desc";
    int n = 0;

    n += roundtrip_service(&agentmesh__v1__agent_manager__descriptor);
    n += roundtrip_service(&agentmesh__v1__memory_sync__descriptor);
    n += roundtrip_service(&agentmesh__v1__query__descriptor);
    n += roundtrip_service(&agentmesh__v1__event_store__descriptor);
    /* Event payloads are stored in the log and published: they round-trip too. */
    const ProtobufCMessageDescriptor *payloads[] = {
        &agentmesh__v1__agent_registered__descriptor,
        &agentmesh__v1__agent_updated__descriptor,
        &agentmesh__v1__agent_deregistered__descriptor,
        &agentmesh__v1__agent_went_online__descriptor,
        &agentmesh__v1__agent_went_offline__descriptor,
        &agentmesh__v1__task_submitted__descriptor,
        &agentmesh__v1__task_assigned__descriptor,
        &agentmesh__v1__task_started__descriptor,
        &agentmesh__v1__task_progressed__descriptor,
        &agentmesh__v1__task_completed__descriptor,
        &agentmesh__v1__task_failed__descriptor,
        &agentmesh__v1__task_cancelled__descriptor,
        &agentmesh__v1__task_retried__descriptor,
        &agentmesh__v1__memory_written__descriptor,
        &agentmesh__v1__memory_deleted__descriptor,
        &agentmesh__v1__memory_conflict_resolved__descriptor,
        &agentmesh__v1__namespace_forgotten__descriptor,
    };
    for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++, n++)
        roundtrip(payloads[i]);
    check_descriptor_set(desc);

    printf("api_test: %d message types round-tripped, %d failure(s)\n", n, failures);
    return failures ? 1 : 0;
}
