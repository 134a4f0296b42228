/*
 * admin: `ringup migrate`, `ringup token create|revoke` and `ringup fsck`
 * (see admin.h).
 *
 * These are one-shot commands on the main thread, so they use blocking
 * libpq (PQexec and friends) rather than the workers' asynchronous layer:
 * there is no event loop to keep responsive, and straight-line code is
 * easier to read for something that runs once per deploy. Every failure is
 * reported where it is detected, as one line on stderr (libpq's multi-line
 * messages are folded), and the connection is closed on every path; closing
 * it also rolls back a transaction left open by an error.
 */
#include "engine/admin.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "engine/db/token.h"
#include "engine/store/store.h"

/*
 * Key of the advisory lock every migration transaction takes first: the
 * bytes "ringup\0\1" read as a bigint. Any fixed number works as long as
 * nothing else in the database uses it; a transaction-level lock is released
 * by COMMIT or ROLLBACK, and by the server if the client dies.
 */
#define MIGRATE_LOCK "SELECT pg_advisory_xact_lock(8244241983509364737)"

#define SQLSTATE_UNDEFINED_TABLE "42P01"

/* Print msg with every run of blanks and newlines folded into one space, trimmed. */
static void put_folded(FILE *out, const char *msg)
{
    bool space = false;
    bool any = false;
    const char *p;

    for (p = msg; *p != '\0'; p++) {
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r') {
            space = any;
            continue;
        }
        if (space)
            fputc(' ', out);
        fputc(*p, out);
        space = false;
        any = true;
    }
}

/*
 * Print the connection target of url the way libpq reads it, with the
 * password hidden, so an error can say where it tried without leaking the
 * secret. Prints nothing when libpq cannot parse url (its own error says so).
 */
static void put_target(FILE *out, const char *url)
{
    PQconninfoOption *opts;
    PQconninfoOption *o;
    char *errmsg = NULL;
    bool first = true;

    opts = PQconninfoParse(url, &errmsg);
    if (opts == NULL) {
        PQfreemem(errmsg);
        return;
    }
    fputs(" (", out);
    for (o = opts; o->keyword != NULL; o++) {
        if (o->val == NULL || o->val[0] == '\0')
            continue;
        fprintf(out, "%s%s=", first ? "" : " ", o->keyword);
        if (strcmp(o->keyword, "password") == 0)
            fputs("***", out);
        else
            put_folded(out, o->val);
        first = false;
    }
    fputs(")", out);
    PQconninfoFree(opts);
}

/* One error line for a failed statement: its primary message and SQLSTATE. */
static void put_result_error(const char *cmd, const char *what, PGconn *db, const PGresult *res)
{
    const char *primary = res != NULL ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    const char *state = res != NULL ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

    fprintf(stderr, "ringup %s: %s failed: ", cmd, what);
    if (primary != NULL)
        put_folded(stderr, primary);
    else if (res != NULL && PQresultErrorMessage(res)[0] != '\0')
        put_folded(stderr, PQresultErrorMessage(res));
    else
        put_folded(stderr, PQerrorMessage(db));
    if (state != NULL)
        fprintf(stderr, " (SQLSTATE %s)", state);
    fputc('\n', stderr);
}

/*
 * Open a blocking connection to DATABASE_URL with DB_CONNECTION_TIMEOUT and
 * quiet notices (CREATE ... IF NOT EXISTS would otherwise print to stderr).
 * Returns the connection, or NULL after one error line naming the target.
 */
static PGconn *connect_db(const struct cfg *c, const char *cmd)
{
    /* Keywords before dbname are defaults that the URL itself may override. */
    static const char *const keys[] = {"connect_timeout", "fallback_application_name", "dbname",
                                       NULL};
    const char *vals[4];
    char timeout[16];
    PGconn *db;
    PGresult *res;

    snprintf(timeout, sizeof(timeout), "%" PRIu32, (c->db_connection_timeout + 999) / 1000);
    vals[0] = timeout;
    vals[1] = "ringup";
    vals[2] = c->database_url;
    vals[3] = NULL;
    db = PQconnectdbParams(keys, vals, 1);
    if (db == NULL || PQstatus(db) != CONNECTION_OK) {
        fprintf(stderr, "ringup %s: cannot connect to DATABASE_URL", cmd);
        put_target(stderr, c->database_url);
        fputs(": ", stderr);
        put_folded(stderr, db != NULL ? PQerrorMessage(db) : "out of memory");
        fputc('\n', stderr);
        goto out_finish;
    }
    res = PQexec(db, "SET client_min_messages = warning");
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        put_result_error(cmd, "SET client_min_messages", db, res);
        PQclear(res);
        goto out_finish;
    }
    PQclear(res);
    return db;

out_finish:
    PQfinish(db);
    return NULL;
}

