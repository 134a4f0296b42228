/*
 * redis_url: REDIS_URL parsed, without touching the network.
 *
 *   redis://[[user]:password@]host[:port][/db]     (port 6379, db 0)
 *   unix://PATH[?db=N&password=P]                  (PATH absolute, or relative to
 *                                                   the working directory)
 *
 * Percent-escapes in the user, password and path are decoded. rediss://
 * (TLS) is refused: Debian's hiredis 0.14 has no TLS.
 */
#ifndef ENGINE_DB_REDIS_URL_H
#define ENGINE_DB_REDIS_URL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REDIS_URL_PART_MAX 256 /* host, user, password */
#define REDIS_URL_PATH_MAX 108 /* sun_path */

struct redis_addr {
    bool is_unix;                      /* unix:// */
    char path[REDIS_URL_PATH_MAX];     /* socket path (unix) */
    char host[REDIS_URL_PART_MAX];     /* host name or literal address (tcp) */
    uint16_t port;                     /* tcp */
    uint32_t db;                       /* SELECT db (0: none sent) */
    char user[REDIS_URL_PART_MAX];     /* ACL user, "" for none */
    char password[REDIS_URL_PART_MAX]; /* AUTH password, "" for none */
};

/* Parse url into *a. Returns 0, or -EINVAL with a one-line reason in err. */
int redis_url_parse(const char *url, struct redis_addr *a, char *err, size_t errlen);

#endif /* ENGINE_DB_REDIS_URL_H */
