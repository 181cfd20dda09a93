/* record.c: the versioned, length-prefixed binary encoding of one event as
 * stored under its position, its bounded decoder (the fuzzed parser), event
 * copies and the name syntax checks.
 *
 * Layout, version 1 (integers big-endian):
 *   u8 version (1) | u8 flags (bit 0: keyed hash) | id[16] | u64 position |
 *   u64 stream_version | i64 time_unix_nano |
 *   7 strings, each u16 length + bytes + NUL: stream, type, content_type,
 *     correlation_id, causation_id, traceparent, actor |
 *   u32 data length + data | hash[32]
 * The hash covers the previous record's hash and every byte before it. */
#include <stdlib.h>
#include <string.h>

#include "eventstore/internal.h"

void es__put_u64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

uint64_t es__get_u64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static size_t slen(const char *s)
{
    return s ? strlen(s) : 0;
}

size_t es__record_size(const char *stream, const es_event_data *ev)
{
    return ES__REC_FIXED + 3 * ES__REC_NSTR + slen(stream) + slen(ev->type) +
           slen(ev->content_type) + slen(ev->meta.correlation_id) +
           slen(ev->meta.causation_id) + slen(ev->meta.traceparent) +
           slen(ev->meta.actor) + 4 + ev->data_len + ES_HASH_SIZE;
}

static uint8_t *put_str(uint8_t *p, const char *s)
{
    size_t n = slen(s);
    p[0] = (uint8_t)(n >> 8);
    p[1] = (uint8_t)n;
    if (n)
        memcpy(p + 2, s, n);
    p[2 + n] = 0;
    return p + 3 + n;
}

void es__record_encode(uint8_t *buf, size_t size, const char *stream,
                       const es_event_data *ev, uint64_t position,
                       uint64_t version, int64_t time_ns, bool keyed)
{
    uint8_t *p = buf;
    *p++ = ES__RECORD_V1;
    *p++ = keyed ? ES__FLAG_KEYED : 0;
    memcpy(p, ev->id, ES_ID_SIZE);
    p += ES_ID_SIZE;
    es__put_u64(p, position);
    es__put_u64(p + 8, version);
    es__put_u64(p + 16, (uint64_t)time_ns);
    p += 24;
    p = put_str(p, stream);
    p = put_str(p, ev->type);
    p = put_str(p, ev->content_type);
    p = put_str(p, ev->meta.correlation_id);
    p = put_str(p, ev->meta.causation_id);
    p = put_str(p, ev->meta.traceparent);
    p = put_str(p, ev->meta.actor);
    p[0] = (uint8_t)(ev->data_len >> 24);
    p[1] = (uint8_t)(ev->data_len >> 16);
    p[2] = (uint8_t)(ev->data_len >> 8);
    p[3] = (uint8_t)ev->data_len;
    p += 4;
    if (ev->data_len)
        memcpy(p, ev->data, ev->data_len);
    p += ev->data_len;
    memset(p, 0, ES_HASH_SIZE);
    (void)size;
}

/* Take one string: length, bytes, a NUL, and no NUL inside. */
static int get_str(const uint8_t **pp, const uint8_t *end, const char **s,
                   size_t *len)
{
    const uint8_t *p = *pp;
    if (end - p < 2)
        return ES_CORRUPT;
    size_t n = ((size_t)p[0] << 8) | p[1];
    p += 2;
    if ((size_t)(end - p) < n + 1 || p[n] != 0 || memchr(p, 0, n) != NULL)
        return ES_CORRUPT;
    *s = (const char *)p;
    *len = n;
    *pp = p + n + 1;
    return ES_OK;
}

