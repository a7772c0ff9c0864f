"""Request bodies (issue 11): --limit-post refuses a larger body before reading it (413, uWSGI's
"Invalid (too big) CONTENT_LENGTH. skip." line, the rest of the body read and dropped so the client or
nginx sees the refusal), on a uwsgi socket, an --http-socket (Content-Length and chunked) and behind
nginx; --post-buffering puts large bodies in an unlinked file in $TMPDIR that wsgi.input reads (a
50 MB upload, direct and through nginx: every byte arrives, the worker's peak RSS does not grow by the
body), small ones stay in memory; a slow uploader never holds the application thread;
--wsgi-disable-file-wrapper leaves wsgi.file_wrapper out of the environ. The hosted app runs behind
wsgiref.validate (the harness). Waits are for events (a reply, a file descriptor), never sleeps."""

import hashlib
import http.client
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from appnginx import uwsgi_front  # noqa: E402
from harness import (check, check_eq, connect, free_port, make_temp_dir, packet,  # noqa: E402
                     request, run_tests, start_hosted, status_bytes, vars_block, app_vars, wait_until)

APP = '''
import hashlib

def application(environ, start_response):
    if environ["PATH_INFO"] == "/wrapper":
        body = b"yes" if "wsgi.file_wrapper" in environ else b"no"
    else:
        # Reads the body in blocks (never whole), so the worker's memory shows what the server holds.
        inp = environ["wsgi.input"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        digest, seen = hashlib.md5(), 0
        while seen < length:
            block = inp.read(min(65536, length - seen))
            if not block:
                break
            digest.update(block)
            seen += len(block)
        kind = type(getattr(inp, "input", inp)).__name__  # under wsgiref.validate: the wrapped object
        body = ("%d %s %s" % (seen, digest.hexdigest(), kind)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def app_dir():
    tmp = make_temp_dir("bodies-")
    with open(os.path.join(tmp, "bodyapp.py"), "w") as f:
        f.write(APP)
    return tmp


def hosted(extra, tmp=None, env=None, threads="2"):
    """A one-worker server of APP on a uwsgi socket and an --http-socket: (server, uwsgi addr, http addr)."""
    tmp = tmp or app_dir()
    up, hp = free_port(), free_port()
    args = ["--socket", f"127.0.0.1:{up}", "--http-socket", f"127.0.0.1:{hp}", "--chdir", tmp, "--module",
            "bodyapp", "--processes", "1", "--threads", threads] + extra
    srv = start_hosted(args, workers=1, ready_addrs=[("127.0.0.1", up), ("127.0.0.1", hp)], env=env)
    return srv, ("127.0.0.1", up), ("127.0.0.1", hp)


def http_post(addr, body, headers=None, timeout=60.0, chunked=False):
    """(status, reply body) of a POST over a fresh connection; body may be bytes, a file or chunks."""
    conn = http.client.HTTPConnection(*addr, timeout=timeout)
    try:
        conn.request("POST", "/up", body=body, headers=headers or {}, encode_chunked=chunked)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def expect(data):
    return ("%d %s" % (len(data), hashlib.md5(data).hexdigest())).encode()


def spool_fds(pid, directory):
    """The worker's descriptors open on (unlinked) files in directory."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith(directory + "/"):
            found.append(target)
    return found


def test_limit_post():
    srv, uaddr, haddr = hosted(["--limit-post", "1000"])
    with srv:
        off = srv.log_size()
        # uwsgi protocol: refused from the vars, the body read and dropped, a 413 the client can read.
        ok = packet(0, 0, vars_block(app_vars("/up", "POST", extra=[("CONTENT_LENGTH", "1000")]))) + b"a" * 1000
        reply, how = request(uaddr, ok)
        check(reply.startswith(b"HTTP/1.1 200") and reply.endswith(expect(b"a" * 1000) + b" BytesIO"),
              f"a body of exactly --limit-post: {reply[-120:]!r} ({how})")
        big = packet(0, 0, vars_block(app_vars("/up", "POST", extra=[("CONTENT_LENGTH", "300000")]))) + b"b" * 300000
        reply, how = request(uaddr, big, timeout=10.0)
        check(reply.startswith(b"HTTP/1.1 413") and how == "eof", f"uwsgi socket over the limit: {reply[:100]!r} ({how})")
        check(srv.wait_log(r"Invalid \(too big\) CONTENT_LENGTH\. skip\. \(CONTENT_LENGTH 300000 is over limit-post "
                           r"1000\)", 3.0, offset=off), f"no uWSGI line:\n{srv.log_since(off)}")
        # HTTP: Content-Length refused from the head; chunked once the chunks pass the limit.
        status, body = http_post(haddr, b"c" * 400000)
        check_eq(status, 413, f"--http-socket Content-Length over the limit ({body[:100]!r})")
        chunks = iter([b"d" * 600, b"d" * 600])
        status, body = http_post(haddr, chunks, headers={"Transfer-Encoding": "chunked"}, chunked=True)
        check(status == 413 and b"limit-post" in body, f"chunked over the limit: {status} {body[:120]!r}")
        status, body = http_post(haddr, b"e" * 999)
        check_eq((status, body), (200, expect(b"e" * 999) + b" BytesIO"), "HTTP body under the limit")
        # Behind nginx (which sends the whole body first): the client gets the 413, not a 502.
        with uwsgi_front(f"{uaddr[0]}:{uaddr[1]}", extra="client_max_body_size 0;") as ngx:
            port = ngx.port
            status, body = http_post(("127.0.0.1", port), b"f" * (4 << 20))
            check_eq(status, 413, f"through nginx, over the limit ({body[:100]!r})")
            status, body = http_post(("127.0.0.1", port), b"g" * 1000)
            check_eq((status, body), (200, expect(b"g" * 1000) + b" BytesIO"), "through nginx, at the limit")
        check_eq(srv.stop(), 0, "exit status")


def test_post_buffering_50mb():
    tmp = app_dir()
    spool = make_temp_dir("spool-")
    data_path = os.path.join(tmp, "upload.bin")
    data = os.urandom(1 << 20) * 50  # 50 MiB (random blocks: no file system or transfer can shortcut it)
    with open(data_path, "wb") as f:
        f.write(data)
    want = expect(data) + b" BufferedReader"
    # Under AddressSanitizer freed blocks wait in a quarantine (256 MB) instead of being reused, which
    # would show the application's 64 KiB reads as growth: no quarantine for this measure.
    asan = os.environ.get("ASAN_OPTIONS", "")
    env = {"TMPDIR": spool, "ASAN_OPTIONS": (asan + ":" if asan else "") + "quarantine_size_mb=0"}
    srv, uaddr, haddr = hosted(["--post-buffering", "65536"], tmp=tmp, env=env)
    with srv:
        (worker,) = srv.workers()
        small = b"s" * 65535  # under --post-buffering: in memory
        check_eq(http_post(haddr, small), (200, expect(small) + b" BytesIO"), "a body under --post-buffering")
        before = status_bytes(worker, "VmHWM")
        length = {"Content-Length": str(len(data))}  # a file would go chunked otherwise
        with open(data_path, "rb") as f:
            status, body = http_post(haddr, f, headers=length)
        check_eq((status, body), (200, want), "50 MiB over --http-socket")
        with uwsgi_front(f"{uaddr[0]}:{uaddr[1]}", extra="client_max_body_size 0;") as ngx:
            port = ngx.port
            with open(data_path, "rb") as f:
                status, body = http_post(("127.0.0.1", port), f, headers=length)
            check_eq((status, body), (200, want), "50 MiB through nginx (uwsgi protocol)")
        grown = status_bytes(worker, "VmHWM") - before
        print(f"worker peak RSS grew by {grown / 1e6:.1f} MB over two 50 MiB uploads")
        check(grown < 16e6, f"the worker's peak RSS grew by {grown} bytes: the body was held in memory")
        check_eq(os.listdir(spool), [], "files left in $TMPDIR (the spool files are never named)")
        check_eq(srv.stop(), 0, "exit status")


def test_slow_uploader_and_pipelining():
    spool = make_temp_dir("spool-")
    srv, uaddr, haddr = hosted(["--post-buffering", "4096"], env={"TMPDIR": spool}, threads="1")
    with srv:
        (worker,) = srv.workers()
        body = os.urandom(300000)
        slow = connect(haddr, timeout=10.0)
        slow.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:100000])
        # The worker puts the body in an unlinked file of $TMPDIR as it arrives.
        check(wait_until(lambda: spool_fds(worker, spool), 5.0), "no spool file in $TMPDIR while the body arrives")
        check(all(t.endswith("(deleted)") for t in spool_fds(worker, spool)), f"named: {spool_fds(worker, spool)}")
        # The only application thread is free meanwhile.
        status, reply = http_post(haddr, b"x" * 10, timeout=5.0)
        check_eq((status, reply), (200, expect(b"x" * 10) + b" BytesIO"), "a request while an upload stalls")
        # The rest of the body, and a pipelined request right behind it on the same connection.
        slow.sendall(body[100000:] + b"GET /wrapper HTTP/1.1\r\nHost: x\r\n\r\n")
        replies = b""
        while replies.count(b"HTTP/1.1 200") < 2 or not replies.endswith(b"yes"):
            chunk = slow.recv(65536)
            if not chunk:
                break
            replies += chunk
        slow.close()
        check(expect(body) + b" BufferedReader" in replies and replies.endswith(b"yes"),
              f"the slow upload and the request after it: {replies!r}")
        check(wait_until(lambda: not spool_fds(worker, spool), 10.0), "the spool file stays open after the reply")
        check_eq(srv.stop(), 0, "exit status")


def test_wsgi_disable_file_wrapper():
    for extra, want in (([], b"yes"), (["--wsgi-disable-file-wrapper"], b"no")):
        srv, uaddr, haddr = hosted(extra)
        with srv:
            conn = http.client.HTTPConnection(*haddr, timeout=5.0)
            conn.request("GET", "/wrapper")
            resp = conn.getresponse()
            check_eq((resp.status, resp.read()), (200, want), f"wsgi.file_wrapper in the environ with {extra}")
            conn.close()
            check_eq(srv.stop(), 0, "exit status")


if __name__ == "__main__":
    run_tests([test_limit_post, test_post_buffering_50mb, test_slow_uploader_and_pipelining,
               test_wsgi_disable_file_wrapper], budget=120)
