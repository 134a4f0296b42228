/* json: allocation-free JSON string quoting and error bodies. */
#include "proto/json.h"

#include <errno.h>
#include <string.h>

ssize_t json_quote(char *out, size_t cap, const char *s, size_t len)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0;
    size_t i;

    if (cap < 2)
        return -ENOSPC;
    out[o++] = '"';
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[6];
        size_t n;

        switch (c) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        default:
            break;
        }
        if (esc == NULL && c < 0x20) {
            u[0] = '\\';
            u[1] = 'u';
            u[2] = '0';
            u[3] = '0';
            u[4] = hex[c >> 4];
            u[5] = hex[c & 15];
            esc = u;
            n = 6;
        } else {
            n = esc != NULL ? strlen(esc) : 1;
        }
        if (cap - o < n + 1)
            return -ENOSPC;
        if (esc != NULL)
            memcpy(out + o, esc, n);
        else
            out[o] = (char)c;
        o += n;
    }
    if (cap - o < 1)
        return -ENOSPC;
    out[o++] = '"';
    return (ssize_t)o;
}

ssize_t json_error(char *out, size_t cap, const char *code, const char *message)
{
    static const char head[] = "{\"error\":{\"code\":";
    static const char mid[] = ",\"message\":";
    static const char tail[] = "}}";
    size_t o = 0;
    ssize_t n;

    if (cap < sizeof(head) - 1)
        return -ENOSPC;
    memcpy(out, head, sizeof(head) - 1);
    o += sizeof(head) - 1;
    n = json_quote(out + o, cap - o, code, strlen(code));
    if (n < 0)
        return n;
    o += (size_t)n;
    if (cap - o < sizeof(mid) - 1)
        return -ENOSPC;
    memcpy(out + o, mid, sizeof(mid) - 1);
    o += sizeof(mid) - 1;
    n = json_quote(out + o, cap - o, message, strlen(message));
    if (n < 0)
        return n;
    o += (size_t)n;
    if (cap - o < sizeof(tail) - 1)
        return -ENOSPC;
    memcpy(out + o, tail, sizeof(tail) - 1);
    o += sizeof(tail) - 1;
    return (ssize_t)o;
}
