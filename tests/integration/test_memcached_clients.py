#!/usr/bin/env python3
"""The memcached protocol through clients no one here wrote, against Debian's memcached and ours with the
same calls: pymemcache and pylibmc (every call of their APIs that maps to the protocol) and libmemcached's
command-line tools. Each client's results are recorded as a list and must be equal for both servers, and
they are checked against what the client documents."""
import os
import subprocess
import sys
import tempfile

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check, check_eq, peer_missing, run_tests  # noqa: E402
from memcached_peer import Memcached, ours, start_hosting_python  # noqa: E402


def pymemcache_session(addr):
    try:
        from pymemcache.client.base import Client
    except ImportError:
        peer_missing("pymemcache is not installed (apt-get install python3-pymemcache)")
    c = Client(addr, connect_timeout=5, timeout=5)
    r = []
    r.append(c.set("a", b"1", expire=0, flags=3))
    r.append(c.get("a"))
    r.append(c.set_many({"m1": b"x", "m2": b"y", "m3": b"z"}))
    r.append(sorted(c.get_many(["m1", "m2", "m3", "missing"]).items()))
    r.append(c.add("a", b"2"))
    r.append(c.add("b", b"2"))
    r.append(c.replace("nope", b"x"))
    r.append(c.replace("b", b"3"))
    r.append(c.append("b", b"4"))
    r.append(c.prepend("b", b"2"))
    r.append(c.get("b"))
    value, cas = c.gets("b")
    r.append(value)
    r.append(c.cas("b", b"new", cas))
    r.append(c.cas("b", b"stale", cas))
    r.append(c.cas("missing", b"x", b"1"))
    r.append(c.get("b"))
    many = c.gets_many(["b", "a", "missing"])
    r.append(sorted((k, v[0]) for k, v in many.items()))
    r.append(c.set("n", b"10"))
    r.append(c.incr("n", 5))
    r.append(c.decr("n", 20))
    r.append(c.incr("missing", 1))
    r.append(c.incr("n", 2**64 - 1))
    r.append(c.touch("n", 100))
    r.append(c.touch("missing", 100))
    r.append(c.delete("n"))
    r.append(c.delete("n", noreply=False))
    r.append(c.delete_many(["m1", "m2"]))
    r.append(c.get_many(["m1", "m2", "m3"]))
    r.append(c.set("big", b"v" * 500000))
    r.append(len(c.get("big")))
    r.append(c.flush_all(noreply=False))
    r.append(c.get("a"))
    stats = c.stats()
    for field in (b"curr_items", b"get_hits", b"cmd_get", b"pid", b"uptime"):
        check(field in stats, f"pymemcache stats has {field!r}")
    r.append(c.version().split(b"-")[0])
    c.quit()
    return r


def pylibmc_session(addr):
    try:
        import pylibmc
    except ImportError:
        peer_missing("pylibmc is not installed (apt-get install python3-pylibmc)")
    c = pylibmc.Client([f"{addr[0]}:{addr[1]}"], binary=False, behaviors={"cas": True, "tcp_nodelay": True})
    r = []
    r.append(c.set("a", "text"))
    r.append(c.get("a"))
    r.append(c.set("obj", {"k": [1, 2]}))  # pickled: flags tell pylibmc how to decode
    r.append(c.get("obj"))
    r.append(c.set("i", 42))
    r.append(c.get("i"))
    r.append(sorted(c.set_multi({"x": b"1", "y": b"2"})))
    r.append(sorted(c.get_multi(["x", "y", "nope"]).items()))
    r.append(c.add("x", b"again"))
    r.append(c.add("z", b"new"))
    r.append(c.replace("z", b"newer"))
    r.append(c.append("z", b"+"))
    r.append(c.prepend("z", b"-"))
    r.append(c.get("z"))
    value, cas = c.gets("z")
    r.append(value)
    r.append(c.cas("z", b"swapped", cas))
    r.append(c.cas("z", b"stale", cas))
    r.append(c.get("z"))
    r.append(c.set("n", 5))
    r.append(c.incr("n", 10))
    r.append(c.decr("n", 100))
    try:
        c.incr("missing")
        r.append("no error")
    except pylibmc.NotFound:
        r.append("NotFound")
    r.append(c.touch("n", 100))
    r.append(c.touch("missing", 100))
    r.append(c.delete("n"))
    r.append(c.delete("n"))
    r.append(c.delete_multi(["x", "y"]))
    r.append(c.get_multi(["x", "y"]))
    stats = c.get_stats()
    check(len(stats) == 1 and b"curr_items" in stats[0][1] or "curr_items" in stats[0][1], "pylibmc get_stats")
    r.append(c.flush_all())
    r.append(c.get("a"))
    return r


