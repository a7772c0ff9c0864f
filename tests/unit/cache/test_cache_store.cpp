// Store files (--cache-store): creation, validation, load and index rebuild, torn-write detection,
// refusal of files that are not stores or do not match. Design: docs/persistence.md.
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstddef>
#include <cstring>
#include <filesystem>
#include <set>
#include <string>
#include <vector>

#include "cache/cache.hpp"
#include "cache/layout.hpp"
#include "capture_stderr.hpp"
#include "checked_value.hpp"
#include "kill_points.hpp"
#include "temp_dir.hpp"

using cache::Cache;
using cache::Geometry;
using cache::Status;
using cachetest::numbered;
namespace layout = cache::layout;

namespace {

// A fresh directory per test case, removed at the end.
using cachetest::TempDir;

Geometry store_geometry(const std::string& path, std::uint64_t items = 64, std::uint64_t blocksize = 128,
                        std::uint32_t keysize = 512) {
  Geometry g;
  g.name = "stored";
  g.items = items;
  g.blocksize = blocksize;
  g.keysize = keysize;
  g.ignore_full = true;
  g.store = path;
  return g;
}

std::string read_file(const std::string& path) {
  std::string out;
  int fd = open(path.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  char buf[65536];
  for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) out.append(buf, static_cast<std::size_t>(n));
  close(fd);
  return out;
}

void write_file(const std::string& path, const std::string& data) {
  int fd = open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(write(fd, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
  close(fd);
}

template <typename T>
T read_at(const std::string& path, std::uint64_t off) {
  T v{};
  int fd = open(path.c_str(), O_RDONLY);
  REQUIRE(fd >= 0);
  REQUIRE(pread(fd, &v, sizeof v, static_cast<off_t>(off)) == static_cast<ssize_t>(sizeof v));
  close(fd);
  return v;
}

void flip_byte(const std::string& path, std::uint64_t off) {
  int fd = open(path.c_str(), O_RDWR);
  REQUIRE(fd >= 0);
  unsigned char b = 0;
  REQUIRE(pread(fd, &b, 1, static_cast<off_t>(off)) == 1);
  b ^= 0x5A;
  REQUIRE(pwrite(fd, &b, 1, static_cast<off_t>(off)) == 1);
  close(fd);
}

// Where things are in a store file, from its header (the test reads the file, not the engine).
struct FileMap {
  std::string path;
  std::uint64_t items_off, seals_off, blocks_off, block_size, slots;
  explicit FileMap(const std::string& p) : path(p) {
    items_off = read_at<std::uint64_t>(path, offsetof(layout::RegionHeader, items_offset));
    seals_off = read_at<std::uint64_t>(path, offsetof(layout::RegionHeader, seals_offset));
    blocks_off = read_at<std::uint64_t>(path, offsetof(layout::RegionHeader, blocks_offset));
    block_size = read_at<std::uint64_t>(
        path, offsetof(layout::RegionHeader, geometry) + offsetof(layout::RegionGeometry, block_size));
    slots = read_at<std::uint64_t>(
        path, offsetof(layout::RegionHeader, geometry) + offsetof(layout::RegionGeometry, slots));
  }
  std::uint64_t item(std::uint32_t i) const { return items_off + sizeof(layout::Item) * i; }
  std::uint64_t seal(std::uint32_t i) const { return seals_off + sizeof(layout::ItemSeal) * i; }
  // The first byte of slot i's run (its key), as the file says now.
  std::uint64_t block(std::uint32_t i) const {
    return blocks_off + block_size * read_at<std::uint32_t>(path, item(i) + offsetof(layout::Item, block));
  }
  std::uint64_t data_block(std::uint64_t b) const { return blocks_off + block_size * b; }
};

// The slot holding `key` (its run starts with the key).
std::uint32_t slot_of(const std::string& path, const std::string& key) {
  FileMap m(path);
  std::string data = read_file(path);
  for (std::uint32_t i = 0; i < m.slots; ++i) {
    std::uint32_t kl, b;
    std::memcpy(&kl, data.data() + m.item(i) + offsetof(layout::Item, keylen), 4);
    std::memcpy(&b, data.data() + m.item(i) + offsetof(layout::Item, block), 4);
    if (kl == key.size() && b != layout::kNil && data.compare(m.data_block(b), kl, key) == 0) return i;
  }
  FAIL("key " << key << " not found in the file");
  return 0;
}

using cachetest::capture_stderr;

std::string create_error(const Geometry& g) {
  try {
    Cache::create(g);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("store layout: seals and header checksum have fixed places", "[cache][store]") {
  STATIC_REQUIRE(sizeof(layout::ItemSeal) == 16);
  STATIC_REQUIRE(offsetof(layout::RegionHeader, seals_offset) == 152);
  STATIC_REQUIRE(offsetof(layout::RegionHeader, header_checksum) == 160);
}

TEST_CASE("store: a new file is created (0600) and logged with uWSGI's words", "[cache][store]") {
  TempDir dir;
  const std::string path = dir.file("cache.store");
  std::unique_ptr<Cache> c;
  std::string log = capture_stderr([&] { c = Cache::create(store_geometry(path)); });
  CHECK(log.find("creating a new cache store file: " + path) != std::string::npos);
  CHECK(c->has_store());
  CHECK(c->sync_store());
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(read_at<std::uint64_t>(path, 0) == layout::kMagic);
  // No temporary file is left beside it.
  std::size_t entries = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir.path)) ++entries;
  CHECK(entries == 1);
}

TEST_CASE("store: items, oversized keys and expiries survive a reopen byte for byte", "[cache][store]") {
  TempDir dir;
  const std::string path = dir.file("s");
  const std::int64_t t0 = time(nullptr);
  std::vector<std::pair<std::string, std::string>> want;
  {
    auto c = Cache::create(store_geometry(path, 200, 512, 512));
    c->set_clock([&] { return t0; });
    for (unsigned i = 0; i < 150; ++i) {
      // Some keys are 300+ bytes: with a full 512-byte value they need a key-extension slot.
      std::string key = cachetest::key_for(i);
      std::string value = cachetest::make_value(key, i, i % 3 == 0 ? 512 - 2 - key.size() - 16 : 10);
      REQUIRE(value.size() <= 512);
      REQUIRE(c->set(key, value, i % 5 == 0 ? 60 : 0) == Status::ok);
      want.emplace_back(key, value);
    }
    REQUIRE(c->update(want[7].first, "updated") == Status::ok);
    want[7].second = "updated";
    REQUIRE(c->del(want[8].first) == Status::ok);
    std::int64_t n = 0;
    REQUIRE(c->math("counter", Cache::MathOp::inc, 41, 0, &n) == Status::ok);
    REQUIRE(c->math("counter", Cache::MathOp::inc, 1, 0, &n) == Status::ok);
  }
  std::unique_ptr<Cache> c;
  std::string log = capture_stderr([&] { c = Cache::create(store_geometry(path, 200, 512, 512)); });
  CHECK(log.find("recovered cache from backing store file: " + path) != std::string::npos);
  CHECK(log.find("[uwsgi-cache] restored 150 items") != std::string::npos);
  CHECK(c->stats().store_restored == 150);
  CHECK(c->stats().store_dropped == 0);
  CHECK(c->count() == 150);
  // Expiry is absolute: 10 s of "downtime" leave 50 s of a 60 s expiry.
  std::int64_t now = t0 + 10;
  c->set_clock([&] { return now; });
  std::string v;
  std::int64_t at = 0;
  for (std::size_t k = 0; k < want.size(); ++k) {
    if (k == 8) {
      CHECK(c->get(want[k].first, v) == Status::miss);
      continue;
    }
    REQUIRE(c->get(want[k].first, v, &at) == Status::ok);
    CHECK(v == want[k].second);
    CHECK(at == (k % 5 == 0 && k != 7 ? t0 + 60 : 0));
  }
  REQUIRE(c->get("counter", v) == Status::ok);
  std::int64_t n;
  std::memcpy(&n, v.data(), 8);
  CHECK(n == 42);
  now = t0 + 59;
  CHECK(c->get(want[5].first, v) == Status::ok);
  now = t0 + 60;
  CHECK(c->get(want[5].first, v) == Status::miss);
  CHECK(c->sweep_expired() == 30);  // the 30 keys k % 5 == 0
}

TEST_CASE("store: after a load, the free lists are exact: no restored item is overwritten, none lost",
          "[cache][store]") {
  TempDir dir;
  const std::string path = dir.file("s");
  const std::uint64_t items = 100;
  {
    auto c = Cache::create(store_geometry(path, items, 64, 64));
    for (unsigned i = 0; i < 60; ++i) REQUIRE(c->set(numbered("old", i), numbered("v", i)) == Status::ok);
    for (unsigned i = 0; i < 60; i += 3) REQUIRE(c->del(numbered("old", i)) == Status::ok);  // holes
  }
  auto c = Cache::create(store_geometry(path, items, 64, 64));
  REQUIRE(c->count() == 40);
  for (unsigned i = 0; i < items - 40; ++i)
    REQUIRE(c->set(numbered("new", i), numbered("n", i)) == Status::ok);
  CHECK(c->set("one-too-many", "x") == Status::full);
  std::string v;
  for (unsigned i = 0; i < 60; ++i) {
    Status st = c->get(numbered("old", i), v);
    if (i % 3 == 0) {
      CHECK(st == Status::miss);
    } else {
      REQUIRE(st == Status::ok);
      CHECK(v == numbered("v", i));
    }
  }
  for (unsigned i = 0; i < items - 40; ++i) {
    REQUIRE(c->get(numbered("new", i), v) == Status::ok);
    CHECK(v == numbered("n", i));
  }
  c->clear();
  for (unsigned i = 0; i < items; ++i) REQUIRE(c->set(numbered("again", i), "a") == Status::ok);
  CHECK(c->set("again-too-many", "x") == Status::full);
}

TEST_CASE("store: a second open of a store in use is refused", "[cache][store]") {
  TempDir dir;
  const std::string path = dir.file("s");
  auto c = Cache::create(store_geometry(path));
  std::string err = create_error(store_geometry(path));
  CHECK(err.find("in use by another process") != std::string::npos);
}

TEST_CASE("store: another geometry is refused with what differs; store_delete discards it",
          "[cache][store]") {
  TempDir dir;
  const std::string path = dir.file("s");
  {
    auto c = Cache::create(store_geometry(path, 64, 128, 512));
    REQUIRE(c->set("k", "v") == Status::ok);
  }
  const std::string before = read_file(path);
  std::string err = create_error(store_geometry(path, 128, 256, 512));
  INFO(err);
  CHECK(err.find("invalid cache store file " + path) != std::string::npos);
  CHECK(err.find("items 64 in the file, 128 configured") != std::string::npos);
  CHECK(err.find("blocksize 128 in the file, 256 configured") != std::string::npos);
  CHECK(err.find("--cache-store-delete") != std::string::npos);
  CHECK(read_file(path) == before);  // untouched

  Geometry g = store_geometry(path, 64, 128, 512);
  g.hashsize = 4096;  // uWSGI would silently break lookups of restored items here
  err = create_error(g);
  CHECK(err.find("hashsize 64 in the file, 4096 configured") != std::string::npos);

  g = store_geometry(path, 128, 256, 512);
  g.store_delete = true;
  std::unique_ptr<Cache> c;
  std::string log = capture_stderr([&] { c = Cache::create(g); });
  CHECK(log.find("Removing invalid cache store file: " + path) != std::string::npos);
  CHECK(log.find("creating a new cache store file: " + path) != std::string::npos);
  CHECK(c->count() == 0);
  std::string v;
  CHECK(c->get("k", v) == Status::miss);
}

TEST_CASE("store: a file that is not a store is refused and never overwritten, even with store_delete",
          "[cache][store]") {
  TempDir dir;
  const std::string path = dir.file("precious.db");
  const std::string content(10000, 'x');
  write_file(path, content);
  Geometry g = store_geometry(path);
  std::string err = create_error(g);
  CHECK(err.find("is not a cache store file") != std::string::npos);
  g.store_delete = true;
  err = create_error(g);
  CHECK(err.find("is not a cache store file") != std::string::npos);
  CHECK(read_file(path) == content);
  write_file(path, "tiny");
  CHECK(create_error(g).find("is not a cache store file") != std::string::npos);
  // A directory is not a regular file.
  g.store = dir.path;
  CHECK(create_error(g).find("not a regular file") != std::string::npos);
  // An empty file holds nothing to lose: it becomes a store.
  write_file(path, "");
  g.store = path;
  g.store_delete = false;
  CHECK_NOTHROW(Cache::create(g));
}

TEST_CASE("store: truncated file, damaged header", "[cache][store]") {
  TempDir dir;
  const std::string path = dir.file("s");
  { auto c = Cache::create(store_geometry(path)); }
  const std::string good = read_file(path);
  Geometry g = store_geometry(path);

  SECTION("truncated to half") {
    REQUIRE(truncate(path.c_str(), static_cast<off_t>(good.size() / 2)) == 0);
    CHECK(create_error(g).find("truncated or extended") != std::string::npos);
  }
  SECTION("truncated inside the header") {
    REQUIRE(truncate(path.c_str(), 100) == 0);
    CHECK(create_error(g).find("truncated") != std::string::npos);
  }
  SECTION("a flipped byte in the geometry") {
    flip_byte(path, offsetof(layout::RegionHeader, geometry) + 3);
    CHECK(create_error(g).find("header is damaged") != std::string::npos);
  }
  SECTION("a flipped byte in an offset") {
    flip_byte(path, offsetof(layout::RegionHeader, blocks_offset));
    CHECK(create_error(g).find("header is damaged") != std::string::npos);
  }
  SECTION("a flipped byte in the magic") {
    flip_byte(path, 2);
    CHECK(create_error(g).find("is not a cache store file") != std::string::npos);
  }
  SECTION("another format version") {
    flip_byte(path, offsetof(layout::RegionHeader, version));
    CHECK(create_error(g).find("store format version") != std::string::npos);
  }
  SECTION("store_delete replaces a damaged store") {
    flip_byte(path, offsetof(layout::RegionHeader, geometry) + 3);
    g.store_delete = true;
    std::unique_ptr<Cache> c;
    std::string log = capture_stderr([&] { c = Cache::create(g); });
    CHECK(log.find("Removing invalid cache store file") != std::string::npos);
    CHECK(c->set("k", "v") == Status::ok);
  }
}

TEST_CASE("store: a damaged item is dropped, counted and logged, never served; the rest is intact",
          "[cache][store]") {
  TempDir dir;
  const std::string path = dir.file("s");
  {
    auto c = Cache::create(store_geometry(path, 64, 128, 64));
    for (unsigned i = 0; i < 20; ++i)
      REQUIRE(c->set(numbered("key", i), cachetest::make_value(numbered("key", i), i, 40)) == Status::ok);
  }
  FileMap m(path);
  const std::string victim = "key7";
  const std::uint32_t slot = slot_of(path, victim);

  SECTION("a byte of the value") { flip_byte(path, m.block(slot) + victim.size() + 20); }
  SECTION("a byte of the key") { flip_byte(path, m.block(slot) + 1); }
  SECTION("the value length") { flip_byte(path, m.item(slot) + offsetof(layout::Item, vallen)); }
  SECTION("the expiry") { flip_byte(path, m.item(slot) + offsetof(layout::Item, expires) + 1); }
  SECTION("the stored hash") { flip_byte(path, m.item(slot) + offsetof(layout::Item, hash)); }
  SECTION("the seal") { flip_byte(path, m.seal(slot) + 5); }
  SECTION("the key length, out of bounds") {
    std::uint32_t huge = 0x7fffffff;
    int fd = open(path.c_str(), O_RDWR);
    REQUIRE(pwrite(fd, &huge, 4, static_cast<off_t>(m.item(slot) + offsetof(layout::Item, keylen))) == 4);
    close(fd);
  }
  SECTION("the run, out of the data area") {
    std::uint32_t bad = 0x7ffffff0;
    int fd = open(path.c_str(), O_RDWR);
    REQUIRE(pwrite(fd, &bad, 4, static_cast<off_t>(m.item(slot) + offsetof(layout::Item, block))) == 4);
    close(fd);
  }
  SECTION("the run's length") { flip_byte(path, m.item(slot) + offsetof(layout::Item, nblocks)); }
  SECTION("the run, moved onto another item's run") {
    const std::uint32_t other =
        read_at<std::uint32_t>(path, m.item(slot_of(path, "key3")) + offsetof(layout::Item, block));
    int fd = open(path.c_str(), O_RDWR);
    REQUIRE(pwrite(fd, &other, 4, static_cast<off_t>(m.item(slot) + offsetof(layout::Item, block))) == 4);
    close(fd);
  }

  std::unique_ptr<Cache> c;
  std::string log = capture_stderr([&] { c = Cache::create(store_geometry(path, 64, 128, 64)); });
  CHECK(log.find("[uwsgi-cache] restored 19 items") != std::string::npos);
  CHECK(log.find("dropped 1 damaged item(s)") != std::string::npos);
  CHECK(c->stats().store_dropped == 1);
  std::string v;
  CHECK(c->get(victim, v) == Status::miss);
  for (unsigned i = 0; i < 20; ++i) {
    std::string key = numbered("key", i);
    if (key == victim) continue;
    REQUIRE(c->get(key, v) == Status::ok);
    CHECK(cachetest::check_value(key, v));
  }
  // The damaged item's slot is free again: 64 - 19 items fit.
  for (unsigned i = 0; i < 45; ++i) REQUIRE(c->set(numbered("fill", i), "f") == Status::ok);
  CHECK(c->set("fill-too-many", "f") == Status::full);
}

TEST_CASE("store: damage in a block or bookkeeping nobody trusts changes nothing", "[cache][store]") {
  TempDir dir;
  const std::string path = dir.file("s");
  {
    auto c = Cache::create(store_geometry(path, 64, 128, 64));
    for (unsigned i = 0; i < 10; ++i) REQUIRE(c->set(numbered("key", i), "value") == Status::ok);
  }
  FileMap m(path);
  flip_byte(path, m.data_block(300) + 3);  // a free block
  // Bucket heads, free stacks and a chain link: rebuilt, never trusted.
  const auto heads = read_at<std::uint64_t>(path, offsetof(layout::RegionHeader, heads_offset));
  const auto free_off = read_at<std::uint64_t>(path, offsetof(layout::RegionHeader, free_offset));
  for (int k = 0; k < 64; ++k) flip_byte(path, heads + static_cast<std::uint64_t>(k));
  for (int k = 0; k < 64; ++k) flip_byte(path, free_off + static_cast<std::uint64_t>(k));
  flip_byte(path, m.item(slot_of(path, "key3")) + offsetof(layout::Item, next));
  auto c = Cache::create(store_geometry(path, 64, 128, 64));
  CHECK(c->count() == 10);
  CHECK(c->stats().store_dropped == 0);
  std::string v;
  for (unsigned i = 0; i < 10; ++i) CHECK(c->get(numbered("key", i), v) == Status::ok);
  for (unsigned i = 0; i < 54; ++i) REQUIRE(c->set(numbered("fill", i), "f") == Status::ok);
  CHECK(c->set("fill-too-many", "f") == Status::full);
}

TEST_CASE("store: two intact copies of a key (power loss): the newer stamp wins", "[cache][store]") {
  TempDir dir;
  const std::string path = dir.file("s");
  const Geometry g = store_geometry(path, 64, 128, 64);
  std::string old_item, old_seal, old_block;
  std::uint32_t old_slot;
  {
    auto c = Cache::create(g);
    for (unsigned i = 0; i < 5; ++i) REQUIRE(c->set(numbered("pad", i), "p") == Status::ok);
    REQUIRE(c->set("dup", "old value") == Status::ok);
    REQUIRE(c->set("after", "a") == Status::ok);  // so that the new, longer value needs another run
    FileMap m(path);
    old_slot = slot_of(path, "dup");  // MAP_SHARED: the file shows the live region
    std::string data = read_file(path);
    old_item = data.substr(m.item(old_slot), sizeof(layout::Item));
    old_seal = data.substr(m.seal(old_slot), sizeof(layout::ItemSeal));
    old_block = data.substr(m.block(old_slot), m.block_size);
    REQUIRE(c->del("dup") == Status::ok);
    REQUIRE(c->set("dup", "new value, " + std::string(100, 'n')) == Status::ok);
  }
  // Resurrect the deleted copy in a free slot, as a disk holding a stale page of it would.
  FileMap m(path);
  const std::uint32_t spare = 50;
  REQUIRE(spare != old_slot);
  int fd = open(path.c_str(), O_RDWR);
  REQUIRE(pwrite(fd, old_item.data(), old_item.size(), static_cast<off_t>(m.item(spare))) > 0);
  REQUIRE(pwrite(fd, old_seal.data(), old_seal.size(), static_cast<off_t>(m.seal(spare))) > 0);
  REQUIRE(pwrite(fd, old_block.data(), old_block.size(), static_cast<off_t>(m.block(spare))) > 0);
  close(fd);
  std::unique_ptr<Cache> c;
  std::string log = capture_stderr([&] { c = Cache::create(g); });
  CHECK(log.find("1 older duplicate(s)") != std::string::npos);
  CHECK(c->count() == 7);
  std::string v;
  REQUIRE(c->get("dup", v) == Status::ok);
  CHECK(v == "new value, " + std::string(100, 'n'));
  for (unsigned i = 0; i < 57; ++i) REQUIRE(c->set(numbered("fill", i), "f") == Status::ok);
  CHECK(c->set("fill-too-many", "f") == Status::full);
}

// A writer SIGKILLed in the middle of a write (value half copied, inside the shard lock and the
// mutation): the file holds a locked mutex of a dead process, an odd seq and a torn item.
TEST_CASE("store: a process killed mid-write leaves a torn item that is dropped; locks are reset",
          "[cache][store][crash]") {
  TempDir dir;
  const std::string path = dir.file("s");
  const Geometry g = store_geometry(path, 64, 256, 64);
  for (int variant = 0; variant < 2; ++variant) {
    std::filesystem::remove(path);
    {
      auto c = Cache::create(g);
      for (unsigned i = 0; i < 10; ++i)
        REQUIRE(c->set(numbered("key", i), cachetest::make_value(numbered("key", i), 1, 100)) == Status::ok);
      int pipefd[2];
      REQUIRE(pipe(pipefd) == 0);
      pid_t pid = fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        // Tells the parent once the value is half written, then waits there for the SIGKILL.
        c->set_mutation_hook_for_tests([fd = pipefd[1]] { cachetest::signal_and_wait_for_kill(fd); });
        // variant 0: overwrite an existing item in place; 1: insert a new key
        std::string key = variant == 0 ? "key4" : "fresh";
        c->update(key, cachetest::make_value(key, 2, 200));
        _exit(0);
      }
      close(pipefd[1]);
      char b;
      REQUIRE(read(pipefd[0], &b, 1) == 1);  // the child is inside the write, value half written
      close(pipefd[0]);
      kill(pid, SIGKILL);
      int status = 0;
      waitpid(pid, &status, 0);
      REQUIRE(WIFSIGNALED(status));
    }  // this process's mapping is dropped without touching the shard: the file keeps the dead state
    std::unique_ptr<Cache> c;
    std::string log = capture_stderr([&] { c = Cache::create(g); });
    INFO(log);
    CHECK(c->stats().store_dropped == 1);
    CHECK(log.find("dropped 1 damaged item(s)") != std::string::npos);
    std::string v;
    CHECK(c->get(variant == 0 ? "key4" : "fresh", v) == Status::miss);
    for (unsigned i = 0; i < 10; ++i) {
      std::string key = numbered("key", i);
      if (variant == 0 && i == 4) continue;
      REQUIRE(c->get(key, v) == Status::ok);
      CHECK(cachetest::check_value(key, v));
    }
    // The lock the dead writer held, and its "mutation in progress" mark, were reset: writes to that
    // very key work at once, with no recovery logged.
    std::string later = capture_stderr([&] {
      REQUIRE(c->update("key4", "again") == Status::ok);
      REQUIRE(c->update("fresh", "again") == Status::ok);
    });
    CHECK(later.find("shard wiped") == std::string::npos);
    CHECK(c->stats().shard_recoveries == 0);
    CHECK(c->count() == 11);
  }
}

TEST_CASE("store: sync and reopen many times keep exactly the same content", "[cache][store]") {
  TempDir dir;
  const std::string path = dir.file("s");
  const Geometry g = store_geometry(path, 500, 64, 32);
  std::set<std::string> keys;
  for (int round = 0; round < 5; ++round) {
    auto c = Cache::create(g);
    CHECK(c->count() == keys.size());
    std::string v;
    for (const auto& k : keys) {
      REQUIRE(c->get(k, v) == Status::ok);
      CHECK(v == "v:" + k);
    }
    for (int i = 0; i < 80; ++i) {
      std::string k = numbered(numbered("r", round) + "-", i);
      REQUIRE(c->set(k, "v:" + k) == Status::ok);
      keys.insert(k);
    }
    for (int i = 0; i < 10; ++i) {  // delete some of the previous round's keys
      std::string k = numbered(numbered("r", round - 1) + "-", i);
      if (keys.erase(k) != 0) REQUIRE(c->del(k) == Status::ok);
    }
    CHECK(c->sync_store());
  }
}
