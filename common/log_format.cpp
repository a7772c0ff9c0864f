#include "common/log_format.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace common {

bool parse_log_format(std::string_view format, std::vector<LogFormatPiece>& out, std::string& error) {
  out.clear();
  std::size_t pos = 0;
  std::string literal;
  while (pos < format.size()) {
    const std::size_t start = format.find("%(", pos);
    if (start == std::string_view::npos) {
      literal.append(format.substr(pos));
      break;
    }
    literal.append(format.substr(pos, start - pos));
    const std::size_t end = format.find(')', start + 2);
    if (end == std::string_view::npos) {
      error = fmt::format("unterminated %( at byte {}", start);
      return false;
    }
    const std::string_view name = format.substr(start + 2, end - start - 2);
    if (std::find(kLogFormatVariables.begin(), kLogFormatVariables.end(), name) ==
        kLogFormatVariables.end()) {
      error = fmt::format("unknown variable %({}) at byte {} (known: {})", name, start,
                          fmt::join(kLogFormatVariables, ", "));
      return false;
    }
    if (!literal.empty()) out.push_back({false, std::move(literal)});
    literal.clear();
    out.push_back({true, std::string(name)});
    pos = end + 1;
  }
  if (!literal.empty()) out.push_back({false, std::move(literal)});
  return true;
}

}  // namespace common
