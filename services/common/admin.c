/* The admin HTTP server on libmicrohttpd (see admin.h): GET /metrics renders
 * the registry, GET /healthz reports serving or shutting down. MHD runs one
 * internal polling thread; requests are tiny, so that is enough. */
#include "services/common/admin.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

struct admin_server {
    struct MHD_Daemon *daemon;
    metrics_registry *metrics;
    atomic_bool serving;
};

const char *admin_strerror(int err)
{
    switch (err) {
#define ADMIN_ERR_CASE_(name, value, text) \
    case value:                            \
        return text;
        ADMIN_ERRORS(ADMIN_ERR_CASE_)
#undef ADMIN_ERR_CASE_
    }
    return "unknown admin error";
}

static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status,
                               const char *type, void *body, size_t len,
                               enum MHD_ResponseMemoryMode mode)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (r == NULL) {
        if (mode == MHD_RESPMEM_MUST_FREE)
            free(body);
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type);
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ret = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ret;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **state)
{
    admin_server *srv = cls;
    (void)version;
    (void)upload;
    /* Answer on the first call for a request: these routes take no body. */
    (void)state;
    if (*upload_size != 0) {
        *upload_size = 0;
        return MHD_YES;
    }
    bool head = strcmp(method, "HEAD") == 0;
    if (strcmp(method, "GET") != 0 && !head) {
        static char msg[] = "method not allowed\n";
        return respond(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", msg,
                       sizeof msg - 1, MHD_RESPMEM_PERSISTENT);
    }
    if (strcmp(url, "/healthz") == 0) {
        static char ok[] = "ok\n";
        static char down[] = "shutting down\n";
        if (atomic_load(&srv->serving))
            return respond(conn, MHD_HTTP_OK, "text/plain", ok, sizeof ok - 1,
                           MHD_RESPMEM_PERSISTENT);
        return respond(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "text/plain", down,
                       sizeof down - 1, MHD_RESPMEM_PERSISTENT);
    }
    if (strcmp(url, "/metrics") == 0) {
        char *text = NULL;
        size_t len = 0;
        if (srv->metrics == NULL) {
            static char empty[] = "";
            return respond(conn, MHD_HTTP_OK,
                           "text/plain; version=0.0.4; charset=utf-8", empty, 0,
                           MHD_RESPMEM_PERSISTENT);
        }
        if (metrics_registry_render(srv->metrics, &text, &len) != METRICS_OK) {
            static char err[] = "cannot render metrics\n";
            return respond(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain",
                           err, sizeof err - 1, MHD_RESPMEM_PERSISTENT);
        }
        return respond(conn, MHD_HTTP_OK,
                       "text/plain; version=0.0.4; charset=utf-8", text, len,
                       MHD_RESPMEM_MUST_FREE);
    }
    static char nf[] = "not found\n";
    return respond(conn, MHD_HTTP_NOT_FOUND, "text/plain", nf, sizeof nf - 1,
                   MHD_RESPMEM_PERSISTENT);
}

/* Parses "a.b.c.d:port" or "[v6]:port" (an empty host means 127.0.0.1). */
static int parse_addr(const char *addr, struct sockaddr_storage *ss,
                      bool *v6)
{
    char host[64];
    const char *colon = strrchr(addr, ':');
    if (colon == NULL)
        return -1;
    size_t hl = (size_t)(colon - addr);
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (end == colon + 1 || *end != '\0' || port < 0 || port > 65535)
        return -1;
    if (hl >= sizeof host)
        return -1;
    memcpy(host, addr, hl);
    host[hl] = '\0';
    memset(ss, 0, sizeof *ss);
    if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        host[hl - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1)
            return -1;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)port);
        *v6 = true;
        return 0;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    if (strcmp(host, "localhost") == 0 || host[0] == '\0')
        memcpy(host, "127.0.0.1", sizeof "127.0.0.1");
    if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
        return -1;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)port);
    *v6 = false;
    return 0;
}

int admin_server_create(const char *addr, metrics_registry *metrics,
                        admin_server **out, int *port)
{
    struct sockaddr_storage ss;
    bool v6 = false;
    admin_server *srv = NULL;
    int rc = ADMIN_ERR_INVALID;

    if (addr == NULL || out == NULL || parse_addr(addr, &ss, &v6) != 0)
        goto out;
    rc = ADMIN_ERR_NOMEM;
    srv = calloc(1, sizeof *srv);
    if (srv == NULL)
        goto out;
    srv->metrics = metrics;
    atomic_store(&srv->serving, true);
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL |
                     (v6 ? MHD_USE_IPv6 : 0);
    srv->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, srv, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_LIMIT, (unsigned)64,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)30,
        MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)65536, MHD_OPTION_END);
    if (srv->daemon == NULL) {
        rc = ADMIN_ERR_BIND;
        goto out;
    }
    if (port != NULL) {
        const union MHD_DaemonInfo *info =
            MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
        *port = info ? info->port : 0;
    }
    *out = srv;
    srv = NULL;
    rc = ADMIN_OK;
out:
    admin_server_destroy(srv);
    return rc;
}

void admin_server_set_serving(admin_server *srv, bool serving)
{
    if (srv != NULL)
        atomic_store(&srv->serving, serving);
}

void admin_server_destroy(admin_server *srv)
{
    if (srv == NULL)
        return;
    if (srv->daemon != NULL)
        MHD_stop_daemon(srv->daemon);
    free(srv);
}
