/* Reading a namespace's changes back from its stream: the MemoryWritten and
 * MemoryDeleted events after a cursor, opened with the namespace key, as
 * SyncMemory's `changes` and WatchMemory's messages; and the outbox hook that
 * keeps sealed values off NATS. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "services/memory_sync/changes.h"

/* One event as an entry. *out stays NULL for events that are not changes
 * (or belong to an older key generation). Returns 0, or a gRPC code. */
static int event_entry(const char *ns, const ms_ns_key *k, uint32_t gen,
                       const es_event *ev, Agentmesh__V1__MemoryEntry **out,
                       ms_error *err)
{
    ms_entry e;
    uint8_t *value = NULL;
    size_t value_len = 0;
    int code = 0;

    *out = NULL;
    memset(&e, 0, sizeof e);
    e.position = ev->position;
    e.updated_ns = ev->time_unix_nano;
    if (strcmp(ev->type, T_WRITTEN) == 0) {
        Agentmesh__V1__MemoryWritten *w = agentmesh__v1__memory_written__unpack(
            NULL, ev->data_len, ev->data);
        if (!w)
            return ms_fail(err, 13, "undecodable event at %llu",
                           (unsigned long long)ev->position);
        if (w->key_generation == gen) {
            e.generation = gen;
            e.version = w->version;
            e.hlc = w->hlc;
            e.size = w->size;
            e.replica = w->replica_id;
            e.replica_len = strlen(w->replica_id);
            e.ctype = w->content_type;
            e.ctype_len = strlen(w->content_type);
            ms_seal_ctx where = {ns, w->key, strlen(w->key), w->version, gen};
            int rc = ms_unseal(k, &where, w->sealed_value.data,
                               w->sealed_value.len, &value, &value_len);
            if (rc)
                code = ms_fail(err, rc == -1 ? 8 : 13,
                               "the value at %llu cannot be opened",
                               (unsigned long long)ev->position);
            else if (!(*out = ms_entry_proto(ns, w->key, strlen(w->key), &e,
                                             value, value_len)))
                code = ms_fail(err, 8, "out of memory");
        }
        if (value) {
            OPENSSL_cleanse(value, value_len);
            free(value);
        }
        protobuf_c_message_free_unpacked(&w->base, NULL);
        return code;
    }
    if (strcmp(ev->type, T_DELETED) == 0) {
        Agentmesh__V1__MemoryDeleted *d = agentmesh__v1__memory_deleted__unpack(
            NULL, ev->data_len, ev->data);
        if (!d)
            return ms_fail(err, 13, "undecodable event at %llu",
                           (unsigned long long)ev->position);
        e.deleted = true;
        e.generation = gen;
        e.version = d->version;
        e.hlc = d->hlc;
        e.replica = d->replica_id;
        e.replica_len = strlen(d->replica_id);
        e.ctype = "";
        if (!(*out = ms_entry_proto(ns, d->key, strlen(d->key), &e, NULL, 0)))
            code = ms_fail(err, 8, "out of memory");
        protobuf_c_message_free_unpacked(&d->base, NULL);
        return code;
    }
    return 0;
}

#define READ_PAGE 256

