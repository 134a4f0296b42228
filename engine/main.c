/* ringup: command-line entry point. */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/admin.h"
#include "engine/core/cfg.h"
#include "engine/core/log.h"
#include "engine/db/redis_url.h"
#include "engine/srv.h"
#include "engine/store/store.h"

#define RINGUP_VERSION "0.1.0"

static void usage(FILE *out)
{
    fprintf(out, "usage: ringup [serve] [--env-file FILE] [--listen ADDR:PORT] [--workers N] "
                 "[--SETTING VALUE ...]\n"
                 "       ringup migrate [--env-file FILE] [--SETTING VALUE ...]\n"
                 "       ringup token create --user NAME [--env-file FILE] [--SETTING VALUE ...]\n"
                 "       ringup token revoke TOKEN_OR_PREFIX [--env-file FILE] "
                 "[--SETTING VALUE ...]\n"
                 "       ringup init-storage [--env-file FILE] [--SETTING VALUE ...]\n"
                 "       ringup fsck [--repair] [--grace SECONDS] [--env-file FILE] "
                 "[--SETTING VALUE ...]\n"
                 "       ringup check-config [--env-file FILE] [--SETTING VALUE ...]\n"
                 "       ringup --version | --help\n"
                 "\n"
                 "Every setting is an environment variable (see API.md); --kebab-case flags of\n"
                 "the same names override it. Precedence: flag > environment > env file > "
                 "default.\n"
                 "migrate creates or upgrades the PostgreSQL schema of DATABASE_URL. token\n"
                 "create prints a new API token once and stores only its hash (the user\n"
                 "\"anonymous\", the owner of ALLOW_ANONYMOUS uploads, is refused); token revoke\n"
                 "takes the token or its first 12 characters (rgu_XXXXXXXX). init-storage\n"
                 "creates STORAGE_DIR's 65,792 shard directories ahead of the first uploads.\n"
                 "Exit status: 0 ok, 1 failure, 2 usage or configuration error.\n");
    fprintf(out,
            "\n"
            "fsck checks every row of DATABASE_URL against its bytes under STORAGE_DIR\n"
            "and every entry under STORAGE_DIR/objects against a row, one line per\n"
            "finding (orphan, missing, size, badkey, misplaced, unknown) and a summary.\n"
            "It changes nothing unless --repair: then orphans (files without a row) are\n"
            "removed and rows whose bytes are missing or of the wrong size are marked\n"
            "failed (bytes a row claims are never removed; other leftovers are only\n"
            "reported). A file without a row changed within --grace seconds (default\n"
            "%d) may belong to an upload still committing: it is reported as young\n"
            "and left alone. fsck exit status: 0 nothing found, 1 findings (with\n"
            "--repair: all repaired), 2 usage or configuration error, 3 the check did\n"
            "not finish (database, STORAGE_DIR, unreadable entries), 4 --repair left\n"
            "findings.\n",
            ADMIN_FSCK_GRACE);
}

/*
 * Load the configuration or explain in one line why not (exit status 2).
 * Commands that run (not check-config) also resolve relative paths.
 */
static int load(struct cfg *c, int argc, char **argv, bool resolve)
{
    char err[CFG_ERR_MAX];

    struct redis_addr ra;

    /* REDIS_URL's form is checked here: core's cfg knows no Redis. */
    if (cfg_load(c, argc, argv, err, sizeof(err)) < 0 ||
        redis_url_parse(c->redis_url, &ra, err, sizeof(err)) < 0 ||
        (resolve && cfg_resolve_paths(c, err, sizeof(err)) < 0)) {
        fprintf(stderr, "ringup: %s\n", err);
        return 2;
    }
    return 0;
}

/* The arguments of a command, split into its own and the settings flags for cfg_load(). */
struct args {
    const char *user;       /* --user NAME, NULL if absent */
    const char *grace;      /* --grace SECONDS (fsck), NULL if absent */
    bool repair;            /* --repair (fsck) */
    const char *positional; /* the one non-option argument, NULL if absent */
    int argc;               /* settings flags left in argv */
    char **argv;            /* owned; free() it */
};

/* Which of its own arguments a command takes (split_args). */
#define ARG_USER 1u /* --user NAME */
#define ARG_POS 2u  /* one positional argument */
#define ARG_FSCK 4u /* --repair, --grace SECONDS */

