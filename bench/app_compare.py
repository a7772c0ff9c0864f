#!/usr/bin/python3
"""Hosted WSGI applications side by side, in one interleaved run: ours against uWSGI 2.0.21 and Gunicorn
20.1 (Debian's), equal processes, default thread settings (Gunicorn gthread: --threads 4).

- behind nginx (wrk keep-alive to nginx; nginx -> ours / uWSGI over the uwsgi protocol, -> Gunicorn over
  HTTP): a hello-world app (c=16 and 64) and a view of a `django-admin startproject` project (c=16);
- direct HTTP: ours --http-socket, uWSGI --http-socket, Gunicorn sync (hello, c=16);
- a mix with 10% requests taking 100 ms (behind nginx, 16 keep-alive connections, every 10th request of
  each connection slow): p50/p99 latency of the fast ones.

Figures: requests/s (median of REPS), server CPU per request (user+system ticks of the server's processes
from /proc, summed over the run, divided by the requests wrk counted), p99 latency (median of REPS).
Usage: bench/app_compare.py [SERVER_BIN]   env: PROCESSES=2 DURATION=4 REPS=3 NGINX_WORKERS=1 ONLY= BASELINE=
Loopback only; every run bounded by DURATION; everything started is stopped by pid at exit."""
import asyncio
import atexit
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SERVER = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "build", "bin", "server"))
PROCESSES = int(os.environ.get("PROCESSES", "2"))
DURATION = int(os.environ.get("DURATION", "4"))
REPS = int(os.environ.get("REPS", "3"))
# A/B: another build of ours (e.g. main's) as one more server with default settings, "base" in the tables.
BASELINE = os.environ.get("BASELINE", "")
# uWSGI runs with --disable-logging and Gunicorn keeps no access log by default: ours logs no requests
# either (docs/benchmarks.md, "The request log's cost", has what the log costs).
NO_LOG = ["--disable-logging"]
ONLY = re.compile(os.environ.get("ONLY", ""))  # run only the cells whose "server/app c=N" matches
# nginx's worker_processes: 1 by default (its one worker is then the rate's ceiling behind it, for every
# server alike: docs/benchmarks.md); "auto" as Debian's own nginx.conf has it (one per core).
NGINX_WORKERS = os.environ.get("NGINX_WORKERS", "1")
TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")
TMP = tempfile.mkdtemp(prefix="appbench-")
PROCS = []  # (Popen, stop signal)


def stop_all():
    for proc, sig in PROCS:
        if proc.poll() is None:
            proc.send_signal(sig)
    for proc, _ in PROCS:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


atexit.register(stop_all)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(args, name, sig=signal.SIGTERM, cwd=TMP):
    log = open(os.path.join(TMP, name + ".log"), "ab")
    proc = subprocess.Popen(args, stdout=log, stderr=log, stdin=subprocess.DEVNULL, cwd=cwd)
    PROCS.append((proc, sig))
    return proc


def descendants(pid):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def cpu_ticks(pids):
    total = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total


def wait_http(url, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"not answering: {url}")


def make_apps():
    with open(os.path.join(TMP, "hello.py"), "w") as f:
        f.write('import time\n'
                'def application(environ, start_response):\n'
                '    if environ["PATH_INFO"] == "/slow":\n'
                '        time.sleep(0.1)\n'
                '    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])\n'
                '    return [b"Hello, World!"]\n')
    subprocess.run(["/usr/bin/python3", "-m", "django", "startproject", "mysite", TMP], check=True)
    with open(os.path.join(TMP, "mysite", "settings.py"), "a") as f:
        f.write('\nDEBUG = False\nALLOWED_HOSTS = ["*"]\n')
    with open(os.path.join(TMP, "mysite", "urls.py"), "a") as f:
        f.write('\nfrom django.http import HttpResponse\n'
                'urlpatterns += [path("hello/", lambda request: HttpResponse("Hello, World!"))]\n')


