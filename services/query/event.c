/* The normalised event of the query service: built from an EventStore API
 * event (catch-up) or a CloudEvents JSON body (NATS), with the payload
 * decoded, memory values removed and packed again, so both paths feed the
 * read models the very same bytes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "agentmesh/v1/events.pb-c.h"
#include "services/pbjson/pbjson.h"
#include "services/pbjson/registry.h"
#include "services/query/query.h"

void qs_event_free(qs_event *ev)
{
    if (!ev || ev->in_arena)
        return;
    if (!ev->inline_strings) {
        free(ev->stream);
        free(ev->type);
        free(ev->traceparent);
    }
    if (ev->payload)
        protobuf_c_message_free_unpacked(ev->payload, NULL);
    free(ev->data);
    free(ev->feed);
    free(ev->rec);
    free(ev);
}

/* Values never leave memory-sync: drop the sealed value wherever it came
 * from (the EventStore API hands out the log's bytes as they are). */
static void strip(ProtobufCMessage *m, bool in_arena)
{
    if (m->descriptor != &agentmesh__v1__memory_written__descriptor)
        return;
    Agentmesh__V1__MemoryWritten *w = (Agentmesh__V1__MemoryWritten *)m;
    if (!in_arena)
        free(w->sealed_value.data);
    w->sealed_value.data = NULL;
    w->sealed_value.len = 0;
}

/* Sets payload from the decoded message (taken) and packs data, in ar's
 * memory when ar is not NULL. */
static int finish(qs_event *ev, ProtobufCMessage *m, qs_arena *ar)
{
    ev->payload = m;
    if (!m)
        return ES_OK;
    strip(m, ar != NULL);
    return qs_pack_in(ar, m, &ev->data, &ev->data_len);
}

/* Packs the feed's form and the record the event makes (a new task's, a
 * memory entry) here, on the thread that decodes (catch-up reader, NATS),
 * to keep them out of the one write transaction all paths share. */
static int pack_feed(qs_event *ev, qs_arena *ar)
{
    int rc = qs_feed_pack(ev, ar, &ev->feed, &ev->feed_len);
    if (!rc)
        rc = qs_tasks_prepare(ev, ar);
    return rc ? rc : qs_memory_prepare(ev, ar);
}

/* The message type of an event type name, or NULL. The registry searches
 * its hundred-odd names one by one, and a page or a burst of events holds
 * a handful of types: the last few answers are kept per thread. */
#define TYPE_CACHE 8
static const ProtobufCMessageDescriptor *find_type(const char *name)
{
    static _Thread_local const ProtobufCMessageDescriptor *seen[TYPE_CACHE];
    static _Thread_local unsigned next;
    for (unsigned i = 0; i < TYPE_CACHE && seen[i]; i++)
        if (!strcmp(seen[i]->name, name))
            return seen[i];
    const ProtobufCMessageDescriptor *d = pbjson_registry_find(name);
    if (d)
        seen[next++ % TYPE_CACHE] = d;
    return d;
}

/* Lower-case hex digits (the only ones W3C Trace Context allows). */
static bool lower_hex(unsigned char c)
{
    return (unsigned)(c - '0') < 10 || (unsigned)(c - 'a') < 6;
}

static bool traceparent_valid(const char *s)
{
    /* W3C Trace Context version 00: 00-<32 hex>-<16 hex>-<2 hex>. */
    if (strlen(s) != 55 || s[0] != '0' || s[1] != '0' || s[2] != '-' ||
        s[35] != '-' || s[52] != '-')
        return false;
    unsigned bad = 0;
    for (size_t i = 3; i < 35; i++)
        bad |= !lower_hex((unsigned char)s[i]);
    for (size_t i = 36; i < 52; i++)
        bad |= !lower_hex((unsigned char)s[i]);
    return !bad && lower_hex((unsigned char)s[53]) &&
           lower_hex((unsigned char)s[54]);
}

