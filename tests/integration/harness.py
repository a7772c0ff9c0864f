"""Helpers for the integration tests: start the real `server` binary, talk the uwsgi protocol to it,
and make sure nothing it started outlives the test.

Debian's /usr/bin/python3, standard library only. Every wait here is bounded in time and in count.

Conventions
- A test script calls `run_tests([fn, ...], budget=...)`: each function is one check, run in order; an
  AssertionError (or any exception) fails it, `Skip` skips it. The script exits 0 (all passed), 77 (server
  binary missing, or every test skipped) or 1.
- `Server(args, workers=N)` is a context manager: it starts the binary in its own session (its own
  process group), logs stderr+stdout to a file, waits until every --socket accepts and N workers exist,
  and on exit kills the whole process group (and any worker it ever saw) with SIGKILL, whatever happened.
- Addresses are ("127.0.0.1", port) tuples for TCP and str paths for UNIX sockets.
- PEP 3333: a Server that hosts a Python application runs it wrapped in `wsgiref.validate.validator`
  (UCACHED_WSGI_VALIDATE=1, see docs/python.md) unless created with `validate_wsgi=False` (only for
  applications that break the PEP on purpose); any finding of the validator in the server's log fails the
  test when the Server is stopped or left (`check_wsgi_validator`).
"""

import atexit
import ctypes
import fcntl
import os
import random
import re
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

# --------------------------------------------------------------------------------------------------
# environment

SOURCE_DIR = os.environ.get("SOURCE_DIR") or os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SERVER_BIN = os.environ.get("SERVER_BIN") or os.path.join(SOURCE_DIR, "build", "bin", "server")  # ctest sets it
BUILD_DIR = os.environ.get("BUILD_DIR") or ""

LOG_LINE_RE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\] \[pid (\d+)\] (.*)$")


class Skip(Exception):
    """Raised by a test to mark itself skipped (with the reason)."""


def peers_required():
    """True under CI (CI=true) and ./test.sh (UCACHED_REQUIRE_PEERS=1): there a missing peer (uWSGI,
    nginx, libpython, Django, a compiler) fails the test instead of skipping it, so that a green run
    means the comparisons really ran."""
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("UCACHED_REQUIRE_PEERS", "") == "1"


def peer_missing(what):
    """A test cannot run because a peer is missing: Skip, or fail when peers are required."""
    if peers_required():
        raise AssertionError(f"{what} (a required peer: CI=true or UCACHED_REQUIRE_PEERS=1 makes this a failure)")
    raise Skip(what)


# --------------------------------------------------------------------------------------------------
# real peers: installed from Debian when missing (once, as root)

UWSGI = "/usr/bin/uwsgi"
UWSGI_PLUGIN_DIRS = ("/usr/lib/uwsgi/plugins", "/usr/lib/uwsgi")


def apt_install(package):
    """`apt-get install PACKAGE` (with an `apt-get update` retry); quiet; no-op unless root."""
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for args in (["apt-get", "install", "-y", "-q", package], ["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", package]):
        try:
            rc = subprocess.run(args, capture_output=True, timeout=240, env=env).returncode
        except (subprocess.TimeoutExpired, OSError):
            return
        if rc == 0 and args[1] == "install":
            return


def uwsgi_plugin(name):
    return any(os.path.exists(os.path.join(d, f"{name}_plugin.so")) for d in UWSGI_PLUGIN_DIRS)


def uwsgi_available(plugins=("cache",)):
    """True when uWSGI 2.0.21 and the plugins exist; installs uwsgi-core (and uwsgi-plugin-python3 for
    python3) once when they do not."""
    def present():
        return os.access(UWSGI, os.X_OK) and all(uwsgi_plugin(p) for p in plugins)
    if not present():
        apt_install("uwsgi-core")
        if "python3" in plugins:
            apt_install("uwsgi-plugin-python3")
    return present()


def need_uwsgi(plugins=("cache",)):
    if not uwsgi_available(plugins):
        peer_missing(f"uWSGI 2.0.21 not available ({UWSGI} with the {', '.join(plugins)} plugin(s); "
                   "apt-get install uwsgi-core failed or is not possible here)")


def require_server():
    if not (os.path.isfile(SERVER_BIN) and os.access(SERVER_BIN, os.X_OK)):
        print(f"SKIP: server binary not found or not executable: {SERVER_BIN}")
        sys.exit(77)


