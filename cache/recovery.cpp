// Crash recovery: what the next locker repairs after a process died holding a lock (the lock protocol
// itself is at the top of cache.cpp's locks section).
#include "cache/shm_cache.hpp"

namespace cache::detail {

void ShmCache::rebuild_free_stack_alloc_locked() {
  rebuild_block_map_alloc_locked();  // first: free slots lose any run they seemed to hold
  alloc_->top = 0;
  alloc_->ext_top = 0;
  for (std::uint32_t i = slots_; i-- > 0;)
    if (item(i).kind.load(std::memory_order_relaxed) == kFree) push_global_alloc_locked(i);
  std::uint32_t top = alloc_->top + alloc_->ext_top;
  alloc_->dirty.store(0, std::memory_order_relaxed);
  common::log(
      "cache \"{}\": allocator rebuilt after a process died holding it ({} free slots, {} free blocks)",
      geometry_.name, top, bmh_->free_blocks.load(std::memory_order_relaxed));
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
    it.next.store(kNil, std::memory_order_relaxed);
    push_global_alloc_locked(i);  // with its run, if it has one (even one whose bytes were half written)
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

}  // namespace cache::detail
