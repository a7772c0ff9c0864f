// The one option table and everything generated from it: the command-line parser, the ini and toml
// loaders, --help and the options reference. Adding an option is adding one row to build_table().
#include <fmt/format.h>
#include <sys/stat.h>
#include <toml++/toml.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <deque>
#include <fstream>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <utility>

#include "common/log_format.hpp"
#include "config/config.hpp"
#include "config/ini.hpp"
#include "config/reference_options.hpp"

namespace config {
namespace {

constexpr std::string_view kCommandLine = "command line";
// Nested --ini/--toml inside files: deep enough for real layering, shallow enough to catch a loop.
constexpr int kMaxIncludeDepth = 16;
constexpr std::int64_t kMaxSeconds = std::numeric_limits<int>::max();
constexpr std::int64_t kMaxCacheItems = std::numeric_limits<std::uint32_t>::max();
constexpr std::int64_t kMaxBlocksize = static_cast<std::int64_t>(cache::kMaxValueBytes);

constexpr std::string_view kSocketsGroup = "Sockets and processes";
constexpr std::string_view kCacheGroup = "The default cache (--cache and friends)";
constexpr std::string_view kMoreCachesGroup = "More caches and cache content";
constexpr std::string_view kApplicationGroup = "Application";
constexpr std::string_view kLifecycleGroup = "Privileges, files and worker recycling";
constexpr std::int64_t kMaxRequests = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t kMaxMegabytes = std::int64_t{1} << 40;
constexpr std::string_view kStaticGroup =
    "Static files (served by the workers with sendfile, never by the application)";
constexpr std::string_view kReloadGroup = "Reloading, adaptive workers, side processes and hooks";
constexpr std::string_view kObservabilityGroup = "Stats, metrics and logs";
constexpr std::string_view kSourcesGroup = "Configuration sources and information";
constexpr std::string_view kLogicGroup =
    "Configuration logic (uWSGI's if/for blocks; ini, toml or command line)";
// Rows of this group are accepted with one WARNING line whose reason is their help text.
constexpr std::string_view kAcceptedGroup =
    "Accepted for uWSGI compatibility, with no effect here (one WARNING)";
// Rows of this group are refused with an error whose reason is their help text: ignoring them would
// silently change what the configuration means (security, routing, another server model).
constexpr std::string_view kRefusedGroup = "Refused: uWSGI options that cannot be ignored safely (an error)";

// ---------------------------------------------------------------------------------------------
// Small text helpers

std::string_view trim(std::string_view text) {
  const auto first = text.find_first_not_of(" \t\r\n");
  if (first == std::string_view::npos) return {};
  const auto last = text.find_last_not_of(" \t\r\n");
  return text.substr(first, last - first + 1);
}

std::vector<std::string_view> split_words(std::string_view text) {
  std::vector<std::string_view> words;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const auto start = text.find_first_not_of(' ', pos);
    if (start == std::string_view::npos) break;
    const auto end = std::min(text.find(' ', start), text.size());
    words.push_back(text.substr(start, end - start));
    pos = end;
  }
  return words;
}

// Optimal string alignment distance: a swapped pair of letters ("itmes") counts as one edit.
std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::vector<std::size_t>> d(a.size() + 1, std::vector<std::size_t>(b.size() + 1));
  for (std::size_t i = 0; i <= a.size(); ++i) d[i][0] = i;
  for (std::size_t j = 0; j <= b.size(); ++j) d[0][j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      d[i][j] = std::min({d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost});
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1]) {
        d[i][j] = std::min(d[i][j], d[i - 2][j - 2] + 1);
      }
    }
  }
  return d[a.size()][b.size()];
}

// The closest candidate if it is close enough to be a plausible typo, else "".
std::string_view closest_match(std::string_view typed, const std::vector<std::string_view>& candidates) {
  const std::size_t allowed = typed.size() <= 4 ? 1 : 2;
  std::string_view best;
  std::size_t best_distance = allowed + 1;
  for (const auto candidate : candidates) {
    // The distance is at least the difference in length: skipping those keeps a long unknown key (a
    // garbled file) from costing length x candidates table cells.
    const auto longer = std::max(typed.size(), candidate.size());
    if (longer - std::min(typed.size(), candidate.size()) > allowed) continue;
    const auto distance = edit_distance(typed, candidate);
    if (distance < best_distance) {
      best = candidate;
      best_distance = distance;
    }
  }
  return best;
}

std::optional<bool> parse_bool(std::string_view text) {
  std::string lower(trim(text));
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  if (lower == "true" || lower == "1" || lower == "yes" || lower == "on") return true;
  if (lower == "false" || lower == "0" || lower == "no" || lower == "off") return false;
  return std::nullopt;
}

// Decimal integer, optionally followed by one unit letter (k, m, g: powers of 1024) when allowed.
// nullopt on garbage or overflow.
std::optional<std::int64_t> parse_number(std::string_view text, bool allow_units) {
  text = trim(text);
  std::int64_t multiplier = 1;
  if (allow_units && !text.empty()) {
    switch (text.back()) {
      case 'k':
      case 'K':
        multiplier = std::int64_t{1} << 10;
        break;
      case 'm':
      case 'M':
        multiplier = std::int64_t{1} << 20;
        break;
      case 'g':
      case 'G':
        multiplier = std::int64_t{1} << 30;
        break;
      default:
        break;
    }
    if (multiplier != 1) text.remove_suffix(1);
  }
  if (text.empty() || text.front() == '+') return std::nullopt;
  std::int64_t number = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), number);
  if (error != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  if (number > std::numeric_limits<std::int64_t>::max() / multiplier ||
      number < std::numeric_limits<std::int64_t>::min() / multiplier) {
    return std::nullopt;
  }
  return number * multiplier;
}

// "65536" -> "64k": how a user would write a default size.
std::string format_size(std::int64_t bytes) {
  if (bytes > 0 && bytes % (std::int64_t{1} << 30) == 0) return fmt::format("{}G", bytes >> 30);
  if (bytes > 0 && bytes % (std::int64_t{1} << 20) == 0) return fmt::format("{}M", bytes >> 20);
  if (bytes > 0 && bytes % (std::int64_t{1} << 10) == 0) return fmt::format("{}k", bytes >> 10);
  return std::to_string(bytes);
}

std::string expected_number(OptionType type, std::int64_t min_value, std::int64_t max_value) {
  if (type == OptionType::size) {
    return fmt::format("expected a size between {} and {} (a number with an optional k/M/G suffix, e.g. 64k)",
                       min_value, max_value);
  }
  return fmt::format("expected an integer between {} and {}", min_value, max_value);
}

constexpr std::string_view kExpectedBool = "expected true/false, 1/0, yes/no or on/off";

// ---------------------------------------------------------------------------------------------
// Value checks for string and list options (they throw InvalidValue naming the expected form)

constexpr std::string_view kExpectedSocket =
    "expected host:port, [v6]:port, :port (all interfaces), a UNIX socket path or @name (abstract), with a "
    "port between 1 and 65535";

void check_socket(std::string_view value) {
  try {
    parse_socket_address(value);
  } catch (const ConfigError&) {
    throw InvalidValue{std::string(kExpectedSocket)};
  }
}

void check_udp_address(std::string_view value) {
  SocketAddress address;
  try {
    address = parse_socket_address(value);
  } catch (const ConfigError&) {
    address.is_unix = true;
  }
  if (address.is_unix) throw InvalidValue{"expected a UDP address ip:port with a port between 1 and 65535"};
}

void check_chmod(std::string_view value) {
  if (!parse_chmod_mode(value)) {
    throw InvalidValue{"expected an octal file mode of 3 or 4 digits, e.g. 660 or 0666"};
  }
}

// A user or group: a name (as in /etc/passwd) or a number; resolved when the server starts.
bool valid_identity(std::string_view value) {
  if (value.empty() || value.size() > 64) return false;
  return std::all_of(value.begin(), value.end(), [](unsigned char c) {
    return std::isalnum(c) || c == '_' || c == '-' || c == '.' || c == '$';
  });
}

void check_identity(std::string_view value) {
  if (!valid_identity(value)) throw InvalidValue{"expected a user or group name, or a number"};
}

void check_owner(std::string_view value) {
  const auto colon = value.find(':');
  const bool ok = valid_identity(value.substr(0, colon)) &&
                  (colon == std::string_view::npos || valid_identity(value.substr(colon + 1)));
  if (!ok) throw InvalidValue{"expected USER or USER:GROUP (names or numbers)"};
}

void check_umask(std::string_view value) {
  if (!parse_umask(value)) throw InvalidValue{"expected an octal mask of 1 to 4 digits, e.g. 022"};
}

void check_protocol(std::string_view value) {
  if (value != "uwsgi" && value != "http")
    throw InvalidValue{"expected uwsgi or http (the protocols served here)"};
}

void check_accept_mode(std::string_view value) {
  if (value != "exclusive" && value != "shared") throw InvalidValue{"expected exclusive or shared"};
}

void check_existing_dir(std::string_view value) {
  struct stat st {};
  if (value.empty() || ::stat(std::string(value).c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw InvalidValue{"expected an existing folder (a virtualenv: the folder holding bin/ and lib/)"};
  }
}

void check_static_mount(std::string_view value) {
  const auto equals = value.find('=');
  if (value.empty() || value.front() != '/' || equals == std::string_view::npos ||
      equals + 1 == value.size()) {
    throw InvalidValue{"expected /MOUNTPOINT=PATH, e.g. /static=/srv/app/static"};
  }
}

void check_static_expires(std::string_view value) {
  const auto space = value.find_last_of(' ');
  const auto seconds = space == std::string_view::npos ? std::string_view() : value.substr(space + 1);
  const bool number = !seconds.empty() && seconds.find_first_not_of("0123456789") == std::string_view::npos;
  bool pattern = number && space > 0;
  if (pattern) {
    try {
      std::regex compiled(std::string(value.substr(0, space)), std::regex::ECMAScript);
    } catch (const std::regex_error&) {
      pattern = false;
    }
  }
  if (!pattern) throw InvalidValue{"expected \"REGEXP SECONDS\" with a valid regular expression"};
}

void check_cheaper_algo(std::string_view value) {
  if (value != "spare" && value != "busyness")
    throw InvalidValue{"expected spare or busyness (uWSGI's other algorithms are not implemented)"};
}

// uWSGI's hook actions we run: exec:COMMAND and unix_signal:N HANDLER (master/extras.cpp decides which
// signal mappings it can honour).
void check_hook(std::string_view value) {
  if (value.starts_with("exec:") && value.size() > 5) return;
  if (value.starts_with("unix_signal:")) return;
  throw InvalidValue{
      "expected exec:COMMAND or unix_signal:N HANDLER (other hook actions are not implemented)"};
}

void check_header(std::string_view value) {
  const auto colon = value.find(':');
  const bool ok = colon != std::string_view::npos && colon > 0 &&
                  value.find_first_of("\r\n") == std::string_view::npos &&
                  std::all_of(value.begin(), value.begin() + static_cast<std::ptrdiff_t>(colon),
                              [](unsigned char c) { return std::isalnum(c) || c == '-' || c == '_'; });
  if (!ok)
    throw InvalidValue{"expected \"Name: value\" (a header name of letters, digits and -, no line breaks)"};
}

void check_mount(std::string_view value) {
  const auto equals = value.find('=');
  if (equals == std::string_view::npos || equals + 1 == value.size())
    throw InvalidValue{"expected MOUNTPOINT=APP (a .py/.wsgi file or module[:callable])"};
  if (equals > 0 && value[0] != '/') throw InvalidValue{"the mountpoint must start with '/'"};
}

void check_key_value(std::string_view value) {
  const auto equals = value.find('=');
  if (equals == std::string_view::npos || equals == 0) throw InvalidValue{"expected KEY=VALUE"};
}

void check_cache_item(std::string_view value) {
  const auto equals = value.find('=');
  if (equals == std::string_view::npos || equals == 0 || value[equals - 1] == ' ') {
    throw InvalidValue{"expected \"[cachename ]key=value\""};
  }
}

void check_stats_address(std::string_view value) {
  if (value.empty()) throw InvalidValue{"expected host:port, a UNIX path or @name"};
  parse_socket_address(value);  // throws with the reason
}

void check_log_format(std::string_view value) {
  std::vector<common::LogFormatPiece> pieces;
  std::string error;
  if (!common::parse_log_format(value, pieces, error)) throw InvalidValue{error};
}

void check_req_logger(std::string_view value) {
  if (value.substr(0, 5) != "file:" || value.size() == 5)
    throw InvalidValue{"expected file:PATH (the only request logger plugin built in)"};
}

}  // namespace

