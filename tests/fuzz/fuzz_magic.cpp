// The cache commands of modifier1 111 (server/cache_commands.*), above all the magic interface
// (modifier2 17: vars cmd/key/cache/size/expires and a body). The input is one request as a client
// sends it; it is framed as the worker frames it, then handled once as uWSGI's one-shot mode and once
// as our persistent mode, each time against fresh caches. Properties, besides no crash:
//   - a magic reply is a well-formed [111, L, 17] packet whose vars parse and carry a status;
//   - a set/update answered ok stored exactly the body, with the expiry the `expires` var asked for
//     (relative seconds, clamped at 2^40), read back through the cache;
//   - a get answered ok returns the stored value and a size var that says its length.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "cache/cache.hpp"
#include "server/cache_commands.hpp"
#include "server/protocol.hpp"
#include "tests/fuzz/check.hpp"

namespace {

constexpr std::int64_t kNow = 1'800'000'000;
constexpr std::uint64_t kMaxExpires = std::uint64_t{1} << 40;

cache::CacheSet& caches() {
  static cache::CacheSet* set = [] {
    auto* out = new cache::CacheSet;
    cache::Geometry small{.name = "small", .items = 4, .blocksize = 16, .keysize = 8, .purge_lru = true};
    for (cache::Geometry geometry : {cache::Geometry{.items = 16, .blocksize = 256, .keysize = 32}, small}) {
      auto engine = cache::Cache::create(geometry);
      engine->set_clock([] { return kNow; });
      out->add(std::move(engine));
    }
    return out;
  }();
  return *set;
}

// The vars the handler acts on (the last occurrence wins).
struct Magic {
  std::string_view cmd, key, cache, size, expires;
};

Magic read_magic(std::string_view payload) {
  Magic magic;
  server::VarsReader reader(payload);
  std::string_view key, value;
  while (reader.next(key, value)) {
    if (key == "cmd") magic.cmd = value;
    if (key == "key") magic.key = value;
    if (key == "cache") magic.cache = value;
    if (key == "size") magic.size = value;
    if (key == "expires") magic.expires = value;
  }
  return magic;
}

// The reply's status var ("" when there is no reply), checking that the reply is well formed.
std::string reply_status(const server::Reply& reply, std::string_view& size) {
  if (reply.head.empty()) {
    FUZZ_CHECK(reply.body.empty());
    return {};
  }
  FUZZ_CHECK(reply.head.size() >= server::kHeaderSize);
  const server::PacketHeader header = server::decode_header(reply.head.data());
  FUZZ_CHECK(header.modifier1 == server::kModifierCache && header.modifier2 == 17);
  FUZZ_CHECK(header.datasize == reply.head.size() - server::kHeaderSize);
  server::VarsReader reader(std::string_view(reply.head).substr(server::kHeaderSize));
  std::string status;
  std::string_view key, value;
  while (reader.next(key, value)) {
    if (key == "status") status = value;
    if (key == "size") size = value;
  }
  FUZZ_CHECK(!reader.failed() && !status.empty());
  return status;
}

void handle(std::string_view received, const server::Frame& frame, bool persistent) {
  for (const auto& engine : caches().all()) {  // the same known items before each request
    engine->clear();
    FUZZ_CHECK(engine->set("k1", "value1", 0) == cache::Status::ok);
    FUZZ_CHECK(engine->set("m1", "HELLO", 100) == cache::Status::ok);
  }
  const server::Request request{.header = frame.header,
                                .payload = received.substr(server::kHeaderSize, frame.header.datasize),
                                .body = received.substr(frame.payload_end, frame.total - frame.payload_end),
                                .persistent = persistent};
  server::Reply reply;
  server::CacheScratch scratch;
  std::string note;
  server::handle_cache_request(caches(), request, reply, scratch, note);
  if (frame.header.modifier2 != 17) return;

  std::string_view size;
  const std::string status = reply_status(reply, size);
  if (status != "ok") return;
  const Magic magic = read_magic(request.payload);
  cache::Cache* target = caches().find(magic.cache);
  FUZZ_CHECK(target != nullptr);
  std::string stored;
  std::int64_t expires_at = -1;
  const cache::Status got = target->get(magic.key, stored, &expires_at);
  if (magic.cmd == "set" || magic.cmd == "update") {
    FUZZ_CHECK(got == cache::Status::ok && stored == request.body);
    std::uint64_t expires = 0;
    if (!magic.expires.empty()) FUZZ_CHECK(server::parse_decimal(magic.expires, expires));
    const std::int64_t want =
        expires == 0 ? 0 : kNow + static_cast<std::int64_t>(std::min(expires, kMaxExpires));
    FUZZ_CHECK(expires_at == want);
  } else if (magic.cmd == "get") {
    FUZZ_CHECK(got == cache::Status::ok && stored == reply.body);
    FUZZ_CHECK(size == std::to_string(reply.body.size()));
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view received(reinterpret_cast<const char*>(data), size);
  const server::Frame frame =
      server::frame_request(received, {.buffer_size = 4096, .max_cache_body = 1 << 12});
  // Only complete modifier1 111 requests reach the cache handler (the worker answers the others).
  if (frame.status != server::FrameStatus::complete || frame.header.modifier1 != server::kModifierCache)
    return 0;
  handle(received, frame, false);
  handle(received, frame, true);
  return 0;
}
