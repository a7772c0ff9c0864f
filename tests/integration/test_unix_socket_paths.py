"""UNIX socket paths: a stale socket file (left by a SIGKILLed server) is replaced; a regular file is
never replaced; a socket a live server listens on is not stolen (the second server exits 1, the first
stays reachable, as with a TCP port in use); with --vacuum the socket file is removed at a clean exit."""

import os
import signal
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Server, app_get, check, check_eq, free_port, magic_get, magic_set,  # noqa: E402
                     make_temp_dir, run_server_to_exit, run_tests)


def test_stale_socket_file_is_replaced():
    tmp = make_temp_dir()
    path = os.path.join(tmp, "stale.sock")
    srv = Server(["--socket", path, "--processes", "1", "--cache", "10"], workers=1)
    with srv:
        os.kill(srv.pid, signal.SIGKILL)
        check(srv.wait_exit(3.0) is not None, "master not dead after SIGKILL")
        check(srv.wait_no_leftovers(3.0), f"processes left: {srv.leftovers()}")
    check(os.path.exists(path), "test premise: the SIGKILLed server left its socket file")
    with Server(["--socket", path, "--processes", "1", "--cache", "10", "--vacuum"], workers=1) as srv2:
        app_get(path)
        check_eq(srv2.stop(), 0, "exit status after SIGTERM")
    check(not os.path.exists(path), "the socket file is still there after a clean exit")


def test_regular_file_is_not_replaced():
    tmp = make_temp_dir()
    path = os.path.join(tmp, "data.txt")
    with open(path, "w") as f:
        f.write("precious")
    rc, out, left = run_server_to_exit(["--socket", path, "--processes", "1"], timeout=5.0)
    print(f"exit {rc}: {out.strip()[-200:]!r}")
    check_eq(rc, 1, "exit status with a regular file at the socket path")
    check(path in out, f"the message does not name the path: {out!r}")
    with open(path) as f:
        check_eq(f.read(), "precious", "content of the regular file")
    check(not left, f"processes left: {left}")


def test_live_socket_is_not_stolen():
    tmp = make_temp_dir()
    path = os.path.join(tmp, "live.sock")
    with Server(["--socket", path, "--processes", "1", "--cache", "10"], workers=1) as first:
        check(magic_set(path, "owner", "first"), "set through the first server")
        rc, out, left = run_server_to_exit(["--socket", path, "--processes", "1", "--cache", "10"], timeout=5.0)
        print(f"second server on the live socket: exit {rc}: {out.strip()[-300:]!r}")
        check(first.running(), "the first server died")
        try:
            reach = magic_get(path, "owner") if os.path.exists(path) else "socket file gone"
        except AssertionError as e:
            reach = str(e)
        problems = []
        if rc != 1:
            problems.append(f"second server on a live UNIX socket: exit status {rc} (want 1, as for a TCP port in use)"
                            + (" (it was still running after 5 s: it took the path over)" if rc is None else ""))
        if reach != b"first":
            problems.append(f"the first server is no longer reachable through {path}: {reach!r}")
        check(not problems, "; ".join(problems))
        check_eq(first.stop(), 0, "first server exit status")


def test_tcp_port_in_use():
    port = free_port()
    with Server(["--socket", f"127.0.0.1:{port}", "--processes", "1"], workers=1) as first:
        rc, out, left = run_server_to_exit(["--socket", f"127.0.0.1:{port}", "--processes", "1"], timeout=5.0)
        print(f"second server on a TCP port in use: exit {rc}: {out.strip()[-200:]!r}")
        check_eq(rc, 1, "exit status of a second server on a TCP port in use")
        check(f"127.0.0.1:{port}" in out, f"the message does not name the socket: {out!r}")
        check(not left, f"processes left: {left}")
        app_get(("127.0.0.1", port))
        check_eq(first.stop(), 0, "first server exit status")


if __name__ == "__main__":
    run_tests([test_stale_socket_file_is_replaced, test_regular_file_is_not_replaced, test_live_socket_is_not_stolen,
               test_tcp_port_in_use], budget=40)
