/* A string-keyed hash map for the agent manager's in-memory state (agents,
 * tasks, idempotency keys). Keys are borrowed: each entry's key must live as
 * long as the entry (it is the entity's own id). Not thread-safe: the state's
 * mutex guards it. */
#ifndef AGENTMESH_AGENT_MANAGER_MAP_H
#define AGENTMESH_AGENT_MANAGER_MAP_H

#include <stddef.h>

typedef struct am_map am_map;

/* Errors: -1 out of memory. The caller owns *out (am_map_destroy). */
int am_map_create(am_map **out);
/* Frees the table, not the values. NULL is a no-op. */
void am_map_destroy(am_map *m);
/* The value under key, or NULL. */
void *am_map_get(const am_map *m, const char *key);
/* Inserts or replaces. Returns 0, or -1 out of memory (map unchanged). */
int am_map_put(am_map *m, const char *key, void *val);
/* Removes and returns the value, or NULL when absent. */
void *am_map_del(am_map *m, const char *key);
size_t am_map_size(const am_map *m);

#endif