/*
 * Take the value of option name (without "--") at argv[*i]: "--name=V" or
 * "--name V", the latter only when V does not start with "--". *out must be
 * NULL (given twice otherwise). Returns 1 when argv[*i] is that option
 * (value taken, *i moved past it), 0 when it is another, 2 after printing why
 * it is unusable.
 */
static int take_value(const char *cmd, const char *name, int argc, char **argv, int *i,
                      const char **out)
{
    const char *arg = argv[*i];
    size_t n = strlen(name);

    if (strncmp(arg, "--", 2) != 0 || strncmp(arg + 2, name, n) != 0 ||
        (arg[2 + n] != '\0' && arg[2 + n] != '='))
        return 0;
    if (*out != NULL) {
        fprintf(stderr, "ringup %s: --%s given twice\n", cmd, name);
        return 2;
    }
    if (arg[2 + n] == '=') {
        *out = arg + 3 + n;
    } else if (*i + 1 < argc && strncmp(argv[*i + 1], "--", 2) != 0) {
        *out = argv[++*i];
    } else {
        fprintf(stderr, "ringup %s: option --%s needs a value\n", cmd, name);
        return 2;
    }
    return 1;
}

/*
 * Take the command's own options (want: ARG_*) and one positional argument
 * (ARG_POS) out of argv[0..argc); everything else stays, in order, for
 * cfg_load() to judge. A flag without "=" keeps the next argument as its
 * value unless that starts with "--", as cfg_load() reads it, so a value is
 * never taken for the positional. Returns 0, or 2 after printing why.
 */
static int split_args(const char *cmd, int argc, char **argv, unsigned want, struct args *a)
{
    int i;
    int rc;

    memset(a, 0, sizeof(*a));
    a->argv = calloc((size_t)argc + 1, sizeof(*a->argv));
    if (a->argv == NULL)
        abort();
    for (i = 0; i < argc; i++) {
        const char *arg = argv[i];

        rc = 0;
        if (want & ARG_USER)
            rc = take_value(cmd, "user", argc, argv, &i, &a->user);
        if (rc == 0 && (want & ARG_FSCK))
            rc = take_value(cmd, "grace", argc, argv, &i, &a->grace);
        if (rc == 2)
            goto out_usage;
        if (rc == 1)
            continue;
        if ((want & ARG_FSCK) && strncmp(arg, "--repair", 8) == 0 &&
            (arg[8] == '\0' || arg[8] == '=')) {
            if (arg[8] == '=') {
                fprintf(stderr, "ringup %s: --repair takes no value\n", cmd);
                goto out_usage;
            }
            a->repair = true;
        } else if (strncmp(arg, "--", 2) == 0) {
            a->argv[a->argc++] = argv[i];
            if (strchr(arg, '=') == NULL && i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
                a->argv[a->argc++] = argv[++i];
        } else if ((want & ARG_POS) && a->positional == NULL && arg[0] != '-') {
            a->positional = arg;
        } else {
            a->argv[a->argc++] = argv[i];
        }
    }
    return 0;

out_usage:
    free(a->argv);
    a->argv = NULL;
    return 2;
}

/* Exit status of an admin command: 2 for what the caller got wrong, 1 for the rest. */
static int admin_status(int rc)
{
    if (rc == 0)
        return 0;
    return rc == -EINVAL ? 2 : 1;
}

/* ringup migrate | token create | token revoke, after the command words. */
static int admin(struct cfg *c, const char *cmd, int argc, char **argv)
{
    bool create = strcmp(cmd, "token create") == 0;
    bool revoke = strcmp(cmd, "token revoke") == 0;
    struct args a;
    int ret;

    ret = split_args(cmd, argc, argv, (create ? ARG_USER : 0) | (revoke ? ARG_POS : 0), &a);
    if (ret != 0)
        return ret;
    if (create && a.user == NULL) {
        fprintf(stderr, "ringup token create: --user NAME is required\n");
        ret = 2;
        goto out_free;
    }
    if (revoke && a.positional == NULL) {
        fprintf(stderr, "ringup token revoke: which token? give the token or its prefix "
                        "(rgu_XXXXXXXX)\n");
        ret = 2;
        goto out_free;
    }
    ret = load(c, a.argc, a.argv, true);
    if (ret != 0)
        goto out_free;
    if (create)
        ret = admin_status(admin_token_create(c, a.user));
    else if (revoke)
        ret = admin_status(admin_token_revoke(c, a.positional));
    else
        ret = admin_status(admin_migrate(c));

out_free:
    free(a.argv);
    return ret;
}

/* --grace SECONDS: whole seconds, 0..ADMIN_FSCK_GRACE_MAX. Returns 0, or 2 after printing why. */
static int parse_grace(const char *s, uint32_t *out)
{
    uint64_t v = 0;
    const char *p;

    for (p = s; *p >= '0' && *p <= '9'; p++) {
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > ADMIN_FSCK_GRACE_MAX)
            break;
    }
    if (p == s || *p != '\0' || v > ADMIN_FSCK_GRACE_MAX) {
        fprintf(stderr, "ringup fsck: --grace takes whole seconds from 0 to %d, got \"%.40s\"\n",
                ADMIN_FSCK_GRACE_MAX, s);
        return 2;
    }
    *out = (uint32_t)v;
    return 0;
}