def raise_fd_limit(want=8192):
    """Raise our soft RLIMIT_NOFILE (the server inherits it). Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# --------------------------------------------------------------------------------------------------
# temp dirs and ports

_TEMP_DIRS = []


def make_temp_dir(prefix="it-"):
    """A fresh directory under /tmp (short path: UNIX socket paths are limited to 107 bytes)."""
    d = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    _TEMP_DIRS.append(d)
    return d


def replace_file(path, data):
    """Writes data (str or bytes) to a new file beside path and renames it over path: a running server
    (a worker importing its application, a config or trigger it rereads) sees the old file or the new
    one, never one half-written or truncated. Returns path."""
    staging = f"{path}.{os.getpid()}.new"
    with open(staging, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)
    os.rename(staging, path)
    return path


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


_port_rng = random.Random()  # seeded from the OS: parallel test processes draw different sequences
# Ports this process was handed, each held by an flock on a file named after it: every test process on
# the machine (this suite's parallel tests, another checkout's suite) draws through the same folder, so
# no two hold one port at once, and a port is never handed twice in one process. The kernel drops the
# locks when the process ends, whatever its end.
_PORT_LOCKS = os.path.join(tempfile.gettempdir(), "ucached-test-ports")
_held_ports = {}


def _reserve_port(port, kind):
    try:
        os.makedirs(_PORT_LOCKS, exist_ok=True)
        fd = os.open(os.path.join(_PORT_LOCKS, f"{'udp' if kind == socket.SOCK_DGRAM else 'tcp'}-{port}"),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except OSError:
        return True  # no shared folder to coordinate through: the bind check alone, as before
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return False
    _held_ports[(port, kind)] = fd
    return True


def free_port(host="127.0.0.1", kind=socket.SOCK_STREAM):
    """A port free now and reserved for this process, drawn at random outside the kernel's ephemeral
    range (ip_local_port_range). Tests run in parallel, and their client sockets take local ports from
    that range: a port handed out by bind(0) could be taken by someone's connect() before our server
    binds it (seen: "Address already in use" while another test opened 1500 connections). Inside the
    range left, two test processes could draw the same port between one's draw and its server's bind
    (seen once in 16 runs of the suite at -j 4 beside another checkout's suite: a --stats port, bound
    1.5 s after the draw, once the application had loaded); the reservation above rules that out."""
    lo, hi = _ephemeral_range()
    pool = (10000, lo - 1) if lo > 11000 else (hi + 1, 65535)
    for _ in range(500):
        port = _port_rng.randint(*pool)
        if (port, kind) in _held_ports:
            continue
        s = socket.socket(socket.AF_INET, kind)
        try:
            s.bind((host, port))
        except OSError:
            continue
        finally:
            s.close()
        if _reserve_port(port, kind):
            return port
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind((host, 0))
        return s.getsockname()[1]
    finally:
        s.close()


def port_is_free(port, host="127.0.0.1"):
    """True if nothing listens on host:port (we can bind it ourselves, without SO_REUSEADDR tricks
    beyond what a server would use)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def tcp_listen_inode(port, host="127.0.0.1"):
    """Inode of the LISTEN socket on host:port from /proc/net/tcp, or None."""
    want_ip = socket.inet_aton(host)
    want_hex = "%08X:%04X" % (struct.unpack("<I", want_ip)[0], port)
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[1] == want_hex and parts[3] == "0A":  # 0A = LISTEN
                    return int(parts[9])
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------------------------------
# processes (/proc)

def status_bytes(pid, field):
    """A memory line of /proc/PID/status (VmRSS, VmHWM, ...) in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} for {pid}")


def proc_stat(pid):
    """(state, ppid, pgrp, starttime) of pid, or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode("ascii", "replace")
    except OSError:
        return None
    rest = data[data.rfind(")") + 2:].split()
    # rest[0] = state (field 3), rest[1] = ppid, rest[2] = pgrp, rest[19] = starttime (field 22)
    try:
        return rest[0], int(rest[1]), int(rest[2]), int(rest[19])
    except (IndexError, ValueError):
        return None


def pid_alive(pid, starttime=None):
    """Running (not a zombie) and, if starttime is given, the same process (not a reused pid)."""
    st = proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        return False
    return starttime is None or st[3] == starttime


def all_procs():
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = proc_stat(int(name))
            if st is not None:
                yield int(name), st


def live_children(pid):
    """Direct children of pid that are not zombies, sorted. From /proc/PID/task/*/children when the
    kernel has it (a few reads instead of one per process on the machine), else by a /proc scan."""
    try:
        kids = set()
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids.update(int(k) for k in f.read().split())
    except FileNotFoundError:
        if os.path.exists(f"/proc/{pid}"):
            return sorted(p for p, st in all_procs() if st[1] == pid and st[0] not in ("Z", "X"))
        return []
    except OSError:
        return []
    live = []
    for k in kids:
        st = proc_stat(k)
        if st is not None and st[1] == pid and st[0] not in ("Z", "X"):
            live.append(k)
    return sorted(live)


# The --stats server's process (a child of the master, not a worker) names itself so (master/stats_server.cpp).
STATS_PROCESS_NAME = "ucached-stats"