/*
 * Run sql with text parameters (binary where fmts says so). Returns the
 * result when its status is COMMAND_OK or TUPLES_OK (caller clears it), else
 * NULL after one error line about what.
 */
static PGresult *query(PGconn *db, const char *cmd, const char *what, const char *sql, int n,
                       const char *const *vals, const int *lens, const int *fmts)
{
    PGresult *res;

    if (n == 0)
        res = PQexec(db, sql);
    else
        res = PQexecParams(db, sql, n, NULL, vals, lens, fmts, 0);
    if (PQresultStatus(res) == PGRES_COMMAND_OK || PQresultStatus(res) == PGRES_TUPLES_OK)
        return res;
    put_result_error(cmd, what, db, res);
    PQclear(res);
    return NULL;
}

/* Run a statement whose result is not needed. Returns 0 or -EIO (error printed). */
static int exec(PGconn *db, const char *cmd, const char *what, const char *sql)
{
    PGresult *res = query(db, cmd, what, sql, 0, NULL, NULL, NULL);

    if (res == NULL)
        return -EIO;
    PQclear(res);
    return 0;
}

/* Give up an open transaction; the error that led here has been printed already. */
static void rollback(PGconn *db)
{
    PQclear(PQexec(db, "ROLLBACK"));
}

/* BEGIN, then wait for the migration lock. Returns 0 or -EIO (error printed). */
static int begin_locked(PGconn *db)
{
    int rc;

    rc = exec(db, "migrate", "BEGIN", "BEGIN");
    if (rc < 0)
        return rc;
    rc = exec(db, "migrate", "taking the migration lock", MIGRATE_LOCK);
    if (rc < 0)
        rollback(db);
    return rc;
}

/* Is version in schema_migrations? Returns 1, 0, or -EIO (error printed). */
static int is_applied(PGconn *db, int version)
{
    char v[16];
    const char *vals[1] = {v};
    PGresult *res;
    int found;

    snprintf(v, sizeof(v), "%d", version);
    res = query(db, "migrate", "reading schema_migrations",
                "SELECT 1 FROM schema_migrations WHERE version = $1", 1, vals, NULL, NULL);
    if (res == NULL)
        return -EIO;
    found = PQntuples(res) > 0;
    PQclear(res);
    return found;
}

/*
 * Apply m in its own transaction unless another process did it first.
 * Returns 1 when applied here, 0 when already there, -EIO (error printed).
 */
static int apply(PGconn *db, const struct admin_migration *m)
{
    char v[16];
    const char *vals[2] = {v, m->name};
    char what[160];
    PGresult *res;
    int rc;

    rc = begin_locked(db);
    if (rc < 0)
        return rc;
    /* Checked again under the lock: a concurrent migrate may have applied it meanwhile. */
    rc = is_applied(db, m->version);
    if (rc != 0)
        goto out_rollback;
    snprintf(what, sizeof(what), "migration %s", m->name);
    rc = exec(db, "migrate", what, m->sql);
    if (rc < 0)
        goto out_rollback;
    snprintf(v, sizeof(v), "%d", m->version);
    res =
        query(db, "migrate", "recording the migration",
              "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 2, vals, NULL, NULL);
    if (res == NULL) {
        rc = -EIO;
        goto out_rollback;
    }
    PQclear(res);
    rc = exec(db, "migrate", "COMMIT", "COMMIT");
    if (rc < 0)
        return rc;
    printf("migrate: applied version %d (%s)\n", m->version, m->name);
    return 1;

out_rollback:
    rollback(db);
    return rc < 0 ? rc : 0;
}

/* Highest version recorded, or -EIO (error printed). */
static int64_t schema_version(PGconn *db)
{
    PGresult *res;
    int64_t v;

    res = query(db, "migrate", "reading schema_migrations",
                "SELECT coalesce(max(version), 0) FROM schema_migrations", 0, NULL, NULL, NULL);
    if (res == NULL)
        return -EIO;
    v = strtoll(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    return v;
}

int admin_migrate(const struct cfg *c)
{
    const struct admin_migration *newest = &admin_migrations[admin_migration_count - 1];
    unsigned applied = 0;
    int64_t version;
    PGconn *db;
    size_t k;
    int rc;

    db = connect_db(c, "migrate");
    if (db == NULL)
        return -ENOTCONN;

    /*
     * Two first runs at once would both miss the table and race in CREATE
     * TABLE IF NOT EXISTS (one fails on a catalog unique index), so even this
     * runs under the lock.
     */
    rc = begin_locked(db);
    if (rc < 0)
        goto out_finish;
    rc = exec(db, "migrate", "creating schema_migrations",
              "CREATE TABLE IF NOT EXISTS schema_migrations ("
              " version integer PRIMARY KEY,"
              " name text NOT NULL,"
              " applied_at timestamptz NOT NULL DEFAULT now())");
    if (rc < 0)
        goto out_finish;
    rc = exec(db, "migrate", "COMMIT", "COMMIT");
    if (rc < 0)
        goto out_finish;

    for (k = 0; k < admin_migration_count; k++) {
        /* A cheap look without the lock first, so an up-to-date schema costs no waiting. */
        rc = is_applied(db, admin_migrations[k].version);
        if (rc < 0)
            goto out_finish;
        if (rc > 0)
            continue;
        rc = apply(db, &admin_migrations[k]);
        if (rc < 0)
            goto out_finish;
        applied += (unsigned)rc;
    }

    version = schema_version(db);
    if (version < 0) {
        rc = (int)version;
        goto out_finish;
    }
    /* An older binary against a newer schema: not an error, but worth knowing before serving. */
    if (version > newest->version)
        fprintf(stderr,
                "ringup migrate: the database is at version %" PRId64
                ", newer than this binary's %d\n",
                version, newest->version);
    printf("migrate: schema at version %" PRId64 " (%u applied)\n", version, applied);
    rc = 0;

out_finish:
    PQfinish(db);
    return rc;
}

/* Check a user name; returns NULL when fine, else why not. */
static const char *bad_user(const char *user)
{
    size_t n = strlen(user);
    size_t i;

    if (n == 0)
        return "is empty";
    if (n > ADMIN_USER_MAX)
        return "is longer than 64 characters";
    /*
     * The server names the owner of ALLOW_ANONYMOUS uploads "anonymous"; a
     * token of that user would see and delete every anonymous file. Other
     * spellings are refused too, so no listing or log can confuse the two.
     */
    if (strcasecmp(user, ADMIN_ANONYMOUS) == 0)
        return "is reserved: \"" ADMIN_ANONYMOUS "\" (in any case) owns the uploads that "
               "ALLOW_ANONYMOUS accepts";
    for (i = 0; i < n; i++) {
        char ch = user[i];

        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '.' || ch == '_' || ch == '@' || ch == '-'))
            return "may hold only letters, digits and . _ @ -";
    }
    return NULL;
}

