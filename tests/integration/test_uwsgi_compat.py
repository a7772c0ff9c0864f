"""Byte-for-byte compatibility of our modifier1 111 cache protocol with the real uWSGI 2.0.21.

The real uWSGI (`/usr/bin/uwsgi --plugin cache --master`, Debian's uwsgi-core 2.0.21) and our server run
side by side with the same cache geometry. The SAME request bytes go to both, case after case, in the
same order (so both caches go through the same states), and the reply bytes AND the way the connection
ended (eof / reset / timeout) must be identical.

Deliberate differences (docs/protocol.md §6) are masked, each case says so in its output line
("MASKED ...") and the comment where the case is built:
  * mod2 0 / 5 reply header: bytes 0..3 of uWSGI's reply are a heap address (spec §2.2, bug 1). We check
    our bytes 0..3 against the intended header and compare uWSGI's bytes 4.. with ours.
  * mod2 3 / 4 hits: uWSGI never hits (spec §2.3, bug 2). For a hit we assert uWSGI's known-broken reply
    (`key` -> nothing, `get` -> the 404 page) AND our intended one (the value) separately. Misses must be
    identical.
  * magic `clear` of a cache with more slots than the first cache: uWSGI walks the first cache's slot
    count (spec §2.6, bug 9), so items survive; we clear everything. Asserted separately ("wide" cache).
  * mod2 6 dump: the image format differs. Only the header (6f L 07), the `items` / `blocksize` vars
    (uWSGI: its configured slot count = ours + 1, see below) and the decoded content (key -> value,
    expiry) are compared.
  * magic `expires` that is not a decimal number: uWSGI parses it as garbage, we refuse (no reply).
  * our magic extensions `keys`, `stats`, `inc`/`dec`/`mul`/`div`: uWSGI has no such cmd (no reply); our
    replies are checked against protocol.md §2 and against uWSGI's state (read from its dump).
  * the persistent mode (`keepalive=1`, ours only): a miss is a framed status=notfound on ours.
  When a listed difference leaves a key on one side only, a following case (also masked) deletes it so
  that both caches stay in the same state.
  * the `expires` var of a magic get reply is an absolute time: its digits are compared by tolerance.

Geometry: uWSGI gives N-1 usable items for items=N, ours gives N; uWSGI is started with items=N+1 for
our N so both hold the same number of keys. uWSGI's --buffer-size defaults to 4096: the main pair runs
with 65535 on both (uWSGI: --buffer-size 65535, ours: its default, given explicitly), and a second pair
tests the 4096 limit deliberately on both.

uWSGI is stopped with SIGINT (SIGTERM makes uWSGI 2.0 reload), SIGKILL of its process group as fallback.
Exit 0 pass, 1 fail, 77 skip (no server binary, or uWSGI cannot be installed).
"""

import os
import struct
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (_UWSGIS, UwsgiProcess, need_uwsgi, OK_REPLY, Server, Skip, array_block, free_port,  # noqa: E402
                     header, live_in_group, magic_get_req, packet, parse_vars, request,
                     run_tests, vars_block, wait_until)

HOST = "127.0.0.1"
REQ_TIMEOUT = 4.0          # per request; both servers run with --socket-timeout 2
SOCKET_TIMEOUT = 2

# (name, our items, blocksize, keysize). The first one is the default cache (mod2 0..5).
# Every other cache has at least as many slots as the first: uWSGI's magic clear walks the FIRST cache's
# slot count (bug 9) and would run past the end of a smaller cache. "wide" has more, to show bug 9.
CACHES = [
    ("main", 32, 65536, 64),
    ("small", 32, 16, 8),
    ("wide", 40, 64, 16),
]
GEOMETRY = {name: (items, bs, ks) for name, items, bs, ks in CACHES}
DEFAULT = CACHES[0][0]

NOT_FOUND = b"HTTP/1.0 404 Not Found\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\nNot Found"
BIN = b"\x00\x01NUL\x00\x80\x81\xfe\xff" + bytes(range(256)) + b"\x00"      # NUL and 0x80-0xff bytes
BINKEY = b"\x00\xff\x80k\x7f\x01"
BIG = bytes((i * 7 + 3) & 0xFF for i in range(65536))                    # exactly main's blocksize
MAXPKT_VALUE = bytes((i * 13 + 1) & 0xFF for i in range(65535 - 2 - 1 - 2))  # mod2 1 datasize 65535


def b(x):
    return x if isinstance(x, (bytes, bytearray)) else str(x).encode()


# --------------------------------------------------------------------------------------------------
# uWSGI





_PGIDS = []   # process groups of every uWSGI and server we started (checked at the end)


class Uwsgi(UwsgiProcess):
    """uWSGI 2.0.21 with one worker and the given caches (items + 1: uWSGI keeps slot 0 for itself)."""

    def __init__(self, port, caches, buffer_size=None):
        self.addr = (HOST, port)
        args = ["--plugin", "cache", "--master", "--processes", "1", "--socket", f"{HOST}:{port}",
                "--socket-timeout", str(SOCKET_TIMEOUT), "--cache-expire-freq", "1"]
        if buffer_size is not None:
            args += ["--buffer-size", str(buffer_size)]
        for name, items, bs, ks in caches:
            args += ["--cache2", f"name={name},items={items + 1},blocksize={bs},keysize={ks}"]
        super().__init__(args, [self.addr], prefix="uwc-")

    def start(self):
        super().start()
        _PGIDS.append(("uWSGI", self.proc.pid))
        return self


def ours_args(port, caches, buffer_size=65535):
    args = ["--socket", f"{HOST}:{port}", "--processes", "1", "--socket-timeout", str(SOCKET_TIMEOUT),
            "--cache-expire-freq", "1", "--buffer-size", str(buffer_size)]
    for name, items, bs, ks in caches:
        args += ["--cache2", f"name={name},items={items},blocksize={bs},keysize={ks}"]
    return args


# --------------------------------------------------------------------------------------------------
# reporting

def hexdump(data, limit=80):
    if len(data) <= limit:
        return f"({len(data)} bytes) {data.hex(' ')}" if data else "(0 bytes)"
    return f"({len(data)} bytes) {data[:56].hex(' ')} ... {data[-16:].hex(' ')}"


def first_diff(a, c):
    for i in range(min(len(a), len(c))):
        if a[i] != c[i]:
            return i
    return min(len(a), len(c)) if len(a) != len(c) else None


def show(label, reply, how, around=None):
    text = f"      {label:<6} {how:<7} {hexdump(reply)}"
    if around is not None and len(reply) > 80:
        lo = max(0, around - 16)
        text += f"\n             at {around}: {reply[lo:around + 16].hex(' ')}"
    return text


def diff_text(uw, ours):
    at = first_diff(uw[0], ours[0])
    lines = [show("uWSGI", uw[0], uw[1], at), show("ours", ours[0], ours[1], at)]
    if at is not None:
        lines.append(f"      first differing byte offset: {at}")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# the case table
#
# A case is one request sent to both servers. `mode` says how the two replies are compared:
#   same     identical bytes and close; `want` (bytes, how), when given, is what the spec says both send
#   get0     mod2 0: MASKED uWSGI bytes 0..3; ours must start with 6f LL HH 00 (value length, LE16);
#            uWSGI[4:] == ours[4:] == value. value None = miss (then: identical, no reply)
#   get5     mod2 5: MASKED uWSGI bytes 0..3; ours 6f 00 00 01 + value on a hit, 6f 00 00 00 on a miss
#   split    a listed deliberate difference: `want_uw` and `want_ours` are asserted separately
#   expires  magic get of an item with an expiry: MASKED digits of the `expires` var, which must be
#            now + rel (both) and within 2 s of each other; everything else identical
#   auto0/5  like get0/get5 when the value is not known in advance (state read-back)
#   autoget  magic get, identical except the expires digits (tolerance)
#   dump     mod2 6 (see check_dump)

class Case:
    def __init__(self, name, req, mode="same", want=None, note=None, half_close=False, timeout=REQ_TIMEOUT,
                 **data):
        self.name = name
        self.req = req
        self.mode = mode
        self.want = want
        self.note = note
        self.half_close = half_close
        self.timeout = timeout
        self.data = data
        self.expires_rel = None  # a set with a positive expiry: (cache name, key, seconds), see EXPIRING


