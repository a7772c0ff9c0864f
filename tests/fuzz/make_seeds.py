#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/seed-*) from the byte examples
of docs/protocol.md and /work/shared/reference/uwsgi-cache-examples.md (uWSGI 2.0.21, verified live) and
from the inputs the unit tests use. Regression inputs (crash-*, named after the bug) are kept by hand. fuzz_store reads a script decoded by
FuzzedDataProvider, not a file format: its corpus is a minimised set of the fuzzer's own inputs.
Usage: tests/fuzz/make_seeds.py (rewrites the seed-* files only)."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def hexbytes(text):
    return bytes.fromhex(text.replace("\n", " "))


def u16(n):
    return struct.pack("<H", n)


def var(key, value):
    key, value = key.encode() if isinstance(key, str) else key, value.encode() if isinstance(value, str) else value
    return u16(len(key)) + key + u16(len(value)) + value


def vars_(*pairs):
    return b"".join(var(k, v) for k, v in pairs)


def packet(mod1, mod2, payload, body=b""):
    return bytes([mod1]) + u16(len(payload)) + bytes([mod2]) + payload + body


def array(*items):
    return b"".join(u16(len(i)) + i for i in (x.encode() if isinstance(x, str) else x for x in items))


# Requests of modifier1 111 (examples §1), and the WSGI requests of §4 and §5.
CACHE_REQUESTS = {
    "get": hexbytes("6f 02 00 00 6b 31"),
    "set-array": hexbytes("6f 0a 00 01 02 00 6b 32 04 00 76 61 6c 32"),
    "del": hexbytes("6f 02 00 02 6b 32"),
    "dict-get-key": hexbytes("6f 09 00 03 03 00 6b 65 79 02 00 6b 31"),
    "dict-get-get": hexbytes("6f 09 00 03 03 00 67 65 74 02 00 6b 31"),
    "stream-get": hexbytes("6f 02 00 05 6b 31"),
    "dump-default": hexbytes("6f 00 00 06"),
    "dump-small": hexbytes("6f 05 00 06 73 6d 61 6c 6c"),
    "magic-get": hexbytes("6f 13 00 11 03 00 63 6d 64 03 00 67 65 74 03 00 6b 65 79 02 00 6b 31"),
    "magic-exists": hexbytes("6f 16 00 11 03 00 63 6d 64 06 00 65 78 69 73 74 73 03 00 6b 65 79 02 00 6b 31"),
    "magic-set": hexbytes("6f 1c 00 11 03 00 63 6d 64 03 00 73 65 74 03 00 6b 65 79 02 00 6d 31 04 00 73 69 7a 65"
                          " 01 00 35 68 65 6c 6c 6f"),
    "magic-update-expires": hexbytes(
        "6f 2d 00 11 03 00 63 6d 64 06 00 75 70 64 61 74 65 03 00 6b 65 79 02 00 6d 31 04 00 73 69 7a 65 01 00 35"
        " 07 00 65 78 70 69 72 65 73 03 00 31 30 30 48 45 4c 4c 4f"),
    "magic-get-small": hexbytes("6f 21 00 11 03 00 63 6d 64 03 00 67 65 74 03 00 6b 65 79 02 00 6b 31 05 00 63 61"
                                " 63 68 65 05 00 73 6d 61 6c 6c"),
    "magic-del": hexbytes("6f 13 00 11 03 00 63 6d 64 03 00 64 65 6c 03 00 6b 65 79 02 00 6d 31"),
    "magic-clear": hexbytes("6f 1a 00 11 03 00 63 6d 64 05 00 63 6c 65 61 72 05 00 63 61 63 68 65 05 00 73 6d 61"
                            " 6c 6c"),
    # Our client's set (size twice, as uWSGI's remote client), keepalive, math and our extensions.
    "magic-set-client": packet(111, 17, vars_(("cmd", "set"), ("key", "kk"), ("size", "3"), ("expires", "60"),
                                              ("size", "3"), ("cache", "")), b"VAL"),
    "magic-keepalive-get": packet(111, 17, vars_(("cmd", "get"), ("key", "k1"), ("cache", ""), ("keepalive", "1"))),
    "magic-inc": packet(111, 17, vars_(("cmd", "inc"), ("key", "n"), ("size", "8"), ("cache", "")),
                        struct.pack("<q", 7)),
    "magic-keys": packet(111, 17, vars_(("cmd", "keys"), ("cache", ""))),
    "magic-stats": packet(111, 17, vars_(("cmd", "stats"), ("cache", "small"))),
}
APP_REQUESTS = {
    "wsgi-get": hexbytes("00 3e 00 00 0e 00 52 45 51 55 45 53 54 5f 4d 45 54 48 4f 44 03 00 47 45 54 09 00 50 41"
                         " 54 48 5f 49 4e 46 4f 01 00 2f 0f 00 53 45 52 56 45 52 5f 50 52 4f 54 4f 43 4f 4c 08 00"
                         " 48 54 54 50 2f 31 2e 31"),
    "nginx-post": packet(0, 0, vars_(("QUERY_STRING", "q=1"), ("REQUEST_METHOD", "POST"),
                                     ("CONTENT_TYPE", "application/x-www-form-urlencoded"), ("CONTENT_LENGTH", "7"),
                                     ("REQUEST_URI", "/rec/path?q=1"), ("PATH_INFO", "/rec/path"),
                                     ("SERVER_PROTOCOL", "HTTP/1.1"), ("HTTP_HOST", "127.0.0.1")), b"a=1&b=2"),
}

