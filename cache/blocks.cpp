// The data area's block map: which blocks are in use, the free index that finds a run of n free blocks
// without scanning the whole bitmap, and rebuilding all of it from the item table (layout.hpp "Block
// map"; design in docs/cache.md 1b). Everything here runs with the allocator lock held, except the plan
// and the initialisation of a region nobody else maps yet.
//
// Finding a run (first fit with per-size-class lower bounds). A request for n blocks belongs to class
// c = floor(log2 n). hint[c] is a used[] word before which no free run of 2^c blocks or more starts, so
// the search starts there. It walks free runs, not bits: next_free_block skips whole used words through
// the `nonfull` summary (4 096 blocks per summary word), next_used_block skips whole free words through
// `empty`, and it stops measuring a run once it is long enough. The first run of >= n blocks is taken;
// hint[c] moves to the first run of >= 2^c blocks the walk saw (a shorter-than-n one may serve a later
// request of the same class). A failed search sets hint[c] past the end, so a full cache answers the
// next request of that class at once. Freeing blocks may create a run of any class at the start of the
// coalesced free run: that start is found by a backward walk (bounded by the largest possible request,
// max_run_: a run that was already longer served every class) and every class the run now serves gets
// its hint lowered there.
#include <bit>

#include "cache/shm_cache.hpp"

