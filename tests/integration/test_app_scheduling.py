#!/usr/bin/env python3
"""No application request waits behind a busy worker while another could run it (issue 13, item 1).

--processes 4 with the default --threads: 8 clients each send 4 requests, one connection each, to a
WSGI app that sleeps 150 ms and answers its pid and the CLOCK_MONOTONIC times it started and ended.
Every worker must serve, and the batch (first request in to last out, from the app's own clock) must end within 1.15x of the
ideal (32 x 150 ms over 4 workers):
a worker whose one thread is busy stops taking connections, so each queued connection goes to the first
worker whose thread frees. The ideal is computed from the service times the app measured itself, not
assumed to be exactly 150 ms each: on a loaded machine a sleep overshoots, and that is not scheduling.
With --threads 2 and 2 processes, each worker runs two requests at once and never more.

What the bound still depends on besides scheduling: the hand-off between one request and the next on a
worker (the thread's completion wakes the loop, which writes the reply, accepts the next connection and
wakes a thread: about 1-2 ms, printed as "handoff gaps"). On a machine with far more runnable processes
than cores those wake-ups wait for a CPU (seen: load 14 on 2 cores, mean gap 10 ms, ratio 1.09); the
bound leaves about 20 ms per hand-off. A scheduling fault shows as idle workers instead: the old loop
served this batch with 2 of the 4 workers in 4.5 s.
"""
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import Server, check, check_eq, free_port, make_temp_dir, request, run_tests, wsgi_req

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
SLACK = 1.15


def app_request(addr, path):
    reply, how = request(addr, wsgi_req(path), timeout=20)
    check(how == "eof" and reply.startswith(b"HTTP/1.1 200"), f"app reply {reply[:80]!r} ({how})")
    pid, start, end = reply.split(b"\r\n\r\n", 1)[1].split()
    return int(pid), float(start), float(end)


def run_batch(processes, threads, clients, per_client, bound=True):
    d = make_temp_dir("sched-")
    with open(os.path.join(d, "sched_app.py"), "w") as f:
        f.write(APP)
    port = free_port()
    addr = ("127.0.0.1", port)
    args = ["--socket", f"127.0.0.1:{port}", "--module", "sched_app", "--chdir", d, "--processes", str(processes)]
    if threads is not None:
        args += ["--threads", str(threads)]
    with Server(args, workers=processes) as srv:
        workers = set(srv.workers())
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
        t0 = time.monotonic()
        for t in pool:
            t.join(timeout=30)
        client_wall = time.monotonic() - t0
        check(not errors, f"client errors: {errors[:3]}")
        check_eq(len(results), clients * per_client, "replies")
        per_worker = {}
        for pid, start, end in results:
            per_worker.setdefault(pid, []).append((start, end))
        check(set(per_worker) <= workers, f"replies from {sorted(per_worker)}, workers are {sorted(workers)}")
        slots = processes * (threads or 1)
        service = sum(end - start for _, start, end in results)
        # The batch as the server lived it, first request in to last out (CLOCK_MONOTONIC is one clock
        # for every process): the clients' own thread start-up and teardown are not scheduling.
        wall = max(end for _, _, end in results) - min(start for _, start, _ in results)
        ideal = max(clients * per_client * SLEEP_S / slots, service / slots)
        # the most requests a worker ran at once (sweep over its start/end events)
        most = {}
        for pid, spans in per_worker.items():
            events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans], key=lambda x: (x[0], x[1]))
            now = peak = 0
            for _, step in events:
                now += step
                peak = max(peak, now)
            most[pid] = peak
        gaps = []
        for spans in per_worker.values():
            ends = sorted(e for _, e in spans)
            starts = sorted(s for s, _ in spans)
            gaps += [b - a for a, b in zip(ends, starts[threads or 1:])]
        print(f"handoff gaps: mean {sum(gaps) / max(1, len(gaps)) * 1e3:.1f} ms, max {max(gaps, default=0) * 1e3:.1f} ms")
        print(f"--processes {processes} --threads {threads or 'default'}: {len(results)} requests in {wall:.3f} s "
              f"(clients' view {client_wall:.3f} s), "
              f"ideal {ideal:.3f} s (mean service {service / len(results) * 1e3:.1f} ms), ratio {wall / ideal:.3f}; "
              f"per worker {sorted(len(s) for s in per_worker.values())}, most at once {sorted(most.values())}")
        check_eq(len(per_worker), processes, "workers that served")
        check(max(most.values()) <= (threads or 1), f"a worker ran more requests at once than its threads: {most}")
        check(not bound or wall <= SLACK * ideal, f"the batch took {wall:.3f} s, over {SLACK} x the ideal {ideal:.3f} s")
        return most


def test_four_workers_default_threads():
    run_batch(processes=4, threads=None, clients=8, per_client=4)


def test_two_workers_two_threads_each():
    # The time bound is for the case above; here what matters is N at once per worker.
    most = run_batch(processes=2, threads=2, clients=8, per_client=4, bound=False)
    check_eq(sorted(most.values()), [2, 2], "requests at once per worker")


if __name__ == "__main__":
    run_tests([test_four_workers_default_threads, test_two_workers_two_threads_each], budget=60)
