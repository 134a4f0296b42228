/* log: structured line formatting and per-thread sinks. */
#include "engine/core/log.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "proto/json.h"

static enum cfg_log_level min_level = CFG_LOG_INFO;
static enum cfg_log_format format = CFG_LOG_JSON;
static char instance[128] = "ringup";
static __thread struct log_buf *sink;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_setup(enum cfg_log_level level, enum cfg_log_format fmt, const char *inst)
{
    min_level = level;
    format = fmt;
    snprintf(instance, sizeof(instance), "%s", inst);
}

void log_attach(struct log_buf *b)
{
    sink = b;
}

bool log_enabled(enum cfg_log_level level)
{
    return level >= min_level;
}

/* A bounded writer over the caller's line buffer. */
struct line {
    char *p;
    size_t len;
    size_t cap;
};

static void add(struct line *l, const char *s, size_t n)
{
    if (n > l->cap - l->len)
        n = l->cap - l->len;
    memcpy(l->p + l->len, s, n);
    l->len += n;
}

static void add_quoted(struct line *l, const char *s, size_t n)
{
    ssize_t r = json_quote(l->p + l->len, l->cap - l->len, s, n);

    if (r < 0) {
        /* Cut the value rather than drop the line. */
        if (n > 64)
            add_quoted(l, s, 64);
        return;
    }
    l->len += (size_t)r;
}

/* A text value needs quotes if it is empty or holds space, '"' or '='. */
static void add_text_value(struct line *l, const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (s[i] == ' ' || s[i] == '"' || s[i] == '=' || (unsigned char)s[i] < 0x20)
            break;
    if (n == 0 || i < n)
        add_quoted(l, s, n);
    else
        add(l, s, n);
}

static void add_key(struct line *l, const char *k, size_t n)
{
    if (format == CFG_LOG_JSON) {
        add(l, ",", 1);
        add_quoted(l, k, n);
        add(l, ":", 1);
    } else {
        add(l, " ", 1);
        add(l, k, n);
        add(l, "=", 1);
    }
}

static void add_num(struct line *l, const char *conv, va_list *ap)
{
    char tmp[32];
    int n;

    if (strcmp(conv, "d") == 0)
        n = snprintf(tmp, sizeof(tmp), "%d", va_arg(*ap, int));
    else if (strcmp(conv, "u") == 0)
        n = snprintf(tmp, sizeof(tmp), "%u", va_arg(*ap, unsigned));
    else if (strcmp(conv, "ld") == 0)
        n = snprintf(tmp, sizeof(tmp), "%ld", va_arg(*ap, long));
    else if (strcmp(conv, "lu") == 0)
        n = snprintf(tmp, sizeof(tmp), "%lu", va_arg(*ap, unsigned long));
    else if (strcmp(conv, "lld") == 0)
        n = snprintf(tmp, sizeof(tmp), "%lld", va_arg(*ap, long long));
    else if (strcmp(conv, "llu") == 0)
        n = snprintf(tmp, sizeof(tmp), "%llu", va_arg(*ap, unsigned long long));
    else if (strcmp(conv, "zu") == 0)
        n = snprintf(tmp, sizeof(tmp), "%zu", va_arg(*ap, size_t));
    else
        n = snprintf(tmp, sizeof(tmp), "null");
    add(l, tmp, (size_t)n);
}

/* Walk "k=%conv k2=%conv" and append each field. */
static void add_fields(struct line *l, const char *fmt, va_list *ap)
{
    const char *p = fmt;

    while (*p != '\0') {
        const char *k;
        const char *eq;
        char conv[4];
        size_t cn = 0;

        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        k = p;
        eq = strchr(p, '=');
        if (eq == NULL || eq[1] != '%')
            break;
        add_key(l, k, (size_t)(eq - k));
        p = eq + 2;
        if (p[0] == '.' && p[1] == '*' && p[2] == 's') {
            int n = va_arg(*ap, int);
            const char *s = va_arg(*ap, const char *);
            if (format == CFG_LOG_JSON)
                add_quoted(l, s, (size_t)n);
            else
                add_text_value(l, s, (size_t)n);
            p += 3;
            continue;
        }
        if (*p == 's') {
            const char *s = va_arg(*ap, const char *);
            if (s == NULL)
                s = "";
            if (format == CFG_LOG_JSON)
                add_quoted(l, s, strlen(s));
            else
                add_text_value(l, s, strlen(s));
            p++;
            continue;
        }
        while (*p != '\0' && *p != ' ' && cn < sizeof(conv) - 1)
            conv[cn++] = *p++;
        conv[cn] = '\0';
        add_num(l, conv, ap);
    }
}

size_t log_format(char *out, size_t cap, enum cfg_log_level level, const char *msg, const char *fmt,
                  va_list ap)
{
    struct line l = {out, 0, cap - 1};
    struct timespec ts;
    struct tm tm;
    char when[40];
    va_list aq;
    int n;

    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    n = snprintf(when, sizeof(when), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900,
                 tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    if (format == CFG_LOG_JSON) {
        add(&l, "{\"ts\":\"", 7);
        add(&l, when, (size_t)n);
        add(&l, "\",\"level\":\"", 11);
        add(&l, level_names[level], strlen(level_names[level]));
        add(&l, "\",\"msg\":", 8);
        add_quoted(&l, msg, strlen(msg));
        add_key(&l, "instance", 8);
        add_quoted(&l, instance, strlen(instance));
    } else {
        add(&l, when, (size_t)n);
        add(&l, " ", 1);
        add(&l, level_names[level], strlen(level_names[level]));
        add(&l, " ", 1);
        add(&l, msg, strlen(msg));
    }
    va_copy(aq, ap);
    add_fields(&l, fmt, &aq);
    va_end(aq);
    if (format == CFG_LOG_JSON)
        add(&l, "}", 1);
    out[l.len++] = '\n';
    return l.len;
}

void log_emit(enum cfg_log_level level, const char *msg, const char *fmt, ...)
{
    char line[LOG_LINE_MAX];
    va_list ap;
    size_t n;

    if (level < min_level)
        return;
    va_start(ap, fmt);
    n = log_format(line, sizeof(line), level, msg, fmt, ap);
    va_end(ap);
    if (sink != NULL) {
        if (n > LOG_BUF_SIZE - sink->len) {
            sink->dropped++;
            return;
        }
        memcpy(sink->buf[sink->active] + sink->len, line, n);
        sink->len += n;
        return;
    }
    while (write(STDERR_FILENO, line, n) < 0 && errno == EINTR)
        ;
}

void log_oom(void)
{
    static const char m[] = "{\"level\":\"error\",\"msg\":\"out of memory\"}\n";

    if (write(STDERR_FILENO, m, sizeof(m) - 1) < 0) {
        /* Nothing more to do: we abort either way. */
    }
    abort();
}
