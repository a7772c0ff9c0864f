// memcached's text protocol: framing, tokens, numbers, and the classic commands. Replies and the
// conditions for each error are memcached 1.6's (proto_text.c's behaviour, checked byte for byte by
// tests/integration/test_memcached_compat.py against Debian's memcached); deliberate differences are in
// docs/differences.md.
#include <sys/resource.h>
#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <ctime>

#include "server/memcached_internal.hpp"

namespace server::memcached {

std::int64_t expires_in_from_exptime(std::int64_t exptime, std::int64_t now) {
  if (exptime == 0) return 0;
  if (exptime < 0) return -1;
  if (exptime <= kRelativeLimit) return exptime;
  const std::int64_t in = exptime - now;
  return in > 0 ? in : -1;
}

namespace detail {

void tokenize(Line& line) {
  line.n = 0;
  line.total = 0;
  std::size_t i = 0;
  const std::string_view t = line.text;
  while (i < t.size()) {
    while (i < t.size() && t[i] == ' ') ++i;
    if (i == t.size()) break;
    std::size_t j = i;
    while (j < t.size() && t[j] != ' ') ++j;
    if (line.n < kMaxTokens) line.tok[line.n++] = t.substr(i, j - i);
    ++line.total;
    i = j;
  }
}

// The token NUL-terminated, as memcached's strto* calls see it.
namespace {
struct CString {
  char small[64];
  std::string big;
  const char* p;
  explicit CString(std::string_view s) {
    if (s.size() < sizeof small) {
      std::memcpy(small, s.data(), s.size());
      small[s.size()] = '\0';
      p = small;
    } else {
      big.assign(s);
      p = big.c_str();
    }
  }
};
bool ends_number(const char* start, const char* end) {
  return (*end != '\0' && std::isspace(static_cast<unsigned char>(*end)) != 0) ||
         (*end == '\0' && end != start);
}
}  // namespace

bool parse_u32(std::string_view tok, std::uint32_t& out) {
  CString c(tok);
  errno = 0;
  char* end = nullptr;
  const unsigned long v = std::strtoul(c.p, &end, 10);
  if (errno == ERANGE || end == c.p || !ends_number(c.p, end)) return false;
  if (static_cast<long>(v) < 0 && std::memchr(c.p, '-', static_cast<std::size_t>(end - c.p)) != nullptr)
    return false;
  out = static_cast<std::uint32_t>(v);  // memcached keeps the low 32 bits
  return true;
}

bool parse_i32(std::string_view tok, std::int32_t& out) {
  CString c(tok);
  errno = 0;
  char* end = nullptr;
  const long v = std::strtol(c.p, &end, 10);
  if (errno == ERANGE || end == c.p || !ends_number(c.p, end)) return false;
  if (v > INT_MAX || v < INT_MIN) return false;
  out = static_cast<std::int32_t>(v);
  return true;
}

bool parse_u64(std::string_view tok, std::uint64_t& out) {
  CString c(tok);
  errno = 0;
  char* end = nullptr;
  const unsigned long long v = std::strtoull(c.p, &end, 10);
  if (errno == ERANGE || end == c.p || !ends_number(c.p, end)) return false;
  if (static_cast<long long>(v) < 0 && std::memchr(c.p, '-', static_cast<std::size_t>(end - c.p)) != nullptr)
    return false;
  out = v;
  return true;
}

void append_number(std::string& out, std::uint64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, static_cast<std::size_t>(r.ptr - buf));
}

void append_signed(std::string& out, std::int64_t v) {
  char buf[24];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  out.append(buf, static_cast<std::size_t>(r.ptr - buf));
}

// incr/decr on a stored decimal (memcached's do_add_delta): the value must read as an unsigned 64-bit
// number; incr wraps, decr stops at 0. A result no longer than the old value is padded with spaces to
// its length (memcached rewrites it in place); a longer one replaces it. Flags and expiry stay.
DeltaResult apply_delta(std::string_view value, bool incr, std::uint64_t delta, std::string& scratch,
                        std::uint64_t& result) {
  if (value.empty()) return DeltaResult::non_numeric;
  std::uint64_t current = 0;
  if (!parse_u64(value, current)) return DeltaResult::non_numeric;
  result = incr ? current + delta : (delta > current ? 0 : current - delta);
  scratch.clear();
  append_number(scratch, result);
  if (scratch.size() < value.size()) scratch.append(value.size() - scratch.size(), ' ');
  return DeltaResult::ok;
}

}  // namespace detail

