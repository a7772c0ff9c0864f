"""Fault test for --cache-store: N rounds (STORE_FAULT_ROUNDS, default 8) of
  start the server on one store file (--cache-store-sync 1, --log-debug), write self-checking values from
  several clients (modifier2 17 set/update), SIGKILL the whole process group at a random moment -- in
  every other round while the master is inside a store sync --, restart, read every key back.
Every value read must be exactly one written for that key (it encodes its key and a checksum, and must be
the last acknowledged value or one whose outcome the client could not know: in flight at the kill, or
answered by a bare close at or after the kill -- a worker killed between applying a write and replying
looks exactly like a refused write, since failures close without a reply); a key whose last write was
acknowledged and had nothing unsettled must be there (a process kill loses nothing that was acknowledged: the pages are
the kernel's); in particular every item acknowledged before the last completed sync must be there.
While the server is up every write must be answered (an error, or a refused update -- the cache has room
for every key --, fails the round) and each round must acknowledge writes. A kill aimed at a sync lands
inside one by construction: in those rounds the server runs with the test-only hook
UCACHED_TEST_HOLD_STORE_SYNC (master/test_hooks.hpp), the test asks it to hold the next sync before or
after its msync (in turn), waits for the "held" line and only then sends SIGKILL, while the workers
keep writing; the dead master's log must end inside that sync.
Reports rounds, items checked, items dropped at load. See docs/persistence.md."""

import hashlib
import os
import random
import re
import signal
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Server, check, free_port, magic_get, magic_set, make_temp_dir, run_tests  # noqa: E402

ROUNDS = int(os.environ.get("STORE_FAULT_ROUNDS", "8"))
CLIENTS = 4
KEYS_PER_CLIENT = 250
SEED = int(os.environ.get("STORE_FAULT_SEED", str(int(time.time()))))


def make_value(key, writer, seq, rng):
    body = f"{key}|{writer}|{seq}|".encode() + bytes(rng.getrandbits(8) for _ in range(rng.choice((8, 200, 3000))))
    return body + hashlib.sha1(key.encode() + body).digest()


def value_ok(key, value):
    body, digest = value[:-20], value[-20:]
    return body.startswith(key.encode() + b"|") and hashlib.sha1(key.encode() + body).digest() == digest


def seq_of(value):
    """The writer's sequence number a value carries (for error messages), None for None."""
    return None if value is None else value.split(b"|", 3)[2].decode(errors="replace")


class Model:
    """Per key: the last acknowledged value (None = absent) and the unsettled writes since: a list of
    [value, time of a bare-close answer or None while in flight]."""

    def __init__(self):
        self.acked = {}
        self.inflight = {}  # key -> list of [value, closed_at]
        self.acked_at = {}  # key -> monotonic time of the last ack
        self.lock = threading.Lock()


def writer(addr, model, writer_id, killed, rng, counts):
    """Writes until the kill. A failure before the kill (an error, or a refused update: the cache has
    room for every key) is recorded in counts["errors"]; after the kill it is the expected outcome."""
    keys = [f"k{writer_id}-{i}" for i in range(KEYS_PER_CLIENT)]
    seq = 0
    while not killed.is_set():
        key = rng.choice(keys)
        seq += 1
        value = make_value(key, writer_id, seq, rng)
        cmd = "set" if rng.random() < 0.2 else "update"
        entry = [value, None]
        with model.lock:
            model.inflight.setdefault(key, []).append(entry)
        try:
            ok = magic_set(addr, key, value, timeout=3.0, cmd=cmd)
        except (AssertionError, OSError) as e:
            if not killed.is_set():
                counts["errors"].append(f"{cmd} {key} before the kill: {e}")
            return  # this write stays "in flight"
        if not ok and cmd == "update" and not killed.is_set():
            counts["errors"].append(f"update {key} refused (a bare close) before the kill")
        with model.lock:
            if ok:
                model.inflight.pop(key, None)  # this write came after every unsettled one
                model.acked[key] = value
                model.acked_at[key] = time.monotonic()
                counts["acked"] += 1
            else:
                entry[1] = time.monotonic()  # refused, or applied by a worker killed before replying


