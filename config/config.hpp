// The server's configuration: what the one option table (options.cpp) parses into.
// config/ knows nothing else of ours: other rooms read this struct.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "cache/defaults.hpp"
#include "common/address.hpp"

namespace config {

enum class OptionType {
  flag,     // no value on the command line; "true/false/1/0/yes/no/on/off" in ini/toml
  integer,  // decimal, bounded
  size,     // integer with an optional unit: 64k, 4M, 1G (powers of 1024)
  string,
  list,  // repeatable string: every occurrence appends
};

struct Config;

// The Config field a row fills; monostate for the options the parser acts on itself (ini, toml, help,
// version). The value is validated against the row's type and bounds before it is stored.
using OptionTarget =
    std::variant<std::monostate, bool Config::*, int Config::*, std::uint32_t Config::*,
                 std::uint64_t Config::*, std::string Config::*, std::vector<std::string> Config::*>;

// Extra validation of a string/list value beyond its type: throws InvalidValue naming the expected form.
struct InvalidValue {
  std::string detail;  // e.g. "expected host:port, :port or a UNIX socket path"
};
using ValueCheck = void (*)(std::string_view value);

// One --logger value, uWSGI's "[NAME ]PLUGIN[:ARGS]": plugin stdio, file (ARGS = the path) or fd (ARGS =
// the descriptor). `error` says what is wrong with it, else empty.
struct LoggerSpec {
  std::string name;  // uWSGI names loggers for log routing; kept, not used
  std::string plugin;
  std::string arg;
  std::string error;
};
LoggerSpec parse_logger(std::string_view value);

// One row of the option table. Everything (command line, ini, toml, --help, docs/options.md) comes from it.
struct OptionSpec {
  std::string_view name;     // uWSGI's spelling, e.g. "cache-blocksize"
  std::string_view aliases;  // space-separated, e.g. "workers -p"
  OptionType type;
  std::string_view default_value;  // as the user would write it; "" = none
  std::int64_t min_value;          // integer/size bounds (inclusive)
  std::int64_t max_value;
  std::string_view help;
  std::string_view group;       // heading in --help and docs/options.md
  std::string_view value_name;  // placeholder in --help, e.g. "ADDR"
  OptionTarget target;          // where the value lands
  ValueCheck check = nullptr;   // form validation for strings and list entries
  // uWSGI's optional_argument: on the command line the value may be left out (`--chmod-socket`) and is then
  // this one; given, it must be attached (`--chmod-socket=660`, `-C660`), as getopt_long reads it. "" =
  // required.
  std::string_view bare_value = {};
};

std::span<const OptionSpec> option_table();

// One cache to create (from --cache* or one --cache2 spec). Numbers already validated.
struct CacheSpec {
  std::string name = "default";
  std::uint64_t items = 0;  // usable items (ours gives N, uWSGI N-1)
  std::uint64_t blocksize = cache::kDefaultBlocksize;
  std::uint32_t keysize = cache::kDefaultKeysize;
  std::uint64_t hashsize = 0;  // buckets; 0 = let the engine choose from items
  std::string store;
  int store_sync = 0;
  bool store_delete = false;
  bool purge_lru = false;
  bool ignore_full = false;
  bool no_expire = false;  // excluded from the sweeper: its own no_expire or the global --cache-no-expire
  std::int64_t math_initial = 0;
  // Accepted and stored for the engine/master (uWSGI's --cache2 keys):
  std::uint64_t blocks = 0;         // data blocks; 0 = items (must be >= items when given)
  std::string hash = "djb33x";      // djb33x | murmur2
  bool bitmap = false;              // multi-block values
  bool lastmod = false;             // maintain last_modified_at
  bool lazy_expire = false;         // expire on lookup instead of sweeping
  std::uint64_t sweep_on_full = 0;  // when full, sweep at most once every N seconds (0 = off)
  bool clear_on_full = false;
  std::vector<std::string> nodes;        // UDP targets (ip:port)
  std::vector<std::string> udp_servers;  // UDP bind addresses
  std::vector<std::string> sync;         // uwsgi sockets to fetch a dump from at startup
};

struct Config {
  // sockets and processes
  std::vector<std::string> sockets;             // --socket: host:port, :port, or a UNIX path
  std::vector<std::string> http_sockets;        // --http-socket
  std::vector<std::string> persistent_sockets;  // --persistent-socket: our framed, kept-alive mode
  std::vector<std::string> http_router;         // --http: uWSGI's router address, served by the workers
  std::string protocol = "uwsgi";               // what --socket speaks: uwsgi | http
  // the memcached protocol (server/memcached.hpp)
  std::vector<std::string> memcached_sockets;  // --memcached-socket
  std::string memcached_cache;                 // --memcached-cache: "" = the default cache
  std::uint32_t memcached_keysize = 250;       // --memcached-keysize: memcached's KEY_MAX_LENGTH
  bool memcached_no_io_uring = false;          // --memcached-no-io-uring: their connections on epoll
  int processes = 1;
  bool master = true;  // accepted for compatibility: the master always runs
  int listen_backlog = 100;
  std::string chmod_socket;  // "" = leave as created; otherwise octal mode, e.g. "660"
  std::string pidfile;
  std::uint32_t buffer_size = 65535;
  int harakiri = 0;                  // seconds; 0 = off
  int socket_timeout = 4;            // seconds
  std::uint64_t limit_post = 0;      // --limit-post: largest application request body (0 = no limit)
  std::uint64_t post_buffering = 0;  // --post-buffering: bodies this large go to a file (0 = 16 MiB)
  int reload_mercy = 60;             // seconds a worker may take to finish in-flight requests on stop/reload
  bool debug_log = false;            // --log-debug: master jobs log their timings
  // process lifecycle (uWSGI's names and meanings)
  std::string uid;                 // --uid: user name or number the master and workers drop to ("" = stay)
  std::string gid;                 // --gid: group name or number
  std::string chown_socket;        // --chown-socket: user[:group] of the UNIX sockets
  std::string umask;               // --umask: octal, applied before any file is created ("" = inherited)
  bool vacuum = false;             // remove UNIX socket files and pidfiles at exit
  std::string pidfile2;            // written after the privileges drop, as the dropped user
  std::uint64_t max_requests = 0;  // recycle a worker after this many requests (0 = never)
  std::uint64_t max_requests_delta = 0;   // worker N recycles after max_requests + (N-1) * delta
  int max_worker_lifetime = 0;            // seconds; recycle a worker this old (0 = never)
  std::uint64_t reload_on_rss = 0;        // MB; a worker above this RSS after a request recycles (0 = off)
  std::uint64_t evil_reload_on_rss = 0;   // MB; the master SIGKILLs a worker above this RSS (0 = off)
  std::string accept_mode = "exclusive";  // how workers wait on the listening sockets

