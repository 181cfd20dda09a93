/* SyncMemory: a replica's changes applied under the namespace's lock —
 * a change based on the current version is applied; any other is a conflict
 * resolved by the namespace's strategy and recorded as a
 * MemoryConflictResolved event — all in one append; then the changes after
 * the replica's cursor. Idempotent: each change has an id (HMAC of replica,
 * key, hlc, deletion, content type and value under the namespace key, so
 * the published event id reveals nothing of the value); ids already
 * processed are in the applied index and are skipped. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/sha.h>

#include "services/memory_sync/changes.h"

typedef Agentmesh__V1__SyncChange SyncChange;

/* What a key looks like to the rest of this request: the latest version
 * planned in it, or the stored one. Strings are the request's or copies. */
typedef struct planned {
    const char *key;
    size_t key_len;
    uint64_t version;
    bool deleted;
    uint64_t hlc;
    const char *replica;
    const SyncChange *change_src;
} planned;

typedef struct syncer {
    ms_service *s;
    const Agentmesh__V1__SyncMemoryRequest *req;
    const ms_ctx *ctx;
    ms_ns_state st;
    ms_batch b;
    int strategy;
    const char *const *order;
    size_t n_order;
    planned *plans;
    size_t n_plans;
    uint8_t (*ids)[MS_CHANGE_ID];
    size_t n_ids;
    Agentmesh__V1__MemoryEntry **applied;
    long *applied_event;
    size_t n_applied;
    Agentmesh__V1__MemoryConflict **conflicts;
    size_t n_conflicts;
    ms_mac mac; /* keyed with st.key at the first hash */
} syncer;

/* HMAC-SHA256 under the namespace key's MAC half, as ms_content_hash. */
static int hash(syncer *y, const void *v, size_t n, uint8_t out[MS_HASH_SIZE])
{
    if (!y->mac.ctx && ms_mac_open(&y->mac, &y->st.key))
        return -1;
    return ms_mac_hash(&y->mac, v, n, out);
}

static int change_id(syncer *y, const char *replica, const SyncChange *c,
                     uint8_t id[MS_CHANGE_ID])
{
    uint8_t mac[MS_HASH_SIZE];
    size_t rl = strlen(replica) + 1, kl = strlen(c->key) + 1,
           cl = strlen(c->content_type) + 1;
    size_t n = 10 + rl + kl + 9 + cl + c->value.len, at = 0;
    uint8_t *buf = malloc(n);
    if (!buf)
        return -1;
    memcpy(buf, "ms-change", 10);
    at = 10;
    memcpy(buf + at, replica, rl);
    at += rl;
    memcpy(buf + at, c->key, kl);
    at += kl;
    for (int i = 0; i < 8; i++)
        buf[at++] = (uint8_t)(c->hlc >> (56 - 8 * i));
    buf[at++] = c->deleted ? 1 : 0;
    memcpy(buf + at, c->content_type, cl);
    at += cl;
    if (c->value.len)
        memcpy(buf + at, c->value.data, c->value.len);
    /* The MAC half of the namespace key, as for content hashes. */
    int rc = hash(y, buf, n, mac);
    OPENSSL_cleanse(buf, n);
    free(buf);
    if (rc)
        return -1;
    memcpy(id, mac, MS_CHANGE_ID);
    return 0;
}

/* The id of the conflict event of a change: derived, so it dedupes too. */
static int conflict_id(const uint8_t id[MS_CHANGE_ID], uint8_t out[MS_CHANGE_ID])
{
    uint8_t in[MS_CHANGE_ID + 8], d[SHA256_DIGEST_LENGTH];
    memcpy(in, id, MS_CHANGE_ID);
    memcpy(in + MS_CHANGE_ID, "conflict", 8);
    if (ms_sha256(in, sizeof in, d))
        return -1;
    memcpy(out, d, MS_CHANGE_ID);
    return 0;
}