def process_name(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return None


def zombie_children(pid):
    return sorted(p for p, st in all_procs() if st[1] == pid and st[0] == "Z")


def live_in_group(pgid):
    """Processes (not zombies) whose process group is pgid."""
    return sorted(p for p, st in all_procs() if st[2] == pgid and st[0] not in ("Z", "X"))


def tcp_accepted(sock):
    """True once the server side of our connected TCP socket has been accept()ed by some process: its
    row in /proc/net/tcp (local = the server's address, remote = ours) gets a socket inode, which is 0
    while the connection waits in the listen queue. An event to wait for instead of a sleep."""
    def hexaddr(addr):
        return "%08X:%04X" % (struct.unpack("<I", socket.inet_aton(addr[0]))[0], addr[1])
    server_side, client_side = hexaddr(sock.getpeername()), hexaddr(sock.getsockname())
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            # Every row of the pair, not the first: loopback reuses the ports of a TIME_WAIT pair
            # (tcp_tw_reuse), whose row (inode 0) can be listed before the live connection's.
            return any(parts[1] == server_side and parts[2] == client_side and int(parts[9]) != 0
                       for parts in (line.split() for line in f))
    except OSError:
        return False


def wait_until(predicate, timeout, interval=0.02, what="condition"):
    """Poll predicate until it returns a truthy value (returned) or timeout (returns the last value)."""
    deadline = time.monotonic() + timeout
    value = predicate()
    count = 0
    while not value and time.monotonic() < deadline and count < 100000:
        time.sleep(interval)
        value = predicate()
        count += 1
    return value


# --------------------------------------------------------------------------------------------------
# the server

_SERVERS = []
_STARTED = []  # every Server started by the current test (run_tests), running or not: their logs on failure


def _child_setup(nofile=None):
    def setup():
        # If this test process dies (e.g. ctest's timeout SIGKILLs it), the master is killed too.
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        except Exception:
            pass
        if nofile is not None:
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, hard))
    return setup


def addr_str(addr):
    return addr if isinstance(addr, str) else f"{addr[0]}:{addr[1]}"


def sockets_from_args(args):
    """The addresses given with --socket in args, as ("host", port) or "/path"."""
    out = []
    for i, a in enumerate(args):
        if a == "--socket" and i + 1 < len(args):
            out.append(parse_addr(args[i + 1]))
        elif a.startswith("--socket="):
            out.append(parse_addr(a.split("=", 1)[1]))
    return out


def parse_addr(text):
    if "/" in text or ":" not in text:
        return text
    host, port = text.rsplit(":", 1)
    return (host or "127.0.0.1", int(port))


class ServerError(AssertionError):
    pass


