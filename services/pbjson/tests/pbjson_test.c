/*
 * pbjson_test: the proto3 JSON mapping, table-driven. Known messages must
 * give known JSON; JSON in every accepted form must give the same message;
 * every malformed input must be refused with a message naming the field; and
 * every request, reply and event payload of the API must survive
 * message -> JSON -> message unchanged.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentmesh/v1/agents.pb-c.h"
#include "agentmesh/v1/eventstore.pb-c.h"
#include "agentmesh/v1/events.pb-c.h"
#include "agentmesh/v1/memory.pb-c.h"
#include "agentmesh/v1/query.pb-c.h"
#include "api/tests/populate.h"
#include "google/rpc/error_details.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "services/pbjson/internal.h"
#include "services/pbjson/pbjson.h"
#include "services/pbjson/registry.h"

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

static const pbjson_options resolving = {0, 0, 0, pbjson_registry_resolve, NULL};

static char *encode(const ProtobufCMessage *m, unsigned flags)
{
    pbjson_options o = resolving;
    char *out = NULL;
    o.flags = flags;
    int rc = pbjson_encode(m, &o, &out, NULL);
    CHECK(rc == PBJSON_OK, "encode %s: %s", m->descriptor->name, pbjson_strerror(rc));
    return out;
}

static ProtobufCMessage *decode(const ProtobufCMessageDescriptor *d, const char *json)
{
    ProtobufCMessage *m = NULL;
    char err[256];
    int rc = pbjson_decode(d, json, strlen(json), &resolving, &m, err, sizeof(err));
    CHECK(rc == PBJSON_OK, "decode %s from %s: %s", d->name, json, err);
    return m;
}

static void test_encode_known(void)
{
    Agentmesh__V1__Task t = AGENTMESH__V1__TASK__INIT;
    char *caps[] = {"gpu", "summarize"};
    t.task_id = "t-1";
    t.n_required_capabilities = 2;
    t.required_capabilities = caps;
    t.input = "{\"q\":\"a\\b\"}\n\x01";
    t.state = AGENTMESH__V1__TASK_STATE__TASK_STATE_RUNNING;
    t.priority = -3;
    t.version = 18446744073709551615ULL;
    t.submitted_at_unix_nano = -5;
    char *j = encode(&t.base, 0);
    const char *want = "{\"taskId\":\"t-1\",\"requiredCapabilities\":[\"gpu\",\"summarize\"],"
                       "\"input\":\"{\\\"q\\\":\\\"a\\\\b\\\"}\\n\\u0001\",\"priority\":-3,"
                       "\"state\":\"TASK_STATE_RUNNING\",\"version\":\"18446744073709551615\","
                       "\"submittedAtUnixNano\":\"-5\"}";
    CHECK(j && strcmp(j, want) == 0, "task json\n got %s\nwant %s", j, want);
    free(j);

    j = encode(&t.base, PBJSON_ORIGINAL_NAMES);
    CHECK(j && strstr(j, "\"task_id\":\"t-1\"") && strstr(j, "\"submitted_at_unix_nano\":\"-5\""),
          "original names: %s", j);
    free(j);

    Agentmesh__V1__Task empty = AGENTMESH__V1__TASK__INIT;
    j = encode(&empty.base, 0);
    CHECK(j && strcmp(j, "{}") == 0, "empty task: %s", j);
    free(j);
    j = encode(&empty.base, PBJSON_EMIT_DEFAULTS);
    CHECK(j && strstr(j, "\"state\":\"TASK_STATE_UNSPECIFIED\"") && strstr(j, "\"attempt\":0") &&
              strstr(j, "\"labels\"") == NULL && strstr(j, "\"requiredCapabilities\":[]"),
          "emit defaults: %s", j);
    free(j);

    /* Maps are objects; bytes are base64; oneof members are written even
     * when they hold the default value. */
    Agentmesh__V1__Agent a = AGENTMESH__V1__AGENT__INIT;
    Agentmesh__V1__Agent__LabelsEntry e1 = AGENTMESH__V1__AGENT__LABELS_ENTRY__INIT;
    Agentmesh__V1__Agent__LabelsEntry *labels[] = {&e1};
    e1.key = "zone";
    e1.value = "eu-1";
    a.n_labels = 1;
    a.labels = labels;
    j = encode(&a.base, 0);
    CHECK(j && strcmp(j, "{\"labels\":{\"zone\":\"eu-1\"}}") == 0, "map: %s", j);
    free(j);

    Agentmesh__V1__PutMemoryRequest p = AGENTMESH__V1__PUT_MEMORY_REQUEST__INIT;
    uint8_t raw[] = {0xfb, 0xff, 0x00, 'a'};
    p.value.data = raw;
    p.value.len = sizeof(raw);
    p.expected_case = AGENTMESH__V1__PUT_MEMORY_REQUEST__EXPECTED_EXPECTED_VERSION;
    p.expected_version = 0;
    j = encode(&p.base, 0);
    CHECK(j && strcmp(j, "{\"value\":\"+/8AYQ==\",\"expectedVersion\":\"0\"}") == 0, "bytes/oneof: %s", j);
    free(j);

    Agentmesh__V1__GetStatsResponse s = AGENTMESH__V1__GET_STATS_RESPONSE__INIT;
    s.submit_to_complete_p50_ms = 0.1;
    s.submit_to_complete_p90_ms = NAN;
    s.submit_to_complete_p99_ms = -INFINITY;
    s.events_per_second = 1e300;
    j = encode(&s.base, 0);
    CHECK(j && strstr(j, "\"submitToCompleteP50Ms\":0.1,") && strstr(j, "\"submitToCompleteP90Ms\":\"NaN\"") &&
              strstr(j, "\"submitToCompleteP99Ms\":\"-Infinity\"") && strstr(j, "\"eventsPerSecond\":1e+300"),
          "doubles: %s", j);
    free(j);
}

