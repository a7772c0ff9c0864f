"""The same configuration from the command line, an ini file and a toml file gives the same cache
geometry and a serving server; `--ini file:section` picks a section; bad configurations exit 1 with a
message naming the option (and `file:line` for files) before any socket is bound. uWSGI's ini language
(magic variables, placeholders, $(ENV), @(file), if/for blocks, UWSGI_* variables) resolves to what
uWSGI 2.0.21 itself prints with --show-config, and a uWSGI-style ini with unknown keys starts."""

import os
import re
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (SERVER_BIN, UWSGI, Server, app_get, check, check_eq, free_port, magic_get,  # noqa: E402
                     magic_req, magic_set, make_temp_dir, need_uwsgi, parse_vars, port_is_free, request,
                     run_server_to_exit, run_tests)

GEOMETRY_RE = re.compile(r'cache "default" ready: (.*)$', re.M)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


def geometry_of(srv):
    m = srv.wait_log(r'cache "default" ready: ', timeout=10.0)
    check(m, 'no `cache "default" ready:` line in the log\n' + srv.log_tail())
    lines = GEOMETRY_RE.findall(srv.log())
    check_eq(len(lines), 1, 'number of `cache "default" ready:` lines')
    return lines[0].strip()


def serve_check(srv, port):
    addr = ("127.0.0.1", port)
    check(magic_set(addr, "cfg-key", "cfg-value"), "magic set refused")
    check_eq(magic_get(addr, "cfg-key"), b"cfg-value", "magic get")
    app_get(addr)


def ini_text(port, section="uwsgi", processes=2, items=1000, blocksize=4096):
    return (f"[{section}]\n"
            f"socket = 127.0.0.1:{port}\n"
            f"processes = {processes}\n"
            f"cache = {items}\n"
            f"cache-blocksize = {blocksize}\n")


def toml_text(port, processes=2, items=1000, blocksize=4096):
    return ("[uwsgi]\n"
            f'socket = "127.0.0.1:{port}"\n'
            f"processes = {processes}\n"
            f"cache = {items}\n"
            f"cache-blocksize = {blocksize}\n")


def test_same_geometry_from_cli_ini_toml():
    tmp = make_temp_dir()
    geos = {}
    # command line
    port = free_port()
    with Server(["--socket", f"127.0.0.1:{port}", "--processes", "2", "--cache", "1000",
                 "--cache-blocksize", "4096"], workers=2, ready_addrs=[("127.0.0.1", port)]) as srv:
        geos["cli"] = geometry_of(srv)
        serve_check(srv, port)
    # ini
    port = free_port()
    ini = write(os.path.join(tmp, "a.ini"), ini_text(port))
    with Server(["--ini", ini], workers=2, ready_addrs=[("127.0.0.1", port)]) as srv:
        geos["ini"] = geometry_of(srv)
        serve_check(srv, port)
    # toml
    port = free_port()
    toml = write(os.path.join(tmp, "a.toml"), toml_text(port))
    with Server(["--toml", toml], workers=2, ready_addrs=[("127.0.0.1", port)]) as srv:
        geos["toml"] = geometry_of(srv)
        serve_check(srv, port)
    print("geometry:", geos)
    check(geos["cli"].startswith("items=1000 blocksize=4096 keysize=2048"),
          f"command-line geometry is not items=1000 blocksize=4096 keysize=2048: {geos['cli']!r}")
    check_eq(geos["ini"], geos["cli"], "ini geometry vs command line")
    check_eq(geos["toml"], geos["cli"], "toml geometry vs command line")


