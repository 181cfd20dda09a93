/* The Query gRPC service on the runtime: the eight agentmesh.v1.Query
 * methods served from the projection database. */
#ifndef AGENTMESH_QUERY_HANDLERS_H
#define AGENTMESH_QUERY_HANDLERS_H

#include "services/common/rpc.h"
#include "services/query/query.h"

typedef struct qs_grpc qs_grpc;

/* Registers the methods on srv (before start) and marks the service
 * SERVING in health. db is borrowed until qs_grpc_destroy, which comes after
 * the server has stopped. Returns an rpc_err. */
int qs_grpc_register(rpc_server *srv, qs_db *db, qs_grpc **out);
/* NULL is a no-op. */
void qs_grpc_destroy(qs_grpc *g);

#endif
