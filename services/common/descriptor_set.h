/* The agentmesh API descriptor set (every .proto of //api with its imports),
 * embedded in the binary at build time by //services/common:api_descriptor_set.
 * It feeds server reflection, and the gateway's REST routes and JSON names. */
#ifndef AGENTMESH_SERVICES_COMMON_DESCRIPTOR_SET_H
#define AGENTMESH_SERVICES_COMMON_DESCRIPTOR_SET_H

#include <stddef.h>
#include <stdint.h>

/* A serialized google.protobuf.FileDescriptorSet. Static storage, never NULL;
 * *len receives its size. Thread-safe. */
const uint8_t *rpc_descriptor_set(size_t *len);

#endif
