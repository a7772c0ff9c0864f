"""Clients that close (or reset) before reading their reply: the worker's write fails with EPIPE or
ECONNRESET and the worker goes on. Regression: workers did not ignore SIGPIPE, so such a client killed
its worker, and the clients queued behind it killed each respawned one (then the fork-bomb guard kept
the server down for 30 s at a time). TCP and UNIX sockets, one-shot and persistent sockets."""

import os
import re
import signal
import socket
import struct
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Server, check, check_eq, free_port, magic_get, magic_set, make_temp_dir, run_tests,  # noqa: E402
                     simple_get_req, wait_until)

BIG = b"v" * 60000  # larger than a socket buffer: the reply cannot be written in one go


def vanish(addr, request, rounds):
    family = socket.AF_UNIX if isinstance(addr, str) else socket.AF_INET
    for _ in range(rounds):
        s = socket.socket(family, socket.SOCK_STREAM)
        # A blocking connect: a UNIX socket's full backlog makes a non-blocking one fail with EAGAIN
        # while the workers catch up (the test's time budget bounds a dead server).
        s.connect(addr)
        s.settimeout(2)
        s.sendall(request)
        if family == socket.AF_INET:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close = reset
        s.close()


def accepted(srv):
    """Connections the current workers have accepted, from their SIGUSR1 stats lines."""
    off = srv.log_size()
    srv.send_signal(signal.SIGUSR1)
    check(srv.wait_log(r'stats: cache "default"', 5.0, off), "no stats after SIGUSR1")
    return sum(int(n) for n in re.findall(r"stats: worker \d+ \(pid \d+\): requests \d+, accepted (\d+)",
                                          srv.log_since(off)))


def test_vanishing_clients_do_not_kill_workers():
    port, persistent = free_port(), free_port()
    unix = os.path.join(make_temp_dir("vanish-"), "s.sock")
    srv = Server(["--socket", f"127.0.0.1:{port}", "--socket", unix, "--persistent-socket",
                  f"127.0.0.1:{persistent}", "--processes", "2", "--cache", "100"], workers=2)
    with srv:
        addr = ("127.0.0.1", port)
        check(magic_set(addr, "big", BIG), "set a 60000-byte value")
        before = srv.workers()
        get = simple_get_req(b"big")
        before_accepted = accepted(srv)
        vanish(addr, get, 200)
        vanish(unix, get, 200)
        vanish(("127.0.0.1", persistent), get * 20, 50)  # many pipelined replies, nobody reading
        # every vanished client taken by the same workers (a worker killed by one would restart its count)
        wait_until(lambda: accepted(srv) - before_accepted >= 450, 10.0, interval=0.1)
        check_eq(accepted(srv) - before_accepted, 450, "connections accepted by the workers")
        check_eq(srv.workers(), before, "worker pids after 450 vanished clients")
        check("died" not in srv.log(), f"a worker died:\n{srv.log_tail(10)}")
        check_eq(magic_get(addr, "big"), BIG, "the server still serves")
        check_eq(srv.stop(), 0, "exit status after SIGTERM")


if __name__ == "__main__":
    run_tests([test_vanishing_clients_do_not_kill_workers])
