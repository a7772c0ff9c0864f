// What the memcached protocol's two files share (server/memcached_text.cpp, server/memcached_meta.cpp):
// the tokenized line and memcached's number rules. Private to them.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "server/memcached.hpp"

namespace server::memcached {

inline constexpr std::size_t kMaxTokens = 24;                      // memcached's MAX_TOKENS
inline constexpr std::int64_t kRelativeLimit = 60 * 60 * 24 * 30;  // exptime above: absolute unix time
inline constexpr unsigned char kBinaryMagic = 0x80;                // first byte of a binary-protocol request

struct Session::Line {
  std::string_view text;  // without the line end
  std::size_t end = 0;    // bytes of the line with its '\n'
  std::string_view tok[kMaxTokens];
  std::size_t n = 0;      // tokens kept (at most kMaxTokens)
  std::size_t total = 0;  // tokens in the line
};

namespace detail {

using Line = Session::Line;
void tokenize(Line& line);
// memcached's safe_strtoul / safe_strtol / safe_strtoull: leading spaces and a sign as strto* take them,
// the number must end the token; a negative value is refused where the type is unsigned.
bool parse_u32(std::string_view tok, std::uint32_t& out);
bool parse_i32(std::string_view tok, std::int32_t& out);
bool parse_u64(std::string_view tok, std::uint64_t& out);
void append_number(std::string& out, std::uint64_t v);
void append_signed(std::string& out, std::int64_t v);

// Where a hit's reply goes: straight into the connection's output, header first (written by the
// subclass once the engine gives the item's metadata), then the value's bytes and "\r\n". undo() takes
// back a miss's partial header.
class ReplySink : public cache::MetaValueSink {
 public:
  explicit ReplySink(std::string& out) : out_(out), mark_(out.size()) {}
  void undo() { out_.resize(mark_); }

 protected:
  ~ReplySink() = default;
  void restart() { out_.resize(mark_); }
  // Room for the value after what was appended, followed by its "\r\n".
  char* value_block(std::size_t size) {
    const std::size_t at = out_.size();
    out_.resize(at + size + 2);
    out_[at + size] = '\r';
    out_[at + size + 1] = '\n';
    return out_.data() + at;
  }
  std::string& out_;

 private:
  std::size_t mark_;
};

enum class DeltaResult { ok, non_numeric };
DeltaResult apply_delta(std::string_view value, bool incr, std::uint64_t delta, std::string& scratch,
                        std::uint64_t& result);

}  // namespace detail
}  // namespace server::memcached
