/* SIGTERM/SIGINT delivered through a signalfd (see signals.h): the mask is
 * set before threads start, so the signals reach only this descriptor. */
#include "services/common/signals.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "services/common/rpc.h"

struct rpc_signals {
    int fd;
    sigset_t old;
};

int rpc_signals_create(rpc_signals **out)
{
    sigset_t set;
    rpc_signals *s = calloc(1, sizeof *s);
    if (s == NULL)
        return RPC_ERR_NOMEM;
    signal(SIGPIPE, SIG_IGN);
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (pthread_sigmask(SIG_BLOCK, &set, &s->old) != 0) {
        free(s);
        return RPC_ERR_SYSTEM;
    }
    s->fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
    if (s->fd < 0) {
        pthread_sigmask(SIG_SETMASK, &s->old, NULL);
        free(s);
        return RPC_ERR_SYSTEM;
    }
    *out = s;
    return RPC_OK;
}

int rpc_signals_wait(rpc_signals *sig, int64_t timeout_ms, int *signo)
{
    struct pollfd p = {.fd = sig->fd, .events = POLLIN};
    int t = timeout_ms < 0 ? -1 : (timeout_ms > 86400000 ? 86400000 : (int)timeout_ms);
    for (;;) {
        int n = poll(&p, 1, t);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return RPC_ERR_SYSTEM;
        if (n == 0) {
            *signo = 0;
            return RPC_OK;
        }
        struct signalfd_siginfo si;
        ssize_t r = read(sig->fd, &si, sizeof si);
        if (r < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (r != (ssize_t)sizeof si)
            return RPC_ERR_SYSTEM;
        *signo = (int)si.ssi_signo;
        return RPC_OK;
    }
}

int rpc_signals_fd(const rpc_signals *sig)
{
    return sig->fd;
}

void rpc_signals_destroy(rpc_signals *sig)
{
    if (sig == NULL)
        return;
    close(sig->fd);
    free(sig);
}
