"""Helpers for the ringup integration tests.

Server processes (start, readiness, SIGTERM/SIGKILL), raw HTTP/1.1 over
sockets (request building, response parsing with leftover bytes kept for
pipelining, close detection), Prometheus text parsing, and small assertion
helpers that raise Fail with "expected / got" details.

Only the Python standard library is used. All traffic goes to 127.0.0.1.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

HOST = "127.0.0.1"

# Every setting named in API.md's settings table.
SETTINGS = [
    "LISTEN", "WORKERS", "STORAGE_DIR", "DATABASE_URL", "DB_READ_URL", "REDIS_URL",
    "DB_MAX_CONNECTIONS", "DB_POOL_MIN", "DB_POOL_MAX", "DB_CONNECTION_TIMEOUT",
    "DB_QUERY_TIMEOUT", "DB_POOL_IDLE_TIMEOUT", "REDIS_MAX_CONNECTIONS", "REDIS_POOL_MIN",
    "REDIS_POOL_MAX", "REDIS_RETRY_ATTEMPTS", "REDIS_RETRY_DELAY", "REDIS_COMMAND_TIMEOUT",
    "MAX_CONCURRENT_JOBS", "QUEUE_CONCURRENCY", "MAX_QUEUE_SIZE", "PROCESSING_TIMEOUT",
    "ENABLE_QUEUE_PRIORITY", "ENABLE_BACKPRESSURE", "MAX_FILE_SIZE", "MAX_FILES_PER_REQUEST",
    "ENABLE_STREAMING_UPLOAD", "ENABLE_MEMORY_MONITORING", "MEMORY_THRESHOLD",
    "UPLOAD_RATE_LIMIT", "GLOBAL_RATE_LIMIT", "ENABLE_ADAPTIVE_RATE_LIMITING",
    "CONNECTION_TIMEOUT", "SHUTDOWN_TIMEOUT", "JOB_LEASE", "CORS_ORIGINS", "INSTANCE_ID",
    "MAX_CONNECTIONS", "FSYNC", "ALLOWED_TYPES", "PROCESSOR_CMD", "ALLOW_ANONYMOUS",
    "TUS_EXPIRATION", "LOG_LEVEL", "LOG_FORMAT",
]
SECRET_SETTINGS = ["SIGNING_KEY"]


# --------------------------------------------------------------------------
# failures


class Fail(Exception):
    """A failed expectation: a one-line summary plus detail lines."""

    def __init__(self, summary, *details):
        super().__init__(summary)
        self.summary = summary
        self.details = [d for d in details if d is not None]


def short(data, limit=300):
    """repr() of bytes/str, cut to a readable length."""
    if data is None:
        return "None"
    r = repr(data)
    if len(r) > limit:
        r = r[:limit] + "...(%d bytes in all)" % len(data)
    return r


def expect(cond, summary, expected=None, got=None, *more):
    if not cond:
        details = []
        if expected is not None:
            details.append("expected: %s" % expected)
        if got is not None:
            details.append("got:      %s" % got)
        details.extend(more)
        raise Fail(summary, *details)


def expect_eq(what, expected, got, *more):
    if expected != got:
        raise Fail("%s: mismatch" % what, "expected: %r" % (expected,), "got:      %r" % (got,),
                   *more)


# --------------------------------------------------------------------------
# test scope: what one test opened, so that it can be cleaned up


class Scope:
    def __init__(self):
        self.servers = []
        self.conns = []
        self.dirs = []
        self.notes = []

    def close_conns(self):
        for c in self.conns:
            c.close()
        self.conns = []

    def remove_dirs(self):
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)
        self.dirs = []


SCOPE = Scope()


def new_scope():
    global SCOPE
    SCOPE = Scope()
    return SCOPE


def tmpdir():
    d = tempfile.mkdtemp(prefix="ringup-it-")
    SCOPE.dirs.append(d)
    return d


# --------------------------------------------------------------------------
# processes


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind((HOST, 0))
        return s.getsockname()[1]
    finally:
        s.close()


RATE_LIMITS_OFF = {"UPLOAD_RATE_LIMIT": "0", "GLOBAL_RATE_LIMIT": "0"}


def clean_env(env=None, unset=(), keep_settings=True):
    """The process environment, optionally without ringup settings, plus env."""
    e = dict(os.environ)
    if not keep_settings:
        for k in SETTINGS + SECRET_SETTINGS:
            e.pop(k, None)
    for k in unset:
        e.pop(k, None)
    if env:
        e.update(env)
    return e


class CliResult:
    def __init__(self, cmd, rc, out, err):
        self.cmd, self.rc, self.out, self.err = cmd, rc, out, err

    def describe(self):
        return ["command: %s" % " ".join(self.cmd), "exit status: %r" % self.rc,
                "stdout: %s" % short(self.out, 600), "stderr: %s" % short(self.err, 600)]


class Tests:
    """A test module's tests, collected with @test(name) and handed to run.py's own @test
    decorator by register(); nothing runs at import."""

    def __init__(self):
        self.items = []

    def test(self, name, graceful=False):
        def deco(fn):
            self.items.append((name, fn, graceful))
            return fn
        return deco

    def register(self, test):
        for name, fn, graceful in self.items:
            test(name, graceful)(fn)


def run_cli(binary, args, env=None, keep_settings=False, timeout=10.0):
    """Runs the binary to completion (killed after timeout -> Fail)."""
    cmd = [binary] + list(args)
    d = tmpdir()
    try:
        p = subprocess.run(cmd, cwd=d, env=clean_env(env, keep_settings=keep_settings),
                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise Fail("command did not exit within %.0f s" % timeout, "command: %s" % " ".join(cmd),
                   "stdout: %s" % short(e.stdout), "stderr: %s" % short(e.stderr))
    return CliResult(cmd, p.returncode, p.stdout.decode("utf-8", "replace"),
                     p.stderr.decode("utf-8", "replace"))


class Server:
    """One `ringup serve` process on a free loopback port."""

    def __init__(self, binary, args=(), env=None, unset=(), workers=2, listen=True,
                 keep_settings=True, prefix=()):
        self.port = free_port()
        self.dir = tmpdir()
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        self.stdout_path = os.path.join(self.dir, "stdout.log")
        cmd = list(prefix) + [binary, "serve"]
        if listen:
            cmd += ["--listen", "%s:%d" % (HOST, self.port)]
        if workers is not None:
            cmd += ["--workers", str(workers)]
        cmd += [str(a) for a in args]
        self.cmd = cmd
        # The rate limits (100 uploads a minute per user by default) would throttle the
        # suite: off unless a test sets them (tests/it/ratelimit.py).
        e = clean_env(dict(RATE_LIMITS_OFF, **(env or {})), unset=unset,
                      keep_settings=keep_settings)
        if not listen and "LISTEN" not in (env or {}):
            e["LISTEN"] = "%s:%d" % (HOST, self.port)
        self._err = open(self.stderr_path, "wb")
        self._out = open(self.stdout_path, "wb")
        self.proc = subprocess.Popen(cmd, cwd=self.dir, env=e, stdin=subprocess.DEVNULL,
                                     stdout=self._out, stderr=self._err,
                                     start_new_session=True)
        self.started_at = time.monotonic()
        self.sigterm_at = None
        self.stopped = False
        self.killed = False
        self.exit_elapsed = None
        SCOPE.servers.append(self)

    # -- lifecycle

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise Fail("server exited during startup with status %s" % describe_rc(rc),
                           "command: %s" % " ".join(self.cmd))
            try:
                s = socket.create_connection((HOST, self.port), timeout=0.25)
                s.close()
                return self
            except OSError as e:
                last = e
                time.sleep(0.02)
        raise Fail("server did not accept a TCP connection within %.0f s" % timeout,
                   "last connect error: %r" % (last,), "command: %s" % " ".join(self.cmd))

    def alive(self):
        return self.proc.poll() is None

    def terminate(self, sig=signal.SIGTERM):
        """Sends SIGTERM once; later calls do nothing (a second one means 'exit now')."""
        if self.sigterm_at is not None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        self.sigterm_at = time.monotonic()

    def wait_exit(self, timeout):
        """Exit status, or None if still running after timeout."""
        try:
            return self.proc.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return None

    def finish(self):
        """Marks an exited server as handled (its exit status was checked by the test)."""
        if self.proc.poll() is not None and not self.stopped:
            self.stopped = True
            self._err.close()
            self._out.close()

    def stop(self, grace=10.0):
        """SIGTERM, wait up to grace, then SIGKILL. Returns the exit status."""
        if self.stopped:
            return self.proc.returncode
        self.terminate()
        rc = self.wait_exit(grace)
        if rc is None:
            self.killed = True
            self.proc.kill()
            rc = self.proc.wait(timeout=10)
        self.exit_elapsed = time.monotonic() - self.sigterm_at
        self.stopped = True
        self._err.close()
        self._out.close()
        return rc

    # -- output

    def stderr_text(self):
        try:
            with open(self.stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stderr_lines(self):
        return [l for l in self.stderr_text().splitlines() if l.strip()]

    def stderr_tail(self, n=15):
        return self.stderr_lines()[-n:]


def describe_rc(rc):
    if rc is None:
        return "(running)"
    if rc < 0:
        try:
            return "%d (killed by %s)" % (rc, signal.Signals(-rc).name)
        except ValueError:
            return str(rc)
    return str(rc)


# --------------------------------------------------------------------------
# HTTP over raw sockets


def request(method, path, headers=None, body=b"", version="HTTP/1.1", host=True):
    """Bytes of one request. headers: list of (name, value); Host added unless present."""
    hs = list(headers or [])
    if host and not any(k.lower() == "host" for k, _ in hs):
        hs.insert(0, ("Host", "127.0.0.1"))
    head = "%s %s %s\r\n" % (method, path, version)
    head += "".join("%s: %s\r\n" % (k, v) for k, v in hs)
    if isinstance(body, str):
        body = body.encode()
    return head.encode("latin-1") + b"\r\n" + body


_STATUS_RE = re.compile(rb"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$")
_TOKEN_RE = re.compile(rb"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class Response:
    def __init__(self, version, status, reason, headers, body, raw_head):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers  # list of (name, value) as str
        self.body = body
        self.raw_head = raw_head

    def hget(self, name, default=None):
        n = name.lower()
        for k, v in self.headers:
            if k.lower() == n:
                return v
        return default

    def hall(self, name):
        n = name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def tokens(self, name):
        out = []
        for v in self.hall(name):
            out += [t.strip().lower() for t in v.split(",") if t.strip()]
        return out

    def json(self):
        try:
            return json.loads(self.body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as e:
            raise Fail("response body is not valid JSON (%s)" % e, "body: %s" % short(self.body))

    def describe(self):
        return "%s %d, headers %r, body %s" % (self.version, self.status, self.headers,
                                               short(self.body, 200))

    def __repr__(self):
        return "<Response %d %s>" % (self.status, short(self.body, 80))


def parse_response(buf, head=False):
    """(Response, rest) if buf holds a complete response, else None. Fail if malformed."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        if len(buf) > 65536:
            raise Fail("response head longer than 64 KiB without a blank line",
                       "got: %s" % short(buf))
        return None
    raw_head = buf[:end]
    lines = raw_head.split(b"\r\n")
    m = _STATUS_RE.match(lines[0])
    if not m:
        raise Fail("malformed response status line", "got: %s" % short(buf))
    version = m.group(1).decode()
    status = int(m.group(2))
    reason = (m.group(3) or b"").decode("latin-1")
    headers = []
    for line in lines[1:]:
        if b":" not in line:
            raise Fail("malformed response header line %s" % short(line),
                       "head: %s" % short(raw_head))
        k, v = line.split(b":", 1)
        if not _TOKEN_RE.match(k):
            raise Fail("malformed response header name %s" % short(k),
                       "head: %s" % short(raw_head))
        headers.append((k.decode("latin-1"), v.strip().decode("latin-1")))
    start = end + 4
    resp = Response(version, status, reason, headers, b"", raw_head)
    if head or status in (204, 304) or 100 <= status < 200:
        return resp, buf[start:]
    if resp.hall("Transfer-Encoding"):
        raise Fail("response uses Transfer-Encoding (only Content-Length responses allowed)",
                   "head: %s" % short(raw_head))
    cls = resp.hall("Content-Length")
    if len(cls) != 1 or not cls[0].isdigit():
        raise Fail("response needs exactly one numeric Content-Length",
                   "got Content-Length headers: %r" % (cls,), "head: %s" % short(raw_head))
    n = int(cls[0])
    if len(buf) - start < n:
        return None
    resp.body = buf[start:start + n]
    return resp, buf[start + n:]


