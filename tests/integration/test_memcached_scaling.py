#!/usr/bin/env python3
"""Scale-out over the memcached protocol, three of our servers on loopback:
- twemproxy (Debian's nutcracker, ketama, auto_eject_hosts) in front: 10,000 keys written through the
  proxy land each on exactly one node and all read back through it; one node is killed, the proxy ejects
  it (its stats say so) and every key of the other nodes still reads;
- Django's PyMemcacheCache with LOCATION listing the three nodes: the keys spread over all three, each
  on one node, and read, count and delete through Django."""
import json
import os
import socket
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import check, check_eq, free_port, make_temp_dir, peer_missing, run_tests, wait_until  # noqa: E402
from memcached_peer import can_connect, ours  # noqa: E402

NUTCRACKER = "/usr/sbin/nutcracker"


def pymemcache_client(addr):
    try:
        from pymemcache.client.base import Client
    except ImportError:
        peer_missing("pymemcache is not installed (apt-get install python3-pymemcache)")
    return Client(addr, connect_timeout=5, timeout=5)


def holders(nodes, keys):
    """For each key, the indexes of the nodes holding it (read directly from each node)."""
    where = {k: [] for k in keys}
    for i, node in enumerate(nodes):
        c = pymemcache_client(node.addr)
        for start in range(0, len(keys), 200):
            for k in c.get_many(keys[start:start + 200]):
                where[k].append(i)
        c.close()
    return where


def nutcracker_stats(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return json.loads(data)


def test_twemproxy_ketama():
    binary = NUTCRACKER if os.path.exists(NUTCRACKER) else "/usr/bin/nutcracker"
    if not os.path.exists(binary):
        peer_missing("nutcracker (twemproxy) is not installed (apt-get install nutcracker)")
    tmp = make_temp_dir("twem-")
    nodes = [ours(workers=1, items=20000) for _ in range(3)]
    for n in nodes:
        n.start()
    proxy_port, stats_port = free_port(), free_port()
    conf = os.path.join(tmp, "nutcracker.yml")
    with open(conf, "w") as f:
        f.write(f"""pool:
  listen: 127.0.0.1:{proxy_port}
  hash: fnv1a_64
  distribution: ketama
  auto_eject_hosts: true
  server_retry_timeout: 600000
  server_failure_limit: 1
  timeout: 2000
  servers:
""" + "".join(f"    - 127.0.0.1:{n.addr[1]}:1 node{i}\n" for i, n in enumerate(nodes)))
    proxy = subprocess.Popen([binary, "-c", conf, "-s", str(stats_port), "-a", "127.0.0.1", "-i", "100",
                              "-o", os.path.join(tmp, "nutcracker.log"), "-p", os.path.join(tmp, "pid")],
                             stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        check(wait_until(lambda: can_connect(("127.0.0.1", proxy_port)), 5.0), "nutcracker listens")
        client = pymemcache_client(("127.0.0.1", proxy_port))
        keys = [f"key:{i}" for i in range(10000)]
        for start in range(0, len(keys), 500):
            failed = client.set_many({k: k.encode() for k in keys[start:start + 500]}, noreply=False)
            check_eq(failed, [], "set_many through the proxy")
        where = holders(nodes, keys)
        counts = [sum(1 for w in where.values() if w == [i]) for i in range(3)]
        check(all(len(w) == 1 for w in where.values()), "every key is on exactly one node")
        check(all(c > 1500 for c in counts), f"ketama spreads the keys: {counts}")
        got = {}
        for start in range(0, len(keys), 500):
            got.update(client.get_many(keys[start:start + 500]))
        check_eq(len(got), len(keys), "all keys read back through the proxy")
        check(all(got[k] == k.encode() for k in keys), "with their values")

        # Kill node 0: a request that maps to it fails once, then the proxy ejects it.
        nodes[0].kill_all()
        dead = [k for k, w in where.items() if w == [0]]
        for k in dead[:20]:
            try:
                client.get(k)
            except Exception:  # noqa: BLE001 (the proxy's error for the dead node; the point is what follows)
                client.close()

        def ejected():
            stats = nutcracker_stats(stats_port)
            return stats["pool"]["server_ejects"] >= 1

        check(wait_until(ejected, 5.0), "the proxy ejected the dead node (server_ejects)")
        alive = [k for k, w in where.items() if w != [0]]
        got = {}
        for start in range(0, len(alive), 500):
            got.update(client.get_many(alive[start:start + 500]))
        check_eq(len(got), len(alive), "every key of the live nodes still reads through the proxy")
        # The dead node's keys now map to the others: misses, and writable again.
        check_eq(client.get(dead[0]), None, "a key of the dead node is a miss")
        check(client.set(dead[0], b"again", noreply=False), "and can be written again")
        check_eq(client.get(dead[0]), b"again", "on a live node")
        client.close()
    finally:
        proxy.kill()
        proxy.wait(timeout=5)
        for n in nodes:
            n.kill_all()


def test_django_three_nodes():
    try:
        import django
        from django.conf import settings
    except ImportError:
        peer_missing("Django is not installed (apt-get install python3-django)")
    nodes = [ours(workers=1) for _ in range(3)]
    for n in nodes:
        n.start()
    try:
        settings.configure(CACHES={"default": {
            "BACKEND": "django.core.cache.backends.memcached.PyMemcacheCache",
            "LOCATION": [f"127.0.0.1:{n.addr[1]}" for n in nodes],
        }})
        django.setup()
        from django.core.cache import cache
        keys = [f"page{i}" for i in range(300)]
        cache.set_many({k: {"n": i} for i, k in enumerate(keys)}, timeout=300)
        got = cache.get_many(keys)
        check_eq(len(got), 300, "get_many over three nodes")
        check(all(got[k] == {"n": i} for i, k in enumerate(keys)), "values round-trip (pickled, flags)")
        check(cache.add("page0", "x") is False and cache.add("fresh", "x") is True, "add")
        cache.set("counter", 10)
        check_eq(cache.incr("counter", 5), 15, "incr")
        check_eq(cache.decr("counter", 20), 0, "decr stops at 0 (memcached)")
        check(cache.touch("page1", 100), "touch")
        check(cache.delete("page2") and cache.get("page2") is None, "delete")
        # Django's keys are prefixed ":1:" (KEY_PREFIX, VERSION): read the nodes directly.
        raw = [f":1:{k}" for k in keys]
        where = holders(nodes, raw)
        per_node = [sum(1 for w in where.values() if w == [i]) for i in range(3)]
        check(all(len(w) <= 1 for w in where.values()), "no key on two nodes")
        check(all(c > 30 for c in per_node), f"the keys spread over the three nodes: {per_node}")
        cache.clear()
        check_eq(cache.get("page0"), None, "clear (flush_all on every node)")
    finally:
        for n in nodes:
            n.kill_all()


if __name__ == "__main__":
    run_tests([test_twemproxy_ketama, test_django_three_nodes], budget=150)
