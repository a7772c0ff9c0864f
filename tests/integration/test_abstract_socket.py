"""--socket @name binds a Linux abstract UNIX socket, laid out as uWSGI lays it out ("\\0name\\0": no file,
/proc/net/unix shows @name@), so that both our client (`server cache ... --cache-server @name`) and
uWSGI 2.0.21's own client (`uwsgi.cache_get(key, "default@@name")` under --pyrun) reach it, and our
client reaches a uWSGI listening on @name. Exit 0 pass, 1 fail, 77 skip (the uWSGI part only skips
when uWSGI or its python3 plugin cannot be installed)."""

import os
import subprocess
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (SERVER_BIN, Server, UwsgiProcess, check, check_eq, make_temp_dir,  # noqa: E402
                     need_uwsgi, run_tests)


def unique(tag):
    return f"ucached-it-{os.getpid()}-{tag}"


def bound_abstract_names():
    """The abstract names in /proc/net/unix, as the kernel prints them (NUL bytes as @)."""
    with open("/proc/net/unix") as f:
        return {line.split()[-1] for line in f.readlines()[1:] if len(line.split()) >= 8
                and line.split()[-1].startswith("@")}


def cli(*args):
    p = subprocess.run([SERVER_BIN, "cache", *args], capture_output=True, timeout=20)
    return p.returncode, p.stdout, p.stderr.decode("utf-8", "replace")


def test_ours_binds_an_abstract_socket_and_our_client_reaches_it():
    name = unique("ours")
    tmp = make_temp_dir()
    srv = Server(["--socket", f"@{name}", "--processes", "1", "--cache", "10"], workers=1,
                 ready_addrs=[f"\0{name}\0"], tmpdir=tmp)
    with srv:
        check(f"@{name}@" in bound_abstract_names(), f"@{name}@ is not in /proc/net/unix")
        check(not os.path.exists(f"@{name}"), f"a file named @{name} was created in {os.getcwd()}")
        check_eq(cli("set", "k", "hello", "--cache-server", f"@{name}")[0], 0, "server cache set over @name")
        rc, out, err = cli("get", "k", "--cache-server", f"@{name}")
        check_eq((rc, out), (0, b"hello"), f"server cache get over @name (stderr {err.strip()!r})")
        # the pure-Python client names it the same way
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "python"))
        from uwsgi_cache_client import CacheClient
        check_eq(CacheClient(f"@{name}").get(b"k"), b"hello", "python client get over @name")
        check(CacheClient(f"@{name}").set(b"py", b"from python"), "python client set over @name")
        check_eq(cli("get", "py", "--cache-server", f"@{name}")[1], b"from python", "python client's write")
        check_eq(srv.stop(), 0, "exit status after SIGTERM")
    check(f"@{name}@" not in bound_abstract_names(), "the abstract name outlived the server")


PYRUN = '''
import sys, uwsgi
where = "default@" + sys.argv[1]
print(repr(uwsgi.cache_get("from-ours", where)))
uwsgi.cache_set("from-uwsgi", b"written by uWSGI", 0, where)
'''


def test_uwsgi_client_reaches_our_abstract_socket():
    need_uwsgi(("cache", "python3"))
    name = unique("for-uwsgi")
    d = make_temp_dir("abstract-")
    script = os.path.join(d, "script.py")
    with open(script, "w") as f:
        f.write(PYRUN)
    with Server(["--socket", f"@{name}", "--processes", "1", "--cache", "10"], workers=1,
                ready_addrs=[f"\0{name}\0"]):
        check_eq(cli("set", "from-ours", "written by ours", "--cache-server", f"@{name}")[0], 0, "set")
        # uWSGI's "cache@server" form: the first @ ends the cache name, so the server is "@name".
        p = subprocess.run(["/usr/bin/uwsgi", "--plugin", "python3,cache", "--pyrun", script, "--pyargv",
                            f"@{name}"], capture_output=True, timeout=60)
        out = (p.stdout + p.stderr).decode("utf-8", "replace")  # uWSGI prints the script's output to its log
        check("b'written by ours'" in out, f"uWSGI's cache_get over @{name}: {out[-600:]!r}")
        rc, got, err = cli("get", "from-uwsgi", "--cache-server", f"@{name}")
        check_eq((rc, got), (0, b"written by uWSGI"), f"uWSGI's cache_set over @{name} (stderr {err.strip()!r})")


def test_our_client_reaches_uwsgi_on_an_abstract_socket():
    need_uwsgi()
    name = unique("uwsgi")
    with UwsgiProcess(["--plugin", "cache", "--master", "--socket", f"@{name}", "--cache", "10"],
                      [f"\0{name}\0"]):
        check_eq(cli("set", "k", "to uWSGI", "--cache-server", f"@{name}")[0], 0, "set on uWSGI over @name")
        rc, out, err = cli("get", "k", "--cache-server", f"@{name}")
        check_eq((rc, out), (0, b"to uWSGI"), f"get from uWSGI over @name (stderr {err.strip()!r})")


if __name__ == "__main__":
    if not os.path.exists("/proc/net/unix"):
        print("SKIP: no /proc/net/unix: abstract UNIX sockets are Linux only")
        sys.exit(77)
    run_tests([test_ours_binds_an_abstract_socket_and_our_client_reaches_it,
               test_uwsgi_client_reaches_our_abstract_socket, test_our_client_reaches_uwsgi_on_an_abstract_socket],
              budget=90)
