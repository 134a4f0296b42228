/*
 * cfg: the settings table of API.md, one parser per value type, the dotenv
 * reader, the layering default < env file < environment < flag, and the
 * redacting printer.
 *
 * Everything is driven by one static const table (opts[]) in API.md's order,
 * so a new setting is one line here plus one field in struct cfg. There is no
 * mutable global state and nothing is allocated except the env file's read
 * buffer, so tests and fuzzers may call any function any number of times.
 * Runs on the main thread at start-up, before the workers exist.
 */
#include "engine/core/cfg.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define MS_MAX 86400000ULL         /* one day: the longest timeout in ms */
#define TUS_MS_MAX 315360000000ULL /* ten years in ms: TUS_EXPIRATION's cap */
#define FILE_SIZE_MAX (1ULL << 50) /* 1 PiB: MAX_FILE_SIZE's cap */
#define ENV_FILE_MAX (1024 * 1024) /* largest --env-file accepted, bytes */
#define KEY_MAX 127                /* longest variable name in an env file */
#define VAL_BUF (CFG_STR_MAX + 1)  /* env file value scratch, see parse_env() */
#define SHOW_BUF 280               /* room for a value quoted in an error */
#define INSTANCE_HOST_MAX 256      /* hostname part of the default INSTANCE_ID */

enum opt_type {
    OPT_STR,    /* char[CFG_STR_MAX]; min..max bound the length in bytes */
    OPT_U32,    /* uint32_t, decimal, min..max */
    OPT_U64,    /* uint64_t, decimal, min..max */
    OPT_BOOL,   /* bool: true/false, 1/0, yes/no, on/off */
    OPT_ENUM,   /* an int-sized enum whose values index names[] */
    OPT_LISTEN, /* LISTEN: sets listen, listen_host and listen_port together */
};

enum opt_flag {
    OPT_REDACT_URL = 1, /* cfg_print hides the password of a URL or conninfo */
    OPT_SECRET = 2,     /* cfg_print shows only whether it is set */
};

/* One setting: how to parse it, where it lives, what it starts as. */
struct opt {
    const char *name;         /* environment variable; the flag is its kebab-case */
    enum opt_type type;       /* how the text is parsed */
    size_t off;               /* offset of the field in struct cfg */
    const char *def;          /* default text, NULL when cfg_defaults computes it */
    uint64_t min;             /* smallest value (OPT_STR: shortest length) */
    uint64_t max;             /* largest value (OPT_STR: longest length) */
    const char *const *names; /* OPT_ENUM: value names, NULL-terminated */
    unsigned flags;           /* enum opt_flag bits, for cfg_print */
};

/*
 * The offset of field f, which must have type t: _Generic fails to compile on
 * a mismatch, so a table line cannot write a uint64_t into a uint32_t.
 */
#define FIELD(f, t)                                                                                \
    (offsetof(struct cfg, f) + 0 * sizeof(char[_Generic(((struct cfg *)0)->f, t : 1)]))

/* Table lines for the common types; each expands inside a { } initializer. */
#define STR(n, f, d, minlen, fl) n, OPT_STR, FIELD(f, char *), d, minlen, CFG_STR_MAX - 1, NULL, fl
#define U32(n, f, d, lo, hi) n, OPT_U32, FIELD(f, uint32_t), d, lo, hi, NULL, 0
#define U64(n, f, d, lo, hi) n, OPT_U64, FIELD(f, uint64_t), d, lo, hi, NULL, 0
#define BOOL(n, f, d) n, OPT_BOOL, FIELD(f, bool), d, 0, 1, NULL, 0

_Static_assert(sizeof(enum cfg_log_level) == sizeof(int), "OPT_ENUM stores an int");
_Static_assert(sizeof(enum cfg_log_format) == sizeof(int), "OPT_ENUM stores an int");

/* Indexed by enum cfg_log_level and enum cfg_log_format. */
static const char *const level_names[] = {"debug", "info", "warn", "error", NULL};
static const char *const format_names[] = {"json", "text", NULL};

/*
 * API.md's settings, in its order. Ranges: timeouts are 1 ms .. one day; 0 is
 * allowed only where it has a meaning, REDIS_RETRY_ATTEMPTS (never retry),
 * REDIS_RETRY_DELAY (retry at once), SHUTDOWN_TIMEOUT (close requests in
 * flight at once), the pool minimums (open connections on demand only) and
 * UPLOAD_RATE_LIMIT / GLOBAL_RATE_LIMIT (no such limit).
 * Strings that name something the server cannot run without (STORAGE_DIR,
 * DATABASE_URL, REDIS_URL, INSTANCE_ID) must not be empty.
 */
