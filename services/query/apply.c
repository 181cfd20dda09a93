/* The projector's write path: a batch of one source's events applied in one
 * group-committed write transaction, each event's read-model changes and the
 * source's checkpoint together, so a crash or a duplicate delivery can never
 * count an event twice or lose one. */
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
} batch;

static int apply_one(es_txn *txn, const qs_event *ev)
{
    int rc;
    if ((rc = qs_feed_apply(txn, ev)) || (rc = qs_stats_apply(txn, ev)))
        return rc;
    if (ev->source == QS_AGENTS) {
        if ((rc = qs_agents_apply(txn, ev)) || (rc = qs_tasks_apply(txn, ev)))
            return rc;
    } else if ((rc = qs_memory_apply(txn, ev))) {
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
        if ((rc = apply_one(txn, ev)))
            return rc;
        cp = ev->position;
        b->res.applied++;
    }
    b->res.checkpoint = cp;
    if (b->res.applied && (rc = es_checkpoint_put(txn, name, cp)))
        return rc;
    return ES_OK;
}

int qs_apply(qs_db *db, int source, qs_event *const *evs, size_t n,
             qs_apply_result *res)
{
    batch b = {source, evs, n, {0, 0, 0, false}};
    int rc = es_write(qs_db_store(db), apply_batch, &b);
    if (rc)
        return rc;
    if (b.res.applied)
        qs_db_advanced(db, source, b.res.checkpoint);
    if (res)
        *res = b.res;
    return ES_OK;
}