using namespace detail;

namespace {

constexpr std::string_view kBadFormat = "CLIENT_ERROR bad command line format\r\n";

// The VALUE line and the bytes of one hit, written straight into the reply.
class ValueLine final : public ReplySink {
 public:
  ValueLine(std::string& out, std::string_view key, bool with_cas)
      : ReplySink(out), key_(key), with_cas_(with_cas) {}
  char* reserve_for(std::size_t size, const cache::ItemMeta& meta) override {
    restart();
    out_.append("VALUE ");
    out_.append(key_);
    out_.push_back(' ');
    append_number(out_, meta.flags);
    out_.push_back(' ');
    append_number(out_, size);
    if (with_cas_) {
      out_.push_back(' ');
      append_number(out_, meta.cas);
    }
    out_.append("\r\n");
    return value_block(size);
  }

 private:
  std::string_view key_;
  bool with_cas_;
};

// memcached's set_noreply_maybe: the last token is "noreply".
bool noreply_of(const Line& line) { return line.n > 0 && line.tok[line.n - 1] == "noreply"; }

void reply(std::string& out, bool noreply, std::string_view text) {
  if (!noreply) out.append(text);
}

}  // namespace

Progress Session::execute(std::string_view in, std::string& out) {
  Progress p;
  Counters& c = *s_.counters;
  const std::size_t out_before = out.size();
  while (p.consumed < in.size() && !p.close) {
    if (out.size() >= kReplyBudgetBytes) {
      p.more = true;
      break;
    }
    if (swallow_ > 0) {  // the rest of a refused data block
      const std::size_t n =
          static_cast<std::size_t>(std::min<std::uint64_t>(swallow_, in.size() - p.consumed));
      swallow_ -= n;
      p.consumed += n;
      continue;
    }
    const std::string_view rest = in.substr(p.consumed);
    if (static_cast<unsigned char>(rest[0]) == kBinaryMagic) {
      // A binary-protocol request: this server speaks text and meta only; say so once and close.
      out.append("CLIENT_ERROR binary protocol is not supported\r\n");
      p.consumed = in.size();
      p.close = true;
      break;
    }
    const std::size_t nl = rest.find('\n');
    if (nl == std::string_view::npos) {
      std::size_t lead = 0;
      while (lead < rest.size() && rest[lead] == ' ') ++lead;
      const std::string_view cmd = rest.substr(lead);
      const bool get = cmd.starts_with("get ") || cmd.starts_with("gets ");
      if (rest.size() > kMaxLine && (lead > 100 || !get || rest.size() > kMaxGetLine)) {
        p.consumed = in.size();  // memcached closes without a word
        p.close = true;
      }
      break;
    }
    Line line;
    line.text = rest.substr(0, nl > 0 && rest[nl - 1] == '\r' ? nl - 1 : nl);
    line.end = nl + 1;
    tokenize(line);
    Progress step;
    if (!run_line(line, rest, out, step)) {
      p.want = p.consumed + step.want;
      break;
    }
    p.consumed += step.consumed;
    p.close = step.close;
  }
  c.bytes_read += p.consumed;
  c.bytes_written += out.size() - out_before;
  return p;
}

