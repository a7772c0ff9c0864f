#include "pyhost/cache_target.hpp"

namespace pyhost {

CacheTarget parse_cache_target(std::string_view spec) {
  CacheTarget target;
  if (spec.empty()) return target;  // the common case: the local default cache
  if (const auto at = spec.find('@'); at != std::string_view::npos) {
    target.remote = true;
    target.name = spec.substr(0, at);
    target.address = spec.substr(at + 1);
    return target;
  }
  if (spec.find_first_of(":/") != std::string_view::npos) {
    target.remote = true;
    target.address = spec;
    return target;
  }
  target.name = spec;
  return target;
}

}  // namespace pyhost