def tools_session(addr):
    servers = f"--servers={addr[0]}:{addr[1]}"
    r = []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "file.txt")
        with open(path, "wb") as f:
            f.write(b"content of a file\n" * 100)

        def run(*args):
            p = subprocess.run(list(args), capture_output=True, timeout=20)
            return p.returncode, p.stdout

        for tool in ("memccp", "memccat", "memcrm", "memcstat", "memcexist", "memctouch", "memcflush"):
            if not os.path.exists(f"/usr/bin/{tool}"):
                peer_missing(f"{tool} is not installed (apt-get install libmemcached-tools)")
        r.append(run("memccp", servers, path))
        r.append(run("memccat", servers, "file.txt"))
        r.append(run("memcexist", servers, "file.txt"))
        r.append(run("memctouch", servers, "--expire=100", "file.txt"))
        r.append(run("memcrm", servers, "file.txt"))
        r.append(run("memcexist", servers, "file.txt")[0])
        r.append(run("memccat", servers, "file.txt")[0])
        r.append(run("memccp", servers, "--flags=7", path))
        r.append(run("memcflush", servers))
        r.append(run("memccat", servers, "file.txt")[0])
        code, out = run("memcstat", servers)
        check(code == 0 and b"curr_items" in out, f"memcstat: {code} {out[:200]!r}")
        r.append(code)
        code, out = run("memcslap", servers, "--test=set", "--concurrency=2", "--execute-number=500")
        check(code == 0, f"memcslap set: {code} {out[:300]!r}")
        code, out = run("memcslap", servers, "--test=get", "--concurrency=2", "--execute-number=500")
        check(code == 0, f"memcslap get: {code} {out[:300]!r}")
    return r


def same_on_both(session):
    with Memcached() as real:
        theirs = session(real.addr)
    with ours() as srv:
        mine = session(srv.addr)
    for i, (a, b) in enumerate(zip(theirs, mine)):
        check_eq(b, a, f"{session.__name__} call {i}")
    check_eq(len(mine), len(theirs), "number of results")
    return mine


def test_pymemcache():
    r = same_on_both(pymemcache_session)
    check_eq(r[1], b"1", "get after set")
    check_eq(r[3], [("m1", b"x"), ("m2", b"y"), ("m3", b"z")], "get_many")
    check_eq(r[10], b"234", "replace, append, prepend")
    check_eq((r[12], r[13], r[14]), (True, False, None), "cas: stored, exists, not found")
    check_eq((r[18], r[19], r[20], r[21]), (15, 0, None, 2**64 - 1), "incr, decr to 0, missing, wrap")


def test_pylibmc():
    r = same_on_both(pylibmc_session)
    check_eq((r[1], r[3], r[5]), ("text", {"k": [1, 2]}, 42), "typed values through flags")
    check_eq(r[13], b"-newer+", "append/prepend")
    check_eq((r[15], r[16], r[17]), (True, False, b"swapped"), "gets/cas")


def test_libmemcached_tools():
    r = same_on_both(tools_session)
    check_eq(r[1], (0, b"content of a file\n" * 100 + b"\n"), "memccat prints what memccp stored (and a newline)")


SHARED_APP = """\
import uwsgi

def application(environ, start_response):
    key = environ["QUERY_STRING"]
    if environ["PATH_INFO"] == "/write":
        uwsgi.cache_update(key, b"written by the application")
        body = b"ok"
    else:
        body = uwsgi.cache_get(key) or b"<miss>"  # the worker's own mapping of the cache: no socket
    start_response("200 OK", [("Content-Type", "application/octet-stream")])
    return [body]
"""


