"""Integration tests of PUT /v1/files/{name} (the raw-body upload path).

Every test makes its own database (through db_routes.TestDb), its own storage
directory (a fresh temporary directory passed with --storage-dir) and its own
user and token (`ringup token create --user NAME`). After its uploads a test
checks three places against each other: the 201 answers, the rows of the
files table, and the tree under STORAGE_DIR/objects, which must hold exactly
the files of the 201 answers, each at objects/<id[34:36]>/<id[7]id[9]>/<id> with
the bytes that were sent (compared by SHA-256). Nothing may appear outside
objects/, and no aborted upload may leave a file, a row, or an open
descriptor of a deleted (O_TMPFILE) file in the server.

The disk-full test mounts a small tmpfs and runs only as root; it is reported
as skipped otherwise.

run.py hands its @test decorator to register(); nothing runs at import.
Only the Python standard library is used; all traffic goes to 127.0.0.1.
"""

import hashlib
import os
import re
import select
import socket
import struct
import subprocess
import threading
import time
import urllib.parse

import db_routes
import harness
from harness import (HOST, Conn, Fail, expect, expect_close_header, expect_eq, expect_error,
                     expect_json_type, expect_no_close_header, expect_status, request, short)

KIB = 1024
MIB = 1024 * 1024
DEFAULT_MAX = 10485760  # MAX_FILE_SIZE's default
PIECE = 256 * KIB       # bytes per send() when a body is sent in pieces
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
# Statuses a fresh upload's row may show: 'queued', or later ones once a job picked it up.
ROW_STATUSES = ("queued", "processing", "ready")
# Rate limits out of the way: these tests measure the upload path, not the limiter.
NO_LIMITS = ("--upload-rate-limit", 1000000000, "--global-rate-limit", 1000000000)

_TESTS = harness.Tests()
_SEQ = [0]


register = _TESTS.register  # run.py hands its @test decorator to this
_test = _TESTS.test


def is_root():
    return hasattr(os, "geteuid") and os.geteuid() == 0


# ==========================================================================
# names: the sanitization rule of PUT /v1/files/{name}


def sanitize(segment):
    """The stored name for a raw (percent-encoded) last path segment: percent-decoded;
    '/', '\\' and control characters (0x00-0x1f, 0x7f) become '_'; "." or ".." becomes
    "_"; cut to at most 255 bytes without splitting a UTF-8 sequence; "" becomes "file"."""
    raw = urllib.parse.unquote_to_bytes(segment)
    out = bytearray()
    for b in raw:
        out.append(0x5F if b in (0x2F, 0x5C) or b < 0x20 or b == 0x7F else b)
    if bytes(out) in (b".", b".."):
        out = bytearray(b"_")
    if len(out) > 255:
        n = 255
        while n > 0 and (out[n] & 0xC0) == 0x80:  # out[n] continues a sequence: back up
            n -= 1
        out = out[:n]
    if not out:
        out = bytearray(b"file")
    return bytes(out).decode("utf-8")


# ==========================================================================
# request helpers


def chunk_body(data, sizes=(4096,)):
    """data in Transfer-Encoding: chunked framing, chunk sizes cycling through sizes."""
    out, i, k = [], 0, 0
    while i < len(data):
        n = sizes[k % len(sizes)]
        k += 1
        part = data[i:i + n]
        i += len(part)
        out.append(b"%x\r\n" % len(part) + part + b"\r\n")
    out.append(b"0\r\n\r\n")
    return b"".join(out)


def answered(c):
    """True when the server sent something (or closed) on c: readable without waiting."""
    if c.buf:
        return True
    r, _, _ = select.select([c.sock], [], [], 0)
    return bool(r)


def send_body(c, data, piece=PIECE, pause=0.0, timeout=30.0, stop_on_answer=True):
    """Sends data in pieces. Stops early when the server answers or closes.
    Returns (bytes sent, 'all' | 'answered' | 'closed')."""
    sent = 0
    mv = memoryview(data)
    while sent < len(data):
        if stop_on_answer and answered(c):
            return sent, "answered"
        n = min(piece, len(data) - sent)
        if not c.try_send(bytes(mv[sent:sent + n]), timeout):
            return sent, "closed"
        sent += n
        if pause:
            time.sleep(pause)
    return sent, "all"


def put_head(segment, token, length=None, chunked=False, headers=()):
    hs = []
    if token is not None:
        hs.append(("Authorization", "Bearer " + token))
    if chunked:
        hs.append(("Transfer-Encoding", "chunked"))
    elif length is not None:
        hs.append(("Content-Length", str(length)))
    hs += list(headers)
    return request("PUT", "/v1/files/" + segment, hs)


def describe_put(segment, length, chunked, headers=()):
    what = "PUT /v1/files/%s" % short(segment, 80)[1:-1]
    if chunked:
        what += " (chunked, %d body bytes)" % length
    elif length is not None:
        what += " (Content-Length: %d)" % length
    else:
        what += " (no Content-Length)"
    if headers:
        what += " with %s" % ", ".join("%s: %s" % h for h in headers)
    return what


def put(port, segment, body, token, chunk_sizes=None, headers=(), timeout=30.0,
        length=None, pause=0.0):
    """One PUT on a new connection. The body is sent in pieces; sending stops when the
    server answers early. Returns the response; resp.sent is the count of body bytes
    (framing included) that went out, resp.what describes the request."""
    chunked = chunk_sizes is not None
    payload = chunk_body(body, chunk_sizes) if chunked else body
    n = len(body) if length is None else length
    what = describe_put(segment, n, chunked, headers)
    c = Conn(port, timeout=timeout)
    try:
        c.send(put_head(segment, token, None if chunked else n, chunked, headers))
        sent, why = send_body(c, payload, pause=pause, timeout=timeout)
        try:
            resp = c.read_response(timeout=timeout, what="the response to " + what)
        except Fail as e:
            raise Fail("%s: %s" % (what, e.summary),
                       "body bytes sent before that: %d of %d (%s)" % (sent, len(payload), why),
                       *e.details)
    finally:
        c.close()
    resp.sent, resp.what = sent, what
    return resp


def puts_at_once(env, names, bodies):
    """One PUT per name, each on its own connection and thread, all released together.
    Returns each one's response or the exception it ended with; fails if any is still
    waiting 40 s later."""
    results = [None] * len(names)
    start = threading.Event()

    def one(i):
        start.wait(10)
        try:
            results[i] = put(env.port, names[i], bodies[i], env.token, timeout=20.0)
        except (Fail, OSError) as e:
            results[i] = e
    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(names))]
    for t in threads:
        t.start()
    start.set()
    deadline = time.monotonic() + 40.0
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    hung = sum(1 for t in threads if t.is_alive())
    expect(not hung, "PUTs still waiting 40 s after they started", "none", hung)
    return results


def error_of(resp, status, code, what):
    try:
        expect_error(resp, status, code)
    except Fail as e:
        raise Fail("%s: %s" % (what, e.summary), *e.details)


# ==========================================================================
# one test's database, storage, user and server


