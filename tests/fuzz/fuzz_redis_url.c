/*
 * Fuzz target for engine/db/redis_url.c: REDIS_URL comes from the operator,
 * but its parser must hold for any bytes. The first byte picks a scheme to
 * prefix (so the fuzzer reaches deep states quickly); the rest, up to the
 * first NUL, is the URL.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/db/redis_url.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every field of a parsed address is a terminated string inside its array. */
static void check(const struct redis_addr *a)
{
    if (memchr(a->host, '\0', sizeof(a->host)) == NULL ||
        memchr(a->path, '\0', sizeof(a->path)) == NULL ||
        memchr(a->user, '\0', sizeof(a->user)) == NULL ||
        memchr(a->password, '\0', sizeof(a->password)) == NULL)
        abort();
    if (a->is_unix ? a->path[0] != '/' : (a->host[0] == '\0' || a->port == 0))
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const schemes[] = {"", "redis://", "unix://", "rediss://"};
    struct redis_addr a;
    char url[1024];
    char err[256];
    const char *pre;
    size_t n;
    int ret;

    if (size < 1)
        return 0;
    pre = schemes[data[0] & 3];
    n = size - 1 < sizeof(url) - 16 ? size - 1 : sizeof(url) - 16;
    memcpy(url, pre, strlen(pre));
    memcpy(url + strlen(pre), data + 1, n);
    url[strlen(pre) + n] = '\0';
    ret = redis_url_parse(url, &a, err, sizeof(err));
    if (ret == 0)
        check(&a);
    else if (ret != -EINVAL || err[0] == '\0' || memchr(err, '\0', sizeof(err)) == NULL)
        abort();
    return 0;
}
