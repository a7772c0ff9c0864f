"""uWSGI's process options (issue 11): --uid/--gid drop the master's and workers' privileges after the
sockets exist, --chown-socket owns the UNIX socket, --umask shapes the files created; --vacuum removes
the socket files and pidfiles at exit (SIGTERM, SIGINT, SIGQUIT), without it they stay (as uWSGI);
--pidfile2; --max-requests (+ delta), --max-worker-lifetime, --reload-on-rss recycle a worker gracefully
(every request succeeds, the successor starts at once), --evil-reload-on-rss kills from the master.
Waits are for events (a log line, a pid change, a file), never a sleep standing for one."""

import grp
import http.client
import os
import pwd
import re
import signal
import stat
import sys
import threading

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Server, app_get, check, check_eq, free_port, make_temp_dir, run_server_to_exit,  # noqa: E402
                     run_tests, wait_until)


def proc_ids(pid):
    """(real uid, real gid, supplementary groups) from /proc/PID/status."""
    uid = gid = groups = None
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                uid = [int(x) for x in line.split()[1:]]
            elif line.startswith("Gid:"):
                gid = [int(x) for x in line.split()[1:]]
            elif line.startswith("Groups:"):
                groups = [int(x) for x in line.split()[1:]]
    return uid, gid, groups


def test_uid_gid_chown_socket():
    if os.getuid() != 0:
        print("SKIP part: not root, the privileges drop cannot be shown")
        return
    nobody = pwd.getpwnam("nobody").pw_uid
    nogroup = grp.getgrnam("nogroup").gr_gid
    tmp = make_temp_dir()
    os.chmod(tmp, 0o755)
    path = os.path.join(tmp, "s.sock")
    with Server(["--socket", path, "--processes", "2", "--uid", "nobody", "--gid", "nogroup",
                 "--chown-socket", "nobody:nogroup"], workers=2) as srv:
        st = os.stat(path)
        check_eq((st.st_uid, st.st_gid), (nobody, nogroup), "owner of the socket after --chown-socket")
        for pid in [srv.pid] + srv.workers():
            uid, gid, groups = proc_ids(pid)
            check_eq(uid, [nobody] * 4, f"Uid line of {pid} (real, effective, saved, fs)")
            check_eq(gid, [nogroup] * 4, f"Gid line of {pid}")
            check(0 not in groups, f"process {pid} kept root's group: Groups {groups}")
        app_get(path)
        check(srv.wait_log(r"setuid\(\) to %d" % nobody, 10.0), "no 'setuid() to' line")
        check_eq(srv.stop(), 0, "exit status after SIGTERM")


def test_unknown_user_is_refused():
    port = free_port()
    rc, out, left = run_server_to_exit(["--socket", f"127.0.0.1:{port}", "--uid", "no-such-user-here"])
    check_eq(rc, 1, "exit status with an unknown --uid")
    check("no-such-user-here" in out and "no such user" in out, f"message: {out[-300:]!r}")
    check(not left, f"processes left: {left}")


def test_umask():
    tmp = make_temp_dir()
    path = os.path.join(tmp, "u.sock")
    with Server(["--socket", path, "--umask", "077"], workers=1) as srv:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        check_eq(oct(mode), oct(0o700), "mode of a socket created under --umask 077")
        check_eq(srv.stop(), 0, "exit status")


def test_vacuum_on_every_stop():
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        tmp = make_temp_dir()
        path, pidfile, pidfile2 = (os.path.join(tmp, n) for n in ("v.sock", "a.pid", "b.pid"))
        with Server(["--socket", path, "--vacuum", "--pidfile", pidfile, "--pidfile2", pidfile2],
                    workers=1) as srv:
            for p in (pidfile, pidfile2):
                with open(p) as f:
                    check_eq(f.read().strip(), str(srv.pid), f"content of {p}")
            app_get(path)
            check_eq(srv.stop(sig), 0, f"exit status after {sig.name}")
        for p in (path, pidfile, pidfile2):
            check(not os.path.exists(p), f"{p} still there after {sig.name} with --vacuum")