class Env:
    """A database's user and token, a storage directory, and a server on both."""

    def __init__(self, ctx, db, *args, workers=2, storage=None, prefix=()):
        self.ctx, self.db = ctx, db
        self.prefix = tuple(prefix)
        _SEQ[0] += 1
        self.user = "up%d_%d_%s" % (os.getpid(), _SEQ[0], os.urandom(3).hex())
        self.token = db.token(self.user)
        if storage is None:
            self.base = harness.tmpdir()
            self.storage = os.path.join(self.base, "store")
            os.mkdir(self.storage)
        else:
            self.base = None
            self.storage = storage
        self.args = list(args)
        self.workers = workers
        self.ids = set()      # ids of 201 answers
        self.bodies = {}      # id -> (sha256 hex, size)
        self.server = None
        self.start()

    def start(self):
        self.server = db_routes.db_server(self.ctx, self.db, "--storage-dir", self.storage,
                                          *(list(NO_LIMITS) + self.args),
                                          workers=self.workers, prefix=self.prefix)
        return self.server

    @property
    def port(self):
        return self.server.port

    # -- requests

    def put(self, segment, body, **kw):
        kw.setdefault("token", self.token)
        token = kw.pop("token")
        return put(self.port, segment, body, token, **kw)

    def accept(self, resp, body, segment, what=None):
        """Checks a 201 answer to a PUT of body under segment; returns its JSON document
        and records its id."""
        what = what or getattr(resp, "what", "PUT /v1/files/" + segment)
        name = sanitize(segment)
        try:
            expect_status(resp, 201)
            expect_json_type(resp)
            doc = resp.json()
        except Fail as e:
            raise Fail("%s: %s" % (what, e.summary), *e.details)
        expect(isinstance(doc, dict) and sorted(doc) == ["id", "name", "size", "status"],
               "%s: 201 body must be exactly {id, name, size, status}" % what,
               '{"id","name","size","status":"queued"}', short(resp.body, 300))
        fid = doc["id"]
        expect(isinstance(fid, str) and UUID_RE.match(fid),
               "%s: id must be a lowercase UUID" % what, "xxxxxxxx-xxxx-...", repr(fid))
        expect(fid not in self.ids, "%s: id repeats an earlier upload's id" % what,
               "a new id", fid)
        expect_eq("%s: name in the 201 body" % what, name, doc["name"])
        expect(type(doc["size"]) is int and doc["size"] == len(body),
               "%s: size in the 201 body" % what, "%d (a JSON integer)" % len(body),
               repr(doc["size"]))
        expect_eq("%s: status in the 201 body" % what, "queued", doc["status"])
        loc = resp.hall("Location")
        expect(loc == ["/v1/files/" + fid], "%s: Location header" % what,
               "Location: /v1/files/%s" % fid, repr(loc))
        self.ids.add(fid)
        self.bodies[fid] = (hashlib.sha256(body).hexdigest(), len(body))
        return doc

    def put_ok(self, segment, body, check_get=True, **kw):
        resp = self.put(segment, body, **kw)
        doc = self.accept(resp, body, segment)
        self.check_stored(doc["id"], body, sanitize(segment), what=resp.what,
                          check_get=check_get)
        return doc

    # -- state

    def key(self, fid):
        return "objects/%s/%s%s/%s" % (fid[34:36], fid[7], fid[9], fid)

    def rows(self):
        """id -> {owner, name, size, status, storage_key} of every row in files."""
        out = {}
        for r in self.db.sql("select id, owner, encode(convert_to(name, 'UTF8'), 'hex'), "
                             "size, status, storage_key from files order by id"):
            expect(len(r) == 6, "unexpected psql output for the files rows", "6 fields",
                   repr(r))
            out[r[0]] = {"owner": r[1], "name": bytes.fromhex(r[2]).decode("utf-8", "replace"),
                         "size": int(r[3]), "status": r[4], "storage_key": r[5]}
        return out

    def check_stored(self, fid, body, name, what="upload", check_get=True, rows=None):
        """The row, the file's bytes and (check_get) GET /v1/files/{id} of one upload."""
        rows = self.rows() if rows is None else rows
        row = rows.get(fid)
        expect(row is not None, "%s: no row in files for the 201's id" % what,
               "a row with id %s" % fid, "%d rows: %s" % (len(rows), short(sorted(rows), 200)))
        want = {"owner": self.user, "name": name, "size": len(body),
                "storage_key": self.key(fid)}
        got = {k: row[k] for k in want}
        expect_eq("%s: files row (owner, name, size, storage_key)" % what, want, got)
        expect(row["status"] in ROW_STATUSES, "%s: files row status" % what,
               "queued (or a later job state)", repr(row["status"]))
        path = os.path.join(self.storage, self.key(fid))
        expect(os.path.isfile(path) and not os.path.islink(path),
               "%s: no stored file at STORAGE_DIR/%s" % (what, self.key(fid)),
               "a regular file", "missing" if not os.path.lexists(path) else "not a plain file")
        with open(path, "rb") as f:
            data = f.read()
        if data != body:
            raise Fail("%s: stored bytes differ from the bytes sent" % what,
                       "expected: %d bytes, sha256 %s" % (len(body),
                                                          hashlib.sha256(body).hexdigest()),
                       "got:      %d bytes, sha256 %s" % (len(data),
                                                          hashlib.sha256(data).hexdigest()),
                       "first difference at byte %d" % first_diff(body, data))
        if check_get:
            r = db_routes.api(self.port, "GET", "/v1/files/" + fid, self.token)
            doc = db_routes.ok_json(r, "GET /v1/files/%s after %s" % (fid, what))
            db_routes.check_shape(doc, "GET /v1/files/%s" % fid)
            got = {k: doc.get(k) for k in ("id", "name", "size")}
            expect_eq("GET /v1/files/%s: id, name, size" % fid,
                      {"id": fid, "name": name, "size": len(body)}, got)
            expect(doc["status"] in ROW_STATUSES, "GET /v1/files/%s: status" % fid,
                   "queued (or a later job state)", repr(doc["status"]))

    def tree(self):
        """(files under objects/ as paths relative to STORAGE_DIR, other entries that are
        not directories anywhere under STORAGE_DIR)."""
        objects, others = [], []
        for root, dirs, files in os.walk(self.storage):
            rel_root = os.path.relpath(root, self.storage)
            for d in dirs:
                p = os.path.join(root, d)
                if os.path.islink(p):
                    others.append(os.path.normpath(os.path.join(rel_root, d)) + " (symlink)")
            for f in files:
                rel = os.path.normpath(os.path.join(rel_root, f))
                if rel.startswith("objects/") and not os.path.islink(os.path.join(root, f)):
                    objects.append(rel)
                else:
                    others.append(rel)
        return sorted(objects), sorted(others)

    def check_tree(self, want_ids=None, what="the storage tree"):
        """objects/ holds exactly the files of want_ids (default: every 201 so far), each
        at its key and complete; nothing else exists under STORAGE_DIR or beside it."""
        want_ids = self.ids if want_ids is None else set(want_ids)
        objects, others = self.tree()
        expect(not others, "%s: entries outside objects/ (or not plain files)" % what,
               "none", short(others, 600))
        want = sorted(self.key(i) for i in want_ids)
        if objects != want:
            extra = sorted(set(objects) - set(want))
            missing = sorted(set(want) - set(objects))
            details = ["expected: %d files (one per 201)" % len(want),
                       "got:      %d files" % len(objects)]
            if extra:
                details.append("unexpected: %s" % short(extra, 600))
                for p in extra[:3]:
                    try:
                        details.append("  %s: %d bytes" % (p, os.path.getsize(
                            os.path.join(self.storage, p))))
                    except OSError:
                        pass
            if missing:
                details.append("missing: %s" % short(missing, 600))
            raise Fail("%s: files under objects/ do not match the 201 answers" % what,
                       *details)
        for fid in want_ids:
            if fid in self.bodies:
                digest, size = self.bodies[fid]
                p = os.path.join(self.storage, self.key(fid))
                got_size = os.path.getsize(p)
                expect(got_size == size, "%s: size of %s" % (what, self.key(fid)), size,
                       got_size)
                with open(p, "rb") as f:
                    got = hashlib.sha256(f.read()).hexdigest()
                expect_eq("%s: sha256 of %s" % (what, self.key(fid)), digest, got)
        if self.base is not None:
            beside = sorted(os.listdir(self.base))
            expect(beside == ["store"], "%s: entries beside STORAGE_DIR" % what, "['store']",
                   repr(beside))

    def check_rows(self, want_ids=None, what="files rows"):
        want_ids = self.ids if want_ids is None else set(want_ids)
        got = set(self.rows())
        if got != set(want_ids):
            raise Fail("%s: rows do not match the 201 answers" % what,
                       "expected: %d rows (one per 201)" % len(want_ids),
                       "got:      %d rows" % len(got),
                       "rows without a 201: %s" % short(sorted(got - set(want_ids)), 400),
                       "201s without a row: %s" % short(sorted(set(want_ids) - got), 400))

    def deleted_fds(self):
        """The server's open descriptors of deleted files under STORAGE_DIR (an
        O_TMPFILE shows as '<dir>/#<inode> (deleted)')."""
        out = []
        d = "/proc/%d/fd" % self.server.proc.pid
        real = os.path.realpath(self.storage)
        try:
            names = os.listdir(d)
        except OSError:
            return out
        for n in names:
            try:
                t = os.readlink(os.path.join(d, n))
            except OSError:
                continue
            if t.startswith(real + "/") and t.endswith(" (deleted)"):
                out.append("fd %s -> %s" % (n, t))
        return out

    def settle(self, want_ids=None, what="after the aborted uploads", seconds=3.0):
        """Waits (bounded) until the tree, the rows and the descriptors show no trace of
        anything but want_ids; then checks them once more and fails with details."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.check_tree(want_ids, what)
                self.check_rows(want_ids, what)
                if (not self.deleted_fds() and
                        db_routes.scrape(self.port).value("ringup_upload_files_open") == 0):
                    break
            except Fail:
                pass
            time.sleep(0.2)
        self.check_tree(want_ids, what)
        self.check_rows(want_ids, what)
        fds = self.deleted_fds()
        expect(not fds, "%s: the server still holds descriptors of unfinished files" % what,
               "none %.0f s later" % seconds, short(fds, 600))
        # Direct descriptors are not in /proc/PID/fd: the server counts its open files.
        held = db_routes.scrape(self.port).value("ringup_upload_files_open")
        expect_eq("%s: ringup_upload_files_open" % what, 0, held)

    def still_serving(self, what):
        try:
            r = harness.http_get(self.port, "/healthz")
        except (Fail, OSError) as e:
            raise Fail("%s: the server no longer serves GET /healthz" % what,
                       "error: %s" % (e.summary if isinstance(e, Fail) else repr(e)))
        try:
            expect_status(r, 200)
        except Fail as e:
            raise Fail("%s: GET /healthz: %s" % (what, e.summary), *e.details)


def first_diff(a, b):
    n = min(len(a), len(b))
    for i in range(0, n, 4096):
        if a[i:i + 4096] != b[i:i + 4096]:
            for j in range(i, min(i + 4096, n)):
                if a[j] != b[j]:
                    return j
    return n


UPLOAD_PATHS = ("buffered", "spliced", "direct")


def path_bytes(m):
    """ringup_upload_bytes_total by path."""
    return {p: m.value("ringup_upload_bytes_total", path=p) or 0 for p in UPLOAD_PATHS}


def body_of(n):
    """n bytes that differ from upload to upload."""
    return os.urandom(n)


# ==========================================================================
# the happy path


@_test("upload: sizes 0 B, 1 B, 16 KiB, 1 MiB + 7, 10 MiB round-trip exactly "
       "(201, Location, row, file, GET)")
def t_sizes(ctx):
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db)
        for n in (0, 1, 16 * KIB, MIB + 7, DEFAULT_MAX):
            env.put_ok("size-%d.bin" % n, body_of(n))
        env.check_tree()
        env.check_rows()
        env.still_serving("after the uploads")


@_test("upload: chunked bodies (varied chunk sizes) -> 201, exact bytes")
def t_chunked(ctx):
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db)
        env.put_ok("chunked-small.txt", b"hello, chunked world\n", chunk_sizes=(5, 1, 7))
        env.put_ok("chunked-mixed.bin", body_of(300 * KIB + 3),
                   chunk_sizes=(1, 4093, 65536, 17, 200000))
        env.put_ok("chunked-empty.bin", b"", chunk_sizes=(1,))
        env.put_ok("chunked-large.bin", body_of(3 * MIB), chunk_sizes=(65536,))
        env.check_tree()
        env.check_rows()


# ==========================================================================
# length and limits


@_test("upload: no Content-Length and not chunked -> 411 length_required; no file, no row")
def t_length_required(ctx):
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db)
        c = Conn(env.port)
        c.send(put_head("nolength.txt", env.token))
        r = c.read_response(what="the response to a PUT without Content-Length")
        c.close()
        error_of(r, 411, "length_required", "PUT /v1/files/nolength.txt without "
                 "Content-Length or Transfer-Encoding")
        env.settle(what="after the 411")
        env.still_serving("after the 411")


@_test("upload: Content-Length over MAX_FILE_SIZE -> 413 too_large before the body, then "
       "close; exactly MAX_FILE_SIZE -> 201")
def t_too_large(ctx):
    limit = MIB
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db, "--max-file-size", limit)
        for n in (limit + 1, 10 ** 15):
            what = "PUT with Content-Length: %d (MAX_FILE_SIZE=%d), headers only" % (n, limit)
            c = Conn(env.port)
            c.send(put_head("big.bin", env.token, n))
            r = c.read_response(what="a 413 before any body byte (%s)" % what)
            error_of(r, 413, "too_large", what)
            try:
                expect_close_header(r)
            except Fail as e:
                raise Fail("%s: %s" % (what, e.summary), *e.details)
            kind, secs, extra = c.wait_close(3.0)
            expect(kind in ("eof", "reset"), "%s: connection not closed after the 413" % what,
                   "closed within 3 s", "still open")
            expect(not extra and not c.buf, "%s: bytes after the 413" % what, "none",
                   short(c.buf + extra))
            c.close()
        env.settle(what="after the 413s")
        env.put_ok("exact.bin", body_of(limit))
        env.put_ok("one-less.bin", body_of(limit - 1))
        env.check_tree()
        env.check_rows()


@_test("upload: chunked body growing past MAX_FILE_SIZE -> 413 too_large, no file, no row; "
       "exactly MAX_FILE_SIZE chunked -> 201")
def t_chunked_too_large(ctx):
    limit = MIB
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db, "--max-file-size", limit)
        r = env.put("grow.bin", body_of(limit + MIB // 2), chunk_sizes=(65536,))
        error_of(r, 413, "too_large", "%s (MAX_FILE_SIZE=%d)" % (r.what, limit))
        r = env.put("grow-by-one.bin", body_of(limit + 1), chunk_sizes=(65536, 1000, 1))
        error_of(r, 413, "too_large", "%s (MAX_FILE_SIZE=%d)" % (r.what, limit))
        env.settle(what="after the chunked 413s")
        env.still_serving("after the chunked 413s")
        env.put_ok("exact-chunked.bin", body_of(limit), chunk_sizes=(65536, 333))
        env.check_tree()
        env.check_rows()


@_test("upload: Expect: 100-continue -> 100 Continue before the body, then 201; over the "
       "limit -> 413 instead of 100")
def t_expect_continue(ctx):
    limit = MIB
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db, "--max-file-size", limit)
        body = body_of(200 * KIB)
        what = "PUT with Expect: 100-continue, Content-Length: %d" % len(body)
        c = Conn(env.port)
        c.send(put_head("continue.bin", env.token, len(body), headers=[("Expect",
                                                                        "100-continue")]))
        r = c.read_response(what="HTTP/1.1 100 Continue before the body (%s)" % what)
        expect(r.status == 100, "%s: first response" % what, "HTTP/1.1 100 Continue",
               "%d %s" % (r.status, short(r.raw_head, 300)))
        expect_eq("%s: 100 response version" % what, "HTTP/1.1", r.version)
        c.send(body)
        r = c.read_response(timeout=15.0, what="the final response (%s)" % what)
        doc = env.accept(r, body, "continue.bin", what)
        env.check_stored(doc["id"], body, "continue.bin", what)
        # keep-alive continues after the 201
        c.send(request("GET", "/healthz"))
        r = c.read_response(what="GET /healthz after the 100-continue upload")
        expect_status(r, 200)
        c.close()

        what = "PUT with Expect: 100-continue, Content-Length: %d (MAX_FILE_SIZE=%d)" % (
            limit + 1, limit)
        c = Conn(env.port)
        c.send(put_head("continue-big.bin", env.token, limit + 1,
                        headers=[("Expect", "100-continue")]))
        r = c.read_response(what="a 413 (%s)" % what)
        expect(r.status != 100, "%s: answered 100 Continue" % what, "413 too_large, no 100",
               "100 Continue")
        error_of(r, 413, "too_large", what)
        c.close()
        env.settle(what="after the 100-continue uploads")


# ==========================================================================
# authentication


@_test("upload: missing or invalid token -> 401 before the body; no file, no row")
def t_unauthorized(ctx):
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db)
        unknown = db_routes.new_token()
        cases = [("no Authorization", None, None),
                 ("an unknown token", unknown, None),
                 ("a malformed token", "not-a-token", None),
                 ("Basic credentials", None, "Basic YWxpY2U6c2VjcmV0")]
        for label, tok, auth in cases:
            hs = [("Authorization", auth)] if auth else []
            what = "PUT with %s, Content-Length: 65536, headers only" % label
            c = Conn(env.port)
            c.send(put_head("secret.bin", tok, 65536, headers=hs))
            r = c.read_response(what="a 401 before the body (%s)" % what)
            db_routes.expect_401(r, what)
            c.close()
        # with the body sent in full as well
        for label, tok in (("no Authorization", None), ("an unknown token", unknown)):
            r = put(env.port, "secret.bin", body_of(100 * KIB), tok)
            db_routes.expect_401(r, "%s, with %s" % (r.what, label))
        env.settle(what="after the 401s")
        env.put_ok("after-401.bin", body_of(1000))
        env.check_tree()
        env.check_rows()


# ==========================================================================
# aborted uploads


def abort_upload(port, head, body, cut, rst=False):
    """Sends head and the first cut bytes of body, then closes (RST with rst)."""
    c = Conn(port)
    c.send(head)
    if cut:
        send_body(c, body[:cut], stop_on_answer=False)
    time.sleep(0.05)
    if rst:
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    c.close()


@_test("upload: 300 clients that reset right after sending a whole small PUT: every stored "
       "file has its row and every row its file, no file left open")
def t_vanish(ctx):
    # The reset lands while the file is being opened, installed, linked or recorded: what an
    # op in flight made must still be released (or kept, with its row).
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db)
        body = body_of(16384)
        for i in range(300):
            c = Conn(env.port)
            c.send(put_head("vanish-%d.bin" % i, env.token, len(body)) + body)
            time.sleep((i % 30) * 0.0002)  # 0 to 6 ms: some land mid-way
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            c.close()
        time.sleep(1.0)
        kept = set(env.rows().keys())
        ctx.note("%d of 300 uploads were stored before their client went" % len(kept))
        env.settle(want_ids=kept, what="after 300 resets")
        env.still_serving("after 300 resets")


@_test("upload: client disconnects mid-body -> no file, no row, no open descriptor; "
       "server still serves")
def t_disconnect(ctx):
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db)
        tok = env.token
        mb = body_of(MIB)
        big = body_of(DEFAULT_MAX)
        ch = chunk_body(body_of(600 * KIB), (65536,))
        cases = [
            ("Content-Length 1 MiB, half sent, FIN", put_head("half.bin", tok, MIB), mb,
             MIB // 2, False),
            ("Content-Length 1 MiB, half sent, RST", put_head("half-rst.bin", tok, MIB), mb,
             MIB // 2, True),
            ("Content-Length 1 MiB, headers only", put_head("none.bin", tok, MIB), mb, 0,
             False),
            ("Content-Length 1 MiB, all but one byte", put_head("almost.bin", tok, MIB), mb,
             MIB - 1, False),
            ("Content-Length 10 MiB, 5 MiB sent", put_head("big.bin", tok, DEFAULT_MAX), big,
             DEFAULT_MAX // 2, False),
            ("chunked, 5 of 10 chunks sent", put_head("chunks.bin", tok, chunked=True), ch,
             len(ch) // 2, False),
            ("chunked, all chunks but no last-chunk", put_head("nolast.bin", tok,
                                                                chunked=True), ch,
             len(ch) - 5, False),
        ]
        for label, head, body, cut, rst in cases:
            abort_upload(env.port, head, body, cut, rst)
        time.sleep(1.0)
        env.settle(what="after %d uploads cut off by the client (%s)"
                   % (len(cases), "; ".join(c[0] for c in cases)))
        env.still_serving("after the cut-off uploads")
        env.put_ok("after-abort.bin", body_of(256 * KIB))
        env.check_tree()
        env.check_rows()


# ==========================================================================
# concurrency and keep-alive


@_test("upload: 50 concurrent PUTs of 64 KiB -> 50 x 201, 50 rows, 50 exact files")
def t_concurrent(ctx):
    n = 50
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db)
        bodies = [body_of(64 * KIB) for _ in range(n)]
        results = puts_at_once(env, ["c%02d.bin" % i for i in range(n)], bodies)
        errs = [(i, r) for i, r in enumerate(results) if not hasattr(r, "status")]
        not201 = [(i, r) for i, r in enumerate(results) if hasattr(r, "status")
                  and r.status != 201]
        if errs or not201:
            details = ["expected: %d x 201" % n,
                       "got:      %d x 201, %d other statuses, %d errors"
                       % (n - len(errs) - len(not201), len(not201), len(errs))]
            details += ["PUT #%d: %s" % (i, e.summary if isinstance(e, Fail) else repr(e))
                        for i, e in errs[:5]]
            details += ["PUT #%d: %s" % (i, r.describe()) for i, r in not201[:5]]
            raise Fail("not every concurrent PUT got 201", *details)
        docs = [env.accept(r, bodies[i], "c%02d.bin" % i) for i, r in enumerate(results)]
        rows = env.rows()
        for i, d in enumerate(docs):
            env.check_stored(d["id"], bodies[i], "c%02d.bin" % i, what=results[i].what,
                             check_get=(i % 10 == 0), rows=rows)
        env.check_tree()
        env.check_rows()
        expect_eq("distinct ids", n, len(set(d["id"] for d in docs)))


@_test("upload: two PUTs then GET /healthz on one keep-alive connection, sequential and "
       "pipelined")
def t_keepalive(ctx):
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db)
        # sequential: request, response, request, response
        c = Conn(env.port, timeout=15.0)
        sent = []
        for i, body in enumerate((body_of(300 * KIB), body_of(10))):
            seg = "seq-%d.bin" % i
            c.send(put_head(seg, env.token, len(body)) + body, timeout=15.0)
            r = c.read_response(timeout=15.0, what="PUT #%d on a keep-alive connection" % (i + 1))
            doc = env.accept(r, body, seg, "PUT #%d on a keep-alive connection" % (i + 1))
            try:
                expect_no_close_header(r)
            except Fail as e:
                raise Fail("PUT #%d on a keep-alive connection: %s" % (i + 1, e.summary),
                           *e.details)
            sent.append((doc["id"], body, seg))
        c.send(request("GET", "/healthz"))
        expect_status(c.read_response(what="GET /healthz after two PUTs on one connection"),
                      200)
        c.close()
        for fid, body, seg in sent:
            env.check_stored(fid, body, seg, "keep-alive PUT %s" % seg)

        # pipelined: everything in one send, the second PUT chunked
        b1, b2, b3 = body_of(300 * KIB + 1), body_of(70 * KIB), body_of(5)
        data = (put_head("pipe-1.bin", env.token, len(b1)) + b1 +
                put_head("pipe-2.bin", env.token, chunked=True) + chunk_body(b2, (4096, 7)) +
                put_head("pipe-3.bin", env.token, len(b3)) + b3 +
                request("GET", "/healthz"))
        c = Conn(env.port, timeout=15.0)
        c.send(data, timeout=15.0)
        for i, (seg, body) in enumerate((("pipe-1.bin", b1), ("pipe-2.bin", b2),
                                          ("pipe-3.bin", b3))):
            what = "pipelined PUT #%d of 3 (then GET /healthz), all sent at once" % (i + 1)
            r = c.read_response(timeout=15.0, what=what)
            doc = env.accept(r, body, seg, what)
            env.check_stored(doc["id"], body, seg, what)
        r = c.read_response(what="the pipelined GET /healthz after three PUTs")
        expect_status(r, 200)
        expect_eq("GET /healthz body after pipelined PUTs", {"status": "ok"}, r.json())
        c.close()
        env.check_tree()
        env.check_rows()


# ==========================================================================
# names


HOSTILE = [
    "..%2F..%2Fetc%2Fpasswd",
    "%2Fetc%2Fpasswd",
    "a%00b",
    "%2e%2e",
    "%2E",
    "%2F",
    "x%5Cy%5C..%5Cz",
    "..%5C..%5Cwindows",
    "%22quoted%22%20%27single%27.txt",
    "tab%09lf%0Acr%0Ddel%7Fesc%1B",
    "report%20final.pdf",
    "%C3%A9t%C3%A9.txt",
    "100%25.txt",
    "x" * 300,
    "%C3%A9" * 150,           # 300 bytes of 2-byte sequences -> 254 bytes
    "a" + "%C3%A9" * 150,     # -> exactly 255 bytes
    "ab" + "%E2%82%AC" * 100,  # 3-byte sequences -> 254 bytes
    "%F0%9F%98%80" * 70,      # 4-byte sequences: 280 bytes -> 252 bytes
]


@_test("upload: hostile file names are stored sanitized as metadata only; nothing lands "
       "outside objects/")
def t_hostile_names(ctx):
    passwd = None
    try:
        with open("/etc/passwd", "rb") as f:
            passwd = hashlib.sha256(f.read()).hexdigest()
    except OSError:
        pass
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db)
        # the expectations themselves (a check of sanitize())
        assert sanitize("..%2F..%2Fetc%2Fpasswd") == ".._.._etc_passwd"
        assert sanitize("%2e%2e") == "_" and sanitize("a%00b") == "a_b"
        assert len(sanitize("a" + "%C3%A9" * 150).encode()) == 255
        wrong = []
        for seg in HOSTILE:
            body = ("body of %s\n" % seg).encode()
            resp = env.put(seg, body)
            try:
                doc = env.accept(resp, body, seg)
                env.check_stored(doc["id"], body, sanitize(seg), what=resp.what)
            except Fail as e:
                wrong.append("%s -> %s" % (short(seg, 60), e.summary))
                wrong += ["    " + d for d in e.details[:3]]
        expect(not wrong, "hostile names not handled as the sanitization rule says "
               "(%d of %d)" % (sum(1 for w in wrong if not w.startswith(" ")), len(HOSTILE)),
               None, None, *wrong)
        env.check_tree(what="after the hostile names")
        env.check_rows()
        if passwd is not None:
            with open("/etc/passwd", "rb") as f:
                expect_eq("sha256 of /etc/passwd after the uploads", passwd,
                          hashlib.sha256(f.read()).hexdigest())
        env.still_serving("after the hostile names")


# ==========================================================================
# disk full


def _mount_tmpfs(path, size):
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size, "tmpfs",
                        path], stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    expect(p.returncode == 0, "mount -t tmpfs failed (needed for the disk-full test)",
           "exit 0", "exit %d: %s" % (p.returncode, short(p.stderr.decode("utf-8", "replace"))))


def _umount(path):
    for args in (["umount", path], ["umount", path], ["umount", "-l", path]):
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        if p.returncode == 0:
            return True
        time.sleep(0.3)
    return False


def _free(path):
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def t_disk_full(ctx):
    if not is_root():
        return  # registered with a SKIP name
    mnt = harness.tmpdir()
    _mount_tmpfs(mnt, "8m")
    try:
        with db_routes.TestDb(ctx) as db:
            env = Env(ctx, db, "--max-file-size", 20 * MIB, storage=mnt)
            free0 = _free(mnt)
            r = env.put("huge.bin", body_of(12 * MIB))
            error_of(r, 507, "insufficient_storage",
                     "%s on an 8 MiB tmpfs (free %d bytes; body bytes sent %d)"
                     % (r.what, free0, r.sent))
            ctx.note("507 after %d of %d body bytes" % (r.sent, 12 * MIB))
            time.sleep(0.5)
            env.settle(what="after the 507")
            deadline = time.monotonic() + 3.0
            while _free(mnt) < free0 - 256 * KIB and time.monotonic() < deadline:
                time.sleep(0.1)
            expect(_free(mnt) >= free0 - 256 * KIB,
                   "space of the failed upload not given back (a partial file still open?)",
                   "free >= %d bytes" % (free0 - 256 * KIB), "%d bytes" % _free(mnt))
            # a body that does not fit only once written (chunked: no length up front)
            r = env.put("huge-chunked.bin", body_of(12 * MIB), chunk_sizes=(65536,))
            error_of(r, 507, "insufficient_storage", "%s on an 8 MiB tmpfs" % r.what)
            time.sleep(0.5)
            env.settle(what="after the chunked 507")
            env.still_serving("after the 507s")
            small = body_of(MIB)
            r = env.put("fits.bin", small)
            if r.status != 201:
                raise Fail("%s after the 507s, with %d bytes free on the 8 MiB tmpfs: status: "
                           "expected 201, got %d" % (r.what, _free(mnt), r.status),
                           "response: %s" % r.describe())
            doc = env.accept(r, small, "fits.bin")
            env.check_stored(doc["id"], small, "fits.bin", r.what)
            env.check_tree()
            env.check_rows()
            env.server.stop()  # releases its directory descriptor before the unmount
    finally:
        if not _umount(mnt):
            ctx.note("could not unmount the tmpfs at %s" % mnt)


_test("upload: disk full -> 507 insufficient_storage, no partial file, no row; later 1 MiB "
      "PUT succeeds" + ("" if is_root() else " # SKIP needs root to mount a tmpfs"))(t_disk_full)


def t_disk_full_race(ctx):
    if not is_root():
        return  # registered with a SKIP name
    mnt = harness.tmpdir()
    _mount_tmpfs(mnt, "40m")
    n, size = 3, 14 * MIB
    try:
        with db_routes.TestDb(ctx) as db:
            env = Env(ctx, db, "--max-file-size", 20 * MIB, storage=mnt)
            free0 = _free(mnt)
            bodies = [body_of(size) for _ in range(n)]
            results = puts_at_once(env, ["race-%d.bin" % i for i in range(n)], bodies)
            errs = ["PUT #%d: %s" % (i, r.summary if isinstance(r, Fail) else repr(r))
                    for i, r in enumerate(results) if not hasattr(r, "status")]
            expect(not errs, "%d concurrent PUTs of %d bytes on a %d-byte tmpfs: errors"
                   % (n, size, free0), "a response each", None, *errs)
            got = [r.status for r in results]
            expect(all(s in (201, 507) for s in got) and 507 in got,
                   "%d concurrent PUTs of %d bytes (%d in all) on a tmpfs with %d bytes free"
                   % (n, size, n * size, free0), "201 or 507 each, at least one 507", got,
                   *["PUT #%d: %s" % (i, r.describe()) for i, r in enumerate(results)
                     if r.status not in (201,)])
            for i, r in enumerate(results):
                if r.status == 201:
                    doc = env.accept(r, bodies[i], "race-%d.bin" % i)
                    env.check_stored(doc["id"], bodies[i], "race-%d.bin" % i, r.what)
                else:
                    error_of(r, 507, "insufficient_storage", r.what)
            ctx.note("statuses %s; body bytes sent per PUT before the answer: %s"
                     % (got, [r.sent for r in results]))
            time.sleep(0.5)
            env.settle(what="after the 507s")
            want = free0 - len(env.ids) * size - 256 * KIB
            deadline = time.monotonic() + 3.0
            while _free(mnt) < want and time.monotonic() < deadline:
                time.sleep(0.1)
            expect(_free(mnt) >= want, "space of the failed uploads not given back",
                   "free >= %d bytes" % want, "%d bytes" % _free(mnt))
            env.still_serving("after the 507s")
            env.server.stop()
    finally:
        if not _umount(mnt):
            ctx.note("could not unmount the tmpfs at %s" % mnt)


_test("upload: disk fills while concurrent uploads write -> 507 insufficient_storage for "
      "those that do not fit, no partial file, no row, space given back"
      + ("" if is_root() else " # SKIP needs root to mount a tmpfs"))(t_disk_full_race)


# ==========================================================================
# kill -9


@_test("upload: kill -9 during uploads: every 201 intact after a restart, no partial files, "
       "no rows for unfinished uploads")
def t_kill9(ctx):
    n_slow, n_fast, size = 20, 20, 2 * MIB
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db)
        slow_bodies = [body_of(size) for _ in range(n_slow)]
        fast_bodies = [body_of(size) for _ in range(n_fast)]
        progress = [0] * n_slow           # body bytes each slow sender got out
        slow_res = [None] * n_slow
        fast_res = [None] * n_fast
        stop = threading.Event()

        def slow(i):
            c = None
            try:
                c = socket.create_connection((HOST, env.port), timeout=10)
                c.sendall(put_head("slow-%02d.bin" % i, env.token, size))
                for off in range(0, size, 64 * KIB):
                    if stop.is_set():
                        break
                    c.sendall(slow_bodies[i][off:off + 64 * KIB])
                    progress[i] = off + 64 * KIB
                    time.sleep(0.25)
                buf = b""
                c.settimeout(5)
                while True:  # bounded by the socket timeout and the server's close
                    r = harness.parse_response(buf)
                    if r is not None:
                        slow_res[i] = r[0]
                        break
                    d = c.recv(65536)
                    if not d:
                        slow_res[i] = "closed"
                        break
                    buf += d
            except (OSError, Fail) as e:
                slow_res[i] = "error: %r" % (e,)
            finally:
                if c is not None:
                    c.close()

        def fast(i):
            try:
                fast_res[i] = put(env.port, "fast-%02d.bin" % i, fast_bodies[i], env.token,
                                  timeout=20.0)
            except (Fail, OSError) as e:
                fast_res[i] = e

        st = [threading.Thread(target=slow, args=(i,), daemon=True) for i in range(n_slow)]
        ft = [threading.Thread(target=fast, args=(i,), daemon=True) for i in range(n_fast)]
        for t in st + ft:
            t.start()
        deadline = time.monotonic() + 25.0
        for t in ft:
            t.join(max(0.0, deadline - time.monotonic()))
        while min(progress) < 2 * 64 * KIB and time.monotonic() < deadline:
            time.sleep(0.05)
        in_flight = sum(1 for p in progress if 0 < p < size)
        env.server.proc.kill()
        env.server.proc.wait(10)
        env.server.finish()
        killed_at = progress[:]
        stop.set()
        for t in st + ft:
            t.join(max(0.0, deadline + 15.0 - time.monotonic()))
        expect(not any(t.is_alive() for t in st + ft), "upload threads still running after "
               "the kill", "none", sum(1 for t in st + ft if t.is_alive()))

        # which uploads got 201
        fast_bad = [(i, r) for i, r in enumerate(fast_res)
                    if not hasattr(r, "status") or r.status != 201]
        expect(not fast_bad, "fast uploads that did not get 201 before the kill",
               "%d x 201" % n_fast, "%d others" % len(fast_bad),
               *["fast PUT #%d: %s" % (i, r.describe() if hasattr(r, "describe") else
                                       (r.summary if isinstance(r, Fail) else repr(r)))
                 for i, r in fast_bad[:5]])
        for i, r in enumerate(fast_res):
            env.accept(r, fast_bodies[i], "fast-%02d.bin" % i)
        slow_201 = 0
        for i, r in enumerate(slow_res):
            if isinstance(r, harness.Response) and r.status == 201:
                env.accept(r, slow_bodies[i], "slow-%02d.bin" % i)
                slow_201 += 1
        ctx.note("killed with %d slow uploads in flight (bytes sent: min %d, max %d); "
                 "%d slow uploads had 201" % (in_flight, min(killed_at), max(killed_at),
                                              slow_201))
        expect(in_flight > 0, "no slow upload was in flight at the kill (test timing)",
               "some", in_flight)

        # restart on the same database and storage
        env.start()
        env.check_tree(what="after kill -9 and a restart")
        env.check_rows(what="after kill -9 and a restart")
        rows = env.rows()
        for i, r in enumerate(fast_res):
            fid = r.json()["id"]
            env.check_stored(fid, fast_bodies[i], "fast-%02d.bin" % i,
                             what="fast upload #%d after kill -9 and a restart" % i,
                             check_get=(i % 5 == 0), rows=rows)
        env.put_ok("after-restart.bin", body_of(64 * KIB))
        env.check_tree()
        env.check_rows()


# ==========================================================================
# metrics


@_test("upload: /metrics ringup_requests_total{code=\"201\"} counts uploads")
def t_metrics(ctx):
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db, "--max-file-size", MIB)
        m0 = db_routes.scrape(env.port)
        before = m0.value("ringup_requests_total", code="201") or 0
        b413 = m0.value("ringup_requests_total", code="413") or 0
        for i in range(3):
            env.put_ok("m%d.bin" % i, body_of(1000 * (i + 1)), check_get=False)
        env.put_ok("m-chunked.bin", body_of(5000), chunk_sizes=(1000,), check_get=False)
        c = Conn(env.port)
        c.send(put_head("m-big.bin", env.token, MIB + 1))
        error_of(c.read_response(), 413, "too_large", "PUT with Content-Length over the limit")
        c.close()
        deadline = time.monotonic() + 3.0
        while True:
            m = db_routes.scrape(env.port)
            d201 = (m.value("ringup_requests_total", code="201") or 0) - before
            d413 = (m.value("ringup_requests_total", code="413") or 0) - b413
            if (d201 == 4 and d413 == 1) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        expect_eq('ringup_requests_total{code="201"} increase after 4 uploads', 4, d201)
        expect_eq('ringup_requests_total{code="413"} increase after one 413', 1, d413)
        # The upload families: 4 started and completed on the PUT route, the bytes written,
        # and an upload cut by its client counted as client_gone.
        expect_eq("uploads started (put)", 4, m.value("ringup_uploads_started_total", route="put"))
        expect_eq("uploads completed (put)", 4,
                  m.value("ringup_uploads_completed_total", route="put"))
        expect_eq("upload bytes (all paths)", 1000 + 2000 + 3000 + 5000,
                  sum(path_bytes(m).values()))
        expect_eq("upload duration count", 4, m.value("ringup_upload_duration_seconds_count"))
        c = Conn(env.port)
        c.send(put_head("m-cut.bin", env.token, 100000) + body_of(50000))
        time.sleep(0.3)
        c.close()
        deadline = time.monotonic() + 3.0
        gone = 0
        while time.monotonic() < deadline:
            m = db_routes.scrape(env.port)
            gone = m.value("ringup_uploads_failed_total", route="put", reason="client_gone") or 0
            if gone == 1:
                break
            time.sleep(0.1)
        expect_eq("uploads failed (put, client_gone)", 1, gone)


# ==========================================================================
# raw body paths: splice, buffered, O_DIRECT


def pipelined_puts(env, bodies, what):
    """PUTs of bodies sent back to back on one connection in one write, then a GET
    /healthz on it: each answered 201 in order and stored exactly."""
    c = Conn(env.port, timeout=30.0)
    data = b""
    names = []
    for i, body in enumerate(bodies):
        names.append("pipe%d-%d.bin" % (i, len(body)))
        data += put_head(names[-1], env.token, len(body)) + body
    data += b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
    c.send(data)
    for name, body in zip(names, bodies):
        resp = c.read_response(timeout=30.0, what="%s: pipelined PUT of %d bytes" % (what, len(body)))
        doc = env.accept(resp, body, name, what="%s: pipelined PUT %s" % (what, name))
        env.check_stored(doc["id"], body, name, what="%s: pipelined %s" % (what, name))
    r = c.read_response(timeout=10.0, what="%s: GET /healthz after the PUTs" % what)
    expect_status(r, 200)
    # Then one request at a time on the same connection: a small body (all in the first
    # receive) and a large one, each followed by a request sent only after its answer.
    for n in (100, 400000):
        body = body_of(n)
        name = "after-%d.bin" % n
        c.send(put_head(name, env.token, n) + body)
        resp = c.read_response(timeout=30.0, what="%s: PUT of %d bytes on a reused connection"
                               % (what, n))
        env.accept(resp, body, name, what="%s: PUT %s on a reused connection" % (what, name))
        c.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        r = c.read_response(timeout=10.0, what="%s: GET /healthz after a %d-byte PUT" % (what, n))
        expect_status(r, 200)
    c.close()


def slow_put(env, name, body, piece, pause):
    """A PUT whose body trickles in pieces (a slow client); returns the 201 document."""
    c = Conn(env.port, timeout=30.0)
    c.send(put_head(name, env.token, len(body)))
    for i in range(0, len(body), piece):
        c.send(body[i:i + piece])
        time.sleep(pause)
    resp = c.read_response(timeout=30.0, what="slow PUT of %d bytes" % len(body))
    c.close()
    doc = env.accept(resp, body, name, what="slow PUT " + name)
    env.check_stored(doc["id"], body, name, what="slow PUT " + name)
    return doc


@_test("upload: raw bodies by path (splice, SPLICE_UPLOADS=false, O_DIRECT from "
       "DIRECT_IO_THRESHOLD): exact bytes, pipelined, slow and cut clients, bytes per path")
def t_raw_paths(ctx):
    sizes = [1, 4095, 4096, 65537, 300000, MIB + 12345, 3 * MIB]
    cases = [("spliced", ("--splice-uploads", "true", "--direct-io-threshold", "0")),
             ("buffered", ("--splice-uploads", "false", "--direct-io-threshold", "0")),
             ("direct", ("--splice-uploads", "true", "--direct-io-threshold", "65536"))]
    for path, args in cases:
        with db_routes.TestDb(ctx) as db:
            env = Env(ctx, db, *args)
            m0 = path_bytes(db_routes.scrape(env.port))
            total = 0
            for n in sizes:
                env.put_ok("%s-%d.bin" % (path, n), body_of(n))
                total += n
            pipe_bodies = [body_of(200000), body_of(70000), body_of(5)]
            pipelined_puts(env, pipe_bodies, path)
            total += sum(len(b) for b in pipe_bodies) + 100 + 400000
            slow = body_of(150000)
            slow_put(env, "%s-slow.bin" % path, slow, 7000, 0.02)
            # Four pieces 50 ms apart: at least the last three come after the file is open.
            slow_put(env, "%s-pieces.bin" % path, body_of(2 * MIB), MIB // 2, 0.05)
            total += len(slow) + 2 * MIB
            big = (sum(n for n in sizes if n >= 65536) + 200000 + 70000 + 400000 + len(slow) +
                   2 * MIB)
            m = path_bytes(db_routes.scrape(env.port))
            d = {p: m[p] - m0[p] for p in m}
            ctx.note("%s server: bytes by path %s" % (path, d))
            expect_eq("%s server: body bytes over all paths" % path, total, sum(d.values()))
            if path == "buffered":
                expect_eq("buffered server: spliced and direct bytes", (0, 0),
                          (d["spliced"], d["direct"]))
            elif path == "spliced":
                # What arrives before the file is open goes through the buffers, as much as
                # the client manages to send by then; the pieces sent 50 ms apart cannot.
                expect_eq("spliced server: direct bytes", 0, d["direct"])
                expect(d["spliced"] >= 3 * MIB // 2, "spliced server: bytes spliced",
                       ">= %d (the last three pieces of the PUT sent in pieces)" % (3 * MIB // 2),
                       d["spliced"])
            else:
                expect_eq("direct server: bytes written with O_DIRECT", big, d["direct"])
            # A client that goes away mid-body leaves nothing behind on this path either.
            c = Conn(env.port)
            c.send(put_head("%s-cut.bin" % path, env.token, 2 * MIB) + body_of(600000))
            time.sleep(0.3)
            c.close()
            env.settle(what="%s server: after a PUT cut mid-body" % path)
            env.still_serving("%s server: after a PUT cut mid-body" % path)
            env.server.stop()


@_test("upload: files are linked by descriptor (AT_EMPTY_PATH) where the kernel allows it and "
       "through /proc/self/fd where not, on the buffered, spliced and O_DIRECT paths")
def t_link_methods(ctx):
    # Kernels from 6.10 let the opener of a file link it by descriptor without the
    # capability; older ones refuse (ringup then links through /proc/self/fd).
    nocap = ("setpriv", "--inh-caps=-dac_read_search", "--bounding-set=-dac_read_search")
    old = tuple(int(x) for x in re.findall(r"\d+", os.uname().release)[:2]) < (6, 10)
    # CAP_DAC_READ_SEARCH is bit 2 of the effective set (root in a container may lack it).
    with open("/proc/self/status") as f:
        eff = int([l.split()[1] for l in f if l.startswith("CapEff:")][0], 16)
    cases = [("descriptor", ())] if eff & (1 << 2) else []
    cases.append(("proc-path" if old else "descriptor", nocap if os.geteuid() == 0 else ()))
    for method, prefix in cases:
        with db_routes.TestDb(ctx) as db:
            env = Env(ctx, db, "--direct-io-threshold", str(2 * MIB + MIB // 2), prefix=prefix)
            line = [l for l in env.server.stderr_lines() if "storage ready" in l]
            expect(len(line) == 1 and ('"link":"%s"' % method) in line[0],
                   "start-up log of the storage", "one 'storage ready' line with link %s" % method,
                   line)
            m0 = path_bytes(db_routes.scrape(env.port))
            env.put_ok("%s-small.bin" % method, body_of(16384))
            # In pieces 50 ms apart, so most of it comes after the file is open: spliced.
            slow_put(env, "%s-spliced.bin" % method, body_of(2 * MIB), MIB // 2, 0.05)
            env.put_ok("%s-direct.bin" % method, body_of(3 * MIB))
            m = path_bytes(db_routes.scrape(env.port))
            d = {p: m[p] - m0[p] for p in m}
            expect(d["spliced"] > 0 and d["direct"] > 0, "%s: bodies took the spliced and the "
                   "O_DIRECT paths" % method, "both > 0", d)
            env.settle(what="%s: after the uploads" % method)
            env.server.stop()


@_test("upload: ringup init-storage makes every shard directory once; uploads into such a store "
       "succeed")
def t_init_storage(ctx):
    with db_routes.TestDb(ctx) as db:
        base = harness.tmpdir()
        store = os.path.join(base, "store")
        r = ctx.cli("init-storage", "--storage-dir", store, timeout=50.0)
        expect_eq("init-storage exit status", 0, r.rc)
        expect("65792 shard directories created" in r.err, "init-storage report",
               "65792 shard directories created", short(r.err))
        tops = sorted(os.listdir(os.path.join(store, "objects")))
        expect_eq("top-level shards", 256, len(tops))
        expect_eq("shards under objects/a7", 256,
                  len(os.listdir(os.path.join(store, "objects", "a7"))))
        r = ctx.cli("init-storage", "--storage-dir", store, timeout=50.0)
        expect_eq("second init-storage exit status", 0, r.rc)
        expect("0 shard directories created" in r.err, "second init-storage report",
               "0 shard directories created", short(r.err))
        env = Env(ctx, db, storage=store)
        for n in (10, 300000):
            env.put_ok("shard-%d.bin" % n, body_of(n))
        dirs = [os.path.join(store, "objects", a, b) for a in tops
                for b in os.listdir(os.path.join(store, "objects", a))]
        expect_eq("shard directories after the uploads", 65792, len(dirs) + len(tops))
        env.settle(what="after uploads into an initialized store")
        r = ctx.cli("init-storage", "--storage-dir", "/proc/nope")
        expect_eq("init-storage on an impossible directory: exit status", 1, r.rc)


# ==========================================================================
# downloads: GET /v1/files/{id}/content


def get_content(port, fid, token, headers=(), method="GET"):
    c = Conn(port)
    lines = ["%s /v1/files/%s/content HTTP/1.1" % (method, fid), "Host: t",
             "Authorization: Bearer %s" % token]
    lines += ["%s: %s" % h for h in headers]
    c.send(("\r\n".join(lines) + "\r\n\r\n").encode())
    r = c.read_response(what="%s /v1/files/%s/content" % (method, fid),
                        head=(method == "HEAD"), timeout=20.0)
    c.close()
    return r


@_test("upload: download round-trips (200 exact bytes, HEAD, Range 206, 416, other user 404)")
def t_download(ctx):
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db)
        body = body_of(3 * MIB + 11)
        doc = env.put_ok("dl.bin", body)
        fid = doc["id"]
        m0 = db_routes.scrape(env.port)
        r = get_content(env.port, fid, env.token)
        expect_status(r, 200)
        expect_eq("downloaded sha256", hashlib.sha256(body).hexdigest(),
                  hashlib.sha256(r.body).hexdigest())
        # The body went file -> pipe -> socket: every byte by splice, none through buffers.
        m1 = db_routes.scrape(env.port)
        moved = {p: (m1.value("ringup_download_bytes_total", path=p) or 0) -
                 (m0.value("ringup_download_bytes_total", path=p) or 0)
                 for p in ("spliced", "buffered")}
        expect_eq("download bytes by path", {"spliced": len(body), "buffered": 0}, moved)
        expect_eq("splice pipes in use after the download", 0,
                  m1.value("ringup_splice_pipes_in_use"))
        expect_eq("Content-Type", "application/octet-stream", r.hget("content-type"))
        expect("attachment" in (r.hget("content-disposition") or ""),
               "no attachment disposition", "Content-Disposition: attachment; ...",
               r.hget("content-disposition"))
        h = get_content(env.port, fid, env.token, method="HEAD")
        expect_status(h, 200, head=True)
        expect_eq("HEAD Content-Length", str(len(body)), h.hget("content-length"))
        for rng, first, last in (("bytes=0-0", 0, 0), ("bytes=100-199", 100, 199),
                                 ("bytes=-10", len(body) - 10, len(body) - 1),
                                 ("bytes=%d-" % (len(body) - 5), len(body) - 5, len(body) - 1)):
            p = get_content(env.port, fid, env.token, headers=(("Range", rng),))
            expect_status(p, 206)
            expect_eq("bytes of %s" % rng, body[first:last + 1], p.body)
            expect_eq("Content-Range of %s" % rng,
                      "bytes %d-%d/%d" % (first, last, len(body)), p.hget("content-range"))
        bad = get_content(env.port, fid, env.token, headers=(("Range", "bytes=%d-" % len(body)),))
        expect_status(bad, 416)
        other = db.token("someone_else_%d" % os.getpid())
        expect_status(get_content(env.port, fid, other), 404)
        expect_status(get_content(env.port, "00000000-0000-4000-8000-000000000000", env.token),
                      404)
        env.still_serving("after the downloads")


# ==========================================================================
# CORS on /v1


def cors_req(port, method, path, origin, token=None):
    c = Conn(port)
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: t", "Origin: %s" % origin,
             "Access-Control-Request-Method: PUT"]
    if token:
        lines.append("Authorization: Bearer %s" % token)
    c.send(("\r\n".join(lines) + "\r\n\r\n").encode())
    r = c.read_response(what="%s %s from %s" % (method, path, origin))
    c.close()
    return r


@_test("upload: CORS preflight and Access-Control-* headers on /v1 (any origin, a listed origin)")
def t_cors(ctx):
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db)
        r = cors_req(env.port, "OPTIONS", "/v1/files/x.bin", "https://app.example")
        expect_status(r, 204)
        expect_eq("Allow-Origin (default *)", "*", r.hget("access-control-allow-origin"))
        expect("PUT" in (r.hget("access-control-allow-methods") or ""),
               "preflight does not allow PUT", "PUT in Access-Control-Allow-Methods",
               r.hget("access-control-allow-methods"))
        expect("authorization" in (r.hget("access-control-allow-headers") or "").lower(),
               "preflight does not allow Authorization", "Authorization allowed",
               r.hget("access-control-allow-headers"))
        g = cors_req(env.port, "GET", "/v1/files", "https://app.example", env.token)
        expect_status(g, 200)
        expect("Location" in (g.hget("access-control-expose-headers") or ""),
               "Location is not exposed", "Access-Control-Expose-Headers with Location",
               g.hget("access-control-expose-headers"))
        h = cors_req(env.port, "GET", "/healthz", "https://app.example")
        expect_eq("CORS on /healthz (not a /v1 route)", None, h.hget("access-control-allow-origin"))
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db, "--cors-origins", "https://a.example, https://b.example")
        ok = cors_req(env.port, "OPTIONS", "/v1/files", "https://b.example")
        expect_eq("Allow-Origin for a listed origin", "https://b.example",
                  ok.hget("access-control-allow-origin"))
        expect_eq("Vary", "Origin", ok.hget("vary"))
        no = cors_req(env.port, "OPTIONS", "/v1/files", "https://evil.example")
        expect_eq("Allow-Origin for an unlisted origin", None,
                  no.hget("access-control-allow-origin"))


# ==========================================================================
# POST /v1/uploads: multipart/form-data and raw bodies


def form(parts, boundary="----ringupBoundary7MA4YWxk"):
    """A multipart/form-data body: parts are (field, filename or None, bytes, content type)."""
    out = b""
    for field, filename, data, ctype in parts:
        out += b"--" + boundary.encode() + b"\r\n"
        disp = 'form-data; name="%s"' % field
        if filename is not None:
            disp += '; filename="%s"' % filename
        out += ("Content-Disposition: %s\r\n" % disp).encode()
        if ctype:
            out += ("Content-Type: %s\r\n" % ctype).encode()
        out += b"\r\n" + data + b"\r\n"
    return out + b"--" + boundary.encode() + b"--\r\n", boundary


def post(port, body, token, headers=(), timeout=30.0):
    c = Conn(port)
    lines = ["POST /v1/uploads HTTP/1.1", "Host: t", "Authorization: Bearer %s" % token,
             "Content-Length: %d" % len(body)]
    lines += ["%s: %s" % h for h in headers]
    c.send(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    r = c.read_response(what="POST /v1/uploads", timeout=timeout)
    c.close()
    return r


@_test("upload: multipart with 1 and 5 files (+ a field, boundary look-alikes) -> 201, exact "
       "files; 6 files -> 413 too_many_files and nothing stored")
def t_multipart(ctx):
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db)
        tricky = b"--" + b"----ringupBoundary7MA4YWxk" + b"x\r\n--not\r\n\r\n-" + body_of(70000)
        datas = [tricky] + [body_of(10000 * i + 3) for i in range(1, 5)]
        for count in (1, 5):
            parts = [("note", None, b"just a field", None)]
            parts += [("f%d" % i, "file%d.bin" % i, datas[i], "application/octet-stream")
                      for i in range(count)]
            body, b = form(parts)
            r = post(env.port, body, env.token,
                     (("Content-Type", "multipart/form-data; boundary=%s" % b),))
            expect_status(r, 201)
            files = r.json()["files"]
            expect_eq("files in the answer", count, len(files))
            for i, f in enumerate(files):
                expect_eq("name of part %d" % i, "file%d.bin" % i, f["name"])
                expect_eq("size of part %d" % i, len(datas[i]), f["size"])
                path = os.path.join(env.storage, env.key(f["id"]))
                with open(path, "rb") as fh:
                    expect_eq("bytes of part %d" % i, hashlib.sha256(datas[i]).hexdigest(),
                              hashlib.sha256(fh.read()).hexdigest())
        stored = len(env.rows())
        parts = [("f%d" % i, "x%d.bin" % i, body_of(1000), None) for i in range(6)]
        body, b = form(parts)
        r = post(env.port, body, env.token,
                 (("Content-Type", "multipart/form-data; boundary=%s" % b),))
        error_of(r, 413, "too_many_files", "6 files in one form")
        time.sleep(0.3)
        expect_eq("rows after the refused form", stored, len(env.rows()))
        count = sum(len(fs) for _, _, fs in os.walk(os.path.join(env.storage, "objects")))
        expect_eq("files after the refused form", stored, count)
        env.still_serving("after the forms")


@_test("upload: malformed multipart (no final boundary, no Content-Disposition, bad boundary) "
       "-> 400, nothing stored")
def t_multipart_bad(ctx):
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db)
        b = "XyZ"
        ct = (("Content-Type", "multipart/form-data; boundary=%s" % b),)
        no_end = b"--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n\r\n" \
            + body_of(5000)
        no_disp = b"--XyZ\r\nContent-Type: text/plain\r\n\r\nabc\r\n--XyZ--\r\n"
        for what, body, headers in (("no final boundary", no_end, ct),
                                    ("no Content-Disposition", no_disp, ct),
                                    ("no boundary parameter", no_disp,
                                     (("Content-Type", "multipart/form-data"),))):
            r = post(env.port, body, env.token, headers)
            error_of(r, 400, "bad_request", what)
        time.sleep(0.3)
        expect_eq("rows", 0, len(env.rows()))
        count = sum(len(fs) for _, _, fs in os.walk(os.path.join(env.storage, "objects")))
        expect_eq("files", 0, count)
        env.still_serving("after the malformed forms")


@_test("upload: raw POST /v1/uploads named by X-Filename or Content-Disposition -> 201")
def t_raw_post(ctx):
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db)
        for headers, want in (((("X-Filename", "x.bin"),), "x.bin"),
                              ((("Content-Disposition", 'attachment; filename="d.bin"'),), "d.bin"),
                              ((), "file")):
            data = body_of(12345)
            r = post(env.port, data, env.token,
                     (("Content-Type", "application/octet-stream"),) + headers)
            expect_status(r, 201)
            f = r.json()["files"][0]
            expect_eq("name", want, f["name"])
            path = os.path.join(env.storage, env.key(f["id"]))
            with open(path, "rb") as fh:
                expect_eq("bytes", data, fh.read())


@_test("upload: DELETE /v1/files/{id} removes the row and the stored bytes")
def t_delete_bytes(ctx):
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db)
        doc = env.put_ok("gone.bin", body_of(4321), check_get=False)
        path = os.path.join(env.storage, env.key(doc["id"]))
        expect(os.path.exists(path), "the stored file is missing before the DELETE", path, None)
        r = db_routes.api(env.port, "DELETE", "/v1/files/%s" % doc["id"], env.token)
        expect_status(r, 204)
        expect(not os.path.exists(path), "the stored bytes outlived their DELETE",
               "no file at " + path, "still there")
        expect_eq("rows", 0, len(env.rows()))
        expect_status(get_content(env.port, doc["id"], env.token), 404)


@_test("upload: database unreachable -> 503 database_unavailable and no file left behind")
def t_db_down(ctx):
    base = harness.tmpdir()
    storage = os.path.join(base, "store")
    os.mkdir(storage)
    s = ctx.server("--storage-dir", storage, "--allow-anonymous", "true",
                   env={"DATABASE_URL": "postgresql:///x?host=/nonexistent"})
    time.sleep(0.3)  # the pool's first attempts fail
    for what, send in (("raw PUT", lambda: put(s.port, "down.bin", body_of(50000), None)),
                       ("form", lambda: post_anon(s.port))):
        r = send()
        error_of(r, 503, "database_unavailable", what)
    count = sum(len(fs) for _, _, fs in os.walk(os.path.join(storage, "objects")))
    expect_eq("files under objects/ after refused uploads", 0, count)


def post_anon(port):
    body, b = form([("f", "a.bin", body_of(3000), None)])
    c = Conn(port)
    head = ("POST /v1/uploads HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n"
            "Content-Type: multipart/form-data; boundary=%s\r\n\r\n" % (len(body), b))
    c.send(head.encode() + body)
    r = c.read_response(what="an anonymous form")
    c.close()
    return r


def hold_pipes(env, fid, stuck):
    """70 downloads of fid (8 MiB) by readers that read nothing, appended to stuck: each
    holds one of the one worker's 64 pipes, full. Waits until all 64 are held."""
    req = ("GET /v1/files/%s/content HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n\r\n"
           % (fid, env.token)).encode()
    for _ in range(70):
        c = Conn(env.port)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.send(req)
        stuck.append(c)
    held = 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        held = db_routes.scrape(env.port).value("ringup_splice_pipes_in_use") or 0
        if held >= 64:
            break
        time.sleep(0.2)
    expect_eq("pipes held by the stalled readers", 64, held)