static void test_any_and_duration(void)
{
    Google__Rpc__RetryInfo ri = GOOGLE__RPC__RETRY_INFO__INIT;
    Google__Protobuf__Duration d = GOOGLE__PROTOBUF__DURATION__INIT;
    d.seconds = 1;
    d.nanos = 500000000;
    ri.retry_delay = &d;
    uint8_t buf[64];
    size_t n = google__rpc__retry_info__pack(&ri, buf);
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    Google__Protobuf__Any *details[] = {&any};
    any.type_url = "type.googleapis.com/google.rpc.RetryInfo";
    any.value.data = buf;
    any.value.len = n;
    Google__Rpc__Status st = GOOGLE__RPC__STATUS__INIT;
    st.code = 8;
    st.message = "slow down";
    st.n_details = 1;
    st.details = details;
    char *j = encode(&st.base, 0);
    const char *want = "{\"code\":8,\"message\":\"slow down\",\"details\":[{\"@type\":"
                       "\"type.googleapis.com/google.rpc.RetryInfo\",\"retryDelay\":\"1.500s\"}]}";
    CHECK(j && strcmp(j, want) == 0, "status\n got %s\nwant %s", j, want);

    Google__Rpc__Status *back = (Google__Rpc__Status *)decode(&google__rpc__status__descriptor, want);
    CHECK(back && back->n_details == 1 && back->details[0]->value.len == n &&
              memcmp(back->details[0]->value.data, buf, n) == 0,
          "Any did not round-trip");
    if (back)
        protobuf_c_message_free_unpacked(&back->base, NULL);
    free(j);

    /* Without a resolver an Any cannot be written. */
    char *out = NULL;
    CHECK(pbjson_encode(&st.base, NULL, &out, NULL) == PBJSON_UNKNOWN_TYPE, "Any without resolver");

    int64_t s;
    int32_t ns;
    CHECK(pbjson_duration_parse("-0.000000001s", &s, &ns) == 0 && s == 0 && ns == -1, "tiny negative");
    CHECK(pbjson_duration_parse("1.5", &s, &ns) != 0, "duration without s");
    CHECK(pbjson_duration_parse("1.1234567891s", &s, &ns) != 0, "10 fraction digits");
    CHECK(pbjson_timestamp_parse("1970-01-01T00:00:00Z", &s, &ns) == 0 && s == 0, "epoch");
    CHECK(pbjson_timestamp_parse("2026-11-22T10:00:00.5+01:00", &s, &ns) == 0 && s == 1795338000 &&
              ns == 500000000,
          "offset: %lld", (long long)s);
    CHECK(pbjson_timestamp_parse("2023-02-29T00:00:00Z", &s, &ns) != 0, "not a leap year");
    CHECK(pbjson_timestamp_parse("2024-02-29T00:00:00", &s, &ns) != 0, "no zone");
    char tb[64];
    CHECK(pbjson_timestamp_format(1795338000, 5000, tb, sizeof(tb)) == 0 &&
              strcmp(tb, "2026-11-22T09:00:00.000005Z") == 0,
          "timestamp format: %s", tb);
}

