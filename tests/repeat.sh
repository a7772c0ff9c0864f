#!/usr/bin/env bash
# Runs a build's ctest suite N times, stops at the first failure and names it: the test(s), the run
# number, and the file holding that run's full output. Repeat runs are how flakes are found; a flake is
# a bug (fix its cause). The machine may be loaded on purpose with -j above the core count.
#
#   tests/repeat.sh [-n RUNS] [-j JOBS] [-b BUILD_DIR] [-- CTEST_ARGS...]
#     -n RUNS       how many times (default 10)
#     -j JOBS       ctest -j (default: twice the cores, to load the machine)
#     -b BUILD_DIR  default build
#     CTEST_ARGS    passed to ctest, e.g. -R 'integration\.' or -LE no_asan (the ASan build) or -L tsan
#
# Examples: tests/repeat.sh -n 20 -j 4                     (every test of the normal build, 20 times)
#           tests/repeat.sh -n 10 -b build-asan -- -LE no_asan
# Prints one line per run and, at the end, "tests T, runs R, failures F" and the slowest tests (the longest
# time of each over the runs; each run's ctest time lines stay in the logs folder as times-N.txt), to
# compare with their budgets. Exit 0 when every run passed.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=10
jobs=$(($(nproc) * 2))
build=build
while [ $# -gt 0 ]; do
  case $1 in
    -n) runs=$2; shift 2 ;;
    -j) jobs=$2; shift 2 ;;
    -b) build=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "usage: $0 [-n RUNS] [-j JOBS] [-b BUILD_DIR] [-- CTEST_ARGS...]" >&2; exit 2 ;;
  esac
done
[ -f "$build/CTestTestfile.cmake" ] || { echo "$build: not a configured build directory" >&2; exit 2; }
# as ./test.sh does: a missing peer (uWSGI, nginx, libpython, Django) is a failure, not a skip
export UCACHED_REQUIRE_PEERS=1
logs=$(mktemp -d /tmp/repeat.XXXXXX)
# a failing integration test copies the whole log of every server it started there (harness.py)
export UCACHED_TEST_LOGS=$logs/server-logs
tests=$(cd "$build" && ctest -N "$@" | sed -n 's/^Total Tests: //p')
echo "== $build: $tests tests, $runs runs, ctest -j $jobs $*; logs in $logs" >&2
for run in $(seq 1 "$runs"); do
  log=$logs/run-$run.log
  start=$(date +%s)
  if (cd "$build" && ctest --output-on-failure -j "$jobs" "$@") >"$log" 2>&1; then
    echo "run $run/$runs: passed ($(($(date +%s) - start)) s)"
    grep -E 'Test +#[0-9]+: .* sec$' "$log" >"$logs/times-$run.txt" || true
    rm -f "$log"
  else
    echo "run $run/$runs: FAILED ($(($(date +%s) - start)) s); output: $log"
    sed -n '/The following tests FAILED:/,$p' "$log" | grep -E '^[[:space:]]+[0-9]+ - ' || tail -20 "$log"
    echo "tests $tests, runs $run, failures 1"
    exit 1
  fi
done
echo "tests $tests, runs $runs, failures 0"
echo "slowest (longest of $runs runs, seconds):"
cat "$logs"/times-*.txt | awk '{ t = $(NF - 1); if (t > max[$4]) max[$4] = t } END { for (n in max) print max[n], n }' |
  sort -rn | head -12 | awk '{ printf "  %7.1f %s\n", $1, $2 }'
