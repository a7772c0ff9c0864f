// The shared-memory cache engine. Layout in cache/layout.hpp, design and figures in docs/cache.md.
#include "cache/cache.hpp"

#include <errno.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
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
// Counter stripes: each thread/process adds to its own cache line instead of one shared line.
constexpr std::uint32_t kStripes = 32;
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

std::uint32_t djb33x(std::string_view key) {
  std::uint32_t h = 5381;
  for (char c : key)
    h = (h * 33) ^ static_cast<std::uint32_t>(static_cast<std::int32_t>(static_cast<signed char>(c)));
  return h;
}

std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

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

// Which counter stripe this thread adds to. A forked child inherits its parent's thread_local, so a
// fork generation (bumped by an atfork handler) makes every process pick its own stripe from its tid.
std::atomic<std::uint32_t> g_fork_generation{1};
void bump_fork_generation() { g_fork_generation.fetch_add(1, std::memory_order_relaxed); }
struct StripeChoice {
  std::uint32_t generation = 0;
  std::uint32_t stripe = 0;
};
thread_local StripeChoice t_stripe;
[[maybe_unused]] const int g_atfork_registered = pthread_atfork(nullptr, nullptr, bump_fork_generation);

std::uint32_t stripe_index() {
  std::uint32_t gen = g_fork_generation.load(std::memory_order_relaxed);
  if (t_stripe.generation != gen) {
    auto tid = static_cast<std::uint32_t>(syscall(SYS_gettid));
    t_stripe.generation = gen;
    t_stripe.stripe = (tid * 2654435761u) >> 16;
  }
  return t_stripe.stripe;
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
  }

  const Geometry& geometry() const override { return geometry_; }

  Status get(std::string_view key, std::string& value, std::int64_t* expires_at) override;
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
  void set_clock(Clock clock) override { clock_ = std::move(clock); }
  void set_mutation_delay_for_tests(std::uint32_t microseconds) override {
    mutation_delay_us_ = microseconds;
  }

 private:
  enum class Mode { set, update, math };

  // ---- region access ----
  Item& item(std::uint32_t i) const { return items_[i]; }
  char* block(std::uint32_t i) const { return blocks_ + static_cast<std::uint64_t>(i) * block_size_; }
  Shard& shard(std::uint32_t s) const { return shards_[s]; }
  CounterStripe& counters() const { return stripes_[stripe_index() & (kStripes - 1)]; }
  std::uint32_t bucket_of(std::uint32_t h) const { return static_cast<std::uint32_t>(h % hashsize_); }
  std::uint32_t shard_of_bucket(std::uint32_t b) const { return b & shard_mask_; }
  bool needs_ext(std::uint64_t klen, std::uint64_t vlen) const { return klen + vlen > block_size_; }

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
  bool log_allowed(unsigned long long* suppressed) {
    std::lock_guard<std::mutex> guard(full_log_mutex_);
    return full_log_.allow(suppressed);
  }
  bool handle_full();  // true if room was made and the write should be retried
  bool evict_lru_one();
  template <bool kCopy>
  Status lookup(std::string_view key, std::string* value, std::int64_t* expires_at);

  Geometry geometry_;
  std::mutex full_log_mutex_;        // process-local: RateLimitedLog is not thread safe
  common::RateLimitedLog full_log_;  // full_log_mutex_
  Clock clock_;
  std::uint32_t mutation_delay_us_ = 0;

  char* base_ = nullptr;
  std::size_t size_ = 0;
  RegionHeader* hdr_ = nullptr;
  Shard* shards_ = nullptr;
  CounterStripe* stripes_ = nullptr;
  AllocState* alloc_ = nullptr;
  std::atomic<std::uint32_t>* heads_ = nullptr;
  std::uint32_t* free_ = nullptr;
  Item* items_ = nullptr;
  char* blocks_ = nullptr;

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
  shards_n_ = 1;
  while (shards_n_ < kMaxShards && shards_n_ * 2 <= hashsize_) shards_n_ <<= 1;
  shard_mask_ = shards_n_ - 1;
  stash_cap_ = static_cast<std::uint32_t>(std::min<std::uint64_t>(kStashMax, g.items / (2ULL * shards_n_)));
  purge_lru_ = g.purge_lru;
  no_expire_ = g.no_expire;

  std::uint64_t off = sizeof(RegionHeader);
  std::uint64_t shards_off = off;
  off = align_up(off + sizeof(Shard) * shards_n_, kCacheLine);
  std::uint64_t stripes_off = off;
  off = align_up(off + sizeof(CounterStripe) * kStripes, kCacheLine);
  std::uint64_t alloc_off = off;
  off = align_up(off + sizeof(AllocState), kCacheLine);
  std::uint64_t heads_off = off;
  off = align_up(off + 4 * hashsize_, kCacheLine);
  std::uint64_t free_off = off;
  off = align_up(off + 4 * slots, kCacheLine);
  std::uint64_t items_off = off;
  off = align_up(off + sizeof(Item) * slots, kPage);
  std::uint64_t blocks_off = off;
  off = align_up(off + block_size_ * slots, kPage);

  size_ = off;
  void* p = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED)
    throw std::runtime_error(
        fmt::format("cache \"{}\": mmap of {} bytes failed: {}", g.name, size_, strerror(errno)));
  base_ = static_cast<char*>(p);
  hdr_ = reinterpret_cast<RegionHeader*>(base_);
  shards_ = reinterpret_cast<Shard*>(base_ + shards_off);
  stripes_ = reinterpret_cast<CounterStripe*>(base_ + stripes_off);
  alloc_ = reinterpret_cast<AllocState*>(base_ + alloc_off);
  heads_ = reinterpret_cast<std::atomic<std::uint32_t>*>(base_ + heads_off);
  free_ = reinterpret_cast<std::uint32_t*>(base_ + free_off);
  items_ = reinterpret_cast<Item*>(base_ + items_off);
  blocks_ = base_ + blocks_off;

  hdr_->magic = kMagic;
  hdr_->version = kFormatVersion;
  hdr_->header_size = sizeof(RegionHeader);
  hdr_->total_size = size_;
  hdr_->shards_offset = shards_off;
  hdr_->stripes_offset = stripes_off;
  hdr_->alloc_offset = alloc_off;
  hdr_->heads_offset = heads_off;
  hdr_->free_offset = free_off;
  hdr_->items_offset = items_off;
  hdr_->blocks_offset = blocks_off;
  hdr_->geometry = RegionGeometry{g.items,
                                  slots,
                                  g.blocksize,
                                  block_size_,
                                  hashsize_,
                                  g.keysize,
                                  shards_n_,
                                  kStripes,
                                  (g.purge_lru ? kFlagPurgeLru : 0u) | (g.no_expire ? kFlagNoExpire : 0u),
                                  0};
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
  counters().lock_waits.fetch_add(1, std::memory_order_relaxed);
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
  counters().shard_recoveries.fetch_add(1, std::memory_order_relaxed);
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
        std::memcmp(key_ptr_locked(i), key.data(), key.size()) == 0) {
      f.slot = i;
      f.prev = prev;
      break;
    }
  }
  if (f.slot == kNil) f.tail = prev;
  CounterStripe& c = counters();
  c.lookups.fetch_add(1, std::memory_order_relaxed);
  c.probes.fetch_add(probes, std::memory_order_relaxed);
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
  if (mutation_delay_us_ == 0 || value.size() < 2) {
    std::memcpy(dst, value.data(), value.size());
    return;
  }
  // Test hook: leave the value half written for a while, inside the lock and the mutation.
  std::size_t half = value.size() / 2;
  std::memcpy(dst, value.data(), half);
  usleep(mutation_delay_us_);
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
Status ShmCache::lookup(std::string_view key, std::string* value, std::int64_t* expires_at) {
  if (Status st = check_key(key); st != Status::ok) return st;
  const std::uint32_t h = djb33x(key);
  const std::uint32_t b = bucket_of(h);
  const std::uint32_t s = shard_of_bucket(b);
  [[maybe_unused]] Shard& sh = shard(s);
  std::uint32_t found = kNil;
  std::int64_t expires = 0;
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
        if (std::memcmp(kp, key.data(), key.size()) == 0) {
          found = i;
          expires = it.expires.load(std::memory_order_relaxed);
          if (kCopy && !expired_now(expires)) {
            std::uint64_t vlen = it.vallen.load(std::memory_order_relaxed);
            std::uint64_t voff = ext != kNil ? 0 : key.size();
            if (vlen > blocksize_ || voff + vlen > block_size_) {
              sane = false;
              break;
            }
            value->assign(block(i) + voff, vlen);
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
      if (kCopy && !expired_now(expires))
        value->assign(value_ptr_locked(found), item(found).vallen.load(std::memory_order_relaxed));
    }
  } else {
    CounterStripe& c = counters();
    c.lookups.fetch_add(1, std::memory_order_relaxed);
    c.probes.fetch_add(probes, std::memory_order_relaxed);
  }
  if (found != kNil && expired_now(expires)) found = kNil;
  if (!kCopy) return found != kNil ? Status::ok : Status::miss;
  CounterStripe& c = counters();
  if (found == kNil) {
    c.misses.fetch_add(1, std::memory_order_relaxed);
    return Status::miss;
  }
  c.hits.fetch_add(1, std::memory_order_relaxed);
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

Status ShmCache::get(std::string_view key, std::string& value, std::int64_t* expires_at) {
  return lookup<true>(key, &value, expires_at);
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
  const std::uint32_t h = djb33x(key);
  const std::uint32_t b = bucket_of(h);
  const std::uint32_t s = shard_of_bucket(b);
  char number[8];

  for (int attempt = 0; attempt < kInsertAttempts; ++attempt) {
    bool out_of_room = false;
    {
      ShardLock lock(*this, s);
      Mutation mutation;
      Found f = find_locked(b, h, key);
      const std::int64_t now_s = now();
      bool live = false;
      if (f.slot != kNil) {
        std::int64_t exp = item(f.slot).expires.load(std::memory_order_relaxed);
        live = !expired(exp, now_s);
      }
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
        if (f.slot != kNil && !live) counters().expirations.fetch_add(1, std::memory_order_relaxed);
        if (slot != kNil)
          item(slot).last_used_ns.store(static_cast<std::uint64_t>(monotonic_ns()),
                                        std::memory_order_relaxed);
        note_expiry_locked(s, expires);
        return Status::ok;
      }
    }
    if (!handle_full()) return Status::full;
  }
  return Status::full;
}

