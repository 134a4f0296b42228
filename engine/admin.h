/*
 * admin: the operator commands `ringup migrate`, `ringup token create`,
 * `ringup token revoke` and `ringup fsck`. They run on the main thread
 * before (or instead of) the workers and use blocking libpq, which is fine
 * for a one-shot command and keeps them apart from the event loop. Each
 * prints its own result and its own one-line errors, so main() only maps
 * the return code to an exit status.
 */
#ifndef ENGINE_ADMIN_H
#define ENGINE_ADMIN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/core/cfg.h"

#define ADMIN_USER_MAX 64           /* longest user name accepted by token create */
#define ADMIN_ANONYMOUS "anonymous" /* owner of ALLOW_ANONYMOUS uploads; no token's user */

/* One schema migration, compiled in from engine/sql/NNNN_name.sql by tools/embed-sql. */
struct admin_migration {
    int version;      /* NNNN: applied in rising order, recorded in schema_migrations */
    const char *name; /* file name without .sql, recorded next to the version */
    const char *sql;  /* the whole file, run as one simple query inside a transaction */
};

/* Every migration, versions rising; defined in the generated migrations.c. */
extern const struct admin_migration admin_migrations[];
extern const size_t admin_migration_count;

/*
 * Bring the schema of c->database_url up to the newest compiled-in version:
 * each missing migration runs in its own transaction under an advisory lock,
 * so concurrent runs are safe and a second run applies nothing. Prints one
 * line per applied migration and a summary on stdout. Returns 0, or a
 * negative errno after printing one line on stderr.
 */
int admin_migrate(const struct cfg *c);

/*
 * Create a token for user and store its hash. Prints the token alone on the
 * first line of stdout, a note on stderr. Returns 0, -EINVAL for a bad or
 * reserved (ADMIN_ANONYMOUS, any case) user name (nothing stored), or another
 * negative errno; errors print one line.
 */
int admin_token_create(const struct cfg *c, const char *user);

/*
 * Revoke the unrevoked token given whole, or named by its TOK_PREFIX_LEN
 * character prefix. Returns 0, -EINVAL when arg is neither, -ENOENT when
 * nothing matches, -ENOTUNIQ when a prefix names several tokens, or another
 * negative errno; errors print one line.
 */
int admin_token_revoke(const struct cfg *c, const char *arg);

#define ADMIN_FSCK_GRACE 3600          /* default --grace, seconds */
#define ADMIN_FSCK_GRACE_MAX 315360000 /* largest --grace: ten years */

/* Exit statuses of `ringup fsck` (main.c maps admin_fsck()'s outcome to them). */
enum admin_fsck_exit {
    ADMIN_FSCK_CLEAN = 0,  /* nothing found */
    ADMIN_FSCK_FOUND = 1,  /* findings; with --repair, every one repaired */
    ADMIN_FSCK_USAGE = 2,  /* bad arguments or settings; nothing checked */
    ADMIN_FSCK_FAILED = 3, /* the check did not finish, or some entries could not be read */
    ADMIN_FSCK_LEFT = 4,   /* --repair left findings (leftovers, a failed unlink) */
};

/* Options and outcome of one fsck run. */
struct admin_fsck {
    bool repair;        /* in: remove orphans, mark rows with bad bytes failed */
    uint32_t grace;     /* in: seconds an object without a row counts as in flight */
    uint64_t rows;      /* rows read */
    uint64_t objects;   /* object files (well-named, in their shard) walked */
    uint64_t findings;  /* sum of the six kinds below */
    uint64_t orphan;    /* objects older than grace without a row */
    uint64_t missing;   /* rows whose bytes are absent (or not a regular file) */
    uint64_t size;      /* rows whose file has another size */
    uint64_t badkey;    /* rows whose storage_key is not their id's key; never repaired */
    uint64_t misplaced; /* object names in another id's shard; never repaired */
    uint64_t unknown;   /* other entries under objects/; never repaired */
    uint64_t young;     /* objects without a row, younger than grace: skipped */
    uint64_t uploading; /* rows still uploading (bytes elsewhere): skipped */
    uint64_t marked;    /* rows marked failed by an earlier fsck, still bad: skipped */
    uint64_t repaired;  /* findings repaired (orphans removed, rows marked failed) */
    uint64_t errors;    /* entries that could not be read (printed on stderr) */
};

/*
 * ringup fsck: check every row of files against its bytes (a regular file
 * at objects/ab/cd/<id> of the row's size) and every entry under objects/
 * against a row, printing one line per finding and a summary on stdout.
 * Rows are read in keyset pages and objects looked up in batches, so memory
 * stays flat. With f->repair: orphans older than f->grace are unlinked, and
 * rows whose bytes are missing or of the wrong size are marked failed (their
 * bytes are never touched); leftovers are only reported. Fill f->repair and
 * f->grace; the counts are set here. Returns 0 when the whole tree and table
 * were checked, else a negative errno after one line on stderr (-ENOENT and
 * friends: STORAGE_DIR or objects/ unusable, -ENOTCONN, -EIO: a query
 * failed, or entries could not be read). Main thread, blocking.
 */
int admin_fsck(const struct cfg *c, struct admin_fsck *f);

#endif /* ENGINE_ADMIN_H */
