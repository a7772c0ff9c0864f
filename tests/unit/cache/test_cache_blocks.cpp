// Values in runs of blocks (issue 14, docs/cache.md 1b): uWSGI's bitmap mode, memory that follows what
// is stored, the free index, fragmentation, multi-block values under concurrent rewrites, stores.
#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "cache/cache.hpp"
#include "cache/layout.hpp"
#include "capture_stderr.hpp"
#include "checked_value.hpp"
#include "temp_dir.hpp"

using cache::Cache;
using cache::Geometry;
using cache::Status;
using namespace cachetest;

namespace {

Geometry bitmap_geometry(std::uint64_t items, std::uint64_t blocksize, std::uint64_t blocks,
                         std::uint32_t keysize = 64) {
  Geometry g;
  g.name = "bitmap";
  g.items = items;
  g.blocksize = blocksize;
  g.blocks = blocks;
  g.bitmap = true;
  g.keysize = keysize;
  g.ignore_full = true;
  return g;
}

std::string patterned(std::size_t n, unsigned seed) {
  std::string v(n, '\0');
  std::mt19937 rng(seed);
  for (auto& ch : v) ch = static_cast<char>(rng());
  return v;
}

// This process's resident shared memory (shared anonymous mappings, tmpfs), as the kernel counts it.
std::uint64_t rss_shmem_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("RssShmem:", 0) == 0) return std::stoull(line.substr(9)) * 1024;
  FAIL("no RssShmem in /proc/self/status");
  return 0;
}

using cachetest::TempDir;

}  // namespace

TEST_CASE("bitmap mode: a value spans ceil(size / blocksize) blocks, up to blocksize x blocks",
          "[cache][blocks]") {
  // keysize 64 <= blocksize: the area has blocks + items x 1 blocks (room for the keys).
  auto c = Cache::create(bitmap_geometry(16, 4096, 64));
  const auto st0 = c->stats();
  CHECK(st0.block_bytes == 4096);
  CHECK(st0.blocks == 64 + 16);
  CHECK(st0.blocks_free == st0.blocks);
  CHECK(cache::largest_value(c->geometry()) == 4096 * 64);

  const std::string big = patterned(150 * 1024, 1);
  REQUIRE(c->set("big", big) == Status::ok);
  std::string v;
  REQUIRE(c->get("big", v) == Status::ok);
  CHECK(v == big);
  CHECK(c->stats().blocks_free == st0.blocks - (3 + big.size() + 4095) / 4096);

  // Exactly the largest value fits (its key in the extra blocks); one byte more is refused.
  const std::string largest = patterned(4096 * 64, 2);
  CHECK(c->set("largest", largest) == Status::full);  // "big" holds 38 of the 80 blocks
  REQUIRE(c->del("big") == Status::ok);
  CHECK(c->stats().blocks_free == st0.blocks);
  REQUIRE(c->set("largest", largest) == Status::ok);
  REQUIRE(c->get("largest", v) == Status::ok);
  CHECK(v == largest);
  CHECK(c->set("over", std::string(4096 * 64 + 1, 'x')) == Status::value_too_large);

  // A rewrite to another size moves or shrinks the run; the blocks follow.
  REQUIRE(c->update("largest", "small now") == Status::ok);
  CHECK(c->stats().blocks_free == st0.blocks - 1);
  REQUIRE(c->get("largest", v) == Status::ok);
  CHECK(v == "small now");
  // math makes an 8-byte value in place.
  std::int64_t n = 0;
  REQUIRE(c->math("largest", Cache::MathOp::inc, 5, 0, &n) == Status::ok);
  REQUIRE(c->clear() == Status::ok);
  CHECK(c->stats().blocks_free == st0.blocks);
}

TEST_CASE("bitmap mode: blocks below items and blocksize x blocks over the limit are refused",
          "[cache][blocks]") {
  CHECK_THROWS_WITH(Cache::create(bitmap_geometry(16, 4096, 8)), Catch::Contains("at least items"));
  CHECK_THROWS_WITH(Cache::create(bitmap_geometry(16, 1 << 20, 4096)), Catch::Contains("largest value"));
}

TEST_CASE("without bitmap mode: 64-byte blocks, and a value is at most blocksize", "[cache][blocks]") {
  Geometry g;
  g.name = "small";
  g.items = 100;  // blocksize 64 KiB, keysize 2048: uWSGI's defaults
  auto c = Cache::create(g);
  CHECK(c->stats().block_bytes == 64);
  const auto free0 = c->stats().blocks_free;
  REQUIRE(c->set("key-of-12-by", std::string(100, 'v')) == Status::ok);
  CHECK(free0 - c->stats().blocks_free == 2);  // 112 bytes: two blocks, not a 64 KiB one
  CHECK(c->set("max", std::string(65536, 'm')) == Status::ok);
  CHECK(c->set("over", std::string(65537, 'm')) == Status::value_too_large);
}

