/* The pure parts of memory-sync, free of I/O and of the event store: the
 * hybrid logical clock, value sealing (AES-256-GCM) and content hashes
 * (HMAC-SHA256), the opaque page-token and cursor codecs, conflict
 * resolution and the per-namespace strategy rules. Each is unit-tested on
 * its own (services/memory_sync/tests/).
 *
 * Thread-safety: everything here is reentrant except ms_hlc, which locks
 * itself, and ms_rules, which is read-only once parsed. */
#ifndef AGENTMESH_MEMORY_SYNC_MODEL_H
#define AGENTMESH_MEMORY_SYNC_MODEL_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Limits and names ----------------------------------------------------
 * Entries are stored under "<namespace>\0<key>" in the event store's caller
 * keys (ES_KEY_MAX = 400 bytes): 128 + 1 + 256 fits. */
#define MS_NS_MAX 128        /* namespace: [A-Za-z0-9._-]{1,128} */
#define MS_KEY_MAX 256       /* key: 1..256 bytes of UTF-8, no NUL */
#define MS_REPLICA_MAX 128   /* replica id: 0..128 bytes of UTF-8, no NUL */
#define MS_CTYPE_MAX 128     /* content type: 0..128 printable ASCII bytes */

/* 1 if ns is a valid namespace (NUL-terminated). */
bool ms_namespace_valid(const char *ns);
/* 1 if s[0..n) is valid UTF-8 (no overlongs, surrogates or NUL). */
bool ms_utf8_valid(const char *s, size_t n);

/* ---- Hybrid logical clock -------------------------------------------------
 * A timestamp is physical milliseconds << 16 | a logical counter. */
#define MS_HLC_LOGICAL_BITS 16
#define MS_HLC_PHYS_MS(h) ((h) >> MS_HLC_LOGICAL_BITS)

/* The next local timestamp after `last` when the wall clock reads phys_ms:
 * greater than last, and at least phys_ms << 16. */
uint64_t ms_hlc_tick(uint64_t last, uint64_t phys_ms);
/* The clock after receiving `remote`: greater than both last and remote,
 * and at least phys_ms << 16. */
uint64_t ms_hlc_merge(uint64_t last, uint64_t remote, uint64_t phys_ms);

/* A replica's clock. Initialise with ms_hlc_init; thread-safe. */
typedef struct ms_hlc {
    pthread_mutex_t mu;
    uint64_t last;
} ms_hlc;

void ms_hlc_init(ms_hlc *c);
void ms_hlc_destroy(ms_hlc *c);
/* A new local timestamp from the wall clock. */
uint64_t ms_hlc_now(ms_hlc *c);
/* Records a timestamp received from another replica; returns the clock. */
uint64_t ms_hlc_observe(ms_hlc *c, uint64_t remote);
/* The wall clock in milliseconds. */
uint64_t ms_wall_ms(void);

/* ---- Sealing ---------------------------------------------------------------
 * A namespace key is 64 random bytes: 32 for AES-256-GCM, 32 for the
 * HMAC-SHA256 content hash (separate keys for separate purposes). A sealed
 * value is nonce (12, random) || ciphertext || tag (16); the additional data
 * binds it to its namespace, key, version and key generation, so a sealed
 * value copied to another entry or version fails to open. */
#define MS_NS_KEY_SIZE 64
#define MS_NONCE_SIZE 12
#define MS_TAG_SIZE 16
#define MS_SEAL_OVERHEAD (MS_NONCE_SIZE + MS_TAG_SIZE)
#define MS_HASH_SIZE 32

typedef struct ms_ns_key {
    uint8_t bytes[MS_NS_KEY_SIZE];
} ms_ns_key;

/* Where a sealed value belongs (borrowed strings). */
typedef struct ms_seal_ctx {
    const char *ns;
    const char *key;
    size_t key_len;
    uint64_t version;
    uint32_t generation;
} ms_seal_ctx;

/* Fills k from RAND_bytes. Returns 0, or -1 (no entropy). */
int ms_key_generate(ms_ns_key *k);
/* Seals pt[0..n) (pt may be NULL when n is 0). On success *out is a buffer
 * of n + MS_SEAL_OVERHEAD bytes the caller frees with free().
 * Returns 0, or -1 (out of memory, cipher failure). */
int ms_seal(const ms_ns_key *k, const ms_seal_ctx *where, const void *pt,
            size_t n, uint8_t **out, size_t *out_len);
/* Opens a sealed value. On success *out (caller frees with free(); never
 * NULL, even for an empty value) holds the plaintext. Returns 0, -1 out of
 * memory, -2 if the value is malformed, tampered with, or sealed under
 * another key or place. */
int ms_unseal(const ms_ns_key *k, const ms_seal_ctx *where, const void *sealed,
              size_t n, uint8_t **out, size_t *out_len);
/* HMAC-SHA256 of v[0..n) under the key's MAC half. Returns 0 or -1. */
int ms_content_hash(const ms_ns_key *k, const void *v, size_t n,
                    uint8_t out[MS_HASH_SIZE]);
/* The same hash, keyed once for many values (the changes of one request).
 * ms_mac_close frees and cleanses it; closing a failed open is a no-op. */