static void test_decode_forms(void)
{
    const char *forms[] = {
        "{\"taskId\":\"x\",\"expectedVersion\":\"7\"}",
        "{\"task_id\":\"x\",\"expected_version\":7}",
        "{\"taskId\":\"x\",\"expectedVersion\":7.0,\"phase\":null}",
    };
    for (size_t i = 0; i < sizeof(forms) / sizeof(forms[0]); i++) {
        Agentmesh__V1__ReportProgressRequest *r = (Agentmesh__V1__ReportProgressRequest *)decode(
            &agentmesh__v1__report_progress_request__descriptor, forms[i]);
        CHECK(r && strcmp(r->task_id, "x") == 0 &&
                  r->expected_case == AGENTMESH__V1__REPORT_PROGRESS_REQUEST__EXPECTED_EXPECTED_VERSION &&
                  r->expected_version == 7,
              "form %zu", i);
        if (r)
            protobuf_c_message_free_unpacked(&r->base, NULL);
    }
    Agentmesh__V1__ListAgentsRequest *l = (Agentmesh__V1__ListAgentsRequest *)decode(
        &agentmesh__v1__list_agents_request__descriptor,
        "{\"status\":2,\"minPositions\":{\"agents\":\"12\",\"memory\":3}}");
    CHECK(l && l->status == AGENTMESH__V1__AGENT_STATUS__AGENT_STATUS_OFFLINE && l->n_min_positions == 2,
          "enum by number, map of uint64");
    if (l)
        protobuf_c_message_free_unpacked(&l->base, NULL);
    Agentmesh__V1__PutMemoryRequest *p = (Agentmesh__V1__PutMemoryRequest *)decode(
        &agentmesh__v1__put_memory_request__descriptor, "{\"value\":\"-_8AYQ\"}");
    CHECK(p && p->value.len == 4 && p->value.data[0] == 0xfb && p->value.data[3] == 'a',
          "URL-safe unpadded base64");
    if (p)
        protobuf_c_message_free_unpacked(&p->base, NULL);
}

struct bad_case {
    const ProtobufCMessageDescriptor *desc;
    const char *json;
    int status;
    const char *mention; /* the error text must contain this */
};

