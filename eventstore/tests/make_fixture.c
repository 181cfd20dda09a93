/* make_fixture.c: builds small stores for the tool test: `make_fixture DIR N`
 * appends N events over a few streams; `make_fixture --tamper DIR POS` flips
 * one byte of the event stored at POS with raw LMDB access. */
#include <lmdb.h>

#include "eventstore/tests/test_util.h"

static int tamper(const char *dir, uint64_t pos)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    uint8_t k[8], buf[4096];
    for (int i = 0; i < 8; i++)
        k[i] = (uint8_t)(pos >> (56 - 8 * i));
    MDB_val kv = {8, k}, d;
    CHECK(mdb_env_create(&env) == 0);
    CHECK(mdb_env_set_maxdbs(env, 16) == 0);
    CHECK(mdb_env_open(env, dir, 0, 0644) == 0);
    CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0);
    CHECK(mdb_dbi_open(txn, "events", 0, &dbi) == 0);
    CHECK(mdb_get(txn, dbi, &kv, &d) == 0 && d.mv_size <= sizeof buf);
    memcpy(buf, d.mv_data, d.mv_size);
    buf[d.mv_size - ES_HASH_SIZE - 2] ^= 0x20;
    MDB_val nd = {d.mv_size, buf};
    CHECK(mdb_put(txn, dbi, &kv, &nd, 0) == 0);
    CHECK(mdb_txn_commit(txn) == 0);
    mdb_env_close(env);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "--tamper"))
        return tamper(argv[2], strtoull(argv[3], NULL, 10));
    if (argc != 3)
        return 2;
    es_store *s = NULL;
    CHECK_OK(es_open(argv[1], NULL, &s));
    long n = atol(argv[2]);
    for (long i = 0; i < n; i++) {
        char stream[32], body[64];
        snprintf(stream, sizeof stream, "%s-%ld", i % 2 ? "task" : "agent", i % 3);
        snprintf(body, sizeof body, "{\"n\":%ld,\"s\":\"quote\\\" tab\\t\"}", i);
        es_event_data e;
        tu_event(&e, 42, (uint64_t)i, i % 2 ? "agentmesh.v1.TaskSubmitted"
                                             : "agentmesh.v1.AgentRegistered",
                 body, strlen(body));
        CHECK_OK(es_append(s, stream, ES_EXPECT_ANY, &e, 1, NULL));
    }
    es_close(s);
    return 0;
}
