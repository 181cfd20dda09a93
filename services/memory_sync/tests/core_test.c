/* Unit test of memory-sync's core over a real event store in a temporary
 * directory: concurrent PutMemory calls from several threads on shared and
 * separate namespaces (each version given exactly once, the read state equal
 * to the log), expected-version checks, a sync resend that changes nothing,
 * and forgetting (no key, no entries, NOT_FOUND). Tagged for TSan. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "services/memory_sync/memory_sync.h"

static int failures;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
            failures++;                                                        \
        }                                                                      \
    } while (0)

#define THREADS 4
#define PUTS 50

static ms_service *svc;
static es_store *store;

typedef struct worker {
    int id;
    uint64_t versions[PUTS];
    int errors;
} worker;

static void *put_worker(void *arg)
{
    worker *w = arg;
    char own[32], value[64];
    snprintf(own, sizeof own, "own-%d", w->id);
    for (int i = 0; i < PUTS; i++) {
        Agentmesh__V1__PutMemoryRequest req = AGENTMESH__V1__PUT_MEMORY_REQUEST__INIT;
        Agentmesh__V1__MemoryEntry *e = NULL;
        ms_error err;
        snprintf(value, sizeof value, "w%d-%d", w->id, i);
        req.namespace_ = (char *)(i % 2 ? "shared" : own);
        req.key = "k";
        req.value.data = (uint8_t *)value;
        req.value.len = strlen(value);
        ms_ctx ctx = {"test", NULL, NULL, NULL};
        if (ms_put(svc, &ctx, &req, &e, &err)) {
            w->errors++;
            continue;
        }
        w->versions[i] = e->version;
        protobuf_c_message_free_unpacked(&e->base, NULL);
    }
    return NULL;
}

static uint64_t get_version(const char *ns, const char *key, int *code)
{
    Agentmesh__V1__GetMemoryRequest req = AGENTMESH__V1__GET_MEMORY_REQUEST__INIT;
    Agentmesh__V1__MemoryEntry *e = NULL;
    ms_error err;
    req.namespace_ = (char *)ns;
    req.key = (char *)key;
    *code = ms_get(svc, &req, &e, &err);
    if (*code)
        return 0;
    uint64_t v = e->version;
    protobuf_c_message_free_unpacked(&e->base, NULL);
    return v;
}

static void test_concurrent_puts(void)
{
    pthread_t th[THREADS];
    static worker ws[THREADS];
    for (int i = 0; i < THREADS; i++) {
        ws[i].id = i;
        pthread_create(&th[i], NULL, put_worker, &ws[i]);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
    int seen[THREADS * PUTS / 2 + 1] = {0};
    for (int i = 0; i < THREADS; i++) {
        CHECK(ws[i].errors == 0);
        for (int j = 1; j < PUTS; j += 2) {
            uint64_t v = ws[i].versions[j];
            CHECK(v >= 1 && v <= THREADS * PUTS / 2);
            if (v <= THREADS * PUTS / 2)
                seen[v]++;
        }
        for (int j = 0; j < PUTS; j += 2)
            CHECK(ws[i].versions[j] == (uint64_t)j / 2 + 1);
    }
    for (int v = 1; v <= THREADS * PUTS / 2; v++)
        CHECK(seen[v] == 1);
    int code;
    CHECK(get_version("shared", "k", &code) == THREADS * PUTS / 2 && code == 0);
    /* the log agrees: one event per put in the shared stream */
    es_txn *txn = NULL;
    uint64_t sv = 0;
    CHECK(es_txn_begin(store, &txn) == ES_OK);
    CHECK(es_stream_version(txn, "memory-shared", &sv) == ES_OK);
    CHECK(sv + 1 == THREADS * PUTS / 2);
    es_txn_end(txn);
}

