#!/usr/bin/env bash
# One request per TCP connection, ours against uWSGI 2.0.21 and the shared null server (the ceiling),
# in one run, target after target: ops/s and server CPU µs per request (user+system of the server's
# process tree). Same load for all three: 2 processes, --cache 1000 (uWSGI: --plugin cache --master),
# 90% get / 10% set of 64-byte values over 1000 keys, the shared uwload with 2 client processes.
# Usage: bench/per_request.sh   (env: SERVER=binary, SHARED=../shared, ROUNDS=3, CONCS="16 64", DURATION=5,
# BASELINE=binary: a second build of ours, target "base", in the same rounds: the A/B of a change)
# MODE=app: the application path instead (request log on/off, uWSGI logging; see below).
set -euo pipefail
. "$(dirname "$0")/lib.sh"  # root, shared, server, free_port, cpu_ticks, tick_us
tmp=$(mktemp -d); pids=()
trap 'for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
if [ "${MODE:-cache}" = app ]; then
  # The app path: a hello-world WSGI application over --http-socket (keep-alive wrk, 2 processes), ours
  # with its request log on (to a file, uWSGI's default line) and off (--disable-logging), and uWSGI
  # 2.0.21 logging to a file: server CPU µs per request, so the log's cost is the difference.
  cat >"$tmp/hello.py" <<'PY'
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, World!"]
PY
  declare -A port pid
  for t in log nolog uwsgi; do port[$t]=$(free_port); done
  "$server" --http-socket 127.0.0.1:${port[log]} --processes 2 --module hello --chdir "$tmp" \
    --logto "$tmp/log.log" & pids+=($!); pid[log]=$!
  "$server" --http-socket 127.0.0.1:${port[nolog]} --processes 2 --module hello --chdir "$tmp" \
    --disable-logging 2>"$tmp/nolog.log" & pids+=($!); pid[nolog]=$!
  uwsgi --plugin python3 --master --processes 2 --http-socket 127.0.0.1:${port[uwsgi]} --module hello \
    --chdir "$tmp" --logto "$tmp/uwsgi.log" & pids+=($!); pid[uwsgi]=$!
  sleep 2
  echo "| c | round | target | requests/s | server CPU µs/request |"
  echo "|---|---|---|---|---|"
  for conc in ${CONCS:-16}; do
    for round in $(seq "${ROUNDS:-3}"); do
      for target in log nolog uwsgi; do
        before=$(cpu_ticks "${pid[$target]}")
        out=$(wrk -t1 -c"$conc" -d"${DURATION:-5}s" "http://127.0.0.1:${port[$target]}/")
        after=$(cpu_ticks "${pid[$target]}")
        n=$(sed -n 's/^ *\([0-9]*\) requests in.*/\1/p' <<<"$out"); rps=$(sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p' <<<"$out")
        echo "| $conc | $round | $target | ${rps%.*} | $(awk -v t=$((after - before)) -v u=$tick_us -v n="$n" 'BEGIN{printf "%.1f", t*u/n}') |"
      done
    done
  done
  echo "request log lines written: $(grep -c '^\[pid: ' "$tmp/log.log")"
  exit 0
fi
cc -O2 -o "$tmp/uwload" "$shared/bench/uwload.c"
cc -O2 -o "$tmp/nullserver" "$shared/bench/nullserver.c"
declare -A port pid
port[ours]=$(free_port); port[uwsgi]=$(free_port); port[null]=$(free_port)
"$server" --socket 127.0.0.1:${port[ours]} --processes 2 --cache 1000 2>"$tmp/ours.log" & pids+=($!); pid[ours]=$!
uwsgi --plugin cache --master --processes 2 --socket 127.0.0.1:${port[uwsgi]} --cache 1000 >"$tmp/uwsgi.log" 2>&1 &
pids+=($!); pid[uwsgi]=$!
"$tmp/nullserver" -w 2 -v 64 -a 127.0.0.1:${port[null]} >/dev/null 2>&1 & pids+=($!); pid[null]=$!
targets="ours uwsgi null"
if [ -n "${BASELINE:-}" ]; then
  port[base]=$(free_port)
  "$BASELINE" --socket 127.0.0.1:${port[base]} --processes 2 --cache 1000 2>"$tmp/base.log" & pids+=($!); pid[base]=$!
  targets="ours base uwsgi null"
fi
sleep 1.5
for target in ${targets% null}; do "$tmp/uwload" -a 127.0.0.1:${port[$target]} --warmup-only -k 1000 -v 64 -q >/dev/null; done
echo "| c | round | target | ops/s | server CPU µs/op |"
echo "|---|---|---|---|---|"
for conc in ${CONCS:-16 64}; do
  for round in $(seq "${ROUNDS:-3}"); do
    for target in $targets; do
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