/* What both log paths (the EventStore API and the log file) give. */
typedef struct fields {
    uint64_t position, stream_version;
    int64_t time_unix_nano;
    const char *event_id;
    const char *stream, *type, *traceparent;
    size_t stream_len, type_len, traceparent_len;
    const uint8_t *data;
    size_t data_len;
} fields;

/* The event, its three strings and its id in one allocation (the
 * strings right after the struct): one malloc and one free instead of
 * four of each. */
static qs_event *alloc_event(const fields *f, const char *tp, size_t tpl,
                             qs_arena *ar)
{
    size_t sl = f->stream_len, tl = f->type_len;
    size_t size = sizeof(qs_event) + sl + tl + tpl + 3;
    qs_event *ev = ar ? qs_arena_alloc(ar, size) : malloc(size);
    if (!ev)
        return NULL;
    memset(ev, 0, sizeof *ev);
    ev->in_arena = ar != NULL;
    char *p = (char *)(ev + 1);
    ev->stream = p;
    memcpy(p, f->stream, sl);
    p[sl] = '\0';
    ev->type = p += sl + 1;
    memcpy(p, f->type, tl);
    p[tl] = '\0';
    ev->traceparent = p += tl + 1;
    memcpy(p, tp, tpl);
    p[tpl] = '\0';
    ev->inline_strings = true;
    return ev;
}

static int from_fields(int source, const fields *f, qs_arena *ar,
                       qs_event **out)
{
    /* The outbox forwards only W3C values: keep what NATS would carry. */
    char tp[56];
    size_t tpl = f->traceparent_len;
    if (tpl != 55) {
        tpl = 0;
    } else {
        memcpy(tp, f->traceparent, 55);
        tp[55] = '\0';
        if (!traceparent_valid(tp))
            tpl = 0;
    }
    qs_event *ev = alloc_event(f, tp, tpl, ar);
    ProtobufCAllocator al;
    if (ar)
        al = qs_arena_allocator(ar);
    int rc = ES_NOMEM;
    if (!ev)
        return ES_NOMEM;
    ev->source = source;
    ev->position = f->position;
    ev->stream_version = f->stream_version;
    ev->time_unix_nano = f->time_unix_nano;
    size_t idl = strnlen(f->event_id, sizeof ev->event_id - 1);
    memcpy(ev->event_id, f->event_id, idl);
    ev->event_id[idl] = '\0';
    const ProtobufCMessageDescriptor *d = find_type(ev->type);
    ProtobufCMessage *m =
        d ? protobuf_c_message_unpack(d, ar ? &al : NULL, f->data_len,
                                      f->data)
          : NULL;
    if (m) {
        if ((rc = finish(ev, m, ar)))
            goto out;
    } else if (f->data_len) {
        /* Not an API payload (or one that does not parse): the outbox
         * dead-letters such events, so only catch-up sees them; the feed
         * keeps the bytes as they are and no read model interprets them. */
        if (!(ev->data = ar ? qs_arena_alloc(ar, f->data_len)
                            : malloc(f->data_len)))
            goto out;
        memcpy(ev->data, f->data, f->data_len);
        ev->data_len = f->data_len;
    }
    if ((rc = pack_feed(ev, ar)))
        goto out;
    *out = ev;
    ev = NULL;
    rc = ES_OK;
out:
    qs_event_free(ev);
    return rc;
}

static size_t len_of(const char *s)
{
    return s ? strlen(s) : 0;
}

int qs_event_from_proto(int source, const Agentmesh__V1__Event *e,
                        qs_arena *ar, qs_event **out)
{
    const char *tp = e->metadata && e->metadata->traceparent
                         ? e->metadata->traceparent : "";
    fields f = {e->position, e->stream_version, e->time_unix_nano,
                e->event_id ? e->event_id : "",
                e->stream ? e->stream : "", e->type ? e->type : "", tp,
                len_of(e->stream), len_of(e->type), strlen(tp),
                e->data.data, e->data.len};
    return from_fields(source, &f, ar, out);
}