static void test_refusals(void)
{
    const struct bad_case cases[] = {
        {&agentmesh__v1__submit_task_request__descriptor, "{", PBJSON_SYNTAX, "malformed JSON"},
        {&agentmesh__v1__submit_task_request__descriptor, "[]", PBJSON_INVALID, "expected an object"},
        {&agentmesh__v1__submit_task_request__descriptor, "{\"nope\":1}", PBJSON_INVALID, "unknown field \"nope\""},
        {&agentmesh__v1__submit_task_request__descriptor, "{\"priority\":\"high\"}", PBJSON_INVALID, "priority"},
        {&agentmesh__v1__submit_task_request__descriptor, "{\"priority\":2147483648}", PBJSON_INVALID, "out of range"},
        {&agentmesh__v1__submit_task_request__descriptor, "{\"priority\":1.5}", PBJSON_INVALID, "priority"},
        {&agentmesh__v1__submit_task_request__descriptor, "{\"input\":5}", PBJSON_INVALID, "input: expected a string"},
        {&agentmesh__v1__submit_task_request__descriptor, "{\"input\":\"a\\u0000b\"}", PBJSON_SYNTAX, "\\u0000"},
        {&agentmesh__v1__submit_task_request__descriptor, "{\"input\":\"a\",\"input\":\"b\"}", PBJSON_SYNTAX, "duplicate"},
        {&agentmesh__v1__submit_task_request__descriptor, "{\"requiredCapabilities\":[1]}", PBJSON_INVALID, "requiredCapabilities[0]"},
        {&agentmesh__v1__submit_task_request__descriptor, "{\"requiredCapabilities\":\"gpu\"}", PBJSON_INVALID, "expected an array"},
        {&agentmesh__v1__submit_task_request__descriptor, "{\"input\":\"\xff\"}", PBJSON_SYNTAX, "malformed JSON"},
        {&agentmesh__v1__start_task_request__descriptor, "{\"expectedVersion\":\"-1\"}", PBJSON_INVALID, "expectedVersion"},
        {&agentmesh__v1__start_task_request__descriptor, "{\"expectedVersion\":\"1\",\"expected_version\":\"2\"}", PBJSON_INVALID, "oneof"},
        {&agentmesh__v1__start_task_request__descriptor, "{\"expectedVersion\":\"18446744073709551616\"}", PBJSON_INVALID, "range"},
        {&agentmesh__v1__list_agents_request__descriptor, "{\"status\":\"ONLINE\"}", PBJSON_INVALID, "unknown value \"ONLINE\""},
        {&agentmesh__v1__list_agents_request__descriptor, "{\"minPositions\":{\"agents\":true}}", PBJSON_INVALID, "minPositions.agents"},
        {&agentmesh__v1__put_memory_request__descriptor, "{\"value\":\"***\"}", PBJSON_INVALID, "base64"},
        {&agentmesh__v1__register_agent_request__descriptor, "{\"labels\":[]}", PBJSON_INVALID, "map"},
        {&agentmesh__v1__heartbeat_response__descriptor, "{\"agent\":{\"agent\":1}}", PBJSON_INVALID, "agent"},
        {&google__rpc__status__descriptor, "{\"details\":[{\"@type\":\"type.googleapis.com/x.Unknown\"}]}", PBJSON_UNKNOWN_TYPE, "x.Unknown"},
        {&google__rpc__retry_info__descriptor, "{\"retryDelay\":\"soon\"}", PBJSON_INVALID, "duration"},
        {&agentmesh__v1__task_update__descriptor, "{\"task\":null,\"eventType\":\"\"}", PBJSON_OK, ""},
    };
    /* The path is written out only for an error, and in full. */
    {
        ProtobufCMessage *m = NULL;
        char err[256] = "";
        int rc = pbjson_decode(&agentmesh__v1__submit_task_request__descriptor,
                               "{\"input\":\"x\",\"requiredCapabilities\":[\"a\",\"b\",7]}", 48, NULL, &m, err,
                               sizeof(err));
        CHECK(rc == PBJSON_INVALID && strcmp(err, "requiredCapabilities[2]: expected a string") == 0,
              "array path: %s", err);
        rc = pbjson_decode(&agentmesh__v1__list_agents_request__descriptor,
                           "{\"status\":1,\"minPositions\":{\"agents\":\"1\",\"memory\":[]}}", 54, NULL, &m,
                           err, sizeof(err));
        CHECK(rc == PBJSON_INVALID && strncmp(err, "minPositions.memory: ", 21) == 0, "map path: %s", err);
    }
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        ProtobufCMessage *m = NULL;
        char err[256] = "";
        int rc = pbjson_decode(cases[i].desc, cases[i].json, strlen(cases[i].json), &resolving, &m, err,
                               sizeof(err));
        CHECK(rc == cases[i].status, "case %zu %s: status %s, want %s (%s)", i, cases[i].json,
              pbjson_strerror(rc), pbjson_strerror(cases[i].status), err);
        CHECK(strstr(err, cases[i].mention) != NULL, "case %zu: error \"%s\" does not mention \"%s\"", i, err,
              cases[i].mention);
        if (m)
            protobuf_c_message_free_unpacked(m, NULL);
    }

    /* Nesting and element bounds. */
    pbjson_options tight = resolving;
    tight.max_depth = 1;
    ProtobufCMessage *m = NULL;
    const char *deep = "{\"agent\":{\"labels\":{\"a\":\"b\"}}}";
    CHECK(pbjson_decode(&agentmesh__v1__heartbeat_response__descriptor, deep, strlen(deep), &tight, &m, NULL,
                        0) == PBJSON_TOO_DEEP,
          "depth bound");
    tight.max_depth = 0;
    tight.max_elements = 3;
    const char *many = "{\"requiredCapabilities\":[\"a\",\"b\",\"c\",\"d\"]}";
    CHECK(pbjson_decode(&agentmesh__v1__submit_task_request__descriptor, many, strlen(many), &tight, &m, NULL,
                        0) == PBJSON_TOO_LARGE,
          "element bound");
    tight.flags = PBJSON_IGNORE_UNKNOWN;
    const char *unk = "{\"x\":{\"y\":[1]},\"input\":\"ok\"}";
    CHECK(pbjson_decode(&agentmesh__v1__submit_task_request__descriptor, unk, strlen(unk), &tight, &m, NULL,
                        0) == PBJSON_OK,
          "ignore unknown");
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
}

