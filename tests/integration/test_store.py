"""--cache-store / store=: the cache survives a graceful stop (SIGTERM), an immediate stop (SIGINT), a
reload (SIGHUP) and a SIGKILL of every process after a sync, byte for byte; a store of another geometry,
a file that is not a store, a truncated file or a damaged header are refused with a clear message
(store_delete discards a store of ours, never a foreign file); a damaged item is dropped and counted.
See docs/persistence.md."""

import os
import re
import signal
import struct
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Server, check, check_eq, free_port, magic_get, magic_set, make_temp_dir,  # noqa: E402
                     run_server_to_exit, run_tests)

N = 500


def value_for(key, round_no=0):
    # Binary, varied lengths (1..300 bytes), self-describing.
    body = f"{key}|{round_no}|".encode() + bytes((i * 37 + len(key)) % 256 for i in range(len(key) * 7 % 280))
    return body


def start(store, extra=(), processes=2, cache="--cache", debug=True):
    port = free_port()
    if cache == "--cache":
        args = ["--cache", "1000", "--cache-blocksize", "512", "--cache-store", store]
    else:
        args = ["--cache2", f"name=named,items=1000,blocksize=512,store={store}"]
    args = ["--socket", f"127.0.0.1:{port}", "--processes", str(processes)] + args + list(extra)
    if debug:
        args.append("--log-debug")
    return Server(args, workers=processes), ("127.0.0.1", port)


def fill(addr, n=N, round_no=0, **kw):
    for i in range(n):
        key = f"item-{i}"
        check(magic_set(addr, key, value_for(key, round_no), cmd="update", **kw), f"set {key}")


def verify(addr, n=N, round_no=0, **kw):
    bad = []
    for i in range(n):
        key = f"item-{i}"
        got = magic_get(addr, key, **kw)
        if got != value_for(key, round_no):
            bad.append((key, got[:40] if got else got))
    check(not bad, f"{len(bad)} of {n} items not restored byte for byte, e.g. {bad[:3]}")


def restored_count(srv):
    m = re.findall(r"\[uwsgi-cache\] restored (\d+) items", srv.log())
    return int(m[-1]) if m else None


def restart_and_verify(store, n=N, round_no=0, **kw):
    srv, addr = start(store, **kw)
    with srv:
        check("recovered cache from backing store file: " + store in srv.log(), "no 'recovered cache' line")
        check_eq(restored_count(srv), n, "restored items logged")
        verify(addr, n, round_no, **({"cache": "named"} if kw.get("cache") == "--cache2" else {}))
        srv.stop(signal.SIGTERM)


def test_sigterm_then_restart_all_items_byte_exact():
    store = os.path.join(make_temp_dir("st-"), "cache.store")
    srv, addr = start(store)
    with srv:
        check("creating a new cache store file: " + store in srv.log(), "no 'creating a new cache store' line")
        fill(addr)
        check_eq(srv.stop(signal.SIGTERM), 0, "exit status after SIGTERM")
        check(re.search(r'store .* flushed in \d+ ms', srv.log()), "no flush logged at stop")
    restart_and_verify(store)


def test_sigint_then_restart():
    store = os.path.join(make_temp_dir("st-"), "cache.store")
    srv, addr = start(store)
    with srv:
        fill(addr, round_no=1)
        check_eq(srv.stop(signal.SIGINT), 0, "exit status after SIGINT")
        check(re.search(r'store .* flushed in \d+ ms', srv.log()), "no flush logged at SIGINT")
    restart_and_verify(store, round_no=1)


def test_sigkill_after_sync_then_restart():
    store = os.path.join(make_temp_dir("st-"), "cache.store")
    srv, addr = start(store, extra=["--cache-store-sync", "1"])
    with srv:
        fill(addr, round_no=2)
        off = srv.log_size()
        check(srv.wait_log(r'store sync: cache "default": done in \d+ ms', timeout=5.0, offset=off),
              "no store sync logged within 5 s")
        srv.kill_all()  # SIGKILL of the whole process group
    restart_and_verify(store, round_no=2)


def test_sighup_reload_keeps_items():
    store = os.path.join(make_temp_dir("st-"), "cache.store")
    srv, addr = start(store)
    with srv:
        fill(addr, n=100, round_no=3)
        old = srv.workers()
        srv.send_signal(signal.SIGHUP)
        srv.wait_workers(2, timeout=10.0, exclude=old)
        verify(addr, n=100, round_no=3)


def test_cache2_store_and_store_sync():
    store = os.path.join(make_temp_dir("st-"), "named.store")
    port = free_port()
    args = ["--socket", f"127.0.0.1:{port}", "--processes", "1", "--log-debug",
            "--cache2", f"name=named,items=1000,blocksize=512,store={store},store_sync=1"]
    addr = ("127.0.0.1", port)
    with Server(args, workers=1) as srv:
        fill(addr, n=200, round_no=4, cache="named")
        check(srv.wait_log(r'store sync: cache "named": done', timeout=5.0), "no store_sync for the --cache2 cache")
        srv.kill_all()
    with Server(args, workers=1) as srv:
        check_eq(restored_count(srv), 200, "restored items logged")
        verify(addr, n=200, round_no=4, cache="named")