int qs_event_from_es(int source, const es_event *e, qs_arena *ar,
                     qs_event **out)
{
    char id[37];
    es_id_format(e->id, id);
    fields f = {e->position, e->stream_version, e->time_unix_nano, id,
                e->stream, e->type, e->traceparent ? e->traceparent : "",
                e->stream_len, e->type_len,
                e->traceparent ? e->traceparent_len : 0,
                e->data, e->data_len};
    return from_fields(source, &f, ar, out);
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; H. Hinnant's
 * days_from_civil). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int64_t)doe - 719468;
}

/* n decimal digits at s into *out; -1 if any is not a digit. */
static int digits(const char *s, int n, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    *out = v;
    return 0;
}

/* RFC 3339 UTC "YYYY-MM-DDTHH:MM:SS[.fraction]Z", as the outbox writes it
 * (a hand parser: strptime and timegm cost more than the rest of the
 * decode). */
static int parse_time(const char *s, int64_t *out)
{
    unsigned y, mo, d, h, mi, sec;
    if (strlen(s) < 20 || digits(s, 4, &y) || s[4] != '-' ||
        digits(s + 5, 2, &mo) || s[7] != '-' || digits(s + 8, 2, &d) ||
        (s[10] != 'T' && s[10] != 't') || digits(s + 11, 2, &h) ||
        s[13] != ':' || digits(s + 14, 2, &mi) || s[16] != ':' ||
        digits(s + 17, 2, &sec) || mo < 1 || mo > 12 || d < 1 || d > 31 ||
        h > 23 || mi > 59 || sec > 60)
        return -1;
    const char *p = s + 19;
    int64_t nanos = 0;
    if (*p == '.') {
        int n = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, n++)
            if (n < 9)
                nanos = nanos * 10 + (*p - '0');
        if (n == 0)
            return -1;
        for (; n < 9; n++)
            nanos *= 10;
    }
    if ((*p != 'Z' && *p != 'z') || p[1])
        return -1;
    int64_t days = days_from_civil(y, mo, d);
    *out = ((days * 24 + h) * 60 + mi) * 60 * 1000000000ll +
           (int64_t)sec * 1000000000ll + nanos;
    return 0;
}

static const char *str_field(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    return json_is_string(v) ? json_string_value(v) : NULL;
}

static int parse_u64(const char *s, uint64_t *out)
{
    char *end = NULL;
    if (!s || !*s || *s < '0' || *s > '9')
        return -1;
    unsigned long long v = strtoull(s, &end, 10);
    if (*end)
        return -1;
    *out = v;
    return 0;
}

/* The outbox writes "data" as the object's last member, after members whose
 * values are strings (which hold no unescaped quote): the first `,"data":`
 * is that member, and its text runs to the closing brace. Sets *head_len
 * (the object before that member) and the data's text; false when the body
 * has another shape. */
static bool split_data(const char *json, size_t len, size_t *head_len,
                       const char **data, size_t *data_len)
{
    static const char key[] = ",\"data\":";
    const char *k = memmem(json, len, key, sizeof key - 1);
    size_t end = len;
    while (end > 0 && (json[end - 1] == ' ' || json[end - 1] == '\n' ||
                       json[end - 1] == '\r' || json[end - 1] == '\t'))
        end--;
    if (!k || end == 0 || json[end - 1] != '}')
        return false;
    const char *v = k + sizeof key - 1;
    if (v >= json + end - 1)
        return false;
    *head_len = (size_t)(k - json);
    *data = v;
    *data_len = (size_t)(json + end - 1 - v);
    return true;
}

/* The fast path: the header members parsed alone and the data decoded from
 * its own text, with no second JSON pass. Any doubt (another shape, a
 * parse failure) returns false and the caller takes the full path. */
