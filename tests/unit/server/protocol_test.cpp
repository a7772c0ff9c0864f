// The packet parser and writer: header, vars, array, and the incremental framer.
#include "server/protocol.hpp"

#include <catch2/catch.hpp>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "server/cache_dump.hpp"
#include "wire.hpp"

using namespace server;
using wire::bytes;
using wire::hex;

namespace {

// Frames a copy of exactly `length` bytes on the heap, so a read past what arrived is caught by ASan.
Frame frame_prefix(std::string_view data, std::size_t length, const FrameLimits& limits = {}) {
  std::unique_ptr<char[]> copy(new char[length == 0 ? 1 : length]);
  std::copy(data.begin(), data.begin() + static_cast<std::ptrdiff_t>(length), copy.get());
  return frame_request(std::string_view(copy.get(), length), limits);
}

std::vector<std::pair<std::string, std::string>> all_vars(std::string_view block, bool* ok = nullptr,
                                                          std::string* error = nullptr) {
  std::vector<std::pair<std::string, std::string>> out;
  const bool parsed = parse_vars(
      block, [&](std::string_view key, std::string_view value) { out.emplace_back(key, value); }, error);
  if (ok) *ok = parsed;
  return out;
}

}  // namespace

TEST_CASE("header is modifier1, u16 LE datasize, modifier2", "[protocol]") {
  const PacketHeader header = decode_header(bytes({0x6f, 0x2d, 0x01, 0x11}).data());
  CHECK(header.modifier1 == 111);
  CHECK(header.datasize == 0x012d);
  CHECK(header.modifier2 == 17);
  std::string out = "x";
  encode_header(out, 111, 0xfffe, 7);
  CHECK(hex(out) == "78 6f fe ff 07");  // appends
  CHECK(decode_header(bytes({0, 0xff, 0xff, 0xff}).data()).datasize == 65535);
}

TEST_CASE("vars round trip and the uWSGI dictionary rules", "[protocol][vars]") {
  const std::string block = wire::vars({{"cmd", "get"}, {"key", "k1"}});
  CHECK(hex(block) == "03 00 63 6d 64 03 00 67 65 74 03 00 6b 65 79 02 00 6b 31");  // examples §1.7

  SECTION("empty values are fine, repeated keys are all visited in order") {
    bool ok = false;
    const auto pairs = all_vars(wire::vars({{"SERVER_NAME", ""}, {"a", "1"}, {"a", "2"}}), &ok);
    CHECK(ok);
    REQUIRE(pairs.size() == 3);
    CHECK(pairs[0] == std::pair<std::string, std::string>{"SERVER_NAME", ""});
    CHECK(pairs[2].second == "2");
  }
  SECTION("an empty block has no vars") {
    bool ok = false;
    CHECK(all_vars("", &ok).empty());
    CHECK(ok);
  }
  SECTION("zero-length key fails after the valid vars before it") {
    bool ok = true;
    std::string error;
    const auto pairs = all_vars(block + bytes({0, 0, 1, 0, 'x'}), &ok, &error);
    CHECK_FALSE(ok);
    CHECK(pairs.size() == 2);
    CHECK(error == "vars: zero-length key at offset 19");
  }
  SECTION("a key length running past the end names the offset and the block size") {
    bool ok = true;
    std::string error;
    all_vars(bytes({3, 0, 'a', 'b'}), &ok, &error);
    CHECK_FALSE(ok);
    CHECK(error == "vars: key length 3 at offset 0 runs past the end of the 4-byte block");
  }
  SECTION("a value length running past the end") {
    bool ok = true;
    std::string error;
    all_vars(bytes({1, 0, 'a', 9, 0, 'x'}), &ok, &error);
    CHECK_FALSE(ok);
    CHECK(error == "vars: value length 9 at offset 3 runs past the end of the 6-byte block");
  }
  SECTION("a key with no room left for its value length field") {
    bool ok = true;
    std::string error;
    all_vars(bytes({1, 0, 'a'}), &ok, &error);
    CHECK_FALSE(ok);
    CHECK(error.find("value length field at offset 3 cut short") != std::string::npos);
    all_vars(bytes({1, 0, 'a', 0}), &ok, &error);
    CHECK_FALSE(ok);
  }
  SECTION("one trailing byte is a truncated key length") {
    bool ok = true;
    std::string error;
    const auto pairs = all_vars(block + bytes({5}), &ok, &error);
    CHECK_FALSE(ok);
    CHECK(pairs.size() == 2);
    CHECK(error.find("key length field at offset 19 cut short") != std::string::npos);
  }
  SECTION("the reader stops for good after a failure") {
    const std::string broken = bytes({0, 0, 1, 0, 'a', 0, 0});
    VarsReader reader(broken);
    std::string_view key, value;
    CHECK_FALSE(reader.next(key, value));
    CHECK(reader.failed());
    CHECK(reader.failure_offset() == 0);
    CHECK_FALSE(reader.next(key, value));
  }
  SECTION("largest key and value") {
    const std::string big(65535, 'v');
    std::string out;
    append_var(out, "k", big);
    const auto pairs = all_vars(out);
    REQUIRE(pairs.size() == 1);
    CHECK(pairs[0].second.size() == 65535);
  }
  SECTION("the writer refuses what the format cannot carry") {
    std::string out;
    CHECK_THROWS_AS(append_var(out, "", "x"), std::length_error);
    CHECK_THROWS_AS(append_var(out, "k", std::string(65536, 'v')), std::length_error);
    CHECK(out.empty());
  }
}