class Table:
    """Builds the cases and remembers every (cache, key) touched, for the state read-back."""

    def __init__(self):
        self.cases = []
        self.keys = []          # (cache, key) in first-use order
        self.excluded = {}      # (cache, key) -> why it is not read back

    def key(self, cache, key):
        ck = (cache or DEFAULT, b(key))
        if ck not in self.keys:
            self.keys.append(ck)

    def add(self, case):
        self.cases.append(case)
        return case

    # ---- raw
    def same(self, name, req, want=None, **kw):
        return self.add(Case(name, req, "same", want, **kw))

    def noreply(self, name, req, **kw):
        return self.same(name, req, (b"", "eof"), **kw)

    # ---- modifier2 0, 1, 2, 5 (default cache)
    def get0(self, key, value, name=None):
        self.key(None, key)
        return self.add(Case(name or f"mod2 0 get {key!r} ({'hit' if value is not None else 'miss'})",
                             packet(111, 0, b(key)), "get0", value=value,
                             note="bytes 0..3 of uWSGI's reply are a heap address (protocol.md §6)"))

    def get5(self, key, value, name=None):
        self.key(None, key)
        return self.add(Case(name or f"mod2 5 get {key!r} ({'hit' if value is not None else 'miss'})",
                             packet(111, 5, b(key)), "get5", value=value,
                             note="bytes 0..3 of uWSGI's reply are a heap address (protocol.md §6)"))

    def set1(self, items, name=None, track=()):
        for k in track:
            self.key(None, k)
        return self.noreply(name or f"mod2 1 set {[bytes(b(i))[:20] for i in items]}",
                            packet(111, 1, array_block(items)))

    def del2(self, key, name=None):
        self.key(None, key)
        return self.noreply(name or f"mod2 2 del {key!r}", packet(111, 2, b(key)))

    # ---- modifier2 3 / 4
    def dictget(self, mod2, pairs, hits, name=None, payload=None, parsed=None):
        """pairs: the vars sent; hits: {key: value} of the default cache for the keys looked up.
        payload overrides the vars block (malformed input); parsed = the pairs the parser accepts then."""
        pairs = [(b(k), b(v)) for k, v in pairs]
        parsed = pairs if parsed is None else [(b(k), b(v)) for k, v in parsed]
        looked = [(k, v) for k, v in parsed if k in (b"key", b"get") and v]
        for _, v in looked:
            self.key(None, v)
        # uWSGI writes the 404 page with uwsgi_404(), whose uwsgi_response_prepare_headers() refuses once
        # anything was written in this request (headers_sent || headers_size || response_size): so at most
        # one 404 page, and only before any value. A hit writes the raw value (uwsgi_response_write_body_do).
        # uWSGI 2.0.21 looks up an empty key whatever the var says: `key` never writes, `get` writes 404.
        want_uw = NOT_FOUND if any(k == b"get" for k, _ in looked) else b""
        # intended (ours): the same rules with a working lookup
        want_ours = b""
        for k, v in looked:
            if v in hits:
                want_ours += hits[v]
            elif k == b"get" and want_ours == b"":
                want_ours = NOT_FOUND
        req = packet(111, mod2, vars_block(pairs) if payload is None else payload)
        name = name or f"mod2 {mod2} {[(k.decode(errors='replace'), v[:16]) for k, v in pairs]}"
        if want_uw == want_ours:
            return self.same(name, req, (want_uw, "eof"))
        return self.add(Case(name, req, "split", want_uw=(want_uw, "eof"), want_ours=(want_ours, "eof"),
                             note="uWSGI 2.0.21 mod2 3/4 never hit (protocol.md §6): its known-broken reply "
                                  "and our intended one are asserted separately"))

    # ---- modifier2 17
    def magic(self, name, pairs, body=b"", want=None, **kw):
        pairs = [(b(k), b(v)) for k, v in pairs]
        d = dict(pairs)
        if b"key" in d and d.get(b"cmd") in (b"get", b"set", b"update", b"del", b"exists"):
            self.key(d.get(b"cache", b"").decode() or None, d[b"key"])
        return self.same(name, packet(111, 17, vars_block(pairs), body), want, **kw)

    def mset(self, key, value, ok, cache=None, expires=None, cmd="set", name=None, size=None):
        value = b(value)
        pairs = [("cmd", cmd), ("key", key), ("size", str(len(value)) if size is None else size)]
        if expires is not None:
            pairs.append(("expires", expires))
        if cache is not None:
            pairs.append(("cache", cache))
        what = name or (f"magic {cmd} {b(key)[:24]!r}={value[:12]!r}{'...' if len(value) > 12 else ''}"
                        f" ({len(value)} B){' cache=' + cache if cache else ''}"
                        f"{' expires=' + str(expires) if expires is not None else ''}")
        case = self.magic(what, pairs, value, (OK_REPLY if ok else b"", "eof") if ok is not None else None)
        if ok and str(expires or "").isdigit() and int(expires) > 0:
            case.expires_rel = (cache or DEFAULT, b(key), int(expires))
        return case

    def mcmd(self, cmd, key, ok, cache=None, name=None):
        pairs = [("cmd", cmd)]
        if key is not None:
            pairs.append(("key", key))
        if cache is not None:
            pairs.append(("cache", cache))
        return self.magic(name or f"magic {cmd}{' ' + repr(key) if key is not None else ''}"
                          f"{' cache=' + cache if cache is not None else ''}"
                          f" ({'ok' if ok else 'no reply'})", pairs, b"", (OK_REPLY if ok else b"", "eof"))

    def mget(self, key, value, cache=None, name=None):
        pairs = [("cmd", "get"), ("key", key)]
        if cache is not None:
            pairs.append(("cache", cache))
        if value is None:
            want = b""
        else:
            vb = vars_block([("status", "ok"), ("size", str(len(value)))])
            want = header(111, len(vb), 17) + vb + value
        return self.magic(name or f"magic get {b(key)[:24]!r}{' cache=' + cache if cache is not None else ''}"
                          f" ({'hit' if value is not None else 'miss'})", pairs, b"", (want, "eof"))

    def mget_expires(self, key, value, rel, cache=None):
        self.key(cache, key)
        pairs = [("cmd", "get"), ("key", key)] + ([("cache", cache)] if cache else [])
        return self.add(Case(f"magic get {key!r} (expires ~now+{rel})", packet(111, 17, vars_block(pairs)),
                             "expires", value=b(value), rel=rel,
                             note="the digits of the absolute `expires` var are compared by tolerance"))


