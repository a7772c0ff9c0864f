"""Static files (issue 11): --static-map, --static-map2, --check-static, --static-index,
--static-expires, --static-gzip-all, --add-header, served by the worker with sendfile and never by the
application (the Python app here answers "app:" + PATH_INFO, so a leak to it shows). Checked over an
--http-socket (keep-alive, HEAD, 304 on If-Modified-Since, Content-Type/Length, a 3 MB file) and over
uwsgi behind a real nginx. No path leaves the mapped folder: "..", "%2e%2e", a raw uwsgi PATH_INFO
with "..", a symbolic link pointing out (refused with uWSGI's "security error" line), a sibling folder
sharing the prefix."""

import email.utils
import gzip
import http.client
import os
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from appnginx import uwsgi_front  # noqa: E402
from harness import (Server, wsgi_req, check, check_eq, free_port, make_temp_dir,  # noqa: E402
                     request, run_tests)

APP = '''\
def application(environ, start_response):
    body = ("app:" + environ["PATH_INFO"]).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''

STATE = {}


def tree():
    """The served folder, the secret next to it, and the app."""
    if "root" in STATE:
        return STATE
    root = make_temp_dir("static-")
    static = os.path.join(root, "static")
    os.makedirs(os.path.join(static, "css"))
    os.makedirs(os.path.join(static, "docs"))
    os.makedirs(os.path.join(root, "static-secret"))
    os.makedirs(os.path.join(root, "outside"))
    os.makedirs(os.path.join(root, "media", "media"))
    with open(os.path.join(static, "css", "site.css"), "w") as f:
        f.write("body { color: red }\n")
    with open(os.path.join(static, "css", "site.css.gz"), "wb") as f:
        f.write(gzip.compress(b"body { color: red }\n"))
    with open(os.path.join(static, "docs", "index.html"), "w") as f:
        f.write("<h1>docs</h1>\n")
    with open(os.path.join(static, "logo.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    STATE["big"] = os.urandom(3 << 20)
    with open(os.path.join(static, "big.bin"), "wb") as f:
        f.write(STATE["big"])
    with open(os.path.join(root, "outside", "secret.txt"), "w") as f:
        f.write("SECRET\n")
    with open(os.path.join(root, "static-secret", "s.txt"), "w") as f:
        f.write("SECRET\n")
    os.symlink(os.path.join(root, "outside", "secret.txt"), os.path.join(static, "link.txt"))
    os.symlink(os.path.join(root, "outside"), os.path.join(static, "linkdir"))
    with open(os.path.join(root, "media", "media", "m.txt"), "w") as f:
        f.write("media file\n")
    with open(os.path.join(root, "app.py"), "w") as f:
        f.write(APP)
    STATE.update(root=root, static=static)
    return STATE


def static_args(st):
    return ["--wsgi-file", os.path.join(st["root"], "app.py"),
            "--static-map", f"/static={st['static']}",
            "--static-map2", f"/media={st['root']}/media",
            "--static-index", "index.html",
            "--static-expires", r"/css/.*\.css$ 3600",
            "--static-gzip-all", "--add-header", "X-Served-By: test"]


def http_server():
    if "http" not in STATE:
        st = tree()
        port = free_port()
        STATE["http"] = Server(["--http-socket", f"127.0.0.1:{port}"] + static_args(st), workers=1).start()
        STATE["http_port"] = port
    return STATE["http"], STATE["http_port"]


def get(port, path, method="GET", headers=None, conn=None):
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request(method, path, headers=headers or {})
    resp = conn.getresponse()
    body = resp.read()
    if own:
        conn.close()
    return resp, body


def raw_http(port, request_line):
    """A request line sent as is (http.client would normalise the path)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(request_line.encode() + b"\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data
            data += chunk


def test_file_served_with_its_headers():
    srv, port = http_server()
    resp, body = get(port, "/static/css/site.css")
    check_eq(resp.status, 200, "status")
    check_eq(body, b"body { color: red }\n", "body")
    check_eq(resp.getheader("Content-Type"), "text/css", "Content-Type")
    check_eq(resp.getheader("Content-Length"), str(len(body)), "Content-Length")
    mtime = int(os.stat(os.path.join(tree()["static"], "css", "site.css")).st_mtime)
    check_eq(resp.getheader("Last-Modified"), email.utils.formatdate(mtime, usegmt=True), "Last-Modified")
    expires = email.utils.parsedate_to_datetime(resp.getheader("Expires")).timestamp()
    check(3500 <= expires - time.time() <= 3700, f"Expires about an hour ahead: {resp.getheader('Expires')}")
    check_eq(resp.getheader("X-Served-By"), "test", "--add-header on a static file")
    resp, body = get(port, "/static/logo.png")
    check_eq((resp.status, resp.getheader("Content-Type"), len(body)), (200, "image/png", 8 + 1024), "png")
    check(resp.getheader("Expires") is None, "no Expires for a file the pattern does not match")


def test_head_and_revalidation():
    srv, port = http_server()
    resp, body = get(port, "/static/logo.png", method="HEAD")
    check_eq((resp.status, body, resp.getheader("Content-Length")), (200, b"", "1032"), "HEAD")
    last_modified = resp.getheader("Last-Modified")
    resp, body = get(port, "/static/logo.png", headers={"If-Modified-Since": last_modified})
    check_eq((resp.status, body), (304, b""), "304 on revalidation with the same date")
    check_eq(resp.getheader("Last-Modified"), last_modified, "Last-Modified on the 304")
    older = email.utils.formatdate(time.time() - 86400 * 400, usegmt=True)
    resp, body = get(port, "/static/logo.png", headers={"If-Modified-Since": older})
    check_eq((resp.status, len(body)), (200, 1032), "200 when the file is newer than If-Modified-Since")
    resp, body = get(port, "/static/logo.png", headers={"If-Modified-Since": "yesterday"})
    check_eq(resp.status, 200, "a malformed If-Modified-Since is ignored")


def test_keep_alive_big_file_gzip_index():
    srv, port = http_server()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    resp, body = get(port, "/static/big.bin", conn=conn)
    check_eq((resp.status, len(body)), (200, len(STATE["big"])), "3 MB file")
    check(body == STATE["big"], "the 3 MB file's bytes")
    sock = conn.sock
    resp, body = get(port, "/static/css/site.css", headers={"Accept-Encoding": "gzip, deflate"}, conn=conn)
    check(conn.sock is sock and sock is not None, "the connection was kept across static files")
    check_eq((resp.status, resp.getheader("Content-Encoding")), (200, "gzip"), "gzip variant")
    check_eq(gzip.decompress(body), b"body { color: red }\n", "gzip variant body")
    check_eq(resp.getheader("Content-Type"), "text/css", "type of the original file")
    check_eq(resp.getheader("Vary"), "Accept-Encoding", "Vary")
    resp, body = get(port, "/static/docs/", conn=conn)
    check_eq((resp.status, body, resp.getheader("Content-Type")), (200, b"<h1>docs</h1>\n", "text/html"),
             "--static-index")
    resp, body = get(port, "/media/m.txt", conn=conn)  # from ROOT/media + /media/m.txt
    check_eq((resp.status, body), (200, b"media file\n"), "--static-map2 keeps the mountpoint")
    conn.close()


def test_what_goes_to_the_application():
    srv, port = http_server()
    for path in ("/static/missing.css", "/staticx/css/site.css", "/other", "/static/docs/nothing/"):
        resp, body = get(port, path)
        check_eq(body, f"app:{path}".encode(), f"{path} goes to the application")
    resp, body = get(port, "/static/css/site.css", method="POST")
    check_eq(body, b"app:/static/css/site.css", "POST goes to the application (uWSGI serves GET and HEAD)")


def test_check_static():
    st = tree()
    port = free_port()
    with Server(["--http-socket", f"127.0.0.1:{port}", "--wsgi-file", os.path.join(st["root"], "app.py"),
                 "--check-static", st["static"]], workers=1):
        resp, body = get(port, "/css/site.css")
        check_eq((resp.status, body), (200, b"body { color: red }\n"), "--check-static serves DIR/x for /x")
        resp, body = get(port, "/css/none.css")
        check_eq(body, b"app:/css/none.css", "a missing file goes to the application")
        reply = raw_http(port, "GET /../outside/secret.txt HTTP/1.1")
        check(b"SECRET" not in reply, f"leaked: {reply[:200]!r}")


def test_no_way_out_of_the_folder():
    srv, port = http_server()
    offset = srv.log_size()
    for line in ("GET /static/../outside/secret.txt HTTP/1.1", "GET /static/%2e%2e/outside/secret.txt HTTP/1.1",
                 "GET /static/%2E%2E/%2E%2E/outside/secret.txt HTTP/1.1", "GET /static/..%2foutside/secret.txt HTTP/1.1",
                 "GET /static/link.txt HTTP/1.1", "GET /static/linkdir/secret.txt HTTP/1.1",
                 "GET /static-secret/s.txt HTTP/1.1", "GET /static/../static-secret/s.txt HTTP/1.1"):
        reply = raw_http(port, line)
        check(b"SECRET" not in reply, f"{line!r} leaked the file: {reply[:300]!r}")
        check(reply.startswith(b"HTTP/1.1 "), f"{line!r}: an answer: {reply[:100]!r}")
    check(srv.wait_log(r"security error: \S+/outside/secret.txt is not under \S+/static or a safe path",
                       3.0, offset), "the symlink refusal is logged as uWSGI does")
    # A raw uwsgi packet is not normalised by anyone: the worker itself refuses the "..".
    st = tree()
    port2 = free_port()
    with Server(["--socket", f"127.0.0.1:{port2}"] + static_args(st), workers=1):
        for path in ("/static/../outside/secret.txt", "/static/css/../../outside/secret.txt",
                     "/static/linkdir/secret.txt"):
            reply, how = request(("127.0.0.1", port2), wsgi_req(path))
            check(b"SECRET" not in reply, f"uwsgi PATH_INFO {path!r} leaked: {reply[:200]!r}")
            check(reply.endswith(f"app:{path}".encode()), f"{path!r} went to the application: {reply[-100:]!r}")
        reply, how = request(("127.0.0.1", port2), wsgi_req("/static/css/site.css"))
        check(reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"body { color: red }\n"),
              f"a file over uwsgi: {reply[:200]!r}")


def test_behind_nginx():
    st = tree()
    backend = free_port()
    with Server(["--socket", f"127.0.0.1:{backend}"] + static_args(st), workers=1), \
            uwsgi_front(f"127.0.0.1:{backend}") as ngx:
        port = ngx.port
        resp, body = get(port, "/static/big.bin")
        check_eq((resp.status, body == STATE["big"]), (200, True), "3 MB file through nginx")
        resp, body = get(port, "/static/css/site.css")
        check_eq((resp.status, body, resp.getheader("Content-Type")),
                 (200, b"body { color: red }\n", "text/css"), "file through nginx")
        resp, body = get(port, "/static/css/site.css", headers={"If-Modified-Since": resp.getheader("Last-Modified")})
        check_eq(resp.status, 304, "304 through nginx")
        resp, body = get(port, "/static/css/site.css", method="HEAD")
        check_eq((resp.status, body, resp.getheader("Content-Length")), (200, b"", "20"), "HEAD through nginx")
        resp, body = get(port, "/app/x")
        check_eq(body, b"app:/app/x", "the application through nginx")
        for line in ("GET /static/%2e%2e/outside/secret.txt HTTP/1.1", "GET /static/link.txt HTTP/1.1"):
            reply = raw_http(port, line)
            check(b"SECRET" not in reply, f"{line!r} through nginx leaked: {reply[:300]!r}")


def test_bad_static_options():
    from harness import run_server_to_exit
    port = free_port()
    rc, out, left = run_server_to_exit(["--socket", f"127.0.0.1:{port}", "--static-map", "/s=/no/such/dir"])
    check_eq(rc, 1, "exit status for a missing folder")
    check("--static-map /s=/no/such/dir" in out and "No such file" in out, f"message: {out[-300:]!r}")
    rc, out, left = run_server_to_exit(["--socket", f"127.0.0.1:{port}", "--static-expires", "(unclosed 60"])
    check_eq(rc, 1, "exit status for a bad regexp")
    check("--static-expires" in out and "REGEXP SECONDS" in out, f"message: {out[-300:]!r}")
    rc, out, left = run_server_to_exit(["--socket", f"127.0.0.1:{port}", "--static-map", "static"])
    check("expected /MOUNTPOINT=PATH" in out, f"message: {out[-300:]!r}")


if __name__ == "__main__":
    run_tests([test_file_served_with_its_headers, test_head_and_revalidation, test_keep_alive_big_file_gzip_index,
               test_what_goes_to_the_application, test_check_static, test_no_way_out_of_the_folder, test_behind_nginx,
               test_bad_static_options], budget=90)
