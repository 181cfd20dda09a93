/*
 * The outbox relay: one thread per service that follows the log from its
 * checkpoint (an es_sub, woken by commits), publishes events to NATS as a
 * pipeline (many acknowledgements outstanding), and records the checkpoint in
 * the store once a prefix is acknowledged. JetStream de-duplicates
 * re-publications by Nats-Msg-Id (the event id), so a crash between publish
 * and checkpoint only re-sends.
 *
 * JetStream's acknowledgements come back on a synchronous subscription to
 * the relay's own inbox (`<inbox>.<position>` is each publish's reply
 * subject) and the relay collects them itself, between publishes. They are
 * not on the path of an event to its subscribers, only on the way to the
 * checkpoint; nats.c's asynchronous publish would hand each one to a
 * delivery thread and its collector thread, two more threads woken per
 * handful of acknowledgements.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>
#include <nats/nats.h>

#include "services/bus/bus.h"
#include "services/common/natslib.h"

enum entry_state { PENDING = 0, INFLIGHT, ACKED, FAILED, DEAD };

/* Messages (published ones and replies) held back from natsMsg_Destroy:
 * nats.c hands each destroyed message to its collector thread, waking it if
 * it sleeps, and that thread then preempted the relay thousands of times a
 * second. Destroyed HOLD_MAX at a time, it is one wake per HOLD_MAX. */
#define HOLD_MAX 128
#define HOLD_BYTES_MAX (1024 * 1024) /* ... or once they hold 1 MiB */

typedef struct entry {
    es_event *ev;          /* owned copy */
    char *json;            /* CloudEvent body, NULL when DEAD at build */
    size_t json_len;
    char subject[256];
    char id[37];
    int state;
    int64_t sent_ms;       /* when it was last published (CLOCK_MONOTONIC) */
    natsStatus err;        /* last failure */
    jsErrCode code;        /* JetStream API error of the last failure, 0 if none */
    unsigned attempts;     /* server refusals so far */
    char reason[256];      /* why it is DEAD */
    bool dl_sent;          /* its dead-letter notice went out */
} entry;

struct bus_outbox {
    es_store *store;
    char *nats_url, *service, *stream_name, *checkpoint_name;
    bool jetstream;
    int64_t ack_wait_ms, retry_min_ms, retry_max_ms;
    unsigned max_attempts;
    bus_payload_fn hook;
    void *hook_arg;

    pthread_t thread;
    pthread_mutex_t mu;      /* guards entry states, `count`, `stopping` and
                                the kicker's flags */
    pthread_cond_t wake;     /* interrupts backoff sleeps */
    /* The kicker: flushes the connection's write buffer when the relay has
     * published (see kicker_main). */
    pthread_t kicker;
    pthread_cond_t kick_cv;
    bool kick, kick_stop, kicker_started;
    bool stopping;
    int64_t flush_deadline;  /* CLOCK_MONOTONIC ms; valid once stopping */

    natsConnection *nc;
    jsCtx *js;
    natsSubscription *acks;  /* JetStream's replies, read by the relay */
    char inbox[128];         /* the acks' subject prefix, "<inbox>." */
    natsMsg *held[HOLD_MAX]; /* the relay's, destroyed HOLD_MAX at a time */
    size_t n_held;
    size_t held_bytes;       /* their payloads: events may be up to 1 MiB */
    bool stream_ready;
    es_sub *sub;

    entry *ring;             /* events taken from the log, oldest at head */
    size_t cap, head, count;
    int64_t last_commit_ms;

    _Atomic uint64_t checkpoint;
    _Atomic uint64_t published, dead_lettered, failures;
    _Atomic bool connected;
    bool closed;             /* the connection's last callback ran (under mu) */

    metrics_family *m_published, *m_dead, *m_failures, *m_backlog;
    int64_t backlog_ms; /* when the backlog gauge was last set */
};

/* The i-th entry of the ring, counting from the oldest. */
static entry *at(bus_outbox *ob, size_t i)
{
    return &ob->ring[(ob->head + i) % ob->cap];
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static char *dup_or(const char *s, const char *dflt)
{
    return strdup(s != NULL && s[0] != '\0' ? s : dflt);
}

void bus_outbox_options_init(bus_outbox_options *o)
{
    memset(o, 0, sizeof(*o));
    o->nats_url = "nats://127.0.0.1:4222";
    o->jetstream = true;
    o->stream_name = "AGENTMESH";
    o->window = 1024;
    o->ack_wait_ms = 5000;
    o->retry_min_ms = 50;
    o->retry_max_ms = 5000;
    o->max_attempts = 3;
    o->checkpoint_name = "outbox";
}

static void log_line(const bus_outbox *ob, const char *level, const char *msg, const char *detail)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* msg is ours; detail comes from NATS or the store: keep it printable. */
    char clean[256];
    size_t o = 0;
    for (const char *p = detail ? detail : ""; *p && o + 1 < sizeof(clean); p++)
        clean[o++] = (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) ? '\'' : *p;
    clean[o] = '\0';
    fprintf(stderr,
            "{\"time_unix_nano\":%lld%09ld,\"level\":\"%s\",\"component\":\"outbox\",\"service\":\"%s\","
            "\"msg\":\"%s\",\"detail\":\"%s\"}\n",
            (long long)ts.tv_sec, ts.tv_nsec, level, ob->service, msg, clean);
}

