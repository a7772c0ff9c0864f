#include "server/protocol.hpp"

#include <fmt/format.h>

#include <stdexcept>

namespace server {

PacketHeader decode_header(const char* four_bytes) {
  PacketHeader header;
  header.modifier1 = static_cast<std::uint8_t>(four_bytes[0]);
  header.datasize = load_u16le(four_bytes + 1);
  header.modifier2 = static_cast<std::uint8_t>(four_bytes[3]);
  return header;
}

void encode_header(std::string& out, std::uint8_t modifier1, std::uint16_t datasize, std::uint8_t modifier2) {
  out.push_back(static_cast<char>(modifier1));
  append_u16le(out, datasize);
  out.push_back(static_cast<char>(modifier2));
}

// ---- vars ----

bool VarsReader::fail(Failure failure, std::size_t offset, std::uint16_t length) {
  failure_ = failure;
  failure_offset_ = offset;
  failure_length_ = length;
  offset_ = block_.size();  // later calls return false without re-reading
  return false;
}

bool VarsReader::next(std::string_view& key, std::string_view& value) {
  if (failed() || offset_ >= block_.size()) return false;
  const std::size_t size = block_.size();
  const std::size_t key_field = offset_;
  if (size - key_field < 2) return fail(Failure::truncated_key_length, key_field, 0);
  const std::uint16_t key_length = load_u16le(block_.data() + key_field);
  if (key_length == 0) return fail(Failure::zero_length_key, key_field, 0);
  const std::size_t key_start = key_field + 2;
  if (size - key_start < key_length) return fail(Failure::key_overrun, key_field, key_length);
  const std::size_t value_field = key_start + key_length;
  // A key whose length field is followed by no room for the value length is an error (uWSGI too).
  if (size - value_field < 2) return fail(Failure::truncated_value_length, value_field, 0);
  const std::uint16_t value_length = load_u16le(block_.data() + value_field);
  const std::size_t value_start = value_field + 2;
  if (size - value_start < value_length) return fail(Failure::value_overrun, value_field, value_length);
  key = block_.substr(key_start, key_length);
  value = block_.substr(value_start, value_length);
  offset_ = value_start + value_length;
  return true;
}

std::string VarsReader::error() const {
  const std::size_t size = block_.size();
  switch (failure_) {
    case Failure::none:
      return {};
    case Failure::truncated_key_length:
      return fmt::format("vars: key length field at offset {} cut short by the end of the {}-byte block",
                         failure_offset_, size);
    case Failure::zero_length_key:
      return fmt::format("vars: zero-length key at offset {}", failure_offset_);
    case Failure::key_overrun:
      return fmt::format("vars: key length {} at offset {} runs past the end of the {}-byte block",
                         failure_length_, failure_offset_, size);
    case Failure::truncated_value_length:
      return fmt::format("vars: value length field at offset {} cut short by the end of the {}-byte block",
                         failure_offset_, size);
    case Failure::value_overrun:
      return fmt::format("vars: value length {} at offset {} runs past the end of the {}-byte block",
                         failure_length_, failure_offset_, size);
  }
  return "vars: unknown failure";
}

bool parse_vars(std::string_view block,
                const std::function<void(std::string_view key, std::string_view value)>& visit,
                std::string* error) {
  VarsReader reader(block);
  std::string_view key;
  std::string_view value;
  while (reader.next(key, value)) visit(key, value);
  if (reader.failed()) {
    if (error) *error = reader.error();
    return false;
  }
  return true;
}

void append_var(std::string& out, std::string_view key, std::string_view value) {
  if (key.empty()) throw std::length_error("append_var: empty key (the vars format cannot carry one)");
  if (key.size() > 0xffff || value.size() > 0xffff) {
    throw std::length_error(
        fmt::format("append_var: key of {} bytes or value of {} bytes over 65535", key.size(), value.size()));
  }
  append_u16le(out, static_cast<std::uint16_t>(key.size()));
  out.append(key);
  append_u16le(out, static_cast<std::uint16_t>(value.size()));
  out.append(value);
}

// ---- array ----

bool ArrayReader::next(std::string_view& item) {
  if (failed_ || offset_ >= block_.size()) return false;
  const std::size_t length_field = offset_;
  const std::size_t left = block_.size() - length_field;
  if (left < 2) {
    failed_ = true;
    truncated_length_ = true;
    failure_offset_ = length_field;
    return false;
  }
  const std::uint16_t length = load_u16le(block_.data() + length_field);
  if (left - 2 < length) {
    failed_ = true;
    failure_offset_ = length_field;
    failure_length_ = length;
    return false;
  }
  item = block_.substr(length_field + 2, length);
  offset_ = length_field + 2 + length;
  return true;
}

std::string ArrayReader::error() const {
  if (!failed_) return {};
  if (truncated_length_) {
    return fmt::format("array: length field at offset {} cut short by the end of the {}-byte block",
                       failure_offset_, block_.size());
  }
  return fmt::format("array: item length {} at offset {} runs past the end of the {}-byte block",
                     failure_length_, failure_offset_, block_.size());
}

bool parse_array(std::string_view block, const std::function<void(std::string_view item)>& visit,
                 std::string* error) {
  ArrayReader reader(block);
  std::string_view item;
  while (reader.next(item)) {
    if (!item.empty()) visit(item);
  }
  if (reader.failed()) {
    if (error) *error = reader.error();
    return false;
  }
  return true;
}

void append_array_item(std::string& out, std::string_view item) {
  if (item.size() > 0xffff) {
    throw std::length_error(fmt::format("append_array_item: item of {} bytes over 65535", item.size()));
  }
  append_u16le(out, static_cast<std::uint16_t>(item.size()));
  out.append(item);
}

// ---- small text helpers ----

bool parse_decimal(std::string_view text, std::uint64_t& out) {
  if (text.empty()) return false;
  std::uint64_t value = 0;
  for (const char c : text) {
    if (c < '0' || c > '9') return false;
    const std::uint64_t digit = static_cast<std::uint64_t>(c - '0');
    if (value > (UINT64_MAX - digit) / 10) return false;
    value = value * 10 + digit;
  }
  out = value;
  return true;
}

std::string printable(std::string_view bytes, std::size_t max_bytes) {
  std::string out = "\"";
  const std::size_t shown = bytes.size() < max_bytes ? bytes.size() : max_bytes;
  for (std::size_t i = 0; i < shown; ++i) {
    const auto c = static_cast<unsigned char>(bytes[i]);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(static_cast<char>(c));
    } else if (c >= 0x20 && c < 0x7f) {
      out.push_back(static_cast<char>(c));
    } else {
      out += fmt::format("\\x{:02x}", c);
    }
  }
  if (shown < bytes.size()) out += "...";
  out.push_back('"');
  return out;
}

