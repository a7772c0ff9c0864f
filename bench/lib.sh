# Sourced by the bench scripts: paths, the bench packages, and the server binary to measure.
# Sets root, shared and server (SERVER=path measures an existing binary; otherwise a Release build in
# build-bench/, so a benchmark never measures a debug or sanitizer build by accident); defines
# free_port, cpu_ticks and tick_us.
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shared=${SHARED:-$root/../shared}
"$root/deps.sh" bench
server=${SERVER:-}
if [ -z "$server" ]; then
  cmake -S "$root" -B "$root/build-bench" -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  ninja -C "$root/build-bench" server >/dev/null
  server=$root/build-bench/bin/server
fi

# Server CPU: user+system clock ticks of a process and all its descendants (tick_us µs each). On this
# 2-core machine the load generator competes with the server for the cores, so ops/s alone can hide a
# cheaper server.
descendants() { local c; echo "$1"; for c in $(ps -o pid= --ppid "$1"); do descendants "$c"; done; }
cpu_ticks() {
  local total=0 p fields
  for p in $(descendants "$1"); do
    fields=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null) || continue
    set -- $fields  # split on purpose: after the command name, utime and stime are fields 12 and 13
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}
tick_us=$((1000000 / $(getconf CLK_TCK)))

free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
