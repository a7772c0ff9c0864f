"""Bad input on the socket: every case gets a clean close (EOF, no reply), is mentioned in the log, and
the worker keeps serving (a good request right after succeeds, the worker pid never changes).
One worker (--processes 1) so that "keeps serving" and "one slow client never holds up others" are
about the same process; --socket-timeout 1 and --buffer-size 100 keep the cases fast and small."""

import os
import re
import socket
import struct
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Server, app_get, app_req, check, check_eq, connect, free_port, header,  # noqa: E402
                     in_thread, magic_get, magic_get_req, magic_req, magic_set, magic_set_req, packet,
                     read_reply, request, run_tests, tcp_accepted, vars_block, wait_until)

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


def after_bad(what, offset, logged):
    """The checks every bad input is followed by: a good request succeeds, the worker is the same,
    and (unless logged is None) the log grew by a line that says exactly what was wrong: `logged` is
    its wording, literally (a client address and worker id come before it)."""
    srv, addr = server()
    # the log first (before the good request, which could log something of its own)
    if logged is None:
        got = True
    else:
        got = srv.wait_log(r"worker \d+: client 127\.0\.0\.1:\d+: " + re.escape(logged), timeout=3.0, offset=offset)
        print(f"[{what}] new log lines: {srv.log_lines(offset)[:3]!r}")
    good_request(addr)
    ws = srv.workers()
    if ws != STATE["workers"]:
        old, STATE["workers"] = STATE["workers"], ws  # so that later cases are judged on their own
        raise AssertionError(f"{what}: worker pids changed from {old} to {ws} (a worker crashed)")
    check(got, f"{what}: no log line saying {logged!r}; new lines: {srv.log_lines(offset)[:3]!r}")


# --------------------------------------------------------------------------------------------------

def test_truncated_header():
    srv, addr = server()
    # 2 bytes of a header, then close at once
    off = srv.log_size()
    s = connect(addr)
    s.sendall(b"\x6f\x10")
    s.close()
    after_bad("truncated header then close", off,
              "client closed the connection after 2 byte(s) of an incomplete request")
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
    after_bad("truncated header then half-close", off,
              "client closed the connection after 3 byte(s) of an incomplete request")


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
    after_bad("short payload then silence (socket-timeout)", off,
              "socket timeout (1 s) waiting for the request with 14 byte(s) received")

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
    after_bad("magic set body incomplete (socket-timeout)", off,
              f"socket timeout (1 s) waiting for the request with {len(req) - 50} byte(s) received")


def test_var_lengths_overrun():
    srv, addr = server()
    magic, app = "malformed cache magic request: vars: ", "malformed modifier1 0 request: vars: "
    cases = {  # what: (request, the log's wording)
        # modifier1 111 modifier2 17: first key length 200 in a 7-byte block
        "mod2 17 key length overruns": (packet(111, 17, struct.pack("<H", 200) + b"cmd\x03\x00"),
                                        magic + "key length 200 at offset 0 runs past the end of the 7-byte block"),
        # value length 500 where 3 bytes remain
        "mod2 17 value length overruns": (
            packet(111, 17, vars_block([("cmd", "get")]) + b"\x03\x00key\xf4\x01abc"),
            magic + "value length 500 at offset 15 runs past the end of the 20-byte block"),
        # a key-length field that is the last 2 bytes of the block
        "mod2 17 dangling key length": (
            packet(111, 17, vars_block([("cmd", "get"), ("key", "k")]) + b"\x05\x00"),
            magic + "key length 5 at offset 18 runs past the end of the 20-byte block"),
        # a zero-length key
        "mod2 17 zero-length key": (packet(111, 17, b"\x00\x00\x03\x00get" + vars_block([("key", "k")])),
                                    magic + "zero-length key at offset 0"),
        # modifier1 0 (app) with an overrunning var
        "mod1 0 var length overruns": (
            packet(0, 0, vars_block([("REQUEST_METHOD", "GET")]) + b"\x09\x00PATH_INFO\x90\x00/"),
            app + "value length 144 at offset 32 runs past the end of the 35-byte block"),
        # modifier1 0 with a zero-length key
        "mod1 0 zero-length key": (packet(0, 0, b"\x00\x00\x03\x00GET" + vars_block([("PATH_INFO", "/")])),
                                   app + "zero-length key at offset 0"),
        # modifier2 1 array whose item overruns
        "mod2 1 array item overruns": (
            packet(111, 1, b"\x02\x00k9\x50\x00short"),
            "cache set (modifier2 1): array: item length 80 at offset 4 runs past the end of the 11-byte block"),
    }
    for what, (req, logged) in cases.items():
        off = srv.log_size()
        reply, how = request(addr, req, timeout=3.0)
        check(how == "eof", f"{what}: connection ended by {how} (want a clean EOF), reply {reply!r}")
        check(not reply.startswith(b"HTTP/1.1 200") and not reply.startswith(bytes([111])),
              f"{what}: a malformed request was answered as if valid: {reply[:80]!r}")
        after_bad(what, off, logged)
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
    after_bad("datasize 101 > buffer-size 100", off, "invalid request block size: 101 (max 100 = buffer-size)")

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
    after_bad("datasize 4321 > buffer-size 100 (header only)", off,
              "invalid request block size: 4321 (max 100 = buffer-size)")

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
        # The kernel hands each one to the worker once TCP_DEFER_ACCEPT (1 s) stops waiting for data;
        # the worker closes it after --socket-timeout (1 s) of silence. Every one of them.
        wait_until(lambda: closed_by_server(socks) == len(socks), 15.0, interval=0.1)
        eofs = closed_by_server(socks)
        print(f"idle connections closed by the server: {eofs} of 1000 after {time.monotonic() - t0:.1f}s")
        check_eq(eofs, len(socks), "idle connections closed by the server (TCP_DEFER_ACCEPT, then socket-timeout)")
        dt = good_request(addr, max_latency=2.0)
        print(f"good requests after that, 1000 idle connections still open on the client side: {dt:.3f}s")
    finally:
        for s in socks:
            s.close()
    after_bad("1500 abandoned connections", off, None)
    lines = srv.log_lines(off)
    print(f"log lines written for 1500 abandoned connections: {len(lines)}; first: {lines[:3]!r}")
    check(srv.running(), "master died")


