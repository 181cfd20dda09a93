/* pbjson's shared pieces: the text buffer, JSON string escaping, field name
 * rules, map entry detection, base64 and the Duration/Timestamp text forms. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "services/pbjson/internal.h"

static const char *const status_text[] = {
#define PBJSON_TEXT_(name, value, text) [value] = text,
    PBJSON_STATUS_TABLE(PBJSON_TEXT_)
#undef PBJSON_TEXT_
};

const char *pbjson_strerror(int status)
{
    if (status < 0 || (size_t)status >= sizeof(status_text) / sizeof(status_text[0]) ||
        status_text[status] == NULL)
        return "unknown pbjson status";
    return status_text[status];
}

static bool sb_reserve(strbuf *sb, size_t more)
{
    if (sb->failed)
        return false;
    if (sb->len + more + 1 <= sb->cap)
        return true;
    size_t cap = sb->cap ? sb->cap : 256;
    while (cap < sb->len + more + 1) {
        if (cap > SIZE_MAX / 2) {
            sb->failed = true;
            return false;
        }
        cap *= 2;
    }
    char *p = realloc(sb->data, cap);
    if (p == NULL) {
        sb->failed = true;
        return false;
    }
    sb->data = p;
    sb->cap = cap;
    return true;
}

void sb_append(strbuf *sb, const char *s, size_t n)
{
    if (!sb_reserve(sb, n))
        return;
    memcpy(sb->data + sb->len, s, n);
    sb->len += n;
    sb->data[sb->len] = '\0';
}

void sb_puts(strbuf *sb, const char *s)
{
    sb_append(sb, s, strlen(s));
}

void sb_putc(strbuf *sb, char c)
{
    sb_append(sb, &c, 1);
}

void sb_printf(strbuf *sb, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        sb->failed = true;
        return;
    }
    sb_append(sb, tmp, (size_t)n);
}

void sb_json_string(strbuf *sb, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t run = 0;
    sb_putc(sb, '"');
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[6];
        switch (c) {
        case '"': esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        default:
            if (c < 0x20) {
                u[0] = '\\'; u[1] = 'u'; u[2] = '0'; u[3] = '0';
                u[4] = hex[c >> 4]; u[5] = hex[c & 15];
                sb_append(sb, s + i - run, run);
                run = 0;
                sb_append(sb, u, 6);
                continue;
            }
            run++;
            continue;
        }
        sb_append(sb, s + i - run, run);
        run = 0;
        sb_puts(sb, esc);
    }
    sb_append(sb, s + n - run, run);
    sb_putc(sb, '"');
}

char *pbjson_json_name(const char *field_name, char *buf, size_t buflen)
{
    size_t o = 0;
    bool upper = false;
    for (const char *p = field_name; *p; p++) {
        if (*p == '_') {
            upper = true;
            continue;
        }
        if (o + 1 >= buflen)
            return NULL;
        char c = *p;
        if (upper && c >= 'a' && c <= 'z')
            c = (char)(c - 'a' + 'A');
        upper = false;
        buf[o++] = c;
    }
    if (o >= buflen)
        return NULL;
    buf[o] = '\0';
    return buf;
}

const ProtobufCFieldDescriptor *pbjson_find_field(const ProtobufCMessageDescriptor *d,
                                                  const char *name)
{
    char jn[256];
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (strcmp(f->name, name) == 0)
            return f;
        if (pbjson_json_name(f->name, jn, sizeof(jn)) != NULL && strcmp(jn, name) == 0)
            return f;
    }
    return NULL;
}

bool pbjson_is_map_field(const ProtobufCFieldDescriptor *f)
{
    if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE)
        return false;
    const ProtobufCMessageDescriptor *e = f->descriptor;
    if (e->n_fields != 2 || strcmp(e->fields[0].name, "key") != 0 || e->fields[0].id != 1 ||
        strcmp(e->fields[1].name, "value") != 0 || e->fields[1].id != 2)
        return false;
    /* protoc names the entry <CamelCaseFieldName>Entry, nested in the parent. */
    size_t n = strlen(e->name);
    return n > 5 && strcmp(e->name + n - 5, "Entry") == 0;
}

