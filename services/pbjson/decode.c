/* pbjson's reader: proto3 JSON text to a protobuf-c message. jansson parses
 * (duplicate keys refused, UTF-8 checked); this file walks the parsed value
 * against the message descriptor, building the message with malloc so that
 * protobuf_c_message_free_unpacked(msg, NULL) frees it, complete or not. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "services/pbjson/internal.h"

/* The path to the value being decoded, for error messages: kept as
 * pointers and formatted only when an error is written. */
#define PATH_SEGS 64
#define SEG_NUL ((size_t)-1) /* a segment name ending at its NUL */

typedef struct path_seg {
    const char *name; /* NULL for an array index */
    size_t len;       /* or SEG_NUL */
    long index;
} path_seg;

typedef struct dec {
    const pbjson_options *opts;
    unsigned flags;
    unsigned max_depth;
    size_t max_elements;
    size_t elements;
    path_seg path[PATH_SEGS]; /* deeper segments are counted, not kept */
    size_t npath;
    char *err;
    size_t errlen;
} dec;

static int decode_message(dec *d, const ProtobufCMessageDescriptor *desc, json_t *j,
                          ProtobufCMessage *m, unsigned depth);

static int failf(dec *d, int status, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void path_format(const dec *d, char *out, size_t cap)
{
    size_t o = 0;
    out[0] = '\0';
    for (size_t i = 0; i < d->npath && i < PATH_SEGS; i++) {
        const path_seg *s = &d->path[i];
        int w;
        if (!s->name) {
            w = snprintf(out + o, cap - o, "[%ld]", s->index);
        } else {
            size_t n = s->len == SEG_NUL ? strlen(s->name) : s->len;
            w = snprintf(out + o, cap - o, "%s%.*s", o ? "." : "",
                         (int)(n > 255 ? 255 : n), s->name);
        }
        if (w < 0 || (size_t)w >= cap - o)
            return; /* cut at cap, as snprintf leaves it */
        o += (size_t)w;
    }
}

static int failf(dec *d, int status, const char *fmt, ...)
{
    if (d->err != NULL && d->errlen > 0) {
        char msg[256], path[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        path_format(d, path, sizeof(path));
        if (path[0])
            snprintf(d->err, d->errlen, "%s: %s", path, msg);
        else
            snprintf(d->err, d->errlen, "%s", msg);
    }
    return status;
}

/* Path bookkeeping for error messages: push returns the old depth. A
 * name is borrowed: it must outlive the segment (JSON keys, the caller's
 * path string). index < 0 with a name, else name NULL. */
static size_t path_push(dec *d, const char *name, size_t len, long index)
{
    size_t old = d->npath;
    if (old < PATH_SEGS)
        d->path[old] = (path_seg){index >= 0 ? NULL : name, len, index};
    d->npath++;
    return old;
}

static void path_pop(dec *d, size_t old)
{
    d->npath = old;
}

static int parse_int(dec *d, json_t *j, int64_t lo, int64_t hi, int64_t *out)
{
    if (json_is_integer(j)) {
        json_int_t v = json_integer_value(j);
        if (v < lo || v > hi)
            return failf(d, PBJSON_INVALID, "integer %lld out of range", (long long)v);
        *out = v;
        return PBJSON_OK;
    }
    if (json_is_real(j)) {
        double v = json_real_value(j);
        if (v != floor(v) || v < (double)lo || v > (double)hi || v >= 9223372036854775808.0)
            return failf(d, PBJSON_INVALID, "number is not an integer in range");
        *out = (int64_t)v;
        return PBJSON_OK;
    }
    if (json_is_string(j)) {
        const char *s = json_string_value(j);
        char *end;
        if (s[0] == '\0' || s[0] == ' ' || s[0] == '+')
            return failf(d, PBJSON_INVALID, "expected an integer, got \"%.40s\"", s);
        errno = 0;
        long long v = strtoll(s, &end, 10);
        if (errno != 0 || *end != '\0' || v < lo || v > hi)
            return failf(d, PBJSON_INVALID, "expected an integer in range, got \"%.40s\"", s);
        *out = v;
        return PBJSON_OK;
    }
    return failf(d, PBJSON_INVALID, "expected an integer");
}

static int parse_uint(dec *d, json_t *j, uint64_t hi, uint64_t *out)
{
    if (json_is_integer(j)) {
        json_int_t v = json_integer_value(j);
        if (v < 0 || (uint64_t)v > hi)
            return failf(d, PBJSON_INVALID, "integer %lld out of range", (long long)v);
        *out = (uint64_t)v;
        return PBJSON_OK;
    }
    if (json_is_real(j)) {
        double v = json_real_value(j);
        if (v != floor(v) || v < 0 || v > (double)hi || v >= 18446744073709551616.0)
            return failf(d, PBJSON_INVALID, "number is not an unsigned integer in range");
        *out = (uint64_t)v;
        return PBJSON_OK;
    }
    if (json_is_string(j)) {
        const char *s = json_string_value(j);
        char *end;
        if (s[0] < '0' || s[0] > '9')
            return failf(d, PBJSON_INVALID, "expected an unsigned integer, got \"%.40s\"", s);
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno != 0 || *end != '\0' || v > hi)
            return failf(d, PBJSON_INVALID, "expected an unsigned integer in range, got \"%.40s\"", s);
        *out = v;
        return PBJSON_OK;
    }
    return failf(d, PBJSON_INVALID, "expected an unsigned integer");
}

static int parse_double(dec *d, json_t *j, bool is_float, double *out)
{
    double v;
    if (json_is_number(j)) {
        v = json_number_value(j);
    } else if (json_is_string(j)) {
        const char *s = json_string_value(j);
        char *end;
        if (strcmp(s, "NaN") == 0) {
            v = NAN;
        } else if (strcmp(s, "Infinity") == 0) {
            v = INFINITY;
        } else if (strcmp(s, "-Infinity") == 0) {
            v = -INFINITY;
        } else {
            errno = 0;
            v = strtod(s, &end);
            if (s[0] == '\0' || *end != '\0' || errno == ERANGE || isnan(v) || isinf(v))
                return failf(d, PBJSON_INVALID, "expected a number, got \"%.40s\"", s);
        }
    } else {
        return failf(d, PBJSON_INVALID, "expected a number");
    }
    if (is_float && isfinite(v) && (v > 3.4028234663852886e38 || v < -3.4028234663852886e38))
        return failf(d, PBJSON_INVALID, "number out of float range");
    *out = v;
    return PBJSON_OK;
}

static int parse_enum(dec *d, const ProtobufCEnumDescriptor *ed, json_t *j, int *out)
{
    if (json_is_string(j)) {
        const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value_by_name(ed, json_string_value(j));
        if (ev == NULL)
            return failf(d, PBJSON_INVALID, "unknown value \"%.60s\" of enum %s", json_string_value(j),
                         ed->name);
        *out = ev->value;
        return PBJSON_OK;
    }
    int64_t v;
    if (json_is_integer(j) && parse_int(d, j, INT32_MIN, INT32_MAX, &v) == PBJSON_OK) {
        *out = (int)v;
        return PBJSON_OK;
    }
    return failf(d, PBJSON_INVALID, "expected a name of enum %s", ed->name);
}

static char *dup_string(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* Decodes one value of the field's type into dst (zeroed or default). */
static int decode_value(dec *d, const ProtobufCFieldDescriptor *f, json_t *j, void *dst,
                        unsigned depth)
{
    int rc;
    int64_t iv;
    uint64_t uv;
    double dv;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        if ((rc = parse_int(d, j, INT32_MIN, INT32_MAX, &iv)) != PBJSON_OK)
            return rc;
        *(int32_t *)dst = (int32_t)iv;
        return PBJSON_OK;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        if ((rc = parse_uint(d, j, UINT32_MAX, &uv)) != PBJSON_OK)
            return rc;
        *(uint32_t *)dst = (uint32_t)uv;
        return PBJSON_OK;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        if ((rc = parse_int(d, j, INT64_MIN, INT64_MAX, &iv)) != PBJSON_OK)
            return rc;
        *(int64_t *)dst = iv;
        return PBJSON_OK;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        if ((rc = parse_uint(d, j, UINT64_MAX, &uv)) != PBJSON_OK)
            return rc;
        *(uint64_t *)dst = uv;
        return PBJSON_OK;
    case PROTOBUF_C_TYPE_FLOAT:
        if ((rc = parse_double(d, j, true, &dv)) != PBJSON_OK)
            return rc;
        *(float *)dst = (float)dv;
        return PBJSON_OK;
    case PROTOBUF_C_TYPE_DOUBLE:
        if ((rc = parse_double(d, j, false, &dv)) != PBJSON_OK)
            return rc;
        *(double *)dst = dv;
        return PBJSON_OK;
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(j))
            return failf(d, PBJSON_INVALID, "expected true or false");
        *(protobuf_c_boolean *)dst = json_is_true(j);
        return PBJSON_OK;
    case PROTOBUF_C_TYPE_ENUM:
        return parse_enum(d, f->descriptor, j, (int *)dst);
    case PROTOBUF_C_TYPE_STRING: {
        if (!json_is_string(j))
            return failf(d, PBJSON_INVALID, "expected a string");
        char *s = dup_string(json_string_value(j), json_string_length(j));
        if (s == NULL)
            return failf(d, PBJSON_NOMEM, "out of memory");
        if (strlen(s) != json_string_length(j)) {
            free(s);
            return failf(d, PBJSON_INVALID, "string holds a NUL character");
        }
        char *old = *(char **)dst;
        if (old != NULL && old != (char *)f->default_value && old != protobuf_c_empty_string)
            free(old);
        *(char **)dst = s;
        return PBJSON_OK;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        if (!json_is_string(j))
            return failf(d, PBJSON_INVALID, "expected base64 text");
        size_t n = json_string_length(j), outlen = 0;
        uint8_t *buf = malloc(n / 4 * 3 + 3);
        if (buf == NULL)
            return failf(d, PBJSON_NOMEM, "out of memory");
        if (pbjson_b64_decode(json_string_value(j), n, buf, &outlen) != 0) {
            free(buf);
            return failf(d, PBJSON_INVALID, "not valid base64");
        }
        ProtobufCBinaryData *b = dst;
        if (b->data != NULL && (f->default_value == NULL ||
                                b->data != ((const ProtobufCBinaryData *)f->default_value)->data))
            free(b->data);
        b->data = buf;
        b->len = outlen;
        return PBJSON_OK;
    }
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessageDescriptor *md = f->descriptor;
        ProtobufCMessage **slot = dst;
        if (*slot == NULL) {
            ProtobufCMessage *m = calloc(1, md->sizeof_message);
            if (m == NULL)
                return failf(d, PBJSON_NOMEM, "out of memory");
            md->message_init(m);
            *slot = m;
        }
        return decode_message(d, md, j, *slot, depth + 1);
    }
    }
    return failf(d, PBJSON_INVALID, "unsupported field type");
}