static bool stop_now(bus_outbox *ob)
{
    pthread_mutex_lock(&ob->mu);
    bool stop = ob->stopping && (ob->flush_deadline >= 0 && now_ms() >= ob->flush_deadline);
    pthread_mutex_unlock(&ob->mu);
    return stop;
}

static bool stopping(bus_outbox *ob)
{
    pthread_mutex_lock(&ob->mu);
    bool s = ob->stopping;
    pthread_mutex_unlock(&ob->mu);
    return s;
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    bus_outbox *ob = closure;
    atomic_store(&ob->connected, false);
    /* Acks of what was in flight cannot come on the next connection: fail
     * them now so the relay re-sends them, in order, once reconnected. */
    pthread_mutex_lock(&ob->mu);
    for (size_t i = 0; i < ob->count; i++) {
        entry *e = at(ob, i);
        if (e->state == INFLIGHT) {
            e->state = FAILED;
            e->err = NATS_CONNECTION_DISCONNECTED;
        }
    }
    pthread_mutex_unlock(&ob->mu);
    if (!stopping(ob))
        log_line(ob, "warn", "disconnected from NATS; events wait in the log", "");
}

static void on_connected(natsConnection *nc, void *closure)
{
    (void)nc;
    bus_outbox *ob = closure;
    atomic_store(&ob->connected, true);
    log_line(ob, "info", "connected to NATS", ob->nats_url);
}

/* The last callback NATS delivers for a connection: after it, no callback
 * can touch the outbox, so bus_outbox_stop waits for it before freeing. */
static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    bus_outbox *ob = closure;
    pthread_mutex_lock(&ob->mu);
    ob->closed = true;
    pthread_cond_broadcast(&ob->wake);
    pthread_mutex_unlock(&ob->mu);
}

static void close_nats(bus_outbox *ob)
{
    if (ob->nc == NULL)
        return;
    natsConnection_Close(ob->nc);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    pthread_mutex_lock(&ob->mu);
    while (!ob->closed)
        if (pthread_cond_timedwait(&ob->wake, &ob->mu, &ts) == ETIMEDOUT)
            break;
    pthread_mutex_unlock(&ob->mu);
}

/* Records one JetStream reply in the ring entry its subject names
 * (`<inbox>.<position>`): a PubAck `{"stream":...,"seq":...}` acknowledges
 * it, `{"error":{"code":...,"err_code":...}}` is the server's refusal.
 * Replies to entries no longer in flight (a late reply to an attempt that
 * timed out, whose retry is out) change nothing; a late success is still
 * taken, since the server has stored the event. Called with ob->mu held. */
static void ack_one(bus_outbox *ob, natsMsg *msg)
{
    const char *subj = natsMsg_GetSubject(msg);
    size_t plen = strlen(ob->inbox);
    if (subj == NULL || strncmp(subj, ob->inbox, plen) != 0 || ob->count == 0)
        return;
    char *end = NULL;
    unsigned long long p = strtoull(subj + plen, &end, 10);
    uint64_t first = at(ob, 0)->ev->position;
    if (end == subj + plen || *end != '\0' || p < first || p - first >= ob->count)
        return;
    entry *e = at(ob, (size_t)(p - first));
    if (e->state != INFLIGHT && e->state != FAILED)
        return;
    json_error_t jerr;
    json_t *r = json_loadb(natsMsg_GetData(msg), (size_t)natsMsg_GetDataLength(msg), 0, &jerr);
    json_t *err = json_object_get(r, "error");
    if (json_is_object(err)) {
        if (e->state == INFLIGHT) {
            e->state = FAILED;
            e->err = NATS_ERR;
            e->code = (jsErrCode)json_integer_value(json_object_get(err, "err_code"));
            if (e->code == 0)
                e->code = (jsErrCode)json_integer_value(json_object_get(err, "code"));
        }
    } else if (json_is_string(json_object_get(r, "stream")) && json_is_integer(json_object_get(r, "seq"))) {
        e->state = ACKED;
    } else if (e->state == INFLIGHT) {
        /* Not a JetStream reply: whatever stored it is unknown. Retry. */
        e->state = FAILED;
        e->err = NATS_ERR;
        e->code = 0;
    }
    json_decref(r);
}

static void release_held(bus_outbox *ob)
{
    for (size_t i = 0; i < ob->n_held; i++)
        natsMsg_Destroy(ob->held[i]);
    ob->n_held = 0;
    ob->held_bytes = 0;
}

static void hold(bus_outbox *ob, natsMsg *m)
{
    if (ob->n_held == HOLD_MAX || ob->held_bytes > HOLD_BYTES_MAX)
        release_held(ob);
    ob->held[ob->n_held++] = m;
    ob->held_bytes += (size_t)natsMsg_GetDataLength(m);
}

