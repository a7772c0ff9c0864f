#!/usr/bin/env bash
# Fuzzes every target (or the ones named) for SECONDS each, one after the other, from its committed
# corpus plus what earlier runs found (kept in build-fuzz/fuzz-corpus/<target>, never committed).
# Builds build-fuzz first (clang, -DFUZZ=ON). Prints each target's final libFuzzer stats; a crash stops
# the script with the reproducer's path (add it to tests/fuzz/corpus/<target>/ as crash-<what> once
# fixed). Usage: tests/fuzz/run.sh SECONDS [TARGET...]   (ASan+UBSan; JOBS=n: ninja's -j; RUNS=n: stop
# a target after n executions if that comes first)
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:?usage: tests/fuzz/run.sh SECONDS [TARGET...]}
shift
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFUZZ=ON >/dev/null
ninja -C build-fuzz -j "${JOBS:-2}" fuzz_targets >/dev/null
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for source in tests/fuzz/fuzz_*.cpp; do
    name=$(basename "$source" .cpp)
    targets+=("${name#fuzz_}")
  done
fi
quiet=" store client "  # their code logs on every input
run_one() {
  local name=$1 work=build-fuzz/fuzz-corpus/$1 log=build-fuzz/fuzz-$1.log
  local extra=()
  mkdir -p "$work"
  [[ $quiet == *" $name "* ]] && extra+=(-close_fd_mask=2)
  # A store script needs some length to say anything: no slow growth from tiny inputs at ~200 exec/s.
  [ "$name" = store ] && extra+=(-len_control=0 -max_len=1024)
  if ! build-fuzz/bin/fuzz_"$name" -max_total_time="$seconds" -runs="${RUNS:--1}" -timeout=20 -max_len=4096 -print_final_stats=1 \
    -artifact_prefix=build-fuzz/fuzz-"$name"- "${extra[@]}" "$work" tests/fuzz/corpus/"$name" >"$log" 2>&1; then
    echo "fuzz_$name: FAILED, see $log" >&2
    grep -m1 -E 'ERROR|property violated|Test unit written' "$log" >&2 || true
    return 1
  fi
  echo "fuzz_$name: $(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}') executions," \
    "$(grep -E '^#[0-9]+.*DONE' "$log" | grep -oE 'cov: [0-9]+' | tail -1)"
}
status=0
for name in "${targets[@]}"; do run_one "$name" || status=1; done
exit $status
