/* Unit test of the event decoding: a CloudEvent as the outbox writes it
 * (the fast path), the same event in other member orders and spacing (the
 * full parse), and the EventStore API form give the same event; times parse
 * to the nanosecond; memory values are dropped; malformed bodies refused. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agentmesh/v1/events.pb-c.h"
#include "services/query/query.h"

#define CHECK(c)                                                              \
    do {                                                                      \
        if (!(c)) {                                                           \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
                    #c);                                                      \
            exit(1);                                                          \
        }                                                                     \
    } while (0)

#define HEAD                                                                  \
    "\"specversion\":\"1.0\",\"id\":\"01a20130-f5df-7207-96ab-e9b0b2b6cd00\"," \
    "\"source\":\"agentmesh/memory\",\"type\":\"agentmesh.v1.MemoryWritten\","  \
    "\"subject\":\"memory-ns\",\"time\":\"2026-11-22T02:58:35.615936560Z\","    \
    "\"datacontenttype\":\"application/json\",\"sequence\":\"42\","            \
    "\"streamversion\":\"7\",\"traceparent\":"                                 \
    "\"00-c6a6172cbc6d8f2b5e33fe1f0a7fe04a-2fe2c9865749f1ea-01\""
#define DATA                                                                  \
    "{\"namespace\":\"ns\",\"key\":\"k\",\"version\":\"3\",\"size\":\"5\","    \
    "\"sealedValue\":\"c2VjcmV0\",\"replicaId\":\"r1\"}"

static qs_event *decode(const char *body)
{
    qs_event *ev = NULL;
    char why[160];
    int rc = qs_event_from_cloudevent(body, strlen(body), &ev, why, sizeof why);
    if (rc)
        fprintf(stderr, "refused: %s\n", why);
    CHECK(rc == ES_OK);
    return ev;
}

static void same(const qs_event *a, const qs_event *b)
{
    CHECK(a->source == b->source && a->position == b->position &&
          a->stream_version == b->stream_version &&
          a->time_unix_nano == b->time_unix_nano);
    CHECK(!strcmp(a->event_id, b->event_id) && !strcmp(a->stream, b->stream) &&
          !strcmp(a->type, b->type) && !strcmp(a->traceparent, b->traceparent));
    CHECK(a->data_len == b->data_len && !memcmp(a->data, b->data, a->data_len));
    CHECK(a->feed && b->feed && a->feed_len == b->feed_len &&
          !memcmp(a->feed, b->feed, a->feed_len));
}

/* qs_feed_pack writes the feed's Event by hand: its bytes must be the ones
 * protobuf-c packs for the same message, for every shape of event (empty
 * and multi-byte lengths, zero, large and negative numbers, both sources). */
static void feed_pack_matches(void)
{
    static char big[400], data[300];
    memset(big, 'x', sizeof big - 1);
    for (size_t i = 0; i < sizeof data; i++)
        data[i] = (char)i;
    const size_t lens[] = {0, 1, 127, 128, 399};
    const uint64_t nums[] = {0, 1, 127, 128, 16384, UINT64_MAX};
    const int64_t times[] = {0, 1, -1, 1795316315615936560ll, INT64_MIN};
    size_t cases = 0;
    for (int src = 0; src < QS_NSOURCES; src++)
        for (size_t a = 0; a < 5; a++)
            for (size_t b = 0; b < 6; b++)
                for (size_t c = 0; c < 5; c++) {
                    char stream[400], type[400], tp[400];
                    qs_event ev;
                    memset(&ev, 0, sizeof ev);
                    ev.source = src;
                    ev.position = nums[(b + 1) % 6];
                    ev.stream_version = nums[b];
                    ev.time_unix_nano = times[c];
                    snprintf(ev.event_id, sizeof ev.event_id, "%.*s",
                             (int)(lens[c] % 40), big);
                    snprintf(stream, sizeof stream, "%.*s", (int)lens[a], big);
                    snprintf(type, sizeof type, "%.*s", (int)lens[(a + c) % 5],
                             big);
                    snprintf(tp, sizeof tp, "%.*s", (int)lens[(a + b) % 5], big);
                    ev.stream = stream;
                    ev.type = type;
                    ev.traceparent = tp;
                    ev.data_len = lens[(b + c) % 5] % sizeof data;
                    ev.data = ev.data_len ? (uint8_t *)data : NULL;

                    Agentmesh__V1__Event e = AGENTMESH__V1__EVENT__INIT;
                    Agentmesh__V1__EventMetadata m =
                        AGENTMESH__V1__EVENT_METADATA__INIT;
                    m.traceparent = tp;
                    e.metadata = &m;
                    e.event_id = ev.event_id;
                    e.stream = stream;
                    e.stream_version = ev.stream_version;
                    e.position = ev.position;
                    e.type = type;
                    e.time_unix_nano = ev.time_unix_nano;
                    e.data.data = ev.data;
                    e.data.len = ev.data_len;
                    e.source = (char *)qs_source_name(src);
                    e.content_type = "application/x-protobuf";
                    size_t want_len = protobuf_c_message_get_packed_size(&e.base);
                    uint8_t *want = malloc(want_len ? want_len : 1);
                    CHECK(want);
                    protobuf_c_message_pack(&e.base, want);

                    uint8_t *got = NULL;
                    size_t got_len = 0;
                    CHECK(qs_feed_pack(&ev, NULL, &got, &got_len) == ES_OK);
                    CHECK(got_len == want_len);
                    CHECK(memcmp(got, want, want_len) == 0);
                    free(got);
                    free(want);
                    cases++;
                }
    CHECK(cases == 2 * 5 * 6 * 5);
}

