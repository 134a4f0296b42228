"""Integration tests of the strict edges of the HTTP layer, over raw sockets:

- obsolete line folding in the head is refused (400) rather than unfolded;
- a Transfer-Encoding other than a lone "chunked" is 501 not_implemented (one that does not
  end in chunked stays 400), and nothing is stored;
- file names that are not UTF-8 (PUT path, X-Filename, a multipart part's filename) are
  400 bad_request before the body is stored, and a cursor naming no real instant is 400;
- 204 responses carry no Content-Length; 100 Continue goes to an HTTP/1.1 multipart POST
  that asks for it, and never to an HTTP/1.0 client.

run.py hands its @test decorator to register(); nothing runs at import.
Only the Python standard library is used; all traffic goes to 127.0.0.1.
"""

import base64
import os
import time

import db_routes
import harness
import uploads
from harness import (Conn, Fail, expect, expect_close_header, expect_closed, expect_eq,
                     expect_error, expect_status, request, short)

_TESTS = harness.Tests()
register = _TESTS.register  # run.py hands its @test decorator to this
_test = _TESTS.test

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def refused(port, data, status, code, what):
    """Sends data on a new connection: one error response with Connection: close, then
    the server closes; the server still serves /healthz afterwards."""
    c = Conn(port)
    c.send(data)
    try:
        r = c.read_response(what="the response to " + what)
        expect_error(r, status, code)
        expect_close_header(r)
        expect_closed(c, what=what)
    except Fail as e:
        raise Fail("%s: %s" % (what, e.summary), *e.details)
    finally:
        c.close()
    r = harness.http_get(port, "/healthz")
    expect_status(r, 200)


def nothing_stored(env, what):
    time.sleep(0.3)
    expect_eq("%s: rows" % what, 0, len(env.rows()))
    count = sum(len(fs) for _, _, fs in os.walk(os.path.join(env.storage, "objects")))
    expect_eq("%s: files under objects/" % what, 0, count)


# ==========================================================================
# obs-fold


@_test("strict: obs-fold in the head (Transfer-Encoding, Content-Length, any field) -> 400 "
       "and close")
