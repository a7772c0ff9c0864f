#include "server/cache_commands.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>

#include "server/cache_dump.hpp"

namespace server {

namespace {

// A relative expiry larger than this is clamped: it already means "for ever", and keeping it far from
// INT64_MAX keeps now + expires from overflowing in the engine.
inline constexpr std::uint64_t kMaxExpiresSeconds = std::uint64_t{1} << 40;

// Decimal text of a number without allocating; the view lives as long as the buffer.
struct DecimalText {
  char digits[24] = {};
  std::size_t length = 0;
  explicit DecimalText(std::uint64_t value) {
    length = static_cast<std::size_t>(std::to_chars(digits, digits + sizeof digits, value).ptr - digits);
  }
  std::string_view view() const { return {digits, length}; }
};

// Patches the datasize of a head that starts with a 4-byte header followed by `datasize` bytes of vars.
void patch_datasize(std::string& head) {
  const std::size_t datasize = head.size() - kHeaderSize;
  head[1] = static_cast<char>(datasize & 0xff);
  head[2] = static_cast<char>((datasize >> 8) & 0xff);
}

// [111, L, 17] + {status: <status>}: 16 bytes for "ok".
void magic_status_reply(Reply& reply, std::string_view status) {
  reply.head.clear();
  encode_header(reply.head, kModifierCache, 0, kCacheMagic);
  append_var(reply.head, "status", status);
  patch_datasize(reply.head);
}

std::string_view cache_name(cache::Cache& cache) { return cache.geometry().name; }

// ---- modifier2 0 and 5: raw-key get ----

void handle_get(cache::Cache& cache, const Request& request, Reply& reply, std::string& note) {
  const cache::Status status = cache.get(request.payload, reply.body);
  if (status != cache::Status::ok) {
    reply.body.clear();
    if (status != cache::Status::miss) {
      note = fmt::format("cache get {}: {}", printable(request.payload), cache::describe(status));
    }
    return;
  }
  // The intended header (uWSGI 2.0.21 writes 4 bytes of a pointer here): the length wraps at 16 bits
  // for a 65536-byte value, as the intended code does.
  encode_header(reply.head, kModifierCache, static_cast<std::uint16_t>(reply.body.size() & 0xffff),
                static_cast<std::uint8_t>(CacheCommand::get));
}

void handle_stream_get(cache::Cache& cache, const Request& request, Reply& reply, std::string& note) {
  const cache::Status status = cache.get(request.payload, reply.body);
  const bool hit = status == cache::Status::ok;
  if (!hit) {
    reply.body.clear();
    if (status != cache::Status::miss) {
      note = fmt::format("cache stream get {}: {}", printable(request.payload), cache::describe(status));
    }
  }
  encode_header(reply.head, kModifierCache, 0, hit ? 1 : 0);
}

// ---- modifier2 1 and 2: fire-and-forget set and delete ----

void handle_set(cache::Cache& cache, const Request& request, std::string& note) {
  // uWSGI reads at most 3 non-empty items and uses the first two; the rest of the block is not read.
  ArrayReader reader(request.payload);
  std::string_view items[3];
  std::size_t count = 0;
  std::string_view item;
  while (count < 3 && reader.next(item)) {
    if (!item.empty()) items[count++] = item;
  }
  if (count < 3 && reader.failed()) {
    note = fmt::format("cache set (modifier2 1): {}", reader.error());
    return;
  }
  if (count < 2) {
    note = fmt::format("cache set (modifier2 1): needs a key and a value, got {} non-empty item(s)", count);
    return;
  }
  const cache::Status status = cache.set(items[0], items[1], 0);
  // A present key is set's normal outcome, not a problem worth a log line (a full cache logs itself).
  if (status != cache::Status::ok && status != cache::Status::exists) {
    note = fmt::format("cache set {} in \"{}\": {}", printable(items[0]), cache_name(cache),
                       cache::describe(status));
  }
}

void handle_del(cache::Cache& cache, const Request& request, std::string& note) {
  const cache::Status status = cache.del(request.payload);
  if (status != cache::Status::ok && status != cache::Status::miss) {
    note = fmt::format("cache del {}: {}", printable(request.payload), cache::describe(status));
  }
}

// ---- modifier2 3 and 4: dictionary get ----

// A sink that appends the value to the reply being built: reserve() may be called again (a concurrent
// write made the engine read again) and replaces what the previous call appended. (Here, not in
// cache/cache.hpp: a second ValueSink in the engine's header stops GCC from devirtualising the
// StringSink of every local hit, 24 instructions a hit measured with cachegrind.)
class AppendSink final : public cache::ValueSink {
 public:
  explicit AppendSink(std::string& out) : out_(out), base_(out.size()) {}
  char* reserve(std::size_t size) override {
    out_.resize(base_ + size);
    return out_.data() + base_;
  }
  void undo() { out_.resize(base_); }  // after a miss or an error: nothing appended