/* qs_task_pack writes a Task by hand, field by field: the bytes must be
 * protobuf-c's for every shape, and a field added to Task must be added
 * to it (the count below fails first). */
static void task_pack_matches(void)
{
    CHECK(agentmesh__v1__task__descriptor.n_fields == 16);
    static char big[300];
    memset(big, 'y', sizeof big - 1);
    const size_t lens[] = {0, 1, 127, 128, 299};
    const int32_t ints[] = {0, 1, -1, 127, 128, INT32_MIN, INT32_MAX};
    const uint64_t nums[] = {0, 1, 128, UINT32_MAX, UINT64_MAX};
    const int64_t times[] = {0, -1, 1795316315615936560ll, INT64_MIN};
    size_t cases = 0;
    for (size_t a = 0; a < 5; a++)
        for (size_t b = 0; b < 7; b++)
            for (size_t c = 0; c < 4; c++) {
                char s[8][300];
                for (int i = 0; i < 8; i++)
                    snprintf(s[i], sizeof s[i], "%.*s",
                             (int)lens[(a + (size_t)i) % 5], big);
                char *caps[3] = {s[5], "", s[6]};
                Agentmesh__V1__Task t = AGENTMESH__V1__TASK__INIT;
                t.task_id = s[0];
                t.agent_id = s[1];
                t.n_required_capabilities = (a + c) % 4;
                t.required_capabilities =
                    t.n_required_capabilities ? caps : NULL;
                t.input = s[2];
                t.output = s[3];
                t.error = s[4];
                t.phase = s[7];
                t.progress_percent = (uint32_t)nums[(b + c) % 4];
                t.priority = ints[b];
                t.attempt = (uint32_t)nums[(a + b) % 4];
                t.state = (Agentmesh__V1__TaskState)((a + b + c) % 7);
                t.version = nums[(b + 1) % 5];
                t.position = nums[(a + c) % 5];
                t.submitted_at_unix_nano = times[c];
                t.updated_at_unix_nano = times[(c + b) % 4];
                t.idempotency_key = s[(b + c) % 8];

                size_t want_len = protobuf_c_message_get_packed_size(&t.base);
                uint8_t *want = malloc(want_len ? want_len : 1);
                uint8_t *got = malloc(want_len + 64);
                CHECK(want && got);
                protobuf_c_message_pack(&t.base, want);
                CHECK(qs_task_packed_size(&t) == want_len);
                CHECK(qs_task_pack(&t, got) == want_len);
                CHECK(memcmp(got, want, want_len) == 0);
                free(want);
                free(got);
                cases++;
            }
    CHECK(cases == 5 * 7 * 4);
}

