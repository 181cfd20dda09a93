/* Reading a namespace's changes after a cursor (SyncMemory's `changes`). */
#ifndef AGENTMESH_MEMORY_SYNC_CHANGES_H
#define AGENTMESH_MEMORY_SYNC_CHANGES_H

#include "services/memory_sync/internal.h"

/* A page of changes; entries owned (ms_changes_free). */
typedef struct ms_changes {
    Agentmesh__V1__MemoryEntry **entries;
    size_t n;
    ms_cursor cursor;            /* resume point after the page */
    bool has_more;
} ms_changes;

/* Up to `page` (>= 1) changes of ns after cursor `in`: every MemoryWritten
 * and MemoryDeleted of the current key generation, in stream order, each
 * exactly once across pages. A cursor of an older generation (from before a
 * forget) starts at the current generation. Returns 0 or a gRPC code. */
int ms_changes_read(ms_service *s, const char *ns, const ms_cursor *in,
                    size_t page, ms_changes *out, ms_error *err);
void ms_changes_free(ms_changes *c);

#endif