TEST_CASE("without bitmap mode: `items` values of blocksize always fit, whatever the fragmentation",
          "[cache][blocks]") {
  Geometry g;
  g.name = "frag";
  g.items = 40;
  g.blocksize = 3000;
  g.keysize = 32;
  g.ignore_full = true;
  auto c = Cache::create(g);
  std::mt19937 rng(7);
  std::map<std::string, std::string> model;
  for (unsigned op = 0; op < 20000; ++op) {
    const std::string key = numbered("k", rng() % 60);
    if (rng() % 4 == 0) {
      c->del(key);
      model.erase(key);
      continue;
    }
    const std::string value = patterned(1 + rng() % 3000, op);
    const Status st = c->update(key, value);
    if (model.size() < g.items || model.count(key) != 0) {
      INFO("op " << op << ", items " << model.size());
      REQUIRE(st == Status::ok);  // never full below `items` items
      model[key] = value;
    } else {
      REQUIRE(st == Status::full);
    }
  }
  CHECK(c->stats().full_fragmented == 0);
  std::string v;
  for (const auto& [key, value] : model) {
    REQUIRE(c->get(key, v) == Status::ok);
    CHECK(v == value);
  }
}

TEST_CASE("bitmap mode: free blocks are counted exactly through random sets, updates and deletes",
          "[cache][blocks]") {
  auto c = Cache::create(bitmap_geometry(64, 128, 1024, 16));
  const auto total = c->stats().blocks;
  std::mt19937 rng(11);
  std::map<std::string, std::string> model;
  for (unsigned op = 0; op < 20000; ++op) {
    const std::string key = numbered("k", rng() % 80);
    if (rng() % 3 == 0) {
      c->del(key);
      model.erase(key);
    } else {
      std::string value = patterned(1 + rng() % 5000, op);
      const Status st = c->update(key, value);
      if (st == Status::ok)
        model[key] = std::move(value);
      else
        REQUIRE(st == Status::full);  // a failed update keeps the old value
    }
    if (op % 1000 == 999) {
      std::uint64_t used = 0;
      std::string v;
      for (const auto& [key, value] : model) {
        REQUIRE(c->get(key, v) == Status::ok);
        REQUIRE(v == value);
        used += (key.size() + value.size() + 127) / 128;
      }
      REQUIRE(c->stats().blocks_free == total - used);
    }
  }
  REQUIRE(c->clear() == Status::ok);
  CHECK(c->stats().blocks_free == total);
}

TEST_CASE("bitmap mode: no run for a value that fits in the free total: full (counted), or purge_lru evicts",
          "[cache][blocks]") {
  // 16 items, 16 blocks of 64 bytes, keysize 8: an area of 32 blocks.
  Geometry g = bitmap_geometry(16, 64, 16, 8);
  const bool purge_lru = GENERATE(false, true);
  g.purge_lru = purge_lru;
  auto c = Cache::create(g);
  REQUIRE(c->stats().blocks == 32);
  for (unsigned i = 0; i < 16; ++i)
    REQUIRE(c->set(numbered("k", i + 10), std::string(100, 'x')) == Status::ok);
  CHECK(c->stats().blocks_free == 0);
  for (unsigned i = 0; i < 16; i += 2) REQUIRE(c->del(numbered("k", i + 10)) == Status::ok);
  CHECK(c->stats().blocks_free == 16);                     // eight holes of two blocks
  const Status st = c->set("big", std::string(150, 'b'));  // three blocks
  if (!purge_lru) {
    CHECK(st == Status::full);
    CHECK(c->stats().full_fragmented == 1);
  } else {
    CHECK(st == Status::ok);
    CHECK(c->stats().evictions >= 1);
    CHECK(c->stats().full_fragmented == 1);  // one write met fragmentation, then evicted until it fit
    std::string v;
    REQUIRE(c->get("big", v) == Status::ok);
    CHECK(v == std::string(150, 'b'));
  }
}

TEST_CASE("20 000 values of 100 bytes in a default-blocksize cache take under 16 MiB of shared memory",
          "[cache][blocks][memory]") {
  const std::uint64_t before = rss_shmem_bytes();
  Geometry g;
  g.name = "mem";
  g.items = 20000;  // blocksize 64 KiB, keysize 2048 (the defaults)
  auto c = Cache::create(g);
  for (unsigned i = 0; i < 20000; ++i) {
    char key[16];
    std::snprintf(key, sizeof key, "key:%08u", i);  // 12 bytes
    REQUIRE(c->set(std::string_view(key, 12), patterned(100, i)) == Status::ok);
  }
  const std::uint64_t grown = rss_shmem_bytes() - before;
  INFO("shared memory grew by " << grown << " bytes for 20000 x (12 + 100) bytes");
  CHECK(grown < 16u * 1024 * 1024);
  CHECK(grown > 20000u * 112);  // it did measure the cache
}

