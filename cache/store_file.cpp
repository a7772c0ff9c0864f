// --cache-store files: the region mapped from a file, its header and validation, the loader that
// rebuilds a cache from what a dead server left, syncing, and the checksums that detect torn writes.
// docs/persistence.md describes the format's guarantees.
#include <errno.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <stdexcept>
#include <utility>

#include "cache/shm_cache.hpp"

namespace cache::detail {

// ---- checksums (store files) ------------------------------------------------------------------------
//
// A 64-bit checksum for torn-write detection, not for security: xxHash64's round function over 8-byte
// words (the tail zero padded; lengths are part of what is summed, so padding cannot alias), finished
// with MurmurHash3's fmix64. ~1 byte per cycle, so sealing a 64-byte item costs a few tens of ns and
// verifying 1e6 items at load a few tens of ms. Our own code; the constants are the published primes.
constexpr std::uint64_t kSumP1 = 0x9E3779B185EBCA87ULL;
constexpr std::uint64_t kSumP2 = 0xC2B2AE3D27D4EB4FULL;
constexpr std::uint64_t kSumSeed = 0x7563616368657331ULL;  // "ucaches1"

namespace {

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

}  // namespace

namespace {
// What seals of every format version cover: the item's fields, key and value (versions 3 and 4's whole
// seal; format 3 has the ext link where 4 has `block`).
std::uint64_t seal_state(std::uint64_t stamp, std::uint32_t keylen, std::uint32_t vallen,
                         std::int64_t expires, std::uint32_t block, std::uint32_t hash, const char* key,
                         const char* value) {
  std::uint64_t h = sum_round(kSumSeed, stamp);
  h = sum_round(h, (static_cast<std::uint64_t>(keylen) << 32) | vallen);
  h = sum_round(h, static_cast<std::uint64_t>(expires));
  h = sum_round(h, (static_cast<std::uint64_t>(block) << 32) | hash);
  h = sum_bytes(h, key, keylen);
  return sum_bytes(h, value, vallen);
}
}  // namespace

std::uint64_t seal_sum(std::uint64_t stamp, std::uint32_t keylen, std::uint32_t vallen, std::int64_t expires,
                       std::uint32_t block, std::uint32_t hash, const char* key, const char* value,
                       std::uint64_t cas, std::uint32_t flags) {
  std::uint64_t h = seal_state(stamp, keylen, vallen, expires, block, hash, key, value);
  h = sum_round(h, cas);  // format version 5: memcached's metadata
  h = sum_round(h, flags);
  return sum_finish(h);
}

std::uint64_t seal_sum_v4(std::uint64_t stamp, std::uint32_t keylen, std::uint32_t vallen,
                          std::int64_t expires, std::uint32_t block, std::uint32_t hash, const char* key,
                          const char* value) {
  return sum_finish(seal_state(stamp, keylen, vallen, expires, block, hash, key, value));
}

std::uint64_t header_sum(const unsigned char* raw, std::uint32_t version) {
  std::uint64_t h = sum_bytes(kSumSeed, reinterpret_cast<const char*>(raw), kHeaderSummedBytes);
  h = sum_bytes(h, reinterpret_cast<const char*>(raw) + offsetof(RegionHeader, seals_offset), 8);
  if (version >= 4)
    h = sum_bytes(h, reinterpret_cast<const char*>(raw) + offsetof(RegionHeader, block_map),
                  sizeof(BlockMapGeometry));
  return sum_finish(h);
}

namespace {

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
  std::memcpy(&fh.map, raw + offsetof(RegionHeader, block_map), sizeof(BlockMapGeometry));
  std::memcpy(&fh.checksum, raw + offsetof(RegionHeader, header_checksum), 8);
  fh.computed_checksum = header_sum(raw, fh.version);
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
  if ((fh.version == kFormatVersionOneBlockPerItem || fh.version == kFormatVersionNoCas) &&
      file_size >= sizeof(RegionHeader) && fh.checksum == fh.computed_checksum && fh.total == file_size) {
    migrate_old_store(guard.release(), fh, file_size, plan);
    return;
  }
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
  cmp("bitmap", fh.map.bitmap_mode, plan.map.bitmap_mode);
  if (plan.map.bitmap_mode != 0) cmp("blocks", fh.map.blocks, plan.map.blocks);
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
    cmp("block map offset", fh.map.offset, plan.map.offset);
    cmp("data blocks", fh.map.blocks, plan.map.blocks);
    cmp("bytes per data block", fh.map.grain, plan.map.grain);
    cmp("largest value", fh.map.max_value, plan.map.max_value);
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
  it.block.store(kNil, std::memory_order_relaxed);
  it.nblocks.store(0, std::memory_order_relaxed);
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
// run (block, nblocks) lies inside the data area with the length its key and value need, does not
// overlap the run of an item already restored, and the checksum recomputed over its stamp, lengths,
// expiry, block, hash, key bytes and value bytes (the whole run) equals the seal. The seal is written after
// everything it covers, inside the same mutation, so an item whose write was interrupted (in place, or
// half-way through a new slot) cannot match and is dropped -- counted and logged, never served. An item
// merely deleted by an interrupted write (keylen already 0) is simply free.
//
// The index is then rebuilt: each intact item is appended to its bucket's chain (the hash is recomputed
// from the key bytes and must equal the stored one, which the seal covers). Two intact items with the
// same key cannot come from a process kill (an insert only allocates a new slot for a key it did not
// find), but can after a power loss (a delete's page never written while the re-insert's was): the
// item with the larger stamp -- the shard's seqlock value at its write, monotonic per shard, and a key
// always lives in one shard -- wins. The block map is rebuilt from the restored runs (format 4). Every slot
// not restored is made free and pushed on its pool's free stack, lowest on top; stashes start empty. Each
// shard's seq restarts above the largest stamp seen in it, so new writes always stamp newer. Expired
// items are restored like the others (never returned; the sweeper frees them), next_expiry recomputed.
// LRU timestamps (CLOCK_MONOTONIC, meaningless across a reboot) are rebased to keep their order.
//
// Cost: one sequential pass over the item table and seals, one checksum over each live item's bytes,
// one chain walk per item (chains average < 1 with the default hashsize): ~0.3 s for 1e6 items.

// What the passes hand on to each other.
struct ShmCache::LoadScan {
  struct Entry {
    std::uint32_t bucket, slot, hash;
  };
  std::vector<Entry> entries;            // intact primaries (pass 1), grouped by bucket (pass 2)
  std::vector<std::uint8_t> live;        // per primary slot: restored
  std::vector<std::uint64_t> max_stamp;  // per shard: the newest stamp seen
  std::uint64_t dropped = 0, duplicates = 0, restored = 0;
  std::uint64_t max_used = 0;  // the newest LRU timestamp seen
};

void ShmCache::load_store() {
  const auto t0 = monotonic_ns();
  reset_shared_state_for_load();
  LoadScan scan;
  scan_intact_items(scan);
  sort_by_bucket(scan);
  link_chains(scan);
  rebuild_ownership_and_free_stacks(scan);

  store_restored_ = scan.restored;
  store_dropped_ = scan.dropped;
  common::log("[uwsgi-cache] restored {} items", scan.restored);
  if (scan.dropped > 0)
    common::log("cache \"{}\": store {}: dropped {} damaged item(s) (torn write or corruption; never served)",
                geometry_.name, geometry_.store, scan.dropped);
  if (scan.duplicates > 0)
    common::log("cache \"{}\": store {}: {} older duplicate(s) of restored keys discarded", geometry_.name,
                geometry_.store, scan.duplicates);
  common::log("cache \"{}\": store loaded in {} ms", geometry_.name, (monotonic_ns() - t0) / 1000000);
}

// Every lock word, seqlock mark, count, stash, counter and chain head belongs to a dead process.
void ShmCache::reset_shared_state_for_load() {
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
  clear_block_map_alloc_locked(false);  // rebuilt from the intact items' runs
  for (std::uint32_t k = 0; k < kStripes; ++k) {
    CounterStripe& c = stripes_[k];
    for (auto* a : {&c.hits, &c.misses, &c.full, &c.evictions, &c.expirations, &c.lock_waits, &c.lookups,
                    &c.probes, &c.shard_recoveries, &c.owner, &c.full_fragmented})
      a->store(0, std::memory_order_relaxed);
  }
  for (std::uint64_t b = 0; b < hashsize_; ++b) heads_[b].store(kNil, std::memory_order_relaxed);
#ifdef MADV_POPULATE_READ
  // The scan reads the item table and seals sequentially: map them in one call, not a fault per page.
  madvise(base_ + hdr_->items_offset - hdr_->items_offset % kPage,
          hdr_->block_map.offset - (hdr_->items_offset - hdr_->items_offset % kPage), MADV_POPULATE_READ);
#endif
}

// Pass 1, sequential over the item table, seals and blocks: which items are intact, and their buckets.
void ShmCache::scan_intact_items(LoadScan& scan) {
  scan.entries.reserve(items_cap_);
  scan.live.assign(items_cap_, 0);
  scan.max_stamp.assign(shards_n_, 0);
  for (std::uint32_t i = 0; i < items_cap_; ++i) {
    Item& it = item(i);
    it.next.store(kNil, std::memory_order_relaxed);
    const std::uint32_t kl = it.keylen.load(std::memory_order_relaxed);
    if (kl == 0) continue;
    const std::uint32_t vl = it.vallen.load(std::memory_order_relaxed);
    const std::uint32_t run = it.block.load(std::memory_order_relaxed);
    const std::uint32_t n = it.nblocks.load(std::memory_order_relaxed);
    // vl may be 0: memcached stores empty values.
    bool ok = kl <= keysize_ && vl <= max_value_ && run < nblocks_ && n <= nblocks_ - run &&
              n == blocks_for(static_cast<std::uint64_t>(kl) + vl) && blocks_free_alloc_locked(run, n);
    const char* kp = ok ? block_ptr(run) : nullptr;
    const std::uint32_t h = it.hash.load(std::memory_order_relaxed);
    const std::uint64_t stamp = seals_[i].stamp;
    ok = ok &&
         seals_[i].sum == seal_sum(stamp, kl, vl, it.expires.load(std::memory_order_relaxed), run, h, kp,
                                   kp + kl, it.cas.load(std::memory_order_relaxed),
                                   it.flags.load(std::memory_order_relaxed)) &&
         key_hash(std::string_view(kp, kl)) == h;
    if (!ok) {
      ++scan.dropped;
      clear_slot_for_load(i);
      continue;
    }
    mark_blocks_alloc_locked(run, n, true);
    const std::uint32_t b = bucket_of(h);
    scan.max_stamp[shard_of_bucket(b)] = std::max(scan.max_stamp[shard_of_bucket(b)], stamp);
    scan.max_used = std::max<std::uint64_t>(scan.max_used, it.last_used_ns.load(std::memory_order_relaxed));
    scan.entries.push_back(LoadScan::Entry{b, i, h});
    scan.live[i] = 1;
  }
}

// Pass 2: group by bucket with a stable LSD radix sort (11 bits a pass), so that chains are built with
// sequential writes to heads[] and no dependent random reads; within a bucket, slot order is kept
// (what appending in slot order would give).
void ShmCache::sort_by_bucket(LoadScan& scan) {
  constexpr unsigned kRadixBits = 11;
  constexpr std::uint32_t kRadix = 1u << kRadixBits;
  auto& entries = scan.entries;
  std::vector<LoadScan::Entry> tmp(entries.size());
  std::vector<std::uint32_t> count(kRadix);
  for (unsigned shift = 0; shift < 32 && (hashsize_ - 1) >> shift != 0; shift += kRadixBits) {
    std::fill(count.begin(), count.end(), 0);
    for (const auto& e : entries) ++count[(e.bucket >> shift) & (kRadix - 1)];
    std::uint32_t sum = 0;
    for (auto& c : count) sum += std::exchange(c, sum);
    for (const auto& e : entries) tmp[count[(e.bucket >> shift) & (kRadix - 1)]++] = e;
    entries.swap(tmp);
  }
}

// Pass 3: link each bucket's group. Two intact copies of one key (only after a power loss) are in one
// group: the larger stamp wins.
void ShmCache::link_chains(LoadScan& scan) {
  const auto& entries = scan.entries;
  auto& live = scan.live;
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
        ++scan.duplicates;
        const std::uint32_t loser = seals_[x].stamp >= seals_[y].stamp ? y : x;
        live[loser] = 0;
        mark_blocks_alloc_locked(item(loser).block.load(std::memory_order_relaxed),
                                 item(loser).nblocks.load(std::memory_order_relaxed), false);
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
  scan.entries = std::vector<LoadScan::Entry>();
}

// Pass 4: ownership, counts, expiry bookkeeping and the free stacks (pushed highest first: lowest on
// top); each shard's seq restarts above its newest stamp.
void ShmCache::rebuild_ownership_and_free_stacks(LoadScan& scan) {
  const auto now_mono = static_cast<std::uint64_t>(monotonic_ns());
  const std::uint64_t max_used = scan.max_used;
  alloc_->top = 0;
  alloc_->ext_top = 0;
  for (std::uint32_t i = slots_; i-- > 0;) {
    Item& it = item(i);
    if (scan.live[i] == 0) {
      clear_slot_for_load(i);
      push_global_alloc_locked(i);
      continue;
    }
    const std::uint32_t s = shard_of_bucket(bucket_of(it.hash.load(std::memory_order_relaxed)));
    it.owner.store(static_cast<std::uint16_t>(s), std::memory_order_relaxed);
    it.kind.store(kPrimary, std::memory_order_relaxed);
    const std::uint64_t used = it.last_used_ns.load(std::memory_order_relaxed);
    it.last_used_ns.store(now_mono - std::min(now_mono, max_used - std::min(max_used, used)),
                          std::memory_order_relaxed);
    Shard& sh = shard(s);
    sh.items.store(sh.items.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    note_expiry_locked(s, it.expires.load(std::memory_order_relaxed));
    ++scan.restored;
  }
  for (std::uint32_t s = 0; s < shards_n_; ++s)
    shard(s).seq.store((scan.max_stamp[s] | 1) + 1, std::memory_order_relaxed);
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

}  // namespace cache::detail
