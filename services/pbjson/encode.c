/* pbjson's writer: a protobuf-c message to proto3 JSON text, walking the
 * message descriptor. Output is built in one growable buffer. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/pbjson/internal.h"

typedef struct enc {
    strbuf sb;
    const pbjson_options *opts;
    unsigned flags;
    unsigned max_depth;
    int status;
} enc;

static void put_message(enc *e, const ProtobufCMessage *m, unsigned depth);

static void fail(enc *e, int status)
{
    if (e->status == PBJSON_OK)
        e->status = status;
}

static void put_double(enc *e, double v, bool is_float)
{
    char buf[40];
    if (isnan(v)) {
        sb_puts(&e->sb, "\"NaN\"");
        return;
    }
    if (isinf(v)) {
        sb_puts(&e->sb, v > 0 ? "\"Infinity\"" : "\"-Infinity\"");
        return;
    }
    /* The shortest precision that reads back to the same value. */
    int lo = is_float ? 6 : 15, hi = is_float ? 9 : 17;
    for (int p = lo; p <= hi; p++) {
        snprintf(buf, sizeof(buf), "%.*g", p, v);
        if (is_float ? (float)strtod(buf, NULL) == (float)v : strtod(buf, NULL) == v)
            break;
    }
    sb_puts(&e->sb, buf);
}

static void put_enum(enc *e, const ProtobufCEnumDescriptor *ed, int v)
{
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(ed, v);
    if (ev != NULL)
        sb_json_string(&e->sb, ev->name, strlen(ev->name));
    else
        sb_printf(&e->sb, "%d", v);
}

static void put_bytes(enc *e, const ProtobufCBinaryData *b)
{
    if (b->len > (SIZE_MAX - 8) / 4 * 3) {
        fail(e, PBJSON_NOMEM);
        return;
    }
    char *tmp = malloc(4 * ((b->len + 2) / 3) + 1);
    if (tmp == NULL) {
        fail(e, PBJSON_NOMEM);
        return;
    }
    size_t n = pbjson_b64_encode(b->data, b->len, tmp);
    sb_putc(&e->sb, '"');
    sb_append(&e->sb, tmp, n);
    sb_putc(&e->sb, '"');
    free(tmp);
}

/* Writes the single value at `p` of field type f->type. `as_key` quotes
 * numbers and bools, as map keys must be strings. */
static void put_value(enc *e, const ProtobufCFieldDescriptor *f, const void *p, unsigned depth,
                      bool as_key)
{
    const char *q = as_key ? "\"" : "";
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        sb_printf(&e->sb, "%s%d%s", q, *(const int32_t *)p, q);
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        sb_printf(&e->sb, "%s%u%s", q, *(const uint32_t *)p, q);
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        sb_printf(&e->sb, "\"%lld\"", (long long)*(const int64_t *)p);
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        sb_printf(&e->sb, "\"%llu\"", (unsigned long long)*(const uint64_t *)p);
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        put_double(e, *(const float *)p, true);
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        put_double(e, *(const double *)p, false);
        break;
    case PROTOBUF_C_TYPE_BOOL:
        sb_printf(&e->sb, "%s%s%s", q, *(const protobuf_c_boolean *)p ? "true" : "false", q);
        break;
    case PROTOBUF_C_TYPE_ENUM:
        put_enum(e, f->descriptor, *(const int *)p);
        break;
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        if (s == NULL)
            s = "";
        sb_json_string(&e->sb, s, strlen(s));
        break;
    }
    case PROTOBUF_C_TYPE_BYTES:
        put_bytes(e, p);
        break;
    case PROTOBUF_C_TYPE_MESSAGE: {
        const ProtobufCMessage *m = *(ProtobufCMessage *const *)p;
        if (m == NULL)
            sb_puts(&e->sb, "{}");
        else
            put_message(e, m, depth + 1);
        break;
    }
    }
}