int admin_token_create(const struct cfg *c, const char *user)
{
    char tok[TOK_LEN + 1];
    char prefix[TOK_PREFIX_LEN + 1];
    uint8_t hash[TOK_HASH_LEN];
    const char *vals[3];
    int lens[3] = {0, TOK_HASH_LEN, 0};
    const int fmts[3] = {0, 1, 0};
    const char *why;
    PGconn *db;
    PGresult *res;
    int rc;

    why = bad_user(user);
    if (why != NULL) {
        fprintf(stderr, "ringup token create: the user name %s\n", why);
        return -EINVAL;
    }
    rc = tok_new(tok);
    if (rc < 0) {
        fprintf(stderr, "ringup token create: cannot read random bytes: %s\n", strerror(-rc));
        return rc;
    }
    tok_hash(tok, TOK_LEN, hash);
    tok_prefix(tok, prefix);

    db = connect_db(c, "token create");
    if (db == NULL) {
        rc = -ENOTCONN;
        goto out_wipe;
    }
    rc = exec(db, "token create", "BEGIN", "BEGIN");
    if (rc < 0)
        goto out_finish;
    vals[0] = user;
    vals[1] = (const char *)hash;
    vals[2] = prefix;
    res = PQexecParams(db,
                       "INSERT INTO api_tokens (user_name, token_hash, prefix) VALUES ($1, $2, $3)",
                       3, NULL, vals, lens, fmts, 0);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);

        if (state != NULL && strcmp(state, SQLSTATE_UNDEFINED_TABLE) == 0)
            fprintf(stderr, "ringup token create: table api_tokens is missing; run `ringup "
                            "migrate` first\n");
        else
            put_result_error("token create", "storing the token", db, res);
        PQclear(res);
        rc = -EIO;
        goto out_finish;
    }
    PQclear(res);

    /*
     * Shown before COMMIT: if it cannot be written (a full disk under a
     * redirect), the row is rolled back instead of leaving a valid token
     * nobody has.
     */
    printf("%s\n", tok);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "ringup token create: cannot write the token to stdout: %s\n",
                strerror(errno));
        rc = -EIO;
        goto out_finish;
    }
    rc = exec(db, "token create", "COMMIT", "COMMIT");
    if (rc < 0)
        fprintf(stderr, "ringup token create: the token printed above was NOT stored\n");
    else
        fprintf(stderr, "token for %s created (prefix %s); it is shown once\n", user, prefix);

out_finish:
    PQfinish(db);
out_wipe:
    explicit_bzero(tok, sizeof(tok));
    return rc;
}

