// The shared-memory layout of one cache: every struct that lives in the region is declared here and
// nowhere else. The region is position independent: it holds offsets and slot indices, never pointers,
// so it can be mapped at any address, and from a --cache-store file (docs/persistence.md).
//
//   offset 0            RegionHeader      magic, version, geometry, offsets of every area (4 KiB)
//   shards_offset       Shard[shards]     robust mutex, seqlock ("mutation in progress"), item count, stash
//   stripes_offset      CounterStripe[k]  statistics, striped by process/thread to avoid shared lines
//   alloc_offset        AllocState        robust mutex guarding the free-slot stack and the item count
//   heads_offset        u32[hashsize]     bucket -> first slot of its chain (kNil = empty)
//   free_offset         u32[slots]        free-slot stacks: primary pool, then ext pool (alloc lock)
//   items_offset        Item[slots]       64-byte item headers
//   seals_offset        ItemSeal[slots]   store only: checksum + stamp per item (torn-write detection)
//   block_map.offset    BlockMapHeader, then the bitmaps of the data area (format 4; see below)
//   blocks_offset       block_map.blocks x block_map.grain  the data area: each item's key and value in
//                       one run of consecutive blocks (page aligned)
//
// Bucket b belongs to shard (b & (shards - 1)); the shard's mutex guards the chains of its buckets and
// every field of the items linked in them. A slot's `owner` and `kind` change under the alloc lock
// when the slot enters or leaves a global free stack, and under the owning shard's lock otherwise
// (kStashed <-> kPrimary/kKeyExt); kFree is only ever set or cleared under the alloc lock.
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace cache::layout {

inline constexpr std::uint64_t kMagic = 0x3165686361637575ULL;  // "uucache1" little-endian
// 2: RegionHeader gained seals_offset and header_checksum (store files). A store file written by another
// format version is refused at load (docs/persistence.md).
// 3: the key hash and the bucket mapping changed (key_hash, multiply-shift); CounterStripe gained owner.
// 4: values in runs of blocks (issue 14; see "Block map" below): Item::ext became Item::block, Item
//    gained nblocks (owner and kind narrowed to 16 bits), RegionHeader gained block_map (checksummed),
//    no key-extension pool.
// 5: Item gained memcached's cas and flags (64-byte items); the seal covers them.
// Version 3 and 4 files are migrated at load (store_migrate.cpp: migrate_old_store).
inline constexpr std::uint32_t kFormatVersion = 5;
inline constexpr std::uint32_t kFormatVersionOneBlockPerItem = 3;  // the formats migrate_old_store reads
inline constexpr std::uint32_t kFormatVersionNoCas = 4;
inline constexpr std::uint32_t kNil = 0xFFFFFFFFu;  // "no slot" in chains, heads and ext links
inline constexpr std::uint16_t kNoOwner = 0xFFFFu;
inline constexpr std::size_t kCacheLine = 64;
inline constexpr std::size_t kPage = 4096;

static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "shared atomics must be lock free");
static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "shared atomics must be lock free");
static_assert(std::atomic<std::int64_t>::is_always_lock_free, "shared atomics must be lock free");
static_assert(std::atomic<std::uint16_t>::is_always_lock_free, "shared atomics must be lock free");

// What a slot holds (Item::kind; see the top of this file for which lock guards it).
enum SlotKind : std::uint32_t {
  kFree = 0,
  kPrimary = 1,         // a live item: linked in a chain of shard `owner`
  kUnusedV3KeyExt = 2,  // format 3's key-extension slots; format 4 has none (keys live in the run)
  kStashed = 3,         // free, parked in shard `owner`'s stash (shard lock); not on the global stack
};

// Slots [0, items): one pool, one free stack (format 3 also had a key-extension pool after it).
inline constexpr std::uint32_t kStashMax = 14;

// Geometry as laid out (derived from cache::Geometry at creation, never changes afterwards).
struct RegionGeometry {
  std::uint64_t items;       // usable items
  std::uint64_t slots;       // = items (format 3: items + key-extension reserve)
  std::uint64_t blocksize;   // the configured blocksize (largest value without bitmap mode)
  std::uint64_t block_size;  // format 4: bytes per data-area block (= BlockMapGeometry::grain)
  std::uint64_t hashsize;    // buckets
  std::uint32_t keysize;     // largest key
  std::uint32_t shards;      // power of two
  std::uint32_t stripes;     // counter stripes, power of two
  std::uint32_t flags;       // kFlag* below
  std::uint64_t reserved;
};
static_assert(sizeof(RegionGeometry) == 64);

