/* Process signals for servers: SIGTERM and SIGINT are blocked in every thread
 * and read from a signalfd, so no work ever runs in a signal handler; SIGPIPE
 * is ignored. Create it first in main(), before any thread starts, so that
 * threads inherit the blocked mask. */
#ifndef AGENTMESH_SERVICES_COMMON_SIGNALS_H
#define AGENTMESH_SERVICES_COMMON_SIGNALS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct rpc_signals rpc_signals;

/* Blocks SIGTERM/SIGINT, ignores SIGPIPE and opens the signalfd. Returns 0 or
 * RPC_ERR_SYSTEM / RPC_ERR_NOMEM (rpc.h codes). */
int rpc_signals_create(rpc_signals **out);

/* Waits up to timeout_ms (< 0: forever) for SIGTERM or SIGINT. On success
 * *signo is the signal, or 0 on timeout. Returns 0 or RPC_ERR_SYSTEM. Call
 * from one thread at a time. */
int rpc_signals_wait(rpc_signals *sig, int64_t timeout_ms, int *signo);

/* A descriptor that becomes readable when a signal is pending (for poll). */
int rpc_signals_fd(const rpc_signals *sig);

/* Closes the signalfd; NULL is a no-op. SIGTERM/SIGINT stay blocked, so a
 * second signal during the final cleanup cannot kill a process that is
 * already exiting cleanly. */
void rpc_signals_destroy(rpc_signals *sig);

#ifdef __cplusplus
}
#endif

#endif