def t_obs_fold(ctx):
    s = ctx.server()
    cases = (
        ("Transfer-Encoding:<CRLF SP>chunked",
         b"POST /nope HTTP/1.1\r\nHost: t\r\nTransfer-Encoding:\r\n chunked\r\n\r\n"
         b"5\r\nhello\r\n0\r\n\r\n"),
        ("Content-Length:<CRLF HTAB>3",
         b"POST /nope HTTP/1.1\r\nHost: t\r\nContent-Length:\r\n\t3\r\n\r\nabc"),
        ("a folded X-A on GET /healthz",
         b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-A: b\r\n c\r\n\r\n"),
    )
    for what, data in cases:
        refused(s.port, data, 400, "bad_request", what)


@_test("strict: obs-fold in the trailers of a chunked body -> 400 and close")
def t_obs_fold_trailer(ctx):
    s = ctx.server()
    refused(s.port, b"POST /nope HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\nX-T: a\r\n b\r\n\r\n", 400, "bad_request", "folded trailer")


# ==========================================================================
# transfer codings


@_test("strict: Transfer-Encoding gzip/identity before chunked, or two fields -> 501 "
       "not_implemented and close")
def t_te_not_implemented(ctx):
    s = ctx.server()
    body = b"5\r\nhello\r\n0\r\n\r\n"
    for what, tes in (("gzip, chunked", ["gzip, chunked"]),
                      ("identity, chunked", ["identity, chunked"]),
                      ("two fields gzip + chunked", ["gzip", "chunked"]),
                      ("two fields identity + chunked", ["identity", "chunked"])):
        data = request("POST", "/nope", [("Transfer-Encoding", v) for v in tes], body)
        refused(s.port, data, 501, "not_implemented", "Transfer-Encoding: " + what)


@_test("strict: Transfer-Encoding not ending in chunked -> 400; ' ChUnKeD ' alone -> taken")
def t_te_framing(ctx):
    s = ctx.server()
    body = b"5\r\nhello\r\n0\r\n\r\n"
    for v in ("chunked, gzip", "gzip"):
        refused(s.port, request("POST", "/nope", [("Transfer-Encoding", v)], body), 400,
                "bad_request", "Transfer-Encoding: " + v)
    c = Conn(s.port)
    c.send(request("POST", "/nope", [("Transfer-Encoding", "  ChUnKeD  ")], body) +
           request("GET", "/healthz"))
    expect_error(c.read_response(what="POST /nope, chunked in mixed case"), 404, "not_found")
    expect_status(c.read_response(what="the pipelined GET /healthz"), 200)


@_test("strict: PUT with Transfer-Encoding: gzip, chunked -> 501, nothing stored")
def t_te_put(ctx):
    with db_routes.TestDb(ctx) as db:
        env = uploads.Env(ctx, db)
        data = request("PUT", "/v1/files/z.gz",
                       [("Authorization", "Bearer " + env.token),
                        ("Transfer-Encoding", "gzip, chunked")],
                       b"a\r\n\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\r\n0\r\n\r\n")
        refused(env.port, data, 501, "not_implemented", "PUT, gzip, chunked")
        nothing_stored(env, "after the refused PUT")


# ==========================================================================
# names and cursors


BAD_SEGMENTS = ("%FF", "a%C0%AFb", "%ED%A0%80.txt", "%F4%90%80%80", "caf%C3")


@_test("strict: PUT /v1/files/{name} not UTF-8 (%FF, overlong, surrogate, > U+10FFFF, cut) "
       "-> 400 before the body, nothing stored")
def t_put_bad_name(ctx):
    with db_routes.TestDb(ctx) as db:
        env = uploads.Env(ctx, db)
        for seg in BAD_SEGMENTS:
            # Only the head: the answer must come before any of the body.
            data = uploads.put_head(seg, env.token, length=5)
            refused(env.port, data, 400, "bad_request", "PUT /v1/files/" + seg)
        nothing_stored(env, "after the refused PUTs")
        # Control bytes, %00 included, still become '_': a valid name.
        env.put_ok("a%00%C3%A9%01.bin", b"hello", check_get=False)


@_test("strict: PUT /v1/files/a%2541 is stored as 'a%41' (the name is decoded once)")
def t_put_decoded_once(ctx):
    with db_routes.TestDb(ctx) as db:
        env = uploads.Env(ctx, db)
        doc = env.put_ok("a%2541.bin", b"hello", check_get=False)
        expect_eq("name", "a%41.bin", doc["name"])
        names = [r["name"] for r in env.rows().values()]
        expect_eq("stored names", ["a%41.bin"], names)


@_test("strict: raw POST with an X-Filename that is not UTF-8 -> 400 before the body")
def t_post_bad_name(ctx):
    with db_routes.TestDb(ctx) as db:
        env = uploads.Env(ctx, db)
        for what, headers in (("raw 0xFF in X-Filename", [("X-Filename", "\xff.bin")]),
                              ("%C0%AF in X-Filename", [("X-Filename", "a%C0%AF.bin")]),
                              ("a cut sequence in Content-Disposition",
                               [("Content-Disposition", 'attachment; filename="caf\xc3"')])):
            data = request("POST", "/v1/uploads",
                           [("Authorization", "Bearer " + env.token),
                            ("Content-Type", "application/octet-stream"),
                            ("Content-Length", "5")] + headers)
            refused(env.port, data, 400, "bad_request", what)
        nothing_stored(env, "after the refused POSTs")


@_test("strict: multipart part whose filename is not UTF-8 -> 400, nothing stored (also as "
       "the second part)")
def t_multipart_bad_name(ctx):
    with db_routes.TestDb(ctx) as db:
        env = uploads.Env(ctx, db)
        ok = ("f0", "good.bin", b"x" * 3000, None)
        for what, parts in (("first part \\xff", [("f", "\xff.bin", b"abc", None)]),
                            ("second part %ED%A0%80",
                             [ok, ("f", "%ED%A0%80.bin", b"abc", None)])):
            b = "----strictBoundary3kQ"
            body = body_latin1(parts, b)
            head = request("POST", "/v1/uploads",
                           [("Authorization", "Bearer " + env.token),
                            ("Content-Type", "multipart/form-data; boundary=%s" % b),
                            ("Content-Length", str(len(body)))])
            refused(env.port, head + body, 400, "bad_request", "multipart, " + what)
        nothing_stored(env, "after the refused forms")


def body_latin1(parts, boundary):
    """uploads.form() with file names written byte for byte (latin-1), not as UTF-8."""
    out = b""
    for field, filename, data, ctype in parts:
        out += b"--" + boundary.encode() + b"\r\n"
        disp = 'form-data; name="%s"; filename="%s"' % (field, filename)
        out += ("Content-Disposition: %s\r\n" % disp).encode("latin-1")
        if ctype:
            out += ("Content-Type: %s\r\n" % ctype).encode()
        out += b"\r\n" + data + b"\r\n"
    return out + b"--" + boundary.encode() + b"--\r\n"


@_test("strict: GET /v1/files?after= a cursor with an impossible timestamp -> 400, not 500")
def t_bad_cursor_time(ctx):
    with db_routes.TestDb(ctx) as db:
        env = uploads.Env(ctx, db)
        for ts in ("2026-13-45T25:61:61.000000Z", "2026-02-30T00:00:00.000000Z",
                   "0000-01-01T00:00:00.000000Z"):
            raw = (ts + "|ceb5e4c2-1045-42e9-80f7-e0375b9ecc58").encode()
            cur = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
            r = db_routes.api(env.port, "GET", "/v1/files?after=" + cur, env.token)
            try:
                expect_error(r, 400, "bad_request")
            except Fail as e:
                raise Fail("cursor around %s: %s" % (ts, e.summary), *e.details)
        r = db_routes.api(env.port, "GET", "/v1/files?limit=1", env.token)
        expect_status(r, 200)


# ==========================================================================
# 204 and 100 Continue


@_test("strict: 204 (DELETE, CORS preflight) carries no Content-Length; the connection goes on")
def t_204_no_length(ctx):
    with db_routes.TestDb(ctx) as db:
        env = uploads.Env(ctx, db)
        doc = env.put_ok("del.bin", b"hello", check_get=False)
        c = Conn(env.port)
        c.send(request("DELETE", "/v1/files/" + doc["id"],
                       [("Authorization", "Bearer " + env.token)]) +
               request("OPTIONS", "/v1/files/x.bin", [("Origin", "https://app.example"),
                                                      ("Access-Control-Request-Method", "PUT")]) +
               request("GET", "/healthz"))
        for what in ("DELETE", "OPTIONS preflight"):
            r = c.read_response(what="the response to the " + what)
            expect_status(r, 204)
            expect(not r.hall("Content-Length"), "%s: 204 with Content-Length" % what,
                   "no Content-Length", repr(r.hall("Content-Length")))
        expect_status(c.read_response(what="the pipelined GET /healthz"), 200)


def form_head(env, body, boundary, version="HTTP/1.1"):
    return request("POST", "/v1/uploads",
                   [("Authorization", "Bearer " + env.token),
                    ("Content-Type", "multipart/form-data; boundary=%s" % boundary),
                    ("Content-Length", str(len(body))), ("Expect", "100-continue")],
                   version=version)


def wait_for(c, n, seconds):
    """Reads until c.buf holds n bytes or seconds pass."""
    deadline = time.monotonic() + seconds
    while len(c.buf) < n:
        left = deadline - time.monotonic()
        if left <= 0 or c.recv_for(left) != "data":
            break


@_test("strict: multipart POST with Expect: 100-continue gets 100 Continue before its body")
def t_continue_multipart(ctx):
    with db_routes.TestDb(ctx) as db:
        env = uploads.Env(ctx, db)
        body, b = uploads.form([("f", "a.bin", b"y" * 5000, None)])
        c = Conn(env.port)
        c.send(form_head(env, body, b))
        t0 = time.monotonic()
        wait_for(c, len(CONTINUE), 3.0)
        expect(c.buf.startswith(CONTINUE), "no 100 Continue for a multipart POST that waits",
               short(CONTINUE), "%s after %.1f s" % (short(c.buf), time.monotonic() - t0))
        c.buf = c.buf[len(CONTINUE):]
        c.send(body)
        r = c.read_response(what="the response to the form")
        expect_status(r, 201)
        expect_eq("files", 1, len(r.json()["files"]))


@_test("strict: HTTP/1.0 PUT and multipart POST with Expect: 100-continue get no 100 Continue")
def t_continue_http10(ctx):
    with db_routes.TestDb(ctx) as db:
        env = uploads.Env(ctx, db)
        body, b = uploads.form([("f", "b.bin", b"z" * 5000, None)])
        put = request("PUT", "/v1/files/old.bin",
                      [("Authorization", "Bearer " + env.token), ("Content-Length", "5"),
                       ("Expect", "100-continue")], version="HTTP/1.0")
        for what, head, data in (("PUT", put, b"hello"),
                                 ("multipart POST", form_head(env, body, b, "HTTP/1.0"), body)):
            c = Conn(env.port)
            c.send(head)
            kind = c.recv_for(1.0)
            expect(kind == "idle" and not c.buf,
                   "HTTP/1.0 %s: the server sent something before the body" % what,
                   "nothing (HTTP/1.0 knows no 1xx)", "%s %s" % (kind, short(c.buf)))
            c.send(data)
            r = c.read_response(what="the response to the HTTP/1.0 " + what)
            expect_status(r, 201)
            c.close()