static int check_change(ms_service *s, const SyncChange *c, ms_error *err)
{
    int code;
    if ((code = ms_check_key(c->key, err)))
        return code;
    if (c->value.len > s->opts.max_value_bytes)
        return ms_fail(err, 3, "value of key \"%s\" is above the limit of %zu bytes",
                       c->key, s->opts.max_value_bytes);
    size_t n = strlen(c->content_type);
    if (n > MS_CTYPE_MAX)
        return ms_fail(err, 3, "content_type longer than %d bytes", MS_CTYPE_MAX);
    for (size_t i = 0; i < n; i++)
        if (c->content_type[i] < 0x20 || c->content_type[i] > 0x7e)
            return ms_fail(err, 3, "content_type must be printable ASCII");
    uint64_t limit = (ms_wall_ms() + (uint64_t)s->opts.max_clock_skew_ms)
                     << MS_HLC_LOGICAL_BITS;
    if (c->hlc > limit)
        return ms_fail(err, 3,
                       "hlc of key \"%s\" is more than %lld ms ahead of the "
                       "server's clock",
                       c->key, (long long)s->opts.max_clock_skew_ms);
    return 0;
}

static SyncChange *change_copy(const SyncChange *c)
{
    SyncChange *p = malloc(sizeof *p);
    if (!p)
        return NULL;
    agentmesh__v1__sync_change__init(p);
    p->key = ms_strndup(c->key, strlen(c->key));
    p->content_type = ms_strndup(c->content_type, strlen(c->content_type));
    p->deleted = c->deleted;
    p->base_version = c->base_version;
    p->hlc = c->hlc;
    if (c->value.len && (p->value.data = malloc(c->value.len))) {
        memcpy(p->value.data, c->value.data, c->value.len);
        p->value.len = c->value.len;
    }
    if (!p->key || !p->content_type || (c->value.len && !p->value.data)) {
        protobuf_c_message_free_unpacked(&p->base, NULL);
        return NULL;
    }
    return p;
}

static planned *find_plan(syncer *y, const char *key, size_t len)
{
    for (size_t i = y->n_plans; i-- > 0;)
        if (y->plans[i].key_len == len && memcmp(y->plans[i].key, key, len) == 0)
            return &y->plans[i];
    return NULL;
}

/* Whether a change was processed before: earlier in this request, or in
 * the log. A processed change left an event with its id (applied), or one
 * with its conflict id (resolved), or, when it left neither (a delete of
 * an absent key), its id in memory.applied. The namespace key is new for
 * each generation, so a forgotten namespace's ids never match. */
_Static_assert(MS_CHANGE_ID == ES_ID_SIZE, "a change id is an event id");

static int seen(syncer *y, es_txn *txn, const uint8_t id[MS_CHANGE_ID])
{
    uint8_t k[MS_NS_MAX + 1 + MS_CHANGE_ID], cid[MS_CHANGE_ID];
    const void *v;
    size_t n;
    uint64_t pos;
    for (size_t i = 0; i < y->n_ids; i++)
        if (memcmp(y->ids[i], id, MS_CHANGE_ID) == 0)
            return 1;
    if (es_event_position(txn, id, &pos) == ES_OK)
        return 1;
    size_t kl = ms_kvkey(y->req->namespace_, id, MS_CHANGE_ID, k);
    if (es_kv_get(txn, KV_APPLIED, k, kl, &v, &n) == ES_OK)
        return 1;
    if (conflict_id(id, cid))
        return -1;
    return es_event_position(txn, cid, &pos) == ES_OK;
}

/* Writes the change as version `version` of its key (MemoryWritten or
 * MemoryDeleted with the change's id) and reports it as applied. */
