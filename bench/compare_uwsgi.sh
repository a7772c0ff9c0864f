#!/usr/bin/env bash
# Our server against uWSGI 2.0.21, memcached and the null-server ceiling, in one interleaved run.
#  1. the shared baseline script with CANDIDATE=our binary: uwsgi protocol per request (TCP and UNIX),
#     nginx in front, and the embedded Python API (PARTS, DURATION, REPS... pass through);
#  2. our --persistent-socket against memcached's persistent connections, same mix, same load.
# Prints the tables; copy them into docs/benchmarks.md with the date and the machine.
# Usage: bench/compare_uwsgi.sh   (env: SHARED=../shared, SERVER=binary, SKIP_BASELINE=1 to run part 2 only;
#        PARTS, DURATION, REPS, CONCS, VSIZES as the shared script)
set -euo pipefail
. "$(dirname "$0")/lib.sh"  # root, shared, server, free_port, cpu_ticks, tick_us
tmp=$(mktemp -d); pids=()
trap 'for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM  # so that the EXIT trap stops what we started

if [ "${SKIP_BASELINE:-0}" != 1 ]; then
  CANDIDATE_PYRUN=${CANDIDATE_PYRUN:-1} CANDIDATE=$server bash "$shared/bench/run-uwsgi-baseline.sh"
fi

# Part 2: persistent connections, ours vs memcached (both 2 workers/threads), interleaved.
cc -O2 -o "$tmp/uwload" "$shared/bench/uwload.c"
mport=$(free_port); oport=$(free_port); oplain=$(free_port)
memcached -t 2 -p "$mport" -l 127.0.0.1 -U 0 -m 256 -u nobody & pids+=($!); mpid=$!
"$server" --socket 127.0.0.1:$oplain --persistent-socket 127.0.0.1:$oport --processes 2 --cache 10000 \
  2>"$tmp/server.log" & pids+=($!); opid=$!
sleep 1
reps=${REPS:-3}; duration=${DURATION:-5}
# One load run; appends its RESULT line with the server's CPU ticks during the run.
measure() {  # measure OUT PID uwload-args...
  local out=$1 pid=$2 before after
  shift 2
  before=$(cpu_ticks "$pid")
  line=$("$tmp/uwload" "$@" -q)
  after=$(cpu_ticks "$pid")
  echo "$line server_ticks=$((after - before)) tick_us=$tick_us" >>"$out"
}
echo "| target | c | value B | ops/s (median of $reps) | p50 µs | p99 µs | server CPU µs/op |"
echo "|---|---|---|---|---|---|---|"
for conc in ${CONCS:-16 64}; do
  for vsize in ${VSIZES:-64 1024}; do
    # Keys of their own per cell: a uwsgi set never overwrites, so the previous cell's values would stay.
    kp="c${conc}v${vsize}:"
    "$tmp/uwload" -P memcached -a 127.0.0.1:$mport -p -c "$conc" -v "$vsize" --key-prefix "$kp" -w --warmup-only -q >/dev/null
    "$tmp/uwload" -a 127.0.0.1:$oplain -c "$conc" -v "$vsize" --key-prefix "$kp" -w --warmup-only -q >/dev/null
    : >"$tmp/m"; : >"$tmp/o"
    for _ in $(seq "$reps"); do
      measure "$tmp/m" "$mpid" -P memcached -a 127.0.0.1:$mport -p -c "$conc" -v "$vsize" --key-prefix "$kp" \
        -d "$duration" -T 2
      measure "$tmp/o" "$opid" -a 127.0.0.1:$oport -p -c "$conc" -v "$vsize" --key-prefix "$kp" -d "$duration" -T 2
    done
    for target in m o; do
      name=$([ $target = m ] && echo "memcached -t 2, persistent" || echo "ours, --persistent-socket, 2 workers")
      /usr/bin/python3 - "$tmp/$target" "$name" "$conc" "$vsize" <<'PY'
import re, statistics, sys
rows = [dict(re.findall(r"(\w+)=([\d.]+)", line)) for line in open(sys.argv[1]) if line.startswith("RESULT")]
med = lambda k: statistics.median(float(r[k]) for r in rows)
cpu = statistics.median(float(r["server_ticks"]) * float(r["tick_us"]) / float(r["ops"]) for r in rows)
print(f"| {sys.argv[2]} | {sys.argv[3]} | {sys.argv[4]} | {med('ops_s'):,.0f} | {med('p50_us'):.0f} | {med('p99_us'):.0f} "
      f"| {cpu:.1f} |")
PY
    done
  done
done
