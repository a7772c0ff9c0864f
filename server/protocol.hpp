// The uwsgi packet: a 4-byte header (modifier1 u8, datasize u16 LE, modifier2 u8) then datasize bytes,
// then, for some requests, a body. server/ knows the protocol, not the process model: the worker hands
// it bytes, it answers with reply bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace server {

inline constexpr std::size_t kHeaderSize = 4;
inline constexpr std::uint8_t kModifierApp = 0;
inline constexpr std::uint8_t kModifierCache = 111;

// modifier2 values of modifier1 111 (spec §2). Every room that frames or parses them takes them from here.
enum class CacheCommand : std::uint8_t {
  get = 0,           // raw key → [111, vallen, 0] + value
  set = 1,           // array [key, value] → never replies
  del = 2,           // raw key → never replies
  dict_get = 3,      // vars key/get → raw value (or the 404 page for `get`)
  dict_get_alt = 4,  // same as 3
  stream_get = 5,    // raw key → [111,0,0,1] + value, or [111,0,0,0]
  dump = 6,          // raw cache name → [111, L, 7] + vars + image
  dump_reply = 7,    // modifier2 of the dump reply
  magic = 17,        // vars cmd/key/cache/size/expires (+ body) → [111, L, 17] + vars (+ value)
};

inline constexpr std::uint8_t kCacheDump = static_cast<std::uint8_t>(CacheCommand::dump);
inline constexpr std::uint8_t kCacheDumpReply = static_cast<std::uint8_t>(CacheCommand::dump_reply);
inline constexpr std::uint8_t kCacheMagic = static_cast<std::uint8_t>(CacheCommand::magic);
// modifier2 of uWSGI's cache UDP sync datagrams (modifier1 111): set [key, value, expires], delete [key].
inline constexpr std::uint8_t kUdpSet = 10;
inline constexpr std::uint8_t kUdpDelete = 11;

struct PacketHeader {
  std::uint8_t modifier1 = 0;
  std::uint16_t datasize = 0;
  std::uint8_t modifier2 = 0;
};

PacketHeader decode_header(const char* four_bytes);
// Appends the 4 header bytes to out.
void encode_header(std::string& out, std::uint8_t modifier1, std::uint16_t datasize, std::uint8_t modifier2);

enum class FrameStatus { incomplete, complete, invalid };

struct Frame {
  FrameStatus status = FrameStatus::incomplete;
  PacketHeader header;
  std::size_t payload_end = 0;  // kHeaderSize + datasize (valid once the header arrived)
  std::size_t total = 0;        // payload_end + body length (valid once the payload arrived)
  std::string error;            // when invalid: what is wrong, with the offending byte or limit
  bool body_too_large = false;  // invalid because CONTENT_LENGTH is over max_body (--limit-post)
};

// uWSGI's log line for a body over --limit-post (what its users grep for).
inline constexpr std::string_view kTooBigBodyLine = "Invalid (too big) CONTENT_LENGTH. skip.";

struct FrameLimits {
  std::uint32_t buffer_size = 65535;  // largest datasize accepted
  // Largest application request body (--limit-post; no limit by default, as uWSGI): the worker spools
  // large bodies to a file, so this bounds what a client may send, not memory.
  std::uint64_t max_body = UINT64_MAX;
  std::uint64_t max_cache_body = 16u << 20;  // largest cache (modifier1 111) body, always held in memory
};

// Decides from what arrived so far whether one whole request is there: the header, datasize bytes,
// and the body the request announces (CONTENT_LENGTH for modifier1 0, `size` for a modifier1 111
// modifier2 17 set/update). Never reads past `received`. Cheap to call again as more bytes arrive.
Frame frame_request(std::string_view received, const FrameLimits& limits);

// Non-allocating cursor over a vars block: (u16 LE key length, key, u16 LE value length, value)*.
// Stops with an error on a zero-length key, on a length field cut short, or on a length running past
// the end of the block (uWSGI's dictionary parser rules). Pairs before the error were valid.
class VarsReader {
 public:
  explicit VarsReader(std::string_view block) : block_(block) {}
  // Returns true with the next pair; false at the end of the block or at the first malformed field
  // (then failed() is true and error() says what and where).
  bool next(std::string_view& key, std::string_view& value);
  bool failed() const { return failure_ != Failure::none; }
  std::size_t failure_offset() const { return failure_offset_; }  // offset in the block
  std::string error() const;

