"""What test_client.py, test_client_ours.py and test_client_uwsgi.py share: running `server cache ...`
(client_cli.cpp), the CLI checks that must give the same results against our server and uWSGI 2.0.21, and
the persistent-mode driver (client_driver.cpp, several calls with one CacheClient) behind a counting TCP
proxy. The three scripts are separate ctest tests so that ctest runs them side by side: together they
start the CLI some 300 times, which is most of their time under ASan on a loaded machine.
"""

import os
import socket
import subprocess
import threading
import time

from harness import (UwsgiProcess, SERVER_BIN, check, check_eq, peer_missing, magic_get_req, parse_magic_get_reply,
                     request, wait_until)

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
    # An item that must expire while the rest of the suite runs (its wait is checked before the clear).
    # Expiry has one-second resolution: "--expires 3" set at x.999 may be gone at (x+3).001, so the item
    # is sure to live 2 s after the set started: a get that ended by then must find it. (Two CLI runs
    # can take longer on a loaded machine, under ASan: then the hit is not required, and said so.)
    set_at = time.monotonic()
    expect(0, "set", key + "-gone", "brief", "--expires", "3", *S)
    rc, out, _ = cli("get", key + "-gone", *S)
    took = time.monotonic() - set_at
    if rc != 0 and took >= 2.0:
        print(f"  ({label}: the get of the item set with --expires 3 ended {took:.1f} s after the set began: "
              "its time may be up, the hit is not checked)")
    else:
        check((rc, out) == (0, b"brief"), f"get {key}-gone {took:.1f} s after its set with --expires 3: exit {rc}, "
              f"stdout {out!r} (want the value)")
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
    before = time.time()
    expect(0, "set", key + "-exp", "soon", "--expires", "100", *S)
    after = time.time()  # the server added 100 to its clock at some moment in between (1 s resolution)
    reply, how = request(addr if addr.startswith("/") else ("127.0.0.1", int(addr.rsplit(":", 1)[1])),
                         magic_get_req(key + "-exp"))
    d, value = parse_magic_get_reply(reply)
    check_eq(value, b"soon", "value of the item set with --expires 100")
    at = int(d.get(b"expires", b"0"))
    check(int(before) + 99 <= at <= int(after) + 101,  # 1 s: a coarse clock may lag by a tick
          f"expires var {at} is not 100 s after the set, sent between {before:.1f} and {after:.1f}")

    # named cache
    expect(0, "set", key, "in-other", "--cache", "other", *S)
    expect(1, "get", key, *S)                                  # not in the default cache
    expect(0, "get", key, "--cache", "other", *S, stdout=b"in-other")
    expect(1, "get", key, "--cache", "nosuch", *S)             # unknown cache: no reply = miss
    expect(0, "clear", "--cache", "other", *S)
    expect(1, "get", key, "--cache", "other", *S)
    expect(0, "get", key + "-new", *S, stdout=b"created")     # clearing "other" left the default alone
    # the sweeper runs every 1 s: the item set with --expires 3 is gone by now or soon
    gone = wait_until(lambda: cli("get", key + "-gone", *S)[0] == 1, 10, interval=0.25)
    check(gone, "an item set with --expires 3 still there after 10 s (sweeper every 1 s)")
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

