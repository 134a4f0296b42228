"""A private redis-server for integration tests that stop and start Redis.

RedisServer runs redis-server on a unix socket in a temporary directory, with
no TCP port and no persistence, so a test may stop it, start it again and
talk to it (cli) without touching the devstack's Redis. Only the Python
standard library is used.
"""

import os
import shutil
import socket
import subprocess
import tempfile
import time

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


def _encode(args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        if not isinstance(a, bytes):
            a = str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(a), a))
    return b"".join(out)


class _Reader:
    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return RedisError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise ValueError("unexpected RESP line %r" % line)


class RedisError(str):
    """An error reply (returned, not raised: tests look at it)."""


def redis_call(path, *args, timeout=5.0):
    """One command to the Redis at unix socket path; returns the decoded reply."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
        s.sendall(_encode(args))
        return _Reader(s).reply()
    finally:
        s.close()


class RedisServer:
    """redis-server on <tmp>/redis.sock; url() is its REDIS_URL."""

    def __init__(self, extra=()):
        self.dir = tempfile.mkdtemp(prefix="ringup-redis-")
        self.sock = os.path.join(self.dir, "redis.sock")
        self.extra = list(extra)
        self.proc = None
        self.start()

    def url(self):
        return "unix://" + self.sock

    def start(self, timeout=10.0):
        if self.proc is not None and self.proc.poll() is None:
            return self
        cmd = [REDIS_SERVER, "--port", "0", "--unixsocket", self.sock, "--unixsocketperm", "700",
               "--save", "", "--appendonly", "no", "--dir", self.dir, "--daemonize", "no",
               "--logfile", os.path.join(self.dir, "redis.log")] + self.extra
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("redis-server exited with %s" % self.proc.returncode)
            try:
                if self.cli("PING") == "PONG":
                    return self
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING within %.0f s" % timeout)

    def stop(self):
        """Stops the server (SIGTERM, then SIGKILL after 5 s) and waits for it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        try:
            os.unlink(self.sock)
        except FileNotFoundError:
            pass

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def cli(self, *args, timeout=5.0):
        return redis_call(self.sock, *args, timeout=timeout)

    def close(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
