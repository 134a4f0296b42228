/*
 * Unit tests for engine/cfg.c. The module is included so the tests can walk
 * opts[] (to clear the environment) and reach the static helpers; this binary
 * is linked without build/engine/cfg.o.
 */
#include "engine/core/cfg.c"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#define MAX_PAIRS 16

/* What cfg_parse_env_text handed to the recording callback. */
struct rec {
    int n;                            /* pairs recorded */
    char key[MAX_PAIRS][KEY_MAX + 1]; /* their names */
    char val[MAX_PAIRS][VAL_BUF];     /* their values */
    int fail_at;                      /* fail the pair with this index, -1 = never */
};

static int rec_kv(void *ud, const char *key, const char *value, char *err, size_t errlen)
{
    struct rec *r = ud;

    if (r->n == r->fail_at) {
        snprintf(err, errlen, "%s: refused", key);
        return -EINVAL;
    }
    assert_true(r->n < MAX_PAIRS);
    strcpy(r->key[r->n], key);
    strcpy(r->val[r->n], value);
    r->n++;
    return 0;
}

static struct rec *rec_init(struct rec *r)
{
    memset(r, 0, sizeof(*r));
    r->fail_at = -1;
    return r;
}

static int parse_text(struct rec *r, const char *text, char *err)
{
    rec_init(r);
    err[0] = '\0';
    return cfg_parse_env_text(text, strlen(text), rec_kv, r, err, CFG_ERR_MAX);
}

/* Set one setting and expect failure with exactly this message. */
static void expect_set_err(const char *name, const char *value, const char *msg)
{
    struct cfg *c = malloc(sizeof(*c));
    char err[CFG_ERR_MAX] = "";

    cfg_defaults(c);
    assert_int_equal(cfg_set(c, name, value, err, sizeof(err)), -EINVAL);
    if (msg != NULL)
        assert_string_equal(err, msg);
    else
        assert_non_null(strstr(err, name));
    assert_null(strchr(err, '\n'));
    free(c);
}

static void expect_set_ok(struct cfg *c, const char *name, const char *value)
{
    char err[CFG_ERR_MAX] = "";
    int rc = cfg_set(c, name, value, err, sizeof(err));

    if (rc != 0)
        fail_msg("%s=%s: %s", name, value, err);
}

static void clear_env(void)
{
    size_t i;

    for (i = 0; i < NOPTS; i++)
        unsetenv(opts[i].name);
}

static int setup_env(void **state)
{
    (void)state;
    clear_env();
    return 0;
}

/* Write text to a new temporary file; its name goes to path (>= 32 bytes). */
static void write_tmp(char *path, const char *text, size_t len)
{
    int fd;

    strcpy(path, "/tmp/cfg_test.XXXXXX");
    fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
}

static char *print_cfg(const struct cfg *c)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);

    assert_non_null(f);
    cfg_print(c, f);
    fclose(f);
    return buf;
}

/* ---- defaults ---- */

static void test_defaults(void **state)
{
    struct cfg *c = malloc(sizeof(*c));
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    char host[256] = "";
    char want[300];

    (void)state;
    cfg_defaults(c);
    assert_string_equal(c->listen, "0.0.0.0:8080");
    assert_string_equal(c->listen_host, "0.0.0.0");
    assert_int_equal(c->listen_port, 8080);
    assert_int_equal(c->workers, ncpu < 1 ? 1 : ncpu > 256 ? 256 : ncpu);
    assert_string_equal(c->storage_dir, "./var/uploads");
    assert_string_equal(c->database_url, "postgresql:///ringup?host=./var/run");
    assert_string_equal(c->db_read_url, "");
    assert_string_equal(c->redis_url, "unix://./var/run/redis.sock");
    assert_int_equal(c->db_max_connections, 200);
    assert_int_equal(c->db_pool_min, 20);
    assert_int_equal(c->db_pool_max, 200);
    assert_int_equal(c->db_connection_timeout, 30000);
    assert_int_equal(c->db_query_timeout, 60000);
    assert_int_equal(c->db_pool_idle_timeout, 30000);
    assert_int_equal(c->redis_max_connections, 100);
    assert_int_equal(c->redis_pool_min, 10);
    assert_int_equal(c->redis_pool_max, 100);
    assert_int_equal(c->redis_retry_attempts, 5);
    assert_int_equal(c->redis_retry_delay, 2000);
    assert_int_equal(c->redis_command_timeout, 10000);
    assert_int_equal(c->max_concurrent_jobs, 100);
    assert_int_equal(c->queue_concurrency, 50);
    assert_int_equal(c->max_queue_size, 10000);
    assert_int_equal(c->processing_timeout, 300000);
    assert_true(c->enable_queue_priority);
    assert_true(c->enable_backpressure);
    assert_int_equal(c->max_file_size, 10485760);
    assert_int_equal(c->max_files_per_request, 5);
    assert_true(c->enable_streaming_upload);
    assert_true(c->enable_memory_monitoring);
    assert_int_equal(c->memory_threshold, 80);
    assert_int_equal(c->upload_rate_limit, 100);
    assert_int_equal(c->global_rate_limit, 1000);
    assert_true(c->enable_adaptive_rate_limiting);
    assert_int_equal(c->connection_timeout, 30000);
    assert_int_equal(c->shutdown_timeout, 30000);
    assert_int_equal(c->job_lease, 30000);
    assert_string_equal(c->cors_origins, "*");
    assert_int_equal(c->max_connections, 20000);
    assert_true(c->fsync);
    assert_string_equal(c->allowed_types, "");
    assert_string_equal(c->processor_cmd, "");
    assert_false(c->allow_anonymous);
    assert_int_equal(c->tus_expiration, 86400000);
    assert_int_equal(c->log_level, CFG_LOG_INFO);
    assert_int_equal(c->log_format, CFG_LOG_JSON);
    assert_string_equal(c->signing_key, "");

    gethostname(host, sizeof(host) - 1);
    snprintf(want, sizeof(want), "%s:%ld", host[0] ? host : "localhost", (long)getpid());
    assert_string_equal(c->instance_id, want);
    free(c);
}

