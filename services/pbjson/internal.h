/* Internal helpers shared by pbjson's writer and reader: field lookup, map
 * entry detection, base64, a growable text buffer. Not part of the API. */
#ifndef AGENTMESH_PBJSON_INTERNAL_H
#define AGENTMESH_PBJSON_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "services/pbjson/pbjson.h"

typedef struct strbuf {
    char *data;
    size_t len;
    size_t cap;
    bool failed; /* an allocation failed; further appends are ignored */
} strbuf;

void sb_append(strbuf *sb, const char *s, size_t n);
void sb_puts(strbuf *sb, const char *s);
void sb_putc(strbuf *sb, char c);
void sb_printf(strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s (n bytes) as a JSON string literal, quotes included. */
void sb_json_string(strbuf *sb, const char *s, size_t n);

/* True when the repeated message field is a protoc-generated map entry. */
bool pbjson_is_map_field(const ProtobufCFieldDescriptor *f);

/* The field of `d` named `name` in JSON (lowerCamelCase) or original form. */
const ProtobufCFieldDescriptor *pbjson_find_field(const ProtobufCMessageDescriptor *d,
                                                  const char *name);

/* Size of one element of a field of this type in a protobuf-c struct. */
size_t pbjson_type_size(ProtobufCType t);

/* Standard base64 with padding. Returns the bytes written to out (which must
 * hold 4 * ((n + 2) / 3) + 1 bytes, NUL included). */
size_t pbjson_b64_encode(const uint8_t *in, size_t n, char *out);
/* Standard or URL-safe base64, padding optional. Returns 0 and the length in
 * *outlen (out must hold n * 3 / 4 + 3 bytes), or -1 on a bad character. */
int pbjson_b64_decode(const char *in, size_t n, uint8_t *out, size_t *outlen);

/* Well-known types with a special JSON form. */
enum pbjson_wkt { WKT_NONE, WKT_ANY, WKT_DURATION, WKT_TIMESTAMP };
enum pbjson_wkt pbjson_wkt_of(const ProtobufCMessageDescriptor *d);

/* Duration/Timestamp text forms (seconds, nanos already validated). */
int pbjson_duration_format(int64_t seconds, int32_t nanos, char *buf, size_t len);
int pbjson_duration_parse(const char *s, int64_t *seconds, int32_t *nanos);
int pbjson_timestamp_format(int64_t seconds, int32_t nanos, char *buf, size_t len);
int pbjson_timestamp_parse(const char *s, int64_t *seconds, int32_t *nanos);

#endif
