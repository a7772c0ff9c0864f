#!/bin/bash
# Ours against Debian's memcached 1.6 on memcached's own ground, in one interleaved run: the same load
# generator (bench/mc_load.cpp: persistent connections, one request in flight each) against both, round
# after round (A B A B ...), for 90/10 get/set with 64 B and 1 KiB values at 16 and 64 connections, and
# multi-gets of 10 keys; then the same through twemproxy (nutcracker) in front of each. Prints ops/s and
# server CPU per request (from /proc, the server's every process and thread) and the ratios.
#
#   bench/memcached_vs.sh [seconds-per-run=4] [rounds=3] [server threads/workers=1]
set -euo pipefail
source "$(dirname "$0")/lib.sh"
seconds=${1:-4}
rounds=${2:-3}
threads=${3:-1}
load=${MC_LOAD:-$root/build-bench/bin/mc_load}
[ -x "$load" ] || ninja -C "$root/build-bench" mc_load >/dev/null
tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT

mport=$(free_port) oport=$(free_port)
user=(); [ "$(id -u)" = 0 ] && user=(-u nobody)
memcached -l 127.0.0.1 -p "$mport" -U 0 -t "$threads" -m 1024 "${user[@]}" & pids+=($!)
mpid=$!
"$server" --memcached-socket "127.0.0.1:$oport" --processes "$threads" --cache 200000 --cache-blocksize 2k \
  >"$tmp/server.log" 2>&1 & pids+=($!)
opid=$!
proxy() {  # nutcracker on port $2 in front of the node on port $1
  cat >"$tmp/tw-$1.yml" <<YML
pool:
  listen: 127.0.0.1:$2
  hash: fnv1a_64
  distribution: ketama
  servers:
    - 127.0.0.1:$1:1
YML
  nutcracker -c "$tmp/tw-$1.yml" -s "$(free_port)" -a 127.0.0.1 -o "$tmp/tw-$1.log" -p "$tmp/tw-$1.pid" \
    </dev/null >/dev/null 2>&1 &
  pids+=($!)
}
mproxy=$(free_port) oproxy=$(free_port)
proxy "$mport" "$mproxy"
proxy "$oport" "$oproxy"
for port in $mport $oport $mproxy $oproxy; do
  for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05; done
done
pids_of() { descendants "$1" | paste -sd,; }

echo "# $(date -u +%FT%TZ) $(nproc) cores; memcached $(memcached -V | cut -d' ' -f2) -t $threads vs ours --processes $threads; $seconds s a run, $rounds rounds interleaved"
printf "%-34s %12s %12s %8s %10s %10s %8s\n" case "memcached/s" "ours/s" ratio "mc µs/req" "ours µs/req" "cpu ratio"
run_case() {  # name, then mc_load options
  local name=$1; shift
  local m_ops=0 o_ops=0 m_cpu=0 o_cpu=0 line
  for _ in $(seq "$rounds"); do
    for who in m o; do
      if [ $who = m ]; then target=${via_m:-$mport}; pidlist=$(pids_of "$mpid"); else target=${via_o:-$oport}; pidlist=$(pids_of "$opid"); fi
      line=$("$load" "127.0.0.1:$target" "$@" --seconds "$seconds" --pids "$pidlist")
      ops=$(sed 's/.*requests_per_s \([0-9]*\).*/\1/' <<<"$line")
      cpu=$(sed 's/.*server_cpu_us_per_request \([0-9.]*\).*/\1/' <<<"$line")
      if [ $who = m ]; then m_ops=$((m_ops + ops)); m_cpu=$(echo "$m_cpu + $cpu" | bc -l)
      else o_ops=$((o_ops + ops)); o_cpu=$(echo "$o_cpu + $cpu" | bc -l); fi
    done
  done
  printf "%-34s %12d %12d %8.2f %10.2f %10.2f %8.2f\n" "$name" $((m_ops / rounds)) $((o_ops / rounds)) \
    "$(echo "$o_ops / $m_ops" | bc -l)" "$(echo "$m_cpu / $rounds" | bc -l)" "$(echo "$o_cpu / $rounds" | bc -l)" \
    "$(echo "$o_cpu / $m_cpu" | bc -l)"
}
for via in direct twemproxy; do
  if [ $via = twemproxy ]; then via_m=$mproxy; via_o=$oproxy; else via_m=; via_o=; fi
  for value in 64 1024; do
    for conns in 16 64; do
      run_case "$via 90/10 ${value}B ${conns}c" --conns "$conns" --value "$value" --set-ratio 0.1 --keys 10000
    done
  done
  run_case "$via multi-get 10 keys 64B 16c" --conns 16 --value 64 --set-ratio 0 --multi 10 --keys 10000
done
