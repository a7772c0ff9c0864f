// Every operation and status of the cache engine, in one process.
#include <stdlib.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <set>
#include <string>

#include "cache/cache.hpp"
#include "cache/layout.hpp"
#include "capture_stderr.hpp"
#include "checked_value.hpp"

using cache::Cache;
using cache::Geometry;
using cache::Status;
using cachetest::numbered;

namespace {

std::unique_ptr<Cache> make(std::uint64_t items, std::uint64_t blocksize = 256, std::uint32_t keysize = 64,
                            bool purge_lru = false, bool no_expire = false) {
  Geometry g;
  g.name = "test";
  g.items = items;
  g.blocksize = blocksize;
  g.keysize = keysize;
  g.purge_lru = purge_lru;
  g.no_expire = no_expire;
  g.ignore_full = true;
  return Cache::create(g);
}

struct FakeClock {
  std::int64_t t = 1'700'000'000;
};

}  // namespace

TEST_CASE("describe gives a text for every status", "[cache]") {
  for (auto st : {Status::ok, Status::miss, Status::exists, Status::full, Status::key_empty,
                  Status::key_too_long, Status::value_empty, Status::value_too_large, Status::not_a_number})
    CHECK_FALSE(cache::describe(st).empty());
}

TEST_CASE("bad geometry throws", "[cache]") {
  Geometry g;
  CHECK_THROWS(Cache::create(g));  // items = 0
  g.items = 10;
  g.blocksize = 0;
  CHECK_THROWS(Cache::create(g));
}

TEST_CASE("set, get, exists, update, del", "[cache]") {
  auto c = make(8);
  std::string v;
  CHECK(c->get("a", v) == Status::miss);
  CHECK(c->exists("a") == Status::miss);
  CHECK(c->set("a", "one") == Status::ok);
  CHECK(c->get("a", v) == Status::ok);
  CHECK(v == "one");
  CHECK(c->exists("a") == Status::ok);
  CHECK(c->set("a", "two") == Status::exists);
  CHECK(c->get("a", v) == Status::ok);
  CHECK(v == "one");
  CHECK(c->update("a", "three!") == Status::ok);
  CHECK(c->get("a", v) == Status::ok);
  CHECK(v == "three!");
  CHECK(c->update("b", "new") == Status::ok);  // update inserts
  CHECK(c->count() == 2);
  CHECK(c->del("a") == Status::ok);
  CHECK(c->del("a") == Status::miss);
  CHECK(c->get("a", v) == Status::miss);
  CHECK(c->count() == 1);
  auto st = c->stats();
  CHECK(st.hits == 3);
  CHECK(st.misses == 2);
  CHECK(st.capacity == 8);
  CHECK(st.items == 1);
  CHECK(st.lookups > 0);
}

TEST_CASE("validation statuses change nothing", "[cache]") {
  auto c = make(4, 16, 8);
  std::string v;
  CHECK(c->set("", "x") == Status::key_empty);
  CHECK(c->get("", v) == Status::key_empty);
  CHECK(c->del("") == Status::key_empty);
  CHECK(c->set("123456789", "x") == Status::key_too_long);
  CHECK(c->set("12345678", "x") == Status::ok);  // exactly keysize
  CHECK(c->set("k", "") == Status::value_empty);
  CHECK(c->update("k", "") == Status::value_empty);
  CHECK(c->set("k", std::string(17, 'x')) == Status::value_too_large);
  CHECK(c->set("k", std::string(16, 'x')) == Status::ok);  // exactly blocksize
  CHECK(c->count() == 2);
  CHECK(c->update("k", std::string(17, 'y')) == Status::value_too_large);
  CHECK(c->get("k", v) == Status::ok);
  CHECK(v == std::string(16, 'x'));
}

TEST_CASE("N items gives N usable items, then full", "[cache]") {
  auto c = make(5);
  for (int i = 0; i < 5; ++i) CHECK(c->set(numbered("k", i), "v") == Status::ok);
  CHECK(c->count() == 5);
  CHECK(c->set("k5", "v") == Status::full);
  CHECK(c->stats().full == 1);
  CHECK(c->update("k0", "updated in place") == Status::ok);  // overwriting never needs room
  CHECK(c->del("k1") == Status::ok);
  CHECK(c->set("k5", "v") == Status::ok);
}