static int count_elements(dec *d, size_t n)
{
    if (n > d->max_elements - d->elements)
        return failf(d, PBJSON_TOO_LARGE, "more than %zu elements", d->max_elements);
    d->elements += n;
    return PBJSON_OK;
}

static int decode_repeated(dec *d, const ProtobufCFieldDescriptor *f, json_t *j, char *base,
                           unsigned depth)
{
    size_t *count = (size_t *)(base + f->quantifier_offset);
    void **arr = (void **)(base + f->offset);
    size_t sz = pbjson_type_size(f->type);
    if (json_is_null(j))
        return PBJSON_OK;
    if (*count != 0)
        return failf(d, PBJSON_INVALID, "field given twice");
    if (!json_is_array(j))
        return failf(d, PBJSON_INVALID, "expected an array");
    if (depth + 1 > d->max_depth)
        return failf(d, PBJSON_TOO_DEEP, "nested deeper than %u", d->max_depth);
    size_t n = json_array_size(j);
    int rc = count_elements(d, n);
    if (rc != PBJSON_OK || n == 0)
        return rc;
    char *a = calloc(n, sz);
    if (a == NULL)
        return failf(d, PBJSON_NOMEM, "out of memory");
    *arr = a;
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(j, i);
        size_t mark = path_push(d, NULL, 0, (long)i);
        if (json_is_null(v) && f->type == PROTOBUF_C_TYPE_MESSAGE) {
            path_pop(d, mark);
            *count = i;
            return failf(d, PBJSON_INVALID, "null element [%zu] in a repeated message field", i);
        }
        rc = decode_value(d, f, v, a + i * sz, depth + 1);
        path_pop(d, mark);
        /* Count what is initialised so a failure frees exactly that. */
        *count = i + (rc == PBJSON_OK || f->type == PROTOBUF_C_TYPE_MESSAGE ? 1 : 0);
        if (rc != PBJSON_OK)
            return rc;
    }
    return PBJSON_OK;
}