LoggerSpec parse_logger(std::string_view value) {
  LoggerSpec spec;
  const std::size_t space = value.find(' ');
  if (space != std::string_view::npos) {
    spec.name = std::string(value.substr(0, space));
    value.remove_prefix(space + 1);
  }
  const std::size_t colon = value.find(':');
  spec.plugin = std::string(value.substr(0, colon));
  if (colon != std::string_view::npos) spec.arg = std::string(value.substr(colon + 1));
  if (spec.plugin == "stdio") {
    if (!spec.arg.empty()) spec.error = "the stdio logger takes no argument";
  } else if (spec.plugin == "file") {
    if (spec.arg.empty()) spec.error = "expected file:PATH";
  } else if (spec.plugin == "fd") {
    const bool digits = !spec.arg.empty() && spec.arg.size() < 10 &&
                        spec.arg.find_first_not_of("0123456789") == std::string::npos;
    if (!digits) spec.error = "expected fd:N (a descriptor number)";
  } else {
    spec.error = fmt::format(
        "logger plugin \"{}\" is not built in (stdio, file:PATH and fd:N are); send the log to a file "
        "(--logto) or to stderr, which systemd's journal and container runtimes collect",
        spec.plugin);
  }
  return spec;
}

namespace {

// --logger [NAME ]PLUGIN[:ARGS]: uWSGI's logger plugins that make sense here. A plugin that sends lines
// elsewhere (syslog, a socket, a journal) is refused rather than silently dropping the lines there.
void check_logger(std::string_view value) {
  const LoggerSpec spec = parse_logger(value);
  if (!spec.error.empty()) throw InvalidValue{spec.error};
}

void check_cache2(std::string_view value);  // defined with the --cache2 key table below

// ---------------------------------------------------------------------------------------------
// The option table

// Defaults shown in --help come from a default-constructed Config, so they cannot drift from it.
// (Function-local statics: safe whatever the order of static initialisation across files.)
const Config& defaults() {
  static const Config config{};
  return config;
}

// Keeps the text of defaults formatted from numbers alive; a deque never moves its elements.
std::string_view keep(std::string text) {
  static std::deque<std::string> texts;
  return texts.emplace_back(std::move(text));
}

struct Bounds {
  std::int64_t min_value;
  std::int64_t max_value;
};

OptionSpec flag(std::string_view name, std::string_view aliases, bool Config::*field, std::string_view group,
                std::string_view help) {
  return {name, aliases, OptionType::flag, defaults().*field ? "on" : "off", 0, 1, help, group, "", field};
}

template <typename Number>
OptionSpec integer(std::string_view name, std::string_view aliases, Number Config::*field, Bounds bounds,
                   std::string_view group, std::string_view value_name, std::string_view help) {
  return {name,
          aliases,
          OptionType::integer,
          keep(std::to_string(defaults().*field)),
          bounds.min_value,
          bounds.max_value,
          help,
          group,
          value_name,
          field};
}

template <typename Number>
OptionSpec size(std::string_view name, std::string_view aliases, Number Config::*field, Bounds bounds,
                std::string_view group, std::string_view value_name, std::string_view help) {
  return {name,
          aliases,
          OptionType::size,
          keep(format_size(static_cast<std::int64_t>(defaults().*field))),
          bounds.min_value,
          bounds.max_value,
          help,
          group,
          value_name,
          field};
}

OptionSpec text(std::string_view name, std::string_view aliases, std::string Config::*field,
                std::string_view group, std::string_view value_name, std::string_view help,
                ValueCheck check = nullptr) {
  return {name, aliases, OptionType::string, defaults().*field, 0, 0, help, group, value_name, field, check};
}

OptionSpec list(std::string_view name, std::string_view aliases, std::vector<std::string> Config::*field,
                std::string_view group, std::string_view value_name, std::string_view help,
                ValueCheck check = nullptr) {
  return {name, aliases, OptionType::list, "", 0, 0, help, group, value_name, field, check};
}

// The row of an option whose value uWSGI declares optional (see OptionSpec::bare_value).
OptionSpec optional_value(OptionSpec row, std::string_view bare_value) {
  row.bare_value = bare_value;
  return row;
}

// An option the parser acts on itself (no Config field).
OptionSpec action(std::string_view name, std::string_view aliases, OptionType type,
                  std::string_view value_name, std::string_view help) {
  return {name, aliases, type, "", 0, 0, help, kSourcesGroup, value_name, std::monostate{}};
}

// A uWSGI option that needs nothing here: accepted with one WARNING line saying why (its help).
OptionSpec accepted(std::string_view name, std::string_view aliases, OptionType type,
                    std::string_view value_name, std::string_view why) {
  return {name, aliases, type, "", 0, 0, why, kAcceptedGroup, value_name, std::monostate{}};
}

// A uWSGI option whose silent absence would be wrong: refused with an error saying why (its help).
OptionSpec refused(std::string_view name, std::string_view aliases, OptionType type,
                   std::string_view value_name, std::string_view why) {
  return {name, aliases, type, "", 0, 0, why, kRefusedGroup, value_name, std::monostate{}};
}

// A key of uWSGI's configuration logic, handled by the Collector (config/ini.cpp).
OptionSpec logic(std::string_view name, std::string_view aliases, std::string_view value_name,
                 std::string_view help) {
  const auto type = value_name.empty() ? OptionType::flag : OptionType::string;
  return {name, aliases, type, "", 0, 0, help, kLogicGroup, value_name, std::monostate{}};
}

std::vector<OptionSpec> build_table() {
  using C = Config;
  const auto g1 = kSocketsGroup, g2 = kCacheGroup, g3 = kMoreCachesGroup, g4 = kApplicationGroup;
  const auto g5 = kLifecycleGroup, g6 = kStaticGroup, g7 = kReloadGroup;
  return {
      list("socket", "uwsgi-socket -s", &C::sockets, g1, "ADDR",
           "bind a uwsgi-protocol socket: host:port, [v6]:port, :port (all interfaces), a UNIX path or @name "
           "(abstract UNIX socket)",
           check_socket),
      list("http-socket", "", &C::http_sockets, g1, "ADDR", "bind an HTTP socket (same forms as --socket)",
           check_socket),
      list("http", "", &C::http_router, g1, "ADDR",
           "uWSGI starts its HTTP router process here; here the workers serve HTTP on it directly, as on an "
           "--http-socket (one log line says so)",
           check_socket),
      text("protocol", "", &C::protocol, g1, "PROTO",
           "what the --socket sockets speak: uwsgi (default) or http (uWSGI's other protocols are refused)",
           check_protocol),
      list("persistent-socket", "", &C::persistent_sockets, g1, "ADDR",
           "bind a uwsgi-protocol socket whose connections carry many requests, every cache reply framed "
           "[111, length, modifier2] (ours; for our clients and benchmarks, never for nginx)",
           check_socket),
      // ---- the memcached protocol (docs/memcached.md) ----
      list("memcached-socket", "", &C::memcached_sockets, g1, "ADDR",
           "serve the memcached text and meta protocol here (same forms as --socket), on the cache "
           "--memcached-cache names, in the workers",
           check_socket),
      text("memcached-cache", "", &C::memcached_cache, g1, "NAME",
           "the cache the --memcached-socket sockets serve (default: the default cache, else the first "
           "--cache2)"),
      size("memcached-keysize", "", &C::memcached_keysize, {1, 65535}, g1, "SIZE",
           "longest key the memcached protocol accepts (memcached's limit is 250; the cache's keysize must "
           "be at least this)"),
      flag("memcached-no-io-uring", "", &C::memcached_no_io_uring, g1,
           "serve --memcached-socket connections on the workers' epoll loop, not on an io_uring thread per "
           "worker (the default where the kernel allows io_uring: fewer system calls per request)"),
      integer("processes", "workers -p", &C::processes, {1, 1024}, g1, "N", "number of worker processes"),
      flag("master", "-M", &C::master, g1, "accepted for uWSGI compatibility: the master always runs"),
      integer("listen", "-l", &C::listen_backlog, {1, 65535}, g1, "N", "listen(2) backlog of every socket"),
      optional_value(
          text("chmod-socket", "chmod -C", &C::chmod_socket, g1, "MODE",
               "octal mode of UNIX sockets, e.g. 660 (default: as created); bare or 1: 666", check_chmod),
          "666"),
      text("pidfile", "safe-pidfile", &C::pidfile, g1, "PATH",
           "write the master's pid to this file (written to a temporary file and renamed into place, as "
           "uWSGI's safe-pidfile)"),
      size("buffer-size", "-b", &C::buffer_size, {4, 65535}, g1, "SIZE",
           "largest request packet accepted (header + body)"),
      integer("harakiri", "-t", &C::harakiri, {0, kMaxSeconds}, g1, "SECONDS",
              "kill a worker stuck on one request this long (0 = off)"),
      integer("socket-timeout", "-z", &C::socket_timeout, {1, kMaxSeconds}, g1, "SECONDS",
              "close a connection idle this long"),
      size("limit-post", "", &C::limit_post, {0, std::numeric_limits<std::int64_t>::max()}, g1, "SIZE",
           "refuse an application request whose body is larger (CONTENT_LENGTH, HTTP Content-Length or "
           "chunked), before reading it: HTTP 413 and uWSGI's \"Invalid (too big) CONTENT_LENGTH\" line "
           "(0 = no limit)"),
      size("post-buffering", "", &C::post_buffering, {0, std::numeric_limits<std::int64_t>::max()}, g1,
           "SIZE",
           "application request bodies of SIZE bytes or more are buffered by the worker in an unlinked "
           "temporary file ($TMPDIR or /tmp) that wsgi.input reads, smaller ones in memory (0 = 16M; a "
           "chunked --http-socket body always stays in memory, up to 16M)"),
      integer("reload-mercy", "worker-reload-mercy", &C::reload_mercy, {0, kMaxSeconds}, g1, "SECONDS",
              "time a worker may take to finish in-flight requests on stop, reload or recycle"),
      text("uid", "", &C::uid, g5, "USER",
           "after binding the sockets and creating the caches, before loading the application: drop to this "
           "user (name or number; refuses to start if the drop fails)",
           check_identity),
      text("gid", "", &C::gid, g5, "GROUP",
           "drop to this group (name or number) at the same moment; with --uid also its supplementary groups",
           check_identity),
      text("chown-socket", "", &C::chown_socket, g5, "USER[:GROUP]",
           "owner of the UNIX socket files (names or numbers; without GROUP the group is left as created)",
           check_owner),
      text("umask", "", &C::umask, g5, "MODE", "umask of the server, set before any file is created (octal)",
           check_umask),
      flag("vacuum", "", &C::vacuum, g5,
           "remove the UNIX socket files and the pidfiles at exit (whatever the stop: SIGTERM, SIGINT, "
           "SIGQUIT)"),
      text("pidfile2", "safe-pidfile2", &C::pidfile2, g5, "PATH",
           "write the master's pid to this file after the privileges drop (as the --uid user)"),
      integer("max-requests", "", &C::max_requests, {0, kMaxRequests}, g5, "N",
              "recycle a worker after N requests: it stops accepting, finishes what it holds, exits, and the "
              "master starts a fresh one at once (0 = never)"),
      integer("max-requests-delta", "", &C::max_requests_delta, {0, kMaxRequests}, g5, "N",
              "worker W recycles after max-requests + (W-1) * N requests, so the workers do not all recycle "
              "together"),
      integer("max-worker-lifetime", "", &C::max_worker_lifetime, {0, kMaxSeconds}, g5, "SECONDS",
              "recycle a worker that has run this long (0 = never)"),
      integer(
          "reload-on-rss", "", &C::reload_on_rss, {0, kMaxMegabytes}, g5, "MB",
          "recycle a worker whose resident memory is above this many megabytes after a request (0 = off)"),
      integer("evil-reload-on-rss", "", &C::evil_reload_on_rss, {0, kMaxMegabytes}, g5, "MB",
              "the master kills (SIGKILL) a worker whose resident memory is above this many megabytes, "
              "checked every 100 ms, and starts a fresh one (0 = off)"),
      flag("log-debug", "", &C::debug_log, g1, "log debug lines (the master jobs' timings)"),
      text("accept-mode", "", &C::accept_mode, g1, "MODE",
           "exclusive: the kernel wakes one idle worker per connection (EPOLLEXCLUSIVE); shared: every "
           "worker wakes (the thundering herd, kept to measure the difference)",
           check_accept_mode),

      // Observability (issue 12): keep these rows together.
      text("stats", "stats-server", &C::stats, kObservabilityGroup, "ADDR",
           "serve uWSGI's stats JSON (what uwsgitop reads) on host:port, a UNIX path or @name, from a thread "
           "of the master that never blocks its signal handling, respawns or reloads",
           check_stats_address),
      flag("stats-http", "", &C::stats_http, kObservabilityGroup,
           "answer stats clients over HTTP: the JSON, and the Prometheus metrics at /metrics"),
      flag("metrics", "", &C::metrics, kObservabilityGroup,
           "also answer GET /metrics (Prometheus text format) on the application sockets (ours)"),
      flag("disable-logging", "", &C::disable_logging, kObservabilityGroup,
           "no request log lines (--log-4xx, --log-5xx and --log-slow still pick theirs)"),
      flag("log-4xx", "", &C::log_4xx, kObservabilityGroup,
           "log requests answered with a 4xx status even with --disable-logging"),
      flag("log-5xx", "", &C::log_5xx, kObservabilityGroup,
           "log requests answered with a 5xx status even with --disable-logging"),
      integer("log-slow", "", &C::log_slow, {0, kMaxSeconds}, kObservabilityGroup, "MSECS",
              "log requests that took at least this long even with --disable-logging (0 = off)"),
      text("log-format", "logformat", &C::log_format, kObservabilityGroup, "FORMAT",
           "request log line template with uWSGI's %(var) names (docs/operations.md lists them)",
           check_log_format),
      flag("log-cache", "", &C::log_cache, kObservabilityGroup,
           "log cache requests (modifier1 111) too; they are always counted"),
      flag("memory-report", "", &C::memory_report, kObservabilityGroup,
           "start each request log line with the worker's address space and resident memory, as uWSGI does"),
      text("logto", "", &C::logto, kObservabilityGroup, "FILE",
           "append every log line (and stdout, stderr) to FILE"),
      text("logto2", "", &C::logto2, kObservabilityGroup, "FILE",
           "as --logto, but opened after the privileges drop (as the --uid user)"),
      size("log-maxsize", "", &C::log_maxsize, {0, std::numeric_limits<std::int64_t>::max()},
           kObservabilityGroup, "SIZE",
           "rename the --logto file once it reaches SIZE bytes and start a fresh one (0 = never)"),
      text("log-backupname", "", &C::log_backupname, kObservabilityGroup, "FILE",
           "what --log-maxsize renames the log file to (default: FILE.<unix time>)"),
      flag("log-reopen", "", &C::log_reopen, kObservabilityGroup,
           "reopen the --logto file on reload (SIGHUP), after an outside rotation moved it"),
      text("daemonize", "", &C::daemonize, kObservabilityGroup, "FILE",
           "detach from the terminal (the master goes to the background) and log to FILE"),
      text("req-logger", "", &C::req_logger, kObservabilityGroup, "file:PATH",
           "write the request log lines to PATH instead of the log", check_req_logger),
      accepted("log-master", "", OptionType::flag, "",
               "each process writes its log lines itself, one write(2) each, so lines never interleave: no "
               "logger process is needed"),
      optional_value(text("log-date", "logdate", &C::log_date, kObservabilityGroup, "FORMAT",
                          "every log line here already starts with the date; a strftime FORMAT (not bare, "
                          "true or 1) is what %(ftime) shows with --logformat-strftime"),
                     "true"),
      flag("logformat-strftime", "log-format-strftime", &C::logformat_strftime, kObservabilityGroup,
           "%(ftime) in --log-format is the request's time in --log-date's FORMAT (else as %(ltime))"),
      list("logger", "", &C::loggers, kObservabilityGroup, "[NAME ]PLUGIN",
           "where the log lines go, as uWSGI's loggers: stdio (the default), file:PATH (as --logto) or fd:N; "
           "one destination (several loggers must name the same one)",
           check_logger),

      size("cache", "", &C::cache_items, {0, kMaxCacheItems}, g2, "ITEMS",
           "create the cache \"default\" with this many items (0 = none)"),
      size("cache-blocksize", "", &C::cache_blocksize, {1, kMaxBlocksize}, g2, "SIZE",
           "largest value of the default cache"),
      size("cache-keysize", "", &C::cache_keysize, {1, 65535}, g2, "SIZE",
           "longest key of the default cache"),
      text("cache-store", "", &C::cache_store, g2, "PATH", "persist the default cache in this file"),
      integer("cache-store-sync", "", &C::cache_store_sync, {0, kMaxSeconds}, g2, "N",
              "msync the store every N master cycles (0 = only when the server stops; the kernel writes back "
              "meanwhile); also the default of every --cache2"),
      flag("cache-store-delete", "", &C::cache_store_delete, g2,
           "recreate a store file that does not match the geometry instead of exiting"),
      flag("cache-no-expire", "", &C::cache_no_expire, g2, "never expire items: no sweeper (all caches)"),
      integer("cache-expire-freq", "", &C::cache_expire_freq, {1, kMaxSeconds}, g2, "SECONDS",
              "sleep of the sweeper between passes (all caches)"),
      flag("cache-report-freed-items", "", &C::cache_report_freed_items, g2,
           "log how many expired items each sweep freed"),
      flag("cache-purge-lru", "", &C::cache_purge_lru, g2,
           "when the default cache is full, evict the least recently used item"),
      list("cache-udp-server", "", &C::cache_udp_servers, g2, "ADDR",
           "receive UDP cache updates for the default cache on ip:port", check_udp_address),
      list("cache-udp-node", "", &C::cache_udp_nodes, g2, "ADDR",
           "send UDP cache updates of the default cache to ip:port", check_udp_address),
      text("cache-sync", "", &C::cache_sync, g2, "ADDR", "at start, copy the default cache from this node"),
      flag("cache-use-last-modified", "", &C::cache_use_last_modified, g2,
           "track the last modification time of the default cache"),

      list("cache2", "", &C::cache2_specs, g3, "SPEC",
           "create a named cache: key=value,... (see \"--cache2 keys\")", check_cache2),
      list("add-cache-item", "", &C::add_cache_items, g3, "[CACHE ]KEY=VALUE",
           "store an item at start (in every cache when CACHE is omitted)", check_cache_item),
      list("load-file-in-cache", "", &C::load_files_in_cache, g3, "[CACHE ]PATH",
           "store a file's content at start under its path"),

      text("module", "-w", &C::module, g4, "MODULE", "load the WSGI application from this Python module"),
      text("wsgi-file", "", &C::wsgi_file, g4, "PATH", "load the WSGI application from this file"),
      text("callable", "", &C::callable, g4, "NAME", "name of the WSGI callable in the module"),
      text("pyrun", "", &C::pyrun, g4, "FILE",
           "run this Python script in the server's interpreter (the uwsgi module, the caches), then exit "
           "with its status; no socket needed"),
      text("chdir", "", &C::chdir, g4, "DIR", "change to this directory before loading the application"),
      list("pythonpath", "", &C::pythonpath, g4, "DIR", "add a directory to sys.path"),
      list("env", "", &C::env, g4, "KEY=VALUE", "set an environment variable", check_key_value),
      list("mount", "", &C::mounts, g4, "MOUNTPOINT=APP",
           "load another application for requests under MOUNTPOINT (SCRIPT_NAME): APP is a file (.py, "
           ".wsgi) or a module[:callable]",
           check_mount),
      flag("manage-script-name", "", &C::manage_script_name, g4,
           "pick the --mount application by the longest mountpoint that prefixes PATH_INFO, and move that "
           "prefix from PATH_INFO to SCRIPT_NAME"),
      flag("lazy-apps", "lazy", &C::lazy_apps, g4,
           "load the application in each worker instead of the master"),
      text("virtualenv", "home venv pyhome -H", &C::virtualenv, g4, "DIR",
           "the Python environment to use (a venv or virtualenv folder): its site-packages come first on "
           "sys.path and sys.prefix is it, as in uWSGI",
           check_existing_dir),
      flag("wsgi-disable-file-wrapper", "", &C::wsgi_disable_file_wrapper, g4,
           "leave wsgi.file_wrapper out of the environ (as uWSGI: applications then send files by "
           "iterating them themselves)"),
      integer("threads", "", &C::threads, {0, 1024}, g4, "N",
              "application requests a worker runs at once (the first on the event loop's own thread, whose "
              "loop a standby thread takes over within 1-4 ms; 0: on the event loop with no standby, as "
              "uWSGI does: a slow request holds up that worker's cache requests)"),

      list("static-map", "", &C::static_map, g6, "/MOUNT=PATH",
           "serve PATH_INFO /MOUNT/x from PATH/x (a folder; or one file for exactly /MOUNT); a request that "
           "finds no file goes to the application",
           check_static_mount),
      list("static-map2", "", &C::static_map2, g6, "/MOUNT=PATH",
           "like --static-map, the mountpoint kept: /MOUNT/x from PATH/MOUNT/x", check_static_mount),
      list("check-static", "", &C::check_static, g6, "DIR",
           "serve PATH_INFO /x from DIR/x when that file exists"),
      list("static-index", "", &C::static_index, g6, "NAME",
           "a request for a mapped folder answers with the first of these files in it (e.g. index.html)"),
      list("static-expires", "", &C::static_expires, g6, "\"REGEXP SECONDS\"",
           "an Expires header SECONDS ahead for files whose real path matches REGEXP (ECMAScript syntax; "
           "uWSGI uses PCRE)",
           check_static_expires),
      flag(
          "static-gzip-all", "", &C::static_gzip_all, g6,
          "send FILE.gz instead of FILE (Content-Encoding: gzip) when it exists and the client accepts gzip"),
      list("static-gzip-dir", "", &C::static_gzip_dir, g6, "PREFIX",
           "the same for files whose real path starts with PREFIX"),
      list("static-safe", "", &C::static_safe, g6, "DIR",
           "a folder a mapped path may lead into (a symbolic link out of the mapped folder is refused "
           "otherwise)"),
      text("mimefile", "mime-file", &C::mimefile, g6, "PATH",
           "the extension -> Content-Type table (a few common types when the file is missing)"),

      list("touch-reload", "", &C::touch_reload, g7, "PATH",
           "graceful reload (as SIGHUP, application reloaded: see --lazy-apps) when this file's "
           "modification time changes; checked every second"),
      integer("py-autoreload", "python-autoreload py-auto-reload", &C::py_autoreload, {0, 86400}, g7,
              "SECONDS",
              "every SECONDS, check the files of the loaded Python modules; graceful reload when one changed "
              "(0 = off; for development)"),
      integer("cheaper", "", &C::cheaper, {0, 1024}, g7, "N",
              "adaptive workers: keep at least N running (fewer than --processes), start more when all are "
              "busy, stop the extra ones when they are idle (0 = off)"),
      integer("cheaper-initial", "", &C::cheaper_initial, {0, 1024}, g7, "N",
              "workers started at first with --cheaper (default: the --cheaper minimum)"),
      integer("cheaper-step", "", &C::cheaper_step, {1, 1024}, g7, "N",
              "workers started at once when every running worker is busy"),
      integer("cheaper-overload", "", &C::cheaper_overload, {1, 86400}, g7, "SECONDS",
              "a worker above the minimum idle this long is stopped; also the decision period"),
      text("cheaper-algo", "", &C::cheaper_algo, g7, "NAME",
           "spare (uWSGI's default); busyness is accepted and runs spare (one WARNING)", check_cheaper_algo),
      integer("idle", "", &C::idle, {0, 86400}, g7, "SECONDS",
              "with --cheaper: stop every worker above the minimum once no request came for SECONDS "
              "(uWSGI stops them all and restarts on the next connection)"),
      list("attach-daemon", "", &C::attach_daemon, g7, "COMMAND",
           "run COMMAND (/bin/sh -c) beside the server: restarted when it exits, stopped (SIGTERM, then "
           "SIGKILL) with the server"),
      list("hook-master-start", "", &C::hook_master_start, g7, "ACTION",
           "when the master starts serving: exec:COMMAND (run, wait; a failure stops the start) or "
           "unix_signal:N HANDLER (only the meanings signals already have here)",
           check_hook),
      list("hook-accepting1", "", &C::hook_accepting1, g7, "ACTION",
           "once, when the first worker accepts: exec:COMMAND (a failure is logged)", check_hook),
      list("add-header", "", &C::add_header, g4, "\"NAME: VALUE\"",
           "add this header to every response (the application's and static files')", check_header),
      flag("auto-procname", "", &C::auto_procname, g7,
           "process titles ps shows: \"uWSGI master\", \"uWSGI worker N\""),
      text("procname-prefix", "", &C::procname_prefix, g7, "TEXT", "put TEXT before every process title"),
      text("procname-prefix-spaced", "", &C::procname_prefix_spaced, g7, "TEXT",
           "put TEXT and a space before every process title"),
      integer("max-fd", "", &C::max_fd, {0, 1 << 30}, g7, "N",
              "raise the open-file limit (RLIMIT_NOFILE) to N at start (0 = as inherited)"),

      action("ini", "", OptionType::list, "FILE[:SECTION]",
             "load options from an ini file ([uwsgi] section unless SECTION is given)"),
      action("toml", "", OptionType::list, "FILE[:SECTION]",
             "load options from a toml file (top level and [uwsgi], or the table SECTION)"),
      action("strict", "", OptionType::flag, "",
             "unknown keys in files and UWSGI_* variables are errors instead of one WARNING each (uWSGI's "
             "meaning: every unknown key is an error, so placeholders need --set-placeholder)"),
      action("set-placeholder", "set-ph", OptionType::list, "NAME=VALUE",
             "define the placeholder %(NAME) (never an unknown key, even with --strict)"),
      action("show-config", "", OptionType::flag, "",
             "print the resolved configuration (every key in order, placeholders expanded) as uWSGI does, "
             "then start"),
      action("help", "-h", OptionType::flag, "", "print this help and exit"),
      action("version", "", OptionType::flag, "", "print the version and exit"),

      logic("if-env", "", "NAME[=VALUE]",
            "keep the following keys (until endif) if the environment variable is set (to VALUE); %(_) is "
            "its value"),
      logic("if-not-env", "", "NAME[=VALUE]",
            "keep the following keys if the variable is unset (or differs)"),
      logic("if-opt", "", "KEY[=VALUE]",
            "keep the following keys if KEY was set earlier (to VALUE); %(_) is its value"),
      logic("if-not-opt", "", "KEY[=VALUE]",
            "keep the following keys if KEY was not set earlier (or differs)"),
      logic("if-exists", "", "PATH", "keep the following keys if PATH is readable; %(_) is PATH"),
      logic("if-not-exists", "", "PATH", "keep the following keys if PATH is not readable"),
      logic("if-file", "", "PATH", "keep the following keys if PATH is a regular file; %(_) is PATH"),
      logic("if-not-file", "", "PATH", "keep the following keys if PATH is not a regular file"),
      logic("if-dir", "", "PATH", "keep the following keys if PATH is a directory; %(_) is PATH"),
      logic("if-not-dir", "", "PATH", "keep the following keys if PATH is not a directory"),
      logic("if-hostname", "", "NAME", "keep the following keys if this host is NAME"),
      logic("if-not-hostname", "", "NAME", "keep the following keys if this host is not NAME"),
      logic("else", "", "", "keep the following keys (until endif) if the last if-* failed"),
      logic("endif", "end-if", "", "end an if-* or else block"),
      logic("for", "", "WORDS",
            "repeat each following key (until endfor) once per space-separated word, %(_) being the word"),
      logic("for-glob", "", "PATTERN", "repeat each following key once per path matching PATTERN"),
      logic("for-readline", "", "FILE", "repeat each following key once per line of FILE"),
      logic("for-times", "", "N", "repeat each following key N times, %(_) counting from 1"),
      logic("endfor", "end-for", "", "end a for block"),
      logic("end", "", "", "end any if or for block"),

      accepted("thunder-lock", "", OptionType::flag, "",
               "workers wait for connections with EPOLLEXCLUSIVE, so accepting never takes a lock"),
      accepted("enable-threads", "", OptionType::flag, "", "threads are always enabled here"),
      accepted("single-interpreter", "-i", OptionType::flag, "",
               "there is always exactly one Python interpreter here"),
      accepted("die-on-term", "", OptionType::flag, "",
               "SIGTERM always stops the server gracefully here (uWSGI 2.0 reloads on it otherwise)"),
      accepted("need-app", "", OptionType::flag, "",
               "a server whose application fails to load always exits with status 1 here (also with "
               "--lazy-apps)"),
      accepted("plugins", "plugin", OptionType::list, "NAME[,NAME...]",
               "python (python3, pythonNN), cache and http are built in; any other plugin is an error"),
      accepted("offload-threads", "", OptionType::integer, "N",
               "static files are sent by the worker itself with sendfile(2) on its non-blocking event loop, "
               "so a slow client never holds a thread"),
      accepted("no-orphans", "", OptionType::flag, "",
               "always so here: a worker dies with its master (PR_SET_PDEATHSIG)"),
      accepted("ignore-sigpipe", "", OptionType::flag, "",
               "always so here: a client that went away costs an EPIPE, never a signal"),
      accepted("ignore-write-errors", "", OptionType::flag, "",
               "always so here: the application hands its response to the worker, which alone writes it; "
               "a client that went away is logged once (rate-limited), never an application error"),
      accepted("disable-write-exception", "", OptionType::flag, "",
               "always so here: the application never writes to the socket, so a client that went away "
               "never raises in it"),
      accepted("py-call-osafterfork", "", OptionType::flag, "",
               "always so here: each worker runs Python's after-fork handlers (os.register_at_fork)"),
      accepted("close-on-exec", "close-on-exec2", OptionType::flag, "",
               "always so here: every socket is opened close-on-exec"),
      accepted(
          "http-keepalive", "", OptionType::integer, "N",
          "there is no HTTP router process here: the workers serve HTTP/1.1 keep-alive on --http sockets "
          "directly, bounded by --socket-timeout"),
      accepted("http-timeout", "", OptionType::integer, "SECONDS",
               "uWSGI's HTTP router timeout (client and backend hops); here there is no router, a response "
               "is never timed out (--harakiri bounds it) and --socket-timeout closes idle connections"),
      accepted("http-auto-chunked", "", OptionType::flag, "",
               "a response without a length gets a Content-Length here (the worker holds it whole)"),
      accepted("min-worker-lifetime", "", OptionType::integer, "SECONDS",
               "not implemented: --max-requests and friends apply from a worker's first request (uWSGI "
               "waits 60 s by default)"),
      accepted("cheaper-busyness-max", "", OptionType::integer, "PERCENT",
               "the busyness algorithm runs as spare here (see --cheaper-algo)"),
      accepted("cheaper-busyness-min", "", OptionType::integer, "PERCENT",
               "the busyness algorithm runs as spare here (see --cheaper-algo)"),
      accepted("cheaper-busyness-multiplier", "", OptionType::integer, "N",
               "the busyness algorithm runs as spare here (see --cheaper-algo)"),
      accepted("cheaper-busyness-penalty", "", OptionType::integer, "N",
               "the busyness algorithm runs as spare here (see --cheaper-algo)"),
      accepted("cheaper-busyness-verbose", "", OptionType::flag, "",
               "the busyness algorithm runs as spare here (see --cheaper-algo)"),
      accepted("cheaper-busyness-backlog-alert", "", OptionType::integer, "N",
               "the busyness algorithm runs as spare here (see --cheaper-algo)"),
      accepted("cheaper-busyness-backlog-step", "", OptionType::integer, "N",
               "the busyness algorithm runs as spare here (see --cheaper-algo)"),
      accepted("cheaper-rss-limit-soft", "", OptionType::integer, "BYTES",
               "not implemented: use --reload-on-rss (per worker) instead"),
      accepted("no-threads-wait", "", OptionType::flag, "",
               "a stopping worker never waits for application threads beyond --reload-mercy here"),

      refused("gevent", "", OptionType::integer, "N",
              "gevent is not supported: the workers run the application on threads (--threads); "
              "monkey-patched code would block a worker's event loop"),
      refused("emperor", "", OptionType::list, "DIR",
              "the Emperor (a manager of many uWSGI instances) is not part of this server: run one server "
              "per application under systemd or a container runtime"),
      refused(
          "route", "route-uri route-host route-if route-run", OptionType::list, "RULE",
          "the internal router is not implemented: its rules (basicauth, redirect, rewrite) change what a "
          "request may reach; put them in nginx or the application"),
      refused("log-route", "", OptionType::list, "RULE",
              "log routing is not implemented: the log goes where --logto/--daemonize say"),
      refused("unique-cron", "cron cron2 unique-cron2", OptionType::list, "SPEC",
              "the cron of uWSGI's master is not implemented: use the system's cron or a systemd timer"),
      refused("https", "https2 https-socket", OptionType::list, "ADDR,CERT,KEY",
              "TLS is not served here: terminate it in nginx (docs/nginx.md)"),
  };
}

const std::vector<OptionSpec>& table() {
  static const std::vector<OptionSpec> rows = build_table();
  return rows;
}

bool is_short_alias(std::string_view alias) { return alias.size() == 2 && alias[0] == '-'; }

// Names usable as --name and as ini/toml keys: the name and its long aliases.
std::vector<std::string_view> long_names(const OptionSpec& row) {
  std::vector<std::string_view> names{row.name};
  for (const auto alias : split_words(row.aliases)) {
    if (!is_short_alias(alias)) names.push_back(alias);
  }
  return names;
}

const OptionSpec* find_long(std::string_view name) {
  for (const auto& row : table()) {
    for (const auto candidate : long_names(row)) {
      if (candidate == name) return &row;
    }
  }
  return nullptr;
}

const OptionSpec* find_short(std::string_view dash_letter) {
  for (const auto& row : table()) {
    for (const auto alias : split_words(row.aliases)) {
      if (alias == dash_letter) return &row;
    }
  }
  return nullptr;
}

std::string unknown_option_message(std::string_view typed, std::string_view source) {
  std::vector<std::string_view> candidates;
  for (const auto& row : table()) {
    for (const auto name : long_names(row)) candidates.push_back(name);
  }
  std::string message = fmt::format("unknown option --{} ({})", typed, source);
  if (const auto guess = closest_match(typed, candidates); !guess.empty()) {
    message += fmt::format("; did you mean --{}?", guess);
  }
  return message;
}

// ---------------------------------------------------------------------------------------------
// --cache2: its own small key table, same idea as the option table

enum class Cache2KeyType { text, size, integer, flag, list, hash };

using Cache2Target = std::variant<std::string CacheSpec::*, std::uint64_t CacheSpec::*,
                                  std::uint32_t CacheSpec::*, int CacheSpec::*, std::int64_t CacheSpec::*,
                                  bool CacheSpec::*, std::vector<std::string> CacheSpec::*>;

struct Cache2Key {
  std::string_view name;
  std::string_view aliases;
  Cache2KeyType type;
  std::int64_t min_value;
  std::int64_t max_value;
  Cache2Target target;
  std::string_view help;
};

constexpr std::int64_t kInt64Min = std::numeric_limits<std::int64_t>::min();
constexpr std::int64_t kInt64Max = std::numeric_limits<std::int64_t>::max();

const std::vector<Cache2Key>& cache2_keys() {
  using K = Cache2KeyType;
  using S = CacheSpec;
  static const std::vector<Cache2Key> keys = {
      {"name", "", K::text, 0, 0, &S::name, "cache name (required, unique)"},
      {"items", "max_items maxitems", K::size, 1, kMaxCacheItems, &S::items, "number of items (required)"},
      {"blocksize", "", K::size, 1, kMaxBlocksize, &S::blocksize,
       keep(fmt::format("bytes per block: the largest value ({})", cache::kDefaultBlocksize))},
      {"blocks", "", K::size, 1, kMaxCacheItems, &S::blocks, "number of data blocks (items); at least items"},
      {"hash", "", K::hash, 0, 0, &S::hash,
       "uWSGI's key hash choice: accepted and checked, not used (the engine has its own, faster hash)"},
      {"hashsize", "hash_size", K::size, 1, kMaxCacheItems, &S::hashsize, "number of hash buckets"},
      {"keysize", "key_size", K::size, 1, 65535, &S::keysize,
       keep(fmt::format("longest key ({})", cache::kDefaultKeysize))},
      {"store", "", K::text, 0, 0, &S::store, "persist the cache in this file"},
      {"store_sync", "storesync", K::integer, 0, kMaxSeconds, &S::store_sync,
       "msync every N master cycles (--cache-store-sync)"},
      {"store_delete", "storedelete", K::flag, 0, 0, &S::store_delete,
       "recreate a mismatching store file instead of exiting"},
      {"purge_lru", "lru", K::flag, 0, 0, &S::purge_lru, "when full, evict the least recently used item"},
      {"ignore_full", "", K::flag, 0, 0, &S::ignore_full, "do not log \"cache is FULL\""},
      {"math_initial", "", K::integer, kInt64Min, kInt64Max, &S::math_initial,
       "start value of a missing key for math operations (0)"},
      {"no_expire", "", K::flag, 0, 0, &S::no_expire, "exclude this cache from the sweeper"},
      {"lazy_expire", "lazy", K::flag, 0, 0, &S::lazy_expire,
       "accepted (uWSGI): nothing to do, expired items are never served"},
      {"sweep_on_full", "", K::integer, 0, kMaxSeconds, &S::sweep_on_full,
       "accepted (uWSGI): nothing to do, a full cache always reclaims expired items first"},
      {"clear_on_full", "", K::flag, 0, 0, &S::clear_on_full,
       "accepted (uWSGI): ignored, a full cache is never cleared"},
      {"lastmod", "", K::flag, 0, 0, &S::lastmod, "track the last modification time"},
      {"bitmap", "", K::flag, 0, 0, &S::bitmap, "values may span several blocks"},
      {"node", "nodes", K::list, 0, 0, &S::nodes, "semicolon-separated ip:port to send UDP updates to"},
      {"udp", "udp_servers udp_server udpservers udpserver", K::list, 0, 0, &S::udp_servers,
       "semicolon-separated ip:port to receive UDP updates on"},
      {"sync", "", K::list, 0, 0, &S::sync,
       "semicolon-separated uwsgi sockets to copy the cache from at start"},
  };
  return keys;
}

struct Cache2Problem {
  std::string detail;
};

struct ParsedCache2 {
  CacheSpec spec;
  bool store_sync_given = false;
};

// Splits on an unescaped separator; a backslash keeps the next character literally.
std::vector<std::string> split_escaped(std::string_view text, char separator) {
  std::vector<std::string> parts(1);
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\') {
      if (i + 1 == text.size()) throw Cache2Problem{"trailing backslash (nothing to escape)"};
      parts.back() += text[++i];
    } else if (text[i] == separator) {
      parts.emplace_back();
    } else {
      parts.back() += text[i];
    }
  }
  return parts;
}