// ==== Block map (format 4, issue 14) =================================================================
// The data area is `blocks` blocks of `grain` bytes. An item's key and value sit together in one run of
// consecutive blocks: Item::block (first) and Item::nblocks (= ceil((keylen + vallen) / grain) for a live
// item). The bitmap area at `offset` holds a BlockMapHeader, then three bitmaps (u64 words):
//   used[words]        bit per block, 1 = in use (bits past `blocks` are set, so never free)
//   nonfull[sum_words] bit per used[] word: it has a free block
//   empty[sum_words]   bit per used[] word: all its blocks are free
// All of it is guarded by the allocator lock and derived: the bitmap is exactly the union of the runs of
// the non-free items (a run is recorded in its item in the same allocator-lock hold that sets its bits),
// so recovery and the store load rebuild it from the item table. docs/cache.md "1b" has the design.
struct BlockMapGeometry {
  std::uint64_t offset;     // of the BlockMapHeader
  std::uint64_t blocks;     // data-area blocks (< 2^32: Item::block is 32 bits)
  std::uint64_t grain;      // bytes per block: kSmallGrain without bitmap mode, blocksize with it
  std::uint64_t max_value;  // largest value: blocksize, or blocksize x blocks in bitmap mode
  std::uint64_t max_run;    // blocks of the largest item (keysize + max_value)
  std::uint32_t bitmap_mode;
  std::uint32_t reserved;
};
static_assert(sizeof(BlockMapGeometry) == 48);
inline constexpr std::uint32_t kSizeClasses = 32;  // run lengths 2^c .. 2^(c+1)-1 blocks, c < 32
struct alignas(kCacheLine) BlockMapHeader {
  // alloc lock: hint[c] = a used[] word index before which no free run of 2^c blocks or more starts.
  std::uint64_t hint[kSizeClasses];
  std::atomic<std::uint64_t> free_blocks;  // alloc lock to change, relaxed to read (stats)
  std::uint8_t pad[kCacheLine - 8];
};
static_assert(sizeof(BlockMapHeader) == 5 * kCacheLine);
// ==== end of the block map ============================================================================

inline constexpr std::uint32_t kFlagPurgeLru = 1;
inline constexpr std::uint32_t kFlagNoExpire = 2;

struct RegionHeader {
  std::uint64_t magic;
  std::uint32_t version;
  std::uint32_t header_size;
  std::uint64_t total_size;
  std::uint64_t shards_offset;
  std::uint64_t stripes_offset;
  std::uint64_t alloc_offset;
  std::uint64_t heads_offset;
  std::uint64_t free_offset;
  std::uint64_t items_offset;
  std::uint64_t blocks_offset;
  RegionGeometry geometry;
  std::atomic<std::uint32_t> sweep_shard_cursor;    // reserved for a time-budgeted sweep (unused)
  std::atomic<std::uint32_t> reorder_shard_cursor;  // reserved (unused)
  // Store files only (0 in an anonymous region): offset of ItemSeal[slots].
  std::uint64_t seals_offset;
  // Store files only: checksum of bytes [0, kHeaderSummedBytes) and of seals_offset. Written once when
  // the file is created; the header never changes afterwards, so a mismatch means damage.
  std::uint64_t header_checksum;
  // lastmod caches only: unix seconds of the last set/update/math/del/clear (0 = none yet). Changes at
  // run time, so outside the checksummed prefix; a store keeps it across restarts.
  std::atomic<std::int64_t> last_modified_at;
  BlockMapGeometry block_map;  // format 4; covered by header_checksum
  std::uint8_t reserved[kPage - 176 - sizeof(BlockMapGeometry)];
};
// The immutable prefix of the header covered by header_checksum (everything before the cursors).
inline constexpr std::size_t kHeaderSummedBytes = 144;
static_assert(sizeof(RegionHeader) == kPage);
static_assert(offsetof(RegionHeader, geometry) == 80);
static_assert(offsetof(RegionHeader, sweep_shard_cursor) == kHeaderSummedBytes);
static_assert(offsetof(RegionHeader, seals_offset) == 152);
static_assert(offsetof(RegionHeader, header_checksum) == 160);
static_assert(offsetof(RegionHeader, last_modified_at) == 168);
static_assert(offsetof(RegionHeader, block_map) == 176);

// One shard: the mutex on its own cache line so optimistic readers (which only read `seq`) do not
// share a line with lockers.
struct alignas(kCacheLine) Shard {
  pthread_mutex_t mutex;  // robust, process shared, no priority inheritance
  std::uint8_t pad0[kCacheLine - sizeof(pthread_mutex_t)];
  // Seqlock sequence (mutex): odd while a mutation is in progress. Odd also means "mutation in
  // progress" for crash recovery: a holder that died with seq odd left the shard possibly torn.
  std::atomic<std::uint64_t> seq;
  // mutex to change, relaxed to peek: earliest expiry of an item of the shard (0 = none known).
  std::atomic<std::int64_t> next_expiry;
  std::uint8_t pad1[kCacheLine - 16];
  // Line 2, writers only. mutex to change, relaxed to read: live items of the shard (count() sums them).
  std::atomic<std::uint32_t> items;
  // mutex to change, relaxed to peek: free primary-pool slots parked here (kStashed), so most inserts
  // and deletes do not take the allocator lock.
  std::atomic<std::uint32_t> stash_count;
  std::uint32_t stash[kStashMax];  // mutex
};
static_assert(sizeof(pthread_mutex_t) <= kCacheLine);
static_assert(sizeof(Shard) == 3 * kCacheLine);
static_assert(offsetof(Shard, seq) == kCacheLine);
static_assert(offsetof(Shard, items) == 2 * kCacheLine);