def build_cases(t):
    """The whole table, in order (both servers go through the same states)."""

    # ---- empty caches: every command misses
    t.get0("k1", None)
    t.get5("k1", None)
    t.mget("k1", None)
    t.mcmd("exists", "k1", False)
    t.mcmd("del", "k1", False)
    t.del2("k1", name="mod2 2 del 'k1' (missing key)")
    t.dictget(3, [("key", "k1")], {})
    t.dictget(3, [("get", "k1")], {})
    t.dictget(4, [("get", "k1")], {})

    # ---- expiring items (2 s), checked after >= 4.5 s (both sweepers run every second)
    t.mset("e1", "soon", True, expires=2)
    t.mset("e2", "soon2", True, expires=2, cache="small")
    t.add(Case("mod2 0 get 'e1' (before expiry)", packet(111, 0, b"e1"), "get0", value=b"soon",
               note="bytes 0..3 of uWSGI's reply are a heap address (protocol.md §6)"))

    # ---- modifier2 1: simple set (array), never replies
    t.set1(["k1", "value1"], track=["k1"])
    t.set1(["k1", "other"], name="mod2 1 set 'k1' again (existing key: not overwritten)")
    t.set1(["kbin", BIN], name="mod2 1 set 'kbin' = binary (NUL, 0x80-0xff)", track=["kbin"])
    t.set1([BINKEY, b"\x80"], name="mod2 1 set binary key = 1 byte 0x80", track=[BINKEY])
    t.set1(["one", b"\x00"], name="mod2 1 set 'one' = 1 byte NUL", track=["one"])
    t.set1(["K" * 64, "at-keysize"], name="mod2 1 set key of keysize (64) bytes", track=["K" * 64])
    t.set1(["L" * 65, "over-keysize"], name="mod2 1 set key of keysize+1 (65) bytes", track=["L" * 65])
    t.set1(["k3", "v3", "ignored"], name="mod2 1 set with a 3rd item (ignored)", track=["k3"])
    t.set1(["", "k4", "v4"], name="mod2 1 set with a leading empty item (skipped)", track=["k4", ""])
    t.set1(["k5"], name="mod2 1 set with one item only", track=["k5"])
    t.set1(["k7", ""], name="mod2 1 set with an empty value", track=["k7"])
    t.set1(["k8", "v8", "x", "y"], name="mod2 1 set with 4 items", track=["k8"])
    t.noreply("mod2 1 set, 2nd item truncated",
              packet(111, 1, array_block(["k6"]) + struct.pack("<H", 10) + b"abc"))
    t.key(None, "k6")
    t.noreply("mod2 1 set, 3rd item truncated",
              packet(111, 1, array_block(["k9", "v9"]) + struct.pack("<H", 10) + b"abc"))
    t.key(None, "k9")
    t.noreply("mod2 1 set, odd trailing byte", packet(111, 1, array_block(["k10", "v10"]) + b"\x01"))
    t.key(None, "k10")
    t.set1(["B", MAXPKT_VALUE], name="mod2 1 set with datasize 65535 (= buffer-size)", track=["B"])

    # ---- modifier2 0 / 5 gets (MASKED header bytes 0..3)
    t.get0("k1", b"value1")
    t.get5("k1", b"value1")
    t.get0("kbin", BIN)
    t.get5("kbin", BIN)
    t.get0(BINKEY, b"\x80")
    t.get0("one", b"\x00")
    t.get0("K" * 64, b"at-keysize")
    t.get0("L" * 65, None)
    t.get5("L" * 65, None)
    t.get0("k3", b"v3")
    t.get0("k4", b"v4")
    t.get0("k5", None)
    t.get0("B", MAXPKT_VALUE)
    t.get0("k1\x00", None, name="mod2 0 get 'k1\\x00' (key with a trailing NUL: miss)")
    t.get0("K1", None)

    # ---- modifier2 3 / 4: dictionary get
    hits = {b"k1": b"value1", b"kbin": BIN}
    t.dictget(3, [("key", "k1")], hits)
    t.dictget(3, [("get", "k1")], hits)
    t.dictget(4, [("key", "k1")], hits)
    t.dictget(4, [("get", "kbin")], hits)
    t.dictget(3, [("key", "k1"), ("get", "nokey")], hits)
    t.dictget(3, [("get", "nokey"), ("key", "k1"), ("get", "k1")], hits)
    t.dictget(3, [("HTTP_HOST", "example"), ("key", "nokey")], hits)
    t.dictget(3, [("get", "nokey"), ("get", "nokey2")], hits, name="mod2 3 two `get` misses (one 404 page)")
    t.dictget(4, [("get", "nokey"), ("key", "nokey2"), ("get", "nokey3")], hits,
              name="mod2 4 get/key/get misses (one 404 page)")
    t.dictget(3, [("key", "nokey"), ("get", "nokey2"), ("get", "k1")], hits)
    t.dictget(3, [("key", "")], hits, name="mod2 3 {key: ''} (empty value: skipped)")
    t.dictget(3, [("get", "")], hits, name="mod2 3 {get: ''} (empty value: skipped)")
    t.dictget(3, [("KEY", "k1"), ("GET", "k1"), ("keys", "k1")], hits, name="mod2 3 other-case vars")
    t.dictget(3, [("get", "k1")], hits, name="mod2 3 {get: k1} + truncated pair",
              payload=vars_block([("get", "k1")]) + struct.pack("<H", 5) + b"ab")
    t.dictget(3, [("get", "nokey")], hits, name="mod2 3 {get: nokey} + zero-length key",
              payload=vars_block([("get", "nokey")]) + vars_block([("", "x")]) + vars_block([("get", "k2")]))
    t.dictget(3, [("get", "nokey")], hits, name="mod2 3 {get: nokey} + dangling key length",
              payload=vars_block([("get", "nokey")]) + b"\x03\x00")
    t.dictget(3, [("get", "k1")], hits, name="mod2 3 value length past the end",
              payload=vars_block([("get", "k1")])[:-1], parsed=[])
    t.noreply("mod2 3 zero-length key first", packet(111, 3, vars_block([("", "k1"), ("get", "k1")])))
    t.noreply("mod2 3 raw key instead of vars", packet(111, 3, b"k1"))

    # ---- modifier2 2: delete, never replies
    t.del2("k3")
    t.get0("k3", None, name="mod2 0 get 'k3' after mod2 2 del")
    t.del2("k3", name="mod2 2 del 'k3' again (missing)")
    t.del2("L" * 65, name="mod2 2 del key over keysize")
    t.del2("k1\x00", name="mod2 2 del 'k1\\x00' (not 'k1')")
    t.get0("k1", b"value1", name="mod2 0 get 'k1' (still there)")

    # ---- modifier2 17: the magic interface
    t.mset("m1", "hello", True)
    t.mset("m1", "HELLO", False, name="magic set 'm1' again (existing: no reply)")
    t.mget("m1", b"hello")
    t.mcmd("exists", "m1", True)
    t.mset("m1", "HELLO", True, cmd="update", expires=100)
    t.mget_expires("m1", b"HELLO", 100)
    t.mset("m1", "hello again", True, cmd="update")
    t.mget("m1", b"hello again", name="magic get 'm1' (update without expires clears it)")
    t.mset("mu", BIN, True, cmd="update", name="magic update 'mu' (new key) = binary")
    t.mget("mu", BIN)
    t.mset("mu", "x", True, cmd="update", name="magic update 'mu' = 1 byte")
    t.get0("mu", b"x")
    t.mset("z0", "", False, name="magic set 'z0' size 0 (empty value)")
    t.mset("z0", "", False, cmd="update", name="magic update 'z0' size 0")
    t.mset("lz", "12345", True, size="05", name="magic set 'lz' size '05' (leading zero)")
    t.mget("lz", b"12345")
    t.magic("magic set 'twice' size 3 then size 5 (the later var wins)",
            [("cmd", "set"), ("key", "twice"), ("size", "3"), ("size", "5")], b"ABCDE", (OK_REPLY, "eof"))
    t.mget("twice", b"ABCDE")
    t.magic("magic set 'rs' like uWSGI's remote client (size sent twice, cache empty)",
            [("cmd", "set"), ("key", "rs"), ("size", "3"), ("size", "3"), ("cache", "")], b"VAL", (OK_REPLY, "eof"))
    t.mget("rs", b"VAL", cache="")
    t.mset("big", BIG, True, name="magic set 'big' = blocksize (65536) bytes")
    t.mget("big", BIG)
    t.get0("big", BIG, name="mod2 0 get 'big' (65536 bytes: the intended LE16 length wraps to 0)")
    t.get5("big", BIG)
    # MASKED close: uWSGI leaves the unwanted body unread and its close sends a reset; we consume the
    # announced body (it is framed: under the body limit) and close cleanly (protocol.md §6).
    big2 = [("cmd", "set"), ("key", "big2"), ("size", str(len(BIG) + 1))]
    t.add(Case("magic set 'big2' = blocksize+1 (65537) bytes (close: uWSGI reset, ours EOF)",
               packet(111, 17, vars_block(big2), BIG + b"!"), "split", want_uw=(b"", "reset"),
               want_ours=(b"", "eof"), note="deliberate: orderly close instead of a reset (protocol.md §6)"))
    t.mget("big2", None)
    t.mset("K" * 64, "m-at-keysize", False, name="magic set key of keysize (existing, set by mod2 1)")
    t.mset("M" * 64, "m-at-keysize", True, name="magic set new key of keysize (64) bytes")
    t.mset("N" * 65, "over", False, name="magic set key of keysize+1 (65) bytes")
    t.mset("N" * 65, "over", False, cmd="update", name="magic update key of keysize+1 (65) bytes")
    t.mget("N" * 65, None)
    t.mset(BINKEY + b"\x00m", BIN, True, name="magic set binary key with NUL = binary value")
    t.mget(BINKEY + b"\x00m", BIN)
    t.get0(BINKEY + b"\x00m", BIN)
    t.mset("", "x", None, name="magic set empty key")
    t.mget("", None, name="magic get empty key")
    t.mcmd("exists", "", None, name="magic exists empty key")
    t.mset("ex0", "never", True, expires="0", name="magic set 'ex0' expires '0'")
    t.mget("ex0", b"never", name="magic get 'ex0' (expires 0: no expires var)")
    t.mset("exe", "never", True, expires="", name="magic set 'exe' expires ''")
    t.mget("exe", b"never", name="magic get 'exe' (empty expires: no expires var)")
    t.mset("ex7", "seven", True, expires="0100", name="magic set 'ex7' expires '0100' (leading zero)")
    t.mget_expires("ex7", b"seven", 100)
    t.mset("exbig", "far", True, expires="99999999999", name="magic set 'exbig' expires 99999999999 (11 digits)")
    t.add(Case("magic get 'exbig' (expires ~now+99999999999, 12 digits)", magic_get_req("exbig"), "autoget",
               note="the digits of the absolute `expires` var are compared by tolerance"))
    # Deliberate difference (protocol.md §6, "magic expires"): uWSGI parses a non-decimal expires
    # loosely (uwsgi_str_num("abc") = 5451 s) and stores; we refuse (no reply). Not read back.
    t.add(Case("magic set 'exg' expires 'abc' (not decimal)",
               packet(111, 17, vars_block([("cmd", "set"), ("key", "exg"), ("size", "1"), ("expires", "abc")]), b"g"),
               "split", want_uw=(OK_REPLY, "eof"), want_ours=(b"", "eof"),
               note="uWSGI parses a non-decimal `expires` as garbage, we refuse it (protocol.md §6)"))
    t.add(Case("magic del 'exg' (stored by uWSGI only: restores the same state)",
               packet(111, 17, vars_block([("cmd", "del"), ("key", "exg")])), "split",
               want_uw=(OK_REPLY, "eof"), want_ours=(b"", "eof"),
               note="follows the listed `expires` difference: only uWSGI stored 'exg'"))

    # named caches, unknown cache names
    t.mset("k1", "in-small", True, cache="small")
    t.mget("k1", b"in-small", cache="small")
    t.mget("k1", b"value1", name="magic get 'k1' without cache var (default cache)")
    t.mget("k1", b"value1", cache="", name="magic get 'k1' cache='' (default cache)")
    t.mget("k1", b"value1", cache="main", name="magic get 'k1' cache='main' (the default, by name)")
    t.mget("k1", None, cache="nosuch")
    t.mget("k1", None, cache="SMALL", name="magic get 'k1' cache='SMALL' (names are case-sensitive)")
    t.mset("k1", "x", False, cache="nosuch")
    t.mset("k1", "x", False, cache="nosuch", cmd="update")
    t.mcmd("exists", "k1", False, cache="nosuch")
    t.mcmd("del", "k1", False, cache="nosuch")
    t.mcmd("clear", None, False, cache="nosuch")
    t.mcmd("exists", "k1", True, cache="small")
    t.mset("k1", "in-small-2", True, cache="small", cmd="update")
    t.mget("k1", b"in-small-2", cache="small")
    t.mset("12345678", "at-ks", True, cache="small", name="magic set small key of keysize (8)")
    t.mset("123456789", "over", False, cache="small", name="magic set small key of keysize+1 (9)")
    t.mset("v16", "0123456789abcdef", True, cache="small", name="magic set small value of blocksize (16)")
    t.mset("v17", "0123456789abcdefg", False, cache="small", name="magic set small value of blocksize+1 (17)")
    t.mset("v17", "0123456789abcdefg", False, cache="small", cmd="update",
           name="magic update small value of blocksize+1 (17)")
    t.mset("v1", b"\xff", True, cache="small", name="magic set small 1-byte value 0xff")
    t.mget("v16", b"0123456789abcdef", cache="small")
    t.mget("v1", b"\xff", cache="small")
    t.mget("v17", None, cache="small")
    t.mset("abcsize", "x", False, cache="small", size="abc",
           name="magic set small size 'abc' (uWSGI: garbage 5451 > blocksize)")

    # del / exists / unknown commands / malformed vars
    t.mset("d1", "del-me", True)
    t.mcmd("del", "d1", True)
    t.mcmd("del", "d1", False, name="magic del 'd1' again (no reply)")
    t.mcmd("exists", "d1", False)
    t.mcmd("del", "k1", True, cache="small")
    t.mcmd("del", "123456789", False, cache="small", name="magic del small key over keysize")
    t.mcmd("exists", "123456789", False, cache="small", name="magic exists small key over keysize")
    t.mcmd("exists", "N" * 65, False, name="magic exists key over keysize")
    t.mget("k1", None, cache="small", name="magic get 'k1' cache=small after del")
    for cmd in ("bogus", "GET", "Get", "get ", "KEYS", "Stats", "incr", "num", "clear2", "sets", ""):
        t.magic(f"magic unknown cmd {cmd!r} (no reply)", [("cmd", cmd), ("key", "k1")], b"", (b"", "eof"))
    # our math extensions need size=8 and an 8-byte body: without them, no reply, as uWSGI
    for cmd in ("inc", "dec", "mul", "div"):
        t.magic(f"magic {cmd} without a body (no reply on both)", [("cmd", cmd), ("key", "k1")], b"", (b"", "eof"))
    t.magic("magic inc size=8 but 3 body bytes, then half-close (no reply on both)",
            [("cmd", "inc"), ("key", "n2"), ("size", "8")], b"\x01\x00\x00", (b"", "eof"), half_close=True)
    t.key(None, "n2")

    # Our extensions (protocol.md §2 "Our extensions", listed in §6): uWSGI does not know these commands
    # (no reply); ours serves them. Asserted separately; the state they change is undone right after.
    note = "our magic extension keys/stats/inc/dec/mul/div (protocol.md §6): uWSGI has no such cmd"
    t.add(Case("magic keys (default cache)", packet(111, 17, vars_block([("cmd", "keys")])), "custom",
               check=ext_keys_check(None), note=note))
    t.add(Case("magic keys cache=small", packet(111, 17, vars_block([("cmd", "keys"), ("cache", "small")])), "custom",
               check=ext_keys_check("small"), note=note))
    t.add(Case("magic stats cache=main", packet(111, 17, vars_block([("cmd", "stats"), ("cache", "main")])), "custom",
               check=ext_stats_check("main"), note=note))
    t.magic("magic keys cache=nosuch (no reply on both)", [("cmd", "keys"), ("cache", "nosuch")], b"", (b"", "eof"))
    t.magic("magic stats cache=nosuch (no reply on both)", [("cmd", "stats"), ("cache", "nosuch")], b"", (b"", "eof"))
    n = 0
    for cmd, operand in (("inc", 5), ("mul", 3), ("dec", 1), ("div", 2), ("inc", -10)):
        n = {"inc": n + operand, "mul": n * operand, "dec": n - operand, "div": int(n / operand)}[cmd]
        vb = vars_block([("status", "ok"), ("value", str(n))])
        t.add(Case(f"magic {cmd} 'n1' by {operand} (ours: {n})",
                   packet(111, 17, vars_block([("cmd", cmd), ("key", "n1"), ("size", "8")]), struct.pack("<q", operand)),
                   "split", want_uw=(b"", "eof"), want_ours=(header(111, len(vb), 17) + vb, "eof"), note=note))
    vb = vars_block([("status", "ok"), ("size", "8")])
    t.add(Case("magic get 'n1' (ours: the 8-byte result)", magic_get_req("n1"), "split", want_uw=(b"", "eof"),
               want_ours=(header(111, len(vb), 17) + vb + struct.pack("<q", n), "eof"), note=note))
    t.add(Case("magic del 'n1' (stored by ours only: restores the same state)",
               packet(111, 17, vars_block([("cmd", "del"), ("key", "n1")])), "split",
               want_uw=(b"", "eof"), want_ours=(OK_REPLY, "eof"), note=note))
    t.key(None, "n1")
    t.magic("magic no cmd var", [("key", "k1")], b"", (b"", "eof"))
    t.magic("magic cmd var twice (get, then bogus: the later wins)", [("cmd", "get"), ("cmd", "bogus"), ("key", "k1")],
            b"", (b"", "eof"))
    t.magic("magic cmd var twice (bogus, then get: the later wins)", [("cmd", "bogus"), ("cmd", "get"), ("key", "k1")],
            b"", None)
    t.magic("magic key var twice (the later wins)", [("cmd", "get"), ("key", "nokey"), ("key", "k1")], b"", None)
    t.magic("magic get with unknown extra vars", [("cmd", "get"), ("HTTP_X", "1"), ("key", "k1"), ("foo", "")],
            b"", None)
    t.same("magic truncated pair after {cmd:get, key:k1}",
           packet(111, 17, vars_block([("cmd", "get"), ("key", "k1")]) + struct.pack("<H", 9) + b"ab"))
    t.same("magic zero-length var name", packet(111, 17, vars_block([("", "x"), ("cmd", "get"), ("key", "k1")])))
    t.same("magic dangling key length", packet(111, 17, vars_block([("cmd", "get"), ("key", "k1")]) + b"\x02\x00"))
    t.same("magic value length past the end", packet(111, 17, vars_block([("cmd", "get"), ("key", "k1")])[:-1]))
    t.same("magic raw key instead of vars", packet(111, 17, b"k1"))
    t.same("magic set: truncated pair, then a body",
           packet(111, 17, vars_block([("cmd", "set"), ("key", "tp"), ("size", "2")]) + b"\x09\x00ab", b"zz"))
    t.key(None, "tp")

    # framing: pipelining, trailing bytes, short bodies, incomplete packets
    t.same("two magic gets in one write (one reply, then close)",
           magic_get_req("k1") + magic_get_req("m1"))
    t.same("magic exists + magic set in one write (the set is ignored)",
           packet(111, 17, vars_block([("cmd", "exists"), ("key", "k1")]))
           + packet(111, 17, vars_block([("cmd", "set"), ("key", "pipe2"), ("size", "1")]), b"p"))
    t.key(None, "pipe2")
    t.magic("magic set 'tb' with 5 trailing bytes after the body", [("cmd", "set"), ("key", "tb"), ("size", "3")],
            b"abc" + b"XXXXX", None)
    t.mget("tb", b"abc")
    t.add(Case("magic set 'sb' body 2 of 5 bytes, then half-close",
               packet(111, 17, vars_block([("cmd", "set"), ("key", "sb"), ("size", "5")]), b"ab"), half_close=True,
               want=(b"", "eof")))
    t.key(None, "sb")
    t.add(Case("magic set 'sb2' body 2 of 5 bytes, then silence (socket-timeout)",
               packet(111, 17, vars_block([("cmd", "set"), ("key", "sb2"), ("size", "5")]), b"ab"), timeout=5.0,
               want=(b"", "eof")))
    t.key(None, "sb2")
    t.add(Case("2-byte packet, then half-close", b"\x6f\x02", half_close=True, want=(b"", "eof")))
    t.add(Case("mod2 0 header says 10, 3 bytes sent, then half-close", header(111, 10, 0) + b"abc",
               half_close=True, want=(b"", "eof")))
    t.add(Case("mod2 17 vars cut short, then half-close",
               packet(111, 17, vars_block([("cmd", "get"), ("key", "k1")]))[:-2], half_close=True, want=(b"", "eof")))
    t.add(Case("mod2 0 header says 10, 3 bytes sent, then silence (socket-timeout)", header(111, 10, 0) + b"abc",
               timeout=5.0, want=(b"", "eof")))

    # Persistent mode (protocol.md §4/§6, ours only): `keepalive=1` keeps our connection open after the
    # reply; uWSGI ignores the unknown var and closes. Both see the client's half-close here, so a hit
    # must be the same bytes then EOF on both; a miss is a framed status=notfound on ours only.
    t.same("magic get 'k1' with keepalive=1, then half-close (hit: same reply)",
           packet(111, 17, vars_block([("cmd", "get"), ("key", "k1"), ("keepalive", "1")])),
           (header(111, 21, 17) + vars_block([("status", "ok"), ("size", "6")]) + b"value1", "eof"), half_close=True)
    nf = vars_block([("status", "notfound")])
    t.add(Case("magic get 'nokey' with keepalive=1, then half-close (miss)",
               packet(111, 17, vars_block([("cmd", "get"), ("key", "nokey"), ("keepalive", "1")])), "split",
               half_close=True, want_uw=(b"", "eof"), want_ours=(header(111, len(nf), 17) + nf, "eof"),
               note="persistent mode, opt-in with keepalive=1 (protocol.md §4, §6): framed status=notfound"))
    t.same("magic get 'k1' with keepalive=0 (not the persistent mode)",
           packet(111, 17, vars_block([("cmd", "get"), ("key", "k1"), ("keepalive", "0")])),
           (header(111, 21, 17) + vars_block([("status", "ok"), ("size", "6")]) + b"value1", "eof"))

    # ---- empty payloads and unknown modifier2 values
    for m2 in (0, 1, 2, 3, 4, 5, 17):
        t.noreply(f"mod2 {m2} with an empty payload", header(111, 0, m2))
    for m2 in (7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18, 19, 32, 64, 100, 110, 111, 127, 128, 200, 254, 255):
        t.noreply(f"unknown mod2 {m2} with payload 'k1'", packet(111, m2, b"k1"))
    t.noreply("unknown mod2 10 with a UDP set packet (ignored over TCP)",
              packet(111, 10, array_block(["udp1", "val", "0"])))
    t.key(None, "udp1")
    t.noreply("unknown mod2 11 with a UDP delete packet (ignored over TCP)", packet(111, 11, array_block(["k1"])))
    t.noreply("unknown mod2 7 with an empty payload", header(111, 0, 7))
    t.noreply("unknown mod2 255 with an empty payload", header(111, 0, 255))



