// Counter stripes: each thread claims a stripe of its own per cache and adds to it with plain stores
// (one writer per stripe), so hits and misses never bounce a shared cache line; stats() sums them.
// Layout: layout.hpp (CounterStripe); figures: docs/cache.md.
#include <errno.h>

#include "cache/shm_cache.hpp"

namespace cache::detail {

std::atomic<std::uint32_t> g_fork_generation{1};
std::atomic<std::uint64_t> g_next_instance{1};
thread_local constinit StripeClaim t_claims[kClaimMemory];

namespace {

void bump_fork_generation() { g_fork_generation.fetch_add(1, std::memory_order_relaxed); }
[[maybe_unused]] const int g_atfork_registered = pthread_atfork(nullptr, nullptr, bump_fork_generation);

std::uint64_t stripe_owner_id() {
  return static_cast<std::uint64_t>(getpid()) << 32 | static_cast<std::uint32_t>(syscall(SYS_gettid));
}

// True when the owner's thread is gone (its stripe may be taken over; its counts stay in the sums).
bool stripe_owner_gone(std::uint64_t owner) {
  const auto pid = static_cast<pid_t>(owner >> 32);
  const auto tid = static_cast<pid_t>(owner & 0xFFFFFFFFu);
  return syscall(SYS_tgkill, pid, tid, 0) == -1 && errno == ESRCH;
}

}  // namespace

// Slow path of counters(): this thread's claim on this cache among the remembered ones (moved to the
// front), or a new claim: a free stripe or one this thread already owns, else one whose owner thread is
// gone, else the shared stripe 0. The claim pushed out of memory stays owned until its thread is gone.
Counters ShmCache::claim_stripe() const {
  const std::uint32_t gen = g_fork_generation.load(std::memory_order_relaxed);
  for (std::size_t k = 1; k < kClaimMemory; ++k) {
    if (t_claims[k].instance == instance_ && t_claims[k].generation == gen) {
      std::swap(t_claims[0], t_claims[k]);
      return t_claims[0].counters;
    }
  }
  Counters got{&stripes_[0], false};
  const std::uint64_t me = stripe_owner_id();
  for (int pass = 0; pass < 2 && !got.owned; ++pass) {
    for (std::uint32_t k = 1; k < kStripes; ++k) {
      std::atomic<std::uint64_t>& owner = stripes_[k].owner;
      std::uint64_t seen = owner.load(std::memory_order_relaxed);
      const bool takeable = pass == 0 ? (seen == 0 || seen == me) : stripe_owner_gone(seen);
      if (takeable && (seen == me || owner.compare_exchange_strong(seen, me, std::memory_order_acq_rel))) {
        got = Counters{&stripes_[k], true};
        break;
      }
    }
  }
  for (std::size_t k = kClaimMemory - 1; k > 0; --k) t_claims[k] = t_claims[k - 1];
  t_claims[0] = StripeClaim{instance_, gen, got};
  return got;
}

Stats ShmCache::stats() const {
  Stats st;
  for (std::uint32_t k = 0; k < kStripes; ++k) {
    const CounterStripe& c = stripes_[k];
    st.hits += c.hits.load(std::memory_order_relaxed);
    st.misses += c.misses.load(std::memory_order_relaxed);
    st.full += c.full.load(std::memory_order_relaxed);
    st.evictions += c.evictions.load(std::memory_order_relaxed);
    st.expirations += c.expirations.load(std::memory_order_relaxed);
    st.lock_waits += c.lock_waits.load(std::memory_order_relaxed);
    st.lookups += c.lookups.load(std::memory_order_relaxed);
    st.probes += c.probes.load(std::memory_order_relaxed);
    st.shard_recoveries += c.shard_recoveries.load(std::memory_order_relaxed);
    st.full_fragmented += c.full_fragmented.load(std::memory_order_relaxed);
  }
  st.blocks = nblocks_;
  st.blocks_free = bmh_->free_blocks.load(std::memory_order_relaxed);
  st.block_bytes = grain_;
  st.items = count();
  st.capacity = items_cap_;
  st.last_modified_at = hdr_->last_modified_at.load(std::memory_order_relaxed);
  st.store_restored = store_restored_;
  st.store_dropped = store_dropped_;
  return st;
}

}  // namespace cache::detail
