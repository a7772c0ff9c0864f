// The shared-memory cache engine's hot path: lookups, writes, deletes, chains, slot allocation and the
// locks. The other concerns live beside it (cache/shm_cache.hpp lists them); layout in cache/layout.hpp,
// design and figures in docs/cache.md.
#include <errno.h>

#include <algorithm>
#include <memory>
#include <mutex>
#include <utility>

#include "cache/shm_cache.hpp"

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
      return "value larger than the cache's largest value (blocksize, or blocksize x blocks with bitmap=1)";
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

std::unique_ptr<Cache> Cache::create(const Geometry& geometry) {
  return std::make_unique<detail::ShmCache>(geometry);
}

}  // namespace cache

namespace cache::detail {

// ---- locks (recovery.cpp repairs what a dead holder left) -------------------------------------------
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
  release_run_alloc_locked(slot);
  it.kind.store(kFree, std::memory_order_relaxed);
  it.owner.store(kNoOwner, std::memory_order_relaxed);
  free_[alloc_->top++] = slot;
}

// Takes a free slot, owned by shard s.
bool ShmCache::alloc_slot_locked(std::uint32_t s, std::uint32_t* out) {
  Shard& sh = shard(s);
  std::uint32_t n = sh.stash_count.load(std::memory_order_relaxed);
  if (n == 0) {
    lock_alloc();
    std::uint32_t take = std::min(alloc_->top, std::max<std::uint32_t>(1, (stash_cap_ + 1) / 2));
    if (take > 0) {
      alloc_->dirty.store(1, std::memory_order_relaxed);
      for (std::uint32_t k = 0; k < take; ++k) {
        std::uint32_t i = free_[alloc_->top - 1];
        item(i).owner.store(static_cast<std::uint16_t>(s), std::memory_order_relaxed);
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

// Frees slots of shard s: their runs go back to the block map (one allocator-lock hold), the slots to
// the shard's stash or, when it is full or park is false, to the global stack.
void ShmCache::free_slots_locked(std::uint32_t s, const std::uint32_t* slots, std::size_t n, bool park) {
  thread_local std::vector<std::uint32_t> to_global;
  to_global.clear();
  Shard& sh = shard(s);
  std::uint32_t cnt = sh.stash_count.load(std::memory_order_relaxed);
  std::uint32_t live = sh.items.load(std::memory_order_relaxed);
  bool runs = false;
  for (std::size_t k = 0; k < n; ++k) runs |= item(slots[k]).nblocks.load(std::memory_order_relaxed) != 0;
  if (runs) {
    lock_alloc();
    alloc_->dirty.store(1, std::memory_order_relaxed);
    for (std::size_t k = 0; k < n; ++k) release_run_alloc_locked(slots[k]);
    alloc_->dirty.store(0, std::memory_order_relaxed);
    unlock_alloc();
  }
  for (std::size_t k = 0; k < n; ++k) {
    std::uint32_t i = slots[k];
    if (item(i).kind.load(std::memory_order_relaxed) == kPrimary) --live;
    if (!park || stash_cap_ == 0) {
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

// Marks an unlinked item free-to-be (no key, no links) and adds its slot to a batch that the caller
// hands to free_slots_locked, as clear and the sweeper free many items per lock hold.
void ShmCache::retire_item_locked(std::uint32_t slot, std::vector<std::uint32_t>& batch) {
  Item& it = item(slot);
  batch.push_back(slot);
  it.keylen.store(0, std::memory_order_relaxed);
  it.next.store(kNil, std::memory_order_relaxed);
}

void ShmCache::free_item_locked(std::uint32_t s, std::uint32_t slot, bool park) {
  Item& it = item(slot);
  it.keylen.store(0, std::memory_order_relaxed);
  it.vallen.store(0, std::memory_order_relaxed);
  it.hash.store(0, std::memory_order_relaxed);
  it.next.store(kNil, std::memory_order_relaxed);
  free_slots_locked(s, &slot, 1, park);
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
  if (value.empty()) return;  // memcached's empty values: data() may be null, and memcpy must not see it
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
  (void)s;
  Item& it = item(i);
  const std::uint32_t n = blocks_for(key.size() + value.size());
  if (it.nblocks.load(std::memory_order_relaxed) != n) {
    lock_alloc();
    alloc_->dirty.store(1, std::memory_order_relaxed);
    const bool placed = assign_run_alloc_locked(i, n);
    alloc_->dirty.store(0, std::memory_order_relaxed);
    unlock_alloc();
    if (!placed) return false;
    key_in_place = false;  // the run moved (or is new)
  }
  char* run = block_ptr(it.block.load(std::memory_order_relaxed));
  if (!key_in_place) std::memcpy(run, key.data(), key.size());
  it.keylen.store(static_cast<std::uint32_t>(key.size()), std::memory_order_relaxed);
  copy_value_bytes(run + key.size(), value);
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

// Hit counting for reordering is sampled (kHitSample): this thread's tick.
thread_local std::uint32_t t_hit_tick = 0;

template <bool kCopy>
Status ShmCache::lookup(std::string_view key, ValueSink* sink, ItemMeta* meta, bool meta_sink) {
  if (Status st = check_key(key); st != Status::ok) return st;
  const std::uint32_t h = key_hash(key);
  const std::uint32_t b = bucket_of(h);
  const std::uint32_t s = shard_of_bucket(b);
  [[maybe_unused]] Shard& sh = shard(s);
  std::uint32_t found = kNil;
  std::int64_t expires = 0;
  ItemMeta seen;  // flags and cas, read only when asked for
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
        // The run: bounds-checked, as a racing writer may have changed it (the seq check discards).
        const std::uint64_t run = it.block.load(std::memory_order_relaxed);
        const std::uint64_t run_bytes = it.nblocks.load(std::memory_order_relaxed) * grain_;
        if (run >= nblocks_ || run_bytes > (nblocks_ - run) * grain_ || key.size() > run_bytes) {
          sane = false;
          break;
        }
        const char* kp = block_ptr(run);
        if (same_key(kp, key.data(), key.size())) {
          found = i;
          expires = it.expires.load(std::memory_order_relaxed);
          expired = expired_now(expires);  // one clock read per lookup, and only for items with an expiry
          if (kCopy && !expired) {
            std::uint64_t vlen = it.vallen.load(std::memory_order_relaxed);
            if (vlen > max_value_ || key.size() + vlen > run_bytes) {
              sane = false;
              break;
            }
            if (meta != nullptr || meta_sink) {
              seen.flags = it.flags.load(std::memory_order_relaxed);
              seen.cas = it.cas.load(std::memory_order_relaxed);
              seen.expires = expires;
            }
            char* dst =
                meta_sink ? static_cast<MetaValueSink*>(sink)->reserve_for(vlen, seen) : sink->reserve(vlen);
            if (dst == nullptr) return Status::out_of_memory;
            std::memcpy(dst, kp + key.size(), vlen);
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
        seen = meta_locked(found);
        char* dst =
            meta_sink ? static_cast<MetaValueSink*>(sink)->reserve_for(vlen, seen) : sink->reserve(vlen);
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
  if (meta != nullptr) {
    *meta = seen;
    meta->expires = expires;
  }
  return Status::ok;
}

Status ShmCache::get(std::string_view key, ValueSink& sink, std::int64_t* expires_at) {
  if (expires_at == nullptr) return lookup<true>(key, &sink, nullptr, false);
  ItemMeta meta;
  const Status status = lookup<true>(key, &sink, &meta, false);
  *expires_at = meta.expires;
  return status;
}

Status ShmCache::get_meta(std::string_view key, MetaValueSink* sink, ItemMeta* meta) {
  if (sink == nullptr) {  // metadata only: a sink that takes the value nowhere
    struct Discard final : MetaValueSink {
      std::string scratch;
      char* reserve_for(std::size_t size, const ItemMeta&) override {
        scratch.resize(size);
        return scratch.data();
      }
    } discard;
    return lookup<true>(key, &discard, meta, true);
  }
  return lookup<true>(key, sink, meta, true);
}

Status ShmCache::exists(std::string_view key) { return lookup<false>(key, nullptr, nullptr, false); }

// ---- writes -----------------------------------------------------------------------------------------

bool ShmCache::place_locked(std::uint32_t s, std::uint32_t b, std::uint32_t h, const Found& f, bool live,
                            std::string_view key, std::string_view value, std::int64_t expires,
                            std::uint32_t flags, std::uint32_t* placed, bool* fragmented) {
  // A failed write whose blocks would have added up: the free space is there, but not in one run.
  auto note_no_run = [&] {
    *fragmented |= bmh_->free_blocks.load(std::memory_order_relaxed) >= blocks_for(key.size() + value.size());
  };
  std::uint32_t slot = f.slot;
  if (slot != kNil) {
    // Overwrite in place (a live update or math, or reuse of an expired item's slot).
    if (!write_item_locked(s, slot, key, value, true)) {
      note_no_run();
      return false;
    }
    item(slot).expires.store(expires, std::memory_order_relaxed);
    if (!live) item(slot).hits.store(0, std::memory_order_relaxed);
  } else {
    if (!alloc_slot_locked(s, &slot)) return false;
    Item& it = item(slot);
    it.hash.store(h, std::memory_order_relaxed);
    it.next.store(kNil, std::memory_order_relaxed);
    it.hits.store(0, std::memory_order_relaxed);
    if (!write_item_locked(s, slot, key, value, false)) {
      it.keylen.store(0, std::memory_order_relaxed);
      free_slots_locked(s, &slot, 1);
      note_no_run();
      return false;
    }
    it.expires.store(expires, std::memory_order_relaxed);
    // Append at the chain tail, as uWSGI does (reorder_hot_items moves hot items forward).
    if (f.tail == kNil)
      heads_[b].store(slot, std::memory_order_relaxed);
    else
      item(f.tail).next.store(slot, std::memory_order_relaxed);
  }
  if (*fragmented) counters().add(&CounterStripe::full_fragmented, 1);
  *fragmented = false;  // counted once, here or by the caller when every attempt failed
  item(slot).flags.store(flags, std::memory_order_relaxed);
  item(slot).cas.store(next_cas_locked(s), std::memory_order_relaxed);
  seal_locked(s, slot, key, value);
  if (purge_lru_)  // recency matters only to the LRU victim choice
    item(slot).last_used_ns.store(static_cast<std::uint64_t>(monotonic_ns()), std::memory_order_relaxed);
  note_expiry_locked(s, expires);
  *placed = slot;
  return true;
}

Status ShmCache::put(Mode mode, std::string_view key, std::string_view value, std::int64_t expires_in,
                     MathOp op, std::int64_t operand, std::int64_t* result) {
  if (Status st = check_key(key); st != Status::ok) return st;
  if (mode != Mode::math) {
    if (value.empty()) return Status::value_empty;
    if (value.size() > max_value_) return Status::value_too_large;
  } else if (max_value_ < 8) {
    return Status::value_too_large;
  }
  const std::uint32_t h = key_hash(key);
  const std::uint32_t b = bucket_of(h);
  const std::uint32_t s = shard_of_bucket(b);
  char number[8];

  bool fragmented = false;  // an attempt found no run though the free blocks added up to enough
  for (int attempt = 0; attempt < write_attempts(); ++attempt) {
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
      std::uint32_t slot = kNil;
      if (place_locked(s, b, h, f, live, key, value, expires, 0, &slot, &fragmented)) {
        if (f.slot != kNil && !live) counters().add(&CounterStripe::expirations, 1);
        note_modified();
        return Status::ok;
      }
    }
    if (!handle_full()) break;
  }
  if (fragmented) counters().add(&CounterStripe::full_fragmented, 1);
  return Status::full;
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

}  // namespace cache::detail
