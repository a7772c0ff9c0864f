#!/usr/bin/env python3
"""The stats server's answer time while the master reloads its workers and 100 clients hold silent
connections to it (issue 12's acceptance bound: 50 ms), plain and over HTTP, ROUNDS times each. The
measurement is tests/integration/test_stats.py's measure_during_reload (kernel receive timestamps, a
control process beside each answer to tell a starved machine from a slow server); this prints the
figures against the bound instead of failing on them.

    bench/stats_latency.py [ROUNDS=3]        # SERVER_BIN=build/bin/server by default (the harness's)
"""
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
import test_stats  # noqa: E402

BOUND = 0.050


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    for http in (False, True):
        for r in range(rounds):
            samples, starved, worst_clean, worst = test_stats.measure_during_reload(http)
            verdict = "within" if worst_clean < BOUND else "OVER"
            print(f"{'http ' if http else 'plain'} round {r + 1}: {samples} answers during the reload, "
                  f"{starved} next to a starved control; slowest unstarved {worst_clean * 1000:.1f} ms "
                  f"({verdict} {BOUND * 1000:.0f} ms), slowest overall {worst * 1000:.1f} ms", flush=True)


if __name__ == "__main__":
    main()
