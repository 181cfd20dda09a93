/* A source's log read in place for a rebuild: the owning service's event
 * store env opened read-only in this process, its records decoded straight
 * from the map (zero-copy reads), with no service, gRPC call or page
 * encoding in between. LMDB lets readers share the env with its writer on
 * the same host; each page is one short read transaction. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/query/query.h"

struct qs_log {
    es_store *store;
};

int qs_log_open(const char *dir, qs_log **out)
{
    qs_log *l = calloc(1, sizeof *l);
    if (!l)
        return ES_NOMEM;
    es_options eo;
    es_options_init(&eo);
    eo.flags |= ES_OPT_RDONLY;
    int rc = es_open(dir, &eo, &l->store);
    if (rc) {
        qs_log_close(l);
        return rc;
    }
    *out = l;
    return ES_OK;
}

void qs_log_close(qs_log *l)
{
    if (!l)
        return;
    es_close(l->store);
    free(l);
}

int qs_log_read_all(void *src, int source, uint64_t from, unsigned limit,
                    qs_arena *ar, qs_event ***events, size_t *n, bool *end,
                    uint64_t *next, char *msg, size_t msglen)
{
    qs_log *l = src;
    es_txn *txn = NULL;
    es_page pg;
    qs_event **v = NULL;
    size_t nv = 0;
    if (limit < 1 || limit > ES_PAGE_MAX)
        return ES_INVALID;
    /* The page's zero-copy events (valid until the txn ends) live in the
     * arena with the events made from them: pages may be read in parallel. */
    es_event *buf = ar ? qs_arena_alloc(ar, limit * sizeof *buf)
                       : malloc(limit * sizeof *buf);
    if (!buf)
        return ES_NOMEM;
    int rc = es_txn_begin(l->store, &txn);
    if (!rc)
        rc = es_read_all(txn, from, ES_FORWARD, NULL, limit, buf, &pg);
    if (rc) {
        snprintf(msg, msglen, "reading the log at %llu: %s",
                 (unsigned long long)from, es_strerror(rc));
        goto out;
    }
    if (pg.count && !(v = calloc(pg.count, sizeof *v))) {
        rc = ES_NOMEM;
        goto out;
    }
    for (; nv < pg.count; nv++) {
        if ((rc = qs_event_from_es(source, &buf[nv], ar, &v[nv]))) {
            snprintf(msg, msglen, "event at position %llu: %s",
                     (unsigned long long)buf[nv].position,
                     es_strerror(rc));
            goto out;
        }
    }
    *events = v;
    *n = nv;
    *end = pg.end_of_stream != 0;
    *next = pg.next;
    v = NULL;
    nv = 0;
out:
    es_txn_end(txn);
    if (!ar)
        free(buf);
    for (size_t i = 0; i < nv; i++)
        qs_event_free(v[i]);
    free(v);
    return rc;
}
