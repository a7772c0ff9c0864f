// Loading a store file of the previous format (version 3: 48-byte items, no memcached cas or flags).
// Its intact items -- the same checks as a normal load: bounds, seal, key hash -- are written into a
// fresh version 4 store that replaces the file; they get flags 0 and a new cas. Only for the configured
// geometry: any other file is left to store_problem() (refused, or discarded with store_delete).
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "cache/shm_cache.hpp"

namespace cache::detail {

namespace {

// Version 3's item header (what changed in version 4 is only what follows `kind`).
constexpr std::uint32_t kV3Version = 3;
constexpr std::size_t kV3ItemSize = 48;
constexpr std::size_t kV3Hash = 4, kV3Keylen = 8, kV3Vallen = 12, kV3Expires = 16, kV3Ext = 24;

template <typename T>
T field(const char* item, std::size_t offset) {
  T v;
  std::memcpy(&v, item + offset, sizeof v);
  return v;
}

}  // namespace

bool ShmCache::migrate_v3_store(int fd, const FileHeader& fh, std::uint64_t file_size, const Plan& plan) {
  if (fh.version != kV3Version || fh.checksum != fh.computed_checksum || fh.total != file_size) return false;
  if (fh.geo.items != plan.geo.items || fh.geo.blocksize != plan.geo.blocksize ||
      fh.geo.keysize != plan.geo.keysize || fh.geo.hashsize != plan.geo.hashsize)
    return false;
  const std::uint64_t items_off = fh.offsets[5], seals_off = fh.offsets[6], blocks_off = fh.offsets[7];
  const std::uint64_t slots = fh.geo.slots, block_size = fh.geo.block_size, items = fh.geo.items;
  if (items > slots || items_off + kV3ItemSize * slots > file_size ||
      seals_off + sizeof(ItemSeal) * slots > file_size || blocks_off + block_size * slots > file_size)
    return false;
  void* mapped = mmap(nullptr, file_size, PROT_READ, MAP_SHARED, fd, 0);
  if (mapped == MAP_FAILED) return false;
  const char* old = static_cast<const char*>(mapped);

  struct Kept {
    std::uint64_t stamp;
    std::uint32_t slot;
  };
  std::vector<Kept> kept;
  std::uint64_t dropped = 0;
  for (std::uint32_t i = 0; i < items; ++i) {
    const char* it = old + items_off + kV3ItemSize * i;
    const auto kl = field<std::uint32_t>(it, kV3Keylen);
    if (kl == 0) continue;
    const auto vl = field<std::uint32_t>(it, kV3Vallen);
    const auto ext = field<std::uint32_t>(it, kV3Ext);
    const auto h = field<std::uint32_t>(it, kV3Hash);
    bool ok = kl <= fh.geo.keysize && vl >= 1 && vl <= fh.geo.blocksize;
    const char *kp = nullptr, *vp = nullptr;
    if (ok && ext == kNil) {
      ok = kl + static_cast<std::uint64_t>(vl) <= block_size;
      kp = old + blocks_off + block_size * i;
      vp = kp + kl;
    } else if (ok) {
      ok = ext >= items && ext < slots && kl <= block_size;
      kp = old + blocks_off + block_size * ext;
      vp = old + blocks_off + block_size * i;
    }
    const ItemSeal seal = field<ItemSeal>(old + seals_off, sizeof(ItemSeal) * i);
    ok = ok &&
         seal.sum == seal_sum_v3(seal.stamp, kl, vl, field<std::int64_t>(it, kV3Expires), ext, h, kp, vp) &&
         key_hash(std::string_view(kp, kl)) == h;
    if (ok)
      kept.push_back({seal.stamp, i});
    else
      ++dropped;
  }
  // Two intact copies of one key (a delete that never reached the disk): the later write wins.
  std::sort(kept.begin(), kept.end(), [](const Kept& a, const Kept& b) { return a.stamp < b.stamp; });

  create_store(plan);  // a fresh version 4 file, renamed over the old one (still mapped here)
  const std::int64_t now_s = now();
  std::uint64_t migrated = 0, expired_items = 0;
  for (const Kept& k : kept) {
    const char* it = old + items_off + kV3ItemSize * k.slot;
    const auto kl = field<std::uint32_t>(it, kV3Keylen);
    const auto vl = field<std::uint32_t>(it, kV3Vallen);
    const auto ext = field<std::uint32_t>(it, kV3Ext);
    const auto expires = field<std::int64_t>(it, kV3Expires);
    const char* kp = old + blocks_off + block_size * (ext == kNil ? k.slot : ext);
    const char* vp = ext == kNil ? kp + kl : old + blocks_off + block_size * k.slot;
    if (expired(expires, now_s)) {
      ++expired_items;
      continue;
    }
    if (update(std::string_view(kp, kl), std::string_view(vp, vl), expires == 0 ? 0 : expires - now_s) ==
        Status::ok)
      ++migrated;
    else
      ++dropped;
  }
  munmap(mapped, file_size);
  store_restored_ = migrated;
  store_dropped_ = dropped;
  sync_store();
  common::log(
      "cache \"{}\": store file {} had format version 3: {} item(s) moved to format version {} ({} "
      "damaged, {} expired)",
      geometry_.name, geometry_.store, migrated, kFormatVersion, dropped, expired_items);
  return true;
}

}  // namespace cache::detail
