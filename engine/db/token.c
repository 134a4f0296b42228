/*
 * tok: generation, shape check and hashing of API tokens (see token.h).
 * SHA-256 without a salt is enough here: the input carries 256 random bits,
 * so neither a dictionary nor a rainbow table can reach it, and a plain
 * digest lets the server find a token by an indexed equality on its hash.
 */
#include "engine/db/token.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

_Static_assert(TOK_LEN == TOK_MAGIC_LEN + TOK_BODY_LEN, "token length");
_Static_assert(TOK_BODY_LEN == (TOK_RANDOM_BYTES * 8 + 5) / 6, "base64url length");
_Static_assert(TOK_PREFIX_LEN > TOK_MAGIC_LEN && TOK_PREFIX_LEN < TOK_LEN, "prefix length");

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Fill buf with n random bytes; getrandom may be interrupted before the pool is ready. */
static int fill_random(uint8_t *buf, size_t n)
{
    size_t got = 0;

    while (got < n) {
        ssize_t r = getrandom(buf + got, n - got, 0);

        if (r < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        got += (size_t)r;
    }
    return 0;
}

/* Unpadded base64url of in[0..n) into out; returns the characters written. */
static size_t encode(const uint8_t *in, size_t n, char *out)
{
    size_t o = 0;
    size_t i;

    for (i = 0; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

        out[o++] = b64url[v >> 18 & 63];
        out[o++] = b64url[v >> 12 & 63];
        out[o++] = b64url[v >> 6 & 63];
        out[o++] = b64url[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;

        out[o++] = b64url[v >> 18 & 63];
        out[o++] = b64url[v >> 12 & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;

        out[o++] = b64url[v >> 18 & 63];
        out[o++] = b64url[v >> 12 & 63];
        out[o++] = b64url[v >> 6 & 63];
    }
    return o;
}

int tok_new(char out[TOK_LEN + 1])
{
    uint8_t raw[TOK_RANDOM_BYTES];
    size_t n;
    int rc;

    rc = fill_random(raw, sizeof(raw));
    if (rc < 0)
        goto out_wipe;
    memcpy(out, TOK_MAGIC, TOK_MAGIC_LEN);
    n = encode(raw, sizeof(raw), out + TOK_MAGIC_LEN);
    out[TOK_MAGIC_LEN + n] = '\0';
out_wipe:
    /* The raw bytes are the secret itself; don't leave them on the stack. */
    OPENSSL_cleanse(raw, sizeof(raw));
    return rc;
}

static bool is_b64url(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
           ch == '-' || ch == '_';
}

bool tok_wellformed(const char *s, size_t len)
{
    size_t i;

    if (len != TOK_LEN || memcmp(s, TOK_MAGIC, TOK_MAGIC_LEN) != 0)
        return false;
    for (i = TOK_MAGIC_LEN; i < len; i++)
        if (!is_b64url(s[i]))
            return false;
    return true;
}

void tok_hash(const char *s, size_t len, uint8_t out[TOK_HASH_LEN])
{
    unsigned int n = 0;

    /* Only a broken OpenSSL installation fails here; no caller could recover. */
    if (EVP_Digest(s, len, out, &n, EVP_sha256(), NULL) != 1 || n != TOK_HASH_LEN)
        abort();
}

void tok_prefix(const char *tok, char out[TOK_PREFIX_LEN + 1])
{
    memcpy(out, tok, TOK_PREFIX_LEN);
    out[TOK_PREFIX_LEN] = '\0';
}

bool tok_hash_equal(const uint8_t a[TOK_HASH_LEN], const uint8_t b[TOK_HASH_LEN])
{
    return CRYPTO_memcmp(a, b, TOK_HASH_LEN) == 0;
}
