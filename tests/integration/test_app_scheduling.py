#!/usr/bin/env python3
"""No application request waits behind a busy worker while another could run it (issue 13, item 1).

--processes 4 with the default --threads: 8 clients each send 4 requests, one connection each, to a
WSGI app that sleeps 150 ms and answers its pid and the CLOCK_MONOTONIC times it started and ended;
each client notes (same clock) when its request was sent, and the request log gives how long each
request took the worker (so when it took it). A worker whose one thread is busy stops
taking connections, so each queued connection goes to the first worker whose thread frees. What is
checked is that property, from those records, not how long the batch took (which the machine's load
decides): no request waited while some worker had a thread free for as long as a whole service time
(the 150 ms sleep) -- before that worker's first request, between two of its requests or after its
last. The batch starts once every worker has served (see run_batch: a worker still starting is not
idle). Every worker must serve, and none runs more requests at once than its threads. With
--threads 2 and 2 processes, each worker runs two requests at once and never more.

A hand-off between one request and the next on a worker (the thread's completion wakes the loop, which
writes the reply, accepts the next connection and wakes a thread) takes 1-2 ms, up to 133 ms seen under
ASan at load ~20: a CPU-starved worker, not a scheduling fault, and below a service time. The old
loop's fault served this batch with 2 of the 4 workers in 4.5 s: the two others sat free for the whole
batch while requests waited seconds. test_check_catches_idle_workers shows the check fails on that:
the real schedule of the batch on 2 workers, checked as if 4 had been started (two free for the whole
batch), and a replayed schedule where one worker of four sits free for 400 ms mid-batch while
requests queue on the others. The batch's time against the ideal (32 x 150 ms over the workers) is
printed as a figure (docs/architecture.md quotes it), not asserted: the machine's load decides it.
"""
import os
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (Server, check, check_eq, connect, free_port, in_thread, make_temp_dir, read_reply, run_tests,
                     wait_until, wsgi_req)

APP = r'''
import os, time
def application(environ, start_response):
    start = time.monotonic()
    time.sleep(0.15)
    end = time.monotonic()
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"%d %.6f %.6f" % (os.getpid(), start, end)]
'''

SLEEP_S = 0.15
LOG_RE = re.compile(r"^sched (\d+) (/c\d+/r\d+) (\d+)$", re.M)


def app_request(addr, path):
    """(pid, sent, start, end, path): the client's time once the request is sent, the app's times."""
    s = connect(addr, timeout=20)
    try:
        s.sendall(wsgi_req(path))
        sent = time.monotonic()  # CLOCK_MONOTONIC, as the app's time.monotonic() in the workers
        reply, how = read_reply(s, timeout=20)
    finally:
        s.close()
    check(how == "eof" and reply.startswith(b"HTTP/1.1 200"), f"app reply {reply[:80]!r} ({how})")
    pid, start, end = reply.split(b"\r\n\r\n", 1)[1].split()
    return int(pid), sent, float(start), float(end), path


