#!/usr/bin/env python3
"""PEP 3333 as checked by a tool no one here wrote: the application runs under wsgiref.validate (the
harness sets UCACHED_WSGI_VALIDATE=1 and fails on any finding), behind a real nginx with Debian's
uwsgi_params and on --http-socket directly: GET, POST with Content-Length and chunked, streaming,
write(), wsgi.file_wrapper, close() also when the client vanished, start_response with exc_info, HEAD,
non-ASCII paths (latin-1 per PEP 3333), large headers, the environ nginx gives (REMOTE_ADDR,
SERVER_NAME/PORT, HTTPS and UWSGI_SCHEME -> wsgi.url_scheme), wsgi.input cut at CONTENT_LENGTH,
--mount with --manage-script-name and SCRIPT_NAME from nginx; and the environ's keys against the real
uWSGI 2.0.21 behind the same nginx."""
import json
import os
import socket
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from appnginx import UWSGI_PARAMS, AppNginx  # noqa: E402
from harness import (Server, ServerError, UwsgiProcess, app_vars, check, check_eq, connect, free_port,  # noqa: E402
                     make_temp_dir, need_uwsgi, packet, request, run_tests, vars_block, wait_until)

APP = r'''
import json, os, sys, time

def text(start_response, body, status="200 OK", extra=()):
    start_response(status, [("Content-Type", "text/plain")] + list(extra))
    return [body]

def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path.endswith("/env") or path.startswith("/utf8/") or path.startswith("/caf"):
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length + 100)  # asks for more: gets CONTENT_LENGTH bytes at most
        out = {k: v for k, v in environ.items() if isinstance(v, str)}
        out["_keys"] = sorted(environ)
        out["_body"] = body.decode("latin-1")
        data = json.dumps(out).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
        return [data]
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (b"chunk %d\n" % i for i in range(200))
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        for i in range(3):
            write(b"written %d;" % i)
        return [b"returned"]
    if path == "/file":
        f = open(environ["QUERY_STRING"], "rb")
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 4096)
    if path == "/exc-info":
        start_response("200 OK", [("Content-Type", "text/plain")])
        try:
            raise KeyError("handled by the application")
        except KeyError:
            return text(lambda s, h: start_response(s, h, sys.exc_info()), b"replaced", "503 Service Unavailable")
    if path == "/big-headers":
        return text(start_response, b"big", extra=[("X-Big-%d" % i, chr(97 + i) * 4000) for i in range(3)])
    if path == "/slow-close":  # the marker file says close() ran, whatever the client did
        marker = environ["QUERY_STRING"]
        with open(marker + ".started", "w") as f:  # the client vanishes once it sees this
            f.write("started")
        class Body:
            def __iter__(self):
                yield b"first;"
                time.sleep(0.3)
                yield b"second"
            def close(self):
                # Written whole, then renamed into place: the test waits for the file to exist and
                # must never read it between the create and the write (it did, once under ASan).
                with open(marker + ".tmp", "w") as f:
                    f.write("closed")
                os.replace(marker + ".tmp", marker)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return Body()
    if path == "/no-content-type":  # a PEP 3333 violation the validator must report
        start_response("200 OK", [])
        return [b"x"]
    return text(start_response, b"default app " + path.encode("latin-1"), "404 Not Found")
'''

MOUNTED = r'''
import json
def application(environ, start_response):
    data = json.dumps({"app": __name__, "SCRIPT_NAME": environ["SCRIPT_NAME"],
                       "PATH_INFO": environ["PATH_INFO"]}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [data]
'''

_s = {}


