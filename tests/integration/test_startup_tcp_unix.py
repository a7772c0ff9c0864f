"""Start-up on a TCP and a UNIX socket at once: the process model (master + N workers), one shared
cache seen through both sockets and from every worker, the demo app on both, the log line format,
--pidfile and --chmod-socket."""

import os
import re
import stat
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (LOG_LINE_RE, OK_REPLY, Server, app_get, app_req, check, check_eq, free_port,  # noqa: E402
                     header, magic_get, magic_get_req, magic_set, magic_set_req, make_temp_dir, parse_magic_get_reply,
                     proc_stat, request, run_tests, simple_get_req, simple_set_req)


def test_tcp_and_unix_share_one_cache():
    tmp = make_temp_dir()
    port = free_port()
    tcp = ("127.0.0.1", port)
    unix = os.path.join(tmp, "s.sock")
    pidfile = os.path.join(tmp, "server.pid")
    with Server(["--socket", f"127.0.0.1:{port}", "--socket", unix, "--processes", "4", "--cache", "1000",
                 "--pidfile", pidfile], workers=4) as srv:
        # process model: 4 workers, direct children of the master, in the master's process group
        ws = srv.workers()
        check_eq(len(ws), 4, "number of workers")
        for w in ws:
            st = proc_stat(w)
            check(st is not None and st[1] == srv.pid, f"worker {w} is not a child of the master {srv.pid}")
            check(st[2] == srv.pid, f"worker {w} left the master's process group (pgrp {st[2]})")
        check(stat.S_ISSOCK(os.stat(unix).st_mode), f"{unix} is not a socket")
        with open(pidfile) as f:
            check_eq(f.read().strip(), str(srv.pid), "--pidfile content")

        # set over TCP: the exact 16-byte status=ok reply, then a clean close
        reply, how = request(tcp, magic_set_req("k1", "value-one"))
        check_eq((reply, how), (OK_REPLY, "eof"), "magic set k1 over TCP")

        # get over TCP: exact bytes 6f LL 00 11 {status:ok, size:"9"} value
        reply, how = request(tcp, magic_get_req("k1"))
        check_eq(how, "eof", "magic get over TCP: how the connection ended")
        d, value = parse_magic_get_reply(reply)
        check_eq(value, b"value-one", "value via TCP")
        check_eq(d, {b"status": b"ok", b"size": b"9"}, "reply vars via TCP")
        check_eq(reply[:4], header(111, len(reply) - 4 - 9, 17), "reply header via TCP")

        # get over UNIX sees the same value, whichever worker accepts (repeat so several workers serve)
        for i in range(12):
            check_eq(magic_get(unix, "k1"), b"value-one", f"magic get k1 over UNIX (#{i})")
        # and the other way round: set on UNIX, read on TCP, repeatedly
        check(magic_set(unix, "k2", b"\x00\xffbinary\r\n"), "magic set k2 over UNIX refused")
        for i in range(12):
            check_eq(magic_get(tcp, "k2"), b"\x00\xffbinary\r\n", f"magic get k2 over TCP (#{i})")

        # a miss is: no reply, clean EOF
        check_eq(request(tcp, magic_get_req("absent")), (b"", "eof"), "magic get miss over TCP")
        check_eq(request(unix, magic_get_req("absent")), (b"", "eof"), "magic get miss over UNIX")
        # set does not overwrite: no reply, old value kept
        check(not magic_set(tcp, "k1", "other"), "magic set on an existing key answered status=ok")
        check_eq(magic_get(unix, "k1"), b"value-one", "k1 after a second set")

        # modifier2 1 set (no reply) over TCP, modifier2 0 get over UNIX: [6f, vallen LE16, 0] + value
        check_eq(request(tcp, simple_set_req("k3", "simple")), (b"", "eof"), "mod2 1 set reply")
        check_eq(request(unix, simple_get_req("k3")), (header(111, 6, 0) + b"simple", "eof"), "mod2 0 get over UNIX")
        check_eq(magic_get(tcp, "k3"), b"simple", "mod2 1 value through mod2 17")
        check_eq(request(unix, simple_get_req("nokey")), (b"", "eof"), "mod2 0 get miss")

        # the demo app answers on both sockets
        for addr in (tcp, unix):
            app_get(addr)
        reply, how = request(unix, app_req("/", protocol="HTTP/1.1"))
        check(how == "eof" and reply.startswith(b"HTTP/1.1 200") and b"\r\n\r\n" in reply,
              f"app reply over UNIX: {reply[:120]!r} ({how})")

        # the workers did not change while serving, nobody crashed
        check_eq(srv.workers(), ws, "worker pids after the requests")

        # log: every line has the contract's format (or is a request line); one `worker <id> (pid <pid>) started` per worker;
        # the cache geometry line for the default cache
        log = srv.log()
        # (the request log's lines have uWSGI's own form: "[pid: N|app: 0|req: R/T] ...")
        bad = [l for l in log.splitlines() if l.strip() and not LOG_LINE_RE.match(l) and not l.startswith("[pid: ")]
        check(not bad, f"log lines not in the '[YYYY-mm-dd HH:MM:SS] [pid N] message' format: {bad[:5]!r}")
        for w in ws:
            check(re.search(r"worker \d+ \(pid %d\) started" % w, log),
                  f"no 'worker <id> (pid {w}) started' line in the log")
        check(re.search(r'cache "default" ready: items=1000 blocksize=65536 keysize=2048', log),
              "no 'cache \"default\" ready: items=1000 blocksize=65536 keysize=2048' line")

        rc = srv.stop()
        check_eq(rc, 0, "exit status after SIGTERM")
        check(srv.wait_no_leftovers(3.0), f"processes left after SIGTERM: {srv.leftovers()}")


def test_chmod_socket():
    tmp = make_temp_dir()
    unix = os.path.join(tmp, "m.sock")
    # uWSGI's spellings: the value attached (its getopt reads no separate one), or bare for 666.
    for given, want in ((["--chmod-socket=660"], 0o660), (["-C640"], 0o640), (["--chmod-socket"], 0o666)):
        with Server(["--socket", unix, "--processes", "1", "--cache", "10"] + given, workers=1) as srv:
            mode = stat.S_IMODE(os.stat(unix).st_mode)
            check_eq(oct(mode), oct(want), f"mode of the UNIX socket with {given[0]}")
            app_get(unix)
            check_eq(srv.stop(), 0, "exit status after SIGTERM")


if __name__ == "__main__":
    run_tests([test_tcp_and_unix_share_one_cache, test_chmod_socket], budget=50)