static void test_set_field(void)
{
    ProtobufCMessage *m = decode(&agentmesh__v1__list_tasks_request__descriptor, "{}");
    char err[256];
    if (m == NULL)
        return;
    CHECK(pbjson_set_field(m, "agentId", "a-1", err, sizeof(err)) == PBJSON_OK, "%s", err);
    CHECK(pbjson_set_field(m, "state", "TASK_STATE_FAILED", err, sizeof(err)) == PBJSON_OK, "%s", err);
    CHECK(pbjson_set_field(m, "since_unix_nano", "-12", err, sizeof(err)) == PBJSON_OK, "%s", err);
    CHECK(pbjson_set_field(m, "pageSize", "x", err, sizeof(err)) == PBJSON_INVALID && strstr(err, "pageSize"),
          "bad number: %s", err);
    CHECK(pbjson_set_field(m, "nope", "1", err, sizeof(err)) == PBJSON_INVALID, "unknown");
    CHECK(pbjson_set_field(m, "minPositions", "1", err, sizeof(err)) == PBJSON_INVALID, "map refused");
    CHECK(pbjson_set_field(m, "agentId.x", "1", err, sizeof(err)) == PBJSON_INVALID &&
              strcmp(err, "agentId: not a message field") == 0,
          "the path so far names the field: %s", err);
    Agentmesh__V1__ListTasksRequest *r = (Agentmesh__V1__ListTasksRequest *)m;
    CHECK(strcmp(r->agent_id, "a-1") == 0 && r->state == AGENTMESH__V1__TASK_STATE__TASK_STATE_FAILED &&
              r->since_unix_nano == -12,
          "fields set");
    protobuf_c_message_free_unpacked(m, NULL);

    m = decode(&agentmesh__v1__list_events_request__descriptor, "{}");
    if (m == NULL)
        return;
    CHECK(pbjson_set_field(m, "types", "agentmesh.v1.TaskFailed", err, sizeof(err)) == PBJSON_OK, "%s", err);
    CHECK(pbjson_set_field(m, "types", "agentmesh.v1.TaskCompleted", err, sizeof(err)) == PBJSON_OK, "%s", err);
    Agentmesh__V1__ListEventsRequest *le = (Agentmesh__V1__ListEventsRequest *)m;
    CHECK(le->n_types == 2 && strcmp(le->types[1], "agentmesh.v1.TaskCompleted") == 0, "repeated append");
    protobuf_c_message_free_unpacked(m, NULL);

    m = decode(&agentmesh__v1__start_task_request__descriptor, "{}");
    if (m == NULL)
        return;
    CHECK(pbjson_set_field(m, "expectedVersion", "4", err, sizeof(err)) == PBJSON_OK, "%s", err);
    Agentmesh__V1__StartTaskRequest *st = (Agentmesh__V1__StartTaskRequest *)m;
    CHECK(st->expected_case == AGENTMESH__V1__START_TASK_REQUEST__EXPECTED_EXPECTED_VERSION &&
              st->expected_version == 4,
          "oneof via parameter");
    protobuf_c_message_free_unpacked(m, NULL);
}

