/* store: storage directory, ids and object keys. */
#include "engine/store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

static int dirfd_ = -1; /* set once by store_init, before workers start */

/* mkdir -p: each missing component of path, in order. */
static int mkdirs(const char *path)
{
    char buf[CFG_STR_MAX];
    size_t n = strlen(path);
    size_t i;

    if (n == 0 || n >= sizeof(buf))
        return -EINVAL;
    memcpy(buf, path, n + 1);
    for (i = 1; i <= n; i++) {
        if (buf[i] != '/' && buf[i] != '\0')
            continue;
        buf[i] = '\0';
        if (mkdir(buf, 0750) < 0 && errno != EEXIST)
            return -errno;
        buf[i] = path[i];
    }
    return 0;
}

int store_init(const struct cfg *c)
{
    int fd;
    int ret;

    ret = mkdirs(c->storage_dir);
    if (ret < 0)
        return ret;
    fd = open(c->storage_dir, O_DIRECTORY | O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (mkdirat(fd, "objects", 0750) < 0 && errno != EEXIST) {
        ret = -errno;
        close(fd);
        return ret;
    }
    dirfd_ = fd;
    return 0;
}

long store_init_shards(void)
{
    static const char hex[] = "0123456789abcdef";
    char path[32];
    long made = 0;
    int a;
    int b;

    for (a = 0; a < 256; a++) {
        snprintf(path, sizeof(path), "objects/%c%c", hex[a >> 4], hex[a & 15]);
        if (mkdirat(dirfd_, path, 0750) == 0)
            made++;
        else if (errno != EEXIST)
            return -errno;
        for (b = 0; b < 256; b++) {
            snprintf(path, sizeof(path), "objects/%c%c/%c%c", hex[a >> 4], hex[a & 15], hex[b >> 4],
                     hex[b & 15]);
            if (mkdirat(dirfd_, path, 0750) == 0)
                made++;
            else if (errno != EEXIST)
                return -errno;
        }
    }
    return made;
}

int store_dirfd(void)
{
    return dirfd_;
}

void store_new_id(char out[STORE_ID_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    unsigned o = 0;
    unsigned i;

    /* getrandom on a 16-byte request never blocks once the pool is ready (boot). */
    while (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
        ;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    for (i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            out[o++] = '-';
        out[o++] = hex[b[i] >> 4];
        out[o++] = hex[b[i] & 15];
    }
    out[o] = '\0';
}

void store_key(const char *id, char out[STORE_KEY_MAX])
{
    snprintf(out, STORE_KEY_MAX, "objects/%.2s/%.2s/%.36s", id, id + 2, id);
}

void store_shard_dirs(const char *id, char top[16], char sub[16])
{
    snprintf(top, 16, "objects/%.2s", id);
    snprintf(sub, 16, "objects/%.2s/%.2s", id, id + 2);
}

bool store_fits(uint64_t need)
{
    struct statvfs st;
    uint64_t avail;
    uint64_t floor;

    if (fstatvfs(dirfd_, &st) < 0)
        return true;
    avail = (uint64_t)st.f_bavail * st.f_frsize;
    floor = (uint64_t)st.f_blocks * st.f_frsize / 20;
    if (floor > STORE_RESERVE)
        floor = STORE_RESERVE;
    return avail >= need && avail - need >= floor;
}
