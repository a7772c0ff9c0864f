#!/bin/bash
# Ours against Debian's memcached 1.6 on memcached's own ground, in one interleaved run: the same load
# generator (bench/mc_load.cpp: persistent connections, one request in flight each) against both, round
# after round, for 90/10 get/set with 64 B and 1 KiB values at 16 and 64 connections, and multi-gets of
# 10 keys; then the same through twemproxy (nutcracker) in front of each. Prints ops/s and server CPU
# per request (from /proc, the server's every process and thread), the ratios, and the lowest and
# highest per-round CPU ratio (the spread a reader needs to tell a change from the neighbours' load),
# and the load generator's own CPU against each (% of one core, memcached/ours): near 100 a one-thread
# generator, not the server, sets the rate.
#
# BASELINE=path/to/server adds a second build of ours (an A/B of a change) to every round, with its own
# proxy: its columns and the ratios of ours to it come from the same minutes. The order of the servers
# is reversed every other round, so neither always runs right after the other.
#
# MC_LOAD_THREADS=2 drives the connections from two generator threads (one is the ceiling of a quiet
# 2-core run: "gen %" near 100); MC_VIA=direct or twemproxy runs one half of the table.
#
#   [BASELINE=...] bench/memcached_vs.sh [seconds-per-run=4] [rounds=3] [server threads/workers=1]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
seconds=${1:-4}
rounds=${2:-3}
threads=${3:-1}
baseline=${BASELINE:-}
load_threads=${MC_LOAD_THREADS:-1}
load=${MC_LOAD:-$root/build-bench/bin/mc_load}
[ -x "$load" ] || ninja -C "$root/build-bench" mc_load >/dev/null
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

user=(); [ "$(id -u)" = 0 ] && user=(-u nobody)
declare -A port pid proxy_port
port[m]=$(free_port)
memcached -l 127.0.0.1 -p "${port[m]}" -U 0 -t "$threads" -m 1024 "${user[@]}" & pids+=($!)
pid[m]=$!
servers=(m o)
start_ours() {  # who, binary
  port[$1]=$(free_port)
  "$2" --memcached-socket "127.0.0.1:${port[$1]}" --processes "$threads" --cache 200000 --cache-blocksize 2k \
    >"$tmp/server-$1.log" 2>&1 & pids+=($!)
  pid[$1]=$!
}
start_ours o "$server"
if [ -n "$baseline" ]; then
  start_ours b "$baseline"
  servers+=(b)
fi
proxy() {  # nutcracker in front of server $1
  proxy_port[$1]=$(free_port)
  cat >"$tmp/tw-$1.yml" <<YML
pool:
  listen: 127.0.0.1:${proxy_port[$1]}
  hash: fnv1a_64
  distribution: ketama
  servers:
    - 127.0.0.1:${port[$1]}:1
YML
  nutcracker -c "$tmp/tw-$1.yml" -s "$(free_port)" -a 127.0.0.1 -o "$tmp/tw-$1.log" -p "$tmp/tw-$1.pid" \
    </dev/null >/dev/null 2>&1 &
  pids+=($!)
}
for who in "${servers[@]}"; do proxy "$who"; done
for who in "${servers[@]}"; do
  for p in "${port[$who]}" "${proxy_port[$who]}"; do
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.05; done
  done
done
pids_of() { descendants "$1" | paste -sd,; }
avg() { echo "$1 / $rounds" | bc -l; }

echo "# $(date -u +%FT%TZ) $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg);" \
  "memcached $(memcached -V | cut -d' ' -f2) -t $threads vs ours --processes $threads${baseline:+ and BASELINE $baseline};" \
  "$seconds s a run, $rounds rounds interleaved; mc_load --threads $load_threads"
header="%-34s %12s %12s %7s %9s %9s %7s %11s %9s"
row="%-34s %12d %12d %7.2f %9.2f %9.2f %7.2f %11s %9s"
if [ -n "$baseline" ]; then header+=" %12s %9s %7s %7s"; row+=" %12d %9.2f %7.2f %7.2f"; fi
# shellcheck disable=SC2059
printf "$header\n" case "memcached/s" "ours/s" ratio "mc µs/req" "ours µs" "cpu" "cpu min-max" "gen %m/o" \
  ${baseline:+"base/s" "base µs" "o/b" "cpu o/b"}
run_case() {  # name, then mc_load options
  local name=$1; shift
  local -A ops=() cpu=() gen=()
  local who order line n c lo=9 hi=0 r
  for who in "${servers[@]}"; do ops[$who]=0; cpu[$who]=0; gen[$who]=0; done
  for round in $(seq "$rounds"); do
    order=("${servers[@]}")
    if [ $((round % 2)) = 0 ]; then order=(); for who in "${servers[@]}"; do order=("$who" "${order[@]}"); done; fi
    local -A round_cpu=()
    for who in "${order[@]}"; do
      local target=${port[$who]}
      [ "$via" = twemproxy ] && target=${proxy_port[$who]}
      line=$("$load" "127.0.0.1:$target" "$@" --seconds "$seconds" --threads "$load_threads" \
        --pids "$(pids_of "${pid[$who]}")")
      n=$(sed 's/.*requests_per_s \([0-9]*\).*/\1/' <<<"$line")
      c=$(sed 's/.*server_cpu_us_per_request \([0-9.]*\).*/\1/' <<<"$line")
      ops[$who]=$((ops[$who] + n)); cpu[$who]=$(echo "${cpu[$who]} + $c" | bc -l); round_cpu[$who]=$c
      gen[$who]=$(echo "${gen[$who]} + $(sed 's/.*load_cpu_s \([0-9.]*\).*/\1/' <<<"$line")" | bc -l)
    done
    r=$(echo "${round_cpu[o]} / ${round_cpu[m]}" | bc -l)
    lo=$(echo "if ($r < $lo) $r else $lo" | bc -l); hi=$(echo "if ($r > $hi) $r else $hi" | bc -l)
  done
  local spread generator
  spread=$(printf "%.2f-%.2f" "$lo" "$hi")
  generator=$(printf "%.0f/%.0f" "$(echo "100 * ${gen[m]} / $rounds / $seconds" | bc -l)" \
    "$(echo "100 * ${gen[o]} / $rounds / $seconds" | bc -l)")
  local extra=()
  if [ -n "$baseline" ]; then
    extra=($((ops[b] / rounds)) "$(avg "${cpu[b]}")" "$(echo "${ops[o]} / ${ops[b]}" | bc -l)"
      "$(echo "${cpu[o]} / ${cpu[b]}" | bc -l)")
  fi
  # shellcheck disable=SC2059
  printf "$row\n" "$name" $((ops[m] / rounds)) $((ops[o] / rounds)) "$(echo "${ops[o]} / ${ops[m]}" | bc -l)" \
    "$(avg "${cpu[m]}")" "$(avg "${cpu[o]}")" "$(echo "${cpu[o]} / ${cpu[m]}" | bc -l)" "$spread" "$generator" \
    "${extra[@]}"
}
for via in ${MC_VIA:-direct twemproxy}; do
  for value in 64 1024; do
    for conns in 16 64; do
      run_case "$via 90/10 ${value}B ${conns}c" --conns "$conns" --value "$value" --set-ratio 0.1 --keys 10000
    done
  done
  run_case "$via multi-get 10 keys 64B 16c" --conns 16 --value 64 --set-ratio 0 --multi 10 --keys 10000
done