@_test("upload: with every splice pipe held by readers that stopped, a download is sent "
       "through buffers instead, complete")
def t_download_no_pipe(ctx):
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db, "--connection-timeout", 20000, workers=1)
        big = env.put_ok("hold.bin", body_of(8 * MIB), check_get=False)
        small = body_of(300000)
        doc = env.put_ok("small.bin", small, check_get=False)
        stuck = []
        try:
            hold_pipes(env, big["id"], stuck)
            m0 = db_routes.scrape(env.port)
            r = get_content(env.port, doc["id"], env.token)
            expect_status(r, 200)
            expect_eq("sha256 of the download sent through buffers",
                      hashlib.sha256(small).hexdigest(), hashlib.sha256(r.body).hexdigest())
            m1 = db_routes.scrape(env.port)
            moved = (m1.value("ringup_download_bytes_total", path="buffered") or 0) - \
                (m0.value("ringup_download_bytes_total", path="buffered") or 0)
            expect_eq("download bytes sent through buffers", len(small), moved)
        finally:
            for c in stuck:
                c.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if (db_routes.scrape(env.port).value("ringup_splice_pipes_in_use") or 0) == 0:
                break
            time.sleep(0.2)
        expect_eq("pipes in use once the readers left", 0,
                  db_routes.scrape(env.port).value("ringup_splice_pipes_in_use"))
        env.still_serving("after the stalled readers")