/* Collects the JetStream replies that have arrived, waiting up to wait_ms
 * for the first, and fails the publishes that have waited longer than the
 * ack wait. Only the relay calls it. */
#define ACK_BATCH 64
static void drain_acks(bus_outbox *ob, int64_t wait_ms)
{
    if (ob->acks == NULL)
        return;
    natsMsg *got[ACK_BATCH];
    bool no_responders = false;
    for (;;) {
        size_t n = 0;
        natsStatus s = NATS_OK;
        while (n < ACK_BATCH) {
            natsMsg *m = NULL;
            s = natsSubscription_NextMsg(&m, ob->acks, n == 0 ? wait_ms : 0);
            if (s != NATS_OK) {
                /* nats.c swallows the server's "no responders" reply and
                 * says so instead: no stream listens on the subject, so
                 * none of the publishes in flight will be acknowledged. */
                no_responders |= s == NATS_NO_RESPONDERS;
                break;
            }
            got[n++] = m;
        }
        wait_ms = 0;
        pthread_mutex_lock(&ob->mu);
        for (size_t i = 0; i < n; i++)
            ack_one(ob, got[i]);
        pthread_mutex_unlock(&ob->mu);
        for (size_t i = 0; i < n; i++)
            hold(ob, got[i]);
        if (n < ACK_BATCH && s != NATS_NO_RESPONDERS)
            break;
    }
    int64_t now = now_ms();
    pthread_mutex_lock(&ob->mu);
    for (size_t i = 0; i < ob->count; i++) {
        entry *e = at(ob, i);
        if (e->state != INFLIGHT)
            continue;
        if (no_responders) {
            e->state = FAILED;
            e->err = NATS_NO_RESPONDERS;
            e->code = JSStreamNotFoundErr;
        } else if (now - e->sent_ms >= ob->ack_wait_ms) {
            e->state = FAILED;
            e->err = NATS_TIMEOUT;
            e->code = 0;
        }
    }
    pthread_mutex_unlock(&ob->mu);
}

