// Loading a store file of an earlier format: version 3 (one block per slot, 48-byte items) or version 4
// (runs of blocks, 48-byte items without memcached's cas and flags). Their intact items -- the checks of
// a normal load: bounds, seal, key hash -- are written into a fresh store of the current format created
// at the same path; the old file stays mapped read-only until every item is copied, then is gone (the
// rename replaced it). Migrated items get flags 0 and a new cas; expired ones are not carried over.
// Geometry changes are allowed: an item this cache cannot hold (key or value over its limits, cache
// full) is dropped and counted.
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "cache/shm_cache.hpp"

namespace cache::detail {

namespace {

// The item header of formats 3 and 4 (48 bytes; the fields the current Item keeps at the same offsets).
constexpr std::uint64_t kOldItemSize = 48, kOldSealSize = 16;
constexpr std::size_t kOldHash = 4, kOldKeylen = 8, kOldVallen = 12, kOldExpires = 16, kOldBlock = 24,
                      kOldNblocks = 40;  // kOldBlock: format 3's ext link; kOldNblocks: format 4 only

// Where an old item's key and value sit, by its format's rules; false when its fields do not fit the
// file (a damaged item).
struct OldLayout {
  const char* base;
  std::uint32_t version;
  std::uint64_t items, slots, block_size, blocks_off, blocks;  // blocks: format 4's data-area blocks
  std::uint64_t keysize, max_value;

