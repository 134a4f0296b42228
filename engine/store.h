/*
 * store: where uploaded bytes live. Files are created nameless (O_TMPFILE) in
 * STORAGE_DIR and linked to objects/ab/cd/<id> only when complete, so a crash
 * never leaves a partial file under a final name. The ids are random UUIDs
 * (122 random bits), never derived from client input.
 */
#ifndef ENGINE_STORE_H
#define ENGINE_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/cfg.h"

#define STORE_ID_LEN 36             /* UUID text */
#define STORE_KEY_MAX 64            /* "objects/ab/cd/<id>" with its NUL */
#define STORE_RESERVE (16ull << 20) /* free bytes kept beyond an upload (at most 5 % of the fs) */

/* Create STORAGE_DIR and objects/ if missing, open the directory. Main thread. 0 or -errno. */
int store_init(const struct cfg *c);

/*
 * Create every shard directory (objects/00/00 .. objects/ff/ff) that is missing,
 * so no upload pays for a first-use mkdir. After store_init(). Returns the number
 * created, or -errno.
 */
long store_init_shards(void);

/* The storage directory (an O_DIRECTORY descriptor, for the *at calls). */
int store_dirfd(void);

/* A fresh random id. */
void store_new_id(char out[STORE_ID_LEN + 1]);

/* The object's path relative to STORAGE_DIR, and its two shard directories. */
void store_key(const char *id, char out[STORE_KEY_MAX]);
void store_shard_dirs(const char *id, char top[16], char sub[16]);

/*
 * Whether an upload of need bytes fits while keeping the floor free:
 * STORE_RESERVE, or 5 % of the filesystem when that is smaller (small disks).
 * True when the space cannot be read (the write itself will tell).
 */
bool store_fits(uint64_t need);

#endif /* ENGINE_STORE_H */
