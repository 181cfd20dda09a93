/* Sealing memory values with the namespace key: AES-256-GCM (OpenSSL EVP)
 * with a random 96-bit nonce per value and additional data that binds the
 * value to its namespace, key, version and key generation; and the
 * HMAC-SHA256 content hash that events carry instead of the value. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/rand.h>

#include "services/memory_sync/model.h"

#define AAD_LABEL "agentmesh.memory.v1"
#define AAD_MAX (sizeof AAD_LABEL + MS_NS_MAX + 1 + MS_KEY_MAX + 1 + 12)

/* label \0 ns \0 key \0 version(8, big-endian) generation(4, big-endian):
 * neither namespaces nor keys hold NUL, so the encoding is unambiguous. */
static int build_aad(const ms_seal_ctx *w, uint8_t *aad, size_t *len)
{
    size_t ns_len = strlen(w->ns), at = 0;
    if (ns_len > MS_NS_MAX || w->key_len > MS_KEY_MAX)
        return -1;
    memcpy(aad, AAD_LABEL, sizeof AAD_LABEL);
    at = sizeof AAD_LABEL;
    memcpy(aad + at, w->ns, ns_len);
    at += ns_len;
    aad[at++] = 0;
    memcpy(aad + at, w->key, w->key_len);
    at += w->key_len;
    aad[at++] = 0;
    for (int i = 7; i >= 0; i--)
        aad[at++] = (uint8_t)(w->version >> (8 * i));
    for (int i = 3; i >= 0; i--)
        aad[at++] = (uint8_t)(w->generation >> (8 * i));
    *len = at;
    return 0;
}

/* The cipher and MAC, fetched from the provider once: naming them per value
 * (EVP_aes_256_gcm(), HMAC()) fetches them again on every call, which cost
 * more than the sealing and hashing of a small value. */
static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;
static EVP_CIPHER *gcm;
static EVP_MAC *hmac;
static EVP_MD *sha256;

static void fetch(void)
{
    gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
    hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
    sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
}

int ms_sha256(const void *in, size_t n, uint8_t out[32])
{
    pthread_once(&fetch_once, fetch);
    return sha256 && EVP_Digest(in, n, out, NULL, sha256, NULL) == 1 ? 0 : -1;
}

static const EVP_CIPHER *cipher(void)
{
    pthread_once(&fetch_once, fetch);
    return gcm;
}

int ms_key_generate(ms_ns_key *k)
{
    return RAND_bytes(k->bytes, sizeof k->bytes) == 1 ? 0 : -1;
}

void ms_key_wipe(ms_ns_key *k) { OPENSSL_cleanse(k->bytes, sizeof k->bytes); }

int ms_seal(const ms_ns_key *k, const ms_seal_ctx *where, const void *pt,
            size_t n, uint8_t **out, size_t *out_len)
{
    uint8_t aad[AAD_MAX];
    size_t aad_len = 0;
    EVP_CIPHER_CTX *ctx = NULL;
    uint8_t *buf = NULL;
    int len = 0, rc = -1;

    if (n > (size_t)INT32_MAX - MS_SEAL_OVERHEAD || build_aad(where, aad, &aad_len))
        return -1;
    buf = malloc(n + MS_SEAL_OVERHEAD);
    ctx = EVP_CIPHER_CTX_new();
    if (!buf || !ctx || RAND_bytes(buf, MS_NONCE_SIZE) != 1)
        goto out;
    if (!cipher() ||
        EVP_EncryptInit_ex(ctx, cipher(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, MS_NONCE_SIZE, NULL) != 1 ||
        EVP_EncryptInit_ex(ctx, NULL, NULL, k->bytes, buf) != 1 ||
        EVP_EncryptUpdate(ctx, NULL, &len, aad, (int)aad_len) != 1)
        goto out;
    if (n > 0 &&
        EVP_EncryptUpdate(ctx, buf + MS_NONCE_SIZE, &len, pt, (int)n) != 1)
        goto out;
    if (EVP_EncryptFinal_ex(ctx, buf + MS_NONCE_SIZE + n, &len) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, MS_TAG_SIZE,
                            buf + MS_NONCE_SIZE + n) != 1)
        goto out;
    *out = buf;
    *out_len = n + MS_SEAL_OVERHEAD;
    buf = NULL;
    rc = 0;
out:
    EVP_CIPHER_CTX_free(ctx);
    free(buf);
    return rc;
}

