// Background jobs, run by the master (expiry sweep, hot-item reorder), and what a write does when it
// finds the cache full (drain the stashes, reclaim expired items, or evict the least recently used).
#include <algorithm>
#include <utility>

#include "cache/shm_cache.hpp"

namespace cache::detail {

namespace {

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

}  // namespace

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

}  // namespace cache::detail