def evict(path):
    """Drops a file's pages from the page cache, so that reading it waits for the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def slow_download(port, fid, token, rcvbuf=65536, pause=0.001):
    """GET of a file's content through a small receive window, read a little at a time:
    the server's sends go out in pieces. Returns (status, headers text, body)."""
    c = Conn(port, timeout=5.0)
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    c.send(("GET /v1/files/%s/content HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s\r\n"
            "Connection: close\r\n\r\n" % (fid, token)).encode())
    data = bytearray()
    try:
        while True:
            d = c.sock.recv(rcvbuf)
            if not d:
                break
            data += d
            time.sleep(pause)
    except OSError as e:
        print("# slow download: %r after %d bytes" % (e, len(data)), flush=True)
    c.close()
    head, _, body = bytes(data).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else 0
    return status, head.decode("latin-1"), body


@_test("upload: a buffered download of a file the page cache does not hold, sent to a slow "
       "reader while every pipe is lent, arrives exact and the server lives on")
def t_download_no_pipe_uncached(ctx):
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db, "--connection-timeout", 20000, workers=1)
        big = env.put_ok("hold.bin", body_of(8 * MIB), check_get=False)
        body = body_of(6 * MIB + 333)
        doc = env.put_ok("cold.bin", body, check_get=False)
        stuck = []
        try:
            hold_pipes(env, big["id"], stuck)
            for attempt in range(3):
                evict(os.path.join(env.storage, env.key(doc["id"])))
                t0 = time.monotonic()
                status, head, got = slow_download(env.port, doc["id"], env.token)
                expect_eq("status of the cold download #%d" % attempt, 200, status)
                expect_eq("sha256 of the cold download #%d" % attempt,
                          hashlib.sha256(body).hexdigest(), hashlib.sha256(got).hexdigest())
        finally:
            for c in stuck:
                c.close()
        env.still_serving("after the cold buffered downloads")


