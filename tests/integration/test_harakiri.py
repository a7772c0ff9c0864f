"""--harakiri N: a worker stuck on one request for more than N seconds is logged (naming the request),
killed (SIGTERM, then SIGKILL) and respawned, and the server keeps serving. The stuck request is the
demo app's /sleep/<ms>, which blocks its worker's loop."""

import json
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Server, app_get, app_req, check, check_eq, connect, free_port, in_thread, magic_get,  # noqa: E402
                     magic_set, read_reply, request, run_tests, tcp_accepted, wait_until)


def harakiri_count(stats_port):
    """Worker 1's harakiri_count in the stats JSON."""
    with connect(("127.0.0.1", stats_port)) as s:
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    (worker,) = [w for w in json.loads(data)["workers"] if w["id"] == 1]
    return worker["harakiri_count"]


def test_stuck_worker_is_killed_and_respawned():
    port, stats = free_port(), free_port()
    addr = ("127.0.0.1", port)
    srv = Server(["--socket", f"127.0.0.1:{port}", "--processes", "1", "--cache", "100", "--harakiri", "1",
                  "--stats", f"127.0.0.1:{stats}"], workers=1, ready_addrs=[addr])
    with srv:
        check(magic_set(addr, "k", "survives harakiri"), "set before")
        check_eq(harakiri_count(stats), 0, "harakiri_count before")
        (victim,) = srv.workers()
        off = srv.log_size()
        t0 = time.monotonic()
        reply, how = request(addr, app_req("/sleep/20000"), timeout=10.0)
        waited = time.monotonic() - t0
        print(f"stuck request ended after {waited:.2f}s: {how} {reply[:60]!r}")
        check(how in ("eof", "reset") and not reply.startswith(b"HTTP/1.1 200"),
              f"the stuck request was answered instead of cut: {how} {reply[:80]!r}")
        # harakiri 1 s, checked every 100 ms, SIGKILL 2 s after SIGTERM: well under 6 s, far from 20 s
        check(waited < 6.0, f"the stuck worker was killed only after {waited:.1f}s")
        line = srv.wait_log(r"HARAKIRI: worker 1 \(pid %d\) stuck for \d+ s on request \"/sleep/20000\"" % victim,
                            timeout=3.0, offset=off)
        check(line, f"no HARAKIRI line naming pid {victim} and the request:\n{srv.log_since(off)}")
        check(srv.wait_log(r"\*\*\* HARAKIRI ON WORKER 1 \(pid: %d, try: 1\) \*\*\*" % victim, 1.0, offset=off),
              f"no uWSGI harakiri line:\n{srv.log_since(off)}")
        fresh = wait_until(lambda: (lambda w: w if len(w) == 1 and victim not in w else None)(srv.workers()), 3.0)
        check(fresh, f"no new worker after harakiri: {srv.workers()}")
        check_eq(magic_get(addr, "k"), b"survives harakiri", "cache after harakiri")
        check_eq(harakiri_count(stats), 1, "harakiri_count of worker 1 in the stats JSON after the kill")
        app_get(addr)
        check_eq(srv.stop(), 0, "exit status after SIGTERM")


def test_fast_requests_are_left_alone():
    port = free_port()
    addr = ("127.0.0.1", port)
    srv = Server(["--socket", f"127.0.0.1:{port}", "--processes", "1", "--cache", "100", "--harakiri", "2"],
                 workers=1)
    with srv:
        (worker,) = srv.workers()
        reply, how = request(addr, app_req("/sleep/500"), timeout=5.0)
        check(how == "eof" and reply.startswith(b"HTTP/1.1 200"), f"a 0.5 s request was cut: {how} {reply[:80]!r}")
        for _ in range(20):
            app_get(addr)
        time.sleep(2.5)  # past the harakiri limit while idle: an idle worker is never killed
        check_eq(srv.workers(), [worker], "worker pid after idle time past --harakiri")
        check("HARAKIRI" not in srv.log(), "a HARAKIRI line without a stuck request")
        check_eq(srv.stop(), 0, "exit status after SIGTERM")


def test_cache_requests_on_other_workers_continue():
    port = free_port()
    addr = ("127.0.0.1", port)
    srv = Server(["--socket", f"127.0.0.1:{port}", "--processes", "2", "--cache", "100", "--harakiri", "1"],
                 workers=2)
    with srv:
        check(magic_set(addr, "k", "v"), "set before")
        s = connect(addr, 3.0)
        s.sendall(app_req("/sleep/20000"))
        check(wait_until(lambda: tcp_accepted(s), 5.0), "the stuck request was not accepted within 5 s")
        stuck, _ = in_thread(read_reply, s, 10.0)  # one worker is stuck on it from here on
        t0 = time.monotonic()
        for _ in range(50):  # the other worker serves meanwhile
            check_eq(magic_get(addr, "k"), b"v", "get while a worker is stuck")
        check(time.monotonic() - t0 < 3.0, "cache requests stalled while one worker was stuck")
        stuck.join(10.0)
        s.close()
        check(not stuck.is_alive(), "the stuck request never ended")
        check_eq(srv.stop(), 0, "exit status after SIGTERM")


if __name__ == "__main__":
    run_tests([test_stuck_worker_is_killed_and_respawned, test_fast_requests_are_left_alone,
               test_cache_requests_on_other_workers_continue])
