#!/usr/bin/env python3
"""Cache requests while every worker's application threads are busy (issue 13, item 1).

2 workers, default --threads (1), an app that sleeps APP_MS (default 100) per request, kept saturated by
SATURATORS (default 8) clients looping on it; meanwhile one client makes cache gets one after the other
(a) each on a new connection to the --socket (how nginx's uwsgi_pass and uWSGI's clients talk) and
(b) on one kept --persistent-socket connection. Prints get latency p50/p99/max per case, idle and
saturated, and the app requests/s (with how many workers served them).
A/B in one run: BASELINE=another build of ours (e.g. main's) runs the same cases right after ours.
Usage: /usr/bin/python3 bench/saturated_cache.py [SERVER_BIN]   (env: BASELINE, APP_MS, SATURATORS,
       GETS=200; SERVER_BIN also from the environment, default build/bin/server)"""
import os
import socket
import struct
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import harness  # noqa: E402
from harness import Server, free_port, magic_get, magic_set, make_temp_dir, packet, request, wsgi_req  # noqa: E402

APP_MS = int(os.environ.get("APP_MS", "100"))
SATURATORS = int(os.environ.get("SATURATORS", "8"))
GETS = int(os.environ.get("GETS", "200"))
BASELINE = os.environ.get("BASELINE", "")
WINDOW_S = 10.0
APP = f'''
import os, time
def application(environ, start_response):
    time.sleep({APP_MS / 1000.0})
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]
'''


def read_exact(s, n):
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise EOFError("closed")
        data += chunk
    return data


def persistent_get(s, key):
    s.sendall(packet(111, 0, key.encode()))
    _, length, _ = struct.unpack("<BHB", read_exact(s, 4))
    return read_exact(s, length)


def stats(samples):
    s = sorted(samples)
    return (f"p50 {s[len(s) // 2] * 1e3:7.3f} ms  p99 {s[min(len(s) - 1, int(len(s) * 0.99))] * 1e3:7.3f} ms  "
            f"max {s[-1] * 1e3:7.3f} ms")


def measure(addr, paddr):
    fresh, kept = [], []
    with socket.create_connection(paddr) as s:
        for _ in range(GETS):
            t0 = time.perf_counter()
            assert magic_get(addr, "k", timeout=30) == b"v"
            fresh.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            assert persistent_get(s, "k") == b"v"
            kept.append(time.perf_counter() - t0)
    return fresh, kept


def run(label):
    d = make_temp_dir("satbench-")
    with open(os.path.join(d, "sat_app.py"), "w") as f:
        f.write(APP)
    port, pport = free_port(), free_port()
    addr, paddr = ("127.0.0.1", port), ("127.0.0.1", pport)
    with Server(["--socket", f"127.0.0.1:{port}", "--persistent-socket", f"127.0.0.1:{pport}", "--module", "sat_app",
                 "--chdir", d, "--processes", "2", "--cache2", "name=default,items=1000"], workers=2):
        assert magic_set(addr, "k", "v")
        fresh, kept = measure(addr, paddr)
        print(f"{label:5} idle       new connection: {stats(fresh)}")
        print(f"{label:5} idle       kept connection: {stats(kept)}")
        stop = threading.Event()
        served = []

        def saturate():
            while not stop.is_set():  # what nginx's uwsgi_params send (the harness checks apps by PEP 3333)
                reply, how = request(addr, wsgi_req("/"), timeout=30)
                ok = how == "eof" and reply.startswith(b"HTTP/1.1 200")
                served.append(reply.split(b"\r\n\r\n", 1)[1] if ok else None)
        pool = [threading.Thread(target=saturate, daemon=True) for _ in range(SATURATORS)]
        for t in pool:
            t.start()
        time.sleep(3 * APP_MS / 1000.0)  # a bench, not a test: let the saturators fill both workers
        t0 = time.monotonic()
        n0 = len(served)
        fresh, kept = measure(addr, paddr)
        # The app's rate over at least WINDOW_S (fast gets end sooner: a few requests would decide it).
        time.sleep(max(0.0, t0 + WINDOW_S - time.monotonic()))
        elapsed = time.monotonic() - t0
        n1 = len(served)
        stop.set()
        for t in pool:
            t.join(timeout=30)
        window = served[n0:n1]
        print(f"{label:5} saturated  new connection: {stats(fresh)}")
        print(f"{label:5} saturated  kept connection: {stats(kept)}")
        print(f"{label:5} app requests during the saturated gets ({elapsed:.1f} s): {len(window) / elapsed:.1f}/s "
              f"(ideal {2 * 1000.0 / APP_MS:.1f}/s) from {len(set(window) - {None})} worker(s), "
              f"all ok: {None not in served}")


def main():
    if len(sys.argv) > 1:
        harness.SERVER_BIN = os.path.abspath(sys.argv[1])
    ours = harness.SERVER_BIN
    print(f"ours: {ours}" + (f"\nbase: {BASELINE}" if BASELINE else ""))
    run("ours")
    if BASELINE:
        harness.SERVER_BIN = BASELINE
        run("base")
        harness.SERVER_BIN = ours


if __name__ == "__main__":
    main()
