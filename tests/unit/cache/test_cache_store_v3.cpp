// A store file of format version 3 (48-byte items, no memcached cas or flags) still loads: its intact
// items move to a fresh version 4 file; damaged ones are dropped; a v3 file of another geometry is still
// refused. The v3 file is built here from a v4 one, field by field, as a version 3 server laid it out.
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "cache/cache.hpp"
#include "cache/layout.hpp"
#include "cache/shm_cache.hpp"  // seal_sum_v3, header_sum: the v3 file is built with the format's own sums

using cache::Cache;
using cache::Geometry;
using cache::Status;
namespace layout = cache::layout;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    char tmpl[] = "/tmp/cache_store_v3_XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() { std::filesystem::remove_all(path); }
};

Geometry geometry(const std::string& path, std::uint64_t items = 64) {
  Geometry g;
  g.name = "old";
  g.items = items;
  g.blocksize = 128;
  g.keysize = 512;
  g.ignore_full = true;
  g.store = path;
  return g;
}

std::string slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

template <typename T>
T at(const std::string& data, std::size_t offset) {
  T v;
  std::memcpy(&v, data.data() + offset, sizeof v);
  return v;
}

template <typename T>
void put(std::string& data, std::size_t offset, T v) {
  std::memcpy(data.data() + offset, &v, sizeof v);
}

// Rewrites a version 4 store as version 3 laid it out: 48-byte items, seals without cas and flags,
// blocks after them, the header's offsets, size and checksum to match.
void downgrade_to_v3(const std::string& path, const std::string& damage_key = "") {
  const std::string v4 = slurp(path);
  const auto items_off = at<std::uint64_t>(v4, offsetof(layout::RegionHeader, items_offset));
  const auto seals_off = at<std::uint64_t>(v4, offsetof(layout::RegionHeader, seals_offset));
  const auto blocks_off = at<std::uint64_t>(v4, offsetof(layout::RegionHeader, blocks_offset));
  const auto geo = at<layout::RegionGeometry>(v4, offsetof(layout::RegionHeader, geometry));
  const std::uint64_t v3_seals = (items_off + 48 * geo.slots + 63) / 64 * 64;
  const std::uint64_t v3_blocks =
      (v3_seals + 16 * geo.slots + layout::kPage - 1) / layout::kPage * layout::kPage;
  const std::uint64_t total =
      (v3_blocks + geo.block_size * geo.slots + layout::kPage - 1) / layout::kPage * layout::kPage;
  std::string v3(total, '\0');
  std::memcpy(v3.data(), v4.data(), items_off);
  for (std::uint64_t i = 0; i < geo.slots; ++i) {
    std::memcpy(v3.data() + items_off + 48 * i, v4.data() + items_off + sizeof(layout::Item) * i, 48);
    std::memcpy(v3.data() + v3_blocks + geo.block_size * i, v4.data() + blocks_off + geo.block_size * i,
                geo.block_size);
    const std::size_t item = items_off + sizeof(layout::Item) * i;
    const auto kl = at<std::uint32_t>(v4, item + offsetof(layout::Item, keylen));
    if (kl == 0) continue;
    const auto vl = at<std::uint32_t>(v4, item + offsetof(layout::Item, vallen));
    const auto ext = at<std::uint32_t>(v4, item + offsetof(layout::Item, ext));
    REQUIRE(ext == layout::kNil);  // short keys: inline
    const char* kp = v4.data() + blocks_off + geo.block_size * i;
    const auto stamp = at<std::uint64_t>(v4, seals_off + 16 * i + 8);
    std::uint64_t sum = cache::detail::seal_sum_v3(stamp, kl, vl, at<std::int64_t>(v4, item + 16), ext,
                                                   at<std::uint32_t>(v4, item + 4), kp, kp + kl);
    if (std::string_view(kp, kl) == damage_key) sum ^= 1;
    put(v3, v3_seals + 16 * i, sum);
    put(v3, v3_seals + 16 * i + 8, stamp);
  }
  put<std::uint32_t>(v3, offsetof(layout::RegionHeader, version), 3);
  put<std::uint64_t>(v3, offsetof(layout::RegionHeader, total_size), total);
  put<std::uint64_t>(v3, offsetof(layout::RegionHeader, seals_offset), v3_seals);
  put<std::uint64_t>(v3, offsetof(layout::RegionHeader, blocks_offset), v3_blocks);
  put<std::uint64_t>(v3, offsetof(layout::RegionHeader, header_checksum),
                     cache::detail::header_sum(reinterpret_cast<const unsigned char*>(v3.data())));
  std::ofstream(path, std::ios::binary | std::ios::trunc)
      .write(v3.data(), static_cast<std::streamsize>(v3.size()));
}

}  // namespace

TEST_CASE("a version 3 store file loads: its items move to version 4") {
  TempDir dir;
  const std::string path = dir.path + "/cache.store";
  {
    auto c = Cache::create(geometry(path));
    for (int i = 0; i < 40; ++i)
      REQUIRE(c->set("key" + std::to_string(i), "value" + std::to_string(i)) == Status::ok);
    REQUIRE(c->set("expiring", "soon", 1000) == Status::ok);
    REQUIRE(c->sync_store());
  }
  downgrade_to_v3(path, "key7");
  REQUIRE(at<std::uint32_t>(slurp(path), offsetof(layout::RegionHeader, version)) == 3);

  auto c = Cache::create(geometry(path));
  CHECK(at<std::uint32_t>(slurp(path), offsetof(layout::RegionHeader, version)) == layout::kFormatVersion);
  std::string value;
  for (int i = 0; i < 40; ++i) {
    if (i == 7) continue;
    REQUIRE(c->get("key" + std::to_string(i), value) == Status::ok);
    CHECK(value == "value" + std::to_string(i));
  }
  CHECK(c->get("key7", value) == Status::miss);  // its seal did not match: dropped
  std::int64_t expires = 0;
  REQUIRE(c->get("expiring", value, &expires) == Status::ok);
  CHECK(expires > 0);
  cache::ItemMeta meta;
  REQUIRE(c->get_meta("key1", nullptr, &meta) == Status::ok);
  CHECK(meta.flags == 0);
  CHECK(meta.cas != 0);
  CHECK(c->stats().store_restored == 40);
  CHECK(c->stats().store_dropped == 1);
  c.reset();
  // And the new file loads as version 4 as usual.
  auto again = Cache::create(geometry(path));
  REQUIRE(again->get("key39", value) == Status::ok);
  CHECK(value == "value39");
}

TEST_CASE("a version 3 store file of another geometry is still refused") {
  TempDir dir;
  const std::string path = dir.path + "/cache.store";
  {
    auto c = Cache::create(geometry(path));
    REQUIRE(c->set("k", "v") == Status::ok);
  }
  downgrade_to_v3(path);
  std::string error;
  try {
    Cache::create(geometry(path, 128));
  } catch (const std::exception& e) {
    error = e.what();
  }
  CHECK(error.find("store format version 3") != std::string::npos);
}
