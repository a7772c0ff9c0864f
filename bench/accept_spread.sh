#!/usr/bin/env bash
# How connections spread across workers, and how many wake-ups are wasted, for each --accept-mode.
# Prints one table per mode from the workers' own counters (SIGUSR1 stats lines) and the server's
# CPU time per request. Usage: bench/accept_spread.sh [SERVER_BIN] (default build/bin/server)
# Env: WORKERS=4 DURATION=5 CONC=16 (requests in flight, one connection each).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
server=${1:-$here/../build/bin/server}
workers=${WORKERS:-4}; duration=${DURATION:-5}; conc=${CONC:-16}
shared=${SHARED_DIR:-$here/../../shared}
tmp=$(mktemp -d); master=
trap '[ -n "$master" ] && kill -INT $master 2>/dev/null; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM  # so that the EXIT trap stops what we started
procs=$(( conc < 2 ? conc : 2 ))
cc -O2 -o "$tmp/uwload" "$shared/bench/uwload.c"
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')

cpu_ticks() {  # user+system ticks of a process and its reaped children, plus its live children
  local total=0 pid
  for pid in "$@"; do
    [ -r /proc/$pid/stat ] || continue
    total=$((total + $(awk '{print $14+$15+$16+$17}' /proc/$pid/stat)))
  done
  echo $total
}

for mode in exclusive shared; do
  "$server" --socket 127.0.0.1:$port --processes "$workers" --cache 1000 --accept-mode $mode 2>"$tmp/log" &
  master=$!
  sleep 1
  "$tmp/uwload" -a 127.0.0.1:$port -c "$conc" -d 1 -w -T $procs -q >/dev/null  # warm up, fill the keys
  kids=$(cat /proc/$master/task/$master/children)
  before=$(cpu_ticks $master $kids)
  result=$("$tmp/uwload" -a 127.0.0.1:$port -c "$conc" -d "$duration" -T $procs -q)
  after=$(cpu_ticks $master $kids)
  kill -USR1 $master; sleep 0.5; kill -INT $master; wait $master || true; master=
  ops=$(sed -n 's/.* ops=\([0-9]*\) .*/\1/p' <<<"$result")
  ops_s=$(sed -n 's/.* ops_s=\([0-9.]*\) .*/\1/p' <<<"$result")
  hz=$(getconf CLK_TCK)
  echo "## --accept-mode $mode: $workers workers, $conc connections in flight, ${duration} s"
  echo "ops/s $ops_s; server CPU $(awk -v t=$((after - before)) -v hz=$hz -v n=$ops 'BEGIN{printf "%.1f", t/hz*1e6/n}') µs/op (warm-up included in the counters below)"
  echo "| worker | accepted | share | wake-ups | wasted wake-ups | wasted % |"
  echo "|---|---|---|---|---|---|"
  grep 'stats: worker' "$tmp/log" | sed -n 's/.*worker \([0-9]*\) (pid [0-9]*): requests [0-9]*, accepted \([0-9]*\), wake-ups \([0-9]*\) (\([0-9]*\) wasted).*/\1 \2 \3 \4/p' |
    awk '{id[NR]=$1; acc[NR]=$2; wk[NR]=$3; ws[NR]=$4; tot+=$2} END {for (i=1;i<=NR;i++) printf "| %s | %d | %.0f%% | %d | %d | %.1f%% |\n", id[i], acc[i], 100*acc[i]/tot, wk[i], ws[i], wk[i] ? 100*ws[i]/wk[i] : 0}'
  echo
done