/* Converts a JSON object key to the map key field's value. */
static int decode_map_key(dec *d, const ProtobufCFieldDescriptor *kf, const char *key, void *dst)
{
    json_t *tmp;
    int rc;
    if (kf->type == PROTOBUF_C_TYPE_BOOL) {
        if (strcmp(key, "true") != 0 && strcmp(key, "false") != 0)
            return failf(d, PBJSON_INVALID, "map key \"%.40s\" is not true or false", key);
        *(protobuf_c_boolean *)dst = key[0] == 't';
        return PBJSON_OK;
    }
    tmp = json_string(key);
    if (tmp == NULL)
        return failf(d, PBJSON_NOMEM, "out of memory");
    rc = decode_value(d, kf, tmp, dst, 0);
    json_decref(tmp);
    return rc;
}

static int decode_map(dec *d, const ProtobufCFieldDescriptor *f, json_t *j, char *base,
                      unsigned depth)
{
    size_t *count = (size_t *)(base + f->quantifier_offset);
    ProtobufCMessage ***arr = (ProtobufCMessage ***)(base + f->offset);
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    const char *key;
    json_t *v;
    if (json_is_null(j))
        return PBJSON_OK;
    if (*count != 0)
        return failf(d, PBJSON_INVALID, "field given twice");
    if (!json_is_object(j))
        return failf(d, PBJSON_INVALID, "expected an object (map)");
    if (depth + 1 > d->max_depth)
        return failf(d, PBJSON_TOO_DEEP, "nested deeper than %u", d->max_depth);
    size_t n = json_object_size(j);
    int rc = count_elements(d, n);
    if (rc != PBJSON_OK || n == 0)
        return rc;
    *arr = calloc(n, sizeof(ProtobufCMessage *));
    if (*arr == NULL)
        return failf(d, PBJSON_NOMEM, "out of memory");
    json_object_foreach(j, key, v)
    {
        ProtobufCMessage *e = calloc(1, ed->sizeof_message);
        if (e == NULL)
            return failf(d, PBJSON_NOMEM, "out of memory");
        ed->message_init(e);
        (*arr)[(*count)++] = e;
        size_t mark = path_push(d, key, SEG_NUL, -1);
        rc = decode_map_key(d, &ed->fields[0], key, (char *)e + ed->fields[0].offset);
        if (rc == PBJSON_OK) {
            if (json_is_null(v) && ed->fields[1].type != PROTOBUF_C_TYPE_MESSAGE)
                rc = failf(d, PBJSON_INVALID, "null map value");
            else if (!json_is_null(v))
                rc = decode_value(d, &ed->fields[1], v, (char *)e + ed->fields[1].offset, depth + 1);
        }
        path_pop(d, mark);
        if (rc != PBJSON_OK)
            return rc;
    }
    return PBJSON_OK;
}

