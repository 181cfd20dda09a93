/* read.c: zero-copy page reads of one stream (through the stream index) and
 * of the whole log (through the position-ordered events table), forwards and
 * backwards, with stream-prefix and event-type filters. */
#include <string.h>

#include "eventstore/internal.h"

int es__filter_check(const es_filter *f)
{
    if (!f)
        return ES_OK;
    if (f->n_types > ES_FILTER_TYPES_MAX || (f->n_types && !f->types))
        return ES_INVALID;
    for (size_t i = 0; i < f->n_types; i++)
        if (!f->types[i] || !*f->types[i])
            return ES_INVALID;
    if (f->stream_prefix && strlen(f->stream_prefix) > ES_STREAM_NAME_MAX)
        return ES_INVALID;
    return ES_OK;
}

bool es__filter_match(const es_filter *f, const es_event *ev)
{
    if (!f)
        return true;
    if (f->stream_prefix && *f->stream_prefix) {
        size_t n = strlen(f->stream_prefix);
        if (ev->stream_len < n || memcmp(ev->stream, f->stream_prefix, n) != 0)
            return false;
    }
    if (f->n_types == 0)
        return true;
    for (size_t i = 0; i < f->n_types; i++)
        if (strlen(f->types[i]) == ev->type_len &&
            memcmp(f->types[i], ev->type, ev->type_len) == 0)
            return true;
    return false;
}

static int load_event(MDB_txn *txn, const es__dbs *dbs, uint64_t pos,
                      es_event *ev)
{
    uint8_t key[8];
    MDB_val k = {8, key}, d;
    es__put_u64(key, pos);
    int rc = mdb_get(txn, dbs->events, &k, &d);
    if (rc)
        return rc == MDB_NOTFOUND ? ES_CORRUPT : es__status_from_mdb(rc);
    if (es_record_decode(d.mv_data, d.mv_size, ev) || ev->position != pos)
        return ES_CORRUPT;
    return ES_OK;
}

int es_read_stream(es_txn *t, const char *stream, uint64_t from_version,
                   es_direction dir, size_t limit, es_event *events,
                   es_page *page)
{
    MDB_cursor *cur = NULL;
    uint8_t ikey[ES_STREAM_NAME_MAX + 9];
    uint64_t last;
    size_t n = 0;
    int rc;

    if (!t || !events || !page || limit == 0 || limit > ES_PAGE_MAX ||
        (dir != ES_FORWARD && dir != ES_BACKWARD))
        return ES_INVALID;
    if ((rc = es_stream_version(t, stream, &last)))
        return rc;
    size_t len = strlen(stream);
    memcpy(ikey, stream, len);
    ikey[len] = 0;
    es_page pg = {0, 0, 0};
    uint64_t v;
    if (dir == ES_FORWARD) {
        if (from_version > last) {
            /* Past the end: an empty page that says so. */
            pg.next = from_version;
            pg.end_of_stream = 1;
            *page = pg;
            return ES_OK;
        }
        v = from_version;
    } else {
        v = from_version > last ? last : from_version;
    }
    if ((rc = mdb_cursor_open(t->txn, t->store->dbs.stream_index, &cur)))
        return es__status_from_mdb(rc);
    es__put_u64(ikey + len + 1, v);
    MDB_val k = {len + 9, ikey}, d;
    rc = mdb_cursor_get(cur, &k, &d, MDB_SET_KEY);
    /* Versions are dense 0..last, so stepping the cursor walks them in
     * order; each entry is checked to still belong to this stream. */
    while (rc == 0 && n < limit) {
        if (k.mv_size != len + 9 || memcmp(k.mv_data, ikey, len + 1) != 0 ||
            d.mv_size != 8) {
            rc = ES_CORRUPT;
            goto out;
        }
        if ((rc = load_event(t->txn, &t->store->dbs, es__get_u64(d.mv_data),
                             &events[n])))
            goto out;
        v = events[n].stream_version;
        n++;
        if (dir == ES_FORWARD ? v == last : v == 0)
            break;
        rc = mdb_cursor_get(cur, &k, &d, dir == ES_FORWARD ? MDB_NEXT : MDB_PREV);
    }
    if (rc && rc != MDB_NOTFOUND) {
        rc = es__status_from_mdb(rc);
        goto out;
    }
    if (rc == MDB_NOTFOUND || n == 0) {
        rc = ES_CORRUPT;
        goto out;
    }
    rc = ES_OK;
    pg.count = n;
    if (dir == ES_FORWARD) {
        pg.next = v + 1;
        pg.end_of_stream = v == last;
    } else {
        pg.next = v == 0 ? 0 : v - 1;
        pg.end_of_stream = v == 0;
    }
    *page = pg;
out:
    if (cur)
        mdb_cursor_close(cur);
    return rc;
}

