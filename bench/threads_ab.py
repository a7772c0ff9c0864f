#!/usr/bin/env python3
"""Builds or settings of ours side by side on the hello-world app behind one nginx, many short interleaved
cells, each rep's order reversed from the last: the A/B for a difference of a few percent on a shared
machine (bench/app_compare.py runs every server and app; this runs ours, and uWSGI for the scale).

    bench/threads_ab.py "default=build/bin/server" "threads0=build/bin/server --threads 0" ... [uWSGI=uwsgi]
        # env: CONNS="1 16" REPS=12 DURATION=1 (seconds per cell), PROCESSES=2

Per cell: requests/s, the server's CPU per request and nginx's (every thread's run time from
/proc/*/task/*/schedstat, in ns: the user+system ticks are 10 ms coarse, a few percent of a short cell),
wrk's own CPU per request, the server's voluntary and involuntary context switches per request (every
thread) and nginx's voluntary ones (its sleeps), wrk's p50 / p99; a variant whose command is `uwsgi` is uWSGI 2.0.21 as app_compare runs it. The
summary gives, for every variant against the first, the median of the reps' own ratios and their spread.
To keep other sessions' load off the measured processes, run it under `chrt -f 10` (SCHED_FIFO: the
figures are then those of a quiet machine, but the kernel's real-time throttling stops everything for
50 ms a second, so p99 means nothing there)."""
import os
import resource
import shlex
import statistics
import sys
import time
import urllib.request

variants = [(spec.partition("=")[0], shlex.split(spec.partition("=")[2])) for spec in sys.argv[1:]]
if not variants or any(not cmd for _, cmd in variants):
    raise SystemExit(__doc__)
variants = [(name, cmd if cmd == ["uwsgi"] else [os.path.abspath(cmd[0]), *cmd[1:]])  # the servers run elsewhere
            for name, cmd in variants]
sys.argv = [sys.argv[0]]  # app_compare reads a server from argv at import: not used here
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import app_compare as ac  # noqa: E402  (its helpers: the hello app, start, nginx, wrk, cpu_ticks)

CONNS = [int(c) for c in os.environ.get("CONNS", "1 16").split()]
REPS = int(os.environ.get("REPS", "12"))
DURATION = int(os.environ.get("DURATION", "1"))


def cpu_ns(pids):
    """CPU time of every thread of pids, in ns (schedstat's run time: the /proc ticks are 10 ms coarse)."""
    total = 0
    for pid in pids:
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def switches(pids):
    voluntary = involuntary = 0
    for pid in pids:
        try:
            for tid in os.listdir(f"/proc/{pid}/task"):
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    for line in f:
                        if line.startswith("voluntary_ctxt_switches"):
                            voluntary += int(line.split()[1])
                        elif line.startswith("nonvoluntary_ctxt_switches"):
                            involuntary += int(line.split()[1])
        except OSError:
            pass
    return voluntary, involuntary


def wrk(port, conns):
    """requests, p50 ms, p99 ms, wrk's own CPU µs (user+system of the finished child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = ac.subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{DURATION}s", "--latency", f"http://127.0.0.1:{port}/"],
                            capture_output=True, text=True, timeout=DURATION + 30).stdout
    requests = int(ac.re.search(r"(\d+) requests in", out).group(1))
    if ac.re.search(r"Non-2xx or 3xx responses|Socket errors", out):
        raise SystemExit(f"wrk saw errors:\n{out}")

    def percentile(p):
        m = ac.re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)\b", out)
        return float(m.group(1)) * {"us": 1e-3, "ms": 1, "s": 1e3}[m.group(2)]

    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_us = (after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1e6
    return requests, percentile(50), percentile(99), cpu_us


def main():
    ac.make_apps()
    backends = {}
    for name, cmd in variants:
        port = ac.free_port()
        if cmd == ["uwsgi"]:  # uWSGI 2.0.21 as app_compare runs it, for the scale
            proc = ac.start(["/usr/bin/uwsgi", "--plugin", "python3", "--master", "--processes", str(ac.PROCESSES),
                             "--socket", f"127.0.0.1:{port}", "--module", "hello", "--chdir", ac.TMP,
                             "--disable-logging"], f"ab-{name}", ac.signal.SIGINT)
        else:
            proc = ac.start([*cmd, "--socket", f"127.0.0.1:{port}", "--processes", str(ac.PROCESSES), "--module",
                             "hello", "--chdir", ac.TMP, *ac.NO_LOG], f"ab-{name}")
        backends[name] = (proc.pid, "uwsgi", port, "hello")
    ports = ac.nginx(backends)
    nginx_pid = ac.PROCS[-1][0].pid
    for name in backends:
        ac.wait_http(f"http://127.0.0.1:{ports[name]}/")
        for _ in range(200):
            urllib.request.urlopen(f"http://127.0.0.1:{ports[name]}/", timeout=5).read()
    time.sleep(1)
    results = {}
    names = list(backends)
    for rep in range(REPS):
        for conns in CONNS:
            for name in (names if rep % 2 == 0 else names[::-1]):
                pids, nginx_pids = ac.descendants(backends[name][0]), ac.descendants(nginx_pid)
                cpu0, ngx0, sw0, nsw0 = cpu_ns(pids), cpu_ns(nginx_pids), switches(pids), switches(nginx_pids)
                requests, p50, p99, wrk_us = wrk(ports[name], conns)
                cpu1, ngx1, sw1, nsw1 = cpu_ns(pids), cpu_ns(nginx_pids), switches(pids), switches(nginx_pids)
                results.setdefault((conns, name), []).append(
                    (requests / DURATION, (cpu1 - cpu0) / 1e3 / requests, (ngx1 - ngx0) / 1e3 / requests,
                     (sw1[0] - sw0[0]) / requests, (sw1[1] - sw0[1]) / requests, p50, p99, wrk_us / requests,
                     (nsw1[0] - nsw0[0]) / requests))
        print(f"rep {rep + 1}/{REPS} done, load average {os.getloadavg()[0]:.1f}", file=sys.stderr, flush=True)
    print(f"{ac.PROCESSES} processes each behind one nginx; wrk -t1 -d{DURATION}s; medians of {REPS} reps; "
          f"load average now {os.getloadavg()}\n")
    print("| c | variant | requests/s | server CPU µs/req | nginx CPU µs/req | wrk CPU µs/req | "
          "server voluntary switches/req | involuntary/req | nginx voluntary/req | p50 ms | p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (conns, name), rs in results.items():
        med = [statistics.median(r[i] for r in rs) for i in range(9)]
        print(f"| {conns} | {name} | {med[0]:,.0f} | {med[1]:.1f} | {med[2]:.1f} | {med[7]:.1f} | {med[3]:.2f} | "
              f"{med[4]:.2f} | {med[8]:.2f} | {med[5]:.3f} | {med[6]:.2f} |")
    print()
    for conns in CONNS:
        first = results[(conns, names[0])]
        for name in names[1:]:
            rs = results[(conns, name)]
            rate = sorted(r[0] / b[0] for r, b in zip(rs, first))
            cpu = sorted(r[1] / b[1] for r, b in zip(rs, first))
            print(f"- c={conns} {name} / {names[0]}: requests/s {statistics.median(rate):.3f}x (quartiles "
                  f"{rate[len(rate) // 4]:.3f}-{rate[3 * len(rate) // 4]:.3f}), server CPU/request "
                  f"{statistics.median(cpu):.3f}x")


if __name__ == "__main__":
    main()