TEST_CASE("array: zero-length items skipped, truncated item fails", "[protocol][array]") {
  std::string block;
  append_array_item(block, "k2");
  append_array_item(block, "");
  append_array_item(block, "val2");
  CHECK(hex(block) == "02 00 6b 32 00 00 04 00 76 61 6c 32");
  std::vector<std::string> items;
  std::string error;
  CHECK(parse_array(
      block, [&](std::string_view item) { items.emplace_back(item); }, &error));
  CHECK(items == std::vector<std::string>{"k2", "val2"});

  items.clear();
  CHECK_FALSE(parse_array(
      block + bytes({5, 0, 'a'}), [&](std::string_view item) { items.emplace_back(item); }, &error));
  CHECK(items.size() == 2);
  CHECK(error == "array: item length 5 at offset 12 runs past the end of the 15-byte block");
  CHECK_FALSE(parse_array(
      bytes({1}), [](std::string_view) {}, &error));
  CHECK(error == "array: length field at offset 0 cut short by the end of the 1-byte block");

  ArrayReader raw(block);
  std::string_view item;
  int count = 0;
  while (raw.next(item)) ++count;
  CHECK(count == 3);  // the raw reader shows the empty item
  CHECK_THROWS_AS(append_array_item(block, std::string(65536, 'x')), std::length_error);
}

TEST_CASE("decimal and printable helpers", "[protocol]") {
  std::uint64_t value = 7;
  CHECK(parse_decimal("0", value));
  CHECK(value == 0);
  CHECK(parse_decimal("18446744073709551615", value));
  CHECK(value == UINT64_MAX);
  CHECK_FALSE(parse_decimal("18446744073709551616", value));
  CHECK_FALSE(parse_decimal("", value));
  CHECK_FALSE(parse_decimal("-1", value));
  CHECK_FALSE(parse_decimal(" 1", value));
  CHECK_FALSE(parse_decimal("12a", value));
  CHECK(printable("ab\x01\"") == "\"ab\\x01\\\"\"");
  CHECK(printable("abcdef", 3) == "\"abc...\"");
}