def build_fill_cases(t):
    """Full caches and clears; run after the expiring items are gone, so that an expired item that
    uWSGI has not swept yet cannot take a slot on one side only."""
    items_small = GEOMETRY["small"][0]

    # ---- a full cache (small: 32 usable keys on both; uWSGI runs with items=33)
    t.mcmd("clear", None, True, cache="small", name="magic clear cache=small")
    t.mget("v16", None, cache="small", name="magic get 'v16' cache=small after clear")
    for i in range(items_small):
        t.mset(f"s{i:02d}", f"v{i}", True, cache="small", name=f"magic set s{i:02d} cache=small (fill {i + 1}/{items_small})")
    t.mset("sfull", "no-room", False, cache="small", name="magic set 'sfull' cache=small (cache full)")
    t.mset("sfull", "no-room", False, cache="small", cmd="update", name="magic update 'sfull' cache=small (full)")
    t.mset("s05", "v5-updated", True, cache="small", cmd="update", name="magic update existing 's05' in a full cache")
    t.mcmd("del", "s00", True, cache="small")
    t.mset("sfull", "room", True, cache="small", name="magic set 'sfull' cache=small after a del")
    t.mset("sfull2", "no-room", False, cache="small", name="magic set 'sfull2' cache=small (full again)")

    # ---- a full default cache through mod2 1 (no reply either way: checked by the read-back)
    for i in range(40):
        t.set1([f"f{i:02d}", f"fill{i}"], name=f"mod2 1 set f{i:02d} (filling the default cache)", track=[f"f{i:02d}"])
    t.del2("f00")
    t.set1(["f99", "after-del"], name="mod2 1 set 'f99' after a del in a full cache", track=["f99"])

    # ---- magic clear of a cache with more slots than the first cache (uWSGI bug 9)
    n_wide = 10
    for i in range(n_wide):
        t.mset(f"w{i}", f"wv{i}", True, cache="wide")
    t.mcmd("clear", None, True, cache="wide", name="magic clear cache=wide (more slots than the first cache)")
    uw_items_first = CACHES[0][1] + 1
    uw_items_wide = GEOMETRY["wide"][0] + 1
    for i in range(n_wide):
        # uWSGI: the first insert takes the highest slot (items-1), the next items-2, ...; clear walks
        # slots 1 .. (first cache's items - 1), so the keys in slots >= first cache's items survive.
        slot = uw_items_wide - 1 - i
        survives = slot >= uw_items_first
        key = f"w{i}"
        vb = vars_block([("status", "ok"), ("size", str(len(f"wv{i}")))])
        hit = header(111, len(vb), 17) + vb + f"wv{i}".encode()
        req = packet(111, 17, vars_block([("cmd", "get"), ("key", key), ("cache", "wide")]))
        if survives:
            t.add(Case(f"magic get '{key}' cache=wide after clear (uWSGI slot {slot}: survives)", req, "split",
                       want_uw=(hit, "eof"), want_ours=(b"", "eof"),
                       note="uWSGI's magic clear walks the first cache's slot count (bug 9, protocol.md §6)"))
            t.excluded[("wide", key.encode())] = "survives uWSGI's clear (bug 9, a listed difference)"
        else:
            t.mget(key, None, cache="wide", name=f"magic get '{key}' cache=wide after clear (uWSGI slot {slot})")

    # ---- clear of the default cache's twin-sized cache "small" is complete on both (same slot count)
    t.mset("c1", "c", False, cache="small", cmd="update", name="magic update new key 'c1' in the full cache small")
    t.mcmd("clear", None, True, cache="small", name="magic clear cache=small (again)")
    t.mget("c1", None, cache="small", name="magic get 'c1' cache=small after clear")
    t.mget("s10", None, cache="small", name="magic get 's10' cache=small after clear")
    t.mset("aclr", "ok", True, cache="small", name="magic set 'aclr' cache=small after clear")
    t.mget("aclr", b"ok", cache="small")


