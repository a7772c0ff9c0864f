#include "workers/stats_report.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <ctime>

#include "server/protocol.hpp"

namespace workers {

namespace {

// JSON string body: quotes, backslashes and control bytes escaped; other bytes as they are.
void append_json_string(std::string& out, std::string_view text) {
  out.push_back('"');
  for (const char c : text) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      fmt::format_to(std::back_inserter(out), "\\u{:04x}",
                     static_cast<unsigned>(static_cast<unsigned char>(c)));
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
}

// Builds one JSON document in uWSGI's layout (one space of indent per level, as uWSGI writes it).
class Json {
 public:
  void open(std::string_view key, char bracket) {
    member(key);
    out_.push_back(bracket);
    first_ = true;
    ++depth_;
  }
  void close(char bracket) {
    --depth_;
    if (!first_) newline();
    out_.push_back(bracket);
    first_ = false;
  }
  template <typename Number>
  void number(std::string_view key, Number value) {
    member(key);
    fmt::format_to(std::back_inserter(out_), "{}", value);
  }
  void string(std::string_view key, std::string_view value) {
    member(key);
    append_json_string(out_, value);
  }
  std::string take() { return std::move(out_); }

 private:
  void newline() {
    out_.push_back('\n');
    out_.append(static_cast<std::size_t>(depth_), ' ');
  }
  void member(std::string_view key) {
    if (!first_) out_.push_back(',');
    if (depth_ > 0) newline();
    first_ = false;
    if (!key.empty()) {
      append_json_string(out_, key);
      out_.append(":");
    }
  }
  std::string out_;
  bool first_ = true;
  int depth_ = 0;
};

// A worker id's view at one moment: its totals and its current process.
struct WorkerView {
  const WorkerTotals* totals = nullptr;
  const WorkerSlot* slot = nullptr;  // null when no process serves the id right now
  pid_t pid = 0;
  std::uint64_t rss = 0, vsz = 0;
  bool busy = false;
};

WorkerView view_of(const Scoreboard& board, int id) {
  WorkerView view;
  view.totals = &board.totals(id);
  const int index = view.totals->active_slot.load(std::memory_order_relaxed);
  if (index >= 0 && static_cast<std::size_t>(index) < board.slot_count()) {
    view.slot = &board.slot(static_cast<std::size_t>(index));
    view.pid = view.slot->pid.load(std::memory_order_relaxed);
    view.busy = view.slot->in_request.load(std::memory_order_relaxed) > 0;
    if (view.pid > 0) process_memory(view.pid, view.rss, view.vsz);
  }
  return view;
}

std::uint64_t load(const std::atomic<std::uint64_t>& counter) {
  return counter.load(std::memory_order_relaxed);
}

}  // namespace

void process_memory(pid_t pid, std::uint64_t& rss, std::uint64_t& vsz) {
  rss = vsz = 0;
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/statm", static_cast<int>(pid));
  std::FILE* f = std::fopen(path, "r");
  if (f == nullptr) return;
  unsigned long long pages = 0, resident = 0;
  if (std::fscanf(f, "%llu %llu", &pages, &resident) == 2) {
    const auto page = static_cast<std::uint64_t>(sysconf(_SC_PAGESIZE));
    vsz = pages * page;
    rss = resident * page;
  }
  std::fclose(f);
}

std::string stats_json(const StatsContext& context) {
  const Scoreboard& board = *context.board;
  std::vector<std::uint32_t> queues;
  std::uint64_t queued = 0;  // uWSGI's listen_queue: the longest queue of any socket, not their sum
  for (const StatsSocket& socket : context.sockets) {
    queues.push_back(listen_queue_of(socket));
    queued = std::max<std::uint64_t>(queued, queues.back());
  }
  std::vector<WorkerView> views;
  std::uint64_t busy = 0;
  for (int id = 1; id <= context.processes; ++id) {
    views.push_back(view_of(board, id));
    busy += views.back().busy ? 1 : 0;
  }

  Json j;
  j.open("", '{');
  j.string("version", context.version);
  j.number("listen_queue", queued);
  j.number("listen_queue_errors", 0);
  j.number("signal_queue", 0);
  j.number("load", busy);
  j.number("pid", context.master_pid);
  j.number("uid", getuid());
  j.number("gid", getgid());
  j.string("cwd", context.cwd);
  j.open("locks", '[');
  for (const char* lock : {"user 0", "signal", "filemon", "timer", "rbtimer", "cron", "rpc", "snmp"}) {
    j.open("", '{');
    j.number(lock, 0);
    j.close('}');
  }
  for (const auto& cache : context.caches->all()) {
    j.open("", '{');
    j.number("cache_" + cache->geometry().name, 0);
    j.close('}');
  }
  j.close(']');

  j.open("caches", '[');
  for (std::size_t index = 0; index < context.caches->all().size(); ++index) {
    const cache::Cache& cache = *context.caches->all()[index];
    const cache::Geometry& g = cache.geometry();
    const cache::Stats s = cache.stats();
    j.open("", '{');
    j.string("name", g.name);
    j.string("hash", "djb33x");
    j.number("hashsize", g.hashsize);
    j.number("keysize", g.keysize);
    j.number("max_items", s.capacity);
    j.number("blocks", s.capacity);
    j.number("blocksize", g.blocksize);
    j.number("items", s.items);
    j.number("hits", s.hits);
    j.number("miss", s.misses);
    j.number("full", s.full);
    j.number("last_modified_at", s.last_modified_at);
    // Ours, beyond uWSGI's keys.
    j.number("evictions", s.evictions);
    j.number("expirations", s.expirations);
    j.number("lock_waits", s.lock_waits);
    j.number("lookups", s.lookups);
    j.number("probes", s.probes);
    j.number("shard_recoveries", s.shard_recoveries);
    j.string("store", g.store);
    j.number("store_restored", s.store_restored);
    j.number("store_dropped", s.store_dropped);
    if (index < board.cache_count()) {
      const StoreSyncRecord& sync = board.store_sync(index);
      j.number("store_syncs", load(sync.syncs));
      j.number("store_sync_failures", load(sync.failures));
      j.number("store_last_sync_us", load(sync.last_duration_us));
    }
    j.close('}');
  }
  j.close(']');

  j.open("sockets", '[');
  for (std::size_t i = 0; i < context.sockets.size(); ++i) {
    const StatsSocket& socket = context.sockets[i];
    j.open("", '{');
    j.string("name", socket.name);
    j.string("proto", socket.proto);
    j.number("queue", queues[i]);
    j.number("max_queue", socket.backlog);
    j.number("shared", 0);
    j.number("can_offload", 0);
    j.close('}');
  }
  j.close(']');

  j.open("workers", '[');
  for (int id = 1; id <= context.processes; ++id) {
    const WorkerView& w = views[static_cast<std::size_t>(id - 1)];
    const WorkerTotals& t = *w.totals;
    const std::uint64_t requests = load(t.requests);
    const std::uint64_t running = load(t.running_time_us);
    const std::uint64_t delta = w.slot != nullptr ? load(w.slot->requests) : 0;
    j.open("", '{');
    j.number("id", id);
    j.number("pid", w.pid);
    j.number("accepting", w.pid > 0 ? 1 : 0);
    j.number("requests", requests);
    j.number("delta_requests", delta);
    j.number("exceptions", load(t.exceptions));
    j.number("harakiri_count", load(t.harakiri_count));
    j.number("signals", 0);
    j.number("signal_queue", 0);
    j.string("status", w.busy ? "busy" : "idle");
    j.number("rss", w.rss);
    j.number("vsz", w.vsz);
    j.number("running_time", running);
    j.number("last_spawn", t.last_spawn.load(std::memory_order_relaxed));
    j.number("respawn_count", load(t.respawn_count));
    j.number("tx", load(t.tx));
    j.number("avg_rt", requests == 0 ? 0 : running / requests);
    j.open("apps", '[');
    j.open("", '{');
    j.number("id", 0);
    j.number("modifier1", 0);
    j.string("mountpoint", context.mountpoint);
    j.number("startup_time", 0);
    j.number("requests", requests);
    j.number("exceptions", load(t.exceptions));
    j.string("chdir", context.chdir);
    j.close('}');
    j.close(']');
    j.open("cores", '[');
    j.open("", '{');
    j.number("id", 0);
    j.number("requests", requests);
    j.number("static_requests", 0);
    j.number("routed_requests", 0);
    j.number("offloaded_requests", 0);
    j.number("write_errors", 0);
    j.number("read_errors", 0);
    j.number("in_request", w.busy ? 1 : 0);
    j.open("vars", '[');
    j.close(']');
    j.open("req_info", '{');
    j.close('}');
    j.close('}');
    j.close(']');
    // Ours.
    j.number("cache_requests", load(t.cache_requests));
    j.number("status_4xx", load(t.status_4xx));
    j.number("status_5xx", load(t.status_5xx));
    if (w.slot != nullptr) {
      j.number("accepted", load(w.slot->accepted));
      j.number("wakeups", load(w.slot->wakeups));
      j.number("wasted_wakeups", load(w.slot->wasted_wakeups));
      j.number("bad_requests", load(w.slot->bad_requests));
      j.number("handed_off", load(w.slot->handed_off));
      j.number("handed_in", load(w.slot->handed_in));
    }
    j.close('}');
  }
  j.close(']');
  j.close('}');
  std::string out = j.take();
  out.push_back('\n');
  return out;
}

}  // namespace workers
