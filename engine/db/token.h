/*
 * tok: API tokens. A token is "rgu_" followed by 43 base64url characters
 * (256 random bits, no padding). The database keeps only its SHA-256 and its
 * first TOK_PREFIX_LEN characters, so a stolen table grants nothing and an
 * operator can still name a token. Pure code apart from tok_new()'s
 * getrandom(2); any thread may call any function.
 */
#ifndef ENGINE_DB_TOKEN_H
#define ENGINE_DB_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOK_MAGIC "rgu_"    /* every token starts with this */
#define TOK_MAGIC_LEN 4     /* strlen(TOK_MAGIC) */
#define TOK_RANDOM_BYTES 32 /* 256 bits of entropy per token */
#define TOK_BODY_LEN 43     /* base64url of TOK_RANDOM_BYTES, unpadded */
#define TOK_LEN 47          /* TOK_MAGIC_LEN + TOK_BODY_LEN */
#define TOK_PREFIX_LEN 12   /* the public part stored next to the hash */
#define TOK_HASH_LEN 32     /* SHA-256 */

/*
 * Write a new token and its NUL into out. Returns 0, or the negative errno of
 * getrandom(2) (-ENOSYS on a kernel without it); out is then unspecified.
 */
int tok_new(char out[TOK_LEN + 1]);

/* Is s[0..len) shaped like a token: TOK_MAGIC, TOK_LEN bytes, base64url body? */
bool tok_wellformed(const char *s, size_t len);

/*
 * SHA-256 of s[0..len) into out. The input need not be well-formed, so a
 * caller can hash what a client sent and find no match. Aborts only if
 * OpenSSL cannot compute SHA-256 at all.
 */
void tok_hash(const char *s, size_t len, uint8_t out[TOK_HASH_LEN]);

/* The first TOK_PREFIX_LEN characters of tok (which holds at least that many) and a NUL. */
void tok_prefix(const char *tok, char out[TOK_PREFIX_LEN + 1]);

/* Compare two hashes in time independent of where they differ. */
bool tok_hash_equal(const uint8_t a[TOK_HASH_LEN], const uint8_t b[TOK_HASH_LEN]);

#endif /* ENGINE_DB_TOKEN_H */
