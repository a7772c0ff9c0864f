#include "master/caches.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <stdexcept>
#include <string>

#include "common/clock.hpp"
#include "common/log.hpp"
#include "master/test_hooks.hpp"
#include "server/cache_sync.hpp"

namespace master {

namespace {

using common::monotonic_ms;

cache::Geometry geometry_from(const config::CacheSpec& spec) {
  cache::Geometry geometry;
  geometry.name = spec.name;
  geometry.items = spec.items;
  geometry.blocksize = spec.blocksize;
  geometry.keysize = spec.keysize;
  geometry.hashsize = spec.hashsize;
  geometry.purge_lru = spec.purge_lru;
  geometry.ignore_full = spec.ignore_full;
  geometry.no_expire = spec.no_expire;
  geometry.lastmod = spec.lastmod;
  geometry.math_initial = spec.math_initial;
  geometry.bitmap = spec.bitmap;
  geometry.blocks = spec.blocks;
  geometry.store = spec.store;
  geometry.store_delete = spec.store_delete;
  geometry.store_sync = spec.store_sync;
  return geometry;
}

// uWSGI cache features that are parsed (so uWSGI configurations start) but not implemented: each one a
// user asked for gets a line at start saying what it means for them, instead of silence.
void warn_unsupported(const config::CacheSpec& spec) {
  const auto warn = [&](const std::string& what) {
    common::log("WARNING: cache \"{}\": {} (docs/differences.md)", spec.name, what);
  };
  if (!spec.bitmap && spec.blocks > spec.items)
    warn(fmt::format("blocks={} is ignored: without bitmap mode every item has exactly one block",
                     spec.blocks));
}

// Syncs a cache's store, timed, and records it for the metrics (record may be null: no scoreboard yet).
bool timed_store_sync(cache::Cache& cache, workers::StoreSyncRecord* record, std::int64_t& took_ms) {
  const std::int64_t started = common::monotonic_ns();
  const bool ok = cache.sync_store();
  const std::int64_t took_ns = common::monotonic_ns() - started;
  took_ms = took_ns / 1000000;
  if (record != nullptr) {
    const auto us = static_cast<std::uint64_t>(took_ns / 1000);
    record->syncs.fetch_add(1);
    if (!ok) record->failures.fetch_add(1);
    record->duration_us.fetch_add(us);
    record->last_duration_us.store(us);
  }
  return ok;
}

}  // namespace

void create_caches(const config::Config& config, cache::CacheSet& caches,
                   std::vector<std::unique_ptr<server::UdpReceiver>>& udp_receivers) {
  for (const config::CacheSpec& spec : config.caches) {
    std::unique_ptr<cache::Cache> made = cache::Cache::create(geometry_from(spec));
    // What the UDP receiver and the start-up sync write to: the cache itself, never sent on to nodes
    // (two nodes sending to each other would bounce every update forever).
    cache::Cache& local = *made;
    if (!spec.nodes.empty()) made = server::replicate_to_nodes(std::move(made), spec.nodes);
    cache::Cache& created = caches.add(std::move(made));
    const cache::Geometry& g = created.geometry();
    common::log(
        "cache \"{}\" ready: items={} blocksize={} keysize={} hashsize={} purge_lru={} store={}{} largest "
        "value={}",
        g.name, g.items, g.blocksize, g.keysize, g.hashsize, g.purge_lru ? "yes" : "no",
        g.store.empty() ? "none" : g.store,
        g.bitmap ? fmt::format(" bitmap blocks={}", g.blocks != 0 ? g.blocks : g.items) : "",
        cache::largest_value(g));
    warn_unsupported(spec);
    if (!spec.sync.empty()) {  // uWSGI's cache-sync: copy another node's cache now; none usable = exit 1
      const server::SyncResult synced =
          server::sync_cache_from_nodes(local, spec.sync, config.socket_timeout * 1000);
      if (!synced.ok) throw std::runtime_error(synced.error);
    }
    if (!spec.udp_servers.empty())
      udp_receivers.push_back(std::make_unique<server::UdpReceiver>(local, spec.udp_servers));
    if (!spec.nodes.empty())
      common::log("UDP cache sync: cache \"{}\" sends its updates to {}", spec.name,
                  fmt::join(spec.nodes, ", "));
  }
}

// Its keysize must hold every key the protocol accepts.
cache::Cache* memcached_cache(cache::CacheSet& caches, const config::Config& config) {
  if (caches.empty())
    throw std::runtime_error(
        "--memcached-socket: there is no cache to serve (add --cache ITEMS or a --cache2)");
  cache::Cache* cache = caches.find(config.memcached_cache);
  if (cache == nullptr)
    throw std::runtime_error(fmt::format(
        "--memcached-cache {}: no cache has this name (see --cache2 name=...)", config.memcached_cache));
  if (cache->geometry().keysize < config.memcached_keysize)
    throw std::runtime_error(fmt::format(
        "--memcached-keysize {}: cache \"{}\" has keysize {}; raise its keysize or lower --memcached-keysize",
        config.memcached_keysize, cache->geometry().name, cache->geometry().keysize));
  return cache;
}

void flush_stores(cache::CacheSet& caches, const workers::Scoreboard& board) {
  for (std::size_t index = 0; index < caches.all().size(); ++index) {
    cache::Cache* cache = caches.all()[index].get();
    if (!cache->has_store()) continue;
    std::int64_t took_ms = 0;
    const bool ok = timed_store_sync(*cache, board.valid() ? &board.store_sync(index) : nullptr, took_ms);
    common::log("cache \"{}\": store {} {} in {} ms", cache->geometry().name, cache->geometry().store,
                ok ? "flushed" : "flush FAILED", took_ms);
  }
}

void CacheJobs::start() {
  if (sweep_) common::log("cache sweeper thread enabled");
  thread_ = std::thread([this] { loop(); });
}

void CacheJobs::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void CacheJobs::loop() {
  const std::int64_t start = monotonic_ms();
  std::int64_t next_sweep = sweep_ ? start : INT64_MAX;
  std::int64_t next_cycle = start + kCycleMs;
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stopping_) {
    lock.unlock();
    const std::int64_t now = monotonic_ms();
    if (now >= next_sweep) {
      sweep();
      next_sweep = monotonic_ms() + sweep_interval_ms_;
    }
    if (now >= next_cycle) {
      cycle();
      next_cycle = monotonic_ms() + kCycleMs;
    }
    lock.lock();
    const std::int64_t wait_ms = std::max<std::int64_t>(0, std::min(next_sweep, next_cycle) - monotonic_ms());
    wake_.wait_for(lock, std::chrono::milliseconds(wait_ms), [this] { return stopping_; });
  }
}

