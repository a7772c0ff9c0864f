// Cache::modify: one read-modify-write of a key under its shard lock, the engine side of memcached's
// conditional commands (add, replace, append, prepend, cas, incr/decr, touch, gat, delete and the meta
// commands). The decision runs inside the lock, so whatever it decides from the item it saw is applied to
// that very item: no other writer can come in between.
#include "cache/shm_cache.hpp"

namespace cache::detail {

Status ShmCache::modify(std::string_view key, Decide decide, ItemMeta* after, MetaValueSink* read) {
  if (Status st = check_key(key); st != Status::ok) return st;
  const std::uint32_t h = key_hash(key);
  const std::uint32_t b = bucket_of(h);
  const std::uint32_t s = shard_of_bucket(b);
  // The item as left by an applied write or touch, reported after the decision's own outputs.
  const auto report = [&](std::uint32_t slot) -> Status {
    const ItemMeta meta = meta_locked(slot);
    if (after != nullptr) *after = meta;
    if (read != nullptr) {
      const std::uint32_t vlen = item(slot).vallen.load(std::memory_order_relaxed);
      char* dst = read->reserve_for(vlen, meta);
      if (dst == nullptr) return Status::out_of_memory;
      std::memcpy(dst, value_ptr_locked(slot), vlen);
    }
    return Status::ok;
  };

  bool fragmented = false;  // see place_locked
  for (int attempt = 0; attempt < write_attempts(); ++attempt) {
    {
      ShardLock lock(*this, s);
      Mutation mutation;
      Found f = find_locked(b, h, key);
      const bool live = f.slot != kNil && !expired_now(item(f.slot).expires.load(std::memory_order_relaxed));
      Current current;
      if (live) {
        current.present = true;
        current.value =
            std::string_view(value_ptr_locked(f.slot), item(f.slot).vallen.load(std::memory_order_relaxed));
        current.meta = meta_locked(f.slot);
      }
      const Change change = decide(current);
      switch (change.action) {
        case Change::Action::none:
          return change.status;
        case Change::Action::remove:
          if (!live) return Status::miss;
          mutation.begin(shard(s));
          unlink_locked(b, f.slot, f.prev);
          free_item_locked(s, f.slot);
          note_modified();
          return Status::ok;
        case Change::Action::touch: {
          if (!live) return Status::miss;
          mutation.begin(shard(s));
          const std::int64_t expires = absolute_expiry(change.expires_in);
          item(f.slot).expires.store(expires, std::memory_order_relaxed);
          seal_locked(s, f.slot, std::string_view(key_ptr_locked(f.slot), key.size()), current.value);
          note_expiry_locked(s, expires);
          return report(f.slot);
        }
        case Change::Action::write:
          break;
      }
      if (change.value.size() > max_value_) return Status::value_too_large;
      const std::int64_t expires =
          change.keep_expiry && live ? current.meta.expires : absolute_expiry(change.expires_in);
      mutation.begin(shard(s));
      std::uint32_t slot = kNil;
      if (place_locked(s, b, h, f, live, key, change.value, expires, change.flags, &slot, &fragmented)) {
        if (f.slot != kNil && !live) counters().add(&CounterStripe::expirations, 1);
        note_modified();
        return report(slot);
      }
    }
    if (!handle_full()) break;
  }
  if (fragmented) counters().add(&CounterStripe::full_fragmented, 1);
  return Status::full;
}

}  // namespace cache::detail