size_t pbjson_type_size(ProtobufCType t)
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

static const char b64_std[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t pbjson_b64_encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64_std[v >> 18];
        out[o++] = b64_std[(v >> 12) & 63];
        out[o++] = b64_std[(v >> 6) & 63];
        out[o++] = b64_std[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64_std[v >> 18];
        out[o++] = b64_std[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64_std[v >> 18];
        out[o++] = b64_std[(v >> 12) & 63];
        out[o++] = b64_std[(v >> 6) & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

static int b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+' || c == '-')
        return 62;
    if (c == '/' || c == '_')
        return 63;
    return -1;
}

int pbjson_b64_decode(const char *in, size_t n, uint8_t *out, size_t *outlen)
{
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    while (n > 0 && in[n - 1] == '=')
        n--;
    if (n % 4 == 1)
        return -1;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value(in[i]);
        if (v < 0)
            return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
        }
    }
    *outlen = o;
    return 0;
}

enum pbjson_wkt pbjson_wkt_of(const ProtobufCMessageDescriptor *d)
{
    if (strcmp(d->name, "google.protobuf.Any") == 0)
        return WKT_ANY;
    if (strcmp(d->name, "google.protobuf.Duration") == 0)
        return WKT_DURATION;
    if (strcmp(d->name, "google.protobuf.Timestamp") == 0)
        return WKT_TIMESTAMP;
    return WKT_NONE;
}

/* Seconds bounds of the proto3 JSON spec (about ±10,000 years). */
#define DURATION_MAX_SECONDS 315576000000LL
#define TIMESTAMP_MIN_SECONDS -62135596800LL /* 0001-01-01T00:00:00Z */
#define TIMESTAMP_MAX_SECONDS 253402300799LL /* 9999-12-31T23:59:59Z */

static void fraction(int32_t nanos, char *buf, size_t len)
{
    /* 0, 3, 6 or 9 digits, as the spec's writers do. */
    if (nanos == 0)
        buf[0] = '\0';
    else if (nanos % 1000000 == 0)
        snprintf(buf, len, ".%03d", nanos / 1000000);
    else if (nanos % 1000 == 0)
        snprintf(buf, len, ".%06d", nanos / 1000);
    else
        snprintf(buf, len, ".%09d", nanos);
}

int pbjson_duration_format(int64_t seconds, int32_t nanos, char *buf, size_t len)
{
    char frac[16];
    if (seconds < -DURATION_MAX_SECONDS || seconds > DURATION_MAX_SECONDS || nanos <= -1000000000 ||
        nanos >= 1000000000 || (seconds > 0 && nanos < 0) || (seconds < 0 && nanos > 0))
        return -1;
    bool neg = seconds < 0 || nanos < 0;
    fraction(nanos < 0 ? -nanos : nanos, frac, sizeof(frac));
    long long s = seconds < 0 ? -seconds : seconds;
    int n = snprintf(buf, len, "%s%lld%ss", neg ? "-" : "", s, frac);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* Parses [digits][.digits up to 9], advancing *p. */
static int parse_sec_frac(const char **p, int64_t *sec, int32_t *nanos, bool need_int)
{
    const char *s = *p;
    int64_t v = 0;
    int digits = 0;
    while (*s >= '0' && *s <= '9') {
        if (v > (INT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (*s++ - '0');
        digits++;
    }
    if (need_int && digits == 0)
        return -1;
    int32_t ns = 0;
    if (*s == '.') {
        int fd = 0;
        s++;
        while (*s >= '0' && *s <= '9') {
            if (fd == 9)
                return -1;
            ns = ns * 10 + (*s++ - '0');
            fd++;
        }
        if (fd == 0)
            return -1;
        for (; fd < 9; fd++)
            ns *= 10;
    }
    *sec = v;
    *nanos = ns;
    *p = s;
    return 0;
}

int pbjson_duration_parse(const char *s, int64_t *seconds, int32_t *nanos)
{
    bool neg = false;
    int64_t sec;
    int32_t ns;
    if (*s == '-') {
        neg = true;
        s++;
    }
    if (parse_sec_frac(&s, &sec, &ns, true) != 0 || s[0] != 's' || s[1] != '\0')
        return -1;
    if (sec > DURATION_MAX_SECONDS)
        return -1;
    *seconds = neg ? -sec : sec;
    *nanos = neg ? -ns : ns;
    return 0;
}

int pbjson_timestamp_format(int64_t seconds, int32_t nanos, char *buf, size_t len)
{
    char frac[16];
    struct tm tm;
    if (seconds < TIMESTAMP_MIN_SECONDS || seconds > TIMESTAMP_MAX_SECONDS || nanos < 0 ||
        nanos >= 1000000000)
        return -1;
    time_t t = (time_t)seconds;
    if (gmtime_r(&t, &tm) == NULL)
        return -1;
    fraction(nanos, frac, sizeof(frac));
    int n = snprintf(buf, len, "%04d-%02d-%02dT%02d:%02d:%02d%sZ", tm.tm_year + 1900, tm.tm_mon + 1,
                     tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, frac);
    return n < 0 || (size_t)n >= len ? -1 : 0;
}

static int digits_n(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

/* Days from 1970-01-01 to y-m-d in the proleptic Gregorian calendar. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int pbjson_timestamp_parse(const char *s, int64_t *seconds, int32_t *nanos)
{
    int Y, M, D, h, m, sec;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (strlen(s) < 20 || digits_n(s, 4, &Y) || s[4] != '-' || digits_n(s + 5, 2, &M) ||
        s[7] != '-' || digits_n(s + 8, 2, &D) || (s[10] != 'T' && s[10] != 't') ||
        digits_n(s + 11, 2, &h) || s[13] != ':' || digits_n(s + 14, 2, &m) || s[16] != ':' ||
        digits_n(s + 17, 2, &sec))
        return -1;
    if (Y < 1 || M < 1 || M > 12 || D < 1 || D > mdays[M - 1] || h > 23 || m > 59 || sec > 59)
        return -1;
    bool leap = (Y % 4 == 0 && Y % 100 != 0) || Y % 400 == 0;
    if (M == 2 && D == 29 && !leap)
        return -1;
    const char *p = s + 19;
    int32_t ns = 0;
    if (*p == '.') {
        int64_t ignored;
        const char *q = p;
        /* Reuse the fraction parser on "0.xxx". */
        char tmp[16] = "0";
        size_t fl = strspn(q + 1, "0123456789");
        if (fl == 0 || fl > 9)
            return -1;
        memcpy(tmp + 1, q, fl + 1);
        tmp[fl + 2] = '\0';
        const char *t = tmp;
        if (parse_sec_frac(&t, &ignored, &ns, true) != 0)
            return -1;
        p = q + 1 + fl;
    }
    int64_t offset = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (digits_n(p + 1, 2, &oh) || p[3] != ':' || digits_n(p + 4, 2, &om) || oh > 23 || om > 59)
            return -1;
        offset = (int64_t)(oh * 3600 + om * 60) * (*p == '+' ? 1 : -1);
        p += 6;
    } else {
        return -1;
    }
    if (*p != '\0')
        return -1;
    int64_t v = days_from_civil(Y, M, D) * 86400 + h * 3600 + m * 60 + sec - offset;
    if (v < TIMESTAMP_MIN_SECONDS || v > TIMESTAMP_MAX_SECONDS)
        return -1;
    *seconds = v;
    *nanos = ns;
    return 0;
}