def setup():
    """One validated server (uwsgi socket for nginx + --http-socket) and nginx in front."""
    if "srv" in _s:
        return _s
    d = make_temp_dir("pep-")
    with open(os.path.join(d, "pepapp.py"), "w") as f:
        f.write(APP)
    up, http = free_port(), free_port()
    srv = Server(["--socket", f"127.0.0.1:{up}", "--http-socket", f"127.0.0.1:{http}", "--module", "pepapp",
                  "--chdir", d, "--processes", "2"], workers=2).start()
    locations = f"""
        location / {{ include {UWSGI_PARAMS}; uwsgi_pass 127.0.0.1:{up}; uwsgi_buffer_size 32k; uwsgi_buffers 8 32k; uwsgi_busy_buffers_size 64k; }}
        location /secure/ {{ include {UWSGI_PARAMS}; uwsgi_param HTTPS on; uwsgi_pass 127.0.0.1:{up}; }}
        location /scheme/ {{ include {UWSGI_PARAMS}; uwsgi_param UWSGI_SCHEME https; uwsgi_pass 127.0.0.1:{up}; }}
"""
    ngx = AppNginx(locations).start()
    _s.update(srv=srv, dir=d, up=up, http=("127.0.0.1", http), ngx=ngx)
    return _s


def env_via_nginx(path, **kw):
    s = setup()
    status, headers, body = s["ngx"].get(path, **kw)
    check_eq(status, 200, f"{path} through nginx ({body[:300]!r})")
    return json.loads(body)


def http_raw(addr, data, timeout=10):
    """Sends raw bytes to --http-socket; returns everything until EOF (Connection: close requests)."""
    reply, how = request(addr, data, timeout=timeout)
    check(how == "eof", f"connection ended by {how}: {reply[:200]!r}")
    return reply


def test_get_environ_behind_nginx():
    s = setup()
    env = env_via_nginx("/env?a=1&b=%20x")
    check_eq(env["REQUEST_METHOD"], "GET", "REQUEST_METHOD")
    check_eq(env["QUERY_STRING"], "a=1&b=%20x", "QUERY_STRING as sent")
    check_eq(env["REQUEST_URI"], "/env?a=1&b=%20x", "REQUEST_URI")
    check_eq(env["SCRIPT_NAME"], "", "SCRIPT_NAME at the root")
    check_eq(env["PATH_INFO"], "/env", "PATH_INFO")
    check_eq(env["REMOTE_ADDR"], "127.0.0.1", "REMOTE_ADDR")
    check(env["REMOTE_PORT"].isdigit(), f"REMOTE_PORT: {env.get('REMOTE_PORT')}")
    check_eq(env["SERVER_NAME"], "testhost.example", "SERVER_NAME (nginx's server_name)")
    check_eq(env["SERVER_PORT"], str(s["ngx"].port), "SERVER_PORT (nginx's port)")
    check_eq(env["SERVER_PROTOCOL"], "HTTP/1.1", "SERVER_PROTOCOL")
    check_eq(env["wsgi.url_scheme"], "http", "wsgi.url_scheme without HTTPS")
    check_eq(env["HTTP_HOST"], "127.0.0.1", "HTTP_HOST ($host)")
    check("HTTPS" not in env, "no HTTPS var on plain HTTP (uwsgi_params: if_not_empty)")


def test_https_and_uwsgi_scheme():
    check_eq(env_via_nginx("/secure/env")["wsgi.url_scheme"], "https", "uwsgi_param HTTPS on -> https")
    check_eq(env_via_nginx("/scheme/env")["wsgi.url_scheme"], "https", "uwsgi_param UWSGI_SCHEME https -> https")


def test_post_content_length_and_chunked():
    s = setup()
    body = bytes(range(256)) * 300  # 76,800 bytes, every byte value
    env = env_via_nginx("/env", method="POST", body=body, headers={"Content-Type": "application/octet-stream"})
    check_eq(env["CONTENT_LENGTH"], str(len(body)), "CONTENT_LENGTH through nginx")
    check_eq(env["CONTENT_TYPE"], "application/octet-stream", "CONTENT_TYPE")
    check("HTTP_CONTENT_LENGTH" not in env and "HTTP_CONTENT_TYPE" not in env, "no HTTP_CONTENT_* keys")
    check(env["_body"].encode("latin-1") == body, "the body read through wsgi.input")
    # chunked, straight to --http-socket
    chunks = [b"hello ", b"chunked ", b"world" * 1000]
    wire = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    reply = http_raw(s["http"], b"POST /env HTTP/1.1\r\nHost: h\r\nConnection: close\r\n"
                                b"Transfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n" + wire)
    head, _, payload = reply.partition(b"\r\n\r\n")
    check(head.startswith(b"HTTP/1.1 200"), f"chunked POST: {head[:200]!r}")
    env = json.loads(payload)
    check_eq(env["_body"].encode("latin-1"), b"".join(chunks), "the de-chunked body in wsgi.input")
    check_eq(env["CONTENT_LENGTH"], str(len(b"".join(chunks))), "CONTENT_LENGTH of the de-chunked body")