int main(void)
{
    feed_pack_matches();
    task_pack_matches();
    qs_event *fast = decode("{" HEAD ",\"data\":" DATA "}");
    CHECK(fast->source == QS_MEMORY && fast->position == 42 &&
          fast->stream_version == 7);
    /* 2026-11-22T02:58:35Z is 1795316315 s after the epoch. */
    CHECK(fast->time_unix_nano == 1795316315615936560ll);
    Agentmesh__V1__MemoryWritten *w = (Agentmesh__V1__MemoryWritten *)fast->payload;
    CHECK(w && !strcmp(w->key, "k") && w->version == 3);
    CHECK(w->sealed_value.len == 0);
    CHECK(!memmem(fast->data, fast->data_len, "secret", 6));

    const char *others[] = {
        "{\"data\":" DATA "," HEAD "}",
        "{" HEAD ", \"data\" : " DATA " }\n",
        "{" HEAD ",\"data\":" DATA ",\"extra\":\"x\"}",
    };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        qs_event *ev = decode(others[i]);
        same(fast, ev);
        qs_event_free(ev);
    }

    /* The EventStore API form of the same event, sealed value included. */
    Agentmesh__V1__MemoryWritten mw = AGENTMESH__V1__MEMORY_WRITTEN__INIT;
    mw.namespace_ = "ns";
    mw.key = "k";
    mw.version = 3;
    mw.size = 5;
    mw.sealed_value.data = (uint8_t *)"secret";
    mw.sealed_value.len = 6;
    mw.replica_id = "r1";
    uint8_t buf[256];
    Agentmesh__V1__Event e = AGENTMESH__V1__EVENT__INIT;
    Agentmesh__V1__EventMetadata m = AGENTMESH__V1__EVENT_METADATA__INIT;
    m.traceparent = "00-c6a6172cbc6d8f2b5e33fe1f0a7fe04a-2fe2c9865749f1ea-01";
    m.actor = "someone";
    e.metadata = &m;
    e.event_id = "01a20130-f5df-7207-96ab-e9b0b2b6cd00";
    e.stream = "memory-ns";
    e.stream_version = 7;
    e.position = 42;
    e.type = "agentmesh.v1.MemoryWritten";
    e.time_unix_nano = 1795316315615936560ll;
    e.data.data = buf;
    e.data.len = agentmesh__v1__memory_written__pack(&mw, buf);
    qs_event *api = NULL;
    CHECK(qs_event_from_proto(QS_MEMORY, &e, NULL, &api) == ES_OK);
    same(fast, api);
    qs_event_free(api);

    /* The same through an arena, and from the log's record read in place:
     * the read models get the very same event. */
    qs_arena *ar = qs_arena_new();
    CHECK(ar);
    CHECK(qs_event_from_proto(QS_MEMORY, &e, ar, &api) == ES_OK);
    CHECK(api->in_arena);
    same(fast, api);
    qs_event_free(api); /* a no-op: the arena owns it */
    es_event rec;
    memset(&rec, 0, sizeof rec);
    static const uint8_t id[16] = {0x01, 0xa2, 0x01, 0x30, 0xf5, 0xdf,
                                   0x72, 0x07, 0x96, 0xab, 0xe9, 0xb0,
                                   0xb2, 0xb6, 0xcd, 0x00};
    memcpy(rec.id, id, 16);
    rec.position = 42;
    rec.stream_version = 7;
    rec.time_unix_nano = e.time_unix_nano;
    rec.stream = "memory-nsXX"; /* not NUL-terminated in a record */
    rec.stream_len = 9;
    rec.type = e.type;
    rec.type_len = strlen(e.type);
    rec.traceparent = m.traceparent;
    rec.traceparent_len = strlen(m.traceparent);
    rec.actor = "someone";
    rec.actor_len = 7;
    rec.data = buf;
    rec.data_len = e.data.len;
    for (int with_arena = 0; with_arena < 2; with_arena++) {
        qs_event *logged = NULL;
        CHECK(qs_event_from_es(QS_MEMORY, &rec, with_arena ? ar : NULL,
                               &logged) == ES_OK);
        CHECK(!strcmp(logged->stream, "memory-ns"));
        same(fast, logged);
        qs_event_free(logged);
    }
    qs_arena_free(ar);

    /* Only W3C traceparents are kept (the outbox forwards nothing else). */
    const char *tps[] = {
        "00-c6a6172cbc6d8f2b5e33fe1f0a7fe04a-2fe2c9865749f1ea-01", /* ok */
        "00-C6A6172CBC6D8F2B5E33FE1F0A7FE04A-2FE2C9865749F1EA-01",
        "01-c6a6172cbc6d8f2b5e33fe1f0a7fe04a-2fe2c9865749f1ea-01",
        "00-c6a6172cbc6d8f2b5e33fe1f0a7fe04a_2fe2c9865749f1ea-01",
        "00-c6a6172cbc6d8f2b5e33fe1f0a7fe04a-2fe2c9865749f1ea-0g",
        "00-c6a6172cbc6d8f2b5e33fe1f0a7fe04a-2fe2c9865749f1ea-011",
        "00-c6a6172cbc6d8f2b5e33fe1f0a7fe04a-2fe2c9865749f1ea-0",
        "",
    };
    for (size_t i = 0; i < sizeof tps / sizeof tps[0]; i++) {
        m.traceparent = (char *)tps[i];
        CHECK(qs_event_from_proto(QS_MEMORY, &e, NULL, &api) == ES_OK);
        CHECK(!strcmp(api->traceparent, i == 0 ? tps[0] : ""));
        qs_event_free(api);
    }
    qs_event_free(fast);

    const char *bad[] = {
        "", "[]", "{\"source\":\"agentmesh/agents\"}",
        "{" HEAD ",\"data\":{\"version\":\"x\"}}",
        "{\"specversion\":\"1.0\",\"id\":\"a\",\"source\":\"elsewhere\","
        "\"type\":\"t\",\"subject\":\"s\",\"time\":\"2026-11-22T02:58:35Z\","
        "\"sequence\":\"1\",\"streamversion\":\"0\"}",
        "{\"specversion\":\"1.0\",\"id\":\"a\",\"source\":\"agentmesh/agents\","
        "\"type\":\"t\",\"subject\":\"s\",\"time\":\"2026-13-22T02:58:35Z\","
        "\"sequence\":\"1\",\"streamversion\":\"0\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        qs_event *ev = NULL;
        char why[160];
        CHECK(qs_event_from_cloudevent(bad[i], strlen(bad[i]), &ev, why,
                                       sizeof why) != ES_OK);
        CHECK(ev == NULL);
    }
    puts("event_test: ok");
    return 0;
}