TEST_CASE("multi-block values are never read torn while they are rewritten at other sizes",
          "[cache][blocks][concurrency]") {
  auto c = Cache::create(bitmap_geometry(32, 1024, 4096, 64));
  constexpr unsigned kKeys = 12;
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(1200);
  std::atomic<unsigned> bad{0}, hits{0}, writes{0};
  auto writer = [&](unsigned seed) {
    std::mt19937 rng(seed);
    std::uint64_t stamp = static_cast<std::uint64_t>(seed) << 32;
    while (std::chrono::steady_clock::now() < until) {
      const std::string key = numbered("k", rng() % kKeys);
      if (rng() % 8 == 0) {
        c->del(key);
        continue;
      }
      // 1 to ~150 blocks: every rewrite moves the run or changes its length.
      const std::size_t filler = rng() % (150 * 1024);
      if (c->update(key, make_value(key, ++stamp, filler)) == Status::ok) ++writes;
    }
  };
  auto reader = [&](unsigned seed) {
    std::mt19937 rng(seed);
    std::string v;
    while (std::chrono::steady_clock::now() < until) {
      const std::string key = numbered("k", rng() % kKeys);
      if (c->get(key, v) == Status::ok) {
        ++hits;
        if (!check_value(key, v)) ++bad;
      }
    }
  };
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < 2; ++t) threads.emplace_back(writer, 100 + t);
  for (unsigned t = 0; t < 2; ++t) threads.emplace_back(reader, 200 + t);
  for (auto& t : threads) t.join();
  INFO("writes " << writes << ", hits " << hits);
  CHECK(bad == 0);
  CHECK(writes > 0);
  CHECK(hits > 0);
  // Nothing leaked: the free blocks are the area minus the live runs.
  std::uint64_t used = 0;
  std::string v;
  for (unsigned k = 0; k < kKeys; ++k) {
    const std::string key = numbered("k", k);
    if (c->get(key, v) == Status::ok) used += (key.size() + v.size() + 1023) / 1024;
  }
  CHECK(c->stats().blocks_free == c->stats().blocks - used);
}

TEST_CASE("store: 150 KiB bitmap-mode values survive a reopen; a damaged block of one drops only it",
          "[cache][blocks][store]") {
  TempDir dir;
  Geometry g = bitmap_geometry(16, 4096, 400);
  g.store = dir.file("s");
  std::vector<std::string> values;
  for (unsigned i = 0; i < 8; ++i) values.push_back(patterned(150 * 1024 + i, i));
  std::uint64_t free_before = 0;
  {
    auto c = Cache::create(g);
    for (unsigned i = 0; i < 8; ++i) REQUIRE(c->set(numbered("v", i), values[i]) == Status::ok);
    REQUIRE(c->del("v2") == Status::ok);  // a hole the reload must keep free, not more
    free_before = c->stats().blocks_free;
  }
  {
    std::unique_ptr<Cache> c;
    const std::string log = capture_stderr([&] { c = Cache::create(g); });
    CHECK(log.find("[uwsgi-cache] restored 7 items") != std::string::npos);
    CHECK(c->stats().blocks_free == free_before);
    std::string v;
    for (unsigned i = 0; i < 8; ++i) {
      if (i == 2) {
        CHECK(c->get("v2", v) == Status::miss);
        continue;
      }
      REQUIRE(c->get(numbered("v", i), v) == Status::ok);
      CHECK(v == values[i]);
    }
  }
  // Damage one byte in the 20th block of v5's run: v5 is dropped, the others are served.
  const auto items_off = [&] {
    std::ifstream in(g.store, std::ios::binary);
    std::uint64_t off = 0;
    in.seekg(offsetof(cache::layout::RegionHeader, items_offset));
    in.read(reinterpret_cast<char*>(&off), 8);
    return off;
  }();
  std::uint64_t blocks_off = 0;
  std::uint32_t run = 0, slot = 0;
  {
    std::ifstream in(g.store, std::ios::binary);
    in.seekg(offsetof(cache::layout::RegionHeader, blocks_offset));
    in.read(reinterpret_cast<char*>(&blocks_off), 8);
    for (slot = 0; slot < 16; ++slot) {  // the slot whose run starts with "v5"
      in.seekg(static_cast<std::streamoff>(items_off + slot * sizeof(cache::layout::Item) +
                                           offsetof(cache::layout::Item, block)));
      in.read(reinterpret_cast<char*>(&run), 4);
      if (run == cache::layout::kNil) continue;
      char key[2];
      in.seekg(static_cast<std::streamoff>(blocks_off + run * 4096ULL));
      in.read(key, 2);
      if (std::string_view(key, 2) == "v5") break;
    }
  }
  REQUIRE(slot < 16);
  {
    std::fstream f(g.store, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(blocks_off + (run + 20) * 4096ULL + 7));
    f.put('\x5a' ^ values[5][20 * 4096 + 5]);
  }
  std::unique_ptr<Cache> c;
  const std::string log = capture_stderr([&] { c = Cache::create(g); });
  CHECK(log.find("dropped 1 damaged item(s)") != std::string::npos);
  std::string v;
  CHECK(c->get("v5", v) == Status::miss);
  REQUIRE(c->get("v4", v) == Status::ok);
  CHECK(v == values[4]);
}

