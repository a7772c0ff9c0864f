#!/usr/bin/env python3
"""The Python host serving a WSGI application (PEP 3333) the way uWSGI 2.0 does: environ from the uwsgi
vars, wsgi.input over the buffered body, start_response (with exc_info), write(), close(),
wsgi.file_wrapper, the raw response (status line from SERVER_PROTOCOL, headers as given, no
Content-Length added), an exception -> 500 with the traceback in the log, and the loading options
(--module NAME[:callable], --wsgi-file, --callable, --pythonpath, --env, --chdir, --lazy-apps)
including what happens when the application cannot be imported."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (app_vars, Server, check, check_eq, free_port, make_temp_dir, packet, request, run_server_to_exit,
                     run_tests, vars_block)

APP = r'''
import json, os, sys
import uwsgi

closed = []

class Body:
    def __init__(self, chunks):
        self.chunks = chunks
    def __iter__(self):
        return iter(self.chunks)
    def close(self):
        closed.append(1)

def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    if path == "/environ":
        inp = environ["wsgi.input"]
        first = inp.readline()
        rest = inp.read(int(environ.get("CONTENT_LENGTH") or 0) - len(first))
        out = {k: v for k, v in environ.items() if isinstance(v, str)}
        out["_types"] = {k: type(v).__name__ for k, v in environ.items()}
        out["_version"] = list(environ["wsgi.version"])
        out["_multithread"] = environ["wsgi.multithread"]
        out["_multiprocess"] = environ["wsgi.multiprocess"]
        out["_run_once"] = environ["wsgi.run_once"]
        out["_errors_write"] = hasattr(environ["wsgi.errors"], "write")
        out["_body"] = [first.decode("latin-1"), rest.decode("latin-1")]
        out["_worker"] = uwsgi.worker_id()
        out["_numproc"] = uwsgi.numproc
        out["_opt"] = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in uwsgi.opt.items()}
        out["_env"] = os.environ.get("PYHOST_TEST_ENV")
        out["_cwd"] = os.getcwd()
        out["_prefix"] = sys.prefix
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps(out).encode()]
    if path == "/raw":
        start_response("201 Created", [("Content-Type", "text/plain"), ("X-A", "1"), ("X-B", "two words")])
        return [b"part1,", b"", b"part2"]
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain"), ("X-Mode", "write")])
        write(b"written;")
        return [b"returned"]
    if path == "/close":  # breaks PEP 3333 on purpose (no start_response): close() must run all the same
        return Body([b"closing body %d" % len(closed)])
    if path == "/closed":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"closed=%d" % len(closed)]
    if path == "/raise":
        raise RuntimeError("boom from the test app")
    if path == "/raise-late":
        start_response("200 OK", [])
        def gen():
            yield b"partial"
            raise ValueError("late failure")
        return gen()
    if path == "/no-start":
        return [b"nothing"]
    if path == "/str-body":
        start_response("200 OK", [])
        return ["not bytes"]
    if path == "/exc-info":
        start_response("200 OK", [("Content-Type", "text/plain"), ("X-First", "1")])
        try:
            raise KeyError("handled")
        except KeyError:
            start_response("503 Service Unavailable", [("Content-Type", "text/plain"), ("X-Second", "1")],
                           sys.exc_info())
        return [b"replaced"]
    if path == "/file":
        f = open(environ["QUERY_STRING"], "rb")
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](f, 1000)
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found: " + path.encode("latin-1")]

def other(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"the other callable"]
'''


def write_app(directory, name="pyapp"):
    with open(os.path.join(directory, name + ".py"), "w") as f:
        f.write(APP)


def app_request(addr, path, extra=(), body=b"", protocol="HTTP/1.1", method="GET"):
    pairs = app_vars(path, method=method, protocol=protocol, extra=extra)
    if body:
        pairs.append(("CONTENT_LENGTH", str(len(body))))
    reply, how = request(addr, packet(0, 0, vars_block(pairs), body), timeout=10)
    check(how == "eof", f"{path}: connection ended by {how}, got {reply[:200]!r}")
    return reply


def split_reply(reply):
    head, _, body = reply.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    return lines[0], lines[1:], body


_shared = {}


def server(validated=True):
    """One server for the checks that do not need their own (2 threads, 2 processes), its application
    under wsgiref.validate; `validated=False`: a second one without, for the paths that break PEP 3333 on
    purpose to show what the server does then."""
    key = "srv" if validated else "unvalidated"
    if key not in _shared:
        d = _shared.setdefault("dir", make_temp_dir("py-"))
        write_app(d)
        port = free_port()
        srv = Server(["--socket", f"127.0.0.1:{port}", "--module", "pyapp", "--chdir", d, "--processes", "2",
                      "--threads", "2", "--env", "PYHOST_TEST_ENV=from-env", "--cache2", "name=default,items=100"],
                     workers=2, validate_wsgi=validated).start()
        _shared[key] = (srv, ("127.0.0.1", port))
    return _shared[key]


def test_environ_and_body():
    srv, addr = server()
    body = b"line one\nrest \xe9\xff"
    reply = app_request(addr, "/environ", body=body, method="POST",
                        extra=[("QUERY_STRING", "a=1"), ("HTTPS", "on"), ("HTTP_X_LATIN", b"caf\xe9"),
                               ("REMOTE_ADDR", "127.0.0.1")])
    status, headers, payload = split_reply(reply)
    check_eq(status, b"HTTP/1.1 200 OK", "status line")
    env = json.loads(payload)
    check_eq(env["REQUEST_METHOD"], "POST", "REQUEST_METHOD")
    check_eq(env["QUERY_STRING"], "a=1", "QUERY_STRING")
    check_eq(env["HTTP_X_LATIN"], "caf\xe9", "a header with a latin-1 byte (decoded latin-1)")
    check_eq(env["CONTENT_LENGTH"], str(len(body)), "CONTENT_LENGTH")
    check_eq(env["_body"], ["line one\n", "rest \xe9\xff"], "wsgi.input readline + read")
    check_eq(env["wsgi.url_scheme"], "https", "url_scheme with HTTPS=on")
    check_eq(env["_version"], [1, 0], "wsgi.version")
    check_eq(env["_multithread"], True, "wsgi.multithread with --threads 2")
    check_eq(env["_multiprocess"], True, "wsgi.multiprocess with --processes 2")
    check_eq(env["_run_once"], False, "wsgi.run_once")
    check(env["_errors_write"], "wsgi.errors has write()")
    for key in ("wsgi.input", "wsgi.errors", "wsgi.file_wrapper", "uwsgi.version", "uwsgi.node"):
        check(key in env["_types"], f"environ has {key}")
    check(env["_worker"] in (1, 2), f"uwsgi.worker_id() in a worker: {env['_worker']}")
    check_eq(env["_numproc"], 2, "uwsgi.numproc")
    check_eq(env["_opt"].get("module"), "pyapp", "uwsgi.opt['module']")
    check_eq(env["_opt"].get("processes"), "2", "uwsgi.opt['processes'] (bytes, as uWSGI)")
    check_eq(env["_env"], "from-env", "--env reached os.environ")
    check_eq(env["_cwd"], _shared["dir"], "--chdir")
    check_eq(env["_prefix"], "/usr", "sys.prefix is Debian's")


def test_body_honours_content_length_and_default_protocol():
    srv, addr = server()
    # No CONTENT_LENGTH: wsgi.input is empty; no SERVER_PROTOCOL: the status line says HTTP/1.0.
    reply = app_request(addr, "/environ", protocol=None)
    status, _, payload = split_reply(reply)
    check_eq(status, b"HTTP/1.0 200 OK", "status line without SERVER_PROTOCOL")
    env = json.loads(payload)
    check_eq(env["_body"], ["", ""], "empty wsgi.input")
    check_eq(env["wsgi.url_scheme"], "http", "url_scheme without HTTPS")


def test_raw_response_as_uwsgi():
    srv, addr = server()
    reply = app_request(addr, "/raw")
    check_eq(reply, b"HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nX-A: 1\r\nX-B: two words\r\n\r\n"
             b"part1,part2",
             "response bytes (headers as given, no Content-Length added)")


def test_write_callable():
    srv, addr = server()
    reply = app_request(addr, "/write")
    check_eq(reply, b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Mode: write\r\n\r\nwritten;returned",
             "write() then the iterable")


def test_close_is_called():
    srv, addr = server(validated=False)
    # Same worker process not guaranteed with 2 processes: count over several tries.
    for _ in range(4):
        reply = app_request(addr, "/close")
        check(reply.startswith(b"HTTP/1.1 500"), f"/close has no start_response: 500 expected, got {reply[:80]!r}")
    counts = set()
    for _ in range(6):
        _, _, body = split_reply(app_request(addr, "/closed"))
        counts.add(body)
    check(any(c != b"closed=0" for c in counts), f"close() of the iterable never ran: {counts}")


def test_errors_give_500_and_a_traceback():
    srv, addr = server(validated=False)
    for path, what in [("/raise", "RuntimeError: boom from the test app"), ("/raise-late", "ValueError: late failure"),
                       ("/no-start", "before calling start_response"), ("/str-body", "wants bytes")]:
        offset = srv.log_size()
        reply = app_request(addr, path)
        status, headers, body = split_reply(reply)
        check_eq(status, b"HTTP/1.1 500 Internal Server Error", f"{path}: status line")
        check(b"partial" not in body, f"{path}: no partial body after a failure: {reply!r}")
        check(srv.wait_log(what, timeout=3, offset=offset), f"{path}: log names the error ({what})")
    check(srv.wait_log(r"Traceback \(most recent call last\)", timeout=10), "a traceback is logged")
    # The worker survived all of it.
    check(app_request(addr, "/raw").startswith(b"HTTP/1.1 201"), "the worker still serves")


def test_exc_info_replaces_the_status():
    srv, addr = server()
    reply = app_request(addr, "/exc-info")
    check_eq(reply, b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nX-Second: 1\r\n\r\n"
             b"replaced", "start_response(exc_info)")


def test_file_wrapper():
    srv, addr = server()
    path = os.path.join(_shared["dir"], "blob.bin")
    data = bytes(range(256)) * 40 + b"tail"
    with open(path, "wb") as f:
        f.write(data)
    reply = app_request(addr, "/file", extra=[("QUERY_STRING", path)])
    status, headers, body = split_reply(reply)
    check_eq(status, b"HTTP/1.1 200 OK", "file_wrapper status")
    check_eq(body, data, "file_wrapper body")


def test_wsgi_file_callable_pythonpath_lazy():
    d = make_temp_dir("py-")
    lib = make_temp_dir("pylib-")
    write_app(lib, "libapp")
    with open(os.path.join(d, "entry.wsgi"), "w") as f:
        f.write("from libapp import other as app\n")
    port = free_port()
    with Server(["--socket", f"127.0.0.1:{port}", "--wsgi-file", os.path.join(d, "entry.wsgi"), "--callable", "app",
                 "--pythonpath", lib, "--lazy-apps", "--processes", "2"], workers=2) as srv:
        reply = app_request(("127.0.0.1", port), "/")
        check_eq(split_reply(reply)[2], b"the other callable", "--wsgi-file + --callable + --pythonpath + --lazy-apps")
        check(srv.wait_log("WSGI application loaded from file .* \\(--lazy-apps\\)", timeout=10),
              "lazy-apps loads in the workers")
    port = free_port()
    with Server(["--socket", f"127.0.0.1:{port}", "--module", "libapp:other", "--pythonpath", lib], workers=1):
        reply = app_request(("127.0.0.1", port), "/")
        check_eq(split_reply(reply)[2], b"the other callable", "--module NAME:callable")


def test_wsgi_file_runs_as_uwsgi_does():
    """--wsgi-file runs the file as uWSGI 2.0.21 does (checked against the real one): __name__ is
    uwsgi_file_ + the path given with '.' and '/' as '_' and no trailing "_py", __file__ is the path as
    given (relative here, with --chdir), the module is in sys.modules, and the file's directory is NOT
    put on sys.path (so a Django-style wsgi.py adds it itself, through __file__)."""
    d = make_temp_dir("py-")
    os.makedirs(os.path.join(d, "my-site", "conf"))
    with open(os.path.join(d, "my-site", "conf", "sibling.py"), "w") as f:
        f.write("VALUE = 'imported beside the wsgi file'\n")
    with open(os.path.join(d, "my-site", "conf", "wsgi.py"), "w") as f:
        f.write("""import os, sys, json
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sibling
INFO = {"name": __name__, "file": __file__, "in_modules": sys.modules.get(__name__) is not None,
        "sibling": sibling.VALUE, "path0": sys.path[0], "builtins": "__builtins__" in globals()}
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps(INFO).encode()]
""")
    port = free_port()
    with Server(["--socket", f"127.0.0.1:{port}", "--chdir", d, "--wsgi-file", "my-site/conf/wsgi.py"], workers=1):
        info = json.loads(split_reply(app_request(("127.0.0.1", port), "/"))[2])
    check_eq(info["name"], "uwsgi_file_my-site_conf_wsgi", "__name__ (uWSGI's: uwsgi_file_my-site_conf_wsgi)")
    check_eq(info["file"], "my-site/conf/wsgi.py", "__file__ is the path as given")
    check(info["in_modules"], "the module is in sys.modules under its name")
    check_eq(info["sibling"], "imported beside the wsgi file", "the file put its own directory on sys.path")
    check_eq(info["path0"], os.path.join(d, "my-site", "conf"), "sys.path[0] after the file's insert")
    check(info["builtins"], "the module has __builtins__")


def test_import_failure_exits_1():
    d = make_temp_dir("py-")
    with open(os.path.join(d, "broken.py"), "w") as f:
        f.write("import json\nraise ImportError('the broken test module')\n")
    port = free_port()
    rc, out, left = run_server_to_exit(["--socket", f"127.0.0.1:{port}", "--module", "broken", "--chdir", d],
                                       timeout=10)
    check_eq(rc, 1, f"exit status for a module that fails to import (output: {out[-2000:]})")
    check("module 'broken'" in out, f"the error names the module: {out[-2000:]}")
    check("Traceback" in out and "the broken test module" in out, f"the traceback is shown: {out[-2000:]}")
    check_eq(left, [], "nothing left running")
    rc, out, left = run_server_to_exit(["--socket", f"127.0.0.1:{port}", "--module", "no_such_module_xyz"],
                                       timeout=10)
    check_eq(rc, 1, "exit status for a missing module")
    check("ModuleNotFoundError" in out and "no_such_module_xyz" in out, f"missing module named: {out[-1500:]}")
    rc, out, left = run_server_to_exit(["--socket", f"127.0.0.1:{port}", "--module", "json", "--callable", "nope"],
                                       timeout=10)
    check_eq(rc, 1, "exit status for a missing callable")
    check("no callable 'nope'" in out, f"missing callable named: {out[-1500:]}")


def test_lazy_import_failure_stops_the_server():
    d = make_temp_dir("py-")
    with open(os.path.join(d, "broken.py"), "w") as f:
        f.write("raise RuntimeError('lazy broken')\n")
    port = free_port()
    rc, out, left = run_server_to_exit(["--socket", f"127.0.0.1:{port}", "--module", "broken", "--chdir", d,
                                        "--lazy-apps", "--processes", "2"], timeout=15)
    check(rc is not None and rc != 0, f"the server stops with a failure status (got {rc}): {out[-2000:]}")
    check("lazy broken" in out and "module 'broken'" in out, f"the worker logged the traceback: {out[-2000:]}")
    check("78" in out or "fatal" in out.lower(), f"the master saw the fatal-configuration exit: {out[-1500:]}")
    check_eq(left, [], "nothing left running")


if __name__ == "__main__":
    run_tests([test_environ_and_body, test_body_honours_content_length_and_default_protocol, test_raw_response_as_uwsgi,
               test_write_callable, test_close_is_called, test_errors_give_500_and_a_traceback,
               test_exc_info_replaces_the_status, test_file_wrapper, test_wsgi_file_callable_pythonpath_lazy, test_wsgi_file_runs_as_uwsgi_does,
               test_import_failure_exits_1, test_lazy_import_failure_stops_the_server], budget=120)
