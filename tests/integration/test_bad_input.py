"""Bad input on the socket: every case gets a clean close (EOF, no reply), is mentioned in the log, and
the worker keeps serving (a good request right after succeeds, the worker pid never changes).
One worker (--processes 1) so that "keeps serving" and "one slow client never holds up others" are
about the same process; --socket-timeout 1 and --buffer-size 100 keep the cases fast and small."""

import os
import socket
import struct
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Server, app_get, app_req, check, check_eq, connect, free_port, header,  # noqa: E402
                     in_thread, magic_get, magic_get_req, magic_req, magic_set, magic_set_req, packet,
                     read_reply, request, run_tests, vars_block)

SOCKET_TIMEOUT = 1.0
STATE = {}
_seq = [0]



def closed_by_server(socks):
    """How many of these client sockets the server has closed (EOF or reset), without waiting."""
    closed = 0
    for s in socks:
        s.setblocking(False)
        try:
            closed += s.recv(16) == b""
        except BlockingIOError:
            pass
        except ConnectionResetError:
            closed += 1
    return closed

def server():
    srv = STATE.get("srv")
    if srv is None or not srv.running():
        port = free_port()
        srv = Server(["--socket", f"127.0.0.1:{port}", "--processes", "1", "--cache", "100",
                      "--socket-timeout", "1", "--buffer-size", "100", "--listen", "1024"], workers=1,
                     nofile=1024)  # the usual default limit: 1000 idle connections come close to it
        srv.start()
        STATE["srv"] = srv
        STATE["addr"] = ("127.0.0.1", port)
        STATE["workers"] = srv.workers()
    return srv, STATE["addr"]


def good_request(addr, max_latency=1.0):
    """A set and a get of a fresh key, and an app request; each must answer within max_latency."""
    _seq[0] += 1
    key, value = f"good-{_seq[0]}", f"value-{_seq[0]}"
    t0 = time.monotonic()
    check(magic_set(addr, key, value, timeout=3), f"good set {key} answered nothing")
    check_eq(magic_get(addr, key, timeout=3), value.encode(), f"good get {key}")
    app_get(addr, timeout=3)
    dt = time.monotonic() - t0
    check(dt < 3 * max_latency, f"good requests took {dt:.2f}s")
    return dt


def after_bad(what, offset, require_log=True):
    """The checks every bad input is followed by: a good request succeeds, the worker is the same,
    and (if require_log) the log grew by a line that mentions the problem."""
    srv, addr = server()
    # the log first (before the good request, which could log something of its own)
    got = srv.wait_log(r"\S", timeout=2.0, offset=offset) if require_log else True
    new = srv.log_lines(offset)
    if require_log:
        print(f"[{what}] new log lines: {new[:3]!r}")
    good_request(addr)
    ws = srv.workers()
    if ws != STATE["workers"]:
        old, STATE["workers"] = STATE["workers"], ws  # so that later cases are judged on their own
        raise AssertionError(f"{what}: worker pids changed from {old} to {ws} (a worker crashed)")
    check(got, f"{what}: nothing in the log about it")
    time.sleep(0.05)


# --------------------------------------------------------------------------------------------------

def test_truncated_header():
    srv, addr = server()
    # 2 bytes of a header, then close at once
    off = srv.log_size()
    s = connect(addr)
    s.sendall(b"\x6f\x10")
    s.close()
    after_bad("truncated header then close", off)
    # 3 bytes of a header, then half-close: the server must close cleanly (EOF, not RST), soon
    off = srv.log_size()
    s = connect(addr)
    s.sendall(b"\x6f\x10\x00")
    s.shutdown(socket.SHUT_WR)
    t0 = time.monotonic()
    reply, how = read_reply(s, 3.0)
    s.close()
    check_eq((reply, how), (b"", "eof"), "truncated header then half-close")
    check(time.monotonic() - t0 < SOCKET_TIMEOUT + 0.9, "the server waited past socket-timeout after the client's EOF")
    after_bad("truncated header then half-close", off)


