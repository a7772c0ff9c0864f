"""uWSGI's lifecycle options (issue 11): --virtualenv/--home/-H (a venv made by Debian's python3 -m venv
with a package installed only there), --touch-reload and --py-autoreload (a graceful reload that runs the
new code), --cheaper with the spare algorithm (a worker added under load, retired when idle),
--attach-daemon (started, respawned, stopped with the server), --hook-master-start/--hook-accepting1
(exec: and unix_signal:), --auto-procname/--procname-prefix-spaced (what ps shows), --add-header on the
application's responses, --max-fd, and the options accepted with a WARNING or refused with an error.
Waits are for events (a log line, a file, a pid, a reply), never a sleep standing for one."""

import os
import subprocess
import sys
import threading

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Server, wsgi_req, check, check_eq, free_port, make_temp_dir, pid_alive,  # noqa: E402
                     hold_app_server, request, run_server_to_exit, run_tests, wait_until)

APP = '''\
import sys
def application(environ, start_response):
    body = VERSION.encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
'''


def write_app(directory, version, name="appmod"):
    """Writes the module whole and renames it into place: a worker may be importing it right now
    (with --lazy-apps each worker loads it when it starts), and must never read it half-written.
    A new version is dated 10 s later, as a real edit would be: Python's cached bytecode is checked
    against the source's mtime in whole seconds and its size, which "v1" and "v2" share."""
    path = os.path.join(directory, f"{name}.py")
    previous = os.stat(path).st_mtime_ns if os.path.exists(path) else None
    staging = path + ".new"
    with open(staging, "w") as f:
        f.write(f"VERSION = {version!r}\n" + APP)
    if previous is not None:
        os.utime(staging, ns=(previous + 10 * 10**9, previous + 10 * 10**9))
    os.rename(staging, path)
    return path


def body_of(addr, path="/"):
    reply, how = request(addr, wsgi_req(path), 5.0)
    return reply.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in reply else reply


def bump_mtime(path, seconds=10):
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + seconds * 10**9))


def test_virtualenv():
    tmp = make_temp_dir("venv-")
    venv = os.path.join(tmp, "env")
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", venv], check=True, timeout=60)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    out = subprocess.run(["/usr/bin/python3", "-c", "import sys; print(f'python{sys.version_info[0]}."
                          "{sys.version_info[1]}')"], capture_output=True, text=True, check=True).stdout.strip()
    version = out
    site = os.path.join(venv, "lib", version, "site-packages", "onlyinvenv")
    os.makedirs(site)
    with open(os.path.join(site, "__init__.py"), "w") as f:
        f.write("WHERE = 'the venv package'\n")
    with open(os.path.join(tmp, "venvapp.py"), "w") as f:
        f.write("import sys, onlyinvenv\n"
                "def application(environ, start_response):\n"
                "    body = (onlyinvenv.WHERE + '|' + sys.prefix + '|' + sys.base_prefix).encode()\n"
                "    start_response('200 OK', [('Content-Type', 'text/plain'), ('Content-Length', str(len(body)))])\n"
                "    return [body]\n")
    for spelling in ("--virtualenv", "--home", "-H", "--venv"):
        port = free_port()
        with Server(["--socket", f"127.0.0.1:{port}", "--chdir", tmp, "--module", "venvapp", spelling, venv],
                    workers=1) as srv:
            check_eq(body_of(("127.0.0.1", port)), f"the venv package|{venv}|/usr".encode(), spelling)
            check(srv.wait_log(r"PEP 405 virtualenv detected: " + venv, 10.0), "uWSGI's log line")
            check_eq(srv.stop(), 0, "exit status")
    # Without it, the package is not there: the application cannot load.
    port = free_port()
    rc, out, left = run_server_to_exit(["--socket", f"127.0.0.1:{port}", "--chdir", tmp, "--module", "venvapp"])
    check(rc != 0 and "onlyinvenv" in out, f"without --virtualenv: {rc} {out[-300:]!r}")
    # An environment of another Python is refused, naming the version.
    other = os.path.join(tmp, "other")
    os.makedirs(os.path.join(other, "lib", "python3.99"))
    rc, out, left = run_server_to_exit(["--socket", f"127.0.0.1:{port}", "--chdir", tmp, "--module", "venvapp",
                                        "--home", other])
    check(rc == 1 and f"no lib/{version}" in out, f"wrong environment: {rc} {out[-300:]!r}")