TEST_CASE("framer: header and payload", "[protocol][frame]") {
  const std::string request = wire::packet(111, 0, "k1");

  SECTION("fewer than 4 bytes is incomplete") {
    for (std::size_t length = 0; length < 4; ++length) {
      const Frame frame = frame_prefix(request, length);
      CHECK(frame.status == FrameStatus::incomplete);
    }
  }
  SECTION("payload_end is known once the header arrived") {
    const Frame frame = frame_prefix(request, 5);
    CHECK(frame.status == FrameStatus::incomplete);
    CHECK(frame.payload_end == 6);
    CHECK(frame.header.modifier1 == 111);
  }
  SECTION("complete at exactly header + datasize; pipelined bytes are not counted") {
    Frame frame = frame_prefix(request, request.size());
    CHECK(frame.status == FrameStatus::complete);
    CHECK(frame.total == 6);
    const std::string two = request + request;
    frame = frame_request(two, {});
    CHECK(frame.status == FrameStatus::complete);
    CHECK(frame.total == 6);
  }
  SECTION("datasize over buffer-size is refused at once, naming the limit") {
    const std::string big = bytes({0x6f, 0x04, 0x10, 0x01});  // 4100
    const Frame frame = frame_prefix(big, 4, FrameLimits{4096, 1 << 20});
    CHECK(frame.status == FrameStatus::invalid);
    CHECK(frame.error == "invalid request block size: 4100 (max 4096 = buffer-size)");
    CHECK(frame_prefix(bytes({0x6f, 0x00, 0x10, 0x01}), 4, FrameLimits{4096, 1 << 20}).status ==
          FrameStatus::incomplete);
  }
  SECTION("datasize 0 is complete with the header alone") {
    const Frame frame = frame_prefix(bytes({0x6f, 0, 0, 6}), 4);
    CHECK(frame.status == FrameStatus::complete);
    CHECK(frame.total == 4);
  }
  SECTION("cache commands other than 17 carry no body even if they look like vars") {
    const std::string dict = wire::packet(111, 3, wire::vars({{"cmd", "set"}, {"size", "5"}}));
    const Frame frame = frame_request(dict, {});
    CHECK(frame.status == FrameStatus::complete);
    CHECK(frame.total == dict.size());
  }
  SECTION("other modifiers: header and payload only") {
    const Frame frame = frame_request(wire::packet(5, 0, bytes({0, 0, 0})), {});
    CHECK(frame.status == FrameStatus::complete);
    CHECK(frame.total == 7);
  }
}