class Server:
    """One running server. `with Server([...], workers=4) as srv:` starts it and waits until ready."""

    _counter = 0

    def __init__(self, args, workers=None, ready_addrs=None, wait_ready=True, ready_timeout=10.0,
                 env=None, tmpdir=None, nofile=None, validate_wsgi=True, wrapper=()):
        self.nofile = nofile  # RLIMIT_NOFILE (soft) for the server, None = inherit ours
        self.wrapper = list(wrapper)  # a command that execs the server (no_io_uring), or nothing
        self.validate_wsgi = validate_wsgi
        self.args = list(args)
        self.expected_workers = workers
        self.ready_addrs = sockets_from_args(self.args) if ready_addrs is None else list(ready_addrs)
        self.wait_ready_flag = wait_ready
        self.ready_timeout = ready_timeout
        self.env = env
        self.tmpdir = tmpdir or make_temp_dir()
        Server._counter += 1
        self.log_path = os.path.join(self.tmpdir, f"server-{Server._counter}.log")
        self.proc = None
        self.pid = None
        self.seen_workers = {}  # pid -> starttime, every worker ever observed
        self.returncode = None
        self.started_at = None
        self.log_dumped = False
        self.reaped_ticks = None  # boot-time clock ticks when the master was seen waited for

    # ---- lifecycle
    def start(self):
        env = dict(os.environ)
        env["UCACHED_WSGI_VALIDATE"] = "1" if self.validate_wsgi else ""
        if self.env:
            env.update(self.env)
        self._logfile = open(self.log_path, "ab")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(self.wrapper + [SERVER_BIN] + self.args, stdin=subprocess.DEVNULL,
                                     stdout=self._logfile, stderr=self._logfile, env=env,
                                     start_new_session=True, preexec_fn=_child_setup(self.nofile),
                                     close_fds=True)
        self.pid = self.proc.pid
        _SERVERS.append(self)
        _STARTED.append(self)
        if self.wait_ready_flag:
            self.wait_ready()
        return self

    def __enter__(self):
        return self if self.proc is not None else self.start()  # started already: start_hosted

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.dump_log(f"server log (test failed: {exc_type.__name__})")
        self.kill_all()
        if exc_type is None:
            self.check_wsgi_validator()
        return False

    # What wsgiref.validate leaves in the log: a traceback ending in one of its checks (each fails
    # through its assert_ helper), a WSGIWarning turned into an error (answered 500), or "Exception
    # ignored in" from its IteratorWrapper.__del__ (an iterable whose close() was never called). An
    # exception the application raises itself also passes through validate.py (its lint_app frame):
    # that is the application's error, not a violation, so the frame alone does not count.
    _VALIDATOR_RE = re.compile(r'wsgiref/validate\.py", line \d+, in assert_|WSGIWarning')

    def check_wsgi_validator(self):
        """Raises when the log (since the last check) shows a PEP 3333 violation found by wsgiref.validate."""
        offset = getattr(self, "_validated_upto", 0)
        size = self.log_size()
        text = self.log_since(offset, max(0, size - offset))
        self._validated_upto = size
        m = self._VALIDATOR_RE.search(text)
        if m:
            start = text.rfind("Traceback", 0, m.start())
            excerpt = text[max(0, start if start >= 0 else m.start() - 1500):m.end() + 1500]
            raise ServerError(f"wsgiref.validate found a PEP 3333 violation ({self.log_path}):\n{excerpt}")

    def wait_ready(self, timeout=None):
        """Every ready address accepts a connection and the expected number of workers exist."""
        timeout = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        pending = list(self.ready_addrs)
        while time.monotonic() < deadline:
            if self.reaped():
                raise ServerError(f"server exited during start-up with status {self.proc.returncode}\n"
                                  + self.log_tail())
            pending = [a for a in pending if not can_connect(a)]
            n = len(self.workers())
            if not pending and (self.expected_workers is None or n == self.expected_workers):
                return
            time.sleep(0.02)
        raise ServerError(f"server not ready after {timeout}s: sockets not accepting {pending}, "
                          f"workers {self.workers()} (expected {self.expected_workers})\n" + self.log_tail())

    def running(self):
        return self.proc is not None and not self.reaped()

    def reaped(self):
        """True once the master has been waited for. From then on its pid -- and the process group id,
        once the group is empty -- can be another process's (pid_max is 32768 here, and a loaded suite
        forks and starts threads fast enough to wrap it in minutes; every server leads its own group):
        nothing is looked up or signalled by that pid any more, except members of the group that started
        before the master's exit was seen, which are ours."""
        if self.proc is None or self.proc.poll() is None:
            return False
        if self.reaped_ticks is None:
            with open("/proc/uptime") as f:
                self.reaped_ticks = int(float(f.read().split()[0]) * os.sysconf("SC_CLK_TCK"))
        return True

    def group(self):
        """The live processes of the server's process group (see reaped())."""
        if self.pid is None:
            return []
        if not self.reaped():
            return live_in_group(self.pid)
        return [p for p in live_in_group(self.pid) if (proc_stat(p) or (0, 0, 0, 1 << 62))[3] <= self.reaped_ticks]

    def workers(self):
        """Current worker pids, sorted: the live direct children of the master that run its program
        (not an --attach-daemon or a hook's command, which exec another) and are not the --stats process."""
        if self.pid is None or self.reaped():
            return []
        try:
            program = os.readlink(f"/proc/{self.pid}/exe")
        except OSError:
            return []

        def runs_program(w):
            try:
                return os.readlink(f"/proc/{w}/exe") == program
            except OSError:
                return False
        ws = [w for w in live_children(self.pid) if process_name(w) != STATS_PROCESS_NAME and runs_program(w)]
        for w in ws:
            st = proc_stat(w)
            if st is not None and w not in self.seen_workers:
                self.seen_workers[w] = st[3]
        return ws

    def wait_workers(self, n, timeout=5.0, exclude=()):
        """Wait until there are exactly n workers, none of them in exclude. Returns the list (maybe wrong)."""
        exclude = set(exclude)

        def ok():
            ws = self.workers()
            return ws if len(ws) == n and not (set(ws) & exclude) else None
        return wait_until(ok, timeout) or self.workers()

    def send_signal(self, sig):
        os.kill(self.pid, sig)

    def wait_exit(self, timeout):
        """Exit status, or None if still running after timeout."""
        try:
            self.returncode = self.proc.wait(timeout=timeout)
            self.reaped()  # notes when
            return self.returncode
        except subprocess.TimeoutExpired:
            return None

    def stop(self, sig=signal.SIGTERM, timeout=10.0):
        """Send sig, wait for exit. Returns the exit status; if it did not exit in time, kills the whole
        group and raises."""
        if not self.running():
            return self.proc.returncode
        self.workers()  # remember the current workers for the leftover check
        self.send_signal(sig)
        rc = self.wait_exit(timeout)
        if rc is None:
            self.kill_all()
            raise ServerError(f"server did not exit within {timeout}s of {signal.Signals(sig).name}\n"
                              + self.log_tail())
        self.check_wsgi_validator()
        return rc

    def leftovers(self):
        """Processes still alive that belong to this server: its process group, and every worker seen."""
        if self.pid is None:
            return []
        left = set(self.group())
        for w, start in self.seen_workers.items():
            if pid_alive(w, start):
                left.add(w)
        return sorted(left)

    def wait_no_leftovers(self, timeout=3.0):
        return wait_until(lambda: not self.leftovers(), timeout) or not self.leftovers()

    def kill_all(self):
        """SIGKILL the master's process group and every worker ever seen; reap the master."""
        if self.proc is None:
            return
        try:
            self.workers()
        except Exception:
            pass
        if not self.reaped():  # else the pid may be another's: the members left, one by one
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for p in self.group():
            try:
                os.kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for w, start in list(self.seen_workers.items()):
            if pid_alive(w, start):
                try:
                    os.kill(w, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        try:
            self.proc.wait(timeout=5)
            self.reaped()  # notes when
        except subprocess.TimeoutExpired:
            pass
        try:
            self._logfile.close()
        except Exception:
            pass
        if self in _SERVERS:
            _SERVERS.remove(self)

    # ---- log
    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_size(self):
        try:
            return os.path.getsize(self.log_path)
        except OSError:
            return 0

    def log_since(self, offset, limit=-1):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return f.read(limit).decode("utf-8", "replace")
        except OSError:
            return ""

    def log_lines(self, offset=0):
        return [l for l in self.log_since(offset).splitlines() if l.strip()]

    def messages(self, offset=0):
        """(pid, message) of every well-formed log line from offset; other lines as (None, line)."""
        out = []
        for l in self.log_lines(offset):
            m = LOG_LINE_RE.match(l)
            out.append((int(m.group(2)), m.group(3)) if m else (None, l))
        return out

    def death_logged(self, pid, offset=0, sig=9):
        """The message part of some line names pid (as a word) and the signal (number or name)."""
        name = signal.Signals(sig).name  # e.g. SIGKILL
        sig_rx = re.compile(r"\b%d\b|%s|\b%s\b" % (sig, name, name[3:]))
        pid_rx = re.compile(r"\b%d\b" % pid)
        for _, msg in self.messages(offset):
            if pid_rx.search(msg) and sig_rx.search(pid_rx.sub("", msg)):
                return msg
        return None

    def wait_log(self, pattern, timeout=3.0, offset=0):
        """First regex match in the log (from offset) within timeout, or None."""
        rx = re.compile(pattern)
        return wait_until(lambda: rx.search(self.log_since(offset)), timeout, interval=0.05)

    def log_tail(self, n=40):
        size = self.log_size()
        lines = self.log_since(max(0, size - 65536)).splitlines()
        return "---- server log (last %d lines of %d bytes) ----\n%s\n----" % (
            min(n, len(lines)), size, "\n".join(lines[-n:]))

    def dump_log(self, title="server log"):
        print(f"{title}: {self.log_path}")
        print(self.log_tail())
        self.log_dumped = True


def run_server_to_exit(args, timeout=5.0, env=None):
    """Run the binary expecting it to exit by itself (bad configuration). Returns (status, output)
    where status is None if it was still running at timeout (then it is killed), and the processes of
    it still alive once it exited (should be [])."""
    srv = Server(args, wait_ready=False, env=env)
    srv.start()
    try:
        rc = srv.wait_exit(timeout)
        left = srv.leftovers() if rc is not None else []
        return rc, srv.log(), left
    finally:
        srv.kill_all()


class UwsgiProcess:
    """The real uWSGI 2.0.21 in its own session (args after /usr/bin/uwsgi), ready once its sockets
    `addrs` accept and a worker answers a magic get (a miss: a clean EOF). Stopped with SIGINT (SIGTERM
    makes uWSGI 2.0 reload), then SIGKILL of its whole process group."""

    def __init__(self, args, addrs, prefix="uw-"):
        self.addrs = list(addrs)
        self.tmp = make_temp_dir(prefix)
        self.log_path = os.path.join(self.tmp, "uwsgi.log")
        self.args = [UWSGI, *args]
        self.proc = None
        self.logf = None

    def start(self):
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=self.logf, stderr=self.logf,
                                     start_new_session=True, preexec_fn=_child_setup(), close_fds=True)
        _UWSGIS.append(self)
        try:
            ok = wait_until(lambda: all(can_connect(a) for a in self.addrs) or self.proc.poll() is not None, 10)
            if not ok or self.proc.poll() is not None:
                raise AssertionError(f"uWSGI did not start (status {self.proc.poll()})\n{self.tail()}")
            if not wait_until(lambda: request(self.addrs[0], magic_get_req("warmup"), 2.0) == (b"", "eof"), 10):
                raise AssertionError("uWSGI does not answer a magic get\n" + self.tail())
        except BaseException:
            self.stop()
            raise
        return self

    def tail(self, n=3000):
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self):
        if self.proc is None:
            return
        pgid = self.proc.pid
        for sig in (signal.SIGINT, signal.SIGKILL):
            try:
                os.killpg(pgid, sig)
            except (ProcessLookupError, PermissionError):
                pass
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            if self.proc.poll() is not None and not live_in_group(pgid):
                break
        wait_until(lambda: not live_in_group(pgid), 3)
        self.logf.close()
        if self in _UWSGIS:
            _UWSGIS.remove(self)
        self.proc = None

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            print("---- uWSGI log tail\n" + self.tail())
        self.stop()
        return False


