/* Unit tests of memory-sync's pure parts: the hybrid logical clock (local
 * ticks, merges, monotonicity under threads), conflict resolution as a table
 * over every strategy and ordering case, strategy rules, sealing and
 * unsealing (every tampered byte, every wrong binding fails), content
 * hashes, names, and the page-token and cursor codecs. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "services/memory_sync/model.h"

static int failures;

#define CHECK(cond)                                                            \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__,   \
                    #cond);                                                    \
            failures++;                                                        \
        }                                                                      \
    } while (0)

#define H(ms, l) (((uint64_t)(ms) << 16) | (l))

static void test_hlc(void)
{
    /* tick: the wall clock ahead resets the counter; behind, the counter runs */
    CHECK(ms_hlc_tick(0, 1000) == H(1000, 0));
    CHECK(ms_hlc_tick(H(1000, 0), 1000) == H(1000, 1));
    CHECK(ms_hlc_tick(H(1000, 5), 999) == H(1000, 6));
    CHECK(ms_hlc_tick(H(1000, 5), 1001) == H(1001, 0));
    /* a full counter carries into the physical part and stays ordered */
    CHECK(ms_hlc_tick(H(1000, 0xffff), 1000) == H(1001, 0));
    /* merge: past both the local clock and the remote stamp */
    CHECK(ms_hlc_merge(H(1000, 3), H(2000, 7), 1500) == H(2000, 8));
    CHECK(ms_hlc_merge(H(2000, 3), H(1000, 7), 1500) == H(2000, 4));
    CHECK(ms_hlc_merge(H(1000, 3), H(1000, 9), 3000) == H(3000, 0));
    CHECK(ms_hlc_merge(H(1000, 9), H(1000, 9), 10) == H(1000, 10));
    CHECK(ms_hlc_merge(0, 0, 0) == 1);

    ms_hlc c;
    ms_hlc_init(&c);
    uint64_t a = ms_hlc_now(&c), b = ms_hlc_now(&c);
    CHECK(b > a);
    uint64_t far = H(MS_HLC_PHYS_MS(b) + 60000, 42);
    CHECK(ms_hlc_observe(&c, far) == far + 1);
    CHECK(ms_hlc_now(&c) == far + 2);
    ms_hlc_destroy(&c);
}

typedef struct hlc_thread {
    ms_hlc *c;
    uint64_t seen[2000];
} hlc_thread;

static void *hlc_worker(void *arg)
{
    hlc_thread *t = arg;
    for (size_t i = 0; i < 2000; i++)
        t->seen[i] = i % 2 ? ms_hlc_now(t->c) : ms_hlc_observe(t->c, i);
    return NULL;
}

/* Four threads share a clock: every timestamp is unique and each thread's
 * sequence increases. */