static void test_expected_and_sync(void)
{
    Agentmesh__V1__PutMemoryRequest put = AGENTMESH__V1__PUT_MEMORY_REQUEST__INIT;
    Agentmesh__V1__MemoryEntry *e = NULL;
    ms_error err;
    ms_ctx ctx = {0};
    put.namespace_ = "exp";
    put.key = "a";
    put.expected_case = AGENTMESH__V1__PUT_MEMORY_REQUEST__EXPECTED_EXPECTED_VERSION;
    put.expected_version = 1;
    CHECK(ms_put(svc, &ctx, &put, &e, &err) == 10);
    CHECK(strstr(err.message, "current version is 0") != NULL);
    put.expected_version = 0;
    CHECK(ms_put(svc, &ctx, &put, &e, &err) == 0 && e->version == 1);
    protobuf_c_message_free_unpacked(&e->base, NULL);

    Agentmesh__V1__SyncChange ch = AGENTMESH__V1__SYNC_CHANGE__INIT;
    Agentmesh__V1__SyncChange *chs[] = {&ch};
    Agentmesh__V1__SyncMemoryRequest sync = AGENTMESH__V1__SYNC_MEMORY_REQUEST__INIT;
    Agentmesh__V1__SyncMemoryResponse *rep = NULL;
    ch.key = "a";
    ch.value.data = (uint8_t *)"from-r1";
    ch.value.len = 7;
    ch.base_version = 1;
    ch.hlc = 99;
    sync.namespace_ = "exp";
    sync.replica_id = "r1";
    sync.changes = chs;
    sync.n_changes = 1;
    CHECK(ms_sync(svc, &ctx, &sync, &rep, &err) == 0);
    CHECK(rep->n_applied == 1 && rep->applied[0]->version == 2);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    es_stats before, after;
    CHECK(es_stats_get(store, &before) == ES_OK);
    CHECK(ms_sync(svc, &ctx, &sync, &rep, &err) == 0);
    CHECK(rep->n_applied == 0 && rep->n_conflicts == 0);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    CHECK(es_stats_get(store, &after) == ES_OK);
    CHECK(after.last_position == before.last_position);
}

static void put_value(const char *ns, const char *key, const char *value)
{
    Agentmesh__V1__PutMemoryRequest put = AGENTMESH__V1__PUT_MEMORY_REQUEST__INIT;
    Agentmesh__V1__MemoryEntry *e = NULL;
    ms_error err;
    ms_ctx ctx = {0};
    put.namespace_ = (char *)ns;
    put.key = (char *)key;
    put.value.data = (uint8_t *)value;
    put.value.len = strlen(value);
    CHECK(ms_put(svc, &ctx, &put, &e, &err) == 0);
    if (e)
        protobuf_c_message_free_unpacked(&e->base, NULL);
}

/* A resend is skipped whatever the change's first outcome was: applied
 * (an event with its id), lost or won a conflict (a conflict event, and
 * for a win the write), or a delete of an absent key (no event: its id
 * is kept on its own). Keys changed in between do not make the old
 * changes conflict. */
