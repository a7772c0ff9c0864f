#!/usr/bin/env python3
"""The floor of the Django cell of bench/app_compare.py: the CPU one call of the application costs with no
server at all, against the server CPU per request of ours and uWSGI 2.0.21 behind nginx, in one
interleaved run.

    bench/django_floor.py [SERVER_BIN]      # env: REPS=3 DURATION=4 (seconds per cell), PROCESSES=2

The in-process cell runs Debian's Python 3.11 on app_compare's `django-admin startproject` view (and its
hello-world app, for scale): it builds each call's environ as a server would from nginx's uwsgi_params
(a fresh dict and wsgi.input per call), calls the WSGI application, joins the body and calls close(), for
DURATION seconds on one thread, and divides the process's CPU time (user+system) by the calls. The server
cells are app_compare's (wrk -t1 -c16 keep-alive to one nginx, 2 processes each), for the view and for
the hello-world app (which measures everything but the view); server CPU excludes nginx. Each rep runs every cell once, in turn. What it answers: how far below uWSGI's CPU per request any
server can get on this view, when the application's own call is the part no server removes.
"""
import os
import statistics
import subprocess
import sys
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import app_compare as ac  # noqa: E402  (its helpers: the apps, start, nginx, wrk, cpu_ticks)

IN_PROCESS = r"""
import io, os, sys, time
sys.path.insert(0, os.getcwd())
app_name, seconds = sys.argv[1], float(sys.argv[2])
if app_name == "django":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from mysite.wsgi import application
    path = "/hello/"
else:
    from hello import application
    path = "/"
# What nginx's /etc/nginx/uwsgi_params and wrk's request give a server behind nginx (as ours passes it on,
# less its uwsgi.* keys; HTTPS is absent for plain HTTP: `if_not_empty`).
template = {
    "QUERY_STRING": "", "REQUEST_METHOD": "GET", "CONTENT_TYPE": "", "CONTENT_LENGTH": "",
    "REQUEST_URI": path, "PATH_INFO": path, "DOCUMENT_ROOT": "/usr/share/nginx/html",
    "SERVER_PROTOCOL": "HTTP/1.1", "REQUEST_SCHEME": "http", "REMOTE_ADDR": "127.0.0.1",
    "REMOTE_PORT": "40000", "SERVER_PORT": "8080", "SERVER_NAME": "", "HTTP_HOST": "127.0.0.1:8080",
    "SCRIPT_NAME": "", "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
    "wsgi.multithread": False, "wsgi.multiprocess": True, "wsgi.run_once": False,
}

def start_response(status, headers, exc_info=None):
    if not status.startswith("200"):
        raise SystemExit(f"unexpected status {status}")
    return lambda data: None

def call():
    environ = dict(template)
    environ["wsgi.input"] = io.BytesIO(b"")
    result = application(environ, start_response)
    try:
        b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()

for _ in range(500):  # warm up: imports, Django's URL resolver and middleware caches
    call()
calls, cpu0, deadline = 0, time.process_time(), time.monotonic() + seconds
while time.monotonic() < deadline:
    for _ in range(100):
        call()
    calls += 100
print(calls, (time.process_time() - cpu0) * 1e6 / calls)
"""


def in_process(app):
    out = subprocess.run(["/usr/bin/python3", "-c", IN_PROCESS, app, str(ac.DURATION)], cwd=ac.TMP,
                         capture_output=True, text=True, timeout=ac.DURATION + 60, check=True).stdout.split()
    calls, us = int(out[0]), float(out[1])
    return calls / ac.DURATION, us


def main():
    ac.make_apps()
    p = str(ac.PROCESSES)
    backends = {}
    for app, module in (("django", "mysite.wsgi:application"), ("hello", "hello")):
        for name, args, sig in (
                ("ours", [ac.SERVER, "--processes", p, "--module", module, "--chdir", ac.TMP, *ac.NO_LOG],
                 ac.signal.SIGTERM),
                ("uWSGI", ["/usr/bin/uwsgi", "--plugin", "python3", "--master", "--processes", p, "--module", module,
                           "--chdir", ac.TMP, "--disable-logging"], ac.signal.SIGINT)):
            port = ac.free_port()
            proc = ac.start([*args, "--socket", f"127.0.0.1:{port}"], f"floor-{name}-{app}", sig)
            backends[f"{name} {app}"] = (proc.pid, "uwsgi", port, app)
    ports = ac.nginx(backends)
    for name, (_, _, _, app) in backends.items():
        url = f"http://127.0.0.1:{ports[name]}{'/hello/' if app == 'django' else '/'}"
        ac.wait_http(url)
        for _ in range(200):
            urllib.request.urlopen(url, timeout=5).read()
    cells = ["in-process django", "in-process hello", *backends]
    results = {c: [] for c in cells}
    for rep in range(ac.REPS):
        for cell in cells:
            if cell.startswith("in-process"):
                results[cell].append(in_process(cell.split()[1]))
                continue
            pids = ac.descendants(backends[cell][0])
            t0 = ac.cpu_ticks(pids)
            requests, _, bad, errors = ac.wrk(ports[cell], "/hello/" if backends[cell][3] == "django" else "/", 16)
            if bad or errors:
                raise SystemExit(f"{cell}: {bad} bad responses, socket errors {errors}")
            results[cell].append((requests / ac.DURATION, (ac.cpu_ticks(pids) - t0) * ac.TICK_US / requests))
        print(f"rep {rep + 1}/{ac.REPS} done, load average {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    print(f"median of {ac.REPS} interleaved reps of {ac.DURATION} s; load average now {os.getloadavg()}\n")
    print("| cell | calls or requests/s | CPU µs per call or request | per rep |")
    print("|---|---|---|---|")
    med = {c: statistics.median(r[1] for r in results[c]) for c in cells}
    for cell in cells:
        rs = results[cell]
        print(f"| {cell} | {statistics.median(r[0] for r in rs):,.0f} | {med[cell]:.1f} | "
              f"{', '.join(f'{r[1]:.1f}' for r in rs)} |")
    floor, uwsgi = med["in-process django"], med["uWSGI django"]
    print(f"\nThe view called in a loop: {floor:.1f} µs, {floor / uwsgi:.2f}x uWSGI's server CPU per request; "
          f"ours {med['ours django'] / uwsgi:.2f}x. The hello app gives each server's cost of everything that is "
          "not the view (the kernel's socket work, the server, the WSGI glue): the view inside the server costs "
          f"ours {med['ours django'] - med['ours hello']:.1f} µs, uWSGI {uwsgi - med['uWSGI hello']:.1f}, against "
          f"{0.8 * uwsgi:.1f} for a whole request at 0.8x uWSGI's.")


if __name__ == "__main__":
    main()