/* message -> JSON -> message must pack to identical bytes, in both naming
 * styles and with defaults emitted. */
static void roundtrip(const ProtobufCMessageDescriptor *d)
{
    static const unsigned styles[] = {0, PBJSON_ORIGINAL_NAMES, PBJSON_EMIT_DEFAULTS};
    ProtobufCMessage *m = populate_message(d);
    size_t n1 = protobuf_c_message_get_packed_size(m);
    uint8_t *b1 = malloc(n1 + 1);
    protobuf_c_message_pack(m, b1);
    for (size_t s = 0; s < sizeof(styles) / sizeof(styles[0]); s++) {
        char *j = encode(m, styles[s]);
        if (j == NULL)
            continue;
        ProtobufCMessage *back = decode(d, j);
        if (back != NULL) {
            size_t n2 = protobuf_c_message_get_packed_size(back);
            uint8_t *b2 = malloc(n2 + 1);
            protobuf_c_message_pack(back, b2);
            CHECK(n1 == n2 && memcmp(b1, b2, n1) == 0, "%s (style %u) changed through JSON: %s", d->name,
                  styles[s], j);
            free(b2);
            protobuf_c_message_free_unpacked(back, NULL);
        }
        free(j);
    }
    free(b1);
    protobuf_c_message_free_unpacked(m, NULL);
}

static void roundtrip_service(const ProtobufCServiceDescriptor *s)
{
    for (unsigned i = 0; i < s->n_methods; i++) {
        roundtrip(s->methods[i].input);
        roundtrip(s->methods[i].output);
    }
}

int main(void)
{
    test_encode_known();
    test_any_and_duration();
    test_decode_forms();
    test_refusals();
    test_set_field();
    roundtrip_service(&agentmesh__v1__agent_manager__descriptor);
    roundtrip_service(&agentmesh__v1__memory_sync__descriptor);
    roundtrip_service(&agentmesh__v1__query__descriptor);
    roundtrip_service(&agentmesh__v1__event_store__descriptor);
    roundtrip(&agentmesh__v1__memory_conflict_resolved__descriptor);
    roundtrip(&agentmesh__v1__task_submitted__descriptor);
    roundtrip(&agentmesh__v1__agent_registered__descriptor);
    CHECK(pbjson_registry_find("agentmesh.v1.TaskCompleted") == &agentmesh__v1__task_completed__descriptor,
          "registry");
    CHECK(pbjson_registry_find("agentmesh.v1.Nope") == NULL, "registry miss");
    printf("pbjson_test: %d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
