"""The example configurations of Django's, uWSGI's and Flask's documentation start unchanged (only their
example paths made real), serve a request and stop cleanly (issue 11, "Done when"):
- Django's "How to use Django with uWSGI" ini (fixtures/django_docs.ini: chdir, module, master, pidfile,
  vacuum, max-requests, daemonize), with the socket its command line gives, on a project made by
  `django-admin startproject`;
- uWSGI's Django + nginx tutorial ini (fixtures/uwsgi_docs_django_nginx.ini: home = a venv with the
  system's site-packages, 10 processes, a UNIX socket with chmod-socket 664, vacuum), behind a real nginx;
- Flask's uWSGI page command line: `--http 127.0.0.1:8000 --master -p 4 -w hello:app`.
The master is found by its pidfile when the configuration names one (a daemonizing server leaves the
process we started), and a stop is SIGTERM: every process gone, the files vacuum removes removed."""

import http.client
import os
import signal
import stat
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from appnginx import uwsgi_front  # noqa: E402
from harness import (SERVER_BIN, _child_setup, can_connect, check, check_eq, free_port,  # noqa: E402
                     live_children, make_temp_dir, packet, peer_missing, pid_alive, request, run_tests, vars_block,
                     wait_until)

HERE = os.path.dirname(os.path.abspath(__file__))


def need_django():
    if subprocess.run(["/usr/bin/python3", "-c", "import django"], capture_output=True).returncode != 0:
        peer_missing("python3-django")


def start_project(parent, name):
    subprocess.run(["/usr/bin/python3", "-m", "django", "startproject", name], cwd=parent, check=True,
                   timeout=60, capture_output=True)
    return os.path.join(parent, name)


def render(fixture, replacements, directory):
    with open(os.path.join(HERE, "fixtures", fixture)) as f:
        text = f.read()
    for documented, real in replacements:
        text = text.replace(documented, real)
    path = os.path.join(directory, fixture)
    with open(path, "w") as f:
        f.write(text)
    return path


class Example:
    """A server started the way the docs say, tracked through its pidfile when there is one."""

    def __init__(self, args, cwd, pidfile=None):
        self.args, self.cwd, self.pidfile = args, cwd, pidfile
        self.log_path = os.path.join(make_temp_dir("example-"), "server.log")
        self.proc = None

    def master(self):
        if self.pidfile is None:
            return self.proc.pid
        try:
            with open(self.pidfile) as f:
                pid = int(f.read())
        except (OSError, ValueError):
            return None
        return pid if pid_alive(pid) else None

    def start(self, addr, workers):
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen([SERVER_BIN] + self.args, cwd=self.cwd, stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log, start_new_session=True,
                                         preexec_fn=_child_setup(), close_fds=True)

        def ready():
            if self.proc.poll() not in (None, 0):
                return True  # failed: reported below
            pid = self.master()
            return pid is not None and can_connect(addr) and len(live_children(pid)) >= workers
        wait_until(ready, 30)
        check(self.proc.poll() in (None, 0) and self.master() is not None,
              f"{self.args} did not start (status {self.proc.poll()}):\n{self.log()}")
        return self

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read()[-4000:].decode("utf-8", "replace")

    def stop(self):
        pid = self.master()
        family = [pid] + live_children(pid)
        os.kill(pid, signal.SIGTERM)
        check(wait_until(lambda: not any(pid_alive(p) for p in family), 30), f"still running:\n{self.log()}")
        if self.proc.pid == pid:
            status = self.proc.wait(5)
            check(status == 0, f"exit status after SIGTERM: {status}\n{self.log()}")

    def kill(self):
        """After a failure: nothing of this server may outlive the test."""
        if self.proc is None:
            return
        pid = self.master()
        ours = [self.proc.pid] if self.proc.poll() is None else []  # once waited for, its pid may be another's
        for victim in ([pid] + live_children(pid) if pid else []) + ours:
            if pid_alive(victim):
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if self.proc.poll() is None:
            self.proc.wait(5)


