#!/usr/bin/env python3
"""The request log: uWSGI's default line, compared field by field with a live uWSGI 2.0.21 serving the
same application and requests (the --memory-report prefix too), and a --log-format template with uWSGI's
%(var) names compared the same way; --disable-logging with --log-4xx / --log-5xx / --log-slow picking
their lines as uWSGI does; cache requests counted, not logged, unless --log-cache; --req-logger
file:PATH; --logto with --log-maxsize rotation (no line lost, --log-backupname); --log-reopen on SIGHUP;
--daemonize; %(ftime) with --logformat-strftime and --log-date FORMAT, %(ctime)/%(tmsecs)/%(tmicros)
against a live uWSGI; --logger file:/stdio/refusals."""
import contextlib
import glob
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (start_hosted, SERVER_BIN, Server, Skip, UwsgiProcess, _child_setup, can_connect,
                     run_server_to_exit,
                     check, check_eq, connect, free_port, magic_get, magic_set, make_temp_dir,
                     need_uwsgi, pid_alive, read_reply, run_tests, wait_until)

HOST = "127.0.0.1"
APP = r'''
import time

def application(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/missing":
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
        return [b"not found\n"]
    if path == "/boom":
        raise RuntimeError("boom")
    if path == "/slow":
        time.sleep(float(environ["QUERY_STRING"] or 0))  # the application is slow; what --log-slow picks
    if environ["REQUEST_METHOD"] == "POST":
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello World!\n"]
'''

LINE_RE = re.compile(
    r"^(?:\{address space usage: (?P<vsz>\d+) bytes/(?P<vszM>\d+)MB\} \{rss usage: (?P<rss>\d+) bytes/(?P<rssM>\d+)MB\} )?"
    r"\[pid: (?P<pid>\d+)\|app: (?P<app>-?\d+)\|req: (?P<req>\d+)/(?P<total>\d+)\] (?P<addr>\S*) \((?P<user>[^)]*)\) "
    r"\{(?P<vars>\d+) vars in (?P<pktsize>\d+) bytes\} \[(?P<date>\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4})\] "
    r"(?P<method>\S+) (?P<uri>\S+) => generated (?P<size>\d+) bytes in (?P<msecs>\d+) msecs "
    r"\((?P<proto>\S+) (?P<status>\d+)\) (?P<headers>\d+) headers in (?P<hsize>\d+) bytes "
    r"\((?P<switches>\d+) switches on core (?P<core>\d+)\)$")

# Fields whose values must be equal between uWSGI and us for the same request.
SAME = ("app", "addr", "user", "method", "uri", "size", "proto", "status", "headers", "hsize", "switches", "core")

FORMAT = ('%(addr) - %(user) [%(ltime)] "%(method) %(uri) %(proto)" %(status) %(size) "%(referer)" "%(uagent)" '
          '%(rsize) %(hsize) %(headers) %(host) | %(pid) %(wid) %(msecs) %(micros) %(vars) %(pktsize) %(time)')


def app_file(folder):
    path = os.path.join(folder, "app.py")
    with open(path, "w") as f:
        f.write(APP)
    return path


@contextlib.contextmanager
def start(args, workers=1, ready=None):
    """A started Server (killed on exit); a missing peer when the Python host is not built in."""
    srv = start_hosted(args, workers, ready)
    try:
        yield srv
    except BaseException:
        srv.dump_log("server log (test failed)")
        raise
    finally:
        srv.kill_all()


