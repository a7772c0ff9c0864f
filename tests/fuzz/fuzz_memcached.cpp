// The memcached protocol session (server/memcached_*.cpp): text and meta commands, data blocks,
// swallowed blocks, noreply, closes. The input is what one client sent. Properties, besides no crash
// and no sanitizer report:
//   - the input arriving in pieces (sizes from the input itself) gives the same replies as the whole
//     input at once, and the same close; replies are compared with every run of digits masked (the
//     stats' pid and rusage differ). Both runs read one frozen clock (the engine's, which the session
//     reads too): with the wall clock, an item stored for 1 s expired in one run and not in the other
//     when a second boundary fell between them (found by this target on a loaded machine);
//   - execute() never consumes more than it was given, and asks for more (want) only beyond it.
#include <cctype>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "cache/cache.hpp"
#include "server/memcached.hpp"
#include "tests/fuzz/check.hpp"

namespace {

std::unique_ptr<cache::Cache> fresh_cache() {
  cache::Geometry g;
  g.items = 64;
  g.blocksize = 256;
  g.keysize = 300;
  auto cache = cache::Cache::create(g);
  cache->set_clock([] { return std::int64_t{1'800'000'000}; });  // 2027-01-15: absolute exptimes work
  return cache;
}

struct Outcome {
  std::string out;
  bool closed = false;
};

Outcome feed(std::string_view input, bool pieces) {
  auto cache = fresh_cache();
  server::memcached::Counters counters;
  server::memcached::Session session(server::memcached::Settings{cache.get(), 250, &counters});
  Outcome o;
  std::string buffer;
  std::size_t at = 0, step = pieces ? 1 : input.size();
  while (at < input.size() && !o.closed) {
    const std::size_t n = std::min(step, input.size() - at);
    buffer.append(input.substr(at, n));
    at += n;
    const server::memcached::Progress p = session.execute(buffer, o.out);
    FUZZ_CHECK(p.consumed <= buffer.size());
    FUZZ_CHECK(p.want == 0 || p.want > buffer.size() - p.consumed || p.consumed > 0);
    buffer.erase(0, p.consumed);
    o.closed = p.close;
    if (pieces) step = 1 + static_cast<unsigned char>(input[at - 1]) % 17;
  }
  return o;
}

std::string mask_digits(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (std::isdigit(static_cast<unsigned char>(s[i])) != 0) {
      if (out.empty() || out.back() != '#') out.push_back('#');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const Outcome whole = feed(input, false);
  const Outcome split = feed(input, true);
  FUZZ_CHECK(whole.closed == split.closed);
  FUZZ_CHECK(mask_digits(whole.out) == mask_digits(split.out));
  return 0;
}