/* Whether a singular field holds its default (and so is omitted). */
static bool is_default(const ProtobufCFieldDescriptor *f, const void *p)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return *(const uint32_t *)p == 0;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return *(const uint64_t *)p == 0;
    case PROTOBUF_C_TYPE_FLOAT:
        return *(const float *)p == 0 && !signbit(*(const float *)p);
    case PROTOBUF_C_TYPE_DOUBLE:
        return *(const double *)p == 0 && !signbit(*(const double *)p);
    case PROTOBUF_C_TYPE_BOOL:
        return !*(const protobuf_c_boolean *)p;
    case PROTOBUF_C_TYPE_ENUM:
        return *(const int *)p == 0;
    case PROTOBUF_C_TYPE_STRING: {
        const char *s = *(char *const *)p;
        return s == NULL || s[0] == '\0';
    }
    case PROTOBUF_C_TYPE_BYTES:
        return ((const ProtobufCBinaryData *)p)->len == 0;
    case PROTOBUF_C_TYPE_MESSAGE:
        return *(ProtobufCMessage *const *)p == NULL;
    }
    return true;
}

static void put_name(enc *e, const ProtobufCFieldDescriptor *f, bool *first)
{
    char jn[256];
    const char *name = f->name;
    if (!(e->flags & PBJSON_ORIGINAL_NAMES) && pbjson_json_name(f->name, jn, sizeof(jn)) != NULL)
        name = jn;
    if (!*first)
        sb_putc(&e->sb, ',');
    *first = false;
    sb_json_string(&e->sb, name, strlen(name));
    sb_putc(&e->sb, ':');
}

static void put_map(enc *e, const ProtobufCFieldDescriptor *f, size_t n,
                    ProtobufCMessage *const *entries, unsigned depth)
{
    const ProtobufCMessageDescriptor *ed = f->descriptor;
    const ProtobufCFieldDescriptor *kf = &ed->fields[0], *vf = &ed->fields[1];
    sb_putc(&e->sb, '{');
    for (size_t i = 0; i < n; i++) {
        const char *base = (const char *)entries[i];
        if (i)
            sb_putc(&e->sb, ',');
        put_value(e, kf, base + kf->offset, depth, true);
        sb_putc(&e->sb, ':');
        put_value(e, vf, base + vf->offset, depth + 1, false);
    }
    sb_putc(&e->sb, '}');
}

static bool put_wkt(enc *e, const ProtobufCMessage *m, unsigned depth)
{
    const ProtobufCMessageDescriptor *d = m->descriptor;
    enum pbjson_wkt w = pbjson_wkt_of(d);
    char buf[64];
    if (w == WKT_DURATION || w == WKT_TIMESTAMP) {
        const ProtobufCFieldDescriptor *sf = protobuf_c_message_descriptor_get_field(d, 1);
        const ProtobufCFieldDescriptor *nf = protobuf_c_message_descriptor_get_field(d, 2);
        int64_t s = *(const int64_t *)((const char *)m + sf->offset);
        int32_t ns = *(const int32_t *)((const char *)m + nf->offset);
        int rc = w == WKT_DURATION ? pbjson_duration_format(s, ns, buf, sizeof(buf))
                                   : pbjson_timestamp_format(s, ns, buf, sizeof(buf));
        if (rc != 0) {
            fail(e, PBJSON_ENCODE);
            return true;
        }
        sb_json_string(&e->sb, buf, strlen(buf));
        return true;
    }
    if (w != WKT_ANY)
        return false;
    const ProtobufCFieldDescriptor *uf = protobuf_c_message_descriptor_get_field(d, 1);
    const ProtobufCFieldDescriptor *vf = protobuf_c_message_descriptor_get_field(d, 2);
    const char *url = *(char *const *)((const char *)m + uf->offset);
    const ProtobufCBinaryData *val = (const ProtobufCBinaryData *)((const char *)m + vf->offset);
    if (url == NULL || url[0] == '\0') {
        sb_puts(&e->sb, "{}");
        return true;
    }
    const char *slash = strrchr(url, '/');
    const char *name = slash ? slash + 1 : url;
    const ProtobufCMessageDescriptor *inner =
        e->opts && e->opts->resolve ? e->opts->resolve(name, e->opts->resolve_arg) : NULL;
    if (inner == NULL) {
        fail(e, PBJSON_UNKNOWN_TYPE);
        return true;
    }
    ProtobufCMessage *im = protobuf_c_message_unpack(inner, NULL, val->len, val->data);
    if (im == NULL) {
        fail(e, PBJSON_ENCODE);
        return true;
    }
    /* Write the inner message's fields after "@type"; special forms nest
     * under "value", as the spec says. */
    sb_puts(&e->sb, "{\"@type\":");
    sb_json_string(&e->sb, url, strlen(url));
    if (pbjson_wkt_of(inner) != WKT_NONE) {
        sb_puts(&e->sb, ",\"value\":");
        put_message(e, im, depth + 1);
        sb_putc(&e->sb, '}');
    } else {
        size_t mark = e->sb.len;
        put_message(e, im, depth + 1);
        /* put_message wrote "{...}": splice its body after "@type". */
        if (!e->sb.failed && e->status == PBJSON_OK) {
            char *body = e->sb.data + mark;
            size_t blen = e->sb.len - mark;
            if (blen > 2) {
                body[0] = ',';
            } else {
                e->sb.len = mark;
                sb_putc(&e->sb, '}');
            }
        }
    }
    protobuf_c_message_free_unpacked(im, NULL);
    return true;
}

