// UDP cache sync datagrams (server/udp_sync.*): what a cache with udp= applies from whoever can send it
// a datagram. The input is one datagram. Properties, besides no crash:
//   - a datagram is applied only when it is a well-formed set [key, value[, expires]] or delete [key];
//   - an applied set stored exactly its value under its key with its absolute expiry (or nothing, when
//     that expiry has passed); an applied delete left the key absent;
//   - the packets we send (udp_set_packet / udp_delete_packet) made from what was applied are applied
//     the same way (round trip).
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cache/cache.hpp"
#include "server/protocol.hpp"
#include "server/udp_sync.hpp"
#include "tests/fuzz/check.hpp"

namespace {

cache::Cache& target() {
  static std::unique_ptr<cache::Cache> engine =
      cache::Cache::create(cache::Geometry{.name = "u", .items = 8, .blocksize = 64, .keysize = 16});
  return *engine;
}

struct Datagram {
  bool well_formed = false;
  std::uint8_t modifier2 = 0;
  std::vector<std::string_view> items;
};

// What the datagram says, read with the array reader (fuzzed on its own by fuzz_uwsgi_packet).
Datagram read_datagram(std::string_view datagram) {
  Datagram out;
  if (datagram.size() < server::kHeaderSize) return out;
  const server::PacketHeader header = server::decode_header(datagram.data());
  out.modifier2 = header.modifier2;
  server::ArrayReader reader(datagram.substr(server::kHeaderSize));
  for (std::string_view item; reader.next(item);) out.items.push_back(item);
  out.well_formed = header.modifier1 == server::kModifierCache &&
                    header.datasize == datagram.size() - server::kHeaderSize && !reader.failed() &&
                    !out.items.empty() && !out.items[0].empty();
  return out;
}

// Applies the datagram to an empty cache and checks the outcome against what it says.
void apply_and_check(std::string_view datagram, bool resend) {
  cache::Cache& cache = target();
  cache.clear();
  FUZZ_CHECK(cache.set("k", "before", 0) == cache::Status::ok);
  const Datagram said = read_datagram(datagram);
  std::string error;
  const bool applied = server::apply_udp_packet(cache, datagram, &error);
  FUZZ_CHECK(applied || !error.empty());
  if (!applied) return;
  FUZZ_CHECK(said.well_formed);
  const std::string_view key = said.items[0];
  std::string value;
  std::int64_t expires_at = 0;
  const cache::Status got = cache.get(key, value, &expires_at);
  if (said.modifier2 == server::kUdpDelete) {
    FUZZ_CHECK(said.items.size() == 1 && got != cache::Status::ok);  // miss, or a key this cache cannot hold
    if (resend) apply_and_check(server::udp_delete_packet(key), false);
    return;
  }
  FUZZ_CHECK(said.modifier2 == server::kUdpSet && (said.items.size() == 2 || said.items.size() == 3));
  std::uint64_t expires = 0;
  if (said.items.size() == 3 && !said.items[2].empty())
    FUZZ_CHECK(server::parse_decimal(said.items[2], expires));
  const auto now = static_cast<std::uint64_t>(std::time(nullptr));
  if (expires != 0 && expires <= now) {  // expired in transit: not stored (the key keeps its old state)
    FUZZ_CHECK(key == "k" ? got == cache::Status::ok && value == "before" : got == cache::Status::miss);
    return;
  }
  FUZZ_CHECK(got == cache::Status::ok && value == said.items[1]);
  if (expires == 0) {
    FUZZ_CHECK(expires_at == 0);
  } else {
    // The engine stores now + (expires - now) with its own clock (one second may pass in between),
    // "for ever" (INT64_MAX) beyond what its clock can say.
    const auto stored = static_cast<std::uint64_t>(expires_at);
    const std::uint64_t want = std::min<std::uint64_t>(expires, INT64_MAX);
    FUZZ_CHECK(stored + 1 >= want && stored <= want + 1);
  }
  if (resend) apply_and_check(server::udp_set_packet(key, value, expires), false);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  apply_and_check(std::string_view(reinterpret_cast<const char*>(data), size), true);
  return 0;
}
