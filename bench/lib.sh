# Sourced by the bench scripts: paths, the bench packages, and the server binary to measure.
# Sets root, shared and server (SERVER=path measures an existing binary; otherwise a Release build in
# build-bench/, so a benchmark never measures a debug or sanitizer build by accident).
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=${SHARED:-$root/../shared}
"$root/deps.sh" bench
server=${SERVER:-}
if [ -z "$server" ]; then
  cmake -S "$root" -B "$root/build-bench" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  ninja -C "$root/build-bench" server >/dev/null
  server=$root/build-bench/bin/server
fi