def test_ini_section_and_precedence():
    tmp = make_temp_dir()
    port_a, port_b = free_port(), free_port()
    ini = write(os.path.join(tmp, "two.ini"),
                ini_text(port_a) + "\n" + ini_text(port_b, section="other", processes=3, items=500, blocksize=8192))
    # `file.ini:other` picks [other]: its socket, 3 workers, its geometry; [uwsgi]'s socket is not bound
    with Server(["--ini", f"{ini}:other"], workers=3, ready_addrs=[("127.0.0.1", port_b)]) as srv:
        geo = geometry_of(srv)
        check(geo.startswith("items=500 blocksize=8192 "), f"[other] geometry: {geo!r}")
        check(port_is_free(port_a), f"port {port_a} of section [uwsgi] was bound though [other] was asked")
        serve_check(srv, port_b)
    # the same for toml: `file.toml:other` picks the table [other]
    toml = write(os.path.join(tmp, "two.toml"),
                 toml_text(port_a) + "\n[other]\n" + toml_text(port_b, processes=3, items=500, blocksize=8192).split("\n", 1)[1])
    with Server(["--toml", f"{toml}:other"], workers=3, ready_addrs=[("127.0.0.1", port_b)]) as srv:
        geo = geometry_of(srv)
        check(geo.startswith("items=500 blocksize=8192 "), f"toml [other] geometry: {geo!r}")
        check(port_is_free(port_a), f"port {port_a} of table [uwsgi] was bound though [other] was asked")
        serve_check(srv, port_b)
    # the default section is [uwsgi]; a later command-line option wins over the file
    with Server(["--ini", ini, "--processes", "1"], workers=1, ready_addrs=[("127.0.0.1", port_a)]) as srv:
        geo = geometry_of(srv)
        check(geo.startswith("items=1000 blocksize=4096 "), f"[uwsgi] geometry: {geo!r}")
        check_eq(len(srv.workers()), 1, "workers with --processes 1 after --ini (later source wins)")
        serve_check(srv, port_a)


def expect_bad_config(args, must_contain, what, tcp_port, unix_path):
    """Run with a bad configuration: exit status 1 within 5 s, the output contains every string of
    must_contain (case-insensitive), and neither socket got bound."""
    rc, out, left = run_server_to_exit(args, timeout=5.0)
    print(f"[{what}] exit {rc}; output: {out.strip()[-300:]!r}")
    check(rc is not None, f"{what}: still running after 5 s\n{out}")
    check_eq(rc, 1, f"{what}: exit status")
    for s in must_contain:
        check(s.lower() in out.lower(), f"{what}: output does not contain {s!r}: {out!r}")
    check(not os.path.exists(unix_path), f"{what}: the UNIX socket {unix_path} was created (bound before validating)")
    check(port_is_free(tcp_port), f"{what}: port {tcp_port} is still bound")
    check(not left, f"{what}: processes left: {left}")


def test_bad_configs_exit_1_before_binding():
    tmp = make_temp_dir()
    port = free_port()
    unix = os.path.join(tmp, "bad.sock")
    socks = ["--socket", f"127.0.0.1:{port}", "--socket", unix]

    expect_bad_config(socks + ["--processes", "abc"], ["processes"], "--processes abc", port, unix)
    expect_bad_config(socks + ["--proceses", "2"], ["proceses", "did you mean", "processes"],
                      "unknown option --proceses", port, unix)
    expect_bad_config(socks + ["--processes", "2", "--buffer-size", "70000"], ["buffer-size"],
                      "--buffer-size 70000 (above 65535)", port, unix)

    ini = write(os.path.join(tmp, "bad.ini"),
                "[uwsgi]\n"
                f"socket = {unix}\n"
                "processes = abc\n"          # line 3
                "cache = 10\n")
    expect_bad_config(socks + ["--ini", ini], ["processes", "bad.ini:3"], "ini processes = abc", port, unix)

    ini2 = write(os.path.join(tmp, "typo.ini"),
                 "[uwsgi]\n"
                 "strict = true\n"            # unknown keys are errors, not WARNINGs
                 "cache = 10\n"
                 "\n"
                 "proceses = 2\n")           # line 5
    expect_bad_config(socks + ["--ini", ini2], ["proceses", "typo.ini:5", "strict"], "ini unknown key with strict",
                      port, unix)

    toml = write(os.path.join(tmp, "bad.toml"),
                 "[uwsgi]\n"
                 "cache = 10\n"
                 'processes = "abc"\n')       # line 3
    expect_bad_config(socks + ["--toml", toml], ["processes", "bad.toml:3"], "toml processes = \"abc\"", port, unix)

    missing = os.path.join(tmp, "missing.ini")
    expect_bad_config(socks + ["--ini", missing], ["missing.ini"], "--ini of a file that does not exist", port, unix)

    # the same with our own listener on the port: a server that binds before validating would report
    # "address in use" instead of the option
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        holder.bind(("127.0.0.1", port))
        holder.listen(1)
        rc, out, _ = run_server_to_exit(socks + ["--processes", "abc"], timeout=5.0)
        check_eq(rc, 1, "--processes abc with the port taken: exit status")
        check("processes" in out.lower(), f"--processes abc with the port taken: message does not name the option: {out!r}")
    finally:
        holder.close()


