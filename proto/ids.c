/* ids: UUID text, base64url and list cursors. */
#include "proto/ids.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

static const char b64url[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

static bool is_hex(char ch)
{
    return (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

bool ids_uuid_ok(const char *s, size_t n)
{
    size_t i;

    if (n != IDS_UUID_LEN)
        return false;
    for (i = 0; i < n; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        if (dash ? s[i] != '-' : !is_hex(s[i]))
            return false;
    }
    return true;
}

bool ids_ts_ok(const char *s, size_t n)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    size_t i;

    if (n != IDS_TS_LEN)
        return false;
    for (i = 0; i < n; i++)
        if (shape[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != shape[i])
            return false;
    return true;
}

size_t ids_b64url_encode(char *out, const unsigned char *in, size_t n)
{
    size_t o = 0;
    size_t i;

    for (i = 0; i + 2 < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = b64url[v >> 18];
        out[o++] = b64url[(v >> 12) & 63];
        out[o++] = b64url[(v >> 6) & 63];
        out[o++] = b64url[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = b64url[v >> 18];
        out[o++] = b64url[(v >> 12) & 63];
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = b64url[v >> 18];
        out[o++] = b64url[(v >> 12) & 63];
        out[o++] = b64url[(v >> 6) & 63];
    }
    out[o] = '\0';
    return o;
}

int ids_b64url_decode(unsigned char *out, size_t cap, const char *in, size_t n)
{
    uint32_t v = 0;
    size_t bits = 0;
    size_t o = 0;
    size_t i;

    /* A lone trailing character carries fewer than 8 bits: not something we encode. */
    if (n % 4 == 1)
        return -EBADMSG;
    for (i = 0; i < n; i++) {
        const char *k = in[i] != '\0' ? memchr(b64url, in[i], 64) : NULL;
        if (k == NULL)
            return -EBADMSG;
        v = (v << 6 | (uint32_t)(k - b64url)) & 0xffffff;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (o == cap)
                return -ENOSPC;
            out[o++] = (unsigned char)(v >> bits);
        }
    }
    return (int)o;
}

int ids_cursor_encode(char out[IDS_CURSOR_MAX], const char *ts, const char *id)
{
    unsigned char raw[IDS_TS_LEN + 1 + IDS_UUID_LEN];

    if (!ids_ts_ok(ts, strlen(ts)) || !ids_uuid_ok(id, strlen(id)))
        return -EINVAL;
    memcpy(raw, ts, IDS_TS_LEN);
    raw[IDS_TS_LEN] = '|';
    memcpy(raw + IDS_TS_LEN + 1, id, IDS_UUID_LEN);
    return (int)ids_b64url_encode(out, raw, sizeof(raw));
}

int ids_cursor_decode(const char *in, size_t n, char ts[IDS_TS_LEN + 1], char id[IDS_UUID_LEN + 1])
{
    unsigned char raw[IDS_TS_LEN + 1 + IDS_UUID_LEN];
    int len = ids_b64url_decode(raw, sizeof(raw), in, n);

    if (len != (int)sizeof(raw) || raw[IDS_TS_LEN] != '|' ||
        !ids_ts_ok((const char *)raw, IDS_TS_LEN) ||
        !ids_uuid_ok((const char *)raw + IDS_TS_LEN + 1, IDS_UUID_LEN))
        return -EBADMSG;
    memcpy(ts, raw, IDS_TS_LEN);
    ts[IDS_TS_LEN] = '\0';
    memcpy(id, raw + IDS_TS_LEN + 1, IDS_UUID_LEN);
    id[IDS_UUID_LEN] = '\0';
    return 0;
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

size_t ids_filename(const char *in, size_t n, char out[IDS_NAME_MAX + 1])
{
    size_t o = 0;
    size_t i;
    bool dots = true;

    for (i = 0; i < n && o < IDS_NAME_MAX; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch == '%' && i + 2 < n && hexval(in[i + 1]) >= 0 && hexval(in[i + 2]) >= 0) {
            ch = (unsigned char)(hexval(in[i + 1]) << 4 | hexval(in[i + 2]));
            i += 2;
        }
        if (ch == '/' || ch == '\\' || ch < 0x20 || ch == 0x7f)
            ch = '_';
        if (ch != '.')
            dots = false;
        out[o++] = (char)ch;
    }
    /* Cut back to a UTF-8 boundary: drop a trailing incomplete sequence. */
    if (o == IDS_NAME_MAX && i < n) {
        size_t k = o;
        while (k > 0 && ((unsigned char)out[k - 1] & 0xc0) == 0x80)
            k--;
        if (k > 0 && (unsigned char)out[k - 1] >= 0xc0) {
            unsigned char lead = (unsigned char)out[k - 1];
            size_t need = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : 2;
            if (o - (k - 1) < need)
                o = k - 1;
        }
    }
    if (o == 0) {
        memcpy(out, "file", 5);
        return 4;
    }
    if (dots) {
        out[0] = '_';
        o = 1;
    }
    out[o] = '\0';
    return o;
}
