/* The event feed: every event of each source by position (the payload
 * without memory values, the traceparent, no other metadata), and the
 * merged feed of both sources in the order the query service applied them,
 * numbered by a gap-free feed sequence of its own (checkpoint "feed"). */
#include <stdlib.h>
#include <string.h>

#include "services/pbjson/pbjson.h"
#include "services/pbjson/registry.h"
#include "services/query/query.h"

#define NS_MERGED "q.feed"
#define SEQ_NAME "feed"
#define CONTENT_TYPE "application/x-protobuf"

static const char *ns_of(int source)
{
    return source == QS_AGENTS ? "q.feed.agents" : "q.feed.memory";
}

int qs_feed_begin(qs_tx *tx)
{
    int rc = es_checkpoint_get(tx->txn, SEQ_NAME, &tx->feed_seq);
    if (rc == ES_NOT_FOUND) {
        tx->feed_seq = 0;
        rc = ES_OK;
    }
    return rc;
}

int qs_feed_flush(qs_tx *tx)
{
    return es_checkpoint_put(tx->txn, SEQ_NAME, tx->feed_seq);
}

/* The feed's record is an agentmesh.v1.Event, written here field by field
 * in the order and form protobuf-c gives (proto3: a field at its default is
 * left out; metadata always present, holding only the traceparent): every
 * event of a rebuild is packed once, and protobuf-c's generic packer cost
 * more than the LMDB put of the result. feed_test checks the bytes against
 * protobuf_c_message_pack for every shape of event. */
static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* A length-delimited field (tag, length, bytes), or nothing when empty. */
static size_t bytes_len(size_t n)
{
    return n ? 1 + varint_len(n) + n : 0;
}

static uint8_t *put_bytes(uint8_t *p, uint8_t tag, const void *b, size_t n)
{
    if (!n)
        return p;
    *p++ = tag;
    p = put_varint(p, n);
    memcpy(p, b, n);
    return p + n;
}

static size_t u64_len(uint64_t v)
{
    return v ? 1 + varint_len(v) : 0;
}

static uint8_t *put_u64(uint8_t *p, uint8_t tag, uint64_t v)
{
    if (!v)
        return p;
    *p++ = tag;
    return put_varint(p, v);
}

int qs_feed_pack(const qs_event *ev, qs_arena *ar, uint8_t **out,
                 size_t *len)
{
    const char *src = qs_source_name(ev->source);
    if (!src)
        src = "";
    size_t idl = strlen(ev->event_id), sl = strlen(ev->stream),
           tl = strlen(ev->type), tpl = strlen(ev->traceparent),
           srcl = strlen(src), ctl = sizeof CONTENT_TYPE - 1;
    size_t meta = bytes_len(tpl);
    uint64_t when = (uint64_t)ev->time_unix_nano;
    size_t n = bytes_len(idl) + bytes_len(sl) + u64_len(ev->stream_version) +
               u64_len(ev->position) + bytes_len(tl) + u64_len(when) +
               bytes_len(ev->data_len) + 1 + varint_len(meta) + meta +
               bytes_len(srcl) + bytes_len(ctl);
    uint8_t *b = ar ? qs_arena_alloc(ar, n) : malloc(n);
    if (!b)
        return ES_NOMEM;
    uint8_t *p = put_bytes(b, 0x0a, ev->event_id, idl);  /* 1 event_id */
    p = put_bytes(p, 0x12, ev->stream, sl);               /* 2 stream */
    p = put_u64(p, 0x18, ev->stream_version);             /* 3 */
    p = put_u64(p, 0x20, ev->position);                   /* 4 */
    p = put_bytes(p, 0x2a, ev->type, tl);                 /* 5 type */
    p = put_u64(p, 0x30, when);                           /* 6 int64 */
    p = put_bytes(p, 0x3a, ev->data, ev->data_len);       /* 7 data */
    *p++ = 0x4a;                                          /* 9 metadata */
    p = put_varint(p, meta);
    p = put_bytes(p, 0x1a, ev->traceparent, tpl);         /*   3 traceparent */
    p = put_bytes(p, 0x52, src, srcl);                    /* 10 source */
    p = put_bytes(p, 0x5a, CONTENT_TYPE, ctl);            /* 11 content_type */
    *out = b;
    *len = (size_t)(p - b);
    return ES_OK;
}

int qs_feed_apply(qs_tx *tx, const qs_event *ev)
{
    uint8_t *own = NULL, k[8], v[9];
    const uint8_t *buf = ev->feed;
    size_t len = ev->feed_len;
    int rc;
    if (!buf) {
        if ((rc = qs_feed_pack(ev, NULL, &own, &len)))
            return rc;
        buf = own;
    }
    qs_be64(k, ev->position);
    rc = es_kv_put(tx->txn, ns_of(ev->source), k, 8, buf, len);
    free(own);
    if (rc)
        return rc;
    qs_be64(k, ++tx->feed_seq);
    v[0] = (uint8_t)ev->source;
    qs_be64(v + 1, ev->position);
    return es_kv_put(tx->txn, NS_MERGED, k, 8, v, 9);
}

