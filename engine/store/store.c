/* store: storage directory, ids and object keys. */
#include "engine/store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

static int dirfd_ = -1;     /* set once by store_init, before workers start */
static bool flink_ = false; /* linkat(AT_EMPTY_PATH) allowed; set by store_init */

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

/* Link a nameless file in dir by its descriptor, then remove the name again. */
static bool probe_flink(int dir)
{
    char name[64];
    bool ok;
    int fd;

    fd = openat(dir, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, 0600);
    if (fd < 0)
        return false;
    snprintf(name, sizeof(name), ".flink-probe-%ld", (long)getpid());
    ok = linkat(fd, "", dir, name, AT_EMPTY_PATH) == 0;
    if (ok)
        unlinkat(dir, name, 0);
    close(fd);
    return ok;
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
    flink_ = probe_flink(fd);
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

bool store_flink(void)
{
    return flink_;
}

void store_new_id(char out[STORE_ID_LEN + 1])
{
    static const char hex[] = "0123456789abcdef";
    unsigned char b[16];
    struct timespec ts;
    uint64_t ms;
    unsigned o = 0;
    unsigned i;

    /* getrandom on a 16-byte request never blocks once the pool is ready (boot). */
    while (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
        ;
    clock_gettime(CLOCK_REALTIME, &ts);
    ms = (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
    for (i = 0; i < 6; i++)
        b[i] = (unsigned char)(ms >> (40 - 8 * i));
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x70);
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
    snprintf(out, STORE_KEY_MAX, "objects/%.2s/%c%c/%.36s", id + 34, id[7], id[9], id);
}

void store_shard_dirs(const char *id, char top[16], char sub[16])
{
    snprintf(top, 16, "objects/%.2s", id + 34);
    snprintf(sub, 16, "objects/%.2s/%c%c", id + 34, id[7], id[9]);
}

int store_unlink(const char *key)
{
    return unlinkat(dirfd_, key, 0) < 0 ? -errno : 0;
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
