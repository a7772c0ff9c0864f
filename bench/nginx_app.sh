#!/usr/bin/env bash
# Requests/s of a hello-world WSGI app behind nginx: ours against uWSGI 2.0.21 with the same number of
# processes, interleaved runs, wrk with keep-alive from the client to nginx.
# Usage: bench/nginx_app.sh [SERVER_BIN]   env: PROCESSES=2 DURATION=5 REPS=3 CONCS="16 64"
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
server=${1:-$here/../build/bin/server}
processes=${PROCESSES:-2}; duration=${DURATION:-5}; reps=${REPS:-3}; concs=${CONCS:-16 64}
"$here/../deps.sh" bench
tmp=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null || true; done; sleep 0.5; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM  # so that the EXIT trap stops what we started
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
cat >"$tmp/hello.py" <<'PY'
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "13")])
    return [b"Hello, World!"]
PY
# THREADS=0 runs the application on the worker's loop, as uWSGI does (default 1: an application thread).
ours=$(free_port); theirs=$(free_port); web_ours=$(free_port); web_theirs=$(free_port)
"$server" --socket 127.0.0.1:$ours --processes "$processes" --threads "${THREADS:-1}" --cache 100 --module hello \
  --chdir "$tmp" 2>"$tmp/ours.log" & pids+=($!)
/usr/bin/uwsgi --plugin python3 --master --processes "$processes" --socket 127.0.0.1:$theirs --module hello \
  --chdir "$tmp" --disable-logging >"$tmp/uwsgi.log" 2>&1 & pids+=($!)
mkdir -p "$tmp/ngx"
cat >"$tmp/ngx/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $tmp/ngx/nginx.pid; error_log $tmp/ngx/error.log warn;
$( [ "$(id -u)" = 0 ] && echo "user root;" )
events { worker_connections 1024; }
http {
  access_log off; client_body_temp_path $tmp/ngx/cb; proxy_temp_path $tmp/ngx/p; fastcgi_temp_path $tmp/ngx/f;
  uwsgi_temp_path $tmp/ngx/u; scgi_temp_path $tmp/ngx/s;
  server { listen 127.0.0.1:$web_ours;   location / { include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:$ours; } }
  server { listen 127.0.0.1:$web_theirs; location / { include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:$theirs; } }
}
CONF
nginx -p "$tmp/ngx" -c "$tmp/ngx/nginx.conf" -e "$tmp/ngx/error.log" & pids+=($!)
sleep 2
curl -sf "http://127.0.0.1:$web_ours/" >/dev/null && curl -sf "http://127.0.0.1:$web_theirs/" >/dev/null
echo "| app server ($processes processes) | c | requests/s (median of $reps) | p99 latency |"
echo "|---|---|---|---|"
for c in $concs; do
  : >"$tmp/o"; : >"$tmp/t"
  for _ in $(seq "$reps"); do
    wrk -t1 -c"$c" -d"${duration}s" --latency "http://127.0.0.1:$web_ours/" >>"$tmp/o"
    wrk -t1 -c"$c" -d"${duration}s" --latency "http://127.0.0.1:$web_theirs/" >>"$tmp/t"
  done
  for f in o t; do
    name=$([ $f = o ] && echo "ours, --threads ${THREADS:-1}" || echo "uWSGI 2.0.21")
    /usr/bin/python3 - "$tmp/$f" "$name" "$c" <<'PY'
import re, statistics, sys
text = open(sys.argv[1]).read()
rps = [float(x) for x in re.findall(r"Requests/sec:\s+([\d.]+)", text)]
p99 = re.findall(r"\s99%\s+([\d.]+\w+)", text)
errors = re.findall(r"Non-2xx or 3xx responses: (\d+)|Socket errors: .*", text)
print(f"| {sys.argv[2]} | {sys.argv[3]} | {statistics.median(rps):,.0f} | {' / '.join(p99)} |"
      + (" errors!" if any(errors) else ""))
PY
  done
done