static const struct opt opts[] = {
    {"LISTEN", OPT_LISTEN, FIELD(listen, char *), "0.0.0.0:8080", 0, 0, NULL, 0},
    {U32("WORKERS", workers, NULL, 1, 256)},
    {STR("STORAGE_DIR", storage_dir, "./var/uploads", 1, 0)},
    {STR("DATABASE_URL", database_url, "postgresql:///ringup?host=./var/run", 1, OPT_REDACT_URL)},
    {STR("DB_READ_URL", db_read_url, "", 0, OPT_REDACT_URL)},
    {STR("REDIS_URL", redis_url, "unix://./var/run/redis.sock", 1, OPT_REDACT_URL)},
    {U32("DB_MAX_CONNECTIONS", db_max_connections, "200", 1, 100000)},
    {U32("DB_POOL_MIN", db_pool_min, "20", 0, 100000)},
    {U32("DB_POOL_MAX", db_pool_max, "200", 1, 100000)},
    {U32("DB_CONNECTION_TIMEOUT", db_connection_timeout, "30000", 1, MS_MAX)},
    {U32("DB_QUERY_TIMEOUT", db_query_timeout, "60000", 1, MS_MAX)},
    {U32("DB_POOL_IDLE_TIMEOUT", db_pool_idle_timeout, "30000", 1, MS_MAX)},
    {U32("REDIS_MAX_CONNECTIONS", redis_max_connections, "100", 1, 100000)},
    {U32("REDIS_POOL_MIN", redis_pool_min, "10", 0, 100000)},
    {U32("REDIS_POOL_MAX", redis_pool_max, "100", 1, 100000)},
    {U32("REDIS_RETRY_ATTEMPTS", redis_retry_attempts, "5", 0, 1000)},
    {U32("REDIS_RETRY_DELAY", redis_retry_delay, "2000", 0, MS_MAX)},
    {U32("REDIS_COMMAND_TIMEOUT", redis_command_timeout, "10000", 1, MS_MAX)},
    {U32("MAX_CONCURRENT_JOBS", max_concurrent_jobs, "100", 1, 1000000)},
    {U32("QUEUE_CONCURRENCY", queue_concurrency, "50", 1, 1000000)},
    {U32("MAX_QUEUE_SIZE", max_queue_size, "10000", 1, 100000000)},
    {U32("PROCESSING_TIMEOUT", processing_timeout, "300000", 1, MS_MAX)},
    {BOOL("ENABLE_QUEUE_PRIORITY", enable_queue_priority, "true")},
    {BOOL("ENABLE_BACKPRESSURE", enable_backpressure, "true")},
    {U64("MAX_FILE_SIZE", max_file_size, "10485760", 1, FILE_SIZE_MAX)},
    {U32("MAX_FILES_PER_REQUEST", max_files_per_request, "5", 1, 1000)},
    {BOOL("ENABLE_STREAMING_UPLOAD", enable_streaming_upload, "true")},
    {BOOL("ENABLE_MEMORY_MONITORING", enable_memory_monitoring, "true")},
    {U32("MEMORY_THRESHOLD", memory_threshold, "80", 1, 100)},
    {U32("UPLOAD_RATE_LIMIT", upload_rate_limit, "100", 0, 1000000000)},
    {U32("GLOBAL_RATE_LIMIT", global_rate_limit, "1000", 0, 1000000000)},
    {BOOL("ENABLE_ADAPTIVE_RATE_LIMITING", enable_adaptive_rate_limiting, "true")},
    {U32("CONNECTION_TIMEOUT", connection_timeout, "30000", 1, MS_MAX)},
    {U32("SHUTDOWN_TIMEOUT", shutdown_timeout, "30000", 0, MS_MAX)},
    {U32("JOB_LEASE", job_lease, "30000", 1, MS_MAX)},
    {STR("CORS_ORIGINS", cors_origins, "*", 0, 0)},
    {STR("INSTANCE_ID", instance_id, NULL, 1, 0)},
    {U32("MAX_CONNECTIONS", max_connections, "20000", 1, 1000000)},
    {BOOL("FSYNC", fsync, "true")},
    {BOOL("SPLICE_UPLOADS", splice_uploads, "true")},
    {U64("DIRECT_IO_THRESHOLD", direct_io_threshold, "262144", 0, FILE_SIZE_MAX)},
    {STR("ALLOWED_TYPES", allowed_types, "", 0, 0)},
    {STR("PROCESSOR_CMD", processor_cmd, "", 0, 0)},
    {BOOL("ALLOW_ANONYMOUS", allow_anonymous, "false")},
    {U64("TUS_EXPIRATION", tus_expiration, "86400000", 1, TUS_MS_MAX)},
    {"LOG_LEVEL", OPT_ENUM, FIELD(log_level, enum cfg_log_level), "info", 0, 3, level_names, 0},
    {"LOG_FORMAT", OPT_ENUM, FIELD(log_format, enum cfg_log_format), "json", 0, 1, format_names, 0},
    {STR("SIGNING_KEY", signing_key, "", 0, OPT_SECRET)},
};