// A copy of fixtures/store_vN.bin in `dir`, and the geometry it was written with.
Geometry fixture_store(int version, TempDir& dir) {
  Geometry g;
  g.name = "v3";
  g.items = 16;
  g.blocksize = 512;
  g.keysize = 300;
  g.store = dir.file("s");
  std::filesystem::copy_file(std::string(CACHE_TEST_FIXTURES) + "/store_v" + std::to_string(version) + ".bin",
                             g.store);
  return g;
}

TEST_CASE("store: format 3 and 4 stores are migrated at load", "[cache][blocks][store]") {
  // fixtures/store_vN.bin were written by the engine at format N (fixtures/make_store_fixture.cpp): 16
  // items, blocksize 512, keysize 300; key0..key9 minus key5, value i = i * 50 + 1 bytes of 'a' + i, key3
  // expiring 1e8 s after it was written, and a 300-byte key with a 512-byte value (format 3: in a
  // key-extension slot; format 4: one run of blocks).
  const int version = GENERATE(3, 4);
  INFO("format " << version);
  TempDir dir;
  Geometry g = fixture_store(version, dir);
  auto check_items = [&](Cache& c) {
    std::string v;
    for (int i = 0; i < 10; ++i) {
      const std::string key = numbered("key", i);
      std::int64_t at = -1;
      if (i == 5) {
        CHECK(c.get(key, v) == Status::miss);
        continue;
      }
      REQUIRE(c.get(key, v, &at) == Status::ok);
      CHECK(v == std::string(static_cast<std::size_t>(i * 50 + 1), static_cast<char>('a' + i)));
      if (i == 3)
        CHECK(at > time(nullptr) + 90000000);
      else
        CHECK(at == 0);
    }
    REQUIRE(c.get(std::string(300, 'K'), v) == Status::ok);
    CHECK(v == std::string(512, 'V'));
    CHECK(c.count() == 10);
  };
  {
    std::unique_ptr<Cache> c;
    const std::string log = capture_stderr([&] { c = Cache::create(g); });
    INFO(log);
    CHECK(log.find("migrated 10 items from store format " + std::to_string(version) + " to format " +
                   std::to_string(cache::layout::kFormatVersion)) != std::string::npos);
    check_items(*c);
  }
  std::unique_ptr<Cache> c;  // now a store of the current format
  const std::string log = capture_stderr([&] { c = Cache::create(g); });
  CHECK(log.find("[uwsgi-cache] restored 10 items") != std::string::npos);
  check_items(*c);
}

TEST_CASE("store: a damaged item of a format 3 or 4 store is dropped by the migration",
          "[cache][blocks][store]") {
  const int version = GENERATE(3, 4);
  INFO("format " << version);
  TempDir dir;
  Geometry g = fixture_store(version, dir);
  const std::string& path = g.store;
  {
    // key7's value is the file's only run of 351 'h' bytes: flip one byte in its middle.
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const std::size_t at = bytes.find(std::string(351, 'h'));
    REQUIRE(at != std::string::npos);
    f.seekp(static_cast<std::streamoff>(at + 100));
    f.put('x');
  }
  std::unique_ptr<Cache> c;
  const std::string log = capture_stderr([&] { c = Cache::create(g); });
  INFO(log);
  CHECK(log.find("migrated 9 items from store format " + std::to_string(version)) != std::string::npos);
  CHECK(log.find("1 dropped: damaged") != std::string::npos);
  std::string v;
  CHECK(c->get("key7", v) == Status::miss);
  REQUIRE(c->get("key8", v) == Status::ok);
  CHECK(v == std::string(401, 'i'));
}
