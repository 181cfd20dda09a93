/* Lookup in the generated, NULL-terminated list of API message descriptors.
 * The list is small (about 150 types) and lookups are rare (Any details,
 * start-up route tables), so a linear scan is enough. */
#include <string.h>

#include "services/pbjson/registry.h"

extern const ProtobufCMessageDescriptor *const agentmesh_c_messages[];

const ProtobufCMessageDescriptor *pbjson_registry_find(const char *full_name)
{
    if (full_name == NULL)
        return NULL;
    for (size_t i = 0; agentmesh_c_messages[i] != NULL; i++)
        if (strcmp(agentmesh_c_messages[i]->name, full_name) == 0)
            return agentmesh_c_messages[i];
    return NULL;
}

const ProtobufCMessageDescriptor *pbjson_registry_resolve(const char *full_name, void *arg)
{
    (void)arg;
    return pbjson_registry_find(full_name);
}
