#!/usr/bin/env python3
"""Fault soak: the shared load generator (uwload, compiled here from ../shared/bench/uwload.c) runs 90%
get / 10% set with values it verifies, while a worker is SIGKILLed every 100 ms for FAULT_SOAK_SECONDS
(default 30; set it higher for a longer soak, running this script directly: ctest's timeout is 300 s).
Beside it a writer stores acknowledged values (magic set, status=ok) in a cache of its own.

Checked: the server keeps answering (no gap of 5 s without an acknowledged write, no request timed out,
the transport errors no more than the requests the kills can cut); no request ever reads a value it did
not write (uwload's check, and the writer's values name their key and sequence); every acknowledged
write reads back (the last one, or a later one whose outcome the kill hid), unless a shard recovery of
that cache dropped it; no shard stays locked (afterwards, a full verifying pass answers every request);
the log names every kill (pid and signal) and every shard recovery (as many "shard wiped" lines as the
caches' own recovery counters).

The victims are workers that have lived 1.2 s or more: a worker dying within 1 s of its start counts
toward the master's fork-bomb guard (docs/architecture.md), which then delays its respawn on purpose.
Prints kills, requests, errors by kind; docs/testing.md ("Fault soak") quotes a run."""

import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (OK_REPLY, SOURCE_DIR, Server, check, check_eq, free_port, magic_get, magic_set_req,  # noqa: E402
                     make_temp_dir, peer_missing, proc_stat, request, run_tests)

SECONDS = float(os.environ.get("FAULT_SOAK_SECONDS", "30"))
SEED = int(os.environ.get("FAULT_SOAK_SEED", str(int(time.time()))))
KILL_EVERY = 0.1
MIN_AGE = 1.2  # only workers older than the master's 1 s quick-death window are killed
WORKERS = 16  # enough workers past MIN_AGE for a kill every 100 ms
CONCURRENCY = 8
KEYS = 1000
ACK_KEYS = 200


def uwload_binary():
    candidates = [os.environ.get("UWLOAD_SRC", ""),
                  os.path.join(SOURCE_DIR, "..", "shared", "bench", "uwload.c"),
                  os.path.join(SOURCE_DIR, "..", "..", "shared", "bench", "uwload.c")]  # from a git worktree
    src = next((c for c in candidates if c and os.path.isfile(c)), None)
    cc = shutil.which("cc") or shutil.which("gcc")
    if src is None or cc is None:
        peer_missing(f"the shared load generator cannot be built (source {src}, compiler {cc}; UWLOAD_SRC names "
                     "uwload.c)")
    out = os.path.join(make_temp_dir("uwl-"), "uwload")
    proc = subprocess.run([cc, "-O2", "-pthread", "-o", out, src], capture_output=True, timeout=120)
    check(proc.returncode == 0, f"cc {src}: {proc.stderr.decode(errors='replace')[-1500:]}")
    return out


def uwload_cmd(binary, addr, *args):
    return [binary, "-a", f"{addr[0]}:{addr[1]}", "-c", str(CONCURRENCY), "-k", str(KEYS), "-v", "64",
            "-t", "5000", "-s", str(SEED), *args]


def uwload_counts(out, rc):
    """uwload's error counts and requests from its report."""
    m = re.search(r"errors +(\d+) \(connect (\d+), reset (\d+), timeout (\d+)\), protocol errors (\d+), "
                  r"bad values (\d+)", out)
    r = re.search(r"^RESULT .*\bops=(\d+)\b", out, re.M)
    check(m and r, f"uwload output not understood (status {rc}):\n{out}")
    counts = dict(zip(("errors", "connect", "reset", "timeout", "protocol", "bad_values"), map(int, m.groups())))
    counts["ops"] = int(r.group(1))
    return counts


