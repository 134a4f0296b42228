/*
 * admin: `ringup migrate` and `ringup token create|revoke` (see admin.h).
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

#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libpq-fe.h>

#include "engine/token.h"

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