void CacheJobs::sweep() {
  for (const auto& cache : caches_.all()) {
    if (cache->geometry().no_expire) continue;
    const std::int64_t started = monotonic_ms();
    const std::uint64_t freed = cache->sweep_expired();
    if (report_freed_ && freed > 0)
      common::log("freed {} items for cache \"{}\"", freed, cache->geometry().name);
    common::log_debug("sweeper: cache \"{}\": freed {} item(s) in {} ms", cache->geometry().name, freed,
                      monotonic_ms() - started);
  }
}

void CacheJobs::cycle() {
  ++cycles_;
  for (std::size_t index = 0; index < caches_.all().size(); ++index) {
    cache::Cache* cache = caches_.all()[index].get();
    std::int64_t started = monotonic_ms();
    const std::uint64_t moved = cache->reorder_hot_items();
    common::log_debug("reorder: cache \"{}\": moved {} item(s) in {} ms", cache->geometry().name, moved,
                      monotonic_ms() - started);
    const int every = cache->geometry().store_sync;
    if (cache->has_store() && every > 0 && cycles_ % static_cast<std::uint64_t>(every) == 0) {
      common::log_debug("store sync: cache \"{}\": started", cache->geometry().name);
      store_sync_test_hook(cache->geometry().name, SyncPoint::before_msync);
      std::int64_t took_ms = 0;
      const bool ok = timed_store_sync(*cache, &board_.store_sync(index), took_ms);
      store_sync_test_hook(cache->geometry().name, SyncPoint::after_msync);
      common::log_debug("store sync: cache \"{}\": {} in {} ms", cache->geometry().name,
                        ok ? "done" : "FAILED", took_ms);
    }
  }
}

}  // namespace master