// Dispatches one line (memcached's process_command_ascii: the same token counts give ERROR).
bool Session::run_line(const Line& line, std::string_view in, std::string& out, Progress& p) {
  p.consumed = line.end;
  if (line.n == 0) {
    out.append("ERROR\r\n");
    return true;
  }
  const std::string_view cmd = line.tok[0];
  const std::size_t n = line.total;
  if (cmd.size() == 2 && cmd[0] == 'm') return meta(line, in, out, p);
  if ((cmd == "get" || cmd == "gets") && n >= 2) return retrieval(line, out), true;
  if ((cmd == "gat" || cmd == "gats") && n >= 2) return retrieval(line, out), true;
  if ((cmd == "set" || cmd == "add" || cmd == "replace" || cmd == "append" || cmd == "prepend") &&
      (n == 5 || n == 6))
    return storage(line, in, out, p);
  if (cmd == "cas" && (n == 6 || n == 7)) return storage(line, in, out, p);
  if ((cmd == "incr" || cmd == "decr") && (n == 3 || n == 4)) return arithmetic(line, out), true;
  if (cmd == "delete" && n >= 2 && n <= 4) return remove(line, out), true;
  if (cmd == "touch" && (n == 3 || n == 4)) return touch(line, out), true;
  if (cmd == "flush_all" && n <= 3) return flush_all(line, out), true;
  if (cmd == "stats") return stats(line, out), true;
  if (cmd == "version") {
    out.append("VERSION ").append(kVersion).append("\r\n");
    return true;
  }
  if (cmd == "verbosity" && (n == 2 || n == 3)) {
    reply(out, noreply_of(line), "OK\r\n");  // logging is the server's own: accepted, nothing changes
    return true;
  }
  if (cmd == "quit") {
    p.close = true;
    return true;
  }
  out.append("ERROR\r\n");
  return true;
}

Session::Block Session::data_block(const Line& line, std::string_view in, std::size_t vlen, Progress& p,
                                   std::string_view& value) {
  const std::size_t end = line.end + vlen + 2;
  if (in.size() < end) {
    p.want = end;
    return Block::incomplete;
  }
  p.consumed = end;
  if (in.substr(line.end + vlen, 2) != "\r\n") return Block::bad;
  value = in.substr(line.end, vlen);
  return Block::ok;
}

bool Session::storage(const Line& line, std::string_view in, std::string& out, Progress& p) {
  Counters& c = *s_.counters;
  const std::string_view cmd = line.tok[0];
  const bool is_cas = cmd == "cas";
  const bool noreply = noreply_of(line);
  const std::string_view key = line.tok[1];
  std::uint32_t flags = 0;
  std::int32_t exptime = 0, vlen = 0;
  std::uint64_t cas = 0;
  if (key.size() > s_.max_key || !parse_u32(line.tok[2], flags) || !parse_i32(line.tok[3], exptime) ||
      !parse_i32(line.tok[4], vlen) || (is_cas && !parse_u64(line.tok[5], cas)) || vlen < 0 ||
      vlen > INT_MAX - 2) {
    reply(out, noreply, kBadFormat);
    return true;
  }
  const std::size_t block = static_cast<std::size_t>(vlen) + 2;
  cache::Cache& cache = *s_.cache;
  if (static_cast<std::uint64_t>(vlen) > cache::largest_value(cache.geometry())) {
    // Refused before the data arrives: the block is discarded as it comes (memcached's swallow). A
    // failed set must not leave the old value readable.
    reply(out, noreply, "SERVER_ERROR object too large for cache\r\n");
    if (cmd == "set") cache.del(key);
    swallow_ = block;
    return true;
  }
  std::string_view value;
  switch (data_block(line, in, static_cast<std::size_t>(vlen), p, value)) {
    case Block::incomplete:
      return false;
    case Block::bad:
      reply(out, noreply, "CLIENT_ERROR bad data chunk\r\n");
      return true;
    case Block::ok:
      break;
  }
  const std::int64_t expires_in = expires_in_from_exptime(exptime, s_.cache->now());
  ++c.cmd_set;

  enum class Outcome { stored, not_stored, exists, not_found } outcome = Outcome::stored;
  auto decide = [&](const cache::Current& cur) -> cache::Change {
    cache::Change ch;
    ch.action = cache::Change::Action::write;
    ch.value = value;
    ch.flags = flags;
    ch.expires_in = expires_in;
    outcome = Outcome::stored;
    if (cmd == "add" && cur.present) {
      outcome = Outcome::not_stored;
    } else if ((cmd == "replace" || cmd == "append" || cmd == "prepend") && !cur.present) {
      outcome = Outcome::not_stored;
    } else if (is_cas && !cur.present) {
      outcome = Outcome::not_found;
    } else if (is_cas && cur.meta.cas != cas) {
      outcome = Outcome::exists;
    } else if (cmd == "append" || cmd == "prepend") {
      // The item keeps its flags and expiry; only the bytes grow.
      scratch_.clear();
      if (cmd == "prepend") scratch_.append(value);
      scratch_.append(cur.value);
      if (cmd == "append") scratch_.append(value);
      ch.value = scratch_;
      ch.flags = cur.meta.flags;
      ch.keep_expiry = true;
    }
    if (outcome != Outcome::stored) ch.action = cache::Change::Action::none;
    return ch;
  };
  const cache::Status status = cache.modify(key, decide);
  if (is_cas) {
    if (outcome == Outcome::not_found) ++c.cas_misses;
    if (outcome == Outcome::exists) ++c.cas_badval;
    if (outcome == Outcome::stored && status == cache::Status::ok) ++c.cas_hits;
  }
  if (status == cache::Status::full || status == cache::Status::out_of_memory) {
    if (cmd == "set") cache.del(key);
    out.append("SERVER_ERROR out of memory storing object\r\n");  // shown even with noreply
    return true;
  }
  if (status == cache::Status::value_too_large) {  // an append that outgrew the block
    reply(out, noreply, "NOT_STORED\r\n");
    return true;
  }
  switch (outcome) {
    case Outcome::stored:
      reply(out, noreply, "STORED\r\n");
      break;
    case Outcome::not_stored:
      reply(out, noreply, "NOT_STORED\r\n");
      break;
    case Outcome::exists:
      reply(out, noreply, "EXISTS\r\n");
      break;
    case Outcome::not_found:
      reply(out, noreply, "NOT_FOUND\r\n");
      break;
  }
  return true;
}