  // observability: the stats server, metrics and logs (uWSGI's names and meanings)
  std::string stats;             // --stats ADDR: the stats server ("" = none)
  bool stats_http = false;       // answer stats clients in HTTP (and serve /metrics)
  bool metrics = false;          // --metrics: GET /metrics on the application sockets too
  bool disable_logging = false;  // no request log lines (except what log-4xx/5xx/slow pick)
  bool log_4xx = false;
  bool log_5xx = false;
  std::uint64_t log_slow = 0;        // ms; 0 = off
  std::string log_format;            // uWSGI's %(var) template ("" = uWSGI's default line)
  bool log_cache = false;            // modifier1 111 requests get a line too
  bool memory_report = false;        // the request line starts with the address space and rss usage
  std::string logto;                 // every log line goes to this file
  std::string logto2;                // the same, opened after the privileges drop
  std::uint64_t log_maxsize = 0;     // bytes; rotate the --logto file at this size (0 = never)
  std::string log_backupname;        // the rotated file's name ("" = FILE.<unix time>)
  bool log_reopen = false;           // reopen the --logto file on SIGHUP (reload)
  std::string daemonize;             // detach, log to this file
  std::string req_logger;            // file:PATH: request lines go there instead of the log
  std::vector<std::string> loggers;  // --logger: [NAME ]stdio | file:PATH | fd:N (one destination)
  std::string log_date;              // --log-date's strftime FORMAT ("" or true: the date is always there)
  bool logformat_strftime = false;   // %(ftime) is the request's time in --log-date's FORMAT

  // the default cache (--cache and friends); items == 0 means no default cache
  std::uint64_t cache_items = 0;
  std::uint64_t cache_blocksize = cache::kDefaultBlocksize;
  std::uint32_t cache_keysize = cache::kDefaultKeysize;
  std::string cache_store;
  int cache_store_sync = 0;
  bool cache_store_delete = false;
  bool cache_no_expire = false;
  int cache_expire_freq = 3;
  bool cache_report_freed_items = false;
  bool cache_purge_lru = false;
  std::vector<std::string> cache_udp_servers;  // --cache-udp-server
  std::vector<std::string> cache_udp_nodes;    // --cache-udp-node
  std::string cache_sync;                      // --cache-sync: fetch a dump from this node at startup
  bool cache_use_last_modified = false;
  std::vector<std::string> add_cache_items;      // --add-cache-item "[cache ]key=value"
  std::vector<std::string> load_files_in_cache;  // --load-file-in-cache "[cache ]path"
  std::vector<std::string> cache2_specs;         // raw --cache2 values, in order (parsed into caches)