int ms_changes_read(ms_service *s, const char *ns, const ms_cursor *in,
                    size_t page, ms_changes *out, ms_error *err)
{
    es_txn *txn = NULL;
    ms_ns_meta meta;
    ms_ns_key k;
    es_event *evs = NULL;
    char stream[MS_STREAM_MAX];
    uint32_t gen = 0;
    bool locked = false;
    int code = 0, rc;

    memset(out, 0, sizeof *out);
    memset(&k, 0, sizeof k);
    out->cursor = *in;
    snprintf(stream, sizeof stream, "%s%s", MS_STREAM_PREFIX, ns);
    out->entries = calloc(page, sizeof *out->entries);
    evs = calloc(READ_PAGE, sizeof *evs);
    if (!out->entries || !evs) {
        code = ms_fail(err, 8, "out of memory");
        goto out;
    }
    ms_master_rdlock(s);
    locked = true;
    if ((rc = es_txn_begin(s->store, &txn))) {
        code = ms_store_fail(err, rc, "reading");
        goto out;
    }
    rc = ms_meta_get(txn, ns, &meta);
    if (rc == ES_NOT_FOUND)
        goto out;
    if (rc) {
        code = ms_store_fail(err, rc, "reading the namespace");
        goto out;
    }
    uint64_t from = meta.gen_start_version;
    if (in->generation == meta.generation && in->next_version > from)
        from = in->next_version;
    out->cursor.generation = meta.generation;
    out->cursor.next_version = from;
    if (in->generation != meta.generation)
        out->cursor.position = 0;
    if (!meta.active) {
        uint64_t v = 0;
        if (es_stream_version(txn, stream, &v) == ES_OK)
            out->cursor.next_version = v + 1;
        goto out;
    }
    if ((rc = ms_nskey_get(s, txn, ns, &gen, &k))) {
        code = ms_store_fail(err, rc, "reading the namespace key");
        goto out;
    }
    for (;;) {
        es_page pg;
        /* No more than the page still needs, and one to tell has_more:
         * every event read is decoded. */
        size_t want = page - out->n + 1;
        rc = es_read_stream(txn, stream, from, ES_FORWARD,
                            want < READ_PAGE ? want : READ_PAGE, evs, &pg);
        if (rc == ES_NOT_FOUND)
            break;
        if (rc) {
            code = ms_store_fail(err, rc, "reading the stream");
            goto out;
        }
        for (size_t i = 0; i < pg.count; i++) {
            if (out->n == page) {
                out->has_more = true;
                goto out;
            }
            Agentmesh__V1__MemoryEntry *e = NULL;
            if ((code = event_entry(ns, &k, gen, &evs[i], &e, err)))
                goto out;
            if (e)
                out->entries[out->n++] = e;
            out->cursor.next_version = evs[i].stream_version + 1;
            out->cursor.position = evs[i].position;
        }
        if (pg.count == 0 || pg.end_of_stream)
            break;
        from = pg.next;
    }
out:
    es_txn_end(txn);
    if (locked)
        ms_master_unlock(s);
    ms_key_wipe(&k);
    free(evs);
    if (code)
        ms_changes_free(out);
    return code;
}

void ms_changes_free(ms_changes *c)
{
    for (size_t i = 0; c->entries && i < c->n; i++)
        protobuf_c_message_free_unpacked(&c->entries[i]->base, NULL);
    free(c->entries);
    c->entries = NULL;
    c->n = 0;
}

int ms_watch_begin(ms_service *s, const Agentmesh__V1__WatchMemoryRequest *req,
                   ms_watch_start *out, ms_error *err)
{
    const char *ns = req->namespace_;
    size_t plen = strlen(req->prefix);
    es_txn *txn = NULL;
    ms_ns_meta meta;
    ms_cursor c;
    char stream[MS_STREAM_MAX];
    int code, rc;

    if ((code = ms_check_ns(ns, err)))
        return code;
    if (plen > MS_KEY_MAX || !ms_utf8_valid(req->prefix, plen))
        return ms_fail(err, 3, "prefix must be 0..%d bytes of UTF-8", MS_KEY_MAX);
    if (ms_cursor_decode(ns, req->cursor, &c))
        return ms_fail(err, 3, "cursor is not a cursor of namespace %s", ns);
    if ((rc = es_txn_begin(s->store, &txn)))
        return ms_store_fail(err, rc, "reading");
    rc = ms_meta_get(txn, ns, &meta);
    if (rc == ES_NOT_FOUND || (rc == ES_OK && !meta.active)) {
        code = ms_fail(err, 5, "namespace %s not found", ns);
        goto out;
    }
    if (rc) {
        code = ms_store_fail(err, rc, "reading the namespace");
        goto out;
    }
    out->generation = meta.generation;
    out->from_version = meta.gen_start_version;
    if (c.generation == meta.generation && c.next_version > out->from_version)
        out->from_version = c.next_version;
    out->after_position = 0;
    if (out->from_version > 0) {
        es_event ev;
        es_page pg;
        snprintf(stream, sizeof stream, "%s%s", MS_STREAM_PREFIX, ns);
        rc = es_read_stream(txn, stream, out->from_version - 1, ES_FORWARD, 1,
                            &ev, &pg);
        if (rc == ES_OK && pg.count == 1)
            out->after_position = ev.position;
        else if (rc == ES_OK || rc == ES_NOT_FOUND)
            out->after_position = c.position;
        else {
            code = ms_store_fail(err, rc, "reading the stream");
            goto out;
        }
    }
    code = 0;
out:
    es_txn_end(txn);
    return code;
}

