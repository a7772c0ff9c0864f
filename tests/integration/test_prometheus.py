#!/usr/bin/env python3
"""Prometheus metrics: /metrics on the stats HTTP socket (--stats-http) and, with --metrics, on the
application's --http-socket. The text parses with prometheus_client.parser (Debian's
python3-prometheus-client) into the families docs/operations.md lists, with values that match what the
test did (requests, cache hits and misses, histogram counts); and a real Prometheus (Debian's package),
started with a scrape config pointing at the server, scrapes it: its HTTP API returns a sample of
ucached_requests_total equal to the requests the test sent."""
import json
import os
import shutil
import subprocess
import sys
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (start_hosted, _child_setup, check, check_eq, free_port, magic_get, magic_set,
                     make_temp_dir, peer_missing, run_tests, wait_until)

HOST = "127.0.0.1"
APP = r'''
def application(environ, start_response):
    if environ["PATH_INFO"] == "/missing":
        start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
        return [b""]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "3")])
    return [b"ok\n"]
'''

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    text_string_to_metric_families = None

_shared = {}


def server():
    if "srv" not in _shared:
        tmp = make_temp_dir("prom-")
        app = os.path.join(tmp, "app.py")
        with open(app, "w") as f:
            f.write(APP)
        sock, http, stats = free_port(), free_port(), free_port()
        args = ["--processes", "2", "--socket", f"{HOST}:{sock}", "--http-socket", f"{HOST}:{http}", "--stats",
                f"{HOST}:{stats}", "--stats-http", "--metrics", "--cache", "100", "--wsgi-file", app,
                "--disable-logging"]
        srv = start_hosted(args, 2, [(HOST, sock), (HOST, http), (HOST, stats)])
        _shared.update(srv=srv, sock=(HOST, sock), http=http, stats=stats, tmp=tmp)
    return _shared


def fetch(port, path):
    with urllib.request.urlopen(f"http://{HOST}:{port}{path}", timeout=10) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def families(text):
    if text_string_to_metric_families is None:
        peer_missing("prometheus_client is not installed for /usr/bin/python3 (apt-get install "
                     "python3-prometheus-client)")
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(fams, family, name, **labels):
    for sample in fams[family].samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return sample.value
    raise AssertionError(f"no sample {name}{labels} in {family}")


def test_metrics_parse_and_count():
    s = server()
    _, _, text = fetch(s["stats"], "/metrics")
    before = families(text)
    base = value(before, "ucached_requests", "ucached_requests_total")
    for i in range(7):
        urllib.request.urlopen(f"http://{HOST}:{s['http']}/p{i}", timeout=10).read()
    try:
        urllib.request.urlopen(f"http://{HOST}:{s['http']}/missing", timeout=10).read()
    except urllib.error.HTTPError as e:
        check_eq(e.code, 404, "the missing page")
    magic_set(s["sock"], "k1", b"v1")
    check_eq(magic_get(s["sock"], "k1"), b"v1", "a cache hit")
    magic_get(s["sock"], "nope")
    status, ctype, text = fetch(s["stats"], "/metrics")
    check(ctype.startswith("text/plain; version=0.0.4"), f"content type {ctype}")
    fams = families(text)
    check_eq(value(fams, "ucached_requests", "ucached_requests_total") - base, 8, "application requests counted")
    check_eq(fams["ucached_requests"].type, "counter", "requests_total is a counter")
    workers_sum = sum(value(fams, "ucached_worker_requests", "ucached_worker_requests_total", worker=w)
                      for w in ("1", "2"))
    check_eq(workers_sum, value(fams, "ucached_requests", "ucached_requests_total"), "per worker sums to total")
    check_eq(value(fams, "ucached_cache_hits", "ucached_cache_hits_total", cache="default"), 1, "cache hits")
    check_eq(value(fams, "ucached_cache_misses", "ucached_cache_misses_total", cache="default"), 1, "cache misses")
    check_eq(value(fams, "ucached_cache_items", "ucached_cache_items", cache="default"), 1, "cache items")
    responses = sum(value(fams, "ucached_worker_responses", "ucached_worker_responses_total", worker=w,
                          **{"class": "4xx"}) for w in ("1", "2"))
    check_eq(responses, 1, "the 404 counted as 4xx")
    h = fams["ucached_app_request_duration_seconds"]
    check_eq(h.type, "histogram", "app duration is a histogram")
    count = value(fams, "ucached_app_request_duration_seconds", "ucached_app_request_duration_seconds_count",
                  app="0")
    check_eq(count, value(fams, "ucached_requests", "ucached_requests_total"), "histogram count = requests")
    inf = value(fams, "ucached_app_request_duration_seconds", "ucached_app_request_duration_seconds_bucket",
                app="0", le="+Inf")
    check_eq(inf, count, "+Inf bucket = count")
    # The cache commands: magic (modifier2 17) twice, each with its histogram.
    magic = value(fams, "ucached_cache_request_duration_seconds", "ucached_cache_request_duration_seconds_count",
                  command="magic")
    check_eq(magic, 3, "three magic cache requests timed")
    for family in ("ucached_listen_queue", "ucached_worker_respawns", "ucached_worker_harakiri",
                   "ucached_cache_store_syncs", "ucached_cache_store_sync_seconds", "ucached_worker_resident_memory_bytes",
                   "ucached_worker_busy", "ucached_cache_evictions", "ucached_cache_expirations"):
        check(family in fams, f"family {family} present")
    # --metrics: the same text on the application's HTTP socket.
    status, ctype, text = fetch(s["http"], "/metrics")
    check_eq(status, 200, "/metrics on --http-socket")
    check("ucached_requests" in families(text), "metrics parse from the application socket")


def test_a_real_prometheus_scrapes_the_requests():
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        peer_missing("prometheus is not installed (apt-get install prometheus)")
    s = server()
    tmp = make_temp_dir("prom-real-")
    web = free_port()
    config = os.path.join(tmp, "prometheus.yml")
    with open(config, "w") as f:
        f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                "scrape_configs:\n  - job_name: ucached\n    metrics_path: /metrics\n"
                f"    static_configs:\n      - targets: ['{HOST}:{s['stats']}']\n")
    proc = subprocess.Popen([prometheus, f"--config.file={config}", f"--storage.tsdb.path={tmp}/data",
                             f"--web.listen-address={HOST}:{web}"], stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(tmp, "prometheus.log"), "wb"), start_new_session=True,
                            preexec_fn=_child_setup())
    try:
        for i in range(5):
            urllib.request.urlopen(f"http://{HOST}:{s['http']}/scraped{i}", timeout=10).read()
        _, _, text = fetch(s["stats"], "/metrics")
        sent = value(families(text), "ucached_requests", "ucached_requests_total")
        query = urllib.parse.urlencode({"query": "ucached_requests_total"})
        last = [None]

        def scraped():
            try:
                with urllib.request.urlopen(f"http://{HOST}:{web}/api/v1/query?{query}", timeout=2) as r:
                    answer = json.loads(r.read())
            except OSError:
                return False
            last[0] = answer
            results = answer.get("data", {}).get("result", [])
            return bool(results) and float(results[0]["value"][1]) == sent
        ok = wait_until(scraped, 40, interval=0.2)
        if not ok:
            with open(os.path.join(tmp, "prometheus.log"), "rb") as f:
                print(f.read()[-3000:].decode("utf-8", "replace"))
        check(ok, f"Prometheus scraped ucached_requests_total = {sent}: last answer {last[0]}")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


if __name__ == "__main__":
    run_tests([test_metrics_parse_and_count, test_a_real_prometheus_scrapes_the_requests], budget=90)