int es_record_decode(const void *buf, size_t len, es_event *out)
{
    if (!buf || !out)
        return ES_INVALID;
    const uint8_t *p = buf, *end = p + len;
    es_event ev;
    int rc;

    if (len < ES__REC_MIN || p[0] != ES__RECORD_V1 ||
        (p[1] & ~ES__FLAG_KEYED) != 0)
        return ES_CORRUPT;
    memset(&ev, 0, sizeof ev);
    ev.keyed = (p[1] & ES__FLAG_KEYED) != 0;
    memcpy(ev.id, p + 2, ES_ID_SIZE);
    p += 2 + ES_ID_SIZE;
    ev.position = es__get_u64(p);
    ev.stream_version = es__get_u64(p + 8);
    ev.time_unix_nano = (int64_t)es__get_u64(p + 16);
    p += 24;
    if ((rc = get_str(&p, end, &ev.stream, &ev.stream_len)) ||
        (rc = get_str(&p, end, &ev.type, &ev.type_len)) ||
        (rc = get_str(&p, end, &ev.content_type, &ev.content_type_len)) ||
        (rc = get_str(&p, end, &ev.correlation_id, &ev.correlation_id_len)) ||
        (rc = get_str(&p, end, &ev.causation_id, &ev.causation_id_len)) ||
        (rc = get_str(&p, end, &ev.traceparent, &ev.traceparent_len)) ||
        (rc = get_str(&p, end, &ev.actor, &ev.actor_len)))
        return rc;
    if (ev.stream_len == 0 || ev.type_len == 0 || ev.position == 0)
        return ES_CORRUPT;
    if (end - p < 4)
        return ES_CORRUPT;
    size_t dlen = ((size_t)p[0] << 24) | ((size_t)p[1] << 16) |
                  ((size_t)p[2] << 8) | p[3];
    p += 4;
    /* The data must leave exactly the hash behind: no trailing bytes. */
    if ((size_t)(end - p) != dlen + ES_HASH_SIZE)
        return ES_CORRUPT;
    ev.data = p;
    ev.data_len = dlen;
    memcpy(ev.hash, p + dlen, ES_HASH_SIZE);
    *out = ev;
    return ES_OK;
}

/* Append one string and its NUL to the copy's block. */
static const char *copy_str(char **pp, const char *s, size_t n)
{
    char *d = *pp;
    if (n)
        memcpy(d, s, n);
    d[n] = 0;
    *pp = d + n + 1;
    return d;
}

int es_event_copy(const es_event *ev, es_event **out)
{
    if (!ev || !out)
        return ES_INVALID;
    size_t strs = ev->stream_len + ev->type_len + ev->content_type_len +
                  ev->correlation_id_len + ev->causation_id_len +
                  ev->traceparent_len + ev->actor_len + ES__REC_NSTR;
    es_event *c = malloc(sizeof *c + strs + ev->data_len);
    if (!c)
        return ES_NOMEM;
    *c = *ev;
    char *p = (char *)(c + 1);
    c->stream = copy_str(&p, ev->stream, ev->stream_len);
    c->type = copy_str(&p, ev->type, ev->type_len);
    c->content_type = copy_str(&p, ev->content_type, ev->content_type_len);
    c->correlation_id = copy_str(&p, ev->correlation_id, ev->correlation_id_len);
    c->causation_id = copy_str(&p, ev->causation_id, ev->causation_id_len);
    c->traceparent = copy_str(&p, ev->traceparent, ev->traceparent_len);
    c->actor = copy_str(&p, ev->actor, ev->actor_len);
    if (ev->data_len)
        memcpy(p, ev->data, ev->data_len);
    c->data = p;
    *out = c;
    return ES_OK;
}

void es_event_free(es_event *ev)
{
    free(ev);
}

static bool name_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' ||
           c == ':' || c == '@' || c == '/';
}

void es_id_format(const uint8_t id[ES_ID_SIZE], char out[37])
{
    static const char digits[] = "0123456789abcdef";
    size_t o = 0;
    for (size_t i = 0; i < ES_ID_SIZE; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = digits[id[i] >> 4];
        out[o++] = digits[id[i] & 15];
    }
    out[o] = '\0';
}

int es_stream_name_valid(const char *name)
{
    if (!name || !name[0] || name[0] == '$')
        return 0;
    size_t i = 0;
    for (; name[i]; i++)
        if (i >= ES_STREAM_NAME_MAX || !name_char((unsigned char)name[i]))
            return 0;
    return 1;
}
