/*
 * pbjson_fuzz: libFuzzer driver for the proto3 JSON reader and writer. The
 * first byte picks a message type (every request type of the public API,
 * plus google.rpc.Status for Any); the rest is JSON. Whatever parses must
 * write back to JSON that parses to the same message (same packed bytes).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agentmesh/v1/agents.pb-c.h"
#include "agentmesh/v1/eventstore.pb-c.h"
#include "agentmesh/v1/memory.pb-c.h"
#include "agentmesh/v1/query.pb-c.h"
#include "google/rpc/status.pb-c.h"
#include "services/pbjson/pbjson.h"
#include "services/pbjson/registry.h"

static const ProtobufCServiceDescriptor *const services[] = {
    &agentmesh__v1__agent_manager__descriptor,
    &agentmesh__v1__memory_sync__descriptor,
    &agentmesh__v1__query__descriptor,
    &agentmesh__v1__event_store__descriptor,
};

static const ProtobufCMessageDescriptor *pick(uint8_t b)
{
    unsigned n = 1;
    for (size_t i = 0; i < sizeof(services) / sizeof(services[0]); i++)
        n += services[i]->n_methods;
    unsigned k = b % n;
    if (k == 0)
        return &google__rpc__status__descriptor;
    k--;
    for (size_t i = 0; i < sizeof(services) / sizeof(services[0]); i++) {
        if (k < services[i]->n_methods)
            return services[i]->methods[k].input;
        k -= services[i]->n_methods;
    }
    return &google__rpc__status__descriptor;
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *n)
{
    *n = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(*n + 1);
    if (b != NULL)
        protobuf_c_message_pack(m, b);
    return b;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pbjson_options o = {0, 0, 1000, pbjson_registry_resolve, NULL};
    ProtobufCMessage *m = NULL, *m2 = NULL;
    char *json = NULL;
    size_t jlen = 0, n1 = 0, n2 = 0;
    uint8_t *b1 = NULL, *b2 = NULL;
    char err[256];

    if (size < 1)
        return 0;
    const ProtobufCMessageDescriptor *d = pick(data[0]);
    if (pbjson_decode(d, (const char *)data + 1, size - 1, &o, &m, err, sizeof(err)) != PBJSON_OK)
        return 0;
    if (pbjson_encode(m, &o, &json, &jlen) != PBJSON_OK)
        goto out;
    if (pbjson_decode(d, json, jlen, &o, &m2, err, sizeof(err)) != PBJSON_OK)
        abort(); /* what we write, we must read */
    b1 = pack(m, &n1);
    b2 = pack(m2, &n2);
    if (b1 == NULL || b2 == NULL)
        goto out;
    /* NaN compares unequal as a double but packs identically. */
    if (n1 != n2 || memcmp(b1, b2, n1) != 0)
        abort();
out:
    free(b1);
    free(b2);
    free(json);
    if (m2)
        protobuf_c_message_free_unpacked(m2, NULL);
    if (m)
        protobuf_c_message_free_unpacked(m, NULL);
    return 0;
}
