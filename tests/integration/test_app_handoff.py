#!/usr/bin/env python3
"""Every worker saturated (issue 13, item 1): 2 workers with one application thread each, both held by
the app until the test releases them (release files: events, not timing).

- Cache gets (modifier1 111) on NEW --socket connections are all answered while both threads are held
  (a saturated worker keeps accepting when no worker has a free thread).
- Application requests sent meanwhile wait in the workers' shared queue, not behind one worker's busy
  thread: with worker B held all along, every one of them runs on worker A as A's thread frees, one
  after the other (a request kept in B's own queue would never run before B is released).
- An --http-socket keep-alive connection whose request was handed over stays with the worker that ran
  it: the next request on it is answered by that worker, on the same connection.
- A reload (--lazy-apps: the new workers load the application anew) never lets a new worker run a
  request the old ones queued: the old generation's queue is its own, and an old worker runs it with
  the old code while it stops.
"""
import http.client
import os
import signal
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Server, check, check_eq, free_port, magic_get, magic_set, make_temp_dir, replace_file,
                     request, run_tests, wait_until, wsgi_req)
from test_stats import read_stats

# /hold/NAME publishes its worker's pid as "pid-NAME" and counts itself in "held" (the test's signal
# that it runs), then waits for the file release-NAME (bounded: 30 s). Every reply: "PID VERSION", the
# version read from the file "version" when the application is loaded.
APP = r'''
import os, time, uwsgi
HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "version")) as f:
    VERSION = f.read().strip()
def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path.startswith("/hold/"):
        name = path[len("/hold/"):]
        uwsgi.cache_update("pid-" + name, str(os.getpid()).encode())
        uwsgi.cache_inc("held")
        release = os.path.join(HERE, "release-" + name)
        for _ in range(3000):
            if os.path.exists(release):
                break
            time.sleep(0.01)
    body = ("%d %s" % (os.getpid(), VERSION)).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''

CACHE_GETS = 200
QUEUED = 4


class Setup:
    def __init__(self, extra=()):
        self.dir = make_temp_dir("handoff-")
        with open(os.path.join(self.dir, "handoff_app.py"), "w") as f:
            f.write(APP)
        self.set_version("v1")
        port, hport, sport = free_port(), free_port(), free_port()
        self.addr, self.haddr, self.saddr = ("127.0.0.1", port), ("127.0.0.1", hport), ("127.0.0.1", sport)
        self.args = ["--socket", f"127.0.0.1:{port}", "--http-socket", f"127.0.0.1:{hport}", "--stats",
                     f"127.0.0.1:{sport}", "--module", "handoff_app", "--chdir", self.dir, "--processes", "2",
                     "--cache2", "name=default,items=1000"] + list(extra)
        self.replies = {}
        self.threads = []

    def set_version(self, version):
        # whole, renamed into place: with --lazy-apps a worker that starts reads it while it loads the app
        replace_file(os.path.join(self.dir, "version"), version)

    def counters(self, key):
        """{pid: the worker's stats counter `key`} (handed_off, handed_in)."""
        return {w["pid"]: w[key] for w in read_stats(self.saddr)["workers"] if w["pid"]}

    def body(self, name):
        reply, how = self.replies[name]
        return reply.split(b"\r\n\r\n", 1)[1] if how == "eof" else None

    def held(self):
        raw = magic_get(self.addr, "held")
        return 0 if raw is None else int.from_bytes(raw, "little")

    def pid_of(self, name):
        raw = magic_get(self.addr, "pid-" + name)
        return None if raw is None else int(raw)

    def app_get(self, path):
        reply, how = request(self.addr, wsgi_req(path), timeout=20)
        check(how == "eof" and reply.startswith(b"HTTP/1.1 200"), f"{path}: {reply[:80]!r} ({how})")
        return reply.split(b"\r\n\r\n", 1)[1]

    def release(self, name):
        with open(os.path.join(self.dir, "release-" + name), "w"):
            pass

    def send(self, name):
        def run():
            self.replies[name] = request(self.addr, wsgi_req("/hold/" + name), timeout=40)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        self.threads.append(t)

    def hold_both(self, srv):
        """/hold/a and /hold/b running, one on each worker: (pid of a's worker, pid of b's)."""
        self.send("a")
        self.send("b")
        check(wait_until(lambda: self.held() >= 2, 10.0), f"both workers' threads held: {self.held()}")
        pa, pb = self.pid_of("a"), self.pid_of("b")
        check(pa != pb and {pa, pb} <= set(srv.workers()), f"held on {pa} and {pb}, workers {srv.workers()}")
        return pa, pb

    def finish(self):
        for name in ["a", "b", "q"] + [f"q{i}" for i in range(QUEUED)]:
            self.release(name)
        for t in self.threads:
            t.join(timeout=40)

    def check_replies(self, names):
        check(wait_until(lambda: all(name in self.replies for name in names), 20.0), f"replies to {names}")
        for name in names:
            reply, how = self.replies.get(name, (b"", "missing"))
            check(how == "eof" and reply.startswith(b"HTTP/1.1 200"), f"/hold/{name}: {reply[:80]!r} ({how})")


def test_cache_on_new_connections_and_queued_requests_while_all_saturated():
    s = Setup()
    with Server(s.args, workers=2) as srv:
        check(magic_set(s.addr, "k", "v"), "set")
        try:
            pa, pb = s.hold_both(srv)
            for i in range(QUEUED):
                s.send(f"q{i}")
            check(wait_until(lambda: sum(s.counters("handed_off").values()) == QUEUED, 10.0),
                  f"requests in the shared queue: {s.counters('handed_off')}")
            for _ in range(CACHE_GETS):
                check(magic_get(s.addr, "k", timeout=10) == b"v", "get on a new connection, every worker saturated")
            check_eq((s.held(), sorted(s.replies)), (2, []), "requests in the app and replies after the gets")
            # Worker A frees: the queued requests run on it one after the other while B stays held.
            s.release("a")
            ran = set()
            for n in range(QUEUED):
                check(wait_until(lambda: s.held() >= 3 + n, 10.0), f"queued request {n + 1} did not start on A")
                started = {f"q{i}" for i in range(QUEUED) if s.pid_of(f"q{i}") is not None} - ran
                check_eq(len(started), 1, f"queued requests newly running: {started}")
                name = started.pop()
                check_eq(s.pid_of(name), pa, f"worker that ran {name} (A {pa}, B {pb} still held)")
                ran.add(name)
                s.release(name)
            check("b" not in s.replies and s.held() == 2 + QUEUED, "B still held")
            check_eq(s.counters("handed_in").get(pa), QUEUED, "requests A took from the queue")
            s.check_replies(sorted(ran) + ["a"])
        finally:
            s.finish()
        s.check_replies(["b"])


def test_http_keep_alive_connection_moves_with_its_request():
    s = Setup()
    with Server(s.args, workers=2) as srv:
        try:
            pa, _ = s.hold_both(srv)
            conn = http.client.HTTPConnection(*s.haddr, timeout=30)
            got = {}
            sent = threading.Event()

            def first():
                conn.request("GET", "/pid")
                sent.set()
                resp = conn.getresponse()
                got["first"] = (resp.status, resp.read(), resp.will_close)
            t = threading.Thread(target=first, daemon=True)
            t.start()
            check(sent.wait(10), "the HTTP request was not sent")
            # Queued behind both held threads: cache gets on new connections still answer, the HTTP
            # request does not until A frees.
            for _ in range(20):
                check(magic_get(s.addr, "held") is not None, "cache get while saturated")
            check("first" not in got, "the HTTP request ran while every thread was held")
            sock = conn.sock
            s.release("a")
            t.join(timeout=20)
            check_eq(got.get("first"), (200, b"%d v1" % pa, False), "first request: status, pid, kept alive")
            conn.request("GET", "/pid")
            resp = conn.getresponse()
            check_eq((resp.status, resp.read(), conn.sock is sock), (200, b"%d v1" % pa, True),
                     "second request on the kept connection: status, pid (the worker it moved to), same socket")
            check("b" not in s.replies, "B still held")
            conn.close()
        finally:
            s.finish()
        s.check_replies(["a", "b"])


def test_reload_keeps_each_generation_to_its_own_queue():
    s = Setup(["--lazy-apps"])
    with Server(s.args, workers=2) as srv:
        try:
            pa, pb = s.hold_both(srv)
            s.release("q")  # runs straight through once it starts
            s.send("q")
            check(wait_until(lambda: sum(s.counters("handed_off").values()) == 1, 10.0), "q in the shared queue")
            s.set_version("v2")
            os.kill(srv.pid, signal.SIGHUP)
            # The second replacement starts once the first is ready: a new worker has been free a while
            # (it would have taken q from a shared queue at once).
            check(wait_until(lambda: len(set(srv.workers()) - {pa, pb}) >= 2, 20.0),
                  f"replacements started: {srv.workers()}")
            check("q" not in s.replies, "q ran while both old workers were held")
            s.release("a")
            s.release("b")
            s.check_replies(["a", "b", "q"])
            pid, version = s.body("q").split()
            check(int(pid) in (pa, pb) and version == b"v1", f"q ran on {s.body('q')!r}: an old worker, old code")
            check(wait_until(lambda: s.app_get("/pid").endswith(b"v2"), 20.0), "the new workers run v2")
        finally:
            s.finish()


if __name__ == "__main__":
    run_tests([test_cache_on_new_connections_and_queued_requests_while_all_saturated,
               test_http_keep_alive_connection_moves_with_its_request,
               test_reload_keeps_each_generation_to_its_own_queue], budget=90)