void Session::retrieval(const Line& line, std::string& out) {
  Counters& c = *s_.counters;
  const std::string_view cmd = line.tok[0];
  const bool with_cas = cmd == "gets" || cmd == "gats";
  const bool touching = cmd[1] == 'a';
  std::int64_t expires_in = 0;
  if (touching) {
    std::int32_t exptime = 0;
    if (!parse_i32(line.tok[1], exptime)) {
      out.append("CLIENT_ERROR invalid exptime argument\r\n");
      return;
    }
    expires_in = expires_in_from_exptime(exptime, s_.cache->now());
  }
  // Keys come from the whole line: a multi-get may carry far more than kMaxTokens.
  Line keys;
  keys.text = line.text;
  std::size_t i = 0, index = 0;
  const std::string_view t = line.text;
  const std::size_t first_key = touching ? 2 : 1;
  const std::size_t mark = out.size();
  while (i < t.size()) {
    while (i < t.size() && t[i] == ' ') ++i;
    if (i == t.size()) break;
    std::size_t j = i;
    while (j < t.size() && t[j] != ' ') ++j;
    const std::string_view key = t.substr(i, j - i);
    i = j;
    if (index++ < first_key) continue;
    if (key.size() > s_.max_key) {
      out.resize(mark);  // none of this command's VALUEs: the error alone
      out.append(kBadFormat);
      return;
    }
    ValueLine value(out, key, with_cas);
    cache::Status status;
    if (touching) {
      ++c.cmd_touch;
      auto decide = [&](const cache::Current&) {
        cache::Change ch;
        ch.action = cache::Change::Action::touch;
        ch.expires_in = expires_in;
        return ch;
      };
      status = s_.cache->modify(key, decide, nullptr, &value);
      ++(status == cache::Status::ok ? c.touch_hits : c.touch_misses);
    } else {
      status = s_.cache->get_meta(key, &value, nullptr);
    }
    ++c.cmd_get;
    if (status == cache::Status::ok) {
      ++c.get_hits;
    } else {
      ++c.get_misses;
      value.undo();
    }
  }
  out.append("END\r\n");
}

void Session::arithmetic(const Line& line, std::string& out) {
  Counters& c = *s_.counters;
  const bool incr = line.tok[0] == "incr";
  const bool noreply = noreply_of(line);
  const std::string_view key = line.tok[1];
  if (key.size() > s_.max_key) return reply(out, noreply, kBadFormat);
  std::uint64_t delta = 0;
  if (!parse_u64(line.tok[2], delta))
    return reply(out, noreply, "CLIENT_ERROR invalid numeric delta argument\r\n");
  std::uint64_t result = 0;
  auto decide = [&](const cache::Current& cur) {
    cache::Change ch;
    if (!cur.present) {
      ch.status = cache::Status::miss;
      return ch;
    }
    if (apply_delta(cur.value, incr, delta, scratch_, result) != DeltaResult::ok) {
      ch.status = cache::Status::not_a_number;
      return ch;
    }
    ch.action = cache::Change::Action::write;
    ch.value = scratch_;
    ch.flags = cur.meta.flags;
    ch.keep_expiry = true;
    return ch;
  };
  const cache::Status status = s_.cache->modify(key, decide);
  switch (status) {
    case cache::Status::ok:
      ++(incr ? c.incr_hits : c.decr_hits);
      if (!noreply) {
        append_number(out, result);
        out.append("\r\n");
      }
      return;
    case cache::Status::miss:
      ++(incr ? c.incr_misses : c.decr_misses);
      return reply(out, noreply, "NOT_FOUND\r\n");
    case cache::Status::not_a_number:
      return reply(out, noreply, "CLIENT_ERROR cannot increment or decrement non-numeric value\r\n");
    default:
      out.append("SERVER_ERROR out of memory\r\n");
      return;
  }
}

