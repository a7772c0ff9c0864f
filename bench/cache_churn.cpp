// cache_churn: fragmentation of the block map under churn (issue 14, docs/cache.md 1b). Random sets and
// deletes of log-normally sized values (median 2 KiB, sigma 1.5, clipped to 100 B .. 1 MiB) keep the
// data area at about 80 % of its blocks in use; the program prints how often a value that fits in the
// free blocks could not be placed (stats full_fragmented) and what the engine did about it (`full`, or
// purge_lru evictions), for bitmap mode (4 KiB and 256-byte blocks) and for the default mode.
//
//   cache_churn                 10 million operations per configuration
//   cache_churn --ops N         N operations per configuration (the test suite runs a short one)
//   cache_churn --mib M         blocksize x blocks (bitmap mode) / value bytes targeted: M MiB (256)
//   cache_churn --fill F        keep this fraction of the data area's blocks in use (default 0.80)
//
// At the end of each run it checks the engine's accounting: the free blocks reported equal the area
// minus the blocks of the live values, and every live key reads back with its length. Exit 1 if not.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "cache/cache.hpp"

namespace {

struct Config {
  const char* name;
  bool bitmap;
  std::uint64_t blocksize;
  bool purge_lru;
};

std::uint64_t g_data_bytes = 256ull << 20;  // blocksize x blocks (bitmap) / value bytes targeted (default)
double g_target_fill = 0.80;                // --fill
constexpr std::size_t kMaxValue = 1 << 20;

std::string key_of(std::uint64_t id) {
  char buf[24];
  int n = std::snprintf(buf, sizeof buf, "churn:%012llu", static_cast<unsigned long long>(id));
  return std::string(buf, static_cast<std::size_t>(n));
}

bool run(const Config& cfg, std::uint64_t ops) {
  cache::Geometry g;
  g.name = cfg.name;
  g.keysize = 64;
  g.ignore_full = true;
  g.purge_lru = cfg.purge_lru;
  g.bitmap = cfg.bitmap;
  if (cfg.bitmap) {
    g.blocksize = cfg.blocksize;
    g.blocks = g_data_bytes / cfg.blocksize;
    g.items = g_data_bytes / 4096;  // ~1.5 x the live values at 80 % (mean value ~6 KiB)
  } else {
    g.blocksize = kMaxValue;  // default mode: 64-byte blocks, values up to blocksize
    g.items = g_data_bytes / 4096;
  }
  auto c = cache::Cache::create(g);
  const auto st0 = c->stats();
  // Fill target in blocks: 80 % of the area (bitmap mode), or 80 % of g_data_bytes (default mode, whose
  // area is sized for items x blocksize and so never fragments into `full`).
  const double area =
      cfg.bitmap ? static_cast<double>(st0.blocks) : static_cast<double>(g_data_bytes / st0.block_bytes);
  std::mt19937_64 rng(42);
  std::lognormal_distribution<double> size_dist(std::log(2048.0), 1.5);
  std::string value(kMaxValue, 'v');
  for (std::size_t i = 0; i < value.size(); ++i) value[i] = static_cast<char>('a' + i % 26);
  std::vector<std::uint64_t> live;
  std::vector<std::uint32_t> live_size;
  std::uint64_t next_id = 0, sets = 0, dels = 0, full = 0, bytes = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (std::uint64_t op = 0; op < ops; ++op) {
    const auto st_free = c->stats().blocks_free;
    const double used = static_cast<double>(st0.blocks - st_free) / area;
    const bool do_set = live.empty() || (used < g_target_fill ? rng() % 4 != 0 : rng() % 4 == 0);
    if (do_set) {
      const auto size =
          static_cast<std::size_t>(std::clamp(size_dist(rng), 100.0, static_cast<double>(kMaxValue)));
      const std::uint64_t id = next_id++;
      const cache::Status s = c->set(key_of(id), std::string_view(value.data(), size));
      ++sets;
      if (s == cache::Status::ok) {
        live.push_back(id);
        live_size.push_back(static_cast<std::uint32_t>(size));
        bytes += size;
      } else if (s == cache::Status::full) {
        ++full;
      } else {
        std::printf("unexpected status %s\n", std::string(cache::describe(s)).c_str());
        return false;
      }
    } else {
      const std::size_t k = rng() % live.size();
      const cache::Status s = c->del(key_of(live[k]));
      ++dels;
      if (s == cache::Status::ok) bytes -= live_size[k];  // a miss: evicted meanwhile (purge_lru)
      live[k] = live.back();
      live.pop_back();
      live_size[k] = live_size.back();
      live_size.pop_back();
    }
  }
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // Check the accounting: evicted keys are gone from `live` only lazily, so look every key up.
  std::uint64_t used_blocks = 0, present = 0, stored = 0;
  std::string out;
  for (std::size_t k = 0; k < live.size(); ++k) {
    const std::string key = key_of(live[k]);
    if (c->get(key, out) != cache::Status::ok) continue;
    if (out.size() != live_size[k]) {
      std::printf("%s: key %s reads back %zu bytes, stored %u\n", cfg.name, key.c_str(), out.size(),
                  live_size[k]);
      return false;
    }
    ++present;
    stored += out.size();
    used_blocks += (key.size() + out.size() + st0.block_bytes - 1) / st0.block_bytes;
  }
  const auto st = c->stats();
  const bool ok = st.blocks_free == st0.blocks - used_blocks && present == c->count();
  std::printf(
      "%-28s ops %9llu  sets %9llu  dels %9llu  full %7llu (%.4f%% of sets)  fragmented %7llu (%.4f%%)  "
      "evictions %7llu  live %6llu  stored %6.1f MiB  area %6.1f MiB  fill %.1f%%  %.1f s  %s\n",
      cfg.name, static_cast<unsigned long long>(ops), static_cast<unsigned long long>(sets),
      static_cast<unsigned long long>(dels), static_cast<unsigned long long>(full),
      100.0 * static_cast<double>(full) / static_cast<double>(sets),
      static_cast<unsigned long long>(st.full_fragmented),
      100.0 * static_cast<double>(st.full_fragmented) / static_cast<double>(sets),
      static_cast<unsigned long long>(st.evictions), static_cast<unsigned long long>(present),
      static_cast<double>(stored) / (1 << 20), area * static_cast<double>(st0.block_bytes) / (1 << 20),
      100.0 * static_cast<double>(used_blocks) / area, secs, ok ? "accounting ok" : "ACCOUNTING MISMATCH");
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t ops = 10'000'000;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--ops") == 0 && i + 1 < argc) {
      ops = std::strtoull(argv[++i], nullptr, 10);
    } else if (std::strcmp(argv[i], "--fill") == 0 && i + 1 < argc) {
      g_target_fill = std::strtod(argv[++i], nullptr);
    } else if (std::strcmp(argv[i], "--mib") == 0 && i + 1 < argc) {
      g_data_bytes = std::strtoull(argv[++i], nullptr, 10) << 20;
    } else {
      std::fprintf(stderr, "usage: cache_churn [--ops N] [--mib M] [--fill F]\n");
      return 2;
    }
  }
  std::printf(
      "cache_churn: log-normal values (median 2 KiB, sigma 1.5, 100 B .. 1 MiB), value space %llu MiB "
      "(blocksize x blocks in bitmap mode), ~%.0f%% of the data area's blocks in use, %llu operations each\n",
      static_cast<unsigned long long>(g_data_bytes >> 20), 100 * g_target_fill,
      static_cast<unsigned long long>(ops));
  const Config configs[] = {
      {"bitmap, 4 KiB blocks", true, 4096, false},
      {"bitmap, 4 KiB, purge_lru", true, 4096, true},
      {"bitmap, 256 B blocks", true, 256, false},
      {"default (64 B blocks)", false, 0, false},
  };
  bool ok = true;
  for (const auto& cfg : configs) ok = run(cfg, ops) && ok;
  return ok ? 0 : 1;
}
