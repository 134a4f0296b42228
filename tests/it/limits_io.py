"""Integration tests of what one client may hold or cause on a worker: O_DIRECT
buffers held by clients that trickle, and the bytes one form may carry.

Each test makes its own database, storage directory, user and server (uploads.Env).
Outcomes only: which request is answered, with what, and what is left on disk and in
the server's gauges; never how fast.

run.py hands its @test decorator to register(); nothing runs at import.
"""

import hashlib
import threading
import time

import db_routes
import harness
import uploads
from harness import Conn, Fail, expect, expect_eq, expect_status
from uploads import KIB, MIB, Env, answered, body_of, error_of, get_content

_TESTS = harness.Tests()
register = _TESTS.register
_test = _TESTS.test


def gauge(port, name):
    return db_routes.scrape(port).value(name) or 0


# ==========================================================================
# O_DIRECT buffers and clients that trickle

SLOW = 16            # as many as a worker has O_DIRECT buffers (XFER_DBUFS)
SLOW_SIZE = 4 * MIB  # above the test's DIRECT_IO_THRESHOLD: the O_DIRECT path
BURST = 128 * KIB    # past DIRECT_YIELD: a read this long keeps reading
PERIOD = 1.0         # between bursts: under the test's CONNECTION_TIMEOUT
TRICKLE_S = 10.0     # how long the slow ones trickle while the 17th uploads
TIMEOUT_MS = 2000


def read_end(c, seconds):
    """Reads c until the server closes it or seconds pass; returns (closed, bytes read)."""
    got = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        c.sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            d = c.sock.recv(65536)
        except TimeoutError:
            break
        except OSError:
            return True, got
        if not d:
            return True, got
        got += d
    return False, got


@_test("limits io: sixteen PUTs that send bursts and stall under CONNECTION_TIMEOUT hold no "
       "O_DIRECT buffer; a 17th large PUT completes while they trickle; once they stall "
       "past CONNECTION_TIMEOUT they are cut and leave nothing")
def t_direct_trickle(ctx):
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db, "--connection-timeout", TIMEOUT_MS, "--direct-io-threshold", MIB,
                  workers=1)
        head = uploads.put_head("slow.bin", env.token, length=SLOW_SIZE)
        burst = body_of(BURST)
        slow = []
        stop = threading.Event()
        early = []  # slow connections the server answered or closed while they trickled

        def pump():
            while not stop.wait(PERIOD):
                for i, c in enumerate(slow):
                    if i in early:
                        continue
                    try:
                        if answered(c) or not c.try_send(burst, 2.0):
                            early.append(i)
                    except OSError:
                        early.append(i)
        try:
            for _ in range(SLOW):
                c = Conn(env.port, timeout=10.0)
                c.send(head + burst)
                slow.append(c)
            pumper = threading.Thread(target=pump, daemon=True)
            pumper.start()

            deadline = time.monotonic() + 10.0
            while (gauge(env.port, "ringup_upload_files_open") < SLOW and
                   time.monotonic() < deadline):
                time.sleep(0.05)
            expect_eq("slow uploads with their file open", SLOW,
                      gauge(env.port, "ringup_upload_files_open"))
            # Between bursts the socket of each is empty: none may sit on a buffer then.
            held = []
            deadline = time.monotonic() + 3 * PERIOD
            while time.monotonic() < deadline:
                held.append(gauge(env.port, "ringup_direct_buffers_in_use"))
                if held[-1] == 0 and len(held) > 3:
                    break
                time.sleep(0.1)

            big = body_of(SLOW_SIZE + 12345)
            result = {}

            def seventeenth():
                t0 = time.monotonic()
                try:
                    result["resp"] = env.put("big.bin", big, timeout=40.0)
                except (Fail, OSError) as e:
                    result["error"] = e
                result["took"] = time.monotonic() - t0
            t = threading.Thread(target=seventeenth, daemon=True)
            t.start()
            t.join(TRICKLE_S)
            done_while_trickling = not t.is_alive()
            alive_then = SLOW - len(early)
            stop.set()
            pumper.join(5)
            t.join(40)
            ctx.note("17th PUT answered after %.2f s (%s the slow ones trickled)" % (
                result.get("took", -1), "while" if done_while_trickling else "after"))
            expect(done_while_trickling, "the 17th large PUT got no answer while %d uploads "
                   "trickled for %.0f s" % (SLOW, TRICKLE_S), "an answer",
                   "answered %.1f s after it began" % result.get("took", -1))
            expect_eq("slow uploads still open while they trickled", SLOW, alive_then)
            expect(0 in held, "O_DIRECT buffers held while the %d uploads waited for their "
                   "clients" % SLOW, "0 in some scrape", held)
            if "error" in result:
                raise result["error"]
            doc = env.accept(result["resp"], big, "big.bin")
            r = get_content(env.port, doc["id"], env.token)
            expect_status(r, 200)
            expect_eq("sha256 of the 17th upload, downloaded", hashlib.sha256(big).hexdigest(),
                      hashlib.sha256(r.body).hexdigest())

            # Stalled now: each is cut after CONNECTION_TIMEOUT, none gets a 201.
            for i, c in enumerate(slow):
                closed, got = read_end(c, TIMEOUT_MS / 1000.0 + 8.0)
                expect(closed, "slow upload %d was not cut after it stalled" % i,
                       "closed within CONNECTION_TIMEOUT (+8 s)", "open, read %r" % got[:80])
                expect(b" 201 " not in got.split(b"\r\n", 1)[0],
                       "slow upload %d: a 201 for a body that never came" % i, "no 201",
                       got[:200])
        finally:
            stop.set()
            for c in slow:
                c.close()
        env.settle({doc["id"]}, "after the cut uploads")
        expect_eq("O_DIRECT buffers lent at the end", 0,
                  gauge(env.port, "ringup_direct_buffers_in_use"))
        env.still_serving("after the trickling uploads")