// Statistics: stats() sums the stripes. Stripe 0 is shared: whoever uses it adds atomically. Every other
// stripe has at most one owner thread, which adds with plain relaxed loads and stores (a locked add
// drains the store buffer: several ns on every hit). owner = pid << 32 | tid, 0 = free; a thread claims a
// stripe with a CAS from 0, or from an owner whose thread no longer exists.
struct alignas(kCacheLine) CounterStripe {
  std::atomic<std::uint64_t> hits;
  std::atomic<std::uint64_t> misses;
  std::atomic<std::uint64_t> full;
  std::atomic<std::uint64_t> evictions;
  std::atomic<std::uint64_t> expirations;
  std::atomic<std::uint64_t> lock_waits;
  std::atomic<std::uint64_t> lookups;
  std::atomic<std::uint64_t> probes;
  std::atomic<std::uint64_t> shard_recoveries;
  std::atomic<std::uint64_t> owner;
  std::atomic<std::uint64_t> full_fragmented;  // writes that found no run though enough blocks were free
  std::uint8_t pad[2 * kCacheLine - 88];
};
static_assert(sizeof(CounterStripe) == 2 * kCacheLine);
static_assert(offsetof(CounterStripe, owner) == 72);

// The global free stack: free_[0, top) holds free slots. The same lock guards the block map.
struct alignas(kCacheLine) AllocState {
  pthread_mutex_t mutex;  // robust, process shared
  std::uint8_t pad0[kCacheLine - sizeof(pthread_mutex_t)];
  std::atomic<std::uint32_t> dirty;  // mutex: 1 while a stack is being changed
  std::uint32_t top;                 // mutex: entries in the primary free stack
  std::uint32_t ext_top;             // format 3 only (key-extension pool); 0 in format 4
  std::uint8_t pad1[kCacheLine - 12];
};
static_assert(sizeof(AllocState) == 2 * kCacheLine);
static_assert(offsetof(AllocState, dirty) == kCacheLine);

// One slot header. Fields are atomics because optimistic (seqlock) readers load them while a writer
// may change them; such a reader validates the sequence afterwards and bounds-checks every index.
struct Item {
  std::atomic<std::uint32_t> next;    // shard lock: next slot in the chain
  std::atomic<std::uint32_t> hash;    // shard lock: key_hash of the key
  std::atomic<std::uint32_t> keylen;  // shard lock
  std::atomic<std::uint32_t> vallen;  // shard lock
  std::atomic<std::int64_t> expires;  // shard lock: absolute unix seconds, 0 = never
  // block, nblocks: alloc lock (with the owner's shard lock held): the item's run in the data area,
  // kNil / 0 when it has none. Format 3 had `ext` (key-extension slot) here.
  std::atomic<std::uint32_t> block;
  std::atomic<std::uint32_t> hits;          // any process, relaxed, lossy: decayed by reorder_hot_items
  std::atomic<std::uint64_t> last_used_ns;  // any process, relaxed: CLOCK_MONOTONIC of last use (LRU)
  std::atomic<std::uint32_t> nblocks;
  // owner and kind: alloc lock when entering/leaving a global free stack (kFree), else the owner's shard
  // lock.
  std::atomic<std::uint16_t> owner;  // shard index unless kFree (then kNoOwner)
  std::atomic<std::uint16_t> kind;   // SlotKind
  // ---- memcached's per-item metadata (format version 5; the memcached protocol and Cache::modify) ----
  // cas: the shard's seqlock value at the item's last write, times the shard count, plus shard + 1:
  // unique per write, never 0, and still above every older cas after a store load (seq restarts above
  // the newest stamp).
  std::atomic<std::uint64_t> cas;    // shard lock
  std::atomic<std::uint32_t> flags;  // shard lock: memcached's opaque client flags
  std::uint32_t reserved;
};
static_assert(sizeof(Item) == 64);
// Formats 3 and 4 had these fields at the same offsets (store_migrate.cpp reads them there).
static_assert(offsetof(Item, block) == 24);
static_assert(offsetof(Item, nblocks) == 40);
static_assert(sizeof(std::atomic<std::uint32_t>) == 4, "heads[] are u32 atomics");
static_assert(offsetof(Item, expires) == 16);
static_assert(offsetof(Item, last_used_ns) == 32);
static_assert(offsetof(Item, kind) == 46);

// Store files only: what makes an item self-validating after a crash. `sum` is a 64-bit checksum
// of the item's stamp, key and value lengths, expiry, block (format 3: ext link), hash, key bytes and
// value bytes (every block of its run),
// written (under the shard lock) after everything it covers. `stamp` is the shard's seqlock value at
// that write: all versions of one key live in one shard, so after a power loss that left two intact
// copies of a key (a delete whose page never reached the disk), the larger stamp is the newer one.
// Nothing reads seals except the store load and the write that refreshes them.
struct ItemSeal {
  std::uint64_t sum;    // shard lock
  std::uint64_t stamp;  // shard lock
};
static_assert(sizeof(ItemSeal) == 16);

// A run's contents: key bytes, then value bytes.

}  // namespace cache::layout
