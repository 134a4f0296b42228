/* ringup: command-line entry point. */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/admin.h"
#include "engine/cfg.h"
#include "engine/log.h"
#include "engine/srv.h"
#include "engine/store.h"

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
}

/*
 * Load the configuration or explain in one line why not (exit status 2).
 * Commands that run (not check-config) also resolve relative paths.
 */
static int load(struct cfg *c, int argc, char **argv, bool resolve)
{
    char err[CFG_ERR_MAX];

    if (cfg_load(c, argc, argv, err, sizeof(err)) < 0 ||
        (resolve && cfg_resolve_paths(c, err, sizeof(err)) < 0)) {
        fprintf(stderr, "ringup: %s\n", err);
        return 2;
    }
    return 0;
}

/* The arguments of a command, split into its own and the settings flags for cfg_load(). */
struct args {
    const char *user;       /* --user NAME, NULL if absent */
    const char *positional; /* the one non-option argument, NULL if absent */
    int argc;               /* settings flags left in argv */
    char **argv;            /* owned; free() it */
};

/*
 * Take --user (if want_user) and one positional argument (if want_pos) out of
 * argv[0..argc); everything else stays, in order, for cfg_load() to judge. A
 * flag without "=" keeps the next argument as its value unless that starts
 * with "--", as cfg_load() reads it, so a value is never taken for the
 * positional. Returns 0, or 2 after printing why.
 */
static int split_args(const char *cmd, int argc, char **argv, bool want_user, bool want_pos,
                      struct args *a)
{
    int i;

    memset(a, 0, sizeof(*a));
    a->argv = calloc((size_t)argc + 1, sizeof(*a->argv));
    if (a->argv == NULL)
        abort();
    for (i = 0; i < argc; i++) {
        const char *arg = argv[i];

        if (want_user && (strcmp(arg, "--user") == 0 || strncmp(arg, "--user=", 7) == 0)) {
            if (a->user != NULL) {
                fprintf(stderr, "ringup %s: --user given twice\n", cmd);
                goto out_usage;
            }
            if (arg[6] == '=') {
                a->user = arg + 7;
            } else if (i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0) {
                a->user = argv[++i];
            } else {
                fprintf(stderr, "ringup %s: option --user needs a value\n", cmd);
                goto out_usage;
            }
        } else if (strncmp(arg, "--", 2) == 0) {
            a->argv[a->argc++] = argv[i];
            if (strchr(arg, '=') == NULL && i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
                a->argv[a->argc++] = argv[++i];
        } else if (want_pos && a->positional == NULL && arg[0] != '-') {
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

    ret = split_args(cmd, argc, argv, create, revoke, &a);
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
