// The dump image (the reply to modifier1 111 modifier2 6) that --cache-sync loads (server/cache_dump.*):
// our item image, and uWSGI 2.0's raw item table + data blocks. The input is an image as a node sent
// it; for uWSGI's parser its first 4 bytes give the reply's `items` and `blocksize` vars (u16 LE each)
// and the rest is the image. Properties, besides no crash and no read outside the image:
//   - ours: the records visited, written again with append_dump_record, are exactly the bytes the
//     parser accepted (the whole image when it succeeds);
//   - uWSGI's: every key and value visited lies inside the image, within the keysize the image's size
//     implies and the blocksize, in a data block of its own; at most items - 1 of them (slot 0 unused).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "server/cache_dump.hpp"
#include "server/protocol.hpp"
#include "tests/fuzz/check.hpp"

namespace {

void check_ours(std::string_view image) {
  std::string again;
  server::begin_dump_image(again);
  std::string error;
  const bool ok = server::parse_dump_image(
      image,
      [&](std::string_view key, std::string_view value, std::uint64_t expires) {
        FUZZ_CHECK(fuzz::within(image, key) && fuzz::within(image, value));
        server::append_dump_record(again, key, value, expires);
      },
      &error);
  if (ok) {
    FUZZ_CHECK(again == image);
  } else {
    FUZZ_CHECK(!error.empty());
    // Nothing accepted when the magic is wrong; otherwise the records before the bad one.
    if (image.substr(0, server::kDumpMagic.size()) == server::kDumpMagic) {
      FUZZ_CHECK(again.size() < image.size() && image.substr(0, again.size()) == again);
    }
  }
}

void check_uwsgi(std::string_view input) {
  if (input.size() < 4) return;
  const std::uint64_t items = server::load_u16le(input.data());
  const std::uint64_t blocksize = server::load_u16le(input.data() + 2);
  const std::string_view image = input.substr(4);
  std::uint64_t visited = 0;
  std::string error;
  const bool ok = server::parse_uwsgi_dump_image(
      image, items, blocksize,
      [&](std::string_view key, std::string_view value, std::uint64_t) {
        ++visited;
        FUZZ_CHECK(!key.empty() && fuzz::within(image, key) && fuzz::within(image, value));
        FUZZ_CHECK(value.size() <= blocksize);
        const std::uint64_t table = image.size() - items * blocksize;
        FUZZ_CHECK(key.size() + server::kUwsgiItemHeader <= table / items);
        const auto value_at = static_cast<std::uint64_t>(value.data() - image.data());
        FUZZ_CHECK(value.empty() || (value_at >= table && (value_at - table) % blocksize == 0));
      },
      &error);
  FUZZ_CHECK(visited < items || (visited == 0 && !ok));
  FUZZ_CHECK(ok || !error.empty());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  check_ours(input);
  check_uwsgi(input);
  return 0;
}