static bool is_prefix(const char *s, size_t n)
{
    char tok[TOK_LEN + 1];

    if (n != TOK_PREFIX_LEN)
        return false;
    /* A prefix is well formed when it completes to a well-formed token. */
    memset(tok, 'A', TOK_LEN);
    memcpy(tok, s, n);
    return tok_wellformed(tok, TOK_LEN);
}

/*
 * Revoke the one row of found (id, user_name, prefix) inside the caller's
 * transaction. Returns 0, -ENOENT (no row), -ENOTUNIQ (several), -EIO; each
 * error printed.
 */
static int revoke_row(PGconn *db, const PGresult *found, const char *prefix)
{
    const char *id;
    PGresult *res;

    if (PQntuples(found) == 0) {
        fprintf(stderr, "ringup token revoke: no such token: %s (unknown or already revoked)\n",
                prefix);
        return -ENOENT;
    }
    if (PQntuples(found) > 1) {
        fprintf(stderr,
                "ringup token revoke: prefix %s is ambiguous: it names %d tokens; give the whole "
                "token\n",
                prefix, PQntuples(found));
        return -ENOTUNIQ;
    }
    id = PQgetvalue(found, 0, 0);
    res = query(db, "token revoke", "revoking the token",
                "UPDATE api_tokens SET revoked_at = now() WHERE id = $1", 1, &id, NULL, NULL);
    if (res == NULL)
        return -EIO;
    PQclear(res);
    return 0;
}

int admin_token_revoke(const struct cfg *c, const char *arg)
{
    const char *cmd = "token revoke";
    size_t n = strlen(arg);
    uint8_t hash[TOK_HASH_LEN];
    char prefix[TOK_PREFIX_LEN + 1];
    const char *vals[1];
    int lens[1] = {0};
    int fmts[1] = {0};
    const char *sql;
    PGconn *db;
    PGresult *res;
    int rc;

    if (tok_wellformed(arg, n)) {
        tok_hash(arg, n, hash);
        vals[0] = (const char *)hash;
        lens[0] = TOK_HASH_LEN;
        fmts[0] = 1;
        sql = "SELECT id, user_name, prefix FROM api_tokens"
              " WHERE token_hash = $1 AND revoked_at IS NULL FOR UPDATE";
    } else if (is_prefix(arg, n)) {
        vals[0] = arg;
        sql = "SELECT id, user_name, prefix FROM api_tokens"
              " WHERE prefix = $1 AND revoked_at IS NULL FOR UPDATE";
    } else {
        /* The argument is not echoed: it may be a mistyped secret. */
        fprintf(stderr,
                "ringup token revoke: expected a whole token (" TOK_MAGIC
                " and 43 characters) or its first %d characters (" TOK_MAGIC "XXXXXXXX), got %zu "
                "characters\n",
                TOK_PREFIX_LEN, n);
        return -EINVAL;
    }
    tok_prefix(arg, prefix);

    db = connect_db(c, cmd);
    if (db == NULL)
        return -ENOTCONN;
    rc = exec(db, cmd, "BEGIN", "BEGIN");
    if (rc < 0)
        goto out_finish;
    res = query(db, cmd, "looking up the token", sql, 1, vals, lens, fmts);
    if (res == NULL) {
        rc = -EIO;
        goto out_finish;
    }
    rc = revoke_row(db, res, prefix);
    if (rc == 0)
        rc = exec(db, cmd, "COMMIT", "COMMIT");
    if (rc == 0)
        printf("revoked token %s of %s\n", PQgetvalue(res, 0, 2), PQgetvalue(res, 0, 1));
    PQclear(res);

out_finish:
    PQfinish(db);
    return rc;
}

/* ---- fsck ---- */

#define FSCK_PAGE 500  /* rows per keyset page: one round trip, a bounded result */
#define FSCK_BATCH 500 /* stored objects looked up per query */
#define FSCK_PATH_MAX (sizeof("objects/ab/cd/") + 256) /* a shard entry's path */

/* Rows whose bytes fsck found bad and marked failed carry this error prefix. */
#define FSCK_MARK "fsck:"

#define FSCK_COLS                                                                                  \
    "SELECT id::text, storage_key, size, status,"                                                  \
    " status = 'failed' AND coalesce(error LIKE '" FSCK_MARK "%', false) FROM files "
#define FSCK_LIMIT_(n) " LIMIT " #n
#define FSCK_LIMIT(n) FSCK_LIMIT_(n)
#define FSCK_FIRST FSCK_COLS "ORDER BY id" FSCK_LIMIT(FSCK_PAGE)
#define FSCK_NEXT FSCK_COLS "WHERE id > $1::uuid ORDER BY id" FSCK_LIMIT(FSCK_PAGE)

/* One stored object waiting for its row lookup. */
struct fsck_obj {
    char id[STORE_ID_LEN + 1]; /* its name, a well-formed id */
    char key[STORE_KEY_MAX];   /* objects/ab/cd/<id>, relative to STORAGE_DIR */
    struct stat st;            /* as walked: size, ctime, and the inode to match before unlink */
};

