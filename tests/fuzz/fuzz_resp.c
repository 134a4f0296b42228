/*
 * Fuzz target for the response parser and the JSON lookups of the load
 * generator (bench/load/req.c).
 *
 * Input: bytes 0-1 a split point (little endian, modulo the rest's length + 1),
 * the rest a server's byte stream. The stream is parsed response after
 * response, once whole and once cut at the split point (each response's feed
 * resumed where the previous stopped); both runs must agree on every
 * response's status, framing and body length, and on where parsing stopped.
 * The same bytes are also searched as a JSON document for "id" and "size".
 */
#include "bench/load/req.c"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define RESP_MAX 64 /* responses compared per input */

struct outcome {
    int n;                /* responses completed */
    int err;              /* the error that stopped parsing, 0 if none */
    size_t used;          /* bytes consumed in all */
    int status[RESP_MAX]; /* per response */
    uint64_t body[RESP_MAX];
    bool close[RESP_MAX];
};

/* Parse the stream, fed as [0, cut) then [cut, n); responses follow one another. */
static void run(const char *p, size_t n, size_t cut, struct outcome *o)
{
    struct req_resp *r = malloc(sizeof(*r));
    size_t off = 0;

    if (r == NULL)
        abort();
    memset(o, 0, sizeof(*o));
    req_resp_init(r);
    while (off < n && o->n < RESP_MAX) {
        size_t end = off < cut ? cut : n;
        int k = req_resp_feed(r, p + off, end - off);

        if (k < 0) {
            o->err = k;
            break;
        }
        if ((size_t)k > end - off)
            abort(); /* consumed more than it was given */
        off += (size_t)k;
        if (req_resp_done(r)) {
            o->status[o->n] = r->status;
            o->body[o->n] = r->body_seen;
            o->close[o->n] = r->close;
            o->n++;
            req_resp_init(r);
            continue;
        }
        if (off < end)
            abort(); /* stopped short of a response's end without an error */
    }
    o->used = off;
    free(r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct outcome whole;
    struct outcome split;
    const char *p = (const char *)data + 2;
    size_t n;
    size_t cut;
    char id[64];
    uint64_t v;

    if (size < 2)
        return 0;
    n = size - 2;
    cut = ((size_t)data[0] | (size_t)data[1] << 8) % (n + 1);
    run(p, n, n, &whole);
    run(p, n, cut, &split);
    /* After an error, how much the cut run had consumed before it may differ. */
    if (whole.n != split.n || whole.err != split.err ||
        (whole.err == 0 && whole.used != split.used))
        abort();
    for (int i = 0; i < whole.n; i++) {
        if (whole.status[i] != split.status[i] || whole.body[i] != split.body[i] ||
            whole.close[i] != split.close[i])
            abort();
        if (whole.status[i] < 100 || whole.status[i] > 999)
            abort();
    }
    if (req_json_str(p, n, "id", id, sizeof(id)) >= 0 && strlen(id) >= sizeof(id))
        abort();
    (void)req_json_u64(p, n, "size", &v);
    return 0;
}