/*
 * ringup fsck [--repair] [--grace SECONDS]: the exit status says what was
 * found (enum admin_fsck_exit), so cron or a deploy script can act on it
 * without parsing the report.
 */
static int fsck(struct cfg *c, int argc, char **argv)
{
    struct admin_fsck f = {.grace = ADMIN_FSCK_GRACE};
    struct args a;
    int ret;

    ret = split_args("fsck", argc, argv, ARG_FSCK, &a);
    if (ret != 0)
        return ret;
    f.repair = a.repair;
    if (a.grace != NULL) {
        ret = parse_grace(a.grace, &f.grace);
        if (ret != 0)
            goto out_free;
    }
    ret = load(c, a.argc, a.argv, true);
    if (ret != 0)
        goto out_free;
    if (admin_fsck(c, &f) < 0)
        ret = ADMIN_FSCK_FAILED;
    else if (f.findings == 0)
        ret = ADMIN_FSCK_CLEAN;
    else if (f.repair && f.repaired < f.findings)
        ret = ADMIN_FSCK_LEFT;
    else
        ret = ADMIN_FSCK_FOUND;

out_free:
    free(a.argv);
    return ret;
}

/* ringup init-storage: every shard directory made once, not on each first upload. */
static int init_storage(struct cfg *c, int argc, char **argv)
{
    long made;
    int ret = load(c, argc, argv, true);

    if (ret != 0)
        return ret;
    ret = store_init(c);
    if (ret < 0) {
        fprintf(stderr, "ringup: STORAGE_DIR %s: %s\n", c->storage_dir, strerror(-ret));
        return 1;
    }
    made = store_init_shards();
    if (made < 0) {
        fprintf(stderr, "ringup: shard directories under %s: %s\n", c->storage_dir,
                strerror((int)-made));
        return 1;
    }
    fprintf(stderr, "ringup: %ld shard directories created under %s/objects\n", made,
            c->storage_dir);
    return 0;
}

int main(int argc, char **argv)
{
    static struct cfg cfg;
    const char *cmd = argc > 1 ? argv[1] : "serve";
    int first = 2;
    int ret;

    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0) {
        printf("ringup %s\n", RINGUP_VERSION);
        return 0;
    }
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strncmp(cmd, "--", 2) == 0) {
        cmd = "serve";
        first = 1;
    }
    if (argc < first)
        first = argc;

    if (strcmp(cmd, "check-config") == 0) {
        ret = load(&cfg, argc - first, argv + first, false);
        if (ret != 0)
            return ret;
        cfg_print(&cfg, stdout);
        return 0;
    }
    if (strcmp(cmd, "serve") == 0) {
        ret = load(&cfg, argc - first, argv + first, true);
        if (ret != 0)
            return ret;
        log_setup(cfg.log_level, cfg.log_format, cfg.instance_id);
        return srv_serve(&cfg);
    }
    if (strcmp(cmd, "migrate") == 0)
        return admin(&cfg, "migrate", argc - first, argv + first);
    if (strcmp(cmd, "init-storage") == 0)
        return init_storage(&cfg, argc - first, argv + first);
    if (strcmp(cmd, "fsck") == 0)
        return fsck(&cfg, argc - first, argv + first);
    if (strcmp(cmd, "token") == 0) {
        const char *sub = argc > 2 ? argv[2] : "";

        if (strcmp(sub, "create") == 0)
            return admin(&cfg, "token create", argc - 3, argv + 3);
        if (strcmp(sub, "revoke") == 0)
            return admin(&cfg, "token revoke", argc - 3, argv + 3);
        fprintf(stderr, "ringup: token needs a subcommand: create or revoke\n");
        usage(stderr);
        return 2;
    }
    fprintf(stderr, "ringup: unknown command \"%s\"\n", cmd);
    usage(stderr);
    return 2;
}
