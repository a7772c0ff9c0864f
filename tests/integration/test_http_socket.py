#!/usr/bin/env python3
"""--http-socket: the server speaks HTTP/1.1 itself (keep-alive, pipelining, Content-Length and chunked
request bodies, HEAD, Expect: 100-continue, Connection: close, HTTP/1.0), refuses bad input with a status
and a close (431 for an oversize head, 400 for a malformed request line), serves the demo app and the
cache through it, and hosts a WSGI application (--module) when built with the Python host (without it
the WSGI checks skip, or fail under CI=true / UCACHED_REQUIRE_PEERS=1)."""
import http.client
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Server, ServerError, check, check_eq, connect, free_port, magic_set, make_temp_dir, peer_missing,
                     read_reply, request, run_tests)

HOST = "127.0.0.1"

ECHO_APP = r'''
import json

def application(environ, start_response):
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    path = environ.get("PATH_INFO", "")
    if path == "/nolength":
        # No Content-Length: the server must add one to keep the connection.
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"part1,", b"part2"]
    out = {
        "method": environ["REQUEST_METHOD"],
        "path": path,
        "query": environ.get("QUERY_STRING", ""),
        "uri": environ.get("REQUEST_URI", ""),
        "content_length": environ.get("CONTENT_LENGTH", ""),
        "protocol": environ.get("SERVER_PROTOCOL", ""),
        "x_test": environ.get("HTTP_X_TEST", ""),
        "body": body.decode("latin-1"),
    }
    data = json.dumps(out).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
'''

_shared = {}


def start(args, workers, ready):
    """A started Server; a missing peer if the Python host is not built in."""
    try:
        return Server(args, workers=workers, ready_addrs=ready).start()
    except ServerError as e:
        text = str(e)
        if "without the Python host" in text:
            peer_missing("this server was built without the Python host (libpython3.11)")
        raise


def demo():
    """One server with the demo app for the checks that do not need their own."""
    if "demo" not in _shared:
        http_port, uwsgi_port = free_port(), free_port()
        srv = start(["--http-socket", f"{HOST}:{http_port}", "--socket", f"{HOST}:{uwsgi_port}", "--processes",
                     "2", "--cache", "100"], 2, [(HOST, http_port), (HOST, uwsgi_port)])
        _shared["demo"] = (srv, (HOST, http_port), (HOST, uwsgi_port))
    return _shared["demo"]


def conn_to(addr):
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=5)
    conn.connect()
    return conn


