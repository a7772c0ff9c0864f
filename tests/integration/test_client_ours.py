"""The cache client against our server: `server cache ...` over TCP and a UNIX socket (the checks
shared with uWSGI are client_cases.cli_suite, plus keys/stats), and the persistent mode of CacheClient
(one connection for many calls, reconnection after the server's idle close, --no-persistent)."""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Server, check, check_eq, free_port, make_temp_dir, run_tests  # noqa: E402
from client_cases import SEQUENCE, SEQUENCE_RESULTS, CountingProxy, cli_suite, drive, expect  # noqa: E402


def test_ours_tcp_and_unix():
    tmp = make_temp_dir()
    port = free_port()
    unix = os.path.join(tmp, "s.sock")
    with Server(["--socket", f"127.0.0.1:{port}", "--socket", unix, "--processes", "2", "--cache", "100",
                 "--cache2", "name=other,items=10", "--cache-expire-freq", "1"], workers=2):
        cli_suite(f"127.0.0.1:{port}", "tcp", tmp, ours=True)
        cli_suite(unix, "unix", tmp, ours=True)
        # [v6]:port form is parsed (the server listens on IPv4 only: refused, naming the address)
        expect(2, "get", "k", "--cache-server", f"[::1]:{port}", stderr_has=f"[::1]:{port}")


def test_persistent_mode_ours():
    port = free_port()
    with Server(["--socket", f"127.0.0.1:{port}", "--processes", "2", "--cache", "100", "--socket-timeout", "1"],
                workers=2):
        proxy = CountingProxy(("127.0.0.1", port))
        try:
            check_eq(drive(f"127.0.0.1:{proxy.port}", SEQUENCE), SEQUENCE_RESULTS, "persistent calls, our server")
            conns = proxy.connections()
            check_eq(len(conns), 1, "connections used for 13 calls in the persistent mode")
            check_eq(conns[0].count(b"\x09\x00keepalive\x01\x001"), len(SEQUENCE), "requests carrying keepalive=1")

            # the server closes the kept connection after --socket-timeout 1 s idle: the next call
            # reconnects transparently, and keeps using the persistent mode
            results = drive(f"127.0.0.1:{proxy.port}", ["set x 1", "sleep 2600", "get x", "get x", "exists x"])
            check_eq(results, ["ok", "ok 1", "ok 1", "ok"], "calls across an idle close")
            conns = proxy.connections()[1:]
            check_eq(len(conns), 2, "connections: one before the idle close, one after")
            check(all(b"keepalive" in c for c in conns), "keepalive=1 dropped after an idle close")

            # --no-persistent: one connection per call, no keepalive var
            before = len(proxy.connections())
            check_eq(drive(f"127.0.0.1:{proxy.port}", SEQUENCE, persistent=False), SEQUENCE_RESULTS,
                     "one-shot calls, our server")
            conns = proxy.connections()[before:]
            check_eq(len(conns), len(SEQUENCE), "connections in the one-shot mode")
            check(not any(b"keepalive" in c for c in conns), "keepalive sent with persistent off")
        finally:
            proxy.close()


if __name__ == "__main__":
    run_tests([test_ours_tcp_and_unix, test_persistent_mode_ours], budget=240)