/* Every default text in the table parses, and the table is in API.md's order. */
static void test_table(void **state)
{
    static const char *const order[] = {"LISTEN",
                                        "WORKERS",
                                        "STORAGE_DIR",
                                        "DATABASE_URL",
                                        "DB_READ_URL",
                                        "REDIS_URL",
                                        "DB_MAX_CONNECTIONS",
                                        "DB_POOL_MIN",
                                        "DB_POOL_MAX",
                                        "DB_CONNECTION_TIMEOUT",
                                        "DB_QUERY_TIMEOUT",
                                        "DB_POOL_IDLE_TIMEOUT",
                                        "REDIS_MAX_CONNECTIONS",
                                        "REDIS_POOL_MIN",
                                        "REDIS_POOL_MAX",
                                        "REDIS_RETRY_ATTEMPTS",
                                        "REDIS_RETRY_DELAY",
                                        "REDIS_COMMAND_TIMEOUT",
                                        "MAX_CONCURRENT_JOBS",
                                        "QUEUE_CONCURRENCY",
                                        "MAX_QUEUE_SIZE",
                                        "PROCESSING_TIMEOUT",
                                        "ENABLE_QUEUE_PRIORITY",
                                        "ENABLE_BACKPRESSURE",
                                        "MAX_FILE_SIZE",
                                        "MAX_FILES_PER_REQUEST",
                                        "ENABLE_STREAMING_UPLOAD",
                                        "ENABLE_MEMORY_MONITORING",
                                        "MEMORY_THRESHOLD",
                                        "UPLOAD_RATE_LIMIT",
                                        "GLOBAL_RATE_LIMIT",
                                        "ENABLE_ADAPTIVE_RATE_LIMITING",
                                        "CONNECTION_TIMEOUT",
                                        "SHUTDOWN_TIMEOUT",
                                        "JOB_LEASE",
                                        "CORS_ORIGINS",
                                        "INSTANCE_ID",
                                        "MAX_CONNECTIONS",
                                        "FSYNC",
                                        "SPLICE_UPLOADS",
                                        "DIRECT_IO_THRESHOLD",
                                        "ALLOWED_TYPES",
                                        "PROCESSOR_CMD",
                                        "ALLOW_ANONYMOUS",
                                        "TUS_EXPIRATION",
                                        "LOG_LEVEL",
                                        "LOG_FORMAT",
                                        "SIGNING_KEY"};
    struct cfg *c = malloc(sizeof(*c));
    char err[CFG_ERR_MAX];
    size_t i;

    (void)state;
    assert_int_equal(NOPTS, sizeof(order) / sizeof(order[0]));
    for (i = 0; i < NOPTS; i++) {
        assert_string_equal(opts[i].name, order[i]);
        if (opts[i].def != NULL)
            assert_int_equal(set_value(c, &opts[i], opts[i].def, err, sizeof(err)), 0);
        if (opts[i].type == OPT_U32)
            assert_true(opts[i].max <= UINT32_MAX);
    }
    free(c);
}

/* ---- one setting at a time ---- */

static void test_integers(void **state)
{
    struct cfg *c = malloc(sizeof(*c));

    (void)state;
    cfg_defaults(c);
    expect_set_ok(c, "MAX_FILE_SIZE", "12");
    assert_int_equal(c->max_file_size, 12);
    expect_set_ok(c, "WORKERS", "0007");
    assert_int_equal(c->workers, 7);

    expect_set_err("MAX_FILE_SIZE", "12x", "MAX_FILE_SIZE: \"12x\" is not a non-negative integer");
    expect_set_err("MAX_FILE_SIZE", "", "MAX_FILE_SIZE: \"\" is not a non-negative integer");
    expect_set_err("WORKERS", "-1", "WORKERS: \"-1\" is not a non-negative integer");
    expect_set_err("WORKERS", "+1", NULL);
    expect_set_err("WORKERS", " 1", NULL);
    expect_set_err("WORKERS", "1 ", NULL);
    expect_set_err("WORKERS", "0x10", NULL);
    expect_set_err("WORKERS", "1e2", NULL);
    expect_set_err("WORKERS", "1.5", NULL);
    expect_set_err("WORKERS", "\xd9\xa3", NULL); /* Arabic-Indic three */
    free(c);
}