#define NOPTS (sizeof(opts) / sizeof(opts[0]))

/* Write one line into err; a NULL or empty err is allowed and ignored. */
__attribute__((format(printf, 3, 4))) static void errf(char *err, size_t errlen, const char *fmt,
                                                       ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/*
 * Render n bytes of s for an error message or cfg_print: control bytes (and,
 * when quoted, '"' and '\') escaped, so a hostile value can never break the
 * one-line rule; cut with "..." when buf is full. Returns buf.
 */
static const char *show(char *buf, size_t buflen, const char *s, size_t n, bool quoted)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    size_t i;

    if (quoted)
        buf[o++] = '"';
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];

        /* Keep room for the longest escape, "...", the quote and the NUL. */
        if (o + 4 + 3 + 2 > buflen) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (ch == '\n' || ch == '\r' || ch == '\t' || (quoted && (ch == '"' || ch == '\\'))) {
            buf[o++] = '\\';
            buf[o++] = ch == '\n' ? 'n' : ch == '\r' ? 'r' : ch == '\t' ? 't' : (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            buf[o++] = '\\';
            buf[o++] = 'x';
            buf[o++] = hex[ch >> 4];
            buf[o++] = hex[ch & 15];
        } else {
            buf[o++] = (char)ch;
        }
    }
    if (quoted)
        buf[o++] = '"';
    buf[o] = '\0';
    return buf;
}

static const char *showq(char *buf, size_t buflen, const char *s)
{
    return show(buf, buflen, s, strlen(s), true);
}

static void *field(struct cfg *c, const struct opt *o)
{
    return (char *)c + o->off;
}

static const void *cfield(const struct cfg *c, const struct opt *o)
{
    return (const char *)c + o->off;
}

static const struct opt *find_opt(const char *name)
{
    size_t i;

    for (i = 0; i < NOPTS; i++)
        if (strcmp(opts[i].name, name) == 0)
            return &opts[i];
    return NULL;
}

/*
 * Plain decimal digits only: a sign, spaces, "0x" or an exponent are not
 * numbers here, because strtoull would silently accept " -1" as 2^64-1.
 * Returns 0, -EINVAL (not digits) or -ERANGE (more than 64 bits).
 */
static int parse_u64(const char *s, uint64_t *out)
{
    uint64_t v = 0;

    if (*s == '\0')
        return -EINVAL;
    for (; *s != '\0'; s++) {
        unsigned d = (unsigned char)*s - '0';

        if (d > 9)
            return -EINVAL;
        if (v > (UINT64_MAX - d) / 10) {
            /* Keep scanning: "99999999999999999999x" is not a number at all. */
            for (; *s != '\0'; s++)
                if ((unsigned char)*s - '0' > 9)
                    return -EINVAL;
            return -ERANGE;
        }
        v = v * 10 + d;
    }
    *out = v;
    return 0;
}

static int parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    size_t i;

    for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -EINVAL;
}

/*
 * Split "host:port" or "[v6]:port" into host (brackets removed, hostlen >=
 * strlen(s)+1) and a port 1..65535. An unbracketed host with a ':' is refused:
 * "::1:80" could mean two things. Returns 0 or -EINVAL with err set.
 */
static int parse_listen(const char *name, const char *s, char *host, uint16_t *port, char *err,
                        size_t errlen)
{
    char shown[SHOW_BUF];
    const char *h = s;
    const char *hend;
    const char *p;
    uint64_t v;

    if (*s == '[') {
        h = s + 1;
        hend = strchr(h, ']');
        if (hend == NULL || hend[1] != ':') {
            errf(err, errlen, "%s: %s is not [IPv6]:port", name, showq(shown, sizeof(shown), s));
            return -EINVAL;
        }
        p = hend + 2;
        if (memchr(h, '[', (size_t)(hend - h)) != NULL) {
            errf(err, errlen, "%s: %s is not [IPv6]:port", name, showq(shown, sizeof(shown), s));
            return -EINVAL;
        }
    } else {
        hend = strrchr(s, ':');
        if (hend == NULL) {
            errf(err, errlen, "%s: %s has no port (expected host:port or [IPv6]:port)", name,
                 showq(shown, sizeof(shown), s));
            return -EINVAL;
        }
        if (memchr(s, ':', (size_t)(hend - s)) != NULL || memchr(s, ']', (size_t)(hend - s))) {
            errf(err, errlen, "%s: %s: an IPv6 address needs brackets, as in [::1]:8080", name,
                 showq(shown, sizeof(shown), s));
            return -EINVAL;
        }
        p = hend + 1;
    }
    if (hend == h) {
        errf(err, errlen, "%s: %s has an empty host", name, showq(shown, sizeof(shown), s));
        return -EINVAL;
    }
    if (parse_u64(p, &v) < 0 || v < 1 || v > 65535) {
        errf(err, errlen, "%s: port %s is not a number in 1..65535", name,
             showq(shown, sizeof(shown), p));
        return -EINVAL;
    }
    memcpy(host, h, (size_t)(hend - h));
    host[hend - h] = '\0';
    *port = (uint16_t)v;
    return 0;
}

