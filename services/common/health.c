/* grpc.health.v1.Health: Check and Watch per service name ("" is the whole
 * server). Both run inline on the completion-queue thread (a map lookup and a
 * non-blocking push), so health answers even when every worker is busy, and
 * watchers hold no worker thread. */
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "services/common/rpc_internal.h"

/* Most distinct service names tracked (names come from the service code). */
#define MAX_SERVICES 1024

struct entry {
    char *service;
    int status;
};

struct watcher {
    rpc_call *call;
    char *service;
    struct watcher *next;
};

struct rpc__health {
    rpc_server *srv;
    pthread_mutex_t mu;
    struct entry *entries;
    size_t nentries, capentries;
    struct watcher *watchers;
    size_t nwatchers;
    bool shutdown;
};

static struct entry *find(struct rpc__health *h, const char *service)
{
    for (size_t i = 0; i < h->nentries; i++)
        if (strcmp(h->entries[i].service, service) == 0)
            return &h->entries[i];
    return NULL;
}

/* Packs a HealthCheckResponse into a malloc'd buffer. */
static int pack_status(int status, uint8_t **data, size_t *len)
{
    Grpc__Health__V1__HealthCheckResponse r =
        GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
    return rpc__pack(&r.base, 0, data, len);
}

/* With h->mu held: sends `status` to every watcher of `service`. */
static void notify_locked(struct rpc__health *h, const char *service,
                          int status)
{
    for (struct watcher *w = h->watchers; w != NULL; w = w->next) {
        uint8_t *data = NULL;
        size_t len = 0;
        if (service != NULL && strcmp(w->service, service) != 0)
            continue;
        if (pack_status(status, &data, &len) == RPC_OK)
            rpc__stream_push_latest(w->call, data, len);
    }
}

static void check(rpc_call *c, const ProtobufCMessage *request, void *user)
{
    struct rpc__health *h = user;
    const Grpc__Health__V1__HealthCheckRequest *req =
        (const Grpc__Health__V1__HealthCheckRequest *)request;
    const char *service = req->service ? req->service : "";
    pthread_mutex_lock(&h->mu);
    struct entry *e = find(h, service);
    int status = e ? e->status : -1;
    pthread_mutex_unlock(&h->mu);
    if (status < 0) {
        rpc_call_fail(c, GRPC_STATUS_NOT_FOUND, "unknown service \"%s\"", service);
        return;
    }
    Grpc__Health__V1__HealthCheckResponse r =
        GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    r.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
    if (rpc_call_reply(c, &r.base) != RPC_OK)
        rpc_call_fail(c, GRPC_STATUS_INTERNAL, "cannot answer the health check");
}

