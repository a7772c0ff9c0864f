// Prometheus text exposition (format 0.0.4) of the scoreboard and the caches, and the --metrics
// endpoint. Names follow Prometheus' conventions: a `ucached_` prefix, base units (seconds, bytes),
// `_total` on counters. docs/operations.md lists every metric with its meaning.
#include <fmt/format.h>

#include "server/protocol.hpp"
#include "workers/stats_report.hpp"

namespace workers {

namespace {

std::uint64_t load(const std::atomic<std::uint64_t>& counter) {
  return counter.load(std::memory_order_relaxed);
}

// A label value with Prometheus' escapes (backslash, quote, newline).
std::string label(std::string_view value) {
  std::string out;
  for (const char c : value) {
    if (c == '\\' || c == '"') {
      out.push_back('\\');
      out.push_back(c);
    } else if (c == '\n') {
      out.append("\\n");
    } else {
      out.push_back(c);
    }
  }
  return out;
}

class Exposition {
 public:
  void family(std::string_view name, std::string_view type, std::string_view help) {
    fmt::format_to(std::back_inserter(out_), "# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
  }
  template <typename Number>
  void sample(std::string_view name, std::string_view labels, Number value) {
    if (labels.empty())
      fmt::format_to(std::back_inserter(out_), "{} {}\n", name, value);
    else
      fmt::format_to(std::back_inserter(out_), "{}{{{}}} {}\n", name, labels, value);
  }
  // One histogram series from non-cumulative bucket counts.
  void histogram(std::string_view name, const std::string& labels, const std::uint64_t* buckets,
                 std::uint64_t sum_us) {
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i < kDurationBoundsUs.size(); ++i) {
      cumulative += buckets[i];
      fmt::format_to(std::back_inserter(out_), "{}_bucket{{{},le=\"{}\"}} {}\n", name, labels,
                     static_cast<double>(kDurationBoundsUs[i]) / 1e6, cumulative);
    }
    cumulative += buckets[kDurationBoundsUs.size()];
    fmt::format_to(std::back_inserter(out_), "{}_bucket{{{},le=\"+Inf\"}} {}\n", name, labels, cumulative);
    fmt::format_to(std::back_inserter(out_), "{}_sum{{{}}} {}\n", name, labels,
                   static_cast<double>(sum_us) / 1e6);
    fmt::format_to(std::back_inserter(out_), "{}_count{{{}}} {}\n", name, labels, cumulative);
  }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

// A per-worker counter family: one sample per worker id.
template <typename Read>
void per_worker(Exposition& e, const StatsContext& c, std::string_view name, std::string_view type,
                std::string_view help, Read read) {
  e.family(name, type, help);
  for (int id = 1; id <= c.processes; ++id) e.sample(name, fmt::format("worker=\"{}\"", id), read(id));
}

// A per-cache family.
template <typename Read>
void per_cache(Exposition& e, const StatsContext& c, std::string_view name, std::string_view type,
               std::string_view help, Read read) {
  e.family(name, type, help);
  for (std::size_t i = 0; i < c.caches->all().size(); ++i) {
    const cache::Cache& cache = *c.caches->all()[i];
    e.sample(name, fmt::format("cache=\"{}\"", label(cache.geometry().name)), read(i, cache));
  }
}

const WorkerSlot* active_slot(const Scoreboard& board, int id) {
  const int index = board.totals(id).active_slot.load(std::memory_order_relaxed);
  if (index < 0 || static_cast<std::size_t>(index) >= board.slot_count()) return nullptr;
  return &board.slot(static_cast<std::size_t>(index));
}

}  // namespace

std::string prometheus_metrics(const StatsContext& c) {
  const Scoreboard& b = *c.board;
  Exposition e;
  const auto totals = [&b](int id) -> const WorkerTotals& { return b.totals(id); };

  e.family("ucached_requests_total", "counter", "Application requests handled by all workers.");
  e.sample("ucached_requests_total", "", load(b.header().total_requests));
  per_worker(e, c, "ucached_worker_requests_total", "counter",
             "Application requests handled by the worker id.",
             [&](int id) { return load(totals(id).requests); });
  per_worker(e, c, "ucached_worker_cache_requests_total", "counter",
             "Cache requests (modifier1 111) handled by the worker id.",
             [&](int id) { return load(totals(id).cache_requests); });
  per_worker(e, c, "ucached_worker_exceptions_total", "counter",
             "Application requests that failed (answered 500 for an exception).",
             [&](int id) { return load(totals(id).exceptions); });
  e.family("ucached_worker_responses_total", "counter", "Application responses by status class (4xx, 5xx).");
  for (int id = 1; id <= c.processes; ++id) {
    e.sample("ucached_worker_responses_total", fmt::format("worker=\"{}\",class=\"4xx\"", id),
             load(totals(id).status_4xx));
    e.sample("ucached_worker_responses_total", fmt::format("worker=\"{}\",class=\"5xx\"", id),
             load(totals(id).status_5xx));
  }
  per_worker(e, c, "ucached_worker_transmitted_bytes_total", "counter", "Response bytes the worker id sent.",
             [&](int id) { return load(totals(id).tx); });
  per_worker(e, c, "ucached_worker_request_time_seconds_total", "counter",
             "Time the worker id spent handling application requests.",
             [&](int id) { return static_cast<double>(load(totals(id).running_time_us)) / 1e6; });
  per_worker(e, c, "ucached_worker_respawns_total", "counter", "Processes started for the worker id.",
             [&](int id) { return load(totals(id).respawn_count); });
  per_worker(e, c, "ucached_worker_harakiri_total", "counter", "Harakiri kills of the worker id.",
             [&](int id) { return load(totals(id).harakiri_count); });
  per_worker(e, c, "ucached_worker_last_spawn_timestamp_seconds", "gauge",
             "Unix time the worker id's current process started.",
             [&](int id) { return totals(id).last_spawn.load(std::memory_order_relaxed); });
  per_worker(e, c, "ucached_worker_busy", "gauge", "1 while the worker id handles an application request.",
             [&](int id) {
               const WorkerSlot* slot = active_slot(b, id);
               return slot != nullptr && slot->in_request.load(std::memory_order_relaxed) > 0 ? 1 : 0;
             });
  std::vector<std::uint64_t> rss(static_cast<std::size_t>(c.processes) + 1), vsz(rss.size());
  for (int id = 1; id <= c.processes; ++id) {
    const WorkerSlot* slot = active_slot(b, id);
    const pid_t pid = slot != nullptr ? slot->pid.load(std::memory_order_relaxed) : 0;
    if (pid > 0) process_memory(pid, rss[static_cast<std::size_t>(id)], vsz[static_cast<std::size_t>(id)]);
  }
  per_worker(e, c, "ucached_worker_resident_memory_bytes", "gauge",
             "Resident memory of the worker id's process.",
             [&](int id) { return rss[static_cast<std::size_t>(id)]; });
  per_worker(e, c, "ucached_worker_virtual_memory_bytes", "gauge",
             "Address space of the worker id's process.",
             [&](int id) { return vsz[static_cast<std::size_t>(id)]; });
  per_worker(e, c, "ucached_worker_accepted_connections_total", "counter",
             "Connections accepted by the worker id's current process.", [&](int id) {
               const WorkerSlot* slot = active_slot(b, id);
               return slot != nullptr ? load(slot->accepted) : 0;
             });
  per_worker(e, c, "ucached_worker_bad_requests_total", "counter",
             "Connections the worker id's current process closed for bad input or a timeout.", [&](int id) {
               const WorkerSlot* slot = active_slot(b, id);
               return slot != nullptr ? load(slot->bad_requests) : 0;
             });

  // Histograms, summed over the worker ids.
  const auto summed = [&](RequestKind kind, std::uint64_t* buckets, std::uint64_t& sum) {
    sum = 0;
    for (std::size_t i = 0; i <= kDurationBoundsUs.size(); ++i) buckets[i] = 0;
    for (int id = 1; id <= c.processes; ++id) {
      const DurationHistogram& h = totals(id).durations[static_cast<std::size_t>(kind)];
      for (std::size_t i = 0; i <= kDurationBoundsUs.size(); ++i) buckets[i] += load(h.buckets[i]);
      sum += load(h.sum_us);
    }
  };
  std::uint64_t buckets[kDurationBoundsUs.size() + 1];
  std::uint64_t sum = 0;
  e.family("ucached_app_request_duration_seconds", "histogram",
           "Time from handing an application request to the application to its response.");
  summed(RequestKind::app, buckets, sum);
  e.histogram("ucached_app_request_duration_seconds", "app=\"0\"", buckets, sum);
  e.family("ucached_cache_request_duration_seconds", "histogram",
           "Time to handle a cache request, by command.");
  for (std::size_t k = static_cast<std::size_t>(RequestKind::get); k < kRequestKindNames.size(); ++k) {
    summed(static_cast<RequestKind>(k), buckets, sum);
    e.histogram("ucached_cache_request_duration_seconds", fmt::format("command=\"{}\"", kRequestKindNames[k]),
                buckets, sum);
  }

  // Sockets.
  e.family("ucached_listen_queue", "gauge", "Connections waiting in the socket's accept queue.");
  for (const StatsSocket& s : c.sockets)
    e.sample("ucached_listen_queue", fmt::format("socket=\"{}\"", label(s.name)), listen_queue_of(s));
  e.family("ucached_listen_queue_max", "gauge", "The socket's accept queue size (--listen).");
  for (const StatsSocket& s : c.sockets)
    e.sample("ucached_listen_queue_max", fmt::format("socket=\"{}\"", label(s.name)), s.backlog);

  // Caches.
  std::vector<cache::Stats> stats;
  for (const auto& cache : c.caches->all()) stats.push_back(cache->stats());
  const auto st = [&stats](std::size_t i) -> const cache::Stats& { return stats[i]; };
  per_cache(e, c, "ucached_cache_items", "gauge", "Items in the cache.",
            [&](std::size_t i, const cache::Cache&) { return st(i).items; });
  per_cache(e, c, "ucached_cache_capacity_items", "gauge", "Items the cache can hold.",
            [&](std::size_t i, const cache::Cache&) { return st(i).capacity; });
  per_cache(e, c, "ucached_cache_hits_total", "counter", "Lookups that found their key.",
            [&](std::size_t i, const cache::Cache&) { return st(i).hits; });
  per_cache(e, c, "ucached_cache_misses_total", "counter", "Lookups that did not find their key.",
            [&](std::size_t i, const cache::Cache&) { return st(i).misses; });
  per_cache(e, c, "ucached_cache_full_total", "counter", "Writes refused because the cache was full.",
            [&](std::size_t i, const cache::Cache&) { return st(i).full; });
  per_cache(e, c, "ucached_cache_evictions_total", "counter", "Items evicted to make room (purge_lru).",
            [&](std::size_t i, const cache::Cache&) { return st(i).evictions; });
  per_cache(e, c, "ucached_cache_expirations_total", "counter", "Items removed because they expired.",
            [&](std::size_t i, const cache::Cache&) { return st(i).expirations; });
  per_cache(e, c, "ucached_cache_lock_waits_total", "counter", "Shard lock acquisitions that had to wait.",
            [&](std::size_t i, const cache::Cache&) { return st(i).lock_waits; });
  per_cache(e, c, "ucached_cache_shard_recoveries_total", "counter",
            "Shards rebuilt after a process died holding their lock.",
            [&](std::size_t i, const cache::Cache&) { return st(i).shard_recoveries; });
  const auto sync = [&b](std::size_t i) -> const StoreSyncRecord* {
    return i < b.cache_count() ? &b.store_sync(i) : nullptr;
  };
  per_cache(e, c, "ucached_cache_store_syncs_total", "counter", "Syncs of the cache's store file to disk.",
            [&](std::size_t i, const cache::Cache&) { return sync(i) ? load(sync(i)->syncs) : 0; });
  per_cache(e, c, "ucached_cache_store_sync_failures_total", "counter", "Store syncs that failed.",
            [&](std::size_t i, const cache::Cache&) { return sync(i) ? load(sync(i)->failures) : 0; });
  per_cache(e, c, "ucached_cache_store_sync_seconds_total", "counter", "Time spent syncing the store file.",
            [&](std::size_t i, const cache::Cache&) {
              return sync(i) ? static_cast<double>(load(sync(i)->duration_us)) / 1e6 : 0.0;
            });
  per_cache(e, c, "ucached_cache_store_last_sync_seconds", "gauge", "Duration of the latest store sync.",
            [&](std::size_t i, const cache::Cache&) {
              return sync(i) ? static_cast<double>(load(sync(i)->last_duration_us)) / 1e6 : 0.0;
            });
  return e.take();
}

namespace {

class MetricsEndpoint final : public server::Application {
 public:
  MetricsEndpoint(std::unique_ptr<server::Application> inner, std::shared_ptr<const StatsContext> context)
      : inner_(std::move(inner)), context_(std::move(context)) {}

