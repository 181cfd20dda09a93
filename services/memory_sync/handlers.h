/* The MemorySync gRPC methods on an rpc_server (DESIGN §4). */
#ifndef AGENTMESH_MEMORY_SYNC_HANDLERS_H
#define AGENTMESH_MEMORY_SYNC_HANDLERS_H

#include "eventstore/eventstore.h"
#include "services/common/rpc.h"
#include "services/memory_sync/memory_sync.h"

typedef struct ms_grpc ms_grpc;

/* Registers the seven MemorySync methods on srv (before rpc_server_start)
 * and sets the health of "agentmesh.v1.MemorySync" to SERVING. svc and
 * store are borrowed; *out must outlive the server (ms_grpc_destroy after
 * the server stopped). Returns an rpc_err. */
int ms_grpc_register(rpc_server *srv, ms_service *svc, es_store *store,
                     ms_grpc **out);
void ms_grpc_destroy(ms_grpc *g);

#endif