_UWSGIS = []


def _cleanup():
    for uw in list(_UWSGIS):
        try:
            uw.stop()
        except Exception:
            pass
    for srv in list(_SERVERS):
        try:
            srv.kill_all()
        except Exception:
            pass
    for d in _TEMP_DIRS:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup)


# --------------------------------------------------------------------------------------------------
# sockets

def connect(addr, timeout=3.0):
    if isinstance(addr, str):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(addr)
    except BaseException:
        s.close()
        raise
    return s


def can_connect(addr, timeout=0.5):
    try:
        s = connect(addr, timeout)
    except OSError:
        return False
    s.close()
    return True


def read_reply(s, timeout=5.0, limit=16 << 20):
    """Read until EOF. Returns (bytes, 'eof' | 'reset' | 'timeout')."""
    deadline = time.monotonic() + timeout
    chunks = []
    total = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return b"".join(chunks), "timeout"
        s.settimeout(left)
        try:
            data = s.recv(65536)
        except socket.timeout:
            return b"".join(chunks), "timeout"
        except ConnectionResetError:
            return b"".join(chunks), "reset"
        if not data:
            return b"".join(chunks), "eof"
        chunks.append(data)
        total += len(data)
        if total > limit:
            return b"".join(chunks), "toolong"


def request(addr, data, timeout=5.0, half_close=False):
    """One request on a new connection: connect, send everything, read until the server closes.
    Returns (reply_bytes, how) with how in 'eof' | 'reset' | 'timeout' | 'refused' (connect failed)."""
    try:
        s = connect(addr, timeout)
    except ConnectionRefusedError:
        return b"", "refused"
    except FileNotFoundError:
        return b"", "refused"
    except socket.timeout:
        return b"", "timeout"
    try:
        try:
            s.sendall(data)
            if half_close:
                s.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            # the server may have replied and closed already; read what is there
            reply, _ = read_reply(s, 0.5)
            return reply, "reset"
        except socket.timeout:
            return b"", "timeout"
        return read_reply(s, timeout)
    finally:
        s.close()