static int decode_any(dec *d, const ProtobufCMessageDescriptor *desc, json_t *j,
                      ProtobufCMessage *m, unsigned depth)
{
    json_t *type = json_object_get(j, "@type");
    const ProtobufCFieldDescriptor *uf = protobuf_c_message_descriptor_get_field(desc, 1);
    const ProtobufCFieldDescriptor *vf = protobuf_c_message_descriptor_get_field(desc, 2);
    ProtobufCMessage *inner = NULL;
    json_t *copy = NULL;
    int rc;
    if (json_object_size(j) == 0)
        return PBJSON_OK;
    if (!json_is_string(type))
        return failf(d, PBJSON_INVALID, "Any needs a string \"@type\"");
    const char *url = json_string_value(type);
    const char *slash = strrchr(url, '/');
    const char *name = slash ? slash + 1 : url;
    const ProtobufCMessageDescriptor *id =
        d->opts && d->opts->resolve ? d->opts->resolve(name, d->opts->resolve_arg) : NULL;
    if (id == NULL)
        return failf(d, PBJSON_UNKNOWN_TYPE, "unknown Any type \"%.80s\"", url);
    inner = calloc(1, id->sizeof_message);
    if (inner == NULL)
        return failf(d, PBJSON_NOMEM, "out of memory");
    id->message_init(inner);
    if (pbjson_wkt_of(id) != WKT_NONE) {
        json_t *value = json_object_get(j, "value");
        if (value == NULL || json_object_size(j) != 2) {
            rc = failf(d, PBJSON_INVALID, "Any of %s needs exactly \"@type\" and \"value\"", id->name);
            goto out;
        }
        rc = decode_message(d, id, value, inner, depth + 1);
    } else {
        copy = json_copy(j);
        if (copy == NULL) {
            rc = failf(d, PBJSON_NOMEM, "out of memory");
            goto out;
        }
        json_object_del(copy, "@type");
        rc = decode_message(d, id, copy, inner, depth + 1);
    }
    if (rc != PBJSON_OK)
        goto out;
    size_t n = protobuf_c_message_get_packed_size(inner);
    uint8_t *buf = malloc(n ? n : 1);
    char *u = dup_string(url, strlen(url));
    if (buf == NULL || u == NULL) {
        free(buf);
        free(u);
        rc = failf(d, PBJSON_NOMEM, "out of memory");
        goto out;
    }
    protobuf_c_message_pack(inner, buf);
    char **us = (char **)((char *)m + uf->offset);
    if (*us != NULL && *us != (char *)uf->default_value && *us != protobuf_c_empty_string)
        free(*us);
    *us = u;
    ProtobufCBinaryData *b = (ProtobufCBinaryData *)((char *)m + vf->offset);
    free(b->data);
    b->data = buf;
    b->len = n;
out:
    json_decref(copy);
    if (inner != NULL)
        protobuf_c_message_free_unpacked(inner, NULL);
    return rc;
}

