/* The NATS consumer: a core subscription to agentmesh.events.> whose
 * messages (CloudEvents JSON) are decoded and handed to the projector, which
 * applies each burst on this delivery thread. A reconnect after an outage
 * asks every source to catch up, since core NATS does not replay what was
 * published meanwhile. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>

#include "services/common/log.h"
#include "services/common/natslib.h"
#include "services/query/query.h"

#define SUBJECT "agentmesh.events.>"
/* Messages held back from natsMsg_Destroy: nats.c hands each destroyed
 * message to its collector thread and wakes that thread if it sleeps, which
 * at thousands of messages a second is a wake (two context switches) per
 * message. Destroyed HOLD_MAX at a time, it is one wake per HOLD_MAX. */
#define HOLD_MAX 64

struct qs_nats {
    qs_projector *p;
    natsConnection *nc;
    natsSubscription *sub;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool closed;
    bool complete_cb; /* on_complete is set on the subscription */
    bool sub_done;    /* the subscription's handler has returned for good */
    bool stopping;
    bool was_down;
    pthread_mutex_t hold_mu; /* the callback's, and stop's after it */
    natsMsg *held[HOLD_MAX];
    size_t n_held;
};

static void release_held(qs_nats *n)
{
    for (size_t i = 0; i < n->n_held; i++)
        natsMsg_Destroy(n->held[i]);
    n->n_held = 0;
}

static void on_msg(natsConnection *nc, natsSubscription *sub, natsMsg *msg,
                   void *closure)
{
    (void)nc;
    qs_nats *n = closure;
    qs_event *ev = NULL;
    char why[160];
    int rc = qs_event_from_cloudevent(natsMsg_GetData(msg),
                                      (size_t)natsMsg_GetDataLength(msg), &ev,
                                      why, sizeof why);
    int pending = 0;
    if (natsSubscription_GetPending(sub, &pending, NULL) != NATS_OK)
        pending = 0;
    if (rc != ES_OK)
        LOG_WARN("query: dropped a message on %s: %s", natsMsg_GetSubject(msg),
                 why);
    qs_projector_push(n->p, rc == ES_OK ? ev : NULL, pending > 0);
    pthread_mutex_lock(&n->hold_mu);
    n->held[n->n_held++] = msg;
    if (n->n_held == HOLD_MAX)
        release_held(n);
    pthread_mutex_unlock(&n->hold_mu);
}

/* After the subscription is closed and its handler has returned: until
 * then on_msg may still run (applying into the read models), so stop waits
 * for this before anything it uses is freed. */
static void on_complete(void *closure)
{
    qs_nats *n = closure;
    pthread_mutex_lock(&n->mu);
    n->sub_done = true;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    qs_nats *n = closure;
    pthread_mutex_lock(&n->mu);
    bool log = !n->stopping && !n->was_down;
    n->was_down = true;
    pthread_mutex_unlock(&n->mu);
    if (log)
        LOG_WARN("query: disconnected from NATS; catching up from the "
                 "sources meanwhile");
}

static void on_connected(natsConnection *nc, void *closure)
{
    (void)nc;
    qs_nats *n = closure;
    pthread_mutex_lock(&n->mu);
    n->was_down = false;
    pthread_mutex_unlock(&n->mu);
    LOG_INFO("query: connected to NATS");
    /* Whatever was published while we were away is only in the logs. */
    qs_projector_catch_up(n->p, -1);
}

static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    qs_nats *n = closure;
    pthread_mutex_lock(&n->mu);
    n->closed = true;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
}

int qs_nats_start(const char *url, qs_projector *p, qs_nats **out)
{
    qs_nats *n = calloc(1, sizeof *n);
    natsOptions *o = NULL;
    if (!n)
        return ES_NOMEM;
    n->p = p;
    pthread_mutex_init(&n->mu, NULL);
    pthread_mutex_init(&n->hold_mu, NULL);
    pthread_cond_init(&n->cv, NULL);
    /* nats.c's own threads at the lowest priority (services/common/natslib.c). */
    natsStatus s = am_nats_open() == 0 ? natsOptions_Create(&o) : NATS_ERR;
    if (s == NATS_OK)
        s = natsOptions_SetURL(o, url);
    if (s == NATS_OK)
        s = natsOptions_SetName(o, "query");
    if (s == NATS_OK)
        s = natsOptions_SetMaxReconnect(o, -1);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectWait(o, 200);
    if (s == NATS_OK)
        s = natsOptions_SetRetryOnFailedConnect(o, true, on_connected, n);
    if (s == NATS_OK)
        s = natsOptions_SetDisconnectedCB(o, on_disconnected, n);
    if (s == NATS_OK)
        s = natsOptions_SetReconnectedCB(o, on_connected, n);
    if (s == NATS_OK)
        s = natsOptions_SetClosedCB(o, on_closed, n);
    if (s == NATS_OK) {
        s = natsConnection_Connect(&n->nc, o);
        if (s == NATS_NOT_YET_CONNECTED)
            s = NATS_OK;
    }
    if (s == NATS_OK)
        s = natsConnection_Subscribe(&n->sub, n->nc, SUBJECT, on_msg, n);
    if (s == NATS_OK &&
        (s = natsSubscription_SetOnCompleteCB(n->sub, on_complete, n)) == NATS_OK)
        n->complete_cb = true;
    if (s == NATS_OK)
        s = natsSubscription_SetPendingLimits(n->sub, 10000000, 1 << 30);
    natsOptions_Destroy(o);
    if (s != NATS_OK) {
        LOG_ERROR("query: cannot set up NATS at %s: %s", url,
                  natsStatus_GetText(s));
        qs_nats_stop(n);
        return ES_INVALID;
    }
    *out = n;
    return ES_OK;
}

void qs_nats_stop(qs_nats *n)
{
    if (!n)
        return;
    pthread_mutex_lock(&n->mu);
    n->stopping = true;
    pthread_mutex_unlock(&n->mu);
    if (n->sub)
        natsSubscription_Unsubscribe(n->sub);
    if (n->nc) {
        natsConnection_Close(n->nc);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 10;
        pthread_mutex_lock(&n->mu);
        while (!n->closed || (n->complete_cb && !n->sub_done))
            if (pthread_cond_timedwait(&n->cv, &n->mu, &ts) == ETIMEDOUT)
                break;
        pthread_mutex_unlock(&n->mu);
    }
    natsSubscription_Destroy(n->sub);
    pthread_mutex_lock(&n->hold_mu);
    release_held(n);
    pthread_mutex_unlock(&n->hold_mu);
    natsConnection_Destroy(n->nc);
    pthread_cond_destroy(&n->cv);
    pthread_mutex_destroy(&n->hold_mu);
    pthread_mutex_destroy(&n->mu);
    free(n);
}
