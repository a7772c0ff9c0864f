#!/bin/bash
# io_uring against epoll + recv/send for one request in flight per connection, before any server code
# changes: bench/uring_serve.cpp (one thread, the memcached subset bench/mc_load sends, a fixed value)
# on each loop, driven by mc_load, the loops interleaved round after round (the order reversed every
# other round). Prints per loop: req/s, server CPU µs per request (mc_load, from /proc), system calls
# per request (the server's own counts around the run), and CPU and rate ratios to epoll, with the
# lowest and highest per-round CPU ratio.
#
#   bench/uring_vs.sh [seconds-per-run=3] [rounds=4]   (LOOPS="epoll uring uring-nodefer" CONNS="16 64"
#                                                       VALUES="64 1024" to choose)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-3}
rounds=${2:-4}
bin=${BIN:-$root/build-bench/bin}
if [ ! -x "$bin/uring_serve" ] || [ ! -x "$bin/mc_load" ]; then
  cmake -S "$root" -B "$root/build-bench" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  ninja -C "$root/build-bench" uring_serve mc_load >/dev/null
fi
loops=(${LOOPS:-epoll uring uring-nodefer})
tmp=$(mktemp -d)
declare -A pid port
cleanup() { for p in "${pid[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

for l in "${loops[@]}"; do
  port[$l]=$(free_port)
  args=(--mode "${l%%-*}" --port "${port[$l]}")
  [ "$l" = uring-nodefer ] && args+=(--no-defer)
  "$bin/uring_serve" "${args[@]}" 2>"$tmp/$l.log" &
  pid[$l]=$!
  for _ in $(seq 100); do grep -q "on 127.0.0.1" "$tmp/$l.log" && break; sleep 0.05; done
done

# The server's cumulative counts: SIGUSR1 makes it print a line; wait for that line to appear.
counts() {  # loop
  local before
  before=$(grep -c '^counts' "$tmp/$1.log" || true)
  kill -USR1 "${pid[$1]}"
  for _ in $(seq 200); do [ "$(grep -c '^counts' "$tmp/$1.log" || true)" -gt "$before" ] && break; sleep 0.01; done
  grep '^counts' "$tmp/$1.log" | tail -1
}
field() { sed "s/.* $1 \([0-9.]*\).*/\1/" <<<"$2"; }

echo "# $(date -u +%FT%TZ) $(nproc) cores, kernel $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg);" \
  "$seconds s a run, $rounds rounds interleaved"
printf "%-22s %-14s %9s %8s %8s %8s %9s %7s %7s %11s\n" case loop "req/s" "µs/req" "calls" "enter" "epoll_w" \
  "rate/e" "cpu/e" "cpu min-max"
for value in ${VALUES:-64 1024}; do
  for conns in ${CONNS:-16 64}; do
    declare -A ops=() cpu=() calls=() enters=() waits=() lo=() hi=()
    for l in "${loops[@]}"; do ops[$l]=0; cpu[$l]=0; calls[$l]=0; enters[$l]=0; waits[$l]=0; lo[$l]=9; hi[$l]=0; done
    for round in $(seq "$rounds"); do
      order=("${loops[@]}")
      if [ $((round % 2)) = 0 ]; then order=(); for l in "${loops[@]}"; do order=("$l" "${order[@]}"); done; fi
      declare -A rc=()
      for l in "${order[@]}"; do
        a=$(counts "$l")
        line=$("$bin/mc_load" "127.0.0.1:${port[$l]}" --conns "$conns" --value "$value" --set-ratio 0.1 \
          --fill 0 --seconds "$seconds" --pids "${pid[$l]}")
        b=$(counts "$l")
        n=$(($(field requests "$b") - $(field requests "$a")))
        sys=$(($(field syscalls "$b") - $(field syscalls "$a")))
        ops[$l]=$((ops[$l] + $(field requests_per_s "$line")))
        rc[$l]=$(field server_cpu_us_per_request "$line")
        cpu[$l]=$(echo "${cpu[$l]} + ${rc[$l]}" | bc -l)
        calls[$l]=$(echo "${calls[$l]} + $sys / $n" | bc -l)
        enters[$l]=$(echo "${enters[$l]} + ($(field io_uring_enter "$b") - $(field io_uring_enter "$a")) / $n" | bc -l)
        waits[$l]=$(echo "${waits[$l]} + ($(field epoll_wait "$b") - $(field epoll_wait "$a")) / $n" | bc -l)
      done
      for l in "${loops[@]}"; do
        r=$(echo "${rc[$l]} / ${rc[${loops[0]}]}" | bc -l)
        lo[$l]=$(echo "if ($r < ${lo[$l]}) $r else ${lo[$l]}" | bc -l)
        hi[$l]=$(echo "if ($r > ${hi[$l]}) $r else ${hi[$l]}" | bc -l)
      done
    done
    e=${loops[0]}
    for l in "${loops[@]}"; do
      printf "%-22s %-14s %9d %8.2f %8.2f %8.2f %9.2f %7.2f %7.2f %5.2f-%5.2f\n" "${value}B ${conns}c 90/10" "$l" \
        $((ops[$l] / rounds)) "$(echo "${cpu[$l]} / $rounds" | bc -l)" "$(echo "${calls[$l]} / $rounds" | bc -l)" \
        "$(echo "${enters[$l]} / $rounds" | bc -l)" "$(echo "${waits[$l]} / $rounds" | bc -l)" \
        "$(echo "${ops[$l]} / ${ops[$e]}" | bc -l)" "$(echo "${cpu[$l]} / ${cpu[$e]}" | bc -l)" "${lo[$l]}" "${hi[$l]}"
    done
  done
done