static int connect_nats(bus_outbox *ob)
{
    natsOptions *opts = NULL;
    /* nats.c's own threads at the lowest priority (services/common/natslib.c). */
    natsStatus s = am_nats_open() == 0 ? natsOptions_Create(&opts) : NATS_ERR;
    if (s == NATS_OK)
        s = natsOptions_SetURL(opts, ob->nats_url);
    if (s == NATS_OK)
        s = natsOptions_SetName(opts, ob->service);
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(opts, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(opts, ob->retry_min_ms * 4);
    if (s == NATS_OK)
        s = natsOptions_SetRetryOnFailedConnect(opts, true, on_connected, ob);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(opts, on_disconnected, ob);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(opts, on_connected, ob);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(opts, on_closed, ob);
    /* No reconnect buffer: a message queued while disconnected would be sent
     * ahead of earlier ones that were lost and must be re-sent first. Publish
     * calls made while reconnecting fail instead, and the relay retries them
     * in position order. */
    if (s == NATS_OK)
        s = natsOptions_SetReconnectBufSize(opts, 1);
    if (s == NATS_OK) {
        s = natsConnection_Connect(&ob->nc, opts);
        if (s == NATS_NOT_YET_CONNECTED)
            s = NATS_OK; /* connecting in the background */
        else if (s == NATS_OK)
            atomic_store(&ob->connected, true);
    }
    if (s == NATS_OK && ob->jetstream) {
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = ob->ack_wait_ms;
        s = natsConnection_JetStream(&ob->js, ob->nc, &jo);
    }
    if (s == NATS_OK && ob->jetstream) {
        natsInbox *inbox = NULL;
        char subj[sizeof(ob->inbox) + 1];
        s = natsInbox_Create(&inbox);
        if (s == NATS_OK && strlen(inbox) + 2 >= sizeof(ob->inbox))
            s = NATS_ERR;
        if (s == NATS_OK) {
            snprintf(ob->inbox, sizeof(ob->inbox), "%s.", inbox);
            snprintf(subj, sizeof(subj), "%s*", ob->inbox);
            /* Subscribed while connecting in the background, the interest is
             * sent once connected (and again after every reconnect). */
            s = natsConnection_SubscribeSync(&ob->acks, ob->nc, subj);
        }
        if (s == NATS_OK)
            s = natsSubscription_SetPendingLimits(ob->acks, (int)(ob->cap * 4), 64 * 1024 * 1024);
        natsInbox_Destroy(inbox);
    }
    natsOptions_Destroy(opts);
    if (s != NATS_OK) {
        log_line(ob, "error", "cannot set up the NATS connection", natsStatus_GetText(s));
        return BUS_NATS;
    }
    return BUS_OK;
}

/* Creates the stream AGENTMESH over agentmesh.events.> if it is missing. */
static int ensure_stream(bus_outbox *ob)
{
    jsStreamInfo *si = NULL;
    jsErrCode code = 0;
    natsStatus s = js_GetStreamInfo(&si, ob->js, ob->stream_name, NULL, &code);
    if (s == NATS_OK) {
        jsStreamInfo_Destroy(si);
        return BUS_OK;
    }
    if (s != NATS_NOT_FOUND && code != JSStreamNotFoundErr) {
        log_line(ob, "warn", "JetStream not reachable yet", natsStatus_GetText(s));
        return BUS_NATS;
    }
    jsStreamConfig cfg;
    const char *subjects[] = {"agentmesh.events.>"};
    jsStreamConfig_Init(&cfg);
    cfg.Name = ob->stream_name;
    cfg.Subjects = subjects;
    cfg.SubjectsLen = 1;
    cfg.Storage = js_FileStorage;
    s = js_AddStream(&si, ob->js, &cfg, NULL, &code);
    if (s == NATS_OK || code == JSStreamNameExistErr) {
        jsStreamInfo_Destroy(si);
        log_line(ob, "info", "JetStream stream ready", ob->stream_name);
        return BUS_OK;
    }
    log_line(ob, "warn", "cannot create the JetStream stream", natsStatus_GetText(s));
    return BUS_NATS;
}

static void entry_clear(entry *e)
{
    es_event_free(e->ev);
    free(e->json);
    memset(e, 0, sizeof(*e));
}

/* Adds one committed event to the ring, building its CloudEvent now so a
 * permanent problem (unknown type, bad payload, too large) is known early. */
static void ring_add(bus_outbox *ob, es_event *ev)
{
    entry *e = at(ob, ob->count);
    memset(e, 0, sizeof(*e));
    e->ev = ev;
    bus_uuid_format(ev->id, e->id);
    if (bus_subject(ob->service, ev, e->subject, sizeof(e->subject)) != BUS_OK) {
        e->state = DEAD;
        snprintf(e->reason, sizeof(e->reason), "no valid subject for stream/type");
    } else {
        int rc = bus_cloudevent_build(ob->service, ev, ob->hook, ob->hook_arg, &e->json, &e->json_len,
                                      e->reason, sizeof(e->reason));
        if (rc != BUS_OK)
            e->state = DEAD;
    }
    if (e->state != DEAD) {
        int64_t max = natsConnection_GetMaxPayload(ob->nc);
        if (max > 0 && (int64_t)e->json_len + 1024 > max) {
            e->state = DEAD;
            snprintf(e->reason, sizeof(e->reason), "CloudEvent of %zu bytes exceeds the server's max_payload %lld",
                     e->json_len, (long long)max);
        }
    }
    pthread_mutex_lock(&ob->mu);
    ob->count++;
    pthread_mutex_unlock(&ob->mu);
}

/* Takes committed events into the ring: waits up to wait_ms for the first
 * one (woken by commits), then takes what is already there. */
static int ring_fill(bus_outbox *ob, int wait_ms)
{
    bool first = true;
    while (ob->count < ob->cap) {
        es_event *ev = NULL;
        int rc = es_sub_next(ob->sub, first ? wait_ms : 0, &ev);
        first = false;
        if (rc == ES_TIMEOUT)
            return BUS_OK;
        if (rc != ES_OK)
            return rc == ES_CLOSED ? BUS_STATE : BUS_STORE;
        ring_add(ob, ev);
    }
    return BUS_OK;
}

static natsStatus make_msg(const bus_outbox *ob, const entry *e, natsMsg **out)
{
    natsMsg *m = NULL;
    char pos[24], reply[sizeof(ob->inbox) + 24];
    snprintf(pos, sizeof(pos), "%llu", (unsigned long long)e->ev->position);
    if (ob->jetstream)
        snprintf(reply, sizeof(reply), "%s%s", ob->inbox, pos);
    natsStatus s = natsMsg_Create(&m, e->subject, ob->jetstream ? reply : NULL, e->json, (int)e->json_len);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Nats-Msg-Id", e->id);
    if (s == NATS_OK && ob->jetstream) /* refused unless it lands in our stream */
        s = natsMsgHeader_Set(m, "Nats-Expected-Stream", ob->stream_name);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "content-type", "application/cloudevents+json");
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "agentmesh-position", pos);
    if (s == NATS_OK && bus_traceparent_valid(e->ev->traceparent, e->ev->traceparent_len))
        s = natsMsgHeader_Set(m, "traceparent", e->ev->traceparent);
    if (s != NATS_OK) {
        natsMsg_Destroy(m);
        return s;
    }
    *out = m;
    return NATS_OK;
}

/* Publishes every PENDING entry, in position order, without waiting for the
 * acknowledgements: the relay collects them later (drain_acks). Returns how
 * many were sent. */