def servers():
    """name -> (master pid, kind ('uwsgi' | 'http'), port, app) for every server of the comparison."""
    out = {}
    p = str(PROCESSES)
    for app, module in (("hello", "hello"), ("django", "mysite.wsgi:application")):
        port = free_port()
        proc = start([SERVER, "--socket", f"127.0.0.1:{port}", "--processes", p, "--module", module, "--chdir", TMP,
                      *NO_LOG], f"ours-{app}")
        out[f"ours/{app}"] = (proc.pid, "uwsgi", port, app)
        port = free_port()
        proc = start(["/usr/bin/uwsgi", "--plugin", "python3", "--master", "--processes", p, "--socket",
                      f"127.0.0.1:{port}", "--module", module, "--chdir", TMP, "--disable-logging"],
                     f"uwsgi-{app}", signal.SIGINT)
        out[f"uWSGI/{app}"] = (proc.pid, "uwsgi", port, app)
        for kind, extra in (("sync", []), ("gthread", ["--threads", "4"])):
            port = free_port()
            proc = start(["/usr/bin/gunicorn", "-k", kind, *extra, "-w", p, "-b", f"127.0.0.1:{port}", "--chdir", TMP,
                          module if ":" in module else module + ":application"], f"gunicorn-{kind}-{app}")
            out[f"Gunicorn {kind}/{app}"] = (proc.pid, "http", port, app)
    if BASELINE:
        port = free_port()
        proc = start([BASELINE, "--socket", f"127.0.0.1:{port}", "--processes", p, "--module", "hello", "--chdir",
                      TMP, *NO_LOG], "base-hello")
        out["base/hello"] = (proc.pid, "uwsgi", port, "hello")
    port = free_port()  # for information: the application on the event loop, uWSGI's own model
    proc = start([SERVER, "--socket", f"127.0.0.1:{port}", "--processes", p, "--threads", "0", "--module", "hello",
                  "--chdir", TMP, *NO_LOG], "ours-threads0")
    out["ours --threads 0/hello"] = (proc.pid, "uwsgi", port, "hello")
    for name, args, sig in (("ours --http-socket", [SERVER, "--http-socket", "{addr}", "--processes", p, "--module",
                                                    "hello", "--chdir", TMP, *NO_LOG], signal.SIGTERM),
                            ("Gunicorn sync", ["/usr/bin/gunicorn", "-k", "sync", "-w", p, "-b", "{addr}", "--chdir",
                                               TMP, "hello:application"], signal.SIGTERM),
                            ("uWSGI --http-socket", ["/usr/bin/uwsgi", "--plugin", "python3", "--master",
                                                     "--processes", p, "--http-socket", "{addr}", "--module", "hello",
                                                     "--chdir", TMP, "--disable-logging"], signal.SIGINT)):
        port = free_port()
        proc = start([a.replace("{addr}", f"127.0.0.1:{port}") for a in args], name.split()[0] + "-direct", sig)
        out[f"{name}/direct"] = (proc.pid, "direct", port, "hello")
    return out


def nginx(backends):
    """One nginx (1 worker) with a server block per backend; returns name -> nginx port."""
    ports, blocks = {}, []
    for name, (_, kind, port, _) in backends.items():
        if kind == "direct":
            continue
        ports[name] = free_port()
        if kind == "uwsgi":
            loc = f"include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:{port};"
        else:
            loc = (f"proxy_pass http://127.0.0.1:{port}; proxy_set_header Host $host; "
                   "proxy_set_header X-Forwarded-For $remote_addr;")
        blocks.append(f"server {{ listen 127.0.0.1:{ports[name]}; location / {{ {loc} }} }}")
    d = os.path.join(TMP, "ngx")
    os.makedirs(d)
    user = "user root;" if os.geteuid() == 0 else ""
    conf = (f"{user}\nworker_processes {NGINX_WORKERS}; daemon off; pid {d}/nginx.pid; error_log {d}/error.log warn;\n"
            "events { worker_connections 4096; }\n"
            f"http {{ access_log off; client_body_temp_path {d}/cb; proxy_temp_path {d}/p; fastcgi_temp_path {d}/f; "
            f"uwsgi_temp_path {d}/u; scgi_temp_path {d}/s;\n" + "\n".join(blocks) + "\n}\n")
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(conf)
    start(["/usr/sbin/nginx", "-p", d, "-c", os.path.join(d, "nginx.conf"), "-e", os.path.join(d, "error.log")],
          "nginx", signal.SIGQUIT)
    return ports


