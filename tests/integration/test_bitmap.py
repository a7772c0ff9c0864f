"""uWSGI's bitmap mode (issue 14): a `--cache2 ...,blocksize=4096,blocks=M,bitmap=1` cache starts without a
WARNING, stores and serves 150 KiB values through the Python API (uwsgi.cache_update / cache_get in a
WSGI app), the magic interface and nginx direct access (modifier1 111, a 200 KiB page), and serves the
same values after a restart with a store (uWSGI 2.0.21 loses them: its bitmap is not rebuilt).
"""

import hashlib
import inspect
import os
import signal
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Server, wsgi_req, check, check_eq, free_port, magic_get, magic_set, make_temp_dir,  # noqa: E402
                     peer_missing, request, run_tests)
from test_nginx import Nginx, get, http_page, nginx_present  # noqa: E402

def value(name):
    """150 KiB that differ from key to key and from byte to byte (the app below runs this function too)."""
    out = b""
    while len(out) < 150 * 1024:
        out += hashlib.sha256(name.encode() + str(len(out)).encode()).digest()
    return out[:150 * 1024]


APP = "import hashlib\nimport uwsgi\n\n\n" + inspect.getsource(value) + """

def application(environ, start_response):
    op, key = environ["PATH_INFO"].strip("/").split("/", 1)
    if op == "set":
        ok = uwsgi.cache_update(key, value(key), 0)
        body = b"stored" if ok else b"refused"
    else:
        got = uwsgi.cache_get(key)
        body = b"miss" if got is None else hashlib.sha1(got).hexdigest().encode()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [body]
"""


def app_call(addr, path):
    reply, how = request(addr, wsgi_req(path), 10.0)
    check(how == "eof" and reply.startswith(b"HTTP/1.1 200"), f"app {path}: {reply[:200]!r} ({how})")
    return reply.split(b"\r\n\r\n", 1)[1]


def test_bitmap_values_through_every_path_and_a_restart():
    if not nginx_present():
        peer_missing("nginx")
        return
    d = make_temp_dir("bitmap-")
    with open(os.path.join(d, "bigapp.py"), "w") as f:
        f.write(APP)
    store = os.path.join(d, "big.store")
    port = free_port()
    addr = ("127.0.0.1", port)
    args = ["--socket", f"127.0.0.1:{port}", "--processes", "2", "--module", "bigapp", "--chdir", d,
            "--cache2", f"name=big,items=100,blocksize=4096,blocks=2000,bitmap=1,store={store}"]
    page = http_page(value("page") + value("page2")[:50 * 1024], content_type="application/octet-stream")
    check(len(page) > 200 * 1024, "a 200 KiB page")
    magic_value = value("magic")

    def serves_everything(srv, ngx, when):
        check_eq(app_call(addr, "/get/py-value"), hashlib.sha1(value("py-value")).hexdigest().encode(),
                 f"{when}: the Python API reads a value stored through the Python API")
        check_eq(magic_get(addr, "py-value", timeout=10.0), value("py-value"),
                 f"{when}: the magic interface reads the value stored by the Python API")
        check_eq(app_call(addr, "/get/magic"), hashlib.sha1(magic_value).hexdigest().encode(),
                 f"{when}: the Python API reads the value stored through the magic interface")
        conn = ngx.connection()
        try:
            status, _, body = get(conn, "/direct/page.bin")
        finally:
            conn.close()
        check_eq(status, 200, f"{when}: nginx direct access status")
        check(body == page.split(b"\r\n\r\n", 1)[1], f"{when}: nginx serves the {len(page)}-byte page intact")

    srv = Server(args, workers=2)
    srv.start()
    ngx = Nginx(addr).start()
    try:
        check("WARNING" not in srv.log(), f"bitmap=1 starts without a WARNING: {srv.log_tail(10)}")
        check_eq(app_call(addr, "/set/py-value"), b"stored", "a 150 KiB value stored through the Python API")
        check(magic_set(addr, "magic", magic_value, timeout=10.0), "a 150 KiB value stored through the magic interface")
        check(magic_set(addr, "/direct/page.bin", page, timeout=10.0), "a 200 KiB page stored for nginx")
        check(not magic_set(addr, "too-big", b"x" * (4096 * 2000 + 1), timeout=10.0),
              "a value over blocksize x blocks is refused")
        serves_everything(srv, ngx, "before the restart")
        check_eq(srv.stop(signal.SIGTERM), 0, "server exit status after SIGTERM")
        srv = Server(args, workers=2)
        srv.start()
        check("restored 3 items" in srv.log(), f"the store gives back the three values: {srv.log_tail(10)}")
        serves_everything(srv, ngx, "after a restart with the store")
    finally:
        ngx.stop()
        srv.stop(signal.SIGTERM)


if __name__ == "__main__":
    run_tests([test_bitmap_values_through_every_path_and_a_restart], budget=60)
