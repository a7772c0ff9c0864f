// Many writers and readers on overlapping keys, across processes (fork) and threads: no read ever
// returns a torn or foreign value, and the counts stay consistent.
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <set>
#include <thread>
#include <vector>

#include "cache/cache.hpp"
#include "checked_value.hpp"
#include "kill_points.hpp"

using cache::Cache;
using cache::Status;
using namespace cachetest;

namespace {

constexpr unsigned kKeys = 48;
constexpr auto kRunFor = std::chrono::milliseconds(1200);

std::unique_ptr<Cache> make_cache(std::uint64_t items) {
  cache::Geometry g;
  g.name = "conc";
  g.items = items;
  g.blocksize = 600;
  g.keysize = 512;
  g.hashsize = 16;  // long chains: more sharing per shard
  g.ignore_full = true;
  return Cache::create(g);
}

// Returns the number of bad reads. Reads until `until`, or until `stop` is set when there is one.
unsigned reader_loop(Cache& c, unsigned seed, std::chrono::steady_clock::time_point until,
                     const SharedFlag* stop = nullptr) {
  std::mt19937 rng(seed);
  std::string v;
  unsigned bad = 0;
  while (std::chrono::steady_clock::now() < until && (stop == nullptr || !stop->is_set())) {
    for (int n = 0; n < 256; ++n) {
      std::string key = key_for(rng() % kKeys);
      if (c.get(key, v) == Status::ok && !check_value(key, v)) ++bad;
    }
  }
  return bad;
}

void writer_loop(Cache& c, unsigned seed, std::chrono::steady_clock::time_point until) {
  std::mt19937 rng(seed);
  std::uint64_t stamp = static_cast<std::uint64_t>(seed) << 32;
  while (std::chrono::steady_clock::now() < until) {
    for (int n = 0; n < 64; ++n) {
      std::string key = key_for(rng() % kKeys);
      unsigned op = rng() % 10;
      if (op == 0) {
        c.del(key);
      } else {
        std::size_t filler = rng() % (600 - 2 - 16 - key.size());  // value up to blocksize
        auto v = make_value(key, ++stamp, filler);
        if (op < 4)
          c.set(key, v);
        else
          c.update(key, v);
      }
    }
    if (rng() % 16 == 0) c.sweep_expired();
    if (rng() % 32 == 0) c.reorder_hot_items();
  }
}

void check_consistent(Cache& c) {
  std::set<std::string> keys;
  c.for_each_key([&](std::string_view k) { keys.emplace(k); });
  CHECK(keys.size() == c.count());
  std::string v;
  for (const auto& k : keys) {
    REQUIRE(c.get(k, v) == Status::ok);
    CHECK(check_value(k, v));
  }
}

}  // namespace

TEST_CASE("threads: readers never see torn or foreign values", "[cache][threads]") {
  auto c = make_cache(32);  // fewer items than keys: full paths run too
  auto until = std::chrono::steady_clock::now() + kRunFor;
  std::atomic<unsigned> bad{0};
  std::vector<std::thread> threads;
  for (unsigned w = 0; w < 2; ++w) threads.emplace_back([&, w] { writer_loop(*c, 100 + w, until); });
  for (unsigned r = 0; r < 2; ++r) threads.emplace_back([&, r] { bad += reader_loop(*c, 200 + r, until); });
  for (auto& t : threads) t.join();
  CHECK(bad == 0);
  check_consistent(*c);
  auto st = c->stats();
  CHECK(st.hits > 0);
  CHECK(st.items == c->count());
  CHECK(st.shard_recoveries == 0);
}

TEST_CASE("threads: purge_lru under contention keeps counts in bounds", "[cache][threads]") {
  cache::Geometry g;
  g.name = "lru";
  g.items = 16;
  g.blocksize = 600;
  g.keysize = 512;
  g.purge_lru = true;
  g.ignore_full = true;
  auto c = Cache::create(g);
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(600);
  std::atomic<unsigned> bad{0};
  std::vector<std::thread> threads;
  for (unsigned w = 0; w < 2; ++w) threads.emplace_back([&, w] { writer_loop(*c, 300 + w, until); });
  threads.emplace_back([&] { bad += reader_loop(*c, 400, until); });
  for (auto& t : threads) t.join();
  CHECK(bad == 0);
  CHECK(c->count() <= 16);
  CHECK(c->stats().evictions > 0);
  check_consistent(*c);
}

TEST_CASE("processes: readers never see torn or foreign values", "[cache][fork]") {
  if (skip_fork_test_under_tsan()) {
    WARN("skipped under TSan (CACHE_TEST_SKIP_FORK_UNDER_TSAN): fork-based test");
    return;
  }
  auto c = make_cache(32);
  const pid_t parent = getpid();
  std::vector<pid_t> writers, readers;
  for (unsigned w = 0; w < 2; ++w) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      die_with_parent(parent);
      // Timed from the child's own start: a slow fork (TSan, a loaded machine) shortens nothing.
      writer_loop(*c, 500 + w, std::chrono::steady_clock::now() + kRunFor);
      _exit(0);
    }
    writers.push_back(pid);
  }
  // Readers read for as long as the writers write, then once more over every key: they always have
  // values to verify, however late the writers started.
  SharedFlag writers_done;
  for (unsigned r = 0; r < 2; ++r) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      die_with_parent(parent);
      unsigned bad =
          reader_loop(*c, 600 + r, std::chrono::steady_clock::now() + kChildRunLimit, &writers_done);
      std::string v;
      for (unsigned k = 0; k < kKeys; ++k)
        if (c->get(key_for(k), v) == Status::ok && !check_value(key_for(k), v)) ++bad;
      _exit(std::min(bad, 100u));
    }
    readers.push_back(pid);
  }
  for (pid_t pid : writers) {
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
  }
  REQUIRE(c->count() > 0);  // what the readers' last pass finds
  writers_done.set();
  for (pid_t pid : readers) {
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);  // bad reads
  }
  check_consistent(*c);
  auto st = c->stats();
  CHECK(st.hits > 0);
  CHECK(st.shard_recoveries == 0);
}