std::string unescape(std::string_view text) {
  std::string plain;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size()) ++i;
    plain += text[i];
  }
  return plain;
}

// Key and value split at the first unescaped '='; escapes are kept in the value (for its ';' split).
std::pair<std::string, std::string> split_key_value(std::string_view item) {
  std::string key;
  for (std::size_t i = 0; i < item.size(); ++i) {
    if (item[i] == '\\' && i + 1 < item.size()) {
      key += item[++i];
    } else if (item[i] == '=') {
      return {key, std::string(item.substr(i + 1))};
    } else {
      key += item[i];
    }
  }
  throw Cache2Problem{fmt::format("\"{}\" is not key=value (booleans too: write {}=1)", key, key)};
}

// The items of a --cache2 value, still escaped, split at unescaped commas.
std::vector<std::string> split_items_keep_escapes(std::string_view spec) {
  std::vector<std::string> items(1);
  for (std::size_t i = 0; i < spec.size(); ++i) {
    if (spec[i] == '\\') {
      if (i + 1 == spec.size()) throw Cache2Problem{"trailing backslash (nothing to escape)"};
      items.back() += spec[i];
      items.back() += spec[++i];
    } else if (spec[i] == ',') {
      items.emplace_back();
    } else {
      items.back() += spec[i];
    }
  }
  return items;
}

