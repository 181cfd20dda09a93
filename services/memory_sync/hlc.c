/* The hybrid logical clock of a memory-sync replica (Kulkarni et al.):
 * timestamps that follow the wall clock in milliseconds, never go backwards,
 * and move past every timestamp received, so causally later writes compare
 * greater across replicas. Packed as physical ms << 16 | logical counter;
 * a logical overflow carries into the physical part, which keeps order. */
#include <time.h>

#include "services/memory_sync/model.h"

uint64_t ms_hlc_tick(uint64_t last, uint64_t phys_ms)
{
    uint64_t wall = phys_ms << MS_HLC_LOGICAL_BITS;
    return wall > last ? wall : last + 1;
}

uint64_t ms_hlc_merge(uint64_t last, uint64_t remote, uint64_t phys_ms)
{
    uint64_t wall = phys_ms << MS_HLC_LOGICAL_BITS;
    uint64_t top = last > remote ? last : remote;
    return wall > top ? wall : top + 1;
}

uint64_t ms_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void ms_hlc_init(ms_hlc *c)
{
    pthread_mutex_init(&c->mu, NULL);
    c->last = 0;
}

void ms_hlc_destroy(ms_hlc *c) { pthread_mutex_destroy(&c->mu); }

uint64_t ms_hlc_now(ms_hlc *c)
{
    uint64_t phys = ms_wall_ms();
    pthread_mutex_lock(&c->mu);
    c->last = ms_hlc_tick(c->last, phys);
    uint64_t v = c->last;
    pthread_mutex_unlock(&c->mu);
    return v;
}

uint64_t ms_hlc_observe(ms_hlc *c, uint64_t remote)
{
    uint64_t phys = ms_wall_ms();
    pthread_mutex_lock(&c->mu);
    c->last = ms_hlc_merge(c->last, remote, phys);
    uint64_t v = c->last;
    pthread_mutex_unlock(&c->mu);
    return v;
}