def test_short_payload_then_silence():
    srv, addr = server()
    # header says 50 payload bytes, 10 are sent, then the client goes silent (keeps the socket open)
    off = srv.log_size()
    s = connect(addr)
    s.sendall(header(111, 50, 17) + vars_block([("cmd", "get")]))  # 4 + 10 bytes
    t0 = time.monotonic()
    reply, how = read_reply(s, 4.0)
    dt = time.monotonic() - t0
    s.close()
    print(f"closed by the server after {dt:.2f}s ({how})")
    check_eq((reply, how), (b"", "eof"), "short payload then silence")
    check(0.7 <= dt <= SOCKET_TIMEOUT + 2.0, f"closed after {dt:.2f}s, want about --socket-timeout ({SOCKET_TIMEOUT}s)")
    after_bad("short payload then silence (socket-timeout)", off)

    # a magic set whose body (size=100) stops after 50 bytes: closed after the timeout, nothing stored
    off = srv.log_size()
    s = connect(addr)
    req = magic_set_req("half-body", b"x" * 100)
    s.sendall(req[:-50])
    t0 = time.monotonic()
    reply, how = read_reply(s, 4.0)
    dt = time.monotonic() - t0
    s.close()
    check_eq((reply, how), (b"", "eof"), "magic set with half of its body then silence")
    check(0.7 <= dt <= SOCKET_TIMEOUT + 2.0, f"closed after {dt:.2f}s, want about --socket-timeout")
    check_eq(magic_get(addr, "half-body"), None, "a set whose body never completed stored something")
    after_bad("magic set body incomplete (socket-timeout)", off)


def test_var_lengths_overrun():
    srv, addr = server()
    cases = {
        # modifier1 111 modifier2 17: first key length 200 in a 7-byte block
        "mod2 17 key length overruns": packet(111, 17, struct.pack("<H", 200) + b"cmd\x03\x00"),
        # value length 500 where 3 bytes remain
        "mod2 17 value length overruns": packet(111, 17, vars_block([("cmd", "get")]) + b"\x03\x00key\xf4\x01abc"),
        # a key-length field that is the last 2 bytes of the block
        "mod2 17 dangling key length": packet(111, 17, vars_block([("cmd", "get"), ("key", "k")]) + b"\x05\x00"),
        # a zero-length key
        "mod2 17 zero-length key": packet(111, 17, b"\x00\x00\x03\x00get" + vars_block([("key", "k")])),
        # modifier1 0 (app) with an overrunning var
        "mod1 0 var length overruns": packet(0, 0, vars_block([("REQUEST_METHOD", "GET")]) + b"\x09\x00PATH_INFO\x90\x00/"),
        # modifier1 0 with a zero-length key
        "mod1 0 zero-length key": packet(0, 0, b"\x00\x00\x03\x00GET" + vars_block([("PATH_INFO", "/")])),
        # modifier2 1 array whose item overruns
        "mod2 1 array item overruns": packet(111, 1, b"\x02\x00k9\x50\x00short"),
    }
    for what, req in cases.items():
        off = srv.log_size()
        reply, how = request(addr, req, timeout=3.0)
        check(how == "eof", f"{what}: connection ended by {how} (want a clean EOF), reply {reply!r}")
        check(not reply.startswith(b"HTTP/1.1 200") and not reply.startswith(bytes([111])),
              f"{what}: a malformed request was answered as if valid: {reply[:80]!r}")
        after_bad(what, off)
    # the array set above must not have stored anything
    reply, how = request(addr, packet(111, 0, b"k9"))
    check_eq((reply, how), (b"", "eof"), "mod2 0 get of the key of a malformed array set")


def test_datasize_over_buffer_size():
    srv, addr = server()
    # 101 > --buffer-size 100, payload sent in full: no reply; EOF (or RST since the payload is unread)
    off = srv.log_size()
    t0 = time.monotonic()
    block = vars_block([("cmd", "get"), ("key", "k" * 84)])
    check_eq(len(block), 101, "test's own packet size")
    reply, how = request(addr, packet(111, 17, block), timeout=3.0)
    dt = time.monotonic() - t0
    check(reply == b"" and how in ("eof", "reset"), f"datasize 101 > buffer-size 100: got {reply!r} ({how})")
    check(dt < SOCKET_TIMEOUT - 0.2, f"datasize 101 > buffer-size: closed after {dt:.2f}s, not at once")
    after_bad("datasize 101 > buffer-size 100", off)

    # only the header (datasize 4321), the client waits: closed at once, not after socket-timeout
    off = srv.log_size()
    s = connect(addr)
    s.sendall(header(111, 4321, 17))
    t0 = time.monotonic()
    reply, how = read_reply(s, 3.0)
    dt = time.monotonic() - t0
    s.close()
    check_eq((reply, how), (b"", "eof"), "header announcing datasize 4321 > buffer-size")
    check(dt < SOCKET_TIMEOUT - 0.3, f"header announcing 4321 bytes: closed after {dt:.2f}s, want at once")
    after_bad("datasize 4321 > buffer-size 100 (header only)", off)
    log = srv.log_since(off)
    check("4321" in log, f"the log line does not give the offending datasize 4321: {log!r}")

    # boundary: datasize exactly 100 is accepted (a magic get padded with an ignored var)
    check(magic_set(addr, "edge", "edge-value"), "set edge")
    base = vars_block([("cmd", "get"), ("key", "edge")])
    pad = 100 - len(base) - 4 - len("pad")
    req = magic_req([("cmd", "get"), ("key", "edge"), ("pad", "p" * pad)])
    check_eq(len(req), 104, "test's own packet size (datasize 100)")
    reply, how = request(addr, req)
    check(how == "eof" and reply.endswith(b"edge-value") and reply[:1] == b"\x6f",
          f"datasize == buffer-size (100) must be served: {reply!r} ({how})")


