/* The projector's write path: a batch of one source's events applied in one
 * group-committed write transaction, each event's read-model changes and the
 * source's checkpoint together, so a crash or a duplicate delivery can never
 * count an event twice or lose one. */
#include <stdlib.h>
#include <string.h>

#include "services/query/query.h"

const char *const qs_namespaces[] = {
    "q.agents",      "q.agents.status", "q.agents.cap",  "q.agents.label",
    "q.tasks",       "q.tasks.pos",     "q.tasks.agent", "q.tasks.state",
    "q.tasks.time",  "q.timeline",      "q.memory",      "q.stats",
    "q.rate",        "q.latency",       "q.feed.agents", "q.feed.memory",
    "q.feed",        NULL,
};

typedef struct batch {
    int source;
    qs_event *const *evs;
    size_t n;
    qs_apply_result res;
    qs_tx tx;
} batch;

static int apply_one(qs_tx *tx, const qs_event *ev)
{
    int rc;
    if ((rc = qs_feed_apply(tx, ev)) || (rc = qs_stats_apply(tx, ev)))
        return rc;
    if (ev->source == QS_AGENTS) {
        if ((rc = qs_agents_apply(tx, ev)) || (rc = qs_tasks_apply(tx, ev)))
            return rc;
    } else if ((rc = qs_memory_apply(tx, ev))) {
        return rc;
    }
    return ES_OK;
}

/* May run more than once for one es_write (map growth): everything it
 * reports is recomputed from the txn on each run. */
static int apply_batch(es_txn *txn, const es_append_result *appended,
                       void *arg)
{
    (void)appended;
    batch *b = arg;
    const char *name = qs_source_name(b->source);
    uint64_t cp = 0;
    int rc = es_checkpoint_get(txn, name, &cp);
    if (rc == ES_NOT_FOUND)
        cp = 0;
    else if (rc)
        return rc;
    memset(&b->res, 0, sizeof b->res);
    b->tx.txn = txn;
    b->tx.n_counters = b->tx.n_rates = 0;
    memset(b->tx.events, 0, sizeof b->tx.events);
    if ((rc = qs_feed_begin(&b->tx)))
        return rc;
    for (size_t i = 0; i < b->n; i++) {
        const qs_event *ev = b->evs[i];
        if (ev->position <= cp) {
            b->res.duplicates++;
            continue;
        }
        if (ev->position != cp + 1) {
            b->res.gap = true;
            break;
        }
        if ((rc = apply_one(&b->tx, ev)))
            return rc;
        cp = ev->position;
        b->res.applied++;
    }
    b->res.checkpoint = cp;
    if (!b->res.applied)
        return ES_OK;
    if ((rc = qs_tx_flush(&b->tx)) || (rc = qs_feed_flush(&b->tx)))
        return rc;
    return es_checkpoint_put(txn, name, cp);
}

int qs_apply(qs_db *db, int source, qs_event *const *evs, size_t n,
             qs_apply_result *res)
{
    batch *b = calloc(1, sizeof *b);
    if (!b)
        return ES_NOMEM;
    b->source = source;
    b->evs = evs;
    b->n = n;
    int rc = es_write_inline(qs_db_store(db), apply_batch, b);
    if (!rc && b->res.applied)
        qs_db_advanced(db, source, b->res.checkpoint);
    if (!rc && res)
        *res = b->res;
    free(b);
    return rc;
}
