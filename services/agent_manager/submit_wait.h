/* Tests' way to run am_submit_task_async as the gRPC fast path does, then
 * wait for its answer: on AM_WOULD_BLOCK it runs am_submit_task instead, as
 * the runtime then does on a worker. */
#ifndef AGENTMESH_AGENT_MANAGER_SUBMIT_WAIT_H
#define AGENTMESH_AGENT_MANAGER_SUBMIT_WAIT_H

#include <pthread.h>
#include <stdbool.h>
#include <string.h>

#include "services/agent_manager/agent_manager.h"

typedef struct submit_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int code;
    am_task_msg *task;
    am_error err;
} submit_wait;

static inline void submit_wait_done(void *arg, int code, am_task_msg *task,
                                    const am_error *err)
{
    submit_wait *w = arg;
    pthread_mutex_lock(&w->mu);
    w->code = code;
    w->task = task;
    w->err = *err;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* Returns the command's code with *out and *err as am_submit_task fills
 * them; *fast tells which way it went. */
static inline int submit_fast_or_wait(am_service *svc, const am_ctx *ctx,
                                      const Agentmesh__V1__SubmitTaskRequest *r,
                                      am_task_msg **out, am_error *err,
                                      bool *fast)
{
    submit_wait w;
    memset(&w, 0, sizeof w);
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    int rc;
    if (am_submit_task_async(svc, ctx, r, submit_wait_done, &w) ==
        AM_WOULD_BLOCK) {
        *fast = false;
        rc = am_submit_task(svc, ctx, r, out, err);
    } else {
        *fast = true;
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        rc = w.code;
        *out = w.task;
        *err = w.err;
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return rc;
}

#endif
