/*
 * log: structured logs to stderr, JSON lines (LOG_FORMAT=json) or
 * "key=value" text. Fields are given as a format of space-separated
 * key=%conv pairs: log_info("listening", "addr=%s workers=%u", a, n).
 * Supported conversions: %s %.*s %d %u %ld %lu %lld %llu %zu.
 *
 * A worker thread logs into its own buffer (log_attach), flushed by the
 * worker's ring with an asynchronous write: no worker blocks on stderr.
 * Other threads write directly.
 */
#ifndef ENGINE_CORE_LOG_H
#define ENGINE_CORE_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "engine/core/cfg.h"

#define LOG_LINE_MAX 4096  /* longest line; longer ones are cut */
#define LOG_BUF_SIZE 65536 /* per-worker buffer */

/* A worker's log buffer: lines collect in buf[active], the other may be in flight. */
struct log_buf {
    char *buf[2];          /* two LOG_BUF_SIZE buffers */
    size_t len;            /* bytes collected in buf[active] */
    int active;            /* buffer collecting lines */
    unsigned long dropped; /* lines dropped because both buffers were full */
};

/* Set level, format and the instance name once, before any thread starts. */
void log_setup(enum cfg_log_level level, enum cfg_log_format format, const char *instance);

/* Route this thread's lines into b (NULL: write directly). */
void log_attach(struct log_buf *b);

bool log_enabled(enum cfg_log_level level);

__attribute__((format(printf, 3, 4))) void log_emit(enum cfg_log_level level, const char *msg,
                                                    const char *fmt, ...);

/* Arguments are evaluated only when the level is on (access lines are not free). */
#define log_debug(msg, ...)                                                                        \
    do {                                                                                           \
        if (log_enabled(CFG_LOG_DEBUG))                                                            \
            log_emit(CFG_LOG_DEBUG, msg, __VA_ARGS__);                                             \
    } while (0)
#define log_info(msg, ...)                                                                         \
    do {                                                                                           \
        if (log_enabled(CFG_LOG_INFO))                                                             \
            log_emit(CFG_LOG_INFO, msg, __VA_ARGS__);                                              \
    } while (0)
#define log_warn(msg, ...) log_emit(CFG_LOG_WARN, msg, __VA_ARGS__)
#define log_error(msg, ...) log_emit(CFG_LOG_ERROR, msg, __VA_ARGS__)

/* Out of memory: log and abort (allocation failures are not recoverable here). */
__attribute__((noreturn)) void log_oom(void);

/*
 * Format one line into out (without writing it). Returns its length (a cut
 * line still ends in a newline). Exposed for tests.
 */
size_t log_format(char *out, size_t cap, enum cfg_log_level level, const char *msg, const char *fmt,
                  va_list ap);

#endif /* ENGINE_CORE_LOG_H */