# ==========================================================================
# the bytes one form may carry

MAX_FILE = 65536
MAX_FILES = 2
# form_max() in engine/routes/upload.c: files with their part heads at the limits
# (MP_HEADER_MAX + MP_CARRY_MAX), FIELDS_MAX, 64 KiB of slack.
FORM_CAP = MAX_FILES * (MAX_FILE + 8192 + 91) + 65536 + 65536
BOUNDARY = "----ringupLimit"


def part(field, filename, data):
    disp = 'form-data; name="%s"' % field
    if filename is not None:
        disp += '; filename="%s"' % filename
    return (b"--" + BOUNDARY.encode() + b"\r\nContent-Disposition: " + disp.encode() +
            b"\r\n\r\n" + data + b"\r\n")


def closing():
    return b"--" + BOUNDARY.encode() + b"--\r\n"


def post_head(token, length=None):
    lines = ["POST /v1/uploads HTTP/1.1", "Host: t", "Authorization: Bearer %s" % token,
             "Content-Type: multipart/form-data; boundary=%s" % BOUNDARY]
    lines.append("Content-Length: %d" % length if length is not None
                 else "Transfer-Encoding: chunked")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post_chunked(port, token, body, what):
    """A form sent chunked in 16 KiB chunks; sending stops once the server answers."""
    c = Conn(port, timeout=20.0)
    try:
        c.send(post_head(token))
        sent, _ = uploads.send_body(c, uploads.chunk_body(body, (16384,)), piece=64 * KIB,
                                    timeout=20.0)
        r = c.read_response(what="%s (%d body bytes sent)" % (what, sent), timeout=20.0)
    finally:
        c.close()
    return r


@_test("limits io: a form's whole body is capped at MAX_FILES_PER_REQUEST x MAX_FILE_SIZE plus "
       "part heads, FIELDS_MAX and 64 KiB: chunked preamble, epilogue or empty-file parts "
       "past it -> 413, nothing stored; a Content-Length past it -> 413 before the body")
def t_form_cap(ctx):
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db, "--max-file-size", MAX_FILE, "--max-files-per-request", MAX_FILES)
        small = body_of(1000)
        huge = b"x" * (FORM_CAP + MIB)
        empty_parts = b"".join(part("e%d" % i, "", b"") for i in range(FORM_CAP // 60 + 100))
        cases = (
            ("a chunked form with a huge preamble",
             huge + b"\r\n" + part("f", "a.bin", small) + closing()),
            ("a chunked form with a huge epilogue",
             part("f", "a.bin", small) + closing() + huge),
            ("a chunked form with many parts of empty file inputs",
             empty_parts + part("f", "a.bin", small) + closing()),
        )
        for what, body in cases:
            r = post_chunked(env.port, env.token, body, what)
            error_of(r, 413, "too_large", what)
        env.settle(set(), "after the refused forms")

        # Content-Length past the cap: answered from the head, no body sent at all.
        what = "a form with Content-Length %d" % (FORM_CAP + 1)
        c = Conn(env.port, timeout=10.0)
        try:
            c.send(post_head(env.token, FORM_CAP + 1))
            r = c.read_response(what=what + " (only its head sent)", timeout=10.0)
        finally:
            c.close()
        error_of(r, 413, "too_large", what)

        # A full form at the limits still fits.
        full = body_of(MAX_FILE)
        body = (b"preamble\r\n" + part("note", None, b"n" * 1000) + part("a", "a.bin", full) +
                part("b", "b.bin", full) + closing() + b"epilogue")
        r = post_chunked(env.port, env.token, body, "a full form (chunked)")
        expect_status(r, 201)
        ids = {f["id"] for f in r.json()["files"]}
        expect_eq("files of the full form", 2, len(ids))
        env.settle(ids, "after the full form")
        env.still_serving("after the forms")