const Cache2Key* find_cache2_key(std::string_view name) {
  for (const auto& key : cache2_keys()) {
    if (key.name == name) return &key;
    for (const auto alias : split_words(key.aliases)) {
      if (alias == name) return &key;
    }
  }
  return nullptr;
}

void set_cache2_value(const Cache2Key& key, const std::string& raw_value, CacheSpec& spec) {
  const auto fail = [&](std::string_view expected) {
    throw Cache2Problem{fmt::format("{} \"{}\": {}", key.name, raw_value, expected)};
  };
  switch (key.type) {
    case Cache2KeyType::flag:  // enabled by presence, whatever the value, as uWSGI does
      spec.*std::get<bool CacheSpec::*>(key.target) = true;
      return;
    case Cache2KeyType::list: {
      auto& entries = spec.*std::get<std::vector<std::string> CacheSpec::*>(key.target);
      entries.clear();  // last occurrence wins, as for every key
      for (auto& entry : split_escaped(raw_value, ';')) {
        const auto trimmed = std::string(trim(entry));
        if (trimmed.empty()) continue;
        if (key.name != "sync") {
          try {
            check_udp_address(trimmed);
          } catch (const InvalidValue& invalid) {
            throw Cache2Problem{fmt::format("{} entry \"{}\": {}", key.name, trimmed, invalid.detail)};
          }
        }
        entries.push_back(trimmed);
      }
      if (entries.empty()) fail("expected one or more addresses separated by ';'");
      return;
    }
    default:
      break;
  }
  const auto value = unescape(raw_value);
  switch (key.type) {
    case Cache2KeyType::text:
      if (value.empty()) fail("expected a non-empty value");
      spec.*std::get<std::string CacheSpec::*>(key.target) = value;
      return;
    case Cache2KeyType::hash:
      if (value != "djb33x" && value != "murmur2") fail("expected djb33x or murmur2");
      spec.hash = value;
      return;
    default:
      break;
  }
  const auto type = key.type == Cache2KeyType::size ? OptionType::size : OptionType::integer;
  const auto number = parse_number(value, type == OptionType::size);
  if (!number || *number < key.min_value || *number > key.max_value) {
    fail(expected_number(type, key.min_value, key.max_value));
  }
  std::visit(
      [&](auto member) {
        using Field = std::remove_reference_t<decltype(spec.*member)>;
        if constexpr (std::is_arithmetic_v<Field> && !std::is_same_v<Field, bool>) {
          spec.*member = static_cast<Field>(*number);
        }
      },
      key.target);
}

