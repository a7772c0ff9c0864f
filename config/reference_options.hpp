// The uWSGI options real deployments use (the acceptance corpus of issue 11: ~120 configurations from
// public repositories, counted in shared/reference/real-world-options.md), most used first. The options
// reference (docs/options.md) gives each one's status here, derived from the option table.
#pragma once

#include <span>
#include <string_view>

namespace config {

struct ReferenceOption {
  std::string_view name;  // uWSGI's spelling; "(positional-config-file)" for `server app.ini`
  int files;              // how many of the configurations use it
};

std::span<const ReferenceOption> real_world_options();

}  // namespace config