/*
 * Parse value for o and store it in c. On failure c is left untouched and err
 * names the variable. Every type refuses CFG_STR_MAX bytes or more, which is
 * what lets parse_env() hand over a cut-off value safely.
 */
static int set_value(struct cfg *c, const struct opt *o, const char *value, char *err,
                     size_t errlen)
{
    char shown[SHOW_BUF];
    size_t len = strlen(value);
    uint64_t v;
    bool b;
    int rc;

    if (len >= CFG_STR_MAX) {
        errf(err, errlen, "%s: value is longer than %d bytes", o->name, CFG_STR_MAX - 1);
        return -EINVAL;
    }
    switch (o->type) {
    case OPT_STR:
        if (len < o->min) {
            errf(err, errlen, "%s: must not be empty", o->name);
            return -EINVAL;
        }
        memcpy(field(c, o), value, len + 1);
        return 0;
    case OPT_U32:
    case OPT_U64:
        rc = parse_u64(value, &v);
        if (rc == -EINVAL) {
            errf(err, errlen, "%s: %s is not a non-negative integer", o->name,
                 showq(shown, sizeof(shown), value));
            return -EINVAL;
        }
        if (rc < 0 || v < o->min || v > o->max) {
            errf(err, errlen, "%s: %s is out of range %llu..%llu", o->name,
                 show(shown, sizeof(shown), value, len, false), (unsigned long long)o->min,
                 (unsigned long long)o->max);
            return -EINVAL;
        }
        if (o->type == OPT_U32)
            *(uint32_t *)field(c, o) = (uint32_t)v;
        else
            *(uint64_t *)field(c, o) = v;
        return 0;
    case OPT_BOOL:
        if (parse_bool(value, &b) < 0) {
            errf(err, errlen, "%s: %s is not a boolean (true/false, 1/0, yes/no, on/off)", o->name,
                 showq(shown, sizeof(shown), value));
            return -EINVAL;
        }
        *(bool *)field(c, o) = b;
        return 0;
    case OPT_ENUM: {
        char list[128] = "";
        size_t used = 0;
        int i;

        for (i = 0; o->names[i] != NULL; i++) {
            if (strcasecmp(value, o->names[i]) == 0) {
                memcpy(field(c, o), &i, sizeof(i));
                return 0;
            }
            used += (size_t)snprintf(list + used, sizeof(list) - used, "%s%s", i ? ", " : "",
                                     o->names[i]);
        }
        errf(err, errlen, "%s: %s is not one of %s", o->name, showq(shown, sizeof(shown), value),
             list);
        return -EINVAL;
    }
    case OPT_LISTEN: {
        char host[CFG_STR_MAX];
        uint16_t port;

        rc = parse_listen(o->name, value, host, &port, err, errlen);
        if (rc < 0)
            return rc;
        memcpy(c->listen, value, len + 1);
        memcpy(c->listen_host, host, strlen(host) + 1);
        c->listen_port = port;
        return 0;
    }
    }
    errf(err, errlen, "%s: unsupported type", o->name);
    return -EINVAL;
}

void cfg_defaults(struct cfg *c)
{
    char host[INSTANCE_HOST_MAX];
    char err[CFG_ERR_MAX];
    long ncpu;
    size_t i;

    memset(c, 0, sizeof(*c));
    for (i = 0; i < NOPTS; i++)
        if (opts[i].def != NULL)
            (void)set_value(c, &opts[i], opts[i].def, err, sizeof(err));

    ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    c->workers = ncpu < 1 ? 1 : ncpu > 256 ? 256 : (uint32_t)ncpu;

    /* gethostname() need not terminate a truncated name. */
    if (gethostname(host, sizeof(host)) < 0 || host[0] == '\0')
        strcpy(host, "localhost");
    host[sizeof(host) - 1] = '\0';
    snprintf(c->instance_id, sizeof(c->instance_id), "%s:%ld", host, (long)getpid());
}

int cfg_set(struct cfg *c, const char *name, const char *value, char *err, size_t errlen)
{
    char shown[SHOW_BUF];
    const struct opt *o = find_opt(name);

    if (o == NULL) {
        errf(err, errlen, "unknown setting %s", showq(shown, sizeof(shown), name));
        return -ENOENT;
    }
    return set_value(c, o, value, err, errlen);
}

/* ---- dotenv ---- */