def test_application_reads_the_same_items():
    """What a memcached client writes, an application's uwsgi.cache_get reads from shared memory, and
    the other way round."""
    import http.client
    from harness import free_port, make_temp_dir
    d = make_temp_dir("mc-app-")
    with open(os.path.join(d, "sharedapp.py"), "w") as f:
        f.write(SHARED_APP)
    hport = free_port()
    srv = ours(extra=("--http-socket", f"127.0.0.1:{hport}", "--module", "sharedapp", "--chdir", d))
    start_hosting_python(srv)
    try:
        from pymemcache.client.base import Client
        c = Client(srv.addr, connect_timeout=5, timeout=5)

        def app(path):
            conn = http.client.HTTPConnection("127.0.0.1", hport, timeout=10)
            conn.request("GET", path)
            body = conn.getresponse().read()
            conn.close()
            return body

        check(c.set("from-memcached", b"\x00binary\xffvalue", flags=9, noreply=False), "set")
        check_eq(app("/read?from-memcached"), b"\x00binary\xffvalue", "uwsgi.cache_get reads it")
        check_eq(app("/write?from-app"), b"ok", "uwsgi.cache_update")
        check_eq(c.get("from-app"), b"written by the application", "memcached get reads it")
        check_eq(c.gets("from-app")[0], b"written by the application", "with a cas")
        c.close()
    finally:
        srv.kill_all()


def test_many_connections_and_graceful_stop():
    """One worker serves 200 persistent connections at once, pipelined; idle connections (one that never
    sent a byte among them) do not hold up a graceful stop (SIGTERM exits 0 well within the mercy)."""
    import signal
    import socket
    from memcached_peer import Raw
    with ours(workers=1) as srv:
        conns = [Raw(srv.addr) for _ in range(200)]
        for i, c in enumerate(conns):
            c.sock.sendall(b"set k%d 0 0 %d\r\n%d\r\n" % (i, len(str(i)), i))
        for i, c in enumerate(conns):
            check_eq(c.exchange(b"get k%d\r\n" % i), b"STORED\r\nVALUE k%d 0 %d\r\n%d\r\nEND\r\n" % (i, len(str(i)), i),
                     f"connection {i}")
        silent = socket.create_connection(srv.addr)
        check_eq(srv.stop(signal.SIGTERM, timeout=20), 0, "exit status after SIGTERM with idle connections")
        for c in conns:
            c.close()
        silent.close()


def test_reload_answers_a_command_half_sent():
    """SIGHUP replaces the worker: its idle connection is closed at once (an EOF), one holding half a
    command is answered once the rest comes and then closed; the new worker serves new connections, and
    the cache kept what both stored (on either loop: the io_uring one by default)."""
    import signal
    from memcached_peer import Raw
    for extra in ((), ("--memcached-no-io-uring",)):
        with ours(workers=1, extra=extra) as srv:
            old = srv.workers()
            idle = Raw(srv.addr)
            check_eq(idle.exchange(b"set a 0 0 1\r\na\r\n"), b"STORED\r\n", f"{extra}: set")
            half = Raw(srv.addr)
            # One small write is one segment, read at once: the reply to the get says the server holds
            # the half set too.
            half.sock.sendall(b"get a\r\nset b 0 0 5\r\nab")
            got = b""
            while not got.endswith(b"END\r\n"):
                chunk = half.sock.recv(1024)
                check(chunk, f"{extra}: closed after {got!r}")
                got += chunk
            check_eq(got, b"VALUE a 0 1\r\na\r\nEND\r\n", f"{extra}: get, with half a set behind it")
            srv.send_signal(signal.SIGHUP)
            check_eq(idle.sock.recv(1), b"", f"{extra}: the idle connection closed by the stopping worker")
            check_eq(half.until_closed(b"cde\r\n"), b"STORED\r\n", f"{extra}: the rest of the set answered")
            new = srv.wait_workers(1, timeout=10, exclude=old)
            check(new and not set(new) & set(old), f"{extra}: the worker replaced: {old} -> {new}")
            fresh = Raw(srv.addr)
            check_eq(fresh.exchange(b"get a b\r\n"), b"VALUE a 0 1\r\na\r\nVALUE b 0 5\r\nabcde\r\nEND\r\n",
                     f"{extra}: a new connection to the new worker")
            for c in (idle, half, fresh):
                c.close()