# --------------------------------------------------------------------------------------------------
# running and comparing

def send_both(pair, case):
    """Send case.req to both servers at the same time (only the timeout cases take long)."""
    res = {}

    def go(which, addr):
        res[which] = request(addr, case.req, case.timeout, half_close=case.half_close)
    th = threading.Thread(target=go, args=("uw", pair.uw))
    th.start()
    go("ours", pair.ours)
    th.join(case.timeout + 5)
    return res.get("uw", (b"", "lost")), res["ours"]


def mask_magic_expires(reply):
    """(reply with the expires digits replaced by '#', expires int or None). Keeps lengths."""
    if len(reply) < 4 or reply[0] != 111 or reply[3] != 17:
        return reply, None
    size = struct.unpack_from("<H", reply, 1)[0]
    try:
        pairs = parse_vars(reply[4:4 + size])
    except ValueError:
        return reply, None
    out = bytearray(reply[:4])
    exp = None
    for k, v in pairs:
        if k == b"expires" and v.isdigit():
            exp = int(v)
            v = b"#" * len(v)
        out += vars_block([(k, v)])
    return bytes(out) + reply[4 + size:], exp


def compare(case, uw, ours, now):
    """(status, messages): status 'ok' | 'masked' | 'diff'."""
    problems = []
    mode = case.mode
    d = case.data
    if mode == "same":
        if uw != ours:
            problems.append("replies differ (bytes or close):\n" + diff_text(uw, ours))
        elif case.want is not None:
            want_bytes, want_how = case.want
            if uw[0] != want_bytes or (want_how is not None and uw[1] != want_how):
                problems.append("both servers agree, but not with the expected reply from the spec:\n"
                                + show("want", want_bytes, want_how or "-") + "\n" + diff_text(uw, ours))
        return ("diff" if problems else "ok"), problems
    if mode in ("get0", "get5", "auto0", "auto5"):
        mod2 = 0 if mode in ("get0", "auto0") else 5
        if uw[1] != ours[1]:
            problems.append(f"connection ended differently: uWSGI {uw[1]}, ours {ours[1]}")
        value = d.get("value") if mode in ("get0", "get5") else (uw[0][4:] if len(uw[0]) >= 4 else None)
        if mode in ("auto0", "auto5") and mod2 == 5 and value == b"":
            value = None  # uWSGI's 4 garbage bytes alone: a miss
        if mod2 == 0 and value is None:
            if uw[0] != b"" or ours[0] != b"":
                problems.append("a miss must be no reply on both:\n" + diff_text(uw, ours))
            return ("diff" if problems else "ok"), problems
        if mod2 == 0:
            want_ours = header(111, len(value) & 0xFFFF, 0) + value
        else:
            want_ours = header(111, 0, 1 if value is not None else 0) + (value or b"")
        if len(uw[0]) < 4 or (value is not None and uw[0][4:] != value):
            problems.append("uWSGI's reply is not 4 (masked) bytes + the value:\n"
                            + show("value", value or b"", "-") + "\n" + diff_text(uw, ours))
        if mode in ("get5", "auto5") and value is None and len(uw[0]) != 4:
            problems.append("uWSGI's mod2 5 miss is not exactly 4 (masked) bytes:\n" + diff_text(uw, ours))
        if ours[0] != want_ours:
            problems.append("our reply is not the intended header + value:\n"
                            + show("want", want_ours, "eof", first_diff(want_ours, ours[0])) + "\n"
                            + diff_text(uw, ours))
        elif uw[0][4:] != ours[0][4:]:
            problems.append("bytes 4.. differ:\n" + diff_text(uw, ours))
        return ("diff" if problems else "masked"), problems
    if mode == "custom":
        problems = d["check"](uw, ours, case.pair)
        return ("diff" if problems else "masked"), problems
    if mode == "split":
        if uw != d["want_uw"]:
            problems.append("uWSGI did not give its known (broken) answer:\n"
                            + show("want", d["want_uw"][0], d["want_uw"][1], first_diff(d["want_uw"][0], uw[0]))
                            + "\n" + show("uWSGI", uw[0], uw[1], first_diff(d["want_uw"][0], uw[0])))
        if ours != d["want_ours"]:
            problems.append("our reply is not the intended one:\n"
                            + show("want", d["want_ours"][0], d["want_ours"][1],
                                   first_diff(d["want_ours"][0], ours[0]))
                            + "\n" + show("ours", ours[0], ours[1], first_diff(d["want_ours"][0], ours[0])))
        return ("diff" if problems else "masked"), problems
    if mode in ("expires", "autoget"):
        mu, eu = mask_magic_expires(uw[0])
        mo, eo = mask_magic_expires(ours[0])
        if (mu, uw[1]) != (mo, ours[1]):
            problems.append("replies differ (expires digits masked):\n" + diff_text((mu, uw[1]), (mo, ours[1])))
        if (eu is None) != (eo is None):
            problems.append(f"expires var present on one side only: uWSGI {eu}, ours {eo}")
        if mode == "expires":
            rel = d["rel"]
            vb = vars_block([("status", "ok"), ("size", str(len(d["value"]))), ("expires", "#" * 10)])
            want = header(111, len(vb), 17) + vb + d["value"]
            if mu != want:
                problems.append("uWSGI's reply is not {status, size, expires} + value:\n" + show("want", want, "eof")
                                + "\n" + show("uWSGI", mu, uw[1]))
            for who, e in (("uWSGI", eu), ("ours", eo)):
                if e is None or not (now + rel - 3 <= e <= now + rel + 2):
                    problems.append(f"{who} expires {e} is not now+{rel} ({int(now)}+{rel})")
        if eu is not None and eo is not None and abs(eu - eo) > 2:
            problems.append(f"expires differ by more than 2 s: uWSGI {eu}, ours {eo}")
        if problems:
            return "diff", problems
        return ("masked" if eu is not None else "ok"), problems
    raise AssertionError(f"unknown mode {mode}")