/* The value being decoded; holds at most CFG_STR_MAX bytes plus a NUL. */
struct envval {
    char buf[VAL_BUF]; /* decoded bytes, NUL-terminated when handed over */
    size_t len;        /* bytes in buf */
};

static void val_put(struct envval *v, char ch)
{
    if (v->len < VAL_BUF - 1)
        v->buf[v->len++] = ch;
}

static bool is_blank(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\r';
}

static bool is_key_start(char ch)
{
    return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || ch == '_';
}

static bool is_key_char(char ch)
{
    return is_key_start(ch) || (ch >= '0' && ch <= '9') || ch == '.' || ch == '-';
}

/* Returns the '\n' ending the line at p, or end. */
static const char *line_end(const char *p, const char *end)
{
    const char *nl = memchr(p, '\n', (size_t)(end - p));

    return nl != NULL ? nl : end;
}

/*
 * One error line for the dotenv parser: "FILE:LINE: msg" when the text came
 * from a file, "line LINE: msg" otherwise.
 */
__attribute__((format(printf, 5, 6))) static void
env_fail(char *err, size_t errlen, const char *origin, unsigned line, const char *fmt, ...)
{
    char msg[CFG_ERR_MAX];
    char shown[SHOW_BUF];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (origin != NULL)
        errf(err, errlen, "%s:%u: %s", show(shown, sizeof(shown), origin, strlen(origin), false),
             line, msg);
    else
        errf(err, errlen, "line %u: %s", line, msg);
}

/*
 * Decode a quoted value starting at the quote *pp. Double quotes know \n \r
 * \t \" \\ (any other backslash stays as it is); single quotes are literal.
 * Either may span lines; CRLF inside becomes LF. Advances *pp past the
 * closing quote and counts newlines into *line. Returns false when the text
 * ends first.
 */
static bool read_quoted(const char **pp, const char *end, unsigned *line, struct envval *v)
{
    const char *p = *pp;
    char q = *p++;

    while (p < end && *p != q) {
        char ch = *p++;

        if (ch == '\n') {
            (*line)++;
        } else if (ch == '\r' && p < end && *p == '\n') {
            continue;
        } else if (ch == '\\' && q == '"' && p < end) {
            switch (*p) {
            case 'n':
                ch = '\n';
                break;
            case 'r':
                ch = '\r';
                break;
            case 't':
                ch = '\t';
                break;
            case '"':
            case '\\':
                ch = *p;
                break;
            default:
                val_put(v, ch);
                continue;
            }
            p++;
        }
        val_put(v, ch);
    }
    if (p == end)
        return false;
    *pp = p + 1;
    return true;
}

/*
 * The dotenv parser behind cfg_parse_env_text; origin (a file name or NULL)
 * only shapes error messages.
 *
 * The value scratch lives on the stack and holds CFG_STR_MAX bytes: a longer
 * value reaches fn cut to exactly CFG_STR_MAX bytes, a length no setting
 * accepts, so fn still refuses it for a known key and may ignore it for an
 * unknown one. Failing the parse instead would reject .env files that carry,
 * say, another program's PEM key.
 */
static int parse_env(const char *text, size_t len, const char *origin, cfg_kv_fn fn, void *ud,
                     char *err, size_t errlen)
{
    const char *p = text;
    const char *end = text + len;
    const char *nul = memchr(text, '\0', len);
    unsigned line = 1;
    char key[KEY_MAX + 1];
    char msg[CFG_ERR_MAX];
    struct envval v;

    /* A NUL would silently cut a C string short, so refuse it up front. */
    if (nul != NULL) {
        for (; p < nul; p++)
            line += *p == '\n';
        env_fail(err, errlen, origin, line, "NUL byte");
        return -EBADMSG;
    }
    if (len >= 3 && memcmp(p, "\xef\xbb\xbf", 3) == 0)
        p += 3;

    while (p < end) {
        unsigned start;
        size_t klen = 0;
        int rc;

        while (p < end && is_blank(*p))
            p++;
        if (p == end)
            break;
        if (*p == '\n') {
            line++;
            p++;
            continue;
        }
        if (*p == '#') {
            p = line_end(p, end);
            continue;
        }
        start = line;
        if (end - p > 6 && memcmp(p, "export", 6) == 0 && (p[6] == ' ' || p[6] == '\t')) {
            p += 6;
            while (p < end && is_blank(*p))
                p++;
        }
        if (p == end || !is_key_start(*p)) {
            env_fail(err, errlen, origin, start, "expected NAME=value");
            return -EBADMSG;
        }
        while (p < end && is_key_char(*p)) {
            if (klen == KEY_MAX) {
                env_fail(err, errlen, origin, start, "variable name longer than %d bytes", KEY_MAX);
                return -EBADMSG;
            }
            key[klen++] = *p++;
        }
        key[klen] = '\0';
        while (p < end && is_blank(*p))
            p++;
        if (p == end || *p != '=') {
            env_fail(err, errlen, origin, start, "expected '=' after %s", key);
            return -EBADMSG;
        }
        p++;
        while (p < end && is_blank(*p))
            p++;

        v.len = 0;
        if (p < end && (*p == '"' || *p == '\'')) {
            bool dq = *p == '"';

            if (!read_quoted(&p, end, &line, &v)) {
                env_fail(err, errlen, origin, start, "unterminated %s quote",
                         dq ? "double" : "single");
                return -EBADMSG;
            }
            while (p < end && is_blank(*p))
                p++;
            if (p < end && *p == '#')
                p = line_end(p, end);
            if (p < end && *p != '\n') {
                env_fail(err, errlen, origin, line, "unexpected text after the closing quote");
                return -EBADMSG;
            }
        } else {
            /* Unquoted: up to the end of the line or a '#' after a blank. */
            const char *s = p;
            const char *last = p;

            while (p < end && *p != '\n') {
                if (*p == '#' && is_blank(p[-1])) {
                    p = line_end(p, end);
                    break;
                }
                if (!is_blank(*p))
                    last = p + 1;
                p++;
            }
            for (; s < last; s++)
                val_put(&v, *s);
        }
        v.buf[v.len] = '\0';

        msg[0] = '\0';
        rc = fn(ud, key, v.buf, msg, sizeof(msg));
        if (rc < 0) {
            env_fail(err, errlen, origin, start, "%s", msg[0] != '\0' ? msg : "rejected");
            return rc;
        }
    }
    return 0;
}