class Writer:
    """Acknowledged writes to the "acked" cache: per key the last acknowledged value and the values sent
    since whose outcome is unknown (the worker was killed: a reset or a bare close)."""

    def __init__(self, addr, rng):
        self.addr, self.rng = addr, rng
        self.acked, self.unsettled = {}, {}
        self.counts = {"acked": 0, "closed": 0, "failed": 0}
        self.garbage = []
        self.ack_times = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        seq = 0
        while not self.stop.is_set() and seq < 10_000_000:
            seq += 1
            key = f"ack-{self.rng.randrange(ACK_KEYS)}"
            value = f"{key}|{seq}".encode()
            reply, how = request(self.addr, magic_set_req(key, value, cmd="update", cache="acked"), timeout=5.0)
            ok = True if (reply, how) == (OK_REPLY, "eof") else False if (reply, how) == (b"", "eof") else None
            if ok is None and reply:
                self.garbage.append(f"update {key}: {reply[:60]!r} ({how})")  # never a kill's doing
            if ok:
                self.acked[key] = value
                self.unsettled[key] = []
                self.counts["acked"] += 1
                self.ack_times.append(time.monotonic())
            else:
                # an update always stores (the cache has room): a failure is a kill hiding the outcome
                self.unsettled.setdefault(key, []).append(value)
                self.counts["closed" if ok is False else "failed"] += 1


