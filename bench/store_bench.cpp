// store_bench: what a --cache-store costs and how fast a store loads (docs/benchmarks.md, persistence).
//
//   store_bench [--dir DIR] [--quick]
//
// DIR (default /tmp) must be on the file system whose figures you want (a disk, not tmpfs). One process,
// 12-byte keys, 64-byte values, blocksize 64 and keysize 64 (small blocks so that 1e6 items make a
// 180 MB file). Prints, for 1e5 and 1e6 items (--quick: 1e5 only):
//   * load: Cache::create() of an existing full store, with the file in the page cache (warm: a restart)
//     and after dropping the file's pages (cold: posix_fadvise DONTNEED, as after a reboot);
//   * set/update throughput without a store, with a store (first fill of a fresh file, then overwrites),
//     and overwrites right after a sync (every page clean again: each first write faults);
//   * one sync_store() (msync MS_SYNC) after overwriting every item, and with nothing dirty.
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "cache/cache.hpp"
#include "common/log.hpp"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

struct KeyMaker {
  char buf[12] = {'k', 'e', 'y', ':'};
  std::string_view operator()(std::uint32_t i) {
    std::uint32_t x = i * 0x9E3779B1u;
    for (int k = 11; k >= 4; --k, x >>= 4) buf[k] = "0123456789abcdef"[x & 15];
    return {buf, sizeof buf};
  }
};

cache::Geometry geometry(std::uint64_t items, const std::string& store) {
  cache::Geometry g;
  g.name = "bench";
  g.items = items;
  g.blocksize = 64;
  g.keysize = 64;
  g.ignore_full = true;
  g.store = store;
  return g;
}

// ns per write of every item (update: insert or overwrite).
double write_all(cache::Cache& c, std::uint64_t n, char fill) {
  KeyMaker key;
  std::string value(64, fill);
  auto t0 = Clock::now();
  for (std::uint32_t i = 0; i < n; ++i) {
    value[0] = static_cast<char>(i);
    if (c.update(key(i), value) != cache::Status::ok) {
      std::fprintf(stderr, "store_bench: update failed at %u\n", i);
      std::exit(1);
    }
  }
  return seconds_since(t0) * 1e9 / static_cast<double>(n);
}

void drop_file_pages(const std::string& path) {
  int fd = open(path.c_str(), O_RDONLY);
  if (fd < 0) return;
  fdatasync(fd);
  posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
  close(fd);
}

void run(std::uint64_t n, const std::string& dir) {
  const std::string path = dir + "/store_bench." + std::to_string(getpid()) + ".store";
  std::filesystem::remove(path);

  double anon_fill, anon_over;
  {
    auto c = cache::Cache::create(geometry(n, ""));
    anon_fill = write_all(*c, n, 'a');
    anon_over = write_all(*c, n, 'b');
  }
  double store_fill, store_over, after_sync, sync_dirty_ms, sync_clean_ms;
  std::uint64_t file_bytes;
  {
    auto t0 = Clock::now();
    auto c = cache::Cache::create(geometry(n, path));
    double create_ms = seconds_since(t0) * 1e3;
    store_fill = write_all(*c, n, 'a');
    store_over = write_all(*c, n, 'b');
    t0 = Clock::now();
    c->sync_store();  // everything written so far
    double first_sync_ms = seconds_since(t0) * 1e3;
    write_all(*c, n, 'c');
    t0 = Clock::now();
    c->sync_store();
    sync_dirty_ms = seconds_since(t0) * 1e3;
    t0 = Clock::now();
    c->sync_store();
    sync_clean_ms = seconds_since(t0) * 1e3;
    after_sync = write_all(*c, n, 'd');  // every page was clean: one write fault per page first
    c->sync_store();
    file_bytes = std::filesystem::file_size(path);
    std::printf("%8llu items: store file %.1f MB, created in %.0f ms; first sync after the fill %.0f ms\n",
                static_cast<unsigned long long>(n), static_cast<double>(file_bytes) / 1e6, create_ms,
                first_sync_ms);
  }
  double warm_ms, cold_ms;
  std::uint64_t restored;
  {
    auto t0 = Clock::now();
    auto c = cache::Cache::create(geometry(n, path));
    warm_ms = seconds_since(t0) * 1e3;
    restored = c->stats().store_restored;
  }
  drop_file_pages(path);
  {
    auto t0 = Clock::now();
    auto c = cache::Cache::create(geometry(n, path));
    cold_ms = seconds_since(t0) * 1e3;
  }
  std::filesystem::remove(path);
  std::printf("  load (restored %llu): warm %.0f ms, cold %.0f ms\n",
              static_cast<unsigned long long>(restored), warm_ms, cold_ms);
  std::printf(
      "  write ns/op: no store fill %.0f, overwrite %.0f | store fill %.0f, overwrite %.0f, "
      "overwrite after a sync %.0f\n",
      anon_fill, anon_over, store_fill, store_over, after_sync);
  std::printf("  sync_store (msync MS_SYNC): all %llu items rewritten %.0f ms, nothing dirty %.2f ms\n",
              static_cast<unsigned long long>(n), sync_dirty_ms, sync_clean_ms);
  std::fflush(stdout);
}

// The seal's own cost, without memory misses: 1e3 items overwritten 300 times, best of 5.
void run_small(const std::string& dir) {
  const std::string path = dir + "/store_bench_small." + std::to_string(getpid()) + ".store";
  std::filesystem::remove(path);
  auto best = [](cache::Cache& c) {
    double b = 1e18;
    for (int rep = 0; rep < 5; ++rep) {
      auto t0 = Clock::now();
      for (int pass = 0; pass < 300; ++pass) write_all(c, 1000, static_cast<char>('a' + pass % 26));
      b = std::min(b, seconds_since(t0) * 1e9 / 300000.0);
    }
    return b;
  };
  double anon, stored;
  {
    auto c = cache::Cache::create(geometry(1000, ""));
    anon = best(*c);
  }
  {
    auto c = cache::Cache::create(geometry(1000, path));
    stored = best(*c);
  }
  std::filesystem::remove(path);
  std::printf("    1000 items, overwrite ns/op (best of 5 x 300 passes): no store %.0f, store %.0f\n", anon,
              stored);
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "/tmp";
  bool quick = false;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
      dir = argv[++i];
    } else if (std::strcmp(argv[i], "--quick") == 0) {
      quick = true;
    } else {
      std::fprintf(stderr, "usage: %s [--dir DIR] [--quick]\n", argv[0]);
      return 2;
    }
  }
  common::set_log_level(common::LogLevel::info);
  std::printf("store_bench: blocksize 64, keysize 64, 12-byte keys, 64-byte values, files in %s\n",
              dir.c_str());
  run_small(dir);
  run(100000, dir);
  if (!quick) run(1000000, dir);
  return 0;
}