static void test_hlc_threads(void)
{
    ms_hlc c;
    pthread_t th[4];
    static hlc_thread ts[4];
    ms_hlc_init(&c);
    for (int i = 0; i < 4; i++) {
        ts[i].c = &c;
        pthread_create(&th[i], NULL, hlc_worker, &ts[i]);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    uint64_t *all = malloc(sizeof(uint64_t) * 8000);
    size_t n = 0;
    for (int i = 0; i < 4; i++)
        for (size_t j = 0; j < 2000; j++) {
            if (j)
                CHECK(ts[i].seen[j] > ts[i].seen[j - 1]);
            all[n++] = ts[i].seen[j];
        }
    for (size_t i = 1; i < n; i++)
        for (size_t j = i; j > 0 && all[j - 1] > all[j]; j--) {
            uint64_t t = all[j];
            all[j] = all[j - 1];
            all[j - 1] = t;
        }
    for (size_t i = 1; i < n; i++)
        CHECK(all[i] != all[i - 1]);
    free(all);
    ms_hlc_destroy(&c);
}

/* Every strategy against every ordering of (hlc, replica rank). */
static void test_resolve_table(void)
{
    static const char *order[] = {"alpha", "beta"};
    enum { S = MS_SERVER_WON, C = MS_CLIENT_WON, K = MS_KEPT_BOTH };
    static const struct {
        int strategy;
        uint64_t s_hlc;
        const char *s_rep;
        uint64_t c_hlc;
        const char *c_rep;
        int want;
    } cases[] = {
        /* LAST_WRITER_WINS: hlc, then replica id, a full tie to the server */
        {MS_LAST_WRITER_WINS, 5, "a", 7, "b", C},
        {MS_LAST_WRITER_WINS, 7, "a", 5, "b", S},
        {MS_LAST_WRITER_WINS, 7, "a", 7, "b", C},
        {MS_LAST_WRITER_WINS, 7, "b", 7, "a", S},
        {MS_LAST_WRITER_WINS, 7, "a", 7, "a", S},
        {MS_LAST_WRITER_WINS, 0, "", 1, "", C},
        /* unknown strategies behave as LAST_WRITER_WINS */
        {MS_STRATEGY_UNSPECIFIED, 5, "a", 7, "b", C},
        {99, 7, "a", 5, "b", S},
        /* SOURCE_PRIORITY: rank first, whatever the clocks say */
        {MS_SOURCE_PRIORITY, 9, "beta", 1, "alpha", C},
        {MS_SOURCE_PRIORITY, 1, "alpha", 9, "beta", S},
        {MS_SOURCE_PRIORITY, 1, "zeta", 0, "beta", C},
        {MS_SOURCE_PRIORITY, 1, "beta", 9, "zeta", S},
        {MS_SOURCE_PRIORITY, 1, "alpha", 9, "zeta", S},
        /* equal ranks (same or both unlisted) fall back to LWW */
        {MS_SOURCE_PRIORITY, 1, "alpha", 9, "alpha", C},
        {MS_SOURCE_PRIORITY, 9, "alpha", 1, "alpha", S},
        {MS_SOURCE_PRIORITY, 1, "x", 9, "y", C},
        {MS_SOURCE_PRIORITY, 9, "x", 1, "y", S},
        {MS_SOURCE_PRIORITY, 5, "x", 5, "y", C},
        {MS_SOURCE_PRIORITY, 5, "y", 5, "x", S},
        /* KEEP_BOTH: always both */
        {MS_KEEP_BOTH, 5, "a", 7, "b", K},
        {MS_KEEP_BOTH, 7, "a", 5, "b", K},
        {MS_KEEP_BOTH, 7, "a", 7, "a", K},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ms_stamp s = {cases[i].s_hlc, cases[i].s_rep};
        ms_stamp c = {cases[i].c_hlc, cases[i].c_rep};
        int got = ms_resolve(cases[i].strategy, &s, &c, order, 2);
        if (got != cases[i].want) {
            fprintf(stderr, "resolve case %zu: got %d want %d\n", i, got,
                    cases[i].want);
            failures++;
        }
    }
    /* SOURCE_PRIORITY without an order is LWW */
    ms_stamp s = {9, "alpha"}, c = {1, "beta"};
    CHECK(ms_resolve(MS_SOURCE_PRIORITY, &s, &c, NULL, 0) == MS_SERVER_WON);
}

static void test_rules(void)
{
    ms_rules *r = NULL;
    const char *const *order;
    size_t n;
    char err[200];
    CHECK(ms_rules_parse("team-*=SOURCE_PRIORITY,order=lead|dev|bot;"
                         "scratch.*=keep_both;*=LAST_WRITER_WINS",
                         &r, err, sizeof err) == 0);
    CHECK(ms_rules_match(r, "team-a", &order, &n) == MS_SOURCE_PRIORITY);
    CHECK(n == 3 && strcmp(order[0], "lead") == 0 && strcmp(order[2], "bot") == 0);
    CHECK(ms_rules_match(r, "scratch.x", &order, &n) == MS_KEEP_BOTH && n == 0);
    CHECK(ms_rules_match(r, "other", &order, &n) == MS_LAST_WRITER_WINS);
    ms_rules_free(r);
    r = NULL;
    CHECK(ms_rules_parse("", &r, err, sizeof err) == 0);
    CHECK(ms_rules_match(r, "x", &order, &n) == MS_STRATEGY_UNSPECIFIED);
    ms_rules_free(r);
    static const char *bad[] = {"x", "=KEEP_BOTH", "a=NOPE", "a=KEEP_BOTH,o=1",
                                "a=SOURCE_PRIORITY,order=", "a=KEEP_BOTH,order=x||y"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        r = NULL;
        CHECK(ms_rules_parse(bad[i], &r, err, sizeof err) == -2 && r == NULL);
    }
    CHECK(ms_strategy_parse("KEEP_BOTH", 9) == MS_KEEP_BOTH);
    CHECK(strcmp(ms_strategy_name(MS_SOURCE_PRIORITY), "SOURCE_PRIORITY") == 0);
}

static void test_seal(void)
{
    ms_ns_key k, other;
    uint8_t *sealed = NULL, *pt = NULL;
    size_t sl = 0, pl = 0;
    const char value[] = "the secret plan: 42";
    ms_seal_ctx w = {"team-a", "plan", 4, 3, 1};

    CHECK(ms_key_generate(&k) == 0 && ms_key_generate(&other) == 0);
    CHECK(memcmp(k.bytes, other.bytes, MS_NS_KEY_SIZE) != 0);
    CHECK(ms_seal(&k, &w, value, strlen(value), &sealed, &sl) == 0);
    CHECK(sl == strlen(value) + MS_SEAL_OVERHEAD);
    CHECK(memmem(sealed, sl, "secret", 6) == NULL);
    CHECK(ms_unseal(&k, &w, sealed, sl, &pt, &pl) == 0);
    CHECK(pl == strlen(value) && memcmp(pt, value, pl) == 0);
    free(pt);
    /* every flipped bit of nonce, ciphertext and tag is detected */
    for (size_t i = 0; i < sl; i++) {
        sealed[i] ^= 0x01;
        pt = NULL;
        CHECK(ms_unseal(&k, &w, sealed, sl, &pt, &pl) == -2 && pt == NULL);
        sealed[i] ^= 0x01;
    }
    /* truncated, wrong key, wrong namespace / key / version / generation */
    CHECK(ms_unseal(&k, &w, sealed, sl - 1, &pt, &pl) == -2);
    CHECK(ms_unseal(&k, &w, sealed, MS_SEAL_OVERHEAD - 1, &pt, &pl) == -2);
    CHECK(ms_unseal(&other, &w, sealed, sl, &pt, &pl) == -2);
    ms_seal_ctx bad[] = {{"team-b", "plan", 4, 3, 1},
                         {"team-a", "plam", 4, 3, 1},
                         {"team-a", "plan", 4, 4, 1},
                         {"team-a", "plan", 4, 3, 2}};
    for (size_t i = 0; i < 4; i++)
        CHECK(ms_unseal(&k, &bad[i], sealed, sl, &pt, &pl) == -2);
    /* two seals of one value differ (random nonce) */
    uint8_t *again = NULL;
    size_t al = 0;
    CHECK(ms_seal(&k, &w, value, strlen(value), &again, &al) == 0);
    CHECK(al == sl && memcmp(again, sealed, sl) != 0);
    free(again);
    free(sealed);
    /* the empty value */
    CHECK(ms_seal(&k, &w, NULL, 0, &sealed, &sl) == 0 && sl == MS_SEAL_OVERHEAD);
    CHECK(ms_unseal(&k, &w, sealed, sl, &pt, &pl) == 0 && pl == 0 && pt);
    free(pt);
    free(sealed);
    /* content hash: keyed, deterministic */
    uint8_t h1[MS_HASH_SIZE], h2[MS_HASH_SIZE], h3[MS_HASH_SIZE];
    CHECK(ms_content_hash(&k, "v", 1, h1) == 0 && ms_content_hash(&k, "v", 1, h2) == 0);
    CHECK(ms_content_hash(&other, "v", 1, h3) == 0);
    CHECK(memcmp(h1, h2, MS_HASH_SIZE) == 0 && memcmp(h1, h3, MS_HASH_SIZE) != 0);
    /* It is HMAC-SHA256 under the key's second half, and one ms_mac keyed
     * once gives the same hash for each of many values, empty ones too. */
    const char *vals[] = {"v", "", "a longer value, longer than a block of "
                          "SHA-256, which is sixty-four bytes long", "v", ""};
    ms_mac m;
    CHECK(ms_mac_open(&m, &k) == 0);
    for (size_t i = 0; i < 5; i++) {
        size_t n = strlen(vals[i]);
        unsigned hl = 0;
        uint8_t want[MS_HASH_SIZE], one[MS_HASH_SIZE], many[MS_HASH_SIZE];
        CHECK(HMAC(EVP_sha256(), k.bytes + 32, 32, (const uint8_t *)vals[i], n,
                   want, &hl) && hl == MS_HASH_SIZE);
        CHECK(ms_content_hash(&k, vals[i], n, one) == 0);
        CHECK(ms_mac_hash(&m, vals[i], n, many) == 0);
        CHECK(memcmp(want, one, MS_HASH_SIZE) == 0);
        CHECK(memcmp(want, many, MS_HASH_SIZE) == 0);
        /* ms_sha256 (conflict ids) is SHA-256 itself. */
        uint8_t sha[32], ours[32];
        CHECK(SHA256((const uint8_t *)vals[i], n, sha) != NULL);
        CHECK(ms_sha256(vals[i], n, ours) == 0 && memcmp(sha, ours, 32) == 0);
    }
    ms_mac_close(&m);
    CHECK(m.ctx == NULL && ms_mac_hash(&m, "v", 1, h1) == -1);
    ms_mac_close(&m);
    ms_key_wipe(&k);
    static const uint8_t zero[MS_NS_KEY_SIZE];
    CHECK(memcmp(k.bytes, zero, sizeof zero) == 0);
}

static void test_names(void)
{
    CHECK(ms_namespace_valid("team-a.notes_1"));
    CHECK(!ms_namespace_valid(""));
    CHECK(!ms_namespace_valid("a/b"));
    CHECK(!ms_namespace_valid("a b"));
    char longns[MS_NS_MAX + 2];
    memset(longns, 'a', sizeof longns);
    longns[MS_NS_MAX] = '\0';
    CHECK(ms_namespace_valid(longns));
    longns[MS_NS_MAX] = 'a';
    longns[MS_NS_MAX + 1] = '\0';
    CHECK(!ms_namespace_valid(longns));
    CHECK(ms_utf8_valid("caf\xc3\xa9 \xf0\x9f\x98\x80", 10));
    CHECK(!ms_utf8_valid("\xc0\xaf", 2));          /* overlong */
    CHECK(!ms_utf8_valid("\xed\xa0\x80", 3));      /* surrogate */
    CHECK(!ms_utf8_valid("\xf4\x90\x80\x80", 4));  /* above U+10FFFF */
    CHECK(!ms_utf8_valid("a\0b", 3));
    CHECK(!ms_utf8_valid("\xe2\x82", 2));          /* truncated */
}

static void test_tokens(void)
{
    char text[MS_TOKEN_TEXT_MAX], key[MS_KEY_MAX];
    size_t n = 0;
    CHECK(ms_page_token_encode("ns", "k/1", 3, text) == 0);
    CHECK(ms_page_token_decode("ns", text, key, &n) == 0 && n == 3 &&
          memcmp(key, "k/1", 3) == 0);
    CHECK(ms_page_token_decode("other", text, key, &n) == -1);
    CHECK(ms_page_token_decode("ns", "", key, &n) == -1);
    CHECK(ms_page_token_decode("ns", "!!!!", key, &n) == -1);
    char longkey[MS_KEY_MAX];
    memset(longkey, 0xff, sizeof longkey);
    CHECK(ms_page_token_encode("ns", longkey, MS_KEY_MAX, text) == 0);
    CHECK(ms_page_token_decode("ns", text, key, &n) == 0 && n == MS_KEY_MAX);
    CHECK(ms_page_token_encode("ns", longkey, MS_KEY_MAX + 1, text) == -1);
    CHECK(ms_page_token_encode("ns", longkey, 0, text) == -1);

    char cur[MS_CURSOR_TEXT_MAX];
    ms_cursor c = {7, 123456789012ull, UINT64_MAX}, d;
    CHECK(ms_cursor_encode("ns", &c, cur) == 0);
    CHECK(ms_cursor_decode("ns", cur, &d) == 0 && d.generation == 7 &&
          d.next_version == c.next_version && d.position == UINT64_MAX);
    CHECK(ms_cursor_decode("nt", cur, &d) == -1);
    CHECK(ms_cursor_decode("ns", "", &d) == 0 && d.generation == 0 &&
          d.next_version == 0 && d.position == 0);
    CHECK(ms_cursor_decode("ns", text, &d) == -1); /* a page token */
    cur[3] = cur[3] == 'A' ? 'B' : 'A';
    CHECK(ms_cursor_decode("ns", cur, &d) == -1 || d.generation != 7 ||
          d.next_version != c.next_version);

    /* base64url: round trips of every length, canonical form only */
    uint8_t in[64], out[64];
    char b[100];
    for (size_t len = 0; len < sizeof in; len++) {
        for (size_t i = 0; i < len; i++)
            in[i] = (uint8_t)(i * 37 + len);
        size_t got = 0;
        CHECK(ms_b64url_encode(in, len, b, sizeof b) == 0);
        CHECK(ms_b64url_decode(b, strlen(b), out, sizeof out, &got) == 0 &&
              got == len && memcmp(in, out, len) == 0);
    }
    size_t got;
    CHECK(ms_b64url_decode("QQ", 2, out, sizeof out, &got) == 0 && got == 1);
    CHECK(ms_b64url_decode("QR", 2, out, sizeof out, &got) == -1);
    CHECK(ms_b64url_decode("Q", 1, out, sizeof out, &got) == -1);
    CHECK(ms_b64url_decode("QQ==", 4, out, sizeof out, &got) == -1);
    CHECK(ms_b64url_decode("QUJD", 4, out, 2, &got) == -1);
    CHECK(ms_b64url_encode(in, 3, b, 4) == -1);
}

int main(void)
{
    test_hlc();
    test_hlc_threads();
    test_resolve_table();
    test_rules();
    test_seal();
    test_names();
    test_tokens();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("memory-sync model: all checks passed\n");
    return 0;
}