def wrk(port, path, conns):
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{DURATION}s", "--latency", f"http://127.0.0.1:{port}{path}"],
                         capture_output=True, text=True, timeout=DURATION + 30).stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    p99 = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", out)
    p99_ms = float(p99.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[p99.group(2)]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return requests, p99_ms, int(bad.group(1)) if bad else 0, errors.group(1) if errors else ""


async def mix_client(port, conns=16, duration=5.0, records=None):
    """16 keep-alive connections; request i of connection k is /slow when (i + k) % 10 == 0.
    records: a list that gets (slow?, sent, answered) per request, CLOCK_MONOTONIC ns (bench/slow_mix.py)."""
    fast, slow = [], []
    deadline = time.monotonic() + duration

    async def one(k):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = 0
        while time.monotonic() < deadline:
            path = "/slow" if (i + k) % 10 == 0 else "/"
            t0 = time.monotonic_ns()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length:\s*(\d+)", head).group(1))
            await reader.readexactly(length)
            t1 = time.monotonic_ns()
            (slow if path == "/slow" else fast).append((t1 - t0) / 1e6)
            if records is not None:
                records.append((path == "/slow", t0, t1))
            i += 1
        writer.close()

    await asyncio.gather(*(one(k) for k in range(conns)))
    fast.sort()
    return len(fast), len(slow), fast[len(fast) // 2], fast[int(len(fast) * 0.99)]


def main():
    if not os.access(SERVER, os.X_OK):
        raise SystemExit(f"no server binary at {SERVER}")
    make_apps()
    backends = servers()
    ports = nginx(backends)
    for name, (_, kind, port, app) in backends.items():
        path = "/hello/" if app == "django" else "/"
        wait_http(f"http://127.0.0.1:{ports.get(name, port)}{path}")
        for _ in range(200):  # warm up (Django's first requests, the workers' imports)
            urllib.request.urlopen(f"http://127.0.0.1:{ports.get(name, port)}{path}", timeout=5).read()
    cells = []  # (name, app, conns)
    for name, (_, kind, _, app) in backends.items():
        for conns in ((16, 64) if app == "hello" and kind != "direct" else (16,)):
            if ONLY.search(f"{name} c={conns}"):
                cells.append((name, app, conns))
    results = {c: [] for c in cells}
    for rep in range(REPS):
        # Odd reps run the cells in reverse: no cell always follows the same neighbour nor holds the same
        # place in the rep (in two runs in one order the default's cell, always first, came out 0.73-0.87x
        # of --threads 0's; in two alternating runs 0.98-1.10x: docs/benchmarks.md).
        for cell in (cells if rep % 2 == 0 else cells[::-1]):
            name, app, conns = cell
            pid, kind, port, _ = backends[name]
            pids = descendants(pid)
            t0 = cpu_ticks(pids)
            requests, p99, bad, errors = wrk(ports.get(name, port), "/hello/" if app == "django" else "/", conns)
            ticks = cpu_ticks(pids) - t0
            results[cell].append((requests / DURATION, ticks * TICK_US / max(requests, 1), p99, bad, errors))
        print(f"rep {rep + 1}/{REPS} done", file=sys.stderr, flush=True)
    print(f"{PROCESSES} processes each; wrk -t1 -d{DURATION}s, median of {REPS} interleaved runs; server CPU = "
          "user+system of the server's processes (nginx not included)\n")
    print("| path | app | server | c | requests/s | server CPU µs/request | p99 ms | errors | requests/s per rep |")
    print("|---|---|---|---|---|---|---|---|---|")
    for cell in cells:
        name, app, conns = cell
        server, _, where = name.partition("/")
        rs = results[cell]
        med = lambda i: statistics.median(r[i] for r in rs)  # noqa: E731
        errs = sum(r[3] for r in rs)
        sock = "; ".join(r[4] for r in rs if r[4])
        path = "direct HTTP" if where == "direct" else "nginx"
        print(f"| {path} | {app} | {server} | {conns} | {med(0):,.0f} | {med(1):.1f} | {med(2):.2f} | "
              f"{errs}{' ' + sock if sock else ''} | {', '.join(f'{r[0]:,.0f}' for r in rs)} |")
    print("\nRatios (ours / peer, same cell):")
    for cell in cells:
        name, app, conns = cell
        if not name.startswith("ours") or "--threads 0" in name:
            continue
        mine = results[cell]
        for other in cells:
            oname, oapp, oconns = other
            same_path = (name.endswith("/direct")) == (oname.endswith("/direct"))
            # The default against --threads 0 too: the default thread setting must be the fast one.
            ours_other = oname.startswith("ours") and "--threads 0" not in oname
            if ours_other or oapp != app or oconns != conns or not same_path:
                continue
            theirs = results[other]
            rps = statistics.median(r[0] for r in mine) / statistics.median(r[0] for r in theirs)
            cpu = statistics.median(r[1] for r in mine) / statistics.median(r[1] for r in theirs)
            # Each rep's own ratio (the two cells ran within a minute of each other): its spread is the noise.
            paired = sorted(a[0] / b[0] for a, b in zip(mine, theirs))
            print(f"- {app} c={conns} {'direct' if name.endswith('/direct') else 'nginx'}: vs {oname.split('/')[0]}: "
                  f"{rps:.2f}x requests/s, {cpu:.2f}x CPU/request (per rep: "
                  f"{', '.join(f'{x:.2f}' for x in paired)}x requests/s)")
    print("\n10% of requests take 100 ms (hello /slow), 16 keep-alive connections through nginx, 5 s:\n")
    print("| server | fast requests | slow requests | fast p50 ms | fast p99 ms |")
    print("|---|---|---|---|---|")
    for name in ("ours/hello", "base/hello", "uWSGI/hello", "Gunicorn sync/hello", "Gunicorn gthread/hello"):
        if name not in ports or not ONLY.search(name):
            continue
        n_fast, n_slow, p50, p99 = asyncio.run(mix_client(ports[name]))
        print(f"| {name.split('/')[0]} | {n_fast} | {n_slow} | {p50:.2f} | {p99:.2f} |")


if __name__ == "__main__":
    main()