def test_unsupported_uwsgi_cache_features_are_announced():
    """uWSGI cache features we parse but do not implement start the server (a uWSGI configuration
    keeps working) and each one asked for gets a WARNING line naming the cache and the consequence;
    a configuration without them gets none."""
    port = free_port()
    args = ["--socket", f"127.0.0.1:{port}", "--cache", "5", "--cache2", "name=a,items=10,bitmap=1,blocks=20,lastmod=1",
            "--cache2", "name=c,items=10,blocks=20"]
    with Server(args, workers=1) as srv:
        warnings = [line for line in srv.log().splitlines() if "WARNING" in line]
        t0 = int(time.time())
        check(magic_set(("127.0.0.1", port), "k", "v", cache="a"), "the cache works despite the warnings")
        # lastmod=1 is implemented: the stats extension shows the time of the last write.
        reply, _ = request(("127.0.0.1", port), magic_req([("cmd", "stats"), ("cache", "a")]))
        stats = dict(parse_vars(reply[4:4 + int.from_bytes(reply[1:3], "little")]))
        check(t0 <= int(stats[b"last_modified_at"]) <= time.time() + 1, f"last_modified_at of a lastmod cache: {stats}")
    # bitmap mode is implemented (issue 14): no warning for cache a; blocks= without it is ignored, as in uWSGI.
    want = [('cache "c"', "blocks=20")]
    for cache, what in want:
        check(any(cache in w and what in w for w in warnings), f"no warning for {cache} {what}: {warnings}")
    check_eq(len(warnings), len(want), f"warning lines: {warnings}")
    with Server(["--socket", f"127.0.0.1:{port}", "--cache2", "name=b,items=10,blocks=10"], workers=1) as srv:
        check("WARNING" not in srv.log(), f"warnings without an unsupported feature: {srv.log_tail()}")


ORACLE_INI = """[uwsgi]
; a comment
  # an indented comment
project = demo
ini = %dinner/base.ini
chdir = %d
name-is = %n
full = %p
parent = %c
file = %s
ext = %e
percent = 100%%
harakiri = %(processes)0
base = /srv/%(project)
mb = %(2 * 1024 * 1024)
sum = %(processes + 1)
home-from-env = $(ORACLE_HOME)
backlog = @({backlog})
root = %(project-root)
if-env = ORACLE_ON
env = ORACLE=%(_)
endif =
if-not-env = ORACLE_ON
env = NEVER=1
endif
if-opt = project=demo
pythonpath = %(base)/%(_)
endif
if-env = ORACLE_OFF
buffer-size = 8192
endif
if-not-env = ORACLE_OFF
buffer-size = 16384
endif
for = a b c
socket-name = /run/%(_).sock
endfor
for-times = 2
worker-%(_) = n%(_)
endfor
if-exists = {backlog}
exists = %(_)
endif
if-dir = {backlog}
never = %(_)
endif
typo-key = kept  # as written
master
thunder-lock =
"""


def resolved_config(output):
    """The lines between uWSGI's ';uWSGI instance configuration' and ';end of configuration'."""
    lines = output.splitlines()
    start = lines.index(";uWSGI instance configuration")
    return lines[start:lines.index(";end of configuration", start) + 1]


