/* natslib: opening nats.c's library so that its own threads run at the
 * lowest scheduling priority. See docs/RUNTIME.md ("NATS client threads"). */
#ifndef AGENTMESH_NATSLIB_H
#define AGENTMESH_NATSLIB_H

/* The nice value nats.c's library threads get. */
#define AM_NATS_LIB_NICE 19

/* Opens nats.c's library (nats_Open) from a short-lived thread whose nice
 * value is AM_NATS_LIB_NICE: the library's collector, timer and
 * callback threads, which nats_Open creates, inherit it. Call it before any
 * other nats.c call; once the library is open it changes nothing. Returns
 * 0, or -1 when the library cannot be opened. */
int am_nats_open(void);

#endif
