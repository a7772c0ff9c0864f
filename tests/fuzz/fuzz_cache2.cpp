// The --cache2 spec parser (config/): "name=N,items=N,key=value,..." with backslash escapes, sizes,
// aliases and address lists. The input is one spec. Properties, besides no crash:
//   - a bad spec gives a config::ConfigError, never another exception;
//   - a spec that parses gives a valid cache (name, items, sizes, hash, blocks >= items);
//   - the command line's --cache2 agrees with parse_cache2_spec (one parser behind both), for a spec
//     without placeholders: the command line expands $(ENV), @(file) and %(option) first, as uWSGI
//     does, so "sync=10.0.0.@(x" reads a file there (and fails) while the spec parser takes it as text.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "config/config.hpp"
#include "tests/fuzz/check.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string spec(reinterpret_cast<const char*>(data), size);
  bool parsed = false;
  config::CacheSpec cache;
  try {
    cache = config::parse_cache2_spec(spec);
    parsed = true;
  } catch (const config::ConfigError& error) {
    FUZZ_CHECK(std::string_view(error.what()).starts_with("--cache2 \""));
  }
  if (parsed) {
    FUZZ_CHECK(!cache.name.empty() && cache.items > 0 && cache.blocksize > 0 && cache.keysize > 0);
    FUZZ_CHECK(cache.hash == "djb33x" || cache.hash == "murmur2");
    FUZZ_CHECK(cache.blocks == 0 || cache.blocks >= cache.items);
  }
  if (spec.find('\0') != std::string::npos) return 0;  // a command line cannot carry it
  for (const char* opener : {"$(", "@(", "%("}) {
    if (spec.find(opener) != std::string::npos) return 0;
  }
  const char* argv[] = {"server", "--cache2", spec.c_str()};
  bool accepted = false;
  config::ParseResult result;
  try {
    result = config::parse_command_line(3, argv);
    accepted = true;
  } catch (const config::ConfigError&) {
  }
  FUZZ_CHECK(accepted == parsed);
  if (!accepted) return 0;
  FUZZ_CHECK(result.config.caches.size() == 1);
  const config::CacheSpec& same = result.config.caches[0];
  FUZZ_CHECK(same.name == cache.name && same.items == cache.items && same.blocksize == cache.blocksize &&
             same.keysize == cache.keysize && same.hashsize == cache.hashsize && same.store == cache.store &&
             same.nodes == cache.nodes && same.udp_servers == cache.udp_servers && same.sync == cache.sync &&
             same.math_initial == cache.math_initial && same.purge_lru == cache.purge_lru);
  return 0;
}