static int decode_time(dec *d, enum pbjson_wkt w, const ProtobufCMessageDescriptor *desc, json_t *j,
                       ProtobufCMessage *m)
{
    int64_t s;
    int32_t ns;
    if (!json_is_string(j))
        return failf(d, PBJSON_INVALID, "expected a %s string",
                     w == WKT_DURATION ? "duration (\"1.5s\")" : "RFC 3339 timestamp");
    int rc = w == WKT_DURATION ? pbjson_duration_parse(json_string_value(j), &s, &ns)
                               : pbjson_timestamp_parse(json_string_value(j), &s, &ns);
    if (rc != 0)
        return failf(d, PBJSON_INVALID, "malformed %s \"%.60s\"",
                     w == WKT_DURATION ? "duration" : "timestamp", json_string_value(j));
    *(int64_t *)((char *)m + protobuf_c_message_descriptor_get_field(desc, 1)->offset) = s;
    *(int32_t *)((char *)m + protobuf_c_message_descriptor_get_field(desc, 2)->offset) = ns;
    return PBJSON_OK;
}

static int decode_message(dec *d, const ProtobufCMessageDescriptor *desc, json_t *j,
                          ProtobufCMessage *m, unsigned depth)
{
    const char *key;
    json_t *v;
    int rc;
    if (depth > d->max_depth)
        return failf(d, PBJSON_TOO_DEEP, "nested deeper than %u", d->max_depth);
    enum pbjson_wkt w = pbjson_wkt_of(desc);
    if (w == WKT_DURATION || w == WKT_TIMESTAMP)
        return decode_time(d, w, desc, j, m);
    if (!json_is_object(j))
        return failf(d, PBJSON_INVALID, "expected an object for %s", desc->name);
    if (w == WKT_ANY)
        return decode_any(d, desc, j, m, depth);
    char *base = (char *)m;
    json_object_foreach(j, key, v)
    {
        const ProtobufCFieldDescriptor *f = pbjson_find_field(desc, key);
        size_t mark = path_push(d, key, SEG_NUL, -1);
        if (f == NULL) {
            if (d->flags & PBJSON_IGNORE_UNKNOWN) {
                path_pop(d, mark);
                continue;
            }
            path_pop(d, mark);
            return failf(d, PBJSON_INVALID, "unknown field \"%.60s\" in %s", key, desc->name);
        }
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t *qcase = (uint32_t *)(base + f->quantifier_offset);
            if (json_is_null(v)) {
                path_pop(d, mark);
                continue;
            }
            if (*qcase != 0) {
                path_pop(d, mark);
                return failf(d, PBJSON_INVALID, "more than one field of a oneof set (\"%.60s\")", key);
            }
            /* Oneof members share storage; start from a zero value. */
            memset(base + f->offset, 0, pbjson_type_size(f->type));
            *qcase = f->id;
            rc = decode_value(d, f, v, base + f->offset, depth);
        } else if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            rc = pbjson_is_map_field(f) ? decode_map(d, f, v, base, depth)
                                        : decode_repeated(d, f, v, base, depth);
        } else if (json_is_null(v)) {
            rc = PBJSON_OK;
        } else {
            rc = decode_value(d, f, v, base + f->offset, depth);
            if (rc == PBJSON_OK && f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset &&
                f->type != PROTOBUF_C_TYPE_MESSAGE && f->type != PROTOBUF_C_TYPE_STRING &&
                f->type != PROTOBUF_C_TYPE_BYTES)
                *(protobuf_c_boolean *)(base + f->quantifier_offset) = 1;
        }
        path_pop(d, mark);
        if (rc != PBJSON_OK) {
            if (d->err && d->err[0] == '\0')
                failf(d, rc, "%s", pbjson_strerror(rc));
            return rc;
        }
    }
    return PBJSON_OK;
}