/* One run's state. */
struct fsck {
    struct admin_fsck *f;   /* options in, counts out (the caller's) */
    PGconn *db;             /* blocking connection to DATABASE_URL */
    int sdir;               /* STORAGE_DIR, O_DIRECTORY */
    struct timespec now;    /* CLOCK_REALTIME at the start: ages are measured against it */
    struct fsck_obj *batch; /* FSCK_BATCH objects whose rows are not looked up yet */
    size_t nbatch;          /* filled slots of batch */
};

/*
 * Print a name or key from disk or from the database with every byte that
 * could break the one-line format (blanks, controls, non-ASCII, backslash)
 * as \xNN, so each finding stays one line whatever an entry is called.
 */
static void put_safe(const char *s)
{
    const unsigned char *p;

    for (p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p <= ' ' || *p >= 0x7f || *p == '\\')
            printf("\\x%02x", *p);
        else
            putchar(*p);
    }
}

static bool is_hex(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f');
}

/* A shard directory name: two lowercase hex digits, as store_key() makes them. */
static bool is_shard(const char *name)
{
    return is_hex(name[0]) && is_hex(name[1]) && name[2] == '\0';
}

/* An object name: a lowercase UUID in text form, as store_new_id() and PostgreSQL write it. */
static bool is_id(const char *name)
{
    int i;

    for (i = 0; i < STORE_ID_LEN; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;

        if (dash ? name[i] != '-' : !is_hex(name[i]))
            return false;
    }
    return name[STORE_ID_LEN] == '\0';
}

/* Whole seconds from ts to the start of the run (negative for later changes). */
static int64_t age_of(const struct fsck *k, const struct timespec *ts)
{
    return (int64_t)k->now.tv_sec - (int64_t)ts->tv_sec - (k->now.tv_nsec < ts->tv_nsec);
}

/*
 * The newer of an object's mtime and ctime. linkat() and rename() change
 * the ctime, not the mtime: a file written long ago and linked into place
 * a moment ago is new, and its row may still be on its way.
 */
static const struct timespec *changed_at(const struct stat *st)
{
    if (st->st_ctim.tv_sec > st->st_mtim.tv_sec ||
        (st->st_ctim.tv_sec == st->st_mtim.tv_sec && st->st_ctim.tv_nsec > st->st_mtim.tv_nsec))
        return &st->st_ctim;
    return &st->st_mtim;
}

/*
 * path = dir/name, dir being at most "objects/ab/cd". Returns 0, or -ENAMETOOLONG
 * (never with names the kernel hands out: NAME_MAX is 255).
 */
static int join(char path[FSCK_PATH_MAX], const char *dir, const char *name)
{
    int n = snprintf(path, FSCK_PATH_MAX, "%s/%s", dir, name);

    return n < 0 || (size_t)n >= FSCK_PATH_MAX ? -ENAMETOOLONG : 0;
}

/* A leftover fsck does not know: reported, never touched. */
static void unknown(struct fsck *k, const char *path, const char *why)
{
    k->f->unknown++;
    fputs("unknown ", stdout);
    put_safe(path);
    printf(": %s; left alone\n", why);
}

/* A storage call failed on path: the check goes on, the run ends with status 3. */
static void storage_error(struct fsck *k, const char *what, const char *path, int err)
{
    k->f->errors++;
    fflush(stdout);
    fprintf(stderr, "ringup fsck: %s ", what);
    put_folded(stderr, path);
    fprintf(stderr, ": %s\n", strerror(err));
}

/*
 * Mark the row id failed because its bytes are bad, unless it changed or
 * went since the page was read. The UPDATE is also the re-check: the
 * server deletes a row before its bytes, so a row read earlier may be gone
 * now with its bytes, and that is no finding. Returns 1 when marked, 0 when
 * the row is gone or changed, -EIO (printed).
 */
static int mark_failed(struct fsck *k, const char *id, const char *key, const char *size,
                       const char *why)
{
    const char *vals[4] = {id, why, key, size};
    PGresult *res;
    int n;

    res = query(k->db, "fsck", "marking a row failed",
                "UPDATE files SET status = 'failed', error = $2,"
                " claimed_by = NULL, lease_until = NULL"
                " WHERE id = $1::uuid AND storage_key = $3 AND size = $4::bigint"
                " AND status <> 'uploading' RETURNING 1",
                4, vals, NULL, NULL);
    if (res == NULL)
        return -EIO;
    n = PQntuples(res);
    PQclear(res);
    return n > 0;
}

