/* natslib: nats.c's library threads at the lowest priority.
 *
 * nats_Open starts threads shared by every connection: a collector that
 * frees the messages natsMsg_Destroy hands it, a timer thread and one for
 * connection callbacks. The collector sleeps whenever its list is empty and
 * is woken by the next destroyed message, so a subscriber destroying a
 * burst of messages wakes it again and again; being woken from a long
 * sleep, it preempted the thread that was destroying them (in query, the
 * one applying events to the read models) over a thousand times a second at
 * 10,000 events/s. None of these threads is on the path of an event, and
 * at nice 19 the scheduler lets the running thread finish its burst. Linux
 * gives a new thread the nice value of the thread that creates it, so the
 * library is opened from a thread that lowered its own priority first. */
#include "services/common/natslib.h"

#include <pthread.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <nats/nats.h>

static void *open_lib(void *arg)
{
    natsStatus *s = arg;
    /* Lowering one's own priority needs no privilege; if it fails the
     * library still opens, at the normal priority. */
    (void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), AM_NATS_LIB_NICE);
    *s = nats_Open(-1);
    return NULL;
}

int am_nats_open(void)
{
    pthread_t t;
    natsStatus s = NATS_ERR;
    if (pthread_create(&t, NULL, open_lib, &s) != 0)
        return nats_Open(-1) == NATS_OK ? 0 : -1;
    pthread_join(t, NULL);
    return s == NATS_OK ? 0 : -1;
}