void Session::remove(const Line& line, std::string& out) {
  Counters& c = *s_.counters;
  const bool noreply = noreply_of(line);
  if (line.total > 2) {  // only "delete <key> 0", "delete <key> [0] noreply"
    const bool hold_is_zero = line.tok[2] == "0";
    const bool valid =
        (line.total == 3 && (hold_is_zero || noreply)) || (line.total == 4 && hold_is_zero && noreply);
    if (!valid)
      return reply(out, noreply, "CLIENT_ERROR bad command line format.  Usage: delete <key> [noreply]\r\n");
  }
  const std::string_view key = line.tok[1];
  if (key.size() > s_.max_key) return reply(out, noreply, kBadFormat);
  if (s_.cache->del(key) == cache::Status::ok) {
    ++c.delete_hits;
    return reply(out, noreply, "DELETED\r\n");
  }
  ++c.delete_misses;
  reply(out, noreply, "NOT_FOUND\r\n");
}

void Session::touch(const Line& line, std::string& out) {
  Counters& c = *s_.counters;
  const bool noreply = noreply_of(line);
  const std::string_view key = line.tok[1];
  if (key.size() > s_.max_key) return reply(out, noreply, kBadFormat);
  std::int32_t exptime = 0;
  if (!parse_i32(line.tok[2], exptime))
    return reply(out, noreply, "CLIENT_ERROR invalid exptime argument\r\n");
  ++c.cmd_touch;
  const std::int64_t expires_in = expires_in_from_exptime(exptime, s_.cache->now());
  auto decide = [&](const cache::Current&) {
    cache::Change ch;
    ch.action = cache::Change::Action::touch;
    ch.expires_in = expires_in;
    return ch;
  };
  if (s_.cache->modify(key, decide) == cache::Status::ok) {
    ++c.touch_hits;
    return reply(out, noreply, "TOUCHED\r\n");
  }
  ++c.touch_misses;
  reply(out, noreply, "NOT_FOUND\r\n");
}

// flush_all [delay] [noreply]. With a delay, every item present now expires within it (an item written
// later is not affected: docs/differences.md).
void Session::flush_all(const Line& line, std::string& out) {
  const bool noreply = noreply_of(line);
  std::int32_t delay = 0;
  if (line.total != (noreply ? 2u : 1u) && !parse_i32(line.tok[1], delay))
    return reply(out, noreply, "CLIENT_ERROR invalid exptime argument\r\n");
  ++s_.counters->cmd_flush;
  cache::Cache& cache = *s_.cache;
  const std::int64_t expires_in = expires_in_from_exptime(delay, s_.cache->now());
  if (expires_in <= 0) {
    cache.clear();
  } else {
    const std::int64_t deadline = s_.cache->now() + expires_in;
    cache.for_each_key([&](std::string_view key) {
      auto decide = [&](const cache::Current& cur) {
        cache::Change ch;
        if (cur.present && (cur.meta.expires == 0 || cur.meta.expires > deadline)) {
          ch.action = cache::Change::Action::touch;
          ch.expires_in = expires_in;
        }
        return ch;
      };
      cache.modify(key, decide);
    });
  }
  reply(out, noreply, "OK\r\n");
}

