#!/usr/bin/env python3
"""`cmake --install` gives a server that runs from its prefix alone: installed into a temporary prefix,
started from another directory with PYTHONPATH unset, it hosts a Django application whose cache is
the installed uwsgi_django_cache backend, serves a request through it, and no sys.path entry of the
hosted interpreter lies in the source tree. `--version` prints the version and the git revision the
binary was built from ("unknown" outside a git checkout, as in a release tarball)."""
import json
import os
import re
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness  # noqa: E402
from harness import (BUILD_DIR, SOURCE_DIR, Server, Skip, check, check_eq, free_port, make_temp_dir,  # noqa: E402
                     packet, request, run_tests, vars_block)

VERSION_RE = re.compile(r"^server (\d+\.\d+\.\d+) \(git ([0-9a-f]{12}(?:-dirty)?|unknown); ")

SETTINGS = r'''
SECRET_KEY = "test"
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "instapp"
INSTALLED_APPS = []
MIDDLEWARE = []
CACHES = {"default": {"BACKEND": "uwsgi_django_cache.UWSGICache", "LOCATION": "", "KEY_PREFIX": "inst"}}
'''

APP = r'''
import json, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "instsettings")
from django.core.cache import cache
from django.core.wsgi import get_wsgi_application
from django.http import HttpResponse
from django.urls import path
import uwsgi_django_cache

def view(request):
    cache.set("installed", {"answer": 42})
    return HttpResponse(json.dumps({"value": cache.get("installed"), "backend": uwsgi_django_cache.__file__,
                                    "sys_path": sys.path, "cwd": os.getcwd()}),
                        content_type="application/json")

urlpatterns = [path("check", view)]
application = get_wsgi_application()
'''

_state = {}


def cmake_cache_value(name):
    with open(os.path.join(BUILD_DIR, "CMakeCache.txt")) as f:
        for line in f:
            if line.startswith(name + ":"):
                return line.rstrip("\n").partition("=")[2]
    raise AssertionError(f"{name} not in {BUILD_DIR}/CMakeCache.txt")


def prefix():
    """Installs the build tree into a fresh temporary prefix (once)."""
    if "prefix" not in _state:
        if not BUILD_DIR:
            raise Skip("BUILD_DIR is not set (ctest sets it)")
        p = os.path.join(make_temp_dir("inst-"), "prefix")
        out = subprocess.run([shutil.which("cmake") or "cmake", "--install", BUILD_DIR, "--prefix", p],
                             capture_output=True, text=True, timeout=60)
        check(out.returncode == 0, f"cmake --install failed ({out.returncode}):\n{out.stdout}{out.stderr}")
        _state["prefix"] = p
    return _state["prefix"]


def under(path, directory):
    path, directory = os.path.realpath(path), os.path.realpath(directory)
    return path == directory or path.startswith(directory + os.sep)


def test_install_layout():
    p = prefix()
    check(os.access(os.path.join(p, "bin", "server"), os.X_OK), "bin/server is not installed")
    python_dir = os.path.join(p, cmake_cache_value("PYTHON_INSTALL_DIR"))
    for module in ("uwsgi_cache_client.py", "uwsgi_django_cache.py", "uwsgicache.py", "uwsgi_pyrun.py"):
        check(os.path.isfile(os.path.join(python_dir, module)), f"{module} is not in {python_dir}")
    docs = os.path.join(p, "share", "doc", "ucached")
    for page in ("README.md", "docs/options.md", "docs/python.md", "docs/install.md"):
        check(os.path.isfile(os.path.join(docs, page)), f"{page} is not in {docs}")


def test_version_names_the_revision():
    out = subprocess.run([os.path.join(prefix(), "bin", "server"), "--version"], capture_output=True, text=True,
                         timeout=10)
    check_eq(out.returncode, 0, "server --version exit status")
    m = VERSION_RE.match(out.stdout)
    check(m is not None, f"--version: {out.stdout!r}")
    check_eq(m.group(1), cmake_cache_value("CMAKE_PROJECT_VERSION"), "version")
    revision = m.group(2)
    git = shutil.which("git")
    if git and subprocess.run([git, "-C", SOURCE_DIR, "rev-parse"], capture_output=True).returncode == 0:
        # Built from a checkout: a commit of it (not necessarily HEAD: a commit may follow the build).
        commit = revision.removesuffix("-dirty")
        found = subprocess.run([git, "-C", SOURCE_DIR, "cat-file", "-e", commit + "^{commit}"], capture_output=True)
        check(found.returncode == 0, f"--version names {revision}, not a commit of {SOURCE_DIR}")
    # Outside a git checkout (a tarball) the generator says "unknown" instead of failing.
    tarball = make_temp_dir("tarball-")
    out_file = os.path.join(tarball, "build_info.hpp")
    gen = subprocess.run([shutil.which("cmake") or "cmake", f"-DSOURCE_DIR={tarball}", "-DVERSION=9.8.7",
                          f"-DOUT={out_file}", "-P", os.path.join(SOURCE_DIR, "cmake", "build_info.cmake")],
                         capture_output=True, text=True, timeout=30)
    check(gen.returncode == 0, f"build_info.cmake outside git: {gen.stdout}{gen.stderr}")
    with open(out_file) as f:
        text = f.read()
    check('BUILD_INFO_REVISION "unknown"' in text and 'BUILD_INFO_VERSION "9.8.7"' in text, text)


def test_installed_server_hosts_django_with_the_installed_backend():
    try:
        import django  # noqa: F401 (Debian's python3-django)
    except ImportError:
        raise Skip("python3-django is not installed (apt-get install python3-django)")
    p = prefix()
    app = make_temp_dir("instapp-")
    for name, text in (("instsettings.py", SETTINGS), ("instapp.py", APP)):
        with open(os.path.join(app, name), "w") as f:
            f.write(text)
    elsewhere = make_temp_dir("cwd-")
    os.environ.pop("PYTHONPATH", None)  # the server inherits this environment
    os.chdir(elsewhere)
    harness.SERVER_BIN = os.path.join(p, "bin", "server")
    port = free_port()
    with Server(["--socket", f"127.0.0.1:{port}", "--cache2", "name=default,items=100", "--pythonpath", app,
                 "--module", "instapp", "--processes", "1"], workers=1):
        pairs = [("REQUEST_METHOD", "GET"), ("PATH_INFO", "/check"), ("QUERY_STRING", ""),
                 ("SERVER_PROTOCOL", "HTTP/1.1"), ("SERVER_NAME", "localhost"), ("SERVER_PORT", "80"),
                 ("HTTP_HOST", "localhost"), ("REMOTE_ADDR", "127.0.0.1")]
        reply, how = request(("127.0.0.1", port), packet(0, 0, vars_block(pairs)), timeout=30)
    check(how == "eof" and reply.startswith(b"HTTP/1.1 200"), f"Django view: {reply[:2000]!r} ({how})")
    result = json.loads(reply.partition(b"\r\n\r\n")[2])
    check_eq(result["value"], {"answer": 42}, "value through the installed Django backend")
    check(under(result["backend"], p), f"uwsgi_django_cache came from {result['backend']}, not from {p}")
    check(under(result["cwd"], elsewhere), f"the server ran in {result['cwd']}")
    from_source = [e for e in result["sys_path"] if e and under(e, SOURCE_DIR)]
    check(not from_source, f"sys.path reaches into the source tree {SOURCE_DIR}: {from_source}")


if __name__ == "__main__":
    run_tests([test_install_layout, test_version_names_the_revision,
               test_installed_server_hosts_django_with_the_installed_backend], budget=120)
