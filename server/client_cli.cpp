// `server cache COMMAND ...`: a command-line front-end to CacheClient.
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "server/client.hpp"
#include "server/protocol.hpp"

namespace server {

namespace {

inline constexpr int kExitOk = 0;
inline constexpr int kExitMiss = 1;
inline constexpr int kExitError = 2;

inline constexpr std::string_view kDefaultServer = "127.0.0.1:3031";

inline constexpr std::string_view kUsage =
    R"(usage: server cache COMMAND [ARGS] [OPTIONS]

Talks to a cache over the uwsgi protocol (modifier1 111, modifier2 17), as uWSGI's remote cache
calls do: works against this server and against uWSGI 2.0.

commands:
  get KEY              write the value to stdout, raw
  set KEY [VALUE]      store KEY unless it already exists
  update KEY [VALUE]   store KEY, replacing any value
  del KEY              delete KEY
  exists KEY           exit 0 if KEY exists, 1 if not
  clear                delete every item of the cache
  keys                 list the keys, one a line (this server's extension; not in uWSGI)
  stats                the cache's counters as "name value" lines (extension; not in uWSGI)
  The value of set/update: the VALUE argument, --file PATH, or stdin when VALUE is "-" or absent.

options (anywhere after "cache"; --opt VALUE or --opt=VALUE):
  --cache-server ADDR  host:port, :port, [v6]:port or a UNIX socket path (default 127.0.0.1:3031)
  --cache NAME         the cache on the server (default: the server's default cache)
  --expires N          set/update: expire N seconds from now (default 0 = never)
  --file PATH          set/update: read the value from PATH
  --no-persistent      never offer the persistent mode (one connection per request)
  --timeout MS         connect and each read/write timeout in milliseconds (default 4000)
  --                   end of options (for a key that starts with "-")
  -h, --help           this text

exit status: 0 hit/ok, 1 miss/refused (not found, key exists for set, cache full, ...), 2 error
)";

struct UsageError {
  std::string what;
};

struct Arguments {
  std::vector<std::string_view> positional;  // command then its arguments
  std::string server{kDefaultServer};
  std::string cache;
  std::int64_t expires = 0;
  std::optional<std::string> file;
  ClientOptions options;
  bool help = false;
};

std::int64_t parse_number(std::string_view option, std::string_view text, std::int64_t max) {
  std::uint64_t value = 0;
  if (!parse_decimal(text, value) || value > static_cast<std::uint64_t>(max)) {
    throw UsageError{fmt::format("{} wants a whole number from 0 to {}, got \"{}\"", option, max, text)};
  }
  return static_cast<std::int64_t>(value);
}

Arguments parse_arguments(int argc, const char* const argv[]) {
  Arguments parsed;
  bool options_done = false;
  for (int i = 0; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (options_done || !arg.starts_with("-") || arg == "-") {
      parsed.positional.push_back(arg);
      continue;
    }
    if (arg == "--") {
      options_done = true;
      continue;
    }
    if (arg == "-h" || arg == "--help") {
      parsed.help = true;
      continue;
    }
    if (arg == "--no-persistent") {
      parsed.options.persistent = false;
      continue;
    }
    std::string_view name = arg;
    std::optional<std::string_view> value;
    if (const auto equals = arg.find('='); equals != std::string_view::npos) {
      name = arg.substr(0, equals);
      value = arg.substr(equals + 1);
    }
    const bool known = name == "--cache-server" || name == "--cache" || name == "--expires" ||
                       name == "--file" || name == "--timeout";
    if (!known) throw UsageError{fmt::format("unknown option \"{}\"", arg)};
    if (!value) {
      if (i + 1 >= argc) throw UsageError{fmt::format("{} needs a value", name)};
      value = argv[++i];
    }
    if (name == "--cache-server") {
      parsed.server = *value;
    } else if (name == "--cache") {
      parsed.cache = *value;
    } else if (name == "--expires") {
      parsed.expires = parse_number(name, *value, std::int64_t{1} << 40);
    } else if (name == "--file") {
      parsed.file = std::string(*value);
    } else {
      parsed.options.timeout_ms = static_cast<int>(parse_number(name, *value, INT_MAX));
      if (parsed.options.timeout_ms == 0) throw UsageError{"--timeout must be at least 1 ms"};
    }
  }
  return parsed;
}

// Reads a whole file descriptor; false with `error` on a read failure.
bool read_all(int fd, std::string& out, std::string& error) {
  char buffer[65536];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof buffer);
    if (n > 0) {
      out.append(buffer, static_cast<std::size_t>(n));
    } else if (n == 0) {
      return true;
    } else if (errno != EINTR) {
      error = std::strerror(errno);
      return false;
    }
  }
}

// The value of set/update: the argument, --file, or stdin.
std::string read_value(const Arguments& args) {
  const std::string_view command = args.positional[0];
  const bool from_argument = args.positional.size() == 3 && args.positional[2] != "-";
  if (args.file && args.positional.size() == 3) {
    throw UsageError{fmt::format("{}: give the value as an argument or with --file, not both", command)};
  }
  if (from_argument) return std::string(args.positional[2]);
  std::string value;
  std::string error;
  if (args.file) {
    const int fd = ::open(args.file->c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 || !read_all(fd, value, error)) {
      if (fd < 0) error = std::strerror(errno);
      if (fd >= 0) ::close(fd);
      throw std::runtime_error(fmt::format("cannot read the value from {}: {}", *args.file, error));
    }
    ::close(fd);
    return value;
  }
  if (!read_all(STDIN_FILENO, value, error)) {
    throw std::runtime_error(fmt::format("cannot read the value from stdin: {}", error));
  }
  return value;
}

bool write_stdout(std::string_view bytes) {
  return std::fwrite(bytes.data(), 1, bytes.size(), stdout) == bytes.size() && std::fflush(stdout) == 0;
}

// Checks the argument count of a command: `wanted` arguments after the command, or a range.
void expect_arguments(const Arguments& args, std::size_t at_least, std::size_t at_most,
                      std::string_view shape) {
  const std::size_t given = args.positional.size() - 1;
  if (given < at_least || given > at_most) {
    throw UsageError{fmt::format("usage: server cache {}", shape)};
  }
}

int report(const CacheClient& client, ClientStatus status, std::string_view refused_note = {}) {
  if (status == ClientStatus::error) {
    std::fprintf(stderr, "server cache: %s\n", client.last_error().c_str());
    return kExitError;
  }
  if (status == ClientStatus::miss) {
    if (!refused_note.empty()) {
      std::fprintf(stderr, "server cache: %.*s\n", static_cast<int>(refused_note.size()),
                   refused_note.data());
    }
    return kExitMiss;
  }
  return kExitOk;
}

int run(const Arguments& args) {
  const std::string_view command = args.positional[0];
  const bool writes = command == "set" || command == "update";
  if (!writes && (args.file || args.expires != 0)) {
    throw UsageError{fmt::format("{}: --file and --expires only apply to set and update", command)};
  }
  CacheClient client(args.server, args.options);
  if (command == "get") {
    expect_arguments(args, 1, 1, "get KEY");
    std::string value;
    const ClientStatus status = client.get(args.positional[1], value, args.cache);
    if (status == ClientStatus::ok && !write_stdout(value)) {
      std::fprintf(stderr, "server cache: writing the value to stdout: %s\n", std::strerror(errno));
      return kExitError;
    }
    return report(client, status);
  }
  if (writes) {
    expect_arguments(args, 1, 2, fmt::format("{} KEY [VALUE|-] [--file PATH] [--expires N]", command));
    const std::string value = read_value(args);
    const std::string_view key = args.positional[1];
    const ClientStatus status = command == "set" ? client.set(key, value, args.expires, args.cache)
                                                 : client.update(key, value, args.expires, args.cache);
    return report(client, status,
                  fmt::format("{} {}: not stored ({}the cache is full, the value is empty or too big, or the "
                              "cache does not exist)",
                              command, printable(key), command == "set" ? "the key exists, " : ""));
  }
  if (command == "del" || command == "exists") {
    expect_arguments(args, 1, 1, fmt::format("{} KEY", command));
    const std::string_view key = args.positional[1];
    return report(client, command == "del" ? client.del(key, args.cache) : client.exists(key, args.cache));
  }
  if (command == "clear") {
    expect_arguments(args, 0, 0, "clear");
    return report(client, client.clear(args.cache), "clear: refused (does the cache exist?)");
  }
  if (command == "keys") {
    expect_arguments(args, 0, 0, "keys");
    std::vector<std::string> keys;
    const ClientStatus status = client.keys(keys, args.cache);
    std::string out;
    for (const std::string& key : keys) {
      out += key;
      out += '\n';
    }
    if (status == ClientStatus::ok && !write_stdout(out)) {
      std::fprintf(stderr, "server cache: writing to stdout: %s\n", std::strerror(errno));
      return kExitError;
    }
    return report(client, status);
  }
  if (command == "stats") {
    expect_arguments(args, 0, 0, "stats");
    std::vector<std::pair<std::string, std::string>> stats;
    const ClientStatus status = client.stats(stats, args.cache);
    std::string out;
    for (const auto& [name, value] : stats) out += fmt::format("{} {}\n", name, value);
    if (status == ClientStatus::ok && !write_stdout(out)) {
      std::fprintf(stderr, "server cache: writing to stdout: %s\n", std::strerror(errno));
      return kExitError;
    }
    return report(client, status);
  }
  throw UsageError{
      fmt::format("unknown command \"{}\" (get, set, update, del, exists, clear, keys, stats)", command)};
}

}  // namespace

int run_cache_command_line(int argc, const char* const argv[]) {
  try {
    const Arguments args = parse_arguments(argc, argv);
    if (args.help) {
      std::fputs(kUsage.data(), stdout);
      return kExitOk;
    }
    if (args.positional.empty()) throw UsageError{"no command given"};
    return run(args);
  } catch (const UsageError& error) {
    std::fprintf(stderr, "server cache: %s\n(try: server cache --help)\n", error.what.c_str());
  } catch (const std::exception& error) {
    std::fprintf(stderr, "server cache: %s\n", error.what());
  }
  return kExitError;
}

}  // namespace server
