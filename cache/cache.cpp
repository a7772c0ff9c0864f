// The shared-memory cache engine. Layout in cache/layout.hpp, design and figures in docs/cache.md.
#include "cache/cache.hpp"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <mutex>
#include <stdexcept>
#include <utility>
#include <vector>

#include "cache/layout.hpp"
#include "common/log.hpp"

#if defined(__SANITIZE_THREAD__)
#define CACHE_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CACHE_TSAN 1
#endif
#endif
#ifndef CACHE_TSAN
#define CACHE_TSAN 0
#endif

namespace cache {

std::string_view describe(Status status) {
  switch (status) {
    case Status::ok:
      return "ok";
    case Status::miss:
      return "not found";
    case Status::exists:
      return "key already exists";
    case Status::full:
      return "cache is full";
    case Status::key_empty:
      return "empty key";
    case Status::key_too_long:
      return "key longer than keysize";
    case Status::value_empty:
      return "empty value";
    case Status::value_too_large:
      return "value larger than blocksize";
    case Status::not_a_number:
      return "value is not a number";
    case Status::out_of_memory:
      return "no memory for the value";
  }
  return "unknown status";
}

Cache& CacheSet::add(std::unique_ptr<Cache> cache) {
  caches_.push_back(std::move(cache));
  return *caches_.back();
}

Cache* CacheSet::find(std::string_view name) {
  if (caches_.empty()) return nullptr;
  if (name.empty()) return caches_.front().get();
  for (auto& c : caches_)
    if (c->geometry().name == name) return c.get();
  return nullptr;
}

namespace {

using namespace layout;

// ---- Tunables -------------------------------------------------------------------------------------
// Shards: enough that two workers on different keys almost never meet on one mutex (memcached uses
// 2^10+ item locks for many threads; we have few processes and keep the per-shard state small).
constexpr std::uint32_t kMaxShards = 128;
// Counter stripes: stripe 0 is shared, the others are owned by one thread each (layout.hpp).
constexpr std::uint32_t kStripes = 128;
// Caches a thread remembers its stripe for (a thread using more caches alternately re-claims).
constexpr std::size_t kClaimMemory = 4;
// Key bytes a block holds beside a full-size value; longer keys of a full-size value spill into a
// key-extension slot taken from a reserve of max(items/kExtReserveDivisor, kMinExtReserve) slots
// (capped at items; see docs/cache.md).
constexpr std::uint64_t kInlineKeyBudget = 256;
constexpr std::uint64_t kExtReserveDivisor = 64;
constexpr std::uint64_t kMinExtReserve = 16;  // small caches: every item may be oversized
constexpr std::uint64_t kBlockAlign = 16;
// Optimistic reads: attempts before falling back to the mutex, and pause spins while seq is odd.
constexpr int kOptimisticAttempts = 4;
constexpr int kOddSeqSpins = 64;
// Hit counting for reordering is sampled: one hit in kHitSample (a power of two) writes the item.
constexpr std::uint32_t kHitSample = 4;
thread_local std::uint32_t t_hit_tick = 0;
// Contended locks: trylock rounds (pauses doubling up to 32) before sleeping in the kernel.
constexpr int kLockSpins = 16;
// Bounded lock holds for the background jobs.
constexpr std::uint64_t kSweepBucketsPerHold = 256;
constexpr std::uint64_t kReorderBucketsPerHold = 64;
constexpr std::size_t kReorderMaxChain = 1024;
// LRU victim choice: exact scan for small caches, sampling (Redis-style) for big ones.
constexpr std::uint64_t kLruExactScanSlots = 256;
constexpr unsigned kLruSamples = 16;
// A write that found the cache full retries this many times after evicting/reclaiming.
constexpr int kInsertAttempts = 4;
// "cache is FULL" lines: at most kFullLogBurst per kFullLogIntervalSeconds per process.
constexpr unsigned kFullLogBurst = 3;
constexpr unsigned kFullLogIntervalSeconds = 60;

// The key hash: 8 bytes per multiply (uWSGI's djb33x takes a dependent multiply-xor per byte, ~2.5x
// slower on a 16-byte key and poorly mixed for keys that differ only in their last bytes). Bucket
// placement is internal (stored in store files, whose format version pins it), so any good mix works.
inline std::uint32_t key_hash(std::string_view key) {
  const char* p = key.data();
  std::size_t n = key.size();
  std::uint64_t h = 0x9E3779B97F4A7C15ULL ^ n;
  for (; n >= 8; p += 8, n -= 8) {
    std::uint64_t word;
    std::memcpy(&word, p, 8);
    h = (h ^ word) * 0xBF58476D1CE4E5B9ULL;
    h ^= h >> 29;
  }
  if (n > 0) {
    std::uint64_t word = 0;
    if (key.size() >= 8) {  // the last n bytes, from one load that ends at the key's end
      std::memcpy(&word, p + n - 8, 8);
      word >>= 8 * (8 - n);
    } else {
      for (std::size_t k = 0; k < n; ++k)
        word |= static_cast<std::uint64_t>(static_cast<unsigned char>(p[k])) << (8 * k);
    }
    h = (h ^ word) * 0x94D049BB133111EBULL;
  }
  h ^= h >> 32;
  h *= 0xBF58476D1CE4E5B9ULL;
  return static_cast<std::uint32_t>(h >> 32);
}

// Key equality for the lookup: keys up to 16 bytes (most cache keys) compare as two overlapping
// words, without a call into the library's memcmp.
inline bool same_key(const char* a, const char* b, std::size_t n) {
  if (n >= 8 && n <= 16) {
    std::uint64_t a0, a1, b0, b1;
    std::memcpy(&a0, a, 8);
    std::memcpy(&b0, b, 8);
    std::memcpy(&a1, a + n - 8, 8);
    std::memcpy(&b1, b + n - 8, 8);
    return ((a0 ^ b0) | (a1 ^ b1)) == 0;
  }
  return std::memcmp(a, b, n) == 0;
}

std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

// ---- checksums (store files) ------------------------------------------------------------------------
//
// A 64-bit checksum for torn-write detection, not for security: xxHash64's round function over 8-byte
// words (the tail zero padded; lengths are part of what is summed, so padding cannot alias), finished
// with MurmurHash3's fmix64. ~1 byte per cycle, so sealing a 64-byte item costs a few tens of ns and
// verifying 1e6 items at load a few tens of ms. Our own code; the constants are the published primes.
constexpr std::uint64_t kSumP1 = 0x9E3779B185EBCA87ULL;
constexpr std::uint64_t kSumP2 = 0xC2B2AE3D27D4EB4FULL;
constexpr std::uint64_t kSumSeed = 0x7563616368657331ULL;  // "ucaches1"

inline std::uint64_t rotl64(std::uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }
inline std::uint64_t sum_round(std::uint64_t h, std::uint64_t w) {
  h ^= rotl64(w * kSumP2, 31) * kSumP1;
  return rotl64(h, 27) * kSumP1 + 0x165667B19E3779F9ULL;
}
std::uint64_t sum_bytes(std::uint64_t h, const char* p, std::size_t n) {
  for (; n >= 8; p += 8, n -= 8) {
    std::uint64_t w;
    std::memcpy(&w, p, 8);
    h = sum_round(h, w);
  }
  if (n > 0) {
    std::uint64_t w = 0;
    std::memcpy(&w, p, n);
    h = sum_round(h, w);
  }
  return h;
}
inline std::uint64_t sum_finish(std::uint64_t h) {
  h ^= h >> 33;
  h *= 0xFF51AFD7ED558CCDULL;
  h ^= h >> 33;
  h *= 0xC4CEB9FE1A85EC53ULL;
  h ^= h >> 33;
  return h;
}

// What an ItemSeal covers: everything a reader uses to find and return the item.
std::uint64_t seal_sum(std::uint64_t stamp, std::uint32_t keylen, std::uint32_t vallen, std::int64_t expires,
                       std::uint32_t ext, std::uint32_t hash, const char* key, const char* value) {
  std::uint64_t h = sum_round(kSumSeed, stamp);
  h = sum_round(h, (static_cast<std::uint64_t>(keylen) << 32) | vallen);
  h = sum_round(h, static_cast<std::uint64_t>(expires));
  h = sum_round(h, (static_cast<std::uint64_t>(ext) << 32) | hash);
  h = sum_bytes(h, key, keylen);
  h = sum_bytes(h, value, vallen);
  return sum_finish(h);
}

// Where every area of a region goes, computed from the geometry alone (a store file's header must
// match it exactly).
struct Plan {
  std::uint64_t total = 0;
  std::uint64_t shards_off = 0, stripes_off = 0, alloc_off = 0, heads_off = 0, free_off = 0;
  std::uint64_t items_off = 0, seals_off = 0, blocks_off = 0;
  RegionGeometry geo{};
};

// A store file's header, read with pread before anything is mapped (plain fields only).
struct FileHeader {
  std::uint64_t magic = 0;
  std::uint32_t version = 0;
  std::uint32_t header_size = 0;
  std::uint64_t total = 0;
  std::uint64_t offsets[8] = {};  // shards, stripes, alloc, heads, free, items, seals, blocks
  RegionGeometry geo{};
  std::uint64_t checksum = 0;
  std::uint64_t computed_checksum = 0;
};

std::uint64_t header_sum(const unsigned char* raw) {
  std::uint64_t h = sum_bytes(kSumSeed, reinterpret_cast<const char*>(raw), kHeaderSummedBytes);
  h = sum_bytes(h, reinterpret_cast<const char*>(raw) + offsetof(RegionHeader, seals_offset), 8);
  return sum_finish(h);
}

FileHeader parse_header(const unsigned char* raw) {
  FileHeader fh;
  std::memcpy(&fh.magic, raw + offsetof(RegionHeader, magic), 8);
  std::memcpy(&fh.version, raw + offsetof(RegionHeader, version), 4);
  std::memcpy(&fh.header_size, raw + offsetof(RegionHeader, header_size), 4);
  std::memcpy(&fh.total, raw + offsetof(RegionHeader, total_size), 8);
  const std::size_t at[8] = {offsetof(RegionHeader, shards_offset), offsetof(RegionHeader, stripes_offset),
                             offsetof(RegionHeader, alloc_offset),  offsetof(RegionHeader, heads_offset),
                             offsetof(RegionHeader, free_offset),   offsetof(RegionHeader, items_offset),
                             offsetof(RegionHeader, seals_offset),  offsetof(RegionHeader, blocks_offset)};
  for (int k = 0; k < 8; ++k) std::memcpy(&fh.offsets[k], raw + at[k], 8);
  std::memcpy(&fh.geo, raw + offsetof(RegionHeader, geometry), sizeof(RegionGeometry));
  std::memcpy(&fh.checksum, raw + offsetof(RegionHeader, header_checksum), 8);
  fh.computed_checksum = header_sum(raw);
  return fh;
}

// Closes a descriptor unless released (error paths of the store code).
struct FdGuard {
  int fd;
  explicit FdGuard(int f) : fd(f) {}
  ~FdGuard() {
    if (fd >= 0) close(fd);
  }
  int release() { return std::exchange(fd, -1); }
};

std::int64_t monotonic_ns() {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Which counter stripe this thread adds to, per cache (layout.hpp: CounterStripe). A forked child
// inherits its parent's thread_local claims, so a fork generation (bumped by an atfork handler) makes
// each process claim its own.
std::atomic<std::uint32_t> g_fork_generation{1};
void bump_fork_generation() { g_fork_generation.fetch_add(1, std::memory_order_relaxed); }
[[maybe_unused]] const int g_atfork_registered = pthread_atfork(nullptr, nullptr, bump_fork_generation);
// Process-unique id of each cache object, so a claim is never taken for another cache mapped later at
// the same address.
std::atomic<std::uint64_t> g_next_instance{1};

// A thread's handle on its stripe: plain adds when it owns the stripe, atomic ones on the shared one.
struct Counters {
  layout::CounterStripe* stripe = nullptr;
  bool owned = false;
  void add(std::atomic<std::uint64_t> layout::CounterStripe::*field, std::uint64_t n) const {
    std::atomic<std::uint64_t>& a = stripe->*field;
    if (owned)
      a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
    else
      a.fetch_add(n, std::memory_order_relaxed);
  }
};

struct StripeClaim {
  std::uint64_t instance = 0;  // 0 = empty
  std::uint32_t generation = 0;
  Counters counters;
};
thread_local StripeClaim t_claims[kClaimMemory];

std::uint64_t stripe_owner_id() {
  return static_cast<std::uint64_t>(getpid()) << 32 | static_cast<std::uint32_t>(syscall(SYS_gettid));
}

// True when the owner's thread is gone (its stripe may be taken over; its counts stay in the sums).
bool stripe_owner_gone(std::uint64_t owner) {
  const auto pid = static_cast<pid_t>(owner >> 32);
  const auto tid = static_cast<pid_t>(owner & 0xFFFFFFFFu);
  return syscall(SYS_tgkill, pid, tid, 0) == -1 && errno == ESRCH;
}

std::uint64_t xorshift() {
  thread_local std::uint64_t state = 0;
  if (state == 0)
    state = static_cast<std::uint64_t>(monotonic_ns()) ^ (static_cast<std::uint64_t>(getpid()) << 32) ^
            0x9E3779B97F4A7C15ULL;
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return state;
}

void init_robust_mutex(pthread_mutex_t* m) {
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  // Deliberately no PTHREAD_PRIO_INHERIT: with ROBUST it broke uWSGI under concurrent deaths (#1571).
  int rc = pthread_mutex_init(m, &attr);
  pthread_mutexattr_destroy(&attr);
  if (rc != 0) throw std::runtime_error("cache: pthread_mutex_init failed: " + std::string(strerror(rc)));
}

class ShmCache;

// Result of a locked chain walk.
struct Found {
  std::uint32_t slot = kNil;  // the item, or kNil
  std::uint32_t prev = kNil;  // its predecessor in the chain (kNil = it is the head)
  std::uint32_t tail = kNil;  // last item of the chain when not found
};

class ShmCache final : public Cache {
 public:
  explicit ShmCache(const Geometry& g) : geometry_(g), full_log_(kFullLogBurst, kFullLogIntervalSeconds) {
    map_and_init();
  }
  ~ShmCache() override {
    if (base_ != nullptr) munmap(base_, size_);
    if (store_fd_ >= 0) close(store_fd_);  // also releases our flock on the file
  }

  const Geometry& geometry() const override { return geometry_; }

  using Cache::get;
  Status get(std::string_view key, ValueSink& sink, std::int64_t* expires_at) override;
  Status exists(std::string_view key) override;
  Status set(std::string_view key, std::string_view value, std::int64_t expires_in) override {
    return store(Mode::set, key, value, expires_in, MathOp::inc, 0, nullptr);
  }
  Status update(std::string_view key, std::string_view value, std::int64_t expires_in) override {
    return store(Mode::update, key, value, expires_in, MathOp::inc, 0, nullptr);
  }
  Status del(std::string_view key) override;
  Status clear() override;
  Status math(std::string_view key, MathOp op, std::int64_t operand, std::int64_t expires_in,
              std::int64_t* result) override {
    return store(Mode::math, key, {}, expires_in, op, operand, result);
  }
  void for_each_key(const std::function<void(std::string_view key)>& visit) override;
  std::uint64_t count() const override {
    std::uint64_t n = 0;
    for (std::uint32_t s = 0; s < shards_n_; ++s) n += shards_[s].items.load(std::memory_order_relaxed);
    return n;
  }
  Stats stats() const override;
  std::uint64_t sweep_expired() override;
  std::uint64_t reorder_hot_items() override;
  void prefault() override;
  bool has_store() const override { return store_fd_ >= 0; }
  bool sync_store() override;
  void set_clock(Clock clock) override { clock_ = std::move(clock); }
  void set_mutation_hook_for_tests(std::function<void()> hook) override { mutation_hook_ = std::move(hook); }

 private:
  enum class Mode { set, update, math };

  // ---- region access ----
  Item& item(std::uint32_t i) const { return items_[i]; }
  char* block(std::uint32_t i) const { return blocks_ + static_cast<std::uint64_t>(i) * block_size_; }
  Shard& shard(std::uint32_t s) const { return shards_[s]; }
  Counters counters() const {
    const StripeClaim& c = t_claims[0];
    if (c.instance == instance_ && c.generation == g_fork_generation.load(std::memory_order_relaxed))
      return c.counters;
    return claim_stripe();
  }
  Counters claim_stripe() const;
  // Multiply-shift instead of h % hashsize (a division on every lookup's critical path).
  std::uint32_t bucket_of(std::uint32_t h) const {
    return static_cast<std::uint32_t>((static_cast<std::uint64_t>(h) * hashsize_) >> 32);
  }
  std::uint32_t shard_of_bucket(std::uint32_t b) const { return b & shard_mask_; }
  bool needs_ext(std::uint64_t klen, std::uint64_t vlen) const { return klen + vlen > block_size_; }

  // lastmod caches: the time of this write (a clock read, which is why it is opt-in, as in uWSGI).
  void note_modified() {
    if (lastmod_) hdr_->last_modified_at.store(now(), std::memory_order_relaxed);
  }
  std::int64_t now() const { return clock_ ? clock_() : static_cast<std::int64_t>(time(nullptr)); }
  bool expired(std::int64_t expires, std::int64_t now_s) const {
    return !no_expire_ && expires != 0 && expires <= now_s;
  }
  bool expired_now(std::int64_t expires) const { return !no_expire_ && expires != 0 && expires <= now(); }
  std::int64_t absolute_expiry(std::int64_t expires_in) const {
    if (no_expire_ || expires_in == 0) return 0;
    const std::int64_t now_s = now();
    if (expires_in > 0 && now_s > INT64_MAX - expires_in) return INT64_MAX;  // "forever", no overflow
    std::int64_t at = now_s + expires_in;
    return at <= 0 ? 1 : at;  // negative: already expired, but never the "0 = never" marker
  }

  Status check_key(std::string_view key) const {
    if (key.empty()) return Status::key_empty;
    if (key.size() > keysize_) return Status::key_too_long;
    return Status::ok;
  }

  void map_and_init();
  void attach(char* base, const Plan& plan);
  void init_fresh(const Plan& plan);
  // Store files (docs/persistence.md).
  void open_store(const Plan& plan);
  void create_store(const Plan& plan);
  std::string store_problem(const FileHeader& fh, std::uint64_t file_size, const Plan& plan) const;
  void load_store();
  void clear_slot_for_load(std::uint32_t i);
  // Store only: refreshes the item's seal; the last write of a mutation that changed the item.
  void seal_locked(std::uint32_t s, std::uint32_t i, std::string_view key, std::string_view value) {
    if (seals_ == nullptr) return;
    const Item& it = item(i);
    const std::uint64_t stamp = shard(s).seq.load(std::memory_order_relaxed);
    seals_[i].stamp = stamp;
    seals_[i].sum =
        seal_sum(stamp, it.keylen.load(std::memory_order_relaxed), it.vallen.load(std::memory_order_relaxed),
                 it.expires.load(std::memory_order_relaxed), it.ext.load(std::memory_order_relaxed),
                 it.hash.load(std::memory_order_relaxed), key.data(), value.data());
  }

  // ---- locks ----
  int acquire(pthread_mutex_t* m);  // trylock, spin, then block; returns pthread_mutex_lock's result
  void lock_shard(std::uint32_t s);
  void unlock_shard(std::uint32_t s) { pthread_mutex_unlock(&shard(s).mutex); }
  void lock_alloc();
  void unlock_alloc() { pthread_mutex_unlock(&alloc_->mutex); }
  void recover_shard_after_owner_death_locked(std::uint32_t s);
  void rebuild_free_stack_alloc_locked();

  struct ShardLock {
    ShmCache& c;
    std::uint32_t s;
    bool held = true;
    ShardLock(ShmCache& cache, std::uint32_t shard) : c(cache), s(shard) { c.lock_shard(s); }
    ~ShardLock() {
      if (held) c.unlock_shard(s);
    }
    void unlock() {
      if (held) c.unlock_shard(s);
      held = false;
    }
  };
  // Seqlock write section: seq odd from begin() to the destructor. "Odd" is also the crash mark.
  struct Mutation {
    Shard* sh = nullptr;
    void begin(Shard& shard) {
      if (sh != nullptr) return;
      sh = &shard;
      sh->seq.store(sh->seq.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
#if !CACHE_TSAN  // TSan builds have no optimistic readers (and GCC's TSan rejects fences)
      std::atomic_thread_fence(std::memory_order_release);  // the odd seq is visible before any data store
#endif
    }
    ~Mutation() {
      if (sh != nullptr)
        sh->seq.store(sh->seq.load(std::memory_order_relaxed) + 1, std::memory_order_release);
    }
  };

  // ---- chains (shard lock held) ----
  const char* key_ptr_locked(std::uint32_t i) const {
    std::uint32_t ext = item(i).ext.load(std::memory_order_relaxed);
    return ext != kNil ? block(ext) : block(i);
  }
  char* value_ptr_locked(std::uint32_t i) const {
    std::uint32_t ext = item(i).ext.load(std::memory_order_relaxed);
    return ext != kNil ? block(i) : block(i) + item(i).keylen.load(std::memory_order_relaxed);
  }
  Found find_locked(std::uint32_t b, std::uint32_t h, std::string_view key);
  void unlink_locked(std::uint32_t b, std::uint32_t slot, std::uint32_t prev);
  // Frees an item's slot and its ext. park: the primary slot may go to shard s's stash.
  void free_item_locked(std::uint32_t s, std::uint32_t slot, bool park = true);
  void retire_item_locked(std::uint32_t slot, std::vector<std::uint32_t>& batch);
  bool alloc_slots_locked(std::uint32_t s, bool primary, std::uint32_t* out);
  void free_slots_locked(std::uint32_t s, const std::uint32_t* slots, std::size_t n, bool park = true);
  void push_global_alloc_locked(std::uint32_t slot);
  std::uint64_t drain_stashes();  // no lock held: returns stashed slots moved to the global stack
  // Writes key+value into slot `i` (layout per needs_ext); false if an ext slot was needed and none was free.
  bool write_item_locked(std::uint32_t s, std::uint32_t i, std::string_view key, std::string_view value,
                         bool key_in_place);
  void copy_value_bytes(char* dst, std::string_view value) const;
  void note_expiry_locked(std::uint32_t s, std::int64_t expires) {
    if (expires == 0) return;
    auto& ne = shard(s).next_expiry;
    std::int64_t cur = ne.load(std::memory_order_relaxed);
    if (cur == 0 || expires < cur) ne.store(expires, std::memory_order_relaxed);
  }

  Status store(Mode mode, std::string_view key, std::string_view value, std::int64_t expires_in, MathOp op,
               std::int64_t operand, std::int64_t* result);
  bool handle_full();
  void log_full_event(const std::string& line);  // true if room was made and the write should be retried
  bool evict_lru_one();
  template <bool kCopy>
  Status lookup(std::string_view key, ValueSink* sink, std::int64_t* expires_at);

  Geometry geometry_;
  common::RateLimitedLog full_log_;  // process-local
  Clock clock_;
  std::function<void()> mutation_hook_;  // tests only

  const std::uint64_t instance_ = g_next_instance.fetch_add(1, std::memory_order_relaxed);
  char* base_ = nullptr;
  std::size_t size_ = 0;
  RegionHeader* hdr_ = nullptr;
  Shard* shards_ = nullptr;
  CounterStripe* stripes_ = nullptr;
  AllocState* alloc_ = nullptr;
  std::atomic<std::uint32_t>* heads_ = nullptr;
  std::uint32_t* free_ = nullptr;
  Item* items_ = nullptr;
  ItemSeal* seals_ = nullptr;  // store only
  char* blocks_ = nullptr;
  int store_fd_ = -1;  // store only: open (and flock'ed) for the life of the mapping
  std::uint64_t store_restored_ = 0;
  std::uint64_t store_dropped_ = 0;

  std::uint64_t items_cap_ = 0;
  std::uint32_t slots_ = 0;
  std::uint64_t blocksize_ = 0;
  std::uint64_t block_size_ = 0;
  std::uint64_t hashsize_ = 0;
  std::uint32_t keysize_ = 0;
  std::uint32_t shards_n_ = 0;
  std::uint32_t shard_mask_ = 0;
  std::uint32_t stash_cap_ = 0;  // per-shard stash size in use (<= kStashMax)
  bool purge_lru_ = false;
  bool no_expire_ = false;
  bool lastmod_ = false;
};

// ---- creation ---------------------------------------------------------------------------------------

void ShmCache::map_and_init() {
  const Geometry& g = geometry_;
  if (g.items == 0) throw std::runtime_error("cache \"" + g.name + "\": items must be at least 1");
  if (g.blocksize == 0) throw std::runtime_error("cache \"" + g.name + "\": blocksize must be at least 1");
  if (g.keysize == 0) throw std::runtime_error("cache \"" + g.name + "\": keysize must be at least 1");
  if (g.blocksize > (1ULL << 31)) throw std::runtime_error("cache \"" + g.name + "\": blocksize too large");

  items_cap_ = g.items;
  blocksize_ = g.blocksize;
  keysize_ = g.keysize;
  block_size_ = align_up(
      std::max<std::uint64_t>(g.blocksize + std::min<std::uint64_t>(g.keysize, kInlineKeyBudget), g.keysize),
      kBlockAlign);
  // Oversized items (key + value > block) need a key-extension slot; reserve some so N items fit.
  std::uint64_t reserve = 0;
  if (g.keysize + g.blocksize > block_size_)
    reserve =
        std::min(g.items, std::max(kMinExtReserve, (g.items + kExtReserveDivisor - 1) / kExtReserveDivisor));
  std::uint64_t slots = g.items + reserve;
  if (slots >= kNil) throw std::runtime_error("cache \"" + g.name + "\": too many items");
  slots_ = static_cast<std::uint32_t>(slots);
  hashsize_ = g.hashsize;
  if (hashsize_ == 0) {
    hashsize_ = 64;
    while (hashsize_ < g.items) hashsize_ <<= 1;
  }
  if (hashsize_ >= kNil) throw std::runtime_error("cache \"" + g.name + "\": hashsize too large");
  geometry_.hashsize = hashsize_;  // what the engine chose, for the start-up log and stats
  shards_n_ = 1;
  while (shards_n_ < kMaxShards && shards_n_ * 2 <= hashsize_) shards_n_ <<= 1;
  shard_mask_ = shards_n_ - 1;
  stash_cap_ = static_cast<std::uint32_t>(std::min<std::uint64_t>(kStashMax, g.items / (2ULL * shards_n_)));
  purge_lru_ = g.purge_lru;
  no_expire_ = g.no_expire;
  lastmod_ = g.lastmod;

  Plan plan;
  std::uint64_t off = sizeof(RegionHeader);
  plan.shards_off = off;
  off = align_up(off + sizeof(Shard) * shards_n_, kCacheLine);
  plan.stripes_off = off;
  off = align_up(off + sizeof(CounterStripe) * kStripes, kCacheLine);
  plan.alloc_off = off;
  off = align_up(off + sizeof(AllocState), kCacheLine);
  plan.heads_off = off;
  off = align_up(off + 4 * hashsize_, kCacheLine);
  plan.free_off = off;
  off = align_up(off + 4 * slots, kCacheLine);
  plan.items_off = off;
  off = off + sizeof(Item) * slots;
  if (!g.store.empty()) {  // seals exist only in store files: anonymous regions keep their old layout
    off = align_up(off, kCacheLine);
    plan.seals_off = off;
    off += sizeof(ItemSeal) * slots;
  }
  off = align_up(off, kPage);
  plan.blocks_off = off;
  off = align_up(off + block_size_ * slots, kPage);
  plan.total = off;
  // Flags are informational (they do not change the layout, so a store file does not pin them).
  plan.geo = RegionGeometry{g.items,
                            slots,
                            g.blocksize,
                            block_size_,
                            hashsize_,
                            g.keysize,
                            shards_n_,
                            kStripes,
                            (g.purge_lru ? kFlagPurgeLru : 0u) | (g.no_expire ? kFlagNoExpire : 0u),
                            0};
  size_ = off;

  if (!g.store.empty()) {
    open_store(plan);
    return;
  }
  void* p = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    throw std::runtime_error(
        fmt::format("cache \"{}\": mmap of {} bytes failed: {}", g.name, size_, strerror(errno)));
  attach(static_cast<char*>(p), plan);
  init_fresh(plan);
}

void ShmCache::attach(char* base, const Plan& plan) {
  base_ = base;
  hdr_ = reinterpret_cast<RegionHeader*>(base_);
  shards_ = reinterpret_cast<Shard*>(base_ + plan.shards_off);
  stripes_ = reinterpret_cast<CounterStripe*>(base_ + plan.stripes_off);
  alloc_ = reinterpret_cast<AllocState*>(base_ + plan.alloc_off);
  heads_ = reinterpret_cast<std::atomic<std::uint32_t>*>(base_ + plan.heads_off);
  free_ = reinterpret_cast<std::uint32_t*>(base_ + plan.free_off);
  items_ = reinterpret_cast<Item*>(base_ + plan.items_off);
  seals_ = plan.seals_off != 0 ? reinterpret_cast<ItemSeal*>(base_ + plan.seals_off) : nullptr;
  blocks_ = base_ + plan.blocks_off;
}

// A zero-filled region (fresh anonymous memory or a new sparse store file) made into an empty cache.
void ShmCache::init_fresh(const Plan& plan) {
  hdr_->magic = kMagic;
  hdr_->version = kFormatVersion;
  hdr_->header_size = sizeof(RegionHeader);
  hdr_->total_size = size_;
  hdr_->shards_offset = plan.shards_off;
  hdr_->stripes_offset = plan.stripes_off;
  hdr_->alloc_offset = plan.alloc_off;
  hdr_->heads_offset = plan.heads_off;
  hdr_->free_offset = plan.free_off;
  hdr_->items_offset = plan.items_off;
  hdr_->blocks_offset = plan.blocks_off;
  hdr_->geometry = plan.geo;
  hdr_->seals_offset = plan.seals_off;
  if (seals_ != nullptr) hdr_->header_checksum = header_sum(reinterpret_cast<const unsigned char*>(base_));
  for (std::uint32_t s = 0; s < shards_n_; ++s) init_robust_mutex(&shards_[s].mutex);
  init_robust_mutex(&alloc_->mutex);
  for (std::uint64_t b = 0; b < hashsize_; ++b) heads_[b].store(kNil, std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < slots_; ++i) {
    item(i).next.store(kNil, std::memory_order_relaxed);
    item(i).ext.store(kNil, std::memory_order_relaxed);
    item(i).owner.store(kNoOwner, std::memory_order_relaxed);
  }
  // Lowest slot on top of each stack: the first insert takes slot 0.
  const auto items32 = static_cast<std::uint32_t>(items_cap_);
  for (std::uint32_t k = 0; k < items32; ++k) free_[k] = items32 - 1 - k;
  for (std::uint32_t k = 0; k < slots_ - items32; ++k) free_[items32 + k] = slots_ - 1 - k;
  alloc_->top = items32;
  alloc_->ext_top = slots_ - items32;
}

void ShmCache::prefault() {
#ifdef MADV_POPULATE_READ
  if (madvise(base_, size_, MADV_POPULATE_READ) == 0) return;
#endif
  volatile const char* p = base_;  // older kernels: touch one byte per page
  for (std::size_t off = 0; off < size_; off += kPage) (void)p[off];
}

// ---- store files ------------------------------------------------------------------------------------
//
// With --cache-store the region is not anonymous memory but a MAP_SHARED mapping of a file, so every
// write a worker makes is a write to the page cache: it survives the death of every process (the kernel
// owns the pages), and reaches the disk when the kernel writes it back or sync_store() (msync MS_SYNC)
// forces it. The file is the region byte for byte (header, shards, counters, index, free stacks, items,
// seals, blocks), so there is no serialisation and no load-time copy.
//
// What we do NOT trust in a file we did not just create: anything a dead process may have left half
// done. So at load the only inputs are the header (validated: magic, format version, its own checksum,
// size, and the whole layout recomputed from the configured geometry) and, per item, its fields, key,
// value and seal. Everything else -- locks, seqlock "mutation in progress" marks, the hash index, the
// free stacks, the shard stashes and counts, next_expiry -- is rebuilt from scratch by load_store().
//
// Creation is atomic: the region is built in "<path>.new.<pid>", fsync'ed, then renamed over <path>
// and the directory fsync'ed, so a crash during creation never leaves a half-made file at <path>.
// The file stays open, with an exclusive flock, for as long as any process maps it (workers inherit the
// descriptor): a second server started on the same store is refused instead of corrupting it.

namespace {
std::string parent_dir(const std::string& path) {
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  return parent.empty() ? std::string(".") : parent.string();
}

void fsync_dir(const std::string& dir) {
  int fd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return;  // best effort: the rename itself already happened
  fsync(fd);
  close(fd);
}
}  // namespace

void ShmCache::open_store(const Plan& plan) {
  const std::string& path = geometry_.store;
  const std::string& name = geometry_.name;
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    if (errno == EISDIR)
      throw std::runtime_error(fmt::format("cache \"{}\": store {} is not a regular file", name, path));
    if (errno != ENOENT)
      throw std::runtime_error(
          fmt::format("cache \"{}\": cannot open store file {}: {}", name, path, strerror(errno)));
    create_store(plan);
    return;
  }
  FdGuard guard(fd);
  struct stat st;
  if (fstat(fd, &st) != 0)
    throw std::runtime_error(
        fmt::format("cache \"{}\": cannot stat store file {}: {}", name, path, strerror(errno)));
  if (!S_ISREG(st.st_mode))
    throw std::runtime_error(fmt::format("cache \"{}\": store {} is not a regular file", name, path));
  if (flock(fd, LOCK_EX | LOCK_NB) != 0)
    throw std::runtime_error(
        fmt::format("cache \"{}\": store file {} is in use by another process (another server running with "
                    "this store?): {}",
                    name, path, errno == EWOULDBLOCK ? "it holds the file's lock" : strerror(errno)));
  const auto file_size = static_cast<std::uint64_t>(st.st_size);
  if (file_size == 0) {  // nothing to lose (e.g. made by touch or mktemp)
    create_store(plan);
    return;
  }

  alignas(kCacheLine) unsigned char raw[sizeof(RegionHeader)] = {};
  const std::size_t want = std::min<std::uint64_t>(file_size, sizeof raw);
  std::size_t got = 0;
  while (got < want) {
    ssize_t n = pread(fd, raw + got, want - got, static_cast<off_t>(got));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      throw std::runtime_error(fmt::format("cache \"{}\": cannot read store file {}: {}", name, path,
                                           n < 0 ? strerror(errno) : "unexpected end of file"));
    got += static_cast<std::size_t>(n);
  }
  FileHeader fh = parse_header(raw);
  if (file_size < 8 || fh.magic != kMagic)
    throw std::runtime_error(fmt::format(
        "cache \"{}\": {} is not a cache store file (no store header; {} bytes): refusing to use or "
        "overwrite "
        "it. Remove it yourself if it is not needed, or choose another --cache-store / store= path",
        name, path, file_size));
  std::string problem = store_problem(fh, file_size, plan);
  if (!problem.empty()) {
    if (!geometry_.store_delete)
      throw std::runtime_error(
          fmt::format("invalid cache store file {} for cache \"{}\": {}. Please remove it or fix the cache "
                      "geometry to match "
                      "it, or start with --cache-store-delete (store_delete=1 in --cache2) to discard it",
                      path, name, problem));
    common::log("Removing invalid cache store file: {} ({})", path, problem);
    guard.release();
    close(fd);  // create_store renames the new file over this one
    create_store(plan);
    return;
  }

  void* p = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED)
    throw std::runtime_error(fmt::format("cache \"{}\": mmap of store file {} ({} bytes) failed: {}", name,
                                         path, size_, strerror(errno)));
  attach(static_cast<char*>(p), plan);
  store_fd_ = guard.release();
  common::log("recovered cache from backing store file: {}", path);
  load_store();
}

// Why an existing store file (with our magic) cannot be used as it is; "" if it can.
std::string ShmCache::store_problem(const FileHeader& fh, std::uint64_t file_size, const Plan& plan) const {
  if (file_size < sizeof(RegionHeader))
    return fmt::format("it is truncated ({} bytes, shorter than its {}-byte header)", file_size,
                       sizeof(RegionHeader));
  if (fh.version != kFormatVersion)
    return fmt::format("it has store format version {}, this server reads version {}", fh.version,
                       kFormatVersion);
  if (fh.checksum != fh.computed_checksum) return "its header is damaged (header checksum mismatch)";
  if (fh.total != file_size)
    return fmt::format("it is {} bytes but its header says {} (truncated or extended)", file_size, fh.total);
  // Geometry: say what differs in the user's terms first.
  std::vector<std::string> diffs;
  auto cmp = [&](const char* what, std::uint64_t file, std::uint64_t configured) {
    if (file != configured)
      diffs.push_back(fmt::format("{} {} in the file, {} configured", what, file, configured));
  };
  cmp("items", fh.geo.items, plan.geo.items);
  cmp("blocksize", fh.geo.blocksize, plan.geo.blocksize);
  cmp("keysize", fh.geo.keysize, plan.geo.keysize);
  cmp("hashsize", fh.geo.hashsize, plan.geo.hashsize);
  if (diffs.empty()) {
    // Same options, different derived layout: the file was made by a build with other tunables.
    cmp("slots", fh.geo.slots, plan.geo.slots);
    cmp("block size", fh.geo.block_size, plan.geo.block_size);
    cmp("shards", fh.geo.shards, plan.geo.shards);
    cmp("counter stripes", fh.geo.stripes, plan.geo.stripes);
    cmp("region size", fh.total, plan.total);
    const std::uint64_t want[8] = {plan.shards_off, plan.stripes_off, plan.alloc_off, plan.heads_off,
                                   plan.free_off,   plan.items_off,   plan.seals_off, plan.blocks_off};
    for (int k = 0; k < 8; ++k) cmp("area offset", fh.offsets[k], want[k]);
    if (!diffs.empty()) diffs.insert(diffs.begin(), "it was laid out by a differently built server");
  }
  if (diffs.empty()) return "";
  std::string out = "its geometry differs: ";
  for (std::size_t k = 0; k < diffs.size(); ++k) out += (k == 0 ? "" : "; ") + diffs[k];
  return out;
}

void ShmCache::create_store(const Plan& plan) {
  const std::string& path = geometry_.store;
  const std::string& name = geometry_.name;
  const std::string tmp = fmt::format("{}.new.{}", path, getpid());
  unlink(tmp.c_str());  // a leftover of an earlier crashed creation by a process with our pid
  int fd = open(tmp.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0)
    throw std::runtime_error(
        fmt::format("cache \"{}\": cannot create store file {}: {}", name, tmp, strerror(errno)));
  FdGuard guard(fd);
  struct Unlinker {
    const std::string& p;
    bool armed = true;
    ~Unlinker() {
      if (armed) unlink(p.c_str());
    }
  } unlinker{tmp};
  auto fail = [&](const char* what) {
    return std::runtime_error(
        fmt::format("cache \"{}\": cannot create store file {}: {}: {}", name, path, what, strerror(errno)));
  };
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) throw fail("flock");
  if (ftruncate(fd, static_cast<off_t>(size_)) != 0) throw fail("ftruncate");
  void* p = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) throw fail("mmap");
  attach(static_cast<char*>(p), plan);
  init_fresh(plan);
  // The header and the initialised structures reach the disk before the name does.
  if (msync(base_, size_, MS_SYNC) != 0 || fsync(fd) != 0) throw fail("msync/fsync");
  if (rename(tmp.c_str(), path.c_str()) != 0) throw fail("rename");
  unlinker.armed = false;
  fsync_dir(parent_dir(path));
  store_fd_ = guard.release();
  common::log("creating a new cache store file: {}", path);
}

