// Self-checking values for the concurrency tests: a value encodes its key, a writer stamp and a
// checksum, so a reader can tell a torn or foreign value from a good one without knowing who wrote it.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <string_view>

namespace cachetest {

inline std::uint64_t fnv1a(std::string_view bytes) {
  std::uint64_t h = 1469598103934665603ULL;
  for (unsigned char c : bytes) h = (h ^ c) * 1099511628211ULL;
  return h;
}

// Layout: [key length u16][key][stamp u64][filler...][fnv1a of everything before, u64].
inline std::string make_value(std::string_view key, std::uint64_t stamp, std::size_t filler) {
  std::string v;
  auto klen = static_cast<std::uint16_t>(key.size());
  v.append(reinterpret_cast<const char*>(&klen), 2);
  v.append(key);
  v.append(reinterpret_cast<const char*>(&stamp), 8);
  for (std::size_t i = 0; i < filler; ++i) v.push_back(static_cast<char>('a' + (stamp + i) % 26));
  std::uint64_t sum = fnv1a(v);
  v.append(reinterpret_cast<const char*>(&sum), 8);
  return v;
}

inline bool check_value(std::string_view key, std::string_view v) {
  if (v.size() < 2 + key.size() + 16) return false;
  std::uint16_t klen;
  std::memcpy(&klen, v.data(), 2);
  if (klen != key.size() || v.substr(2, key.size()) != key) return false;
  std::uint64_t sum;
  std::memcpy(&sum, v.data() + v.size() - 8, 8);
  return sum == fnv1a(v.substr(0, v.size() - 8));
}

// prefix followed by n in decimal, built by appending: GCC 12 at -O3 reports a false -Wrestrict inside
// `"literal" + std::string` (its operator+ inserts at the front), which fails a -Werror Release build.
inline std::string numbered(std::string_view prefix, long long n) {
  std::string s(prefix);
  s += std::to_string(n);
  return s;
}

// Keys of several lengths, some long enough to need a key-extension slot with big values.
inline std::string key_for(unsigned i) {
  std::string k = numbered("key-", i);
  if (i % 7 == 3) k.append(300, static_cast<char>('A' + i % 26));
  return k;
}

// Fork-based tests under TSan: TSan cannot see across processes (it checks this process's side only);
// it handles these forks fine on glibc 2.36, and CACHE_TEST_SKIP_FORK_UNDER_TSAN=1 skips them should a
// TSan version not (the threaded tests cover the engine).
inline bool skip_fork_test_under_tsan() {
#if defined(__SANITIZE_THREAD__)
  return std::getenv("CACHE_TEST_SKIP_FORK_UNDER_TSAN") != nullptr;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
  return std::getenv("CACHE_TEST_SKIP_FORK_UNDER_TSAN") != nullptr;
#endif
#endif
  return false;
}

}  // namespace cachetest