static void test_ranges(void **state)
{
    struct cfg *c = malloc(sizeof(*c));

    (void)state;
    cfg_defaults(c);
    expect_set_err("WORKERS", "0", "WORKERS: 0 is out of range 1..256");
    expect_set_ok(c, "WORKERS", "1");
    assert_int_equal(c->workers, 1);
    expect_set_ok(c, "WORKERS", "256");
    assert_int_equal(c->workers, 256);
    expect_set_err("WORKERS", "257", "WORKERS: 257 is out of range 1..256");

    expect_set_ok(c, "MEMORY_THRESHOLD", "100");
    expect_set_ok(c, "MEMORY_THRESHOLD", "1");
    expect_set_err("MEMORY_THRESHOLD", "101", "MEMORY_THRESHOLD: 101 is out of range 1..100");
    expect_set_err("MEMORY_THRESHOLD", "0", NULL);

    expect_set_ok(c, "MAX_FILE_SIZE", "1125899906842624");
    assert_int_equal(c->max_file_size, 1ULL << 50);
    expect_set_err("MAX_FILE_SIZE", "1125899906842625",
                   "MAX_FILE_SIZE: 1125899906842625 is out of range 1..1125899906842624");
    expect_set_err("MAX_FILE_SIZE", "0", NULL);

    expect_set_ok(c, "MAX_CONNECTIONS", "1000000");
    expect_set_err("MAX_CONNECTIONS", "1000001", NULL);

    /* 0 where it means something, refused where it would not. */
    expect_set_ok(c, "SHUTDOWN_TIMEOUT", "0");
    assert_int_equal(c->shutdown_timeout, 0);
    expect_set_ok(c, "REDIS_RETRY_ATTEMPTS", "0");
    expect_set_ok(c, "DB_POOL_MIN", "0");
    expect_set_err("DB_QUERY_TIMEOUT", "0", "DB_QUERY_TIMEOUT: 0 is out of range 1..86400000");
    expect_set_ok(c, "DB_QUERY_TIMEOUT", "86400000");
    expect_set_err("DB_QUERY_TIMEOUT", "86400001", NULL);
    expect_set_ok(c, "TUS_EXPIRATION", "315360000000");
    assert_int_equal(c->tus_expiration, 315360000000ULL);
    free(c);
}

static void test_overflow(void **state)
{
    struct cfg *c = malloc(sizeof(*c));
    uint64_t v = 0;

    (void)state;
    cfg_defaults(c);
    expect_set_err("MAX_FILE_SIZE", "18446744073709551616",
                   "MAX_FILE_SIZE: 18446744073709551616 is out of range 1..1125899906842624");
    expect_set_err("MAX_FILE_SIZE", "18446744073709551615", NULL);
    expect_set_err("TUS_EXPIRATION", "99999999999999999999999999", NULL);
    /* A uint32 setting must not wrap: 2^32 + 7 is not 7. */
    expect_set_err("WORKERS", "4294967303", "WORKERS: 4294967303 is out of range 1..256");
    /* Past 64 bits but not digits: the syntax error wins. */
    expect_set_err("MAX_FILE_SIZE", "184467440737095516160x",
                   "MAX_FILE_SIZE: \"184467440737095516160x\" is not a non-negative integer");

    assert_int_equal(parse_u64("18446744073709551615", &v), 0);
    assert_true(v == UINT64_MAX);
    assert_int_equal(parse_u64("18446744073709551616", &v), -ERANGE);
    assert_int_equal(parse_u64("", &v), -EINVAL);
    free(c);
}

static void test_bools(void **state)
{
    static const char *const yes[] = {"true", "TRUE", "True", "1", "yes", "YES", "on", "On"};
    static const char *const no[] = {"false", "FALSE", "0", "no", "No", "off", "OFF"};
    struct cfg *c = malloc(sizeof(*c));
    size_t i;

    (void)state;
    cfg_defaults(c);
    for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        c->fsync = false;
        expect_set_ok(c, "FSYNC", yes[i]);
        assert_true(c->fsync);
    }
    for (i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
        c->fsync = true;
        expect_set_ok(c, "FSYNC", no[i]);
        assert_false(c->fsync);
    }
    expect_set_err("FSYNC", "maybe",
                   "FSYNC: \"maybe\" is not a boolean (true/false, 1/0, yes/no, on/off)");
    expect_set_err("FSYNC", "", NULL);
    expect_set_err("FSYNC", "tru", NULL);
    expect_set_err("FSYNC", "true ", NULL);
    expect_set_err("ALLOW_ANONYMOUS", "2", NULL);
    free(c);
}

static void test_enums(void **state)
{
    struct cfg *c = malloc(sizeof(*c));

    (void)state;
    cfg_defaults(c);
    expect_set_ok(c, "LOG_LEVEL", "debug");
    assert_int_equal(c->log_level, CFG_LOG_DEBUG);
    expect_set_ok(c, "LOG_LEVEL", "warn");
    assert_int_equal(c->log_level, CFG_LOG_WARN);
    expect_set_ok(c, "LOG_LEVEL", "ERROR");
    assert_int_equal(c->log_level, CFG_LOG_ERROR);
    expect_set_ok(c, "LOG_LEVEL", "info");
    assert_int_equal(c->log_level, CFG_LOG_INFO);
    expect_set_ok(c, "LOG_FORMAT", "text");
    assert_int_equal(c->log_format, CFG_LOG_TEXT);
    expect_set_ok(c, "LOG_FORMAT", "json");
    assert_int_equal(c->log_format, CFG_LOG_JSON);
    expect_set_err("LOG_LEVEL", "verbose",
                   "LOG_LEVEL: \"verbose\" is not one of debug, info, warn, error");
    expect_set_err("LOG_FORMAT", "xml", "LOG_FORMAT: \"xml\" is not one of json, text");
    expect_set_err("LOG_LEVEL", "", NULL);
    free(c);
}

