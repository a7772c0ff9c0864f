#!/usr/bin/env bash
# The embedded cache API from Python, ours against uWSGI 2.0.21 in the same run: the shared
# api_bench.py loop under `uwsgi --plugin python3,cache --cache 1000 --pyrun` and under
# `server --cache 1000 --pyrun`, alternately, ROUNDS times each (default 3). Prints every round and a
# table of medians with the ratio ours / uWSGI.
# Usage: bench/python_api.sh   (env: SHARED=../shared, SERVER=binary, ROUNDS, API_N, API_REPS,
#        API_VALUE_SIZES as api_bench.py)
set -euo pipefail
. "$(dirname "$0")/lib.sh"  # root, shared, server
rounds=${ROUNDS:-3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
for round in $(seq 1 "$rounds"); do
  for who in uwsgi ours; do
    if [ "$who" = uwsgi ]; then
      timeout 300 /usr/bin/uwsgi --plugin python3,cache --cache 1000 --pyrun "$shared/bench/api_bench.py" \
        >"$who-$round.log" 2>&1
    else
      timeout 300 "$server" --cache 1000 --pyrun "$shared/bench/api_bench.py" >"$who-$round.log" 2>&1
    fi
    grep '^RESULT api' "$who-$round.log" | sed "s/^/$who round $round: /" >&2
  done
done
# Medians per (op, vsize) and target, then the table.
/usr/bin/python3 - "$rounds" <<'EOF'
import glob, re, statistics, sys
rows = {}
for path in glob.glob("*.log"):
    who = path.split("-")[0]
    for m in re.finditer(r"RESULT api op=(\S+) vsize=(\d+) .* ns_per_op=([\d.]+)", open(path).read()):
        rows.setdefault((m.group(1), int(m.group(2))), {}).setdefault(who, []).append(float(m.group(3)))
print(f"| call | value | ours ns/call (median of {sys.argv[1]}) | uWSGI 2.0.21 ns/call | ours / uWSGI |")
print("|---|---:|---:|---:|---:|")
for (op, vsize), by in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    ours, theirs = statistics.median(by.get("ours", [0])), statistics.median(by.get("uwsgi", [0]))
    ratio = f"{ours / theirs:.2f}" if theirs else "-"
    print(f"| `{op}` | {vsize or '-'} {'B' if vsize else ''} | {ours:.1f} | {theirs:.1f} | {ratio} |")
EOF
