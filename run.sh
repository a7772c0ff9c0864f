#!/usr/bin/env bash
# Quick start: install what is missing, build, and run the server on a working default
# (a 1000-item cache and the built-in demo app on 127.0.0.1:3031). Extra arguments are passed on,
# e.g. ./run.sh --processes 4 --cache 10000
set -euo pipefail
cd "$(dirname "$0")"
./deps.sh build
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null  # as ./test.sh: one build
ninja -C build server >/dev/null
addr=127.0.0.1:3031
http=127.0.0.1:8080
cat <<MSG
Built build/bin/server. Starting it with 2 workers, a 1000-item cache and the built-in demo app:
  uwsgi protocol on $addr (put nginx in front: docs/nginx.md), plain HTTP on $http.
Try it from another terminal:
  curl http://$http/                                        # the demo app: cache stats
  build/bin/server cache set greeting hello --cache-server $addr
  build/bin/server cache get greeting --cache-server $addr
  curl http://$http/cache/greeting                           # the demo app reads the same cache
Ctrl-C stops it. Every option: build/bin/server --help
MSG
exec build/bin/server --socket "$addr" --http-socket "$http" --processes 2 --cache 1000 "$@"
