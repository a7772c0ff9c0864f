#!/usr/bin/env python3
"""A pure-Python client for the uwsgi cache protocol (modifier1 111, modifier2 17, the "magic"
interface uWSGI's own remote cache calls use). Works against this server and against uWSGI 2.0.

Library:   client = CacheClient("127.0.0.1:3031"); client.set(b"k", b"v"); client.get(b"k")
Command:   uwsgi_cache_client.py --server 127.0.0.1:3031 get KEY
           uwsgi_cache_client.py --server 127.0.0.1:3031 set KEY VALUE [--expires N] [--cache NAME]
           (update, del, exists, clear likewise). Exit status: 0 hit/ok, 1 miss/refused, 2 error.
"""
import argparse
import socket
import struct
import sys

MODIFIER_CACHE = 111
MAGIC = 17


def _blob(value):
    return value.encode() if isinstance(value, str) else bytes(value)


def pack_vars(pairs):
    out = bytearray()
    for key, value in pairs:
        key, value = _blob(key), _blob(value)
        out += struct.pack("<H", len(key)) + key + struct.pack("<H", len(value)) + value
    return bytes(out)


def parse_vars(block):
    result, pos = {}, 0
    while pos + 2 <= len(block):
        (klen,) = struct.unpack_from("<H", block, pos)
        pos += 2
        key = block[pos:pos + klen]
        pos += klen
        if pos + 2 > len(block):
            raise ValueError("truncated vars block")
        (vlen,) = struct.unpack_from("<H", block, pos)
        pos += 2
        result[key.decode("latin-1")] = block[pos:pos + vlen]
        pos += vlen
    return result


def packet(modifier1, modifier2, payload):
    if len(payload) > 65535:
        raise ValueError(f"uwsgi packet payload is {len(payload)} bytes, the protocol's limit is 65535")
    return struct.pack("<BHB", modifier1, len(payload), modifier2) + payload


class CacheClient:
    """One connection per request, as uWSGI serves it."""

    def __init__(self, address, timeout=4.0):
        self.address = address
        self.timeout = timeout

    def _connect(self):
        if ":" in self.address and not self.address.startswith(("/", "@")):
            host, port = self.address.rsplit(":", 1)
            return socket.create_connection((host or "127.0.0.1", int(port)), timeout=self.timeout)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        if self.address.startswith("@"):
            # Linux abstract socket, named as uWSGI binds it: NUL, the name, and a trailing NUL.
            sock.connect(b"\0" + self.address[1:].encode() + b"\0")
        else:
            sock.connect(self.address)
        return sock

    def _call(self, pairs, body=b""):
        with self._connect() as sock:
            sock.sendall(packet(MODIFIER_CACHE, MAGIC, pack_vars(pairs)) + body)
            reply = bytearray()
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                reply += chunk
        if len(reply) < 4:
            return None, b""  # uWSGI's way of saying miss or failure: close without a reply
        _, size, _ = struct.unpack_from("<BHB", reply, 0)
        reply_vars = parse_vars(bytes(reply[4:4 + size]))
        if reply_vars.get("status") != b"ok":
            return None, b""
        return reply_vars, bytes(reply[4 + size:])

    def get(self, key, cache=""):
        reply, rest = self._call([("cmd", "get"), ("key", key), ("cache", cache)])
        if reply is None or int(reply.get("size", b"0")) == 0:
            return None
        return rest[: int(reply["size"])]

    def _store(self, cmd, key, value, expires, cache):
        value = _blob(value)
        pairs = [("cmd", cmd), ("key", key), ("size", str(len(value)))]
        if expires:
            pairs.append(("expires", str(int(expires))))
        pairs.append(("cache", cache))
        return self._call(pairs, value)[0] is not None

    def set(self, key, value, expires=0, cache=""):
        return self._store("set", key, value, expires, cache)

    def update(self, key, value, expires=0, cache=""):
        return self._store("update", key, value, expires, cache)

    def delete(self, key, cache=""):
        return self._call([("cmd", "del"), ("key", key), ("cache", cache)])[0] is not None

    def exists(self, key, cache=""):
        return self._call([("cmd", "exists"), ("key", key), ("cache", cache)])[0] is not None

    def clear(self, cache=""):
        return self._call([("cmd", "clear"), ("cache", cache)])[0] is not None


def main(argv=None):
    parser = argparse.ArgumentParser(description="uwsgi cache protocol client (modifier1 111, modifier2 17)")
    parser.add_argument("--server", default="127.0.0.1:3031", help="host:port or a UNIX socket path")
    parser.add_argument("--cache", default="", help="cache name (default: the server's default cache)")
    parser.add_argument("--expires", type=int, default=0, help="seconds, for set/update (0 = never)")
    parser.add_argument("command", choices=["get", "set", "update", "del", "exists", "clear"])
    parser.add_argument("key", nargs="?")
    parser.add_argument("value", nargs="?", help="for set/update; '-' reads standard input")
    args = parser.parse_args(argv)
    client = CacheClient(args.server)
    try:
        if args.command == "clear":
            return 0 if client.clear(args.cache) else 1
        if args.key is None:
            parser.error(f"{args.command} needs a KEY")
        if args.command == "get":
            value = client.get(args.key, args.cache)
            if value is None:
                print(f"miss: {args.key!r}", file=sys.stderr)
                return 1
            sys.stdout.buffer.write(value + (b"\n" if sys.stdout.isatty() else b""))
            return 0
        if args.command in ("set", "update"):
            if args.value is None:
                parser.error(f"{args.command} needs a VALUE ('-' for standard input)")
            value = sys.stdin.buffer.read() if args.value == "-" else args.value.encode()
            ok = getattr(client, args.command)(args.key, value, args.expires, args.cache)
            if not ok:
                print(f"{args.command} refused (key exists for set, cache full, too large, or unknown cache)",
                      file=sys.stderr)
            return 0 if ok else 1
        if args.command == "del":
            return 0 if client.delete(args.key, args.cache) else 1
        return 0 if client.exists(args.key, args.cache) else 1
    except OSError as error:
        print(f"error: {args.server}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
