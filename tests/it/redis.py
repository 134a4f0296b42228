"""Integration tests of the Redis slices: caps, outages, reconnects, descriptors.

Every test runs its own redis-server (rediskit.RedisServer, a unix socket in a
temporary directory) so that it may stop and start it, and its own ringup on
it. Tests that upload also make their own database (db_routes.TestDb) and
storage (uploads.Env). Redis is an accelerator: while it is down ringup keeps
serving, reports ringup_redis_up 0, and picks Redis up again when it returns,
at REDIS_RETRY_DELAY while attempts remain and at the slow retry after.

run.py hands its @test decorator to register(); nothing runs at import.
Only the Python standard library is used; all traffic goes to 127.0.0.1.
"""

import os
import time

import db_routes
import harness
import uploads
from harness import Fail, expect, expect_eq, expect_status
from rediskit import RedisServer

_TESTS = harness.Tests()
register = _TESTS.register  # run.py hands its @test decorator to this
_test = _TESTS.test


def metric(port, name):
    """Sum of a family's samples over the workers (0 when absent)."""
    m = db_routes.scrape(port)
    v = m.value(name)
    return 0 if v is None else v


def wait_metric(port, name, want, timeout, what):
    """Polls /metrics until name sums to want; returns the seconds it took."""
    start = time.monotonic()
    got = None
    while time.monotonic() - start < timeout:
        got = metric(port, name)
        if got == want:
            return time.monotonic() - start
        time.sleep(0.05)
    raise Fail("%s: %s did not reach %s within %.1f s" % (what, name, want, timeout),
               "last value: %r" % (got,))


def redis_clients(rs):
    """Connections Redis sees, less the one asking."""
    info = rs.cli("INFO", "clients")
    if isinstance(info, bytes):
        info = info.decode()
    for line in info.splitlines():
        if line.startswith("connected_clients:"):
            return int(line.split(":", 1)[1]) - 1
    raise Fail("INFO clients has no connected_clients line", short_text(info))


def short_text(s):
    return s if len(s) < 300 else s[:300] + "..."


def fds(pid):
    """Descriptor -> what it points at (socket:[...], pipe:[...], a path)."""
    out = {}
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                out[int(fd)] = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                pass
    except OSError as e:
        raise Fail("cannot list /proc/%d/fd: %s" % (pid, e))
    return out


def redis_args(rs, *more):
    return ["--redis-url", rs.url()] + [str(a) for a in more]


@_test("redis: connections across 2 workers stay within REDIS_MAX_CONNECTIONS "
       "(gauges and Redis agree)")
def t_cap(ctx):
    with RedisServer() as rs:
        # A cap below one per worker: the process-wide count wins over the slices.
        srv = ctx.server(*redis_args(rs, "--redis-max-connections", 1, "--redis-pool-min", 1,
                                     "--redis-pool-max", 1), workers=2)
        wait_metric(srv.port, "ringup_redis_connections_open", 1, 10.0, "cap 1")
        time.sleep(1.5)  # past a re-check of the cap by the worker left without a slot
        expect_eq("ringup_redis_connections_open (sum) under REDIS_MAX_CONNECTIONS=1", 1,
                  metric(srv.port, "ringup_redis_connections_open"))
        expect_eq("clients Redis sees under REDIS_MAX_CONNECTIONS=1", 1, redis_clients(rs))
        expect_eq("ringup_redis_connections_max (sum of slices)", 2,
                  metric(srv.port, "ringup_redis_connections_max"))
        srv.stop()
        # The minimum of 3 split 2 + 1 and opened, all within the cap.
        srv = ctx.server(*redis_args(rs, "--redis-max-connections", 3, "--redis-pool-min", 3,
                                     "--redis-pool-max", 3), workers=2)
        wait_metric(srv.port, "ringup_redis_connections_open", 3, 10.0, "cap 3")
        wait_metric(srv.port, "ringup_redis_up", 2, 10.0, "cap 3")
        expect_eq("clients Redis sees under REDIS_MAX_CONNECTIONS=3", 3, redis_clients(rs))
        srv.stop()


