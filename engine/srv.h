/*
 * srv: the server's life on the main thread: listeners and workers up,
 * signals, graceful stop, exit status.
 */
#ifndef ENGINE_SRV_H
#define ENGINE_SRV_H

#include "engine/core/cfg.h"

/*
 * Serve until SIGTERM/SIGINT, then stop accepting, let requests in flight
 * finish (up to SHUTDOWN_TIMEOUT) and return 0. A second signal exits at
 * once with status 1. Returns 1 when start-up fails (logged).
 */
int srv_serve(const struct cfg *cfg);

#endif /* ENGINE_SRV_H */
