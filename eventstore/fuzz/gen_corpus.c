/* gen_corpus.c: writes the seed corpus for record_fuzz: real records (plain
 * and keyed chain, empty and full fields), read back raw from a store built
 * through the public API, plus truncations and length-field damage.
 * Usage: gen_corpus OUT_DIR */
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "eventstore/eventstore.h"

static int write_file(const char *dir, const char *name, const void *p,
                      size_t n)
{
    char path[4096];
    int w = snprintf(path, sizeof path, "%s/%s", dir, name);
    if (w < 0 || (size_t)w >= sizeof path)
        return -1;
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(p, 1, n, f) != n) {
        if (f)
            fclose(f);
        return -1;
    }
    return fclose(f);
}

static int build(const char *dir, const char *key)
{
    es_options o;
    es_store *s = NULL;
    es_options_init(&o);
    if (key) {
        o.chain_key = key;
        o.chain_key_len = strlen(key);
    }
    if (es_open(dir, &o, &s))
        return -1;
    static uint8_t big[3000];
    memset(big, 0x5a, sizeof big);
    es_event_data e[3];
    memset(e, 0, sizeof e);
    e[0].id[0] = 1;
    e[0].type = "agentmesh.v1.TaskSubmitted";
    e[0].content_type = "application/x-protobuf";
    e[0].data = "\x0a\x03" "abc";
    e[0].data_len = 5;
    e[0].meta.correlation_id = "c0ffee";
    e[0].meta.causation_id = "cause";
    e[0].meta.traceparent =
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    e[0].meta.actor = "user:alice";
    e[1].id[0] = 2;
    e[1].type = "t";
    e[2].id[0] = 3;
    e[2].type = "agentmesh.v1.MemoryWritten";
    e[2].data = big;
    e[2].data_len = sizeof big;
    int rc = es_append(s, "task-1", ES_EXPECT_ANY, e, 3, NULL);
    es_close(s);
    return rc ? -1 : 0;
}

static int dump(const char *store, const char *out, const char *tag)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *cur;
    MDB_val k, d;
    int n = 0;
    if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 16) ||
        mdb_env_open(env, store, MDB_RDONLY, 0644) ||
        mdb_txn_begin(env, NULL, MDB_RDONLY, &txn) ||
        mdb_dbi_open(txn, "events", 0, &dbi) ||
        mdb_cursor_open(txn, dbi, &cur))
        return -1;
    while (mdb_cursor_get(cur, &k, &d, n ? MDB_NEXT : MDB_FIRST) == 0) {
        char name[64];
        uint8_t buf[4096];
        if (d.mv_size > sizeof buf)
            return -1;
        memcpy(buf, d.mv_data, d.mv_size);
        snprintf(name, sizeof name, "%s-record-%d", tag, n);
        write_file(out, name, buf, d.mv_size);
        snprintf(name, sizeof name, "%s-truncated-%d", tag, n);
        write_file(out, name, buf, d.mv_size / 2);
        /* The stream length field pointing past the end. */
        buf[2 + 16 + 24] = 0xff;
        snprintf(name, sizeof name, "%s-badlen-%d", tag, n);
        write_file(out, name, buf, d.mv_size);
        n++;
    }
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    mdb_env_close(env);
    return n ? 0 : -1;
}

/* Remove a scratch store directory (data.mdb, lock.mdb). */
static void remove_store(const char *dir)
{
    char path[128];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/lock.mdb", dir);
    unlink(path);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    char tmp[] = "/tmp/es-corpus-XXXXXX", plain[64], keyed[64];
    if (argc != 2 || !mkdtemp(tmp))
        return 2;
    snprintf(plain, sizeof plain, "%s/plain", tmp);
    snprintf(keyed, sizeof keyed, "%s/keyed", tmp);
    int rc = build(plain, NULL) || build(keyed, "corpus-key") ||
             dump(plain, argv[1], "plain") || dump(keyed, argv[1], "keyed") ||
             write_file(argv[1], "empty", "", 0);
    remove_store(plain);
    remove_store(keyed);
    rmdir(tmp);
    return rc ? 1 : 0;
}
