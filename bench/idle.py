#!/usr/bin/env python3
"""Hold N idle keep-alive connections to a server on loopback and report its RSS.

Each connection sends one GET /healthz, reads the answer, then stays open and
idle. Connections are spread over source addresses in 127.0.0.0/8 so N can
exceed one port range. Prints the server's RSS and open descriptors while all
connections are held, then closes them. Bounded in count and time.

    bench/idle.py --port PORT --pid SERVER_PID [-n 10000] [--hold 5]
"""
import argparse
import os
import resource
import selectors
import socket
import sys
import time

REQ = b"GET /healthz HTTP/1.1\r\nHost: bench\r\n\r\n"


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return -1


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("-n", type=int, default=10000)
    ap.add_argument("--hold", type=float, default=5.0)
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if a.n + 50 > hard:
        sys.exit(f"idle.py: {a.n} connections need more than {hard} descriptors")

    rss_before = rss_kib(a.pid)
    sel = selectors.DefaultSelector()
    socks = []
    answered = 0
    deadline = time.monotonic() + a.timeout
    for i in range(a.n):
        s = socket.socket()
        s.setblocking(False)
        # 127.0.0.2 .. 127.0.0.9: eight source addresses, plenty of ports each.
        s.bind((f"127.0.0.{2 + i % 8}", 0))
        s.connect_ex(("127.0.0.1", a.port))
        sel.register(s, selectors.EVENT_WRITE, [0, b""])
        socks.append(s)
        # Keep the number of pending handshakes bounded.
        while len(socks) - answered > 512 and time.monotonic() < deadline:
            answered += pump(sel)
    while answered < a.n and time.monotonic() < deadline:
        answered += pump(sel)
    time.sleep(a.hold / 2)
    rss_held = rss_kib(a.pid)
    fd_held = fds(a.pid)
    time.sleep(a.hold / 2)
    alive = sum(1 for s in socks if alive_sock(s))
    for s in socks:
        s.close()
    print(f"connections={a.n} answered={answered} still_open={alive} "
          f"server_rss_before_kib={rss_before} server_rss_held_kib={rss_held} "
          f"server_fds_held={fd_held}")
    return 0 if answered == a.n and alive == a.n else 1


def pump(sel):
    done = 0
    for key, ev in sel.select(timeout=0.5):
        s = key.fileobj
        st = key.data
        if st[0] == 0 and ev & selectors.EVENT_WRITE:
            s.send(REQ)
            st[0] = 1
            sel.modify(s, selectors.EVENT_READ, st)
        elif st[0] == 1 and ev & selectors.EVENT_READ:
            try:
                d = s.recv(4096)
            except OSError:
                d = b""
            st[1] += d
            if b"\r\n\r\n" in st[1] and st[1].endswith(b'{"status":"ok"}'):
                st[0] = 2
                sel.unregister(s)
                done += 1
            elif not d:
                st[0] = 3
                sel.unregister(s)
                done += 1
    return done


def alive_sock(s):
    try:
        d = s.recv(1, socket.MSG_DONTWAIT | socket.MSG_PEEK)
        return d != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


if __name__ == "__main__":
    sys.exit(main())