// ---- framing ----

namespace {

Frame invalid(Frame frame, std::string error) {
  frame.status = FrameStatus::invalid;
  frame.error = std::move(error);
  return frame;
}

// Body length of a modifier1 0 request: the CONTENT_LENGTH var (empty or absent = no body, as nginx
// sends an empty CONTENT_LENGTH for GET). The last occurrence wins, like the vars parsers.
bool app_body_length(std::string_view vars, const FrameLimits& limits, std::uint64_t& body,
                     std::string& error, bool& too_large) {
  VarsReader reader(vars);
  std::string_view key;
  std::string_view value;
  std::string_view content_length;
  while (reader.next(key, value)) {
    if (key == "CONTENT_LENGTH") content_length = value;
  }
  if (reader.failed()) {
    error = fmt::format("malformed modifier1 0 request: {} (payload offset)", reader.error());
    return false;
  }
  body = 0;
  if (content_length.empty()) return true;
  if (!parse_decimal(content_length, body)) {
    error = fmt::format("malformed modifier1 0 request: CONTENT_LENGTH {} is not a decimal number",
                        printable(content_length));
    return false;
  }
  if (body > limits.max_body) {
    too_large = true;
    error =
        fmt::format("{} (CONTENT_LENGTH {} is over limit-post {})", kTooBigBodyLine, body, limits.max_body);
    return false;
  }
  return true;
}

// Body length of a magic (modifier2 17) request: `size` bytes for set/update (and our inc/dec/mul/div)
// when 0 < size <=
// max_body. Anything else carries no body for framing purposes; the handler then refuses the request
// without reading on, as uWSGI leaves an unwanted body unread.
bool magic_body_length(std::string_view vars, std::uint64_t max_body, std::uint64_t& body,
                       std::string& error) {
  VarsReader reader(vars);
  std::string_view key;
  std::string_view value;
  std::string_view cmd;
  std::string_view size;
  while (reader.next(key, value)) {
    if (key == "cmd") {
      cmd = value;
    } else if (key == "size") {
      size = value;
    }
  }
  if (reader.failed()) {
    error = fmt::format("malformed cache magic request: {} (payload offset)", reader.error());
    return false;
  }
  body = 0;
  const bool carries_body = cmd == "set" || cmd == "update" || cmd == "inc" || cmd == "dec" || cmd == "mul" ||
                            cmd == "div";  // the last four: our math extension, an 8-byte operand
  if (!carries_body) return true;
  std::uint64_t announced = 0;
  if (parse_decimal(size, announced) && announced > 0 && announced <= max_body) body = announced;
  return true;
}

}  // namespace

Frame frame_request(std::string_view received, const FrameLimits& limits) {
  Frame frame;
  if (received.size() < kHeaderSize) return frame;
  frame.header = decode_header(received.data());
  if (frame.header.datasize > limits.buffer_size) {
    return invalid(std::move(frame), fmt::format("invalid request block size: {} (max {} = buffer-size)",
                                                 frame.header.datasize, limits.buffer_size));
  }
  frame.payload_end = kHeaderSize + frame.header.datasize;
  if (received.size() < frame.payload_end) return frame;

  const std::string_view payload = received.substr(kHeaderSize, frame.header.datasize);
  std::uint64_t body = 0;
  std::string error;
  if (frame.header.modifier1 == kModifierApp) {
    if (!app_body_length(payload, limits, body, error, frame.body_too_large)) {
      return invalid(std::move(frame), std::move(error));
    }
  } else if (frame.header.modifier1 == kModifierCache && frame.header.modifier2 == kCacheMagic) {
    if (!magic_body_length(payload, limits.max_cache_body, body, error)) {
      return invalid(std::move(frame), std::move(error));
    }
  }
  frame.total = frame.payload_end + static_cast<std::size_t>(body);
  if (received.size() >= frame.total) frame.status = FrameStatus::complete;
  return frame;
}

}  // namespace server
