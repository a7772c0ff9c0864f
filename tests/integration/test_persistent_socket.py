"""--persistent-socket: one connection carries many pipelined requests, every cache reply framed
[111, length, modifier2] (length 0 = miss or done); modifier2 17 behaves as with keepalive=1; a reply that
cannot be framed closes the connection; an idle connection is closed after --socket-timeout; the normal
--socket beside it keeps uWSGI's one-request-per-connection behaviour."""

import os
import socket
import struct
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Server, array_block, check, check_eq, free_port, magic_get, magic_req, magic_set_req,  # noqa: E402
                     packet, parse_vars, request, run_tests, simple_get_req, vars_block)


def read_exact(sock, n, timeout=5.0):
    sock.settimeout(timeout)
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def read_frame(sock):
    head = read_exact(sock, 4)
    modifier1, length, modifier2 = struct.unpack("<BHB", head)
    return modifier1, modifier2, read_exact(sock, length) if length else b""


def start():
    plain, persistent = free_port(), free_port()
    srv = Server(["--socket", f"127.0.0.1:{plain}", "--persistent-socket", f"127.0.0.1:{persistent}",
                  "--processes", "2", "--cache", "100", "--socket-timeout", "1"], workers=2)
    return srv, ("127.0.0.1", plain), ("127.0.0.1", persistent)


def test_pipelined_framed_replies():
    srv, plain, persistent = start()
    with srv:
        with socket.create_connection(persistent, timeout=5) as s:
            burst = b"".join([
                packet(111, 1, array_block([b"k1", b"value\x00one"])),  # set
                simple_get_req(b"k1"),                                   # hit
                simple_get_req(b"nokey"),                                # miss
                packet(111, 5, b"k1"),                                   # stream get hit
                packet(111, 3, vars_block([("key", "k1")])),            # dict get hit
                packet(111, 3, vars_block([("get", "nokey")])),         # dict get miss: 404 page
                packet(111, 2, b"k1"),                                   # del
                simple_get_req(b"k1"),                                   # miss after del
            ])
            s.sendall(burst)  # all at once: the server must split them where each request ends
            check_eq(read_frame(s), (111, 1, b""), "set ack")
            check_eq(read_frame(s), (111, 0, b"value\x00one"), "get hit")
            check_eq(read_frame(s), (111, 0, b""), "get miss")
            check_eq(read_frame(s), (111, 5, b"value\x00one"), "stream get hit")
            check_eq(read_frame(s), (111, 3, b"value\x00one"), "dict get hit")
            m1, m2, page = read_frame(s)
            check((m1, m2) == (111, 3) and page.startswith(b"HTTP/1.0 404 Not Found"), f"dict get miss: {page!r}")
            check_eq(read_frame(s), (111, 2, b""), "del ack")
            check_eq(read_frame(s), (111, 0, b""), "get after del")
            # magic requests: keepalive framing is implied
            s.sendall(magic_set_req("m", "hello") + magic_req([("cmd", "get"), ("key", "m")]) +
                      magic_req([("cmd", "get"), ("key", "absent")]))
            m1, m2, block = read_frame(s)
            check_eq((m1, m2, dict(parse_vars(block)).get(b"status")), (111, 17, b"ok"), "magic set")
            m1, m2, block = read_frame(s)
            fields = dict(parse_vars(block))
            check_eq((fields.get(b"status"), fields.get(b"size")), (b"ok", b"5"), "magic get vars")
            check_eq(read_exact(s, 5), b"hello", "magic get value")
            m1, m2, block = read_frame(s)
            check_eq(dict(parse_vars(block)).get(b"status"), b"notfound", "magic miss on a kept connection")
        # the plain socket beside it is uWSGI's: one request, then EOF; a miss is a bare close
        reply, how = request(plain, simple_get_req(b"nokey"))
        check_eq((reply, how), (b"", "eof"), "miss on the plain socket")
        check_eq(magic_get(plain, "m"), b"hello", "value through the plain socket")
        check_eq(srv.stop(), 0, "exit status")


def test_unframeable_reply_closes_and_idle_times_out():
    srv, plain, persistent = start()
    with srv:
        big = b"x" * 65536  # the default block holds it, a 16-bit frame length cannot
        s = socket.create_connection(persistent, timeout=5)
        s.sendall(magic_set_req("big", big))
        m1, m2, block = read_frame(s)
        check_eq(dict(parse_vars(block)).get(b"status"), b"ok", "set of a 65536-byte value")
        s.sendall(simple_get_req(b"big"))
        s.settimeout(5)
        check_eq(s.recv(10), b"", "an unframeable reply closes the connection without bytes")
        s.close()
        check(srv.wait_log(r"cannot be framed", timeout=10.0), "no log line for the unframeable reply")
        # idle: closed by the server after --socket-timeout (1 s), nothing lost
        s = socket.create_connection(persistent, timeout=5)
        s.sendall(simple_get_req(b"nokey"))
        check_eq(read_frame(s), (111, 0, b""), "miss")
        t0 = time.monotonic()
        s.settimeout(5)
        check_eq(s.recv(10), b"", "idle connection closed")
        waited = time.monotonic() - t0
        check(0.5 < waited < 3.5, f"idle connection closed after {waited:.2f}s (socket-timeout 1 s)")
        s.close()
        check_eq(srv.stop(), 0, "exit status")


if __name__ == "__main__":
    run_tests([test_pipelined_framed_replies, test_unframeable_reply_closes_and_idle_times_out])