static void test_resend_every_outcome(void)
{
    put_value("resend", "lose", "server");
    put_value("resend", "win", "server");
    Agentmesh__V1__SyncChange ch[4];
    Agentmesh__V1__SyncChange *chs[4];
    const char *keys[4] = {"new", "gone", "lose", "win"};
    for (int i = 0; i < 4; i++) {
        agentmesh__v1__sync_change__init(&ch[i]);
        chs[i] = &ch[i];
        ch[i].key = (char *)keys[i];
        ch[i].value.data = (uint8_t *)"from-r2";
        ch[i].value.len = 7;
    }
    ch[1].deleted = true;   /* "gone" never existed */
    ch[1].value.len = 0;
    ch[2].hlc = 1;          /* older than the server's write: loses */
    /* ch[3].hlc = 0: stamped now by the server, after its write: wins */
    Agentmesh__V1__SyncMemoryRequest sync = AGENTMESH__V1__SYNC_MEMORY_REQUEST__INIT;
    Agentmesh__V1__SyncMemoryResponse *rep = NULL;
    ms_error err;
    ms_ctx ctx = {0};
    sync.namespace_ = "resend";
    sync.replica_id = "r2";
    sync.changes = chs;
    sync.n_changes = 4;
    CHECK(ms_sync(svc, &ctx, &sync, &rep, &err) == 0);
    CHECK(rep->n_applied == 2 && rep->n_conflicts == 2);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    /* Keys "gone" and "lose" change after the first send: a resend
     * processed anew would now conflict on both. */
    put_value("resend", "gone", "now here");
    put_value("resend", "lose", "server again");
    es_stats before, after;
    CHECK(es_stats_get(store, &before) == ES_OK);
    for (int round = 0; round < 2; round++) {
        CHECK(ms_sync(svc, &ctx, &sync, &rep, &err) == 0);
        CHECK(rep->n_applied == 0 && rep->n_conflicts == 0);
        protobuf_c_message_free_unpacked(&rep->base, NULL);
    }
    CHECK(es_stats_get(store, &after) == ES_OK);
    CHECK(after.last_position == before.last_position);
    int code;
    CHECK(get_version("resend", "gone", &code) == 1 && code == 0);
    CHECK(get_version("resend", "win", &code) == 2 && code == 0);
    CHECK(get_version("resend", "lose", &code) == 2 && code == 0);
}

static void test_forget(void)
{
    Agentmesh__V1__ForgetNamespaceRequest req = AGENTMESH__V1__FORGET_NAMESPACE_REQUEST__INIT;
    Agentmesh__V1__ForgetResponse *rep = NULL;
    ms_error err;
    ms_ctx ctx = {0};
    int code;
    req.namespace_ = "exp";
    CHECK(ms_forget(svc, &ctx, &req, &rep, &err) == 0 && rep->keys_forgotten == 1);
    protobuf_c_message_free_unpacked(&rep->base, NULL);
    CHECK(get_version("exp", "a", &code) == 0 && code == 5);
    CHECK(ms_forget(svc, &ctx, &req, &rep, &err) == 5);
    es_txn *txn = NULL;
    const void *v;
    size_t n;
    CHECK(es_txn_begin(store, &txn) == ES_OK);
    CHECK(es_kv_get(txn, "memory.keys", "exp", 3, &v, &n) == ES_NOT_FOUND);
    CHECK(es_kv_get(txn, "memory.entries", "exp\0a", 5, &v, &n) == ES_NOT_FOUND);
    es_txn_end(txn);
    /* reuse: a fresh generation, versions from 1 */
    Agentmesh__V1__PutMemoryRequest put = AGENTMESH__V1__PUT_MEMORY_REQUEST__INIT;
    Agentmesh__V1__MemoryEntry *e = NULL;
    put.namespace_ = "exp";
    put.key = "a";
    CHECK(ms_put(svc, &ctx, &put, &e, &err) == 0 && e->version == 1);
    protobuf_c_message_free_unpacked(&e->base, NULL);
}

int main(void)
{
    char dir[] = "/tmp/ms-core-test-XXXXXX";
    if (!mkdtemp(dir))
        return 2;
    es_options eo;
    es_options_init(&eo);
    eo.flags |= ES_OPT_NOSYNC;
    if (es_open(dir, &eo, &store) != ES_OK)
        return 2;
    ms_options mo;
    ms_options_init(&mo);
    mo.store = store;
    mo.key_dir = dir;
    if (ms_service_create(&mo, &svc) != ES_OK)
        return 2;
    test_concurrent_puts();
    test_expected_and_sync();
    test_resend_every_outcome();
    test_forget();
    ms_service_destroy(svc);
    es_close(store);
    char path[256];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/lock.mdb", dir);
    unlink(path);
    for (int g = 1; g < 10; g++) {
        snprintf(path, sizeof path, "%s/memory-master-%d.key", dir, g);
        unlink(path);
    }
    rmdir(dir);
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("memory-sync core: all checks passed\n");
    return 0;
}