def test_no_vacuum_leaves_files():
    tmp = make_temp_dir()
    path, pidfile = os.path.join(tmp, "n.sock"), os.path.join(tmp, "n.pid")
    with Server(["--socket", path, "--pidfile", pidfile], workers=1) as srv:
        check_eq(srv.stop(), 0, "exit status")
    check(os.path.exists(path) and os.path.exists(pidfile), "without --vacuum uWSGI leaves its files")
    # the stale socket is replaced by the next start
    with Server(["--socket", path], workers=1) as srv:
        app_get(path)
        check_eq(srv.stop(), 0, "exit status of the second server")


def recycled_pids(srv):
    return [int(m) for m in re.findall(r"worker 1 \(pid (\d+)\) started", srv.log())]


def test_max_requests():
    port = free_port()
    addr = ("127.0.0.1", port)
    with Server(["--socket", f"127.0.0.1:{port}", "--processes", "1", "--max-requests", "5"], workers=1) as srv:
        for i in range(20):
            app_get(addr)  # asserts a 200 every time: nothing is dropped while the worker changes
        lines = wait_until(lambda: (lambda n: n if len(n) >= 4 else None)(
            re.findall(r"worker 1 \(pid \d+\) recycled", srv.log())), 5.0)
        check(lines, f"fewer than 4 recycles after 20 requests:\n{srv.log_tail()}")
        pids = wait_until(lambda: (lambda p: p if len(set(p)) >= 5 else None)(recycled_pids(srv)), 5.0)
        check(pids, f"the worker pid did not change 4 times: {recycled_pids(srv)}")
        check_eq(len(re.findall(r"worker 1: max requests reached \(5 >= 5\)", srv.log())), 4,
                 "uWSGI's 'max requests reached' lines")
        check(srv.wait_log(r"\.\.\.The work of process \d+ is done\. Seeya!", 10.0), "no Seeya line")
        check("respawning in" not in srv.log(), "a recycle went through the fork-bomb throttle")
        check_eq(srv.stop(), 0, "exit status")


def test_max_requests_concurrent_nothing_dropped():
    port = free_port()
    addr = ("127.0.0.1", port)
    failures = []
    with Server(["--socket", f"127.0.0.1:{port}", "--processes", "2", "--max-requests", "3"], workers=2) as srv:
        def client():
            for _ in range(15):
                try:
                    app_get(addr)
                except AssertionError as error:
                    failures.append(str(error))
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        check(not failures, f"{len(failures)} of 60 requests failed: {failures[:3]}")
        n = len(re.findall(r"recycled", srv.log()))
        print(f"60 concurrent requests, {n} recycles")
        check(n >= 10, f"only {n} recycles for 60 requests at max-requests 3")
        check_eq(srv.stop(), 0, "exit status")


def test_max_requests_delta():
    port = free_port()
    addr = ("127.0.0.1", port)
    with Server(["--socket", f"127.0.0.1:{port}", "--processes", "2", "--max-requests", "3",
                 "--max-requests-delta", "4"], workers=2) as srv:
        def both():
            log = srv.log()
            return "worker 1: max requests reached (3 >= 3)" in log and \
                "worker 2: max requests reached (7 >= 7)" in log
        for _ in range(300):  # bounded: which worker takes a connection is the kernel's choice
            if both():
                break
            app_get(addr)
        check(both(), f"worker 2 did not recycle at 3 + (2-1) * 4 = 7:\n{srv.log_tail()}")
        check_eq(srv.stop(), 0, "exit status")


def test_max_worker_lifetime():
    port = free_port()
    addr = ("127.0.0.1", port)
    with Server(["--socket", f"127.0.0.1:{port}", "--max-worker-lifetime", "1"], workers=1) as srv:
        first = srv.workers()
        check(srv.wait_log(r"worker 1: lifetime reached, it was running for 1 second\(s\)", 5.0),
              f"no lifetime line:\n{srv.log_tail()}")
        check(wait_until(lambda: (lambda w: w if len(w) == 1 and w != first else None)(srv.workers()), 5.0),
              f"the worker was not replaced: {first} -> {srv.workers()}")
        app_get(addr)
        check_eq(srv.stop(), 0, "exit status")