class Conn:
    """A client connection to 127.0.0.1 with a receive buffer (keeps pipelined bytes)."""

    def __init__(self, port, timeout=5.0, nodelay=True):
        self.port = port
        self.buf = b""
        self.eof = False
        self.reset = False
        self.sock = socket.create_connection((HOST, port), timeout=timeout)
        if nodelay:
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        SCOPE.conns.append(self)

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def send(self, data, timeout=5.0):
        if isinstance(data, str):
            data = data.encode()
        self.sock.settimeout(timeout)
        try:
            self.sock.sendall(data)
        except socket.timeout:
            raise Fail("timed out after %.1f s sending %d bytes" % (timeout, len(data)))

    def try_send(self, data, timeout=5.0):
        """send() that reports a closed/reset peer as False instead of raising."""
        try:
            self.send(data, timeout)
            return True
        except (BrokenPipeError, ConnectionResetError, ConnectionAbortedError):
            return False

    def recv_for(self, seconds):
        """Waits up to seconds for something; returns 'data', 'eof', 'reset' or 'idle'.
        Received bytes are appended to self.buf."""
        if self.eof:
            return "eof"
        if self.reset:
            return "reset"
        self.sock.settimeout(max(0.001, seconds))
        try:
            d = self.sock.recv(65536)
        except socket.timeout:
            return "idle"
        except (ConnectionResetError, ConnectionAbortedError):
            self.reset = True
            return "reset"
        if not d:
            self.eof = True
            return "eof"
        self.buf += d
        return "data"

    def read_response(self, head=False, timeout=5.0, what="response"):
        deadline = time.monotonic() + timeout
        while True:
            r = parse_response(self.buf, head=head)
            if r is not None:
                resp, self.buf = r
                return resp
            left = deadline - time.monotonic()
            if left <= 0:
                raise Fail("timed out after %.1f s waiting for %s" % (timeout, what),
                           "received so far: %s" % short(self.buf))
            kind = self.recv_for(left)
            if kind == "eof":
                raise Fail("connection closed by server before a complete %s" % what,
                           "received: %s" % short(self.buf))
            if kind == "reset":
                raise Fail("connection reset by server before a complete %s" % what,
                           "received: %s" % short(self.buf))

    def wait_close(self, timeout):
        """Reads until the peer closes: (kind, seconds, bytes received meanwhile).
        kind is 'eof', 'reset' or 'open' (still open after timeout)."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        start_len = len(self.buf)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "open", time.monotonic() - t0, self.buf[start_len:]
            kind = self.recv_for(left)
            if kind in ("eof", "reset"):
                return kind, time.monotonic() - t0, self.buf[start_len:]


def exchange(port, data, head=False, timeout=5.0, count=1):
    """Opens a connection, sends data, reads count responses, closes."""
    c = Conn(port, timeout=timeout)
    try:
        c.send(data)
        out = [c.read_response(head=head, timeout=timeout) for _ in range(count)]
    finally:
        c.close()
    return out[0] if count == 1 else out


def http(port, method, path, headers=None, body=b"", timeout=5.0):
    return exchange(port, request(method, path, headers, body), head=(method == "HEAD"),
                    timeout=timeout)


def http_get(port, path, timeout=5.0):
    return http(port, "GET", path, timeout=timeout)


# --------------------------------------------------------------------------
# response expectations

_DATE_RE = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|"
                      r"Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$")


def check_basics(resp, head=False):
    """HTTP/1.1, one Content-Length (matching the body; none on 1xx and 204, RFC 9110 8.6),
    a Date, no chunking."""
    expect_eq("response version", "HTTP/1.1", resp.version)
    cls = resp.hall("Content-Length")
    if resp.status == 204 or 100 <= resp.status < 200:
        expect(not cls, "a %d response must not carry Content-Length" % resp.status,
               "no Content-Length", repr(cls))
    else:
        expect(len(cls) == 1, "response needs exactly one Content-Length",
               "one header", "%r (status %d)" % (cls, resp.status))
        if not head:
            expect_eq("Content-Length vs body length", int(cls[0]), len(resp.body))
    expect(not resp.hall("Transfer-Encoding"), "response has Transfer-Encoding",
           "no Transfer-Encoding", repr(resp.hall("Transfer-Encoding")))
    dates = resp.hall("Date")
    expect(len(dates) == 1 and _DATE_RE.match(dates[0]),
           "response needs one Date header in IMF-fixdate form",
           "e.g. 'Sun, 06 Nov 1994 08:49:37 GMT'", repr(dates))


def media_type(resp):
    ct = resp.hget("Content-Type")
    if ct is None:
        return None, {}
    parts = [p.strip() for p in ct.split(";")]
    params = {}
    for p in parts[1:]:
        if "=" in p:
            k, v = p.split("=", 1)
            params[k.strip().lower()] = v.strip().strip('"')
    return parts[0].lower(), params


def expect_status(resp, status, head=False):
    if resp.status != status:
        raise Fail("status: expected %d, got %d" % (status, resp.status),
                   "response: %s" % resp.describe())
    check_basics(resp, head=head)


def expect_json_type(resp):
    mt, _ = media_type(resp)
    expect(mt == "application/json", "Content-Type must be application/json",
           "application/json", repr(resp.hget("Content-Type")))


def expect_error(resp, status, code):
    """An error response: status, JSON content type, {"error":{"code","message"}}."""
    expect_status(resp, status)
    expect_json_type(resp)
    doc = resp.json()
    expect(isinstance(doc, dict) and isinstance(doc.get("error"), dict),
           'error body must be {"error":{...}}', '{"error":{"code":..,"message":..}}',
           short(resp.body))
    expect_eq("error.code", code, doc["error"].get("code"))
    msg = doc["error"].get("message")
    expect(isinstance(msg, str) and msg.strip(), "error.message must be a non-empty string",
           "a sentence", repr(msg))


def expect_close_header(resp):
    expect("close" in resp.tokens("Connection"),
           "response before a server-side close must carry Connection: close",
           "Connection: close", repr(resp.hall("Connection")))


def expect_no_close_header(resp):
    expect("close" not in resp.tokens("Connection"),
           "keep-alive response must not carry Connection: close",
           "no Connection: close", repr(resp.hall("Connection")))


def expect_closed(conn, timeout=3.0, what="connection"):
    """No further bytes, and the server closes (EOF or reset) within timeout."""
    leftover = conn.buf
    kind, secs, data = conn.wait_close(timeout)
    extra = leftover + data
    expect(not extra, "%s: unexpected bytes after the response" % what, "nothing",
           short(extra))
    expect(kind in ("eof", "reset"), "%s: server did not close the connection" % what,
           "close within %.1f s" % timeout, "still open")


# --------------------------------------------------------------------------
# Prometheus text format

_SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?[ \t]+(\S+)(?:[ \t]+-?\d+)?$")
_LABEL_RE = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*(,|$)')
_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


class Metrics:
    def __init__(self, text):
        self.text = text
        self.samples = []  # (name, labels, value)
        self.types = {}
        self.helps = {}
        self.errors = []
        self._parse()

    def _family(self, name):
        if name in self.types:
            return name
        for suf in ("_bucket", "_sum", "_count"):
            if name.endswith(suf) and self.types.get(name[:-len(suf)]) in ("histogram",
                                                                           "summary"):
                return name[:-len(suf)]
        if name.endswith("_total") and self.types.get(name[:-6]) == "counter":
            return name[:-6]
        return None

    def _parse(self):
        seen_samples = set()
        for n, line in enumerate(self.text.split("\n"), 1):
            if not line.strip():
                continue
            if line.startswith("#"):
                parts = line.split(None, 3)
                if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                    name = parts[2]
                    if parts[1] == "HELP":
                        if name in self.helps:
                            self.errors.append("line %d: second HELP for %s" % (n, name))
                        self.helps[name] = parts[3] if len(parts) > 3 else ""
                    else:
                        t = parts[3].strip() if len(parts) > 3 else ""
                        if t not in _TYPES:
                            self.errors.append("line %d: bad TYPE %r" % (n, line))
                        if name in self.types:
                            self.errors.append("line %d: second TYPE for %s" % (n, name))
                        if name in seen_samples:
                            self.errors.append("line %d: TYPE for %s after its samples"
                                               % (n, name))
                        self.types[name] = t
                continue
            m = _SAMPLE_RE.match(line)
            if not m:
                self.errors.append("line %d: not a sample: %r" % (n, line))
                continue
            name, lab, val = m.group(1), m.group(2), m.group(3)
            labels = {}
            if lab:
                pos = 0
                while pos < len(lab):
                    lm = _LABEL_RE.match(lab, pos)
                    if not lm or lm.end() == pos:
                        self.errors.append("line %d: bad labels: %r" % (n, line))
                        break
                    labels[lm.group(1)] = lm.group(2)
                    pos = lm.end()
            try:
                value = float(val)
            except ValueError:
                self.errors.append("line %d: bad value: %r" % (n, line))
                continue
            fam = self._family(name)
            if fam is None:
                self.errors.append("line %d: sample %s has no preceding # TYPE" % (n, name))
                fam = name
            elif fam not in self.helps:
                self.errors.append("line %d: family %s has no # HELP before it" % (n, fam))
            seen_samples.add(fam)
            self.samples.append((name, labels, value))

    def find(self, name, **labels):
        return [(l, v) for (n, l, v) in self.samples
                if n == name and all(l.get(k) == str(val) for k, val in labels.items())]

    def value(self, name, **labels):
        """Sum over matching samples; None if there is none."""
        found = self.find(name, **labels)
        if not found:
            return None
        return sum(v for _, v in found)

    def histogram_errors(self, base):
        errs = []
        groups = {}
        for labels, v in self.find(base + "_bucket"):
            if "le" not in labels:
                errs.append("%s_bucket without le label" % base)
                continue
            key = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
            try:
                le = float(labels["le"])
            except ValueError:
                errs.append("%s_bucket with bad le %r" % (base, labels["le"]))
                continue
            groups.setdefault(key, []).append((le, v))
        if not groups:
            errs.append("no %s_bucket samples" % base)
        for key, bs in groups.items():
            bs.sort()
            if bs[-1][0] != float("inf"):
                errs.append("%s%r has no le=\"+Inf\" bucket" % (base, key))
            for (l1, v1), (l2, v2) in zip(bs, bs[1:]):
                if v2 < v1:
                    errs.append("%s buckets not cumulative: le=%s:%s > le=%s:%s"
                                % (base, l1, v1, l2, v2))
            lab = dict(key)
            cnt = self.value(base + "_count", **lab)
            if cnt is None:
                errs.append("no %s_count for %r" % (base, key))
            elif bs[-1][0] == float("inf") and bs[-1][1] != cnt:
                errs.append("%s +Inf bucket %s != _count %s" % (base, bs[-1][1], cnt))
            if self.value(base + "_sum", **lab) is None:
                errs.append("no %s_sum for %r" % (base, key))
        return errs