def test_input_cut_at_content_length():
    s = setup()
    pairs = app_vars("/env", method="POST", extra=[("CONTENT_LENGTH", "5")])
    reply, how = request(("127.0.0.1", s["up"]), packet(0, 0, vars_block(pairs), b"12345EXTRA"))
    env = json.loads(reply.partition(b"\r\n\r\n")[2])
    check_eq(env["_body"], "12345", "wsgi.input stops at CONTENT_LENGTH")


def test_streaming_write_and_file_wrapper():
    s = setup()
    status, _, body = s["ngx"].get("/stream")
    check_eq((status, body), (200, b"".join(b"chunk %d\n" % i for i in range(200))), "a generator's chunks")
    status, _, body = s["ngx"].get("/write")
    check_eq((status, body), (200, b"written 0;written 1;written 2;returned"), "write() then the iterable")
    path = os.path.join(s["dir"], "download.bin")
    data = os.urandom(300_000)
    with open(path, "wb") as f:
        f.write(data)
    status, headers, body = s["ngx"].get("/file?" + path)
    check_eq(status, 200, "file_wrapper status")
    check(body == data, f"file_wrapper body: {len(body)} bytes, want {len(data)}")


def test_close_called_when_the_client_vanishes():
    s = setup()
    for addr, name in ((s["http"], "--http-socket"), (("127.0.0.1", s["up"]), "uwsgi socket")):
        marker = os.path.join(s["dir"], f"closed-{s['up'] if 'uwsgi' in name else s['http'][1]}")
        if name == "--http-socket":
            data = f"GET /slow-close?{marker} HTTP/1.1\r\nHost: h\r\n\r\n".encode()
        else:
            data = packet(0, 0, vars_block(app_vars("/slow-close", query=marker)))
        sock = connect(addr)
        sock.sendall(data)
        check(wait_until(lambda: os.path.exists(marker + ".started"), 10), f"{name}: the request never started")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        sock.close()  # gone (RST) while the application is in the middle of its response
        check(wait_until(lambda: os.path.exists(marker), 10), f"{name}: close() of the iterable was not called")
        with open(marker) as f:
            check_eq(f.read(), "closed", f"{name}: marker")