def call(conn, method, path, body=None, headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    return resp, resp.read()


def same_socket(conn, sockname, what):
    check(conn.sock is not None and conn.sock.getsockname() == sockname,
          f"{what}: the connection was not kept (http.client had to reconnect)")


def read_response(sock, buf, head_only=False, timeout=5.0):
    """One response from sock (with leftover bytes buf): (status, headers dict lowercased, body, rest)."""
    deadline = time.monotonic() + timeout
    while b"\r\n\r\n" not in buf:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(65536)
        check(data, f"connection closed before a complete response head: {buf[:300]!r}")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split(b" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower().decode()] = value.strip().decode("latin-1")
    length = 0 if head_only or status in (204, 304) else int(headers.get("content-length", "-1"))
    check(length >= 0, f"response without Content-Length on a kept connection: {head!r}")
    while len(rest) < length:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = sock.recv(65536)
        check(data, f"connection closed inside a body: {rest[:200]!r}")
        rest += data
    return status, headers, rest[:length], rest[length:]


# --------------------------------------------------------------------------------------------------
# the demo app

def test_get_keep_alive():
    srv, addr, _ = demo()
    conn = conn_to(addr)
    name = conn.sock.getsockname()
    for i in range(5):
        resp, body = call(conn, "GET", "/")
        check_eq(resp.status, 200, f"GET / #{i}")
        check_eq(resp.version, 11, "HTTP/1.1 response")
        check(b"demo application" in body, f"the demo page: {body[:200]!r}")
        check_eq(resp.getheader("Content-Length"), str(len(body)), "Content-Length")
        check(resp.getheader("Connection") in (None, "keep-alive"), f"Connection: {resp.getheader('Connection')}")
        same_socket(conn, name, f"GET / #{i}")
    conn.close()


def test_cache_through_http():
    srv, addr, uwsgi = demo()
    check(magic_set(uwsgi, "greeting", b"hello \x00 world"), "set over the uwsgi socket")
    conn = conn_to(addr)
    resp, body = call(conn, "GET", "/cache/greeting")
    check_eq((resp.status, body), (200, b"hello \x00 world"), "the value over HTTP")
    resp, body = call(conn, "GET", "/cache/absent")
    check_eq(resp.status, 404, "a miss")
    conn.close()


def test_post_content_length_and_chunked():
    srv, addr, _ = demo()
    conn = conn_to(addr)
    name = conn.sock.getsockname()
    resp, body = call(conn, "POST", "/", body=b"x" * 100000, headers={"Content-Type": "application/octet-stream"})
    check_eq(resp.status, 404, "POST with Content-Length (the demo app answers 404 to non-GET)")
    same_socket(conn, name, "after a POST with Content-Length")
    # An iterable body without a length: http.client sends it chunked.
    resp, body = call(conn, "POST", "/", body=iter([b"abc", b"", b"d" * 5000, b"end"]))
    check_eq(resp.status, 404, "chunked POST")
    same_socket(conn, name, "after a chunked POST")
    resp, body = call(conn, "GET", "/")
    check_eq(resp.status, 200, "GET after the POSTs")
    same_socket(conn, name, "GET after the POSTs")
    conn.close()


def test_head():
    srv, addr, _ = demo()
    conn = conn_to(addr)
    name = conn.sock.getsockname()
    resp, body = call(conn, "HEAD", "/")
    check_eq(resp.status, 200, "HEAD /")
    check_eq(body, b"", "no body for HEAD")
    check(int(resp.getheader("Content-Length", "0")) > 0, "HEAD keeps the length a GET would have")
    resp, body = call(conn, "GET", "/")
    check_eq(resp.status, 200, "GET after HEAD")
    check_eq(len(body), int(resp.getheader("Content-Length")), "the GET body is whole (HEAD sent none)")
    same_socket(conn, name, "GET after HEAD")
    conn.close()


def test_oversize_head_is_431_and_closed():
    srv, addr, _ = demo()
    reply, how = request(addr, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100000 + b"\r\n\r\n")
    check(reply.startswith(b"HTTP/1.1 431 "), f"431 expected, got {reply[:200]!r} ({how})")
    check(b"\r\nConnection: close\r\n" in reply, f"Connection: close: {reply[:300]!r}")
    check(how in ("eof", "reset"), f"the connection is closed after the 431 (got {how})")


def test_malformed_request_line_is_400_and_closed():
    srv, addr, _ = demo()
    for bad in (b"GARBAGE\r\n\r\n", b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", b"GET / HTTP/1.1\nHost: x\n\n"):
        reply, how = request(addr, bad)
        check(reply.startswith(b"HTTP/1.1 400 "), f"{bad!r}: 400 expected, got {reply[:200]!r} ({how})")
        check(b"\r\nConnection: close\r\n" in reply, f"{bad!r}: Connection: close")
        check_eq(how, "eof", f"{bad!r}: closed after the 400")
    reply, how = request(addr, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
    check(reply.startswith(b"HTTP/1.1 505 "), f"HTTP/2 preface: 505 expected, got {reply[:200]!r}")


def test_pipelining():
    srv, addr, _ = demo()
    s = connect(addr, 5)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n"
                  b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                  b"POST /y HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
                  b"GET /cache/none HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        buf = b""
        statuses = []
        for head_only in (False, True, False, False, False):
            status, headers, body, buf = read_response(s, buf, head_only)
            statuses.append(status)
        check_eq(statuses, [200, 200, 404, 404, 404], "pipelined responses, in order")
        check_eq(headers.get("connection"), "close", "the last one (Connection: close) says close")
        rest, how = read_reply(s, 3)
        check_eq((buf + rest, how), (b"", "eof"), "nothing after the last response, then EOF")
    finally:
        s.close()


def test_connection_close_and_http10():
    srv, addr, _ = demo()
    conn = conn_to(addr)
    resp, body = call(conn, "GET", "/", headers={"Connection": "close"})
    check_eq(resp.status, 200, "GET with Connection: close")
    check_eq(resp.getheader("Connection"), "close", "answered with Connection: close")
    conn.close()
    for req, keep in ((b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", False),
                      (b"GET / HTTP/1.0\r\n\r\n", False),
                      (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", True)):
        s = connect(addr, 5)
        try:
            s.sendall(req)
            status, headers, body, rest = read_response(s, b"")
            check_eq(status, 200, f"{req!r}")
            if keep:
                check_eq(headers.get("connection", "").lower(), "keep-alive", f"{req!r}: HTTP/1.0 kept")
                s.sendall(b"GET /cache/x HTTP/1.0\r\n\r\n")
                status, headers, body, rest = read_response(s, rest)
                check_eq(status, 404, "second request on the kept HTTP/1.0 connection")
            tail, how = read_reply(s, 3)
            check_eq((rest + tail, how), (b"", "eof"), f"{req!r}: closed by the server")
        finally:
            s.close()


def test_expect_100_continue():
    srv, addr, _ = demo()
    s = connect(addr, 5)
    try:
        s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        got = b""
        deadline = time.monotonic() + 3
        while not got.endswith(b"\r\n\r\n") and time.monotonic() < deadline:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            data = s.recv(100)
            if not data:
                break
            got += data
        check_eq(got, b"HTTP/1.1 100 Continue\r\n\r\n", "the interim 100 before the body is sent")
        s.sendall(b"hello")
        status, _, _, _ = read_response(s, b"")
        check_eq(status, 404, "the final answer after the body")
    finally:
        s.close()


# --------------------------------------------------------------------------------------------------
# a WSGI application

def wsgi():
    if "wsgi" not in _shared:
        d = make_temp_dir("http-")
        with open(os.path.join(d, "echoapp.py"), "w") as f:
            f.write(ECHO_APP)
        http_port, uwsgi_port = free_port(), free_port()
        srv = start(["--http-socket", f"{HOST}:{http_port}", "--socket", f"{HOST}:{uwsgi_port}", "--processes", "2",
                     "--module", "echoapp", "--chdir", d], 2, [(HOST, http_port), (HOST, uwsgi_port)])
        _shared["wsgi"] = (srv, (HOST, http_port))
    return _shared["wsgi"]


def test_wsgi_echo():
    srv, addr = wsgi()
    conn = conn_to(addr)
    name = conn.sock.getsockname()
    body = b"line\r\n\x00\xff binary"
    resp, data = call(conn, "POST", "/echo/caf%C3%A9/./x/..?x=1&y=%20", body=body, headers={"X-Test": "yes"})
    check_eq(resp.status, 200, "POST to the WSGI app")
    out = json.loads(data)
    check_eq(out["method"], "POST", "method")
    check_eq(out["path"], "/echo/caf\u00c3\u00a9/", "PATH_INFO percent-decoded (latin-1 str, as WSGI says)")
    check_eq(out["query"], "x=1&y=%20", "QUERY_STRING raw")
    check_eq(out["uri"], "/echo/caf%C3%A9/./x/..?x=1&y=%20", "REQUEST_URI raw")
    check_eq(out["body"].encode("latin-1"), body, "the body, byte for byte")
    check_eq(out["content_length"], str(len(body)), "CONTENT_LENGTH")
    check_eq(out["protocol"], "HTTP/1.1", "SERVER_PROTOCOL")
    check_eq(out["x_test"], "yes", "HTTP_X_TEST")

    resp, data = call(conn, "PUT", "/chunked", body=iter([b"ab", b"cd" * 3000]))
    out = json.loads(data)
    check_eq((out["method"], out["body"], out["content_length"]), ("PUT", "ab" + "cd" * 3000, "6002"),
             "a chunked body arrives de-chunked with its length")

    resp, data = call(conn, "GET", "/nolength")
    check_eq((resp.status, data), (200, b"part1,part2"), "a response without Content-Length")
    check_eq(resp.getheader("Content-Length"), "11", "the server added Content-Length")

    resp, data = call(conn, "HEAD", "/nolength")
    check_eq((resp.status, data), (200, b""), "HEAD to the WSGI app: no body")

    resp, data = call(conn, "GET", "/again?q")
    check_eq(json.loads(data)["query"], "q", "still serving on the same connection")
    same_socket(conn, name, "WSGI requests")
    conn.close()


if __name__ == "__main__":
    run_tests([test_get_keep_alive, test_cache_through_http, test_post_content_length_and_chunked, test_head,
               test_oversize_head_is_431_and_closed, test_malformed_request_line_is_400_and_closed,
               test_pipelining, test_connection_close_and_http10, test_expect_100_continue, test_wsgi_echo],
              budget=120)
