/* ringup: command-line entry point. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "engine/cfg.h"
#include "engine/log.h"
#include "engine/srv.h"

#define RINGUP_VERSION "0.1.0"

static void usage(FILE *out)
{
    fprintf(out, "usage: ringup [serve] [--env-file FILE] [--listen ADDR:PORT] [--workers N] "
                 "[--SETTING VALUE ...]\n"
                 "       ringup check-config [--env-file FILE] [--SETTING VALUE ...]\n"
                 "       ringup --version | --help\n"
                 "\n"
                 "Every setting is an environment variable (see API.md); --kebab-case flags of\n"
                 "the same names override it. Precedence: flag > environment > env file > "
                 "default.\n");
}

/* Load the configuration or explain in one line why not (exit status 2). */
static int load(struct cfg *c, int argc, char **argv)
{
    char err[CFG_ERR_MAX];

    if (cfg_load(c, argc, argv, err, sizeof(err)) < 0) {
        fprintf(stderr, "ringup: %s\n", err);
        return 2;
    }
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
        ret = load(&cfg, argc - first, argv + first);
        if (ret != 0)
            return ret;
        cfg_print(&cfg, stdout);
        return 0;
    }
    if (strcmp(cmd, "serve") == 0) {
        ret = load(&cfg, argc - first, argv + first);
        if (ret != 0)
            return ret;
        log_setup(cfg.log_level, cfg.log_format, cfg.instance_id);
        return srv_serve(&cfg);
    }
    fprintf(stderr, "ringup: unknown command \"%s\"\n", cmd);
    usage(stderr);
    return 2;
}