def test_ini_language_matches_uwsgi():
    """uWSGI 2.0.21 and ours log the same resolved configuration (--show-config: every key in order,
    placeholders expanded) for an ini using magic variables, placeholders with maths, $(ENV), @(file),
    if/else/for blocks, an included ini and UWSGI_* variables; both then exit 1 (no socket)."""
    need_uwsgi(plugins=())
    tmp = make_temp_dir()
    conf = os.path.join(tmp, "conf")
    os.makedirs(os.path.join(conf, "inner"))
    backlog = write(os.path.join(tmp, "backlog.txt"), "128\n")
    write(os.path.join(conf, "inner", "base.ini"), "[uwsgi]\nbase-dir = %d\nbase-name = %n\n")
    app = write(os.path.join(conf, "app.ini"), ORACLE_INI.format(backlog=backlog))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "ORACLE_HOME": "/home/oracle", "ORACLE_ON": "yes",
           "UWSGI_PROCESSES": "3", "UWSGI_PROJECT_ROOT": "/srv/root"}
    outputs = {}
    for name, binary in (("uWSGI", UWSGI), ("ours", SERVER_BIN)):
        proc = subprocess.run([binary, "--ini", app, "--show-config"], env=env, cwd=tmp, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=20)
        output = proc.stdout.decode("utf-8", "replace")
        check_eq(proc.returncode, 1, f"{name} exit status without a socket\n{output[-3000:]}")
        check(";end of configuration" in output, f"{name} printed no configuration\n{output[-3000:]}")
        outputs[name] = resolved_config(output)
    theirs, ours = outputs["uWSGI"], outputs["ours"]
    for i, (a, b) in enumerate(zip(theirs, ours)):
        check_eq(b, a, f"line {i} of the resolved configuration (uWSGI's, then ours)")
    check_eq(len(ours), len(theirs), "number of lines of the resolved configuration")
    # The values the test is about, so that a bug shared by both cannot pass unnoticed.
    for line in ("processes = 3", "harakiri = 30", f"chdir = {os.path.realpath(conf)}/", "name-is = app",
                 f"base-dir = {os.path.realpath(conf)}/inner/", "percent = 100%", "mb = 2097152", "sum = 4",
                 "home-from-env = /home/oracle", "backlog = 128", "root = /srv/root", "env = ORACLE=yes",
                 "pythonpath = /srv/demo/demo", "buffer-size = 16384", "socket-name = /run/c.sock",
                 "worker-%(_) = n2", f"exists = {backlog}", "typo-key = kept  # as written", "master = "):
        check(line in ours, f"{line!r} in the resolved configuration: {ours}")
    check("env = NEVER=1" not in ours and not any(line.startswith("never") for line in ours), "false blocks kept")


def test_uwsgi_style_ini_starts_with_warnings():
    """A uWSGI-style ini (magic variables, an unknown key used as a placeholder, a typo, flags as bare keys,
    comments after numbers, options that have no effect here, processes from UWSGI_PROCESSES) starts and
    serves; the typo and each no-effect option get one WARNING line, the placeholder none."""
    tmp = make_temp_dir()
    port = free_port()
    ini = write(os.path.join(tmp, "site.ini"), f"""[uwsgi]
project = itproj
socket = 127.0.0.1:{port}
cache = 100
pidfile = %d%(project).pid
master
harakiri = 60  # seconds
hunder-lock = true
thunder-lock = true
enable-threads = true
die-on-term = true
plugins = python3
""")
    with Server(["--ini", ini], workers=3, ready_addrs=[("127.0.0.1", port)],
                env={"UWSGI_PROCESSES": "3"}) as srv:
        serve_check(srv, port)
        with open(os.path.join(tmp, "itproj.pid")) as f:
            check_eq(int(f.read()), srv.pid, "pidfile named through %d and %(project)")
        warnings = [line for line in srv.log().splitlines() if "WARNING" in line]
    check(any(f"unknown option --hunder-lock ({ini}:8); did you mean --thunder-lock?" in w for w in warnings),
          f"a WARNING for the typo: {warnings}")
    for option in ("thunder-lock", "enable-threads", "die-on-term", "plugins"):
        check_eq(sum(f"--{option} (" in w for w in warnings), 1, f"WARNING lines for --{option}: {warnings}")
    check(not any("project" in w for w in warnings), f"no WARNING for a key used as a placeholder: {warnings}")
    check_eq(len(warnings), 5, f"WARNING lines: {warnings}")


if __name__ == "__main__":
    run_tests([test_same_geometry_from_cli_ini_toml, test_ini_section_and_precedence,
               test_bad_configs_exit_1_before_binding, test_unsupported_uwsgi_cache_features_are_announced,
               test_ini_language_matches_uwsgi, test_uwsgi_style_ini_starts_with_warnings],
              budget=80)