def get(port, path, data=None, headers=None):
    request = urllib.request.Request(f"http://{HOST}:{port}{path}", data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def send_the_requests(port):
    get(port, "/page1?x=1")
    get(port, "/page2", headers={"User-Agent": "ucached-test/1.0", "Referer": "http://example.com/from"})
    get(port, "/form", data=b"a=1&b=2", headers={"Content-Type": "application/x-www-form-urlencoded"})
    get(port, "/missing")


def request_lines(text):
    return [m for m in (LINE_RE.match(line) for line in text.splitlines()) if m]


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def test_default_line_matches_a_live_uwsgi_field_by_field():
    need_uwsgi(("python3",))
    tmp = make_temp_dir("reqlog-")
    app = app_file(tmp)
    usock, uhttp = free_port(), free_port()
    uw = UwsgiProcess(["--plugin", "python3,cache", "--master", "--processes", "1", "--socket", f"{HOST}:{usock}",
                       "--http-socket", f"{HOST}:{uhttp}", "--memory-report", "--cache", "10", "--wsgi-file", app],
                      [(HOST, usock), (HOST, uhttp)])
    with uw:
        send_the_requests(uhttp)
        check(wait_until(lambda: len(request_lines(uw.tail(100000))) >= 4, 5), "uWSGI logged the requests")
        theirs = request_lines(uw.tail(100000))[-4:]
    sock, http = free_port(), free_port()
    with start(["--socket", f"{HOST}:{sock}", "--http-socket", f"{HOST}:{http}", "--memory-report", "--wsgi-file",
                app], 1, [(HOST, sock), (HOST, http)]) as srv:
        send_the_requests(http)
        check(wait_until(lambda: len(request_lines(srv.log())) >= 4, 5), "we logged the requests")
        ours = request_lines(srv.log())
        worker = srv.workers()[0]
    check_eq(len(ours), 4, "one line per request")
    for n, (t, o) in enumerate(zip(theirs, ours), 1):
        for field in SAME:
            if field == "switches" and t.group("method") == "POST":
                continue  # uWSGI counts a switch for waiting on the body; ours is read whole first (differences.md)
            check_eq(o.group(field), t.group(field), f"request {n} field {field} ({o.group(0)!r} vs {t.group(0)!r})")
        check_eq(int(o.group("pid")), worker, "the worker's pid")
        check_eq((int(o.group("req")), int(o.group("total"))), (n, n), "req: R/T")
        time.strptime(o.group("date"), "%a %b %d %H:%M:%S %Y")
        check_eq(int(o.group("vszM")), int(o.group("vsz")) >> 20, "address space MB")
        check_eq(int(o.group("rssM")), int(o.group("rss")) >> 20, "rss MB")
        check(0 < int(o.group("rss")) <= int(o.group("vsz")), "rss within the address space")
        check(int(o.group("vars")) > 10 and int(o.group("pktsize")) > 100, "vars counted")


def test_log_format_matches_a_live_uwsgi():
    need_uwsgi(("python3",))
    tmp = make_temp_dir("reqlog-fmt-")
    app = app_file(tmp)
    usock, uhttp = free_port(), free_port()
    with UwsgiProcess(["--plugin", "python3,cache", "--master", "--processes", "1", "--socket", f"{HOST}:{usock}",
                       "--http-socket", f"{HOST}:{uhttp}", "--log-format", FORMAT, "--cache", "10", "--wsgi-file",
                       app], [(HOST, usock), (HOST, uhttp)]) as uw:
        send_the_requests(uhttp)
        check(wait_until(lambda: uw.tail(100000).count(" | ") >= 4, 5), "uWSGI logged the requests")
        theirs = [line for line in uw.tail(100000).splitlines() if " | " in line][-4:]
    sock, http = free_port(), free_port()
    with start(["--socket", f"{HOST}:{sock}", "--http-socket", f"{HOST}:{http}", "--log-format", FORMAT,
                "--wsgi-file", app], 1, [(HOST, sock), (HOST, http)]) as srv:
        send_the_requests(http)
        check(wait_until(lambda: srv.log().count(" | ") >= 4, 5), "we logged the requests")
        ours = [line for line in srv.log().splitlines() if " | " in line]
        worker = srv.workers()[0]
    for t, o in zip(theirs, ours):
        t_same, t_rest = t.split(" | ")
        o_same, o_rest = o.split(" | ")
        # The local time of the request ([%(ltime)]) may differ between the two runs: compare its form.
        # %(host) names each server's own port.
        strip = lambda s: re.sub(r"\[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\]", "[LTIME]",
                                 re.sub(r" 127\.0\.0\.1:\d+$", " 127.0.0.1:PORT", s))
        check(strip(t_same) != t_same, f"uWSGI's ltime form: {t_same}")
        check_eq(strip(o_same), strip(t_same), "the template's request fields")
        pid, wid, msecs, micros, nvars, pktsize, epoch = o_rest.split()
        check_eq((int(pid), wid), (worker, "1"), "pid and wid")
        check(int(msecs) == int(micros) // 1000, f"msecs {msecs} from micros {micros}")
        check(abs(int(epoch) - time.time()) < 60, "time is the unix time")


def lines_of(srv):
    return request_lines(srv.log())


def test_disable_logging_with_4xx_5xx_slow():
    tmp = make_temp_dir("reqlog-cond-")
    app = app_file(tmp)
    cases = [
        (["--disable-logging"], []),
        (["--disable-logging", "--log-4xx"], ["/missing"]),
        (["--disable-logging", "--log-5xx"], ["/boom"]),
        # 1 s: no other request of these takes that long, even on a busy machine.
        (["--disable-logging", "--log-slow", "1000"], ["/slow?1.1"]),
        (["--log-5xx"], ["/ok", "/missing", "/boom", "/slow"]),  # uWSGI: with logging on, every line
    ]
    for extra, want in cases:
        sock, http = free_port(), free_port()
        with start(["--socket", f"{HOST}:{sock}", "--http-socket", f"{HOST}:{http}", "--wsgi-file", app, "--stats",
                    f"{HOST}:{free_port()}"] + extra, 1, [(HOST, sock), (HOST, http)]) as srv:
            for path in ("/ok", "/missing", "/boom", "/slow?1.1" if "--log-slow" in extra else "/slow"):
                get(http, path)
            # The one worker writes its lines at the end of each pass of its loop: once a further request
            # was answered, the pass of the last one ended.
            get(http, "/flush-mark")
            got = [m.group("uri") for m in lines_of(srv) if m.group("uri") != "/flush-mark"]
            check_eq(got, want, f"lines logged with {extra}")


def test_cache_requests_counted_not_logged_unless_log_cache():
    for extra, logged in (([], False), (["--log-cache"], True)):
        sock, stats = free_port(), free_port()
        with Server(["--socket", f"{HOST}:{sock}", "--cache", "10", "--stats", f"{HOST}:{stats}"] + extra, workers=1,
                    ready_addrs=[(HOST, sock), (HOST, stats)]) as srv:
            magic_set((HOST, sock), "key1", b"value1")
            check_eq(magic_get((HOST, sock), "key1"), b"value1", "cache hit")
            s = connect((HOST, stats), 5)
            data, _ = read_reply(s, 5)
            s.close()
            check_eq(json.loads(data)["workers"][0]["cache_requests"], 2, "cache requests counted")
            magic_get((HOST, sock), "flush-mark")  # answered: the pass of the requests before it ended
            lines = lines_of(srv)[:2]
            if logged:
                check_eq([(m.group("app"), m.group("method"), m.group("proto")) for m in lines],
                         [("-1", "magic", "uwsgi")] * 2, "cache lines with --log-cache")
            else:
                check_eq(lines, [], "no cache lines by default")


def test_req_logger_file():
    tmp = make_temp_dir("reqlog-file-")
    path = os.path.join(tmp, "requests.log")
    sock, http = free_port(), free_port()
    with start(["--socket", f"{HOST}:{sock}", "--http-socket", f"{HOST}:{http}", "--wsgi-file", app_file(tmp),
                "--req-logger", f"file:{path}"], 1, [(HOST, sock), (HOST, http)]) as srv:
        get(http, "/to-the-file")
        check(wait_until(lambda: request_lines(read(path)), 5), "a request line in the file")
        check_eq([m.group("uri") for m in request_lines(read(path))], ["/to-the-file"], "the request line in the file")
        check_eq(lines_of(srv), [], "not in the log")
        check("worker 1" in srv.log(), "other lines stay in the log")


def test_logto_rotation_keeps_every_line():
    tmp = make_temp_dir("reqlog-rot-")
    path = os.path.join(tmp, "server.log")
    sock, http = free_port(), free_port()
    with start(["--socket", f"{HOST}:{sock}", "--http-socket", f"{HOST}:{http}", "--wsgi-file", app_file(tmp),
                "--processes", "2", "--logto", path, "--log-maxsize", "4000"], 2, [(HOST, sock), (HOST, http)]):
        sent = 0
        while sent < 400 and len(glob.glob(path + ".*")) < 2:
            get(http, f"/r{sent}")
            sent += 1
        check(len(glob.glob(path + ".*")) >= 2, f"rotated twice within {sent} requests")
        files = [path] + sorted(glob.glob(path + ".*"))
        for rotated in files[1:]:
            check(os.path.getsize(rotated) >= 4000, f"{rotated} reached --log-maxsize before its rotation")
        uris = lambda: [m.group("uri") for f in [path] + sorted(glob.glob(path + ".*")) for m in request_lines(read(f))]
        check(wait_until(lambda: len(uris()) >= sent, 5), "the last lines written")
        uris = uris()
        check_eq(sorted(uris), sorted(f"/r{i}" for i in range(sent)), "every request line kept across the files")
    backup = os.path.join(tmp, "backup.log")
    path2 = os.path.join(tmp, "server2.log")
    sock, http = free_port(), free_port()
    with start(["--socket", f"{HOST}:{sock}", "--http-socket", f"{HOST}:{http}", "--wsgi-file", app_file(tmp),
                "--logto", path2, "--log-maxsize", "2000", "--log-backupname", backup], 1,
               [(HOST, sock), (HOST, http)]):
        sent = 0
        while sent < 200 and not os.path.exists(backup):
            get(http, f"/b{sent}")
            sent += 1
        check(os.path.exists(backup), "--log-backupname names the rotated file")


def test_log_reopen_on_sighup():
    tmp = make_temp_dir("reqlog-reopen-")
    path = os.path.join(tmp, "server.log")
    sock, http = free_port(), free_port()
    with start(["--socket", f"{HOST}:{sock}", "--http-socket", f"{HOST}:{http}", "--wsgi-file", app_file(tmp),
                "--logto", path, "--log-reopen"], 1, [(HOST, sock), (HOST, http)]) as srv:
        old_worker = srv.workers()[0]
        os.rename(path, path + ".moved")  # an outside rotation (logrotate without copytruncate)
        srv.send_signal(signal.SIGHUP)
        check(wait_until(lambda: os.path.exists(path) and "graceful reload" in read(path), 5),
              "the master reopened the file and logs there")
        check(wait_until(lambda: not pid_alive(old_worker) and len(srv.workers()) == 1, 10),
              "the old worker replaced")
        get(http, "/after-reopen")
        check(wait_until(lambda: request_lines(read(path)), 5), "a request line in the reopened file")
        check_eq([m.group("uri") for m in request_lines(read(path))], ["/after-reopen"], "the new worker logs there")


def test_logto2_opens_after_the_privileges_drop():
    if os.geteuid() != 0:
        raise Skip("--uid needs root")
    import pwd
    nobody = pwd.getpwnam("nobody").pw_uid
    tmp = make_temp_dir("reqlog-logto2-")
    os.chmod(tmp, 0o777)  # the dropped user creates the file
    path = os.path.join(tmp, "as-user.log")
    sock = free_port()
    with Server(["--socket", f"{HOST}:{sock}", "--cache", "10", "--uid", "nobody", "--gid", "nogroup", "--logto2",
                 path], workers=1) as srv:
        check(wait_until(lambda: os.path.exists(path) and "worker 1" in read(path), 5),
              "the lines after the drop go to the --logto2 file")
        check_eq(os.stat(path).st_uid, nobody, "created by the dropped user")
        # The cache is created before the drop: its line stays where the log was.
        check('cache "default" ready' not in read(path) and 'cache "default" ready' in srv.log(),
              "lines before the drop stay where they were")


def test_daemonize():
    tmp = make_temp_dir("reqlog-daemon-")
    path = os.path.join(tmp, "daemon.log")
    pidfile = os.path.join(tmp, "master.pid")
    sock = free_port()
    proc = subprocess.run([SERVER_BIN, "--socket", f"{HOST}:{sock}", "--daemonize", path, "--pidfile", pidfile],
                          capture_output=True, timeout=10, preexec_fn=_child_setup())
    check_eq(proc.returncode, 0, "the foreground process exits 0")
    master = None
    try:
        check(wait_until(lambda: os.path.exists(pidfile) and read(pidfile).strip().isdigit(), 5), "pidfile written")
        master = int(read(pidfile))
        check(master != proc.returncode and pid_alive(master), "the master runs in the background")
        check(wait_until(lambda: can_connect((HOST, sock)), 5), "it serves")
        check(wait_until(lambda: "worker 1" in read(path), 5), "and logs to the --daemonize file")
        check_eq(os.getsid(master), master, "in a session of its own")
    finally:
        if master is not None:
            os.kill(master, signal.SIGINT)
            wait_until(lambda: not pid_alive(master), 10)
            if pid_alive(master):
                os.kill(master, signal.SIGKILL)


TIME_FORMAT = "%(ftime) | %(ctime) | %(tmsecs) | %(tmicros) | %(uri)"
ISO_RE = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"
LTIME_RE = r"\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}"
CTIME_RE = r"\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}"


def time_fields(log):
    """(ftime, ctime, tmsecs, tmicros) of every TIME_FORMAT line for /when."""
    return [tuple(line.split(" | ")[:4]) for line in log.splitlines() if line.endswith(" | /when")]


def test_ftime_with_logformat_strftime_as_uwsgi():
    """A real Docker config: logformat-strftime + log-date FORMAT make %(ftime) that format; without
    logformat-strftime it is %(ltime)'s. %(ctime), %(tmsecs), %(tmicros) too, compared with a live uWSGI."""
    need_uwsgi(("python3",))
    tmp = make_temp_dir("reqlog-ftime-")
    app = app_file(tmp)
    for strftime_on, form in ((True, ISO_RE), (False, LTIME_RE)):
        extra = (["--logformat-strftime"] if strftime_on else []) + ["--log-date=%Y-%m-%dT%H:%M:%S"]  # optional value: only the = form
        usock, uhttp = free_port(), free_port()
        with UwsgiProcess(["--plugin", "python3", "--master", "--processes", "1", "--socket", f"{HOST}:{usock}",
                           "--http-socket", f"{HOST}:{uhttp}", "--log-format", TIME_FORMAT, *extra, "--wsgi-file",
                           app], [(HOST, usock), (HOST, uhttp)]) as uw:
            get(uhttp, "/when")
            check(wait_until(lambda: time_fields(uw.tail(100000)), 5), "uWSGI logged the request")
            theirs = time_fields(uw.tail(100000))[0]
        sock, http = free_port(), free_port()
        with start(["--socket", f"{HOST}:{sock}", "--http-socket", f"{HOST}:{http}", "--log-format", TIME_FORMAT,
                    *extra, "--wsgi-file", app], 1, [(HOST, sock), (HOST, http)]) as srv:
            get(http, "/when")
            check(wait_until(lambda: time_fields(srv.log()), 5), "we logged the request")
            ours = time_fields(srv.log())[0]
        for who, (ftime, ctime, tmsecs, tmicros) in (("uWSGI", theirs), ("ours", ours)):
            check(re.fullmatch(form, ftime), f"{who}: ftime {ftime!r} (logformat-strftime {strftime_on})")
            check(re.fullmatch(CTIME_RE, ctime), f"{who}: ctime {ctime!r}")
            check(abs(int(tmsecs) / 1000 - time.time()) < 60, f"{who}: tmsecs {tmsecs} is unix milliseconds")
            check_eq(int(tmicros) // 1000, int(tmsecs), f"{who}: tmicros and tmsecs")


def test_logger_destinations():
    """--logger: file:PATH sends every line there (as --logto), stdio keeps them on stderr; a logger this
    server has not (syslog) or two destinations are refused at start with the reason."""
    tmp = make_temp_dir("reqlog-logger-")
    path = os.path.join(tmp, "logger.log")
    sock, http = free_port(), free_port()
    with start(["--socket", f"{HOST}:{sock}", "--http-socket", f"{HOST}:{http}", "--wsgi-file", app_file(tmp),
                "--logger", f"default file:{path}"], 1, [(HOST, sock), (HOST, http)]) as srv:
        get(http, "/to-the-logger")
        check(wait_until(lambda: request_lines(read(path)), 5), "a request line in the logger's file")
        check_eq([m.group("uri") for m in request_lines(read(path))], ["/to-the-logger"], "the request line")
        check("worker 1" in read(path), "the other lines too")
        check_eq(lines_of(srv), [], "nothing left on stderr")
    sock, http = free_port(), free_port()
    with start(["--socket", f"{HOST}:{sock}", "--http-socket", f"{HOST}:{http}", "--wsgi-file", app_file(tmp),
                "--logger", "default stdio"], 1, [(HOST, sock), (HOST, http)]) as srv:
        get(http, "/on-stderr")
        check(wait_until(lambda: lines_of(srv), 5), "stdio: the request line on stderr")
    for args, says in ((["--logger", "syslog:web"], 'logger plugin "syslog" is not built in'),
                       (["--logger", "stdio", "--logger", f"file:{path}"], "each log line goes to one destination"),
                       (["--logger", "fd:x"], "expected fd:N")):
        rc, log, left = run_server_to_exit(["--socket", f"{HOST}:{free_port()}", *args])
        check(rc not in (None, 0), f"{args}: refused (exit {rc})")
        check(says in log, f"{args}: the reason ({says!r}) in:\n{log}")
        check_eq(left, [], f"{args}: no process left")


if __name__ == "__main__":
    run_tests([test_default_line_matches_a_live_uwsgi_field_by_field, test_log_format_matches_a_live_uwsgi,
               test_disable_logging_with_4xx_5xx_slow, test_cache_requests_counted_not_logged_unless_log_cache,
               test_req_logger_file, test_logto_rotation_keeps_every_line, test_log_reopen_on_sighup,
               test_logto2_opens_after_the_privileges_drop, test_daemonize, test_ftime_with_logformat_strftime_as_uwsgi,
               test_logger_destinations],
              budget=120)