def test_abandoned_connections():
    srv, addr = server()
    off = srv.log_size()
    # 500 connect-and-close without sending
    t0 = time.monotonic()
    for i in range(500):
        if time.monotonic() - t0 > 10:
            raise AssertionError(f"connect-and-close loop too slow: {i} connections in 10 s")
        s = connect(addr, 2.0)
        s.close()
    good_request(addr)
    # 1000 open at once, idle; a good request while they are open; then close them
    socks = []
    t0 = time.monotonic()
    try:
        for i in range(1000):
            if time.monotonic() - t0 > 10:
                raise AssertionError(f"could only open {i} connections in 10 s")
            socks.append(connect(addr, 3.0))
        print(f"opened {len(socks)} idle connections in {time.monotonic() - t0:.2f}s")
        dt = good_request(addr, max_latency=2.0)
        print(f"good requests with 1000 idle connections open: {dt:.3f}s")
        time.sleep(1.5)  # past TCP_DEFER_ACCEPT's timeout and --socket-timeout: accepted, then timed out
        dt = good_request(addr, max_latency=2.0)
        print(f"good requests 1.5 s later, 1000 idle connections still open on the client side: {dt:.3f}s")
        eofs = closed_by_server(socks)
        print(f"idle connections closed by the server (socket-timeout 1 s) after 1.5 s: {eofs} of 1000")
    finally:
        for s in socks:
            s.close()
    time.sleep(SOCKET_TIMEOUT + 0.3)
    after_bad("1500 abandoned connections", off, require_log=False)
    lines = srv.log_lines(off)
    print(f"log lines written for 1500 abandoned connections: {len(lines)}; first: {lines[:3]!r}")
    check(srv.running(), "master died")


def test_slow_client_does_not_hold_up_others():
    srv, addr = server()
    check(magic_set(addr, "slow-key", "slow-value"), "set slow-key")
    req = magic_get_req("slow-key")  # 26 bytes, one every 30 ms (~0.8 s, under --socket-timeout 1 per read)

    def trickle():
        s = connect(addr, 3.0)
        try:
            for i in range(len(req)):
                s.sendall(req[i:i + 1])
                time.sleep(0.03)
            return read_reply(s, 3.0)
        finally:
            s.close()
    t, result = in_thread(trickle)
    time.sleep(0.1)
    latencies = []
    for _ in range(5):
        t0 = time.monotonic()
        app_get(addr, timeout=3)
        check_eq(magic_get(addr, "slow-key", timeout=3), b"slow-value", "get while a slow client trickles")
        latencies.append(time.monotonic() - t0)
        time.sleep(0.05)
    t.join(5.0)
    check(not t.is_alive(), "slow client thread did not finish")
    check("error" not in result, f"slow client: {result.get('traceback')}")
    reply, how = result["value"]
    check(how == "eof" and reply.endswith(b"slow-value"), f"slow client's reply: {reply!r} ({how})")
    print(f"latencies while a client trickles: {[round(x, 3) for x in latencies]}")
    check(max(latencies) < 0.5, f"requests were held up by a slow client: {latencies}")
    check_eq(srv.workers(), STATE["workers"], "worker pids")


def test_trickle_longer_than_socket_timeout():
    """--socket-timeout is about idleness: a client that sends a byte every 0.15 s is never idle for 1 s
    and must be served although the whole request takes ~4 s."""
    srv, addr = server()
    check(magic_set(addr, "trickle-key", "trickle-value"), "set trickle-key")
    req = magic_get_req("trickle-key")
    s = connect(addr, 3.0)
    t0 = time.monotonic()
    try:
        try:
            for i in range(len(req)):
                s.sendall(req[i:i + 1])
                time.sleep(0.15)
            reply, how = read_reply(s, 3.0)
        except (BrokenPipeError, ConnectionResetError) as e:
            reply, how = b"", f"reset while sending ({e})"
    finally:
        s.close()
    dt = time.monotonic() - t0
    check(how == "eof" and reply.endswith(b"trickle-value"),
          f"request trickled over {dt:.1f}s (never idle 1 s): {reply!r} ({how})")
    check_eq(srv.workers(), STATE["workers"], "worker pids")