TEST_CASE("framer: modifier1 0 body from CONTENT_LENGTH", "[protocol][frame]") {
  const std::string vars = wire::vars({{"REQUEST_METHOD", "POST"},
                                       {"CONTENT_LENGTH", "7"},
                                       {"PATH_INFO", "/rec/path"},
                                       {"SERVER_PROTOCOL", "HTTP/1.1"}});
  const std::string request = wire::packet(0, 0, vars, "a=1&b=2");

  SECTION("every byte boundary of an incremental feed") {
    for (std::size_t length = 0; length < request.size(); ++length) {
      INFO("prefix of " << length << " bytes");
      const Frame frame = frame_prefix(request, length);
      REQUIRE(frame.status == FrameStatus::incomplete);
      if (length >= 4) CHECK(frame.payload_end == 4 + vars.size());
      if (length >= 4 + vars.size()) CHECK(frame.total == request.size());
    }
    const Frame frame = frame_prefix(request, request.size());
    CHECK(frame.status == FrameStatus::complete);
    CHECK(frame.total == request.size());
    CHECK(frame.error.empty());
  }
  SECTION("no or empty CONTENT_LENGTH: no body (nginx sends it empty on GET)") {
    CHECK(frame_request(wire::packet(0, 0, wire::vars({{"CONTENT_LENGTH", ""}})), {}).status ==
          FrameStatus::complete);
    CHECK(frame_request(wire::packet(0, 0, wire::vars({{"PATH_INFO", "/"}})), {}).status ==
          FrameStatus::complete);
  }
  SECTION("the last CONTENT_LENGTH wins") {
    const Frame frame = frame_request(
        wire::packet(0, 0, wire::vars({{"CONTENT_LENGTH", "100"}, {"CONTENT_LENGTH", "2"}}), "xy"), {});
    CHECK(frame.status == FrameStatus::complete);
  }
  SECTION("malformed CONTENT_LENGTH names the bytes") {
    const Frame frame = frame_request(wire::packet(0, 0, wire::vars({{"CONTENT_LENGTH", "12a\x01"}})), {});
    CHECK(frame.status == FrameStatus::invalid);
    CHECK(frame.error ==
          "malformed modifier1 0 request: CONTENT_LENGTH \"12a\\x01\" is not a decimal number");
    CHECK(frame_request(wire::packet(0, 0, wire::vars({{"CONTENT_LENGTH", "-1"}})), {}).status ==
          FrameStatus::invalid);
    CHECK(frame_request(wire::packet(0, 0, wire::vars({{"CONTENT_LENGTH", "99999999999999999999"}})), {})
              .status == FrameStatus::invalid);
  }
  SECTION("CONTENT_LENGTH over --limit-post is refused before the body arrives") {
    const std::string big = wire::packet(0, 0, wire::vars({{"CONTENT_LENGTH", "1025"}}));
    const Frame frame = frame_request(big, FrameLimits{4096, 1024});
    CHECK(frame.status == FrameStatus::invalid);
    CHECK(frame.body_too_large);
    CHECK(frame.error ==
          "Invalid (too big) CONTENT_LENGTH. skip. (CONTENT_LENGTH 1025 is over limit-post 1024)");
    // No limit by default (the worker spools large bodies); a malformed packet is not "too large".
    CHECK(frame_request(wire::packet(0, 0, wire::vars({{"CONTENT_LENGTH", "100000000000"}})), {}).status ==
          FrameStatus::incomplete);
    CHECK_FALSE(frame_request(wire::packet(0, 0, wire::vars({{"CONTENT_LENGTH", "x"}})), {}).body_too_large);
    CHECK(frame_request(wire::packet(0, 0, wire::vars({{"CONTENT_LENGTH", "1024"}})), FrameLimits{4096, 1024})
              .status == FrameStatus::incomplete);
  }
  SECTION("var lengths overrunning the payload: invalid, with the offset") {
    std::string broken = vars;
    broken[vars.size() - 27] = 0x7f;  // SERVER_PROTOCOL's key length field now claims 127 bytes
    const Frame frame = frame_request(wire::packet(0, 0, broken), {});
    CHECK(frame.status == FrameStatus::invalid);
    CHECK(frame.error ==
          fmt::format("malformed modifier1 0 request: vars: key length 127 at offset {} runs past "
                      "the end of the {}-byte block (payload offset)",
                      vars.size() - 27, vars.size()));
  }
  SECTION("zero-length key: invalid") {
    const Frame frame = frame_request(wire::packet(0, 0, bytes({0, 0, 1, 0, 'x'})), {});
    CHECK(frame.status == FrameStatus::invalid);
    CHECK(frame.error.find("zero-length key at offset 0") != std::string::npos);
  }
}

