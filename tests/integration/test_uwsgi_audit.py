"""Options of real uWSGI deployments (issue 11, ../shared/reference/real-world-options.md) whose effect no
other test showed: a positional configuration file (`server uwsgi.ini`, with `log-date = true`), --worker-reload-mercy bounding
how long a stopping worker waits for its requests, --static-gzip-dir, one WARNING for each option that
is accepted with no effect (and the server serves), --log-route refused. Waits are for events (a log
line, an exit, a reply), never sleeps."""

import gzip
import http.client
import os
import signal
import sys
import threading

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Server, hold_app_server, app_get, check, check_eq, connect, free_port, make_temp_dir,  # noqa: E402
                     read_reply, request, run_server_to_exit, run_tests, tcp_accepted, wait_until, write_hold_app,
                     wsgi_req)

def test_positional_config_file():
    tmp = make_temp_dir("positional-")
    port = free_port()
    write_hold_app(tmp, "app")
    ini = os.path.join(tmp, "uwsgi.ini")
    with open(ini, "w") as f:
        # log-date = true: as 4 real files have it (it once failed as an unknown "plugin")
        f.write(f"[uwsgi]\nsocket = 127.0.0.1:{port}\nchdir = %d\nwsgi-file = app.py\nprocesses = 2\n"
                "log-date = true\n")
    with Server([ini], workers=2, ready_addrs=[("127.0.0.1", port)]) as srv:
        reply, how = request(("127.0.0.1", port), wsgi_req("/"), 5.0)
        check(reply.startswith(b"HTTP/1.1 200") and reply.endswith(b"ok"), f"served from `server uwsgi.ini`: {reply!r}")
        check_eq(srv.stop(), 0, "exit status")


def test_worker_reload_mercy():
    """A stop waits for in-flight requests only --worker-reload-mercy seconds, then closes them."""
    srv, addr, started, release = hold_app_server(["--processes", "1", "--worker-reload-mercy", "1"], 1, "mercy-")
    with srv:
        held = []
        thread = threading.Thread(target=lambda: held.append(request(addr, wsgi_req("/hold"), 25.0)), daemon=True)
        thread.start()
        check(wait_until(lambda: os.path.exists(started), 10.0), "the held request never reached the application")
        off = srv.log_size()
        srv.send_signal(signal.SIGTERM)
        check(srv.wait_log(r"graceful stop: waiting up to 1 s for workers to finish", 10.0, offset=off),
              f"no mercy line:\n{srv.log_since(off)}")
        # The worker gives up at the same moment as the master, which kills it: either line may come first
        # (the worker's count: test_a_stopping_worker_counts_the_requests_it_cuts).
        cut = srv.wait_log(r"worker 1: \d+ request\(s\) still in flight after 1 s|worker 1 \(pid \d+\) did not stop in "
                           r"time: SIGKILL", 10.0, offset=off)
        check(cut, f"the held request was not cut:\n{srv.log_since(off)}")
        if "in flight" in cut.group(0):
            check_eq(cut.group(0).split(": ")[1].split()[0], "1", "the count of requests cut")
        check_eq(srv.wait_exit(10.0), 0, "exit status after the mercy ran out")
        open(release, "w").close()
        thread.join(10)
        check(held and not held[0][0].endswith(b"ok"), f"the held request was answered after the mercy: {held}")