static int write_change(syncer *y, const SyncChange *c, uint64_t version,
                        uint64_t hlc, const uint8_t id[MS_CHANGE_ID])
{
    const char *ns = y->req->namespace_, *replica = y->req->replica_id;
    size_t key_len = strlen(c->key), rec_len = 0;
    uint8_t *sealed = NULL, *rec = NULL, kvk[MS_KVKEY_MAX];
    ms_entry e;
    long idx;
    int rc = -1;

    memset(&e, 0, sizeof e);
    e.deleted = c->deleted;
    e.generation = y->st.meta.generation;
    e.version = version;
    e.hlc = hlc;
    e.updated_ns = ms_now_ns();
    e.replica = replica;
    e.replica_len = strlen(replica);
    e.ctype = c->content_type;
    e.ctype_len = strlen(c->content_type);
    if (c->deleted) {
        Agentmesh__V1__MemoryDeleted ev = AGENTMESH__V1__MEMORY_DELETED__INIT;
        ev.namespace_ = (char *)ns;
        ev.key = c->key;
        ev.version = version;
        ev.replica_id = (char *)replica;
        ev.hlc = hlc;
        idx = ms_batch_event(&y->b, T_DELETED, &ev.base, y->ctx, id);
    } else {
        ms_seal_ctx w = {ns, c->key, key_len, version, e.generation};
        if (ms_seal(&y->st.key, &w, c->value.data, c->value.len, &sealed,
                    &e.sealed_len) ||
            hash(y, c->value.data, c->value.len, e.hash))
            goto out;
        e.sealed = sealed;
        e.size = c->value.len;
        Agentmesh__V1__MemoryWritten ev = AGENTMESH__V1__MEMORY_WRITTEN__INIT;
        ev.namespace_ = (char *)ns;
        ev.key = c->key;
        ev.version = version;
        ev.size = e.size;
        ev.content_hash.data = e.hash;
        ev.content_hash.len = MS_HASH_SIZE;
        ev.content_type = c->content_type;
        ev.replica_id = (char *)replica;
        ev.hlc = hlc;
        ev.sealed_value.data = sealed;
        ev.sealed_value.len = e.sealed_len;
        ev.key_generation = e.generation;
        idx = ms_batch_event(&y->b, T_WRITTEN, &ev.base, y->ctx, id);
    }
    if (idx < 0 || ms_entry_encode(&e, &rec, &rec_len))
        goto out;
    if (ms_batch_put(&y->b, KV_ENTRIES, kvk, ms_kvkey(ns, c->key, key_len, kvk),
                     rec, rec_len, idx)) {
        rec = NULL;
        goto out;
    }
    rec = NULL;
    Agentmesh__V1__MemoryEntry *p =
        ms_entry_proto(ns, c->key, key_len, &e, c->value.data,
                       c->deleted ? 0 : c->value.len);
    if (!p)
        goto out;
    y->applied[y->n_applied] = p;
    y->applied_event[y->n_applied++] = idx;
    planned *pl = &y->plans[y->n_plans++];
    *pl = (planned){c->key, key_len, version, c->deleted, hlc, replica, c};
    rc = 0;
out:
    free(sealed);
    free(rec);
    return rc;
}

/* The server's side of a conflict as a MemoryEntry (with its value). */
static Agentmesh__V1__MemoryEntry *server_side(syncer *y, es_txn *txn,
                                               const char *key, planned *pl)
{
    const char *ns = y->req->namespace_;
    size_t key_len = strlen(key);
    ms_entry e;
    uint8_t *value = NULL;
    size_t value_len = 0;
    memset(&e, 0, sizeof e);
    if (pl) {
        const SyncChange *c = pl->change_src;
        e.version = pl->version;
        e.deleted = pl->deleted;
        e.hlc = pl->hlc;
        e.replica = pl->replica;
        e.replica_len = strlen(pl->replica);
        e.ctype = c->content_type;
        e.ctype_len = strlen(c->content_type);
        return ms_entry_proto(ns, key, key_len, &e, c->value.data,
                              pl->deleted ? 0 : c->value.len);
    }
    int rc = y->st.meta.active ? ms_entry_get(txn, ns, key, key_len, &e)
                               : ES_NOT_FOUND;
    if (rc == ES_NOT_FOUND) {
        memset(&e, 0, sizeof e);
        e.replica = e.ctype = "";
        return ms_entry_proto(ns, key, key_len, &e, NULL, 0);
    }
    if (rc || (!e.deleted &&
               ms_entry_value(&y->st.key, ns, key, key_len, &e, &value,
                              &value_len)))
        return NULL;
    Agentmesh__V1__MemoryEntry *p =
        ms_entry_proto(ns, key, key_len, &e, value, value_len);
    if (value) {
        OPENSSL_cleanse(value, value_len);
        free(value);
    }
    return p;
}