# (cache name, key) -> when an item set with an expiry by the running table expires (time.time() of the
# send + its seconds). Each server's sweeper frees an expired item at its own moment, so while neither
# dump can show it (uWSGI's may have freed it, ours lists only live items) our stats may still count it.
EXPIRING = {}


def run_cases(pair, cases, title, quiet=False):
    """Run the cases in order; print one line each (quiet: only the differing ones); return the failures
    (name, problems)."""
    failures = []
    counts = {"ok": 0, "masked": 0, "diff": 0}
    print(f"  -- {title}: {len(cases)} cases (uWSGI {pair.uw[0]}:{pair.uw[1]}, ours {pair.ours[0]}:{pair.ours[1]})")
    for i, case in enumerate(cases):
        now = time.time()
        case.pair = pair
        if case.expires_rel is not None:
            cache, key, rel = case.expires_rel
            EXPIRING[(cache, key)] = now + rel
        uw, ours = send_both(pair, case)
        status, problems = compare(case, uw, ours, now)
        counts[status] += 1
        tag = {"ok": "ok    ", "masked": "MASKED", "diff": "DIFF  "}[status]
        line = f"  {tag} #{i:03d} {case.name}"
        if status == "masked" and case.note:
            line += f"  [{case.note}]"
        if not quiet or problems:
            print(line, flush=True)
        if problems:
            print(f"      request{' (then half-close)' if case.half_close else ''}: {hexdump(case.req)}")
            failures.append((case.name, problems))
            for p in problems:
                print("      " + p.replace("\n", "\n      "))
    print(f"  -- {title}: {counts['ok']} identical, {counts['masked']} masked (listed differences), "
          f"{counts['diff']} differing" + (" (only differing cases printed)" if quiet else ""))
    return failures


def check_health(uw, srv, our_workers):
    """Neither side crashed during the cases (a crashed oracle would make every later comparison moot)."""
    problems = []
    log = uw.tail(1 << 20)
    for bad in ("DAMN", "Segmentation", "segfault", "!!! uWSGI process", "cache-loop"):
        if bad in log:
            problems.append(f"uWSGI log mentions {bad!r}:\n{uw.tail()}")
            break
    now = srv.workers()
    if now != our_workers:
        problems.append(f"our worker changed during the cases: {our_workers} -> {now}\n{srv.log_tail()}")
    return [("health of both servers", problems)] if problems else []


def fail_if(failures, what):
    if failures:
        names = "\n  ".join(n for n, _ in failures)
        raise AssertionError(f"{len(failures)} {what} case(s) differ between uWSGI 2.0.21 and ours:\n  {names}")


class Pair:
    def __init__(self, uw, ours):
        self.uw = uw
        self.ours = ours


# --------------------------------------------------------------------------------------------------
# mod2 6: dump

def decode_uwsgi_image(img, items, blocksize, keysize):
    """{key: (value, expires)} from uWSGI's raw items+data image (spec §4.1/§4.2); slot 0 is never used."""
    stride = 88 + keysize
    data_at = stride * items
    out = {}
    for slot in range(1, items):
        off = slot * stride
        _flags, klen, _hash, vlen, first_block, expires = struct.unpack_from("<6Q", img, off)
        if klen == 0:
            continue
        key = bytes(img[off + 88:off + 88 + klen])
        start = data_at + first_block * blocksize
        out[key] = (bytes(img[start:start + vlen]), expires)
    return out


def decode_our_image(img, count):
    """{key: (value, expires)} from our dump image (protocol.md §3)."""
    assert img[:8] == b"UCDUMP1\n", f"our dump image does not start with UCDUMP1\\n: {img[:16]!r}"
    out = {}
    i = 8
    for _ in range(count):
        klen, vlen, expires = struct.unpack_from("<HIQ", img, i)
        i += 14
        key = bytes(img[i:i + klen])
        i += klen
        out[key] = (bytes(img[i:i + vlen]), expires)
        i += vlen
    assert i == len(img), f"our dump image has {len(img) - i} bytes after {count} records"
    return out


