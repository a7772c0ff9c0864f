"""The cache client: `server cache ...` (client_cli.cpp) and CacheClient (client.cpp), against our
server (TCP and UNIX) and against the real uWSGI 2.0.21: same commands, same results and exit codes.

The persistent mode needs several requests from one client, which one CLI call never makes: a tiny
driver is compiled against the built libucached_server.a and run behind a counting TCP proxy, so the tests see
how many connections were used and which requests carried keepalive=1.
"""

import os
import socket
import struct
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (UwsgiProcess, need_uwsgi, SERVER_BIN, Server, check, check_eq, peer_missing,  # noqa: E402
                     free_port, header, magic_get_req, magic_req, make_temp_dir, parse_magic_get_reply, parse_vars,
                     request, run_tests, vars_block, wait_until)

BUILD_DIR = os.environ.get("BUILD_DIR") or os.path.dirname(os.path.dirname(os.path.abspath(SERVER_BIN)))
BINARY = b"\x00\x01NUL\x00inside\xff\xfe\r\n\x00" + bytes(range(256)) + b"\x00"


# --------------------------------------------------------------------------------------------------
# running the CLI

def cli(*args, stdin=b"", timeout=20):
    """(exit status, stdout bytes, stderr text) of `server cache ARGS`."""
    proc = subprocess.run([SERVER_BIN, "cache", *[str(a) for a in args]], input=stdin, capture_output=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr.decode("utf-8", "replace")


def expect(want_rc, *args, stdout=None, stderr_has=None, stdin=b""):
    rc, out, err = cli(*args, stdin=stdin)
    what = "server cache " + " ".join(str(a) for a in args)
    check(rc == want_rc, f"{what}: exit {rc}, want {want_rc} (stdout {out[:200]!r}, stderr {err.strip()!r})")
    if stdout is not None:
        check_eq(out, stdout, f"{what}: stdout")
    if stderr_has is not None:
        check(stderr_has in err, f"{what}: stderr {err.strip()!r} does not mention {stderr_has!r}")
    if want_rc == 2:
        check(err.strip() != "", f"{what}: exit 2 without a message on stderr")
    return out, err


# --------------------------------------------------------------------------------------------------
# uWSGI

class Uwsgi(UwsgiProcess):
    """uWSGI 2.0.21 with a default cache of 100 items and a cache "other", on the given sockets."""

    def __init__(self, sockets, extra=()):
        args = ["--plugin", "cache", "--master", "--cache", "100", "--cache-expire-freq", "1",
                "--cache2", "name=other,items=10", *extra]
        for s in sockets:
            args += ["--socket", s if isinstance(s, str) else f"{s[0]}:{s[1]}"]
        super().__init__(args, sockets)






# --------------------------------------------------------------------------------------------------
# the same CLI checks for any server

def cli_suite(addr, label, tmp, ours=False):
    """set/get/update/del/exists/clear, binary values, expires, named cache, misses: exit codes and
    outputs that must be identical against our server and uWSGI."""
    S = ["--cache-server", addr]
    key = f"k-{label}"
    expect(1, "get", key, *S, stdout=b"")                         # miss: exit 1, nothing printed
    expect(1, "exists", key, *S)
    expect(0, "set", key, "hello", *S, stdout=b"")
    expect(0, "get", key, *S, stdout=b"hello")
    expect(0, "exists", key, *S)
    expect(1, "set", key, "again", *S, stderr_has="not stored")  # set does not overwrite
    expect(0, "get", key, *S, stdout=b"hello")
    expect(0, "update", key, "world", *S)
    expect(0, "get", key, *S, stdout=b"world")
    expect(0, "update", key + "-new", "created", *S)              # update creates
    expect(0, "get", key + "-new", *S, stdout=b"created")
    expect(0, "del", key, *S)
    expect(1, "del", key, *S)
    expect(1, "get", key, *S, stdout=b"")

    # binary value with NUL bytes: from a file, from stdin ("-" and absent VALUE), byte-exact back
    path = os.path.join(tmp, f"binary-{label}.bin")
    with open(path, "wb") as f:
        f.write(BINARY)
    expect(0, "set", key + "-bin", "--file", path, *S)
    expect(0, "get", key + "-bin", *S, stdout=BINARY)
    expect(0, "update", key + "-bin", "-", *S, stdin=BINARY[::-1])
    expect(0, "get", key + "-bin", *S, stdout=BINARY[::-1])
    expect(0, "set", key + "-stdin", *S, stdin=b"\x00piped\x00")
    expect(0, "get", key + "-stdin", *S, stdout=b"\x00piped\x00")
    big = bytes((i * 7) & 0xff for i in range(60000))  # over one read/write of the CLI, under the blocksize
    with open(path, "wb") as f:
        f.write(big)
    expect(0, "set", key + "-big", f"--file={path}", *S)
    expect(0, "get", key + "-big", *S, stdout=big)
    # an empty value is refused by the server (uWSGI: size must be 1..blocksize): exit 1
    expect(1, "set", key + "-empty", "", *S)

    # expires: sent relative, the server reports the absolute time in the magic get reply
    now = time.time()
    expect(0, "set", key + "-exp", "soon", "--expires", "100", *S)
    reply, how = request(addr if addr.startswith("/") else ("127.0.0.1", int(addr.rsplit(":", 1)[1])),
                         magic_get_req(key + "-exp"))
    d, value = parse_magic_get_reply(reply)
    check_eq(value, b"soon", "value of the item set with --expires 100")
    at = int(d.get(b"expires", b"0"))
    check(now + 95 <= at <= now + 105, f"expires var {at} is not about now+100 ({now:.0f}+100)")
    # Expiry has one-second resolution: "--expires 1" set at x.999 may be gone at (x+1).001, so the item
    # gets 3 s (at least 2 s of life) before the get that must still find it.
    expect(0, "set", key + "-gone", "brief", "--expires", "3", *S)
    expect(0, "get", key + "-gone", *S, stdout=b"brief")
    gone = wait_until(lambda: cli("get", key + "-gone", *S)[0] == 1, 10, interval=0.25)
    check(gone, "an item set with --expires 3 still there after 10 s (sweeper every 1 s)")

    # named cache
    expect(0, "set", key, "in-other", "--cache", "other", *S)
    expect(1, "get", key, *S)                                  # not in the default cache
    expect(0, "get", key, "--cache", "other", *S, stdout=b"in-other")
    expect(1, "get", key, "--cache", "nosuch", *S)             # unknown cache: no reply = miss
    expect(0, "clear", "--cache", "other", *S)
    expect(1, "get", key, "--cache", "other", *S)
    expect(0, "get", key + "-new", *S, stdout=b"created")     # clearing "other" left the default alone
    expect(0, "clear", *S)
    expect(1, "get", key + "-new", *S)
    expect(1, "exists", key + "-bin", *S)

    # --no-persistent (uWSGI's one-request-per-connection, without the keepalive var) gives the same
    expect(0, "set", key, "np", "--no-persistent", *S)
    expect(0, "get", key, "--no-persistent", *S, stdout=b"np")
    expect(1, "get", key + "-nope", "--no-persistent", *S)

    # keys / stats: our magic extensions (protocol.md §2); uWSGI has nothing like them over the wire
    if ours:
        expect(0, "set", key + "-k1", "a", *S)
        expect(0, "set", key + "-k2", "b", *S)
        out, _ = expect(0, "keys", *S)
        listed = set(out.split(b"\n")) - {b""}
        check({(key + "-k1").encode(), (key + "-k2").encode()} <= listed, f"keys listed: {listed}")
        check(key.encode() + b"-nope" not in listed, f"keys lists an absent key: {listed}")
        out, _ = expect(0, "stats", *S)
        stats = dict(line.split(b" ", 1) for line in out.splitlines() if b" " in line)
        check(stats.get(b"capacity") == b"100" and stats.get(b"items") == str(len(listed)).encode(),
              f"stats output {out[:300]!r} against {len(listed)} listed keys")
    else:
        for command in ("keys", "stats"):
            expect(2, command, *S, stdout=b"", stderr_has="not supported by this server")


# --------------------------------------------------------------------------------------------------
# tests: the CLI without a server

def test_usage_errors():
    expect(0, "--help", stdout=None)
    out, _ = expect(0, "--help")
    check(b"usage: server cache" in out and b"exit status" in out, f"--help output: {out[:300]!r}")
    expect(2, stderr_has="no command")
    expect(2, "bogus", stderr_has="unknown command")
    expect(2, "get", stderr_has="usage: server cache get KEY")
    expect(2, "get", "a", "b", stderr_has="usage: server cache get KEY")
    expect(2, "set", "k", "v", "--file", "/dev/null", stderr_has="not both")
    expect(2, "get", "k", "--expires", "5", stderr_has="only apply to set and update")
    expect(2, "set", "k", "v", "--expires", "-1", stderr_has="--expires")
    expect(2, "get", "k", "--timeout", "0", stderr_has="--timeout")
    expect(2, "get", "k", "--bogus", stderr_has="unknown option")
    expect(2, "get", "k", "--cache-server", stderr_has="needs a value")
    expect(2, "get", "k", "--cache-server", "127.0.0.1:notaport", stderr_has="invalid port")
    expect(2, "set", "k", "--file", "/nonexistent/value", "--cache-server", "127.0.0.1:1",
           stderr_has="/nonexistent/value")
    # a key over 65535 bytes cannot be framed (u16 lengths): refused before connecting
    expect(2, "get", "k" * 70000, "--cache-server", "127.0.0.1:1", stderr_has="65535")


def test_unreachable_server():
    port = free_port()
    _, err = expect(2, "get", "k", "--cache-server", f"127.0.0.1:{port}", stderr_has=f"127.0.0.1:{port}")
    check("refused" in err.lower(), f"no 'refused' in {err!r}")
    _, err = expect(2, "set", "k", "v", "--cache-server", f":{port}", stderr_has=f":{port}")
    missing = os.path.join(make_temp_dir(), "no.sock")
    _, err = expect(2, "exists", "k", "--cache-server", missing, stderr_has=missing)
    check("No such file" in err, f"no ENOENT text in {err!r}")
    # a listener that accepts (backlog) but never answers: --timeout bounds the wait
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(8)
    try:
        t0 = time.monotonic()
        _, err = expect(2, "get", "k", "--timeout", "300", "--cache-server", f"127.0.0.1:{lst.getsockname()[1]}",
                        stderr_has="within 300 ms")
        check(time.monotonic() - t0 < 5, f"--timeout 300 took {time.monotonic() - t0:.1f} s")
    finally:
        lst.close()


# --------------------------------------------------------------------------------------------------
# tests: the exact bytes, with a fake server (requests as uWSGI's own client sends them, spec §7.4)

class FakeServer:
    """Accepts connections one at a time; reads one magic request (header, vars, `size` body), records
    it, writes the canned reply and closes."""

    def __init__(self, reply):
        self.reply = reply
        self.requests = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(0.2)
        self.addr = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.stopping = False
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stopping:
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(3)
                data = b""
                try:
                    while True:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                        if len(data) >= 4:
                            end = 4 + struct.unpack_from("<H", data, 1)[0]
                            if len(data) >= end:
                                size = dict(parse_vars(data[4:end])).get(b"size", b"0")
                                if len(data) >= end + int(size):
                                    break
                    self.requests.append(data)
                    conn.sendall(self.reply)
                except OSError:
                    pass

    def close(self):
        self.stopping = True
        self.listener.close()
        self.thread.join(2)


def test_exact_request_bytes():
    """The requests of examples §3 (captured from uWSGI's own remote calls), byte for byte."""
    fake = FakeServer(magic_reply([("status", "ok"), ("size", "3")], b"abc"))
    try:
        S = ["--cache-server", fake.addr, "--no-persistent"]
        expect(0, "get", "kk", "--cache", "rc", *S, stdout=b"abc")
        expect(0, "set", "kk", "VAL", "--cache", "rc", *S)
        expect(0, "set", "kk", "VAL", "--expires", "60", "--cache", "rc", *S)
        expect(0, "update", "kk", "VAL", "--cache", "rc", *S)
        expect(0, "del", "kk", "--cache", "rc", *S)
        expect(0, "exists", "kk", "--cache", "rc", *S)
        expect(0, "clear", "--cache", "rc", *S)
        expect(0, "get", "kk", *S, stdout=b"abc")  # the default cache: the cache var is sent, empty
        expect(0, "get", "kk", "--cache", "rc", "--cache-server", fake.addr, stdout=b"abc")  # persistent
        want = [
            "6f1e0011 0300636d6403006765740300 6b657902006b6b 05006361636865020072 63",
            "6f300011 0300636d640300736574 03006b657902006b6b 040073697a65010033 040073697a65010033"
            " 0500636163686502007263 56414c",
            None,  # with expires, built below
            None,  # update, built below
            None, None,
            "6f170011 0300636d64 0500636c656172 0500636163686502007263",
            None,
            None,
        ]
        want[2] = magic_req([("cmd", "set"), ("key", "kk"), ("size", "3"), ("expires", "60"), ("size", "3"),
                             ("cache", "rc")], b"VAL")
        want[3] = magic_req([("cmd", "update"), ("key", "kk"), ("size", "3"), ("size", "3"), ("cache", "rc")],
                            b"VAL")
        want[4] = magic_req([("cmd", "del"), ("key", "kk"), ("cache", "rc")])
        want[5] = magic_req([("cmd", "exists"), ("key", "kk"), ("cache", "rc")])
        want[7] = magic_req([("cmd", "get"), ("key", "kk"), ("cache", "")])
        want[8] = magic_req([("cmd", "get"), ("key", "kk"), ("cache", "rc"), ("keepalive", "1")])
        want = [bytes.fromhex(w.replace(" ", "")) if isinstance(w, str) else w for w in want]
        check_eq(len(fake.requests), len(want), "requests received by the fake server")
        for i, (got, w) in enumerate(zip(fake.requests, want)):
            check_eq(got.hex(" "), w.hex(" "), f"request #{i}")
    finally:
        fake.close()


def magic_reply(pairs, body=b""):
    block = vars_block(pairs)
    return header(111, len(block), 17) + block + body


def test_malformed_and_odd_replies():
    cases = [
        # (reply, exit status of `get`, text on stderr)
        (b"", 1, None),                                                            # no reply = miss
        (magic_reply([("status", "ok"), ("size", "0")]), 1, None),                 # size 0 = miss
        (magic_reply([("status", "notfound")]), 1, None),                          # our persistent miss
        (b"HTTP/1.0 404 Not Found\r\n\r\n", 2, "unexpected reply header"),
        (header(111, 30, 17) + vars_block([("status", "ok")]), 2, "cut short"),    # vars shorter than said
        (magic_reply([("status", "ok"), ("size", "9")], b"abc"), 2, "value cut short"),
        (magic_reply([("status", "ok")]), 2, "size var"),                          # get ok without size
        (header(111, 4, 17) + b"\x00\x00\x01\x00", 2, "malformed reply vars"),    # zero-length key
        (b"\x6f\x0c", 2, "2 of 4 header bytes"),
    ]
    for reply, rc, text in cases:
        fake = FakeServer(reply)
        try:
            expect(rc, "get", "k", "--cache-server", fake.addr, stderr_has=text, stdout=b"")
        finally:
            fake.close()
    # a non-get command takes status=ok alone; any other status is a refusal
    for reply, rc in ((magic_reply([("status", "ok")]), 0), (magic_reply([("status", "error")]), 1)):
        fake = FakeServer(reply)
        try:
            expect(rc, "del", "k", "--cache-server", fake.addr)
        finally:
            fake.close()


# --------------------------------------------------------------------------------------------------
# tests: against our server and uWSGI

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


def test_uwsgi_tcp_and_unix():
    need_uwsgi()
    tmp = make_temp_dir()
    port = free_port()
    unix = os.path.join(tmp, "u.sock")
    with Uwsgi([("127.0.0.1", port), unix]):
        cli_suite(f"127.0.0.1:{port}", "tcp", tmp)
        cli_suite(unix, "unix", tmp)


# --------------------------------------------------------------------------------------------------
# the persistent mode: a driver making several calls with one CacheClient, behind a counting proxy

def driver_binary():
    """The driver (tests/integration/client_driver.cpp), built with the project as bin/client_driver."""
    path = os.path.join(BUILD_DIR, "bin", "client_driver")
    if not os.access(path, os.X_OK):
        peer_missing(f"the client driver {path} (built with the project: ninja client_driver)")
    return path


def drive(addr, calls, persistent=True, timeout=30):
    """Runs the calls with one CacheClient; returns the result lines."""
    proc = subprocess.run([driver_binary(), addr, "persistent" if persistent else "oneshot"],
                          input=("\n".join(calls) + "\n").encode(), capture_output=True, timeout=timeout)
    check(proc.returncode == 0, f"driver exit {proc.returncode}: {proc.stderr[-500:]!r}")
    return proc.stdout.decode("utf-8", "replace").splitlines()


class CountingProxy:
    """TCP proxy on loopback: one upstream connection per client connection, EOF passed on as a
    half-close. Records the bytes each client connection sent."""

    def __init__(self, upstream):
        self.upstream = upstream
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.sent = []  # one bytearray per client connection
        self.lock = threading.Lock()
        self.stopping = False
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def _accept(self):
        self.listener.settimeout(0.2)
        while not self.stopping:
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            record = bytearray()
            with self.lock:
                self.sent.append(record)
            up = socket.create_connection(self.upstream, timeout=5)
            for a, b, rec in ((client, up, record), (up, client, None)):
                t = threading.Thread(target=self._pipe, args=(a, b, rec), daemon=True)
                t.start()
                self.threads.append(t)

    @staticmethod
    def _pipe(src, dst, record):
        src.settimeout(20)
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if record is not None:
                    record += data
                dst.sendall(data)
        except OSError:
            pass
        for s, how in ((dst, socket.SHUT_WR), (src, socket.SHUT_RD)):
            try:
                s.shutdown(how)
            except OSError:
                pass

    def connections(self):
        with self.lock:
            return [bytes(r) for r in self.sent]

    def close(self):
        self.stopping = True
        self.listener.close()


SEQUENCE = ["set a alpha", "get a", "get nokey", "exists a", "exists nokey", "set a again", "update b beta",
            "get b", "del a", "del a", "get a", "clear", "get b"]
SEQUENCE_RESULTS = ["ok", "ok alpha", "miss", "ok", "miss", "miss", "ok", "ok beta", "ok", "miss", "miss", "ok",
                    "miss"]


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
    run_tests([test_usage_errors, test_unreachable_server, test_exact_request_bytes, test_malformed_and_odd_replies,
               test_ours_tcp_and_unix, test_uwsgi_tcp_and_unix,
               test_persistent_mode_ours, test_persistent_mode_falls_back_against_uwsgi], budget=240)