static size_t ring_publish(bus_outbox *ob)
{
    size_t sent = 0, n;
    int64_t now = now_ms();
    pthread_mutex_lock(&ob->mu);
    n = ob->count;
    pthread_mutex_unlock(&ob->mu);
    for (size_t i = 0; i < n; i++) {
        entry *e = at(ob, i);
        natsMsg *m = NULL;
        pthread_mutex_lock(&ob->mu);
        bool go = e->state == PENDING;
        if (go) {
            e->state = INFLIGHT;
            e->sent_ms = now;
        }
        pthread_mutex_unlock(&ob->mu);
        if (!go)
            continue;
        natsStatus s = natsConnection_Status(ob->nc) == NATS_CONN_STATUS_CONNECTED ? make_msg(ob, e, &m)
                                                                                  : NATS_CONNECTION_DISCONNECTED;
        if (s == NATS_OK)
            s = natsConnection_PublishMsg(ob->nc, m);
        if (m != NULL)
            hold(ob, m);
        if (s != NATS_OK) {
            pthread_mutex_lock(&ob->mu);
            if (e->state == INFLIGHT) {
                e->state = FAILED;
                e->err = s;
            }
            pthread_mutex_unlock(&ob->mu);
            break; /* keep the order: the rest waits for the retry */
        }
        sent++;
    }
    if (!ob->jetstream && sent > 0) {
        /* Core NATS has no acks: a flush (PING/PONG) is the receipt. */
        natsStatus s = natsConnection_FlushTimeout(ob->nc, ob->ack_wait_ms);
        pthread_mutex_lock(&ob->mu);
        for (size_t i = 0; i < ob->count; i++)
            if (at(ob, i)->state == INFLIGHT) {
                at(ob, i)->state = s == NATS_OK ? ACKED : FAILED;
                at(ob, i)->err = s;
            }
        pthread_mutex_unlock(&ob->mu);
    }
    return sent;
}

/* Sends the dead-letter notice of an entry. NATS_OK once flushed. */
static natsStatus dead_letter_send(bus_outbox *ob, const entry *e)
{
    char subject[160], body[1024], pos[24];
    int n = snprintf(body, sizeof(body),
                     "{\"id\":\"%s\",\"sequence\":\"%llu\",\"source\":\"agentmesh/%s\",\"type\":\"%.200s\","
                     "\"subject\":\"%.200s\",\"reason\":\"",
                     e->id, (unsigned long long)e->ev->position, ob->service, e->ev->type, e->ev->stream);
    for (const char *p = e->reason; *p && n > 0 && (size_t)n + 4 < sizeof(body); p++)
        body[n++] = (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) ? '\'' : *p;
    if (n < 0 || (size_t)n + 3 > sizeof(body))
        return NATS_ERR;
    memcpy(body + n, "\"}", 3);
    snprintf(subject, sizeof(subject), "agentmesh.deadletter.%s", ob->service);
    snprintf(pos, sizeof(pos), "%llu", (unsigned long long)e->ev->position);
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, subject, NULL, body, (int)strlen(body));
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "Nats-Msg-Id", e->id);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, "agentmesh-position", pos);
    if (s == NATS_OK)
        s = natsConnection_PublishMsg(ob->nc, m);
    natsMsg_Destroy(m);
    if (s == NATS_OK)
        s = natsConnection_FlushTimeout(ob->nc, ob->ack_wait_ms);
    return s;
}

struct commit_arg {
    bus_outbox *ob;
    size_t n; /* entries of the prefix */
};

/* Write callback: the checkpoint and the dead-letter records of the prefix. */
static int commit_prefix(es_txn *txn, const es_append_result *appended, void *arg)
{
    (void)appended;
    struct commit_arg *ca = arg;
    bus_outbox *ob = ca->ob;
    for (size_t i = 0; i < ca->n; i++) {
        const entry *e = at(ob, i);
        if (e->state != DEAD)
            continue;
        uint8_t key[8];
        for (int b = 0; b < 8; b++)
            key[b] = (uint8_t)(e->ev->position >> (56 - 8 * b));
        int rc = es_kv_put(txn, BUS_DEADLETTER_NS, key, sizeof(key), e->reason, strlen(e->reason));
        if (rc != ES_OK)
            return rc;
    }
    return es_checkpoint_put(txn, ob->checkpoint_name, at(ob, ca->n - 1)->ev->position);
}

static bool transient(const entry *e)
{
    /* A JetStream API error is the server refusing this message; anything
     * else (timeouts, no responders, connection trouble) may pass later. */
    if (e->err == NATS_MAX_PAYLOAD)
        return false;
    return e->code == 0 || e->code == JSStreamNotFoundErr;
}

/* Looks at the ring's oldest entries: counts the acknowledged (or dead)
 * prefix, turns a hopeless failure into a dead letter, and says whether the
 * oldest unsettled entry failed (so a retry must wait). */
static size_t ring_prefix(bus_outbox *ob, bool *head_failed)
{
    size_t n = 0;
    *head_failed = false;
    pthread_mutex_lock(&ob->mu);
    for (; n < ob->count; n++) {
        entry *e = at(ob, n);
        if (e->state == ACKED || e->state == DEAD)
            continue;
        if (e->state == FAILED) {
            if (!transient(e) && ++e->attempts >= ob->max_attempts) {
                e->state = DEAD;
                snprintf(e->reason, sizeof(e->reason), "refused by JetStream %u times (error %d: %s)",
                         e->attempts, (int)e->code, natsStatus_GetText(e->err));
                continue;
            }
            if (e->code == JSStreamNotFoundErr)
                ob->stream_ready = false;
            *head_failed = true;
        }
        break;
    }
    pthread_mutex_unlock(&ob->mu);
    return n;
}