# --------------------------------------------------------------------------------------------------
# uwsgi packets

def header(modifier1, datasize, modifier2):
    return struct.pack("<BHB", modifier1, datasize, modifier2)


def _b(x):
    return x if isinstance(x, (bytes, bytearray)) else str(x).encode()


def vars_block(pairs):
    """pairs: dict or list of (key, value); str/int/bytes accepted."""
    items = pairs.items() if isinstance(pairs, dict) else pairs
    out = bytearray()
    for k, v in items:
        k, v = _b(k), _b(v)
        out += struct.pack("<H", len(k)) + k + struct.pack("<H", len(v)) + v
    return bytes(out)


def array_block(items):
    out = bytearray()
    for it in items:
        it = _b(it)
        out += struct.pack("<H", len(it)) + it
    return bytes(out)


def app_vars(path, method="GET", query="", protocol="HTTP/1.1", extra=()):
    """The vars of an application request as nginx's uwsgi_params sends them (the keys PEP 3333
    requires among them); `extra` pairs are added, replacing defaults of the same name."""
    given = {k for k, _ in extra}
    pairs = [("QUERY_STRING", query), ("REQUEST_METHOD", method), ("PATH_INFO", path),
             ("REQUEST_URI", path + ("?" + query if query else "")), ("SERVER_PROTOCOL", protocol),
             ("REMOTE_ADDR", "127.0.0.1"), ("SERVER_NAME", "localhost"), ("SERVER_PORT", "80")]
    return [(k, v) for k, v in pairs if k not in given and v is not None] + list(extra)


def packet(modifier1, modifier2, payload, body=b""):
    return header(modifier1, len(payload), modifier2) + payload + body


def parse_vars(block):
    """List of (key, value) bytes pairs; raises ValueError on malformed input."""
    out = []
    i = 0
    while i < len(block):
        if i + 2 > len(block):
            raise ValueError(f"truncated key length at {i}")
        kl = struct.unpack_from("<H", block, i)[0]
        i += 2
        if i + kl + 2 > len(block):
            raise ValueError(f"key overruns at {i}")
        k = block[i:i + kl]
        i += kl
        vl = struct.unpack_from("<H", block, i)[0]
        i += 2
        if i + vl > len(block):
            raise ValueError(f"value overruns at {i}")
        out.append((bytes(k), bytes(block[i:i + vl])))
        i += vl
    return out


