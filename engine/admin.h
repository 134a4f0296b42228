/*
 * admin: the operator commands `ringup migrate`, `ringup token create` and
 * `ringup token revoke`. They run on the main thread before (or instead of)
 * the workers and use blocking libpq, which is fine for a one-shot command
 * and keeps them apart from the event loop. Each prints its own result and
 * its own one-line errors, so main() only maps the return code to an exit
 * status.
 */
#ifndef ENGINE_ADMIN_H
#define ENGINE_ADMIN_H

#include <stddef.h>

#include "engine/cfg.h"

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

#endif /* ENGINE_ADMIN_H */
