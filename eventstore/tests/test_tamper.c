/* test_tamper.c: edits the stored log behind the library's back with raw
 * LMDB access (the one test that knows the on-disk layout: docs/EVENTSTORE.md)
 * and checks that es_verify names the damaged position: a flipped byte, a
 * removed event, a removed last event, two events swapped, and index damage. */
#include <lmdb.h>

#include "eventstore/tests/test_util.h"

#define EVENTS 50

static void build(const char *dir)
{
    es_store *s = NULL;
    CHECK_OK(es_open(dir, NULL, &s));
    for (uint64_t i = 0; i < EVENTS; i++) {
        es_event_data e;
        char stream[32], body[64];
        snprintf(stream, sizeof stream, "task-%llu", (unsigned long long)(i % 5));
        snprintf(body, sizeof body, "payload number %llu", (unsigned long long)i);
        tu_event(&e, 7, i, "test.Tamper", body, strlen(body));
        CHECK_OK(es_append(s, stream, ES_EXPECT_ANY, &e, 1, NULL));
    }
    es_close(s);
}

typedef void (*edit_fn)(MDB_txn *txn, MDB_dbi dbi);

static void key(uint8_t k[8], uint64_t pos)
{
    for (int i = 0; i < 8; i++)
        k[i] = (uint8_t)(pos >> (56 - 8 * i));
}

static void raw_edit(const char *dir, const char *db, edit_fn fn)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    CHECK(mdb_env_create(&env) == 0);
    CHECK(mdb_env_set_maxdbs(env, 16) == 0);
    CHECK(mdb_env_open(env, dir, 0, 0644) == 0);
    CHECK(mdb_txn_begin(env, NULL, 0, &txn) == 0);
    CHECK(mdb_dbi_open(txn, db, 0, &dbi) == 0);
    fn(txn, dbi);
    CHECK(mdb_txn_commit(txn) == 0);
    mdb_env_close(env);
}

static void flip_at(MDB_txn *txn, MDB_dbi dbi, uint64_t pos, size_t off_from_end)
{
    uint8_t k[8], buf[1024];
    key(k, pos);
    MDB_val kv = {8, k}, d;
    CHECK(mdb_get(txn, dbi, &kv, &d) == 0);
    CHECK(d.mv_size <= sizeof buf && d.mv_size > off_from_end);
    memcpy(buf, d.mv_data, d.mv_size);
    buf[d.mv_size - 1 - off_from_end] ^= 0x01;
    MDB_val nd = {d.mv_size, buf};
    CHECK(mdb_put(txn, dbi, &kv, &nd, 0) == 0);
}

/* A byte of the data (just before the 32-byte hash). */
static void flip_data(MDB_txn *txn, MDB_dbi dbi)
{
    flip_at(txn, dbi, 17, 40);
}

/* A byte of the stored position field itself. */
static void flip_position(MDB_txn *txn, MDB_dbi dbi)
{
    uint8_t k[8], buf[1024];
    key(k, 23);
    MDB_val kv = {8, k}, d;
    CHECK(mdb_get(txn, dbi, &kv, &d) == 0);
    memcpy(buf, d.mv_data, d.mv_size);
    buf[2 + ES_ID_SIZE + 7] ^= 0x04;
    MDB_val nd = {d.mv_size, buf};
    CHECK(mdb_put(txn, dbi, &kv, &nd, 0) == 0);
}

static void remove_30(MDB_txn *txn, MDB_dbi dbi)
{
    uint8_t k[8];
    key(k, 30);
    MDB_val kv = {8, k};
    CHECK(mdb_del(txn, dbi, &kv, NULL) == 0);
}

static void remove_last(MDB_txn *txn, MDB_dbi dbi)
{
    uint8_t k[8];
    key(k, EVENTS);
    MDB_val kv = {8, k};
    CHECK(mdb_del(txn, dbi, &kv, NULL) == 0);
}

static void swap_10_11(MDB_txn *txn, MDB_dbi dbi)
{
    uint8_t a[8], b[8], ba[1024], bb[1024];
    key(a, 10);
    key(b, 11);
    MDB_val ka = {8, a}, kb = {8, b}, da, db;
    CHECK(mdb_get(txn, dbi, &ka, &da) == 0);
    memcpy(ba, da.mv_data, da.mv_size);
    size_t la = da.mv_size;
    CHECK(mdb_get(txn, dbi, &kb, &db) == 0);
    memcpy(bb, db.mv_data, db.mv_size);
    size_t lb = db.mv_size;
    MDB_val na = {lb, bb}, nb = {la, ba};
    CHECK(mdb_put(txn, dbi, &ka, &na, 0) == 0);
    CHECK(mdb_put(txn, dbi, &kb, &nb, 0) == 0);
}

/* The stream index entry of task-2 version 3 (position 18) removed. */
static void drop_index(MDB_txn *txn, MDB_dbi dbi)
{
    uint8_t k[6 + 1 + 8] = "task-2";
    key(k + 7, 3);
    MDB_val kv = {sizeof k, k};
    CHECK(mdb_del(txn, dbi, &kv, NULL) == 0);
}

static void expect_bad(const char *name, const char *db, edit_fn fn,
                       uint64_t position)
{
    char dir[512];
    tu_tmpdir(dir, sizeof dir, "tamper");
    build(dir);
    raw_edit(dir, db, fn);
    es_store *s = NULL;
    es_verify_report rep;
    es_options o = tu_options();
    o.flags = ES_OPT_RDONLY;
    CHECK_OK(es_open(dir, &o, &s));
    int rc = es_verify(s, &rep);
    printf("tamper %-14s -> %s, position %llu: %s\n", name, es_errname(rc),
           (unsigned long long)rep.bad_position, rep.message);
    CHECK_ES(ES_CORRUPT, rc);
    CHECK(rep.bad_position == position);
    es_close(s);
    tu_rmtree(dir);
}

int main(void)
{
    char dir[512];
    tu_tmpdir(dir, sizeof dir, "clean");
    build(dir);
    es_store *s = NULL;
    es_verify_report rep;
    CHECK_OK(es_open(dir, NULL, &s));
    CHECK_OK(es_verify(s, &rep));
    CHECK(rep.events_checked == EVENTS && rep.streams_checked == 5);
    es_close(s);
    tu_rmtree(dir);

    expect_bad("flipped byte", "events", flip_data, 17);
    expect_bad("position", "events", flip_position, 23);
    expect_bad("removed", "events", remove_30, 30);
    expect_bad("removed last", "events", remove_last, EVENTS);
    expect_bad("reordered", "events", swap_10_11, 10);
    expect_bad("index entry", "stream_index", drop_index, 18);
    printf("tamper: ok\n");
    return 0;
}