ParsedCache2 parse_cache2(std::string_view text) {
  ParsedCache2 parsed;
  bool has_name = false, has_items = false, has_blocks = false;
  for (const auto& item : split_items_keep_escapes(text)) {
    if (trim(item).empty()) continue;  // "a=1,,b=2" or a trailing comma: nothing to apply
    const auto [raw_key, value] = split_key_value(item);
    const auto key_name = std::string(trim(raw_key));
    const auto* key = find_cache2_key(key_name);
    if (key == nullptr) {
      std::vector<std::string_view> candidates;
      for (const auto& known : cache2_keys()) {
        candidates.push_back(known.name);
        for (const auto alias : split_words(known.aliases)) candidates.push_back(alias);
      }
      std::string detail = fmt::format("unknown key \"{}\"", key_name);
      if (const auto guess = closest_match(key_name, candidates); !guess.empty()) {
        detail += fmt::format(" (did you mean \"{}\"?)", guess);
      }
      throw Cache2Problem{detail};
    }
    set_cache2_value(*key, value, parsed.spec);
    has_name |= key->name == "name";
    has_items |= key->name == "items";
    has_blocks |= key->name == "blocks";
    parsed.store_sync_given |= key->name == "store_sync";
  }
  if (!has_name) throw Cache2Problem{"missing name=NAME (every cache needs a name)"};
  if (!has_items) throw Cache2Problem{"missing items=N (the number of items)"};
  if (has_blocks && parsed.spec.blocks < parsed.spec.items) {
    throw Cache2Problem{
        fmt::format("blocks ({}) must be at least items ({})", parsed.spec.blocks, parsed.spec.items)};
  }
  return parsed;
}