namespace cache::detail {

namespace {
constexpr std::uint64_t kAllOnes = ~0ULL;
// Bits [from, 64) of a word.
inline std::uint64_t bits_from(std::uint64_t from) { return from >= 64 ? 0 : kAllOnes << from; }
// Bits [0, below) of a word.
inline std::uint64_t bits_below(std::uint64_t below) { return below >= 64 ? kAllOnes : (1ULL << below) - 1; }
}  // namespace

void ShmCache::plan_block_map(Plan& plan, std::uint64_t& off) {
  words_ = (nblocks_ + 63) / 64;
  sum_words_ = (words_ + 63) / 64;
  off = align_up(off, kCacheLine);
  plan.map = BlockMapGeometry{off, nblocks_, grain_, max_value_, max_run_, geometry_.bitmap ? 1u : 0u, 0};
  off += sizeof(BlockMapHeader) + 8 * (words_ + 2 * sum_words_);
}

// A fresh region is zero filled: only the padding and the summaries need writing. (Reading the whole
// bitmap would allocate its pages: for shared memory a read fault allocates too.)
void ShmCache::init_block_map() { clear_block_map_alloc_locked(true); }

// Every block free. The bitmap's pages are given back (MADV_REMOVE punches them out of the shared memory
// or the store file, which then reads as zeros) rather than written, so an idle cache's bitmap costs no
// memory; the summaries are small and written.
void ShmCache::clear_block_map_alloc_locked(bool known_zero) {
  if (!known_zero) {
    char* begin = reinterpret_cast<char*>(used_);
    char* end = reinterpret_cast<char*>(used_ + words_);
    char* page_begin = reinterpret_cast<char*>(align_up(reinterpret_cast<std::uintptr_t>(begin), kPage));
    char* page_end = reinterpret_cast<char*>(reinterpret_cast<std::uintptr_t>(end) / kPage * kPage);
    if (page_end > page_begin &&
        madvise(page_begin, static_cast<std::size_t>(page_end - page_begin), MADV_REMOVE) == 0) {
      std::memset(begin, 0, static_cast<std::size_t>(page_begin - begin));
      std::memset(page_end, 0, static_cast<std::size_t>(end - page_end));
    } else {
      for (std::uint64_t w = 0; w < words_; ++w)
        if (used_[w] != 0) used_[w] = 0;
    }
  }
  if (nblocks_ % 64 != 0) used_[words_ - 1] = bits_from(nblocks_ % 64);  // past the end: never free
  for (std::uint64_t k = 0; k < sum_words_; ++k) {
    const std::uint64_t valid = bits_below(words_ - k * 64);
    nonfull_[k] = valid;
    empty_[k] = valid;
  }
  if (nblocks_ % 64 != 0) empty_[(words_ - 1) / 64] &= ~(1ULL << ((words_ - 1) % 64));
  for (auto& h : bmh_->hint) h = 0;
  bmh_->free_blocks.store(nblocks_, std::memory_order_relaxed);
}

// First free block at or after p, or nblocks_.
std::uint64_t ShmCache::next_free_block(std::uint64_t p) const {
  if (p >= nblocks_) return nblocks_;
  std::uint64_t w = p / 64;
  std::uint64_t bits = ~used_[w] & bits_from(p % 64);
  if (bits != 0) return w * 64 + static_cast<std::uint64_t>(std::countr_zero(bits));
  if (++w >= words_) return nblocks_;
  std::uint64_t k = w / 64;
  std::uint64_t sbits = nonfull_[k] & bits_from(w % 64);
  while (sbits == 0) {
    if (++k >= sum_words_) return nblocks_;
    sbits = nonfull_[k];
  }
  w = k * 64 + static_cast<std::uint64_t>(std::countr_zero(sbits));
  if (w >= words_) return nblocks_;
  return std::min(nblocks_, w * 64 + static_cast<std::uint64_t>(std::countr_zero(~used_[w])));
}

// First used block at or after p (the end of the free run p is in), or `limit` if there is none below it.
std::uint64_t ShmCache::next_used_block(std::uint64_t p, std::uint64_t limit) const {
  limit = std::min(limit, nblocks_);
  if (p >= limit) return limit;
  std::uint64_t w = p / 64;
  std::uint64_t bits = used_[w] & bits_from(p % 64);
  if (bits != 0) return std::min(limit, w * 64 + static_cast<std::uint64_t>(std::countr_zero(bits)));
  if (++w >= words_ || w * 64 >= limit) return limit;
  std::uint64_t k = w / 64;
  std::uint64_t sbits = ~empty_[k] & bits_from(w % 64);
  while (sbits == 0) {
    if (++k >= sum_words_ || k * 64 * 64 >= limit) return limit;
    sbits = ~empty_[k];
  }
  w = k * 64 + static_cast<std::uint64_t>(std::countr_zero(sbits));
  if (w >= words_) return limit;
  return std::min(limit, w * 64 + static_cast<std::uint64_t>(std::countr_zero(used_[w])));
}

// Start of the free run that ends just before p (p itself if block p - 1 is used), looking back no
// further than `floor` (returned when the run reaches it).
std::uint64_t ShmCache::free_run_start(std::uint64_t p, std::uint64_t floor) const {
  if (p <= floor) return floor;
  std::uint64_t w = p / 64;
  std::uint64_t bits = w < words_ ? used_[w] & bits_below(p % 64) : 0;
  if (bits != 0) return std::max(floor, w * 64 + 64 - static_cast<std::uint64_t>(std::countl_zero(bits)));
  while (w > 0 && (w - 1) * 64 + 63 >= floor) {
    --w;
    const std::uint64_t k = w / 64;
    const std::uint64_t sbits = ~empty_[k] & bits_below(w % 64 + 1);
    if (sbits == 0) {  // no used block in words [k*64, w]
      if (k == 0) return floor;
      w = k * 64;
      continue;
    }
    w = k * 64 + 63 - static_cast<std::uint64_t>(std::countl_zero(sbits));
    return std::max(floor, w * 64 + 64 - static_cast<std::uint64_t>(std::countl_zero(used_[w])));
  }
  return floor;
}

void ShmCache::mark_blocks_alloc_locked(std::uint64_t start, std::uint64_t n, bool used) {
  std::uint64_t p = start;
  const std::uint64_t end = start + n;
  while (p < end) {
    const std::uint64_t w = p / 64;
    const std::uint64_t hi = std::min(end, w * 64 + 64);
    const std::uint64_t mask = bits_from(p % 64) & bits_below(hi - w * 64);
    std::uint64_t v = used ? (used_[w] | mask) : (used_[w] & ~mask);
    used_[w] = v;
    const std::uint64_t bit = 1ULL << (w % 64);
    if (v != kAllOnes)
      nonfull_[w / 64] |= bit;
    else
      nonfull_[w / 64] &= ~bit;
    if (v == 0)
      empty_[w / 64] |= bit;
    else
      empty_[w / 64] &= ~bit;
    p = hi;
  }
  const std::uint64_t free_now = bmh_->free_blocks.load(std::memory_order_relaxed);
  bmh_->free_blocks.store(used ? free_now - n : free_now + n, std::memory_order_relaxed);
}

bool ShmCache::blocks_free_alloc_locked(std::uint64_t start, std::uint64_t n) const {
  return next_used_block(start, start + n) == start + n;
}

bool ShmCache::find_run_alloc_locked(std::uint32_t n, std::uint64_t* start) {
  const unsigned c = static_cast<unsigned>(std::bit_width(n) - 1);
  const std::uint64_t class_min = 1ULL << c;
  std::uint64_t candidate = UINT64_MAX;  // word of the first run of >= 2^c blocks seen
  for (std::uint64_t p = bmh_->hint[c] * 64;;) {
    const std::uint64_t a = next_free_block(p);
    if (a >= nblocks_) break;
    const std::uint64_t z = next_used_block(a, a + n);
    if (z - a >= class_min && candidate == UINT64_MAX) candidate = a / 64;
    if (z - a >= n) {
      bmh_->hint[c] = candidate;
      *start = a;
      return true;
    }
    p = z;
  }
  bmh_->hint[c] = candidate != UINT64_MAX ? candidate : words_;
  return false;
}

void ShmCache::lower_hints_after_free_alloc_locked(std::uint64_t start, std::uint64_t n) {
  // A free run already max_run_ long before `start` served every class: nothing to lower.
  const std::uint64_t floor = start > max_run_ ? start - max_run_ : 0;
  const std::uint64_t rs = free_run_start(start, floor);
  if (rs == floor && floor > 0) return;
  const std::uint64_t len = next_used_block(start + n, rs + max_run_) - rs;
  const std::uint64_t word = rs / 64;
  for (unsigned c = 0; c < kSizeClasses && (1ULL << c) <= len; ++c)
    bmh_->hint[c] = std::min(bmh_->hint[c], word);
}

bool ShmCache::assign_run_alloc_locked(std::uint32_t i, std::uint32_t n) {
  Item& it = item(i);
  const std::uint32_t old_block = it.block.load(std::memory_order_relaxed);
  const std::uint32_t old_n = it.nblocks.load(std::memory_order_relaxed);
  if (old_n > 0) {  // reusable by the new run, with the free blocks around it
    mark_blocks_alloc_locked(old_block, old_n, false);
    lower_hints_after_free_alloc_locked(old_block, old_n);
  }
  std::uint64_t start = 0;
  if (!find_run_alloc_locked(n, &start)) {
    if (old_n > 0) mark_blocks_alloc_locked(old_block, old_n, true);  // nobody took it: we hold the lock
    return false;
  }
  mark_blocks_alloc_locked(start, n, true);
  it.block.store(static_cast<std::uint32_t>(start), std::memory_order_relaxed);
  it.nblocks.store(n, std::memory_order_relaxed);
  return true;
}

void ShmCache::release_run_alloc_locked(std::uint32_t i) {
  Item& it = item(i);
  const std::uint32_t n = it.nblocks.load(std::memory_order_relaxed);
  if (n == 0) return;
  const std::uint32_t b = it.block.load(std::memory_order_relaxed);
  mark_blocks_alloc_locked(b, n, false);
  lower_hints_after_free_alloc_locked(b, n);
  it.nblocks.store(0, std::memory_order_relaxed);
  it.block.store(kNil, std::memory_order_relaxed);
}

// After a process died holding the allocator lock mid-change: the runs recorded in the non-free items
// are the truth. A run out of bounds or overlapping one already placed (only if memory was damaged) is
// taken from its item, which then never matches a key (keylen 0) until its shard frees it.
void ShmCache::rebuild_block_map_alloc_locked() {
  clear_block_map_alloc_locked(false);
  for (std::uint32_t i = 0; i < slots_; ++i) {
    Item& it = item(i);
    const std::uint32_t n = it.nblocks.load(std::memory_order_relaxed);
    if (n == 0) continue;
    const std::uint32_t b = it.block.load(std::memory_order_relaxed);
    if (it.kind.load(std::memory_order_relaxed) != kFree && b < nblocks_ && n <= nblocks_ - b &&
        blocks_free_alloc_locked(b, n)) {
      mark_blocks_alloc_locked(b, n, true);
      continue;
    }
    it.nblocks.store(0, std::memory_order_relaxed);
    it.block.store(kNil, std::memory_order_relaxed);
    if (it.kind.load(std::memory_order_relaxed) != kFree) it.keylen.store(0, std::memory_order_relaxed);
  }
  for (auto& h : bmh_->hint) h = 0;
}

// The last used block (0 if none): where prefault stops.
std::uint64_t ShmCache::highest_used_block() const {
  for (std::uint64_t k = sum_words_; k-- > 0;) {
    std::uint64_t sbits = ~empty_[k] & bits_below(words_ - k * 64);
    while (sbits != 0) {
      const std::uint64_t w = k * 64 + 63 - static_cast<std::uint64_t>(std::countl_zero(sbits));
      std::uint64_t bits = used_[w];
      if (w == words_ - 1 && nblocks_ % 64 != 0) bits &= bits_below(nblocks_ % 64);
      if (bits != 0) return w * 64 + 63 - static_cast<std::uint64_t>(std::countl_zero(bits));
      sbits &= ~(1ULL << (w % 64));
    }
  }
  return 0;
}

}  // namespace cache::detail