/* Is the row still there as read? The report-only twin of mark_failed(): 1, 0 or -EIO. */
static int row_still_there(struct fsck *k, const char *id, const char *key, const char *size)
{
    const char *vals[3] = {id, key, size};
    PGresult *res;
    int n;

    res = query(k->db, "fsck", "reading a row again",
                "SELECT 1 FROM files WHERE id = $1::uuid AND storage_key = $2"
                " AND size = $3::bigint AND status <> 'uploading'",
                3, vals, NULL, NULL);
    if (res == NULL)
        return -EIO;
    n = PQntuples(res);
    PQclear(res);
    return n > 0;
}

/*
 * Check row i of a page against its bytes. A row claims the bytes at its
 * storage_key, which must be the key of its id; they must be a regular file
 * of the row's size. Rows still uploading (tus) keep their bytes elsewhere
 * and are skipped. Bad bytes are never removed: with --repair the row is
 * marked failed, naming its old status so an operator who restores the
 * bytes can restore the row. Returns 0 or -EIO (printed).
 */
static int check_row(struct fsck *k, const PGresult *page, int i)
{
    const char *id = PQgetvalue(page, i, 0);
    const char *key = PQgetvalue(page, i, 1);
    const char *size = PQgetvalue(page, i, 2);
    const char *status = PQgetvalue(page, i, 3);
    bool marked = PQgetvalue(page, i, 4)[0] == 't';
    char want[STORE_KEY_MAX];
    char why[160];
    struct stat st;
    bool missing;
    int rc;

    k->f->rows++;
    if (strcmp(status, "uploading") == 0) {
        k->f->uploading++;
        return 0;
    }
    store_key(id, want);
    if (strcmp(key, want) != 0) {
        k->f->badkey++;
        printf("badkey %s: storage_key \"", id);
        put_safe(key);
        printf("\" is not %s; left alone\n", want);
        return 0;
    }
    if (fstatat(k->sdir, key, &st, AT_SYMLINK_NOFOLLOW) < 0) {
        if (errno != ENOENT) {
            storage_error(k, "cannot stat", key, errno);
            return 0;
        }
        missing = true;
    } else if (!S_ISREG(st.st_mode)) {
        missing = true;
    } else if ((int64_t)st.st_size == strtoll(size, NULL, 10)) {
        return 0;
    } else {
        missing = false;
    }
    if (marked) {
        k->f->marked++;
        return 0;
    }

    if (missing)
        snprintf(why, sizeof(why), FSCK_MARK " the stored bytes are missing (status was %s)",
                 status);
    else
        snprintf(why, sizeof(why),
                 FSCK_MARK " the stored file holds %lld bytes, not %s (status was %s)",
                 (long long)st.st_size, size, status);
    if (k->f->repair)
        rc = mark_failed(k, id, key, size, why);
    else
        rc = row_still_there(k, id, key, size);
    if (rc <= 0)
        return rc;

    if (missing) {
        k->f->missing++;
        printf("missing %s: no stored bytes at %s (status %s, %s bytes)", id, key, status, size);
    } else {
        k->f->size++;
        printf("size %s: %s holds %lld bytes, the row says %s (status %s)", id, key,
               (long long)st.st_size, size, status);
    }
    if (k->f->repair) {
        k->f->repaired++;
        puts("; marked failed");
    } else {
        puts("; --repair marks the row failed");
    }
    return 0;
}

/* Every row, in id order, a page at a time: memory stays flat however big the table. */
static int check_rows(struct fsck *k)
{
    char after[STORE_ID_LEN + 1];
    const char *vals[1] = {after};
    PGresult *page;
    int n;
    int i;
    int rc = 0;

    for (;;) {
        if (k->f->rows == 0)
            page = PQexec(k->db, FSCK_FIRST);
        else
            page = PQexecParams(k->db, FSCK_NEXT, 1, NULL, vals, NULL, NULL, 0);
        if (PQresultStatus(page) != PGRES_TUPLES_OK) {
            const char *state = PQresultErrorField(page, PG_DIAG_SQLSTATE);

            if (state != NULL && strcmp(state, SQLSTATE_UNDEFINED_TABLE) == 0)
                fprintf(stderr, "ringup fsck: table files is missing; run `ringup migrate` "
                                "first\n");
            else
                put_result_error("fsck", "reading files", k->db, page);
            PQclear(page);
            return -EIO;
        }
        n = PQntuples(page);
        for (i = 0; i < n && rc == 0; i++)
            rc = check_row(k, page, i);
        if (n > 0)
            snprintf(after, sizeof(after), "%s", PQgetvalue(page, n - 1, 0));
        PQclear(page);
        if (rc < 0 || n < FSCK_PAGE)
            return rc;
    }
}

/*
 * Remove the orphan o, unless it changed since it was walked (the same
 * name now a different file, or linked again). Returns 0 or -errno.
 */