TEST_CASE("framer: modifier2 17 set/update body from size", "[protocol][frame]") {
  // examples §1.7 "set new key"
  const std::string set = bytes({0x6f, 0x1c, 0x00, 0x11, 0x03, 0x00, 0x63, 0x6d, 0x64, 0x03, 0x00, 0x73, 0x65,
                                 0x74, 0x03, 0x00, 0x6b, 0x65, 0x79, 0x02, 0x00, 0x6d, 0x31, 0x04, 0x00, 0x73,
                                 0x69, 0x7a, 0x65, 0x01, 0x00, 0x35, 0x68, 0x65, 0x6c, 0x6c, 0x6f});

  SECTION("every byte boundary of an incremental feed") {
    for (std::size_t length = 0; length < set.size(); ++length) {
      INFO("prefix of " << length << " bytes");
      REQUIRE(frame_prefix(set, length).status == FrameStatus::incomplete);
    }
    const Frame frame = frame_prefix(set, set.size());
    CHECK(frame.status == FrameStatus::complete);
    CHECK(frame.payload_end == 32);
    CHECK(frame.total == 37);
  }
  SECTION("update with expires, size given twice as the Python client does: the last wins") {
    const std::string update = wire::packet(
        111, 17, wire::vars({{"cmd", "update"}, {"key", "kk"}, {"size", "9"}, {"size", "3"}}), "VAL");
    const Frame frame = frame_request(update, {});
    CHECK(frame.status == FrameStatus::complete);
    CHECK(frame.total == update.size());
  }
  SECTION("no body unless 0 < size <= max_cache_body and cmd is set/update") {
    const auto total_for = [](std::string_view cmd, std::string_view size, std::uint64_t max_body = 100) {
      const std::string vars = wire::vars({{"cmd", cmd}, {"key", "k"}, {"size", size}});
      const Frame frame = frame_request(wire::packet(111, 17, vars, std::string(200, 'v')),
                                        FrameLimits{.buffer_size = 4096, .max_cache_body = max_body});
      REQUIRE(frame.status == FrameStatus::complete);
      return frame.total - frame.payload_end;
    };
    CHECK(total_for("set", "100") == 100);
    CHECK(total_for("update", "1") == 1);
    CHECK(total_for("set", "101") == 0);  // over max_cache_body: left unread, the handler refuses it
    CHECK(total_for("set", "0") == 0);
    CHECK(total_for("set", "") == 0);
    CHECK(total_for("set", "5x") == 0);
    CHECK(total_for("get", "5") == 0);
    CHECK(total_for("SET", "5") == 0);  // command names match exactly
  }
  SECTION("malformed vars: invalid with the offset") {
    const Frame frame = frame_request(wire::packet(111, 17, bytes({3, 0, 'c', 'm', 'd', 9, 0, 'g'})), {});
    CHECK(frame.status == FrameStatus::invalid);
    CHECK(frame.error ==
          "malformed cache magic request: vars: value length 9 at offset 5 runs past the end of the 8-byte "
          "block "
          "(payload offset)");
  }
}

TEST_CASE("dump image round trip", "[protocol][dump]") {
  std::string image;
  begin_dump_image(image);
  append_dump_record(image, "k1", "value1", 0);
  append_dump_record(image, "m1", std::string(70000, 'x'), 1795642449);
  CHECK(image.substr(0, 8) == "UCDUMP1\n");
  CHECK(hex(image.substr(8, 14 + 8)) == "02 00 06 00 00 00 00 00 00 00 00 00 00 00 6b 31 76 61 6c 75 65 31");
  std::vector<std::tuple<std::string, std::size_t, std::uint64_t>> records;
  std::string error;
  const auto collect = [&](std::string_view key, std::string_view value, std::uint64_t expires) {
    records.emplace_back(key, value.size(), expires);
  };
  CHECK(parse_dump_image(image, collect, &error));
  REQUIRE(records.size() == 2);
  CHECK(records[1] == std::tuple<std::string, std::size_t, std::uint64_t>{"m1", 70000, 1795642449});

  records.clear();
  CHECK_FALSE(parse_dump_image(std::string_view(image).substr(0, image.size() - 1), collect, &error));
  CHECK(records.size() == 1);
  CHECK(error == "dump image: record at offset 30 (key 2 + value 70000 bytes) runs past the end");
  CHECK_FALSE(parse_dump_image("garbage!", collect, &error));
  CHECK(error.find("missing magic") != std::string::npos);
  CHECK(parse_dump_image(kDumpMagic, collect, &error));
}