typedef struct ms_mac {
    struct evp_mac_ctx_st *ctx;
    bool fresh;
} ms_mac;
int ms_mac_open(ms_mac *m, const ms_ns_key *k);
int ms_mac_hash(ms_mac *m, const void *v, size_t n, uint8_t out[MS_HASH_SIZE]);
void ms_mac_close(ms_mac *m);
/* SHA-256 of in[0..n), with the digest fetched once. Returns 0 or -1. */
int ms_sha256(const void *in, size_t n, uint8_t out[32]);
/* Overwrites a key in a way the compiler keeps (OPENSSL_cleanse). */
void ms_key_wipe(ms_ns_key *k);

/* ---- Page tokens and cursors ----------------------------------------------
 * Both are unpadded base64url text of a small versioned record that carries a
 * 32-bit hash of the namespace, so a token of another namespace is refused.
 * A page token holds the last key of the page (the next page starts strictly
 * after it: keys inserted or deleted meanwhile never make a page skip or
 * repeat a key that existed when the listing began). A cursor holds the key
 * generation, the next stream version to read and the global position of the
 * last change it covers. */
#define MS_TOKEN_TEXT_MAX 400  /* longest page token text, NUL included */
#define MS_CURSOR_TEXT_MAX 48  /* cursor text, NUL included */

typedef struct ms_cursor {
    uint32_t generation;
    uint64_t next_version;
    uint64_t position;
} ms_cursor;

/* base64url without padding. Encode writes at most 4*ceil(n/3) + 1 bytes
 * into out (out_len), NUL-terminated; -1 if it does not fit. Decode accepts
 * exactly that alphabet and form; -1 otherwise or if out is too small. */
int ms_b64url_encode(const uint8_t *in, size_t n, char *out, size_t out_len);
int ms_b64url_decode(const char *in, size_t n, uint8_t *out, size_t out_len,
                     size_t *written);

/* Encodes the token after `last_key` (1..MS_KEY_MAX bytes) into out
 * (MS_TOKEN_TEXT_MAX bytes). Returns 0 or -1 (bad arguments). */
int ms_page_token_encode(const char *ns, const char *last_key, size_t n,
                         char out[MS_TOKEN_TEXT_MAX]);
/* Decodes a page token of namespace ns into key (MS_KEY_MAX bytes) and *n.
 * Returns 0, or -1 if the text is not a page token of this namespace. */
int ms_page_token_decode(const char *ns, const char *text, char *key, size_t *n);

int ms_cursor_encode(const char *ns, const ms_cursor *c,
                     char out[MS_CURSOR_TEXT_MAX]);
/* "" decodes to the zero cursor (from the start). Returns 0, or -1 if the
 * text is not a cursor of this namespace. */
int ms_cursor_decode(const char *ns, const char *text, ms_cursor *c);

/* ---- Conflicts ------------------------------------------------------------
 * The numbers are agentmesh.v1.ConflictStrategy / ConflictResolution. */
enum {
    MS_STRATEGY_UNSPECIFIED = 0,
    MS_LAST_WRITER_WINS = 1,
    MS_SOURCE_PRIORITY = 2,
    MS_KEEP_BOTH = 3,
};
enum {
    MS_SERVER_WON = 1,
    MS_CLIENT_WON = 2,
    MS_KEPT_BOTH = 3,
};

/* Who wrote a version: its clock and replica (borrowed). */
typedef struct ms_stamp {
    uint64_t hlc;
    const char *replica;
} ms_stamp;

/* Decides a conflict between the server's current version and a client's
 * change based on another version. LAST_WRITER_WINS: the greater hlc wins,
 * an equal hlc goes to the greater replica id (byte order), a complete tie
 * to the server. SOURCE_PRIORITY: the replica earlier in `order` wins; a
 * replica absent from it ranks after every listed one; equal ranks fall back
 * to LAST_WRITER_WINS. KEEP_BOTH: KEPT_BOTH. Any other strategy is treated
 * as LAST_WRITER_WINS. Returns an MS_*_WON / MS_KEPT_BOTH value. */
int ms_resolve(int strategy, const ms_stamp *server, const ms_stamp *client,
               const char *const *order, size_t n_order);

/* Strategy from its name (LAST_WRITER_WINS, SOURCE_PRIORITY, KEEP_BOTH,
 * case-insensitive); MS_STRATEGY_UNSPECIFIED if unknown. */
int ms_strategy_parse(const char *name, size_t n);
/* Static name of a strategy ("LAST_WRITER_WINS" for unknown values). */
const char *ms_strategy_name(int strategy);

/* Strategy rules from configuration text:
 *   PATTERN=STRATEGY[,order=R1|R2|...][;PATTERN=STRATEGY...]
 * PATTERN is an fnmatch(3) glob over namespace names; the first matching
 * rule wins. */
#define MS_RULES_MAX 64
#define MS_ORDER_MAX 32

typedef struct ms_rules ms_rules;

/* Parses text (NULL or "" = no rules). *out is owned by the caller
 * (ms_rules_free). Returns 0, -1 out of memory, -2 malformed (err, which
 * may be NULL, says why). */
int ms_rules_parse(const char *text, ms_rules **out, char *err, size_t errlen);
void ms_rules_free(ms_rules *r);
/* The rule for ns: its strategy and order (borrowed from r), or
 * MS_STRATEGY_UNSPECIFIED when none matches. */
int ms_rules_match(const ms_rules *r, const char *ns,
                   const char *const **order, size_t *n_order);

#ifdef __cplusplus
}
#endif

#endif
