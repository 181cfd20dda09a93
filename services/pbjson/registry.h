/*
 * The registry of every agentmesh API message type, by full name
 * ("agentmesh.v1.TaskCompleted", "google.rpc.RetryInfo"), generated from the
 * protobuf-c headers at build time. Used to resolve google.protobuf.Any, event
 * payload types and REST request types. Thread-safe (read-only data).
 */
#ifndef AGENTMESH_PBJSON_REGISTRY_H
#define AGENTMESH_PBJSON_REGISTRY_H

#include <protobuf-c/protobuf-c.h>

/* The descriptor of the message named `full_name`, or NULL. Static. */
const ProtobufCMessageDescriptor *pbjson_registry_find(const char *full_name);

/* The same with pbjson_resolve_fn's signature (arg is unused). */
const ProtobufCMessageDescriptor *pbjson_registry_resolve(const char *full_name, void *arg);

#endif
