/* subscribe.c: catch-up-then-live subscriptions. A subscription never holds
 * events pushed to it: the writer only publishes the last committed position
 * and wakes waiters; each subscription reads the log itself, in position
 * order, a bounded page at a time. That makes the switch from catch-up to
 * live free of gaps and duplicates and keeps a slow reader from ever
 * blocking an append. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "eventstore/internal.h"

/* Events copied per read transaction, and events examined per page for a
 * selective filter, so one page bounds both memory and reader-slot time. */
#define SUB_PAGE 256
#define SUB_SCAN 8192

struct es_sub {
    es_store *s;
    es_filter filter;             /* owned copies of the caller's strings */
    char *prefix;
    char **types;
    uint64_t pos;                 /* last position handed out */
    uint64_t read_to;             /* next position to read from the log */
    es_event *buf[SUB_PAGE];      /* copied, not yet handed out */
    size_t head, count;
    es_event page[SUB_PAGE];      /* scratch for the zero-copy read */
    bool cancelled;               /* guarded by the store's notify_mu */
};

static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static void free_filter(es_sub *sub)
{
    if (sub->types)
        for (size_t i = 0; i < sub->filter.n_types; i++)
            free(sub->types[i]);
    free(sub->types);
    free(sub->prefix);
}

static int copy_filter(es_sub *sub, const es_filter *f)
{
    if (!f)
        return ES_OK;
    if (f->stream_prefix && *f->stream_prefix &&
        !(sub->prefix = dup_str(f->stream_prefix)))
        return ES_NOMEM;
    if (f->n_types) {
        if (!(sub->types = calloc(f->n_types, sizeof *sub->types)))
            return ES_NOMEM;
        sub->filter.n_types = f->n_types;
        for (size_t i = 0; i < f->n_types; i++)
            if (!(sub->types[i] = dup_str(f->types[i])))
                return ES_NOMEM;
    }
    sub->filter.stream_prefix = sub->prefix;
    sub->filter.types = (const char *const *)sub->types;
    return ES_OK;
}

int es_sub_open(es_store *s, uint64_t after, const es_filter *filter,
                es_sub **out)
{
    es_sub *sub = NULL;
    int rc;
    if (!s || !out || after == UINT64_MAX || es__filter_check(filter))
        return ES_INVALID;
    if (!(sub = calloc(1, sizeof *sub)))
        return ES_NOMEM;
    sub->s = s;
    sub->pos = after;
    sub->read_to = after + 1;
    if ((rc = copy_filter(sub, filter)))
        goto out;
    sub->filter.max_scan = SUB_SCAN;
    pthread_mutex_lock(&s->notify_mu);
    if (s->closed)
        rc = ES_CLOSED;
    else if (s->subs >= s->opts.max_subscriptions)
        rc = ES_LIMIT;
    else
        s->subs++;
    pthread_mutex_unlock(&s->notify_mu);
    if (rc)
        goto out;
    *out = sub;
    sub = NULL;
out:
    if (sub) {
        free_filter(sub);
        free(sub);
    }
    return rc;
}

/* Read the next page of matching events into the buffer. */
static int fill(es_sub *sub, bool *at_end)
{
    es_txn t;
    es_page pg;
    memset(&t, 0, sizeof t);
    t.store = sub->s;
    int rc;
    if ((rc = es__read_begin(sub->s, &t.txn)))
        return rc;
    rc = es_read_all(&t, sub->read_to, ES_FORWARD, &sub->filter, SUB_PAGE,
                     sub->page, &pg);
    if (rc == ES_OK) {
        sub->head = 0;
        sub->count = 0;
        uint64_t next = pg.next;
        for (size_t i = 0; i < pg.count; i++) {
            if ((rc = es_event_copy(&sub->page[i], &sub->buf[i]))) {
                /* Keep what was copied; resume at the one that was not. */
                next = sub->page[i].position;
                *at_end = false;
                break;
            }
            sub->count++;
        }
        sub->read_to = next;
        if (rc == ES_OK)
            *at_end = pg.end_of_stream;
        if (sub->count)
            rc = ES_OK;
    }
    es__read_end(sub->s, t.txn);
    return rc;
}

static void deadline_after(struct timespec *ts, int ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (long)(ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

/* Sleep until a commit reaches read_to, cancellation, close or the deadline. */
static int wait_commit(es_sub *sub, int timeout_ms, const struct timespec *dl)
{
    es_store *s = sub->s;
    int rc = ES_OK;
    pthread_mutex_lock(&s->notify_mu);
    while (rc == ES_OK && s->committed_pos < sub->read_to) {
        if (sub->cancelled || s->closed)
            rc = ES_CLOSED;
        else if (timeout_ms == 0)
            rc = ES_TIMEOUT;
        else if (timeout_ms < 0)
            pthread_cond_wait(&s->notify_cv, &s->notify_mu);
        else if (pthread_cond_timedwait(&s->notify_cv, &s->notify_mu, dl) ==
                 ETIMEDOUT)
            rc = ES_TIMEOUT;
    }
    if (rc == ES_OK && (sub->cancelled || s->closed))
        rc = ES_CLOSED;
    pthread_mutex_unlock(&s->notify_mu);
    return rc;
}

static bool cancelled(es_sub *sub)
{
    pthread_mutex_lock(&sub->s->notify_mu);
    bool c = sub->cancelled || sub->s->closed;
    pthread_mutex_unlock(&sub->s->notify_mu);
    return c;
}

int es_sub_next(es_sub *sub, int timeout_ms, es_event **out)
{
    struct timespec dl = {0, 0};
    int rc;
    if (!sub || !out)
        return ES_INVALID;
    if (timeout_ms > 0)
        deadline_after(&dl, timeout_ms);
    for (;;) {
        if (cancelled(sub))
            return ES_CLOSED;
        if (sub->count) {
            es_event *ev = sub->buf[sub->head];
            sub->buf[sub->head++] = NULL;
            sub->count--;
            sub->pos = ev->position;
            *out = ev;
            return ES_OK;
        }
        bool at_end = false;
        if ((rc = fill(sub, &at_end)))
            return rc;
        if (sub->count || !at_end)
            continue;
        if ((rc = wait_commit(sub, timeout_ms, &dl)))
            return rc;
    }
}

uint64_t es_sub_position(const es_sub *sub)
{
    return sub ? sub->pos : 0;
}

void es_sub_cancel(es_sub *sub)
{
    if (!sub)
        return;
    pthread_mutex_lock(&sub->s->notify_mu);
    sub->cancelled = true;
    pthread_cond_broadcast(&sub->s->notify_cv);
    pthread_mutex_unlock(&sub->s->notify_mu);
}

void es_sub_destroy(es_sub *sub)
{
    if (!sub)
        return;
    for (size_t i = 0; i < sub->count; i++)
        es_event_free(sub->buf[sub->head + i]);
    pthread_mutex_lock(&sub->s->notify_mu);
    sub->s->subs--;
    pthread_mutex_unlock(&sub->s->notify_mu);
    free_filter(sub);
    free(sub);
}
