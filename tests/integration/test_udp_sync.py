#!/usr/bin/env python3
"""UDP cache sync (node= / udp=, --cache-udp-node / --cache-udp-server): every successful write of a
cache reaches the nodes' caches (set, update, uwsgi-array set, math with its result, expiry, delete),
named caches too; two servers sending to each other do not bounce updates; malformed datagrams are
dropped and logged and change nothing; a value over the packet's 16-bit limit is refused with a log
line. Against the real uWSGI 2.0.21 in both directions (uWSGI's receiver never applies deletes:
spec §2.7, so that direction checks sets only)."""
import os
import socket
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Server, UwsgiProcess, array_block, check, check_eq, free_port, magic_get, magic_get_req,  # noqa: E402
                     magic_req, magic_set, magic_set_req, need_uwsgi, packet, parse_magic_get_reply, request, run_tests,
                     wait_until)


def free_udp_port():
    return free_port(kind=socket.SOCK_DGRAM)


def arrives(addr, key, want, cache=None, timeout=5.0):
    return wait_until(lambda: magic_get(addr, key, cache=cache) == want, timeout, interval=0.02)


def marker_arrives(sender, receiver, name):
    """Write a marker on sender and wait until receiver has it. A worker sends its datagrams before it
    replies and the receiver applies them in order, so once the marker is there, anything sent by an
    earlier write would have been applied too: the test can then look for an absence."""
    check(magic_set(sender, name, "marker"), f"marker {name} set")
    check(arrives(receiver, name, b"marker"), f"marker {name} arrived")


def expires_of(addr, key):
    reply, _ = request(addr, magic_get_req(key))
    d, _ = parse_magic_get_reply(reply)
    return int(d.get(b"expires", b"0"))


def test_ours_to_ours():
    udp, udp2 = free_udp_port(), free_udp_port()
    aport, bport = free_port(), free_port()
    a, b = ("127.0.0.1", aport), ("127.0.0.1", bport)
    sender = ["--socket", f"127.0.0.1:{aport}", "--processes", "2", "--cache", "100", "--cache-blocksize", "100k",
              "--cache-udp-node", f"127.0.0.1:{udp}", "--cache2", f"name=other,items=10,node=127.0.0.1:{udp2}"]
    receiver = ["--socket", f"127.0.0.1:{bport}", "--cache", "100", "--cache-blocksize", "100k",
                "--cache-udp-server", f"127.0.0.1:{udp}", "--cache2", f"name=other,items=10,udp=127.0.0.1:{udp2}"]
    with Server(receiver, workers=1) as rb, Server(sender, workers=2) as sa:
        check(magic_set(a, "k1", "v1"), "set on the sender")
        check(arrives(b, "k1", b"v1"), "a set arrives")
        check(magic_set(a, "k1", "v2", cmd="update"), "update on the sender")
        check(arrives(b, "k1", b"v2"), "an update arrives")
        request(a, packet(111, 1, array_block([b"arr", b"from an array set"])))
        check(arrives(b, "arr", b"from an array set"), "a modifier2 1 set arrives")
        check(magic_set(a, "exp", "soon", expires=200), "set with expiry")
        check(arrives(b, "exp", b"soon"), "the expiring item arrives")
        check(abs(expires_of(a, "exp") - expires_of(b, "exp")) <= 1, "with the same absolute expiry")
        for _ in range(3):
            reply, _ = request(a, magic_set_req("n", (5).to_bytes(8, "little"), cmd="inc"))
            check(b"status\x02\x00ok" in reply, f"inc by 5 on the sender: {reply!r}")
        check(arrives(b, "n", (15).to_bytes(8, "little")), "math sends the result (15), not the operand")
        check(magic_set(a, "named", "x", cache="other"), "set in a named cache")
        check(arrives(b, "named", b"x", cache="other"), "named caches replicate to their own node")
        request(a, magic_req([("cmd", "del"), ("key", "k1")]))
        check(arrives(b, "k1", None), "a delete arrives")
        check(not magic_set(a, "exp", "again"), "a refused set (key exists)")
        marker_arrives(a, b, "marker-1")
        check_eq(magic_get(b, "exp"), b"soon", "a refused write sends nothing")
        big = b"v" * 70000
        check(magic_set(a, "big", big), "a 70000-byte value is stored locally")
        marker_arrives(a, b, "marker-2")
        check_eq(magic_get(b, "big"), None, "a value over 65535 bytes cannot travel")
        check("cannot be sent (a UDP sync packet has 16-bit lengths" in sa.log(), f"and the sender says so: {sa.log_tail(5)}")
        # Garbage at the receiver: dropped, logged, nothing changes, it keeps working.
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        for junk in (b"", b"\x6f", b"\x00\x00\x00\x0a", b"\x6f\x09\x00\x0a" + b"\x05\x00abc",
                     bytes([111, 2, 0, 12]) + b"\x00\x00", bytes([111, 3, 0, 10]) + b"\x01\x00k"):
            s.sendto(junk, ("127.0.0.1", udp))
        s.close()
        check(magic_set(a, "after", "junk"), "set after the junk")
        check(arrives(b, "after", b"junk"), "the receiver still applies updates after junk")
        check(wait_until(lambda: "packet dropped" in rb.log(), 10), f"junk logged: {rb.log_tail(5)}")


