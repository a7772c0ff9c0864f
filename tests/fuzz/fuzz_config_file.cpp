// The ini and toml loaders (config/, --ini / --toml): a configuration file is outside input. The first
// byte chooses the loader (even: ini, odd: toml), the rest is the file. Properties, besides no crash:
//   - a bad file gives a config::ConfigError (a message naming the problem), never another exception;
//   - a file that loads gives a configuration whose caches are valid and uniquely named, and loading
//     it again gives the same caches (no state leaks between loads).
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "config/config.hpp"
#include "tests/fuzz/check.hpp"

namespace {

// The file lives in memory: a memfd reached through /proc/self/fd, rewritten for each input.
const std::string& file_path() {
  static const std::string path = [] {
    const int fd = memfd_create("fuzz-config", MFD_CLOEXEC);
    FUZZ_CHECK(fd >= 0);
    return "/proc/self/fd/" + std::to_string(fd);
  }();
  return path;
}

void write_file(std::string_view content) {
  const int fd = std::stoi(file_path().substr(14));
  FUZZ_CHECK(ftruncate(fd, 0) == 0);
  FUZZ_CHECK(pwrite(fd, content.data(), content.size(), 0) == static_cast<ssize_t>(content.size()));
}

bool load(const char* option, config::ParseResult& out, std::string& error) {
  const char* argv[] = {"server", option, file_path().c_str()};
  try {
    out = config::parse_command_line(3, argv);
    return true;
  } catch (const config::ConfigError& problem) {
    error = problem.what();
    return false;
  }
}

bool same_caches(const config::Config& a, const config::Config& b) {
  if (a.caches.size() != b.caches.size()) return false;
  for (std::size_t i = 0; i < a.caches.size(); ++i) {
    const auto &x = a.caches[i], &y = b.caches[i];
    if (x.name != y.name || x.items != y.items || x.blocksize != y.blocksize || x.keysize != y.keysize ||
        x.store != y.store || x.nodes != y.nodes || x.sync != y.sync)
      return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const char* option = data[0] % 2 == 0 ? "--ini" : "--toml";
  write_file(std::string_view(reinterpret_cast<const char*>(data) + 1, size - 1));
  config::ParseResult first, second;
  std::string error;
  if (!load(option, first, error)) {
    FUZZ_CHECK(!error.empty());
    return 0;
  }
  if (first.help_requested || first.version_requested) return 0;
  const config::Config& config = first.config;
  for (std::size_t i = 0; i < config.caches.size(); ++i) {
    const config::CacheSpec& spec = config.caches[i];
    FUZZ_CHECK(!spec.name.empty() && spec.items > 0 && spec.blocksize > 0 && spec.keysize > 0);
    FUZZ_CHECK(spec.blocks == 0 || spec.blocks >= spec.items);
    for (std::size_t j = 0; j < i; ++j) FUZZ_CHECK(config.caches[j].name != spec.name);
  }
  FUZZ_CHECK(load(option, second, error) && same_caches(config, second.config));
  return 0;
}