int cfg_parse_env_text(const char *text, size_t len, cfg_kv_fn fn, void *ud, char *err,
                       size_t errlen)
{
    return parse_env(text, len, NULL, fn, ud, err, errlen);
}

/* An env file's assignment: a known name must be valid, others are not ours. */
static int file_kv(void *ud, const char *key, const char *value, char *err, size_t errlen)
{
    int rc = cfg_set(ud, key, value, err, errlen);

    return rc == -ENOENT ? 0 : rc;
}

/*
 * Read path (at most ENV_FILE_MAX bytes) and apply it to c. The read buffer is
 * this module's only allocation and is freed before returning. Returns 0 or a
 * negative errno with err naming the file (and line).
 */
static int load_env_file(struct cfg *c, const char *path, char *err, size_t errlen)
{
    char shown[SHOW_BUF];
    char *buf;
    size_t len = 0;
    int fd;
    int rc;

    show(shown, sizeof(shown), path, strlen(path), false);
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        errf(err, errlen, "%s: %s", shown, strerror(-rc));
        return rc;
    }
    buf = malloc(ENV_FILE_MAX + 1);
    if (buf == NULL) {
        rc = -ENOMEM;
        errf(err, errlen, "%s: %s", shown, strerror(-rc));
        goto out_close;
    }
    /* Read one byte past the limit to tell "exactly 1 MiB" from "more". */
    while (len <= ENV_FILE_MAX) {
        ssize_t n = read(fd, buf + len, ENV_FILE_MAX + 1 - len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            errf(err, errlen, "%s: %s", shown, strerror(-rc));
            goto out_free_buf;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (len > ENV_FILE_MAX) {
        rc = -EFBIG;
        errf(err, errlen, "%s: larger than %d bytes", shown, ENV_FILE_MAX);
        goto out_free_buf;
    }
    rc = parse_env(buf, len, path, file_kv, c, err, errlen);

out_free_buf:
    free(buf);
out_close:
    close(fd);
    return rc;
}

/* ---- command line ---- */

/* One parsed command-line option. */
struct flag {
    const struct opt *opt; /* the setting, NULL for --env-file */
    const char *value;     /* its text, inside argv or a literal */
};

/* Does the flag name (n bytes, no "--") spell env, the variable, in kebab-case? */
static bool flag_is(const char *flag, size_t n, const char *env)
{
    size_t i;

    if (strlen(env) != n)
        return false;
    for (i = 0; i < n; i++) {
        char e = env[i];
        char want = e == '_' ? '-' : (e >= 'A' && e <= 'Z') ? (char)(e - 'A' + 'a') : e;

        if (flag[i] != want)
            return false;
    }
    return true;
}

/*
 * Parse argv[*i] (and its value, advancing *i past it) into f. A boolean
 * without "=" takes the next argument as its value unless there is none or it
 * starts with "--": then it means true. Returns 0 or -EINVAL with err set.
 */
static int next_flag(int argc, char **argv, int *i, struct flag *f, char *err, size_t errlen)
{
    char shown[SHOW_BUF];
    const char *arg = argv[*i];
    const char *name;
    const char *eq;
    size_t n;
    size_t k;

    if (arg[0] != '-' || arg[1] == '\0' || strcmp(arg, "--") == 0) {
        errf(err, errlen, "unexpected argument %s", showq(shown, sizeof(shown), arg));
        return -EINVAL;
    }
    if (arg[1] != '-') {
        errf(err, errlen, "unknown option %s", show(shown, sizeof(shown), arg, strlen(arg), false));
        return -EINVAL;
    }
    name = arg + 2;
    eq = strchr(name, '=');
    n = eq != NULL ? (size_t)(eq - name) : strlen(name);

    f->opt = NULL;
    if (!flag_is(name, n, "ENV_FILE")) {
        for (k = 0; k < NOPTS && f->opt == NULL; k++)
            if (flag_is(name, n, opts[k].name))
                f->opt = &opts[k];
        if (f->opt == NULL) {
            errf(err, errlen, "unknown option --%s", show(shown, sizeof(shown), name, n, false));
            return -EINVAL;
        }
    }

    if (eq != NULL) {
        f->value = eq + 1;
    } else if (f->opt != NULL && f->opt->type == OPT_BOOL &&
               (*i + 1 >= argc || strncmp(argv[*i + 1], "--", 2) == 0)) {
        f->value = "true";
    } else if (*i + 1 < argc) {
        f->value = argv[++*i];
    } else {
        errf(err, errlen, "option --%s needs a value", show(shown, sizeof(shown), name, n, false));
        return -EINVAL;
    }
    if (f->opt == NULL && f->value[0] == '\0') {
        errf(err, errlen, "option --env-file needs a file name");
        return -EINVAL;
    }
    return 0;
}

/* Pool bounds: min <= max <= cap, each error naming the variable at fault. */
static int check_pool(const char *prefix, uint32_t min, uint32_t max, uint32_t cap, char *err,
                      size_t errlen)
{
    if (min > max) {
        errf(err, errlen, "%s_POOL_MIN: %u is greater than %s_POOL_MAX (%u)", prefix, min, prefix,
             max);
        return -EINVAL;
    }
    if (max > cap) {
        errf(err, errlen, "%s_POOL_MAX: %u is greater than %s_MAX_CONNECTIONS (%u)", prefix, max,
             prefix, cap);
        return -EINVAL;
    }
    return 0;
}

int cfg_load(struct cfg *c, int argc, char **argv, char *err, size_t errlen)
{
    const char *env_file = NULL;
    struct flag f;
    size_t k;
    int i;

    cfg_defaults(c);

    /*
     * First pass: syntax only, and find --env-file. The flags are applied
     * last so that they win whatever their position in argv.
     */
    for (i = 0; i < argc; i++) {
        if (next_flag(argc, argv, &i, &f, err, errlen) < 0)
            return -EINVAL;
        if (f.opt == NULL)
            env_file = f.value;
    }

    if (env_file != NULL && load_env_file(c, env_file, err, errlen) < 0)
        return -EINVAL;

    for (k = 0; k < NOPTS; k++) {
        const char *v = getenv(opts[k].name);

        if (v != NULL && set_value(c, &opts[k], v, err, errlen) < 0)
            return -EINVAL;
    }

    for (i = 0; i < argc; i++) {
        if (next_flag(argc, argv, &i, &f, err, errlen) < 0)
            return -EINVAL;
        if (f.opt != NULL && set_value(c, f.opt, f.value, err, errlen) < 0)
            return -EINVAL;
    }

    if (check_pool("DB", c->db_pool_min, c->db_pool_max, c->db_max_connections, err, errlen) < 0)
        return -EINVAL;
    /* Each worker owns a slice of the connections: it needs one at least. */
    if (c->db_pool_max < c->workers) {
        errf(err, errlen, "DB_POOL_MAX: %u is less than WORKERS (%u); each worker needs one",
             c->db_pool_max, c->workers);
        return -EINVAL;
    }
    if (check_pool("REDIS", c->redis_pool_min, c->redis_pool_max, c->redis_max_connections, err,
                   errlen) < 0)
        return -EINVAL;
    return 0;
}

/* Rewrite a relative "host=./dir" (libpq takes only absolute socket dirs) against cwd. */
static int absolute_host(char *url, const char *name, char *err, size_t errlen)
{
    char cwd[CFG_STR_MAX];
    char out[CFG_STR_MAX];
    char *h = strstr(url, "host=.");
    const char *rest;
    int n;

    if (h == NULL)
        return 0;
    if (getcwd(cwd, sizeof(cwd)) == NULL) {
        errf(err, errlen, "%s: cannot resolve a relative host: %s", name, strerror(errno));
        return -EINVAL;
    }
    rest = h + 5;
    if (rest[0] == '.' && rest[1] == '/')
        rest += 2;
    n = snprintf(out, sizeof(out), "%.*s%s/%s", (int)(h + 5 - url), url, cwd, rest);
    if (n < 0 || (size_t)n >= sizeof(out)) {
        errf(err, errlen, "%s: too long once its relative host is made absolute", name);
        return -EINVAL;
    }
    memcpy(url, out, (size_t)n + 1);
    return 0;
}

int cfg_resolve_paths(struct cfg *c, char *err, size_t errlen)
{
    if (absolute_host(c->database_url, "DATABASE_URL", err, errlen) < 0 ||
        absolute_host(c->db_read_url, "DB_READ_URL", err, errlen) < 0)
        return -EINVAL;
    return 0;
}

/* ---- printing ---- */

/* Write n bytes of s with control bytes escaped, so each setting stays one line. */
static void put_text(FILE *out, const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];

        if (ch == '\n')
            fputs("\\n", out);
        else if (ch == '\r')
            fputs("\\r", out);
        else if (ch == '\t')
            fputs("\\t", out);
        else if (ch < 0x20 || ch == 0x7f)
            fprintf(out, "\\x%02x", ch);
        else
            fputc(ch, out);
    }
}

