#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: the normal build, then the ASan+UBSan build,
# then the TSan build of the cache engine's threaded tests. Usage: ./test.sh [--quick] (normal build only)
set -euo pipefail
cd "$(dirname "$0")"
./deps.sh test
jobs=$(nproc)
# A missing peer (uWSGI, nginx, libpython, Django) fails its integration test here instead of skipping it.
export UCACHED_REQUIRE_PEERS=1
# The same Python environment on every machine: the development machines set this, so the suite's
# throwaway applications never leave __pycache__ behind whose mtime-in-seconds check could serve an
# older version of a module a test rewrites within the same second.
export PYTHONDONTWRITEBYTECODE=1

build_and_test() {  # dir, cmake args..., -- ctest args...   (TARGETS="..." builds only those)
  local dir=$1; shift
  local cmake_args=() ctest_args=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do cmake_args+=("$1"); shift; done
  [ $# -gt 0 ] && shift
  ctest_args=("$@")
  echo "== $dir: build" >&2
  cmake -S . -B "$dir" -G Ninja -DWERROR=ON "${cmake_args[@]}" >/dev/null  # warnings fail the suite
  # shellcheck disable=SC2086
  ninja -C "$dir" -j "$jobs" ${TARGETS:-} >/dev/null
  echo "== $dir: test" >&2
  (cd "$dir" && ctest --output-on-failure -j "$jobs" "${ctest_args[@]}")
}

build_and_test build -DCMAKE_BUILD_TYPE=RelWithDebInfo --
if [ "${1:-}" != --quick ]; then
  build_and_test build-asan -DCMAKE_BUILD_TYPE=Debug -DSANITIZE=address -- -LE no_asan
  # TSan: the shared-memory cache engine's own tests (threads and processes on one region).
  cmake -S . -B build-tsan -G Ninja -DWERROR=ON -DCMAKE_BUILD_TYPE=Debug -DSANITIZE=thread >/dev/null
  TARGETS=$(ninja -C build-tsan -t targets all | sed -n 's/^\(bin\/test_cache_[a-z_]*\):.*/\1/p' | sort -u | tr '\n' ' ') \
    build_and_test build-tsan -DCMAKE_BUILD_TYPE=Debug -DSANITIZE=thread -- -L tsan
  # Fuzz targets (clang, libFuzzer, ASan+UBSan): each over its corpus plus a fixed number of new inputs.
  CC=clang CXX=clang++ TARGETS=fuzz_targets \
    build_and_test build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFUZZ=ON -- -L fuzz
fi