HTTP = {
    "get": b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    "pipelined": b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
    "chunked": b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value;flag\r\nhello\r\n"
               b"0000A ; q=\"x\"\r\n0123456789\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n",
    "expect": b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\nabc",
    "http10-keepalive": b"GET /x?y=1 HTTP/1.0\r\nConnection: keep-alive\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
    "percent": b"GET /a%20b/../c/./d HTTP/1.1\r\nHost: h:8080\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
    "absolute-uri": b"GET http://example.com/p HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "bad-cl": b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2, 2\r\ncontent-length: 2\r\n\r\nok",
    "h2-preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    "app-response": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nX-Test: yes\r\n\r\nhello",
    "app-cgi": b"Status: 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nnope",
    "app-cached": b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\ncached-body",
}


def our_image(*records):
    out = b"UCDUMP1\n"
    for key, value, expires in records:
        out += struct.pack("<HIQ", len(key), len(value), expires) + key + value
    return out


def uwsgi_image(items, blocksize, keysize, slots):
    """uWSGI 2.0's item table then data blocks (examples §8); slots: {slot: (key, value, expires)}."""
    table = bytearray((88 + keysize) * items)
    data = bytearray(blocksize * items)
    djb = lambda k: (lambda h: [h := ((h * 33) ^ (b - 256 if b > 127 else b)) & 0xFFFFFFFFFFFFFFFF for b in k][-1])(5381)
    for slot, (key, value, expires) in slots.items():
        at = slot * (88 + keysize)
        struct.pack_into("<QQQQQQ", table, at, 0, len(key), djb(key) & 0xFFFFFFFF, len(value), slot, expires)
        table[at + 88:at + 88 + len(key)] = key
        data[slot * blocksize:slot * blocksize + len(value)] = value
    return bytes(table + data)