  template <typename T>
  T at(std::uint64_t off) const {
    T v;
    std::memcpy(&v, base + off, sizeof v);
    return v;
  }
  bool locate(const char* it, std::uint32_t kl, std::uint32_t vl, std::uint32_t i, const char** kp,
              const char** vp) const {
    if (kl > keysize || vl < 1 || vl > max_value) return false;
    std::uint32_t block;
    std::memcpy(&block, it + kOldBlock, 4);
    if (version == kFormatVersionOneBlockPerItem) {
      if (block == kNil) {
        if (kl + static_cast<std::uint64_t>(vl) > block_size) return false;
        *kp = base + blocks_off + i * block_size;
        *vp = *kp + kl;
      } else {
        if (block < items || block >= slots || kl > block_size) return false;
        *kp = base + blocks_off + block * block_size;
        *vp = base + blocks_off + i * block_size;
      }
      return true;
    }
    std::uint32_t n;
    std::memcpy(&n, it + kOldNblocks, 4);
    const std::uint64_t bytes = kl + static_cast<std::uint64_t>(vl);
    if (block >= blocks || n > blocks - block || n != (bytes + block_size - 1) / block_size) return false;
    *kp = base + blocks_off + block * block_size;
    *vp = *kp + kl;
    return true;
  }
};

}  // namespace

void ShmCache::migrate_old_store(int old_fd, const FileHeader& fh, std::uint64_t file_size,
                                 const Plan& plan) {
  const std::string& path = geometry_.store;
  const bool v3 = fh.version == kFormatVersionOneBlockPerItem;
  OldLayout old{nullptr,
                fh.version,
                fh.geo.items,
                fh.geo.slots,
                v3 ? fh.geo.block_size : fh.map.grain,
                fh.offsets[7],
                v3 ? 0 : fh.map.blocks,
                fh.geo.keysize,
                v3 ? fh.geo.blocksize : fh.map.max_value};
  const std::uint64_t items_off = fh.offsets[5], seals_off = fh.offsets[6];
  // Format 3 keeps item headers for every slot (items + the key-extension reserve), format 4 one per item.
  const std::uint64_t headers = v3 ? old.items : old.slots;
  auto fits = [&](std::uint64_t off, std::uint64_t count, std::uint64_t size) {
    return size != 0 && count <= file_size / size && off <= file_size - count * size;
  };
  const bool sane = old.slots >= old.items && old.slots < kNil && seals_off != 0 &&
                    fits(items_off, old.slots, kOldItemSize) && fits(seals_off, old.slots, kOldSealSize) &&
                    (v3 ? fits(old.blocks_off, old.slots, old.block_size)
                        : old.blocks < kNil && fits(old.blocks_off, old.blocks, old.block_size));
  if (!sane) {
    const std::string why =
        fmt::format("it has store format version {} and a layout that does not fit its size", fh.version);
    if (!geometry_.store_delete) {
      close(old_fd);
      throw std::runtime_error(
          fmt::format("invalid cache store file {} for cache \"{}\": {}. Please remove it, or start with "
                      "--cache-store-delete (store_delete=1 in --cache2) to discard it",
                      path, geometry_.name, why));
    }
    common::log("Removing invalid cache store file: {} ({})", path, why);
    close(old_fd);
    create_store(plan);
    return;
  }
  void* p = mmap(nullptr, file_size, PROT_READ, MAP_SHARED, old_fd, 0);
  if (p == MAP_FAILED) {
    const int err = errno;
    close(old_fd);
    throw std::runtime_error(fmt::format("cache \"{}\": mmap of store file {} ({} bytes) failed: {}",
                                         geometry_.name, path, file_size, strerror(err)));
  }
  old.base = static_cast<const char*>(p);

  // Intact items in stamp order, so that of two copies of one key (power loss) the newer is written last.
  std::vector<std::pair<std::uint64_t, std::uint32_t>> intact;
  std::uint64_t dropped = 0;
  for (std::uint32_t i = 0; i < headers; ++i) {
    const char* it = old.base + items_off + i * kOldItemSize;
    const auto kl = old.at<std::uint32_t>(items_off + i * kOldItemSize + kOldKeylen);
    if (kl == 0) continue;
    const auto vl = old.at<std::uint32_t>(items_off + i * kOldItemSize + kOldVallen);
    const char *kp = nullptr, *vp = nullptr;
    bool ok = old.locate(it, kl, vl, i, &kp, &vp);
    if (ok) {
      const std::uint64_t seal_at = seals_off + i * kOldSealSize;
      const auto stamp = old.at<std::uint64_t>(seal_at + 8);
      const auto h = old.at<std::uint32_t>(items_off + i * kOldItemSize + kOldHash);
      ok = old.at<std::uint64_t>(seal_at) ==
               seal_sum_v4(stamp, kl, vl, old.at<std::int64_t>(items_off + i * kOldItemSize + kOldExpires),
                           old.at<std::uint32_t>(items_off + i * kOldItemSize + kOldBlock), h, kp, vp) &&
           key_hash(std::string_view(kp, kl)) == h;
      if (ok) intact.emplace_back(stamp, i);
    }
    if (!ok) ++dropped;
  }
  std::sort(intact.begin(), intact.end());
  create_store(plan);  // renames the new file over the old one (still mapped and open here)
  const std::int64_t now_s = now();
  std::uint64_t migrated = 0, expired_items = 0;
  for (const auto& [stamp, i] : intact) {
    const char* it = old.base + items_off + i * kOldItemSize;
    const auto kl = old.at<std::uint32_t>(items_off + i * kOldItemSize + kOldKeylen);
    const auto vl = old.at<std::uint32_t>(items_off + i * kOldItemSize + kOldVallen);
    const auto expires = old.at<std::int64_t>(items_off + i * kOldItemSize + kOldExpires);
    const char *kp = nullptr, *vp = nullptr;
    old.locate(it, kl, vl, i, &kp, &vp);
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
  munmap(p, file_size);
  close(old_fd);
  sync_store();
  store_restored_ = migrated;
  store_dropped_ = dropped;
  common::log("[uwsgi-cache] restored {} items", migrated);
  common::log("cache \"{}\": store {}: migrated {} items from store format {} to format {} ({} expired{})",
              geometry_.name, path, migrated, fh.version, kFormatVersion, expired_items,
              dropped > 0 ? fmt::format(", {} dropped: damaged, or over this cache's limits", dropped) : "");
}

}  // namespace cache::detail
