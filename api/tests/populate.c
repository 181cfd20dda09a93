/* Test support: builds a protobuf-c message of any type with every field
 * set to a distinct non-default value, so that round-trip tests cover every
 * field of every message without naming them. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/tests/populate.h"

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (p == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    return p;
}

static ProtobufCMessage *populate(const ProtobufCMessageDescriptor *d, int depth);

/* Writes one distinct, non-default value of the field's type at dst. */
static void set_scalar(const ProtobufCFieldDescriptor *f, void *dst, int depth, unsigned salt)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
        *(int32_t *)dst = -7 - (int32_t)salt;
        break;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        *(uint32_t *)dst = 4000000000u - salt;
        break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
        *(int64_t *)dst = -1700000000000000000LL - (int64_t)salt;
        break;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        *(uint64_t *)dst = 18000000000000000000ULL - salt;
        break;
    case PROTOBUF_C_TYPE_FLOAT:
        *(float *)dst = 1.5f + (float)salt;
        break;
    case PROTOBUF_C_TYPE_DOUBLE:
        *(double *)dst = 2.25 + salt;
        break;
    case PROTOBUF_C_TYPE_BOOL:
        *(protobuf_c_boolean *)dst = 1;
        break;
    case PROTOBUF_C_TYPE_ENUM: {
        const ProtobufCEnumDescriptor *e = f->descriptor;
        *(int *)dst = e->values[e->n_values - 1].value;
        break;
    }
    case PROTOBUF_C_TYPE_STRING: {
        /* A counter keeps every string unique, so map keys never collide. */
        static unsigned serial;
        char *s = xcalloc(64, 1);
        snprintf(s, 64, "%s-%u-%u-\xc3\xa9", f->name, salt, serial++);
        *(char **)dst = s;
        break;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        ProtobufCBinaryData *b = dst;
        b->len = 5 + salt;
        b->data = xcalloc(b->len, 1);
        for (size_t i = 0; i < b->len; i++)
            b->data[i] = (uint8_t)(0xf0 + i);
        break;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        *(ProtobufCMessage **)dst = populate(f->descriptor, depth + 1);
        break;
    }
}

static size_t type_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        return 4;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return 8;
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_ENUM:
        return sizeof(int);
    case PROTOBUF_C_TYPE_STRING:
        return sizeof(char *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(ProtobufCMessage *);
    }
    return 0;
}

/* Builds a message with every field set (two elements per repeated field,
 * the first member of each oneof), recursing three levels into messages. */
static ProtobufCMessage *populate(const ProtobufCMessageDescriptor *d, int depth)
{
    ProtobufCMessage *m = xcalloc(1, d->sizeof_message);
    d->message_init(m);
    if (depth > 3)
        return m;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        char *base = (char *)m;
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t *qcase = (uint32_t *)(base + f->quantifier_offset);
            if (*qcase != 0)
                continue;
            *qcase = f->id;
            set_scalar(f, base + f->offset, depth, i);
        } else if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = 2, sz = type_size(f->type);
            char *arr = xcalloc(n, sz);
            for (size_t k = 0; k < n; k++)
                set_scalar(f, arr + k * sz, depth, (unsigned)(i + k));
            *(size_t *)(base + f->quantifier_offset) = n;
            *(void **)(base + f->offset) = arr;
        } else {
            set_scalar(f, base + f->offset, depth, i);
        }
    }
    return m;
}

ProtobufCMessage *populate_message(const ProtobufCMessageDescriptor *d)
{
    return populate(d, 0);
}
