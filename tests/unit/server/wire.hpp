// Helpers for building and showing wire bytes in the server tests.
#pragma once

#include <fmt/format.h>

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

#include "server/protocol.hpp"

namespace wire {

inline std::string bytes(std::initializer_list<int> values) {
  std::string out;
  for (const int value : values) out.push_back(static_cast<char>(value));
  return out;
}

// Space-separated hex, as the examples document writes it; mismatches then print readably.
inline std::string hex(std::string_view data) {
  std::string out;
  for (const char c : data) {
    if (!out.empty()) out.push_back(' ');
    out += fmt::format("{:02x}", static_cast<unsigned char>(c));
  }
  return out;
}

inline std::string vars(std::initializer_list<std::pair<std::string_view, std::string_view>> pairs) {
  std::string out;
  for (const auto& [key, value] : pairs) server::append_var(out, key, value);
  return out;
}

inline std::string packet(std::uint8_t modifier1, std::uint8_t modifier2, std::string_view payload,
                          std::string_view body = {}) {
  std::string out;
  server::encode_header(out, modifier1, static_cast<std::uint16_t>(payload.size()), modifier2);
  out.append(payload);
  out.append(body);
  return out;
}

}  // namespace wire
