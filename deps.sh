#!/usr/bin/env bash
# Installs what building and testing need, from Debian 12's packages. Idempotent and quiet when
# everything is already there. Usage: ./deps.sh [build|test|bench]
#   test = build + the test peers; bench = test + what the benchmarks compare against
set -euo pipefail
want=(cmake ninja-build g++ pkg-config libuv1-dev liburing-dev libfmt-dev libtomlplusplus-dev catch2 libpython3.11-dev curl)
if [ "${1:-build}" = test ] || [ "${1:-build}" = bench ]; then
  # Real peers the tests start: uWSGI 2.0.21 (compatibility oracle), nginx, Debian's Python 3.11.
  want+=(uwsgi-core uwsgi-plugin-python3 nginx-light python3 python3-django libpython3.11-dev)
  want+=(clang libfuzzer-14-dev)  # the fuzz targets (tests/fuzz)
  # Observability: uwsgitop runs in tmux, a real Prometheus scrapes /metrics, its parser reads it.
  want+=(tmux prometheus python3-prometheus-client)
  # Applications served unchanged, and the peers they are compared with.
  want+=(python3-flask gunicorn)
  # The memcached protocol: the real memcached as oracle, real clients, twemproxy in front.
  want+=(memcached python3-pymemcache python3-pylibmc libmemcached-tools nutcracker)
  # strace's syscall delay injection holds a server process at a chosen syscall (integration.stats).
  want+=(strace)
fi
if [ "${1:-build}" = bench ]; then
  want+=(wrk linux-perf)
fi
missing=()
for pkg in "${want[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "deps.sh: installing ${missing[*]}" >&2
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq >/dev/null
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
