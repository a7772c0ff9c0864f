#!/usr/bin/env bash
# One request per TCP connection, ours against uWSGI 2.0.21 and the shared null server (the ceiling),
# in one run, target after target: ops/s and server CPU µs per request (user+system of the server's
# process tree). Same load for all three: 2 processes, --cache 1000 (uWSGI: --plugin cache --master),
# 90% get / 10% set of 64-byte values over 1000 keys, the shared uwload with 2 client processes.
# Usage: bench/per_request.sh   (env: SERVER=binary, SHARED=../shared, ROUNDS=3, CONCS="16 64", DURATION=5)
set -euo pipefail
. "$(dirname "$0")/lib.sh"  # root, shared, server, free_port, cpu_ticks, tick_us
tmp=$(mktemp -d); pids=()
trap 'for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
cc -O2 -o "$tmp/uwload" "$shared/bench/uwload.c"
cc -O2 -o "$tmp/nullserver" "$shared/bench/nullserver.c"
declare -A port pid
port[ours]=$(free_port); port[uwsgi]=$(free_port); port[null]=$(free_port)
"$server" --socket 127.0.0.1:${port[ours]} --processes 2 --cache 1000 2>"$tmp/ours.log" & pids+=($!); pid[ours]=$!
uwsgi --plugin cache --master --processes 2 --socket 127.0.0.1:${port[uwsgi]} --cache 1000 >"$tmp/uwsgi.log" 2>&1 &
pids+=($!); pid[uwsgi]=$!
"$tmp/nullserver" -w 2 -v 64 -a 127.0.0.1:${port[null]} >/dev/null 2>&1 & pids+=($!); pid[null]=$!
sleep 1.5
for target in ours uwsgi; do "$tmp/uwload" -a 127.0.0.1:${port[$target]} --warmup-only -k 1000 -v 64 -q >/dev/null; done
echo "| c | round | target | ops/s | server CPU µs/op |"
echo "|---|---|---|---|---|"
for conc in ${CONCS:-16 64}; do
  for round in $(seq "${ROUNDS:-3}"); do
    for target in ours uwsgi null; do
      verify=$([ $target = null ] && echo --no-verify || true)
      before=$(cpu_ticks "${pid[$target]}")
      line=$("$tmp/uwload" -q -a 127.0.0.1:${port[$target]} -c "$conc" -T 2 -d "${DURATION:-5}" -k 1000 -v 64 \
        -m get=90,set=10 $verify)
      after=$(cpu_ticks "${pid[$target]}")
      ops=$(sed -n 's/.* ops=\([0-9]*\).*/\1/p' <<<"$line"); ops_s=$(sed -n 's/.*ops_s=\([0-9.]*\).*/\1/p' <<<"$line")
      echo "| $conc | $round | $target | ${ops_s%.*} | $(awk -v t=$((after - before)) -v u=$tick_us -v n="$ops" 'BEGIN{printf "%.1f", t*u/n}') |"
    done
  done
done