def test_touch_reload():
    tmp = make_temp_dir("touch-")
    write_app(tmp, "v1")
    trigger = os.path.join(tmp, "reload.trigger")
    open(trigger, "w").close()
    port = free_port()
    addr = ("127.0.0.1", port)
    with Server(["--socket", f"127.0.0.1:{port}", "--chdir", tmp, "--module", "appmod", "--processes", "2",
                 "--touch-reload", trigger], workers=2) as srv:
        check_eq(body_of(addr), b"v1", "before")
        old = set(srv.workers())
        write_app(tmp, "v2")
        offset = srv.log_size()
        bump_mtime(trigger)
        check(srv.wait_log(r"\*\*\* " + trigger + r" has been touched\.\.\. grace them all !!! \*\*\*", 5.0, offset),
              "uWSGI's touch-reload line")
        check(srv.wait_log(r"graceful reload of 2 worker", 3.0, offset), "the reload")
        new = srv.wait_workers(2, timeout=10.0, exclude=old)
        check(not (set(new) & old), f"every worker replaced: {old} -> {new}")
        check_eq(body_of(addr), b"v2", "the new code after the reload")
        check_eq(srv.stop(), 0, "exit status")


def test_py_autoreload():
    tmp = make_temp_dir("autoreload-")
    path = write_app(tmp, "v1")
    port = free_port()
    addr = ("127.0.0.1", port)
    with Server(["--socket", f"127.0.0.1:{port}", "--chdir", tmp, "--module", "appmod",
                 "--py-autoreload", "1"], workers=1) as srv:
        check_eq(body_of(addr), b"v1", "before")
        check(srv.wait_log(r"python auto-reloader enabled", 10.0), "the reloader started")
        old = srv.workers()
        offset = srv.log_size()
        write_app(tmp, "v2")
        bump_mtime(path)
        check(srv.wait_log(r"\[uwsgi-python-reloader\] module/file " + path + " has been modified", 5.0, offset),
              "uWSGI's reloader line")
        srv.wait_workers(1, timeout=10.0, exclude=old)
        check(wait_until(lambda: body_of(addr) == b"v2", 5.0), "the new code after the reload")
        check_eq(srv.stop(), 0, "exit status")


def test_cheaper_spare():
    srv, addr, _, release = hold_app_server(["--processes", "3", "--cheaper", "1", "--cheaper-overload", "1",
                                             "--cheaper-step", "1", "--threads", "1"], 1, "cheaper-")
    with srv:
        check_eq(len(srv.workers()), 1, "workers at start (--cheaper 1)")
        held = []
        thread = threading.Thread(target=lambda: held.append(request(addr, wsgi_req("/hold"), 25.0)), daemon=True)
        thread.start()
        check(srv.wait_log(r"cheaper: 1 of 1 worker\(s\) busy: starting 1 more", 8.0), "a worker added under load")
        check_eq(len(srv.wait_workers(2, timeout=5.0)), 2, "workers under load")
        open(release, "w").close()
        thread.join(10)
        check(held and held[0][0].endswith(b"ok"), f"the held request was answered: {held}")
        check(srv.wait_log(r"cheaper: worker 2 \(pid \d+\) is not needed", 8.0), "the idle worker retired")
        check_eq(len(srv.wait_workers(1, timeout=5.0)), 1, "workers once idle")
        check_eq(body_of(addr), b"ok", "still serving")
        check_eq(srv.stop(), 0, "exit status")


def test_cheaper_idle():
    """--idle N with --cheaper: N seconds without a request bring the workers back to the minimum at
    once (the spare algorithm alone, with --cheaper-overload 60, would stop one a minute)."""
    srv, addr, _, _ = hold_app_server(["--processes", "3", "--cheaper", "1", "--cheaper-initial", "3",
                                       "--cheaper-overload", "60", "--idle", "2"], 3, "idle-")
    with srv:
        check_eq(len(srv.workers()), 3, "workers at start (--cheaper-initial 3)")
        off = srv.log_size()
        check_eq(body_of(addr), b"ok", "a request")
        for worker_id in (3, 2):
            check(srv.wait_log(r"cheaper: worker %d \(pid \d+\) is not needed" % worker_id, 8.0, offset=off),
                  f"worker {worker_id} not retired after --idle 2:\n{srv.log_since(off)}")
        check_eq(len(srv.wait_workers(1, timeout=5.0)), 1, "workers once idle")
        check_eq(body_of(addr), b"ok", "still serving with the minimum")
        check_eq(srv.stop(), 0, "exit status")


