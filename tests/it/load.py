"""Integration tests of bench/ringup-load (build/bench/ringup-load) against a real ringup.

Each test that needs a server makes its own database, storage directory, user and token
through uploads.Env (a server with the rate limits out of the way), runs ringup-load with
--json --quiet for a few seconds, and checks its report against the server's own account:
the Prometheus counters scraped before and after, the files table, and GET /v1/files.

The tus scenario runs against a server that does not implement tus yet: every creation is
answered 404, and ringup-load must still run, count those answers as unexpected and exit 1.
When tus lands, that test's expectations change to 201/204 and exit 0.

run.py hands its @test decorator to register(); nothing runs at import.
Only the Python standard library is used; all traffic goes to 127.0.0.1.
"""

import json
import os
import subprocess
import time

import db_routes
import harness
import uploads
from harness import Fail, expect, expect_eq, short

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LOAD_BIN = os.path.join(REPO, "build", "bench", "ringup-load")
# `make test` builds the units' tree (build/asan) only; its ringup-load serves when the release
# one is missing.
LOAD_BIN_ASAN = os.path.join(REPO, "build", "asan", "bench", "ringup-load")
KEYS = ["scenario", "connections", "threads", "processes", "duration_s", "requests", "ok",
        "status", "errors", "bytes_sent", "bytes_received", "requests_per_s", "mb_per_s",
        "latency_us", "verified", "verify_failed", "open_at_end"]
ERROR_KINDS = ["connect", "send", "recv", "timeout", "closed"]
LATENCY_KEYS = ["p50", "p90", "p99", "p999", "max", "mean"]

_TESTS = harness.Tests()


register = _TESTS.register  # run.py hands its @test decorator to this
_test = _TESTS.test


# ==========================================================================
# running the tool


class Run:
    """One finished ringup-load run: exit status, stdout, stderr, and the parsed report."""

    def __init__(self, cmd, rc, out, err):
        self.cmd, self.rc, self.out, self.err = cmd, rc, out, err
        self.report = None

    def describe(self):
        return ["command: %s" % " ".join(self.cmd), "exit status: %r" % self.rc,
                "stdout: %s" % short(self.out, 900), "stderr: %s" % short(self.err, 900)]


def load_bin():
    for path in (LOAD_BIN, LOAD_BIN_ASAN):
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise Fail("ringup-load is not built",
               "expected: an executable at %s (make build/bench/ringup-load)" % LOAD_BIN,
               "got:      missing (and no %s either)" % LOAD_BIN_ASAN)


def command(scenario, port, *args, token=None):
    cmd = [load_bin(), "--quiet"]
    if token is not None:
        cmd += ["-T", token]
    cmd += [str(a) for a in args]
    cmd += [scenario, "http://127.0.0.1:%d" % port]
    return cmd


def finish(p, cmd, timeout):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise Fail("ringup-load did not exit within %.0f s" % timeout,
                   "command: %s" % " ".join(cmd), "stderr: %s" % short(err, 600))
    return Run(cmd, p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))


def start(cmd):
    env = dict(os.environ)
    env.pop("RINGUP_TOKEN", None)
    return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def run_load(cmd, timeout=30.0):
    return finish(start(cmd), cmd, timeout)


def report_of(run):
    """The --json report (one object on stdout with exactly KEYS); Fail otherwise."""
    lines = [l for l in run.out.splitlines() if l.strip()]
    expect(len(lines) == 1, "ringup-load --json must print one line on stdout", "1 line",
           "%d lines" % len(lines), *run.describe())
    try:
        doc = json.loads(lines[0])
    except ValueError as e:
        raise Fail("ringup-load --json printed no valid JSON: %s" % e, *run.describe())
    expect(isinstance(doc, dict) and list(doc) == KEYS, "JSON report keys",
           ", ".join(KEYS), ", ".join(doc) if isinstance(doc, dict) else repr(doc),
           *run.describe())
    expect(sorted(doc["errors"]) == sorted(ERROR_KINDS), "JSON errors keys",
           ", ".join(ERROR_KINDS), ", ".join(doc["errors"]))
    expect(sorted(doc["latency_us"]) == sorted(LATENCY_KEYS), "JSON latency_us keys",
           ", ".join(LATENCY_KEYS), ", ".join(doc["latency_us"]))
    for code, n in doc["status"].items():
        expect(code.isdigit() and isinstance(n, int) and n > 0, "JSON status entry",
               '"201": N', "%r: %r" % (code, n))
    lat = doc["latency_us"]
    if doc["requests"] > 0:
        expect(0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"],
               "latency percentiles must be positive and ordered", "p50 <= ... <= max",
               repr(lat))
        expect(lat["mean"] <= lat["max"], "latency mean above max", "mean <= max", repr(lat))
    run.report = doc
    return doc


