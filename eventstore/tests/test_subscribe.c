/* test_subscribe.c: catch-up-then-live subscriptions while 8 threads append:
 * each subscriber sees every position exactly once, in order, across the
 * switch from catch-up to live; filters; a subscriber that never reads does
 * not hold appends up; cancel wakes a blocked waiter; timeouts. */
#include <pthread.h>

#include "eventstore/tests/test_util.h"

#define APPENDERS 8

static es_store *store;
static long per_thread, preload;
static uint64_t total;

static void *appender(void *arg)
{
    uint32_t me = (uint32_t)(uintptr_t)arg;
    for (long i = 0; i < per_thread; i++) {
        char name[32];
        es_event_data e;
        snprintf(name, sizeof name, "%s-%u", i % 3 ? "task" : "agent", me);
        tu_event(&e, me + 1000, (uint64_t)i, i % 3 ? "test.Task" : "test.Agent",
                 &i, sizeof i);
        CHECK_OK(es_append(store, name, ES_EXPECT_ANY, &e, 1, NULL));
    }
    return NULL;
}

typedef struct reader {
    uint64_t after;
    const char *prefix;
    uint64_t seen;
    uint64_t last;
} reader;

static void *subscriber(void *arg)
{
    reader *r = arg;
    es_sub *sub = NULL;
    es_filter f = {.stream_prefix = r->prefix};
    CHECK_OK(es_sub_open(store, r->after, r->prefix ? &f : NULL, &sub));
    uint64_t expect = r->after + 1;
    double deadline = tu_now() + 120;
    while (expect <= total) {
        es_event *ev = NULL;
        int rc = es_sub_next(sub, 1000, &ev);
        CHECK(tu_now() < deadline);
        if (rc == ES_TIMEOUT)
            continue;
        CHECK_OK(rc);
        if (r->prefix) {
            /* Filtered: increasing positions, only matching streams. */
            CHECK(ev->position >= expect);
            CHECK(!strncmp(ev->stream, r->prefix, strlen(r->prefix)));
            expect = ev->position + 1;
            r->seen++;
            r->last = ev->position;
            es_event_free(ev);
            if (r->seen == (uint64_t)(APPENDERS * (per_thread / 3 +
                                                   (per_thread % 3 ? 1 : 0))))
                break;
            continue;
        }
        CHECK(ev->position == expect);
        CHECK(es_sub_position(sub) == expect);
        expect++;
        r->seen++;
        es_event_free(ev);
    }
    es_sub_destroy(sub);
    return NULL;
}

static void *canceller(void *arg)
{
    es_sub *sub = arg;
    /* Cancel once the waiter is parked or about to be; either way it must
     * return ES_CLOSED. */
    es_sub_cancel(sub);
    return NULL;
}

static void test_switchover(void)
{
    /* Preload so subscribers start in catch-up, then go live mid-stream. */
    for (long i = 0; i < preload; i++) {
        es_event_data e;
        tu_event(&e, 999, (uint64_t)i, "test.Pre", NULL, 0);
        CHECK_OK(es_append(store, "agent-pre", ES_EXPECT_ANY, &e, 1, NULL));
    }
    total = (uint64_t)(preload + APPENDERS * per_thread);
    reader readers[4] = {{0, NULL, 0, 0},
                         {(uint64_t)preload / 2, NULL, 0, 0},
                         {(uint64_t)preload, NULL, 0, 0},
                         {(uint64_t)preload, "agent-", 0, 0}};
    /* A subscription that never reads: appends must not wait for it. */
    es_sub *idle = NULL;
    CHECK_OK(es_sub_open(store, 0, NULL, &idle));
    pthread_t subs[4], apps[APPENDERS];
    for (int i = 0; i < 4; i++)
        CHECK(pthread_create(&subs[i], NULL, subscriber, &readers[i]) == 0);
    for (int i = 0; i < APPENDERS; i++)
        CHECK(pthread_create(&apps[i], NULL, appender, (void *)(uintptr_t)i) == 0);
    for (int i = 0; i < APPENDERS; i++)
        pthread_join(apps[i], NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(subs[i], NULL);
    CHECK(readers[0].seen == total);
    CHECK(readers[1].seen == total - (uint64_t)preload / 2);
    CHECK(readers[2].seen == total - (uint64_t)preload);
    CHECK(readers[3].seen > 0);
    /* The idle one still starts from the beginning, at its own pace. */
    es_event *ev = NULL;
    CHECK_OK(es_sub_next(idle, 0, &ev));
    CHECK(ev->position == 1);
    es_event_free(ev);
    es_sub_destroy(idle);
}

static void test_timeout_and_cancel(void)
{
    es_sub *sub = NULL;
    es_event *ev = NULL;
    CHECK_OK(es_sub_open(store, total, NULL, &sub));
    CHECK_ES(ES_TIMEOUT, es_sub_next(sub, 0, &ev));
    CHECK_ES(ES_TIMEOUT, es_sub_next(sub, 20, &ev));
    pthread_t th;
    CHECK(pthread_create(&th, NULL, canceller, sub) == 0);
    CHECK_ES(ES_CLOSED, es_sub_next(sub, -1, &ev));
    pthread_join(th, NULL);
    CHECK_ES(ES_CLOSED, es_sub_next(sub, 0, &ev));
    es_sub_destroy(sub);
    /* A live event wakes a waiter. */
    CHECK_OK(es_sub_open(store, total, NULL, &sub));
    es_event_data e;
    tu_event(&e, 5000, 1, "test.Wake", NULL, 0);
    CHECK_OK(es_append(store, "agent-wake", ES_EXPECT_ANY, &e, 1, NULL));
    CHECK_OK(es_sub_next(sub, 10000, &ev));
    CHECK(ev->position == total + 1);
    es_event_free(ev);
    es_sub_destroy(sub);
}

static void test_limit(void)
{
    char dir[512];
    tu_tmpdir(dir, sizeof dir, "sublimit");
    es_options o = tu_options();
    o.max_subscriptions = 2;
    es_store *s = NULL;
    es_sub *a = NULL, *b = NULL, *c = NULL;
    CHECK_OK(es_open(dir, &o, &s));
    CHECK_OK(es_sub_open(s, 0, NULL, &a));
    CHECK_OK(es_sub_open(s, 0, NULL, &b));
    CHECK_ES(ES_LIMIT, es_sub_open(s, 0, NULL, &c));
    es_sub_destroy(a);
    CHECK_OK(es_sub_open(s, 0, NULL, &c));
    es_sub_destroy(b);
    es_sub_destroy(c);
    es_close(s);
    tu_rmtree(dir);
}

int main(void)
{
    char dir[512];
    tu_tmpdir(dir, sizeof dir, "sub");
    per_thread = tu_scale(3000, 1000, 300);
    preload = tu_scale(5000, 2000, 500);
    es_options o = tu_options();
    CHECK_OK(es_open(dir, &o, &store));
    test_switchover();
    test_timeout_and_cancel();
    test_limit();
    es_verify_report rep;
    CHECK_OK(es_verify(store, &rep));
    es_close(store);
    tu_rmtree(dir);
    printf("subscribe: %llu events, ok\n", (unsigned long long)total);
    return 0;
}
