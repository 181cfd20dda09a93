/* Catch-up: reads a source's log from the projection's checkpoint to its
 * end through EventStore.ReadAll pages and applies each page as one batch.
 * Used at start, on a gap in the live feed, after a NATS outage, on the idle
 * poll, and by rebuild. */
#include <stdlib.h>
#include <time.h>

#include "services/common/log.h"
#include "services/query/query.h"

#define CALL_TIMEOUT_MS 30000

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int qs_catch_up(qs_db *db, qs_client *c, int source, unsigned page,
                uint64_t *applied, qs_progress_fn progress, void *arg,
                qs_catch_up_times *times)
{
    uint64_t total = 0;
    int rc = ES_OK;
    for (;;) {
        uint64_t pos[QS_NSOURCES];
        qs_event **evs = NULL;
        size_t n = 0;
        bool end = false;
        uint64_t next = 0;
        char msg[256] = "";
        qs_db_positions_now(db, pos);
        double t0 = mono_s();
        rc = qs_client_read_all(c, source, pos[source] + 1, page,
                                CALL_TIMEOUT_MS, &evs, &n, &end, &next, msg,
                                sizeof msg);
        if (rc) {
            LOG_DEBUG("query: catch-up of %s: %s (%s)", qs_source_name(source),
                      es_strerror(rc), msg);
            break;
        }
        double t1 = mono_s();
        qs_apply_result res = {0, 0, 0, false};
        if (n)
            rc = qs_apply(db, source, evs, n, &res);
        if (times) {
            times->reading += t1 - t0;
            times->applying += mono_s() - t1;
        }
        for (size_t i = 0; i < n; i++)
            qs_event_free(evs[i]);
        free(evs);
        if (rc)
            break;
        total += res.applied;
        if (progress)
            progress(arg, source, res.checkpoint ? res.checkpoint : pos[source],
                     total);
        if (res.gap) {
            LOG_ERROR("query: %s's ReadAll skipped positions after %llu",
                      qs_source_name(source),
                      (unsigned long long)res.checkpoint);
            rc = ES_CORRUPT;
            break;
        }
        if (end || n == 0)
            break;
    }
    if (applied)
        *applied = total;
    return rc;
}