/* Records the first `n` entries (acknowledged or dead) as published: dead
 * letters go out first, then one write commits the checkpoint with the
 * dead-letter records, then the entries leave the ring. Returns false when
 * something must be retried later. */
static bool ring_commit(bus_outbox *ob, size_t n)
{
    size_t ok = 0;
    for (; ok < n; ok++) {
        entry *e = at(ob, ok);
        if (e->state == DEAD && !e->dl_sent) {
            if (dead_letter_send(ob, e) != NATS_OK)
                break;
            e->dl_sent = true;
        }
    }
    if (ok == 0)
        return ok == n;
    struct commit_arg ca = {ob, ok};
    int rc = es_write(ob->store, commit_prefix, &ca);
    if (rc != ES_OK) {
        log_line(ob, "error", "cannot record the outbox checkpoint", es_strerror(rc));
        return false;
    }
    uint64_t dead = 0;
    for (size_t i = 0; i < ok; i++) {
        if (at(ob, i)->state == DEAD) {
            dead++;
            log_line(ob, "error", "event dead-lettered", at(ob, i)->reason);
        }
    }
    atomic_store(&ob->checkpoint, at(ob, ok - 1)->ev->position);
    atomic_fetch_add(&ob->published, ok - dead);
    atomic_fetch_add(&ob->dead_lettered, dead);
    if (ob->m_published)
        metrics_counter_add(ob->m_published, NULL, (double)(ok - dead));
    if (ob->m_dead && dead)
        metrics_counter_add(ob->m_dead, NULL, (double)dead);
    pthread_mutex_lock(&ob->mu);
    for (size_t i = 0; i < ok; i++)
        entry_clear(at(ob, i));
    ob->head = (ob->head + ok) % ob->cap;
    ob->count -= ok;
    pthread_mutex_unlock(&ob->mu);
    ob->last_commit_ms = now_ms();
    return ok == n;
}

/* The backlog gauge, at most every BACKLOG_MS: reading the store's stats
 * on every turn of the relay cost as much as building a CloudEvent. */
#define BACKLOG_MS 50
static void update_backlog(bus_outbox *ob)
{
    es_stats st;
    int64_t now = now_ms();
    if (now - ob->backlog_ms < BACKLOG_MS)
        return;
    ob->backlog_ms = now;
    if (ob->m_backlog && es_stats_get(ob->store, &st) == ES_OK) {
        uint64_t cp = atomic_load(&ob->checkpoint);
        metrics_gauge_set(ob->m_backlog, NULL, st.last_position > cp ? (double)(st.last_position - cp) : 0);
    }
}

static size_t count_state(bus_outbox *ob, int state)
{
    size_t k = 0;
    pthread_mutex_lock(&ob->mu);
    for (size_t i = 0; i < ob->count; i++)
        k += at(ob, i)->state == state;
    pthread_mutex_unlock(&ob->mu);
    return k;
}

/* Waits up to ms for a stop (a backoff sleep). */
static void wait_acks(bus_outbox *ob, int64_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    pthread_mutex_lock(&ob->mu);
    pthread_cond_timedwait(&ob->wake, &ob->mu, &ts);
    pthread_mutex_unlock(&ob->mu);
}

/* nats.c buffers publishes and its flusher thread writes them 1 ms after
 * the first, to gather more; the relay already publishes all it has at
 * once, so that wait only delays every event by a millisecond. After each
 * batch the relay kicks this thread, which flushes the buffer now (a PING:
 * the buffered publishes go out with it, and the PONG is waited for here,
 * not by the relay). Kicks that arrive during a flush are merged into the
 * next one. Writing each publish at once (SendAsap) gave the same latency
 * at low rates but cost 0.1-0.2 CPU more across the mesh at 10,000
 * events/s: a write per event instead of one per batch. */
#define KICK_WAIT_MS 100

static void *kicker_main(void *arg)
{
    bus_outbox *ob = arg;
    pthread_mutex_lock(&ob->mu);
    for (;;) {
        while (!ob->kick && !ob->kick_stop)
            pthread_cond_wait(&ob->kick_cv, &ob->mu);
        if (ob->kick_stop)
            break;
        ob->kick = false;
        pthread_mutex_unlock(&ob->mu);
        /* A failure (disconnected, slow PONG) is the relay's business. */
        (void)natsConnection_FlushTimeout(ob->nc, KICK_WAIT_MS);
        pthread_mutex_lock(&ob->mu);
    }
    pthread_mutex_unlock(&ob->mu);
    return NULL;
}

static void kick(bus_outbox *ob)
{
    pthread_mutex_lock(&ob->mu);
    if (!ob->kick) {
        ob->kick = true;
        pthread_cond_signal(&ob->kick_cv);
    }
    pthread_mutex_unlock(&ob->mu);
}

static void kicker_stop(bus_outbox *ob)
{
    if (!ob->kicker_started)
        return;
    pthread_mutex_lock(&ob->mu);
    ob->kick_stop = true;
    pthread_cond_signal(&ob->kick_cv);
    pthread_mutex_unlock(&ob->mu);
    pthread_join(ob->kicker, NULL);
    ob->kicker_started = false;
}