def test_a_client_that_does_not_read_holds_bounded_replies():
    """A client pipelines 200 gets of a 512 KiB value (100 MiB of replies) in one write and reads them
    slowly: the worker runs the gets only a few replies ahead of what the client has read (about 1 MiB of
    replies, server::memcached::kReplyBudgetBytes, plus what the sockets' buffers hold), not all 200 at
    once into its memory; every reply arrives whole. The worker's own cmd_get count, read on a second
    connection after each reply, is the witness; on either loop."""
    import socket
    from memcached_peer import Raw
    size, gets = 512 * 1024, 200
    value = b"v" * size
    one_reply = len(b"VALUE big 0 %d\r\n" % size) + size + len(b"\r\nEND\r\n")
    for extra in ((), ("--memcached-no-io-uring",)):
        with ours(workers=1, extra=extra) as srv:
            stats = Raw(srv.addr)
            check_eq(stats.exchange(b"set big 0 0 %d\r\n%s\r\n" % (size, value)), b"STORED\r\n", f"{extra}: set")

            def cmd_get():
                lines = stats.exchange(b"stats\r\n").split(b"\r\n")
                return int(next(line.split()[2] for line in lines if line.startswith(b"STAT cmd_get ")))

            base = cmd_get()
            reader = socket.socket()
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # before connect: no autotuning
            reader.settimeout(10)
            reader.connect(srv.addr)
            reader.sendall(b"get big\r\n" * gets)  # 1,800 bytes: one segment
            received, most_ahead = 0, 0
            while received < gets * one_reply:
                chunk = reader.recv(min(1 << 16, gets * one_reply - received))
                check(chunk, f"{extra}: closed after {received} bytes")
                received += len(chunk)
                if received % one_reply < len(chunk) or received == gets * one_reply:  # a reply ended here
                    ahead = (cmd_get() - base) - received // one_reply
                    most_ahead = max(most_ahead, ahead)
                    check(ahead <= 40, f"{extra}: {ahead} gets run ahead of the client's reading "
                                       f"({received // one_reply} of {gets} replies read)")
            check_eq(cmd_get() - base, gets, f"{extra}: every get ran")
            print(f"{extra or 'io_uring'}: at most {most_ahead} replies of {size} bytes ahead of the reader")
            reader.close()
            stats.close()


def test_idle_connections_kept_past_the_socket_timeout():
    """An idle memcached connection stays open past --socket-timeout (memcached's idle_timeout 0), while
    an idle --persistent-socket connection opened at the same moment is closed by it: its EOF is the event
    after which the memcached one must still answer. The stats JSON names the listener's protocol."""
    import json
    import socket
    from harness import free_port, read_reply
    from memcached_peer import Raw
    pport, sport = free_port(), free_port()
    with ours(workers=1, extra=("--socket-timeout", "1", "--persistent-socket", f"127.0.0.1:{pport}",
                                "--stats", f"127.0.0.1:{sport}")) as srv:
        mc = Raw(srv.addr)
        check_eq(mc.exchange(b"set idle 0 0 1\r\nx\r\n"), b"STORED\r\n", "set")
        persistent = socket.create_connection(("127.0.0.1", pport), timeout=10)
        check_eq(persistent.recv(1), b"", "the idle persistent connection is closed by the socket timeout")
        persistent.close()
        check_eq(mc.exchange(b"get idle\r\n"), b"VALUE idle 0 1\r\nx\r\nEND\r\n", "memcached still answers")
        mc.close()
        stats = socket.create_connection(("127.0.0.1", sport), timeout=5)
        data, _ = read_reply(stats, 5)
        stats.close()
        protos = {s["name"]: s["proto"] for s in json.loads(data)["sockets"]}
        check_eq(protos.get(f"127.0.0.1:{srv.addr[1]}"), "memcached", f"the listener's proto in {protos}")


if __name__ == "__main__":
    run_tests([test_pymemcache, test_pylibmc, test_libmemcached_tools, test_application_reads_the_same_items,
               test_many_connections_and_graceful_stop, test_reload_answers_a_command_half_sent,
               test_idle_connections_kept_past_the_socket_timeout,
               test_a_client_that_does_not_read_holds_bounded_replies],
              budget=120)
