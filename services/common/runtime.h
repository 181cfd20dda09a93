/* The process shell every agentmesh server shares: configuration from the
 * CFG_RUNTIME_OPTIONS, JSON logging, a metrics registry, the rpc_server with
 * health and reflection, the admin HTTP server, a port file, and a graceful
 * stop on SIGTERM/SIGINT. A service main() creates it, registers its methods
 * on rpc_runtime_server(), calls rpc_runtime_run(), then frees its own state.
 *
 *   rpc_runtime *rt = NULL;
 *   if (rpc_runtime_create(c, &rt) != 0) ...
 *   rpc_server_register(rpc_runtime_server(rt), &method);
 *   int rc = rpc_runtime_run(rt);        // returns after SIGTERM and drain
 *   ... flush outbox ...
 *   rpc_runtime_destroy(rt);
 */
#ifndef AGENTMESH_SERVICES_COMMON_RUNTIME_H
#define AGENTMESH_SERVICES_COMMON_RUNTIME_H

#include "services/common/cfg.h"
#include "services/common/metrics.h"
#include "services/common/rpc.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Fills server options from the CFG_RUNTIME_OPTIONS of `c` (listen,
 * worker-threads, queue-depth, cq-threads, worker-policy, max-message-size,
 * grace-period, internal-token). Strings are borrowed from `c`. Errors
 * (rpc_err): INVALID (an option missing from the table, or out of range:
 * logged with the option's name). */
int rpc_server_options_from_cfg(const cfg *c, rpc_server_options *opts);

typedef struct rpc_runtime rpc_runtime;

/* Blocks SIGTERM/SIGINT (call before starting any thread), sets the log
 * level, creates the metrics registry and the server with health and
 * reflection (the embedded API descriptor set) enabled. `c` is borrowed for
 * the runtime's life. Errors (rpc_err): INVALID, NOMEM, SYSTEM, DECODE. */
int rpc_runtime_create(const cfg *c, rpc_runtime **out);

/* Borrowed until rpc_runtime_destroy. */
rpc_server *rpc_runtime_server(rpc_runtime *rt);
metrics_registry *rpc_runtime_metrics(rpc_runtime *rt);

/* Starts the server and the admin HTTP server, writes the port file
 * ("grpc=<port>\nadmin=<port>\n", atomically) and logs a "serving" line with
 * both ports, then waits for SIGTERM/SIGINT (or rpc_runtime_stop) and shuts
 * down gracefully (/healthz turns 503 first). Errors (rpc_err): BIND, GRPC,
 * SYSTEM. */
int rpc_runtime_run(rpc_runtime *rt);

/* Asks a running rpc_runtime_run to shut down as if signalled. Thread-safe
 * and async-signal-safe. */
void rpc_runtime_stop(rpc_runtime *rt);

/* Frees everything; NULL is a no-op. */
void rpc_runtime_destroy(rpc_runtime *rt);

#ifdef __cplusplus
}
#endif

#endif