// Called with no lock held after a write found no free slot.
bool ShmCache::handle_full() {
  CounterStripe& c = counters();
  if (drain_stashes() > 0) return true;  // free slots were parked in other shards: not full
  if (!purge_lru_) {
    // Expired items never block a write: reclaim them before declaring the cache full.
    if (sweep_expired() > 0) {
      drain_stashes();
      return true;
    }
    c.full.fetch_add(1, std::memory_order_relaxed);
    unsigned long long suppressed = 0;
    if (!geometry_.ignore_full && log_allowed(&suppressed)) {
      if (suppressed > 0)
        common::log("*** DANGER cache \"{}\" is FULL !!! *** ({} similar messages suppressed)",
                    geometry_.name, suppressed);
      else
        common::log("*** DANGER cache \"{}\" is FULL !!! ***", geometry_.name);
    }
    return false;
  }
  c.full.fetch_add(1, std::memory_order_relaxed);
  unsigned long long suppressed = 0;
  if (!geometry_.ignore_full && log_allowed(&suppressed)) {
    if (suppressed > 0)
      common::log("LRU item will be purged from cache \"{}\" ({} similar messages suppressed)",
                  geometry_.name, suppressed);
    else
      common::log("LRU item will be purged from cache \"{}\"", geometry_.name);
  }
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
    counters().evictions.fetch_add(1, std::memory_order_relaxed);
    return true;
  }
  return false;
}

