"""The tests' one nginx launcher: a private nginx in front of the server (PEP 3333, Django, Flask,
static files, the documented deployments): the `location` blocks are the test's (uwsgi_front() writes
the usual one), the rest (temp paths, logs, one process) is rendered here; `launch` starts a
configuration a test renders itself (test_nginx.py). Debian's nginx; loopback only; a free port; the
configuration checked with nginx -t first and the error log shown when a test fails. Stopped with
SIGQUIT (a graceful stop), then SIGKILL of its group; an atexit handler kills whatever a failed test
left."""

import atexit
import http.client
import os
import signal
import subprocess

from harness import _child_setup, can_connect, check, free_port, make_temp_dir, peer_missing, wait_until

NGINX = "/usr/sbin/nginx"
UWSGI_PARAMS = "/etc/nginx/uwsgi_params"  # what nginx users include: the environ of a real deployment

_RUNNING = []


def nginx_or_skip():
    """Fails under UCACHED_REQUIRE_PEERS / CI, skips otherwise, when nginx is not installed."""
    if not os.access(NGINX, os.X_OK):
        peer_missing("nginx (apt-get install nginx-light)")


def _tail(path, n=4000):
    try:
        with open(path, "rb") as f:
            return f.read()[-n:].decode("utf-8", "replace")
    except OSError:
        return ""


def launch(tmp, conf, error_log, port, register):
    """Checks `conf` with nginx -t, starts nginx in its own session (prefix tmp), hands the process to
    `register` (for the caller's cleanup) and waits until it listens on `port`."""
    args = [NGINX, "-p", tmp, "-e", error_log, "-c", conf]
    test = subprocess.run(args + ["-t"], capture_output=True, timeout=20)
    check(test.returncode == 0, f"nginx -t rejects the configuration:\n{test.stderr.decode()}")
    with open(os.path.join(tmp, "stderr.log"), "ab") as err:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True, preexec_fn=_child_setup(), close_fds=True)
    register(proc)
    ok = wait_until(lambda: proc.poll() is not None or can_connect(("127.0.0.1", port)), 10)
    check(ok and proc.poll() is None, f"nginx did not start listening on {port}\n"
          + _tail(error_log) + _tail(os.path.join(tmp, "stderr.log")))
    return proc


class AppNginx:
    """nginx listening on a free loopback port with the given `location` blocks (a string; the
    placeholder @PORT@ is replaced by nginx's own port)."""

    def __init__(self, locations, extra_http=""):
        nginx_or_skip()
        self.tmp = make_temp_dir("appngx-")
        self.port = free_port()
        self.error_log = os.path.join(self.tmp, "error.log")
        user = "user root;" if os.geteuid() == 0 else ""
        t = self.tmp
        conf = f"""{user}
worker_processes 1;
daemon off;
master_process off;
pid {t}/nginx.pid;
error_log {t}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log {t}/access.log;
    client_body_temp_path {t}/cb; proxy_temp_path {t}/p; fastcgi_temp_path {t}/f;
    uwsgi_temp_path {t}/u; scgi_temp_path {t}/s;
    {extra_http}
    server {{
        listen 127.0.0.1:{self.port};
        server_name testhost.example;
{locations.replace("@PORT@", str(self.port))}
    }}
}}
"""
        self.conf = os.path.join(self.tmp, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(conf)
        self.proc = None

    def start(self):
        _RUNNING.append(self)
        self.proc = launch(self.tmp, self.conf, self.error_log, self.port, lambda proc: setattr(self, "proc", proc))
        return self

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=5)
        self.proc = None
        if self in _RUNNING:
            _RUNNING.remove(self)

    def __enter__(self):
        return self.start()

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            print("---- nginx error log\n" + self.errors())
        self.stop()
        return False

    def errors(self):
        return _tail(self.error_log)

    def connection(self, timeout=10):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def get(self, path, method="GET", body=None, headers=None, timeout=10):
        """(status, headers dict (lower-case names), body bytes) of one request on a new connection."""
        conn = self.connection(timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


def uwsgi_front(upstream, prefix="/", extra=""):
    """nginx passing every request under `prefix` to the uwsgi backend `upstream` ("127.0.0.1:3031" or
    "unix:/path") with Debian's uwsgi_params: what users deploy. `extra`: more directives for that
    location (e.g. "client_max_body_size 0;"). `with uwsgi_front(...) as ngx:`."""
    return AppNginx(f"location {prefix} {{ include {UWSGI_PARAMS}; uwsgi_pass {upstream}; {extra} }}")


def _stop_all():
    for n in list(_RUNNING):
        try:
            n.stop()
        except Exception:
            pass


atexit.register(_stop_all)
