/* Test support: a message of any type with every field populated. */
#ifndef AGENTMESH_API_TESTS_POPULATE_H
#define AGENTMESH_API_TESTS_POPULATE_H

#include <protobuf-c/protobuf-c.h>

/* Returns a new message of type d with every field set (two elements per
 * repeated field and map, the first member of each oneof, three levels of
 * sub-messages). Strings hold non-ASCII UTF-8. Exits the process when out of
 * memory. Free with protobuf_c_message_free_unpacked(msg, NULL). */
ProtobufCMessage *populate_message(const ProtobufCMessageDescriptor *d);

#endif
