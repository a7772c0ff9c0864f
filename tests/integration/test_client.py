"""The cache client without a real server: `server cache ...` (client_cli.cpp) usage errors, an
unreachable server, the exact request bytes and odd replies (a fake server). The same CLI checks against
our server and uWSGI 2.0.21 are test_client_ours.py and test_client_uwsgi.py (shared code: client_cases.py).
"""

import os
import socket
import struct
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (check, check_eq, free_port, header, magic_req, make_temp_dir, parse_vars,  # noqa: E402
                     run_tests, vars_block)
from client_cases import expect  # noqa: E402

# --------------------------------------------------------------------------------------------------
# tests: the CLI without a server

def test_usage_errors():
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

if __name__ == "__main__":
    run_tests([test_usage_errors, test_unreachable_server, test_exact_request_bytes, test_malformed_and_odd_replies],
              budget=240)