  void handle(const server::Request& request, server::Reply& reply) override {
    std::string_view path, method, protocol = "HTTP/1.0";
    server::parse_vars(request.payload, [&](std::string_view key, std::string_view value) {
      if (key == "PATH_INFO")
        path = value;
      else if (key == "REQUEST_METHOD")
        method = value;
      else if (key == "SERVER_PROTOCOL")
        protocol = value;
    });
    if (path != "/metrics" || (method != "GET" && method != "HEAD")) return inner_->handle(request, reply);
    const std::string text = prometheus_metrics(*context_);
    fmt::format_to(std::back_inserter(reply.body),
                   "{} 200 OK\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n", protocol,
                   kPrometheusContentType, text.size());
    if (method == "GET") reply.body.append(text);
  }
  bool blocking() const override { return inner_->blocking(); }
  bool worker_started(int worker_id, std::string& error) override {
    return inner_->worker_started(worker_id, error);
  }

 private:
  std::unique_ptr<server::Application> inner_;
  std::shared_ptr<const StatsContext> context_;
};

}  // namespace

std::unique_ptr<server::Application> with_metrics_endpoint(std::unique_ptr<server::Application> inner,
                                                           std::shared_ptr<const StatsContext> context) {
  return std::make_unique<MetricsEndpoint>(std::move(inner), std::move(context));
}

}  // namespace workers