def test_soak():
    binary = uwload_binary()
    rng = random.Random(SEED)
    port = free_port()
    addr = ("127.0.0.1", port)
    print(f"seed {SEED}: {SECONDS:.0f} s, a SIGKILL every {KILL_EVERY * 1000:.0f} ms, {WORKERS} workers, "
          f"uwload c={CONCURRENCY} get=90,set=10 over {KEYS} keys")
    args = ["--socket", f"127.0.0.1:{port}", "--processes", str(WORKERS), "--cache2", "name=default,items=4000",
            "--cache2", "name=acked,items=1000"]
    with Server(args, workers=WORKERS, ready_timeout=30.0) as srv:
        off = srv.log_size()
        first_seen = {}
        load = subprocess.Popen(uwload_cmd(binary, addr, "-m", "get=90,set=10", "-d", str(int(SECONDS))),
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        writer = Writer(addr, random.Random(rng.random()))
        writer.thread.start()
        kills, dying, idle_ticks, busy_kills = [], set(), 0, 0
        t0 = time.monotonic()
        try:
            next_kill = t0
            while time.monotonic() - t0 < SECONDS and len(kills) < 100000:
                now = time.monotonic()
                live = srv.workers()
                for w in live:
                    first_seen.setdefault(w, now)
                # (a killed worker can still be listed while it dies: never twice)
                old = [w for w in live if now - first_seen[w] >= MIN_AGE and w not in dying]
                # a worker on a CPU is serving a request: such a kill cuts it, maybe inside a mutation
                running = [w for w in old if (proc_stat(w) or "S")[0] == "R"]
                if old:
                    victim = rng.choice(running or old)
                    busy_kills += bool(running)
                    os.kill(victim, signal.SIGKILL)
                    kills.append(victim)
                    dying.add(victim)
                else:
                    idle_ticks += 1
                next_kill += KILL_EVERY
                time.sleep(max(0.0, next_kill - time.monotonic()))
        finally:
            writer.stop.set()
            writer.thread.join(10.0)
            try:
                out, _ = load.communicate(timeout=SECONDS + 30)
            except subprocess.TimeoutExpired:
                load.kill()
                out, _ = load.communicate()
        out = out.decode(errors="replace")
        rc = load.returncode
        c = uwload_counts(out, rc)
        errors, connect, reset, timeout, protocol, bad, ops = (c[k] for k in ("errors", "connect", "reset", "timeout",
                                                                               "protocol", "bad_values", "ops"))
        gaps = [b - a for a, b in zip(writer.ack_times, writer.ack_times[1:])]
        print(f"{len(kills)} kills in {SECONDS:.0f} s ({busy_kills} of a worker on a CPU; {idle_ticks} ticks without a "
              f"worker old enough); uwload: {ops} "
              f"requests, errors: connect {connect}, reset {reset}, timeout {timeout}, protocol {protocol}, "
              f"bad values {bad}; writer: {writer.counts['acked']} acknowledged, {writer.counts['closed']} closed "
              f"without a reply, {writer.counts['failed']} reset or timed out; longest wait for an "
              f"acknowledgement {max(gaps, default=0):.2f} s")
        first = re.search(r"^first error +(.*)$", out, re.M)
        check(rc in (0, 2), f"uwload exit status {rc} (3 = a wrong value or a protocol error):\n{out}")
        check_eq((protocol, bad), (0, 0), "protocol errors and bad values (a value the key never had)")
        check_eq(timeout, 0, "requests that timed out (5 s): the server stopped answering"
                 + (f" ({first.group(1)})" if first else ""))
        check(errors <= len(kills) * CONCURRENCY,
              f"{errors} transport errors for {len(kills)} kills: more than the requests in flight they can cut")
        check(len(kills) >= SECONDS / KILL_EVERY / 2, f"only {len(kills)} kills in {SECONDS:.0f} s")
        check(ops > len(kills), f"only {ops} requests in {SECONDS:.0f} s")
        check(not writer.garbage, f"replies to the writer that are neither status=ok nor a bare close: {writer.garbage[:5]}")
        check(writer.counts["acked"] > 0 and max(gaps, default=0) < 5.0,
              f"the writer waited {max(gaps, default=0):.2f} s for an acknowledgement")

        # Afterwards, no kills: a verifying pass over the keys answers every request (a shard left locked
        # would time out), with the right values.
        proc = subprocess.run(uwload_cmd(binary, addr, "-m", "get=100", "-n", "5000", "-d", "60"),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=90)
        rc2, out2 = proc.returncode, proc.stdout.decode(errors="replace")
        c2 = uwload_counts(out2, rc2)
        print(f"verifying pass: {c2['ops']} gets, {c2['errors']} errors, {c2['bad_values']} bad values")
        check_eq(rc2, 0, f"verifying pass after the soak:\n{out2}")
        check_eq(c2["ops"], 5000, "gets answered in the verifying pass")

        # The log: every kill named (pid and signal), every shard recovery named and counted.
        unnamed = [k for k in kills if not srv.death_logged(k, off)]
        check(not unnamed, f"kills the log does not name (pid and signal 9): {unnamed[:10]}")
        stats_at = srv.log_size()
        srv.send_signal(signal.SIGUSR1)
        check(srv.wait_log(r'stats: cache "acked".*shard recoveries \d+', 5.0, stats_at), "no stats after SIGUSR1")
        log = srv.log_since(off, srv.log_size() - off)
        counted = {c: int(n) for c, n in re.findall(r'stats: cache "(\w+)":.*shard recoveries (\d+)', log)}
        wiped = re.findall(r'cache "(\w+)": a process died inside shard \d+: shard wiped \((\d+) items dropped\)', log)
        named = {c: sum(1 for w in wiped if w[0] == c) for c in counted}
        dropped = {c: sum(int(n) for cc, n in wiped if cc == c) for c in counted}
        print(f"shard recoveries: {counted} (items dropped {dropped}); log lines naming them: {named}")
        check_eq(named, counted, "shard recoveries named in the log, per cache (against the caches' counters)")

        # Every acknowledged write reads back, unless a recovery of the "acked" cache dropped its shard.
        wrong, lost = [], []
        for i in range(ACK_KEYS):
            key = f"ack-{i}"
            got = magic_get(addr, key, cache="acked")
            acked, unsettled = writer.acked.get(key), writer.unsettled.get(key, [])
            if got is not None and got != acked and got not in unsettled:
                wrong.append(f"{key}: {got!r} (acknowledged {acked!r}, unsettled {unsettled[-3:]!r})")
            elif got is None and acked is not None and not unsettled:
                lost.append(key)
        check(not wrong, f"values never written as the last or an unsettled write: {wrong[:5]}")
        check(len(lost) <= dropped["acked"], f"acknowledged writes lost: {lost[:10]} ({len(lost)}; items dropped by "
              f"recoveries of that cache: {dropped['acked']})")
        print(f"acknowledged keys read back: {ACK_KEYS - len(lost)} of {ACK_KEYS} "
              f"({len(lost)} dropped with a wiped shard)")
        check(srv.running(), "the master died")
        check_eq(srv.stop(), 0, "exit status after SIGTERM")


if __name__ == "__main__":
    run_tests([test_soak], budget=int(SECONDS) + 120)
