/* The admin HTTP server (libmicrohttpd): GET /metrics (Prometheus text from a
 * metrics registry) and GET /healthz (200 while serving, 503 once shutting
 * down). It runs its own thread; all calls are thread-safe. */
#ifndef AGENTMESH_SERVICES_COMMON_ADMIN_H
#define AGENTMESH_SERVICES_COMMON_ADMIN_H

#include <stdbool.h>

#include "services/common/metrics.h"

#ifdef __cplusplus
extern "C" {
#endif

#define ADMIN_ERRORS(X)                                                        \
    X(ADMIN_OK, 0, "success")                                                  \
    X(ADMIN_ERR_NOMEM, 1, "out of memory")                                     \
    X(ADMIN_ERR_INVALID, 2, "invalid address")                                 \
    X(ADMIN_ERR_BIND, 3, "cannot start the HTTP server on the address")

typedef enum admin_err {
#define ADMIN_ERR_ENUM_(name, value, text) name = value,
    ADMIN_ERRORS(ADMIN_ERR_ENUM_)
#undef ADMIN_ERR_ENUM_
} admin_err;

const char *admin_strerror(int err);

typedef struct admin_server admin_server;

/* Starts serving on `addr` ("127.0.0.1:9101"; port 0 picks one; IPv4 or
 * "[::1]:port"). `metrics` is borrowed for the server's life (may be NULL:
 * /metrics is then empty). *port (may be NULL) gets the bound port. /healthz
 * answers 200 at once. Errors: INVALID, BIND, NOMEM. */
int admin_server_create(const char *addr, metrics_registry *metrics,
                        admin_server **out, int *port);

/* Flips /healthz between 200 (serving) and 503 (shutting down). */
void admin_server_set_serving(admin_server *srv, bool serving);

/* Stops the HTTP thread and frees the server; NULL is a no-op. */
void admin_server_destroy(admin_server *srv);

#ifdef __cplusplus
}
#endif

#endif