uint64_t qs_feed_last_seq(es_txn *txn)
{
    uint64_t seq = 0;
    if (es_checkpoint_get(txn, SEQ_NAME, &seq))
        seq = 0;
    return seq;
}

/* data_json from the stored payload bytes. */
static int fill_json(Agentmesh__V1__Event *e)
{
    const ProtobufCMessageDescriptor *d = pbjson_registry_find(e->type);
    char *json = NULL;
    if (d) {
        ProtobufCMessage *m =
            protobuf_c_message_unpack(d, NULL, e->data.len, e->data.data);
        if (m) {
            pbjson_options po = {0, 0, 0, pbjson_registry_resolve, NULL};
            int rc = pbjson_encode(m, &po, &json, NULL);
            protobuf_c_message_free_unpacked(m, NULL);
            if (rc == PBJSON_NOMEM)
                return ES_NOMEM;
        }
    }
    if (!json)
        return ES_OK;
    qs_free_str(e->data_json);
    e->data_json = json;
    return ES_OK;
}

static int decode(const void *v, size_t vl, Agentmesh__V1__Event **out)
{
    Agentmesh__V1__Event *e = agentmesh__v1__event__unpack(NULL, vl, v);
    if (!e)
        return ES_CORRUPT;
    *out = e;
    return ES_OK;
}

int qs_feed_get(es_txn *txn, int source, uint64_t position,
                Agentmesh__V1__Event **out)
{
    uint8_t k[8];
    const void *v;
    size_t vl;
    Agentmesh__V1__Event *e = NULL;
    qs_be64(k, position);
    int rc = es_kv_get(txn, ns_of(source), k, 8, &v, &vl);
    if (rc || (rc = decode(v, vl, &e)))
        return rc;
    if ((rc = fill_json(e))) {
        protobuf_c_message_free_unpacked(&e->base, NULL);
        return rc;
    }
    *out = e;
    return ES_OK;
}

static bool matches(const qs_feed_filter *f, const Agentmesh__V1__Event *e)
{
    if (f->stream_prefix && *f->stream_prefix &&
        strncmp(e->stream, f->stream_prefix, strlen(f->stream_prefix)))
        return false;
    if (!f->n_types)
        return true;
    for (size_t i = 0; i < f->n_types; i++)
        if (!strcmp(f->types[i], e->type))
            return true;
    return false;
}

typedef struct list_ctx {
    const qs_feed_filter *f;
    Agentmesh__V1__Event **out;
    size_t n;
    uint64_t last;
} list_ctx;

static int take(void *arg, es_txn *txn, const uint8_t *suffix, size_t sl,
                const void *val, size_t vl)
{
    list_ctx *c = arg;
    Agentmesh__V1__Event *e = NULL;
    int rc;
    if (sl != 8)
        return 0;
    c->last = qs_get_be64(suffix);
    if (c->f->source < 0) {
        if (vl != 9)
            return 0;
        const uint8_t *p = val;
        const void *ev;
        size_t el;
        uint8_t k[8];
        memcpy(k, p + 1, 8);
        rc = es_kv_get(txn, ns_of(p[0]), k, 8, &ev, &el);
        if (rc == ES_NOT_FOUND)
            return 0;
        if (rc || (rc = decode(ev, el, &e)))
            return -rc;
    } else if ((rc = decode(val, vl, &e))) {
        return -rc;
    }
    if (!matches(c->f, e)) {
        protobuf_c_message_free_unpacked(&e->base, NULL);
        return 0;
    }
    if ((rc = fill_json(e))) {
        protobuf_c_message_free_unpacked(&e->base, NULL);
        return -rc;
    }
    c->out[c->n++] = e;
    return 1;
}

int qs_feed_list(es_txn *txn, const qs_feed_filter *f, uint64_t after,
                 size_t limit, Agentmesh__V1__Event ***events, size_t *n,
                 uint64_t *last_cursor)
{
    list_ctx c = {f, NULL, 0, after};
    uint8_t a[8], last[QS_KEY_CAP];
    size_t last_len;
    bool more;
    if (!(c.out = calloc(limit ? limit : 1, sizeof *c.out)))
        return ES_NOMEM;
    qs_be64(a, after);
    int rc = qs_scan_page(txn, f->source < 0 ? NS_MERGED : ns_of(f->source),
                          NULL, 0, a, after ? 8 : 0, limit, take, &c, last,
                          &last_len, &more);
    if (rc) {
        qs_free_events(c.out, c.n);
        return rc;
    }
    *events = c.out;
    *n = c.n;
    *last_cursor = c.last;
    return ES_OK;
}