def test_attach_daemon_and_hooks():
    tmp = make_temp_dir("daemon-")
    pidfile = os.path.join(tmp, "daemon.pid")
    started = os.path.join(tmp, "master-started")
    accepting = os.path.join(tmp, "accepting")
    port = free_port()
    with Server(["--socket", f"127.0.0.1:{port}",
                 "--attach-daemon", f"echo $$ > {pidfile}.tmp && mv {pidfile}.tmp {pidfile} && exec sleep 600",
                 "--hook-master-start", f"exec:touch {started}",
                 "--hook-master-start", "unix_signal:15 gracefully_kill_them_all",
                 "--hook-accepting1", f"exec:touch {accepting}"], workers=1) as srv:
        # (The hook's shell is a child of the master too: wait for the worker's line, not a child.)
        check(srv.wait_log(r"worker 1 \(pid \d+\) started", 5.0), "the worker started")
        check(os.path.exists(started), "exec: hook of master-start ran before the workers")
        check(srv.wait_log(r'running "exec:touch .*master-started" \(master-start\)\.\.\.', 10.0), "hook line")
        check(wait_until(lambda: os.path.exists(accepting), 5.0), "exec: hook of accepting1 ran")

        def daemon_pid():
            try:
                with open(pidfile) as f:
                    return int(f.read())
            except (OSError, ValueError):
                return None
        check(wait_until(daemon_pid, 5.0), "the daemon started")
        first = daemon_pid()
        os.unlink(pidfile)
        os.kill(first, 9)
        check(srv.wait_log(r'\[uwsgi-daemons\] "echo .*" \(pid %d\) died: killed by signal 9; respawning' % first,
                           5.0), "death logged")
        check(wait_until(lambda: daemon_pid() not in (None, first), 5.0), "respawned")
        second = daemon_pid()
        check_eq(srv.stop(), 0, "exit status")
        check(wait_until(lambda: not pid_alive(second), 5.0), "the daemon stopped with the server")
    port = free_port()
    rc, out, left = run_server_to_exit(["--socket", f"127.0.0.1:{port}", "--hook-master-start", "exec:false"])
    check(rc == 1 and 'exec:false' in out and "exit status 1" in out, f"a failing hook stops the start: {out[-300:]!r}")
    rc, out, left = run_server_to_exit(["--socket", f"127.0.0.1:{port}", "--hook-master-start",
                                        "unix_signal:10 gracefully_kill_them_all"])
    check(rc == 1 and "unix_signal:10" in out, f"a mapping we cannot honour: {out[-300:]!r}")


def test_procname_add_header_max_fd():
    port = free_port()
    tmp = make_temp_dir("procname-")
    write_app(tmp, "hello")
    with Server(["--socket", f"127.0.0.1:{port}", "--chdir", tmp, "--module", "appmod", "--processes", "2",
                 "--auto-procname", "--procname-prefix-spaced", "myapp", "--add-header", "X-Frame-Options: DENY",
                 "--add-header", "Connection: close", "--max-fd", "1000", "--listen", "37"], workers=2) as srv:
        def cmdline(pid):
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return f.read().split(b"\0")[0].decode()
        check_eq(cmdline(srv.pid), "myapp uWSGI master", "master title")
        want = ["myapp uWSGI worker 1", "myapp uWSGI worker 2"]
        # A forked worker renames itself first thing; the test may look between the fork and that.
        wait_until(lambda: sorted(cmdline(pid) for pid in srv.workers()) == want, 5.0)
        check_eq(sorted(cmdline(pid) for pid in srv.workers()), want, "worker titles")
        reply, how = request(("127.0.0.1", port), wsgi_req("/"))
        head = reply.split(b"\r\n\r\n")[0]
        check(b"\r\nX-Frame-Options: DENY\r\n" in head + b"\r\n" and b"\r\nConnection: close" in head,
              f"--add-header: {head!r}")
        with open(f"/proc/{srv.pid}/limits") as f:
            line = next(line for line in f if line.startswith("Max open files"))
        check_eq(line.split()[3:5], ["1000", "1000"], "--max-fd")
        # --listen is the listen(2) backlog: ss shows it as the listening socket's Send-Q.
        ss = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True, timeout=10)
        check_eq(ss.stdout.split()[2:3], ["37"], f"--listen 37 as the backlog ({ss.stdout!r})")
        check_eq(srv.stop(), 0, "exit status")


def test_accepted_and_refused():
    port = free_port()
    with Server(["--socket", f"127.0.0.1:{port}", "--offload-threads", "2", "--ignore-sigpipe",
                 "--disable-write-exception", "--cheaper-busyness-max", "50", "--no-orphans"], workers=1) as srv:
        check(srv.wait_log(r"WARNING: --offload-threads \(command line\) has no effect here: static files are sent "
                           r"by the worker itself with sendfile", 10.0), "offload-threads warning")
        check(srv.wait_log(r"WARNING: --cheaper-busyness-max .* runs as spare", 10.0), "busyness warning")
        check_eq(srv.stop(), 0, "exit status")
    for args, words in ((["--gevent", "100"], "gevent is not supported"),
                        (["--emperor", "/etc/uwsgi/vassals"], "Emperor"),
                        (["--route", "^/ basicauth:x,y:z"], "internal router is not implemented"),
                        (["--https", "=0,a.crt,a.key"], "terminate it in nginx"),
                        (["--unique-cron", "0 0 1 1 -1 ./manage.py x"], "cron"),
                        (["--cheaper-algo", "backlog"], "expected spare or busyness")):
        rc, out, left = run_server_to_exit(["--socket", f"127.0.0.1:{port}"] + args)
        check(rc == 1 and words in out and f"--{args[0].lstrip('-')}" in out, f"{args}: {rc} {out[-300:]!r}")


if __name__ == "__main__":
    run_tests([test_virtualenv, test_touch_reload, test_py_autoreload, test_cheaper_spare, test_cheaper_idle,
               test_attach_daemon_and_hooks, test_procname_add_header_max_fd, test_accepted_and_refused], budget=120)