def test_a_stopping_worker_counts_the_requests_it_cuts():
    """A worker told to stop (SIGTERM to the worker alone: no master deadline races its own) cuts its
    request after --worker-reload-mercy and says how many it cut, whichever way the request came: in two
    parts (the worker accepted the connection on the first, TCP_DEFER_ACCEPT, and waited on it for the
    rest) or whole with its connection (dispatched at once, never waited on: this once logged "0
    request(s) still in flight", seen in a fresh clone's ./test.sh)."""
    for how in ("in two parts", "whole"):
        srv, addr, started, release = hold_app_server(["--processes", "1", "--worker-reload-mercy", "1"], 1,
                                                      "mercy-")
        with srv:
            (worker,) = srv.workers()
            client = connect(addr, 5.0)
            packet = wsgi_req("/hold")
            if how == "in two parts":
                client.sendall(packet[:4])
                check(wait_until(lambda: tcp_accepted(client), 10.0), f"{how}: the worker accepted")
                client.sendall(packet[4:])
            else:
                client.sendall(packet)
            check(wait_until(lambda: os.path.exists(started), 10.0), f"{how}: the held request reached the app")
            off = srv.log_size()
            os.kill(worker, signal.SIGTERM)
            cut = srv.wait_log(r"worker 1: \d+ request\(s\) still in flight after 1 s", 10.0, offset=off)
            check(cut, f"{how}: the worker did not cut the held request:\n{srv.log_since(off)}")
            check_eq(cut.group(0).split(": ")[1].split()[0], "1", f"{how}: the count of requests cut")
            reply, _ = read_reply(client, 10.0)
            client.close()
            check(not reply.endswith(b"ok"), f"{how}: the held request was answered after the mercy: {reply!r}")
            os.remove(started)
            check(srv.wait_workers(1, timeout=10, exclude=[worker]), f"{how}: a new worker replaces it")
            open(release, "w").close()  # the old worker's application thread, if it still runs, ends


def test_static_gzip_dir():
    tmp = make_temp_dir("gzipdir-")
    for sub in ("zipped", "plain"):
        os.makedirs(os.path.join(tmp, sub))
        with open(os.path.join(tmp, sub, "a.css"), "w") as f:
            f.write("body { color: red }\n")
        with open(os.path.join(tmp, sub, "a.css.gz"), "wb") as f:
            f.write(gzip.compress(b"body { color: red }\n"))
    port = free_port()
    with Server(["--http-socket", f"127.0.0.1:{port}", "--static-map", f"/z={tmp}/zipped",
                 "--static-map", f"/p={tmp}/plain", "--static-gzip-dir", f"{tmp}/zipped/"], workers=1) as srv:
        for path, want in (("/z/a.css", "gzip"), ("/p/a.css", None)):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", path, headers={"Accept-Encoding": "gzip"})
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
            check_eq((resp.status, resp.getheader("Content-Encoding")), (200, want), f"{path} with --static-gzip-dir")
            check_eq(gzip.decompress(body) if want else body, b"body { color: red }\n", f"{path} content")
        check_eq(srv.stop(), 0, "exit status")


# Every option of the reference list accepted with no effect, with a value of a real configuration (log-date
# now works: test_request_log.py).
ACCEPTED = [["--thunder-lock"], ["--enable-threads"], ["--single-interpreter"], ["--die-on-term"], ["--need-app"],
            ["--plugins", "python3"], ["--offload-threads", "2"], ["--no-orphans"], ["--ignore-sigpipe"],
            ["--ignore-write-errors"], ["--disable-write-exception"], ["--py-call-osafterfork"], ["--close-on-exec"],
            ["--http-keepalive", "1"], ["--http-timeout", "300"], ["--http-auto-chunked"],
            ["--log-master"], ["--cheaper-busyness-max", "50"], ["--cheaper-busyness-min", "25"],
            ["--cheaper-busyness-multiplier", "20"], ["--cheaper-rss-limit-soft", "134217728"],
            ["--no-threads-wait"]]


def test_accepted_options_warn_once():
    port = free_port()
    args = ["--socket", f"127.0.0.1:{port}"] + [word for option in ACCEPTED for word in option]
    with Server(args, workers=1) as srv:
        app_get(("127.0.0.1", port))
        log = srv.log()
        for option in ACCEPTED:
            lines = [line for line in log.splitlines() if f"WARNING: {option[0]} (command line) has no effect here" in line]
            check_eq(len(lines), 1, f"WARNING lines for {option[0]}")
        check_eq(srv.stop(), 0, "exit status")


def test_log_route_refused():
    rc, out, left = run_server_to_exit(["--socket", f"127.0.0.1:{free_port()}", "--log-route", "file1 ^foo"])
    check(rc == 1 and "--log-route" in out and "log routing is not implemented" in out, f"{rc} {out[-300:]!r}")
    check(not left, f"processes left: {left}")


if __name__ == "__main__":
    run_tests([test_positional_config_file, test_worker_reload_mercy,
               test_a_stopping_worker_counts_the_requests_it_cuts, test_static_gzip_dir, test_accepted_options_warn_once, test_log_route_refused], budget=90)
