#!/usr/bin/env bash
# Quick start: install what is missing, build, and run the server on a working default
# (a 1000-item cache and the built-in demo app on 127.0.0.1:3031). Extra arguments are passed on,
# e.g. ./run.sh --processes 4 --cache 10000
set -euo pipefail
cd "$(dirname "$0")"
./deps.sh build
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
ninja -C build server >/dev/null
addr=127.0.0.1:3031
cat <<MSG
Built build/bin/server. Starting it on $addr with 2 workers and a 1000-item cache (Ctrl-C stops it).
Try it from another terminal (uwsgi protocol, modifier1 111 "magic" set then get):
  /usr/bin/python3 python/uwsgi_cache_client.py --server $addr set greeting hello
  /usr/bin/python3 python/uwsgi_cache_client.py --server $addr get greeting
or the demo app behind nginx: see docs/nginx.md. Options: build/bin/server --help
MSG
exec build/bin/server --socket "$addr" --processes 2 --cache 1000 "$@"