def main():
    corpora = {}
    corpora["uwsgi_packet"] = {**CACHE_REQUESTS, **APP_REQUESTS,
                               "udp-set": hexbytes("6f 0b 00 0a 01 00 6b 03 00 76 61 6c 01 00 30")}
    corpora["magic"] = CACHE_REQUESTS
    corpora["http"] = HTTP
    small = uwsgi_image(4, 16, 8, {3: (b"ab", b"XYZ", 0)})
    two = uwsgi_image(4, 32, 16, {3: (b"alpha", b"one", 0), 2: (b"beta", b"two", 1795642449)})
    corpora["dump_image"] = {
        "ours": our_image((b"k1", b"value1", 0), (b"m1", b"HELLO", 1795642449)),
        "ours-empty": our_image(),
        "uwsgi-small": u16(4) + u16(16) + small,
        "uwsgi-two": u16(4) + u16(32) + two,
    }
    corpora["udp_sync"] = {
        "set": hexbytes("6f 0b 00 0a 01 00 6b 03 00 76 61 6c 01 00 30"),
        "set-expires": hexbytes("6f 16 00 0a 02 00 6b 32 04 00 76 61 6c 32 0a 00 31 37 39 35 36 34 32 30 36 35"),
        "update": hexbytes("6f 0a 00 0a 01 00 6b 02 00 76 33 01 00 30"),
        "del": hexbytes("6f 03 00 0b 01 00 6b"),
        "del-u2": hexbytes("6f 04 00 0b 02 00 75 32"),
        "inc": hexbytes("6f 10 00 0a 01 00 6e 08 00 07 00 00 00 00 00 00 00 01 00 30"),
        "set-far-future": packet(111, 10, array("k", "v", "99999999999")),
    }
    corpora["config_file"] = {
        "ini": b"\x00# a comment\n; another comment\nprocesses = 99\n[uwsgi]\nprocesses = 3\nworkers = 4\n"
               b"socket = :3031\nsocket=/tmp/app.sock\n  master = off  \nlazy-apps = yes\nlog-debug = 1\n"
               b"cache-no-expire = on\ncache-blocksize = 4k\nenv = A=1\n\n[other]\nprocesses = 7\n",
        "ini-cache2": b"\x00[uwsgi]\ncache = 100\ncache2 = name=small,items=4,blocksize=16,keysize=8\n"
                      b"cache2 = name=u,items=10,nodes=127.0.0.1:4001,udp=127.0.0.1:4002\n",
        "toml": b"\x01processes = 4\nsocket = [\":3031\", \"/tmp/a.sock\"]\ncache-blocksize = \"8k\"\n\n[uwsgi]\n"
                b"master = false\nlazy-apps = \"yes\"\nlog-debug = 1\ncache = 1000\nhttp-socket = \":8080\"\n"
                b"chmod-socket = 660\n\n[other]\nprocesses = 9\n",
        "toml-cache2": b"\x01[uwsgi]\ncache2 = [\"name=a,items=3\", \"name=b,items=5,purge_lru=1\"]\n",
    }
    corpora["cache2"] = {
        "all-keys": b"name=sessions,items=1000,blocksize=4k,blocks=2000,hash=murmur2,hashsize=512,keysize=128,"
                    b"store=/var/cache/s.store,store_sync=5,store_delete=1,purge_lru=1,ignore_full=1,math_initial=-5,"
                    b"no_expire=1,lazy_expire=1,sweep_on_full=30,clear_on_full=1,lastmod=1,bitmap=1,"
                    b"node=10.0.0.1:4000;10.0.0.2:4000,udp=:4000,sync=10.0.0.3:3031",
        "aliases": b"name=a,max_items=10,hash_size=64,key_size=32,storesync=2,storedelete=x,lru=y,lazy=z,"
                   b"nodes=1.2.3.4:5,udp_servers=:6",
        "escapes": b"name=a\\,b,items=3,store=/tmp/x\\=y\\\\z",
        "spaces": b" name = x , items = 5 ",
        "example-small": b"name=small,items=4,blocksize=16,keysize=8,store=ex.cache",
    }
    status_ok = var("status", "ok")
    corpora["client"] = {
        "get": b"\x00" + hexbytes("6f 15 00 11 06 00 73 74 61 74 75 73 02 00 6f 6b 04 00 73 69 7a 65 01 00 36 76 61 6c"
                                  " 75 65 31"),
        "get-expires": b"\x00" + hexbytes("6f 2a 00 11 06 00 73 74 61 74 75 73 02 00 6f 6b 04 00 73 69 7a 65 01 00 35"
                                          " 07 00 65 78 70 69 72 65 73 0a 00 31 37 39 35 36 34 32 34 34 39 48 45 4c 4c 4f"),
        "keys": b"\x01" + packet(111, 17, status_ok + var("size", "10") + var("count", "2")) + array("k1", "m1x"),
        "stats": b"\x02" + packet(111, 17, status_ok + var("items", "2") + var("capacity", "10")),
        "math": b"\x03" + packet(111, 17, status_ok + var("value", "12")),
        "set": b"\x04" + hexbytes("6f 0c 00 11 06 00 73 74 61 74 75 73 02 00 6f 6b"),
        "exists-notfound": b"\x05" + packet(111, 17, var("status", "notfound")),
        "sync-ours": b"\x06" + packet(111, 7, vars_(("items", "8"), ("blocksize", "64"), ("keysize", "32"),
                                                     ("format", "ucached-items-1"), ("count", "2"), ("bytes", "47")))
                     + our_image((b"k1", b"value1", 0), (b"m1", b"HELLO", 0)),
        "sync-uwsgi": b"\x06" + hexbytes("6f 19 00 07 05 00 69 74 65 6d 73 01 00 34 09 00 62 6c 6f 63 6b 73 69 7a 65 02"
                                         " 00 31 36") + small,
    }
    for target, seeds in corpora.items():
        folder = os.path.join(HERE, "corpus", target)
        os.makedirs(folder, exist_ok=True)
        for old in os.listdir(folder):
            if old.startswith("seed-"):
                os.remove(os.path.join(folder, old))
        for name, data in seeds.items():
            with open(os.path.join(folder, "seed-" + name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