def test_exc_info_head_and_big_headers():
    s = setup()
    status, _, body = s["ngx"].get("/exc-info")
    check_eq((status, body), (503, b"replaced"), "start_response(exc_info) before the body replaces the status")
    status, headers, body = s["ngx"].get("/env", method="HEAD")
    check_eq((status, body), (200, b""), "HEAD through nginx")
    check(int(headers["content-length"]) > 0, "HEAD keeps the Content-Length of the GET")
    reply = http_raw(s["http"], b"HEAD /env HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    head, _, rest = reply.partition(b"\r\n\r\n")
    check(head.startswith(b"HTTP/1.1 200"), f"HEAD on --http-socket: {head[:100]!r}")
    check_eq(rest, b"", "no body after the head of a HEAD response on --http-socket")
    env = env_via_nginx("/env", headers={"X-Big": "b" * 7000, "Cookie": "c=" + "k" * 900})
    check_eq(len(env["HTTP_X_BIG"]), 7000, "a 7000-byte request header")
    status, headers, body = s["ngx"].get("/big-headers")
    check_eq(status, 200, "3 x 4000-byte response headers through nginx (uwsgi_buffer_size 32k)")
    check_eq([len(headers[f"x-big-{i}"]) for i in range(3)], [4000] * 3, "response header sizes")
    reply = http_raw(s["http"], b"GET /big-headers HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    check(reply.count(b"a" * 4000) == 1 and reply.endswith(b"big"), "big headers on --http-socket")


def test_non_ascii_paths_are_latin1():
    s = setup()
    quoted = "/caf%C3%A9/%E2%82%AC%20x"
    env = env_via_nginx(quoted)
    want = "/café/€ x".encode("utf-8").decode("latin-1")
    check_eq(env["PATH_INFO"], want, "PATH_INFO: the decoded UTF-8 bytes, one code point per byte")
    check_eq(env["REQUEST_URI"], quoted, "REQUEST_URI as sent")
    reply = http_raw(s["http"], f"GET {quoted} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode())
    env = json.loads(reply.partition(b"\r\n\r\n")[2])
    check_eq(env["PATH_INFO"], want, "PATH_INFO on --http-socket")
    # raw (unencoded) high bytes from nginx's $document_uri reach the app unchanged
    env = env_via_nginx(urllib.parse.quote("/utf8/\xff\x80", encoding="latin-1"))
    check_eq(env["PATH_INFO"], "/utf8/\xff\x80", "bytes that are not UTF-8")


def test_validator_reports_a_violation():
    """The harness' PEP 3333 check can fail: a response without Content-Type is reported."""
    s = setup()
    s["srv"].check_wsgi_validator()  # whatever the earlier tests left is clean
    status, _, _ = s["ngx"].get("/no-content-type")
    check_eq(status, 500, "the validator's AssertionError is a 500")
    try:
        s["srv"].check_wsgi_validator()
    except ServerError as e:
        check("No Content-Type header found" in str(e), f"the finding is named: {str(e)[-500:]}")
    else:
        raise AssertionError("check_wsgi_validator missed the violation")


def test_mount_and_manage_script_name():
    d = make_temp_dir("mount-")
    with open(os.path.join(d, "pepapp.py"), "w") as f:
        f.write(APP)
    for name in ("mounted.py", "deeper.py"):
        with open(os.path.join(d, name), "w") as f:
            f.write(MOUNTED)
    with open(os.path.join(d, "bymodule.py"), "w") as f:
        f.write(MOUNTED.replace("def application", "def app"))
    up = free_port()
    with Server(["--socket", f"127.0.0.1:{up}", "--chdir", d, "--module", "pepapp", "--mount", "/app=mounted.py",
                 "--mount", "/app/sub=deeper.py", "--mount", "/mod/=bymodule:app", "--manage-script-name"],
                workers=1) as srv:
        check(srv.wait_log(r"mounting mounted.py on /app", 10), "uWSGI's 'mounting X on Y' line")
        locations = f"location / {{ include {UWSGI_PARAMS}; uwsgi_pass 127.0.0.1:{up}; }}"
        with AppNginx(locations) as ngx:
            def get(path):
                status, _, body = ngx.get(path)
                check_eq(status, 200 if not body.startswith(b"default app") else 404, f"{path}: {body[:200]!r}")
                return json.loads(body) if status == 200 else body
            for path, app, script, info in [
                    ("/app/x/y", "uwsgi_file_mounted", "/app", "/x/y"),
                    ("/app", "uwsgi_file_mounted", "/app", ""),
                    ("/app/", "uwsgi_file_mounted", "/app", "/"),
                    ("/app/sub/z", "uwsgi_file_deeper", "/app/sub", "/z"),  # the longest mountpoint wins
                    ("/app/subway", "uwsgi_file_mounted", "/app", "/subway"),  # whole segments only
                    ("/mod/q", "bymodule", "/mod", "/q")]:
                got = get(path)
                check_eq((got["app"], got["SCRIPT_NAME"], got["PATH_INFO"]), (app, script, info), path)
            check_eq(get("/apple"), b"default app /apple", "/apple is not under /app: the default app")
    # Without --manage-script-name the web server's SCRIPT_NAME picks the mount (PATH_INFO untouched).
    up = free_port()
    with Server(["--socket", f"127.0.0.1:{up}", "--chdir", d, "--mount", "/app=mounted.py"], workers=1):
        locations = (f"location /legacy/ {{ include {UWSGI_PARAMS}; uwsgi_param SCRIPT_NAME /app; "
                     f"uwsgi_pass 127.0.0.1:{up}; }}\n"
                     f"location / {{ include {UWSGI_PARAMS}; uwsgi_pass 127.0.0.1:{up}; }}")
        with AppNginx(locations) as ngx:
            status, _, body = ngx.get("/legacy/x")
            check_eq(status, 200, f"SCRIPT_NAME /app from nginx: {body[:200]!r}")
            check_eq(json.loads(body), {"app": "uwsgi_file_mounted", "SCRIPT_NAME": "/app", "PATH_INFO": "/legacy/x"},
                     "the mount chosen by SCRIPT_NAME")
            status, _, body = ngx.get("/other")
            check_eq(status, 500, "no default application: 500, as uWSGI")


def test_environ_keys_as_uwsgi():
    """The same request through the same nginx to the real uWSGI 2.0.21 and to us: the same environ keys
    (ours adds uwsgi.core, which uWSGI sets only with several cores, see below for the rest) and the same
    CGI values."""
    need_uwsgi(("python3", "cache"))
    s = setup()
    theirs = free_port()
    with UwsgiProcess(["--plugin", "python3,cache", "--master", "--processes", "1", "--socket", f"127.0.0.1:{theirs}",
                       "--cache2", "name=default,items=10", "--chdir", s["dir"], "--module", "pepapp"],
                      [("127.0.0.1", theirs)]):
        locations = (f"location /ours/ {{ include {UWSGI_PARAMS}; uwsgi_pass 127.0.0.1:{s['up']}; }}\n"
                     f"location /theirs/ {{ include {UWSGI_PARAMS}; uwsgi_pass 127.0.0.1:{theirs}; }}")
        with AppNginx(locations) as ngx:
            got = {}
            for who in ("ours", "theirs"):
                status, _, body = ngx.get(f"/{who}/env?q=1", method="POST", body=b"abc",
                                          headers={"Content-Type": "text/plain", "X-Custom": "v"})
                check_eq(status, 200, f"{who}: {body[:300]!r}")
                got[who] = json.loads(body)
    ours, theirs_env = got["ours"], got["theirs"]
    # The deliberate differences (docs/differences.md): SCRIPT_NAME is always there (CGI requires it;
    # uWSGI sets it only on --http-socket or from the web server) and nginx's HTTP_CONTENT_TYPE /
    # HTTP_CONTENT_LENGTH copies are dropped (PEP 3333; wsgiref.validate refuses them).
    extra = set(ours["_keys"]) - set(theirs_env["_keys"]) - {"uwsgi.core", "SCRIPT_NAME"}
    missing = set(theirs_env["_keys"]) - set(ours["_keys"]) - {"HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"}
    check_eq(ours["SCRIPT_NAME"], "", "SCRIPT_NAME at the root")
    check("HTTP_CONTENT_TYPE" in theirs_env, "uWSGI does pass nginx's HTTP_CONTENT_TYPE (else drop the exception)")
    check(not extra and not missing, f"environ keys differ from uWSGI's: ours only {extra}, theirs only {missing}")
    for key in theirs_env["_keys"]:
        if key.startswith(("wsgi.", "uwsgi.", "HTTP_CONTENT_")) or key in ("REMOTE_PORT", "PATH_INFO", "REQUEST_URI"):
            continue
        check_eq(ours[key], theirs_env[key], f"environ[{key!r}]")
    check_eq(ours["_body"], theirs_env["_body"], "the body")


if __name__ == "__main__":
    run_tests([test_get_environ_behind_nginx, test_https_and_uwsgi_scheme, test_post_content_length_and_chunked,
               test_input_cut_at_content_length, test_streaming_write_and_file_wrapper,
               test_close_called_when_the_client_vanishes, test_exc_info_head_and_big_headers,
               test_non_ascii_paths_are_latin1, test_validator_reports_a_violation, test_mount_and_manage_script_name,
               test_environ_keys_as_uwsgi], budget=120)
