// Crash safety: writer processes are SIGKILLed mid-operation, most of them inside a mutation with a
// value half written (the engine's test hook tells the parent they are there), the others wherever
// they happen to be when the parent reacts. Readers keep verifying every value they get; afterwards
// every kill inside a mutation has been recovered, the cache is usable and its counts consistent.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <random>
#include <set>
#include <vector>

#include "cache/cache.hpp"
#include "checked_value.hpp"
#include "kill_points.hpp"

using cache::Cache;
using cache::Status;
using namespace cachetest;

namespace {

constexpr unsigned kKeys = 40;
constexpr std::uint64_t kItems = 24;
constexpr unsigned kRounds = 12;  // per section, two writers at a time in each (~0.2 s a round under TSan)

// Where a writer is killed: inside its n-th mutation (held there by the hook until the kill), or
// anywhere after its n-th operation (it asks, carries on, and dies wherever the kill finds it).
enum class KillAt { mutation, anywhere };

// Values up to this many bytes (bitmap mode: up to 150 KiB, spanning up to 150 blocks of 1 KiB).
std::size_t max_filler(const Cache& c, const std::string& key) {
  return (c.geometry().bitmap ? 150 * 1024 : 600) - 18 - key.size();
}

[[noreturn]] void writer_child(Cache& c, unsigned seed, KillAt at, int fd, unsigned char tag) {
  std::mt19937 rng(seed);
  const unsigned kill_after = 1 + rng() % 40;  // varied history and state before the kill
  unsigned n = 0;
  if (at == KillAt::mutation)
    c.set_mutation_hook_for_tests([&] {
      if (++n == kill_after) signal_and_wait_for_kill(fd, tag);
    });
  std::uint64_t stamp = static_cast<std::uint64_t>(seed) << 32;
  for (;;) {  // ends by SIGKILL
    if (at == KillAt::anywhere && ++n == kill_after) ask_for_kill(fd, tag);
    std::string key = key_for(rng() % kKeys);
    unsigned op = rng() % 10;
    if (op == 0) {
      c.del(key);
    } else if (op == 1) {
      c.math(numbered("counter", rng() % 3), Cache::MathOp::inc, 1);
    } else {
      auto v = make_value(key, ++stamp, rng() % max_filler(c, key));
      if (op < 5)
        c.set(key, v);
      else
        c.update(key, v);
    }
    if (rng() % 64 == 0) c.sweep_expired();
    if (rng() % 64 == 0) c.reorder_hot_items();
  }
}

unsigned reader_child(Cache& c, unsigned seed, const SharedFlag& stop) {
  std::mt19937 rng(seed);
  std::string v;
  unsigned bad = 0;
  const auto limit = std::chrono::steady_clock::now() + kChildRunLimit;
  while (!stop.is_set() && std::chrono::steady_clock::now() < limit) {
    std::string key = key_for(rng() % kKeys);
    if (c.get(key, v) == Status::ok && !check_value(key, v)) ++bad;
  }
  return bad;
}

}  // namespace

