/* Concurrency test of the agent manager's domain service over a real event
 * store (no gRPC): many threads submit, start and complete tasks against
 * agents with little capacity, racing idempotent submits, while the monitor
 * takes snapshots. Checks the invariants (no agent over its concurrency,
 * every task assigned exactly when it should be, one task per idempotency
 * key) and that a state rebuilt from snapshot + log equals the live one.
 * Half the threads submit through am_submit_task_async (the gRPC fast path),
 * the others through am_submit_task. Run under TSan too. */
#include <grpc/status.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/agent_manager/agent_manager.h"
#include "services/agent_manager/submit_wait.h"
#include "services/common/test_util.h"

#define THREADS 8
#define PER_THREAD 40
#define AGENTS 3
#define CONC 2

static es_store *store;
static am_service *svc;
static char agent_ids[AGENTS][64];
static pthread_mutex_t ids_mu = PTHREAD_MUTEX_INITIALIZER;
static char *task_ids[THREADS * PER_THREAD + 64];
static size_t n_task_ids;
static int n_fast, n_fallback; /* under ids_mu */


static const am_ctx ctx = {"test", "corr", "cause", NULL};

static void free_msg(void *m)
{
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
}

static am_task_msg *get_task(am_service *s, const char *id)
{
    Agentmesh__V1__GetTaskRequest r = AGENTMESH__V1__GET_TASK_REQUEST__INIT;
    am_task_msg *t = NULL;
    am_error err;
    r.task_id = (char *)id;
    CHECK(am_get_task(s, &r, &t, &err) == 0);
    return t;
}

static void check_agents(void)
{
    for (int i = 0; i < AGENTS; i++) {
        Agentmesh__V1__GetAgentRequest r = AGENTMESH__V1__GET_AGENT_REQUEST__INIT;
        am_agent_msg *a = NULL;
        am_error err;
        r.agent_id = agent_ids[i];
        CHECK(am_get_agent(svc, &r, &a, &err) == 0);
        if (a)
            CHECK(a->active_tasks <= a->max_concurrency);
        free_msg(a);
    }
}

/* Starts and completes a task if it is ASSIGNED; returns 1 when done. */
static int drive(const char *id)
{
    am_task_msg *t = get_task(svc, id);
    am_error err;
    int done = 0;
    if (t && t->state == AGENTMESH__V1__TASK_STATE__TASK_STATE_ASSIGNED) {
        Agentmesh__V1__StartTaskRequest s = AGENTMESH__V1__START_TASK_REQUEST__INIT;
        Agentmesh__V1__CompleteTaskRequest c =
            AGENTMESH__V1__COMPLETE_TASK_REQUEST__INIT;
        am_task_msg *r1 = NULL, *r2 = NULL;
        s.task_id = c.task_id = (char *)id;
        /* Another thread may drive the same task: both outcomes are fine. */
        int rc = am_start_task(svc, &ctx, &s, &r1, &err);
        CHECK(rc == 0 || rc == GRPC_STATUS_FAILED_PRECONDITION);
        rc = am_complete_task(svc, &ctx, &c, &r2, &err);
        CHECK(rc == 0 || rc == GRPC_STATUS_FAILED_PRECONDITION);
        free_msg(r1);
        free_msg(r2);
    }
    if (t && t->state == AGENTMESH__V1__TASK_STATE__TASK_STATE_COMPLETED)
        done = 1;
    free_msg(t);
    return done;
}

static void *worker(void *arg)
{
    long n = (long)arg;
    for (int i = 0; i < PER_THREAD; i++) {
        Agentmesh__V1__SubmitTaskRequest r = AGENTMESH__V1__SUBMIT_TASK_REQUEST__INIT;
        char *caps[] = {"c"};
        char key[32];
        am_task_msg *t = NULL;
        am_error err;
        r.n_required_capabilities = 1;
        r.required_capabilities = caps;
        r.input = "work";
        r.priority = i % 3;
        /* Every thread submits key k<i> too: one task per key in all. */
        snprintf(key, sizeof key, "k%d", i);
        r.idempotency_key = (n % 2) ? key : "";
        bool fast = false;
        if ((n / 2) % 2)
            CHECK(submit_fast_or_wait(svc, &ctx, &r, &t, &err, &fast) == 0);
        else
            CHECK(am_submit_task(svc, &ctx, &r, &t, &err) == 0);
        pthread_mutex_lock(&ids_mu);
        if ((n / 2) % 2)
            *(fast ? &n_fast : &n_fallback) += 1;
        pthread_mutex_unlock(&ids_mu);
        if (!t)
            continue;
        pthread_mutex_lock(&ids_mu);
        bool seen = false;
        for (size_t j = 0; j < n_task_ids && !seen; j++)
            seen = strcmp(task_ids[j], t->task_id) == 0;
        if (!seen)
            task_ids[n_task_ids++] = strdup(t->task_id);
        pthread_mutex_unlock(&ids_mu);
        drive(t->task_id);
        free_msg(t);
        check_agents();
    }
    return NULL;
}