static void watch(rpc_call *c, const ProtobufCMessage *request, void *user)
{
    struct rpc__health *h = user;
    const Grpc__Health__V1__HealthCheckRequest *req =
        (const Grpc__Health__V1__HealthCheckRequest *)request;
    const char *service = req->service ? req->service : "";
    uint8_t *data = NULL;
    size_t len = 0;
    struct watcher *w = calloc(1, sizeof *w);
    if (w == NULL || (w->service = strdup(service)) == NULL) {
        free(w);
        rpc__call_end(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    pthread_mutex_lock(&h->mu);
    if (h->shutdown || h->nwatchers >= RPC_MAX_HEALTH_WATCHERS) {
        bool full = !h->shutdown;
        pthread_mutex_unlock(&h->mu);
        free(w->service);
        free(w);
        if (full)
            rpc__call_end(c, GRPC_STATUS_RESOURCE_EXHAUSTED,
                          "too many health watchers");
        else
            rpc__call_end(c, GRPC_STATUS_UNAVAILABLE, "server shutting down");
        return;
    }
    struct entry *e = find(h, service);
    int status = e ? e->status
                   : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
    rpc__call_ref(c);
    w->call = c;
    w->next = h->watchers;
    h->watchers = w;
    h->nwatchers++;
    if (pack_status(status, &data, &len) == RPC_OK)
        rpc__stream_push_latest(c, data, len);
    pthread_mutex_unlock(&h->mu);
    /* Cancelled before it was listed: the stop hook already ran and found
     * nothing, so end it here (the hook is idempotent). */
    if (atomic_load(&c->cancelled) != CANCEL_NONE)
        c->m->stop(c, h);
}

static void watch_stop(rpc_call *c, void *user)
{
    struct rpc__health *h = user;
    struct watcher *found = NULL;
    pthread_mutex_lock(&h->mu);
    for (struct watcher **p = &h->watchers; *p != NULL; p = &(*p)->next) {
        if ((*p)->call == c) {
            found = *p;
            *p = found->next;
            h->nwatchers--;
            break;
        }
    }
    pthread_mutex_unlock(&h->mu);
    if (found == NULL)
        return;
    if (atomic_load(&c->cancelled) == CANCEL_SHUTDOWN)
        rpc__call_end(c, GRPC_STATUS_UNAVAILABLE, "server shutting down");
    else
        rpc__call_end(c, GRPC_STATUS_CANCELLED, "cancelled");
    rpc__call_unref(c);
    free(found->service);
    free(found);
}

int rpc_server_enable_health(rpc_server *srv)
{
    int rc = RPC_ERR_NOMEM;
    if (srv == NULL)
        return RPC_ERR_INVALID;
    if (srv->health != NULL || atomic_load(&srv->state) != SRV_CREATED)
        return RPC_ERR_STATE;
    struct rpc__health *h = calloc(1, sizeof *h);
    if (h == NULL)
        return RPC_ERR_NOMEM;
    pthread_mutex_init(&h->mu, NULL);
    h->srv = srv;
    rc = rpc__server_register_inline(
        srv, "/grpc.health.v1.Health/Check", RPC_METHOD_UNARY,
        &grpc__health__v1__health_check_request__descriptor, check, NULL, h);
    if (rc == RPC_OK)
        rc = rpc__server_register_inline(
            srv, "/grpc.health.v1.Health/Watch", RPC_METHOD_SERVER_STREAM,
            &grpc__health__v1__health_check_request__descriptor, watch,
            watch_stop, h);
    if (rc != RPC_OK) {
        rpc__health_destroy(h);
        return rc;
    }
    srv->health = h;
    return RPC_OK;
}

int rpc_health_set(rpc_server *srv, const char *service,
                   rpc_health_status status)
{
    int rc = RPC_OK;
    if (srv == NULL || service == NULL ||
        (status != RPC_HEALTH_SERVING && status != RPC_HEALTH_NOT_SERVING))
        return RPC_ERR_INVALID;
    struct rpc__health *h = srv->health;
    if (h == NULL)
        return RPC_ERR_STATE;
    pthread_mutex_lock(&h->mu);
    if (h->shutdown) {
        /* Once shutdown began everything stays NOT_SERVING. */
        rc = RPC_ERR_SHUTDOWN;
        goto out;
    }
    struct entry *e = find(h, service);
    if (e == NULL) {
        if (h->nentries >= MAX_SERVICES) {
            rc = RPC_ERR_FULL;
            goto out;
        }
        if (h->nentries == h->capentries) {
            size_t cap = h->capentries ? h->capentries * 2 : 8;
            struct entry *n = realloc(h->entries, cap * sizeof *n);
            if (n == NULL) {
                rc = RPC_ERR_NOMEM;
                goto out;
            }
            h->entries = n;
            h->capentries = cap;
        }
        char *name = strdup(service);
        if (name == NULL) {
            rc = RPC_ERR_NOMEM;
            goto out;
        }
        e = &h->entries[h->nentries++];
        e->service = name;
        e->status = -1;
    }
    if (e->status != (int)status) {
        e->status = (int)status;
        notify_locked(h, service, (int)status);
    }
out:
    pthread_mutex_unlock(&h->mu);
    return rc;
}

void rpc__health_start(rpc_server *srv)
{
    struct rpc__health *h = srv->health;
    pthread_mutex_lock(&h->mu);
    bool known = find(h, "") != NULL;
    pthread_mutex_unlock(&h->mu);
    if (!known)
        rpc_health_set(srv, "", RPC_HEALTH_SERVING);
}

void rpc__health_shutdown(rpc_server *srv)
{
    struct rpc__health *h = srv->health;
    pthread_mutex_lock(&h->mu);
    h->shutdown = true;
    for (size_t i = 0; i < h->nentries; i++)
        h->entries[i].status =
            GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    notify_locked(h, NULL,
                  GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
    pthread_mutex_unlock(&h->mu);
}

void rpc__health_destroy(struct rpc__health *h)
{
    if (h == NULL)
        return;
    for (size_t i = 0; i < h->nentries; i++)
        free(h->entries[i].service);
    free(h->entries);
    pthread_mutex_destroy(&h->mu);
    free(h);
}
