/*
 * prom: Prometheus text exposition format (version 0.0.4) writers into a
 * caller-owned buffer. Pure: the caller gathers the figures.
 */
#ifndef PROTO_PROM_H
#define PROTO_PROM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROM_CONTENT_TYPE "text/plain; version=0.0.4"

/*
 * Output buffer; once full, writes stop and full stays set, and p[0..len)
 * holds whole lines only. Text needs one spare byte in cap (vsnprintf's
 * terminator): a buffer of exactly the text's length comes out full.
 */
struct prom_buf {
    char *p;
    size_t len;
    size_t cap;
    bool full;
};

/* "# HELP name help" and "# TYPE name type" (type: counter, gauge, histogram). */
void prom_family(struct prom_buf *b, const char *name, const char *type, const char *help);

/*
 * One sample line: name{labels} value. labels is the text between the
 * braces (`code="200"`), or NULL/"" for none. Values print as integers when
 * integral.
 */
void prom_sample(struct prom_buf *b, const char *name, const char *labels, double value);

/*
 * A histogram's _bucket lines (cumulative, with le="+Inf"), _sum and _count.
 * counts[i] is the number of observations in bucket i (not cumulative):
 * counts has nbounds + 1 entries, the last for values above every bound.
 */
void prom_histogram(struct prom_buf *b, const char *name, const char *labels, const double *bounds,
                    const uint64_t *counts, size_t nbounds, double sum);

#endif /* PROTO_PROM_H */
