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

/* The two-digit (or, for the year, four-digit) decimal at s. */
static unsigned digits(const char *s, size_t n)
{
    unsigned v = 0;
    size_t i;

    for (i = 0; i < n; i++)
        v = v * 10 + (unsigned)(s[i] - '0');
    return v;
}

static unsigned month_days(unsigned year, unsigned month)
{
    static const unsigned char days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;

    return month == 2 && leap ? 29 : days[month - 1];
}

/*
 * The shape alone let "2026-13-45T25:61:61" through to the query, where the
 * database refused it and the client got 500 for a bad cursor. PostgreSQL
 * would take hour 24 and second 60 (rolling over), but no cursor we hand out
 * carries them.
 */
bool ids_ts_ok(const char *s, size_t n)
{
    static const char shape[] = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    unsigned year;
    unsigned month;
    unsigned day;
    size_t i;

    if (n != IDS_TS_LEN)
        return false;
    for (i = 0; i < n; i++)
        if (shape[i] == 'd' ? !(s[i] >= '0' && s[i] <= '9') : s[i] != shape[i])
            return false;
    year = digits(s, 4);
    month = digits(s + 5, 2);
    day = digits(s + 8, 2);
    return year >= 1 && month >= 1 && month <= 12 && day >= 1 && day <= month_days(year, month) &&
           digits(s + 11, 2) <= 23 && digits(s + 14, 2) <= 59 && digits(s + 17, 2) <= 59;
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

/* Where a UTF-8 decoder stands between bytes: continuation bytes still due, and their range. */
struct utf8 {
    unsigned need;    /* continuation bytes still due */
    unsigned char lo; /* the next byte's least value ... */
    unsigned char hi; /* ... and greatest (narrower after E0, ED, F0, F4) */
};

/*
 * Take one byte; false if it cannot continue valid UTF-8. The narrow second
 * byte ranges of RFC 3629 (Unicode table 3-7) leave out overlong forms (E0,
 * F0), surrogates (ED) and code points past U+10FFFF (F4); C0, C1 and F5-FF
 * never start a sequence.
 */
static bool utf8_step(struct utf8 *u, unsigned char ch)
{
    if (u->need > 0) {
        if (ch < u->lo || ch > u->hi)
            return false;
        u->need--;
        u->lo = 0x80;
        u->hi = 0xbf;
        return true;
    }
    u->lo = 0x80;
    u->hi = 0xbf;
    if (ch < 0x80)
        return true;
    if (ch < 0xc2 || ch > 0xf4)
        return false;
    if (ch < 0xe0) {
        u->need = 1;
    } else if (ch < 0xf0) {
        u->need = 2;
        if (ch == 0xe0)
            u->lo = 0xa0;
        else if (ch == 0xed)
            u->hi = 0x9f;
    } else {
        u->need = 3;
        if (ch == 0xf0)
            u->lo = 0x90;
        else if (ch == 0xf4)
            u->hi = 0x8f;
    }
    return true;
}

bool ids_utf8_ok(const char *s, size_t n)
{
    struct utf8 u = {0, 0x80, 0xbf};
    size_t i;

    for (i = 0; i < n; i++)
        if (s[i] == '\0' || !utf8_step(&u, (unsigned char)s[i]))
            return false;
    return u.need == 0;
}

/* The length of the valid sequence at s[0..n), or 0 if none starts there. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    struct utf8 u = {0, 0x80, 0xbf};
    size_t i = 0;

    do {
        if (i == n || !utf8_step(&u, s[i]))
            return 0;
        i++;
    } while (u.need > 0);
    return i;
}

int ids_filename(const char *in, size_t n, char out[IDS_NAME_MAX + 1])
{
    struct utf8 u = {0, 0x80, 0xbf};
    bool valid = true;
    size_t o = 0;
    size_t kept = 0; /* input bytes that made out */
    size_t i;
    bool dots = true;

    /* Every byte is decoded and checked; only the first IDS_NAME_MAX are kept. */
    for (i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)in[i];
        if (ch == '%' && i + 2 < n && hexval(in[i + 1]) >= 0 && hexval(in[i + 2]) >= 0) {
            ch = (unsigned char)(hexval(in[i + 1]) << 4 | hexval(in[i + 2]));
            i += 2;
        }
        if (ch == '/' || ch == '\\' || ch < 0x20 || ch == 0x7f)
            ch = '_';
        if (valid && !utf8_step(&u, ch))
            valid = false;
        if (o == IDS_NAME_MAX)
            continue;
        if (ch != '.')
            dots = false;
        out[o++] = (char)ch;
        kept = i + 1;
    }
    if (u.need > 0)
        valid = false;
    /* Cut back to a UTF-8 boundary: drop a trailing incomplete sequence. */
    if (o == IDS_NAME_MAX && kept < n) {
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
    if (!valid) {
        /* Refused, but out must still be text a caller may store: '_' for each stray byte. */
        for (i = 0; i < o;) {
            size_t k = utf8_seq((const unsigned char *)out + i, o - i);
            if (k == 0) {
                out[i] = '_';
                k = 1;
            }
            i += k;
        }
    }
    if (o == 0) {
        memcpy(out, "file", 5);
        return valid ? 4 : -EILSEQ;
    }
    if (dots) {
        out[0] = '_';
        o = 1;
    }
    out[o] = '\0';
    return valid ? (int)o : -EILSEQ;
}
