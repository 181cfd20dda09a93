/* test_alloc.c: allocation-failure injection. The library's malloc and
 * calloc are wrapped at link time (-Wl,--wrap); each operation is run with
 * its 1st, 2nd, ... allocation failing until it succeeds, and every failing
 * run must return ES_NOMEM, leak nothing (ASan checks at exit) and leave the
 * store consistent. */
#include <stdatomic.h>

#include "eventstore/tests/test_util.h"

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);

/* Allocations left before one fails; negative: none fails. */
static atomic_long countdown = -1;

static int should_fail(void)
{
    long left = atomic_load(&countdown);
    while (left >= 0) {
        if (atomic_compare_exchange_weak(&countdown, &left, left - 1))
            return left == 0;
    }
    return 0;
}

void *__wrap_malloc(size_t n)
{
    return should_fail() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return should_fail() ? NULL : __real_calloc(n, size);
}

typedef int (*op_fn)(void *arg);

/* Run op with allocation k failing, k = 0, 1, ... until it succeeds. */
static int inject(const char *name, op_fn op, void *arg)
{
    int failures = 0;
    for (long k = 0; k < 1000; k++) {
        atomic_store(&countdown, k);
        int rc = op(arg);
        long left = atomic_exchange(&countdown, -1);
        if (rc == ES_OK) {
            /* Succeeded although allocation k was to fail: either it was
             * never reached (done) or a failed one was retried. */
            if (left >= 0) {
                printf("alloc %-12s: %d failure points, all ES_NOMEM\n", name,
                       failures);
                return failures;
            }
            continue;
        }
        if (rc != ES_NOMEM) {
            fprintf(stderr, "%s with allocation %ld failing: %s\n", name, k,
                    es_errname(rc));
            abort();
        }
        failures++;
    }
    fprintf(stderr, "%s never succeeded\n", name);
    abort();
}

static char dir[512];
static es_store *store;
static uint64_t seq;

static int op_open(void *arg)
{
    (void)arg;
    es_options o = tu_options();
    o.chain_key = "alloc-test-key";
    o.chain_key_len = 14;
    es_store *s = NULL;
    int rc = es_open(dir, &o, &s);
    if (rc == ES_OK)
        store = s;
    return rc;
}

static int op_append(void *arg)
{
    (void)arg;
    es_event_data e[3];
    for (int i = 0; i < 3; i++)
        tu_event(&e[i], 77, seq * 3 + (uint64_t)i, "test.Alloc", "x", 1);
    int rc = es_append(store, "task-alloc", ES_EXPECT_ANY, e, 3, NULL);
    if (rc == ES_OK)
        seq++;
    return rc;
}

static int op_txn(void *arg)
{
    (void)arg;
    es_txn *t = NULL;
    int rc = es_txn_begin(store, &t);
    es_txn_end(t);
    return rc;
}

static int op_sub(void *arg)
{
    (void)arg;
    const char *types[] = {"test.Alloc", "test.Other"};
    es_filter f = {.stream_prefix = "task-", .types = types, .n_types = 2};
    es_sub *sub = NULL;
    es_event *ev = NULL;
    int rc = es_sub_open(store, 0, &f, &sub);
    if (rc == ES_OK)
        rc = es_sub_next(sub, 0, &ev);
    if (rc == ES_OK)
        CHECK(ev->position == 1);
    es_event_free(ev);
    es_sub_destroy(sub);
    return rc;
}

static int op_copy(void *arg)
{
    es_event *copy = NULL;
    int rc = es_event_copy(arg, &copy);
    es_event_free(copy);
    return rc;
}

int main(void)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    tu_tmpdir(dir, sizeof dir, "alloc");
    CHECK(inject("es_open", op_open, NULL) >= 1);
    CHECK(inject("es_append", op_append, NULL) >= 1);
    CHECK(inject("es_txn_begin", op_txn, NULL) >= 1);
    CHECK(inject("es_sub", op_sub, NULL) >= 1);
    es_txn *t = NULL;
    es_event ev;
    es_page pg;
    CHECK_OK(es_txn_begin(store, &t));
    CHECK_OK(es_read_all(t, 1, ES_FORWARD, NULL, 1, &ev, &pg));
    CHECK(inject("es_event_copy", op_copy, &ev) >= 1);
    es_txn_end(t);
    es_stats st;
    es_verify_report rep;
    CHECK_OK(es_stats_get(store, &st));
    CHECK(st.last_position == seq * 3);
    CHECK_OK(es_verify(store, &rep));
    es_close(store);
    tu_rmtree(dir);
    printf("alloc: ok\n");
    return 0;
}
