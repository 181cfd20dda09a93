/* Pagination: opaque page tokens and paged index scans. A token holds the
 * suffix of the last index key a page reached, bound to the request kind and
 * a hash of its filters; index keys end with an immutable id or creation
 * position, so items that existed at the first page are neither skipped nor
 * repeated while writes continue (new items appear only ahead of the
 * cursor or not at all). */
#include <stdlib.h>
#include <string.h>

#include "services/query/query.h"

#define TOKEN_VERSION 1

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

uint64_t qs_hash(uint64_t h, const void *p, size_t n)
{
    const uint8_t *b = p;
    if (!h)
        h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= 1099511628211ull;
    }
    /* A separator, so ("ab","c") and ("a","bc") differ. */
    h ^= 0xff;
    h *= 1099511628211ull;
    return h;
}

size_t qs_page_size(uint32_t requested)
{
    if (requested == 0)
        return QS_PAGE_DEFAULT;
    return requested > QS_PAGE_MAX ? QS_PAGE_MAX : requested;
}

int qs_token_encode(char kind, uint64_t filter_hash, const void *key,
                    size_t key_len, char **out)
{
    if (key_len > QS_KEY_CAP)
        return ES_INVALID;
    size_t n = 1 + 1 + 8 + key_len;
    uint8_t raw[2 + 8 + QS_KEY_CAP];
    raw[0] = TOKEN_VERSION;
    raw[1] = (uint8_t)kind;
    qs_be64(raw + 2, filter_hash);
    if (key_len)
        memcpy(raw + 10, key, key_len);
    char *t = malloc((n + 2) / 3 * 4 + 1);
    if (!t)
        return ES_NOMEM;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)raw[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)raw[i + 1] << 8;
        if (i + 2 < n)
            v |= raw[i + 2];
        t[o++] = b64[v >> 18 & 63];
        t[o++] = b64[v >> 12 & 63];
        if (i + 1 < n)
            t[o++] = b64[v >> 6 & 63];
        if (i + 2 < n)
            t[o++] = b64[v & 63];
    }
    t[o] = '\0';
    *out = t;
    return ES_OK;
}

static int b64_value(char c)
{
    const char *p = c ? strchr(b64, c) : NULL;
    return p ? (int)(p - b64) : -1;
}

int qs_token_decode(const char *token, char kind, uint64_t filter_hash,
                    void *key, size_t cap, size_t *key_len)
{
    size_t tl = token ? strlen(token) : 0;
    uint8_t raw[2 + 8 + QS_KEY_CAP];
    size_t n = 0;
    if (tl == 0) {
        *key_len = 0;
        return ES_OK;
    }
    if (tl % 4 == 1 || tl > (sizeof raw / 3 + 1) * 4)
        return ES_INVALID;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < tl; i++) {
        int v = b64_value(token[i]);
        if (v < 0)
            return ES_INVALID;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n >= sizeof raw)
                return ES_INVALID;
            raw[n++] = (uint8_t)(acc >> bits);
        }
    }
    if (n < 10 || raw[0] != TOKEN_VERSION || raw[1] != (uint8_t)kind ||
        qs_get_be64(raw + 2) != filter_hash || n - 10 > cap)
        return ES_INVALID;
    memcpy(key, raw + 10, n - 10);
    *key_len = n - 10;
    return ES_OK;
}

typedef struct scan {
    es_txn *txn;
    const uint8_t *prefix;
    size_t prefix_len;
    size_t limit, taken, examined;
    qs_take_fn fn;
    void *arg;
    uint8_t *last;
    size_t *last_len;
    bool *more;
    int rc;
} scan;

static int visit(void *arg, const void *key, size_t key_len, const void *val,
                 size_t val_len)
{
    scan *s = arg;
    if (key_len < s->prefix_len ||
        (s->prefix_len && memcmp(key, s->prefix, s->prefix_len)))
        return 1;
    if (s->taken >= s->limit || s->examined >= QS_SCAN_MAX) {
        *s->more = true;
        return 1;
    }
    const uint8_t *suffix = (const uint8_t *)key + s->prefix_len;
    size_t sl = key_len - s->prefix_len;
    if (sl > QS_KEY_CAP)
        return 0;
    s->examined++;
    int r = s->fn(s->arg, s->txn, suffix, sl, val, val_len);
    if (r < 0) {
        s->rc = -r;
        return 1;
    }
    if (r == QS_STOP)
        return 1;
    s->taken += (size_t)r;
    memcpy(s->last, suffix, sl);
    *s->last_len = sl;
    return 0;
}

int qs_scan_page(es_txn *txn, const char *ns, const void *prefix,
                 size_t prefix_len, const void *after, size_t after_len,
                 size_t limit, qs_take_fn fn, void *arg, uint8_t *last,
                 size_t *last_len, bool *more)
{
    uint8_t from[2 * QS_KEY_CAP + 1];
    size_t fl = 0;
    if (prefix_len + after_len + 1 > sizeof from)
        return ES_INVALID;
    if (prefix_len)
        memcpy(from, prefix, prefix_len);
    fl = prefix_len;
    if (after_len) {
        memcpy(from + fl, after, after_len);
        fl += after_len;
        from[fl++] = 0; /* the first key strictly after prefix+after */
    }
    scan s = {txn, prefix, prefix_len, limit, 0, 0, fn, arg, last, last_len,
              more, 0};
    *more = false;
    *last_len = 0;
    int rc = es_kv_scan(txn, ns, fl ? from : NULL, fl, visit, &s);
    return rc ? rc : s.rc;
}