/* Records a change that leaves no event with its id or its conflict id. */
static int add_applied_id(syncer *y, const uint8_t id[MS_CHANGE_ID])
{
    uint8_t k[MS_NS_MAX + 1 + MS_CHANGE_ID];
    uint8_t *one = malloc(1);
    if (!one)
        return -1;
    one[0] = 1;
    size_t kl = ms_kvkey(y->req->namespace_, id, MS_CHANGE_ID, k);
    return ms_batch_put(&y->b, KV_APPLIED, k, kl, one, 1, -1);
}

/* One change: skip, apply, or resolve. Returns 0 or a gRPC code. */
static int one_change(syncer *y, es_txn *txn, const SyncChange *c, ms_error *err)
{
    const char *ns = y->req->namespace_;
    size_t key_len = strlen(c->key);
    uint8_t id[MS_CHANGE_ID];
    char replica[MS_REPLICA_MAX + 1] = "";
    uint64_t cur_version = 0, cur_hlc = 0;
    bool cur_deleted = true;

    if (change_id(y, y->req->replica_id, c, id))
        return ms_fail(err, 13, "hashing a change failed");
    int was = seen(y, txn, id);
    if (was < 0)
        return ms_fail(err, 13, "hashing a change failed");
    if (was)
        return 0;
    uint64_t hlc = c->hlc ? c->hlc : ms_hlc_now(&y->s->hlc);
    if (c->hlc)
        ms_hlc_observe(&y->s->hlc, c->hlc);
    planned *pl = find_plan(y, c->key, key_len);
    if (pl) {
        cur_version = pl->version;
        cur_deleted = pl->deleted;
        cur_hlc = pl->hlc;
        snprintf(replica, sizeof replica, "%s", pl->replica);
    } else if (y->st.exists && y->st.meta.active) {
        ms_entry e;
        int rc = ms_entry_get(txn, ns, c->key, key_len, &e);
        if (rc == ES_OK) {
            cur_version = e.version;
            cur_deleted = e.deleted;
            cur_hlc = e.hlc;
            memcpy(replica, e.replica, e.replica_len);
            replica[e.replica_len] = '\0';
        } else if (rc != ES_NOT_FOUND) {
            return ms_store_fail(err, rc, "reading an entry");
        }
    }
    memcpy(y->ids[y->n_ids++], id, MS_CHANGE_ID);
    if (c->base_version == cur_version) {
        /* Deleting what is absent changes nothing, and leaves no event. */
        if (c->deleted && cur_deleted)
            return add_applied_id(y, id) ? ms_fail(err, 8, "out of memory")
                                         : 0;
        return write_change(y, c, cur_version + 1, hlc, id)
                   ? ms_fail(err, 8, "out of memory")
                   : 0;
    }
    ms_stamp server = {cur_hlc, replica};
    ms_stamp client = {hlc, y->req->replica_id};
    int resolution =
        ms_resolve(y->strategy, &server, &client, y->order, y->n_order);
    Agentmesh__V1__MemoryConflict *mc = malloc(sizeof *mc);
    if (!mc)
        return ms_fail(err, 8, "out of memory");
    agentmesh__v1__memory_conflict__init(mc);
    y->conflicts[y->n_conflicts++] = mc;
    mc->key = ms_strndup(c->key, key_len);
    mc->server_entry = server_side(y, txn, c->key, pl);
    mc->client_change = change_copy(c);
    mc->resolution = (Agentmesh__V1__ConflictResolution)resolution;
    if (!mc->key || !mc->server_entry || !mc->client_change)
        return ms_fail(err, 8, "out of memory or unreadable server entry");
    Agentmesh__V1__MemoryConflictResolved ev =
        AGENTMESH__V1__MEMORY_CONFLICT_RESOLVED__INIT;
    uint8_t cid[MS_CHANGE_ID];
    if (conflict_id(id, cid))
        return ms_fail(err, 13, "hashing a change failed");
    ev.namespace_ = (char *)ns;
    ev.key = c->key;
    ev.strategy = (Agentmesh__V1__ConflictStrategy)y->strategy;
    ev.resolution = (Agentmesh__V1__ConflictResolution)resolution;
    ev.server_version = cur_version;
    ev.server_replica_id = replica;
    ev.server_hlc = cur_hlc;
    ev.client_replica_id = y->req->replica_id;
    ev.client_hlc = hlc;
    ev.client_base_version = c->base_version;
    if (ms_batch_event(&y->b, T_CONFLICT, &ev.base, y->ctx, cid) < 0)
        return ms_fail(err, 8, "out of memory");
    if (resolution != MS_CLIENT_WON || (c->deleted && cur_deleted))
        return 0;
    return write_change(y, c, cur_version + 1, hlc, id)
               ? ms_fail(err, 8, "out of memory")
               : 0;
}