def check_dump(pair, cache, expect_keys=None):
    """One mod2 6 request. MASKED: the image format differs (protocol.md §6); compared: the header, the
    items/blocksize vars (uWSGI's items = its configured slots = ours + 1) and the decoded content."""
    name = cache or DEFAULT
    items, bs, ks = GEOMETRY[name]
    req = packet(111, 6, b(cache or b""))
    case = Case(f"mod2 6 dump {cache!r}", req, timeout=10.0)
    uw, ours = send_both(pair, case)
    problems = []
    heads = {}
    for who, (reply, how) in (("uWSGI", uw), ("ours", ours)):
        if how != "eof" or len(reply) < 4 or reply[0] != 111 or reply[3] != 7:
            problems.append(f"{who}: not a dump reply ({how}): {hexdump(reply)}")
            continue
        size = struct.unpack_from("<H", reply, 1)[0]
        try:
            heads[who] = (parse_vars(reply[4:4 + size]), reply[4 + size:])
        except ValueError as e:
            problems.append(f"{who}: bad dump vars ({e}): {hexdump(reply)}")
    if len(heads) == 2:
        (uvars, uimg), (ovars, oimg) = heads["uWSGI"], heads["ours"]
        want_uw_vars = [(b"items", str(items + 1).encode()), (b"blocksize", str(bs).encode())]
        if uvars != want_uw_vars:
            problems.append(f"uWSGI dump vars {uvars} (want {want_uw_vars})")
        if len(uimg) != (88 + ks) * (items + 1) + bs * (items + 1):
            problems.append(f"uWSGI image is {len(uimg)} bytes, want (88+{ks})*{items + 1}+{bs}*{items + 1}")
        od = dict(ovars)
        if [k for k, _ in ovars[:2]] != [b"items", b"blocksize"]:
            problems.append(f"our dump vars do not start with items, blocksize: {ovars}")
        if od.get(b"items") != str(items).encode():
            problems.append(f"our items var {od.get(b'items')!r}: want our capacity {items} (uWSGI says {items + 1},"
                            " its configured slot count, one of them unusable)")
        if od.get(b"blocksize") != dict(uvars).get(b"blocksize"):
            problems.append(f"blocksize vars differ: uWSGI {dict(uvars).get(b'blocksize')!r}, ours {od.get(b'blocksize')!r}")
        try:
            uc = decode_uwsgi_image(uimg, items + 1, bs, ks)
            oc = decode_our_image(oimg, int(od.get(b"count", b"0")))
        except (AssertionError, struct.error, ValueError) as e:
            problems.append(f"cannot decode a dump image: {e}")
        else:
            now = time.time()
            # items that expired (or are about to) may still sit in uWSGI's memory until swept
            uc = {k: v for k, v in uc.items() if not (0 < v[1] <= now + 1)}
            oc = {k: v for k, v in oc.items() if not (0 < v[1] <= now + 1)}
            if set(uc) != set(oc):
                problems.append(f"dumped keys differ: only uWSGI {sorted(set(uc) - set(oc))[:10]}, "
                                f"only ours {sorted(set(oc) - set(uc))[:10]}")
            for k in sorted(set(uc) & set(oc)):
                (uv, ue), (ov, oe) = uc[k], oc[k]
                if uv != ov or (ue == 0) != (oe == 0) or abs(ue - oe) > 2:
                    problems.append(f"dumped item {k!r} differs: uWSGI {hexdump(uv)} expires {ue}, "
                                    f"ours {hexdump(ov)} expires {oe}")
            if expect_keys is not None and set(uc) != set(expect_keys):
                problems.append(f"dump keys {sorted(uc)[:10]}... differ from the keys read back")
            print(f"      dump {name}: {len(uc)} items on both sides")
    tag = "DIFF  " if problems else "MASKED"
    print(f"  {tag} {case.name}  [image format differs (protocol.md §6): compared header, items/blocksize, "
          "decoded content]")
    for p in problems:
        print("      " + p.replace("\n", "\n      "))
    return [(case.name, problems)] if problems else []


# --------------------------------------------------------------------------------------------------
# our magic extensions (keys, stats): checked against uWSGI's state, read from its dump

def uwsgi_dump_items(pair, cache):
    """{key: (value, expires)} of uWSGI's cache, from a mod2 6 dump."""
    name = cache or DEFAULT
    items, bs, ks = GEOMETRY[name]
    reply, how = request(pair.uw, packet(111, 6, b(cache or b"")), 10.0)
    assert how == "eof" and len(reply) >= 4 and reply[0] == 111 and reply[3] == 7, \
        f"uWSGI dump of {name}: {hexdump(reply)} ({how})"
    size = struct.unpack_from("<H", reply, 1)[0]
    return decode_uwsgi_image(reply[4 + size:], items + 1, bs, ks)


def our_dump_items(pair, cache):
    """{key: (value, expires)} of our cache, from a mod2 6 dump (expired items not yet swept included)."""
    reply, how = request(pair.ours, packet(111, 6, b(cache or b"")), 10.0)
    assert how == "eof" and len(reply) >= 4 and reply[0] == 111 and reply[3] == 7, \
        f"our dump of {cache or DEFAULT}: {hexdump(reply)} ({how})"
    size = struct.unpack_from("<H", reply, 1)[0]
    return decode_our_image(reply[4 + size:], int(dict(parse_vars(reply[4:4 + size])).get(b"count", b"0")))


def split_by_expiry(content):
    """(keys surely live, keys whose expiry is within a second: may be gone on one side)."""
    now = time.time()
    sure = {k for k, (_, e) in content.items() if not (0 < e <= now + 1)}
    return sure, set(content) - sure


def parse_magic_reply(reply):
    """(vars dict, body) of a `6f L 00 11` reply; raises ValueError."""
    if len(reply) < 4 or reply[0] != 111 or reply[3] != 17:
        raise ValueError("not a 6f .. .. 11 reply")
    size = struct.unpack_from("<H", reply, 1)[0]
    if len(reply) < 4 + size:
        raise ValueError("shorter than its header says")
    return dict(parse_vars(reply[4:4 + size])), reply[4 + size:]


def ext_keys_check(cache):
    def check(uw, ours, pair):
        problems = []
        if uw != (b"", "eof"):
            problems.append("uWSGI answered our extension cmd:\n" + diff_text(uw, ours))
        try:
            d, body = parse_magic_reply(ours[0])
            if ours[1] != "eof" or d.get(b"status") != b"ok":
                raise ValueError(f"status {d.get(b'status')!r}, close {ours[1]}")
            if int(d[b"size"]) != len(body):
                raise ValueError(f"size var {d[b'size']!r} but {len(body)} body bytes")
            keys, i = [], 0
            while i < len(body):
                kl = struct.unpack_from("<H", body, i)[0]
                keys.append(bytes(body[i + 2:i + 2 + kl]))
                i += 2 + kl
            if i != len(body) or int(d[b"count"]) != len(keys):
                raise ValueError(f"count var {d[b'count']!r} but {len(keys)} keys in the body")
        except (ValueError, KeyError, struct.error) as e:
            problems.append(f"our keys reply is malformed ({e}):\n" + show("ours", ours[0], ours[1]))
            return problems
        sure, unsure = split_by_expiry(uwsgi_dump_items(pair, cache))
        if len(set(keys)) != len(keys):
            problems.append(f"our keys reply lists a key twice: {sorted(keys)}")
        if not (sure <= set(keys) <= sure | unsure):
            problems.append(f"our keys differ from the keys in uWSGI's dump: only ours {sorted(set(keys) - sure - unsure)}, "
                            f"only uWSGI {sorted(sure - set(keys))}")
        return problems
    return check