int ms_watch_change(ms_service *s, const char *ns, const char *prefix,
                    const es_event *ev, Agentmesh__V1__MemoryChange **out,
                    ms_error *err)
{
    es_txn *txn = NULL;
    ms_ns_key k;
    uint32_t gen = 0;
    ms_ns_meta meta;
    bool skip = false;
    Agentmesh__V1__MemoryEntry *e = NULL;
    int code = 0, rc;

    *out = NULL;
    if (strcmp(ev->type, T_FORGOTTEN) == 0)
        return ms_fail(err, 5, "namespace %s was forgotten", ns);
    if (strcmp(ev->type, T_WRITTEN) && strcmp(ev->type, T_DELETED))
        return 0;
    memset(&k, 0, sizeof k);
    ms_master_rdlock(s);
    rc = es_txn_begin(s->store, &txn);
    if (rc == ES_OK)
        rc = ms_nskey_get(s, txn, ns, &gen, &k);
    /* An event of an older generation (the namespace was forgotten and
     * written again before this watch reached the NamespaceForgotten) is
     * not a change of the current one. */
    if (rc == ES_OK && ms_meta_get(txn, ns, &meta) == ES_OK &&
        ev->stream_version < meta.gen_start_version)
        skip = true;
    es_txn_end(txn);
    ms_master_unlock(s);
    if (skip) {
        ms_key_wipe(&k);
        return 0;
    }
    if (rc == ES_NOT_FOUND)
        return ms_fail(err, 5, "namespace %s was forgotten", ns);
    if (rc)
        return ms_store_fail(err, rc, "reading the namespace key");
    code = event_entry(ns, &k, gen, ev, &e, err);
    ms_key_wipe(&k);
    if (code || !e)
        return code;
    if (strncmp(e->key, prefix, strlen(prefix)) != 0) {
        protobuf_c_message_free_unpacked(&e->base, NULL);
        return 0;
    }
    Agentmesh__V1__MemoryChange *ch = malloc(sizeof *ch);
    char *type = ms_strndup(ev->type, ev->type_len);
    char *cur = malloc(MS_CURSOR_TEXT_MAX);
    ms_cursor c = {gen, ev->stream_version + 1, ev->position};
    if (!ch || !type || !cur || ms_cursor_encode(ns, &c, cur)) {
        free(ch);
        free(type);
        free(cur);
        protobuf_c_message_free_unpacked(&e->base, NULL);
        return ms_fail(err, 8, "out of memory");
    }
    agentmesh__v1__memory_change__init(ch);
    ch->entry = e;
    ch->event_type = type;
    ch->cursor = cur;
    *out = ch;
    return 0;
}

int ms_payload_hook(const es_event *ev, ProtobufCMessage *payload, void *arg)
{
    (void)arg;
    if (strcmp(ev->type, T_WRITTEN) == 0 &&
        payload->descriptor == &agentmesh__v1__memory_written__descriptor) {
        Agentmesh__V1__MemoryWritten *w = (Agentmesh__V1__MemoryWritten *)payload;
        /* Length 0 publishes nothing; free_unpacked still frees the bytes. */
        if (w->sealed_value.data)
            OPENSSL_cleanse(w->sealed_value.data, w->sealed_value.len);
        w->sealed_value.len = 0;
    }
    return 0;
}