static void dec_init(dec *d, const pbjson_options *opts, char *err, size_t errlen)
{
    memset(d, 0, sizeof(*d));
    d->opts = opts;
    d->flags = opts ? opts->flags : 0;
    d->max_depth = opts && opts->max_depth ? opts->max_depth : PBJSON_DEPTH_DEFAULT;
    d->max_elements = opts && opts->max_elements ? opts->max_elements : PBJSON_ELEMENTS_DEFAULT;
    d->err = err;
    d->errlen = errlen;
    if (err && errlen)
        err[0] = '\0';
}

int pbjson_decode(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                  const pbjson_options *opts, ProtobufCMessage **out, char *err, size_t errlen)
{
    dec d;
    json_error_t jerr;
    ProtobufCMessage *m = NULL;
    json_t *root = NULL;
    int rc;

    dec_init(&d, opts, err, errlen);
    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        rc = failf(&d, PBJSON_SYNTAX, "malformed JSON at line %d column %d: %s", jerr.line,
                   jerr.column, jerr.text);
        goto out;
    }
    m = calloc(1, desc->sizeof_message);
    if (m == NULL) {
        rc = failf(&d, PBJSON_NOMEM, "out of memory");
        goto out;
    }
    desc->message_init(m);
    rc = decode_message(&d, desc, root, m, 0);
    if (rc != PBJSON_OK)
        goto out;
    *out = m;
    m = NULL;
out:
    if (m != NULL)
        protobuf_c_message_free_unpacked(m, NULL);
    json_decref(root);
    return rc;
}

