/* Request decoding that names the problem: protobuf-c's unpack only says
 * "failed", so on failure the bytes are walked at the wire level to report
 * where and why they are malformed (bad tag, truncated varint or field). */
#include <stdio.h>
#include <stdlib.h>

#include "services/common/rpc_internal.h"

static int read_varint(const uint8_t *d, size_t len, size_t *pos, uint64_t *v)
{
    uint64_t r = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*pos >= len)
            return -1;
        uint8_t b = d[(*pos)++];
        r |= (uint64_t)(b & 0x7f) << shift;
        if ((b & 0x80) == 0) {
            *v = r;
            return 0;
        }
    }
    return -1;
}

/* Describes the first wire-format error in `d`, or a generic reason. */
static void explain(const ProtobufCMessageDescriptor *desc, const uint8_t *d,
                    size_t len, char *err, size_t errlen)
{
    size_t pos = 0;
    while (pos < len) {
        size_t at = pos;
        uint64_t key = 0, v = 0;
        if (read_varint(d, len, &pos, &key) != 0) {
            snprintf(err, errlen,
                     "malformed %s: truncated field tag at byte %zu of %zu",
                     desc->name, at, len);
            return;
        }
        unsigned wt = (unsigned)(key & 7);
        uint64_t field = key >> 3;
        if (field == 0 || field > 536870911u) {
            snprintf(err, errlen, "malformed %s: invalid field number %llu at byte %zu",
                     desc->name, (unsigned long long)field, at);
            return;
        }
        switch (wt) {
        case 0:
            if (read_varint(d, len, &pos, &v) != 0) {
                snprintf(err, errlen,
                         "malformed %s: field %llu: truncated varint at byte %zu",
                         desc->name, (unsigned long long)field, at);
                return;
            }
            break;
        case 1:
        case 5: {
            size_t n = wt == 1 ? 8 : 4;
            if (len - pos < n) {
                snprintf(err, errlen,
                         "malformed %s: field %llu: %zu-byte value truncated at byte %zu",
                         desc->name, (unsigned long long)field, n, at);
                return;
            }
            pos += n;
            break;
        }
        case 2:
            if (read_varint(d, len, &pos, &v) != 0 || v > len - pos) {
                snprintf(err, errlen,
                         "malformed %s: field %llu: length-delimited value "
                         "overruns the message at byte %zu",
                         desc->name, (unsigned long long)field, at);
                return;
            }
            pos += (size_t)v;
            break;
        default:
            snprintf(err, errlen,
                     "malformed %s: field %llu: invalid wire type %u at byte %zu",
                     desc->name, (unsigned long long)field, wt, at);
            return;
        }
    }
    snprintf(err, errlen,
             "malformed %s: %zu bytes do not decode (a field has the wrong "
             "wire type, or a nested message or string is invalid)",
             desc->name, len);
}

int rpc__decode(const ProtobufCMessageDescriptor *desc, const uint8_t *data,
                size_t len, ProtobufCMessage **out, char *err, size_t errlen)
{
    static const uint8_t empty[1] = {0};
    ProtobufCMessage *m =
        protobuf_c_message_unpack(desc, NULL, len, len ? data : empty);
    if (m == NULL) {
        explain(desc, data, len, err, errlen);
        return RPC_ERR_DECODE;
    }
    *out = m;
    return RPC_OK;
}

int rpc__pack(const ProtobufCMessage *msg, size_t max, uint8_t **out,
              size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    if (max != 0 && n > max)
        return RPC_ERR_TOO_LARGE;
    uint8_t *buf = malloc(n ? n : 1);
    if (buf == NULL)
        return RPC_ERR_NOMEM;
    protobuf_c_message_pack(msg, buf);
    *out = buf;
    *len = n;
    return RPC_OK;
}