static bool decode_split(const char *json, size_t len, json_t **root,
                         ProtobufCMessage **m)
{
    size_t hl, dl;
    const char *data;
    char *head = NULL;
    if (!split_data(json, len, &hl, &data, &dl) || !(head = malloc(hl + 2)))
        return false;
    memcpy(head, json, hl);
    head[hl] = '}';
    head[hl + 1] = '\0';
    json_error_t jerr;
    json_t *r = json_loadb(head, hl + 1, 0, &jerr);
    free(head);
    const char *type = r ? str_field(r, "type") : NULL;
    const ProtobufCMessageDescriptor *d = type ? find_type(type)
                                               : NULL;
    pbjson_options po = {PBJSON_IGNORE_UNKNOWN, 0, 0, pbjson_registry_resolve,
                         NULL};
    char err[16];
    if (!d || json_object_get(r, "data") ||
        pbjson_decode(d, data, dl, &po, m, err, sizeof err) != PBJSON_OK) {
        json_decref(r);
        return false;
    }
    *root = r;
    return true;
}

int qs_event_from_cloudevent(const char *json, size_t len, qs_event **out,
                             char *why, size_t why_len)
{
    json_error_t jerr;
    json_t *root = NULL;
    ProtobufCMessage *m = NULL;
    bool split = decode_split(json, len, &root, &m);
    if (!split)
        root = json_loadb(json, len, 0, &jerr);
    qs_event *ev = NULL;
    char *data_json = NULL;
    int rc = ES_INVALID;
    if (!root || !json_is_object(root)) {
        snprintf(why, why_len, "not a JSON object");
        goto out;
    }
    const char *src = str_field(root, "source");
    const char *type = str_field(root, "type");
    const char *subject = str_field(root, "subject");
    const char *id = str_field(root, "id");
    const char *when = str_field(root, "time");
    const char *tp = str_field(root, "traceparent");
    int source = -1;
    if (src && strncmp(src, "agentmesh/", 10) == 0)
        source = qs_source_parse(src + 10, strlen(src + 10));
    if (source < 0 || !type || !subject || !id || !when) {
        snprintf(why, why_len, "not an agentmesh event (source, type, "
                               "subject, id, time)");
        goto out;
    }
    if (!(ev = calloc(1, sizeof *ev))) {
        rc = ES_NOMEM;
        goto out;
    }
    ev->source = source;
    if (parse_u64(str_field(root, "sequence"), &ev->position) ||
        ev->position == 0 ||
        parse_u64(str_field(root, "streamversion"), &ev->stream_version) ||
        parse_time(when, &ev->time_unix_nano)) {
        snprintf(why, why_len, "bad sequence, streamversion or time");
        goto out;
    }
    snprintf(ev->event_id, sizeof ev->event_id, "%s", id);
    if (!(ev->stream = strdup(subject)) || !(ev->type = strdup(type)) ||
        !(ev->traceparent = strdup(tp ? tp : ""))) {
        rc = ES_NOMEM;
        goto out;
    }
    const ProtobufCMessageDescriptor *d = find_type(type);
    json_t *data = json_object_get(root, "data");
    if (!split && d && data) {
        if (!(data_json = json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY))) {
            rc = ES_NOMEM;
            goto out;
        }
        pbjson_options po = {PBJSON_IGNORE_UNKNOWN, 0, 0,
                             pbjson_registry_resolve, NULL};
        char err[128];
        int prc = pbjson_decode(d, data_json, strlen(data_json), &po, &m, err,
                                sizeof err);
        if (prc != PBJSON_OK) {
            snprintf(why, why_len, "data: %s", err);
            rc = prc == PBJSON_NOMEM ? ES_NOMEM : ES_INVALID;
            goto out;
        }
    }
    rc = finish(ev, m, NULL);
    m = NULL;
    if (rc || (rc = pack_feed(ev, NULL)))
        goto out;
    *out = ev;
    ev = NULL;
out:
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    free(data_json);
    qs_event_free(ev);
    json_decref(root);
    return rc;
}