static int remove_orphan(struct fsck *k, const struct fsck_obj *o)
{
    struct stat st;

    if (fstatat(k->sdir, o->key, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return -errno;
    if (st.st_ino != o->st.st_ino || st.st_dev != o->st.st_dev ||
        age_of(k, changed_at(&st)) < (int64_t)k->f->grace)
        return -EBUSY;
    if (unlinkat(k->sdir, o->key, 0) < 0)
        return -errno;
    return 0;
}

/* The object with this id in the batch (ids are unique there: each sits in its own shard). */
static const struct fsck_obj *batch_find(const struct fsck *k, const char *id)
{
    size_t i;

    for (i = 0; i < k->nbatch; i++)
        if (strcmp(k->batch[i].id, id) == 0)
            return &k->batch[i];
    return NULL;
}

/*
 * Look the batch up in one query that answers only the ids without a row
 * (normally none), then judge those: younger than --grace, the server may
 * be between linking the file and committing its row, so it is left alone;
 * older, it is an orphan, removed with --repair. Returns 0 or -EIO.
 */
static int flush_batch(struct fsck *k)
{
    char *arr;
    char *p;
    const char *vals[1];
    PGresult *res;
    size_t i;
    int n;
    int j;

    if (k->nbatch == 0)
        return 0;
    arr = malloc(k->nbatch * (STORE_ID_LEN + 1) + 2);
    if (arr == NULL)
        abort();
    p = arr;
    *p++ = '{';
    for (i = 0; i < k->nbatch; i++) {
        if (i > 0)
            *p++ = ',';
        memcpy(p, k->batch[i].id, STORE_ID_LEN);
        p += STORE_ID_LEN;
    }
    *p++ = '}';
    *p = '\0';
    vals[0] = arr;
    res = query(k->db, "fsck", "looking up stored objects",
                "SELECT u::text FROM unnest($1::uuid[]) AS u"
                " WHERE NOT EXISTS (SELECT 1 FROM files WHERE id = u)",
                1, vals, NULL, NULL);
    free(arr);
    if (res == NULL)
        return -EIO;
    n = PQntuples(res);
    for (j = 0; j < n; j++) {
        const struct fsck_obj *o = batch_find(k, PQgetvalue(res, j, 0));
        int64_t age;
        int rc = 0;

        if (o == NULL)
            continue;
        age = age_of(k, changed_at(&o->st));
        if (age < (int64_t)k->f->grace) {
            k->f->young++;
            printf("young %s: no row yet, changed %lld s ago (under --grace %" PRIu32
                   "); left alone\n",
                   o->key, (long long)(age < 0 ? 0 : age), k->f->grace);
            continue;
        }
        if (k->f->repair) {
            rc = remove_orphan(k, o);
            /* Changed or gone since the walk: no longer the orphan that was judged. */
            if (rc == -EBUSY || rc == -ENOENT)
                continue;
        }
        k->f->orphan++;
        printf("orphan %s: no row, %lld bytes, changed %lld s ago", o->key,
               (long long)o->st.st_size, (long long)age);
        if (!k->f->repair) {
            puts("; --repair removes it");
        } else if (rc == 0) {
            k->f->repaired++;
            puts("; removed");
        } else {
            printf("; not removed: %s\n", strerror(-rc));
        }
    }
    PQclear(res);
    k->nbatch = 0;
    return 0;
}

/* Walk one leaf shard objects/ab/cd (fd owned here). Returns 0 or -EIO. */
static int walk_leaf(struct fsck *k, int fd, const char *dir)
{
    char path[FSCK_PATH_MAX];
    char want[STORE_KEY_MAX];
    struct dirent *e;
    struct stat st;
    DIR *d;
    int rc = 0;

    d = fdopendir(fd);
    if (d == NULL) {
        storage_error(k, "cannot read", dir, errno);
        close(fd);
        return 0;
    }
    while (rc == 0 && (errno = 0, e = readdir(d)) != NULL) {
        struct fsck_obj *o;

        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (join(path, dir, e->d_name) < 0)
            continue;
        if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno != ENOENT) /* gone since readdir: a DELETE, not a finding */
                storage_error(k, "cannot stat", path, errno);
            continue;
        }
        if (!is_id(e->d_name)) {
            unknown(k, path, "not an object name");
            continue;
        }
        if (!S_ISREG(st.st_mode)) {
            unknown(k, path, "not a regular file");
            continue;
        }
        store_key(e->d_name, want);
        if (strcmp(path, want) != 0) {
            /* The server never looks here, but a row may still claim it: never removed. */
            k->f->misplaced++;
            fputs("misplaced ", stdout);
            put_safe(path);
            printf(": its shard is %.*s; left alone\n", (int)(strrchr(want, '/') - want), want);
            continue;
        }
        k->f->objects++;
        o = &k->batch[k->nbatch++];
        memcpy(o->id, e->d_name, STORE_ID_LEN + 1);
        memcpy(o->key, want, sizeof(o->key));
        o->st = st;
        if (k->nbatch == FSCK_BATCH)
            rc = flush_batch(k);
    }
    if (rc == 0 && errno != 0)
        storage_error(k, "cannot read", dir, errno);
    closedir(d);
    return rc;
}