void ShmCache::clear_slot_for_load(std::uint32_t i) {
  Item& it = item(i);
  it.keylen.store(0, std::memory_order_relaxed);
  it.vallen.store(0, std::memory_order_relaxed);
  it.hash.store(0, std::memory_order_relaxed);
  it.ext.store(kNil, std::memory_order_relaxed);
  it.next.store(kNil, std::memory_order_relaxed);
}

// Store load: rebuilding a cache from what a dead server left in its file.
//
// The previous server may have died anywhere (SIGKILL of every process, a crash, a power loss after
// which the disk holds a mix of pages from different moments). We hold the file's exclusive flock, so
// nobody else maps it, and every lock word and seqlock mark in it belongs to a dead process: the mutexes
// are re-initialised, every seq restarted even, the allocator's dirty flag cleared. Statistics restart
// at zero (as uWSGI's).
//
// The source of truth for "which items exist" is the primary slots [0, items) and their seals, nothing
// else: a slot with keylen != 0 is a candidate; it is restored only if its lengths are in bounds, its
// key/ext link points where a key can be, and the checksum recomputed over its stamp, lengths, expiry,
// ext, hash, key bytes and value bytes equals the seal. The seal is written after everything it covers,
// inside the same mutation, so an item whose write was interrupted (in place, or half-way through a
// new slot) cannot match and is dropped -- counted and logged, never served. An item merely deleted by
// an interrupted write (keylen already 0) is simply free.
//
// The index is then rebuilt: each intact item is appended to its bucket's chain (the hash is recomputed
// from the key bytes and must equal the stored one, which the seal covers). Two intact items with the
// same key cannot come from a process kill (an insert only allocates a new slot for a key it did not
// find), but can after a power loss (a delete's page never written while the re-insert's was): the
// item with the larger stamp -- the shard's seqlock value at its write, monotonic per shard, and a key
// always lives in one shard -- wins. Key-extension slots are claimed by the intact primaries that point
// to them; a second claimant (again only conceivable after a power loss) is dropped. Every slot not
// claimed is made free and pushed on its pool's free stack, lowest on top; stashes start empty. Each
// shard's seq restarts above the largest stamp seen in it, so new writes always stamp newer. Expired
// items are restored like the others (never returned; the sweeper frees them), next_expiry recomputed.
// LRU timestamps (CLOCK_MONOTONIC, meaningless across a reboot) are rebased to keep their order.
//
// Cost: one sequential pass over the item table and seals, one checksum over each live item's bytes,
// one chain walk per item (chains average < 1 with the default hashsize): ~0.3 s for 1e6 items.

