#!/usr/bin/env python3
"""--cache-sync ADDR and sync=ADDR;ADDR (uWSGI's start-up copy of another node's cache, over modifier2 6):
from our server (geometries differ: what fits is copied, what does not is counted), from the real
uWSGI 2.0.21 (its raw item image), expiry carried over as absolute times, the next node tried when one
is down, and exit status 1 before binding when no node gives a usable dump (none answers, or one
answers garbage)."""
import os
import re
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Server, UwsgiProcess, check, check_eq, free_port, magic_get, magic_get_req,  # noqa: E402
                     magic_set, need_uwsgi, parse_magic_get_reply, port_is_free, request, run_server_to_exit,
                     run_tests)

BINARY = bytes(range(256)) * 3


def expires_of(addr, key, cache=None):
    reply, _ = request(addr, magic_get_req(key, cache=cache))
    d, _ = parse_magic_get_reply(reply)
    return int(d.get(b"expires", b"0"))


def fill(addr):
    """The same content on any source: plain, binary, expiring, a named cache, one value of 3000 bytes."""
    check(magic_set(addr, "plain", "value"), "set plain")
    check(magic_set(addr, "binary", BINARY), "set binary")
    check(magic_set(addr, "expiring", "soon", expires=300), "set expiring")
    check(magic_set(addr, "big", b"B" * 3000), "set big")
    check(magic_set(addr, "named", "in other", cache="other"), "set named")


def check_copied(src, dst, big_fits):
    check_eq(magic_get(dst, "plain"), b"value", "plain copied")
    check_eq(magic_get(dst, "binary"), BINARY, "binary value copied byte for byte")
    check_eq(magic_get(dst, "expiring"), b"soon", "expiring item copied")
    src_at, dst_at = expires_of(src, "expiring"), expires_of(dst, "expiring")
    check(abs(src_at - dst_at) <= 1 and dst_at > time.time() + 250, f"expiry carried over: {src_at} vs {dst_at}")
    check_eq(magic_get(dst, "big"), b"B" * 3000 if big_fits else None, "the 3000-byte value")
    check_eq(magic_get(dst, "named", cache="other"), b"in other", "named cache copied")
    check_eq(magic_get(dst, "named"), None, "named item stays in its cache")


def test_from_our_server():
    sport, dport = free_port(), free_port()
    src = ("127.0.0.1", sport)
    with Server(["--socket", f"127.0.0.1:{sport}", "--cache", "100", "--cache2", "name=other,items=10"], workers=1):
        fill(src)
        dead = f"127.0.0.1:{free_port()}"
        # The copy's default cache is smaller and its blocks too small for "big": copied what fits.
        args = ["--socket", f"127.0.0.1:{dport}", "--cache", "20", "--cache-blocksize", "1024",
                "--cache-sync", f"127.0.0.1:{sport}", "--cache2", f"name=other,items=5,sync={dead};127.0.0.1:{sport}"]
        with Server(args, workers=1) as dst:
            check_copied(src, ("127.0.0.1", dport), big_fits=False)
            log = dst.log()
            check(re.search(r'cache "default": 3 item\(s\) loaded from 127\.0\.0\.1:\d+ \(0 expired, 1 not fitting', log),
                  f"default cache load line: {log}")
            check(f"getting cache dump from {dead}" in log and "trying with the next sync node" in log,
                  f"the dead node tried, then the next: {log}")


def test_from_uwsgi():
    need_uwsgi()
    uport, dport = free_port(), free_port()
    src = ("127.0.0.1", uport)
    uw = UwsgiProcess(["--plugin", "cache", "--master", "--socket", f"127.0.0.1:{uport}", "--cache", "100",
                       "--cache2", "name=other,items=10"], [src])
    uw.start()
    try:
        fill(src)
        args = ["--socket", f"127.0.0.1:{dport}", "--cache", "20", "--cache-sync", f"127.0.0.1:{uport}",
                "--cache2", f"name=other,items=5,sync=127.0.0.1:{uport}"]
        with Server(args, workers=1) as dst:
            check_copied(src, ("127.0.0.1", dport), big_fits=True)
            check('cache "default": 4 item(s) loaded' in dst.log(), f"load line: {dst.log()}")
    finally:
        uw.stop()


def garbage_listener(port):
    """The garbage server's socket, listening before the server under test starts (bound in the thread
    itself, it was once not yet listening when the server connected: "Connection refused")."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen(8)
    s.settimeout(0.2)
    return s


def garbage_server(s, stop, image_bytes=777):
    """Answers every connection on listening socket s with a dump reply header and `image_bytes` bytes
    that are no image."""
    while not stop.is_set():
        try:
            c, _ = s.accept()
        except socket.timeout:
            continue
        with c:
            c.recv(100)
            vars_ = b"".join(len(k).to_bytes(2, "little") + k + len(v).to_bytes(2, "little") + v
                             for k, v in ((b"items", b"10"), (b"blocksize", b"64")))
            c.sendall(bytes([111]) + len(vars_).to_bytes(2, "little") + bytes([7]) + vars_)
            try:
                chunk = b"\xff" * min(image_bytes, 1 << 20)
                for sent in range(0, image_bytes, len(chunk)):
                    c.sendall(chunk[:image_bytes - sent])
            except OSError:
                pass  # the server stopped reading (a dump over its limit)
    s.close()


def test_no_usable_node_exits_1_before_binding():
    port = free_port()
    dead1, dead2 = free_port(), free_port()
    rc, out, left = run_server_to_exit(["--socket", f"127.0.0.1:{port}", "--cache", "10",
                                        "--cache-sync", f"127.0.0.1:{dead1}"])
    check_eq(rc, 1, "exit status when the sync node is down")
    check("no sync node gave a usable dump" in out and f"127.0.0.1:{dead1}" in out, f"message: {out[-500:]}")
    check(port_is_free(port) and not left, "nothing bound, nothing left running")
    gport = free_port()
    stop = threading.Event()
    t = threading.Thread(target=garbage_server, args=(garbage_listener(gport), stop), daemon=True)
    t.start()
    try:
        rc, out, left = run_server_to_exit(["--socket", f"127.0.0.1:{port}",
                                            "--cache2", f"name=c,items=10,sync=127.0.0.1:{dead2};127.0.0.1:{gport}"])
    finally:
        stop.set()
        t.join(2)
    check_eq(rc, 1, "exit status when the only answer is garbage")
    check("uWSGI dump image" in out and "trying with the next sync node" in out, f"message: {out[-600:]}")
    check(port_is_free(port) and not left, "nothing bound, nothing left running")
    # A dump far larger than this cache could hold is refused before it exhausts memory.
    hport = free_port()
    stop = threading.Event()
    t = threading.Thread(target=garbage_server, args=(garbage_listener(hport), stop, (65 << 20) + 1), daemon=True)
    t.start()
    try:
        rc, out, left = run_server_to_exit(["--socket", f"127.0.0.1:{port}", "--cache", "10", "--cache-blocksize", "1k",
                                            "--cache-sync", f"127.0.0.1:{hport}"], timeout=20)
    finally:
        stop.set()
        t.join(5)
    check_eq(rc, 1, "exit status for an oversized dump")
    check("bytes allowed" in out and "at least as large as the node's" in out, f"message: {out[-600:]}")


if __name__ == "__main__":
    run_tests([test_from_our_server, test_from_uwsgi, test_no_usable_node_exits_1_before_binding], budget=60)
