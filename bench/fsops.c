/*
 * fsops: the filesystem's own ceiling for small files, with no network, no HTTP and
 * no database: THREADS threads each store files of SIZE bytes as fast as they can for
 * SECS seconds, with plain blocking system calls. It bounds what any server can reach
 * for small uploads on this filesystem and this machine.
 *
 *   fsops [--threads N] [--secs S] [--warmup S] [--size B] [--mode tmpfile|rename] DIR
 *
 * tmpfile  ringup's steps: open(O_TMPFILE) in the shard directory of a fresh id (ringup's
 *          own ids and shards, engine/store.c; the tree made by `ringup init-storage`),
 *          write, linkat by descriptor where the kernel allows it (else through
 *          /proc/self/fd/N) to objects/ab/cd/<id>, close.
 * rename   nginx's dav PUT steps: open(O_CREAT|O_EXCL) in DIR/fsops/tmp, write, close,
 *          rename into the one directory DIR/fsops/files.
 *
 * The first WARMUP seconds (default 1) are not counted: directory blocks read back after
 * a dropped page cache would otherwise weigh on the first second. Prints one line: mode
 * threads size secs files files_per_s cpu_us_per_file, where the CPU is this process's
 * user + system time (the filesystem's journal threads and writeback are not counted).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/store/store.h"

enum mode { MODE_TMPFILE, MODE_RENAME };

static struct {
    unsigned threads;
    double secs;
    double warmup;
    size_t size;
    enum mode mode;
    const char *dir;
} O = {.threads = 0, .secs = 5, .warmup = 1, .size = 16384, .mode = MODE_TMPFILE};

static atomic_bool stop_;
static atomic_int failed_;
static atomic_int flink_ = 1; /* linkat(AT_EMPTY_PATH) allowed, until it says otherwise */

struct worker {
    pthread_t th;
    unsigned idx;
    atomic_ulong files;
    char *body;
};

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int fail(const char *what, const char *path)
{
    fprintf(stderr, "fsops: %s %s: %s\n", what, path, strerror(errno));
    atomic_store(&failed_, 1);
    atomic_store(&stop_, true);
    return -1;
}

