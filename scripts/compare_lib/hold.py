#!/usr/bin/env python3
"""Holds idle echo connections for `scripts/compare`'s high-connection scenario.

  hold.py HOST:PORT N

Opens N connections to an echo server; each sends 64 bytes and reads them back (so the server
has fully set the connection up and served it once), then stays idle. Prints `ready N` when
all are open, then holds them until its standard input closes or it gets SIGTERM, and closes
them. Connects run 256 at a time without blocking, so 14,000 connections take about a second.
Exits 1 with one line on stderr when a connection fails.
"""

import errno
import os
import resource
import selectors
import signal
import socket
import sys

PAYLOAD = b"i" * 64
IN_FLIGHT = 256


def fail(msg):
    print(f"hold: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def open_all(addr, n):
    sel = selectors.DefaultSelector()
    done, started, pending = [], 0, 0
    while len(done) < n:
        while started < n and pending < IN_FLIGHT:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            err = s.connect_ex(addr)
            if err not in (0, errno.EINPROGRESS):
                fail(f"connect {addr[0]}:{addr[1]} failed after {started} connections: {os.strerror(err)}")
            sel.register(s, selectors.EVENT_WRITE, [b""])
            started += 1
            pending += 1
        events = sel.select(timeout=10)
        if not events:
            fail(f"no progress for 10 s with {pending} connections pending ({len(done)} open)")
        for key, ev in events:
            s, got = key.fileobj, key.data
            if ev & selectors.EVENT_WRITE:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(f"connect failed after {len(done)} connections: {os.strerror(err)}")
                s.send(PAYLOAD)  # 64 bytes always fit an empty send buffer
                sel.modify(s, selectors.EVENT_READ, got)
                continue
            chunk = s.recv(64)
            if not chunk:
                fail(f"the server closed a connection after {len(done)} were open")
            got[0] += chunk
            if len(got[0]) >= len(PAYLOAD):
                sel.unregister(s)
                done.append(s)
                pending -= 1
    return done


def main():
    if len(sys.argv) != 3:
        fail("usage: hold.py HOST:PORT N")
    host, port = sys.argv[1].rsplit(":", 1)
    n = int(sys.argv[2])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        if hard < n + 64:
            fail(f"{n} connections need {n + 64} descriptors; this process may have {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (n + 64, hard))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    conns = open_all((host, int(port)), n)
    print(f"ready {len(conns)}", flush=True)
    sys.stdin.read()  # hold until the caller closes our stdin
    for s in conns:
        s.close()


if __name__ == "__main__":
    main()
