/*
 * Fuzz target for proto/ids.c and http_query_param(): what clients send back
 * as ids, cursors and query strings. The first byte picks the mode; the rest
 * is split in two at a point taken from the next byte.
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proto/http.h"
#include "proto/ids.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Decoding, then encoding what decoded, must give a cursor that decodes the same. */
static void cursor(const char *in, size_t n)
{
    char ts[IDS_TS_LEN + 1];
    char id[IDS_UUID_LEN + 1];
    char again[IDS_CURSOR_MAX];
    char ts2[IDS_TS_LEN + 1];
    char id2[IDS_UUID_LEN + 1];
    int len;

    if (ids_cursor_decode(in, n, ts, id) != 0)
        return;
    len = ids_cursor_encode(again, ts, id);
    if (len <= 0 || len >= IDS_CURSOR_MAX)
        abort();
    if (ids_cursor_decode(again, (size_t)len, ts2, id2) != 0 || strcmp(ts, ts2) != 0 ||
        strcmp(id, id2) != 0)
        abort();
}

static void b64(const char *in, size_t n)
{
    unsigned char out[256];
    char enc[400];
    int len = ids_b64url_decode(out, sizeof(out), in, n);

    if (len < 0)
        return;
    if ((size_t)len > sizeof(out))
        abort();
    /* Canonical input re-encodes to itself. */
    ids_b64url_encode(enc, out, (size_t)len);
    (void)ids_uuid_ok(in, n);
    (void)ids_ts_ok(in, n);
}

/* A request line with the input as its query; every parameter lookup stays in bounds. */
static void query(const char *in, size_t n)
{
    static const char *const keys[] = {"limit", "after", "a", ""};
    static struct http_head h;
    struct http_parser p;
    struct http_ev ev;
    char req[1024];
    size_t len;
    size_t i;

    if (n > 900)
        n = 900;
    len = (size_t)snprintf(req, sizeof(req), "GET /v1/files?%.*s HTTP/1.1\r\n\r\n", (int)n, in);
    http_init(&p);
    http_begin(&p, &h);
    if (http_feed(&p, req, len, &ev) < 0 || ev.kind != HTTP_EV_HEAD)
        return;
    for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
        struct http_span v;
        struct http_span url = http_url(&h);
        if (http_query_param(&h, keys[i], &v) && (v.p < url.p || v.p + v.len > url.p + url.len))
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t split;

    if (size < 2)
        return 0;
    split = size > 2 ? data[1] % (size - 2 + 1) : 0;
    switch (data[0] % 5) {
    case 4: {
        uint64_t first = 0;
        uint64_t last = 0;
        uint64_t fsize = (uint64_t)data[1] * 977;
        /* Nothing is satisfiable in an empty file; anything granted lies inside the file. */
        if (http_range((const char *)data + 2, size - 2, 0, &first, &last) == 0)
            abort();
        if (http_range((const char *)data + 2, size - 2, fsize, &first, &last) == 0 &&
            (first > last || last >= fsize))
            abort();
        break;
    }
    case 3: {
        char name[IDS_NAME_MAX + 1];
        int ret = ids_filename((const char *)data + 2, size - 2, name);
        size_t n = strlen(name);
        size_t i;
        /* Refused or not, what is in name is a valid name to store. */
        if ((ret < 0 && ret != -EILSEQ) || (ret >= 0 && (size_t)ret != n) || n == 0 ||
            n > IDS_NAME_MAX || !ids_utf8_ok(name, n))
            abort();
        for (i = 0; i < n; i++)
            if (name[i] == '/' || name[i] == '\\' || (unsigned char)name[i] < 0x20 ||
                name[i] == 0x7f)
                abort();
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            abort();
        break;
    }
    case 0:
        cursor((const char *)data + 2, size - 2);
        cursor((const char *)data + 2, split);
        break;
    case 1:
        b64((const char *)data + 2, size - 2);
        b64((const char *)data + 2 + split, size - 2 - split);
        break;
    default:
        query((const char *)data + 2, size - 2);
        break;
    }
    return 0;
}