static void test_listen(void **state)
{
    struct cfg *c = malloc(sizeof(*c));

    (void)state;
    cfg_defaults(c);
    expect_set_ok(c, "LISTEN", "127.0.0.1:80");
    assert_string_equal(c->listen, "127.0.0.1:80");
    assert_string_equal(c->listen_host, "127.0.0.1");
    assert_int_equal(c->listen_port, 80);
    expect_set_ok(c, "LISTEN", "[::1]:8443");
    assert_string_equal(c->listen, "[::1]:8443");
    assert_string_equal(c->listen_host, "::1");
    assert_int_equal(c->listen_port, 8443);
    expect_set_ok(c, "LISTEN", "localhost:65535");
    assert_string_equal(c->listen_host, "localhost");
    assert_int_equal(c->listen_port, 65535);
    expect_set_ok(c, "LISTEN", "[fe80::1%eth0]:1");
    assert_string_equal(c->listen_host, "fe80::1%eth0");
    assert_int_equal(c->listen_port, 1);

    expect_set_err("LISTEN", "host:0", "LISTEN: port \"0\" is not a number in 1..65535");
    expect_set_err("LISTEN", "host:65536", NULL);
    expect_set_err("LISTEN", "host:", NULL);
    expect_set_err("LISTEN", "host:8x", NULL);
    expect_set_err("LISTEN", "host:+80", NULL);
    expect_set_err("LISTEN", "host",
                   "LISTEN: \"host\" has no port (expected host:port or [IPv6]:port)");
    expect_set_err("LISTEN", ":80", "LISTEN: \":80\" has an empty host");
    expect_set_err("LISTEN", "", NULL);
    expect_set_err("LISTEN", "::1:80", NULL);
    expect_set_err("LISTEN", "[::1]80", NULL);
    expect_set_err("LISTEN", "[::1]", NULL);
    expect_set_err("LISTEN", "[::1]:", NULL);
    expect_set_err("LISTEN", "[]:80", NULL);
    expect_set_err("LISTEN", "[[::1]:80", NULL);
    expect_set_err("LISTEN", "[::1:80", NULL);

    /* A refused value leaves all three fields as they were. */
    assert_string_equal(c->listen, "[fe80::1%eth0]:1");
    assert_string_equal(c->listen_host, "fe80::1%eth0");
    assert_int_equal(c->listen_port, 1);
    free(c);
}