/* The relay: a pipeline. Committed events enter a ring, are published as
 * soon as NATS is ready (many in flight), and leave it once acknowledged,
 * with the checkpoint recorded at most every CHECKPOINT_MS (at once after a
 * quiet spell, and when stopping): a crash re-publishes at most that much,
 * and JetStream drops the duplicates by id. Recording it whenever the
 * pipeline drained cost a second write transaction per event at a steady
 * 1,000 single-event commands a second. While events are in the ring the
 * relay wakes for new events, or by the time the checkpoint is due. */
#define CHECKPOINT_MS 20
#define CHECKPOINT_EVENTS 512

/* How long the relay may wait for new events: until the checkpoint of what
 * the ring holds is due (at least 1 ms), or 200 ms when it holds nothing.
 * When stopping, 1 ms while acknowledgements are awaited, else not at all. */
static int relay_wait_ms(const bus_outbox *ob, bool stop)
{
    if (ob->count == 0)
        return stop ? 0 : 200;
    if (stop)
        return 1;
    int64_t left = ob->last_commit_ms + CHECKPOINT_MS - now_ms();
    return left < 1 ? 1 : (left > CHECKPOINT_MS ? CHECKPOINT_MS : (int)left);
}

static void *relay(void *arg)
{
    bus_outbox *ob = arg;
    int64_t backoff = ob->retry_min_ms, retry_at = 0;
    for (;;) {
        if (stop_now(ob))
            break;
        bool stop = stopping(ob);
        if (ring_fill(ob, relay_wait_ms(ob, stop)) == BUS_STATE)
            break;
        update_backlog(ob);
        if (ob->count == 0) {
            if (stop)
                break; /* everything committed is published */
            continue;
        }
        bool ready = atomic_load(&ob->connected);
        if (ready && ob->jetstream && !ob->stream_ready)
            ready = ob->stream_ready = ensure_stream(ob) == BUS_OK;
        int64_t now = now_ms();
        if (ready && retry_at != 0 && now >= retry_at) {
            pthread_mutex_lock(&ob->mu);
            for (size_t i = 0; i < ob->count; i++)
                if (at(ob, i)->state == FAILED)
                    at(ob, i)->state = PENDING;
            pthread_mutex_unlock(&ob->mu);
            retry_at = 0;
        }
        if (ready && retry_at == 0 && ring_publish(ob) > 0)
            kick(ob);
        drain_acks(ob, 0);

        bool head_failed = false;
        size_t n = ring_prefix(ob, &head_failed);
        bool committed_all = true;
        if (n > 0 && (stop || n >= CHECKPOINT_EVENTS || now_ms() - ob->last_commit_ms >= CHECKPOINT_MS))
            committed_all = ring_commit(ob, n);
        if (head_failed || !committed_all || (!ready && count_state(ob, PENDING) > 0)) {
            if (retry_at == 0) {
                atomic_fetch_add(&ob->failures, 1);
                if (ob->m_failures)
                    metrics_counter_add(ob->m_failures, NULL, 1);
                retry_at = now_ms() + backoff;
                backoff = backoff * 2 > ob->retry_max_ms ? ob->retry_max_ms : backoff * 2;
            }
            wait_acks(ob, retry_at - now_ms() > 0 ? retry_at - now_ms() : 1);
        } else {
            if (!head_failed && count_state(ob, FAILED) == 0)
                backoff = ob->retry_min_ms;
            if (ob->count == ob->cap)
                drain_acks(ob, 1);
        }
    }
    return NULL;
}

static int read_checkpoint(es_store *store, const char *name, uint64_t *pos)
{
    es_txn *txn = NULL;
    int rc = es_txn_begin(store, &txn);
    if (rc != ES_OK)
        return rc;
    rc = es_checkpoint_get(txn, name, pos);
    if (rc == ES_NOT_FOUND) {
        *pos = 0;
        rc = ES_OK;
    }
    es_txn_end(txn);
    return rc;
}

