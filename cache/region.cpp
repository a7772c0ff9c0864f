// A cache's region: where every area goes (the plan, from the geometry alone), mapping it (anonymous
// shared memory, or a store file through store_file.cpp) and making a zero-filled region an empty cache.
#include <errno.h>
#include <sys/mman.h>

#include <algorithm>
#include <stdexcept>

#include "cache/shm_cache.hpp"

namespace cache::detail {

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
void ShmCache::map_and_init() {
  const Geometry& g = geometry_;
  if (g.items == 0) throw std::runtime_error("cache \"" + g.name + "\": items must be at least 1");
  if (g.blocksize == 0) throw std::runtime_error("cache \"" + g.name + "\": blocksize must be at least 1");
  if (g.keysize == 0) throw std::runtime_error("cache \"" + g.name + "\": keysize must be at least 1");
  if (g.blocksize > (1ULL << 31)) throw std::runtime_error("cache \"" + g.name + "\": blocksize too large");

  items_cap_ = g.items;
  blocksize_ = g.blocksize;
  keysize_ = g.keysize;
  // The data area (docs/cache.md 1b): without bitmap mode 64-byte blocks and room for
  // kAreaItemsFactor * items - 1 largest items (so `items` of them always fit); with it uWSGI's
  // `blocks` blocks of `blocksize`, plus room for the keys (uWSGI keeps keys in its item table).
  max_value_ = largest_value(g);
  if (g.bitmap && max_value_ > kMaxValue)
    throw std::runtime_error(fmt::format(
        "cache \"{}\": bitmap mode: blocksize {} x blocks {} = {} bytes, over the largest value this server "
        "stores ({} bytes); lower blocks or blocksize",
        g.name, g.blocksize, g.blocks != 0 ? g.blocks : g.items, max_value_, kMaxValue));
  if (g.bitmap && g.blocks != 0 && g.blocks < g.items)
    throw std::runtime_error(
        fmt::format("cache \"{}\": blocks ({}) must be at least items ({})", g.name, g.blocks, g.items));
  std::uint64_t area_blocks = 0;
  if (g.bitmap) {
    grain_ = g.blocksize;
    area_blocks = (g.blocks != 0 ? g.blocks : g.items) + g.items * ((g.keysize + grain_ - 1) / grain_);
  } else {
    grain_ = kSmallGrain;
    for (;;) {
      const std::uint64_t run = (g.keysize + g.blocksize + grain_ - 1) / grain_;
      area_blocks = (kAreaItemsFactor * g.items - 1) * run;
      if (area_blocks < kNil) break;
      grain_ *= 2;
    }
  }
  if (area_blocks >= kNil)
    throw std::runtime_error(
        fmt::format("cache \"{}\": {} data blocks, over the limit of {}", g.name, area_blocks, kNil - 1));
  nblocks_ = area_blocks;
  max_run_ = (g.keysize + max_value_ + grain_ - 1) / grain_;
  std::uint64_t slots = g.items;
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
  plan_block_map(plan, off);
  off = align_up(off, kPage);
  plan.blocks_off = off;
  off = align_up(off + grain_ * nblocks_, kPage);
  plan.total = off;
  // Flags are informational (they do not change the layout, so a store file does not pin them).
  plan.geo = RegionGeometry{
      g.items,   slots,     g.blocksize,
      grain_,    hashsize_, g.keysize,
      shards_n_, kStripes,  (g.purge_lru ? kFlagPurgeLru : 0u) | (g.no_expire ? kFlagNoExpire : 0u),
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
  data_ = base_ + plan.blocks_off;
  bmh_ = reinterpret_cast<BlockMapHeader*>(base_ + plan.map.offset);
  used_ = reinterpret_cast<std::uint64_t*>(bmh_ + 1);
  nonfull_ = used_ + words_;
  empty_ = nonfull_ + sum_words_;
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
  hdr_->block_map = plan.map;
  if (seals_ != nullptr) hdr_->header_checksum = header_sum(reinterpret_cast<const unsigned char*>(base_));
  for (std::uint32_t s = 0; s < shards_n_; ++s) init_robust_mutex(&shards_[s].mutex);
  init_robust_mutex(&alloc_->mutex);
  for (std::uint64_t b = 0; b < hashsize_; ++b) heads_[b].store(kNil, std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < slots_; ++i) {
    item(i).next.store(kNil, std::memory_order_relaxed);
    item(i).block.store(kNil, std::memory_order_relaxed);
    item(i).owner.store(kNoOwner, std::memory_order_relaxed);
  }
  // Lowest slot on top of the stack: the first insert takes slot 0.
  const auto items32 = static_cast<std::uint32_t>(items_cap_);
  for (std::uint32_t k = 0; k < items32; ++k) free_[k] = items32 - 1 - k;
  alloc_->top = items32;
  alloc_->ext_top = 0;
  init_block_map();
}

// Every page up to the data area, and the data area as far as runs reach (the rest of it is address
// space that may never be used: touching it would allocate memory for nothing).
void ShmCache::prefault() {
  const std::uint64_t data_off = static_cast<std::uint64_t>(data_ - base_);
  const std::uint64_t end =
      std::min<std::uint64_t>(size_, align_up(data_off + (highest_used_block() + 1) * grain_, kPage));
#ifdef MADV_POPULATE_READ
  if (madvise(base_, end, MADV_POPULATE_READ) == 0) return;
#endif
  volatile const char* p = base_;  // older kernels: touch one byte per page
  for (std::size_t off = 0; off < end; off += kPage) (void)p[off];
}

}  // namespace cache::detail
