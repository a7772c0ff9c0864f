// The memcached protocol (text and meta commands, doc/protocol.txt of memcached 1.6) over one shared
// cache: a parser and executor that knows nothing of sockets or processes. A connection owns a Session;
// the worker hands it every byte that arrived and writes back what it appends (docs/memcached.md).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "cache/cache.hpp"

namespace server::memcached {

inline constexpr std::uint32_t kDefaultKeyLimit = 250;  // memcached's KEY_MAX_LENGTH
// What `version` answers: the memcached release whose protocol this speaks, then who implements it
// (clients parse the leading numbers).
inline constexpr std::string_view kVersion = "1.6.18-ucached";
// A command line with no '\n' after this many bytes closes the connection, unless it is a get/gets
// (memcached 1.6's rule: only a multi-get may be that long)...
inline constexpr std::size_t kMaxLine = 2048;
// ...and a multi-get line longer than this closes it too (memcached grows its buffer without a bound).
inline constexpr std::size_t kMaxGetLine = 1 << 20;

// Figures `stats` reports that the cache does not count: one set per worker process (the cache's own
// counters -- items, hits, misses, evictions -- are shared by all).
struct Counters {
  std::int64_t started_at = 0;  // unix seconds
  std::uint64_t curr_connections = 0;
  std::uint64_t total_connections = 0;
  std::uint64_t cmd_get = 0, cmd_set = 0, cmd_flush = 0, cmd_touch = 0, cmd_meta = 0;
  std::uint64_t get_hits = 0, get_misses = 0, get_expired = 0;
  std::uint64_t delete_hits = 0, delete_misses = 0;
  std::uint64_t incr_hits = 0, incr_misses = 0, decr_hits = 0, decr_misses = 0;
  std::uint64_t cas_hits = 0, cas_misses = 0, cas_badval = 0;
  std::uint64_t touch_hits = 0, touch_misses = 0;
  std::uint64_t bytes_read = 0, bytes_written = 0;
};

struct Settings {
  cache::Cache* cache = nullptr;
  std::uint32_t max_key = kDefaultKeyLimit;  // --memcached-keysize
  Counters* counters = nullptr;              // the worker's (required)
};

// What one execute() call did.
struct Progress {
  std::size_t consumed = 0;  // bytes of `in` used up (replied to, or discarded)
  std::size_t want = 0;      // when nothing more can run: bytes the buffer must hold (0 = any more)
  bool close = false;        // close once `out` is written (quit, or an input memcached closes on)
  bool more = false;         // stopped at kReplyBudgetBytes: complete commands may remain in `in`
};

// Replies one execute() call lets pile up before it stops running commands: a client that pipelines
// gets of big values without reading them costs the worker this much memory, not all its replies (the
// loops run the rest once these are sent; memcached likewise stops reading while it cannot write).
inline constexpr std::size_t kReplyBudgetBytes = std::size_t{1} << 20;

class Session {
 public:
  explicit Session(const Settings& settings) : s_(settings) {}

  // Runs every complete command at the front of `in`, appending each reply to `out`, until `out` holds
  // kReplyBudgetBytes (Progress::more); a command whose line or data block has not fully arrived is left
  // for the next call (nothing of it is applied).
  Progress execute(std::string_view in, std::string& out);

  struct Line;  // one tokenized command line (memcached_internal.hpp)

 private:
  // One command line (its '\n' found); false when its data block is not all there yet.
  bool run_line(const Line& line, std::string_view in, std::string& out, Progress& p);
  // The data block after a storage line: not all there yet (p.want set), not ended by "\r\n" where
  // announced (consumed), or the value (consumed).
  enum class Block { incomplete, bad, ok };
  Block data_block(const Line& line, std::string_view in, std::size_t vlen, Progress& p,
                   std::string_view& value);
  bool storage(const Line& line, std::string_view in, std::string& out, Progress& p);
  void retrieval(const Line& line, std::string& out);
  void arithmetic(const Line& line, std::string& out);
  void remove(const Line& line, std::string& out);
  void touch(const Line& line, std::string& out);
  void flush_all(const Line& line, std::string& out);
  void stats(const Line& line, std::string& out);
  // Meta commands (memcached_meta.cpp).
  bool meta(const Line& line, std::string_view in, std::string& out, Progress& p);
  void meta_get(const Line& line, std::string& out);
  bool meta_set(const Line& line, std::string_view in, std::string& out, Progress& p);
  void meta_delete(const Line& line, std::string& out);
  void meta_arithmetic(const Line& line, std::string& out);
  void meta_debug(const Line& line, std::string& out);

  Settings s_;
  std::uint64_t swallow_ = 0;  // bytes of a refused data block still to discard
  std::string scratch_;        // append/prepend/incr build the new value here
};

// memcached's exptime -> the engine's expires_in: 0 = never; negative = already expired; above 30 days
// an absolute unix time (in the past = already expired).
std::int64_t expires_in_from_exptime(std::int64_t exptime, std::int64_t now);

}  // namespace server::memcached
