/* The agent manager on a store whose map cannot grow: submits fail with
 * RESOURCE_EXHAUSTED once it is full, the refused task does not exist (its
 * ghost is gone, its idempotency key free), earlier tasks read as before, and
 * a reopened service sees exactly what was acknowledged. Submits alternate
 * between am_submit_task and am_submit_task_async, whose refusal comes from
 * the event store's writer thread. */
#include <grpc/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "services/agent_manager/agent_manager.h"
#include "services/agent_manager/submit_wait.h"
#include "services/common/test_util.h"



#define MAX_TASKS 4096

static const am_ctx ctx = {"test", "corr", "cause", NULL};
static char *acked[MAX_TASKS];
static size_t n_acked;

static int submit(am_service *svc, const char *input, const char *key,
                  bool async, char **id)
{
    Agentmesh__V1__SubmitTaskRequest r = AGENTMESH__V1__SUBMIT_TASK_REQUEST__INIT;
    char *caps[] = {"nobody"};
    am_task_msg *t = NULL;
    am_error err;
    memset(&err, 0, sizeof err);
    r.n_required_capabilities = 1;
    r.required_capabilities = caps;
    r.input = (char *)input;
    r.idempotency_key = (char *)key;
    bool fast = false;
    int rc = async ? submit_fast_or_wait(svc, &ctx, &r, &t, &err, &fast)
                   : am_submit_task(svc, &ctx, &r, &t, &err);
    /* Nothing else runs: the fast path never has to wait here. */
    CHECK(fast == async);
    if (rc == 0) {
        *id = strdup(t->task_id);
        protobuf_c_message_free_unpacked(&t->base, NULL);
    }
    return rc;
}

static int exists(am_service *svc, const char *id)
{
    Agentmesh__V1__GetTaskRequest r = AGENTMESH__V1__GET_TASK_REQUEST__INIT;
    am_task_msg *t = NULL;
    am_error err;
    r.task_id = (char *)id;
    int rc = am_get_task(svc, &r, &t, &err);
    if (t)
        protobuf_c_message_free_unpacked(&t->base, NULL);
    return rc == 0;
}

int main(void)
{
    char dir[512];
    const char *tmp = getenv("TEST_TMPDIR");
    es_options eo;
    es_store *store = NULL;
    am_service *svc = NULL;
    am_options o;
    static char input[64 * 1024];
    int rc = 0;

    snprintf(dir, sizeof dir, "%s/am-mapfull-XXXXXX", tmp ? tmp : "/tmp");
    if (!mkdtemp(dir))
        return 1;
    memset(input, 'x', sizeof input - 1);
    es_options_init(&eo);
    eo.flags |= ES_OPT_NOSYNC;
    eo.map_size = eo.map_size_max = 4u << 20;
    CHECK(es_open(dir, &eo, &store) == ES_OK);
    am_options_init(&o);
    o.store = store;
    o.snapshot_every = 0;
    CHECK(am_service_create(&o, &svc) == ES_OK);
    if (test_failures)
        return 1;
    while (n_acked < MAX_TASKS) {
        char *id = NULL;
        if ((rc = submit(svc, input, NULL, n_acked % 2, &id)) != 0)
            break;
        acked[n_acked++] = id;
    }
    CHECK(rc == GRPC_STATUS_RESOURCE_EXHAUSTED);
    CHECK(n_acked > 10);
    /* Refused with a key: the key stays free, no task appears. */
    char *id = NULL;
    CHECK(submit(svc, input, "full-key", false, &id) ==
          GRPC_STATUS_RESOURCE_EXHAUSTED);
    CHECK(submit(svc, input, "full-key", true, &id) ==
          GRPC_STATUS_RESOURCE_EXHAUSTED);
    for (size_t i = 0; i < n_acked; i++)
        CHECK(exists(svc, acked[i]));
    am_service_destroy(svc);
    svc = NULL;
    es_close(store);
    store = NULL;

    /* Reopened with room: the same tasks, and the key can be used. */
    eo.map_size_max = 64u << 20;
    CHECK(es_open(dir, &eo, &store) == ES_OK);
    o.store = store;
    CHECK(am_service_create(&o, &svc) == ES_OK);
    if (svc) {
        for (size_t i = 0; i < n_acked; i++)
            CHECK(exists(svc, acked[i]));
        CHECK(submit(svc, "small", "full-key", true, &id) == 0);
        free(id);
        am_service_destroy(svc);
    }
    es_close(store);
    for (size_t i = 0; i < n_acked; i++)
        free(acked[i]);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "cannot remove %s\n", dir);
    if (test_failures) {
        fprintf(stderr, "%d failures\n", test_failures);
        return 1;
    }
    printf("mapfull_test: %zu tasks acknowledged before the map filled\n",
           n_acked);
    return 0;
}