int ms_unseal(const ms_ns_key *k, const ms_seal_ctx *where, const void *sealed,
              size_t n, uint8_t **out, size_t *out_len)
{
    uint8_t aad[AAD_MAX], tag[MS_TAG_SIZE];
    size_t aad_len = 0, pt_len;
    const uint8_t *s = sealed;
    EVP_CIPHER_CTX *ctx = NULL;
    uint8_t *buf = NULL;
    int len = 0, rc = -2;

    if (n < MS_SEAL_OVERHEAD || n > (size_t)INT32_MAX ||
        build_aad(where, aad, &aad_len))
        return -2;
    pt_len = n - MS_SEAL_OVERHEAD;
    memcpy(tag, s + n - MS_TAG_SIZE, MS_TAG_SIZE);
    buf = malloc(pt_len ? pt_len : 1);
    ctx = EVP_CIPHER_CTX_new();
    if (!buf || !ctx) {
        rc = -1;
        goto out;
    }
    if (!cipher() ||
        EVP_DecryptInit_ex(ctx, cipher(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, MS_NONCE_SIZE, NULL) != 1 ||
        EVP_DecryptInit_ex(ctx, NULL, NULL, k->bytes, s) != 1 ||
        EVP_DecryptUpdate(ctx, NULL, &len, aad, (int)aad_len) != 1)
        goto out;
    if (pt_len > 0 &&
        EVP_DecryptUpdate(ctx, buf, &len, s + MS_NONCE_SIZE, (int)pt_len) != 1)
        goto out;
    /* The tag check happens here; a failure leaves nothing usable. */
    if (EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, MS_TAG_SIZE, tag) != 1 ||
        EVP_DecryptFinal_ex(ctx, buf + pt_len, &len) != 1)
        goto out;
    *out = buf;
    *out_len = pt_len;
    buf = NULL;
    rc = 0;
out:
    EVP_CIPHER_CTX_free(ctx);
    if (buf) {
        OPENSSL_cleanse(buf, pt_len);
        free(buf);
    }
    return rc;
}

int ms_mac_open(ms_mac *m, const ms_ns_key *k)
{
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
        OSSL_PARAM_construct_end(),
    };
    pthread_once(&fetch_once, fetch);
    m->ctx = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
    /* The MAC half of the namespace key. */
    if (!m->ctx || EVP_MAC_init(m->ctx, k->bytes + 32, 32, params) != 1) {
        ms_mac_close(m);
        return -1;
    }
    m->fresh = true;
    return 0;
}

int ms_mac_hash(ms_mac *m, const void *v, size_t n, uint8_t out[MS_HASH_SIZE])
{
    size_t len = 0;
    /* After the first hash, a NULL key starts a new one under the same key. */
    if (!m->ctx || (!m->fresh && EVP_MAC_init(m->ctx, NULL, 0, NULL) != 1))
        return -1;
    m->fresh = false;
    if ((n && EVP_MAC_update(m->ctx, v, n) != 1) ||
        EVP_MAC_final(m->ctx, out, &len, MS_HASH_SIZE) != 1 ||
        len != MS_HASH_SIZE)
        return -1;
    return 0;
}

void ms_mac_close(ms_mac *m)
{
    EVP_MAC_CTX_free(m->ctx); /* cleanses the key it holds */
    m->ctx = NULL;
}

int ms_content_hash(const ms_ns_key *k, const void *v, size_t n,
                    uint8_t out[MS_HASH_SIZE])
{
    ms_mac m;
    if (ms_mac_open(&m, k))
        return -1;
    int rc = ms_mac_hash(&m, v, n, out);
    ms_mac_close(&m);
    return rc;
}
