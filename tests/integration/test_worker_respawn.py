"""A worker killed with SIGKILL is reaped, logged (its pid and the signal) and respawned at once (the
same worker id started again, no throttle delay: docs/architecture.md); the cache survives; the master
survives a worker being killed 10 times in a row."""

import os
import signal
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Server, app_get, check, check_eq, free_port, magic_get, magic_set, pid_alive,  # noqa: E402
                     run_tests, wait_until, zombie_children)


def start(processes=2):
    port = free_port()
    srv = Server(["--socket", f"127.0.0.1:{port}", "--processes", str(processes), "--cache", "100"],
                 workers=processes)
    return srv, ("127.0.0.1", port)


def test_sigkill_one_worker():
    srv, addr = start(2)
    with srv:
        check(magic_set(addr, "before", "kept"), "set before the kill")
        old = srv.workers()
        victim = old[0]
        off = srv.log_size()
        t0 = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        ws = wait_until(lambda: (lambda w: w if len(w) == 2 and victim not in w else None)(srv.workers()), 10.0,
                        interval=0.01)
        dt = time.monotonic() - t0
        print(f"respawned after {dt:.3f}s: {old} -> {srv.workers()}")
        check(ws, f"no new worker within 10 s of SIGKILL to {victim}: workers {srv.workers()}")
        check(old[1] in ws, f"the other worker {old[1]} was replaced too: {ws}")
        # "at once": the master's log has the death, then the same worker id started again, and no
        # throttle ("respawning in N ms") in between
        fresh = (set(ws) - set(old)).pop()
        m = srv.wait_log(r"worker (\d+) \(pid %d\) died: .*\n(?:.*\n)*?.*worker \1 \(pid %d\) started" % (victim, fresh),
                         5.0, off)
        check(m, f"no 'died' line for {victim} followed by the same worker id starting as {fresh}:\n"
              + srv.log_since(off))
        check("respawning in" not in srv.log_since(off), f"the respawn was throttled: {srv.log_since(off)}")
        check(victim not in zombie_children(srv.pid), f"the killed worker {victim} is a zombie (not reaped)")
        # requests succeed, the cache survived
        for _ in range(6):
            check_eq(magic_get(addr, "before"), b"kept", "value set before the kill")
            app_get(addr)
        check(magic_set(addr, "after", "new"), "set after the respawn")
        check_eq(magic_get(addr, "after"), b"new", "get after the respawn")
        # the log names the dead pid and the signal
        m = wait_until(lambda: srv.death_logged(victim, off), 2.0, interval=0.05)
        print("log after the kill:", srv.log_lines(off)[:4])
        check(m, f"no log line naming the dead pid {victim} and signal 9/SIGKILL")
        check_eq(srv.stop(), 0, "exit status after SIGTERM")
        check(srv.wait_no_leftovers(3.0), f"processes left: {srv.leftovers()}")


def test_kill_workers_ten_times():
    srv, addr = start(2)
    with srv:
        check(magic_set(addr, "survivor", "yes"), "set before the kills")
        killed = []
        t0 = time.monotonic()
        loops = 0
        while len(killed) < 10 and time.monotonic() - t0 < 15 and loops < 100000:
            loops += 1
            fresh = [w for w in srv.workers() if w not in killed]
            if not fresh:
                time.sleep(0.005)
                continue
            os.kill(fresh[0], signal.SIGKILL)
            killed.append(fresh[0])
        dt = time.monotonic() - t0
        print(f"{len(killed)} workers killed in {dt:.2f}s")
        check(srv.running(), f"the master died during the kills (status {srv.proc.returncode})")
        check_eq(len(killed), 10, "workers killed within 15 s (respawn too slow?)")
        ws = srv.wait_workers(2, timeout=10.0, exclude=killed)
        print(f"recovered in {time.monotonic() - t0 - dt:.2f}s after the last kill: {ws}")
        check(len(ws) == 2 and not set(ws) & set(killed), f"workers after the kills: {ws}")
        check(srv.running(), "the master died")
        for _ in range(6):
            check_eq(magic_get(addr, "survivor"), b"yes", "cache after 10 kills")
            app_get(addr)
        zs = [z for z in zombie_children(srv.pid) if z in killed]
        check(not zs, f"killed workers not reaped (zombies): {zs}")
        check(not [k for k in killed if pid_alive(k)], "a killed worker is alive?")
        unnamed = [k for k in killed if not srv.death_logged(k)]
        check(not unnamed, f"deaths not logged (pid + signal 9): {unnamed}")
        check_eq(srv.stop(), 0, "exit status after SIGTERM")
        check(srv.wait_no_leftovers(3.0), f"processes left: {srv.leftovers()}")


if __name__ == "__main__":
    run_tests([test_sigkill_one_worker, test_kill_workers_ten_times], budget=55)