/*
 * Walk the shard directories of dir (objects, or objects/ab; fd owned
 * here), depth 1 or 2 below objects/. Entries that are not two-hex-digit
 * directories are leftovers; symbolic links are never followed. Returns 0
 * or -EIO.
 */
static int walk_shards(struct fsck *k, int fd, const char *dir, int depth)
{
    char path[FSCK_PATH_MAX];
    struct dirent *e;
    DIR *d;
    int rc = 0;

    d = fdopendir(fd);
    if (d == NULL) {
        storage_error(k, "cannot read", dir, errno);
        close(fd);
        return 0;
    }
    while (rc == 0 && (errno = 0, e = readdir(d)) != NULL) {
        int sub;

        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (join(path, dir, e->d_name) < 0)
            continue;
        if (!is_shard(e->d_name)) {
            unknown(k, path, "not a shard directory");
            continue;
        }
        sub = openat(fd, e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (sub < 0) {
            if (errno == ENOTDIR || errno == ELOOP)
                unknown(k, path, "not a directory");
            else if (errno != ENOENT)
                storage_error(k, "cannot open", path, errno);
            continue;
        }
        rc = depth == 1 ? walk_shards(k, sub, path, 2) : walk_leaf(k, sub, path);
    }
    if (rc == 0 && errno != 0)
        storage_error(k, "cannot read", dir, errno);
    closedir(d);
    return rc;
}

/* The storage side: every entry under objects/ (fd owned here). Returns 0 or -EIO. */
static int check_objects(struct fsck *k, int objects)
{
    int rc;

    k->batch = calloc(FSCK_BATCH, sizeof(*k->batch));
    if (k->batch == NULL)
        abort();
    rc = walk_shards(k, objects, "objects", 1);
    if (rc == 0)
        rc = flush_batch(k);
    free(k->batch);
    k->batch = NULL;
    return rc;
}

int admin_fsck(const struct cfg *c, struct admin_fsck *f)
{
    struct fsck k = {.f = f, .sdir = -1};
    const struct admin_fsck opts = *f;
    struct admin_fsck *o = f;
    int objects;
    int rc;

    memset(o, 0, sizeof(*o));
    o->repair = opts.repair;
    o->grace = opts.grace;
    clock_gettime(CLOCK_REALTIME, &k.now);

    /*
     * Nothing is created here: with STORAGE_DIR unmounted or mistyped every
     * row would look as if its bytes were gone, and --repair would mark
     * them all failed.
     */
    k.sdir = open(c->storage_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (k.sdir < 0) {
        rc = -errno;
        fprintf(stderr, "ringup fsck: STORAGE_DIR %s: %s; nothing checked\n", c->storage_dir,
                strerror(-rc));
        return rc;
    }
    objects = openat(k.sdir, "objects", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (objects < 0) {
        rc = -errno;
        fprintf(stderr,
                "ringup fsck: STORAGE_DIR %s has no objects directory (%s): wrong "
                "STORAGE_DIR, or not mounted?; nothing checked\n",
                c->storage_dir, strerror(-rc));
        goto out_close_storage;
    }

    k.db = connect_db(c, "fsck");
    if (k.db == NULL) {
        rc = -ENOTCONN;
        close(objects);
        goto out_close_storage;
    }
    rc = check_rows(&k);
    if (rc == 0)
        rc = check_objects(&k, objects);
    else
        close(objects);
    if (rc < 0)
        goto out_finish;

    o->findings = o->orphan + o->missing + o->size + o->badkey + o->misplaced + o->unknown;
    printf("fsck: %" PRIu64 " rows, %" PRIu64 " objects; findings %" PRIu64 ": orphan %" PRIu64
           ", missing %" PRIu64 ", size %" PRIu64 ", badkey %" PRIu64 ", misplaced %" PRIu64
           ", unknown %" PRIu64 "; skipped: young %" PRIu64 ", uploading %" PRIu64
           ", marked %" PRIu64 "; repaired %" PRIu64 "\n",
           o->rows, o->objects, o->findings, o->orphan, o->missing, o->size, o->badkey,
           o->misplaced, o->unknown, o->young, o->uploading, o->marked, o->repaired);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "ringup fsck: cannot write the report: %s\n", strerror(errno));
        rc = -EIO;
    } else if (o->errors > 0) {
        fprintf(stderr, "ringup fsck: %" PRIu64 " entries could not be checked (see above)\n",
                o->errors);
        rc = -EIO;
    }

out_finish:
    PQfinish(k.db);
out_close_storage:
    close(k.sdir);
    return rc;
}
