"""Which server nginx's `hash KEY consistent` picks for a key, so that an application can write a page
into the cache of the very node nginx will read it from (docs/scaling.md).

nginx (ngx_http_upstream_hash_module) puts 160 points per unit of weight on a ring for each server:
point j is crc32(HOST NUL PORT PREV), PREV the previous point's value as 4 little-endian bytes (0 first),
HOST and PORT taken from the `server` line exactly as written. A key's crc32 picks the first point at
or after it, wrapping around. Give the servers here exactly as in the upstream block, in any order.

    ring = NginxConsistentHash(["127.0.0.1:3031", "127.0.0.1:3032", ("127.0.0.1:3033", 2)])
    uwsgi.cache_update(uri, page, 60, "@" + ring.node_for(uri))
"""
import bisect
import struct
import zlib

POINTS_PER_WEIGHT = 160


class NginxConsistentHash:
    def __init__(self, servers):
        points = []
        for server in servers:
            weight = 1
            if isinstance(server, tuple):
                server, weight = server
            if server.startswith("unix:"):
                host, port = server[5:], ""
            elif ":" in server:
                host, port = server.rsplit(":", 1)
            else:
                host, port = server, ""
            base = zlib.crc32(host.encode() + b"\0" + port.encode())
            prev = 0
            for _ in range(POINTS_PER_WEIGHT * weight):
                prev = zlib.crc32(struct.pack("<I", prev), base)
                points.append((prev, server))
        points.sort(key=lambda p: p[0])
        unique = []
        for point in points:  # nginx keeps one point per value (the first after its sort)
            if not unique or unique[-1][0] != point[0]:
                unique.append(point)
        self._hashes = [p[0] for p in unique]
        self._servers = [p[1] for p in unique]

    def node_for(self, key):
        if isinstance(key, str):
            key = key.encode()
        i = bisect.bisect_left(self._hashes, zlib.crc32(key))
        return self._servers[i % len(self._servers)]