void Session::stats(const Line& line, std::string& out) {
  const Counters& c = *s_.counters;
  cache::Cache& cache = *s_.cache;
  const cache::Stats st = cache.stats();
  const cache::Geometry& g = cache.geometry();
  const auto stat = [&](std::string_view name, std::uint64_t v) {
    out.append("STAT ").append(name).push_back(' ');
    append_number(out, v);
    out.append("\r\n");
  };
  if (line.total == 1) {
    const std::int64_t now = s_.cache->now();
    rusage usage{};
    getrusage(RUSAGE_SELF, &usage);
    stat("pid", static_cast<std::uint64_t>(getpid()));
    stat("uptime", static_cast<std::uint64_t>(now - c.started_at));
    stat("time", static_cast<std::uint64_t>(now));
    out.append("STAT version ").append(kVersion).append("\r\n");
    stat("pointer_size", sizeof(void*) * 8);
    const auto seconds = [&](std::string_view name, const timeval& tv) {
      out.append("STAT ").append(name).push_back(' ');
      char buf[48];
      const int len = std::snprintf(buf, sizeof buf, "%ld.%06ld", static_cast<long>(tv.tv_sec),
                                    static_cast<long>(tv.tv_usec));
      out.append(buf, static_cast<std::size_t>(len)).append("\r\n");
    };
    seconds("rusage_user", usage.ru_utime);
    seconds("rusage_system", usage.ru_stime);
    stat("curr_connections", c.curr_connections);
    stat("total_connections", c.total_connections);
    stat("cmd_get", c.cmd_get);
    stat("cmd_set", c.cmd_set);
    stat("cmd_flush", c.cmd_flush);
    stat("cmd_touch", c.cmd_touch);
    stat("cmd_meta", c.cmd_meta);
    stat("get_hits", c.get_hits);
    stat("get_misses", c.get_misses);
    stat("get_expired", c.get_expired);
    stat("delete_misses", c.delete_misses);
    stat("delete_hits", c.delete_hits);
    stat("incr_misses", c.incr_misses);
    stat("incr_hits", c.incr_hits);
    stat("decr_misses", c.decr_misses);
    stat("decr_hits", c.decr_hits);
    stat("cas_misses", c.cas_misses);
    stat("cas_hits", c.cas_hits);
    stat("cas_badval", c.cas_badval);
    stat("touch_hits", c.touch_hits);
    stat("touch_misses", c.touch_misses);
    stat("bytes_read", c.bytes_read);
    stat("bytes_written", c.bytes_written);
    stat("limit_maxbytes", cache::value_capacity(g));
    stat("threads", 1);
    stat("curr_items", st.items);
    stat("evictions", st.evictions);
    stat("reclaimed", st.expirations);
    out.append("END\r\n");
    return;
  }
  const std::string_view sub = line.tok[1];
  if (sub == "items") {
    // One class: items live in runs of the data area's blocks.
    if (st.items > 0) {
      stat("items:1:number", st.items);
      stat("items:1:evicted", st.evictions);
      stat("items:1:outofmemory", st.full);
      stat("items:1:reclaimed", st.expirations);
    }
    out.append("END\r\n");
    return;
  }
  if (sub == "slabs") {  // one class: the data area's blocks, allocated whole when the cache was created
    stat("1:chunk_size", st.block_bytes);
    stat("1:total_chunks", st.blocks);
    stat("1:used_chunks", st.blocks - st.blocks_free);
    stat("1:free_chunks", st.blocks_free);
    stat("1:get_hits", st.hits);
    stat("active_slabs", 1);
    stat("total_malloced", st.blocks * st.block_bytes);
    out.append("END\r\n");
    return;
  }
  if (sub == "settings" && line.total == 2) {
    stat("maxbytes", cache::value_capacity(g));
    stat("item_size_max", cache::largest_value(g));
    stat("key_size_max", s_.max_key);
    out.append("STAT evictions ").append(g.purge_lru ? "on" : "off").append("\r\n");
    out.append("STAT cas_enabled yes\r\nSTAT flush_enabled yes\r\nSTAT binding_protocol ascii\r\n");
    out.append("STAT idle_timeout 0\r\nEND\r\n");
    return;
  }
  if (sub == "reset" && line.total == 2) {
    Counters& mine = *s_.counters;
    const Counters kept = mine;
    mine = Counters{};
    mine.started_at = kept.started_at;
    mine.curr_connections = kept.curr_connections;
    out.append("RESET\r\n");
    return;
  }
  out.append("ERROR\r\n");
}

}  // namespace server::memcached
