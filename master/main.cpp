// server: a preforking application server with a shared-memory cache, wire-compatible with uWSGI's
// caching framework.
#include <cstdio>
#include <exception>
#include <string_view>

#include "build_info.hpp"  // generated: cmake/build_info.cmake
#include "config/config.hpp"
#include "master/extras.hpp"
#include "master/master.hpp"
#include "server/client.hpp"
#ifdef HAVE_PYHOST
#include "pyhost/pyhost.hpp"
#endif

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "cache") {
    master::unblock_master_signals();  // a command-line tool: Ctrl-C should simply stop it
    return server::run_cache_command_line(argc - 2, argv + 2);
  }
  master::remember_argv(argc, argv);  // before anything reads the environment: --auto-procname
  config::ParseResult parsed;
  try {
    parsed = config::parse_command_line(argc, argv);
  } catch (const config::ConfigError& error) {
    std::fprintf(stderr, "server: configuration error: %s\n(try %s --help)\n", error.what(), argv[0]);
    return 1;
  }
  if (parsed.help_requested) {
    std::fputs(config::help_text(argv[0]).c_str(), stdout);
    return 0;
  }
  if (parsed.version_requested) {
    std::puts("server " BUILD_INFO_VERSION " (git " BUILD_INFO_REVISION
              "; uwsgi cache protocol compatible with uWSGI 2.0.21)");
    return 0;
  }
  for (const auto& warning : parsed.warnings) std::fprintf(stderr, "WARNING: %s\n", warning.c_str());
  std::fputs(parsed.show_config.c_str(), stderr);  // uWSGI logs it too
#ifdef HAVE_PYHOST
  pyhost::register_host();  // the server's application host (server/application.hpp)
#endif
  try {
    return master::run_master(parsed.config);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "server: %s\n", error.what());
    return 1;
  }
}
