#!/usr/bin/python3
"""Memory per item: our server, uWSGI 2.0.21 and memcached 1.6 holding the same data (issue 14,
docs/cache.md 1b). Prints a Markdown table.

Data sets (fixed seeds): 20 000 values of 100 bytes with 12-byte keys; and mixed sizes, log-normal
(median 2 KiB, sigma 1.5) clipped to 100 B .. 1 MiB, 3 000 values.

Measured as the kernel counts it, from just after the start (empty cache) to after the last set. Our
server and uWSGI keep the cache in shared anonymous memory: the pages allocated to those shared-memory
objects (st_blocks of each object, reached through /proc/PID/map_files of the server's processes,
counted once per object): what `Shmem:` in /proc/meminfo counts, without the other processes of a
shared machine. memcached (private memory): the growth of its VmRSS, and its own `stats` `bytes`.
Every row is the median of --reps runs (default 3). Needs root (map_files).

Usage: /usr/bin/python3 bench/cache_memory.py [--reps N]   (env SERVER_BIN: our binary)
"""

import argparse
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "integration"))
sys.dont_write_bytecode = True
from harness import (Server, UwsgiProcess, check, free_port, live_in_group, magic_set, need_uwsgi,  # noqa: E402
                     status_bytes, wait_until)


def small_set():
    return [(b"key:%08d" % i, bytes([65 + i % 26]) * 100) for i in range(20000)]


def mixed_set():
    rnd = random.Random(14)
    out = []
    for i in range(3000):
        size = int(min(max(rnd.lognormvariate(math.log(2048), 1.5), 100), 1 << 20))
        out.append((b"mix:%08d" % i, bytes([97 + i % 26]) * size))
    return out


def shared_anon_bytes(pgid):
    """Bytes allocated to the shared anonymous memory objects mapped by process group pgid."""
    seen = {}
    for pid in live_in_group(pgid):
        try:
            with open(f"/proc/{pid}/maps") as f:
                lines = f.read().splitlines()
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 6 or not fields[1].startswith("rw-s") or not line.endswith("/dev/zero (deleted)"):
                continue
            try:
                st = os.stat(f"/proc/{pid}/map_files/{fields[0]}")
            except OSError:
                continue
            seen[(st.st_dev, st.st_ino)] = st.st_blocks * 512
    return sum(seen.values())


def fill_uwsgi_protocol(addr, data):
    for key, value in data:
        check(magic_set(addr, key, value, timeout=20.0), f"set {key!r} ({len(value)} bytes)")


def measure_ours(args, data):
    port = free_port()
    srv = Server(["--socket", f"127.0.0.1:{port}", "--processes", "1", *args], workers=1)
    srv.start()
    try:
        before = shared_anon_bytes(srv.pid)
        fill_uwsgi_protocol(("127.0.0.1", port), data)
        after = shared_anon_bytes(srv.pid)
        return after - before, after
    finally:
        srv.stop()


def measure_uwsgi(args, data):
    port = free_port()
    uw = UwsgiProcess(["--plugin", "cache", "--master", "--socket", f"127.0.0.1:{port}", "--processes", "1",
                       *args], [("127.0.0.1", port)])
    uw.start()
    try:
        before = shared_anon_bytes(uw.proc.pid)
        fill_uwsgi_protocol(("127.0.0.1", port), data)
        after = shared_anon_bytes(uw.proc.pid)
        return after - before, after
    finally:
        uw.stop()


def measure_memcached(data):
    port = free_port()
    proc = subprocess.Popen(["memcached", "-p", str(port), "-l", "127.0.0.1", "-U", "0", "-m", "2048", "-I", "2m",
                             "-t", "1", "-u", "nobody"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def up():
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return True
            except OSError:
                return False
        check(wait_until(up, 10), "memcached did not start")
        s = socket.create_connection(("127.0.0.1", port), 10)
        f = s.makefile("rb")
        before = status_bytes(proc.pid, "VmRSS")
        for key, value in data:
            s.sendall(b"set %s 0 0 %d\r\n%s\r\n" % (key, len(value), value))
            line = f.readline()
            check(line == b"STORED\r\n", f"memcached set {key!r}: {line!r}")
        after = status_bytes(proc.pid, "VmRSS")
        s.sendall(b"stats\r\n")
        stats = {}
        while True:
            line = f.readline().decode().strip()
            if line == "END":
                break
            parts = line.split()
            stats[parts[1]] = parts[2]
        s.close()
        return after - before, after, int(stats["bytes"])
    finally:
        proc.terminate()
        proc.wait(10)


def mib(n):
    return f"{n / (1 << 20):.1f} MiB"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    opts = parser.parse_args()
    need_uwsgi(("cache",))
    rows = []
    for name, data, ours_args, uwsgi_args in (
        ("20 000 x 100 B", small_set(), [["--cache", "20000"]], ["--cache", "20001"]),  # uWSGI: N - 1 items
        ("3 000 mixed (100 B - 1 MiB, log-normal)", mixed_set(),
         [["--cache2", "name=default,items=4000,blocksize=1048576"],
          ["--cache2", "name=default,items=4000,blocksize=4096,blocks=12000,bitmap=1"]],
         ["--cache2", "name=default,items=4000,blocksize=4096,blocks=12000,bitmap=1"]),
    ):
        stored = sum(len(k) + len(v) for k, v in data)
        def median_row(who, runs):
            grown = statistics.median(r[0] for r in runs)
            total = statistics.median(r[1] for r in runs)
            rows.append((name, who, stored, grown, total, len(data)))

        for args in ours_args:
            median_row("ours " + " ".join(args), [measure_ours(args, data) for _ in range(opts.reps)])
        median_row("uWSGI 2.0.21 " + " ".join(uwsgi_args), [measure_uwsgi(uwsgi_args, data) for _ in range(opts.reps)])
        runs = [measure_memcached(data) for _ in range(opts.reps)]
        median_row(f"memcached 1.6 -m 2048 -I 2m (its stats bytes: {mib(runs[0][2])})", runs)
    print(f"measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, median of {opts.reps}")
    print("| data | server | keys + values stored | grew while filling | ratio | B/item over 1.0x | total after |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, who, stored, grown, total, n in rows:
        print(f"| {name} | {who} | {mib(stored)} | {mib(grown)} | {grown / stored:.2f}x | "
              f"{(grown - stored) / n:.0f} | {mib(total)} |")


if __name__ == "__main__":
    main()
