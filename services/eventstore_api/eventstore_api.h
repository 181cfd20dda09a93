/* The agentmesh.v1.EventStore gRPC read API (ReadStream, ReadAll,
 * SubscribeAll) over one es_store, for any service that owns a log
 * (agent-manager "agents", memory-sync "memory"), plus the conversion of a
 * stored es_event to the agentmesh.v1.Event message. Read-only: nothing here
 * writes to the store. See docs/AGENT_MANAGER.md ("EventStore API"). */
#ifndef AGENTMESH_EVENTSTORE_API_H
#define AGENTMESH_EVENTSTORE_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "agentmesh/v1/common.pb-c.h"
#include "eventstore/eventstore.h"
#include "services/common/rpc.h"

#define ESAPI_PAGE_MAX 1000u      /* largest ReadStream/ReadAll limit */
#define ESAPI_PAGE_DEFAULT 100u   /* limit 0 means this */
#define ESAPI_SCAN_MAX 100000u    /* events a filtered ReadAll examines */

/* Errors: 0, -1 out of memory, -2 invalid argument. */

typedef struct esapi esapi;

/* ReadStream and ReadAll leave every event's data_json empty when the call
 * carries the request metadata x-agentmesh-omit-data-json: 1 (for readers
 * of the protobuf bytes only); SubscribeAll always fills it. */
#define ESAPI_OMIT_JSON_METADATA "x-agentmesh-omit-data-json"

/* Registers the three EventStore methods on `srv` (before rpc_server_start)
 * serving `store` under the source name `source` ("agents", "memory"), and
 * sets the health of "agentmesh.v1.EventStore" to SERVING when health is
 * enabled. store and srv are borrowed; *out is owned by the caller and must
 * outlive the server (destroy it after rpc_server_destroy). Returns an
 * rpc_err (rpc.h) or RPC_ERR_NOMEM. */
int esapi_register(rpc_server *srv, es_store *store, const char *source,
                   esapi **out);
/* Frees the API's state; NULL is a no-op. */
void esapi_destroy(esapi *api);

/* Converts one stored event (borrowed) into a new message owned by the
 * caller (protobuf_c_message_free_unpacked(&msg->base, NULL)). data_json is
 * filled with the payload's proto3 JSON when `with_json` is set and the type
 * is an agentmesh API message. Returns 0, or -1 out of memory. Thread-safe. */
int esapi_event_to_proto(const es_event *ev, const char *source,
                         bool with_json, Agentmesh__V1__Event **out);

/* Lower-case UUID text of a 16-byte id; out holds 37 bytes. Thread-safe. */
void esapi_uuid_format(const uint8_t id[16], char out[37]);

#endif