static void put_message(enc *e, const ProtobufCMessage *m, unsigned depth)
{
    if (depth > e->max_depth) {
        fail(e, PBJSON_ENCODE);
        return;
    }
    if (put_wkt(e, m, depth))
        return;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    const char *base = (const char *)m;
    bool first = true;
    sb_putc(&e->sb, '{');
    for (unsigned i = 0; i < d->n_fields && e->status == PBJSON_OK; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        const void *p = base + f->offset;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            if (*(const uint32_t *)(base + f->quantifier_offset) != f->id)
                continue;
            put_name(e, f, &first);
            put_value(e, f, p, depth, false);
        } else if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            const char *arr = *(char *const *)p;
            if (n == 0 && !(e->flags & PBJSON_EMIT_DEFAULTS))
                continue;
            put_name(e, f, &first);
            if (pbjson_is_map_field(f)) {
                put_map(e, f, n, (ProtobufCMessage *const *)arr, depth);
                continue;
            }
            size_t sz = pbjson_type_size(f->type);
            sb_putc(&e->sb, '[');
            for (size_t k = 0; k < n; k++) {
                if (k)
                    sb_putc(&e->sb, ',');
                put_value(e, f, arr + k * sz, depth, false);
            }
            sb_putc(&e->sb, ']');
        } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset != 0 &&
                   f->type != PROTOBUF_C_TYPE_MESSAGE && f->type != PROTOBUF_C_TYPE_STRING &&
                   f->type != PROTOBUF_C_TYPE_BYTES) {
            /* proto2 optional scalar: written when present. */
            if (!*(const protobuf_c_boolean *)(base + f->quantifier_offset) &&
                !(e->flags & PBJSON_EMIT_DEFAULTS))
                continue;
            put_name(e, f, &first);
            put_value(e, f, p, depth, false);
        } else {
            if (is_default(f, p)) {
                if (!(e->flags & PBJSON_EMIT_DEFAULTS))
                    continue;
                if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
                    put_name(e, f, &first);
                    sb_puts(&e->sb, "null");
                    continue;
                }
            }
            put_name(e, f, &first);
            put_value(e, f, p, depth, false);
        }
    }
    sb_putc(&e->sb, '}');
}

int pbjson_encode(const ProtobufCMessage *msg, const pbjson_options *opts, char **out, size_t *len)
{
    enc e;
    memset(&e, 0, sizeof(e));
    e.opts = opts;
    e.flags = opts ? opts->flags : 0;
    e.max_depth = opts && opts->max_depth ? opts->max_depth : PBJSON_DEPTH_DEFAULT;
    e.status = PBJSON_OK;
    put_message(&e, msg, 0);
    if (e.sb.failed && e.status == PBJSON_OK)
        e.status = PBJSON_NOMEM;
    if (e.status != PBJSON_OK) {
        free(e.sb.data);
        return e.status;
    }
    *out = e.sb.data;
    if (len)
        *len = e.sb.len;
    return PBJSON_OK;
}