void ShmCache::load_store() {
  const auto t0 = monotonic_ns();
  for (std::uint32_t s = 0; s < shards_n_; ++s) {
    Shard& sh = shard(s);
    init_robust_mutex(&sh.mutex);
    sh.seq.store(0, std::memory_order_relaxed);
    sh.next_expiry.store(0, std::memory_order_relaxed);
    sh.items.store(0, std::memory_order_relaxed);
    sh.stash_count.store(0, std::memory_order_relaxed);
  }
  init_robust_mutex(&alloc_->mutex);
  alloc_->dirty.store(0, std::memory_order_relaxed);
  for (std::uint32_t k = 0; k < kStripes; ++k) {
    CounterStripe& c = stripes_[k];
    for (auto* a : {&c.hits, &c.misses, &c.full, &c.evictions, &c.expirations, &c.lock_waits, &c.lookups,
                    &c.probes, &c.shard_recoveries, &c.owner})
      a->store(0, std::memory_order_relaxed);
  }
  for (std::uint64_t b = 0; b < hashsize_; ++b) heads_[b].store(kNil, std::memory_order_relaxed);
#ifdef MADV_POPULATE_READ
  // The scan reads the item table and seals sequentially: map them in one call, not a fault per page.
  madvise(base_ + hdr_->items_offset - hdr_->items_offset % kPage,
          blocks_ - (base_ + hdr_->items_offset - hdr_->items_offset % kPage), MADV_POPULATE_READ);
#endif

  // Pass 1, sequential over the item table, seals and blocks: which items are intact, and their buckets.
  struct Entry {
    std::uint32_t bucket, slot, hash;
  };
  std::vector<Entry> entries;
  entries.reserve(items_cap_);
  std::vector<std::uint8_t> live(items_cap_, 0);
  std::vector<std::uint64_t> max_stamp(shards_n_, 0);
  std::uint64_t dropped = 0, duplicates = 0;
  std::uint64_t max_used = 0;
  for (std::uint32_t i = 0; i < items_cap_; ++i) {
    Item& it = item(i);
    it.next.store(kNil, std::memory_order_relaxed);
    const std::uint32_t kl = it.keylen.load(std::memory_order_relaxed);
    if (kl == 0) continue;
    const std::uint32_t vl = it.vallen.load(std::memory_order_relaxed);
    const std::uint32_t ext = it.ext.load(std::memory_order_relaxed);
    bool ok = kl <= keysize_ && vl >= 1 && vl <= blocksize_;
    const char* kp = nullptr;
    const char* vp = nullptr;
    if (ok && ext == kNil) {
      ok = kl + static_cast<std::uint64_t>(vl) <= block_size_;
      kp = block(i);
      vp = block(i) + kl;
    } else if (ok) {
      ok = ext >= items_cap_ && ext < slots_ && kl <= block_size_;
      kp = block(ext);
      vp = block(i);
    }
    const std::uint32_t h = it.hash.load(std::memory_order_relaxed);
    const std::uint64_t stamp = seals_[i].stamp;
    ok = ok &&
         seals_[i].sum ==
             seal_sum(stamp, kl, vl, it.expires.load(std::memory_order_relaxed), ext, h, kp, vp) &&
         key_hash(std::string_view(kp, kl)) == h;
    if (!ok) {
      ++dropped;
      clear_slot_for_load(i);
      continue;
    }
    const std::uint32_t b = bucket_of(h);
    max_stamp[shard_of_bucket(b)] = std::max(max_stamp[shard_of_bucket(b)], stamp);
    max_used = std::max<std::uint64_t>(max_used, it.last_used_ns.load(std::memory_order_relaxed));
    entries.push_back(Entry{b, i, h});
    live[i] = 1;
  }

  // Pass 2: group by bucket with a stable LSD radix sort (11 bits a pass), so that chains are built with
  // sequential writes to heads[] and no dependent random reads; within a bucket, slot order is kept
  // (what appending in slot order would give).
  {
    constexpr unsigned kRadixBits = 11;
    constexpr std::uint32_t kRadix = 1u << kRadixBits;
    std::vector<Entry> tmp(entries.size());
    std::vector<std::uint32_t> count(kRadix);
    for (unsigned shift = 0; shift < 32 && (hashsize_ - 1) >> shift != 0; shift += kRadixBits) {
      std::fill(count.begin(), count.end(), 0);
      for (const Entry& e : entries) ++count[(e.bucket >> shift) & (kRadix - 1)];
      std::uint32_t sum = 0;
      for (auto& c : count) sum += std::exchange(c, sum);
      for (const Entry& e : entries) tmp[count[(e.bucket >> shift) & (kRadix - 1)]++] = e;
      entries.swap(tmp);
    }
  }
  // Link each bucket's group. Two intact copies of one key (only after a power loss) are in one group:
  // the larger stamp wins.
  for (std::size_t a = 0; a < entries.size();) {
    std::size_t z = a;
    while (z < entries.size() && entries[z].bucket == entries[a].bucket) ++z;
    for (std::size_t k = a + 1; k < z; ++k) {
      for (std::size_t m = a; m < k; ++m) {
        const std::uint32_t x = entries[m].slot, y = entries[k].slot;
        if (live[x] == 0 || live[y] == 0 || entries[m].hash != entries[k].hash) continue;
        const std::uint32_t kl = item(x).keylen.load(std::memory_order_relaxed);
        if (item(y).keylen.load(std::memory_order_relaxed) != kl ||
            std::memcmp(key_ptr_locked(x), key_ptr_locked(y), kl) != 0)
          continue;
        ++duplicates;
        const std::uint32_t loser = seals_[x].stamp >= seals_[y].stamp ? y : x;
        live[loser] = 0;
        clear_slot_for_load(loser);
      }
    }
    std::uint32_t prev = kNil;
    for (std::size_t k = a; k < z; ++k) {
      const std::uint32_t i = entries[k].slot;
      if (live[i] == 0) continue;
      if (prev == kNil)
        heads_[entries[k].bucket].store(i, std::memory_order_relaxed);
      else
        item(prev).next.store(i, std::memory_order_relaxed);
      prev = i;
    }
    a = z;
  }
  entries = std::vector<Entry>();

  // Key-extension slots: each may belong to one primary only.
  std::vector<std::uint32_t> ext_owner(slots_ - items_cap_, kNil);
  for (std::uint32_t i = 0; i < items_cap_; ++i) {
    if (live[i] == 0) continue;
    const std::uint32_t ext = item(i).ext.load(std::memory_order_relaxed);
    if (ext == kNil) continue;
    if (ext_owner[ext - items_cap_] == kNil) {
      ext_owner[ext - items_cap_] = i;
      continue;
    }
    const std::uint32_t b = bucket_of(item(i).hash.load(std::memory_order_relaxed));
    std::uint32_t prev = kNil, j = heads_[b].load(std::memory_order_relaxed);
    while (j != i) {
      prev = j;
      j = item(j).next.load(std::memory_order_relaxed);
    }
    unlink_locked(b, i, prev);
    live[i] = 0;
    clear_slot_for_load(i);
    ++dropped;
  }

  // Ownership, counts, expiry bookkeeping and the free stacks (pushed highest first: lowest on top).
  const auto now_mono = static_cast<std::uint64_t>(monotonic_ns());
  std::uint64_t restored = 0;
  alloc_->top = 0;
  alloc_->ext_top = 0;
  for (std::uint32_t i = slots_; i-- > 0;) {
    Item& it = item(i);
    std::uint32_t owner_primary = kNil;
    if (i < items_cap_ && live[i] != 0)
      owner_primary = i;
    else if (i >= items_cap_ && ext_owner[i - items_cap_] != kNil)
      owner_primary = ext_owner[i - items_cap_];
    if (owner_primary == kNil) {
      clear_slot_for_load(i);
      push_global_alloc_locked(i);
      continue;
    }
    const std::uint32_t s =
        shard_of_bucket(bucket_of(item(owner_primary).hash.load(std::memory_order_relaxed)));
    it.owner.store(s, std::memory_order_relaxed);
    if (i >= items_cap_) {
      it.kind.store(kKeyExt, std::memory_order_relaxed);
      continue;
    }
    it.kind.store(kPrimary, std::memory_order_relaxed);
    const std::uint64_t used = it.last_used_ns.load(std::memory_order_relaxed);
    it.last_used_ns.store(now_mono - std::min(now_mono, max_used - std::min(max_used, used)),
                          std::memory_order_relaxed);
    Shard& sh = shard(s);
    sh.items.store(sh.items.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    note_expiry_locked(s, it.expires.load(std::memory_order_relaxed));
    ++restored;
  }
  for (std::uint32_t s = 0; s < shards_n_; ++s)
    shard(s).seq.store((max_stamp[s] | 1) + 1, std::memory_order_relaxed);

  store_restored_ = restored;
  store_dropped_ = dropped;
  common::log("[uwsgi-cache] restored {} items", restored);
  if (dropped > 0)
    common::log("cache \"{}\": store {}: dropped {} damaged item(s) (torn write or corruption; never served)",
                geometry_.name, geometry_.store, dropped);
  if (duplicates > 0)
    common::log("cache \"{}\": store {}: {} older duplicate(s) of restored keys discarded", geometry_.name,
                geometry_.store, duplicates);
  common::log("cache \"{}\": store loaded in {} ms", geometry_.name, (monotonic_ns() - t0) / 1000000);
}

bool ShmCache::sync_store() {
  if (store_fd_ < 0) return true;
  if (msync(base_, size_, MS_SYNC) != 0) {
    common::log("cache \"{}\": msync of store file {} failed: {}", geometry_.name, geometry_.store,
                strerror(errno));
    return false;
  }
  return true;
}

// ---- locks and crash recovery -----------------------------------------------------------------------
//
// Every lock is a robust, process-shared mutex. When its holder dies (SIGKILL, OOM killer) the
// kernel marks it and the next locker gets EOWNERDEAD. What the dead holder may have left behind:
//  * shard lock, seq even: it died between mutations (e.g. while copying a value out) -> nothing to fix.
//  * shard lock, seq odd: it died inside a mutation; chains, item fields or value bytes of that shard
//    may be torn. We do not try to guess what it was doing: a cache may always forget, so the shard is
//    wiped (heads emptied, every slot owned by the shard freed) and seq made even again. Optimistic
//    readers saw seq odd all along and never returned anything from the torn state.
//  * alloc lock, dirty set: the free stack or the counts may be torn; both are rebuilt from the
//    per-slot `kind`, which is the single source of truth for "is this slot in use".
// Lock order: shard -> alloc. Nothing takes a shard lock while holding the alloc lock.

// Critical sections are a few hundred nanoseconds, shorter than a futex sleep and wake-up, so a
// contended lock is first retried kLockSpins times with growing pauses before blocking.
int ShmCache::acquire(pthread_mutex_t* m) {
  int rc = pthread_mutex_trylock(m);
  if (rc != EBUSY) return rc;
  counters().add(&CounterStripe::lock_waits, 1);
  for (int spin = 0; spin < kLockSpins; ++spin) {
    for (int k = 0; k < (1 << std::min(spin, 5)); ++k) cpu_relax();
    rc = pthread_mutex_trylock(m);
    if (rc != EBUSY) return rc;
  }
  return pthread_mutex_lock(m);
}

void ShmCache::lock_shard(std::uint32_t s) {
  pthread_mutex_t* m = &shard(s).mutex;
  int rc = acquire(m);
  if (rc == EOWNERDEAD) {
    recover_shard_after_owner_death_locked(s);
    pthread_mutex_consistent(m);
  } else if (rc != 0) {
    common::log("cache \"{}\": shard {} lock failed: {}", geometry_.name, s, strerror(rc));
    abort();
  }
}

void ShmCache::lock_alloc() {
  pthread_mutex_t* m = &alloc_->mutex;
  int rc = acquire(m);
  if (rc == EOWNERDEAD) {
    if (alloc_->dirty.load(std::memory_order_relaxed) != 0) rebuild_free_stack_alloc_locked();
    pthread_mutex_consistent(m);
  } else if (rc != 0) {
    common::log("cache \"{}\": allocator lock failed: {}", geometry_.name, strerror(rc));
    abort();
  }
}

void ShmCache::rebuild_free_stack_alloc_locked() {
  alloc_->top = 0;
  alloc_->ext_top = 0;
  for (std::uint32_t i = slots_; i-- > 0;)
    if (item(i).kind.load(std::memory_order_relaxed) == kFree) push_global_alloc_locked(i);
  std::uint32_t top = alloc_->top + alloc_->ext_top;
  alloc_->dirty.store(0, std::memory_order_relaxed);
  common::log("cache \"{}\": allocator rebuilt after a process died holding it ({} free slots)",
              geometry_.name, top);
}

void ShmCache::recover_shard_after_owner_death_locked(std::uint32_t s) {
  Shard& sh = shard(s);
  std::uint64_t seq = sh.seq.load(std::memory_order_relaxed);
  if ((seq & 1) == 0) return;  // died outside a mutation: the shard is consistent
  for (std::uint64_t b = s; b < hashsize_; b += shards_n_) heads_[b].store(kNil, std::memory_order_relaxed);
  std::uint64_t dropped = 0;
  lock_alloc();
  alloc_->dirty.store(1, std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < slots_; ++i) {
    Item& it = item(i);
    if (it.kind.load(std::memory_order_relaxed) == kFree || it.owner.load(std::memory_order_relaxed) != s)
      continue;
    if (it.kind.load(std::memory_order_relaxed) == kPrimary) ++dropped;
    it.keylen.store(0, std::memory_order_relaxed);
    it.ext.store(kNil, std::memory_order_relaxed);
    it.next.store(kNil, std::memory_order_relaxed);
    push_global_alloc_locked(i);
  }
  alloc_->dirty.store(0, std::memory_order_relaxed);
  unlock_alloc();
  sh.items.store(0, std::memory_order_relaxed);
  sh.stash_count.store(0, std::memory_order_relaxed);
  sh.next_expiry.store(0, std::memory_order_relaxed);
  sh.seq.store(seq + 1, std::memory_order_release);
  counters().add(&CounterStripe::shard_recoveries, 1);
  common::log("cache \"{}\": a process died inside shard {}: shard wiped ({} items dropped)", geometry_.name,
              s, dropped);
}

// ---- allocation (shard lock held; alloc lock inside) -----------------------------------------------
//
// Free slots live on two global stacks (primary pool, key-extension pool) under the allocator lock.
// So that writers on different shards do not all meet on that one lock, each shard parks up to
// stash_cap_ free primary-pool slots in its own stash (kind kStashed, guarded by the shard lock):
// an insert pops from its shard's stash, refilling it with half a stash per allocator-lock hold, and
// a delete parks the slot there, spilling half the stash back when it is full. A stash only changes
// inside a mutation, so a writer dying mid-way is repaired by the shard wipe (which frees every slot
// owned by the shard, stashed ones included). Parked slots must never make the cache look full:
// a write that finds no free slot first drains every stash back to the global stack and retries.

void ShmCache::push_global_alloc_locked(std::uint32_t slot) {
  Item& it = item(slot);
  it.kind.store(kFree, std::memory_order_relaxed);
  it.owner.store(kNoOwner, std::memory_order_relaxed);
  if (slot < items_cap_)
    free_[alloc_->top++] = slot;
  else
    free_[items_cap_ + alloc_->ext_top++] = slot;
}

// Takes a primary slot (from the pool of `items`) or a key-extension slot, owned by shard s.
bool ShmCache::alloc_slots_locked(std::uint32_t s, bool primary, std::uint32_t* out) {
  Shard& sh = shard(s);
  if (!primary) {
    lock_alloc();
    bool ok = alloc_->ext_top > 0;
    if (ok) {
      alloc_->dirty.store(1, std::memory_order_relaxed);
      std::uint32_t i = free_[items_cap_ + alloc_->ext_top - 1];
      item(i).owner.store(s, std::memory_order_relaxed);
      item(i).kind.store(kKeyExt, std::memory_order_relaxed);
      --alloc_->ext_top;
      alloc_->dirty.store(0, std::memory_order_relaxed);
      *out = i;
    }
    unlock_alloc();
    return ok;
  }
  std::uint32_t n = sh.stash_count.load(std::memory_order_relaxed);
  if (n == 0) {
    lock_alloc();
    std::uint32_t take = std::min(alloc_->top, std::max<std::uint32_t>(1, (stash_cap_ + 1) / 2));
    if (take > 0) {
      alloc_->dirty.store(1, std::memory_order_relaxed);
      for (std::uint32_t k = 0; k < take; ++k) {
        std::uint32_t i = free_[alloc_->top - 1];
        item(i).owner.store(s, std::memory_order_relaxed);
        item(i).kind.store(kStashed, std::memory_order_relaxed);
        --alloc_->top;
        sh.stash[n++] = i;
      }
      alloc_->dirty.store(0, std::memory_order_relaxed);
    }
    unlock_alloc();
    if (n == 0) return false;
  }
  std::uint32_t i = sh.stash[--n];
  sh.stash_count.store(n, std::memory_order_relaxed);
  item(i).kind.store(kPrimary, std::memory_order_relaxed);
  sh.items.store(sh.items.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  *out = i;
  return true;
}

void ShmCache::free_slots_locked(std::uint32_t s, const std::uint32_t* slots, std::size_t n, bool park) {
  thread_local std::vector<std::uint32_t> to_global;
  to_global.clear();
  Shard& sh = shard(s);
  std::uint32_t cnt = sh.stash_count.load(std::memory_order_relaxed);
  std::uint32_t live = sh.items.load(std::memory_order_relaxed);
  for (std::size_t k = 0; k < n; ++k) {
    std::uint32_t i = slots[k];
    if (item(i).kind.load(std::memory_order_relaxed) == kPrimary) --live;
    if (!park || i >= items_cap_ || stash_cap_ == 0) {
      to_global.push_back(i);
      continue;
    }
    if (cnt == stash_cap_) {  // full: spill the older half
      std::uint32_t spill = (stash_cap_ + 1) / 2;
      to_global.insert(to_global.end(), sh.stash, sh.stash + spill);
      std::memmove(sh.stash, sh.stash + spill, (cnt - spill) * sizeof(std::uint32_t));
      cnt -= spill;
    }
    item(i).kind.store(kStashed, std::memory_order_relaxed);
    sh.stash[cnt++] = i;
  }
  sh.stash_count.store(cnt, std::memory_order_relaxed);
  sh.items.store(live, std::memory_order_relaxed);
  if (to_global.empty()) return;
  lock_alloc();
  alloc_->dirty.store(1, std::memory_order_relaxed);
  for (std::uint32_t i : to_global) push_global_alloc_locked(i);
  alloc_->dirty.store(0, std::memory_order_relaxed);
  unlock_alloc();
}

// Marks an unlinked item free-to-be (no key, no links) and adds its slots to a batch that the caller
// hands to free_slots_locked, as clear and the sweeper free many items per lock hold.
void ShmCache::retire_item_locked(std::uint32_t slot, std::vector<std::uint32_t>& batch) {
  Item& it = item(slot);
  batch.push_back(slot);
  if (const std::uint32_t ext = it.ext.load(std::memory_order_relaxed); ext != kNil) batch.push_back(ext);
  it.keylen.store(0, std::memory_order_relaxed);
  it.ext.store(kNil, std::memory_order_relaxed);
  it.next.store(kNil, std::memory_order_relaxed);
}

void ShmCache::free_item_locked(std::uint32_t s, std::uint32_t slot, bool park) {
  Item& it = item(slot);
  std::uint32_t list[2] = {slot, it.ext.load(std::memory_order_relaxed)};
  it.keylen.store(0, std::memory_order_relaxed);
  it.vallen.store(0, std::memory_order_relaxed);
  it.hash.store(0, std::memory_order_relaxed);
  it.next.store(kNil, std::memory_order_relaxed);
  it.ext.store(kNil, std::memory_order_relaxed);
  free_slots_locked(s, list, list[1] == kNil ? 1 : 2, park);
}

std::uint64_t ShmCache::drain_stashes() {
  std::uint64_t drained = 0;
  for (std::uint32_t s = 0; s < shards_n_; ++s) {
    if (shard(s).stash_count.load(std::memory_order_relaxed) == 0) continue;
    ShardLock lock(*this, s);
    Shard& sh = shard(s);
    std::uint32_t cnt = sh.stash_count.load(std::memory_order_relaxed);
    if (cnt == 0) continue;
    Mutation mutation;
    mutation.begin(sh);
    lock_alloc();
    alloc_->dirty.store(1, std::memory_order_relaxed);
    for (std::uint32_t k = 0; k < cnt; ++k) push_global_alloc_locked(sh.stash[k]);
    alloc_->dirty.store(0, std::memory_order_relaxed);
    unlock_alloc();
    sh.stash_count.store(0, std::memory_order_relaxed);
    drained += cnt;
  }
  return drained;
}

// ---- chains -----------------------------------------------------------------------------------------

Found ShmCache::find_locked(std::uint32_t b, std::uint32_t h, std::string_view key) {
  Found f;
  std::uint64_t probes = 0;
  std::uint32_t prev = kNil;
  for (std::uint32_t i = heads_[b].load(std::memory_order_relaxed); i != kNil;
       prev = i, i = item(i).next.load(std::memory_order_relaxed)) {
    ++probes;
    const Item& it = item(i);
    if (it.hash.load(std::memory_order_relaxed) == h &&
        it.keylen.load(std::memory_order_relaxed) == key.size() &&
        same_key(key_ptr_locked(i), key.data(), key.size())) {
      f.slot = i;
      f.prev = prev;
      break;
    }
  }
  if (f.slot == kNil) f.tail = prev;
  const Counters c = counters();
  c.add(&CounterStripe::lookups, 1);
  c.add(&CounterStripe::probes, probes);
  return f;
}

void ShmCache::unlink_locked(std::uint32_t b, std::uint32_t slot, std::uint32_t prev) {
  std::uint32_t next = item(slot).next.load(std::memory_order_relaxed);
  if (prev == kNil)
    heads_[b].store(next, std::memory_order_relaxed);
  else
    item(prev).next.store(next, std::memory_order_relaxed);
}

void ShmCache::copy_value_bytes(char* dst, std::string_view value) const {
  if (!mutation_hook_ || value.size() < 2) {
    std::memcpy(dst, value.data(), value.size());
    return;
  }
  // Test hook: called with the value half written, inside the lock and the mutation.
  std::size_t half = value.size() / 2;
  std::memcpy(dst, value.data(), half);
  mutation_hook_();
  std::memcpy(dst + half, value.data() + half, value.size() - half);
}

bool ShmCache::write_item_locked(std::uint32_t s, std::uint32_t i, std::string_view key,
                                 std::string_view value, bool key_in_place) {
  Item& it = item(i);
  std::uint32_t ext = it.ext.load(std::memory_order_relaxed);
  bool need = needs_ext(key.size(), value.size());
  if (need && ext == kNil) {
    if (!alloc_slots_locked(s, false, &ext)) return false;
    std::memcpy(block(ext), key.data(), key.size());
  } else if (!need && ext != kNil) {
    free_slots_locked(s, &ext, 1);
    ext = kNil;
    std::memcpy(block(i), key.data(), key.size());
  } else if (!key_in_place) {
    std::memcpy(ext != kNil ? block(ext) : block(i), key.data(), key.size());
  }
  it.ext.store(ext, std::memory_order_relaxed);
  it.keylen.store(static_cast<std::uint32_t>(key.size()), std::memory_order_relaxed);
  copy_value_bytes(ext != kNil ? block(i) : block(i) + key.size(), value);
  it.vallen.store(static_cast<std::uint32_t>(value.size()), std::memory_order_relaxed);
  return true;
}

// ---- reads ------------------------------------------------------------------------------------------
//
// A hit takes no lock and writes nothing but relaxed counters. Each shard carries a sequence number
// (seqlock) bumped to odd before and to even after every mutation, under the shard mutex. A reader
// samples seq (retrying while odd), walks the chain and copies the value with no lock, then checks
// seq again: unchanged means nothing it read was being changed, so the copy is exact. While racing a
// writer the reader may see any garbage, so every index it follows is bounds-checked against the
// region, every length against the block, and the chain walk is bounded by the slot count; anything
// off just means "retry". After kOptimisticAttempts failures (a writer keeps the shard busy, or one
// died inside it and left seq odd) the reader takes the robust mutex, which also performs recovery.
// Under TSan the optimistic path is compiled out: its deliberate racy byte copies would be reported.

template <bool kCopy>
Status ShmCache::lookup(std::string_view key, ValueSink* sink, std::int64_t* expires_at) {
  if (Status st = check_key(key); st != Status::ok) return st;
  const std::uint32_t h = key_hash(key);
  const std::uint32_t b = bucket_of(h);
  const std::uint32_t s = shard_of_bucket(b);
  [[maybe_unused]] Shard& sh = shard(s);
  std::uint32_t found = kNil;
  std::int64_t expires = 0;
  bool expired = false;
  std::uint64_t probes = 0;
  bool done = false;
#if !CACHE_TSAN && !defined(CACHE_LOCKED_READS)  // -DCACHE_LOCKED_READS: measure the mutex-only read path
  for (int attempt = 0; attempt < kOptimisticAttempts && !done; ++attempt) {
    std::uint64_t s1 = sh.seq.load(std::memory_order_acquire);
    for (int spin = 0; (s1 & 1) != 0 && spin < kOddSeqSpins; ++spin) {
      cpu_relax();
      s1 = sh.seq.load(std::memory_order_acquire);
    }
    if ((s1 & 1) != 0) continue;
    found = kNil;
    expired = false;
    probes = 0;
    bool sane = true;
    std::uint32_t i = heads_[b].load(std::memory_order_relaxed);
    while (i != kNil) {
      if (i >= slots_ || ++probes > slots_) {
        sane = false;
        break;
      }
      const Item& it = item(i);
      if (it.hash.load(std::memory_order_relaxed) == h &&
          it.keylen.load(std::memory_order_relaxed) == key.size()) {
        std::uint32_t ext = it.ext.load(std::memory_order_relaxed);
        if (ext != kNil && ext >= slots_) {
          sane = false;
          break;
        }
        const char* kp = ext != kNil ? block(ext) : block(i);
        if (same_key(kp, key.data(), key.size())) {
          found = i;
          expires = it.expires.load(std::memory_order_relaxed);
          expired = expired_now(expires);  // one clock read per lookup, and only for items with an expiry
          if (kCopy && !expired) {
            std::uint64_t vlen = it.vallen.load(std::memory_order_relaxed);
            std::uint64_t voff = ext != kNil ? 0 : key.size();
            if (vlen > blocksize_ || voff + vlen > block_size_) {
              sane = false;
              break;
            }
            char* dst = sink->reserve(vlen);
            if (dst == nullptr) return Status::out_of_memory;
            std::memcpy(dst, block(i) + voff, vlen);
          }
          break;
        }
      }
      i = it.next.load(std::memory_order_relaxed);
    }
    std::atomic_thread_fence(std::memory_order_acquire);
    if (sane && sh.seq.load(std::memory_order_relaxed) == s1) done = true;
  }
#endif
  if (!done) {
    ShardLock lock(*this, s);
    Found f = find_locked(b, h, key);
    found = f.slot;
    if (found != kNil) {
      expires = item(found).expires.load(std::memory_order_relaxed);
      expired = expired_now(expires);
      if (kCopy && !expired) {
        const std::uint32_t vlen = item(found).vallen.load(std::memory_order_relaxed);
        char* dst = sink->reserve(vlen);
        if (dst == nullptr) return Status::out_of_memory;
        std::memcpy(dst, value_ptr_locked(found), vlen);
      }
    }
  }
  const Counters c = counters();
  if (done) {
    c.add(&CounterStripe::lookups, 1);
    c.add(&CounterStripe::probes, probes);
  }
  if (expired) found = kNil;
  if (!kCopy) return found != kNil ? Status::ok : Status::miss;
  if (found == kNil) {
    c.add(&CounterStripe::misses, 1);
    return Status::miss;
  }
  c.add(&CounterStripe::hits, 1);
  // Popularity and recency: relaxed, lossy, possibly on a slot reused meanwhile (harmless). Only one
  // hit in kHitSample writes the item (adding kHitSample), so processes hitting the same hot key do
  // not bounce its cache line on every read.
  Item& it = item(found);
  if ((++t_hit_tick & (kHitSample - 1)) == 0) {
    std::uint32_t hits = it.hits.load(std::memory_order_relaxed);
    if (hits <= UINT32_MAX - kHitSample) it.hits.store(hits + kHitSample, std::memory_order_relaxed);
  }
  if (purge_lru_)
    it.last_used_ns.store(static_cast<std::uint64_t>(monotonic_ns()), std::memory_order_relaxed);
  if (expires_at != nullptr) *expires_at = expires;
  return Status::ok;
}

Status ShmCache::get(std::string_view key, ValueSink& sink, std::int64_t* expires_at) {
  return lookup<true>(key, &sink, expires_at);
}

Status ShmCache::exists(std::string_view key) { return lookup<false>(key, nullptr, nullptr); }

// ---- writes -----------------------------------------------------------------------------------------

namespace {
std::int64_t apply_math(Cache::MathOp op, std::int64_t a, std::int64_t b) {
  auto ua = static_cast<std::uint64_t>(a), ub = static_cast<std::uint64_t>(b);
  switch (op) {
    case Cache::MathOp::inc:
      return static_cast<std::int64_t>(ua + ub);
    case Cache::MathOp::dec:
      return static_cast<std::int64_t>(ua - ub);
    case Cache::MathOp::mul:
      return static_cast<std::int64_t>(ua * ub);
    case Cache::MathOp::div:
      if (b == 0) return 0;
      if (b == -1) return static_cast<std::int64_t>(0 - ua);  // INT64_MIN / -1 wraps
      return a / b;
  }
  return a;
}
}  // namespace

Status ShmCache::store(Mode mode, std::string_view key, std::string_view value, std::int64_t expires_in,
                       MathOp op, std::int64_t operand, std::int64_t* result) {
  if (Status st = check_key(key); st != Status::ok) return st;
  if (mode != Mode::math) {
    if (value.empty()) return Status::value_empty;
    if (value.size() > blocksize_) return Status::value_too_large;
  } else if (blocksize_ < 8) {
    return Status::value_too_large;
  }
  const std::uint32_t h = key_hash(key);
  const std::uint32_t b = bucket_of(h);
  const std::uint32_t s = shard_of_bucket(b);
  char number[8];

  for (int attempt = 0; attempt < kInsertAttempts; ++attempt) {
    bool out_of_room = false;
    {
      ShardLock lock(*this, s);
      Mutation mutation;
      Found f = find_locked(b, h, key);
      // The clock is read only for an item that has an expiry (a vDSO call costs ~20 ns a write).
      const bool live = f.slot != kNil && !expired_now(item(f.slot).expires.load(std::memory_order_relaxed));
      if (live && mode == Mode::set) return Status::exists;

      std::int64_t expires = 0;
      if (mode == Mode::math) {
        std::int64_t base = geometry_.math_initial;
        if (live) {
          // uWSGI semantics: the first 8 bytes of whatever is stored, zero padded if shorter.
          std::uint64_t raw = 0;
          std::uint32_t vlen = item(f.slot).vallen.load(std::memory_order_relaxed);
          std::memcpy(&raw, value_ptr_locked(f.slot), std::min<std::uint32_t>(vlen, 8));
          base = static_cast<std::int64_t>(raw);
          expires = item(f.slot).expires.load(std::memory_order_relaxed);  // kept
        } else {
          expires = absolute_expiry(expires_in);
        }
        std::int64_t n = apply_math(op, base, operand);
        std::memcpy(number, &n, 8);  // int64 little-endian (x86-64/aarch64 hosts)
        value = std::string_view(number, 8);
        if (result != nullptr) *result = n;
      } else {
        expires = absolute_expiry(expires_in);
      }

      mutation.begin(shard(s));
      std::uint32_t slot = f.slot;
      if (slot != kNil) {
        // Overwrite in place (a live update or math, or reuse of an expired item's slot).
        if (!write_item_locked(s, slot, key, value, true)) {
          out_of_room = true;
        } else {
          item(slot).expires.store(expires, std::memory_order_relaxed);
          if (!live) item(slot).hits.store(0, std::memory_order_relaxed);
        }
      } else if (!alloc_slots_locked(s, true, &slot)) {
        out_of_room = true;
      } else {
        Item& it = item(slot);
        it.hash.store(h, std::memory_order_relaxed);
        it.next.store(kNil, std::memory_order_relaxed);
        it.ext.store(kNil, std::memory_order_relaxed);
        it.hits.store(0, std::memory_order_relaxed);
        if (!write_item_locked(s, slot, key, value, false)) {
          it.keylen.store(0, std::memory_order_relaxed);
          free_slots_locked(s, &slot, 1);
          out_of_room = true;
        } else {
          it.expires.store(expires, std::memory_order_relaxed);
          // Append at the chain tail, as uWSGI does (reorder_hot_items moves hot items forward).
          if (f.tail == kNil)
            heads_[b].store(slot, std::memory_order_relaxed);
          else
            item(f.tail).next.store(slot, std::memory_order_relaxed);
        }
      }
      if (!out_of_room) {
        seal_locked(s, slot, key, value);
        if (f.slot != kNil && !live) counters().add(&CounterStripe::expirations, 1);
        if (purge_lru_)  // recency matters only to the LRU victim choice
          item(slot).last_used_ns.store(static_cast<std::uint64_t>(monotonic_ns()),
                                        std::memory_order_relaxed);
        note_expiry_locked(s, expires);
        note_modified();
        return Status::ok;
      }
    }
    if (!handle_full()) return Status::full;
  }
  return Status::full;
}

// uWSGI's line for a full cache (users grep for it), rate limited, with the count of lines held back.
void ShmCache::log_full_event(const std::string& line) {
  if (!geometry_.ignore_full) full_log_.log(line);
}

// Called with no lock held after a write found no free slot.
bool ShmCache::handle_full() {
  const Counters c = counters();
  if (drain_stashes() > 0) return true;  // free slots were parked in other shards: not full
  if (!purge_lru_) {
    // Expired items never block a write: reclaim them before declaring the cache full.
    if (sweep_expired() > 0) {
      drain_stashes();
      return true;
    }
    c.add(&CounterStripe::full, 1);
    log_full_event("*** DANGER cache \"" + geometry_.name + "\" is FULL !!! ***");
    return false;
  }
  c.add(&CounterStripe::full, 1);
  log_full_event("LRU item will be purged from cache \"" + geometry_.name + "\"");
  return evict_lru_one();
}

// LRU without a list: a hit only stores a timestamp in its item (no relinking, no lock). The victim
// is the item with the oldest timestamp: found exactly by a scan for small caches, approximated by
// sampling kLruSamples random slots for big ones (Redis's approach; the error is small and bounded).
bool ShmCache::evict_lru_one() {
  for (int attempt = 0; attempt < kInsertAttempts; ++attempt) {
    std::uint32_t victim = kNil;
    std::uint64_t oldest = UINT64_MAX;
    auto consider = [&](std::uint32_t i) {
      if (item(i).kind.load(std::memory_order_relaxed) != kPrimary) return;
      std::uint64_t t = item(i).last_used_ns.load(std::memory_order_relaxed);
      if (t < oldest) {
        oldest = t;
        victim = i;
      }
    };
    if (slots_ <= kLruExactScanSlots) {
      for (std::uint32_t i = 0; i < slots_; ++i) consider(i);
    } else {
      for (unsigned k = 0; k < kLruSamples * 4 && (k < kLruSamples || victim == kNil); ++k)
        consider(static_cast<std::uint32_t>(xorshift() % slots_));
    }
    if (victim == kNil) return false;
    std::uint32_t s = item(victim).owner.load(std::memory_order_relaxed);
    if (s >= shards_n_) continue;
    ShardLock lock(*this, s);
    if (item(victim).kind.load(std::memory_order_relaxed) != kPrimary ||
        item(victim).owner.load(std::memory_order_relaxed) != s)
      continue;
    std::uint32_t b = bucket_of(item(victim).hash.load(std::memory_order_relaxed));
    std::uint32_t prev = kNil, i = heads_[b].load(std::memory_order_relaxed);
    while (i != kNil && i != victim) {
      prev = i;
      i = item(i).next.load(std::memory_order_relaxed);
    }
    if (i != victim) continue;
    Mutation mutation;
    mutation.begin(shard(s));
    unlink_locked(b, victim, prev);
    free_item_locked(s, victim, false);  // to the global stack: the evicting writer needs it
    counters().add(&CounterStripe::evictions, 1);
    return true;
  }
  return false;
}

Status ShmCache::del(std::string_view key) {
  if (Status st = check_key(key); st != Status::ok) return st;
  const std::uint32_t h = key_hash(key);
  const std::uint32_t b = bucket_of(h);
  const std::uint32_t s = shard_of_bucket(b);
  ShardLock lock(*this, s);
  Found f = find_locked(b, h, key);
  if (f.slot == kNil) return Status::miss;
  bool was_expired = expired_now(item(f.slot).expires.load(std::memory_order_relaxed));
  Mutation mutation;
  mutation.begin(shard(s));
  unlink_locked(b, f.slot, f.prev);
  free_item_locked(s, f.slot);
  if (was_expired) {
    counters().add(&CounterStripe::expirations, 1);
    return Status::miss;
  }
  note_modified();
  return Status::ok;
}

Status ShmCache::clear() {
  std::vector<std::uint32_t> batch;
  for (std::uint32_t s = 0; s < shards_n_; ++s) {
    ShardLock lock(*this, s);
    Mutation mutation;
    mutation.begin(shard(s));
    batch.clear();
    for (std::uint64_t b = s; b < hashsize_; b += shards_n_) {
      for (std::uint32_t i = heads_[b].load(std::memory_order_relaxed); i != kNil;) {
        std::uint32_t next = item(i).next.load(std::memory_order_relaxed);
        retire_item_locked(i, batch);
        i = next;
      }
      heads_[b].store(kNil, std::memory_order_relaxed);
    }
    free_slots_locked(s, batch.data(), batch.size());
    shard(s).next_expiry.store(0, std::memory_order_relaxed);
  }
  note_modified();
  return Status::ok;
}

void ShmCache::for_each_key(const std::function<void(std::string_view key)>& visit) {
  std::vector<std::string> keys;
  for (std::uint32_t s = 0; s < shards_n_; ++s) {
    keys.clear();
    {
      ShardLock lock(*this, s);
      const std::int64_t now_s = now();
      for (std::uint64_t b = s; b < hashsize_; b += shards_n_)
        for (std::uint32_t i = heads_[b].load(std::memory_order_relaxed); i != kNil;
             i = item(i).next.load(std::memory_order_relaxed))
          if (!expired(item(i).expires.load(std::memory_order_relaxed), now_s))
            keys.emplace_back(key_ptr_locked(i), item(i).keylen.load(std::memory_order_relaxed));
    }
    // The callback runs with no lock held: it may call back into the cache.
    for (const auto& k : keys) visit(k);
  }
}

// Slow path of counters(): this thread's claim on this cache among the remembered ones (moved to the
// front), or a new claim: a free stripe or one this thread already owns, else one whose owner thread is
// gone, else the shared stripe 0. The claim pushed out of memory stays owned until its thread is gone.
Counters ShmCache::claim_stripe() const {
  const std::uint32_t gen = g_fork_generation.load(std::memory_order_relaxed);
  for (std::size_t k = 1; k < kClaimMemory; ++k) {
    if (t_claims[k].instance == instance_ && t_claims[k].generation == gen) {
      std::swap(t_claims[0], t_claims[k]);
      return t_claims[0].counters;
    }
  }
  Counters got{&stripes_[0], false};
  const std::uint64_t me = stripe_owner_id();
  for (int pass = 0; pass < 2 && !got.owned; ++pass) {
    for (std::uint32_t k = 1; k < kStripes; ++k) {
      std::atomic<std::uint64_t>& owner = stripes_[k].owner;
      std::uint64_t seen = owner.load(std::memory_order_relaxed);
      const bool takeable = pass == 0 ? (seen == 0 || seen == me) : stripe_owner_gone(seen);
      if (takeable && (seen == me || owner.compare_exchange_strong(seen, me, std::memory_order_acq_rel))) {
        got = Counters{&stripes_[k], true};
        break;
      }
    }
  }
  for (std::size_t k = kClaimMemory - 1; k > 0; --k) t_claims[k] = t_claims[k - 1];
  t_claims[0] = StripeClaim{instance_, gen, got};
  return got;
}

Stats ShmCache::stats() const {
  Stats st;
  for (std::uint32_t k = 0; k < kStripes; ++k) {
    const CounterStripe& c = stripes_[k];
    st.hits += c.hits.load(std::memory_order_relaxed);
    st.misses += c.misses.load(std::memory_order_relaxed);
    st.full += c.full.load(std::memory_order_relaxed);
    st.evictions += c.evictions.load(std::memory_order_relaxed);
    st.expirations += c.expirations.load(std::memory_order_relaxed);
    st.lock_waits += c.lock_waits.load(std::memory_order_relaxed);
    st.lookups += c.lookups.load(std::memory_order_relaxed);
    st.probes += c.probes.load(std::memory_order_relaxed);
    st.shard_recoveries += c.shard_recoveries.load(std::memory_order_relaxed);
  }
  st.items = count();
  st.capacity = items_cap_;
  st.last_modified_at = hdr_->last_modified_at.load(std::memory_order_relaxed);
  st.store_restored = store_restored_;
  st.store_dropped = store_dropped_;
  return st;
}

// ---- background jobs --------------------------------------------------------------------------------
//
// Expiry sweep. uWSGI walks every slot taking the write lock once per slot every 3 s. Here each shard
// remembers the earliest expiry among its items (next_expiry, lowered by every write that sets an
// expiry), so a shard with nothing due is skipped without locking it; a due shard is swept
// kSweepBucketsPerHold buckets per lock hold, and its next_expiry is recomputed from what remains.
// Reads never need the sweep for correctness (they check expiry themselves); it only frees memory.

std::uint64_t ShmCache::sweep_expired() {
  if (no_expire_) return 0;
  const std::int64_t now_s = now();
  std::uint64_t freed = 0;
  std::vector<std::uint32_t> batch;
  for (std::uint32_t s = 0; s < shards_n_; ++s) {
    Shard& sh = shard(s);
    const std::int64_t due = sh.next_expiry.load(std::memory_order_relaxed);
    if (due == 0 || due > now_s) continue;
    std::int64_t remaining_min = 0;
    for (std::uint64_t start = s; start < hashsize_; start += kSweepBucketsPerHold * shards_n_) {
      ShardLock lock(*this, s);
      Mutation mutation;
      batch.clear();
      std::uint64_t end = std::min<std::uint64_t>(hashsize_, start + kSweepBucketsPerHold * shards_n_);
      for (std::uint64_t b = start; b < end; b += shards_n_) {
        std::uint32_t prev = kNil;
        for (std::uint32_t i = heads_[b].load(std::memory_order_relaxed); i != kNil;) {
          std::uint32_t next = item(i).next.load(std::memory_order_relaxed);
          std::int64_t exp = item(i).expires.load(std::memory_order_relaxed);
          if (expired(exp, now_s)) {
            mutation.begin(sh);
            unlink_locked(static_cast<std::uint32_t>(b), i, prev);
            retire_item_locked(i, batch);
            ++freed;
            counters().add(&CounterStripe::expirations, 1);
          } else {
            if (exp != 0 && (remaining_min == 0 || exp < remaining_min)) remaining_min = exp;
            prev = i;
          }
          i = next;
        }
      }
      free_slots_locked(s, batch.data(), batch.size());
      if (start + kSweepBucketsPerHold * shards_n_ >= hashsize_) {
        // Last batch: writes since `due` was read could only have lowered next_expiry.
        std::int64_t cur = sh.next_expiry.load(std::memory_order_relaxed);
        std::int64_t next = remaining_min;
        if (cur != due && cur != 0 && (next == 0 || cur < next)) next = cur;
        sh.next_expiry.store(next, std::memory_order_relaxed);
      }
    }
  }
  return freed;
}

// Hot-item reordering. uWSGI appends to the chain tail and never reorders, so a popular key inserted
// late stays behind every colder one in its bucket. Each pass sorts every chain by the items' hit
// counts (stable: ties keep their order) and then halves the counts, so a count is an exponentially
// decayed popularity and yesterday's hot key sinks back once it cools. Hits are counted with relaxed,
// lossy stores by readers, so this costs a hit nothing. The relink runs inside a seqlock mutation, so
// optimistic readers of that shard retry for its duration: kReorderBucketsPerHold buckets per hold.

std::uint64_t ShmCache::reorder_hot_items() {
  std::uint64_t moved = 0;
  std::vector<std::pair<std::uint32_t, std::uint32_t>> chain;  // (hits, slot)
  std::vector<std::uint32_t> order;
  for (std::uint32_t s = 0; s < shards_n_; ++s) {
    for (std::uint64_t start = s; start < hashsize_; start += kReorderBucketsPerHold * shards_n_) {
      ShardLock lock(*this, s);
      Mutation mutation;
      std::uint64_t end = std::min<std::uint64_t>(hashsize_, start + kReorderBucketsPerHold * shards_n_);
      for (std::uint64_t b = start; b < end; b += shards_n_) {
        chain.clear();
        std::uint32_t rest = kNil;
        for (std::uint32_t i = heads_[b].load(std::memory_order_relaxed); i != kNil;
             i = item(i).next.load(std::memory_order_relaxed)) {
          if (chain.size() == kReorderMaxChain) {
            rest = i;
            break;
          }
          std::uint32_t hits = item(i).hits.load(std::memory_order_relaxed);
          chain.emplace_back(hits, i);
          item(i).hits.store(hits >> 1, std::memory_order_relaxed);
        }
        if (chain.size() < 2) continue;
        order.clear();
        for (auto& e : chain) order.push_back(e.second);
        std::stable_sort(chain.begin(), chain.end(), [](auto& x, auto& y) { return x.first > y.first; });
        std::uint64_t changed = 0;
        for (std::size_t k = 0; k < chain.size(); ++k) changed += chain[k].second != order[k];
        if (changed == 0) continue;
        mutation.begin(shard(s));
        heads_[b].store(chain[0].second, std::memory_order_relaxed);
        for (std::size_t k = 0; k + 1 < chain.size(); ++k)
          item(chain[k].second).next.store(chain[k + 1].second, std::memory_order_relaxed);
        item(chain.back().second).next.store(rest, std::memory_order_relaxed);
        moved += changed;
      }
    }
  }
  return moved;
}

}  // namespace

std::unique_ptr<Cache> Cache::create(const Geometry& geometry) {
  return std::make_unique<ShmCache>(geometry);
}

}  // namespace cache
