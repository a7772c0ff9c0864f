#!/usr/bin/env python3
"""The 10% slow mix of bench/app_compare.py alone, for an A/B of builds of ours against uWSGI.

    bench/slow_mix.py SERVER [SERVER...]        # env: REPS=4 (samples per server), SECONDS=5

Every build (2 processes, default threads, `--socket`) and uWSGI 2.0.21 (2 processes) behind one nginx,
the same hello-world app; each rep runs the mix (16 keep-alive connections, every 10th request of each
sleeps 100 ms) once against each server in turn, and the fast requests' p99 of every sample is printed:
the figure is bimodal (a fast request waits for one slow request or for two), so one sample says little.
"""
import asyncio
import os
import signal
import sys

builds = [os.path.abspath(b) for b in sys.argv[1:]]
if not builds:
    raise SystemExit(__doc__)
sys.argv = [sys.argv[0], builds[0]]  # app_compare reads its server from argv at import
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import app_compare as ac  # noqa: E402  (its helpers: start, nginx, mix_client, the hello app)

REPS = int(os.environ.get("REPS", "4"))
SECONDS = float(os.environ.get("SECONDS", "5"))


def main():
    ac.make_apps()
    backends = {}
    for i, build in enumerate(builds):
        port = ac.free_port()
        proc = ac.start([build, "--socket", f"127.0.0.1:{port}", "--processes", "2", "--module", "hello", "--chdir",
                         ac.TMP, *ac.NO_LOG], f"ours{i}")
        backends[f"{i}: {build}"] = (proc.pid, "uwsgi", port, "hello")
    port = ac.free_port()
    proc = ac.start(["/usr/bin/uwsgi", "--plugin", "python3", "--master", "--processes", "2", "--socket",
                     f"127.0.0.1:{port}", "--module", "hello", "--chdir", ac.TMP, "--disable-logging"], "uwsgi",
                    signal.SIGINT)
    backends["uWSGI 2.0.21"] = (proc.pid, "uwsgi", port, "hello")
    ports = ac.nginx(backends)
    for name in backends:
        ac.wait_http(f"http://127.0.0.1:{ports[name]}/")
    p99s = {name: [] for name in backends}
    for _ in range(REPS):
        for name in backends:
            _, _, _, p99 = asyncio.run(ac.mix_client(ports[name], duration=SECONDS))
            p99s[name].append(p99)
    print(f"fast requests' p99 (ms), {REPS} samples of {SECONDS:g} s per server, interleaved:")
    for name, values in p99s.items():
        print(f"  {name}: {', '.join(f'{v:.1f}' for v in values)}")


if __name__ == "__main__":
    main()