def django_get(addr, path="/"):
    pairs = [("REQUEST_METHOD", "GET"), ("PATH_INFO", path), ("REQUEST_URI", path), ("QUERY_STRING", ""),
             ("SERVER_PROTOCOL", "HTTP/1.1"), ("SERVER_NAME", "localhost"), ("SERVER_PORT", "80"),
             ("HTTP_HOST", "localhost"), ("REMOTE_ADDR", "127.0.0.1")]
    reply, how = request(addr, packet(0, 0, vars_block(pairs)), 15.0)
    return reply


def test_django_docs_ini():
    need_django()
    tmp = make_temp_dir("django-docs-")
    project = start_project(tmp, "mysite")
    pidfile = os.path.join(tmp, "project-master.pid")
    logfile = os.path.join(tmp, "yourproject.log")
    ini = render("django_docs.ini", [("/path/to/your/project", project), ("/tmp/project-master.pid", pidfile),
                                     ("/var/log/uwsgi/yourproject.log", logfile)], tmp)
    port = free_port()
    example = Example(["--ini", ini, "--socket", f"127.0.0.1:{port}"], tmp, pidfile)
    try:
        example.start(("127.0.0.1", port), 1)
        reply = django_get(("127.0.0.1", port))
        check(reply.startswith(b"HTTP/1.1 200 OK") and b"django" in reply.lower(),
              f"Django's start page: {reply[:300]!r}\n{example.log()}")
        example.stop()
        check(not os.path.exists(pidfile), "vacuum removed the pidfile")
    finally:
        example.kill()


def test_uwsgi_docs_django_nginx_ini():
    need_django()
    tmp = make_temp_dir("uwsgi-docs-")
    project = start_project(tmp, "project")
    venv = os.path.join(tmp, "venv")
    # The tutorial installs Django into the virtualenv; here it comes from the system's packages.
    subprocess.run(["/usr/bin/python3", "-m", "venv", "--without-pip", "--system-site-packages", venv],
                   check=True, timeout=60)
    ini = render("uwsgi_docs_django_nginx.ini",
                 [("/path/to/your/project", project), ("/path/to/virtualenv", venv)], tmp)
    socket_path = os.path.join(project, "mysite.sock")
    example = Example(["--ini", ini], tmp)
    try:
        example.start(socket_path, 10)
        check_eq(oct(stat.S_IMODE(os.stat(socket_path).st_mode)), oct(0o664), "chmod-socket 664")
        with uwsgi_front(f"unix:{socket_path}") as ngx:
            conn = http.client.HTTPConnection("127.0.0.1", ngx.port, timeout=15)
            conn.request("GET", "/", headers={"Host": "localhost"})
            resp = conn.getresponse()
            body = resp.read()
            conn.close()
        check(resp.status == 200 and b"django" in body.lower(), f"through nginx: {resp.status} {body[:200]!r}\n"
              + example.log())
        check(f"PEP 405 virtualenv detected: {venv}" in example.log(), "the venv was used")
        example.stop()
        check(not os.path.exists(socket_path), "vacuum removed the socket")
    finally:
        example.kill()


FLASK_APP = """\
from flask import Flask

app = Flask(__name__)


@app.route("/")
def hello():
    return "Hello, World!"
"""


def test_flask_docs_command_line():
    if subprocess.run(["/usr/bin/python3", "-c", "import flask"], capture_output=True).returncode != 0:
        peer_missing("python3-flask")
    tmp = make_temp_dir("flask-docs-")
    with open(os.path.join(tmp, "hello.py"), "w") as f:
        f.write(FLASK_APP)
    port = free_port()
    example = Example(["--http", f"127.0.0.1:{port}", "--master", "-p", "4", "-w", "hello:app"], tmp)
    try:
        example.start(("127.0.0.1", port), 4)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")
        resp = conn.getresponse()
        check_eq((resp.status, resp.read()), (200, b"Hello, World!"), "Flask's hello")
        conn.close()
        example.stop()
    finally:
        example.kill()


if __name__ == "__main__":
    run_tests([test_django_docs_ini, test_uwsgi_docs_django_nginx_ini, test_flask_docs_command_line], budget=120)
