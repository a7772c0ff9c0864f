#!/usr/bin/env python3
"""nginx reads pages straight from three nodes' caches (`hash $request_uri consistent` upstreams,
uwsgi_modifier1 111), and the application on any node writes each page into the node nginx will ask,
with python/nginx_chash.py (nginx's ring). A first request is a miss served by the application, the
next ones come from the cache of exactly that node (the page is there and nowhere else, also as read
over the memcached protocol: the same shared memory). A killed node's pages fall back to the
application; the other nodes' pages are still read from their caches."""
import http.client
import os
import signal
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from appnginx import launch, nginx_or_skip  # noqa: E402
from harness import SOURCE_DIR, Server, check, check_eq, free_port, make_temp_dir, run_tests  # noqa: E402
from memcached_peer import Raw, start_hosting_python  # noqa: E402

sys.path.insert(0, os.path.join(SOURCE_DIR, "python"))
from nginx_chash import NginxConsistentHash  # noqa: E402

APP = """\
import os
import sys
import uwsgi
sys.path.insert(0, %(python)r)
from nginx_chash import NginxConsistentHash

RING = NginxConsistentHash(%(nodes)r)

def application(environ, start_response):
    uri = environ["REQUEST_URI"]
    body = ("page %%s from the application\\n" %% uri).encode()
    page = (b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nX-From: cache\\r\\n"
            b"Content-Length: %%d\\r\\n\\r\\n" %% len(body)) + body
    try:  # into the cache of the node nginx will ask for this URI
        uwsgi.cache_update(uri, page, 60, "@" + RING.node_for(uri))
    except Exception:
        pass  # that node is down: the page is served anyway, uncached
    start_response("200 OK", [("Content-Type", "text/plain"), ("X-From", "app")])
    return [body]
"""

CONF = """\
%(user)s
worker_processes 1;
daemon off;
master_process off;
pid %(tmp)s/nginx.pid;
error_log %(tmp)s/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path %(tmp)s/cb; proxy_temp_path %(tmp)s/p; fastcgi_temp_path %(tmp)s/f;
    uwsgi_temp_path %(tmp)s/u; scgi_temp_path %(tmp)s/s;
    # The same servers, written the same way, as the application's ring. max_fails=0 and
    # uwsgi_next_upstream off: a miss (an empty reply, 502 to nginx) must not mark the node down, or
    # nginx would move its keys to another node where the application did not write them.
    upstream cache_nodes {
        hash $request_uri consistent;
%(servers)s
    }
    upstream app_nodes {
%(app_servers)s
    }
    server {
        listen 127.0.0.1:%(port)d;
        location / {
            uwsgi_pass cache_nodes;
            uwsgi_next_upstream off;
            uwsgi_modifier1 111;
            uwsgi_modifier2 3;
            uwsgi_param key $request_uri;
            uwsgi_pass_request_headers off;
            uwsgi_pass_request_body off;
            error_page 502 504 = @app;
        }
        location @app {
            include %(uwsgi_params)s;
            uwsgi_pass app_nodes;
        }
    }
}
"""


def get(port, uri):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", uri)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r.status, r.getheader("X-From"), body


def test_consistent_hash_across_three_nodes():
    nginx_or_skip()
    tmp = make_temp_dir("chash-")
    ports = [free_port() for _ in range(3)]
    mports = [free_port() for _ in range(3)]
    names = [f"127.0.0.1:{p}" for p in ports]
    with open(os.path.join(tmp, "chashapp.py"), "w") as f:
        f.write(APP % {"python": os.path.join(SOURCE_DIR, "python"), "nodes": names})
    nodes = []
    for p, m in zip(ports, mports):
        srv = Server(["--socket", f"127.0.0.1:{p}", "--memcached-socket", f"127.0.0.1:{m}", "--cache", "1000",
                      "--module", "chashapp", "--chdir", tmp, "--processes", "1"], workers=1)
        nodes.append(start_hosting_python(srv))
    port = free_port()
    with open(os.path.join(tmp, "nginx.conf"), "w") as f:
        f.write(CONF % {"user": "user root;" if os.geteuid() == 0 else "", "tmp": tmp, "port": port,
                        "servers": "".join(f"        server {n} max_fails=0;\n" for n in names),
                        "app_servers": "".join(f"        server {n};\n" for n in names),
                        "uwsgi_params": "/etc/nginx/uwsgi_params"})
    started = []  # launch hands nginx over before it waits for the port, so a failed start is stopped too
    try:
        ngx = launch(tmp, os.path.join(tmp, "nginx.conf"), os.path.join(tmp, "error.log"), port, started.append)
        ring = NginxConsistentHash(names)
        uris = [f"/page/{i}?q={i * 7}" for i in range(60)]
        for uri in uris:
            status, source, body = get(port, uri)
            check_eq((status, source), (200, "app"), f"first request for {uri}: the application")
        for uri in uris:
            status, source, body = get(port, uri)
            check_eq((status, source, body), (200, "cache", f"page {uri} from the application\n".encode()),
                     f"second request for {uri}: from the cache")
        # Each page is on the node the ring names and on no other (read over the memcached protocol).
        per_node = [0, 0, 0]
        for uri in uris:
            holders = []
            for i, m in enumerate(mports):
                raw = Raw(("127.0.0.1", m))
                if raw.exchange(b"get " + uri.encode() + b"\r\n") != b"END\r\n":
                    holders.append(i)
                raw.close()
            check_eq(holders, [names.index(ring.node_for(uri))], f"{uri} is only on its node")
            per_node[holders[0]] += 1
        check(all(n > 0 for n in per_node), f"the pages spread over the three nodes: {per_node}")

        # A node dies: its pages come from the application, the others still from their caches.
        nodes[2].kill_all()
        for uri in uris:
            status, source, _ = get(port, uri)
            want = "app" if ring.node_for(uri) == names[2] else "cache"
            check_eq((status, source), (200, want), f"{uri} with node 2 down")
    finally:
        for ngx in started:
            if ngx.poll() is None:
                os.killpg(ngx.pid, signal.SIGKILL)
            ngx.wait(timeout=5)
        for n in nodes:
            n.kill_all()


if __name__ == "__main__":
    run_tests([test_consistent_hash_across_three_nodes], budget=90)
