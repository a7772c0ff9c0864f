#!/usr/bin/env python3
"""The memcached connections where the kernel refuses io_uring: the server runs under no_io_uring
(tests/integration/no_io_uring.cpp), so the refusals are the kernel's own and the server's path is the
one it takes in a container whose seccomp profile leaves io_uring out (Docker's default since 2023) or
on a host with kernel.io_uring_disabled=2 (machine-global: never touched here).

- seccomp refuses io_uring_setup with EPERM: the master's probe fails, it logs why once and every
  worker serves the connections on its epoll loop;
- RLIMIT_MEMLOCK of 64 KiB without CAP_IPC_LOCK: the master's small probe ring fits, each worker's
  full-size ring does not, and each worker falls back on its own.

Either way real clients (pymemcache, and raw protocol scripts) get what Debian's memcached answers, a
reload keeps serving (the cache kept) and SIGTERM exits 0."""
import os
import re
import signal
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import SERVER_BIN, check, check_eq, peer_missing, run_tests  # noqa: E402
from memcached_peer import Memcached, Raw, ours  # noqa: E402
from test_memcached_clients import pymemcache_session  # noqa: E402
from test_memcached_compat import BASICS, compare_on  # noqa: E402

NO_IO_URING = os.path.join(os.path.dirname(os.path.abspath(SERVER_BIN)), "no_io_uring")
MEMLOCK_BYTES = 64 * 1024  # see no_io_uring.cpp: admits a 2-page probe ring, not a 23-page worker ring
CAP_IPC_LOCK = 14

REFUSED = (r"io_uring unavailable \(io_uring_setup: Operation not permitted\): "
           r"memcached connections on the workers' epoll loops")
ON_RING = r"memcached connections on io_uring \(one thread per worker\)"
WORKER_FELL_BACK = (r"worker (\d+): io_uring: io_uring_setup: Cannot allocate memory: "
                    r"memcached connections on the epoll loop")


def wrapper(*options):
    if not os.access(NO_IO_URING, os.X_OK):
        peer_missing(f"{NO_IO_URING} (built with the project: ninja no_io_uring)")
    return [NO_IO_URING, *options]


def status_field(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def serve_like_memcached(real, srv, what):
    """The same calls on both servers (their histories stay equal: the cache outlives a reload)."""
    check_eq(pymemcache_session(srv.addr), pymemcache_session(real.addr), f"{what}: pymemcache's results")
    compare_on(real.addr, srv.addr, BASICS, f"{what}: text basics")
    for addr in (real.addr, srv.addr):
        raw = Raw(addr)
        try:
            check_eq(raw.exchange(b"set r 0 0 2\r\nok\r\nget r\r\n"), b"STORED\r\nVALUE r 0 2\r\nok\r\nEND\r\n",
                     f"{what}: a raw set and get on {addr}")
        finally:
            raw.close()


def reload_and_stop(real, srv, after_reload=None):
    """SIGHUP replaces both workers, which serve as before; then SIGTERM exits 0. after_reload(offset),
    if given, checks what the new workers logged."""
    old = srv.workers()
    offset = srv.log_size()
    srv.send_signal(signal.SIGHUP)
    new = srv.wait_workers(2, timeout=10, exclude=old)
    check(len(new) == 2 and not set(new) & set(old), f"the workers replaced: {old} -> {new}")
    if after_reload:
        after_reload(offset)
    serve_like_memcached(real, srv, "after the reload")
    check_eq(srv.stop(signal.SIGTERM, timeout=20), 0, "exit status after SIGTERM")


def test_refused_by_seccomp():
    with Memcached() as real, ours(wrapper=wrapper()) as srv:
        check(srv.wait_log(REFUSED), "the master's line saying why io_uring is not used")
        check(not re.search(ON_RING, srv.log()), "no ring claimed")
        for pid in [srv.pid, *srv.workers()]:
            check_eq(status_field(pid, "Seccomp"), "2", f"process {pid} runs under the filter")
        serve_like_memcached(real, srv, "epoll after a refused io_uring_setup")
        reload_and_stop(real, srv)
    # The master decided once, for the workers before and after the reload: none tried a ring.
    check_eq(len(re.findall(REFUSED, srv.log())), 1, "one line about io_uring")
    check(not re.search(r"worker \d+: io_uring", srv.log()), "no worker tried a ring")


def test_refused_to_each_worker():
    """The probe passes (it is logged so), each worker's own setup is refused (ENOMEM, the locked-memory
    limit) and that worker serves on its epoll loop; after a reload the new workers do the same."""
    with Memcached() as real, ours(wrapper=wrapper("--memlock", str(MEMLOCK_BYTES))) as srv:
        cap_eff = int(status_field(srv.pid, "CapEff"), 16)
        check(not cap_eff & (1 << CAP_IPC_LOCK), f"the server runs without CAP_IPC_LOCK (CapEff {cap_eff:x})")
        check_eq(status_field(srv.pid, "Seccomp"), "0", "no seccomp filter in this case")
        check(srv.wait_log(ON_RING), "the master's probe passed")

        def fallbacks(offset):
            found = srv.wait_log(r"(?s)(" + WORKER_FELL_BACK + r".*){2}", timeout=10, offset=offset)
            return sorted(re.findall(WORKER_FELL_BACK, srv.log_since(offset))) if found else []

        check_eq(fallbacks(0), ["1", "2"], "each worker's own fallback line")
        serve_like_memcached(real, srv, "epoll after a worker's refused ring")
        reload_and_stop(real, srv, lambda offset: check_eq(fallbacks(offset), ["1", "2"],
                                                           "the new workers' fallback lines"))


if __name__ == "__main__":
    run_tests([test_refused_by_seccomp, test_refused_to_each_worker], budget=120)