static int check_request(ms_service *s, const Agentmesh__V1__SyncMemoryRequest *req,
                         ms_cursor *cursor, ms_error *err)
{
    int code;
    size_t rn = strlen(req->replica_id);
    if ((code = ms_check_ns(req->namespace_, err)))
        return code;
    if (rn == 0 || rn > MS_REPLICA_MAX || !ms_utf8_valid(req->replica_id, rn))
        return ms_fail(err, 3, "replica_id must be 1..%d bytes of UTF-8",
                       MS_REPLICA_MAX);
    if (ms_cursor_decode(req->namespace_, req->cursor, cursor))
        return ms_fail(err, 3, "cursor is not a cursor of namespace %s",
                       req->namespace_);
    if (req->n_changes > MS_SYNC_CHANGES_MAX)
        return ms_fail(err, 3, "%zu changes: at most %u per request",
                       req->n_changes, MS_SYNC_CHANGES_MAX);
    if ((int)req->strategy < 0 || (int)req->strategy > MS_KEEP_BOTH)
        return ms_fail(err, 3, "unknown strategy %d", (int)req->strategy);
    for (size_t i = 0; i < req->n_changes; i++)
        if ((code = check_change(s, req->changes[i], err)))
            return code;
    return 0;
}

/* Applies the request's changes (under the lock). */
static int apply_changes(syncer *y, ms_error *err)
{
    const Agentmesh__V1__SyncMemoryRequest *req = y->req;
    const char *ns = req->namespace_;
    pthread_mutex_t *lock = ms_lock_for(y->s, ns);
    es_txn *txn = NULL;
    es_append_result res;
    size_t n = req->n_changes;
    int code = 0, rc;

    y->plans = calloc(n, sizeof *y->plans);
    y->ids = calloc(n, sizeof *y->ids);
    y->applied = calloc(n, sizeof *y->applied);
    y->applied_event = calloc(n, sizeof *y->applied_event);
    y->conflicts = calloc(n, sizeof *y->conflicts);
    if (!y->plans || !y->ids || !y->applied || !y->applied_event || !y->conflicts)
        return ms_fail(err, 8, "out of memory");
    pthread_mutex_lock(lock);
    ms_master_rdlock(y->s);
    if ((rc = es_txn_begin(y->s->store, &txn)) ||
        (rc = ms_ns_load(y->s, txn, ns, &y->st))) {
        code = ms_store_fail(err, rc, "reading the namespace");
        goto out;
    }
    /* A configured rule wins; else the choice a request made earlier for
     * this generation of the namespace; else this request's; else LWW. */
    int rule = ms_rules_match(y->s->opts.rules, ns, &y->order, &y->n_order);
    if (!y->st.meta.active)
        y->st.meta.strategy = MS_STRATEGY_UNSPECIFIED;
    if (!rule && !y->st.meta.strategy && req->strategy)
        y->st.meta.strategy = req->strategy;
    y->strategy = rule ? rule
                       : y->st.meta.strategy ? y->st.meta.strategy
                                             : MS_LAST_WRITER_WINS;
    if (ms_batch_ensure_key(y->s, &y->b, ns, &y->st) ||
        ms_batch_put_meta(&y->b, ns, &y->st.meta)) {
        code = ms_fail(err, 8, "out of memory or entropy");
        goto out;
    }
    for (size_t i = 0; i < n && !code; i++)
        code = one_change(y, txn, req->changes[i], err);
    es_txn_end(txn);
    txn = NULL;
    if (code || y->b.n_ev == 0)
        goto out;
    if ((rc = ms_batch_commit(y->s, &y->b, y->st.expected, &res))) {
        code = ms_store_fail(err, rc, "appending");
        goto out;
    }
    for (size_t i = 0; i < y->n_applied; i++)
        y->applied[i]->position = res.first_position + (uint64_t)y->applied_event[i];
out:
    es_txn_end(txn);
    ms_master_unlock(y->s);
    pthread_mutex_unlock(lock);
    return code;
}