static int write_all(int fd, const char *p, size_t n, const char *path)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);

        if (w < 0) {
            if (errno == EINTR)
                continue;
            return fail("write", path);
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* One file the way ringup stores it: nameless in its shard, linked when complete. */
static int store_tmpfile(struct worker *w)
{
    char id[STORE_ID_LEN + 1];
    char key[STORE_KEY_MAX];
    char top[16];
    char sub[16];
    char shard[512];
    char proc[64];
    char name[600];
    int fd;
    int rc = 0;

    (void)w;
    store_new_id(id);
    store_key(id, key);
    store_shard_dirs(id, top, sub);
    snprintf(shard, sizeof(shard), "%s/%s", O.dir, sub);
    snprintf(name, sizeof(name), "%s/%s", O.dir, key);
    fd = open(shard, O_TMPFILE | O_WRONLY | O_CLOEXEC, 0640);
    if (fd < 0)
        return fail("open O_TMPFILE", shard);
    if (write_all(fd, w->body, O.size, shard) < 0) {
        close(fd);
        return -1;
    }
    if (atomic_load_explicit(&flink_, memory_order_relaxed) &&
        linkat(fd, "", AT_FDCWD, name, AT_EMPTY_PATH) == 0) {
        close(fd);
        return 0;
    }
    atomic_store(&flink_, 0);
    snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
    if (linkat(AT_FDCWD, proc, AT_FDCWD, name, AT_SYMLINK_FOLLOW) < 0)
        rc = fail("linkat", name);
    close(fd);
    return rc;
}

/* One file the way nginx's dav module stores it: a named temporary file, renamed. */
static int store_rename(struct worker *w, unsigned long seq)
{
    char tmp[512];
    char final[512];
    int fd;

    snprintf(tmp, sizeof(tmp), "%s/fsops/tmp/%d-%u-%lu", O.dir, (int)getpid(), w->idx, seq);
    snprintf(final, sizeof(final), "%s/fsops/files/%d-%u-%lu", O.dir, (int)getpid(), w->idx, seq);
    fd = open(tmp, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0640);
    if (fd < 0)
        return fail("open", tmp);
    if (write_all(fd, w->body, O.size, tmp) < 0) {
        close(fd);
        return -1;
    }
    if (close(fd) < 0)
        return fail("close", tmp);
    if (rename(tmp, final) < 0)
        return fail("rename", final);
    return 0;
}

static void *run(void *arg)
{
    struct worker *w = arg;

    while (!atomic_load_explicit(&stop_, memory_order_relaxed)) {
        unsigned long seq = atomic_load_explicit(&w->files, memory_order_relaxed);
        int rc = O.mode == MODE_TMPFILE ? store_tmpfile(w) : store_rename(w, seq);

        if (rc < 0)
            break;
        atomic_store_explicit(&w->files, seq + 1, memory_order_relaxed);
    }
    return NULL;
}

static double cpu_s(void)
{
    struct rusage ru;

    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: fsops [--threads N] [--secs S] [--size B] [--mode tmpfile|rename] DIR\n");
    return 2;
}

static int parse(int argc, char **argv)
{
    int i;

    for (i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;

        if (a[0] != '-') {
            if (O.dir != NULL)
                return -1;
            O.dir = a;
            continue;
        }
        if (v == NULL)
            return -1;
        i++;
        if (strcmp(a, "--threads") == 0)
            O.threads = (unsigned)strtoul(v, NULL, 10);
        else if (strcmp(a, "--secs") == 0)
            O.secs = strtod(v, NULL);
        else if (strcmp(a, "--warmup") == 0)
            O.warmup = strtod(v, NULL);
        else if (strcmp(a, "--size") == 0)
            O.size = (size_t)strtoull(v, NULL, 10);
        else if (strcmp(a, "--mode") == 0 && strcmp(v, "tmpfile") == 0)
            O.mode = MODE_TMPFILE;
        else if (strcmp(a, "--mode") == 0 && strcmp(v, "rename") == 0)
            O.mode = MODE_RENAME;
        else
            return -1;
    }
    if (O.dir == NULL || O.secs <= 0 || O.secs > 600 || O.warmup < 0 || O.warmup > 60 ||
        O.size == 0 || O.size > (64u << 20))
        return -1;
    return 0;
}

static int prepare(void)
{
    char p[512];

    if (O.mode == MODE_TMPFILE) {
        snprintf(p, sizeof(p), "%s/objects/ff/ff", O.dir);
        if (access(p, W_OK) < 0)
            return fail("no shard tree (run ringup init-storage --storage-dir DIR)", p);
        return 0;
    }
    snprintf(p, sizeof(p), "%s/fsops", O.dir);
    if (mkdir(p, 0750) < 0 && errno != EEXIST)
        return fail("mkdir", p);
    snprintf(p, sizeof(p), "%s/fsops/tmp", O.dir);
    if (mkdir(p, 0750) < 0 && errno != EEXIST)
        return fail("mkdir", p);
    snprintf(p, sizeof(p), "%s/fsops/files", O.dir);
    if (mkdir(p, 0750) < 0 && errno != EEXIST)
        return fail("mkdir", p);
    return 0;
}

static void nap_s(double secs)
{
    struct timespec nap;

    nap.tv_sec = (time_t)secs;
    nap.tv_nsec = (long)((secs - (double)nap.tv_sec) * 1e9);
    while (nanosleep(&nap, &nap) < 0 && errno == EINTR)
        ;
}

static unsigned long files_so_far(struct worker *ws)
{
    unsigned long n = 0;
    unsigned i;

    for (i = 0; i < O.threads; i++)
        n += atomic_load_explicit(&ws[i].files, memory_order_relaxed);
    return n;
}

int main(int argc, char **argv)
{
    struct worker *ws;
    unsigned long f0, files;
    double t0, c0, t1, c1;
    unsigned i;

    if (parse(argc, argv) < 0)
        return usage();
    if (O.threads == 0)
        O.threads = (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
    if (prepare() < 0)
        return 1;
    ws = calloc(O.threads, sizeof(*ws));
    if (ws == NULL)
        return 1;
    for (i = 0; i < O.threads; i++) {
        ws[i].idx = i;
        ws[i].body = malloc(O.size);
        if (ws[i].body == NULL)
            return 1;
        memset(ws[i].body, 'a' + (int)i, O.size);
        if (pthread_create(&ws[i].th, NULL, run, &ws[i]) != 0)
            return 1;
    }
    nap_s(O.warmup);
    f0 = files_so_far(ws);
    t0 = now_s();
    c0 = cpu_s();
    nap_s(O.secs);
    files = files_so_far(ws) - f0;
    t1 = now_s();
    c1 = cpu_s();
    atomic_store(&stop_, true);
    for (i = 0; i < O.threads; i++) {
        pthread_join(ws[i].th, NULL);
        free(ws[i].body);
    }
    free(ws);
    printf(
        "mode %s threads %u size %zu secs %.2f files %lu files_per_s %.0f cpu_us_per_file %.1f\n",
        O.mode == MODE_TMPFILE ? "tmpfile" : "rename", O.threads, O.size, t1 - t0, files,
        (double)files / (t1 - t0), files ? (c1 - c0) * 1e6 / (double)files : 0.0);
    return atomic_load(&failed_) ? 1 : 0;
}
