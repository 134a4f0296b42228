/*
 * store: where uploaded bytes live. Files are created nameless (O_TMPFILE) in
 * STORAGE_DIR and linked to objects/ab/cd/<id> only when complete, so a crash
 * never leaves a partial file under a final name. The ids are UUIDv7 (RFC 9562:
 * a millisecond timestamp, then 74 random bits), never derived from client input:
 * unguessable, and in time order, so the primary-key index grows at its right edge
 * instead of at random pages.
 *
 * The shard ab is the id's last two hex digits (random); cd is bits 12-19 of its
 * timestamp (hex digits 7 and 9 of the id), a new value every 4.1 s. At any moment
 * uploads spread over 256 directories, not 65,536: each journal transaction of the
 * filesystem then dirties a few hundred directory and inode-table blocks instead of
 * one or two per file (on ext4 those filled a transaction every 0.9 s, and every
 * file operation stalled behind its commit). Over 17.5 minutes every shard gets
 * its share.
 */
#ifndef ENGINE_STORE_STORE_H
#define ENGINE_STORE_STORE_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/core/cfg.h"

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

/*
 * Whether linkat(fd, "", ..., AT_EMPTY_PATH) works here: it needs
 * CAP_DAC_READ_SEARCH. store_init() tries it once; without it, files are linked
 * through their /proc/self/fd path.
 */
bool store_flink(void);

/* A fresh id (UUIDv7). */
void store_new_id(char out[STORE_ID_LEN + 1]);

/* The object's path relative to STORAGE_DIR, and its two shard directories. */
void store_key(const char *id, char out[STORE_KEY_MAX]);
void store_shard_dirs(const char *id, char top[16], char sub[16]);

/*
 * Remove an object's name (key as from store_key()): for error paths, a
 * metadata syscall on the calling thread. 0 or -errno.
 */
int store_unlink(const char *key);

/*
 * Whether an upload of need bytes fits while keeping the floor free:
 * STORE_RESERVE, or 5 % of the filesystem when that is smaller (small disks).
 * True when the space cannot be read (the write itself will tell).
 */
bool store_fits(uint64_t need);

#endif /* ENGINE_STORE_STORE_H */