def expect_clean(run, doc, scenario, status):
    """Exit 0, requests > 0, every answer `status`, no socket error."""
    what = "ringup-load %s" % scenario
    expect(run.rc == 0, "%s: exit status" % what, "0", run.rc, *run.describe())
    expect(doc["requests"] > 0, "%s: no requests completed" % what, "> 0", doc["requests"],
           *run.describe())
    expect_eq("%s: status counts" % what, {str(status): doc["requests"]}, doc["status"])
    expect_eq("%s: ok" % what, doc["requests"], doc["ok"])
    expect_eq("%s: errors" % what, {k: 0 for k in ERROR_KINDS}, doc["errors"])
    expect_eq("%s: scenario" % what, scenario, doc["scenario"])
    expect(doc["bytes_sent"] > 0 and doc["bytes_received"] > 0, "%s: byte counts" % what,
           "> 0", "sent %r, received %r" % (doc["bytes_sent"], doc["bytes_received"]))
    expect(doc["requests_per_s"] > 0, "%s: requests_per_s" % what, "> 0",
           doc["requests_per_s"])


def counters(port):
    m = db_routes.scrape(port)
    return {"put": m.value("ringup_uploads_completed_total", route="put") or 0,
            "post": m.value("ringup_uploads_completed_total", route="post") or 0,
            "201": m.value("ringup_requests_total", code="201") or 0,
            "200": m.value("ringup_requests_total", code="200") or 0}


def settle_counters(port, want, timeout=3.0):
    """Scrapes until the counters equal want (counts may land just after the answer)."""
    deadline = time.monotonic() + timeout
    while True:
        got = counters(port)
        if all(got[k] == v for k, v in want.items()) or time.monotonic() >= deadline:
            return got
        time.sleep(0.1)


def list_all(env):
    """Every file of env's user through GET /v1/files, page by page."""
    files, query = [], "limit=1000"
    for _ in range(1000):
        doc = db_routes.listing(env.port, env.token, query)
        files += doc["files"]
        if doc["next"] is None:
            return files
        query = "limit=1000&after=" + doc["next"]
    raise Fail("GET /v1/files: more than 1000 pages")


# ==========================================================================
# tests


@_test("load: put 3 s, 20 connections, 16 KiB: exit 0, all 201, server counters, rows and "
       "GET /v1/files agree with the report")
def t_put(ctx):
    with db_routes.TestDb(ctx) as db:
        env = uploads.Env(ctx, db)
        before = counters(env.port)
        run = run_load(command("put", env.port, "-c", 20, "-t", 2, "-d", 3, "-s", "16k",
                               "--json", token=env.token))
        doc = report_of(run)
        expect_clean(run, doc, "put", 201)
        n = doc["requests"]
        expect_eq("put: connections in the report", 20, doc["connections"])
        expect(2.9 <= doc["duration_s"] <= 8.0, "put: duration_s", "about 3",
               doc["duration_s"])
        expect(doc["bytes_sent"] >= n * 16384, "put: bytes_sent below the bodies' bytes",
               ">= %d" % (n * 16384), doc["bytes_sent"])
        expect(abs(doc["mb_per_s"] - n * 16384 / doc["duration_s"] / 1e6)
               <= 0.01 * doc["mb_per_s"] + 0.01, "put: mb_per_s",
               "%.3f" % (n * 16384 / doc["duration_s"] / 1e6), doc["mb_per_s"])
        expect_eq("put: verify_failed", 0, doc["verify_failed"])
        expect_eq("put: open_at_end", None, doc["open_at_end"])
        want = {"put": before["put"] + n, "201": before["201"] + n}
        after = settle_counters(env.port, want)
        expect_eq("ringup_uploads_completed_total{route=\"put\"} increase", n,
                  after["put"] - before["put"])
        expect_eq("ringup_requests_total{code=\"201\"} increase", n,
                  after["201"] - before["201"])
        rows = int(db.scalar("select count(*) from files where owner = '%s'" % env.user))
        expect_eq("files rows of the load user", n, rows)
        sizes = db.sql("select size, count(*) from files where owner = '%s' group by size"
                       % env.user)
        expect_eq("files rows by size", [["16384", str(n)]], sizes)
        listed = list_all(env)
        expect_eq("GET /v1/files count", n, len(listed))
        expect_eq("GET /v1/files distinct ids", n, len({f["id"] for f in listed}))