int bus_outbox_start(es_store *store, const bus_outbox_options *opts, bus_outbox **out)
{
    bus_outbox_options dflt;
    bus_outbox *ob = NULL;
    uint64_t cp = 0;
    int rc;

    if (store == NULL || out == NULL || opts == NULL || opts->service == NULL || opts->service[0] == '\0')
        return BUS_INVALID;
    bus_outbox_options_init(&dflt);
    ob = calloc(1, sizeof(*ob));
    if (ob == NULL)
        return BUS_NOMEM;
    ob->store = store;
    ob->nats_url = dup_or(opts->nats_url, dflt.nats_url);
    ob->service = dup_or(opts->service, "");
    ob->stream_name = dup_or(opts->stream_name, dflt.stream_name);
    ob->checkpoint_name = dup_or(opts->checkpoint_name, dflt.checkpoint_name);
    ob->jetstream = opts->jetstream;
    ob->cap = opts->window ? opts->window : dflt.window;
    ob->ack_wait_ms = opts->ack_wait_ms > 0 ? opts->ack_wait_ms : dflt.ack_wait_ms;
    ob->retry_min_ms = opts->retry_min_ms > 0 ? opts->retry_min_ms : dflt.retry_min_ms;
    ob->retry_max_ms = opts->retry_max_ms > 0 ? opts->retry_max_ms : dflt.retry_max_ms;
    ob->max_attempts = opts->max_attempts ? opts->max_attempts : dflt.max_attempts;
    ob->hook = opts->payload_hook;
    ob->hook_arg = opts->payload_hook_arg;
    pthread_mutex_init(&ob->mu, NULL);
    pthread_cond_init(&ob->wake, NULL);
    pthread_cond_init(&ob->kick_cv, NULL);
    if (!ob->nats_url || !ob->service || !ob->stream_name || !ob->checkpoint_name) {
        rc = BUS_NOMEM;
        goto out;
    }
    ob->ring = calloc(ob->cap, sizeof(entry));
    if (ob->ring == NULL) {
        rc = BUS_NOMEM;
        goto out;
    }
    if (opts->metrics != NULL) {
        metrics_counter_create(opts->metrics, "agentmesh_outbox_published_total",
                               "Events published on NATS and acknowledged.", NULL, 0, &ob->m_published);
        metrics_counter_create(opts->metrics, "agentmesh_outbox_dead_lettered_total",
                               "Events that could never be published.", NULL, 0, &ob->m_dead);
        metrics_counter_create(opts->metrics, "agentmesh_outbox_publish_failures_total",
                               "Windows that failed and were retried.", NULL, 0, &ob->m_failures);
        metrics_gauge_create(opts->metrics, "agentmesh_outbox_backlog",
                             "Committed events not yet published.", NULL, 0, &ob->m_backlog);
    }
    if (read_checkpoint(store, ob->checkpoint_name, &cp) != ES_OK) {
        rc = BUS_STORE;
        goto out;
    }
    atomic_store(&ob->checkpoint, cp);
    if (es_sub_open(store, cp, NULL, &ob->sub) != ES_OK) {
        rc = BUS_STORE;
        goto out;
    }
    if ((rc = connect_nats(ob)) != BUS_OK)
        goto out;
    if (pthread_create(&ob->kicker, NULL, kicker_main, ob) != 0) {
        rc = BUS_NOMEM;
        goto out;
    }
    ob->kicker_started = true;
    pthread_setname_np(ob->kicker, "outbox-flush");
    if (pthread_create(&ob->thread, NULL, relay, ob) != 0) {
        rc = BUS_NOMEM;
        goto out;
    }
    pthread_setname_np(ob->thread, "outbox");
    *out = ob;
    return BUS_OK;
out:
    kicker_stop(ob);
    jsCtx_Destroy(ob->js);
    close_nats(ob);
    natsSubscription_Destroy(ob->acks);
    natsConnection_Destroy(ob->nc);
    es_sub_destroy(ob->sub);
    free(ob->ring);
    free(ob->nats_url);
    free(ob->service);
    free(ob->stream_name);
    free(ob->checkpoint_name);
    pthread_mutex_destroy(&ob->mu);
    pthread_cond_destroy(&ob->wake);
    pthread_cond_destroy(&ob->kick_cv);
    free(ob);
    return rc;
}

void bus_outbox_stop(bus_outbox *ob, int64_t flush_ms)
{
    if (ob == NULL)
        return;
    pthread_mutex_lock(&ob->mu);
    ob->stopping = true;
    ob->flush_deadline = flush_ms < 0 ? -1 : now_ms() + flush_ms;
    pthread_cond_broadcast(&ob->wake);
    pthread_mutex_unlock(&ob->mu);
    if (flush_ms == 0)
        es_sub_cancel(ob->sub);
    pthread_join(ob->thread, NULL);
    kicker_stop(ob);
    for (size_t i = 0; i < ob->count; i++)
        entry_clear(at(ob, i));
    release_held(ob);
    jsCtx_Destroy(ob->js);
    close_nats(ob);
    natsSubscription_Destroy(ob->acks);
    natsConnection_Destroy(ob->nc);
    es_sub_destroy(ob->sub);
    free(ob->ring);
    free(ob->nats_url);
    free(ob->service);
    free(ob->stream_name);
    free(ob->checkpoint_name);
    pthread_mutex_destroy(&ob->mu);
    pthread_cond_destroy(&ob->wake);
    pthread_cond_destroy(&ob->kick_cv);
    free(ob);
}

int bus_outbox_stats_get(bus_outbox *ob, bus_outbox_stats *out)
{
    es_stats st;
    if (es_stats_get(ob->store, &st) != ES_OK)
        return BUS_STORE;
    out->checkpoint = atomic_load(&ob->checkpoint);
    out->last_position = st.last_position;
    out->published = atomic_load(&ob->published);
    out->dead_lettered = atomic_load(&ob->dead_lettered);
    out->publish_failures = atomic_load(&ob->failures);
    out->connected = atomic_load(&ob->connected);
    return BUS_OK;
}
