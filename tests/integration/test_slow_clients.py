#!/usr/bin/env python3
"""A slow client never holds an application thread (issue 13, item 5).

One worker with its one application thread (the defaults), behind --http-socket. 25 clients send a
POST's head and half its body, then stall; 25 clients ask for a 6 MiB response and read none of it
(a 4 KiB receive buffer, so most of it must stay in the server). While all 50 are stalled, fast
requests must complete one after the other: the worker's loop holds the slow clients' bytes, not its
thread. The stalled uploads must not have reached the application yet (it only sees complete
requests), and every big response must have left it (the app counted them). Then the 50 finish and
every byte is checked.
"""
import os
import selectors
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Server, check, check_eq, connect, free_port, magic_get, make_temp_dir, run_tests, wait_until

APP = r'''
import uwsgi
BIG = 6 << 20
def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/upload":
        body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        uwsgi.cache_inc("uploads")
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"%d %d" % (len(body), sum(body) % 65521)]
    if path == "/big":
        uwsgi.cache_inc("bigs")
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(BIG))])
        return [bytes(range(256)) * (BIG // 256)]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"fast"]
'''
SLOW_SENDERS = 25
SLOW_READERS = 25
BIG = 6 << 20
BODY = bytes((i * 7) % 251 for i in range(64 << 10))


def counter(addr, key):
    raw = magic_get(addr, key)
    return 0 if raw is None else int.from_bytes(raw, "little")


def read_response(s, timeout=30.0):
    """(status line, headers bytes, body) of one Connection: close response."""
    s.settimeout(timeout)
    chunks = []
    while True:
        data = s.recv(1 << 16)
        if not data:
            break
        chunks.append(data)
    raw = b"".join(chunks)
    head, _, body = raw.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], head, body


def read_all_at_once(socks, timeout=30.0):
    """The raw bytes each socket sends until EOF, reading whichever is ready: every connection makes
    progress all along. (One after the other, the last ones would wait for the others' 6 MiB: on a
    loaded machine longer than the server's --socket-timeout, which rightly drops a client that has
    taken nothing for that long.)"""
    sel = selectors.DefaultSelector()
    got = {}
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
        got[s] = []
    last_byte = time.monotonic()
    while sel.get_map() and time.monotonic() - last_byte < timeout:  # as a blocking recv's timeout
        for key, _ in sel.select(1.0):
            data = key.fileobj.recv(1 << 16)
            last_byte = time.monotonic()
            if data:
                got[key.fileobj].append(data)
            else:
                sel.unregister(key.fileobj)
    open_left = len(sel.get_map())
    sel.close()
    check(open_left == 0, f"{open_left} of {len(socks)} responses still open, nothing received for {timeout:.0f} s")
    return [b"".join(got[s]) for s in socks]


def http_get(port, path, timeout=10.0):
    with connect(("127.0.0.1", port), timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        return read_response(s, timeout)


def test_slow_clients_hold_no_application_thread():
    d = make_temp_dir("slowc-")
    with open(os.path.join(d, "slowc_app.py"), "w") as f:
        f.write(APP)
    port, cport = free_port(), free_port()
    caddr = ("127.0.0.1", cport)
    with Server(["--http-socket", f"127.0.0.1:{port}", "--socket", f"127.0.0.1:{cport}", "--module", "slowc_app",
                 "--chdir", d, "--processes", "1", "--socket-timeout", "60",
                 "--cache2", "name=default,items=100"], workers=1):
        senders, readers = [], []
        try:
            for _ in range(SLOW_SENDERS):
                s = connect(("127.0.0.1", port), 10)
                s.sendall(f"POST /upload HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
                          f"Content-Length: {len(BODY)}\r\n\r\n".encode() + BODY[:len(BODY) // 2])
                senders.append(s)
            for _ in range(SLOW_READERS):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
                s.settimeout(10)
                s.connect(("127.0.0.1", port))
                s.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                readers.append(s)
            # Every big response was produced (the app thread went on to the next), none read yet.
            check(wait_until(lambda: counter(caddr, "bigs") == SLOW_READERS, 30.0),
                  f"the app produced {counter(caddr, 'bigs')} of {SLOW_READERS} big responses")
            for i in range(20):
                status, _, body = http_get(port, f"/fast{i}")
                check_eq((status, body), (b"HTTP/1.1 200 OK", b"fast"), f"fast request {i} while 50 clients stall")
            check_eq(counter(caddr, "uploads"), 0, "uploads that reached the app before their body was complete")
            # Now the slow ones finish: every byte arrives.
            for s in senders:
                s.sendall(BODY[len(BODY) // 2:])
            want = f"{len(BODY)} {sum(BODY) % 65521}".encode()
            for i, s in enumerate(senders):
                status, _, body = read_response(s)
                check_eq((status, body), (b"HTTP/1.1 200 OK", want), f"upload {i}")
            expected = bytes(range(256)) * (BIG // 256)
            for i, raw in enumerate(read_all_at_once(readers)):
                head, _, body = raw.partition(b"\r\n\r\n")
                status = head.split(b"\r\n", 1)[0]
                check_eq(status, b"HTTP/1.1 200 OK", f"big response {i}")
                check(body == expected, f"big response {i}: {len(body)} bytes, want {BIG} (content differs)")
        finally:
            for s in senders + readers:
                s.close()


if __name__ == "__main__":
    run_tests([test_slow_clients_hold_no_application_thread], budget=90)
