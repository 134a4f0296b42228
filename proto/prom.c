/* prom: Prometheus text format writers. */
#include "proto/prom.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

__attribute__((format(printf, 2, 3))) static void out(struct prom_buf *b, const char *fmt, ...)
{
    va_list ap;
    int n;

    if (b->full)
        return;
    va_start(ap, fmt);
    n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= b->cap - b->len) {
        b->full = true;
        return;
    }
    b->len += (size_t)n;
}

void prom_family(struct prom_buf *b, const char *name, const char *type, const char *help)
{
    out(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/*
 * Format a sample value into tmp (integers without a fraction). Each line is
 * then written by one out() call, so a buffer that fills up holds only whole
 * lines.
 */
static const char *value(char tmp[32], double v)
{
    if (isnan(v))
        return "NaN";
    if (isinf(v))
        return v > 0 ? "+Inf" : "-Inf";
    if (v == floor(v) && fabs(v) < 9.007199254740992e15)
        snprintf(tmp, 32, "%.0f", v);
    else
        snprintf(tmp, 32, "%.9g", v);
    return tmp;
}

void prom_sample(struct prom_buf *b, const char *name, const char *labels, double v)
{
    char tmp[32];

    if (labels != NULL && labels[0] != '\0')
        out(b, "%s{%s} %s\n", name, labels, value(tmp, v));
    else
        out(b, "%s %s\n", name, value(tmp, v));
}

void prom_histogram(struct prom_buf *b, const char *name, const char *labels, const double *bounds,
                    const uint64_t *counts, size_t nbounds, double sum)
{
    const char *sep = labels != NULL && labels[0] != '\0' ? "," : "";
    const char *lab = labels != NULL ? labels : "";
    uint64_t cum = 0;
    char tmp[32];
    size_t i;

    for (i = 0; i <= nbounds; i++) {
        cum += counts[i];
        if (i < nbounds)
            out(b, "%s_bucket{%s%sle=\"%.6g\"} %llu\n", name, lab, sep, bounds[i],
                (unsigned long long)cum);
        else
            out(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, lab, sep, (unsigned long long)cum);
    }
    if (lab[0] != '\0') {
        out(b, "%s_sum{%s} %s\n", name, lab, value(tmp, sum));
        out(b, "%s_count{%s} %llu\n", name, lab, (unsigned long long)cum);
    } else {
        out(b, "%s_sum %s\n", name, value(tmp, sum));
        out(b, "%s_count %llu\n", name, (unsigned long long)cum);
    }
}