int pbjson_set_field(ProtobufCMessage *msg, const char *path, const char *value, char *err,
                     size_t errlen)
{
    dec d;
    char seg[256];
    const ProtobufCMessageDescriptor *desc = msg->descriptor;
    ProtobufCMessage *m = msg;
    json_t *jv = NULL;
    int rc;

    dec_init(&d, NULL, err, errlen);
    for (;;) {
        const char *dot = strchr(path, '.');
        size_t n = dot ? (size_t)(dot - path) : strlen(path);
        if (n == 0 || n >= sizeof(seg))
            return failf(&d, PBJSON_INVALID, "bad field path");
        memcpy(seg, path, n);
        seg[n] = '\0';
        const ProtobufCFieldDescriptor *f = pbjson_find_field(desc, seg);
        if (f == NULL)
            return failf(&d, PBJSON_INVALID, "unknown field \"%.60s\" in %s", seg, desc->name);
        path_push(&d, path, n, -1);
        char *base = (char *)m;
        if (dot != NULL) {
            if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label == PROTOBUF_C_LABEL_REPEATED)
                return failf(&d, PBJSON_INVALID, "not a message field");
            if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
                uint32_t *qcase = (uint32_t *)(base + f->quantifier_offset);
                if (*qcase != 0 && *qcase != f->id)
                    return failf(&d, PBJSON_INVALID, "another field of its oneof is set");
                *qcase = f->id;
            }
            ProtobufCMessage **slot = (ProtobufCMessage **)(base + f->offset);
            if (*slot == NULL) {
                const ProtobufCMessageDescriptor *md = f->descriptor;
                ProtobufCMessage *sub = calloc(1, md->sizeof_message);
                if (sub == NULL)
                    return failf(&d, PBJSON_NOMEM, "out of memory");
                md->message_init(sub);
                *slot = sub;
            }
            m = *slot;
            desc = f->descriptor;
            path = dot + 1;
            continue;
        }
        if (f->type == PROTOBUF_C_TYPE_MESSAGE || pbjson_is_map_field(f))
            return failf(&d, PBJSON_INVALID, "cannot be set from a parameter (a message)");
        /* Text values arrive unquoted: booleans and numbers are read from
         * their text, everything else as a JSON string. */
        if (f->type == PROTOBUF_C_TYPE_BOOL) {
            if (strcmp(value, "true") != 0 && strcmp(value, "false") != 0)
                return failf(&d, PBJSON_INVALID, "expected true or false");
            jv = json_boolean(value[0] == 't');
        } else if (f->type == PROTOBUF_C_TYPE_ENUM) {
            char *end;
            long lv = strtol(value, &end, 10);
            jv = (*value && *end == '\0') ? json_integer(lv) : json_string(value);
        } else {
            jv = json_string(value);
        }
        if (jv == NULL)
            return failf(&d, PBJSON_INVALID, "value is not valid UTF-8");
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t *count = (size_t *)(base + f->quantifier_offset);
            char **arr = (char **)(base + f->offset);
            size_t sz = pbjson_type_size(f->type);
            if (*count >= PBJSON_ELEMENTS_DEFAULT) {
                rc = failf(&d, PBJSON_TOO_LARGE, "too many values");
                goto out;
            }
            char *na = realloc(*arr, (*count + 1) * sz);
            if (na == NULL) {
                rc = failf(&d, PBJSON_NOMEM, "out of memory");
                goto out;
            }
            *arr = na;
            memset(na + *count * sz, 0, sz);
            rc = decode_value(&d, f, jv, na + *count * sz, 0);
            if (rc == PBJSON_OK)
                (*count)++;
        } else {
            if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
                uint32_t *qcase = (uint32_t *)(base + f->quantifier_offset);
                if (*qcase != 0 && *qcase != f->id) {
                    rc = failf(&d, PBJSON_INVALID, "another field of its oneof is set");
                    goto out;
                }
                if (*qcase != f->id)
                    memset(base + f->offset, 0, pbjson_type_size(f->type));
                *qcase = f->id;
            }
            rc = decode_value(&d, f, jv, base + f->offset, 0);
        }
        goto out;
    }
out:
    json_decref(jv);
    return rc;
}
