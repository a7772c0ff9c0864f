#!/usr/bin/env python3
"""The real uwsgitop 0.12 (shared/vendor/uwsgitop, unmodified, run by Debian's python3) in tmux against a
loaded server: its screen shows every worker's pid with its request count, the server's total, and an
RPS that is the request delta between two of its refreshes over their interval (1 to 2 s).
UWSGITOP_CAPTURE=FILE keeps the last screen (docs/operations.md shows one)."""
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (start_hosted, check, check_eq, connect, free_port, make_temp_dir, peer_missing,
                     read_reply, run_tests, wait_until)

HOST = "127.0.0.1"
UWSGITOP_CANDIDATES = [os.path.join(os.environ.get("SOURCE_DIR", ""), "..", "..", "shared", "vendor", "uwsgitop",
                                    "uwsgitop"), "/work/shared/vendor/uwsgitop/uwsgitop"]

APP = r'''
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]
'''

HEADER_RE = re.compile(r"^uwsgi-\S+ - (.{24}) - req: (\d+) - RPS: (\d+) - lq: (\d+) - tx: \S+")


def uwsgitop_path():
    for path in UWSGITOP_CANDIDATES:
        if os.path.isfile(path):
            return os.path.abspath(path)
    peer_missing("uwsgitop (shared/vendor/uwsgitop/uwsgitop) not found")


def read_stats(addr):
    s = connect(addr, 5)
    try:
        data, how = read_reply(s, 5)
    finally:
        s.close()
    return json.loads(data)


class Screen:
    def __init__(self, session):
        self.session = session

    def capture(self):
        out = subprocess.run(["tmux", "capture-pane", "-p", "-t", self.session], capture_output=True, text=True,
                             timeout=5)
        return out.stdout

    @staticmethod
    def parse(text):
        """(header match, {pid: row fields}) or (None, {})."""
        lines = text.splitlines()
        if not lines:
            return None, {}
        header = HEADER_RE.match(lines[0])
        rows = {}
        for line in lines[3:]:
            fields = line.split()
            if len(fields) >= 16 and fields[0].isdigit() and fields[2].isdigit():
                rows[int(fields[2])] = fields
        return header, rows


def load(port, stop, counter, limit=50000, seconds=30):
    """Keep-alive GETs until `stop` is set (bounded in count and time)."""
    deadline = time.monotonic() + seconds
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        while not stop.is_set() and counter[0] < limit and time.monotonic() < deadline:
            conn.request("GET", f"/load{counter[0]}")
            response = conn.getresponse()
            response.read()
            check_eq(response.status, 200, "load request status")
            counter[0] += 1
    finally:
        conn.close()


def test_uwsgitop_shows_the_loaded_workers():
    top = uwsgitop_path()
    if shutil.which("tmux") is None:
        peer_missing("tmux is not installed")
    tmp = make_temp_dir("top-")
    app = os.path.join(tmp, "app.py")
    with open(app, "w") as f:
        f.write(APP)
    sock, http, stats = free_port(), free_port(), free_port()
    args = ["--processes", "2", "--socket", f"{HOST}:{sock}", "--http-socket", f"{HOST}:{http}", "--stats",
            f"{HOST}:{stats}", "--wsgi-file", app, "--disable-logging"]
    srv = start_hosted(args, 2, [(HOST, sock), (HOST, http), (HOST, stats)])
    session = f"ucached-top-{os.getpid()}"
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "220", "-y", "30",
                    f"/usr/bin/python3 {top} {HOST}:{stats}"], check=True, timeout=10,
                   env=dict(os.environ, TERM="xterm"))
    screen = Screen(session)
    stop = threading.Event()
    counters = [[0], [0]]
    loaders = [threading.Thread(target=load, args=(http, stop, c), daemon=True) for c in counters]
    try:
        for t in loaders:
            t.start()
        # Two consecutive refreshes (their clocks one or two seconds apart) while loaded: the second's RPS
        # is the request delta over uwsgitop's interval, which lasts 1 s plus its fetch (< 2 s).
        screens = []
        checked = False

        def refreshes():
            nonlocal checked
            header, _ = Screen.parse(screen.capture())
            if header is None:
                return False
            stamp, total, rps = header.group(1), int(header.group(2)), int(header.group(3))
            if not screens or screens[-1][0] != stamp:
                screens.append((stamp, total, rps))
            if len(screens) >= 3:
                (_, t1, _), (_, t2, rps2) = screens[-2], screens[-1]
                delta = t2 - t1
                if delta > 0 and rps2 > 0:
                    check(delta / 2 <= rps2 <= delta, f"RPS {rps2} for {delta} requests between two refreshes")
                    checked = True
            return checked
        check(wait_until(refreshes, 15, interval=0.05), f"uwsgitop shows a loaded server: {screens}\n"
                                                         + screen.capture())
        stop.set()
        for t in loaders:
            t.join(15)
        sent = sum(c[0] for c in counters)
        final = read_stats((HOST, stats))
        check_eq(sum(w["requests"] for w in final["workers"]), sent, "stats total = requests sent")
        last = [""]

        def shows_final():
            last[0] = screen.capture()
            header, rows = Screen.parse(last[0])
            if header is None or int(header.group(2)) != sent:
                return False
            return all(w["pid"] in rows and int(rows[w["pid"]][3]) == w["requests"] for w in final["workers"])
        check(wait_until(shows_final, 10, interval=0.05),
              f"uwsgitop shows every worker's pid and request count ({sent} sent):\n{last[0]}")
        capture = os.environ.get("UWSGITOP_CAPTURE")
        if capture:
            with open(capture, "w") as f:
                f.write(last[0])
        print(last[0])
    finally:
        stop.set()
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, timeout=10)
        srv.kill_all()


if __name__ == "__main__":
    run_tests([test_uwsgitop_shows_the_loaded_workers], budget=60)
