/*
 * pbjson: the proto3 JSON mapping, done generically from protobuf-c message
 * descriptors (no per-message code). The gateway's REST bridge and the NATS
 * outbox's CloudEvents bodies both use it, so that every JSON the project
 * writes or reads follows one set of rules:
 *   - field names in lowerCamelCase when writing; lowerCamelCase and the
 *     original proto names both accepted when reading;
 *   - 64-bit integers written as strings, read from strings or numbers;
 *   - bytes as base64 (standard when writing; standard or URL-safe, padded or
 *     not, when reading); enums by name (numbers accepted when reading);
 *   - maps as objects, repeated fields as arrays, null as the default;
 *   - google.protobuf.Any ({"@type": ...}), Duration ("1.5s") and Timestamp
 *     (RFC 3339) in their special forms.
 * Every input is bounded (nesting depth, element counts) and every refusal
 * says what and where ("tasks[2].priority: ...").
 *
 * Thread-safety: all functions are reentrant; nothing is global.
 */
#ifndef AGENTMESH_PBJSON_H
#define AGENTMESH_PBJSON_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PBJSON_STATUS_TABLE(X)                                              \
    X(OK, 0, "success")                                                     \
    X(NOMEM, 1, "out of memory")                                            \
    X(SYNTAX, 2, "malformed JSON")                                          \
    X(INVALID, 3, "JSON does not match the message schema")                 \
    X(TOO_DEEP, 4, "JSON nested too deeply")                                \
    X(TOO_LARGE, 5, "JSON too large")                                       \
    X(UNKNOWN_TYPE, 6, "type not known to the resolver")                    \
    X(ENCODE, 7, "message cannot be written as JSON")

typedef enum pbjson_status {
#define PBJSON_ENUM_(name, value, text) PBJSON_##name = value,
    PBJSON_STATUS_TABLE(PBJSON_ENUM_)
#undef PBJSON_ENUM_
} pbjson_status;

/* A static text for a status; never NULL. */
const char *pbjson_strerror(int status);

/* Finds the descriptor of a message by full name ("google.rpc.RetryInfo"),
 * for google.protobuf.Any. Returns NULL when unknown. */
typedef const ProtobufCMessageDescriptor *(*pbjson_resolve_fn)(const char *full_name, void *arg);

/* Writing options. */
#define PBJSON_ORIGINAL_NAMES 0x1u /* proto field names instead of lowerCamelCase */
#define PBJSON_EMIT_DEFAULTS 0x2u  /* also write fields holding default values */

/* Reading options. */
#define PBJSON_IGNORE_UNKNOWN 0x4u /* skip unknown fields instead of refusing */

#define PBJSON_DEPTH_DEFAULT 32u
#define PBJSON_ELEMENTS_DEFAULT 100000u

typedef struct pbjson_options {
    unsigned flags;
    unsigned max_depth;    /* nesting of objects/arrays; 0 = PBJSON_DEPTH_DEFAULT */
    size_t max_elements;   /* values in all arrays and maps; 0 = PBJSON_ELEMENTS_DEFAULT */
    pbjson_resolve_fn resolve; /* for Any; NULL = Any holding a message is refused */
    void *resolve_arg;
} pbjson_options;

/* Writes `msg` as JSON (NUL-terminated). On success *out is a buffer the
 * caller frees with free(), *len its length without the NUL (len may be NULL).
 * opts may be NULL (lowerCamelCase, defaults omitted, no resolver).
 * Errors: NOMEM; UNKNOWN_TYPE (an Any whose type the resolver does not know);
 * ENCODE (an Any whose value does not parse, or nesting past max_depth). */
int pbjson_encode(const ProtobufCMessage *msg, const pbjson_options *opts, char **out, size_t *len);

/* Reads JSON text of `len` bytes into a new message of type `desc`. On success
 * *out is a message the caller frees with protobuf_c_message_free_unpacked(msg,
 * NULL). On failure, when err is not NULL, writes a NUL-terminated reason
 * naming the field path into err (at most errlen bytes).
 * Errors: NOMEM, SYNTAX, INVALID, TOO_DEEP, TOO_LARGE, UNKNOWN_TYPE. */
int pbjson_decode(const ProtobufCMessageDescriptor *desc, const char *json, size_t len,
                  const pbjson_options *opts, ProtobufCMessage **out, char *err, size_t errlen);

/* Sets one field of `msg` from a text value, as the REST bridge does for path
 * and query parameters: `path` is a dotted field path in lowerCamelCase or
 * original names ("agentId", "filter.state"); sub-messages are created on the
 * way. A repeated field gets the value appended; a scalar is overwritten.
 * The message must have been allocated with malloc-compatible memory (as
 * pbjson_decode or protobuf_c_message_unpack with a NULL allocator return).
 * Errors: NOMEM, INVALID (unknown field, not a scalar, bad value: err says). */
int pbjson_set_field(ProtobufCMessage *msg, const char *path, const char *value, char *err,
                     size_t errlen);

/* The JSON (lowerCamelCase) name of a proto field name, written into buf.
 * Returns buf, or NULL when it does not fit. */
char *pbjson_json_name(const char *field_name, char *buf, size_t buflen);

#ifdef __cplusplus
}
#endif

#endif