TEST_CASE("SIGKILLed writers neither wedge the cache nor leave torn values", "[cache][fork][crash]") {
  if (skip_fork_test_under_tsan()) {
    WARN("skipped under TSan (CACHE_TEST_SKIP_FORK_UNDER_TSAN): fork + SIGKILL test");
    return;
  }
  // purge_lru: eviction locks another shard: crash it too. bitmap: values of up to 150 blocks, the
  // writer killed with half of them copied.
  const int mode = GENERATE(0, 1, 2);
  const bool purge_lru = mode == 1, bitmap = mode == 2;
  INFO("purge_lru: " << purge_lru << ", bitmap: " << bitmap);
  cache::Geometry g;
  g.purge_lru = purge_lru;
  g.name = "crash";
  g.items = kItems;
  g.blocksize = bitmap ? 1024 : 600;
  g.bitmap = bitmap;
  g.blocks = bitmap ? kItems * 100 : 0;  // not all 24 items can be 150 KiB: full happens too
  g.keysize = 512;
  g.hashsize = 8;
  g.ignore_full = true;
  auto c = Cache::create(g);

  const pid_t parent = getpid();
  SharedFlag stop;
  std::vector<pid_t> readers;
  for (unsigned r = 0; r < 2; ++r) {
    pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      die_with_parent(parent);
      _exit(std::min(reader_child(*c, 900 + r, stop), 100u));
    }
    readers.push_back(pid);
  }
  unsigned kills = 0, mutation_kills = 0;
  for (unsigned round = 0; round < kRounds; ++round) {
    int fds[2];
    REQUIRE(pipe(fds) == 0);
    pid_t pids[2];
    for (unsigned w = 0; w < 2; ++w) {
      const unsigned seed = 1000 + round * 2 + w;
      const KillAt at = seed % 4 == 3 ? KillAt::anywhere : KillAt::mutation;
      pid_t pid = fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        die_with_parent(parent);
        close(fds[0]);
        writer_child(*c, seed, at, fds[1], static_cast<unsigned char>(w));
      }
      pids[w] = pid;
      if (at == KillAt::mutation) ++mutation_kills;
    }
    close(fds[1]);
    // Kill each writer when it asks, in the order they ask: one held inside a mutation may hold the
    // shard lock the other one waits for.
    for (unsigned k = 0; k < 2; ++k) {
      const int w = wait_for_kill_point(fds[0]);
      REQUIRE((w == 0 || w == 1));
      REQUIRE(kill(pids[w], SIGKILL) == 0);
      int status = 0;
      REQUIRE(waitpid(pids[w], &status, 0) == pids[w]);
      CHECK((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL));
      ++kills;
    }
    close(fds[0]);
  }
  stop.set();
  for (pid_t pid : readers) {
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);  // bad reads
  }
  INFO("writers killed: " << kills << ", inside a mutation: " << mutation_kills);

  // Consistent: every listed key reads back verified, and count() agrees. Listing the keys locks every
  // shard, which recovers any shard a killed writer still held.
  std::set<std::string> keys;
  c->for_each_key([&](std::string_view k) { keys.emplace(k); });
  CHECK(keys.size() == c->count());
  std::string v;
  for (const auto& k : keys) {
    REQUIRE(c->get(k, v) == Status::ok);
    if (k.rfind("counter", 0) != 0) CHECK(check_value(k, v));
  }
  // Each writer killed inside a mutation left its shard locked with a mutation open: exactly one
  // recovery each. A writer killed anywhere else adds one at most (when the kill fell in a mutation).
  auto st = c->stats();
  CHECK(st.shard_recoveries >= mutation_kills);
  CHECK(st.shard_recoveries <= kills);
  // Usable, and no slot and no block leaked: after clear every block is free, `items` items of the
  // largest size fit (some with 400-byte keys), then full.
  CHECK(c->clear() == Status::ok);
  CHECK(c->count() == 0);
  CHECK(c->stats().blocks_free == c->stats().blocks);
  if (bitmap) {  // one value of blocksize x blocks: the whole area is one free run again
    const std::string key = "whole";
    REQUIRE(c->set(key, make_value(key, 1, cache::largest_value(g) - 18 - key.size())) == Status::ok);
    CHECK(c->del(key) == Status::ok);
  }
  for (unsigned i = 0; i < kItems; ++i) {
    std::string key = numbered("after-", i).append(i < kItems / 2 ? 400 : 10, 'x');
    REQUIRE(c->set(key, make_value(key, i, (bitmap ? 100 * 1024 : 600) - 18 - key.size())) == Status::ok);
  }
  CHECK(c->set("one-more", "x") == (purge_lru ? Status::ok : Status::full));
  CHECK(c->count() == kItems);
  if (purge_lru) CHECK(c->stats().evictions > 0);
}