TEST_CASE("full value with full key always fits (key-extension slot)", "[cache]") {
  // keysize > inline key budget: key + value can exceed one block.
  auto c = make(3, 1024, 2048);
  std::string key(2048, 'k'), value(1024, 'v');
  for (int i = 0; i < 3; ++i) {
    key[0] = static_cast<char>('a' + i);
    value[0] = static_cast<char>('a' + i);
    REQUIRE(c->set(key, value) == Status::ok);
  }
  std::string v;
  for (int i = 0; i < 3; ++i) {
    key[0] = static_cast<char>('a' + i);
    REQUIRE(c->get(key, v) == Status::ok);
    CHECK(v.size() == 1024);
    CHECK(v[0] == static_cast<char>('a' + i));
  }
  // Shrink below the block (key moves back inline), grow again, delete: slots come back.
  key[0] = 'a';
  CHECK(c->update(key, "small") == Status::ok);
  CHECK(c->get(key, v) == Status::ok);
  CHECK(v == "small");
  CHECK(c->update(key, value) == Status::ok);
  CHECK(c->get(key, v) == Status::ok);
  CHECK(v == value);
  CHECK(c->clear() == Status::ok);
  CHECK(c->count() == 0);
  for (int i = 0; i < 3; ++i) {
    key[0] = static_cast<char>('x' + i);
    CHECK(c->set(key, "short") == Status::ok);
  }
}

TEST_CASE("binary keys and values", "[cache]") {
  auto c = make(8);
  std::string key("\0a\xff\x80", 4), value("\0\0\x01\xfe", 4);
  CHECK(c->set(key, value) == Status::ok);
  std::string v;
  CHECK(c->get(key, v) == Status::ok);
  CHECK(v == value);
  CHECK(c->get(std::string("\0a\xff", 3), v) == Status::miss);
  std::set<std::string> keys;
  c->for_each_key([&](std::string_view k) { keys.emplace(k); });
  CHECK(keys == std::set<std::string>{key});
}

TEST_CASE("expiry with an injected clock", "[cache]") {
  auto c = make(4);
  FakeClock clock;
  c->set_clock([&] { return clock.t; });
  std::string v;
  std::int64_t at = -1;
  CHECK(c->set("a", "1", 10) == Status::ok);
  CHECK(c->set("b", "2") == Status::ok);
  CHECK(c->get("a", v, &at) == Status::ok);
  CHECK(at == clock.t + 10);
  CHECK(c->get("b", v, &at) == Status::ok);
  CHECK(at == 0);
  clock.t += 9;
  CHECK(c->exists("a") == Status::ok);
  clock.t += 1;
  CHECK(c->get("a", v) == Status::miss);  // never returned once expired
  CHECK(c->exists("a") == Status::miss);
  int keys = 0;
  c->for_each_key([&](std::string_view) { ++keys; });
  CHECK(keys == 1);
  CHECK(c->set("a", "again", 5) == Status::ok);  // an expired item does not block set
  CHECK(c->get("a", v) == Status::ok);
  CHECK(v == "again");
  CHECK(c->set("n", "x", -1) == Status::ok);  // negative: already expired
  CHECK(c->get("n", v) == Status::miss);
  CHECK(c->set("forever", "x", INT64_MAX) == Status::ok);  // no overflow: effectively never
  CHECK(c->get("forever", v) == Status::ok);
  CHECK(c->del("forever") == Status::ok);
  CHECK(c->update("b", "3", 2) == Status::ok);  // update resets expiry
  clock.t += 5;
  CHECK(c->count() == 3);
  CHECK(c->sweep_expired() == 3);
  CHECK(c->count() == 0);
  CHECK(c->stats().expirations >= 3);
  CHECK(c->sweep_expired() == 0);
}

TEST_CASE("expired items are reclaimed when the cache is full", "[cache]") {
  auto c = make(2);
  FakeClock clock;
  c->set_clock([&] { return clock.t; });
  CHECK(c->set("a", "1", 1) == Status::ok);
  CHECK(c->set("b", "2", 1) == Status::ok);
  CHECK(c->set("c", "3") == Status::full);
  clock.t += 2;
  CHECK(c->set("c", "3") == Status::ok);
}

TEST_CASE("no_expire makes expiry a no-op", "[cache]") {
  auto c = make(4, 256, 64, false, true);
  FakeClock clock;
  c->set_clock([&] { return clock.t; });
  std::int64_t at = -1;
  std::string v;
  CHECK(c->set("a", "1", 1) == Status::ok);
  CHECK(c->set("b", "1", -5) == Status::ok);
  clock.t += 100;
  CHECK(c->get("a", v, &at) == Status::ok);
  CHECK(at == 0);
  CHECK(c->get("b", v) == Status::ok);
  CHECK(c->sweep_expired() == 0);
}