 private:
  std::string& out_;
  std::size_t base_;
};

// Every var with a non-empty value is processed in order, as uWSGI's hook parser does: `key` writes
// the value on a hit, `get` writes the value or the 404 page. (2.0.21 looks up an empty key and never
// hits; we do what its docs and code intend.)
void handle_dict_get(cache::Cache& cache, const Request& request, Reply& reply, std::string& note) {
  VarsReader reader(request.payload);
  std::string_view key;
  std::string_view value;
  while (reader.next(key, value)) {
    if (value.empty()) continue;
    const bool is_key = key == "key";
    const bool is_get = key == "get";
    if (!is_key && !is_get) continue;
    // The value is copied once, from the cache straight to the end of the reply (nginx direct access
    // serves pages of any size: one copy out of shared memory, then one writev of head and body).
    AppendSink sink(reply.body);
    const cache::Status status = cache.get(value, sink);
    if (status != cache::Status::ok) {
      sink.undo();
      // uWSGI's writer starts an error page only while nothing has been written for the request:
      // at most one 404 page, and never after a value.
      if (is_get && reply.body.empty()) reply.body.append(kDictGetNotFound);
      if (status != cache::Status::miss) {
        note = fmt::format("cache dict get {}: {}", printable(value), cache::describe(status));
      }
    }
  }
  if (reader.failed()) {
    note = fmt::format("cache dict get (modifier2 {}): {}", request.header.modifier2, reader.error());
  }
}

// ---- modifier2 6: dump ----

void handle_dump(cache::CacheSet& caches, const Request& request, Reply& reply, CacheScratch& scratch,
                 std::string& note) {
  cache::Cache* target = caches.find(request.payload);
  if (target == nullptr) {
    note = caches.empty() ? std::string("cache dump: no cache configured")
                          : fmt::format("cache dump: unknown cache {}", printable(request.payload));
    return;
  }
  // Keys first, values after: for_each_key holds a shard lock while it calls back, so the gets must
  // not run inside it. A key deleted in between is simply left out.
  scratch.keys.clear();
  target->for_each_key([&](std::string_view key) { scratch.keys.emplace_back(key); });
  std::uint64_t count = 0;
  begin_dump_image(reply.body);
  for (const std::string& key : scratch.keys) {
    std::int64_t expires = 0;
    if (target->get(key, scratch.value, &expires) != cache::Status::ok) continue;
    append_dump_record(reply.body, key, scratch.value, static_cast<std::uint64_t>(expires));
    ++count;
  }
  const cache::Geometry& geometry = target->geometry();
  encode_header(reply.head, kModifierCache, 0, kCacheDumpReply);
  append_var(reply.head, "items", DecimalText(geometry.items).view());
  append_var(reply.head, "blocksize", DecimalText(geometry.blocksize).view());
  append_var(reply.head, "keysize", DecimalText(geometry.keysize).view());
  append_var(reply.head, "format", kDumpFormat);
  append_var(reply.head, "count", DecimalText(count).view());
  append_var(reply.head, "bytes", DecimalText(reply.body.size()).view());
  patch_datasize(reply.head);
}

// ---- modifier2 17: the magic interface ----

struct MagicVars {
  std::string_view cmd;
  std::string_view key;
  std::string_view cache;
  std::string_view size;
  std::string_view expires;
  bool has_size = false;
  bool keepalive = false;
};

// Outcome of one magic command: what to tell the client in persistent mode. In uWSGI's one-shot mode
// only `ok` is ever sent; everything else closes without a reply.
enum class MagicOutcome { ok, ok_with_reply_built, notfound, error };

// The `expires` var: relative seconds, strict decimal (uWSGI parses it loosely), absent = never,
// clamped so that now + expires cannot overflow.
bool parse_magic_expires(const MagicVars& vars, std::int64_t& expires_in, std::string& note) {
  std::uint64_t expires = 0;
  if (!vars.expires.empty() && !parse_decimal(vars.expires, expires)) {
    note = fmt::format("cache magic {} {}: expires {} is not a decimal number", vars.cmd, printable(vars.key),
                       printable(vars.expires));
    return false;
  }
  expires_in = static_cast<std::int64_t>(std::min<std::uint64_t>(expires, kMaxExpiresSeconds));
  return true;
}

MagicOutcome magic_write(cache::Cache& cache, const MagicVars& vars, const Request& request, Reply& reply,
                         std::string& note) {
  const bool update = vars.cmd == "update";
  std::uint64_t size = 0;
  if (!parse_decimal(vars.size, size)) {
    note = fmt::format("cache magic {}: size {} is not a decimal number{}", vars.cmd, printable(vars.size),
                       vars.has_size ? "" : " (no size var)");
    reply.close_after = true;  // whatever the client sent after the vars was not framed
    return MagicOutcome::error;
  }
  const std::uint64_t largest = cache::largest_value(cache.geometry());
  if (size == 0 || size > largest) {
    note = fmt::format("cache magic {} {}: size {} outside 1..{} (largest value of \"{}\": {})", vars.cmd,
                       printable(vars.key), size, largest, cache_name(cache),
                       cache.geometry().bitmap ? "blocksize x blocks" : "its blocksize");
    if (request.body.size() != size) reply.close_after = true;  // the body was left unread
    return MagicOutcome::error;
  }
  if (request.body.size() != size) {
    // The framer did not take the body (size over max_cache_body): the stream cannot be trusted any more.
    note = fmt::format("cache magic {} {}: body of {} bytes, size says {} (over the frame limit)", vars.cmd,
                       printable(vars.key), request.body.size(), size);
    reply.close_after = true;
    return MagicOutcome::error;
  }
  std::int64_t expires_in = 0;
  if (!parse_magic_expires(vars, expires_in, note)) return MagicOutcome::error;
  const cache::Status status = update ? cache.update(vars.key, request.body, expires_in)
                                      : cache.set(vars.key, request.body, expires_in);
  if (status == cache::Status::ok) return MagicOutcome::ok;
  if (status != cache::Status::exists) {
    note = fmt::format("cache magic {} {} in \"{}\": {}", vars.cmd, printable(vars.key), cache_name(cache),
                       cache::describe(status));
  }
  return MagicOutcome::error;
}

MagicOutcome magic_get(cache::Cache& cache, const MagicVars& vars, Reply& reply, std::string& note) {
  std::int64_t expires = 0;
  const cache::Status status = cache.get(vars.key, reply.body, &expires);
  if (status != cache::Status::ok) {
    reply.body.clear();
    if (status == cache::Status::miss) return MagicOutcome::notfound;
    note = fmt::format("cache magic get {}: {}", printable(vars.key), cache::describe(status));
    return MagicOutcome::error;
  }
  reply.head.clear();
  encode_header(reply.head, kModifierCache, 0, kCacheMagic);
  append_var(reply.head, "status", "ok");
  append_var(reply.head, "size", DecimalText(reply.body.size()).view());
  if (expires != 0)
    append_var(reply.head, "expires", DecimalText(static_cast<std::uint64_t>(expires)).view());
  patch_datasize(reply.head);
  return MagicOutcome::ok_with_reply_built;
}

MagicOutcome magic_simple(cache::Cache& cache, const MagicVars& vars, std::string& note) {
  cache::Status status;
  if (vars.cmd == "exists") {
    status = cache.exists(vars.key);
  } else if (vars.cmd == "del") {
    status = cache.del(vars.key);
  } else {
    status = cache.clear();  // the target cache (uWSGI walks the first cache's slot count)
  }
  if (status == cache::Status::ok) return MagicOutcome::ok;
  if (status == cache::Status::miss) return MagicOutcome::notfound;
  note = fmt::format("cache magic {} {}: {}", vars.cmd, printable(vars.key), cache::describe(status));
  return MagicOutcome::error;
}

// Our extensions to the magic interface (uWSGI ignores unknown cmds and closes without a reply, so a
// client can tell it is talking to uWSGI and fall back).

// keys: status=ok, count=N, size=B, then B bytes of (u16 LE length, key)*.
MagicOutcome magic_keys(cache::Cache& cache, Reply& reply) {
  std::uint64_t count = 0;
  reply.body.clear();
  cache.for_each_key([&](std::string_view key) {
    append_u16le(reply.body, static_cast<std::uint16_t>(key.size()));
    reply.body.append(key);
    ++count;
  });
  reply.head.clear();
  encode_header(reply.head, kModifierCache, 0, kCacheMagic);
  append_var(reply.head, "status", "ok");
  append_var(reply.head, "count", DecimalText(count).view());
  append_var(reply.head, "size", DecimalText(reply.body.size()).view());
  patch_datasize(reply.head);
  return MagicOutcome::ok_with_reply_built;
}

// stats: status=ok then one var per counter, no body.
MagicOutcome magic_stats(cache::Cache& cache, Reply& reply) {
  const cache::Stats stats = cache.stats();
  const cache::Geometry& geometry = cache.geometry();
  reply.head.clear();
  encode_header(reply.head, kModifierCache, 0, kCacheMagic);
  append_var(reply.head, "status", "ok");
  append_var(reply.head, "name", geometry.name);
  const std::pair<std::string_view, std::uint64_t> counters[] = {
      {"items", stats.items},
      {"capacity", stats.capacity},
      {"blocksize", geometry.blocksize},
      {"keysize", geometry.keysize},
      {"hits", stats.hits},
      {"misses", stats.misses},
      {"full", stats.full},
      {"evictions", stats.evictions},
      {"expirations", stats.expirations},
      {"lock_waits", stats.lock_waits},
      {"lookups", stats.lookups},
      {"probes", stats.probes},
      {"shard_recoveries", stats.shard_recoveries},
      {"last_modified_at", static_cast<std::uint64_t>(stats.last_modified_at)}};
  for (const auto& [name, value] : counters) append_var(reply.head, name, DecimalText(value).view());
  patch_datasize(reply.head);
  return MagicOutcome::ok_with_reply_built;
}

// inc/dec/mul/div: the operand is the 8-byte little-endian body (size=8), as uWSGI's client sends it
// for remote math (where uWSGI then merely stores it). Reply: status=ok, value=<the new number>.
MagicOutcome magic_math(cache::Cache& cache, const MagicVars& vars, const Request& request, Reply& reply,
                        std::string& note) {
  if (request.body.size() != 8) {
    note = fmt::format("cache magic {} {}: the operand must be an 8-byte body, got {} byte(s)", vars.cmd,
                       printable(vars.key), request.body.size());
    if (!vars.has_size) reply.close_after = true;
    return MagicOutcome::error;
  }
  std::uint64_t raw = 0;
  for (int i = 7; i >= 0; --i)
    raw = (raw << 8) | static_cast<unsigned char>(request.body[static_cast<std::size_t>(i)]);
  std::int64_t expires = 0;
  if (!parse_magic_expires(vars, expires, note)) return MagicOutcome::error;
  const cache::Cache::MathOp op = vars.cmd == "inc"   ? cache::Cache::MathOp::inc
                                  : vars.cmd == "dec" ? cache::Cache::MathOp::dec
                                  : vars.cmd == "mul" ? cache::Cache::MathOp::mul
                                                      : cache::Cache::MathOp::div;
  std::int64_t result = 0;
  const cache::Status status = cache.math(vars.key, op, static_cast<std::int64_t>(raw), expires, &result);
  if (status != cache::Status::ok) {
    note = fmt::format("cache magic {} {}: {}", vars.cmd, printable(vars.key), cache::describe(status));
    return MagicOutcome::error;
  }
  reply.head.clear();
  encode_header(reply.head, kModifierCache, 0, kCacheMagic);
  append_var(reply.head, "status", "ok");
  append_var(reply.head, "value", fmt::format("{}", result));
  patch_datasize(reply.head);
  return MagicOutcome::ok_with_reply_built;
}

void handle_magic(cache::CacheSet& caches, const Request& request, Reply& reply, std::string& note) {
  MagicVars vars;
  VarsReader reader(request.payload);
  std::string_view key;
  std::string_view value;
  while (reader.next(key, value)) {  // later occurrences win (the Python client sends size twice)
    if (key == "cmd") {
      vars.cmd = value;
    } else if (key == "key") {
      vars.key = value;
    } else if (key == "cache") {
      vars.cache = value;
    } else if (key == "size") {
      vars.size = value;
      vars.has_size = true;
    } else if (key == "expires") {
      vars.expires = value;
    } else if (key == "keepalive") {
      vars.keepalive = value == "1";
    }
  }
  if (reader.failed()) {
    note = fmt::format("cache magic: {}", reader.error());
    return;
  }
  vars.keepalive = vars.keepalive || request.persistent;
  if (vars.keepalive) reply.close_after = false;

  MagicOutcome outcome = MagicOutcome::error;
  cache::Cache* target = caches.find(vars.cache);
  if (target == nullptr) {
    note = caches.empty()
               ? std::string("cache magic: no cache configured")
               : fmt::format("cache magic {}: unknown cache {}", printable(vars.cmd), printable(vars.cache));
  } else if (vars.cmd == "get") {
    outcome = magic_get(*target, vars, reply, note);
  } else if (vars.cmd == "set" || vars.cmd == "update") {
    outcome = magic_write(*target, vars, request, reply, note);
  } else if (vars.cmd == "exists" || vars.cmd == "del" || vars.cmd == "clear") {
    outcome = magic_simple(*target, vars, note);
  } else if (vars.cmd == "keys") {
    outcome = magic_keys(*target, reply);
  } else if (vars.cmd == "stats") {
    outcome = magic_stats(*target, reply);
  } else if (vars.cmd == "inc" || vars.cmd == "dec" || vars.cmd == "mul" || vars.cmd == "div") {
    outcome = magic_math(*target, vars, request, reply, note);
  } else {
    note = vars.cmd.empty() ? std::string("cache magic: no cmd")
                            : fmt::format("cache magic: unknown cmd {}", printable(vars.cmd));
  }

  switch (outcome) {
    case MagicOutcome::ok_with_reply_built:
      return;
    case MagicOutcome::ok:
      magic_status_reply(reply, "ok");
      return;
    case MagicOutcome::notfound:
    case MagicOutcome::error:
      // One-shot mode (uWSGI): close without a reply. Persistent mode: a framed status, since silence
      // cannot be told apart from a slow server on a kept connection (sent even when the connection
      // must close after it because an unframed body follows).
      if (vars.keepalive) magic_status_reply(reply, outcome == MagicOutcome::notfound ? "notfound" : "error");
      return;
  }
}

// On a --persistent-socket every reply of modifier2 0..5 (and an unknown one) is framed
// [111, length, modifier2] + bytes, length 0 meaning a miss or "done": a kept connection cannot
// signal a miss by closing. A value over 65535 bytes cannot be framed: the connection closes instead.
void frame_for_persistent_connection(const Request& request, Reply& reply, std::string& note) {
  const std::uint8_t command = request.header.modifier2;
  if (command == static_cast<std::uint8_t>(CacheCommand::dump)) return;  // its own framing; closes
  if (command == kCacheMagic) return;                                    // keepalive framing
  const bool drops_head = command == static_cast<std::uint8_t>(CacheCommand::get) ||
                          command == static_cast<std::uint8_t>(CacheCommand::stream_get);
  if (drops_head) reply.head.clear();  // 0 and 5 carry their own 4-byte head; it becomes the frame
  if (!reply.head.empty() || reply.body.size() > 0xffff) {
    note = fmt::format(
        "persistent connection: a {}-byte reply to modifier2 {} cannot be framed (max 65535); "
        "closing",
        reply.head.size() + reply.body.size(), command);
    reply.clear();
    return;
  }
  encode_header(reply.head, kModifierCache, static_cast<std::uint16_t>(reply.body.size()), command);
  reply.close_after = false;
}

void handle_cache_command(cache::CacheSet& caches, const Request& request, Reply& reply,
                          CacheScratch& scratch, std::string& note) {
  const std::uint8_t command = request.header.modifier2;
  if (command == static_cast<std::uint8_t>(CacheCommand::dump)) {
    handle_dump(caches, request, reply, scratch, note);
    return;
  }
  if (request.payload.empty()) {
    if (command <= static_cast<std::uint8_t>(CacheCommand::stream_get) || command == kCacheMagic) {
      note = fmt::format("cache command {}: empty payload", command);
    } else {
      note = fmt::format("cache command {}: unknown modifier2", command);
    }
    return;
  }
  if (command == kCacheMagic) {
    handle_magic(caches, request, reply, note);
    return;
  }
  if (command > static_cast<std::uint8_t>(CacheCommand::stream_get)) {
    note = fmt::format("cache command {}: unknown modifier2", command);
    return;
  }
  cache::Cache* default_cache = caches.default_cache();
  if (default_cache == nullptr) {
    note = fmt::format("cache command {}: no cache configured", command);
    return;
  }
  switch (static_cast<CacheCommand>(command)) {
    case CacheCommand::get:
      handle_get(*default_cache, request, reply, note);
      return;
    case CacheCommand::set:
      handle_set(*default_cache, request, note);
      return;
    case CacheCommand::del:
      handle_del(*default_cache, request, note);
      return;
    case CacheCommand::dict_get:
    case CacheCommand::dict_get_alt:
      handle_dict_get(*default_cache, request, reply, note);
      return;
    case CacheCommand::stream_get:
      handle_stream_get(*default_cache, request, reply, note);
      return;
    default:
      return;
  }
}

}  // namespace

void handle_cache_request(cache::CacheSet& caches, const Request& request, Reply& reply,
                          CacheScratch& scratch, std::string& note) {
  handle_cache_command(caches, request, reply, scratch, note);
  if (request.persistent) frame_for_persistent_connection(request, reply, note);
}

}  // namespace server
