"""--harakiri N: a worker stuck on one request for more than N seconds is logged (naming the request),
killed (SIGTERM, then SIGKILL) and respawned, and the server keeps serving. The stuck request is the
demo app's /sleep/<ms>, which blocks its worker's loop."""

import json
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Server, app_get, app_req, check, check_eq, connect, free_port, in_thread,  # noqa: E402
                     make_temp_dir, magic_get, magic_set, read_reply, request, run_tests, start_hosted, tcp_accepted,
                     wait_until, wsgi_req)


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
                            timeout=10.0, offset=off)
        check(line, f"no HARAKIRI line naming pid {victim} and the request:\n{srv.log_since(off)}")
        check(srv.wait_log(r"\*\*\* HARAKIRI ON WORKER 1 \(pid: %d, try: 1\) \*\*\*" % victim, 10.0, offset=off),
              f"no uWSGI harakiri line:\n{srv.log_since(off)}")
        fresh = wait_until(lambda: (lambda w: w if len(w) == 1 and victim not in w else None)(srv.workers()), 10.0)
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


HOLD_APP = """
import os, time
def application(environ, start_response):
    open(os.path.join(os.path.dirname(__file__), "started"), "w").close()
    time.sleep(20)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"too late"]
"""


def test_hosted_app_stuck_beside_cache_traffic():
    # The default --threads: the stuck request runs on the loop's thread, whose loop the standby takes
    # over, so the same worker answers cache gets meanwhile; those must neither wait for the request nor
    # hide it from harakiri (a cache request used to clear the worker's published start).
    d = make_temp_dir("harakiri-")
    with open(os.path.join(d, "hold_app.py"), "w") as f:
        f.write(HOLD_APP)
    port = free_port()
    addr = ("127.0.0.1", port)
    srv = start_hosted(["--socket", f"127.0.0.1:{port}", "--processes", "1", "--cache", "100", "--harakiri", "1",
                        "--module", "hold_app", "--chdir", d], 1, [addr])
    try:
        (victim,) = srv.workers()
        check(magic_set(addr, "k", "v"), "set before")
        off = srv.log_size()
        s = connect(addr, 3.0)
        s.sendall(wsgi_req("/hold"))
        stuck, _ = in_thread(read_reply, s, 15.0)
        check(wait_until(lambda: os.path.exists(os.path.join(d, "started")), 5.0), "the app never started")
        gets = 0
        line = None
        # The HARAKIRI line ends it (1 s limit, checked every 100 ms); bounded in count and time.
        deadline = time.monotonic() + 10.0
        while gets < 100000 and time.monotonic() < deadline:
            check_eq(magic_get(addr, "k"), b"v", "get while the worker's application request is stuck")
            gets += 1
            line = srv.wait_log(r"HARAKIRI: worker 1 \(pid %d\) stuck for \d+ s on request \"/hold\"" % victim,
                                timeout=0, offset=off)
            if line:
                break
        print(f"{gets} cache gets answered by the stuck worker before its HARAKIRI line")
        check(line, f"no HARAKIRI line for the stuck request after {gets} cache gets:\n{srv.log_since(off)}")
        stuck.join(10.0)
        s.close()
        check(not stuck.is_alive(), "the stuck request was never cut")
        fresh = wait_until(lambda: (lambda w: w if len(w) == 1 and victim not in w else None)(srv.workers()), 5.0)
        check(fresh, f"no new worker after harakiri: {srv.workers()}")
        check_eq(magic_get(addr, "k"), b"v", "cache after harakiri")
    except BaseException as e:
        srv.dump_log(f"server log (test failed: {type(e).__name__})")
        raise
    finally:
        srv.kill_all()


if __name__ == "__main__":
    run_tests([test_stuck_worker_is_killed_and_respawned, test_fast_requests_are_left_alone,
               test_cache_requests_on_other_workers_continue, test_hosted_app_stuck_beside_cache_traffic])
