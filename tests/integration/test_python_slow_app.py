#!/usr/bin/env python3
"""A slow hosted application must not stall cache requests on the same worker: with --processes 1
--threads 2, both application threads are held asleep (in Python, GIL released by time.sleep) until the
test releases them, and every cache get (modifier1 111) made meanwhile must be answered, correctly,
while they are still held: a worker whose loop waited for the application would answer none. The get
latencies are printed (docs/python.md quotes them). Also: a third app request waits for a free thread
(it is queued, not refused), and the app's own uwsgi.cache_* calls from the held threads work."""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (wsgi_req, Server, check, check_eq, free_port, magic_get, magic_set, make_temp_dir, request,
                     run_tests, wait_until)

# /sleep counts itself in the cache (the test's signal that a thread is held), then naps until the test
# creates the release file (bounded: 30 s).
APP = r'''
import os, time, uwsgi
RELEASE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "release")
def application(environ, start_response):
    if environ["PATH_INFO"] == "/sleep":
        uwsgi.cache_inc("sleeps")
        for _ in range(3000):
            if os.path.exists(RELEASE):
                break
            time.sleep(0.01)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"slept %d" % uwsgi.cache_num("sleeps")]
'''


def app_request(addr, path):
    return request(addr, wsgi_req(path), timeout=35)


def percentile(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))]


def sleeps(addr):
    """How many /sleep requests have entered the application (uwsgi.cache_inc: a 64-bit integer)."""
    raw = magic_get(addr, "sleeps")
    return 0 if raw is None else int.from_bytes(raw, "little")


def test_cache_requests_not_stalled_by_a_sleeping_app():
    d = make_temp_dir("slow-")
    with open(os.path.join(d, "slowapp.py"), "w") as f:
        f.write(APP)
    release = os.path.join(d, "release")
    port = free_port()
    addr = ("127.0.0.1", port)
    with Server(["--socket", f"127.0.0.1:{port}", "--module", "slowapp", "--chdir", d, "--processes", "1",
                 "--threads", "2", "--cache2", "name=default,items=1000"], workers=1):
        check(magic_set(addr, "k", "v"), "set")
        baseline = []
        for _ in range(200):
            t0 = time.perf_counter()
            check(magic_get(addr, "k") == b"v", "get")
            baseline.append(time.perf_counter() - t0)

        app_replies = []
        sleepers = [threading.Thread(target=lambda: app_replies.append(app_request(addr, "/sleep")), daemon=True)
                    for _ in range(3)]  # 3 > 2 threads: one waits for a free thread
        try:
            for t in sleepers:
                t.start()
            check(wait_until(lambda: sleeps(addr) >= 2, 10.0), f"the two app threads did not start: {sleeps(addr)}")
            busy = []
            for _ in range(500):
                t0 = time.perf_counter()
                check(magic_get(addr, "k") == b"v", "get while the app threads are held")
                busy.append(time.perf_counter() - t0)
            # still held: nothing answered, and the third request has not entered the app
            check_eq((len(app_replies), sleeps(addr)), (0, 2), "app replies and requests inside the app after the gets")
        finally:
            with open(release, "w"):
                pass
            for t in sleepers:
                t.join(timeout=40)
        p50b, p99b = percentile(baseline, 0.5) * 1e3, percentile(baseline, 0.99) * 1e3
        p50, p99, worst = percentile(busy, 0.5) * 1e3, percentile(busy, 0.99) * 1e3, max(busy) * 1e3
        print(f"cache get latency, idle app: p50 {p50b:.3f} ms, p99 {p99b:.3f} ms ({len(baseline)} gets)")
        print(f"cache get latency, both app threads held asleep: p50 {p50:.3f} ms, p99 {p99:.3f} ms, "
              f"max {worst:.3f} ms ({len(busy)} gets)")
        check_eq(len(app_replies), 3, "app requests answered once released")
        bad = [(r[:60], how) for r, how in app_replies if not (how == "eof" and r.startswith(b"HTTP/1.1 200"))]
        check(not bad, f"every app request answered 200 (the third queued, not refused): {bad!r}")
        check_eq(sleeps(addr), 3, "requests that went through the app")


if __name__ == "__main__":
    run_tests([test_cache_requests_not_stalled_by_a_sleeping_app], budget=60)