int ms_sync(ms_service *s, const ms_ctx *ctx,
            const Agentmesh__V1__SyncMemoryRequest *req,
            Agentmesh__V1__SyncMemoryResponse **out, ms_error *err)
{
    syncer y;
    ms_cursor cursor;
    ms_changes ch;
    Agentmesh__V1__SyncMemoryResponse *rep = NULL;
    int code;

    memset(&y, 0, sizeof y);
    memset(&ch, 0, sizeof ch);
    y.s = s;
    y.req = req;
    y.ctx = ctx;
    ms_batch_init(&y.b, req->namespace_);
    if ((code = check_request(s, req, &cursor, err)))
        goto out;
    if (req->n_changes && (code = apply_changes(&y, err)))
        goto out;
    size_t page = req->page_size ? req->page_size : MS_PAGE_DEFAULT;
    if (page > MS_PAGE_MAX)
        page = MS_PAGE_MAX;
    if ((code = ms_changes_read(s, req->namespace_, &cursor, page, &ch, err)))
        goto out;
    rep = malloc(sizeof *rep);
    char *text = malloc(MS_CURSOR_TEXT_MAX);
    if (!rep || !text || ms_cursor_encode(req->namespace_, &ch.cursor, text)) {
        free(rep);
        free(text);
        rep = NULL;
        code = ms_fail(err, 8, "out of memory");
        goto out;
    }
    agentmesh__v1__sync_memory_response__init(rep);
    rep->cursor = text;
    rep->has_more = ch.has_more;
    rep->changes = ch.entries;
    rep->n_changes = ch.n;
    ch.entries = NULL;
    ch.n = 0;
    rep->applied = y.applied;
    rep->n_applied = y.n_applied;
    y.applied = NULL;
    y.n_applied = 0;
    rep->conflicts = y.conflicts;
    rep->n_conflicts = y.n_conflicts;
    y.conflicts = NULL;
    y.n_conflicts = 0;
    *out = rep;
out:
    ms_changes_free(&ch);
    for (size_t i = 0; i < y.n_applied; i++)
        protobuf_c_message_free_unpacked(&y.applied[i]->base, NULL);
    for (size_t i = 0; i < y.n_conflicts; i++)
        protobuf_c_message_free_unpacked(&y.conflicts[i]->base, NULL);
    free(y.applied);
    free(y.conflicts);
    free(y.applied_event);
    free(y.plans);
    free(y.ids);
    ms_mac_close(&y.mac);
    ms_key_wipe(&y.st.key);
    ms_batch_free(&y.b);
    return code;
}
