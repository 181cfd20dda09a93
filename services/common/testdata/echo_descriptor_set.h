/* The echo test service's descriptor set, embedded for reflection. */
#ifndef AGENTMESH_SERVICES_COMMON_TESTDATA_ECHO_DESCRIPTOR_SET_H
#define AGENTMESH_SERVICES_COMMON_TESTDATA_ECHO_DESCRIPTOR_SET_H

#include <stddef.h>
#include <stdint.h>

/* A serialized FileDescriptorSet; static storage. */
const uint8_t *echo_descriptor_set(size_t *len);

#endif