@_test("upload: a spliced download with Connection: close to a slow reader arrives complete "
       "before the connection closes")
def t_download_close_slow(ctx):
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db, workers=1)
        body = body_of(5 * MIB + 77)
        doc = env.put_ok("close.bin", body, check_get=False)
        status, _, got = slow_download(env.port, doc["id"], env.token)
        expect_eq("status", 200, status)
        expect_eq("bytes of the download", len(body), len(got))
        expect_eq("sha256 of the download", hashlib.sha256(body).hexdigest(),
                  hashlib.sha256(got).hexdigest())


@_test("upload: SIGTERM lets a download in flight finish (within SHUTDOWN_TIMEOUT), then "
       "exits 0")
def t_download_shutdown(ctx):
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db, workers=1)
        body = body_of(8 * MIB)
        doc = env.put_ok("drain.bin", body, check_get=False)
        c = Conn(env.port, timeout=10.0)
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        c.send(("GET /v1/files/%s/content HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s"
                "\r\n\r\n" % (doc["id"], env.token)).encode())
        data = bytearray(c.sock.recv(65536))
        env.server.terminate()
        try:
            while True:
                d = c.sock.recv(65536)
                if not d:
                    break
                data += d
                time.sleep(0.002)
        except OSError as e:
            raise Fail("the download broke off during shutdown", "%r after %d bytes"
                       % (e, len(data)))
        c.close()
        head, _, got = bytes(data).partition(b"\r\n\r\n")
        expect(head.startswith(b"HTTP/1.1 200 "), "status of the download", "200",
               short(head, 200))
        expect_eq("bytes of the download across the shutdown", len(body), len(got))
        expect_eq("sha256 of the download across the shutdown",
                  hashlib.sha256(body).hexdigest(), hashlib.sha256(got).hexdigest())
        rc = env.server.wait_exit(20.0)
        env.server.finish()
        expect_eq("exit status after SIGTERM", 0, rc)


