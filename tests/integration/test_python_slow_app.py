#!/usr/bin/env python3
"""A slow hosted application (sleeps 1 s per request, in Python, GIL released by time.sleep) must not
stall cache requests on the same worker: with --processes 1 --threads 2, both application threads
are kept asleep while cache gets (modifier1 111) are timed; their p99 must stay far below the sleep.
Also: a third app request waits for a free thread (it is queued, not refused), and the app's own
uwsgi.cache_* calls from the sleeping threads still work."""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Server, check, free_port, magic_get, magic_set, make_temp_dir, packet, request, run_tests,
                     vars_block)

APP = r'''
import time, uwsgi
def application(environ, start_response):
    if environ["PATH_INFO"] == "/sleep":
        uwsgi.cache_inc("sleeps")
        time.sleep(1)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"slept %d" % uwsgi.cache_num("sleeps")]
'''


def app_request(addr, path):
    pairs = [("REQUEST_METHOD", "GET"), ("PATH_INFO", path), ("SERVER_PROTOCOL", "HTTP/1.1")]
    return request(addr, packet(0, 0, vars_block(pairs)), timeout=10)


def percentile(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * p))]


def test_cache_requests_not_stalled_by_a_sleeping_app():
    d = make_temp_dir("slow-")
    with open(os.path.join(d, "slowapp.py"), "w") as f:
        f.write(APP)
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

        stop = threading.Event()
        app_replies = []

        def keep_sleeping():
            while not stop.is_set():
                app_replies.append(app_request(addr, "/sleep"))

        sleepers = [threading.Thread(target=keep_sleeping, daemon=True) for _ in range(3)]  # 3 > 2 threads
        for t in sleepers:
            t.start()
        time.sleep(0.2)  # both application threads are now asleep
        busy = []
        deadline = time.monotonic() + 2.5
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            check(magic_get(addr, "k") == b"v", "get while the app sleeps")
            busy.append(time.perf_counter() - t0)
            time.sleep(0.002)
        stop.set()
        for t in sleepers:
            t.join(timeout=5)
        p50b, p99b = percentile(baseline, 0.5) * 1e3, percentile(baseline, 0.99) * 1e3
        p50, p99, worst = percentile(busy, 0.5) * 1e3, percentile(busy, 0.99) * 1e3, max(busy) * 1e3
        print(f"cache get latency, idle app: p50 {p50b:.3f} ms, p99 {p99b:.3f} ms ({len(baseline)} gets)")
        print(f"cache get latency, both app threads asleep: p50 {p50:.3f} ms, p99 {p99:.3f} ms, max {worst:.3f} ms "
              f"({len(busy)} gets, {len(app_replies)} app requests answered)")
        check(p99 < 50, f"cache p99 {p99:.1f} ms while the app sleeps: the worker's loop is stalled")
        check(len(busy) > 300, f"only {len(busy)} cache gets in 2.5 s")
        ok = [r for r, how in app_replies if how == "eof" and r.startswith(b"HTTP/1.1 200")]
        check(len(ok) >= 4, f"the sleeping requests were answered ({len(ok)} of {len(app_replies)}): "
              f"{app_replies[:3]!r}")
        check(len(ok) == len(app_replies), f"every app request answered 200: {app_replies!r}"[:500])


if __name__ == "__main__":
    run_tests([test_cache_requests_not_stalled_by_a_sleeping_app], budget=60)
