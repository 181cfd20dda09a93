/* The bounded worker pool that runs handlers: fixed threads and a ring of
 * waiting items. Submission never blocks, so a completion-queue thread can
 * reject a call at once (RESOURCE_EXHAUSTED) when the server is saturated. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "services/common/log.h"
#include "services/common/rpc_internal.h"

struct rpc__pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    void **ring;
    size_t head, len, cap; /* cap = depth + threads, see try_submit */
    size_t depth;
    size_t idle;
    bool stopping;
    rpc__pool_fn fn;
    pthread_t *threads;
    size_t nthreads;
    bool batch;
};

/* SCHED_BATCH: a worker woken by a completion-queue thread, or by the event
 * store's writer answering an append, no longer preempts its waker on the
 * same CPU; it waits for the waker to sleep or for the tick. The waker then
 * finishes its own batch of wake-ups instead of being switched out after the
 * first one (docs/RUNTIME.md, "Worker scheduling"). Dropping to SCHED_BATCH
 * needs no privilege; if the kernel refuses anyway the worker keeps its
 * policy and the first refusal is logged. */
static void set_batch(void)
{
    static atomic_bool warned;
    struct sched_param sp;
    memset(&sp, 0, sizeof sp);
    int rc = pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
    if (rc != 0 && !atomic_exchange(&warned, true))
        LOG_WARN("rpc: worker threads keep their scheduling policy: "
                 "SCHED_BATCH refused (%s)", strerror(rc));
}

static void *worker(void *arg)
{
    struct rpc__pool *p = arg;
    if (p->batch)
        set_batch();
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->len == 0 && !p->stopping) {
            p->idle++;
            pthread_cond_wait(&p->cv, &p->mu);
            p->idle--;
        }
        if (p->len == 0 && p->stopping)
            break;
        void *item = p->ring[p->head];
        p->head = (p->head + 1) % p->cap;
        p->len--;
        pthread_mutex_unlock(&p->mu);
        p->fn(item);
        pthread_mutex_lock(&p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int rpc__pool_create(unsigned threads, unsigned depth, bool batch,
                     rpc__pool_fn fn, struct rpc__pool **out)
{
    int rc = RPC_ERR_NOMEM;
    struct rpc__pool *p = NULL;
    if (threads == 0 || fn == NULL)
        return RPC_ERR_INVALID;
    p = calloc(1, sizeof *p);
    if (p == NULL)
        return RPC_ERR_NOMEM;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->fn = fn;
    p->depth = depth;
    p->batch = batch;
    /* Waiting items never exceed depth + idle workers <= depth + threads. */
    p->cap = (size_t)depth + threads;
    p->ring = calloc(p->cap, sizeof *p->ring);
    p->threads = calloc(threads, sizeof *p->threads);
    if (p->ring == NULL || p->threads == NULL)
        goto out;
    for (unsigned i = 0; i < threads; i++) {
        if (pthread_create(&p->threads[i], NULL, worker, p) != 0) {
            rc = RPC_ERR_SYSTEM;
            goto out;
        }
        pthread_setname_np(p->threads[i], "rpc-worker");
        p->nthreads++;
    }
    *out = p;
    p = NULL;
    rc = RPC_OK;
out:
    rpc__pool_destroy(p);
    return rc;
}

int rpc__pool_try_submit(struct rpc__pool *p, void *item)
{
    int rc = RPC_ERR_FULL;
    bool wake = false;
    pthread_mutex_lock(&p->mu);
    /* An idle worker takes an item at once, so it does not count against the
     * queue depth: accept while waiting items < depth + idle workers. */
    if (!p->stopping && p->len < p->depth + p->idle && p->len < p->cap) {
        p->ring[(p->head + p->len) % p->cap] = item;
        p->len++;
        wake = p->idle > 0;
        rc = RPC_OK;
    }
    pthread_mutex_unlock(&p->mu);
    /* After the unlock, so that the woken worker does not at once sleep
     * again on the lock this thread still holds. Only when a worker waits:
     * a busy one takes the item when it comes back for the next. */
    if (wake)
        pthread_cond_signal(&p->cv);
    return rc;
}

void rpc__pool_destroy(struct rpc__pool *p)
{
    if (p == NULL)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (size_t i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    free(p->threads);
    free(p->ring);
    free(p);
}
