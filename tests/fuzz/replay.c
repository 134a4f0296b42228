/*
 * Corpus replay: a plain main() for the fuzz targets, so `make test` runs
 * every seed through LLVMFuzzerTestOneInput under the sanitizers without
 * libFuzzer. Each argument is a file or a directory whose regular files are
 * replayed in name order. Prints TAP: "1..N", then "ok K - PATH" per file.
 * Exit 0 when every file could be read, 1 otherwise; a crash is the target's.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The files to replay, in order. */
struct list {
    char **paths; /* owned, each malloc'd */
    size_t n;     /* used */
    size_t cap;   /* allocated */
};

static void add(struct list *l, const char *dir, const char *name)
{
    size_t len = strlen(name) + (dir != NULL ? strlen(dir) + 1 : 0) + 1;
    char *p = malloc(len);

    if (p == NULL)
        abort();
    if (dir != NULL)
        snprintf(p, len, "%s/%s", dir, name);
    else
        snprintf(p, len, "%s", name);
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 16;
        l->paths = realloc(l->paths, l->cap * sizeof(*l->paths));
        if (l->paths == NULL)
            abort();
    }
    l->paths[l->n++] = p;
}

/* Add arg: a file as it is, a directory as its regular files in name order. */
static int collect(struct list *l, const char *arg)
{
    struct dirent **ents;
    struct stat st;
    int n;
    int i;

    if (stat(arg, &st) < 0 || !S_ISDIR(st.st_mode)) {
        add(l, NULL, arg);
        return 0;
    }
    n = scandir(arg, &ents, NULL, alphasort);
    if (n < 0) {
        fprintf(stderr, "replay: %s: %s\n", arg, strerror(errno));
        return -1;
    }
    for (i = 0; i < n; i++) {
        size_t len = strlen(arg) + strlen(ents[i]->d_name) + 2;
        char *path = malloc(len);

        if (path == NULL)
            abort();
        snprintf(path, len, "%s/%s", arg, ents[i]->d_name);
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
            add(l, arg, ents[i]->d_name);
        free(path);
        free(ents[i]);
    }
    free(ents);
    return 0;
}

/* Read path whole into a buffer of exactly its size, so ASan sees overreads. */
static int slurp(const char *path, uint8_t **out, size_t *outlen)
{
    struct stat st;
    uint8_t *buf;
    size_t len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int rc;

    if (fd < 0)
        return -errno;
    if (fstat(fd, &st) < 0) {
        rc = -errno;
        goto out_close;
    }
    buf = malloc(st.st_size > 0 ? (size_t)st.st_size : 1);
    if (buf == NULL) {
        rc = -ENOMEM;
        goto out_close;
    }
    while (len < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);

        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : -EIO;
            free(buf);
            goto out_close;
        }
        len += (size_t)n;
    }
    *out = buf;
    *outlen = len;
    rc = 0;
out_close:
    close(fd);
    return rc;
}

int main(int argc, char **argv)
{
    struct list l = {NULL, 0, 0};
    int failed = 0;
    size_t k;
    int i;

    for (i = 1; i < argc; i++)
        if (collect(&l, argv[i]) < 0)
            failed = 1;

    printf("1..%zu\n", l.n);
    for (k = 0; k < l.n; k++) {
        uint8_t *data = NULL;
        size_t len = 0;
        int rc = slurp(l.paths[k], &data, &len);

        if (rc < 0) {
            printf("not ok %zu - %s # %s\n", k + 1, l.paths[k], strerror(-rc));
            failed = 1;
        } else {
            /* Flush first: if the target crashes, the log says on what. */
            fflush(stdout);
            LLVMFuzzerTestOneInput(data, len);
            printf("ok %zu - %s\n", k + 1, l.paths[k]);
            free(data);
        }
        free(l.paths[k]);
    }
    free(l.paths);
    return failed;
}