def test_slow_client_does_not_hold_up_others():
    srv, addr = server()
    check(magic_set(addr, "slow-key", "slow-value"), "set slow-key")
    req = magic_get_req("slow-key")  # 26 bytes, one every 100 ms (~2.6 s, under --socket-timeout 1 per read)
    sent_all = threading.Event()

    sends = []  # (byte index, monotonic time) of each send: a failure shows the gaps
    slow = connect(addr, 3.0)

    def trickle():
        # Only sends: a pause here longer than --socket-timeout would be the client's fault, so the
        # check that the worker accepted runs in the main thread instead.
        try:
            for i in range(len(req)):
                sends.append((i, time.monotonic()))
                slow.sendall(req[i:i + 1])
                time.sleep(0.1)
            sent_all.set()
            return read_reply(slow, 3.0)
        finally:
            slow.close()
    t, result = in_thread(trickle)
    # the worker holds the slow connection from here on
    check(wait_until(lambda: tcp_accepted(slow), 5.0), "the slow client's connection was not accepted within 5 s")
    latencies = []
    for _ in range(5):
        t0 = time.monotonic()
        app_get(addr, timeout=3)
        check_eq(magic_get(addr, "slow-key", timeout=3), b"slow-value", "get while a slow client trickles")
        latencies.append(time.monotonic() - t0)
    # served while the slow request was still incomplete: not queued behind it
    check(not sent_all.is_set(), f"the requests finished only after the slow client's last byte: {latencies}")
    t.join(5.0)
    check(not t.is_alive(), "slow client thread did not finish")
    t_start = sends[0][1] if sends else 0
    check("error" not in result, f"slow client: {result.get('traceback')}; sends (index, s): "
          f"{[(i, round(x - t_start, 3)) for i, x in sends]}")
    reply, how = result["value"]
    check(how == "eof" and reply.endswith(b"slow-value"), f"slow client's reply: {reply!r} ({how})")
    print(f"latencies while a client trickles: {[round(x, 3) for x in latencies]}")
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
            # the worker has taken what it can: accept fails with EMFILE and it pauses accepting
            check(srv.wait_log(r"worker 1: accept: Too many open files: pausing accepts", timeout=10.0),
                  "the worker never ran out of descriptors with 150 connections and 64 fds:\n" + srv.log_tail(5))
            c0, l0 = cpu_ticks(), srv.log_size()
            time.sleep(1.0)  # the window over which CPU and log growth are measured
            ticks, log_bytes = cpu_ticks() - c0, srv.log_size() - l0
            print(f"out of fds: worker CPU {ticks}/{hz} ticks in 1 s, log +{log_bytes} bytes in 1 s, fds {nfds()}")
            if ticks > 0.3 * hz:
                problems.append(f"the worker spins when out of fds ({ticks} of {hz} ticks in 1 s)")
            if log_bytes > 20000:
                problems.append(f"log flood when out of fds: {log_bytes} bytes in 1 s, e.g. {srv.log_since(l0, 300).splitlines()[:1]!r}")
            # a batch at a time (as descriptors free up), every idle connection is closed in the end
            t0 = time.monotonic()
            wait_until(lambda: closed_by_server(socks) == len(socks), 20.0, interval=0.1)
            eofs = closed_by_server(socks)
            print(f"idle connections closed by the server (socket-timeout 1 s): {eofs} of 150 "
                  f"in {time.monotonic() - t0:.1f}s")
            if eofs != len(socks):
                problems.append(f"only {eofs} of {len(socks)} idle connections closed by the server within 20 s")
        finally:
            for s in socks:
                s.close()
        # the server closed every connection: its descriptors are free and it serves at once
        reply, how = request(addr, app_req("/"), timeout=3.0)
        print(f"worker fds after the idle clients left: {nfds()}")
        if not (how == "eof" and reply.startswith(b"HTTP/1.1 200")):
            problems.append(f"no service once the idle clients were gone: {reply[:40]!r} ({how}); worker fds {nfds()}")
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