 private:
  enum class Failure : std::uint8_t {
    none,
    truncated_key_length,
    zero_length_key,
    key_overrun,
    truncated_value_length,
    value_overrun
  };
  bool fail(Failure failure, std::size_t offset, std::uint16_t length);

  std::string_view block_;
  std::size_t offset_ = 0;
  Failure failure_ = Failure::none;
  std::size_t failure_offset_ = 0;
  std::uint16_t failure_length_ = 0;
};

// Non-allocating cursor over an array block: (u16 LE length, bytes)*. Returns every item, empty ones
// included (callers decide; parse_array skips them as uWSGI does).
class ArrayReader {
 public:
  explicit ArrayReader(std::string_view block) : block_(block) {}
  bool next(std::string_view& item);
  bool failed() const { return failed_; }
  std::size_t failure_offset() const { return failure_offset_; }
  std::string error() const;

 private:
  std::string_view block_;
  std::size_t offset_ = 0;
  bool failed_ = false;
  bool truncated_length_ = false;
  std::size_t failure_offset_ = 0;
  std::uint16_t failure_length_ = 0;
};

// vars: (u16 LE key length, key, u16 LE value length, value)*. Calls visit for each pair; returns
// false (with a reason) on a zero-length key or a length running past the end.
bool parse_vars(std::string_view block,
                const std::function<void(std::string_view key, std::string_view value)>& visit,
                std::string* error = nullptr);
// Appends one pair. Throws std::length_error if the key is empty or either part exceeds 65535 bytes
// (the u16 length field cannot say it; truncating would corrupt the stream).
void append_var(std::string& out, std::string_view key, std::string_view value);

// array: (u16 LE length, bytes)*, as modifier2 1 and the UDP sync packets use it. Zero-length items
// are skipped (not visited), as uWSGI's array parser does; a truncated item fails the whole block.
bool parse_array(std::string_view block, const std::function<void(std::string_view item)>& visit,
                 std::string* error = nullptr);
// Appends one item; throws std::length_error above 65535 bytes.
void append_array_item(std::string& out, std::string_view item);

// Little-endian u16 helpers for the wire.
inline std::uint16_t load_u16le(const char* two_bytes) {
  return static_cast<std::uint16_t>(static_cast<unsigned char>(two_bytes[0]) |
                                    (static_cast<unsigned char>(two_bytes[1]) << 8));
}
inline void append_u16le(std::string& out, std::uint16_t value) {
  out.push_back(static_cast<char>(value & 0xff));
  out.push_back(static_cast<char>(value >> 8));
}

// Strict decimal: one or more ASCII digits, no sign, no spaces, no overflow of u64.
bool parse_decimal(std::string_view text, std::uint64_t& out);

// The bytes as a log-safe quoted string: printable ASCII as is, anything else as \xNN, cut at
// max_bytes with "..." (for error texts that name the offending bytes).
std::string printable(std::string_view bytes, std::size_t max_bytes = 64);

// One request, complete, as the worker hands it over. Views into the worker's buffer.
struct Request {
  PacketHeader header;
  std::string_view payload;  // datasize bytes after the header
  std::string_view body;     // what followed the payload (announced length)
  // A large body the worker spooled to a file (--post-buffering; `body` is then empty): this open,
  // unlinked file holds exactly CONTENT_LENGTH bytes. Owned by the worker; -1 when the body is in `body`.
  int body_fd = -1;
  // Arrived on a --persistent-socket: the connection carries many requests and every cache reply is
  // framed (see docs/protocol.md, persistent mode).
  bool persistent = false;
};

// A file to send after the reply's bytes (a static file, server/static_files.hpp): an open descriptor
// the reply owns, sent with sendfile(2) from offset for length bytes.
struct FileBody {
  int fd = -1;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  bool open() const { return fd >= 0; }
  void close();  // closes fd (if open) and resets
};

// The reply: head then body, written with one writev, then the file if any. Buffers are reused across
// requests.
struct Reply {
  std::string head;
  std::string body;
  bool close_after = true;  // one request per connection unless the persistent mode asked otherwise
  // The head is a complete HTTP response head already fit for its connection (static files): an
  // --http-socket connection sends it as it is.
  bool http_ready = false;
  FileBody file;
  Reply() = default;
  Reply(const Reply&) = delete;
  Reply& operator=(const Reply&) = delete;
  ~Reply() { file.close(); }
  bool failed = false;  // the application raised (the answer is its 500): counted as an exception
  void clear() {
    head.clear();
    body.clear();
    close_after = true;
    http_ready = false;
    file.close();
    failed = false;
  }
};

}  // namespace server