def ext_stats_check(cache):
    def check(uw, ours, pair):
        problems = []
        if uw != (b"", "eof"):
            problems.append("uWSGI answered our extension cmd:\n" + diff_text(uw, ours))
        items, bs, ks = GEOMETRY[cache]
        want_names = [b"status", b"name", b"items", b"capacity", b"blocksize", b"keysize", b"hits", b"misses",
                      b"full", b"evictions", b"expirations", b"lock_waits", b"lookups", b"probes",
                      b"shard_recoveries", b"last_modified_at"]
        try:
            d, body = parse_magic_reply(ours[0])
            size = struct.unpack_from("<H", ours[0], 1)[0]
            names = [k for k, _ in parse_vars(ours[0][4:4 + size])]
        except (ValueError, struct.error) as e:
            return problems + [f"our stats reply is malformed ({e}):\n" + show("ours", ours[0], ours[1])]
        if ours[1] != "eof" or body:
            problems.append(f"our stats reply: close {ours[1]}, {len(body)} body bytes (want eof, no body)")
        if names != want_names:
            problems.append(f"our stats vars {names} (want {want_names})")
        if not all(d.get(k, b"x").isdigit() for k in want_names[2:]):
            problems.append(f"our stats vars are not all decimal: {d}")
        for k, v in ((b"status", b"ok"), (b"name", cache.encode()), (b"capacity", str(items).encode()),
                     (b"blocksize", str(bs).encode()), (b"keysize", str(ks).encode())):
            if d.get(k) != v:
                problems.append(f"our stats {k.decode()} = {d.get(k)!r}, want {v!r}")
        uw_items = uwsgi_dump_items(pair, cache)
        sure, unsure = split_by_expiry(uw_items)
        # an item of ours whose time is up and that uWSGI's sweeper already freed: counted until ours runs
        unsure |= {k for (c, k), at in EXPIRING.items() if c == cache and at <= time.time() + 1 and k not in sure}
        if d.get(b"items", b"").isdigit() and not len(sure) <= int(d[b"items"]) <= len(sure) + len(unsure):
            ours_items = our_dump_items(pair, cache)
            problems.append(f"our stats items = {int(d[b'items'])}, uWSGI's dump holds {len(sure)} (+{len(unsure)} expiring"
                            " or expired)"
                            f" at {time.time():.3f}; only in our dump (key: expires): "
                            f"{ {k: e for k, (_, e) in ours_items.items() if k not in uw_items} }, only in uWSGI's: "
                            f"{ {k: e for k, (_, e) in uw_items.items() if k not in ours_items} }; our stats "
                            f"{ {k.decode(): v.decode() for k, v in d.items()} }")
        return problems
    return check


# --------------------------------------------------------------------------------------------------
# the tests

STATE = {}


def start_pair(buffer_uw, buffer_ours, caches):
    uw_port, our_port = free_port(), free_port()
    while our_port == uw_port:
        our_port = free_port()
    srv = Tracked(ours_args(our_port, caches, buffer_ours), workers=1)
    uw = Uwsgi(uw_port, caches, buffer_uw)
    return uw, srv


class Tracked(Server):
    def start(self):
        super().start()
        _PGIDS.append(("ours", self.pid))
        return self


def test_protocol_table():
    """Every case of the table against both servers (buffer-size 65535 on both)."""
    need_uwsgi()
    t = Table()
    build_cases(t)
    fill = Table()
    build_fill_cases(fill)
    uw, srv = start_pair(65535, 65535, CACHES)
    with srv, uw:
        pair = Pair(uw.addr, srv.ready_addrs[0])
        our_workers = srv.workers()
        t0 = time.monotonic()
        failures = run_cases(pair, t.cases, "protocol table")

        # expiring items (set with expires=2 at the start): gone on both once the sweepers ran
        left = 4.5 - (time.monotonic() - t0)
        if left > 0:
            time.sleep(left)
        exp = Table()
        exp.mget("e1", None, name="magic get 'e1' after its expiry")
        exp.mcmd("exists", "e1", False, name="magic exists 'e1' after its expiry")
        exp.get0("e1", None, name="mod2 0 get 'e1' after its expiry")
        exp.mget("e2", None, cache="small", name="magic get 'e2' cache=small after its expiry")
        exp.mset("e1", "again", True, name="magic set 'e1' after its expiry (set succeeds)")
        exp.mget("e1", b"again")
        failures += run_cases(pair, exp.cases, "expiry")
        failures += run_cases(pair, fill.cases, "full caches and clears")
        for ck in fill.keys:
            if ck not in t.keys:
                t.keys.append(ck)
        t.excluded.update(fill.excluded)

        # state equivalence: read back every key the table touched, with every read command
        back = Table()
        for cache, key in t.keys:
            if (cache, key) in t.excluded:
                print(f"  (not read back: {cache}/{key!r}: {t.excluded[(cache, key)]})")
                continue
            req = magic_get_req(key, cache=None if cache == DEFAULT else cache)
            back.add(Case(f"read-back magic get {cache}/{key[:40]!r}", req, "autoget"))
            if cache == DEFAULT and key:  # (an empty key = an empty payload: covered by the table)
                back.add(Case(f"read-back mod2 0 get {key[:40]!r}", packet(111, 0, key), "auto0",
                              note="masked heap-address bytes 0..3"))
                back.add(Case(f"read-back mod2 5 get {key[:40]!r}", packet(111, 5, key), "auto5",
                              note="masked heap-address bytes 0..3"))
            pairs = [("cmd", "exists"), ("key", key)] + ([("cache", cache)] if cache != DEFAULT else [])
            back.add(Case(f"read-back magic exists {cache}/{key[:40]!r}", packet(111, 17, vars_block(pairs))))
        failures += run_cases(pair, back.cases, "state read-back", quiet=True)

        # dumps (content compared once decoded)
        for cache in (None, "small", "nosuch"):
            if cache == "nosuch":
                failures += run_cases(pair, [Case("mod2 6 dump 'nosuch' (unknown cache: no reply)",
                                                  packet(111, 6, b"nosuch"), want=(b"", "eof"))], "dump")
            else:
                failures += check_dump(pair, cache)
        failures += check_health(uw, srv, our_workers)
        print(f"  protocol table + read-back + dumps took {time.monotonic() - t0:.1f}s")
        STATE["ran"] = True
    fail_if(failures, "protocol")


def test_buffer_size_4096():
    """uWSGI's default --buffer-size 4096 against ours with --buffer-size 4096: the same packets pass
    and fail. The limit is on datasize (the vars/array/raw payload), not on the body."""
    need_uwsgi()
    caches = [("main", 8, 65536, 64)]
    uw, srv = start_pair(None, 4096, caches)   # None: uWSGI's default, 4096
    with srv, uw:
        pair = Pair(uw.addr, srv.ready_addrs[0])
        t = Table()
        # MASKED close: over buffer-size uWSGI closes with the packet unread (a reset); we half-close
        # first so the client reads an orderly EOF (protocol.md §6). Neither replies nor stores anything.
        def over_limit(name, req):
            t.add(Case(name, req, "split", want_uw=(b"", "reset"), want_ours=(b"", "eof"),
                       note="deliberate: orderly close instead of a reset (protocol.md §6)"))
        for total in (4095, 4096, 4097, 4100, 8000):
            key = f"a{total}"
            value = b"v" * (total - 2 - len(key) - 2)
            if total <= 4096:
                t.set1([key, value], name=f"mod2 1 set with datasize {total} (buffer-size 4096)", track=[key])
            else:
                t.key(None, key)
                over_limit(f"mod2 1 set with datasize {total} (over buffer-size 4096)",
                           packet(111, 1, array_block([key, value])))
            t.same(f"magic get '{key}' (stored only if datasize <= 4096)", magic_get_req(key))
        t.get0("k" * 4096, None, name="mod2 0 get with a 4096-byte key (datasize 4096: accepted, miss)")
        over_limit("mod2 0 get with a 4097-byte key (over buffer-size)", packet(111, 0, b"k" * 4097))
        over_limit("mod2 17 get with 4097 bytes of vars (over buffer-size)",
                   packet(111, 17, vars_block([("cmd", "get"), ("key", "k1"), ("pad", "x" * (4097 - 23))])))
        over_limit("unknown mod2 9 with 5000 bytes (over buffer-size)", packet(111, 9, b"x" * 5000))
        t.mset("body5000", bytes(range(256)) * 19 + b"x" * 136, True,
               name="magic set with a 5000-byte body (the body is not limited by buffer-size)")
        t.mget("body5000", bytes(range(256)) * 19 + b"x" * 136)
        t.noreply("mod2 6 dump of an unknown cache", packet(111, 6, b"nosuch"))
        our_workers = srv.workers()
        failures = run_cases(pair, t.cases, "buffer-size 4096")
        failures += check_health(uw, srv, our_workers)
    fail_if(failures, "buffer-size 4096")


def test_no_process_left():
    """Every process of every uWSGI and server we started is gone (both are stopped by the tests)."""
    for u in list(_UWSGIS):
        u.stop()
    if not _PGIDS:
        raise Skip("no server was started")
    left = {}
    for who, pgid in _PGIDS:
        wait_until(lambda: not live_in_group(pgid), 3)
        if live_in_group(pgid):
            left[f"{who} process group {pgid}"] = live_in_group(pgid)
    assert not left, f"processes left behind: {left}"
    print(f"  no process left in the {len(_PGIDS)} process groups started")


if __name__ == "__main__":
    run_tests([test_protocol_table, test_buffer_size_4096, test_no_process_left], budget=150)