  // Every cache to create, in creation order; the first is the default cache. Built from --cache
  // (named "default", created first, as uWSGI does) and each --cache2, after all sources applied.
  std::vector<CacheSpec> caches;

  // the hosted application
  std::string module;
  std::string wsgi_file;
  std::string pyrun;  // run this script (uwsgi module and caches ready), then exit: uWSGI's --pyrun
  std::string callable = "application";
  std::string chdir;
  std::vector<std::string> pythonpath;
  std::vector<std::string> env;     // KEY=VALUE
  std::vector<std::string> mounts;  // --mount MOUNTPOINT=APP
  bool manage_script_name = false;
  bool lazy_apps = false;
  int threads = 1;
  bool wsgi_disable_file_wrapper = false;  // no wsgi.file_wrapper in the environ
  std::vector<std::string> add_header;     // "Name: value" added to every response
  std::string virtualenv;  // --virtualenv/--home: the Python environment whose site-packages to use

  // static files, served by the workers (server/static_files.hpp)
  std::vector<std::string> static_map;   // MOUNT=DIR
  std::vector<std::string> static_map2;  // MOUNT=DIR, the mountpoint kept in the file's path
  std::vector<std::string> check_static;
  std::vector<std::string> static_index;
  std::vector<std::string> static_expires;  // "REGEXP SECONDS"
  std::vector<std::string> static_gzip_dir;
  std::vector<std::string> static_safe;
  bool static_gzip_all = false;
  std::string mimefile = "/etc/mime.types";

  // reloading, side processes, hooks, process titles (master/extras.cpp)
  std::vector<std::string> touch_reload;   // graceful reload when one of these files' mtime changes
  int py_autoreload = 0;                   // seconds between checks of the loaded modules (0 = off)
  std::vector<std::string> attach_daemon;  // commands started and watched by the master
  std::vector<std::string> hook_master_start;
  std::vector<std::string> hook_accepting1;
  bool auto_procname = false;
  std::string procname_prefix;
  std::string procname_prefix_spaced;
  int max_fd = 0;  // RLIMIT_NOFILE to set at start (0 = inherited)

  // adaptive number of workers (uWSGI's cheaper subsystem; master/cheaper.cpp)
  int cheaper = 0;  // minimum number of workers (0 = off: always --processes)
  int cheaper_initial = 0;
  int cheaper_step = 1;
  int cheaper_overload = 3;  // seconds between decisions
  std::string cheaper_algo = "spare";
  int idle = 0;  // seconds without a request after which a worker above the minimum is retired
};

// A bad configuration: the message names the option, where it came from and the expected form.
struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// What the command line asked for besides a configuration.
struct ParseResult {
  Config config;
  bool help_requested = false;     // --help / -h: print help_text() and exit 0
  bool version_requested = false;  // --version
  // One line each (without "WARNING: "): unknown keys in files, options accepted with no effect, ...
  std::vector<std::string> warnings;
  std::string show_config;  // --show-config: the resolved configuration to log ("" = not asked)
};

// Parses the UWSGI_* environment variables, then argv (argv[0] is the program name). Sources apply in
// that order (--ini and --toml where they appear); later wins, list options accumulate; placeholders
// are expanded once all are read (config/ini.hpp). Throws ConfigError.
ParseResult parse_command_line(int argc, const char* const argv[]);

std::string help_text(std::string_view program_name);

// One --cache2 value parsed and validated (store_sync defaults to 0 here; parse_command_line applies
// the --cache-store-sync inheritance). Throws ConfigError: `--cache2 "<spec>": <what is wrong>`.
CacheSpec parse_cache2_spec(std::string_view spec);

// A validated --socket / --http-socket value taken apart (common/address.hpp: the one parser; ":port"
// gets common::kListenAnyHost). Throws ConfigError when the form is invalid.
using SocketAddress = common::Address;
SocketAddress parse_socket_address(std::string_view address);

// "660" / "0666" -> 0660 / 0666; nullopt unless 3 or 4 octal digits.
std::optional<unsigned> parse_chmod_mode(std::string_view text);
// "022" / "0077" / "7" -> the mask; nullopt unless 1 to 4 octal digits (--umask).
std::optional<unsigned> parse_umask(std::string_view text);

// The options reference (Markdown) generated from the table, for docs/options.md.
std::string options_reference_markdown();

}  // namespace config