void check_cache2(std::string_view value) {
  try {
    parse_cache2(value);
  } catch (const Cache2Problem& problem) {
    throw InvalidValue{problem.detail};
  }
}

// ---------------------------------------------------------------------------------------------
// Applying values from any source

struct FileAndSection {
  std::string path;
  std::string section;  // "" = the default
};

// "app.ini:prod" -> {"app.ini", "prod"}; a colon followed by a path is part of the file name.
FileAndSection split_file_section(std::string_view value) {
  const auto colon = value.rfind(':');
  if (colon == std::string_view::npos || colon + 1 == value.size() ||
      value.find('/', colon) != std::string_view::npos) {
    return {std::string(value), ""};
  }
  return {std::string(value.substr(0, colon)), std::string(value.substr(colon + 1))};
}

class Parser {
 public:
  ParseResult result;

  Parser()
      : collector_([](std::string_view name) { return find_long(name); },
                   [this](std::size_t index) { on_added(index); }) {}

  // Every source in uWSGI's order: the UWSGI_* environment variables, then the command line (its
  // --ini/--toml files load where they appear); then values are expanded and applied in that order.
  void parse(int argc, const char* const argv[], const char* const* environment) {
    for (const auto& [key, value] : detail::environment_options(environment)) {
      std::string variable = "UWSGI_";
      for (const char c : key) variable += c == '-' ? '_' : static_cast<char>(std::toupper(c));
      collector_.add(
          {key, value, fmt::format("environment {}", variable), detail::Origin::environment, find_long(key)});
      if (stopped()) return;
    }
    parse_argv(argc, argv);
    if (!stopped()) apply_settings();
  }

  // Applies one occurrence of an option. value is nullopt for a flag given without a value.
  void apply(const OptionSpec& row, std::optional<std::string_view> value, const std::string& source) {
    const auto fail = [&](std::string_view detail) -> void {
      throw ConfigError(fmt::format("--{} \"{}\" ({}): {}", row.name, value.value_or(""), source, detail));
    };
    if (row.name == "help" || row.name == "version") {  // "help = false" in a file asks for nothing
      const auto wanted = value ? parse_bool(*value) : std::optional<bool>(true);
      if (!wanted) fail(kExpectedBool);
      (row.name == "help" ? result.help_requested : result.version_requested) |= *wanted;
      return;
    }
    if (row.group == kAcceptedGroup) {
      accept(row, value, source, fail);
      return;
    }
    if (row.group == kRefusedGroup) {
      if (row.type == OptionType::flag && flag_value(value) == std::optional<bool>(false)) return;
      fail(fmt::format("not supported here: {}", row.help));
    }
    Config& config = result.config;
    switch (row.type) {
      case OptionType::flag: {
        const auto enabled = flag_value(value);
        if (!enabled) fail(kExpectedBool);
        config.*std::get<bool Config::*>(row.target) = *enabled;
        return;
      }
      case OptionType::integer:
      case OptionType::size: {
        const auto number = parse_number(detail::typed_value_text(*value), row.type == OptionType::size);
        if (!number || *number < row.min_value || *number > row.max_value) {
          fail(expected_number(row.type, row.min_value, row.max_value));
        }
        std::visit(
            [&](auto member) {
              if constexpr (!std::is_same_v<decltype(member), std::monostate>) {
                using Field = std::remove_reference_t<decltype(config.*member)>;
                if constexpr (std::is_arithmetic_v<Field> && !std::is_same_v<Field, bool>) {
                  config.*member = static_cast<Field>(*number);
                }
              }
            },
            row.target);
        return;
      }
      case OptionType::string:
      case OptionType::list:
        if (row.check != nullptr) {
          try {
            row.check(*value);
          } catch (const InvalidValue& invalid) {
            fail(invalid.detail);
          }
        }
        if (row.type == OptionType::string) {
          config.*std::get<std::string Config::*>(row.target) = std::string(*value);
        } else {
          (config.*std::get<std::vector<std::string> Config::*>(row.target)).emplace_back(*value);
          if (row.name == "cache2") cache2_sources_.push_back(source);
        }
        return;
    }
  }

  void parse_argv(int argc, const char* const argv[]) {
    const std::string source(kCommandLine);
    const OptionSpec* bare_option = nullptr;  // the previous argument, an optional value left out
    for (int i = 1; i < argc && !stopped(); ++i) {
      const std::string_view arg = argv[i];
      const OptionSpec* const previous_bare = std::exchange(bare_option, nullptr);
      const OptionSpec* row = nullptr;
      std::optional<std::string_view> attached;  // --name=value or -p4
      if (arg.starts_with("--") && arg.size() > 2) {
        auto name = arg.substr(2);
        if (const auto equals = name.find('='); equals != std::string_view::npos) {
          attached = name.substr(equals + 1);
          name = name.substr(0, equals);
        }
        row = find_long(name);
        if (row == nullptr) throw ConfigError(unknown_option_message(name, source));
      } else if (arg.starts_with("-") && arg.size() >= 2 && arg[1] != '-') {
        row = find_short(arg.substr(0, 2));
        if (row == nullptr) {
          throw ConfigError(fmt::format("unknown option {} ({}); see --help", arg.substr(0, 2), source));
        }
        if (arg.size() > 2) attached = arg.substr(2);
      } else if (arg.ends_with(".ini") || arg.ends_with(".toml")) {
        // uWSGI loads a bare config file argument by its extension.
        add_setting(*find_long(arg.ends_with(".ini") ? "ini" : "toml"), arg, source);
        continue;
      } else if (previous_bare != nullptr) {
        // getopt_long never takes a separate argument as an optional value; uWSGI then fails on "660" too.
        throw ConfigError(
            fmt::format("unexpected argument \"{}\" ({}): --{}'s value is optional, so it must "
                        "be attached: --{}={} (bare, --{} means {})",
                        arg, source, previous_bare->name, previous_bare->name, arg, previous_bare->name,
                        previous_bare->bare_value));
      } else {
        throw ConfigError(fmt::format("unexpected argument \"{}\" ({}): options start with --", arg, source));
      }
      if (row->type == OptionType::flag) {
        add_setting(*row, attached, source, arg.starts_with("--") ? arg.substr(2, arg.find('=') - 2) : "");
        continue;
      }
      if (!attached && !row->bare_value.empty()) {
        attached = row->bare_value;
        bare_option = row;
      } else if (!attached) {
        if (i + 1 >= argc) {
          throw ConfigError(
              fmt::format("--{} ({}): missing value at the end of the command line; expected {}", row->name,
                          source, describe_value(*row)));
        }
        const std::string_view next = argv[i + 1];
        if (next.starts_with("--") && next.size() > 2) {
          throw ConfigError(
              fmt::format("--{} ({}): missing value (the next argument \"{}\" is an option); expected {}",
                          row->name, source, next, describe_value(*row)));
        }
        attached = next;
        ++i;
      }
      add_setting(*row, attached, source, arg.starts_with("--") ? arg.substr(2, arg.find('=') - 2) : "");
    }
  }

  // Builds Config::caches once every source has been applied.
  void build_caches() {
    Config& config = result.config;
    config.caches.clear();
    if (config.cache_items > 0) {
      CacheSpec spec;
      spec.name = "default";
      spec.items = config.cache_items;
      spec.blocksize = config.cache_blocksize;
      spec.keysize = config.cache_keysize;
      spec.store = config.cache_store;
      spec.store_sync = config.cache_store_sync;
      spec.store_delete = config.cache_store_delete;
      spec.purge_lru = config.cache_purge_lru;
      spec.no_expire = config.cache_no_expire;
      spec.lastmod = config.cache_use_last_modified;
      spec.nodes = config.cache_udp_nodes;
      spec.udp_servers = config.cache_udp_servers;
      if (!config.cache_sync.empty()) spec.sync = {config.cache_sync};
      config.caches.push_back(std::move(spec));
    }
    std::map<std::string, std::string, std::less<>> origin_of_name;  // name -> where it was defined
    if (!config.caches.empty()) origin_of_name["default"] = "--cache";
    for (std::size_t i = 0; i < config.cache2_specs.size(); ++i) {
      const auto& text = config.cache2_specs[i];
      // Specs pushed straight into Config (not through apply) have no recorded source.
      const std::string source = i < cache2_sources_.size() ? cache2_sources_[i] : std::string(kCommandLine);
      ParsedCache2 parsed;
      try {
        parsed = parse_cache2(text);
      } catch (const Cache2Problem& problem) {
        throw ConfigError(fmt::format("--cache2 \"{}\" ({}): {}", text, source, problem.detail));
      }
      if (!parsed.store_sync_given) parsed.spec.store_sync = config.cache_store_sync;
      parsed.spec.no_expire |= config.cache_no_expire;
      const auto [existing, inserted] =
          origin_of_name.try_emplace(parsed.spec.name, fmt::format("--cache2 \"{}\" ({})", text, source));
      if (!inserted) {
        throw ConfigError(fmt::format("--cache2 \"{}\" ({}): the cache name \"{}\" is already used by {}",
                                      text, source, parsed.spec.name, existing->second));
      }
      config.caches.push_back(std::move(parsed.spec));
    }
  }

 private:
  detail::Collector collector_;
  std::vector<std::string> cache2_sources_;  // parallel to Config::cache2_specs
  int include_depth_ = 0;
  std::string top_file_;  // the first config file (%D, %N, ... in every file)
  std::string last_ini_;  // what "ini = :section" reads
  std::set<std::string_view> accepted_warned_;

  // A command-line option as a setting, keyed by the name typed (uWSGI's --show-config shows it).
  void add_setting(const OptionSpec& row, std::optional<std::string_view> value, const std::string& source,
                   std::string_view typed = "") {
    std::optional<std::string> text;
    if (value) text = std::string(*value);
    collector_.add(
        {std::string(typed.empty() ? row.name : typed), text, source, detail::Origin::command_line, &row});
  }