def test_geometry_mismatch_refused_then_store_delete():
    store = os.path.join(make_temp_dir("st-"), "cache.store")
    srv, addr = start(store, processes=1)
    with srv:
        fill(addr, n=10)
        srv.stop(signal.SIGTERM)
    before = open(store, "rb").read()
    port = free_port()
    rc, out, left = run_server_to_exit(["--socket", f"127.0.0.1:{port}", "--cache", "2000", "--cache-blocksize", "512",
                                        "--cache-store", store])
    check(rc not in (None, 0), f"server started on a store of another geometry (status {rc})")
    check("items 1000 in the file, 2000 configured" in out, f"message does not say what differs: {out[-600:]}")
    check("--cache-store-delete" in out, f"message does not say how to proceed: {out[-600:]}")
    check_eq(left, [], "processes left")
    check(open(store, "rb").read() == before, "the refused store file was modified")
    with Server(["--socket", f"127.0.0.1:{port}", "--cache", "2000", "--cache-blocksize", "512",
                 "--cache-store", store, "--cache-store-delete"], workers=1) as srv2:
        check("Removing invalid cache store file: " + store in srv2.log(), "no 'Removing invalid' line")
        check("creating a new cache store file: " + store in srv2.log(), "no 'creating' line")
        check_eq(magic_get(("127.0.0.1", port), "item-1"), None, "item of the discarded store")


def test_not_a_store_refused_never_overwritten():
    path = os.path.join(make_temp_dir("st-"), "precious.db")
    content = b"SQLite format 3\x00" + os.urandom(20000)
    with open(path, "wb") as f:
        f.write(content)
    port = free_port()
    for extra in ([], ["--cache-store-delete"]):
        rc, out, left = run_server_to_exit(["--socket", f"127.0.0.1:{port}", "--cache", "100",
                                            "--cache-store", path] + extra)
        check(rc not in (None, 0), "server started on a file that is not a store")
        check("is not a cache store file" in out, f"unclear message: {out[-400:]}")
        check_eq(left, [], "processes left")
    check(open(path, "rb").read() == content, "a foreign file was modified")


def _header_field(path, offset, fmt="<Q"):
    with open(path, "rb") as f:
        f.seek(offset)
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]


def test_truncated_and_damaged_header_refused():
    d = make_temp_dir("st-")
    store = os.path.join(d, "cache.store")
    srv, addr = start(store, processes=1)
    with srv:
        fill(addr, n=10)
        srv.stop(signal.SIGTERM)
    good = open(store, "rb").read()
    port = free_port()
    args = ["--socket", f"127.0.0.1:{port}", "--cache", "1000", "--cache-blocksize", "512", "--cache-store", store]
    cases = [("truncated", good[: len(good) // 2], "truncated or extended"),
             ("header byte flipped", good[:90] + bytes([good[90] ^ 0x40]) + good[91:], "header is damaged")]
    for what, data, expect in cases:
        with open(store, "wb") as f:
            f.write(data)
        rc, out, left = run_server_to_exit(args)
        check(rc not in (None, 0), f"{what}: server started")
        check(expect in out, f"{what}: message lacks {expect!r}: {out[-400:]}")
        check_eq(left, [], "processes left")


def test_damaged_item_dropped_and_counted():
    d = make_temp_dir("st-")
    store = os.path.join(d, "cache.store")
    srv, addr = start(store, processes=1)
    with srv:
        fill(addr, n=50, round_no=5)
        srv.stop(signal.SIGTERM)
    # RegionHeader: items_offset at 64, blocks_offset at 72, geometry at 80 (block_size at 80 + 24).
    items_off = _header_field(store, 64)
    blocks_off = _header_field(store, 72)
    block_size = _header_field(store, 80 + 24)
    data = bytearray(open(store, "rb").read())
    # Item fields: keylen at 8 (64-byte items since format version 4, cache/layout.hpp). Find the slot of
    # item-7 (short key: inline in its block).
    victim = None
    for slot in range(1000):
        kl = struct.unpack_from("<I", data, items_off + 64 * slot + 8)[0]
        if kl and data[blocks_off + block_size * slot: blocks_off + block_size * slot + kl] == b"item-7":
            victim = slot
            break
    check(victim is not None, "item-7 not found in the store file")
    data[blocks_off + block_size * victim + 10] ^= 0xFF  # a value byte
    with open(store, "wb") as f:
        f.write(data)
    srv, addr = start(store, processes=1)
    with srv:
        check_eq(restored_count(srv), 49, "restored items")
        check("dropped 1 damaged item(s)" in srv.log(), "damaged item not logged")
        check_eq(magic_get(addr, "item-7"), None, "the damaged item was served")
        for i in range(50):
            if i != 7:
                check_eq(magic_get(addr, f"item-{i}"), value_for(f"item-{i}", 5), f"item-{i}")


if __name__ == "__main__":
    run_tests([test_sigterm_then_restart_all_items_byte_exact, test_sigint_then_restart,
               test_sigkill_after_sync_then_restart, test_sighup_reload_keeps_items,
               test_cache2_store_and_store_sync, test_geometry_mismatch_refused_then_store_delete,
               test_not_a_store_refused_never_overwritten, test_truncated_and_damaged_header_refused,
               test_damaged_item_dropped_and_counted], budget=150)