Status ShmCache::del(std::string_view key) {
  if (Status st = check_key(key); st != Status::ok) return st;
  const std::uint32_t h = djb33x(key);
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
    counters().expirations.fetch_add(1, std::memory_order_relaxed);
    return Status::miss;
  }
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
        batch.push_back(i);
        if (std::uint32_t ext = item(i).ext.load(std::memory_order_relaxed); ext != kNil)
          batch.push_back(ext);
        item(i).keylen.store(0, std::memory_order_relaxed);
        item(i).ext.store(kNil, std::memory_order_relaxed);
        item(i).next.store(kNil, std::memory_order_relaxed);
        i = next;
      }
      heads_[b].store(kNil, std::memory_order_relaxed);
    }
    free_slots_locked(s, batch.data(), batch.size());
    shard(s).next_expiry.store(0, std::memory_order_relaxed);
  }
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
            batch.push_back(i);
            if (std::uint32_t ext = item(i).ext.load(std::memory_order_relaxed); ext != kNil)
              batch.push_back(ext);
            item(i).keylen.store(0, std::memory_order_relaxed);
            item(i).ext.store(kNil, std::memory_order_relaxed);
            item(i).next.store(kNil, std::memory_order_relaxed);
            ++freed;
            counters().expirations.fetch_add(1, std::memory_order_relaxed);
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