  // What acts at once when a source gives it: help and version stop, ini and toml load their file.
  void on_added(std::size_t index) {
    const auto& setting = collector_.settings()[index];
    if (setting.row == nullptr || stopped()) return;
    const OptionSpec& row = *setting.row;
    const std::string source = setting.source;  // copies: loading a file adds settings
    const std::optional<std::string> value = setting.value;
    if (row.name == "help" || row.name == "version") {
      apply(row, value, source);
    } else if (row.name == "ini" || row.name == "toml") {
      const auto path = collector_.expand(value.value_or(""), source, row.name);
      if (path.empty()) {
        throw ConfigError(fmt::format("--{} \"\" ({}): expected a file name, optionally followed by :SECTION",
                                      row.name, source));
      }
      load_file(row.name, path, source);
    } else if (row.name == "set-placeholder") {
      const auto text = collector_.expand(value.value_or(""), source, row.name);
      const auto equals = text.find('=');
      if (equals == std::string::npos || equals == 0) {
        throw ConfigError(fmt::format("--set-placeholder \"{}\" ({}): expected NAME=VALUE", text, source));
      }
      detail::Setting placeholder{text.substr(0, equals), text.substr(equals + 1), source, setting.origin};
      placeholder.declared = true;
      collector_.add(std::move(placeholder));
    }
  }

  static std::optional<bool> flag_value(const std::optional<std::string_view>& value) {
    if (!value) return true;
    const auto text = detail::typed_value_text(*value);
    return text.empty() ? std::optional<bool>(true) : parse_bool(text);  // a bare key or "key =" is on
  }

  // A row of kAcceptedGroup: checked like any value, then one WARNING per option saying why it does nothing.
  template <typename Fail>
  void accept(const OptionSpec& row, std::optional<std::string_view> value, const std::string& source,
              const Fail& fail) {
    if (row.type == OptionType::flag) {
      const auto enabled = flag_value(value);
      if (!enabled) fail(kExpectedBool);
      if (!*enabled) return;
    } else if (row.type == OptionType::integer) {
      if (!parse_number(detail::typed_value_text(value.value_or("")), false)) fail("expected an integer");
    } else if (row.name == "plugins") {  // built in or an error
      std::string names(value.value_or(""));
      std::replace(names.begin(), names.end(), ',', ' ');
      std::istringstream words(names);
      for (std::string name; words >> name;) {
        const bool python =
            name.starts_with("python") && name.find_first_not_of("0123456789", 6) == std::string::npos;
        if (!python && name != "cache" && name != "http") {
          fail(fmt::format(
              "plugin \"{}\" is not available: python (python3, pythonNN), cache and http are built "
              "in, there are no other plugins",
              name));
        }
      }
    }
    if (accepted_warned_.insert(row.name).second) {
      result.warnings.push_back(fmt::format("--{} ({}) has no effect here: {}", row.name, source, row.help));
    }
  }

  // Once every source is read: each option's value expanded and applied in source order, then the
  // unknown keys reported (a WARNING each, or errors with strict).
  void apply_settings() {
    bool strict = false, show = false;
    for (std::size_t i = 0; i < collector_.settings().size(); ++i) {
      const auto& setting = collector_.settings()[i];
      if (setting.row == nullptr) continue;
      const OptionSpec& row = *setting.row;
      const std::string source = setting.source;
      const bool has_value = setting.value.has_value();
      if (row.name == "strict" || row.name == "show-config") {
        const auto enabled = flag_value(setting.value);
        if (!enabled) {
          throw ConfigError(
              fmt::format("--{} \"{}\" ({}): {}", row.name, *setting.value, source, kExpectedBool));
        }
        (row.name == "strict" ? strict : show) = *enabled;
        continue;
      }
      if (row.group == kLogicGroup || row.name == "ini" || row.name == "toml" || row.name == "help" ||
          row.name == "version" || row.name == "set-placeholder") {
        continue;
      }
      std::optional<std::string> value;
      if (has_value) value = collector_.expanded_value(i);
      apply(row, value, source);
    }
    std::set<std::string_view> reported;  // one WARNING per key, however often it repeats
    for (const auto& setting : collector_.settings()) {
      if (setting.row != nullptr || setting.declared || !reported.insert(setting.key).second) continue;
      auto message = unknown_option_message(setting.key, setting.source);
      if (strict) throw ConfigError(message + " (strict is on)");
      if (setting.referenced) continue;
      result.warnings.push_back(message + "; ignored (uWSGI ignores it silently; strict makes it an error)");
    }
    if (show) result.show_config = collector_.show_config();
    for (auto& warning : collector_.warnings()) result.warnings.push_back(std::move(warning));
  }

  bool stopped() const { return result.help_requested || result.version_requested; }

  static std::string describe_value(const OptionSpec& row) {
    switch (row.type) {
      case OptionType::integer:
      case OptionType::size:
        return fmt::format("{} ({}..{})", row.value_name, row.min_value, row.max_value);
      default:
        return std::string(row.value_name);
    }
  }

  void load_file(std::string_view kind, std::string_view value, const std::string& source) {
    auto [path, section] = split_file_section(value);
    if (path.empty() && kind == "ini") path = last_ini_;  // "ini = :section": another section of this file
    const auto fail = [&](std::string_view detail) {
      throw ConfigError(fmt::format("--{} \"{}\" ({}): {}", kind, value, source, detail));
    };
    if (include_depth_ >= kMaxIncludeDepth) {
      fail(fmt::format("more than {} nested configuration files (does a file include itself?)",
                       kMaxIncludeDepth));
    }
    std::ifstream file(path, std::ios::binary);
    if (!file) fail(fmt::format("cannot open {}: {}", path, std::strerror(errno)));
    std::stringstream content;
    content << file.rdbuf();
    ++include_depth_;
    struct DepthGuard {
      int& depth;
      ~DepthGuard() { --depth; }
    } guard{include_depth_};
    if (top_file_.empty()) top_file_ = path;
    if (kind == "ini") {
      last_ini_ = path;
      load_ini(path, section, detail::substitute_file_magic(content.str(), path, top_file_), fail);
    } else {
      load_toml(path, section, content.str(), fail);
    }
  }

  template <typename Fail>
  void load_ini(const std::string& path, const std::string& wanted_section, const std::string& content,
                const Fail& fail) {
    const std::string section_name = wanted_section.empty() ? "uwsgi" : wanted_section;
    const auto section = detail::read_ini_section(content, section_name, path);
    if (!section.found) fail(fmt::format("no [{}] section in {}", section_name, path));
    for (const auto& entry : section.entries) {
      add_from_file(entry.key, entry.value, fmt::format("{}:{}", path, entry.line));
      if (stopped()) return;
    }
  }

  template <typename Fail>
  void load_toml(const std::string& path, const std::string& wanted_section, const std::string& content,
                 const Fail& fail) {
    toml::table document;
    try {
      document = toml::parse(content, path);
    } catch (const toml::parse_error& error) {
      fail(fmt::format("{}:{}:{}: {}", path, error.source().begin.line, error.source().begin.column,
                       error.description()));
    }
    // Keys apply in file order (toml tables are sorted by key) so that later-wins holds inside a file.
    std::vector<std::pair<std::string, const toml::node*>> entries;
    const auto collect = [&](const toml::table& table, bool skip_tables) {
      for (const auto& [key, node] : table) {
        if (skip_tables && node.is_table()) continue;
        entries.emplace_back(std::string(key.str()), &node);
      }
    };
    if (wanted_section.empty()) {
      collect(document, true);
      if (const auto* uwsgi = document["uwsgi"].as_table()) collect(*uwsgi, false);
    } else {
      const auto* section = document[wanted_section].as_table();
      if (section == nullptr) fail(fmt::format("no [{}] table in {}", wanted_section, path));
      collect(*section, false);
    }
    std::stable_sort(entries.begin(), entries.end(), [](const auto& a, const auto& b) {
      const auto& pa = a.second->source().begin;
      const auto& pb = b.second->source().begin;
      return std::pair(pa.line, pa.column) < std::pair(pb.line, pb.column);
    });
    for (const auto& [key, node] : entries) {
      const auto source = fmt::format("{}:{}", path, node->source().begin.line);
      const auto* row = find_long(key);
      if (const auto* array = node->as_array()) {
        if (row != nullptr && row->type != OptionType::list) {
          throw ConfigError(
              fmt::format("--{} ({}): expected a single value, not an array", row->name, source));
        }
        for (const auto& element : *array) {
          add_toml_scalar(key, element, fmt::format("{}:{}", path, element.source().begin.line), path);
        }
      } else {
        add_toml_scalar(key, *node, source, path);
      }
      if (stopped()) return;
    }
  }

  // A toml value as a setting: strings get the file's magic variables, other values their toml text.
  void add_toml_scalar(const std::string& key, const toml::node& node, const std::string& source,
                       const std::string& path) {
    if (node.is_table() || node.is_array()) {
      const auto* row = find_long(key);
      throw ConfigError(fmt::format("--{} ({}): expected a {}, not a {}", key, source,
                                    row != nullptr && row->type == OptionType::list ? "string" : "value",
                                    node.is_table() ? "table" : "nested array"));
    }
    std::string text;
    if (const auto* string = node.as_string()) {
      text = detail::substitute_file_magic(string->get(), path, top_file_);
    } else {
      std::ostringstream printed;  // numbers, booleans, dates: their toml text, validated like any value
      node.visit([&](const auto& value) { printed << value; });
      text = printed.str();
    }
    add_from_file(key, text, source);
  }

  // A key of a file: an option, a logic key, or (unknown) a placeholder that may also be a typo.
  void add_from_file(std::string_view key, std::string_view value, const std::string& source) {
    collector_.add({std::string(key), std::string(value), source, detail::Origin::file, find_long(key)});
  }
};

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public interface

std::span<const OptionSpec> option_table() { return table(); }

ParseResult parse_command_line(int argc, const char* const argv[]) {
  Parser parser;
  parser.parse(argc, argv, environ);
  if (!parser.result.help_requested && !parser.result.version_requested) parser.build_caches();
  return std::move(parser.result);
}

CacheSpec parse_cache2_spec(std::string_view spec) {
  try {
    return parse_cache2(spec).spec;
  } catch (const Cache2Problem& problem) {
    throw ConfigError(fmt::format("--cache2 \"{}\": {}", spec, problem.detail));
  }
}

SocketAddress parse_socket_address(std::string_view address) {
  std::string error;
  auto parsed = common::parse_address(address, common::kListenAnyHost, error);
  if (!parsed) throw ConfigError(fmt::format("invalid socket address \"{}\": {}", address, kExpectedSocket));
  return std::move(*parsed);
}

namespace {

// The one octal parser of file modes and masks: min_digits..4 octal digits, nothing else.
std::optional<unsigned> parse_octal_mode(std::string_view text, std::size_t min_digits) {
  if (text.size() < min_digits || text.size() > 4 ||
      text.find_first_not_of("01234567") != std::string_view::npos) {
    return std::nullopt;
  }
  unsigned mode = 0;
  for (const char digit : text) mode = mode * 8 + static_cast<unsigned>(digit - '0');
  return mode;
}

}  // namespace