int es_read_all(es_txn *t, uint64_t from_position, es_direction dir,
                const es_filter *filter, size_t limit, es_event *events,
                es_page *page)
{
    MDB_cursor *cur = NULL;
    uint8_t key[8];
    size_t n = 0, scanned = 0;
    int rc;

    if (!t || !events || !page || limit == 0 || limit > ES_PAGE_MAX ||
        (dir != ES_FORWARD && dir != ES_BACKWARD) || es__filter_check(filter))
        return ES_INVALID;
    if ((rc = mdb_cursor_open(t->txn, t->store->dbs.events, &cur)))
        return es__status_from_mdb(rc);
    es_page pg = {0, 0, 0};
    MDB_val k, d;
    if (dir == ES_FORWARD) {
        es__put_u64(key, from_position ? from_position : 1);
        k.mv_size = 8;
        k.mv_data = key;
        rc = mdb_cursor_get(cur, &k, &d, MDB_SET_RANGE);
    } else {
        rc = mdb_cursor_get(cur, &k, &d, MDB_LAST);
        if (rc == 0 && k.mv_size == 8 &&
            es__get_u64(k.mv_data) > from_position) {
            es__put_u64(key, from_position);
            k.mv_size = 8;
            k.mv_data = key;
            rc = from_position == 0 ? MDB_NOTFOUND
                                    : mdb_cursor_get(cur, &k, &d, MDB_SET_KEY);
        }
    }
    uint64_t pos = 0;
    while (rc == 0) {
        es_event ev;
        if (k.mv_size != 8) {
            rc = ES_CORRUPT;
            goto out;
        }
        pos = es__get_u64(k.mv_data);
        if (es_record_decode(d.mv_data, d.mv_size, &ev) || ev.position != pos) {
            rc = ES_CORRUPT;
            goto out;
        }
        scanned++;
        if (es__filter_match(filter, &ev))
            events[n++] = ev;
        if (n == limit || (filter && filter->max_scan &&
                           scanned >= filter->max_scan))
            break;
        rc = mdb_cursor_get(cur, &k, &d, dir == ES_FORWARD ? MDB_NEXT : MDB_PREV);
    }
    if (rc && rc != MDB_NOTFOUND) {
        rc = es__status_from_mdb(rc);
        goto out;
    }
    if (rc == MDB_NOTFOUND) {
        /* Ran off the end: nothing more in this direction. */
        pg.end_of_stream = 1;
        if (dir == ES_FORWARD)
            pg.next = scanned ? pos + 1 : (from_position ? from_position : 1);
        else
            pg.next = 0;
    } else {
        /* Stopped early: is there anything after the last event examined? */
        int more = mdb_cursor_get(cur, &k, &d,
                                  dir == ES_FORWARD ? MDB_NEXT : MDB_PREV);
        if (more && more != MDB_NOTFOUND) {
            rc = es__status_from_mdb(more);
            goto out;
        }
        pg.end_of_stream = more == MDB_NOTFOUND;
        pg.next = dir == ES_FORWARD ? pos + 1 : pos - 1;
    }
    rc = ES_OK;
    pg.count = n;
    *page = pg;
out:
    if (cur)
        mdb_cursor_close(cur);
    return rc;
}
