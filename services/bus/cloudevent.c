/* The CloudEvents 1.0 structured JSON form of a stored event, with its
 * payload written through pbjson from the registry of API message types. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "services/bus/bus.h"
#include "services/pbjson/pbjson.h"
#include "services/pbjson/registry.h"

static const char *const status_text[] = {
#define BUS_TEXT_(name, value, text) [value] = text,
    BUS_STATUS_TABLE(BUS_TEXT_)
#undef BUS_TEXT_
};

const char *bus_strerror(int status)
{
    if (status < 0 || (size_t)status >= sizeof(status_text) / sizeof(status_text[0]) ||
        status_text[status] == NULL)
        return "unknown bus status";
    return status_text[status];
}

void bus_uuid_format(const uint8_t id[ES_ID_SIZE], char out[37])
{
    es_id_format(id, out);
}

/* Appends n bytes of s as one subject token, replacing reserved characters. */
static int put_token(char *buf, size_t len, size_t *o, const char *s, size_t n)
{
    if (n == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (*o + 2 > len)
            return -1;
        if (c == '.' || c == '*' || c == '>' || c == ' ' || c == '\t' || c == '\r' || c == '\n' ||
            (unsigned char)c < 0x20)
            c = '_';
        buf[(*o)++] = c;
    }
    buf[*o] = '\0';
    return 0;
}

static int put_lit(char *buf, size_t len, size_t *o, const char *s)
{
    size_t n = strlen(s);
    if (*o + n + 1 > len)
        return -1;
    memcpy(buf + *o, s, n + 1);
    *o += n;
    return 0;
}

int bus_subject(const char *service, const es_event *ev, char *buf, size_t len)
{
    size_t o = 0;
    const char *dash = memchr(ev->stream, '-', ev->stream_len);
    size_t clen = dash ? (size_t)(dash - ev->stream) : ev->stream_len;
    const char *dot = memrchr(ev->type, '.', ev->type_len);
    const char *tname = dot ? dot + 1 : ev->type;
    size_t tlen = ev->type_len - (size_t)(tname - ev->type);
    if (put_lit(buf, len, &o, "agentmesh.events.") || put_token(buf, len, &o, service, strlen(service)) ||
        put_lit(buf, len, &o, ".") || put_token(buf, len, &o, ev->stream, clen) ||
        put_lit(buf, len, &o, ".") || put_token(buf, len, &o, tname, tlen))
        return BUS_INVALID;
    return BUS_OK;
}

/* A small growable buffer for the envelope. */
typedef struct buf {
    char *p;
    size_t len, cap;
    int failed;
} buf;

static void put(buf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 512;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *np = realloc(b->p, cap);
        if (np == NULL) {
            b->failed = 1;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void puts_(buf *b, const char *s)
{
    put(b, s, strlen(s));
}

/* A JSON string literal of untrusted bytes (stream names, metadata). */
static void put_str(buf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    put(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char e[2] = {'\\', (char)c};
            put(b, e, 2);
        } else if (c < 0x20) {
            char e[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
            put(b, e, 6);
        } else {
            put(b, (const char *)&s[i], 1);
        }
    }
    put(b, "\"", 1);
}

static void format_time(int64_t unix_nano, char *out, size_t len)
{
    struct tm tm;
    time_t secs = (time_t)(unix_nano / 1000000000);
    long nanos = (long)(unix_nano % 1000000000);
    if (nanos < 0) {
        nanos += 1000000000;
        secs -= 1;
    }
    gmtime_r(&secs, &tm);
    snprintf(out, len, "%04d-%02d-%02dT%02d:%02d:%02d.%09ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, nanos);
}

static void why_set(char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void why_set(char *why, size_t why_len, const char *fmt, ...)
{
    va_list ap;
    if (why == NULL || why_len == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(why, why_len, fmt, ap);
    va_end(ap);
}

bool bus_traceparent_valid(const char *s, size_t n)
{
    /* W3C Trace Context version 00: 00-<32 hex>-<16 hex>-<2 hex>. */
    static const size_t dashes[] = {2, 35, 52};
    if (n != 55)
        return false;
    for (size_t i = 0; i < n; i++) {
        bool dash = i == dashes[0] || i == dashes[1] || i == dashes[2];
        char c = s[i];
        if (dash ? c != '-' : !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
            return false;
    }
    return true;
}

int bus_cloudevent_build(const char *service, const es_event *ev, bus_payload_fn hook,
                         void *hook_arg, char **out, size_t *len, char *why, size_t why_len)
{
    char id[37], when[48], num[32];
    char *data_json = NULL;
    ProtobufCMessage *payload = NULL;
    buf b = {0};
    int rc;

    const ProtobufCMessageDescriptor *d = pbjson_registry_find(ev->type);
    if (d == NULL) {
        why_set(why, why_len, "event type \"%.200s\" has no payload message", ev->type);
        return BUS_UNKNOWN_TYPE;
    }
    payload = protobuf_c_message_unpack(d, NULL, ev->data_len, ev->data);
    if (payload == NULL) {
        why_set(why, why_len, "data does not parse as %.200s", d->name);
        return BUS_BAD_PAYLOAD;
    }
    if (hook != NULL && (rc = hook(ev, payload, hook_arg)) != 0) {
        why_set(why, why_len, "refused by the service's payload hook (code %d)", rc);
        rc = BUS_BAD_PAYLOAD;
        goto out;
    }
    pbjson_options po = {0, 0, 0, pbjson_registry_resolve, NULL};
    rc = pbjson_encode(payload, &po, &data_json, NULL);
    if (rc != PBJSON_OK) {
        why_set(why, why_len, "payload cannot be written as JSON: %s", pbjson_strerror(rc));
        rc = rc == PBJSON_NOMEM ? BUS_NOMEM : BUS_BAD_PAYLOAD;
        goto out;
    }

    bus_uuid_format(ev->id, id);
    format_time(ev->time_unix_nano, when, sizeof(when));
    puts_(&b, "{\"specversion\":\"1.0\",\"id\":\"");
    puts_(&b, id);
    puts_(&b, "\",\"source\":");
    {
        char src[160];
        snprintf(src, sizeof(src), "agentmesh/%s", service);
        put_str(&b, src, strlen(src));
    }
    puts_(&b, ",\"type\":");
    put_str(&b, ev->type, ev->type_len);
    puts_(&b, ",\"subject\":");
    put_str(&b, ev->stream, ev->stream_len);
    puts_(&b, ",\"time\":\"");
    puts_(&b, when);
    puts_(&b, "\",\"datacontenttype\":\"application/json\",\"sequence\":\"");
    snprintf(num, sizeof(num), "%llu", (unsigned long long)ev->position);
    puts_(&b, num);
    puts_(&b, "\",\"streamversion\":\"");
    snprintf(num, sizeof(num), "%llu", (unsigned long long)ev->stream_version);
    puts_(&b, num);
    puts_(&b, "\"");
    if (bus_traceparent_valid(ev->traceparent, ev->traceparent_len)) {
        puts_(&b, ",\"traceparent\":");
        put_str(&b, ev->traceparent, ev->traceparent_len);
    }
    puts_(&b, ",\"data\":");
    puts_(&b, data_json);
    puts_(&b, "}");
    if (b.failed) {
        free(b.p);
        rc = BUS_NOMEM;
        goto out;
    }
    *out = b.p;
    if (len)
        *len = b.len;
    rc = BUS_OK;
out:
    free(data_json);
    if (payload)
        protobuf_c_message_free_unpacked(payload, NULL);
    return rc;
}