def test_two_nodes_sending_to_each_other_do_not_bounce():
    ua, ub = free_udp_port(), free_udp_port()
    aport, bport = free_port(), free_port()
    a, b = ("127.0.0.1", aport), ("127.0.0.1", bport)
    with Server(["--socket", f"127.0.0.1:{aport}", "--cache", "10", "--cache-udp-server", f"127.0.0.1:{ua}",
                 "--cache-udp-node", f"127.0.0.1:{ub}"], workers=1), \
         Server(["--socket", f"127.0.0.1:{bport}", "--cache", "10", "--cache-udp-server", f"127.0.0.1:{ub}",
                 "--cache-udp-node", f"127.0.0.1:{ua}"], workers=1) as sb:
        check(magic_set(a, "k", "from a"), "set on a")
        check(arrives(b, "k", b"from a"), "reaches b")
        check(magic_set(b, "k", "from b", cmd="update"), "update on b")
        check(arrives(a, "k", b"from b"), "reaches a")
        marker_arrives(a, b, "marker-a")  # a bounced "k" would have been applied before these
        marker_arrives(b, a, "marker-b")
        check_eq((magic_get(a, "k"), magic_get(b, "k")), (b"from b", b"from b"), "both settled on the last write")
        master = sb.pid
        ticks = lambda: sum(int(open(f"/proc/{master}/stat").read().rsplit(")", 1)[1].split()[i]) for i in (11, 12))
        t0 = ticks()
        time.sleep(1.0)  # the window over which the master's CPU is measured
        check(ticks() - t0 < 20, "the receiving master is idle (no update bouncing between the two)")


def test_with_uwsgi_both_ways():
    need_uwsgi()
    u_in, o_in = free_udp_port(), free_udp_port()
    uport, oport = free_port(), free_port()
    u, o = ("127.0.0.1", uport), ("127.0.0.1", oport)
    uw = UwsgiProcess(["--plugin", "cache", "--master", "--socket", f"127.0.0.1:{uport}", "--cache", "100",
                       "--cache-udp-node", f"127.0.0.1:{o_in}", "--cache-udp-server", f"127.0.0.1:{u_in}"], [u])
    uw.start()
    try:
        with Server(["--socket", f"127.0.0.1:{oport}", "--cache", "100", "--cache-udp-server", f"127.0.0.1:{o_in}",
                     "--cache-udp-node", f"127.0.0.1:{u_in}"], workers=1):
            check(magic_set(u, "from-uwsgi", "hello", expires=300), "set on uWSGI")
            check(arrives(o, "from-uwsgi", b"hello"), "uWSGI's set packet applied by ours")
            check(abs(expires_of(u, "from-uwsgi") - expires_of(o, "from-uwsgi")) <= 1, "same absolute expiry")
            request(u, magic_req([("cmd", "del"), ("key", "from-uwsgi")]))
            check(arrives(o, "from-uwsgi", None), "uWSGI's delete packet applied by ours")
            check(magic_set(o, "from-ours", "world"), "set on ours")
            check(arrives(u, "from-ours", b"world"), "our set packet applied by uWSGI")
    finally:
        uw.stop()


if __name__ == "__main__":
    run_tests([test_ours_to_ours, test_two_nodes_sending_to_each_other_do_not_bounce, test_with_uwsgi_both_ways],
              budget=60)