@_test("upload: a client that sends its requests, then shuts its write side, gets every "
       "answer before the close (a lookup, two pipelined requests, a PUT)")
def t_half_close(ctx):
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db)
        auth = "Authorization: Bearer %s\r\n" % env.token
        c = Conn(env.port)
        c.send("GET /v1/files?limit=1 HTTP/1.1\r\nHost: t\r\n%s\r\n" % auth)
        c.sock.shutdown(socket.SHUT_WR)
        r = c.read_response(what="the answer to a request sent before the half-close")
        expect_status(r, 200)
        expect_eq("after the answer", "eof", c.wait_close(5.0)[0])
        c.close()

        c = Conn(env.port)
        c.send("GET /v1/files?limit=1 HTTP/1.1\r\nHost: t\r\n%s\r\n"
               "GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n" % auth)
        c.sock.shutdown(socket.SHUT_WR)
        expect_status(c.read_response(what="the first pipelined answer"), 200)
        expect_status(c.read_response(what="the second pipelined answer"), 200)
        expect_eq("after both answers", "eof", c.wait_close(5.0)[0])
        c.close()

        body = body_of(200000)
        c = Conn(env.port)
        c.send(("PUT /v1/files/half.bin HTTP/1.1\r\nHost: t\r\n%sContent-Length: %d\r\n\r\n"
                % (auth, len(body))).encode() + body)
        c.sock.shutdown(socket.SHUT_WR)
        r = c.read_response(what="the answer to a PUT sent before the half-close", timeout=20.0)
        env.accept(r, body, "half.bin")
        c.close()

        # A head cut short can never complete: the connection closes without an answer.
        c = Conn(env.port)
        c.send("GET /v1/files HTTP/1.1\r\nHost: t\r\n")
        c.sock.shutdown(socket.SHUT_WR)
        kind, _, got = c.wait_close(5.0)
        expect_eq("a half-closed partial head", ("eof", b""), (kind, got))
        c.close()
        env.still_serving("after half-closed clients")


@_test("upload: a download nobody reads is cut after CONNECTION_TIMEOUT")
def t_download_stall(ctx):
    with db_routes.TestDb(ctx) as db:
        env = Env(ctx, db, "--connection-timeout", 1000)
        doc = env.put_ok("stall.bin", body_of(8 * MIB), check_get=False)
        c = Conn(env.port)
        c.send(("GET /v1/files/%s/content HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer %s"
                "\r\n\r\n" % (doc["id"], env.token)).encode())
        time.sleep(3.5)  # read nothing: the server's output stalls
        got = 0
        closed = False
        deadline = time.monotonic() + 15
        c.sock.settimeout(5.0)
        while time.monotonic() < deadline:
            try:
                d = c.sock.recv(1 << 20)
            except socket.timeout:
                break
            except OSError:
                closed = True
                break
            if not d:
                closed = True
                break
            got += len(d)
        c.close()
        expect(closed and got < 8 * MIB, "a stalled download was not cut",
               "the connection closed before all 8 MiB", "closed=%s after %d bytes" % (closed, got))
        env.still_serving("after the stalled download")