def test_fd_exhaustion():
    """A worker out of file descriptors (RLIMIT_NOFILE 64, 150 idle connections) must not spin, must not
    flood the log, must still close idle connections after --socket-timeout, and must serve again once
    the clients are gone (same worker pid)."""
    port = free_port()
    addr = ("127.0.0.1", port)
    problems = []
    with Server(["--socket", f"127.0.0.1:{port}", "--processes", "1", "--cache", "10", "--socket-timeout", "1",
                 "--listen", "1024"], workers=1, nofile=64) as srv:
        w = srv.workers()[0]
        hz = os.sysconf("SC_CLK_TCK")

        def cpu_ticks():
            with open(f"/proc/{w}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])

        def nfds():
            try:
                return len(os.listdir(f"/proc/{w}/fd"))
            except OSError:
                return -1
        socks = []
        try:
            for i in range(150):
                socks.append(connect(addr, 2.0))
            time.sleep(1.5)  # past TCP_DEFER_ACCEPT's first timeout: the worker has taken what it can
            c0, l0 = cpu_ticks(), srv.log_size()
            time.sleep(1.0)
            ticks, log_bytes = cpu_ticks() - c0, srv.log_size() - l0
            print(f"out of fds: worker CPU {ticks}/{hz} ticks in 1 s, log +{log_bytes} bytes in 1 s, fds {nfds()}")
            if ticks > 0.3 * hz:
                problems.append(f"the worker spins when out of fds ({ticks} of {hz} ticks in 1 s)")
            if log_bytes > 20000:
                problems.append(f"log flood when out of fds: {log_bytes} bytes in 1 s, e.g. {srv.log_since(l0, 300).splitlines()[:1]!r}")
            eofs = closed_by_server(socks)
            print(f"idle connections closed by the server after 2.5 s (socket-timeout 1 s): {eofs} of 150")
        finally:
            for s in socks:
                s.close()
        time.sleep(1.5)
        print(f"worker fds 1.5 s after the clients closed: {nfds()}")
        reply, how = request(addr, app_req("/"), timeout=3.0)
        if not (how == "eof" and reply.startswith(b"HTTP/1.1 200")):
            problems.append(f"no service 1.5 s after the idle clients left: {reply[:40]!r} ({how}); worker fds {nfds()}")
        if srv.workers() != [w]:
            problems.append(f"worker pid changed {w} -> {srv.workers()}")
        check(not problems, "; ".join(problems))


def test_idle_connections_do_not_hold_up_others():
    srv, addr = server()
    socks = []
    try:
        for i in range(20):
            socks.append(connect(addr, 2.0))  # nothing sent
        for i in range(20):
            s = connect(addr, 2.0)
            s.sendall(b"\x6f")  # part of a header
            socks.append(s)
        t0 = time.monotonic()
        reply, how = request(addr, app_req("/"), timeout=3.0)
        dt = time.monotonic() - t0
        check(how == "eof" and reply.startswith(b"HTTP/1.1 200"), f"app request with 40 idle connections: {reply[:60]!r} ({how})")
        check(dt < 0.5, f"app request took {dt:.2f}s with 40 idle connections open")
        t0 = time.monotonic()
        check(magic_set(addr, "idle-k", "v"), "set with idle connections open")
        check(time.monotonic() - t0 < 0.5, "set held up by idle connections")
    finally:
        for s in socks:
            s.close()
    check_eq(srv.workers(), STATE["workers"], "worker pids")


def test_final_state():
    srv, addr = server()
    check_eq(srv.workers(), STATE["workers"], "worker pids at the end (no crash, no respawn)")
    good_request(addr)
    rc = srv.stop()
    check_eq(rc, 0, "exit status after SIGTERM")
    check(srv.wait_no_leftovers(3.0), f"processes left: {srv.leftovers()}")


if __name__ == "__main__":
    run_tests([test_truncated_header, test_short_payload_then_silence, test_var_lengths_overrun,
               test_datasize_over_buffer_size, test_abandoned_connections,
               test_slow_client_does_not_hold_up_others, test_trickle_longer_than_socket_timeout,
               test_idle_connections_do_not_hold_up_others, test_fd_exhaustion,
               test_final_state], budget=58)