def server_args(port, store):
    return ["--socket", f"127.0.0.1:{port}", "--processes", "2", "--cache", "2000", "--cache-blocksize", "4096",
            "--cache-keysize", "64", "--cache-store", store, "--cache-store-sync", "1", "--log-debug"]


SYNC_RE = re.compile(r'store sync: cache "default": (started|done|held)')


def read_back(addr):
    """{key: value or None} of every key, read by CLIENTS threads side by side (one after the other,
    the 1,000 one-request connections of a round took most of the test's time on a loaded machine)."""
    got, failures = {}, []

    def read(w):
        try:
            for i in range(KEYS_PER_CLIENT):
                key = f"k{w}-{i}"
                got[key] = magic_get(addr, key)
        except Exception as e:  # noqa: B902 (handed to the main thread)
            failures.append(e)
    threads = [threading.Thread(target=read, args=(w,), daemon=True) for w in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    return got


def test_sigkill_rounds():
    rng = random.Random(SEED)
    print(f"seed {SEED}, {ROUNDS} rounds, {CLIENTS} clients x {KEYS_PER_CLIENT} keys")
    store = os.path.join(make_temp_dir("stf-"), "fault.store")
    port = free_port()
    addr = ("127.0.0.1", port)
    model = Model()
    totals = {"checked": 0, "dropped": 0, "acked": 0, "during_sync": 0, "protected_by_sync": 0, "inflight_lost": 0,
              "unacked_applied": 0, "want_in_sync": 0}
    for rnd in range(ROUNDS):
        want_in_sync = rnd % 2 == 1
        hold_fd = None
        env = None
        if want_in_sync:  # the test hook, and the byte that names where the sync is held
            fifo = os.path.join(os.path.dirname(store), f"hold-{rnd}")
            os.mkfifo(fifo)
            hold_fd = os.open(fifo, os.O_RDWR)  # kept open until the kill: the held sync waits on it
            env = {"UCACHED_TEST_HOLD_STORE_SYNC": fifo}
            point = b"b" if rnd % 4 == 1 else b"a"
        srv = Server(server_args(port, store), workers=2, env=env)
        with srv:
            killed = threading.Event()
            counts = {"acked": 0, "errors": []}
            threads = [threading.Thread(target=writer, args=(addr, model, w, killed, random.Random(rng.random()), counts),
                                        daemon=True) for w in range(CLIENTS)]
            for t in threads:
                t.start()
            # Watch the sync lines: a sync's start lies after the last poll that did not see it.
            off = srv.log_size()
            last_sync_floor = None  # every ack before this time was followed by a completed sync
            pending_floor = None
            prev_poll = time.monotonic()
            deadline = time.monotonic() + rng.uniform(1.2, 2.5)
            held = False
            asked_at = None
            while True:
                now = time.monotonic()
                chunk = srv.log_since(off)
                off += len(chunk.encode())
                for m in SYNC_RE.finditer(chunk):
                    if m.group(1) == "started":
                        pending_floor = prev_poll
                    elif m.group(1) == "held":
                        held = True
                    elif pending_floor is not None:
                        last_sync_floor = pending_floor
                prev_poll = now
                if now >= deadline and not want_in_sync or held:
                    break
                if now >= deadline and asked_at is None:
                    os.write(hold_fd, point)  # the next sync (one a second) takes it
                    asked_at = now
                check(asked_at is None or now - asked_at < 30, f"round {rnd}: no store sync held within 30 s "
                      f"of asking (--cache-store-sync 1):\n{srv.log_tail()}")
                time.sleep(0.02)
            killed.set()
            kill_at = time.monotonic()
            os.killpg(srv.pid, signal.SIGKILL)  # at once: kill_all first scans /proc for workers
            srv.kill_all()  # and every worker seen
            for t in threads:
                t.join(10.0)
            # Where the kill really landed: the dead master's log ends inside a sync when its last sync
            # line is a "started" (it could not log the "done").
            syncs = [m for m in SYNC_RE.findall(srv.log()) if m != "held"]
            landed_in_sync = bool(syncs) and syncs[-1] == "started"
            totals["during_sync"] += landed_in_sync
            if hold_fd is not None:
                os.close(hold_fd)
            if want_in_sync:
                totals["want_in_sync"] += 1
                check(landed_in_sync, f"round {rnd}: the kill aimed at a held sync, but the log does not end "
                      f"inside one:\n{srv.log_tail()}")
            totals["acked"] += counts["acked"]
            check(not counts["errors"], f"round {rnd}: writes failed while the server was up: {counts['errors'][:5]}")
            check(counts["acked"] > 0, f"round {rnd}: no write acknowledged before the kill")
        protected = set()
        if last_sync_floor is not None:
            protected = {k for k, at in model.acked_at.items() if at < last_sync_floor and not model.inflight.get(k)}
        # Restart and check every key.
        srv = Server(server_args(port, store), workers=2)
        with srv:
            log = srv.log()
            m = re.search(r"\[uwsgi-cache\] restored (\d+) items", log)
            check(m, "no restored line after restart:\n" + srv.log_tail())
            d = re.search(r"dropped (\d+) damaged item", log)
            dropped = int(d.group(1)) if d else 0
            totals["dropped"] += dropped
            errors = []
            read_start = time.monotonic()
            values = read_back(addr)
            read_s = time.monotonic() - read_start
            for w in range(CLIENTS):
                for i in range(KEYS_PER_CLIENT):
                    key = f"k{w}-{i}"
                    got = values[key]
                    acked = model.acked.get(key)
                    # A bare close before the kill was a genuine refusal (a set of an existing key).
                    unsettled = [v for v, closed_at in model.inflight.get(key, [])
                                 if closed_at is None or closed_at >= kill_at]
                    totals["checked"] += 1
                    if got is not None and not value_ok(key, got):
                        errors.append(f"{key}: corrupt or foreign value {got[:60]!r}")
                    elif got is None and acked is not None and not unsettled:
                        errors.append(f"{key}: acknowledged item lost (nothing in flight)"
                                      + (" -- acknowledged before a completed sync" if key in protected else ""))
                    elif got is not None and got != acked and got not in unsettled:
                        errors.append(f"{key}: value is neither the last acknowledged nor one in flight at the kill "
                                      f"(write #{seq_of(got)}; acknowledged #{seq_of(acked)}, unsettled "
                                      f"{[seq_of(v) for v, _ in model.inflight.get(key, [])]}, kill at {kill_at:.3f})")
                    elif key in protected and got is None:
                        errors.append(f"{key}: acknowledged before the last completed sync, but missing")
                    if got is None and acked is not None:
                        totals["inflight_lost"] += 1
                    if got is not None and got != acked and got in unsettled:
                        totals["unacked_applied"] += 1  # written, killed before the reply
                    # What the store holds now is the truth for the next round. A key it does not hold
                    # (lost in flight, or dropped as torn at load) has no acknowledgment left for a later
                    # round's "acknowledged before the last completed sync" to protect.
                    model.acked[key] = got
                    model.inflight.pop(key, None)
                    if got is None:
                        model.acked_at.pop(key, None)
            totals["protected_by_sync"] += len(protected)
            check(not errors, f"round {rnd}: {len(errors)} bad keys, e.g. {errors[:5]}")
            check(m and int(m.group(1)) == sum(1 for v in model.acked.values() if v is not None),
                  f"round {rnd}: restored count {m.group(1)} differs from the keys present")
            srv.kill_all()
        print(f"round {rnd}: kill {'during a sync' if landed_in_sync else 'at a random moment'}"
              f"{' (held ' + ('before' if point == b'b' else 'after') + ' its msync)' if want_in_sync else ''}, "
              f"{counts['acked']} writes acknowledged, {len(protected)} keys covered by a completed sync, "
              f"restored {m.group(1)}, dropped {dropped}, read back in {read_s:.1f} s")
    print(f"fault test: {ROUNDS} rounds, {totals['checked']} items checked, {totals['acked']} writes acknowledged, "
          f"{totals['protected_by_sync']} item checks covered by a completed sync, {totals['dropped']} items dropped "
          f"at load (torn), {totals['inflight_lost']} in-flight keys absent, {totals['unacked_applied']} unacknowledged writes found applied, "
          f"{totals['during_sync']} kills during a sync")
    check(totals["during_sync"] >= totals["want_in_sync"] > 0,
          f"{totals['during_sync']} kills inside a sync, {totals['want_in_sync']} aimed")


if __name__ == "__main__":
    run_tests([test_sigkill_rounds], budget=int(os.environ.get("STORE_FAULT_BUDGET", "90")))