TEST_CASE("purge_lru evicts the least recently used item", "[cache]") {
  auto c = make(3, 256, 64, true);
  std::string v;
  CHECK(c->set("a", "1") == Status::ok);
  CHECK(c->set("b", "2") == Status::ok);
  CHECK(c->set("c", "3") == Status::ok);
  CHECK(c->get("a", v) == Status::ok);  // a is now more recent than b
  CHECK(c->set("d", "4") == Status::ok);
  CHECK(c->get("b", v) == Status::miss);
  CHECK(c->get("a", v) == Status::ok);
  CHECK(c->get("c", v) == Status::ok);
  CHECK(c->get("d", v) == Status::ok);
  auto st = c->stats();
  CHECK(st.evictions == 1);
  CHECK(st.full == 1);
  CHECK(c->count() == 3);
}

TEST_CASE("math follows uWSGI semantics", "[cache]") {
  Geometry g;
  g.name = "math";
  g.items = 8;
  g.blocksize = 64;
  g.keysize = 32;
  g.math_initial = 100;
  auto c = Cache::create(g);
  std::int64_t r = 0;
  CHECK(c->math("i", Cache::MathOp::inc, 1, 0, &r) == Status::ok);
  CHECK(r == 101);
  CHECK(c->math("d", Cache::MathOp::dec, 1, 0, &r) == Status::ok);
  CHECK(r == 99);
  CHECK(c->math("m", Cache::MathOp::mul, 2, 0, &r) == Status::ok);
  CHECK(r == 200);
  CHECK(c->math("v", Cache::MathOp::div, 3, 0, &r) == Status::ok);
  CHECK(r == 33);
  CHECK(c->math("i", Cache::MathOp::inc, 5, 0, &r) == Status::ok);
  CHECK(r == 106);
  CHECK(c->math("v", Cache::MathOp::div, 0, 0, &r) == Status::ok);
  CHECK(r == 0);
  std::string v;
  CHECK(c->get("i", v) == Status::ok);
  REQUIRE(v.size() == 8);
  std::int64_t stored;
  std::memcpy(&stored, v.data(), 8);
  CHECK(stored == 106);
  // The first bytes of a non-number value, zero padded: "12" + 1 = 0x3232 = 12850.
  CHECK(c->set("s", "12") == Status::ok);
  CHECK(c->math("s", Cache::MathOp::inc, 1, 0, &r) == Status::ok);
  CHECK(r == 12850);
  CHECK(c->get("s", v) == Status::ok);
  CHECK(v == std::string("22\0\0\0\0\0\0", 8));
  // Overflow wraps.
  std::string max(8, '\0');
  std::int64_t big = INT64_MAX;
  std::memcpy(max.data(), &big, 8);
  CHECK(c->set("w", max) == Status::ok);
  CHECK(c->math("w", Cache::MathOp::inc, 1, 0, &r) == Status::ok);
  CHECK(r == INT64_MIN);
  CHECK(c->math("w", Cache::MathOp::div, -1, 0, &r) == Status::ok);
  CHECK(r == INT64_MIN);
  CHECK(c->math("", Cache::MathOp::inc, 1) == Status::key_empty);
}

TEST_CASE("math keeps an existing item's expiry, sets it on creation", "[cache]") {
  auto c = make(4);
  FakeClock clock;
  c->set_clock([&] { return clock.t; });
  std::int64_t r = 0, at = 0;
  std::string v;
  CHECK(c->math("n", Cache::MathOp::inc, 1, 10, &r) == Status::ok);
  CHECK(c->math("n", Cache::MathOp::inc, 1, 1000, &r) == Status::ok);
  CHECK(r == 2);
  CHECK(c->get("n", v, &at) == Status::ok);
  CHECK(at == clock.t + 10);
  clock.t += 10;
  CHECK(c->math("n", Cache::MathOp::inc, 1, 0, &r) == Status::ok);  // expired: starts again
  CHECK(r == 1);
}

TEST_CASE("clear and for_each_key", "[cache]") {
  auto c = make(100);
  for (int i = 0; i < 100; ++i) REQUIRE(c->set(numbered("key", i), numbered("v", i)) == Status::ok);
  std::set<std::string> keys;
  c->for_each_key([&](std::string_view k) { keys.emplace(k); });
  CHECK(keys.size() == 100);
  CHECK(c->clear() == Status::ok);
  CHECK(c->count() == 0);
  std::string v;
  CHECK(c->get("key1", v) == Status::miss);
  for (int i = 0; i < 100; ++i) REQUIRE(c->set(numbered("again", i), "v") == Status::ok);
  CHECK(c->count() == 100);
}