static void test_strings(void **state)
{
    struct cfg *c = malloc(sizeof(*c));
    char *big = malloc(CFG_STR_MAX + 1);
    char err[CFG_ERR_MAX];

    (void)state;
    cfg_defaults(c);
    memset(big, 'a', CFG_STR_MAX);
    big[CFG_STR_MAX] = '\0';
    assert_int_equal(cfg_set(c, "PROCESSOR_CMD", big, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "PROCESSOR_CMD: value is longer than 1023 bytes");
    assert_string_equal(c->processor_cmd, "");
    big[CFG_STR_MAX - 1] = '\0';
    expect_set_ok(c, "PROCESSOR_CMD", big);
    assert_int_equal(strlen(c->processor_cmd), CFG_STR_MAX - 1);

    expect_set_ok(c, "DB_READ_URL", "");
    expect_set_ok(c, "CORS_ORIGINS", "");
    assert_string_equal(c->cors_origins, "");
    expect_set_err("STORAGE_DIR", "", "STORAGE_DIR: must not be empty");
    expect_set_err("DATABASE_URL", "", NULL);
    expect_set_err("REDIS_URL", "", NULL);
    expect_set_err("INSTANCE_ID", "", NULL);
    expect_set_ok(c, "STORAGE_DIR", "/srv/up loads");
    assert_string_equal(c->storage_dir, "/srv/up loads");
    free(big);
    free(c);
}

static void test_unknown_and_errors(void **state)
{
    struct cfg *c = malloc(sizeof(*c));
    struct cfg *before = malloc(sizeof(*c));
    char err[CFG_ERR_MAX];

    (void)state;
    cfg_defaults(c);
    memcpy(before, c, sizeof(*c));
    assert_int_equal(cfg_set(c, "NOPE", "1", err, sizeof(err)), -ENOENT);
    assert_string_equal(err, "unknown setting \"NOPE\"");
    assert_int_equal(cfg_set(c, "workers", "1", err, sizeof(err)), -ENOENT);

    /* A refused value changes nothing and its message stays on one line. */
    assert_int_equal(cfg_set(c, "WORKERS", "1\n2", err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "WORKERS: \"1\\n2\" is not a non-negative integer");
    assert_int_equal(cfg_set(c, "LOG_LEVEL", "a\"b\x01", err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "LOG_LEVEL: \"a\\\"b\\x01\" is not one of debug, info, warn, error");
    assert_memory_equal(c, before, sizeof(*c));

    /* Small or absent error buffers are fine. */
    assert_int_equal(cfg_set(c, "WORKERS", "x", err, 8), -EINVAL);
    assert_string_equal(err, "WORKERS");
    assert_int_equal(cfg_set(c, "WORKERS", "x", NULL, 0), -EINVAL);
    free(before);
    free(c);
}

/* ---- dotenv ---- */

static void test_env_text(void **state)
{
    struct rec r;
    char err[CFG_ERR_MAX];

    (void)state;
    assert_int_equal(parse_text(&r,
                                "# comment\n"
                                "\n"
                                "   \t\n"
                                "A=1\n"
                                "export B=two words  \n"
                                "  C = spaced # trailing comment\n"
                                "D=\"dq # not a comment\" # comment\n"
                                "E='sq \\n $X # literal'\n"
                                "F=\"esc \\\"q\\\" \\\\ \\n \\t \\x\"\n"
                                "G=\n"
                                "H=a#b\n"
                                "I=\"multi\n"
                                "line\"\n"
                                "lower.dot-dash=ok\n"
                                "export=notprefix\n"
                                "J=#x\n"
                                "K=last",
                                err),
                     0);
    assert_int_equal(r.n, 13);
    assert_string_equal(r.key[0], "A");
    assert_string_equal(r.val[0], "1");
    assert_string_equal(r.key[1], "B");
    assert_string_equal(r.val[1], "two words");
    assert_string_equal(r.key[2], "C");
    assert_string_equal(r.val[2], "spaced");
    assert_string_equal(r.val[3], "dq # not a comment");
    assert_string_equal(r.val[4], "sq \\n $X # literal");
    assert_string_equal(r.val[5], "esc \"q\" \\ \n \t \\x");
    assert_string_equal(r.key[6], "G");
    assert_string_equal(r.val[6], "");
    assert_string_equal(r.val[7], "a#b");
    assert_string_equal(r.val[8], "multi\nline");
    assert_string_equal(r.key[9], "lower.dot-dash");
    assert_string_equal(r.key[10], "export");
    assert_string_equal(r.val[10], "notprefix");
    assert_string_equal(r.val[11], "#x");
    assert_string_equal(r.key[12], "K");
    assert_string_equal(r.val[12], "last");
}

static void test_env_crlf(void **state)
{
    struct rec r;
    char err[CFG_ERR_MAX];

    (void)state;
    assert_int_equal(parse_text(&r,
                                "\xef\xbb\xbf"
                                "A=1\r\n\r\n# c\r\nB=\"x\r\ny\"\r\nC='q'\r\nD=  v  \r\nbad\r\n",
                                err),
                     -EBADMSG);
    assert_string_equal(err, "line 8: expected '=' after bad");
    assert_int_equal(r.n, 4);
    assert_string_equal(r.val[0], "1");
    assert_string_equal(r.val[1], "x\ny");
    assert_string_equal(r.val[2], "q");
    assert_string_equal(r.val[3], "v");
}

static void test_env_errors(void **state)
{
    struct rec r;
    char err[CFG_ERR_MAX];
    char nul[] = "A=1\nB=2\0\n";

    (void)state;
    assert_int_equal(parse_text(&r, "A=1\n\nJUSTAWORD\n", err), -EBADMSG);
    assert_string_equal(err, "line 3: expected '=' after JUSTAWORD");
    assert_int_equal(parse_text(&r, "A=1\nB=\"open\nC=2\nD=3\n", err), -EBADMSG);
    assert_string_equal(err, "line 2: unterminated double quote");
    assert_int_equal(parse_text(&r, "A='open", err), -EBADMSG);
    assert_string_equal(err, "line 1: unterminated single quote");
    assert_int_equal(parse_text(&r, "A=\"x\"y\n", err), -EBADMSG);
    assert_string_equal(err, "line 1: unexpected text after the closing quote");
    assert_int_equal(parse_text(&r, "\n1A=x\n", err), -EBADMSG);
    assert_string_equal(err, "line 2: expected NAME=value");
    assert_int_equal(parse_text(&r, "=x\n", err), -EBADMSG);
    assert_int_equal(parse_text(&r, "export\n", err), -EBADMSG);
    assert_int_equal(parse_text(&r, "A B=1\n", err), -EBADMSG);

    rec_init(&r);
    assert_int_equal(cfg_parse_env_text(nul, sizeof(nul) - 1, rec_kv, &r, err, sizeof(err)),
                     -EBADMSG);
    assert_string_equal(err, "line 2: NUL byte");
    assert_int_equal(r.n, 0);

    /* The callback's error comes back with its line, and stops the parse. */
    rec_init(&r)->fail_at = 1;
    assert_int_equal(cfg_parse_env_text("A=1\n# c\nB=2\nC=3\n", 16, rec_kv, &r, err, sizeof(err)),
                     -EINVAL);
    assert_string_equal(err, "line 3: B: refused");
    assert_int_equal(r.n, 1);

    /* The parser reads only len bytes. */
    assert_int_equal(cfg_parse_env_text("A=12345", 3, rec_kv, rec_init(&r), err, sizeof(err)), 0);
    assert_string_equal(r.val[0], "1");
}

/* Too long a value reaches the callback cut to CFG_STR_MAX bytes: cfg_set refuses it. */
static void test_env_long_value(void **state)
{
    size_t n = 3 * CFG_STR_MAX;
    char *text = malloc(n + 32);
    struct cfg *c = malloc(sizeof(*c));
    struct rec r;
    char err[CFG_ERR_MAX];

    (void)state;
    memcpy(text, "PROCESSOR_CMD=", 14);
    memset(text + 14, 'x', n);
    strcpy(text + 14 + n, "\nZ=1\n");
    assert_int_equal(parse_text(&r, text, err), 0);
    assert_int_equal(r.n, 2);
    assert_int_equal(strlen(r.val[0]), CFG_STR_MAX);
    assert_string_equal(r.val[1], "1");

    cfg_defaults(c);
    assert_int_equal(cfg_parse_env_text(text, strlen(text), file_kv, c, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "line 1: PROCESSOR_CMD: value is longer than 1023 bytes");

    /* Also for numbers: 1023 zeros and a 1 would be 1, but it is over the limit. */
    memcpy(text, "WORKERS=", 8);
    memset(text + 8, '0', CFG_STR_MAX);
    strcpy(text + 8 + CFG_STR_MAX, "1\n");
    assert_int_equal(cfg_parse_env_text(text, strlen(text), file_kv, c, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "line 1: WORKERS: value is longer than 1023 bytes");
    free(c);
    free(text);
}

/* ---- cfg_load ---- */

static void test_load_defaults(void **state)
{
    struct cfg *c = malloc(sizeof(*c));
    struct cfg *d = malloc(sizeof(*d));
    char err[CFG_ERR_MAX] = "";

    (void)state;
    assert_int_equal(cfg_load(c, 0, NULL, err, sizeof(err)), 0);
    cfg_defaults(d);
    assert_memory_equal(c, d, sizeof(*c));
    free(d);
    free(c);
}

static void test_precedence(void **state)
{
    struct cfg *c = malloc(sizeof(*c));
    char err[CFG_ERR_MAX] = "";
    char path[64];
    char *argv[6];
    const char *file = "WORKERS=3\nMAX_FILE_SIZE=100\nLOG_LEVEL=debug\nMEMORY_THRESHOLD=50\n"
                       "OTHER_PROGRAM_VAR=whatever: it is not ours\n";

    (void)state;
    write_tmp(path, file, strlen(file));
    setenv("WORKERS", "5", 1);
    setenv("MAX_FILE_SIZE", "200", 1);
    setenv("FSYNC", "no", 1);
    /* Flags before --env-file still win over it. */
    argv[0] = "--workers";
    argv[1] = "7";
    argv[2] = "--env-file";
    argv[3] = path;
    argv[4] = "--allow-anonymous";
    argv[5] = NULL;
    if (cfg_load(c, 5, argv, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_int_equal(c->workers, 7);               /* flag */
    assert_int_equal(c->max_file_size, 200);       /* environment */
    assert_false(c->fsync);                        /* environment */
    assert_int_equal(c->log_level, CFG_LOG_DEBUG); /* file */
    assert_int_equal(c->memory_threshold, 50);     /* file */
    assert_true(c->allow_anonymous);               /* bare boolean flag */
    assert_int_equal(c->max_connections, 20000);   /* default */

    argv[0] = "--env-file=";
    argv[1] = path;
    assert_int_equal(cfg_load(c, 1, argv, err, sizeof(err)), -EINVAL);
    assert_string_equal(err, "option --env-file needs a file name");
    unlink(path);
    free(c);
}

static void test_flags(void **state)
{
    struct cfg *c = malloc(sizeof(*c));
    char err[CFG_ERR_MAX] = "";
    char *a1[] = {"--max-file-size=5",
                  "--listen",
                  "[::1]:81",
                  "--fsync",
                  "--workers",
                  "2",
                  "--enable-backpressure",
                  "false",
                  "--allow-anonymous=yes",
                  "--cors-origins=",
                  "--processor-cmd",
                  "--weird",
                  "--log-level=WARN",
                  "--enable-queue-priority"};

    (void)state;
    if (cfg_load(c, sizeof(a1) / sizeof(a1[0]), a1, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_int_equal(c->max_file_size, 5);
    assert_string_equal(c->listen_host, "::1");
    assert_int_equal(c->listen_port, 81);
    assert_true(c->fsync);
    assert_int_equal(c->workers, 2);
    assert_false(c->enable_backpressure);
    assert_true(c->allow_anonymous);
    assert_string_equal(c->cors_origins, "");
    assert_string_equal(c->processor_cmd, "--weird");
    assert_int_equal(c->log_level, CFG_LOG_WARN);
    assert_true(c->enable_queue_priority);

    /* Later flags win over earlier ones. */
    char *a2[] = {"--workers=3", "--workers=4"};
    assert_int_equal(cfg_load(c, 2, a2, err, sizeof(err)), 0);
    assert_int_equal(c->workers, 4);
    free(c);
}

static void expect_load_err(int argc, char **argv, const char *msg)
{
    struct cfg *c = malloc(sizeof(*c));
    char err[CFG_ERR_MAX] = "";

    assert_int_equal(cfg_load(c, argc, argv, err, sizeof(err)), -EINVAL);
    if (strcmp(err, msg) != 0)
        fail_msg("got \"%s\", want \"%s\"", err, msg);
    free(c);
}

static void test_flag_errors(void **state)
{
    char *a_unknown[] = {"--foo"};
    char *a_unknown_eq[] = {"--workers=2", "--foo=secret"};
    char *a_upper[] = {"--WORKERS=2"};
    char *a_under[] = {"--max_file_size=2"};
    char *a_pos[] = {"--workers", "2", "x"};
    char *a_short[] = {"-w"};
    char *a_dash[] = {"-"};
    char *a_ddash[] = {"--"};
    char *a_missing[] = {"--workers"};
    char *a_bad[] = {"--max-file-size", "12x"};
    char *a_bool[] = {"--fsync", "maybe"};
    char *a_env_missing[] = {"--env-file"};

    (void)state;
    expect_load_err(1, a_unknown, "unknown option --foo");
    expect_load_err(2, a_unknown_eq, "unknown option --foo");
    expect_load_err(1, a_upper, "unknown option --WORKERS");
    expect_load_err(1, a_under, "unknown option --max_file_size");
    expect_load_err(3, a_pos, "unexpected argument \"x\"");
    expect_load_err(1, a_short, "unknown option -w");
    expect_load_err(1, a_dash, "unexpected argument \"-\"");
    expect_load_err(1, a_ddash, "unexpected argument \"--\"");
    expect_load_err(1, a_missing, "option --workers needs a value");
    expect_load_err(2, a_bad, "MAX_FILE_SIZE: \"12x\" is not a non-negative integer");
    expect_load_err(2, a_bool,
                    "FSYNC: \"maybe\" is not a boolean (true/false, 1/0, yes/no, on/off)");
    expect_load_err(1, a_env_missing, "option --env-file needs a value");
}

static void test_env_file(void **state)
{
    struct cfg *c = malloc(sizeof(*c));
    char err[CFG_ERR_MAX] = "";
    char path[64];
    char want[CFG_ERR_MAX];
    char *argv[] = {"--env-file", path};
    const char *good = "# deploy\r\nexport LISTEN=\"127.0.0.1:9000\"\r\nSIGNING_KEY='s3cr#t'\r\n"
                       "NOT_OURS=\"anything at all\"\r\n";
    const char *bad = "WORKERS=2\n\nMAX_FILE_SIZE=12x\n";
    const char *broken = "WORKERS=2\nSTORAGE_DIR=\"/srv\n";

    (void)state;
    write_tmp(path, good, strlen(good));
    if (cfg_load(c, 2, argv, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_string_equal(c->listen_host, "127.0.0.1");
    assert_int_equal(c->listen_port, 9000);
    assert_string_equal(c->signing_key, "s3cr#t");
    unlink(path);

    write_tmp(path, bad, strlen(bad));
    snprintf(want, sizeof(want), "%s:3: MAX_FILE_SIZE: \"12x\" is not a non-negative integer",
             path);
    expect_load_err(2, argv, want);
    unlink(path);

    write_tmp(path, broken, strlen(broken));
    snprintf(want, sizeof(want), "%s:2: unterminated double quote", path);
    expect_load_err(2, argv, want);
    unlink(path);

    /* Missing file: its name and the reason. */
    expect_load_err(2, argv, strcat(strcpy(want, path), ": No such file or directory"));
    argv[1] = "/";
    expect_load_err(2, argv, "/: Is a directory");
    argv[1] = path;
    free(c);
}

static void test_env_file_size(void **state)
{
    size_t n = ENV_FILE_MAX;
    char *text = malloc(n + 1);
    struct cfg *c = malloc(sizeof(*c));
    char err[CFG_ERR_MAX] = "";
    char path[64];
    char want[CFG_ERR_MAX];
    char *argv[] = {"--env-file", path};

    (void)state;
    /* Exactly 1 MiB: a comment line, then WORKERS=9. */
    memset(text, '#', n);
    memcpy(text + n - 11, "\nWORKERS=9\n", 11);
    write_tmp(path, text, n);
    if (cfg_load(c, 2, argv, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    assert_int_equal(c->workers, 9);
    unlink(path);

    text[n] = '\n';
    write_tmp(path, text, n + 1);
    snprintf(want, sizeof(want), "%s: larger than 1048576 bytes", path);
    expect_load_err(2, argv, want);
    unlink(path);
    free(c);
    free(text);
}

static void test_environment(void **state)
{
    char want[] = "WORKERS: \"\" is not a non-negative integer";
    struct cfg *c = malloc(sizeof(*c));
    char err[CFG_ERR_MAX] = "";

    (void)state;
    setenv("CORS_ORIGINS", "", 1);
    setenv("LOG_FORMAT", "text", 1);
    setenv("workers", "9", 1); /* not a name in the table: not read */
    assert_int_equal(cfg_load(c, 0, NULL, err, sizeof(err)), 0);
    assert_string_equal(c->cors_origins, "");
    assert_int_equal(c->log_format, CFG_LOG_TEXT);
    unsetenv("workers");

    setenv("WORKERS", "", 1);
    expect_load_err(0, NULL, want);
    setenv("WORKERS", "abc", 1);
    expect_load_err(0, NULL, "WORKERS: \"abc\" is not a non-negative integer");

    /* A bad environment value is an error even when a flag would override it. */
    char *argv[] = {"--workers", "2"};
    expect_load_err(2, argv, "WORKERS: \"abc\" is not a non-negative integer");
    clear_env();
    free(c);
}

static void test_cross_field(void **state)
{
    struct cfg *c = malloc(sizeof(*c));
    char err[CFG_ERR_MAX] = "";
    char *ok[] = {"--db-pool-min=200", "--db-pool-max=200", "--redis-pool-min=0",
                  "--redis-pool-max=100"};
    char *a1[] = {"--db-pool-min=30", "--db-pool-max=20"};
    char *a2[] = {"--db-pool-max=300"};
    char *a3[] = {"--redis-pool-min", "11", "--redis-pool-max", "10"};
    char *a4[] = {"--redis-max-connections=50"};
    char *a5[] = {"--db-max-connections=10", "--db-pool-max=10"};

    (void)state;
    if (cfg_load(c, 4, ok, err, sizeof(err)) != 0)
        fail_msg("%s", err);
    expect_load_err(2, a1, "DB_POOL_MIN: 30 is greater than DB_POOL_MAX (20)");
    expect_load_err(1, a2, "DB_POOL_MAX: 300 is greater than DB_MAX_CONNECTIONS (200)");
    expect_load_err(4, a3, "REDIS_POOL_MIN: 11 is greater than REDIS_POOL_MAX (10)");
    expect_load_err(1, a4, "REDIS_POOL_MAX: 100 is greater than REDIS_MAX_CONNECTIONS (50)");
    expect_load_err(2, a5, "DB_POOL_MIN: 20 is greater than DB_POOL_MAX (10)");
    free(c);
}

/* ---- cfg_print ---- */

static void test_print(void **state)
{
    struct cfg *c = malloc(sizeof(*c));
    char *out;
    char *line;
    size_t lines = 0;
    size_t i;

    (void)state;
    cfg_defaults(c);
    out = print_cfg(c);
    assert_true(strncmp(out, "LISTEN=0.0.0.0:8080\nWORKERS=", 28) == 0);
    assert_non_null(strstr(out, "\nDATABASE_URL=postgresql:///ringup?host=./var/run\n"));
    assert_non_null(strstr(out, "\nMAX_FILE_SIZE=10485760\n"));
    assert_non_null(strstr(out, "\nFSYNC=true\n"));
    assert_non_null(strstr(out, "\nALLOW_ANONYMOUS=false\n"));
    assert_non_null(strstr(out, "\nLOG_LEVEL=info\nLOG_FORMAT=json\nSIGNING_KEY=\n"));
    /* One line per setting, in table order. */
    for (line = out, i = 0; *line != '\0'; i++) {
        assert_true(i < NOPTS);
        assert_true(strncmp(line, opts[i].name, strlen(opts[i].name)) == 0);
        assert_int_equal(line[strlen(opts[i].name)], '=');
        line = strchr(line, '\n') + 1;
        lines++;
    }
    assert_int_equal(lines, NOPTS);
    free(out);

    expect_set_ok(c, "PROCESSOR_CMD", "a\nb");
    out = print_cfg(c);
    assert_non_null(strstr(out, "\nPROCESSOR_CMD=a\\nb\n"));
    free(out);
    free(c);
}

/* Set name to value and return what cfg_print shows for it. */
static void expect_printed(const char *name, const char *value, const char *shown)
{
    struct cfg *c = malloc(sizeof(*c));
    char want[CFG_STR_MAX * 2];
    char *out;

    cfg_defaults(c);
    expect_set_ok(c, name, value);
    out = print_cfg(c);
    snprintf(want, sizeof(want), "\n%s=%s\n", name, shown);
    if (strstr(out, want) == NULL)
        fail_msg("want %s in:\n%s", want, out);
    free(out);
    free(c);
}

static void test_print_redaction(void **state)
{
    (void)state;
    expect_printed("DATABASE_URL", "postgresql://user:SECRET@db.example:5432/ringup",
                   "postgresql://user:***@db.example:5432/ringup");
    expect_printed("DATABASE_URL", "postgres://user@db/ringup", "postgres://user@db/ringup");
    expect_printed("DATABASE_URL", "postgresql://u:pa?ss:w@rd@h/db", "postgresql://u:***@rd@h/db");
    expect_printed("DATABASE_URL", "postgresql://u:p@h/db?sslmode=require&password=SECRET&x=1",
                   "postgresql://u:***@h/db?sslmode=require&password=***&x=1");
    expect_printed("DATABASE_URL", "postgresql:///ringup?password=SECRET",
                   "postgresql:///ringup?password=***");
    expect_printed("DATABASE_URL", "host=db user=u password=SECRET dbname=ringup",
                   "host=db user=u password=*** dbname=ringup");
    expect_printed("DATABASE_URL", "host=db password = 'SE CR\\'ET' dbname=ringup",
                   "host=db password = *** dbname=ringup");
    expect_printed("DATABASE_URL", "PASSWORD=SECRET", "PASSWORD=***");
    expect_printed("DATABASE_URL", "host=db mypassword=visible", "host=db mypassword=visible");
    expect_printed("DB_READ_URL", "postgresql://r:SECRET@replica/db",
                   "postgresql://r:***@replica/db");
    expect_printed("REDIS_URL", "redis://:SECRET@localhost:6379/0",
                   "redis://:***@localhost:6379/0");
    expect_printed("REDIS_URL", "redis://default:SECRET@localhost:6379/0",
                   "redis://default:***@localhost:6379/0");
    expect_printed("REDIS_URL", "rediss://SECRET@cache:6380", "rediss://***@cache:6380");
    expect_printed("REDIS_URL", "unix://./var/run/redis.sock", "unix://./var/run/redis.sock");
    expect_printed("REDIS_URL", "redis://cache:6379?password=SECRET",
                   "redis://cache:6379?password=***");
    expect_printed("SIGNING_KEY", "SECRET", "***");
    expect_printed("STORAGE_DIR", "/srv/password=not-a-secret", "/srv/password=not-a-secret");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_integers),
        cmocka_unit_test(test_ranges),
        cmocka_unit_test(test_overflow),
        cmocka_unit_test(test_bools),
        cmocka_unit_test(test_enums),
        cmocka_unit_test(test_listen),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_unknown_and_errors),
        cmocka_unit_test(test_env_text),
        cmocka_unit_test(test_env_crlf),
        cmocka_unit_test(test_env_errors),
        cmocka_unit_test(test_env_long_value),
        cmocka_unit_test_setup(test_load_defaults, setup_env),
        cmocka_unit_test_setup(test_precedence, setup_env),
        cmocka_unit_test_setup(test_flags, setup_env),
        cmocka_unit_test_setup(test_flag_errors, setup_env),
        cmocka_unit_test_setup(test_env_file, setup_env),
        cmocka_unit_test_setup(test_env_file_size, setup_env),
        cmocka_unit_test_setup(test_environment, setup_env),
        cmocka_unit_test_setup(test_cross_field, setup_env),
        cmocka_unit_test(test_print),
        cmocka_unit_test(test_print_redaction),
    };

    return cmocka_run_group_tests(tests, NULL, NULL) == 0 ? 0 : 1;
}
