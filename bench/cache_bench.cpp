// cache_bench: prints ns/op and ops/s of the shared-memory cache for get/set/update/del, at 1 and 2
// processes, 64-byte and 4-KiB values, 1e3 and 1e6 items, uniform and Zipf(0.99) keys.
//
//   cache_bench            short bounded run (about 20 s, peaks at ~4.5 GB RSS for 1e6 x 4 KiB)
//   cache_bench --quick    1e3 items only (a few seconds)
//   cache_bench --ops N    operations per process per measurement (default 200000)
//   cache_bench --big      100 KiB hits (100 values, 1 and 2 processes) against memcpy of the same
//                          100 values on this machine, in GB/s
//
// Each measurement forks the worker processes after the cache is filled, starts them together on a
// shared flag, and reports per-process latency (wall time / ops) and aggregate throughput.
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "cache/cache.hpp"

namespace {

constexpr std::size_t kSequence = 1 << 16;  // pre-drawn key indices per process (cycled)
constexpr double kZipfS = 0.99;

struct Shared {
  std::atomic<int> ready;
  std::atomic<int> go;
  std::atomic<long long> elapsed_ns[8];
  std::atomic<long long> failures[8];
};

std::vector<std::uint32_t> draw(std::size_t n, bool zipf, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::uint32_t> seq(kSequence);
  if (!zipf) {
    for (auto& x : seq) x = static_cast<std::uint32_t>(rng() % n);
    return seq;
  }
  std::vector<double> cdf(n);
  double sum = 0;
  for (std::size_t i = 0; i < n; ++i) cdf[i] = (sum += 1.0 / std::pow(static_cast<double>(i + 1), kZipfS));
  // Ranks are scattered over the key space so hot keys do not share buckets by construction.
  std::vector<std::uint32_t> perm(n);
  for (std::size_t i = 0; i < n; ++i) perm[i] = static_cast<std::uint32_t>(i);
  std::shuffle(perm.begin(), perm.end(), rng);
  std::uniform_real_distribution<double> u(0, sum);
  for (auto& x : seq)
    x = perm[static_cast<std::size_t>(std::lower_bound(cdf.begin(), cdf.end(), u(rng)) - cdf.begin())];
  return seq;
}

// Key i, formatted on the fly in a few ns ("key:0000" + 8 hex digits of a bijective scramble of i, 16
// bytes), so the benchmark does not add a cache miss of its own (a key table of 1e6 strings would).
// The digits go in with one 8-byte store: the engine reads keys 8 bytes at a time, and byte-wise stores
// just before would stall those loads (store-to-load forwarding fails), a cost no real key has.
struct KeyMaker {
  char buf[16] = {'k', 'e', 'y', ':', '0', '0', '0', '0'};
  std::string_view operator()(std::uint32_t i) {
    std::uint32_t x = i * 0x9E3779B1u;
    std::uint64_t digits = 0;
    for (int k = 7; k >= 0; --k, x >>= 4)
      digits |= static_cast<std::uint64_t>(static_cast<unsigned char>("0123456789abcdef"[x & 15])) << (8 * k);
    std::memcpy(buf + 8, &digits, 8);
    return {buf, sizeof buf};
  }
};

enum class Op { get, set, update, del };
const char* op_name(Op op) {
  switch (op) {
    case Op::get:
      return "get";
    case Op::set:
      return "set";
    case Op::update:
      return "update";
    case Op::del:
      return "del";
  }
  return "?";
}

struct Bench {
  cache::Cache* c;
  std::size_t items;
  std::string value;
  Shared* shared;
  std::size_t ops;
};

// Runs `op` in `procs` forked processes. For set/del each process works on its own slice of keys
// (del deletes present keys, set re-inserts them), so every operation does real work.
void measure(Bench& b, Op op, int procs, bool zipf, const char* label) {
  const std::size_t n = b.items;
  b.shared->ready = 0;
  b.shared->go = 0;
  std::vector<pid_t> pids;
  for (int p = 0; p < procs; ++p) {
    pid_t pid = fork();
    if (pid == 0) {
      std::vector<std::uint32_t> seq;
      if (op == Op::get || op == Op::update) seq = draw(n, zipf, 1234 + static_cast<std::uint64_t>(p));
      std::string out;
      KeyMaker key;
      long long failures = 0;
      std::size_t slice = n / static_cast<std::size_t>(procs), base = slice * static_cast<std::size_t>(p);
      std::size_t count = (op == Op::set || op == Op::del) ? std::min(b.ops, slice) : b.ops;
      b.c->prefault();  // a long-lived worker has its pages mapped; a fresh fork does not
      b.shared->ready.fetch_add(1);
      while (b.shared->go.load(std::memory_order_acquire) == 0) {
      }
      auto t0 = std::chrono::steady_clock::now();
      for (std::size_t i = 0; i < count; ++i) {
        cache::Status st;
        switch (op) {
          case Op::get:
            st = b.c->get(key(seq[i & (kSequence - 1)]), out);
            break;
          case Op::update:
            st = b.c->update(key(seq[i & (kSequence - 1)]), b.value);
            break;
          case Op::del:
            st = b.c->del(key(static_cast<std::uint32_t>(base + i)));
            break;
          case Op::set:
            st = b.c->set(key(static_cast<std::uint32_t>(base + i)), b.value);
            break;
        }
        failures += st != cache::Status::ok;
      }
      auto t1 = std::chrono::steady_clock::now();
      b.shared->elapsed_ns[p] = std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
      b.shared->failures[p] = failures;
      b.shared->elapsed_ns[p + 4] = static_cast<long long>(count);
      _exit(0);
    }
    pids.push_back(pid);
  }
  while (b.shared->ready.load() < procs) usleep(100);
  b.shared->go.store(1, std::memory_order_release);
  for (pid_t pid : pids) waitpid(pid, nullptr, 0);
  double ns_sum = 0, total_ops = 0, max_ns = 0;
  long long failures = 0;
  for (int p = 0; p < procs; ++p) {
    double ns = static_cast<double>(b.shared->elapsed_ns[p].load());
    double cnt = static_cast<double>(b.shared->elapsed_ns[p + 4].load());
    ns_sum += ns / cnt;
    total_ops += cnt;
    max_ns = std::max(max_ns, ns);
    failures += b.shared->failures[p].load();
  }
  std::printf("%-7s %5d %6s %8zu %-8s %9.1f %12.0f %s\n", op_name(op), procs, label, n,
              zipf ? "zipf" : "uniform", ns_sum / procs, total_ops / (max_ns / 1e9),
              failures ? "(failures!)" : "");
  std::fflush(stdout);
}

// --big: a 100 KiB value spans 1 601 blocks of 64 bytes, copied out with one memcpy from its run. The
// reference is memcpy itself: the same 100 source buffers (in shared memory too) into one destination,
// in the same key order, in one process.
void big_values(Shared* shared, std::size_t ops) {
  constexpr std::size_t kBig = 100 * 1024, kValues = 100;
  cache::Geometry g;
  g.name = "big";
  g.items = kValues;
  g.blocksize = kBig;
  g.keysize = 64;
  auto c = cache::Cache::create(g);
  std::string value(kBig, 'v');
  KeyMaker key;
  for (std::size_t i = 0; i < kValues; ++i) c->set(key(static_cast<std::uint32_t>(i)), value);
  Bench b{c.get(), kValues, value, shared, ops};
  measure(b, Op::get, 1, false, "100KiB");
  measure(b, Op::get, 2, false, "100KiB");
  auto* src = static_cast<char*>(
      mmap(nullptr, kBig * kValues, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  std::memset(src, 'v', kBig * kValues);
  std::string dst(kBig, '\0');
  const std::vector<std::uint32_t> seq = draw(kValues, false, 1234);
  auto t0 = std::chrono::steady_clock::now();
  for (std::size_t i = 0; i < ops; ++i) {
    std::memcpy(dst.data(), src + kBig * seq[i & (kSequence - 1)], kBig);
    asm volatile("" : : "r"(dst.data()) : "memory");  // keep every copy
  }
  const double ns = static_cast<double>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count());
  std::printf("%-7s %5d %6s %8zu %-8s %9.1f %12.0f\n", "memcpy", 1, "100KiB", kValues, "uniform",
              ns / static_cast<double>(ops), static_cast<double>(ops) / (ns / 1e9));
  std::printf("GB/s = ops/s x %zu bytes: memcpy %.2f GB/s\n", kBig, static_cast<double>(ops) * kBig / ns);
  munmap(src, kBig * kValues);
}

}  // namespace

int main(int argc, char** argv) {
  bool quick = false, big = false;
  std::size_t ops = 200000;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--quick") == 0)
      quick = true;
    else if (std::strcmp(argv[i], "--big") == 0)
      big = true;
    else if (std::strcmp(argv[i], "--ops") == 0 && i + 1 < argc)
      ops = std::strtoull(argv[++i], nullptr, 10);
  }
  auto* shared = static_cast<Shared*>(
      mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  std::printf("%-7s %5s %6s %8s %-8s %9s %12s\n", "op", "procs", "value", "items", "keys", "ns/op", "ops/s");
  if (big) {
    big_values(shared, ops / 10);
    return 0;
  }
  for (std::size_t items : {std::size_t{1000}, std::size_t{1000000}}) {
    if (quick && items > 1000) continue;
    for (std::size_t vsize : {std::size_t{64}, std::size_t{4096}}) {
      cache::Geometry g;
      g.name = "bench";
      g.items = items;
      g.blocksize = vsize;
      g.keysize = 64;
      g.ignore_full = true;
      auto c = cache::Cache::create(g);
      std::string value(vsize, 'v');
      KeyMaker key;
      for (std::size_t i = 0; i < items; ++i) c->set(key(static_cast<std::uint32_t>(i)), value);
      Bench b{c.get(), items, value, shared, ops};
      const char* label = vsize == 64 ? "64B" : "4KiB";
      for (bool zipf : {false, true})
        for (int procs : {1, 2}) measure(b, Op::get, procs, zipf, label);
      for (bool zipf : {false, true})
        for (int procs : {1, 2}) measure(b, Op::update, procs, zipf, label);
      for (int procs : {1, 2}) {
        measure(b, Op::del, procs, false, label);
        measure(b, Op::set, procs, false, label);
      }
    }
  }
  return 0;
}
