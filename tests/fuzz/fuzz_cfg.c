/*
 * Fuzz target for engine/cfg.c: the dotenv parser, every value parser behind
 * cfg_set, the flag parser behind cfg_load and the redacting printer.
 *
 * Input: byte 0 holds mode bits, bytes 1-2 a little-endian split point; the
 * rest is cut there into two pieces. Piece one is always dotenv text; piece
 * two is more dotenv text applied on top, or (MODE_ARGV) NUL-separated
 * arguments for cfg_load. Besides "no crash, no leak" it checks what callers
 * rely on: errors are one non-empty line, a refused value changes nothing,
 * LISTEN's parts agree, and cfg_print writes one line per setting.
 */
#include "engine/core/cfg.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum {
    MODE_ARGV = 1,  /* piece two is argv for cfg_load, not dotenv text */
    MODE_PRINT = 2, /* print the result and check its shape */
    MODE_KEEP = 4,  /* check that a refused cfg_set leaves the struct as it was */
    MODE_STOP = 8,  /* a refused value stops the parse (as --env-file does) */
};

#define MAX_ARGS 64

/* The state one run hands to kv(). */
struct run {
    struct cfg *c;      /* being built */
    struct cfg *before; /* copy taken before each cfg_set, MODE_KEEP */
    unsigned mode;      /* MODE_* bits */
};

static struct cfg defaults; /* cfg_defaults() once: it asks the kernel for the hostname */
static struct cfg work;
static struct cfg before;
static size_t default_lines; /* lines cfg_print writes */

static void check_err(int rc, const char *err)
{
    if (rc >= 0)
        return;
    if (err[0] == '\0' || strchr(err, '\n') != NULL || strlen(err) >= CFG_ERR_MAX)
        abort();
}

static void check_cfg(const struct cfg *c)
{
    if (c->listen_host[0] == '\0' || c->listen_port == 0)
        abort();
    if (strlen(c->listen) >= CFG_STR_MAX || strlen(c->listen_host) >= strlen(c->listen))
        abort();
    if (c->workers < 1 || c->workers > 256 || c->memory_threshold < 1 ||
        c->memory_threshold > 100 || c->max_file_size < 1 || c->max_file_size > (1ULL << 50))
        abort();
    if ((unsigned)c->log_level > CFG_LOG_ERROR || (unsigned)c->log_format > CFG_LOG_TEXT)
        abort();
}

static int kv(void *ud, const char *key, const char *value, char *err, size_t errlen)
{
    struct run *r = ud;
    int rc;

    if (r->mode & MODE_KEEP)
        memcpy(r->before, r->c, sizeof(*r->c));
    rc = cfg_set(r->c, key, value, err, errlen);
    if (rc < 0) {
        if (rc != -ENOENT && rc != -EINVAL)
            abort();
        check_err(rc, err);
        if ((r->mode & MODE_KEEP) && memcmp(r->before, r->c, sizeof(*r->c)) != 0)
            abort();
        return (r->mode & MODE_STOP) && rc != -ENOENT ? rc : 0;
    }
    check_cfg(r->c);
    return 0;
}

static size_t count_lines(const struct cfg *c, char **text)
{
    char *buf = NULL;
    size_t len = 0;
    size_t n = 0;
    size_t i;
    FILE *f = open_memstream(&buf, &len);

    if (f == NULL)
        abort();
    cfg_print(c, f);
    fclose(f);
    for (i = 0; i < len; i++)
        n += buf[i] == '\n';
    if (len > 0 && buf[len - 1] != '\n')
        abort();
    *text = buf;
    return n;
}

static void check_print(const struct cfg *c)
{
    char *text;
    size_t n = count_lines(c, &text);

    if (n != default_lines)
        abort();
    if (c->signing_key[0] != '\0' && strstr(text, "\nSIGNING_KEY=***\n") == NULL)
        abort();
    free(text);
}

/* Split piece two at NULs into argv, leaving out --env-file: no file I/O here. */
static void run_argv(const uint8_t *p, size_t n, unsigned mode)
{
    char err[CFG_ERR_MAX] = "";
    char *argv[MAX_ARGS];
    char *buf = malloc(n + 1);
    int argc = 0;
    size_t i = 0;
    int rc;

    memcpy(buf, p, n);
    buf[n] = '\0';
    while (i <= n && argc < MAX_ARGS) {
        char *arg = buf + i;

        i += strlen(arg) + 1;
        if (strncmp(arg, "--env-file", 10) != 0)
            argv[argc++] = arg;
    }
    rc = cfg_load(&work, argc, argv, err, sizeof(err));
    if (rc != 0 && rc != -EINVAL)
        abort();
    check_err(rc, err);
    if (rc == 0) {
        check_cfg(&work);
        if (work.db_pool_min > work.db_pool_max || work.db_pool_max > work.db_max_connections ||
            work.redis_pool_min > work.redis_pool_max ||
            work.redis_pool_max > work.redis_max_connections)
            abort();
        if (mode & MODE_PRINT)
            check_print(&work);
    }
    free(buf);
}

static void run_text(struct run *r, const uint8_t *p, size_t n)
{
    char err[CFG_ERR_MAX] = "";
    int rc = cfg_parse_env_text((const char *)p, n, kv, r, err, sizeof(err));

    if (rc != 0 && rc != -EBADMSG && rc != -EINVAL)
        abort();
    check_err(rc, err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct run r = {&work, &before, 0};
    size_t split = 0;

    if (default_lines == 0) {
        char *text;

        cfg_defaults(&defaults);
        default_lines = count_lines(&defaults, &text);
        free(text);
    }
    if (size > 0)
        r.mode = data[0];
    if (size >= 3) {
        split = (size_t)data[1] | (size_t)data[2] << 8;
        data += 3;
        size -= 3;
    } else {
        data += size > 0;
        size -= size > 0;
    }
    if (split > size)
        split = size;

    memcpy(&work, &defaults, sizeof(work));
    run_text(&r, data, split);
    if (r.mode & MODE_ARGV) {
        /* cfg_load starts again from the defaults; the first piece still ran above. */
        run_argv(data + split, size - split, r.mode);
        return 0;
    }
    run_text(&r, data + split, size - split);
    if (r.mode & MODE_PRINT)
        check_print(&work);
    return 0;
}
