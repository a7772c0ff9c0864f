// Private to cache/: the engine's one implementation of cache::Cache, shared by its source files.
// Nothing outside cache/ includes this (the public face is cache/cache.hpp, the region's layout
// cache/layout.hpp). The files, by concern:
//   cache.cpp       the hot path: lookup, writes (put), delete, clear, chains, slot allocation, locks
//   region.cpp      the region's plan, mapping and initialisation
//   store_file.cpp  --cache-store files: header, validation, the loader's passes, sync, checksums
//   counters.cpp    counter stripes (claiming, stats)
//   jobs.cpp        background jobs: expiry sweep, hot-item reorder, a full cache (eviction)
//   recovery.cpp    repair after a process died holding a lock
//   blocks.cpp      the data area's block map: runs, the free index, rebuilding it from the items
// Lock-contract suffixes: *_locked runs with the shard lock held, *_alloc_locked with the alloc lock.
#pragma once

#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "cache/cache.hpp"
#include "cache/layout.hpp"
#include "common/clock.hpp"
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

namespace cache::detail {

using namespace layout;

// ---- Tunables -------------------------------------------------------------------------------------
// Shards: enough that two workers on different keys almost never meet on one mutex (memcached uses
// 2^10+ item locks for many threads; we have few processes and keep the per-shard state small).
constexpr std::uint32_t kMaxShards = 128;
// Counter stripes: stripe 0 is shared, the others are owned by one thread each (layout.hpp).
constexpr std::uint32_t kStripes = 128;
// Caches a thread remembers its stripe for (a thread using more caches alternately re-claims).
constexpr std::size_t kClaimMemory = 4;
// Data-area block without bitmap mode: a cache line. A 100-byte value with a short key takes two, so
// memory follows what is stored (docs/cache.md 1b); doubled only if the area would need 2^32 blocks.
constexpr std::uint64_t kSmallGrain = 64;
// Without bitmap mode the area has room for (kAreaItemsFactor * items - 1) largest items: enough that
// items largest items always fit, whatever the fragmentation (docs/cache.md 1b).
constexpr std::uint64_t kAreaItemsFactor = 2;
// Largest value the engine stores (Item::vallen is 32 bits; bitmap mode's blocksize x blocks is capped).
constexpr std::uint64_t kMaxValue = kMaxValueBytes;
// A full cache with purge_lru: items evicted at most, per write, to make a run fit.
constexpr int kMaxEvictionsPerWrite = 64;
// Optimistic reads: attempts before falling back to the mutex, and pause spins while seq is odd.
constexpr int kOptimisticAttempts = 4;
constexpr int kOddSeqSpins = 64;
// Hit counting for reordering is sampled: one hit in kHitSample (a power of two) writes the item.
constexpr std::uint32_t kHitSample = 4;
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

inline std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

using common::monotonic_ns;

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// ---- checksums (store_file.cpp) ---------------------------------------------------------------------
// What an ItemSeal covers: everything a reader uses to find and return the item.
std::uint64_t seal_sum(std::uint64_t stamp, std::uint32_t keylen, std::uint32_t vallen, std::int64_t expires,
                       std::uint32_t block, std::uint32_t hash, const char* key, const char* value,
                       std::uint64_t cas, std::uint32_t flags);
// The seal of format versions 3 and 4 (no cas, no flags; format 3 has the ext link where 4 has `block`),
// for their migration (store_migrate.cpp).
std::uint64_t seal_sum_v4(std::uint64_t stamp, std::uint32_t keylen, std::uint32_t vallen,
                          std::int64_t expires, std::uint32_t block, std::uint32_t hash, const char* key,
                          const char* value);
// The checksum of a region header's summed bytes (RegionHeader::header_checksum), as format `version`
// defines it (4 added the block map geometry).
std::uint64_t header_sum(const unsigned char* raw, std::uint32_t version = kFormatVersion);

// Where every area of a region goes, computed from the geometry alone (a store file's header must
// match it exactly).
struct Plan {
  std::uint64_t total = 0;
  std::uint64_t shards_off = 0, stripes_off = 0, alloc_off = 0, heads_off = 0, free_off = 0;
  std::uint64_t items_off = 0, seals_off = 0, blocks_off = 0;
  RegionGeometry geo{};
  BlockMapGeometry map{};
};

// A store file's header, read with pread before anything is mapped (plain fields only).
struct FileHeader {
  std::uint64_t magic = 0;
  std::uint32_t version = 0;
  std::uint32_t header_size = 0;
  std::uint64_t total = 0;
  std::uint64_t offsets[8] = {};  // shards, stripes, alloc, heads, free, items, seals, blocks
  RegionGeometry geo{};
  BlockMapGeometry map{};  // format 4
  std::uint64_t checksum = 0;
  std::uint64_t computed_checksum = 0;
};

// ---- counter stripes (counters.cpp) -------------------------------------------------------------------
// Which counter stripe this thread adds to, per cache (layout.hpp: CounterStripe). A forked child
// inherits its parent's thread_local claims, so a fork generation (bumped by an atfork handler) makes
// each process claim its own.
extern std::atomic<std::uint32_t> g_fork_generation;
// Process-unique id of each cache object, so a claim is never taken for another cache mapped later at
// the same address.
extern std::atomic<std::uint64_t> g_next_instance;

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
// constinit: no dynamic initialisation, so the hot path reaches it without a TLS wrapper call.
extern thread_local constinit StripeClaim t_claims[kClaimMemory];

// A robust, process-shared mutex (region.cpp).
void init_robust_mutex(pthread_mutex_t* m);

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
  Status get_meta(std::string_view key, MetaValueSink* sink, ItemMeta* meta) override;
  Status exists(std::string_view key) override;
  Status modify(std::string_view key, Decide decide, ItemMeta* after, MetaValueSink* read) override;
  Status set(std::string_view key, std::string_view value, std::int64_t expires_in) override {
    return put(Mode::set, key, value, expires_in, MathOp::inc, 0, nullptr);
  }
  Status update(std::string_view key, std::string_view value, std::int64_t expires_in) override {
    return put(Mode::update, key, value, expires_in, MathOp::inc, 0, nullptr);
  }
  Status del(std::string_view key) override;
  Status clear() override;
  Status math(std::string_view key, MathOp op, std::int64_t operand, std::int64_t expires_in,
              std::int64_t* result) override {
    return put(Mode::math, key, {}, expires_in, op, operand, result);
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
  std::int64_t now() const override { return clock_ ? clock_() : static_cast<std::int64_t>(time(nullptr)); }
  void set_mutation_hook_for_tests(std::function<void()> hook) override { mutation_hook_ = std::move(hook); }

 private:
  enum class Mode { set, update, math };

  // ---- region access ----
  Item& item(std::uint32_t i) const { return items_[i]; }
  // The data-area bytes of block b (an item's run starts at item(i).block).
  char* block_ptr(std::uint64_t b) const { return data_ + b * grain_; }
  std::uint32_t blocks_for(std::uint64_t bytes) const {
    return static_cast<std::uint32_t>((bytes + grain_ - 1) / grain_);
  }
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

  // lastmod caches: the time of this write (a clock read, which is why it is opt-in, as in uWSGI).
  void note_modified() {
    if (lastmod_) hdr_->last_modified_at.store(now(), std::memory_order_relaxed);
  }
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
  // load_store's passes, in order (store_file.cpp).
  struct LoadScan;
  void reset_shared_state_for_load();
  void scan_intact_items(LoadScan& scan);
  void sort_by_bucket(LoadScan& scan);
  void link_chains(LoadScan& scan);
  void rebuild_ownership_and_free_stacks(LoadScan& scan);
  void clear_slot_for_load(std::uint32_t i);
  // Store files of formats 3 and 4 (store_migrate.cpp): their intact items copied into a new store of
  // the current format that replaces the file. Takes ownership of old_fd.
  void migrate_old_store(int old_fd, const FileHeader& fh, std::uint64_t file_size, const Plan& plan);
  // Store only: refreshes the item's seal; the last write of a mutation that changed the item.
  void seal_locked(std::uint32_t s, std::uint32_t i, std::string_view key, std::string_view value) {
    if (seals_ == nullptr) return;
    const Item& it = item(i);
    const std::uint64_t stamp = shard(s).seq.load(std::memory_order_relaxed);
    seals_[i].stamp = stamp;
    seals_[i].sum =
        seal_sum(stamp, it.keylen.load(std::memory_order_relaxed), it.vallen.load(std::memory_order_relaxed),
                 it.expires.load(std::memory_order_relaxed), it.block.load(std::memory_order_relaxed),
                 it.hash.load(std::memory_order_relaxed), key.data(), value.data(),
                 it.cas.load(std::memory_order_relaxed), it.flags.load(std::memory_order_relaxed));
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
    return block_ptr(item(i).block.load(std::memory_order_relaxed));
  }
  char* value_ptr_locked(std::uint32_t i) const {
    return block_ptr(item(i).block.load(std::memory_order_relaxed)) +
           item(i).keylen.load(std::memory_order_relaxed);
  }
  Found find_locked(std::uint32_t b, std::uint32_t h, std::string_view key);
  void unlink_locked(std::uint32_t b, std::uint32_t slot, std::uint32_t prev);
  // Frees an item's slot and its run. park: the slot may go to shard s's stash.
  void free_item_locked(std::uint32_t s, std::uint32_t slot, bool park = true);
  void retire_item_locked(std::uint32_t slot, std::vector<std::uint32_t>& batch);
  bool alloc_slot_locked(std::uint32_t s, std::uint32_t* out);
  void free_slots_locked(std::uint32_t s, const std::uint32_t* slots, std::size_t n, bool park = true);
  void push_global_alloc_locked(std::uint32_t slot);
  std::uint64_t drain_stashes();  // no lock held: returns stashed slots moved to the global stack
  // Writes key+value into slot `i`'s run, moving it to a run of the right length first if needed; false
  // (item unchanged) if no run of that length is free.
  bool write_item_locked(std::uint32_t s, std::uint32_t i, std::string_view key, std::string_view value,
                         bool key_in_place);
  void copy_value_bytes(char* dst, std::string_view value) const;
  void note_expiry_locked(std::uint32_t s, std::int64_t expires) {
    if (expires == 0) return;
    auto& ne = shard(s).next_expiry;
    std::int64_t cur = ne.load(std::memory_order_relaxed);
    if (cur == 0 || expires < cur) ne.store(expires, std::memory_order_relaxed);
  }

  // Stores key/value in the found item's slot (overwrite) or a new slot linked at the chain's tail, with
  // its expiry, flags and a new cas; seals it. False when no slot or no run of blocks was free (the
  // caller makes room); *fragmented is set when the free blocks added up but no run fitted, and counted
  // (full_fragmented) and cleared by the write that then succeeds.
  bool place_locked(std::uint32_t s, std::uint32_t b, std::uint32_t h, const Found& f, bool live,
                    std::string_view key, std::string_view value, std::int64_t expires, std::uint32_t flags,
                    std::uint32_t* placed, bool* fragmented);
  // memcached's cas for a write now in progress in shard s (layout.hpp: Item::cas).
  std::uint64_t next_cas_locked(std::uint32_t s) const {
    return shard(s).seq.load(std::memory_order_relaxed) * shards_n_ + s + 1;
  }
  ItemMeta meta_locked(std::uint32_t i) const {
    const Item& it = item(i);
    return ItemMeta{it.flags.load(std::memory_order_relaxed), it.cas.load(std::memory_order_relaxed),
                    it.expires.load(std::memory_order_relaxed)};
  }
  // The write path of set, update and math (cache.cpp).
  Status put(Mode mode, std::string_view key, std::string_view value, std::int64_t expires_in, MathOp op,
             std::int64_t operand, std::int64_t* result);
  bool handle_full();  // true if room was made and the write should be retried
  // Tries of a write that finds the cache full: with purge_lru a big value may need several victims
  // before a run of its length is free.
  int write_attempts() const { return kInsertAttempts + (purge_lru_ ? kMaxEvictionsPerWrite : 0); }
  void log_full_event(const std::string& line);
  bool evict_lru_one();

  // ---- block map (blocks.cpp; alloc lock held) ----
  void plan_block_map(Plan& plan, std::uint64_t& off);  // sets words_, sum_words_
  void init_block_map();                                // a fresh region: every block free
  // Gives slot i a run of n blocks (its old run, if any, is released first and may be reused); records
  // it in the item. False if no run fits: the old run is kept, the item unchanged.
  bool assign_run_alloc_locked(std::uint32_t i, std::uint32_t n);
  void release_run_alloc_locked(std::uint32_t i);  // no-op for a slot without a run
  bool find_run_alloc_locked(std::uint32_t n, std::uint64_t* start);
  void mark_blocks_alloc_locked(std::uint64_t start, std::uint64_t n, bool used);
  bool blocks_free_alloc_locked(std::uint64_t start, std::uint64_t n) const;
  std::uint64_t next_free_block(std::uint64_t p) const;
  std::uint64_t next_used_block(std::uint64_t p, std::uint64_t limit) const;
  std::uint64_t free_run_start(std::uint64_t p, std::uint64_t floor) const;
  void lower_hints_after_free_alloc_locked(std::uint64_t start, std::uint64_t n);
  void clear_block_map_alloc_locked(bool known_zero);  // every block free, hints at 0
  // The map from the runs of every non-free item (after a process died holding the alloc lock).
  void rebuild_block_map_alloc_locked();
  std::uint64_t highest_used_block() const;
  // Inlined into get() and exists(): the call would be the only cost the split added to a hit.
  template <bool kCopy>
  [[gnu::always_inline]] inline Status lookup(std::string_view key, ValueSink* sink, ItemMeta* meta,
                                              bool meta_sink);

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
  char* data_ = nullptr;       // the data area (blocks)
  BlockMapHeader* bmh_ = nullptr;
  std::uint64_t* used_ = nullptr;
  std::uint64_t* nonfull_ = nullptr;
  std::uint64_t* empty_ = nullptr;
  int store_fd_ = -1;  // store only: open (and flock'ed) for the life of the mapping
  std::uint64_t store_restored_ = 0;
  std::uint64_t store_dropped_ = 0;

  std::uint64_t items_cap_ = 0;
  std::uint32_t slots_ = 0;
  std::uint64_t blocksize_ = 0;
  std::uint64_t max_value_ = 0;  // blocksize, or blocksize x blocks in bitmap mode
  std::uint64_t grain_ = 0;      // bytes per data-area block
  std::uint64_t nblocks_ = 0;    // data-area blocks
  std::uint64_t words_ = 0;      // used[] words
  std::uint64_t sum_words_ = 0;  // nonfull[] / empty[] words
  std::uint64_t max_run_ = 0;    // blocks of the largest item
  std::uint64_t hashsize_ = 0;
  std::uint32_t keysize_ = 0;
  std::uint32_t shards_n_ = 0;
  std::uint32_t shard_mask_ = 0;
  std::uint32_t stash_cap_ = 0;  // per-shard stash size in use (<= kStashMax)
  bool purge_lru_ = false;
  bool no_expire_ = false;
  bool lastmod_ = false;
};

}  // namespace cache::detail
