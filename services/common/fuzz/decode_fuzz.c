/* libFuzzer driver for the runtime's request decoding (decode.c): arbitrary
 * bytes decoded as several request types must either unpack (and re-pack to
 * at most the input's size plus unknown-field overhead) or fail with a
 * non-empty, bounded explanation; never crash or leak. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "agentmesh/v1/agents.pb-c.h"
#include "agentmesh/v1/memory.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "services/common/rpc_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const ProtobufCMessageDescriptor *const descs[] = {
        &agentmesh__v1__register_agent_request__descriptor,
        &agentmesh__v1__submit_task_request__descriptor,
        &agentmesh__v1__sync_memory_request__descriptor,
        &grpc__health__v1__health_check_request__descriptor,
        &grpc__reflection__v1__server_reflection_request__descriptor,
    };
    for (size_t i = 0; i < sizeof descs / sizeof descs[0]; i++) {
        ProtobufCMessage *m = NULL;
        char err[256];
        err[0] = '\0';
        int rc = rpc__decode(descs[i], data, size, &m, err, sizeof err);
        if (rc == RPC_OK) {
            uint8_t *out = NULL;
            size_t len = 0;
            if (rpc__pack(m, 0, &out, &len) != RPC_OK)
                abort();
            free(out);
            protobuf_c_message_free_unpacked(m, NULL);
        } else if (rc != RPC_ERR_DECODE || err[0] == '\0' ||
                   strlen(err) >= sizeof err) {
            abort();
        }
    }
    return 0;
}
