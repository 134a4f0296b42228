/*
 * redis_url: REDIS_URL to a struct redis_addr. Pure string work plus one
 * getcwd() for a relative unix socket path; see redis_url.h for the forms.
 */
#include "engine/db/redis_url.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int url_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Write a one-line reason into err and return -EINVAL. */
static int url_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -EINVAL;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Percent-decode s[0..n) into out (outlen bytes, NUL-terminated). Returns 0,
 * or -EINVAL for a bad escape, an escaped NUL or a result that does not fit.
 */
static int decode(const char *s, size_t n, char *out, size_t outlen)
{
    size_t o = 0;
    size_t i;

    for (i = 0; i < n; i++) {
        char c = s[i];
        if (c == '%') {
            int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
            int lo = hi >= 0 ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
                return -EINVAL;
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        if (o + 1 >= outlen)
            return -EINVAL;
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

/* A decimal number s[0..n) no greater than max into *v. */
static int number(const char *s, size_t n, unsigned long max, unsigned long *v)
{
    unsigned long x = 0;
    size_t i;

    if (n == 0 || n > 10)
        return -EINVAL;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        x = x * 10 + (unsigned long)(s[i] - '0');
    }
    if (x > max)
        return -EINVAL;
    *v = x;
    return 0;
}

/* host[:port] or [v6][:port] of a redis:// URL. */
static int parse_hostport(const char *s, size_t n, struct redis_addr *a, char *err, size_t errlen)
{
    const char *host = s;
    size_t hlen;
    const char *port = NULL;
    size_t plen = 0;
    unsigned long v;

    if (n > 0 && s[0] == '[') {
        const char *end = memchr(s, ']', n);
        if (end == NULL)
            return url_err(err, errlen, "REDIS_URL: unclosed '[' in the host");
        host = s + 1;
        hlen = (size_t)(end - host);
        if ((size_t)(end + 1 - s) < n) {
            if (end[1] != ':')
                return url_err(err, errlen, "REDIS_URL: junk after ']' in the host");
            port = end + 2;
            plen = n - (size_t)(port - s);
        }
    } else {
        const char *colon = memchr(s, ':', n);
        hlen = colon != NULL ? (size_t)(colon - s) : n;
        if (colon != NULL) {
            port = colon + 1;
            plen = n - (size_t)(port - s);
        }
    }
    if (hlen == 0)
        return url_err(err, errlen, "REDIS_URL: no host");
    if (hlen >= sizeof(a->host))
        return url_err(err, errlen, "REDIS_URL: host longer than %zu bytes", sizeof(a->host) - 1);
    if (memchr(host, '%', hlen) != NULL || memchr(host, '@', hlen) != NULL)
        return url_err(err, errlen, "REDIS_URL: bad character in the host");
    memcpy(a->host, host, hlen);
    a->host[hlen] = '\0';
    a->port = 6379;
    if (port != NULL) {
        if (number(port, plen, 65535, &v) < 0 || v == 0)
            return url_err(err, errlen, "REDIS_URL: port must be a number from 1 to 65535");
        a->port = (uint16_t)v;
    }
    return 0;
}

/* [[user]:password@] of a redis:// URL; no ':' means a bare password. */
static int parse_userinfo(const char *s, size_t n, struct redis_addr *a, char *err, size_t errlen)
{
    const char *colon = memchr(s, ':', n);

    if (colon == NULL) {
        if (decode(s, n, a->password, sizeof(a->password)) < 0)
            return url_err(err, errlen, "REDIS_URL: bad password (escape or length)");
        return 0;
    }
    if (decode(s, (size_t)(colon - s), a->user, sizeof(a->user)) < 0)
        return url_err(err, errlen, "REDIS_URL: bad user name (escape or length)");
    if (decode(colon + 1, n - (size_t)(colon + 1 - s), a->password, sizeof(a->password)) < 0)
        return url_err(err, errlen, "REDIS_URL: bad password (escape or length)");
    return 0;
}

static int parse_tcp(const char *s, struct redis_addr *a, char *err, size_t errlen)
{
    size_t n = strcspn(s, "/?#");
    const char *at = NULL;
    const char *p;
    unsigned long v;
    int ret;

    for (p = s; p < s + n; p++)
        if (*p == '@')
            at = p;
    if (at != NULL) {
        ret = parse_userinfo(s, (size_t)(at - s), a, err, errlen);
        if (ret < 0)
            return ret;
        ret = parse_hostport(at + 1, n - (size_t)(at + 1 - s), a, err, errlen);
    } else {
        ret = parse_hostport(s, n, a, err, errlen);
    }
    if (ret < 0)
        return ret;
    p = s + n;
    if (*p == '\0')
        return 0;
    if (*p != '/')
        return url_err(err, errlen, "REDIS_URL: a redis:// URL takes no query or fragment");
    p++;
    if (*p == '\0')
        return 0;
    if (number(p, strlen(p), UINT32_MAX, &v) < 0)
        return url_err(err, errlen, "REDIS_URL: the database after '/' must be a number");
    a->db = (uint32_t)v;
    return 0;
}

/* One name=value of a unix:// URL's query. */
static int parse_param(const char *s, size_t n, struct redis_addr *a, char *err, size_t errlen)
{
    const char *eq = memchr(s, '=', n);
    size_t nlen;
    const char *v;
    size_t vlen;
    unsigned long db;

    if (eq == NULL)
        return url_err(err, errlen, "REDIS_URL: query parameter without '='");
    nlen = (size_t)(eq - s);
    v = eq + 1;
    vlen = n - nlen - 1;
    if (nlen == 2 && memcmp(s, "db", 2) == 0) {
        if (number(v, vlen, UINT32_MAX, &db) < 0)
            return url_err(err, errlen, "REDIS_URL: db must be a number");
        a->db = (uint32_t)db;
        return 0;
    }
    if (nlen == 8 && memcmp(s, "password", 8) == 0) {
        if (decode(v, vlen, a->password, sizeof(a->password)) < 0)
            return url_err(err, errlen, "REDIS_URL: bad password (escape or length)");
        return 0;
    }
    if (nlen == 4 && memcmp(s, "user", 4) == 0) {
        if (decode(v, vlen, a->user, sizeof(a->user)) < 0)
            return url_err(err, errlen, "REDIS_URL: bad user name (escape or length)");
        return 0;
    }
    return url_err(err, errlen, "REDIS_URL: unknown query parameter (db, password, user)");
}

/* A relative socket path is taken from the working directory, as the default is. */
static int absolute(struct redis_addr *a, char *err, size_t errlen)
{
    char cwd[PATH_MAX];
    const char *rel = a->path;
    int n;

    if (a->path[0] == '/')
        return 0;
    if (getcwd(cwd, sizeof(cwd)) == NULL)
        return url_err(err, errlen, "REDIS_URL: cannot resolve a relative path: %s",
                       strerror(errno));
    if (rel[0] == '.' && rel[1] == '/')
        rel += 2;
    n = snprintf(cwd + strlen(cwd), sizeof(cwd) - strlen(cwd), "/%s", rel);
    if (n < 0 || strlen(cwd) >= sizeof(a->path))
        return url_err(err, errlen, "REDIS_URL: socket path longer than %zu bytes",
                       sizeof(a->path) - 1);
    memcpy(a->path, cwd, strlen(cwd) + 1);
    return 0;
}

static int parse_unix(const char *s, struct redis_addr *a, char *err, size_t errlen)
{
    size_t n = strcspn(s, "?");
    const char *q;
    int ret;

    a->is_unix = true;
    if (n == 0)
        return url_err(err, errlen, "REDIS_URL: no socket path after unix://");
    if (decode(s, n, a->path, sizeof(a->path)) < 0)
        return url_err(err, errlen, "REDIS_URL: bad socket path (escape, or over %zu bytes)",
                       sizeof(a->path) - 1);
    q = s + n;
    while (*q != '\0') {
        size_t len;
        q++;
        len = strcspn(q, "&");
        ret = parse_param(q, len, a, err, errlen);
        if (ret < 0)
            return ret;
        q += len;
    }
    return absolute(a, err, errlen);
}

int redis_url_parse(const char *url, struct redis_addr *a, char *err, size_t errlen)
{
    memset(a, 0, sizeof(*a));
    if (errlen > 0)
        err[0] = '\0';
    if (strncmp(url, "redis://", 8) == 0)
        return parse_tcp(url + 8, a, err, errlen);
    if (strncmp(url, "unix://", 7) == 0)
        return parse_unix(url + 7, a, err, errlen);
    if (strncmp(url, "rediss://", 9) == 0)
        return url_err(err, errlen,
                       "REDIS_URL: rediss:// (TLS) is not supported: hiredis 0.14 "
                       "has no TLS");
    return url_err(err, errlen, "REDIS_URL: must start with redis:// or unix://");
}