/*
 * Length of the "password" keyword with its '=' at p ("password=",
 * "password = "), or 0. It must start a word: at the beginning, after
 * blanks (conninfo) or after '?' or '&' (URL query).
 */
static size_t password_key(const char *s, const char *p)
{
    const char *q;

    if (p > s && p[-1] != ' ' && p[-1] != '\t' && p[-1] != '?' && p[-1] != '&')
        return 0;
    if (strncasecmp(p, "password", 8) != 0)
        return 0;
    q = p + 8;
    while (*q == ' ' || *q == '\t')
        q++;
    if (*q != '=')
        return 0;
    q++;
    while (*q == ' ' || *q == '\t')
        q++;
    return (size_t)(q - p);
}

/*
 * Print a URL or libpq conninfo with its password replaced by "***":
 * scheme://user:SECRET@host, password=SECRET in a URL query or a conninfo
 * (quoted 'with spaces' too). The userinfo ends at the first '@' or '/' as
 * libpq reads it, so what libpq takes for the password is what is hidden. A
 * redis userinfo without ':' is a bare password and is hidden whole.
 */
static void print_redacted(FILE *out, const char *s)
{
    const char *p = s;
    const char *sep = strstr(s, "://");
    const char *query = NULL;

    if (sep != NULL) {
        const char *auth = sep + 3;
        const char *at = auth + strcspn(auth, "@/");

        if (*at == '@') {
            const char *colon = memchr(auth, ':', (size_t)(at - auth));
            const char *from = colon != NULL ? colon + 1 : NULL;

            if (from == NULL && (strncmp(s, "redis", 5) == 0 || strncmp(s, "unix", 4) == 0))
                from = auth;
            if (from != NULL) {
                put_text(out, s, (size_t)(from - s));
                fputs("***", out);
                p = at;
            }
            query = strchr(at, '?');
        } else {
            query = strchr(auth, '?');
        }
    }

    while (*p != '\0') {
        size_t k = password_key(s, p);

        if (k == 0) {
            put_text(out, p, 1);
            p++;
            continue;
        }
        put_text(out, p, k);
        fputs("***", out);
        p += k;
        if (query != NULL && p > query) {
            p += strcspn(p, "&#");
        } else if (*p == '\'') {
            /* conninfo quoting: '...' with \' and \\ escapes */
            for (p++; *p != '\0' && *p != '\''; p++)
                if (*p == '\\' && p[1] != '\0')
                    p++;
            if (*p == '\'')
                p++;
        } else {
            p += strcspn(p, " \t");
        }
    }
}

void cfg_print(const struct cfg *c, FILE *out)
{
    size_t k;

    for (k = 0; k < NOPTS; k++) {
        const struct opt *o = &opts[k];
        const void *f = cfield(c, o);
        int e;

        fprintf(out, "%s=", o->name);
        switch (o->type) {
        case OPT_STR:
        case OPT_LISTEN:
            if (o->flags & OPT_SECRET)
                fputs(*(const char *)f != '\0' ? "***" : "", out);
            else if (o->flags & OPT_REDACT_URL)
                print_redacted(out, f);
            else
                put_text(out, f, strlen(f));
            break;
        case OPT_U32:
            fprintf(out, "%u", *(const uint32_t *)f);
            break;
        case OPT_U64:
            fprintf(out, "%llu", (unsigned long long)*(const uint64_t *)f);
            break;
        case OPT_BOOL:
            fputs(*(const bool *)f ? "true" : "false", out);
            break;
        case OPT_ENUM:
            memcpy(&e, f, sizeof(e));
            fputs(e >= 0 && (uint64_t)e <= o->max ? o->names[e] : "?", out);
            break;
        }
        fputc('\n', out);
    }
}