static int workers_done;

/* Snapshots taken while appends are in flight (the watermark logic). */
static void *snapshotter(void *arg)
{
    (void)arg;
    /* Stops half way, so the rebuilt state is the last of these snapshots
     * plus the log after its watermark. */
    for (;;) {
        pthread_mutex_lock(&ids_mu);
        size_t n = n_task_ids;
        pthread_mutex_unlock(&ids_mu);
        if (n >= (THREADS * PER_THREAD) / 3 ||
            __atomic_load_n(&workers_done, __ATOMIC_ACQUIRE))
            break;
        CHECK(am_service_snapshot(svc) == ES_OK);
    }
    return NULL;
}

static void register_agents(void)
{
    for (int i = 0; i < AGENTS; i++) {
        Agentmesh__V1__RegisterAgentRequest r =
            AGENTMESH__V1__REGISTER_AGENT_REQUEST__INIT;
        char *caps[] = {"c", "d"};
        am_agent_msg *a = NULL;
        am_error err;
        snprintf(agent_ids[i], sizeof agent_ids[i], "agent-%d", i);
        r.name = "w";
        r.agent_id = agent_ids[i];
        r.n_capabilities = 2;
        r.capabilities = caps;
        r.max_concurrency = CONC;
        CHECK(am_register_agent(svc, &ctx, &r, &a, &err) == 0);
        free_msg(a);
    }
}

/* Every task of the live service equals the one a fresh load sees. */
static void compare_with_rebuilt(void)
{
    am_options o;
    am_service *fresh = NULL;
    am_options_init(&o);
    o.store = store;
    CHECK(am_service_create(&o, &fresh) == ES_OK);
    if (!fresh)
        return;
    for (size_t i = 0; i < n_task_ids; i++) {
        am_task_msg *a = get_task(svc, task_ids[i]);
        am_task_msg *b = get_task(fresh, task_ids[i]);
        if (a && b) {
            size_t la = protobuf_c_message_get_packed_size(&a->base);
            size_t lb = protobuf_c_message_get_packed_size(&b->base);
            uint8_t *pa = malloc(la + 1), *pb = malloc(lb + 1);
            protobuf_c_message_pack(&a->base, pa);
            protobuf_c_message_pack(&b->base, pb);
            CHECK(la == lb && memcmp(pa, pb, la) == 0);
            free(pa);
            free(pb);
        }
        free_msg(a);
        free_msg(b);
    }
    am_service_destroy(fresh);
}

int main(void)
{
    char dir[512];
    es_options eo;
    am_options o;
    pthread_t th[THREADS], snap;

    const char *tmp = getenv("TEST_TMPDIR");
    snprintf(dir, sizeof dir, "%s/am-service-test-XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        return 1;
    es_options_init(&eo);
    eo.flags |= ES_OPT_NOSYNC;
    CHECK(es_open(dir, &eo, &store) == ES_OK);
    am_options_init(&o);
    o.store = store;
    o.snapshot_every = 50;
    CHECK(am_service_create(&o, &svc) == ES_OK);
    if (test_failures)
        return 1;
    register_agents();
    pthread_create(&snap, NULL, snapshotter, NULL);
    for (long i = 0; i < THREADS; i++)
        pthread_create(&th[i], NULL, worker, (void *)i);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    __atomic_store_n(&workers_done, 1, __ATOMIC_RELEASE);
    pthread_join(snap, NULL);
    /* Completing frees capacity, which assigns the pending tasks. */
    for (int round = 0; round < 1000; round++) {
        size_t done = 0;
        for (size_t i = 0; i < n_task_ids; i++)
            done += (size_t)drive(task_ids[i]);
        if (done == n_task_ids)
            break;
    }
    for (size_t i = 0; i < n_task_ids; i++) {
        am_task_msg *t = get_task(svc, task_ids[i]);
        CHECK(t && t->state == AGENTMESH__V1__TASK_STATE__TASK_STATE_COMPLETED);
        CHECK(t && t->version == 3);
        free_msg(t);
    }
    CHECK(n_task_ids == (THREADS / 2) * PER_THREAD + PER_THREAD);
    /* Threads 2, 3, 6 and 7 went the fast way, falling back when it would
     * have waited. */
    CHECK(n_fast + n_fallback == (THREADS / 2) * PER_THREAD);
    CHECK(n_fast > 0);
    printf("service_test: %d fast submits, %d fell back to waiting\n", n_fast,
           n_fallback);
    check_agents();
    /* From the last snapshot taken under load, then the log after it. */
    compare_with_rebuilt();
    CHECK(am_service_snapshot(svc) == ES_OK);
    compare_with_rebuilt();
    am_service_destroy(svc);
    es_close(store);
    for (size_t i = 0; i < n_task_ids; i++)
        free(task_ids[i]);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
    if (test_failures) {
        fprintf(stderr, "%d failures\n", test_failures);
        return 1;
    }
    printf("service_test: %zu tasks, all checks passed\n", n_task_ids);
    return 0;
}