def free_intervals(spans, threads):
    """The intervals (from -inf to +inf) over which fewer than `threads` of these (start, end) run."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])  # an end before a start at a tie
    free, busy, since = [], 0, float("-inf")
    for t, step in events:
        if busy < threads and busy + step >= threads:
            free.append((since, t))
        elif busy >= threads and busy + step < threads:
            since = t
        busy += step
    free.append((since, float("inf")))
    return free


def waits_beside_free_workers(records, workers, threads, service):
    """Each time a request waited (from its send to its start) for at least `service` while a worker had a
    thread free: (worker pid, request, seconds). records: (pid, sent, start, end)."""
    found = []
    for w in workers:
        for a, b in free_intervals([(s, e) for pid, _, s, e in records if pid == w], threads):
            for r in records:
                overlap = min(b, r[2]) - max(a, r[1])
                if overlap >= service:
                    found.append((w, r, overlap))
    return found


def describe(found, t0):
    return "; ".join(f"worker {w} had a free thread for {overlap * 1e3:.0f} ms while the request sent at "
                     f"+{r[1] - t0:.3f} s waited (started +{r[2] - t0:.3f} s on {r[0]})"
                     for w, r, overlap in found[:5]) + (f" (and {len(found) - 5} more)" if len(found) > 5 else "")


def run_batch(processes, threads, clients, per_client):
    """Runs the batch; returns (records, pids of the workers, most requests at once per worker): a record is
    (pid, sent, taken, end), the times the client sent it, the worker took it, the app ended."""
    d = make_temp_dir("sched-")
    with open(os.path.join(d, "sched_app.py"), "w") as f:
        f.write(APP)  # before the server starts: nothing reads it yet
    port = free_port()
    addr = ("127.0.0.1", port)
    args = ["--socket", f"127.0.0.1:{port}", "--module", "sched_app", "--chdir", d, "--processes", str(processes),
            "--logformat", "sched %(pid) %(uri) %(micros)"]
    if threads is not None:
        args += ["--threads", str(threads)]
    with Server(args, workers=processes) as srv:
        workers = set(srv.workers())
        # Every worker up before the batch: the harness sees a worker once forked, and a worker still
        # setting up (its loop, its first request's imports: under ASan at load 15 a worker came up 172
        # ms into the batch) is starting, not idle. A round of one request per thread reaches each
        # worker that is up (a busy worker takes no more while another has a free thread).
        warmed = set()
        for _ in range(20):
            pool = [in_thread(app_request, addr, "/warm") for _ in range(processes * (threads or 1))]
            for t, result in pool:
                t.join(timeout=30)
                check("value" in result, f"warm-up request: {result.get('error')!r}")
                warmed.add(result["value"][0])
            if warmed >= workers:
                break
        check(warmed >= workers, f"warm-up: {sorted(warmed)} served, workers are {sorted(workers)}")
        results, errors = [], []
        go = threading.Barrier(clients + 1)

        def client(n):
            go.wait()
            for i in range(per_client):
                try:
                    results.append(app_request(addr, f"/c{n}/r{i}"))
                except Exception as e:  # reported below, with the others
                    errors.append(repr(e))
        pool = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
        for t in pool:
            t.start()
        go.wait()
        for t in pool:
            t.join(timeout=30)
        check(not errors, f"client errors: {errors[:3]}")
        check_eq(len(results), clients * per_client, "replies")
        pids = {r[0] for r in results}
        check(pids <= workers, f"replies from {sorted(pids)}, workers are {sorted(workers)}")
        # A worker is busy from when it takes a request, not only while the app runs: a worker's first
        # request also loads what the app's first call needs (under ASan at load 12: 150-230 ms before
        # the app started). The request log's time, taken to its line, ends after the app's: the app's
        # end less that time is at or before the take.
        logged = wait_until(lambda: (lambda m: m if len(m) == len(results) else None)(LOG_RE.findall(srv.log())), 10)
        check(logged, f"request log lines: {len(LOG_RE.findall(srv.log()))} of {len(results)}")
        micros = {(int(pid), uri): int(us) for pid, uri, us in logged}
    records = [(pid, sent, end - micros[(pid, path)] / 1e6, end) for pid, sent, _, end, path in results]
    slots = processes * (threads or 1)
    service = sum(r[3] - r[2] for r in results)
    # The batch as the server lived it, first request in to last out: the figure, not a check.
    wall = max(r[3] for r in results) - min(r[2] for r in results)
    ideal = max(clients * per_client * SLEEP_S / slots, service / slots)
    most, gaps = {}, []
    for pid in pids:
        spans = [(r[2], r[3]) for r in results if r[0] == pid]
        now = peak = 0
        for _, step in sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans]):
            now += step
            peak = max(peak, now)
        most[pid] = peak
        ends, starts = sorted(e for _, e in spans), sorted(s for s, _ in spans)
        gaps += [b - a for a, b in zip(ends, starts[threads or 1:])]
    print(f"handoff gaps: mean {sum(gaps) / max(1, len(gaps)) * 1e3:.1f} ms, max {max(gaps, default=0) * 1e3:.1f} ms; "
          f"longest wait {max(r[2] - r[1] for r in records) * 1e3:.0f} ms, longest before the app "
          f"{max(r[2] - t for r, (_, _, t, _) in zip(results, records)) * 1e3:.0f} ms")
    print(f"--processes {processes} --threads {threads or 'default'}: {len(results)} requests in {wall:.3f} s, "
          f"ideal {ideal:.3f} s (mean service {service / len(results) * 1e3:.1f} ms), ratio {wall / ideal:.3f}; "
          f"per worker {sorted(len([r for r in results if r[0] == p]) for p in pids)}, most at once {sorted(most.values())}")
    return records, workers, most


def check_schedule(results, workers, threads):
    t0 = min(r[1] for r in results)
    found = waits_beside_free_workers(results, workers, threads, SLEEP_S)
    check(not found, f"requests waited while a worker was free: {describe(found, t0)}")


def test_four_workers_default_threads():
    results, workers, most = run_batch(processes=4, threads=None, clients=8, per_client=4)
    check_eq(len(most), 4, "workers that served")
    check(max(most.values()) <= 1, f"a worker ran more requests at once than its one thread: {most}")
    check_schedule(results, workers, 1)


def test_two_workers_two_threads_each():
    results, workers, most = run_batch(processes=2, threads=2, clients=8, per_client=4)
    check_eq(sorted(most.values()), [2, 2], "requests at once per worker")
    check_schedule(results, workers, 2)


def test_check_catches_idle_workers():
    # The old fault's schedule, for real: the batch served by 2 workers, checked as if 4 had started.
    results, workers, _ = run_batch(processes=2, threads=None, clients=8, per_client=4)
    phantoms = {-1, -2}  # two started workers that never served
    found = waits_beside_free_workers(results, workers | phantoms, 1, SLEEP_S)
    print(f"2 of 4 workers serving: {len(found)} waits beside a free worker, longest "
          f"{max((o for _, _, o in found), default=0) * 1e3:.0f} ms")
    check({w for w, _, _ in found} == phantoms,
          f"the check misses 2 of 4 workers sitting free (it found {len(found)}: {describe(found, min(r[1] for r in results))})")
    check_schedule(results, workers, 1)  # the same records are a correct schedule for 2 workers
    # Replayed: 8 clients x 4 requests on 4 one-thread workers, each request (in the order sent) going to
    # the worker free first, each client's next request sent 1 ms after its reply; with `stall`, worker 4
    # takes nothing from 0.3 s to 0.7 s while the others' queues hold requests (a hand-off that never came).
    def replay(stall):
        free_at, queue, out = {1: 0.0, 2: 0.0, 3: 0.0, 4: 0.0}, [(0.0, c, 0) for c in range(8)], []
        while queue:
            queue.sort()
            sent, c, n = queue.pop(0)

            def ready(w):
                t = max(free_at[w], sent)
                return 0.7 if stall and w == 4 and 0.3 <= t < 0.7 else t
            w = min(free_at, key=ready)
            start = ready(w)
            out.append((w, sent, start, start + SLEEP_S))
            free_at[w] = start + SLEEP_S
            if n + 1 < 4:
                queue.append((start + SLEEP_S + 0.001, c, n + 1))
        return out
    check_eq(waits_beside_free_workers(replay(False), {1, 2, 3, 4}, 1, SLEEP_S), [], "the replayed fair schedule")
    stalled = waits_beside_free_workers(replay(True), {1, 2, 3, 4}, 1, SLEEP_S)
    print(f"worker 4 of 4 free for 400 ms (replayed): {len(stalled)} waits beside it")
    check(stalled and {w for w, _, _ in stalled} == {4}, f"the check misses worker 4 free for 400 ms: {stalled[:3]}")


if __name__ == "__main__":
    run_tests([test_four_workers_default_threads, test_two_workers_two_threads_each, test_check_catches_idle_workers],
              budget=60)
