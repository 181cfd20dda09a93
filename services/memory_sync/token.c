/* Opaque page tokens (ListMemory) and cursors (SyncMemory, WatchMemory):
 * small versioned binary records in unpadded base64url. The decoders face
 * client input and check every byte; fuzz/token_fuzz.c drives them. */
#include <string.h>

#include "services/memory_sync/model.h"

#define TOKEN_TAG 'L'
#define CURSOR_TAG 'C'
#define FORMAT 1
#define CURSOR_BYTES (2 + 4 + 4 + 8 + 8)

static const char alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* FNV-1a: not a security check, only a guard against mixing namespaces. */
static uint32_t ns_hash(const char *ns)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)ns; *p; p++)
        h = (h ^ *p) * 16777619u;
    return h;
}

static void put_be(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = bytes - 1; i >= 0; i--) {
        p[i] = (uint8_t)v;
        v >>= 8;
    }
}

static uint64_t get_be(const uint8_t *p, int bytes)
{
    uint64_t v = 0;
    for (int i = 0; i < bytes; i++)
        v = v << 8 | p[i];
    return v;
}

int ms_b64url_encode(const uint8_t *in, size_t n, char *out, size_t out_len)
{
    size_t need = n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0) + 1, at = 0;
    if (need > out_len)
        return -1;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        size_t left = n - i;
        if (left > 1)
            v |= (uint32_t)in[i + 1] << 8;
        if (left > 2)
            v |= in[i + 2];
        out[at++] = alphabet[v >> 18 & 63];
        out[at++] = alphabet[v >> 12 & 63];
        if (left > 1)
            out[at++] = alphabet[v >> 6 & 63];
        if (left > 2)
            out[at++] = alphabet[v & 63];
    }
    out[at] = '\0';
    return 0;
}

static int sextet(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '-')
        return 62;
    if (c == '_')
        return 63;
    return -1;
}

int ms_b64url_decode(const char *in, size_t n, uint8_t *out, size_t out_len,
                     size_t *written)
{
    size_t at = 0;
    if (n % 4 == 1)
        return -1;
    for (size_t i = 0; i < n; i += 4) {
        size_t chunk = n - i < 4 ? n - i : 4;
        uint32_t v = 0;
        for (size_t j = 0; j < 4; j++) {
            int s = j < chunk ? sextet(in[i + j]) : 0;
            if (s < 0)
                return -1;
            v = v << 6 | (uint32_t)s;
        }
        size_t bytes = chunk - 1;
        /* Canonical form only: the unused low bits of a short chunk are 0. */
        if ((bytes == 1 && (v & 0xffff)) || (bytes == 2 && (v & 0xff)))
            return -1;
        if (at + bytes > out_len)
            return -1;
        for (size_t j = 0; j < bytes; j++)
            out[at++] = (uint8_t)(v >> (16 - 8 * j));
    }
    *written = at;
    return 0;
}

int ms_page_token_encode(const char *ns, const char *last_key, size_t n,
                         char out[MS_TOKEN_TEXT_MAX])
{
    uint8_t raw[2 + 4 + MS_KEY_MAX];
    if (n == 0 || n > MS_KEY_MAX)
        return -1;
    raw[0] = TOKEN_TAG;
    raw[1] = FORMAT;
    put_be(raw + 2, ns_hash(ns), 4);
    memcpy(raw + 6, last_key, n);
    return ms_b64url_encode(raw, 6 + n, out, MS_TOKEN_TEXT_MAX);
}

int ms_page_token_decode(const char *ns, const char *text, char *key, size_t *n)
{
    uint8_t raw[2 + 4 + MS_KEY_MAX];
    size_t len = strlen(text), got = 0;
    if (len >= MS_TOKEN_TEXT_MAX ||
        ms_b64url_decode(text, len, raw, sizeof raw, &got) || got < 7 ||
        raw[0] != TOKEN_TAG || raw[1] != FORMAT ||
        get_be(raw + 2, 4) != ns_hash(ns) || memchr(raw + 6, 0, got - 6))
        return -1;
    memcpy(key, raw + 6, got - 6);
    *n = got - 6;
    return 0;
}

int ms_cursor_encode(const char *ns, const ms_cursor *c,
                     char out[MS_CURSOR_TEXT_MAX])
{
    uint8_t raw[CURSOR_BYTES];
    raw[0] = CURSOR_TAG;
    raw[1] = FORMAT;
    put_be(raw + 2, ns_hash(ns), 4);
    put_be(raw + 6, c->generation, 4);
    put_be(raw + 10, c->next_version, 8);
    put_be(raw + 18, c->position, 8);
    return ms_b64url_encode(raw, sizeof raw, out, MS_CURSOR_TEXT_MAX);
}

int ms_cursor_decode(const char *ns, const char *text, ms_cursor *c)
{
    uint8_t raw[CURSOR_BYTES];
    size_t len = strlen(text), got = 0;
    if (len == 0) {
        memset(c, 0, sizeof *c);
        return 0;
    }
    if (len >= MS_CURSOR_TEXT_MAX ||
        ms_b64url_decode(text, len, raw, sizeof raw, &got) ||
        got != CURSOR_BYTES || raw[0] != CURSOR_TAG || raw[1] != FORMAT ||
        get_be(raw + 2, 4) != ns_hash(ns))
        return -1;
    c->generation = (uint32_t)get_be(raw + 6, 4);
    c->next_version = get_be(raw + 10, 8);
    c->position = get_be(raw + 18, 8);
    return 0;
}