@_test("load: get and multipart short runs: exit 0, all 200 / all 201")
def t_get_multipart(ctx):
    with db_routes.TestDb(ctx) as db:
        env = uploads.Env(ctx, db)
        run = run_load(command("get", env.port, "-c", 10, "-t", 2, "-d", 2, "-s", "64k",
                               "--json", token=env.token))
        doc = report_of(run)
        expect_clean(run, doc, "get", 200)
        expect(doc["bytes_received"] >= doc["requests"] * 65536,
               "get: bytes_received below the bodies' bytes",
               ">= %d" % (doc["requests"] * 65536), doc["bytes_received"])
        before = counters(env.port)
        run = run_load(command("multipart", env.port, "-c", 10, "-t", 2, "-d", 2, "-s", "20000",
                               "--verify", "0.2", "--json", token=env.token))
        doc = report_of(run)
        expect_clean(run, doc, "multipart", 201)
        n = doc["requests"]
        expect(doc["verified"] > 0 and doc["verify_failed"] == 0,
               "multipart: --verify 0.2 checks some uploads, all matching",
               "verified > 0, verify_failed 0",
               "verified %r, verify_failed %r" % (doc["verified"], doc["verify_failed"]))
        after = settle_counters(env.port, {"post": before["post"] + n})
        expect_eq("ringup_uploads_completed_total{route=\"post\"} increase", n,
                  after["post"] - before["post"])
        rows = int(db.scalar("select count(*) from files where owner = '%s' and size = 20000"
                             % env.user))
        expect_eq("files rows of 20000 bytes (the multipart uploads)", n, rows)


@_test("load: idle 200 connections for 2 s: all held (ringup_connections_open >= 200 during "
       "the hold), open_at_end 200")
def t_idle(ctx):
    with db_routes.TestDb(ctx) as db:
        env = uploads.Env(ctx, db)
        cmd = command("idle", env.port, "-c", 200, "-t", 2, "-d", 2, "--json")
        p = start(cmd)
        peak = 0
        deadline = time.monotonic() + 10.0
        while p.poll() is None and time.monotonic() < deadline:
            v = db_routes.scrape(env.port).value("ringup_connections_open") or 0
            peak = max(peak, v)
            if peak >= 201:
                break
            time.sleep(0.1)
        run = finish(p, cmd, 15.0)
        doc = report_of(run)
        expect_clean(run, doc, "idle", 200)
        expect_eq("idle: requests (one /healthz per connection)", 200, doc["requests"])
        expect_eq("idle: open_at_end", 200, doc["open_at_end"])
        # 200 held plus the scraping connection itself.
        expect(peak >= 201, "ringup_connections_open during the hold", ">= 201", peak)
        v = None
        for _ in range(30):
            v = db_routes.scrape(env.port).value("ringup_connections_open")
            if v is not None and v <= 1:
                break
            time.sleep(0.1)
        expect(v is not None and v <= 1, "ringup_connections_open after ringup-load exited",
               "1 (the scrape)", v)


@_test("load: usage errors exit 2 (address outside 127.0.0.0/8, bad scenario, bad option)")
def t_usage(ctx):
    binary = load_bin()
    cases = [
        ["put", "http://10.0.0.1:80"],
        ["put", "http://192.168.1.10:8080/"],
        ["put", "http://localhost:8080"],
        ["upload", "http://127.0.0.1:8080"],
        ["-c", "0", "put", "http://127.0.0.1:8080"],
        ["--verify", "2", "put", "http://127.0.0.1:8080"],
        ["--sizes", "16k", "put", "http://127.0.0.1:8080"],
        ["put"],
    ]
    for args in cases:
        cmd = [binary, "--quiet"] + args
        run = run_load(cmd, timeout=10.0)
        expect(run.rc == 2, "ringup-load %s: exit status" % " ".join(args), "2", run.rc,
               *run.describe())
        expect(run.out == "", "ringup-load %s: nothing on stdout" % " ".join(args), "''",
               short(run.out))
        expect("ringup-load:" in run.err, "ringup-load %s: a message on stderr"
               % " ".join(args), "ringup-load: ...", short(run.err))
    run = run_load([binary, "put", "http://10.0.0.1:80"], timeout=10.0)
    expect("127.0.0.0/8" in run.err, "the refusal names the allowed range", "127.0.0.0/8",
           short(run.err))


@_test("load: tus runs and reports 404s as unexpected, exit 1 (expected until tus lands)")
def t_tus(ctx):
    with db_routes.TestDb(ctx) as db:
        env = uploads.Env(ctx, db)
        run = run_load(command("tus", env.port, "-c", 10, "-t", 2, "-d", 1, "-s", "64k",
                               "--json", token=env.token))
        doc = report_of(run)
        expect(run.rc == 1, "tus: exit status with every creation answered 404", "1", run.rc,
               *run.describe())
        expect(doc["requests"] > 0, "tus: requests", "> 0", doc["requests"], *run.describe())
        expect_eq("tus: status counts", {"404": doc["requests"]}, doc["status"])
        expect_eq("tus: ok", 0, doc["ok"])
        expect_eq("tus: errors", {k: 0 for k in ERROR_KINDS}, doc["errors"])
        rows = int(db.scalar("select count(*) from files where owner = '%s'" % env.user))
        expect_eq("tus: files rows", 0, rows)