@_test("redis: Redis stopped -> /healthz and uploads go on, ringup_redis_up 0; Redis back -> "
       "reconnected at REDIS_RETRY_DELAY, no descriptor leaked")
def t_outage(ctx):
    with RedisServer() as rs, db_routes.TestDb(ctx) as db:
        # Slow retry would be 5 s: a reconnect well before that is the fast retry's.
        env = uploads.Env(ctx, db, *redis_args(rs, "--redis-retry-delay", 500,
                                               "--redis-retry-attempts", 100,
                                               "--redis-pool-min", 2))
        port, pid = env.port, env.server.proc.pid
        wait_metric(port, "ringup_redis_up", 2, 10.0, "start")
        wait_metric(port, "ringup_redis_connections_open", 2, 10.0, "start")
        # The same uploads as later, so that pools they fill (pipes, buffers) are full now.
        env.put_ok("before.bin", b"x" * 1000)
        env.put_ok("before2.bin", b"x" * 70000)
        before = fds(pid)

        rs.stop()
        wait_metric(port, "ringup_redis_up", 0, 10.0, "Redis stopped")
        r = harness.http_get(port, "/healthz")
        expect_status(r, 200)
        env.put_ok("during.bin", b"y" * 70000)
        time.sleep(1.2)  # a few failed attempts
        expect(env.server.alive(), "ringup exited while Redis was down", "running", "exited")

        rs.start()
        took = wait_metric(port, "ringup_redis_up", 2, 10.0, "Redis back")
        expect(took < 2.5, "Redis back: reconnect took %.1f s, not the fast retry's 0.5 s" % took,
               "< 2.5 s (5 retry delays; the slow retry is 5 s)", "%.2f s" % took)
        wait_metric(port, "ringup_redis_connections_open", 2, 10.0, "Redis back")
        expect(metric(port, "ringup_redis_reconnects_total") >= 2,
               "ringup_redis_reconnects_total did not count the reconnects", ">= 2",
               metric(port, "ringup_redis_reconnects_total"))
        env.put_ok("after.bin", b"z" * 1000)
        env.check_tree()
        after = fds(pid)
        # Splice pipes are a per-worker cache that fills on a worker's first large upload
        # (which worker takes an upload is the kernel's choice): only the rest must match.
        before = {k: v for k, v in before.items() if not v.startswith("pipe:")}
        after = {k: v for k, v in after.items() if not v.startswith("pipe:")}
        expect_eq("descriptors of ringup before the outage and after the reconnect",
                  len(before), len(after),
                  "new: %s" % {k: v for k, v in after.items() if before.get(k) != v},
                  "gone: %s" % {k: v for k, v in before.items() if after.get(k) != v})
        downs = [l for l in env.server.stderr_lines() if '"redis down"' in l]
        expect_eq("'redis down' log lines (one per worker, not one per attempt)", 2, len(downs))


@_test("redis: after REDIS_RETRY_ATTEMPTS run out, the slow retry still reconnects")
def t_slow_retry(ctx):
    with RedisServer() as rs:
        srv = ctx.server(*redis_args(rs, "--redis-retry-delay", 100, "--redis-retry-attempts", 1,
                                     "--redis-pool-min", 2), workers=2)
        wait_metric(srv.port, "ringup_redis_up", 2, 10.0, "start")
        rs.stop()
        wait_metric(srv.port, "ringup_redis_up", 0, 10.0, "Redis stopped")
        time.sleep(0.5)  # the one fast attempt failed: the slow retry (1 s) runs now
        first = metric(srv.port, "ringup_redis_reconnects_total")
        time.sleep(2.0)
        tries = metric(srv.port, "ringup_redis_reconnects_total") - first
        # 2 workers at 1 s make about 4 attempts in 2 s; the 100 ms delay would make 40.
        expect(1 <= tries <= 8, "attempts in 2 s once REDIS_RETRY_ATTEMPTS ran out",
               "1 to 8 (the slow retry, 1 s, per worker)", tries)
        rs.start()
        wait_metric(srv.port, "ringup_redis_up", 2, 10.0, "Redis back after the attempts")
        r = harness.http_get(srv.port, "/healthz")
        expect_status(r, 200)
        srv.stop()
