#!/usr/bin/env python3
"""The 10% slow mix of bench/app_compare.py alone, for an A/B of builds of ours against uWSGI.

    bench/slow_mix.py SERVER [SERVER...]        # env: REPS=4 (samples per server), SECONDS=5
    bench/slow_mix.py build/bin/server "build/bin/server --threads 2"   # a build with options of its own

Every build (2 processes, default threads, `--socket`) and uWSGI 2.0.21 (2 processes) behind one nginx,
the same hello-world app; each rep runs the mix (16 keep-alive connections, every 10th request of each
sleeps 100 ms) once against each server in turn, and the fast requests' p99 of every sample is printed:
the figure is bimodal (a fast request waits for one slow request or for two), so one sample says little:
the summary counts the samples on the slow mode (p99 over 150 ms) per server. For each sample it also
counts the fast requests over 150 ms and, of those, the ones that had two slow requests or more ahead of
them (sent before them, started after them: FIFO puts them first), the mechanism docs/architecture.md
describes ("The fast requests' p99 in the 10% slow mix").
"""
import asyncio
import os
import shlex
import signal
import sys

builds = [shlex.split(b) for b in sys.argv[1:]]  # a binary, then options of its own
if not builds:
    raise SystemExit(__doc__)
builds = [[os.path.abspath(b[0]), *b[1:]] for b in builds]
sys.argv = [sys.argv[0], builds[0][0]]  # app_compare reads its server from argv at import
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import app_compare as ac  # noqa: E402  (its helpers: start, nginx, mix_client, the hello app)

REPS = int(os.environ.get("REPS", "4"))
SECONDS = float(os.environ.get("SECONDS", "5"))
SLOW_MS = 100  # the hello app's /slow
LATE_MS = 150  # between the two modes (about 100 and 200 ms)


def behind_two_slow(records):
    """Fast requests over LATE_MS, and how many of them had >= 2 slow requests ahead in FIFO order."""
    slow = [(sent, answered - SLOW_MS * 1_000_000) for is_slow, sent, answered in records if is_slow]
    late = [(sent, answered) for is_slow, sent, answered in records
            if not is_slow and answered - sent > LATE_MS * 1_000_000]
    behind = sum(1 for sent, answered in late
                 if sum(1 for s_sent, s_start in slow if s_sent < sent < s_start < answered) >= 2)
    return len(late), behind


def main():
    ac.make_apps()
    backends = {}
    for i, build in enumerate(builds):
        port = ac.free_port()
        proc = ac.start([build[0], "--socket", f"127.0.0.1:{port}", "--processes", "2", "--module", "hello",
                         "--chdir", ac.TMP, *ac.NO_LOG, *build[1:]], f"ours{i}")
        backends[f"{i}: {' '.join(build)}"] = (proc.pid, "uwsgi", port, "hello")
    port = ac.free_port()
    proc = ac.start(["/usr/bin/uwsgi", "--plugin", "python3", "--master", "--processes", "2", "--socket",
                     f"127.0.0.1:{port}", "--module", "hello", "--chdir", ac.TMP, "--disable-logging"], "uwsgi",
                    signal.SIGINT)
    backends["uWSGI 2.0.21"] = (proc.pid, "uwsgi", port, "hello")
    ports = ac.nginx(backends)
    for name in backends:
        ac.wait_http(f"http://127.0.0.1:{ports[name]}/")
    p99s = {name: [] for name in backends}
    lates = {name: [] for name in backends}
    for _ in range(REPS):
        for name in backends:
            records = []
            _, _, _, p99 = asyncio.run(ac.mix_client(ports[name], duration=SECONDS, records=records))
            p99s[name].append(p99)
            lates[name].append(behind_two_slow(records))
    print(f"fast requests' p99 (ms), {REPS} samples of {SECONDS:g} s per server, interleaved "
          f"(load average {os.getloadavg()[0]:.1f}):")
    for name, values in p99s.items():
        on_slow_mode = sum(1 for v in values if v > LATE_MS)
        print(f"  {name}: {', '.join(f'{v:.1f}' for v in values)}  -- {on_slow_mode} of {len(values)} over {LATE_MS} ms")
    print(f"fast requests over {LATE_MS} ms per sample (of them, behind two slow requests or more):")
    for name, values in lates.items():
        print(f"  {name}: {', '.join(f'{n} ({b})' for n, b in values)}")


if __name__ == "__main__":
    main()
