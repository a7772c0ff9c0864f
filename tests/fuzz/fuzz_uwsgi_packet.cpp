// The uwsgi packet (server/protocol.*): framing a request from the bytes that arrived, its vars block
// and the array block. The input is what a client sent. Properties, besides no crash and no read
// outside the input:
//   - framing: a complete frame ends inside the input and frames the same when the input stops there
//     (pipelining); a prefix never frames further than the whole (more bytes only add information);
//   - vars/array: the pairs (items) the reader returns, serialised again, are exactly the bytes it
//     accepted (the whole block when it did not fail), and the callback parsers agree with the readers;
//   - parse_decimal agrees with std::from_chars on what a strict decimal is.
#include <charconv>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "server/protocol.hpp"
#include "tests/fuzz/check.hpp"

namespace {

using server::FrameStatus;

void check_vars(std::string_view block) {
  server::VarsReader reader(block);
  std::vector<std::pair<std::string_view, std::string_view>> pairs;
  std::string again;
  std::string_view key, value;
  while (reader.next(key, value)) {
    FUZZ_CHECK(!key.empty() && fuzz::within(block, key) && fuzz::within(block, value));
    pairs.emplace_back(key, value);
    server::append_var(again, key, value);
  }
  FUZZ_CHECK(block.substr(0, again.size()) == again);
  if (reader.failed()) {
    FUZZ_CHECK(reader.failure_offset() >= again.size() && reader.failure_offset() <= block.size());
    FUZZ_CHECK(!reader.error().empty());
  } else {
    FUZZ_CHECK(again.size() == block.size());
  }
  std::vector<std::pair<std::string_view, std::string_view>> visited;
  std::string error;
  const bool ok = server::parse_vars(
      block, [&](std::string_view k, std::string_view v) { visited.emplace_back(k, v); }, &error);
  FUZZ_CHECK(ok == !reader.failed() && visited == pairs && error == reader.error());
}

void check_array(std::string_view block) {
  server::ArrayReader reader(block);
  std::vector<std::string_view> items;
  std::string again;
  std::string_view item;
  while (reader.next(item)) {
    FUZZ_CHECK(fuzz::within(block, item));
    server::append_array_item(again, item);
    if (!item.empty()) items.push_back(item);
  }
  FUZZ_CHECK(block.substr(0, again.size()) == again);
  FUZZ_CHECK(reader.failed() ? reader.failure_offset() == again.size() && !reader.error().empty()
                             : again.size() == block.size());
  std::vector<std::string_view> visited;
  const bool ok = server::parse_array(block, [&](std::string_view i) { visited.push_back(i); });
  FUZZ_CHECK(ok == !reader.failed() && visited == items);
}

void check_decimal(std::string_view text) {
  std::uint64_t parsed = 0;
  const bool ok = server::parse_decimal(text, parsed);
  bool digits = !text.empty();
  for (const char c : text) digits = digits && c >= '0' && c <= '9';
  std::uint64_t expected = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), expected);
  const bool agrees = digits && ec == std::errc() && end == text.data() + text.size();
  FUZZ_CHECK(ok == agrees);
  if (ok) FUZZ_CHECK(parsed == expected);
}

void check_printable(std::string_view bytes) {
  const std::string shown = server::printable(bytes, 16);
  FUZZ_CHECK(shown.size() >= 2 && shown.front() == '"');
  for (const char c : shown) FUZZ_CHECK(c >= 0x20 && c < 0x7f);
}

// The body the request announces, read independently of the framer: CONTENT_LENGTH (last occurrence)
// for modifier1 0, `size` for a modifier1 111 modifier2 17 set/update/inc/dec/mul/div when 1..max_cache_body.
std::uint64_t announced_body(std::string_view received, const server::Frame& frame,
                             const server::FrameLimits& limits) {
  std::string_view content_length, cmd, size;
  server::VarsReader reader(received.substr(server::kHeaderSize, frame.header.datasize));
  std::string_view key, value;
  while (reader.next(key, value)) {
    if (key == "CONTENT_LENGTH") content_length = value;
    if (key == "cmd") cmd = value;
    if (key == "size") size = value;
  }
  std::uint64_t body = 0;
  if (frame.header.modifier1 == server::kModifierApp) {
    if (!content_length.empty()) FUZZ_CHECK(server::parse_decimal(content_length, body));
    return body;
  }
  const bool writes =
      cmd == "set" || cmd == "update" || cmd == "inc" || cmd == "dec" || cmd == "mul" || cmd == "div";
  if (frame.header.modifier1 != server::kModifierCache || frame.header.modifier2 != 17 || !writes) return 0;
  return server::parse_decimal(size, body) && body > 0 && body <= limits.max_cache_body ? body : 0;
}

// A prefix of the input frames no further than the whole input.
void check_prefix(std::string_view received, const server::FrameLimits& limits, const server::Frame& whole,
                  std::size_t length) {
  const server::Frame part = server::frame_request(received.substr(0, length), limits);
  switch (whole.status) {
    case FrameStatus::complete:
      if (length >= whole.total) {
        FUZZ_CHECK(part.status == FrameStatus::complete && part.total == whole.total);
      } else {
        FUZZ_CHECK(part.status == FrameStatus::incomplete);
      }
      break;
    case FrameStatus::invalid:
      FUZZ_CHECK(part.status != FrameStatus::complete);
      if (part.status == FrameStatus::invalid) FUZZ_CHECK(part.error == whole.error);
      break;
    case FrameStatus::incomplete:
      FUZZ_CHECK(part.status == FrameStatus::incomplete);
      break;
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view received(reinterpret_cast<const char*>(data), size);
  // uWSGI's default buffer-size, and a small max-body so that the limit is within the fuzzer's reach.
  const server::FrameLimits limits{.buffer_size = 4096, .max_body = 1 << 16, .max_cache_body = 1 << 16};
  const server::Frame frame = server::frame_request(received, limits);
  switch (frame.status) {
    case FrameStatus::complete:
      FUZZ_CHECK(frame.payload_end == server::kHeaderSize + frame.header.datasize);
      FUZZ_CHECK(frame.payload_end <= frame.total && frame.total <= size);
      FUZZ_CHECK(frame.header.datasize <= limits.buffer_size);
      FUZZ_CHECK(frame.total - frame.payload_end == announced_body(received, frame, limits));
      break;
    case FrameStatus::invalid:
      FUZZ_CHECK(!frame.error.empty());
      break;
    case FrameStatus::incomplete:
      FUZZ_CHECK(size < server::kHeaderSize || size < frame.payload_end || size < frame.total);
      break;
  }
  if (size > 0) check_prefix(received, limits, frame, size - 1);
  check_prefix(received, limits, frame, size / 2);
  if (frame.status == FrameStatus::complete) check_prefix(received, limits, frame, frame.total);

  const std::string_view block =
      size >= server::kHeaderSize ? received.substr(server::kHeaderSize) : std::string_view{};
  const std::string_view payload = block.substr(0, frame.header.datasize);
  check_vars(payload);
  check_array(payload);
  check_vars(received);
  check_array(received);
  check_decimal(received.substr(0, 24));
  check_printable(received);

  // The header codec round-trips.
  if (size >= server::kHeaderSize) {
    std::string header;
    server::encode_header(header, frame.header.modifier1, frame.header.datasize, frame.header.modifier2);
    FUZZ_CHECK(header == received.substr(0, server::kHeaderSize));
  }
  return 0;
}