# the exact 16-byte magic "status=ok" reply
OK_REPLY = header(111, 12, 17) + vars_block([("status", "ok")])
assert OK_REPLY == bytes.fromhex("6f0c0011060073746174757302006f6b")


def magic_req(pairs, body=b""):
    return packet(111, 17, vars_block(pairs), body)


def magic_set_req(key, value, cmd="set", expires=None, cache=None):
    value = _b(value)
    pairs = [("cmd", cmd), ("key", key), ("size", str(len(value)))]
    if expires is not None:
        pairs.append(("expires", str(expires)))
    if cache is not None:
        pairs.append(("cache", cache))
    return magic_req(pairs, value)


def magic_get_req(key, cache=None):
    pairs = [("cmd", "get"), ("key", key)]
    if cache is not None:
        pairs.append(("cache", cache))
    return magic_req(pairs)


def parse_magic_get_reply(reply):
    """(dict of vars, value) from a modifier2 17 get hit; raises AssertionError if malformed."""
    assert len(reply) >= 4, f"reply too short: {reply!r}"
    m1, size, m2 = struct.unpack_from("<BHB", reply, 0)
    assert (m1, m2) == (111, 17), f"bad reply header {reply[:4].hex()} (want 6f .. .. 11)"
    assert len(reply) >= 4 + size, f"reply shorter than its header says: {reply!r}"
    try:
        pairs = parse_vars(reply[4:4 + size])
    except ValueError as e:
        raise AssertionError(f"bad vars in reply {reply!r}: {e}")
    d = dict(pairs)
    return d, reply[4 + size:]


def magic_set(addr, key, value, timeout=5.0, **kw):
    """True if the server answered exactly status=ok then closed cleanly; False on a clean no-reply.
    Raises AssertionError on anything else (garbage, reset, timeout)."""
    reply, how = request(addr, magic_set_req(key, value, **kw), timeout)
    if reply == OK_REPLY and how == "eof":
        return True
    if reply == b"" and how == "eof":
        return False
    raise AssertionError(f"magic set {key!r} to {addr_str(addr)}: unexpected reply {reply!r} ({how})")


def magic_get(addr, key, timeout=5.0, **kw):
    """The value (bytes) on a hit, None on a clean miss; AssertionError on anything else."""
    reply, how = request(addr, magic_get_req(key, **kw), timeout)
    if how != "eof":
        raise AssertionError(f"magic get {key!r} from {addr_str(addr)}: connection ended by {how}, "
                             f"got {reply!r}")
    if reply == b"":
        return None
    d, value = parse_magic_get_reply(reply)
    assert d.get(b"status") == b"ok", f"magic get {key!r}: status {d!r}"
    assert d.get(b"size") == str(len(value)).encode(), \
        f"magic get {key!r}: size var {d.get(b'size')!r} but {len(value)} value bytes follow: {reply!r}"
    return value


def simple_get_req(key):
    key = _b(key)
    return packet(111, 0, key)


def simple_set_req(key, value):
    return packet(111, 1, array_block([key, value]))


def app_req(path="/", method="GET", protocol="HTTP/1.1", extra=()):
    pairs = [("REQUEST_METHOD", method), ("PATH_INFO", path), ("SERVER_PROTOCOL", protocol)]
    pairs += list(extra)
    return packet(0, 0, vars_block(pairs))


def start_hosted(args, workers, ready_addrs, **kwargs):
    """Starts a Server hosting a Python application; a missing peer (not a failure) when this build has
    no Python host (libpython3.11). kwargs go to Server (env=...)."""
    try:
        return Server(args, workers=workers, ready_addrs=ready_addrs, **kwargs).start()
    except ServerError as e:
        if "without the Python host" in str(e):
            peer_missing("this server was built without the Python host (libpython3.11)")
        raise


HOLD_APP = """\
import os, time
def application(environ, start_response):
    if environ["PATH_INFO"] == "/hold":
        # Held until the test creates the release file (the event this request waits for); the
        # started file tells the test the request reached the application.
        open(STARTED, "w").close()
        deadline = time.monotonic() + 20
        while not os.path.exists(RELEASE) and time.monotonic() < deadline:
            time.sleep(0.01)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]
"""


def write_hold_app(directory, name="holdapp"):
    """Writes HOLD_APP as module `name` in directory; returns (started, release): the file a /hold
    request creates when it starts, the file the test creates to let it finish. Other paths: "ok"."""
    started, release = os.path.join(directory, f"{name}.started"), os.path.join(directory, f"{name}.release")
    with open(os.path.join(directory, f"{name}.py"), "w") as f:
        f.write(f"STARTED = {started!r}\nRELEASE = {release!r}\n" + HOLD_APP)
    return started, release