def test_reload_on_rss():
    port = free_port()
    addr = ("127.0.0.1", port)
    with Server(["--socket", f"127.0.0.1:{port}", "--reload-on-rss", "1"], workers=1) as srv:
        check("reload-on-rss reached" not in srv.log(), "recycled before any request")
        app_get(addr)
        check(srv.wait_log(r"worker 1: reload-on-rss reached \(\d+ >= 1048576\)", 5.0),
              f"no reload-on-rss line after a request with a 1 MB limit:\n{srv.log_tail()}")
        check(srv.wait_log(r"worker 1 \(pid \d+\) recycled", 5.0), "not recycled")
        app_get(addr)
        check_eq(srv.stop(), 0, "exit status")


def test_evil_reload_on_rss():
    port = free_port()
    with Server(["--socket", f"127.0.0.1:{port}", "--evil-reload-on-rss", "1"], wait_ready=False) as srv:
        m = srv.wait_log(r"worker 1 \(pid (\d+)\) uses \d+ bytes of memory \(evil-reload-on-rss 1 MB\): SIGKILL",
                         5.0)
        check(m, f"the master did not kill a worker above 1 MB:\n{srv.log_tail()}")
        check(srv.wait_log(r"worker 1 \(pid %s\) died: killed by signal 9" % m.group(1), 10.0),
              "the killed worker was not reaped as a SIGKILL death")
        check_eq(srv.stop(), 0, "exit status")


def http_get(port, path="/"):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_http_is_served_by_the_workers():
    port = free_port()
    with Server(["--http", f"127.0.0.1:{port}"], ready_addrs=[("127.0.0.1", port)], workers=1) as srv:
        check_eq(http_get(port)[0], 200, "GET over --http")
        check(srv.wait_log(r"--http 127\.0\.0\.1:%d: no separate HTTP router process here" % port, 10.0),
              "no log line saying how --http is served")
        check_eq(srv.stop(), 0, "exit status")


def test_protocol_http_applies_to_sockets():
    port, other = free_port(), free_port()
    with Server(["--socket", f"127.0.0.1:{port}", "--protocol", "http", "--uwsgi-socket", f"127.0.0.1:{other}"],
                workers=1) as srv:
        check_eq(http_get(port)[0], 200, "GET over --socket with --protocol http")
        check_eq(http_get(other)[0], 200, "GET over --uwsgi-socket (an alias of --socket) with --protocol http")
        check_eq(srv.stop(), 0, "exit status")
    with Server(["--uwsgi-socket", f"127.0.0.1:{port}", "--protocol", "uwsgi"], workers=1,
                ready_addrs=[("127.0.0.1", port)]) as srv:
        app_get(("127.0.0.1", port))  # a uwsgi packet gets the demo application's reply
        check_eq(srv.stop(), 0, "exit status")
    rc, out, left = run_server_to_exit(["--socket", f"127.0.0.1:{port}", "--protocol", "fastcgi"])
    check_eq(rc, 1, "exit status with --protocol fastcgi")
    check("expected uwsgi or http" in out, f"message: {out[-300:]!r}")


def test_need_app_is_what_happens_anyway():
    tmp = make_temp_dir()
    bad = os.path.join(tmp, "bad.py")
    with open(bad, "w") as f:
        f.write("raise RuntimeError('cannot load')\n")
    for extra in ([], ["--lazy-apps"]):
        port = free_port()
        rc, out, left = run_server_to_exit(["--socket", f"127.0.0.1:{port}", "--wsgi-file", bad, "--need-app"]
                                           + extra, timeout=10.0)
        check_eq(rc, 1, f"exit status when the application fails to load {extra}")
        check("WARNING: --need-app" in out, f"no WARNING for --need-app: {out[-300:]!r}")
        check(not left, f"processes left: {left}")


if __name__ == "__main__":
    run_tests([test_uid_gid_chown_socket, test_unknown_user_is_refused, test_umask, test_vacuum_on_every_stop,
               test_no_vacuum_leaves_files, test_max_requests, test_max_requests_concurrent_nothing_dropped,
               test_max_requests_delta, test_max_worker_lifetime, test_reload_on_rss, test_evil_reload_on_rss,
               test_http_is_served_by_the_workers, test_protocol_http_applies_to_sockets,
               test_need_app_is_what_happens_anyway],
              budget=120)