TEST_CASE("CacheSet finds caches by name", "[cache]") {
  cache::CacheSet set;
  CHECK(set.find("") == nullptr);
  auto a = make(2);
  Geometry g;
  g.name = "other";
  g.items = 2;
  set.add(std::move(a));
  set.add(Cache::create(g));
  CHECK(set.find("") == set.default_cache());
  CHECK(set.find("other") != nullptr);
  CHECK(set.find("nope") == nullptr);
}

TEST_CASE("region layout header is filled", "[cache]") {
  STATIC_REQUIRE(sizeof(cache::layout::RegionHeader) == cache::layout::kPage);
  STATIC_REQUIRE(sizeof(cache::layout::Item) == 64);
}

namespace {
using cachetest::capture_stderr;

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto pos = text.find(what); pos != std::string::npos; pos = text.find(what, pos + 1)) ++n;
  return n;
}
}  // namespace

TEST_CASE("cache full: uWSGI's log line, rate limited; ignore_full silences it", "[cache][log]") {
  Geometry g;
  g.name = "tiny";
  g.items = 1;
  g.blocksize = 16;
  g.keysize = 16;
  auto c = Cache::create(g);
  REQUIRE(c->set("a", "1") == Status::ok);
  std::string out = capture_stderr([&] {
    for (int i = 0; i < 10; ++i) CHECK(c->set(numbered("k", i), "v") == Status::full);
  });
  CHECK(count_of(out, "*** DANGER cache \"tiny\" is FULL !!! ***") == 3);
  CHECK(c->stats().full == 10);

  g.ignore_full = true;
  auto quiet = Cache::create(g);
  REQUIRE(quiet->set("a", "1") == Status::ok);
  out = capture_stderr([&] { CHECK(quiet->set("b", "2") == Status::full); });
  CHECK(out.empty());
  CHECK(quiet->stats().full == 1);

  g.ignore_full = false;
  g.purge_lru = true;
  auto lru = Cache::create(g);
  REQUIRE(lru->set("a", "1") == Status::ok);
  out = capture_stderr([&] { CHECK(lru->set("b", "2") == Status::ok); });
  CHECK(count_of(out, "LRU item will be purged from cache \"tiny\"") == 1);
}

TEST_CASE("free slots parked in shard stashes never make the cache look full", "[cache]") {
  auto c = make(1000, 16, 16);  // 128 shards, each may park a few free slots
  for (int round = 0; round < 3; ++round) {
    auto key = [round](int i) { return numbered(numbered("r", round) + "-", i); };
    for (int i = 0; i < 1000; ++i) REQUIRE(c->set(key(i), "v") == Status::ok);
    CHECK(c->count() == 1000);
    CHECK(c->set("one-too-many", "v") == Status::full);
    // Delete in an order unrelated to the shards, so slots park all over the place.
    for (int i = 999; i >= 0; i -= 2) REQUIRE(c->del(key(i)) == Status::ok);
    for (int i = 998; i >= 0; i -= 2) REQUIRE(c->del(key(i)) == Status::ok);
    CHECK(c->count() == 0);
  }
}

TEST_CASE("lastmod keeps the time of the last write; without it nothing is kept", "[cache]") {
  FakeClock clock;
  for (const bool lastmod : {false, true}) {
    Geometry g;
    g.name = "lastmod";
    g.items = 8;
    g.blocksize = 64;
    g.keysize = 16;
    g.lastmod = lastmod;
    auto c = Cache::create(g);
    c->set_clock([&clock] { return clock.t; });
    const auto at = [&] { return c->stats().last_modified_at; };
    CHECK(at() == 0);
    clock.t = 1'700'000'100;
    REQUIRE(c->set("a", "1") == Status::ok);
    CHECK(at() == (lastmod ? 1'700'000'100 : 0));
    clock.t = 1'700'000'200;
    std::string v;
    REQUIRE(c->get("a", v) == Status::ok);        // a read is no modification
    REQUIRE(c->set("a", "2") == Status::exists);  // nor a refused write
    CHECK(at() == (lastmod ? 1'700'000'100 : 0));
    REQUIRE(c->update("a", "3") == Status::ok);
    CHECK(at() == (lastmod ? 1'700'000'200 : 0));
    clock.t = 1'700'000'300;
    REQUIRE(c->math("n", Cache::MathOp::inc, 1) == Status::ok);
    CHECK(at() == (lastmod ? 1'700'000'300 : 0));
    clock.t = 1'700'000'400;
    REQUIRE(c->del("a") == Status::ok);
    CHECK(at() == (lastmod ? 1'700'000'400 : 0));
    clock.t = 1'700'000'500;
    REQUIRE(c->clear() == Status::ok);
    CHECK(at() == (lastmod ? 1'700'000'500 : 0));
  }
}
