// memcached's meta commands (mg, ms, md, ma, mn): one-letter flags after the key, replies HD/VA/EN/NS/
// EX/NF with the requested return flags in the order they were asked for, as memcached 1.6 writes them.
// Base64 keys (b) and the LRU-introspection flags (h, l) are refused: docs/differences.md.
#include <climits>
#include <cstring>
#include <type_traits>

#include "server/memcached_internal.hpp"

namespace server::memcached {

using namespace detail;

namespace {

constexpr std::string_view kBadFormat = "CLIENT_ERROR bad command line format\r\n";
constexpr std::string_view kBadToken = "CLIENT_ERROR bad token in command line format\r\n";
// md and ma say this for any flag they cannot take (unknown, repeated, or a bad number).
constexpr std::string_view kInvalidFlag = "CLIENT_ERROR invalid or duplicate flag\r\n";

// The flags of one meta command: which were given, their arguments, and their order (return flags are
// written in that order).
struct Flags {
  bool has[128] = {};
  std::string_view arg[128];
  std::string_view order[kMaxTokens];
  std::size_t count = 0;
  bool on(char f) const { return has[static_cast<unsigned char>(f)]; }
  std::string_view of(char f) const { return arg[static_cast<unsigned char>(f)]; }
};

// Fills `flags` from line tokens [first, n); an error reply (memcached's wording) when a flag is not one
// `allowed`, or repeats.
std::string_view parse_flags(const Session::Line& line, std::size_t first, std::string_view allowed,
                             Flags& flags) {
  if (line.total > kMaxTokens) return kBadFormat;
  for (std::size_t i = first; i < line.n; ++i) {
    const std::string_view tok = line.tok[i];
    const auto f = static_cast<unsigned char>(tok[0]);
    if (f >= 128 || allowed.find(static_cast<char>(f)) == std::string_view::npos)
      return "CLIENT_ERROR invalid flag\r\n";
    if (flags.has[f]) return "CLIENT_ERROR duplicate flag\r\n";
    flags.has[f] = true;
    flags.arg[f] = tok.substr(1);
    flags.order[flags.count++] = tok;
  }
  return {};
}

// The numeric argument of flag f (a ttl, a cas, a delta...).
template <typename T>
bool flag_number(const Flags& flags, char f, T& out) {
  if constexpr (std::is_same_v<T, std::uint64_t>) {
    return parse_u64(flags.of(f), out);
  } else if constexpr (std::is_same_v<T, std::uint32_t>) {
    return parse_u32(flags.of(f), out);
  } else {
    return parse_i32(flags.of(f), out);
  }
}

// The return flags of a hit: k, O, c, f, s, t as asked, in order.
void return_flags(std::string& out, const Flags& flags, std::string_view key, const cache::ItemMeta* meta,
                  std::size_t size, std::int64_t now) {
  for (std::size_t i = 0; i < flags.count; ++i) {
    const std::string_view tok = flags.order[i];
    switch (tok[0]) {
      case 'O':
        out.push_back(' ');
        out.append(tok);
        break;
      case 'k':
        out.append(" k").append(key);
        break;
      case 'c':
        if (meta == nullptr) break;
        out.append(" c");
        append_number(out, meta->cas);
        break;
      case 'f':
        if (meta == nullptr) break;
        out.append(" f");
        append_number(out, meta->flags);
        break;
      case 's':
        if (meta == nullptr) break;
        out.append(" s");
        append_number(out, size);
        break;
      case 't':
        if (meta == nullptr) break;
        out.append(" t");
        if (meta->expires == 0)
          out.append("-1");
        else
          append_signed(out, meta->expires - now > 0 ? meta->expires - now : 0);
        break;
      default:
        break;
    }
  }
}

// An mg hit: the reply written once the engine knows the item (before its bytes are copied).
class MetaValue final : public ReplySink {
 public:
  MetaValue(std::string& out, const Flags& flags, std::string_view key, bool won, std::int64_t now)
      : ReplySink(out), flags_(flags), key_(key), won_(won), now_(now) {}
  char* reserve_for(std::size_t size, const cache::ItemMeta& meta) override {
    restart();
    const bool value = flags_.on('v');
    if (value) {
      out_.append("VA ");
      append_number(out_, size);
    } else {
      out_.append("HD");
    }
    return_flags(out_, flags_, key_, &meta, size, now_);
    if (won_) out_.append(" W");
    out_.append("\r\n");
    if (!value) {
      scratch_.resize(size);
      return scratch_.data();
    }
    return value_block(size);
  }