std::optional<unsigned> parse_chmod_mode(std::string_view text) {
  if (text == "1") return 0666;  // uWSGI: "1", like the bare option, means read-write for everyone
  return parse_octal_mode(text, 3);
}

std::optional<unsigned> parse_umask(std::string_view text) { return parse_octal_mode(text, 1); }

// ---------------------------------------------------------------------------------------------
// Generated text: --help and docs/options.md

namespace {

std::vector<std::string_view> groups_in_order() {
  std::vector<std::string_view> groups;
  for (const auto& row : table()) {
    if (std::find(groups.begin(), groups.end(), row.group) == groups.end()) groups.push_back(row.group);
  }
  return groups;
}

std::string spelled_names(const OptionSpec& row) {
  std::string names;
  for (const auto alias : split_words(row.aliases)) {
    if (is_short_alias(alias)) names += fmt::format("{}, ", alias);
  }
  names += fmt::format("--{}", row.name);
  for (const auto alias : split_words(row.aliases)) {
    if (!is_short_alias(alias)) names += fmt::format(", --{}", alias);
  }
  if (!row.bare_value.empty()) {
    names += fmt::format("[={}]", row.value_name);
  } else if (!row.value_name.empty()) {
    names += fmt::format(" {}", row.value_name);
  }
  return names;
}

std::string bounds_text(const OptionSpec& row) {
  if (row.type != OptionType::integer && row.type != OptionType::size) return "";
  return fmt::format("{}..{}", row.min_value, row.max_value);
}

std::string remarks(const OptionSpec& row) {
  std::vector<std::string> parts;
  if (!row.default_value.empty()) parts.push_back(fmt::format("default {}", row.default_value));
  if (const auto bounds = bounds_text(row); !bounds.empty()) parts.push_back(bounds);
  if (row.type == OptionType::list && row.name != "ini" && row.name != "toml") parts.push_back("repeatable");
  std::string text;
  for (const auto& part : parts) text += (text.empty() ? "" : "; ") + part;
  return text.empty() ? "" : fmt::format(" ({})", text);
}

std::string type_name(OptionType type) {
  switch (type) {
    case OptionType::flag:
      return "flag";
    case OptionType::integer:
      return "integer";
    case OptionType::size:
      return "size";
    case OptionType::string:
      return "string";
    case OptionType::list:
      return "list";
  }
  return "";
}

std::string markdown_cell(std::string_view text) {
  std::string escaped;
  for (const char c : text) {
    if (c == '|') escaped += '\\';
    escaped += c;
  }
  return escaped;
}

// Word-wraps text to width, every line after the first indented by indent.
std::string wrap(std::string_view text, std::size_t indent, std::size_t width) {
  std::string wrapped;
  std::size_t column = indent;
  for (const auto word : split_words(text)) {
    if (column > indent && column + 1 + word.size() > width) {
      wrapped += '\n' + std::string(indent, ' ');
      column = indent;
    } else if (column > indent) {
      wrapped += ' ';
      ++column;
    }
    wrapped += word;
    column += word.size();
  }
  return wrapped;
}

// The status of each uWSGI option real deployments use, from the table: what a user switching sees.
std::string real_world_status_markdown() {
  std::string text =
      "\n## The uWSGI options of real deployments, and their status here\n\n"
      "Every option used by two or more of ~120 real uWSGI configurations (Django, Flask and Pyramid "
      "projects,\nDocker images, Ansible roles, the example configurations of Django's and uWSGI's docs), "
      "most used\nfirst. **works**: as in uWSGI (differences in differences.md); **accepted**: one WARNING "
      "at start saying\nwhy it has no effect; **refused**: an error saying why; **unknown**: not in this "
      "server's table (an\nerror on the command line, a WARNING in a file).\n\n"
      "| option | files | status here |\n|---|---|---|\n";
  for (const ReferenceOption& option : real_world_options()) {
    std::string status;
    if (option.name == "(positional-config-file)") {
      status = "works: `server app.ini` (or `.toml`) loads the file as `--ini` does";
    } else if (const OptionSpec* row = find_long(option.name); row == nullptr) {
      status = "**unknown** here";
    } else if (row->group == kAcceptedGroup) {
      status = fmt::format("**accepted**, no effect: {}", row->help);
    } else if (row->group == kRefusedGroup) {
      status = fmt::format("**refused**: {}", row->help);
    } else if (row->group == kLogicGroup) {
      status = "**works** (configuration logic)";
    } else {
      status = row->name == option.name ? std::string("**works**")
                                        : fmt::format("**works** (as `--{}`)", row->name);
    }
    text += fmt::format("| `{}` | {} | {} |\n", option.name, option.files, markdown_cell(status));
  }
  return text;
}

}  // namespace

std::string help_text(std::string_view program_name) {
  constexpr std::size_t kWidth = 110;
  constexpr std::size_t kMaxNameColumn = 44;
  std::size_t name_column = 0;
  for (const auto& row : table()) {
    const auto width = spelled_names(row).size() + 4;
    if (width <= kMaxNameColumn) name_column = std::max(name_column, width);
  }
  std::string text = fmt::format(
      "Usage: {} [options] [FILE.ini | FILE.toml]\n\n"
      "Options, --ini and --toml apply in command-line order: later wins, repeatable options accumulate.\n"
      "Sizes take an optional k/M/G suffix (powers of 1024). In files, flags take true/false, 1/0, yes/no, "
      "on/off.\n",
      program_name);
  for (const auto group : groups_in_order()) {
    text += fmt::format("\n{}:\n", group);
    for (const auto& row : table()) {
      if (row.group != group) continue;
      auto names = "  " + spelled_names(row);
      if (names.size() + 2 > name_column) {
        text += names + '\n';
        names.clear();
      }
      names.resize(name_column, ' ');
      text += names + wrap(std::string(row.help) + remarks(row), name_column, kWidth) + '\n';
    }
  }
  text +=
      "\n--cache2 keys (--cache2 key=value,key=value,...; \\ escapes the next character;\n"
      "boolean keys are enabled by their presence, whatever the value):\n";
  for (const auto& key : cache2_keys()) {
    auto names = fmt::format("  {}", key.name);
    for (const auto alias : split_words(key.aliases)) names += fmt::format(", {}", alias);
    if (names.size() + 2 > name_column) {
      text += names + '\n';
      names.clear();
    }
    names.resize(name_column, ' ');
    text += names + wrap(key.help, name_column, kWidth) + '\n';
  }
  return text;
}

std::string options_reference_markdown() {
  std::string text =
      "# Options reference\n\n"
      "<!-- Generated from the option table in config/options.cpp; do not edit by hand.\n"
      "     Regenerate with: build/bin/gen-options-doc > docs/options.md -->\n\n"
      "Every option can be given on the command line (`--name value`, `--name=value`, flags without a "
      "value),\n"
      "in an ini file (`--ini FILE[:SECTION]`, `key = value` lines in the `[uwsgi]` section) or in a toml "
      "file\n"
      "(`--toml FILE[:SECTION]`, the same keys at the top level or in a `[uwsgi]` table). Sources apply in\n"
      "command-line order: a later value wins, repeatable (list) options accumulate. Sizes take an optional\n"
      "`k`, `M` or `G` suffix (powers of 1024). In files, flags take `true/false`, `1/0`, `yes/no` or "
      "`on/off`;\n"
      "a bare key (`master` on its own line) or an empty value turns a flag on. An option shown as\n"
      "`--name[=VALUE]` (uWSGI's optional values: `--chmod-socket`, `--log-date`) may be given bare on the\n"
      "command line; its value, if any, is then attached with `=` (`--chmod-socket=660`), as uWSGI reads "
      "it.\n\n"
      "Every option can also come from the environment as `UWSGI_` + its name in upper case with `_` for "
      "`-`\n"
      "(`UWSGI_PROCESSES=4`), read before the command line, as uWSGI does. Files use uWSGI's configuration\n"
      "language: the magic variables of the file (`%d` its directory with a trailing slash, `%n` its name\n"
      "without extension, `%p`, `%c`, `%s`, `%e`, `%k`, `%%`, ...), placeholders (`%(key)` names any key of "
      "any\n"
      "source, an unknown key included, `%(2 * 1024)` computes), `$(ENV)`, `@(file)` and the if/for blocks\n"
      "below. Only a line starting with `;` or `#` is a comment; after a number or a flag, an inline "
      "comment\n"
      "is ignored (`workers = 64  # note` is 64), after a string it stays part of the value. An unknown key\n"
      "in a file or a `UWSGI_` variable is a placeholder, with one WARNING unless a placeholder uses it\n"
      "(`--strict` makes it an error); on the command line it is an error. See differences.md.\n";
  for (const auto group : groups_in_order()) {
    text += fmt::format("\n## {}\n\n", group);
    text += "| option | aliases | type | default | range | description |\n";
    text += "|---|---|---|---|---|---|\n";
    for (const auto& row : table()) {
      if (row.group != group) continue;
      std::string aliases;
      for (const auto alias : split_words(row.aliases)) {
        aliases += fmt::format("{}`{}`", aliases.empty() ? "" : " ",
                               is_short_alias(alias) ? std::string(alias) : "--" + std::string(alias));
      }
      const auto option = row.value_name.empty() ? fmt::format("`--{}`", row.name)
                                                 : fmt::format("`--{} {}`", row.name, row.value_name);
      const auto default_value =
          row.default_value.empty() ? std::string() : fmt::format("`{}`", row.default_value);
      text += fmt::format("| {} | {} | {} | {} | {} | {} |\n", markdown_cell(option), aliases,
                          type_name(row.type), default_value, bounds_text(row), markdown_cell(row.help));
    }
  }
  text += real_world_status_markdown();
  text +=
      "\n## --cache2 keys\n\n"
      "`--cache2 key=value,key=value,...` creates one named cache (repeatable; caches are created in order,\n"
      "after the `--cache` one, which is named `default`). `\\` escapes the next character. Boolean keys "
      "are\n"
      "enabled by their presence, whatever their value (as in uWSGI). Unknown keys, missing `name` or\n"
      "`items`, and bad numbers are errors. Without `store_sync`, a cache inherits `--cache-store-sync`.\n\n"
      "| key | aliases | type | range | description |\n"
      "|---|---|---|---|---|\n";
  for (const auto& key : cache2_keys()) {
    std::string aliases;
    for (const auto alias : split_words(key.aliases)) {
      aliases += fmt::format("{}`{}`", aliases.empty() ? "" : " ", alias);
    }
    std::string type, range;
    switch (key.type) {
      case Cache2KeyType::text:
        type = "string";
        break;
      case Cache2KeyType::hash:
        type = "`djb33x` or `murmur2`";
        break;
      case Cache2KeyType::flag:
        type = "boolean (presence)";
        break;
      case Cache2KeyType::list:
        type = "semicolon-separated list";
        break;
      case Cache2KeyType::size:
      case Cache2KeyType::integer:
        type = key.type == Cache2KeyType::size ? "size" : "integer";
        range = fmt::format("{}..{}", key.min_value, key.max_value);
        break;
    }
    text += fmt::format("| `{}` | {} | {} | {} | {} |\n", key.name, aliases, type, range,
                        markdown_cell(key.help));
  }
  return text;
}

}  // namespace config
