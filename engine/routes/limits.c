/*
 * limits: the limits phase; see limits.h. Empty for now: the phase is in
 * the sequence so that the rate limits land in one place, with the
 * caller known and the body unread.
 */
#include "engine/routes/limits.h"

enum route_rc limits_check(struct conn *c, struct route_req *q)
{
    (void)c;
    (void)q;
    return ROUTE_NEXT;
}
