/*
 * digest: a running FNV-1a hash, for fuzz targets that tell the story of a
 * run as one number and compare the whole run with the cut one.
 */
#ifndef TESTS_FUZZ_DIGEST_H
#define TESTS_FUZZ_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#define DIGEST_INIT 0xcbf29ce484222325ULL /* FNV-1a offset basis */

static inline uint64_t digest_add(uint64_t h, const void *p, size_t n)
{
    const unsigned char *c = p;
    size_t i;

    for (i = 0; i < n; i++) {
        h ^= c[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

#endif /* TESTS_FUZZ_DIGEST_H */
