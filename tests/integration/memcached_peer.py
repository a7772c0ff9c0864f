"""Helpers for the memcached-protocol tests: Debian's memcached as the reference peer, our server with a
--memcached-socket, and a raw connection that sends bytes and reads a whole reply.

Debian's /usr/bin/python3, standard library only; every wait is bounded."""

import os
import re
import socket
import subprocess

from harness import Server, free_port, peer_missing, wait_until

MEMCACHED = "/usr/bin/memcached"


def can_connect(addr):
    try:
        socket.create_connection(addr, timeout=0.5).close()
        return True
    except OSError:
        return False


class Memcached:
    """Debian's memcached 1.6 on a loopback port (text protocol only, no UDP), killed on exit."""

    def __init__(self, port=None, extra=()):
        if not os.path.exists(MEMCACHED):
            peer_missing("Debian's memcached is not installed (apt-get install memcached)")
        self.port = port or free_port()
        self.addr = ("127.0.0.1", self.port)
        args = [MEMCACHED, "-l", "127.0.0.1", "-p", str(self.port), "-U", "0", "-B", "ascii", *extra]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        if not wait_until(lambda: can_connect(self.addr) or self.proc.poll() is not None, 5.0):
            raise AssertionError("memcached did not start listening")
        if self.proc.poll() is not None:
            raise AssertionError(f"memcached exited with status {self.proc.returncode}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)


def ours(port=None, items=10000, extra=(), workers=2, wrapper=()):
    """Our server serving the memcached protocol on a loopback port (not started: use `with`); wrapper
    is a command that execs it (harness.Server)."""
    port = port or free_port()
    args = ["--memcached-socket", f"127.0.0.1:{port}", "--cache", str(items), "--cache-blocksize", "1m",
            "--processes", str(workers), *extra]
    srv = Server(args, workers=workers, ready_addrs=[("127.0.0.1", port)], wrapper=wrapper)
    srv.addr = ("127.0.0.1", port)
    return srv


class Raw:
    """One connection: send bytes, read the reply up to a marker (the `mn` no-op's MN line) or EOF."""

    def __init__(self, addr, timeout=5.0):
        self.sock = socket.create_connection(addr, timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def exchange(self, data):
        """Sends data then `mn`; returns everything before the MN line (the replies to data)."""
        self.sock.sendall(data + b"mn\r\n")
        while b"MN\r\n" not in self.buf:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise AssertionError(f"connection closed; got {self.buf!r}")
            self.buf += chunk
        reply, _, self.buf = self.buf.partition(b"MN\r\n")
        return reply

    def until_closed(self, data):
        """Sends data; returns what arrives before the server closes (a timeout fails)."""
        self.sock.sendall(data)
        out = self.buf
        self.buf = b""
        while True:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                return out
            out += chunk


def normalized(replies):
    """cas values differ between servers: each distinct value becomes <casN> in order of appearance."""
    names = {}

    def name(value):
        return b"<cas%d>" % names.setdefault(value, len(names) + 1)

    out = []
    for reply in replies:
        reply = re.sub(rb"(VALUE \S+ \d+ \d+ )(\d+)\r\n", lambda m: m.group(1) + name(m.group(2)) + b"\r\n", reply)
        reply = re.sub(rb"( c)(\d+)", lambda m: m.group(1) + name(m.group(2)), reply)
        out.append(reply)
    return out


def last_cas(reply):
    m = re.findall(rb"VALUE \S+ \d+ \d+ (\d+)\r\n|[ ]c(\d+)", reply)
    if not m:
        raise AssertionError(f"no cas in {reply!r}")
    a, b = m[-1]
    return (a or b).decode()


def start_hosting_python(srv):
    """Starts a server that loads a Python application: without the Python host built in, the peer is
    missing (skip, or a failure when peers are required)."""
    try:
        srv.start()
    except Exception:
        if "without the Python host" in srv.log():
            peer_missing("this server was built without the Python host (libpython3.11)")
        raise
    return srv
