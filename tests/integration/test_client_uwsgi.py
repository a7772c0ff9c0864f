"""The cache client against the real uWSGI 2.0.21: `server cache ...` over TCP and a UNIX socket gives
the same results and exit codes as against our server (client_cases.cli_suite), and CacheClient's
persistent mode falls back to one request per connection, since uWSGI ignores keepalive."""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check, check_eq, free_port, make_temp_dir, need_uwsgi, run_tests  # noqa: E402
from client_cases import SEQUENCE, SEQUENCE_RESULTS, CountingProxy, Uwsgi, cli_suite, drive  # noqa: E402


def test_uwsgi_tcp_and_unix():
    need_uwsgi()
    tmp = make_temp_dir()
    port = free_port()
    unix = os.path.join(tmp, "u.sock")
    with Uwsgi([("127.0.0.1", port), unix]):
        cli_suite(f"127.0.0.1:{port}", "tcp", tmp)
        cli_suite(unix, "unix", tmp)


def test_persistent_mode_falls_back_against_uwsgi():
    need_uwsgi()
    port = free_port()
    with Uwsgi([("127.0.0.1", port)]):
        proxy = CountingProxy(("127.0.0.1", port))
        try:
            # starting with a hit: uWSGI replies then closes; the client notices on the next call
            check_eq(drive(f"127.0.0.1:{proxy.port}", SEQUENCE), SEQUENCE_RESULTS, "persistent calls, uWSGI")
            conns = proxy.connections()
            with_keepalive = [i for i, c in enumerate(conns) if b"keepalive" in c]
            check(with_keepalive == [0], f"keepalive=1 sent on connections {with_keepalive} (want only the first)")
            check(len(conns) >= len(SEQUENCE), f"{len(conns)} connections for {len(SEQUENCE)} calls")
            # starting with a miss: silence proves at once that the server ignores keepalive
            before = len(proxy.connections())
            check_eq(drive(f"127.0.0.1:{proxy.port}", ["get none", "set c 1", "get c", "get c"]),
                     ["miss", "ok", "ok 1", "ok 1"], "persistent calls starting with a miss, uWSGI")
            conns = proxy.connections()[before:]
            check_eq(len(conns), 4, "connections for 4 calls")
            check_eq([b"keepalive" in c for c in conns], [True, False, False, False], "keepalive var per connection")
            # the same client one-shot
            before = len(proxy.connections())
            check_eq(drive(f"127.0.0.1:{proxy.port}", ["clear"] + SEQUENCE, persistent=False),
                     ["ok"] + SEQUENCE_RESULTS, "one-shot calls, uWSGI")
            check(not any(b"keepalive" in c for c in proxy.connections()[before:]), "keepalive sent one-shot")
        finally:
            proxy.close()


if __name__ == "__main__":
    run_tests([test_uwsgi_tcp_and_unix, test_persistent_mode_falls_back_against_uwsgi], budget=240)