namespace {

// uWSGI 2.0's dump image (spec §4.1): `items` slots of 88 + keysize bytes, then `items` blocks.
std::string uwsgi_image(std::uint64_t items, std::uint64_t keysize, std::uint64_t blocksize) {
  return std::string(items * (88 + keysize + blocksize), '\0');
}

void put_u64(std::string& image, std::size_t at, std::uint64_t value) {
  for (int i = 0; i < 8; ++i) image[at + i] = static_cast<char>((value >> (8 * i)) & 0xff);
}

}  // namespace

TEST_CASE("uWSGI dump image: items read from the item table and the blocks, every field bounded",
          "[protocol][dump]") {
  const std::uint64_t items = 4, keysize = 32, blocksize = 16, stride = 88 + keysize, table = items * stride;
  std::string image = uwsgi_image(items, keysize, blocksize);
  // Slot 2: key "ab", 5-byte value in block 3, expires 1795642449. Slot 0 (uWSGI's null item) is ignored.
  put_u64(image, 2 * stride + 8, 2);
  put_u64(image, 2 * stride + 24, 5);
  put_u64(image, 2 * stride + 32, 3);
  put_u64(image, 2 * stride + 40, 1795642449);
  image.replace(2 * stride + 88, 2, "ab");
  image.replace(table + 3 * blocksize, 5, "hello");
  put_u64(image, 8, 1);  // slot 0 "in use": never read
  std::vector<std::tuple<std::string, std::string, std::uint64_t>> records;
  const auto collect = [&](std::string_view key, std::string_view value, std::uint64_t expires) {
    records.emplace_back(key, value, expires);
  };
  std::string error;
  REQUIRE(parse_uwsgi_dump_image(image, items, blocksize, collect, &error));
  REQUIRE(records.size() == 1);
  CHECK(records[0] == std::tuple<std::string, std::string, std::uint64_t>{"ab", "hello", 1795642449});

  SECTION("a value longer than a block") {
    put_u64(image, 2 * stride + 24, blocksize + 1);
    CHECK_FALSE(parse_uwsgi_dump_image(image, items, blocksize, collect, &error));
    CHECK(error ==
          "uWSGI dump image: item 2: key 2 bytes (keysize 32), value 17 bytes (blocksize 16), block 3 of 4");
  }
  SECTION("a block index past the data area") {
    put_u64(image, 2 * stride + 32, items);
    CHECK_FALSE(parse_uwsgi_dump_image(image, items, blocksize, collect, &error));
  }
  SECTION("a key longer than the slot") {
    put_u64(image, 2 * stride + 8, keysize + 1);
    CHECK_FALSE(parse_uwsgi_dump_image(image, items, blocksize, collect, &error));
  }
  SECTION("a size that does not split into the geometry") {
    CHECK_FALSE(parse_uwsgi_dump_image(image + "x", items, blocksize, collect, &error));
    CHECK(error.find("do not split") != std::string::npos);
    CHECK_FALSE(parse_uwsgi_dump_image(image, 0, blocksize, collect, &error));
    CHECK_FALSE(parse_uwsgi_dump_image(image, items, 1u << 30, collect, &error));
    CHECK_FALSE(parse_uwsgi_dump_image("", items, blocksize, collect, &error));
  }
  SECTION("random bytes never read out of bounds") {
    std::mt19937_64 rng(7);
    for (int round = 0; round < 2000; ++round) {
      std::string noise = uwsgi_image(items, keysize, blocksize);
      for (auto& c : noise) c = static_cast<char>(rng() % 4 == 0 ? rng() : 0);
      records.clear();
      parse_uwsgi_dump_image(noise, items, blocksize, collect, &error);  // ASan checks the reads
      for (const auto& [key, value, expires] : records) {
        CHECK(key.size() <= keysize);
        CHECK(value.size() <= blocksize);
      }
    }
  }
}
