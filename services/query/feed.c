/* The event feed: every event of each source by position (the payload
 * without memory values, the traceparent, no other metadata), and the
 * merged feed of both sources in the order the query service applied them,
 * numbered by a gap-free feed sequence of its own (checkpoint "feed"). */
#include <stdlib.h>
#include <string.h>

#include "services/pbjson/pbjson.h"
#include "services/pbjson/registry.h"
#include "services/query/query.h"
#include "services/query/wire.h"

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

/* The feed's record: an agentmesh.v1.Event with the metadata holding only
 * the traceparent (protobuf-c writes the metadata message even empty),
 * written with wire.h: every event of a rebuild is packed once. */
int qs_feed_pack(const qs_event *ev, qs_arena *ar, uint8_t **out,
                 size_t *len)
{
    const char *src = qs_source_name(ev->source);
    if (!src)
        src = "";
    size_t idl = strlen(ev->event_id), sl = strlen(ev->stream),
           tl = strlen(ev->type), tpl = strlen(ev->traceparent),
           srcl = strlen(src), ctl = sizeof CONTENT_TYPE - 1;
    size_t meta = wire_bytes_len(3, tpl);
    uint64_t when = (uint64_t)ev->time_unix_nano;
    size_t n = wire_bytes_len(1, idl) + wire_bytes_len(2, sl) +
               wire_u64_len(3, ev->stream_version) +
               wire_u64_len(4, ev->position) + wire_bytes_len(5, tl) +
               wire_u64_len(6, when) + wire_bytes_len(7, ev->data_len) +
               wire_elem_len(9, meta) + wire_bytes_len(10, srcl) +
               wire_bytes_len(11, ctl);
    uint8_t *b = ar ? qs_arena_alloc(ar, n) : malloc(n);
    if (!b)
        return ES_NOMEM;
    uint8_t *p = wire_put_bytes(b, 1, ev->event_id, idl);
    p = wire_put_bytes(p, 2, ev->stream, sl);
    p = wire_put_u64(p, 3, ev->stream_version);
    p = wire_put_u64(p, 4, ev->position);
    p = wire_put_bytes(p, 5, ev->type, tl);
    p = wire_put_u64(p, 6, when);
    p = wire_put_bytes(p, 7, ev->data, ev->data_len);
    p = wire_put_varint(p, wire_tag(9, WIRE_LEN)); /* metadata */
    p = wire_put_varint(p, meta);
    p = wire_put_bytes(p, 3, ev->traceparent, tpl);
    p = wire_put_bytes(p, 10, src, srcl);
    p = wire_put_bytes(p, 11, CONTENT_TYPE, ctl);
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
