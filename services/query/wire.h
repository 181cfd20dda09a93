/* wire.h: the protobuf wire format, for the records the query service
 * writes once per event (the feed's Event, a task's Task). Each writer
 * emits its fields in number order and leaves out a field at its proto3
 * default, as protobuf-c does, so its bytes equal protobuf_c_message_pack's
 * (event_test compares them); protobuf-c's generic packer walks the
 * descriptor twice per message and cost more than the LMDB put of the
 * result. A `_len` function gives the bytes its `put_` twin writes. */
#ifndef AGENTMESH_QUERY_WIRE_H
#define AGENTMESH_QUERY_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum { WIRE_VARINT = 0, WIRE_LEN = 2 };

static inline size_t wire_varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static inline uint8_t *wire_put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

static inline uint32_t wire_tag(unsigned field, unsigned type)
{
    return (uint32_t)field << 3 | type;
}

/* A length-delimited field (tag, length, bytes), present even when empty:
 * a repeated element. */
static inline size_t wire_elem_len(unsigned field, size_t n)
{
    return wire_varint_len(wire_tag(field, WIRE_LEN)) + wire_varint_len(n) + n;
}

static inline uint8_t *wire_put_elem(uint8_t *p, unsigned field,
                                     const void *b, size_t n)
{
    p = wire_put_varint(p, wire_tag(field, WIRE_LEN));
    p = wire_put_varint(p, n);
    if (n)
        memcpy(p, b, n);
    return p + n;
}

/* A singular string or bytes field: nothing when empty. */
static inline size_t wire_bytes_len(unsigned field, size_t n)
{
    return n ? wire_elem_len(field, n) : 0;
}

static inline uint8_t *wire_put_bytes(uint8_t *p, unsigned field,
                                      const void *b, size_t n)
{
    return n ? wire_put_elem(p, field, b, n) : p;
}

/* A varint field (uint32/64, int64, and int32/enum sign-extended to 64
 * bits as the format wants): nothing when 0. */
static inline size_t wire_u64_len(unsigned field, uint64_t v)
{
    return v ? wire_varint_len(wire_tag(field, WIRE_VARINT)) + wire_varint_len(v)
             : 0;
}

static inline uint8_t *wire_put_u64(uint8_t *p, unsigned field, uint64_t v)
{
    if (!v)
        return p;
    p = wire_put_varint(p, wire_tag(field, WIRE_VARINT));
    return wire_put_varint(p, v);
}

static inline uint64_t wire_i32(int32_t v)
{
    return (uint64_t)(int64_t)v;
}

#endif