def hold_app_server(args, workers, prefix="hold-"):
    """A Server (not started yet) of HOLD_APP on a fresh uwsgi socket, `args` added:
    (server, addr, started, release) (see write_hold_app)."""
    tmp = make_temp_dir(prefix)
    started, release = write_hold_app(tmp)
    port = free_port()
    srv = Server(["--socket", f"127.0.0.1:{port}", "--chdir", tmp, "--module", "holdapp"] + list(args),
                 workers=workers)
    return srv, ("127.0.0.1", port), started, release


def wsgi_req(path="/", method="GET", query="", extra=()):
    """A request for a hosted (Python) application, carrying what nginx's uwsgi_params sends, which
    PEP 3333 requires (app_req is the demo application's minimal packet)."""
    return packet(0, 0, vars_block(app_vars(path, method, query=query, extra=extra)))


def app_get(addr, path="/", timeout=5.0):
    """Demo-app request; asserts an HTTP/1.1 200 reply then a clean EOF; returns the reply bytes."""
    reply, how = request(addr, app_req(path), timeout)
    assert how == "eof" and reply.startswith(b"HTTP/1.1 200"), \
        f"app request to {addr_str(addr)}: got {reply[:200]!r} ({how})"
    return reply


# --------------------------------------------------------------------------------------------------
# assertions and the runner

def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def check_eq(got, want, what):
    if got != want:
        raise AssertionError(f"{what}: got {got!r}, want {want!r}")


class _Budget(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Budget("script time budget exhausted")


def _keep_logs(test):
    """After a failure: the log of every server the test started (a node that closed a connection may be
    stopped already) and of any still running, printed (tail) and copied whole out of the temporary
    directories, which are removed at exit, into $UCACHED_TEST_LOGS or /tmp/ucached-test-logs."""
    keep = os.path.join(os.environ.get("UCACHED_TEST_LOGS", "/tmp/ucached-test-logs"),
                        f"{os.path.basename(sys.argv[0]).removesuffix('.py')}-{test}-{os.getpid()}")
    servers = list(_STARTED) + [s for s in _SERVERS if s.running() and s not in _STARTED]
    for n, srv in enumerate(servers):
        if not srv.log_dumped:
            srv.dump_log(f"log of server {n + 1} of {len(servers)} ({'running' if srv.running() else 'stopped'}, "
                         f"{' '.join(srv.args)[:200]})")
        try:
            os.makedirs(keep, exist_ok=True)
            shutil.copy(srv.log_path, os.path.join(keep, f"server-{n + 1}.log"))
        except OSError as e:
            print(f"could not keep {srv.log_path}: {e}")
    if servers:
        print(f"the whole logs of the {len(servers)} server(s) of {test}: {keep}", flush=True)


def run_tests(tests, budget=50):
    """Run each test function in order; print a summary; exit 0 / 1 / 77."""
    require_server()
    raise_fd_limit()
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(budget)
    # turn a SIGTERM from ctest into a clean exit so atexit kills the servers
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(3))
    failed, skipped, passed = [], [], []
    t_start = time.monotonic()
    for t in tests:
        name = t.__name__
        t0 = time.monotonic()
        print(f"=== {name}", flush=True)
        _STARTED.clear()
        try:
            t()
            for srv in list(_SERVERS):  # servers shared between tests: each test answers for its requests
                srv.check_wsgi_validator()
        except Skip as e:
            skipped.append(name)
            print(f"--- SKIP {name}: {e}", flush=True)
        except BaseException as e:  # noqa: B902 (the budget alarm and assertions alike)
            failed.append(name)
            print(f"--- FAIL {name} ({time.monotonic() - t0:.2f}s): {type(e).__name__}: {e}", flush=True)
            traceback.print_exc(file=sys.stdout)
            _keep_logs(name)
            if isinstance(e, (_Budget, KeyboardInterrupt)):
                break
        else:
            passed.append(name)
            print(f"--- PASS {name} ({time.monotonic() - t0:.2f}s)", flush=True)
    signal.alarm(0)
    for srv in list(_SERVERS):  # servers shared between the tests of a script
        srv.kill_all()
        try:
            srv.check_wsgi_validator()  # what the last requests (and close() at exit) left in the log
        except ServerError as e:
            failed.append(f"wsgiref.validate ({srv.log_path})")
            print(f"--- FAIL {e}", flush=True)
    print(f"\n{len(passed)} passed, {len(failed)} failed, {len(skipped)} skipped "
          f"in {time.monotonic() - t_start:.1f}s" + (f"; failed: {', '.join(failed)}" if failed else ""))
    sys.stdout.flush()
    _cleanup()
    if failed:
        sys.exit(1)
    if skipped and not passed:
        sys.exit(77)
    sys.exit(0)


def in_thread(fn, *args):
    """Start fn(*args) in a daemon thread; returns (thread, result dict with 'value' or 'error')."""
    result = {}

    def body():
        try:
            result["value"] = fn(*args)
        except BaseException as e:  # reported to the caller
            result["error"] = e
            result["traceback"] = traceback.format_exc()
    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t, result