 private:
  const Flags& flags_;
  std::string_view key_;
  bool won_;
  std::int64_t now_;
  std::string scratch_;  // the bytes of a hit asked without v
};

void miss_reply(std::string& out, std::string_view code, const Flags& flags, std::string_view key) {
  out.append(code);
  return_flags(out, flags, key, nullptr, 0, 0);
  out.append("\r\n");
}

}  // namespace

bool Session::meta(const Line& line, std::string_view in, std::string& out, Progress& p) {
  const char which = line.tok[0][1];
  ++s_.counters->cmd_meta;
  if (which == 'n') {  // mn: a no-op whose reply marks the end of a pipeline of quiet commands
    out.append("MN\r\n");
    return true;
  }
  if ((which != 'g' && which != 's' && which != 'd' && which != 'a' && which != 'e') || line.total < 2) {
    out.append("ERROR\r\n");
    return true;
  }
  if (which == 'e') {  // me: memcached's debug line for one item
    meta_debug(line, out);
    return true;
  }
  switch (which) {
    case 'g':
      meta_get(line, out);
      return true;
    case 's':
      return meta_set(line, in, out, p);
    case 'd':
      meta_delete(line, out);
      return true;
    default:
      meta_arithmetic(line, out);
      return true;
  }
}

// mg <key> <flags>*: v value, k key, c cas, f flags, s size, t ttl left, T<ttl> touch, N<ttl> create on
// miss (an empty item; the reply then carries W), O<opaque>, q (no EN on a miss), u (no LRU bump: ours
// has none to skip), E<cas> refused on reads as memcached ignores it.
void Session::meta_get(const Line& line, std::string& out) {
  Counters& c = *s_.counters;
  Flags flags;
  if (const auto error = parse_flags(line, 2, "vkcfstTNOquCE", flags); !error.empty())
    return void(out.append(error));
  const std::string_view key = line.tok[1];
  if (key.size() > s_.max_key) return void(out.append(kBadFormat));
  std::int32_t ttl = 0, vivify_ttl = 0;
  std::uint64_t unused = 0;
  if ((flags.on('T') && !flag_number(flags, 'T', ttl)) ||
      (flags.on('N') && !flag_number(flags, 'N', vivify_ttl)) ||
      (flags.on('C') && !flag_number(flags, 'C', unused)) ||
      (flags.on('E') && !flag_number(flags, 'E', unused)))
    return void(out.append(kBadToken));
  cache::Cache& cache = *s_.cache;
  ++c.cmd_get;
  bool won = false;
  const std::int64_t now = s_.cache->now();
  const std::int64_t vivify_in = expires_in_from_exptime(vivify_ttl, now);
  const std::int64_t touch_in = expires_in_from_exptime(ttl, now);
  for (int attempt = 0; attempt < 2; ++attempt) {
    MetaValue value(out, flags, key, won, now);
    cache::Status status;
    if (flags.on('T')) {
      auto decide = [&](const cache::Current&) {
        cache::Change ch;
        ch.action = cache::Change::Action::touch;
        ch.expires_in = touch_in;
        return ch;
      };
      status = cache.modify(key, decide, nullptr, &value);
      ++c.cmd_touch;
    } else {
      status = cache.get_meta(key, &value, nullptr);
    }
    if (status == cache::Status::ok) {
      ++c.get_hits;
      return;
    }
    value.undo();
    if (!flags.on('N') || won) break;
    // Create the empty item the caller will fill (memcached's autovivify); whoever created it "won".
    auto create = [&](const cache::Current& cur) {
      cache::Change ch;
      if (cur.present) return ch;
      ch.action = cache::Change::Action::write;
      ch.expires_in = vivify_in;
      return ch;
    };
    won = cache.modify(key, create) == cache::Status::ok;
  }
  ++c.get_misses;
  if (!flags.on('q')) miss_reply(out, "EN", flags, key);
}

// ms <key> <datalen> <flags>*: F<flags>, T<ttl>, C<cas> compare, c return cas, I invalidate (accepted:
// a mismatching C then still stores, as memcached does for a stale item), k, O, q (no HD),
// M<mode>: S set, E add, R replace, A append, P prepend.
bool Session::meta_set(const Line& line, std::string_view in, std::string& out, Progress& p) {
  Counters& c = *s_.counters;
  if (line.total < 3) {
    out.append(kBadFormat);
    return true;
  }
  const std::string_view key = line.tok[1];
  std::int32_t vlen = 0;
  if (key.size() > s_.max_key || !parse_i32(line.tok[2], vlen) || vlen < 0 || vlen > INT_MAX - 2) {
    out.append(kBadFormat);  // no length to trust: what follows is read as commands
    return true;
  }
  const std::size_t block = static_cast<std::size_t>(vlen) + 2;
  Flags flags;
  std::string_view error = parse_flags(line, 3, "FTCcIkOqM", flags);
  std::uint32_t client_flags = 0;
  std::int32_t ttl = 0;
  std::uint64_t compare = 0;
  char mode = 'S';
  if (error.empty() && flags.on('F') && !flag_number(flags, 'F', client_flags)) error = kBadFormat;
  if (error.empty() && ((flags.on('T') && !flag_number(flags, 'T', ttl)) ||
                        (flags.on('C') && !flag_number(flags, 'C', compare))))
    error = kBadToken;
  if (error.empty() && flags.on('M')) {
    const std::string_view m = flags.of('M');
    mode = m.size() == 1 ? static_cast<char>(m[0] & ~0x20) : '?';  // memcached takes either case
    if (std::string_view("SERAP").find(mode) == std::string_view::npos)
      error = "CLIENT_ERROR invalid mode for ms M token\r\n";
  }
  cache::Cache& cache = *s_.cache;
  if (error.empty() && static_cast<std::uint64_t>(vlen) > cache::largest_value(cache.geometry()))
    error = "SERVER_ERROR object too large for cache\r\n";
  if (!error.empty()) {  // the data block follows anyway: discard it
    out.append(error);
    swallow_ = block;
    return true;
  }
  std::string_view value;
  switch (data_block(line, in, static_cast<std::size_t>(vlen), p, value)) {
    case Block::incomplete:
      return false;
    case Block::bad:
      out.append("CLIENT_ERROR bad data chunk\r\n");
      return true;
    case Block::ok:
      break;
  }
  const std::int64_t expires_in = expires_in_from_exptime(ttl, s_.cache->now());
  ++c.cmd_set;
  std::string_view code = "HD";
  auto decide = [&](const cache::Current& cur) {
    cache::Change ch;
    ch.action = cache::Change::Action::write;
    ch.value = value;
    ch.flags = client_flags;
    ch.expires_in = expires_in;
    code = "HD";
    if (flags.on('C') && !cur.present) {
      code = "NF";
    } else if (flags.on('C') && cur.meta.cas != compare) {
      code = "EX";
    } else if (mode == 'E' && cur.present) {
      code = "NS";
    } else if ((mode == 'R' || mode == 'A' || mode == 'P') && !cur.present) {
      code = "NS";
    } else if (mode == 'A' || mode == 'P') {
      scratch_.clear();
      if (mode == 'P') scratch_.append(value);
      scratch_.append(cur.value);
      if (mode == 'A') scratch_.append(value);
      ch.value = scratch_;
      ch.flags = cur.meta.flags;
      ch.keep_expiry = true;
    }
    if (code != "HD") ch.action = cache::Change::Action::none;
    return ch;
  };
  cache::ItemMeta after;
  const cache::Status status = cache.modify(key, decide, &after);
  if (status == cache::Status::full || status == cache::Status::out_of_memory) {
    if (mode == 'S') cache.del(key);
    out.append("SERVER_ERROR out of memory storing object\r\n");
    return true;
  }
  if (status == cache::Status::value_too_large) code = "NS";
  if (code == "HD" && flags.on('q')) return true;
  out.append(code);
  return_flags(out, flags, key, code == "HD" ? &after : nullptr, value.size(), s_.cache->now());
  out.append("\r\n");
  return true;
}

// md <key> <flags>*: C<cas> compare, k, O, q (no HD). (I and T, memcached's "mark stale", and x, "drop
// the value only", are refused: docs/differences.md.)
void Session::meta_delete(const Line& line, std::string& out) {
  Counters& c = *s_.counters;
  Flags flags;
  std::uint64_t compare = 0;
  if (!parse_flags(line, 2, "CkOq", flags).empty() || (flags.on('C') && !flag_number(flags, 'C', compare)))
    return void(out.append(kInvalidFlag));
  const std::string_view key = line.tok[1];
  if (key.size() > s_.max_key) return void(out.append(kBadFormat));
  std::string_view code = "HD";
  auto decide = [&](const cache::Current& cur) {
    cache::Change ch;
    code = "HD";
    if (!cur.present) {
      code = "NF";
    } else if (flags.on('C') && cur.meta.cas != compare) {
      code = "EX";
    } else {
      ch.action = cache::Change::Action::remove;
    }
    return ch;
  };
  s_.cache->modify(key, decide);
  ++(code == "HD" ? c.delete_hits : c.delete_misses);
  if (code == "HD" && flags.on('q')) return;
  miss_reply(out, code, flags, key);
}

// ma <key> <flags>*: M<mode> I/+ incr (default), D/- decr; D<delta> (default 1); N<ttl> create on a
// miss with J<initial> (default 0); C<cas>; T<ttl> on success; v (the number as a value), t, c, k, O, q.
void Session::meta_arithmetic(const Line& line, std::string& out) {
  Counters& c = *s_.counters;
  Flags flags;
  std::uint64_t delta = 1, initial = 0, compare = 0;
  std::int32_t vivify_ttl = 0, ttl = 0;
  if (!parse_flags(line, 2, "MDNJCTvtckOq", flags).empty() ||
      (flags.on('D') && !flag_number(flags, 'D', delta)) ||
      (flags.on('J') && !flag_number(flags, 'J', initial)) ||
      (flags.on('N') && !flag_number(flags, 'N', vivify_ttl)) ||
      (flags.on('T') && !flag_number(flags, 'T', ttl)) ||
      (flags.on('C') && !flag_number(flags, 'C', compare)))
    return void(out.append(kInvalidFlag));
  const std::string_view key = line.tok[1];
  if (key.size() > s_.max_key) return void(out.append(kBadFormat));
  bool incr = true;
  if (flags.on('M')) {
    const std::string_view m = flags.of('M');
    const char mode = m.size() == 1 ? m[0] : '?';
    if (mode == 'I' || mode == 'i' || mode == '+') {
      incr = true;
    } else if (mode == 'D' || mode == 'd' || mode == '-') {
      incr = false;
    } else {
      return void(out.append("CLIENT_ERROR invalid mode for ma M token\r\n"));
    }
  }
  const std::int64_t now = s_.cache->now();
  std::uint64_t result = 0;
  std::string_view code = "HD";
  auto decide = [&](const cache::Current& cur) {
    cache::Change ch;
    code = "HD";
    if (!cur.present) {
      if (!flags.on('N')) {
        code = "NF";
        return ch;
      }
      result = initial;
      scratch_.clear();
      append_number(scratch_, initial);
      ch.action = cache::Change::Action::write;
      ch.value = scratch_;
      ch.expires_in = expires_in_from_exptime(vivify_ttl, now);
      return ch;
    }
    if (flags.on('C') && cur.meta.cas != compare) {
      code = "EX";
      return ch;
    }
    if (apply_delta(cur.value, incr, delta, scratch_, result) != DeltaResult::ok) {
      code = "NN";
      return ch;
    }
    ch.action = cache::Change::Action::write;
    ch.value = scratch_;
    ch.flags = cur.meta.flags;
    ch.keep_expiry = !flags.on('T');
    ch.expires_in = expires_in_from_exptime(ttl, now);
    return ch;
  };
  cache::ItemMeta after;
  const cache::Status status = s_.cache->modify(key, decide, &after);
  if (code == "NN")
    return void(out.append("CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"));
  if (status == cache::Status::full || status == cache::Status::out_of_memory) code = "NS";
  if (code != "HD") {
    ++(incr ? c.incr_misses : c.decr_misses);
    return miss_reply(out, code, flags, key);
  }
  ++(incr ? c.incr_hits : c.decr_hits);
  if (flags.on('q')) return;
  std::string number;
  append_number(number, result);
  if (flags.on('v')) {
    out.append("VA ");
    append_number(out, number.size());
  } else {
    out.append("HD");
  }
  return_flags(out, flags, key, &after, number.size(), now);
  out.append("\r\n");
  if (flags.on('v')) out.append(number).append("\r\n");
}

}  // namespace server::memcached

namespace server::memcached {

// me <key>: memcached's debug view of an item (the fields ours keeps; la and fetch are not tracked).
void Session::meta_debug(const Line& line, std::string& out) {
  const std::string_view key = line.tok[1];
  if (key.size() > s_.max_key) return void(out.append(kBadFormat));
  cache::ItemMeta meta;
  std::string value;
  cache::StringSink sink(value);
  if (s_.cache->get(key, sink) != cache::Status::ok ||
      s_.cache->get_meta(key, nullptr, &meta) != cache::Status::ok)
    return void(out.append("EN\r\n"));
  const std::int64_t now = s_.cache->now();
  out.append("ME ").append(key).append(" exp=");
  if (meta.expires == 0)
    out.append("-1");
  else
    append_signed(out, meta.expires - now);
  out.append(" la=0 cas=");
  append_number(out, meta.cas);
  out.append(" fetch=no cls=1 size=");
  append_number(out, key.size() + value.size());
  out.append("\r\n");
}

}  // namespace server::memcached
