// Unit tests of the config/ room: the option table, every source form (command line, ini, toml), their
// ordering, sizes and bounds, --cache2, and every error path with the context its message must carry.
#include "config/config.hpp"

#include <stdlib.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "tests/unit/config/test_support.hpp"

namespace {

using Catch::Matchers::Contains;
using config::CacheSpec;
using config::Config;
using config::ConfigError;
using config::OptionType;
using config::ParseResult;

std::string cache2_error_of(std::string_view spec) {
  try {
    config::parse_cache2_spec(spec);
  } catch (const ConfigError& error) {
    return error.what();
  }
  FAIL("expected a ConfigError for --cache2 " << spec);
  return "";
}

void require_same_cache(const CacheSpec& a, const CacheSpec& b) {
  CHECK(a.name == b.name);
  CHECK(a.items == b.items);
  CHECK(a.blocksize == b.blocksize);
  CHECK(a.keysize == b.keysize);
  CHECK(a.hashsize == b.hashsize);
  CHECK(a.store == b.store);
  CHECK(a.store_sync == b.store_sync);
  CHECK(a.store_delete == b.store_delete);
  CHECK(a.purge_lru == b.purge_lru);
  CHECK(a.ignore_full == b.ignore_full);
  CHECK(a.no_expire == b.no_expire);
  CHECK(a.math_initial == b.math_initial);
  CHECK(a.blocks == b.blocks);
  CHECK(a.hash == b.hash);
  CHECK(a.bitmap == b.bitmap);
  CHECK(a.lastmod == b.lastmod);
  CHECK(a.lazy_expire == b.lazy_expire);
  CHECK(a.sweep_on_full == b.sweep_on_full);
  CHECK(a.clear_on_full == b.clear_on_full);
  CHECK(a.nodes == b.nodes);
  CHECK(a.udp_servers == b.udp_servers);
  CHECK(a.sync == b.sync);
}

const config::OptionSpec& row_named(std::string_view name) {
  for (const auto& row : config::option_table()) {
    if (row.name == name) return row;
  }
  FAIL("no option " << name);
  return config::option_table().front();
}

}  // namespace

// ----------------------------------------------------------------------------------------------
// The table itself

TEST_CASE("option table: names and aliases are unique and every row is documented", "[table]") {
  std::set<std::string> seen;
  for (const auto& row : config::option_table()) {
    INFO("option " << row.name);
    CHECK_FALSE(row.help.empty());
    CHECK_FALSE(row.group.empty());
    CHECK(seen.insert(std::string(row.name)).second);
    std::istringstream aliases{std::string(row.aliases)};
    for (std::string alias; aliases >> alias;) CHECK(seen.insert(alias).second);
    if (row.type != OptionType::flag) CHECK_FALSE(row.value_name.empty());
  }
  for (const auto name : {"socket",
                          "http-socket",
                          "processes",
                          "master",
                          "listen",
                          "chmod-socket",
                          "pidfile",
                          "buffer-size",
                          "harakiri",
                          "socket-timeout",
                          "reload-mercy",
                          "log-debug",
                          "cache",
                          "cache-blocksize",
                          "cache-keysize",
                          "cache-store",
                          "cache-store-sync",
                          "cache-store-delete",
                          "cache-no-expire",
                          "cache-expire-freq",
                          "cache-report-freed-items",
                          "cache-purge-lru",
                          "cache2",
                          "cache-udp-server",
                          "cache-udp-node",
                          "cache-sync",
                          "cache-use-last-modified",
                          "add-cache-item",
                          "load-file-in-cache",
                          "module",
                          "wsgi-file",
                          "callable",
                          "chdir",
                          "pythonpath",
                          "env",
                          "lazy-apps",
                          "threads",
                          "ini",
                          "toml",
                          "help",
                          "version"}) {
    CHECK(seen.count(name) == 1);
  }
}

TEST_CASE("option table: the bounds of every number fit the Config field it fills", "[table]") {
  for (const auto& row : config::option_table()) {
    if (row.type != OptionType::integer && row.type != OptionType::size) continue;
    // Accepted (no effect) and refused uWSGI options are checked and stored nowhere.
    if (std::holds_alternative<std::monostate>(row.target)) continue;
    INFO("option " << row.name);
    CHECK(row.min_value <= row.max_value);
    std::visit(
        [&](auto member) {
          if constexpr (!std::is_same_v<decltype(member), std::monostate>) {
            using Field = std::remove_reference_t<decltype(std::declval<Config&>().*member)>;
            if constexpr (std::is_arithmetic_v<Field> && !std::is_same_v<Field, bool>) {
              CHECK(row.min_value >= static_cast<std::int64_t>(std::numeric_limits<Field>::min()));
              CHECK(static_cast<std::uint64_t>(row.max_value) <=
                    static_cast<std::uint64_t>(std::numeric_limits<Field>::max()));
            } else {
              FAIL("a number option must fill a number field");
            }
          } else {
            FAIL("a number option must fill a field");
          }
        },
        row.target);
  }
}

TEST_CASE("option table: giving each documented default changes nothing", "[table]") {
  const Config defaults;
  for (const auto& row : config::option_table()) {
    if (row.default_value.empty() || row.type == OptionType::flag) continue;
    INFO("option " << row.name << " default " << row.default_value);
    const auto parsed = parse({"--" + std::string(row.name), std::string(row.default_value)}).config;
    std::visit(
        [&](auto member) {
          if constexpr (!std::is_same_v<decltype(member), std::monostate>) {
            CHECK(parsed.*member == defaults.*member);
          }
        },
        row.target);
  }
  CHECK(row_named("processes").default_value == "1");
  CHECK(row_named("buffer-size").default_value == "65535");
  CHECK(row_named("cache-blocksize").default_value == "64k");
  CHECK(row_named("listen").default_value == "100");
  CHECK(row_named("callable").default_value == "application");
  CHECK(row_named("socket-timeout").default_value == "4");
  CHECK(row_named("reload-mercy").default_value == "60");
  CHECK(row_named("cache-expire-freq").default_value == "3");
}

// ----------------------------------------------------------------------------------------------
// Command line

TEST_CASE("command line: no arguments gives the defaults and no cache", "[cli]") {
  const auto result = parse({});
  CHECK_FALSE(result.help_requested);
  CHECK_FALSE(result.version_requested);
  CHECK(result.config.processes == 1);
  CHECK(result.config.buffer_size == 65535);
  CHECK(result.config.listen_backlog == 100);
  CHECK(result.config.cache_expire_freq == 3);
  CHECK(result.config.threads == 1);
  CHECK(result.config.callable == "application");
  CHECK(result.config.caches.empty());
}

TEST_CASE("command line: every value form and alias", "[cli]") {
  CHECK(parse({"--processes", "4"}).config.processes == 4);
  CHECK(parse({"--processes=5"}).config.processes == 5);
  CHECK(parse({"--workers", "6"}).config.processes == 6);
  CHECK(parse({"--workers=7"}).config.processes == 7);
  CHECK(parse({"-p", "8"}).config.processes == 8);
  CHECK(parse({"-p9"}).config.processes == 9);
  CHECK(parse({"-b", "8k"}).config.buffer_size == 8192);
  CHECK(parse({"-M"}).config.master);
  CHECK(parse({"--env", "A=b=c"}).config.env == std::vector<std::string>{"A=b=c"});
  CHECK(parse({"--callable", "app"}).config.callable == "app");
  CHECK(parse({"--module=a.b"}).config.module == "a.b");
  CHECK(parse({"--pidfile", "/run/x.pid"}).config.pidfile == "/run/x.pid");
  CHECK(parse({"--harakiri", "30"}).config.harakiri == 30);
  CHECK(parse({"--socket-timeout", "9"}).config.socket_timeout == 9);
  CHECK(parse({"--reload-mercy", "0"}).config.reload_mercy == 0);
  CHECK(parse({"--threads", "4"}).config.threads == 4);
  CHECK(parse({"--chdir", "/srv"}).config.chdir == "/srv");
  CHECK(parse({"--wsgi-file", "app.py"}).config.wsgi_file == "app.py");
  CHECK(parse({"--cache-sync", "10.0.0.1:3031"}).config.cache_sync == "10.0.0.1:3031");
}

TEST_CASE("--mount MOUNTPOINT=APP and --manage-script-name", "[cli]") {
  const auto config =
      parse({"--mount", "/app=app.py", "--mount", "/api=pkg.api:app", "--manage-script-name"}).config;
  CHECK(config.mounts == std::vector<std::string>{"/app=app.py", "/api=pkg.api:app"});
  CHECK(config.manage_script_name);
  CHECK(parse({"--mount", "=default.py"}).config.mounts == std::vector<std::string>{"=default.py"});
  CHECK_THAT(error_of({"--mount", "app=x.py"}),
             Contains("--mount \"app=x.py\"") && Contains("must start with '/'"));
  CHECK_THAT(error_of({"--mount", "/app"}), Contains("expected MOUNTPOINT=APP"));
  CHECK_THAT(error_of({"--mount", "/app="}), Contains("expected MOUNTPOINT=APP"));
}

TEST_CASE("command line: flags take no value, or an explicit boolean after =", "[cli]") {
  CHECK(parse({"--log-debug"}).config.debug_log);
  CHECK(parse({"--lazy-apps"}).config.lazy_apps);
  CHECK(parse({"--cache-no-expire"}).config.cache_no_expire);
  CHECK(parse({"--cache-use-last-modified"}).config.cache_use_last_modified);
  CHECK(parse({"--cache-report-freed-items"}).config.cache_report_freed_items);
  CHECK_FALSE(parse({"--master=false"}).config.master);
  CHECK_FALSE(parse({"--master=off"}).config.master);
  CHECK(parse({"--log-debug=yes"}).config.debug_log);
  CHECK_FALSE(parse({"--log-debug", "--log-debug=0"}).config.debug_log);
  // A flag does not swallow the next argument.
  const auto result = parse({"--lazy-apps", "--processes", "3"}).config;
  CHECK(result.lazy_apps);
  CHECK(result.processes == 3);
  CHECK_THAT(error_of({"--master=maybe"}), Contains("--master \"maybe\" (command line)") &&
                                               Contains("expected true/false, 1/0, yes/no or on/off"));
}

TEST_CASE("command line: later wins, lists accumulate in order", "[cli][order]") {
  const auto result = parse({"-p", "2", "--socket", ":3031", "--processes", "3", "-s", "/tmp/a.sock",
                             "--socket=127.0.0.1:3032", "--pythonpath", "a", "--pythonpath", "b"})
                          .config;
  CHECK(result.processes == 3);
  CHECK(result.sockets == std::vector<std::string>{":3031", "/tmp/a.sock", "127.0.0.1:3032"});
  CHECK(result.pythonpath == std::vector<std::string>{"a", "b"});
  CHECK(parse({"--http-socket", ":8080", "--http-socket", ":8081"}).config.http_sockets.size() == 2);
}

TEST_CASE("command line: sizes take k/M/G units (powers of 1024)", "[cli][size]") {
  CHECK(parse({"--cache-blocksize", "64k"}).config.cache_blocksize == 65536);
  CHECK(parse({"--cache-blocksize", "64K"}).config.cache_blocksize == 65536);
  CHECK(parse({"--cache-blocksize", "4M"}).config.cache_blocksize == 4u << 20);
  CHECK(parse({"--cache-blocksize", "4m"}).config.cache_blocksize == 4u << 20);
  CHECK(parse({"--cache-blocksize", "1G"}).config.cache_blocksize == 1u << 30);
  CHECK(parse({"--cache-blocksize", "1g"}).config.cache_blocksize == 1u << 30);
  CHECK(parse({"--cache-blocksize", "1000"}).config.cache_blocksize == 1000);
  CHECK(parse({"--cache", "2k"}).config.cache_items == 2048);
  CHECK(parse({"--cache-keysize", "1k"}).config.cache_keysize == 1024);
  // integers (not sizes) take no units
  CHECK_THAT(error_of({"--processes", "1k"}),
             Contains("--processes \"1k\"") && Contains("expected an integer between 1 and 1024"));
}

TEST_CASE("command line: bad sizes, garbage and overflow are errors naming the bounds",
          "[cli][size][errors]") {
  CHECK_THAT(error_of({"--cache-blocksize", "2G"}), Contains("--cache-blocksize \"2G\" (command line)") &&
                                                        Contains("between 1 and 1073741824") &&
                                                        Contains("k/M/G"));
  CHECK_THAT(error_of({"--cache-blocksize", "12q"}), Contains("--cache-blocksize \"12q\""));
  CHECK_THAT(error_of({"--cache-blocksize", "k"}), Contains("--cache-blocksize \"k\""));
  CHECK_THAT(error_of({"--cache-blocksize", "-1"}), Contains("between 1 and"));
  CHECK_THAT(error_of({"--cache", "99999999999999999999"}), Contains("--cache \"99999999999999999999\""));
  CHECK_THAT(error_of({"--cache", "9999999999999G"}), Contains("--cache \"9999999999999G\""));
  CHECK_THAT(error_of({"--buffer-size", "64k"}),
             Contains("--buffer-size \"64k\"") && Contains("between 4 and 65535"));
  CHECK_THAT(error_of({"--buffer-size", "3"}), Contains("between 4 and 65535"));
  CHECK(parse({"--buffer-size", "4"}).config.buffer_size == 4);
}

TEST_CASE("command line: integers out of bounds name the option, source, value and bounds", "[cli][errors]") {
  CHECK(error_of({"--processes", "abc"}) ==
        "--processes \"abc\" (command line): expected an integer between 1 and 1024");
  CHECK_THAT(error_of({"--processes", "0"}), Contains("--processes \"0\"") && Contains("between 1 and 1024"));
  CHECK_THAT(error_of({"-p", "1025"}), Contains("--processes \"1025\"") && Contains("between 1 and 1024"));
  CHECK(parse({"-p", "1024"}).config.processes == 1024);
  CHECK_THAT(error_of({"--cache-keysize", "65536"}), Contains("between 1 and 65535"));
  CHECK_THAT(error_of({"--cache-keysize", "0"}), Contains("between 1 and 65535"));
  CHECK_THAT(error_of({"--cache-expire-freq", "0"}), Contains("--cache-expire-freq \"0\""));
  CHECK_THAT(error_of({"--listen", "0"}), Contains("--listen \"0\""));
  CHECK_THAT(error_of({"--threads", "2.5"}), Contains("--threads \"2.5\""));
  CHECK_THAT(error_of({"--harakiri", "-1"}), Contains("--harakiri \"-1\""));
}

TEST_CASE("command line: unknown options suggest the nearest name", "[cli][errors]") {
  CHECK(error_of({"--procesess", "4"}) ==
        "unknown option --procesess (command line); did you mean --processes?");
  CHECK_THAT(error_of({"--cache-blocksise=4"}), Contains("did you mean --cache-blocksize?"));
  CHECK_THAT(error_of({"--workres", "2"}), Contains("did you mean --workers?"));
  const auto far = error_of({"--completely-unrelated"});
  CHECK_THAT(far, Contains("unknown option --completely-unrelated"));
  CHECK_THAT(far, !Contains("did you mean"));
  CHECK_THAT(error_of({"-q"}), Contains("unknown option -q"));
  CHECK_THAT(error_of({"stray"}), Contains("unexpected argument \"stray\""));
}

TEST_CASE("command line: a missing value is an error", "[cli][errors]") {
  CHECK_THAT(error_of({"--socket"}), Contains("--socket (command line): missing value") && Contains("ADDR"));
  CHECK_THAT(error_of({"-p"}), Contains("--processes (command line): missing value") && Contains("1..1024"));
  CHECK_THAT(error_of({"--socket", "--processes", "2"}),
             Contains("--socket") && Contains("missing value") && Contains("\"--processes\""));
}

TEST_CASE("command line: --help, -h and --version stop parsing", "[cli]") {
  CHECK(parse({"--help"}).help_requested);
  CHECK(parse({"-h"}).help_requested);
  CHECK(parse({"--version"}).version_requested);
  // whatever follows is not looked at
  CHECK(parse({"-p", "2", "--help", "--no-such-option"}).help_requested);
  CHECK_FALSE(parse({"--help=no"}).help_requested);
  CHECK_THAT(error_of({"--version=later"}), Contains("--version \"later\" (command line)"));
}

// ----------------------------------------------------------------------------------------------
// Validated string forms

TEST_CASE("socket addresses: accepted forms and their parts", "[socket]") {
  auto tcp = config::parse_socket_address(":3031");
  CHECK_FALSE(tcp.is_unix);
  CHECK(tcp.host == "0.0.0.0");
  CHECK(tcp.port == 3031);
  tcp = config::parse_socket_address("127.0.0.1:1");
  CHECK(tcp.host == "127.0.0.1");
  CHECK(tcp.port == 1);
  tcp = config::parse_socket_address("localhost:65535");
  CHECK(tcp.host == "localhost");
  CHECK(tcp.port == 65535);
  tcp = config::parse_socket_address("[::1]:8000");
  CHECK(tcp.host == "::1");
  CHECK(tcp.port == 8000);
  auto unix_socket = config::parse_socket_address("/tmp/app.sock");
  CHECK(unix_socket.is_unix);
  CHECK(unix_socket.path == "/tmp/app.sock");
  CHECK(config::parse_socket_address("./rel.sock").is_unix);
  CHECK(config::parse_socket_address("@abstract").is_unix);
  CHECK(config::parse_socket_address("app.sock").is_unix);
}

TEST_CASE("socket addresses: bad ports and forms are errors", "[socket][errors]") {
  for (const auto bad : {":0", ":65536", ":abc", "host:", ":-1", "bad host:80", ""}) {
    INFO(bad);
    CHECK_THROWS_AS(config::parse_socket_address(bad), ConfigError);
  }
  CHECK_THAT(error_of({"--socket", ":70000"}), Contains("--socket \":70000\" (command line)") &&
                                                   Contains("host:port") && Contains("between 1 and 65535"));
  CHECK_THAT(error_of({"--http-socket", "x:0"}), Contains("--http-socket \"x:0\""));
  CHECK_THAT(error_of({"--cache-udp-node", "/tmp/x"}),
             Contains("--cache-udp-node \"/tmp/x\"") && Contains("ip:port"));
  CHECK(parse({"--cache-udp-server", ":4000", "--cache-udp-node", "10.0.0.2:4000"}).config.cache_udp_nodes ==
        std::vector<std::string>{"10.0.0.2:4000"});
}

TEST_CASE("chmod-socket takes an octal mode", "[chmod]") {
  CHECK(config::parse_chmod_mode("660") == 0660u);
  CHECK(config::parse_chmod_mode("0666") == 0666u);
  CHECK(config::parse_chmod_mode("777") == 0777u);
  CHECK_FALSE(config::parse_chmod_mode("66"));
  CHECK_FALSE(config::parse_chmod_mode("999"));
  CHECK_FALSE(config::parse_chmod_mode("06666"));
  CHECK_FALSE(config::parse_chmod_mode("rw"));
  CHECK(config::parse_chmod_mode("1") == 0666u);  // uWSGI's "1": as the bare option
  CHECK(parse({"--chmod-socket=660"}).config.chmod_socket == "660");
  CHECK(parse({"-C640"}).config.chmod_socket == "640");
  CHECK_THAT(error_of({"--chmod-socket=968"}),
             Contains("--chmod-socket \"968\" (command line)") && Contains("octal"));
}

TEST_CASE("an optional value (uWSGI's optional_argument) is left out or attached", "[cli][chmod]") {
  // Bare, the option takes its implicit value, and the next argument is an option again.
  const auto bare = parse({"--chmod-socket", "--log-date", "--socket", "/tmp/s"}).config;
  CHECK(bare.chmod_socket == "666");
  CHECK(bare.log_date == "true");
  CHECK(bare.sockets == std::vector<std::string>{"/tmp/s"});
  CHECK(parse({"-C"}).config.chmod_socket == "666");
  CHECK(parse({"--chmod"}).config.chmod_socket == "666");
  CHECK(parse({"--log-date=%Y-%m-%d"}).config.log_date == "%Y-%m-%d");
  // As getopt_long, a separate argument is never the value: uWSGI fails on it too (as a config file).
  CHECK_THAT(error_of({"--chmod-socket", "660"}),
             Contains("unexpected argument \"660\"") && Contains("--chmod-socket=660") && Contains("666"));
  CHECK_THAT(error_of({"--log-date", "%Y"}),
             Contains("unexpected argument \"%Y\"") && Contains("--log-date=%Y"));
}

TEST_CASE("umask takes 1 to 4 octal digits, parsed by the one octal parser", "[chmod]") {
  CHECK(config::parse_umask("022") == 022u);
  CHECK(config::parse_umask("0077") == 077u);
  CHECK(config::parse_umask("7") == 07u);
  CHECK_FALSE(config::parse_umask(""));
  CHECK_FALSE(config::parse_umask("08"));
  CHECK_FALSE(config::parse_umask("00022"));
  CHECK_THAT(error_of({"--umask", "8"}), Contains("--umask \"8\"") && Contains("octal mask"));
}

TEST_CASE("static files, hooks, headers and cheaper options are checked when parsed", "[errors]") {
  CHECK_THAT(error_of({"--static-map", "static=/srv"}), Contains("/MOUNTPOINT=PATH"));
  CHECK_THAT(error_of({"--static-expires", "[ 60"}), Contains("REGEXP SECONDS"));
  CHECK_THAT(error_of({"--static-expires", ".*css soon"}), Contains("REGEXP SECONDS"));
  CHECK_THAT(error_of({"--hook-master-start", "mount:/x"}), Contains("exec:COMMAND"));
  CHECK_THAT(error_of({"--add-header", "no colon"}), Contains("Name: value"));
  CHECK_THAT(error_of({"--cheaper-algo", "backlog"}), Contains("spare or busyness"));
  CHECK_THAT(error_of({"--gevent", "100"}), Contains("not supported here") && Contains("gevent"));
  CHECK(parse({"--static-map", "/static=/srv/static", "--static-expires", "/srv/.*\\.css 3600"})
            .config.static_expires == std::vector<std::string>{"/srv/.*\\.css 3600"});
  CHECK(parse({"--home", "/usr"}).config.virtualenv == "/usr");
  CHECK(parse({"-H", "/usr"}).config.virtualenv == "/usr");
  CHECK(parse({"--python-autoreload", "2"}).config.py_autoreload == 2);
  CHECK(parse({"--safe-pidfile", "/tmp/x.pid"}).config.pidfile == "/tmp/x.pid");
  CHECK(parse({"--lazy"}).config.lazy_apps);
}

TEST_CASE("env and add-cache-item need KEY=VALUE", "[errors]") {
  CHECK_THAT(error_of({"--env", "NOEQUALS"}), Contains("--env \"NOEQUALS\"") && Contains("KEY=VALUE"));
  CHECK_THAT(error_of({"--env", "=x"}), Contains("--env \"=x\""));
  CHECK_THAT(error_of({"--add-cache-item", "novalue"}),
             Contains("--add-cache-item \"novalue\"") && Contains("key=value"));
  const auto config = parse({"--add-cache-item", "k=v", "--add-cache-item", "mycache k2=v2",
                             "--load-file-in-cache", "/etc/hostname"})
                          .config;
  CHECK(config.add_cache_items == std::vector<std::string>{"k=v", "mycache k2=v2"});
  CHECK(config.load_files_in_cache == std::vector<std::string>{"/etc/hostname"});
}

// ----------------------------------------------------------------------------------------------
// ini

TEST_CASE("ini: the [uwsgi] section, comments, later wins and lists", "[ini]") {
  TempDir dir;
  const auto ini = dir.write("app.ini",
                             "# a comment\n"
                             "; another comment\n"
                             "processes = 99\n"  // before any section: not ours
                             "[uwsgi]\n"
                             "processes = 3\n"
                             "workers = 4\n"
                             "socket = :3031\n"
                             "socket=/tmp/app.sock\n"
                             "  master = off  \n"
                             "lazy-apps = yes\n"
                             "log-debug = 1\n"
                             "cache-no-expire = on\n"
                             "cache-blocksize = 4k\n"
                             "env = A=1\n"
                             "\n"
                             "[other]\n"
                             "processes = 7\n");
  const auto config = parse({"--ini", ini}).config;
  CHECK(config.processes == 4);
  CHECK(config.sockets == std::vector<std::string>{":3031", "/tmp/app.sock"});
  CHECK_FALSE(config.master);
  CHECK(config.lazy_apps);
  CHECK(config.debug_log);
  CHECK(config.cache_no_expire);
  CHECK(config.cache_blocksize == 4096);
  CHECK(config.env == std::vector<std::string>{"A=1"});
  CHECK(parse({"--ini", ini + ":other"}).config.processes == 7);
  CHECK(parse({ini}).config.processes == 4);  // a bare FILE.ini argument is loaded
}

TEST_CASE("ini: flags accept every boolean spelling", "[ini]") {
  TempDir dir;
  for (const auto& [text, expected] : std::vector<std::pair<std::string, bool>>{{"true", true},
                                                                                {"false", false},
                                                                                {"1", true},
                                                                                {"0", false},
                                                                                {"yes", true},
                                                                                {"no", false},
                                                                                {"on", true},
                                                                                {"off", false},
                                                                                {"TRUE", true},
                                                                                {"Off", false}}) {
    INFO(text);
    const auto ini = dir.write("flag.ini", "[uwsgi]\nlazy-apps = " + text + "\n");
    CHECK(parse({"--ini", ini}).config.lazy_apps == expected);
  }
}

TEST_CASE("ini: errors carry file:line", "[ini][errors]") {
  TempDir dir;
  const auto bad_value = dir.write("bad.ini", "[uwsgi]\n\n# comment\nprocesses = abc\n");
  CHECK(error_of({"--ini", bad_value}) ==
        "--processes \"abc\" (" + bad_value + ":4): expected an integer between 1 and 1024");

  // An unknown key is a placeholder with a WARNING (ini_magic_test.cpp), an error only with strict.
  const auto typo = dir.write("typo.ini", "[uwsgi]\nstrict = true\nprocesess = 4\n");
  CHECK(error_of({"--ini", typo}) ==
        "unknown option --procesess (" + typo + ":3); did you mean --processes? (strict is on)");

  const auto bad_flag = dir.write("flag.ini", "[uwsgi]\nmaster = perhaps\n");
  CHECK_THAT(error_of({"--ini", bad_flag}),
             Contains("--master \"perhaps\" (" + bad_flag + ":2)") && Contains("yes/no"));

  const auto bad_header = dir.write("header.ini", "[uwsgi\nprocesses = 2\n");
  CHECK_THAT(error_of({"--ini", bad_header}), Contains(bad_header + ":1") && Contains("section header"));

  // Short aliases are command-line only: in a file "p" is an unknown key.
  const auto short_alias = dir.write("short.ini", "[uwsgi]\nstrict = 1\np = 2\n");
  CHECK_THAT(error_of({"--ini", short_alias}), Contains("unknown option --p (" + short_alias + ":3)"));

  const auto bad_socket = dir.write("socket.ini", "[uwsgi]\nsocket = :3031\nsocket = :99999\n");
  CHECK_THAT(error_of({"--ini", bad_socket}), Contains("--socket \":99999\" (" + bad_socket + ":3)"));
}

TEST_CASE("ini: missing file, missing section and include loops", "[ini][errors]") {
  TempDir dir;
  const auto missing = dir.write("placeholder", "") + ".nope.ini";
  CHECK_THAT(error_of({"--ini", missing}), Contains("--ini \"" + missing + "\" (command line)") &&
                                               Contains("cannot open") &&
                                               Contains("No such file or directory"));
  const auto ini = dir.write("sections.ini", "[other]\nprocesses = 2\n");
  CHECK_THAT(error_of({"--ini", ini}), Contains("--ini \"" + ini + "\"") && Contains("no [uwsgi] section"));
  CHECK_THAT(error_of({"--ini", ini + ":prod"}), Contains("no [prod] section"));
  CHECK_THAT(error_of({"--ini", ini + ":"}),
             Contains("cannot open"));  // empty section: part of the file name

  const auto loop = dir.write("loop.ini", "[uwsgi]\nini = " + dir.write("loop2.ini", "") + "\n");
  dir.write("loop2.ini", "[uwsgi]\nini = " + loop + "\n");
  CHECK_THAT(error_of({"--ini", loop}), Contains("nested configuration files"));
}

TEST_CASE("ini: a file may include another, applied where it appears", "[ini][order]") {
  TempDir dir;
  const auto base = dir.write("base.ini", "[uwsgi]\nprocesses = 2\nsocket = :1\n");
  const auto main = dir.write("main.ini", "[uwsgi]\nprocesses = 5\nini = " + base + "\nsocket = :2\n");
  const auto config = parse({"--ini", main}).config;
  CHECK(config.processes == 2);
  CHECK(config.sockets == std::vector<std::string>{":1", ":2"});
}

// ----------------------------------------------------------------------------------------------
// toml

TEST_CASE("toml: top-level keys, the [uwsgi] table, arrays and typed values", "[toml]") {
  TempDir dir;
  const auto toml = dir.write("app.toml",
                              "processes = 4\n"
                              "socket = [\":3031\", \"/tmp/a.sock\"]\n"
                              "cache-blocksize = \"8k\"\n"
                              "\n"
                              "[uwsgi]\n"
                              "master = false\n"
                              "lazy-apps = \"yes\"\n"
                              "log-debug = 1\n"
                              "cache = 1000\n"
                              "http-socket = \":8080\"\n"
                              "chmod-socket = 660\n"
                              "\n"
                              "[other]\n"
                              "processes = 9\n");
  const auto config = parse({"--toml", toml}).config;
  CHECK(config.processes == 4);
  CHECK(config.sockets == std::vector<std::string>{":3031", "/tmp/a.sock"});
  CHECK(config.cache_blocksize == 8192);
  CHECK_FALSE(config.master);
  CHECK(config.lazy_apps);
  CHECK(config.debug_log);
  CHECK(config.cache_items == 1000);
  CHECK(config.http_sockets == std::vector<std::string>{":8080"});
  CHECK(config.chmod_socket == "660");
  REQUIRE(config.caches.size() == 1);
  CHECK(config.caches[0].name == "default");
  CHECK(parse({"--toml", toml + ":other"}).config.processes == 9);
  CHECK(parse({toml}).config.processes == 4);  // a bare FILE.toml argument is loaded
}

TEST_CASE("toml: errors carry file:line", "[toml][errors]") {
  TempDir dir;
  const auto syntax = dir.write("syntax.toml", "processes = 2\nsocket = [\":1\"\n");
  CHECK_THAT(error_of({"--toml", syntax}),
             Contains("--toml \"" + syntax + "\" (command line)") && Contains(syntax + ":2"));

  const auto bad_value = dir.write("value.toml", "\n[uwsgi]\nprocesses = 1.5\n");
  CHECK(error_of({"--toml", bad_value}) ==
        "--processes \"1.5\" (" + bad_value + ":3): expected an integer between 1 and 1024");

  const auto typo = dir.write("typo.toml", "strict = true\nworkrs = 3\n");
  CHECK(error_of({"--toml", typo}) ==
        "unknown option --workrs (" + typo + ":2); did you mean --workers? (strict is on)");

  const auto array = dir.write("array.toml", "processes = [1, 2]\n");
  CHECK_THAT(error_of({"--toml", array}),
             Contains("--processes (" + array + ":1)") && Contains("not an array"));

  const auto flag = dir.write("flag.toml", "master = \"sometimes\"\n");
  CHECK_THAT(error_of({"--toml", flag}), Contains("--master \"sometimes\" (" + flag + ":1)"));

  const auto nested = dir.write("nested.toml", "[uwsgi]\nsocket = [[\":1\"]]\n");
  CHECK_THAT(error_of({"--toml", nested}),
             Contains("--socket (" + nested + ":2)") && Contains("nested array"));

  const auto element = dir.write("element.toml", "socket = [\n  \":1\",\n  \":0\",\n]\n");
  CHECK_THAT(error_of({"--toml", element}), Contains("--socket \":0\" (" + element + ":3)"));

  CHECK_THAT(error_of({"--toml", bad_value + ":missing"}), Contains("no [missing] table"));
  CHECK_THAT(error_of({"--toml", bad_value + ".gone"}), Contains("cannot open"));
}

// ----------------------------------------------------------------------------------------------
// Ordering across sources

TEST_CASE("sources apply in command-line order: later wins across cli, ini and toml", "[order]") {
  TempDir dir;
  const auto ini = dir.write("a.ini", "[uwsgi]\nprocesses = 3\nsocket = :1\n");
  const auto toml = dir.write("b.toml", "processes = 5\nsocket = \":2\"\n");
  CHECK(parse({"--ini", ini, "-p", "4"}).config.processes == 4);
  CHECK(parse({"-p", "4", "--ini", ini}).config.processes == 3);
  CHECK(parse({"--ini", ini, "--toml", toml}).config.processes == 5);
  CHECK(parse({"--toml", toml, "--ini", ini}).config.processes == 3);
  CHECK(parse({"--toml", toml, "--ini", ini, "--workers=8"}).config.processes == 8);
  const auto config = parse({"--socket", ":0001", "--toml", toml, "--ini", ini, "-s", ":3"}).config;
  CHECK(config.sockets == std::vector<std::string>{":0001", ":2", ":1", ":3"});
}

// ----------------------------------------------------------------------------------------------
// --cache2

TEST_CASE("cache2: every key and alias", "[cache2]") {
  const auto spec = config::parse_cache2_spec(
      "name=sessions,items=1000,blocksize=4k,blocks=2000,hash=murmur2,hashsize=512,keysize=128,"
      "store=/var/cache/s.store,store_sync=5,store_delete=1,purge_lru=1,ignore_full=1,math_initial=-5,"
      "no_expire=1,lazy_expire=1,sweep_on_full=30,clear_on_full=1,lastmod=1,bitmap=1,"
      "node=10.0.0.1:4000;10.0.0.2:4000,udp=:4000,sync=10.0.0.3:3031");
  CHECK(spec.name == "sessions");
  CHECK(spec.items == 1000);
  CHECK(spec.blocksize == 4096);
  CHECK(spec.blocks == 2000);
  CHECK(spec.hash == "murmur2");
  CHECK(spec.hashsize == 512);
  CHECK(spec.keysize == 128);
  CHECK(spec.store == "/var/cache/s.store");
  CHECK(spec.store_sync == 5);
  CHECK(spec.store_delete);
  CHECK(spec.purge_lru);
  CHECK(spec.ignore_full);
  CHECK(spec.math_initial == -5);
  CHECK(spec.no_expire);
  CHECK(spec.lazy_expire);
  CHECK(spec.sweep_on_full == 30);
  CHECK(spec.clear_on_full);
  CHECK(spec.lastmod);
  CHECK(spec.bitmap);
  CHECK(spec.nodes == std::vector<std::string>{"10.0.0.1:4000", "10.0.0.2:4000"});
  CHECK(spec.udp_servers == std::vector<std::string>{":4000"});
  CHECK(spec.sync == std::vector<std::string>{"10.0.0.3:3031"});

  const auto aliased = config::parse_cache2_spec(
      "name=a,max_items=10,hash_size=64,key_size=32,storesync=2,storedelete=x,lru=y,lazy=z,nodes=1.2.3.4:5,"
      "udp_servers=:6");
  CHECK(aliased.items == 10);
  CHECK(aliased.hashsize == 64);
  CHECK(aliased.keysize == 32);
  CHECK(aliased.store_sync == 2);
  CHECK(aliased.store_delete);
  CHECK(aliased.purge_lru);
  CHECK(aliased.lazy_expire);
  CHECK(aliased.nodes == std::vector<std::string>{"1.2.3.4:5"});
  CHECK(aliased.udp_servers == std::vector<std::string>{":6"});
  CHECK(config::parse_cache2_spec("name=b,maxitems=7").items == 7);
  for (const auto alias : {"udp_server", "udpservers", "udpserver"}) {
    CHECK(config::parse_cache2_spec(std::string("name=c,items=1,") + alias + "=:9").udp_servers.size() == 1);
  }
}

TEST_CASE("cache2: defaults, presence booleans, escapes, last occurrence wins", "[cache2]") {
  const auto plain = config::parse_cache2_spec("name=x,items=10");
  CHECK(plain.blocksize == 65536);
  CHECK(plain.keysize == 2048);
  CHECK(plain.hash == "djb33x");
  CHECK(plain.blocks == 0);
  CHECK_FALSE(plain.bitmap);
  CHECK_FALSE(plain.purge_lru);
  // uWSGI semantics: a boolean key enables the feature whatever its value
  const auto zeroes = config::parse_cache2_spec("name=x,items=10,bitmap=0,purge_lru=0,ignore_full=false");
  CHECK(zeroes.bitmap);
  CHECK(zeroes.purge_lru);
  CHECK(zeroes.ignore_full);
  const auto escaped = config::parse_cache2_spec("name=a\\,b,items=3,store=/tmp/x\\=y\\\\z");
  CHECK(escaped.name == "a,b");
  CHECK(escaped.store == "/tmp/x=y\\z");
  CHECK(config::parse_cache2_spec("name=x,items=1,items=2").items == 2);
  CHECK(config::parse_cache2_spec("name=x,items=2,").items == 2);
  CHECK(config::parse_cache2_spec("name=x,items=1k").items == 1024);
  CHECK(config::parse_cache2_spec(" name = x , items = 5 ").items == 5);
}

TEST_CASE("cache2: errors name the spec and the key", "[cache2][errors]") {
  CHECK(cache2_error_of("name=x,itmes=10") ==
        "--cache2 \"name=x,itmes=10\": unknown key \"itmes\" (did you mean \"items\"?)");
  CHECK_THAT(cache2_error_of("name=x,items=1,blocksiez=4"), Contains("did you mean \"blocksize\"?"));
  CHECK_THAT(cache2_error_of("name=x,items=1,max-items=4"), Contains("unknown key \"max-items\""));
  const auto far = cache2_error_of("name=x,items=1,frobnicate=1");
  CHECK_THAT(far, Contains("unknown key \"frobnicate\""));
  CHECK_THAT(far, !Contains("did you mean"));
  CHECK_THAT(cache2_error_of("items=10"), Contains("--cache2 \"items=10\"") && Contains("missing name"));
  CHECK_THAT(cache2_error_of("name=x"), Contains("missing items"));
  CHECK_THAT(cache2_error_of("name=,items=1"), Contains("name \"\""));
  CHECK_THAT(cache2_error_of("name=x,items=0"),
             Contains("items \"0\"") && Contains("between 1 and 4294967295"));
  CHECK_THAT(cache2_error_of("name=x,items=lots"), Contains("items \"lots\""));
  CHECK_THAT(cache2_error_of("name=x,items=1,keysize=70000"),
             Contains("keysize \"70000\"") && Contains("1 and 65535"));
  CHECK_THAT(cache2_error_of("name=x,items=1,hash=rr"),
             Contains("hash \"rr\"") && Contains("djb33x or murmur2"));
  CHECK_THAT(cache2_error_of("name=x,items=1,blocksize=0"), Contains("blocksize \"0\""));
  CHECK_THAT(cache2_error_of("name=x,items=10,blocks=5"), Contains("blocks (5) must be at least items (10)"));
  CHECK_THAT(cache2_error_of("name=x,items=1,bitmap"), Contains("\"bitmap\" is not key=value"));
  CHECK_THAT(cache2_error_of("name=x,items=1\\"), Contains("trailing backslash"));
  CHECK_THAT(cache2_error_of("name=x,items=1,node=10.0.0.1"), Contains("node entry \"10.0.0.1\""));
  CHECK_THAT(cache2_error_of("name=x,items=1,math_initial=1.5"), Contains("math_initial \"1.5\""));
  // through the command line, the source follows the value
  CHECK(error_of({"--cache2", "name=x,itmes=10"}) ==
        "--cache2 \"name=x,itmes=10\" (command line): unknown key \"itmes\" (did you mean \"items\"?)");
}

TEST_CASE("caches: --cache is \"default\" and created first; cache2 inherits --cache-store-sync",
          "[cache2][caches]") {
  const auto config = parse({"--cache2",
                             "name=a,items=5",
                             "--cache",
                             "100",
                             "--cache-blocksize",
                             "8k",
                             "--cache-keysize",
                             "64",
                             "--cache-store",
                             "/tmp/d.store",
                             "--cache-store-delete",
                             "--cache-purge-lru",
                             "--cache-store-sync",
                             "7",
                             "--cache2",
                             "name=b,items=3,store_sync=2",
                             "--cache-use-last-modified",
                             "--cache-udp-node",
                             "10.0.0.9:4000",
                             "--cache-sync",
                             "10.0.0.8:3031"})
                          .config;
  REQUIRE(config.caches.size() == 3);
  const auto& def = config.caches[0];
  CHECK(def.name == "default");
  CHECK(def.items == 100);
  CHECK(def.blocksize == 8192);
  CHECK(def.keysize == 64);
  CHECK(def.store == "/tmp/d.store");
  CHECK(def.store_sync == 7);
  CHECK(def.store_delete);
  CHECK(def.purge_lru);
  CHECK(def.lastmod);
  CHECK(def.nodes == std::vector<std::string>{"10.0.0.9:4000"});
  CHECK(def.sync == std::vector<std::string>{"10.0.0.8:3031"});
  CHECK(config.caches[1].name == "a");
  CHECK(config.caches[1].store_sync == 7);  // inherited
  CHECK(config.caches[2].name == "b");
  CHECK(config.caches[2].store_sync == 2);  // its own
  CHECK(config.cache2_specs.size() == 2);
}

TEST_CASE("caches: --cache-no-expire applies to every cache; no --cache means no default", "[caches]") {
  const auto config = parse({"--cache2", "name=a,items=5", "--cache-no-expire"}).config;
  REQUIRE(config.caches.size() == 1);
  CHECK(config.caches[0].name == "a");
  CHECK(config.caches[0].no_expire);
  CHECK(parse({"--cache-store", "/tmp/x"}).config.caches.empty());
}

TEST_CASE("caches: names must be unique, \"default\" belongs to --cache", "[caches][errors]") {
  CHECK_THAT(error_of({"--cache2", "name=a,items=1", "--cache2", "name=a,items=2"}),
             Contains("--cache2 \"name=a,items=2\" (command line)") &&
                 Contains("the cache name \"a\" is already used by --cache2 \"name=a,items=1\""));
  CHECK_THAT(error_of({"--cache2", "name=default,items=1", "--cache", "5"}),
             Contains("\"default\" is already used by --cache"));
  CHECK(parse({"--cache2", "name=default,items=1"}).config.caches.size() == 1);  // fine without --cache

  TempDir dir;
  const auto ini = dir.write("dup.ini", "[uwsgi]\ncache2 = name=a,items=1\n\ncache2 = name=a,items=9\n");
  CHECK_THAT(error_of({"--ini", ini}), Contains("(" + ini + ":4)") && Contains("(" + ini + ":2)"));
  const auto bad = dir.write("bad.ini", "[uwsgi]\ncache2 = name=a,itmes=1\n");
  CHECK(error_of({"--ini", bad}) ==
        "--cache2 \"name=a,itmes=1\" (" + bad + ":2): unknown key \"itmes\" (did you mean \"items\"?)");
}

TEST_CASE("the same geometry from the command line, ini and toml", "[caches][ini][toml]") {
  TempDir dir;
  const auto ini =
      dir.write("geometry.ini",
                "[uwsgi]\n"
                "cache = 2k\n"
                "cache-blocksize = 16k\n"
                "cache-keysize = 256\n"
                "cache-store = /tmp/geometry.store\n"
                "cache-store-sync = 3\n"
                "cache-purge-lru = true\n"
                "cache2 = name=s,items=500,blocksize=1k,keysize=64,hash=murmur2,bitmap=1,blocks=800\n"
                "cache2 = name=t,items=10,lazy=1,store_sync=9\n");
  const auto toml =
      dir.write("geometry.toml",
                "[uwsgi]\n"
                "cache = \"2k\"\n"
                "cache-blocksize = 16384\n"
                "cache-keysize = 256\n"
                "cache-store = \"/tmp/geometry.store\"\n"
                "cache-store-sync = 3\n"
                "cache-purge-lru = true\n"
                "cache2 = [\n"
                "  \"name=s,items=500,blocksize=1k,keysize=64,hash=murmur2,bitmap=1,blocks=800\",\n"
                "  \"name=t,items=10,lazy=1,store_sync=9\",\n"
                "]\n");
  const auto from_cli =
      parse({"--cache", "2048", "--cache-blocksize", "16k", "--cache-keysize", "256", "--cache-store",
             "/tmp/geometry.store", "--cache-store-sync", "3", "--cache-purge-lru", "--cache2",
             "name=s,items=500,blocksize=1k,keysize=64,hash=murmur2,bitmap=1,blocks=800", "--cache2",
             "name=t,items=10,lazy=1,store_sync=9"})
          .config.caches;
  const auto from_ini = parse({"--ini", ini}).config.caches;
  const auto from_toml = parse({"--toml", toml}).config.caches;
  REQUIRE(from_cli.size() == 3);
  REQUIRE(from_ini.size() == 3);
  REQUIRE(from_toml.size() == 3);
  CHECK(from_cli[0].items == 2048);
  CHECK(from_cli[0].purge_lru);
  CHECK(from_cli[1].store_sync == 3);
  CHECK(from_cli[2].store_sync == 9);
  for (std::size_t i = 0; i < 3; ++i) {
    INFO("cache " << i);
    require_same_cache(from_cli[i], from_ini[i]);
    require_same_cache(from_cli[i], from_toml[i]);
  }
}

// ----------------------------------------------------------------------------------------------
// Generated text

TEST_CASE("help text: every option with its aliases, default and bounds, grouped and aligned", "[help]") {
  const auto help = config::help_text("server");
  CHECK_THAT(help, Contains("Usage: server"));
  for (const auto& row : config::option_table()) {
    INFO(row.name);
    CHECK_THAT(help, Contains("--" + std::string(row.name)));
    CHECK_THAT(help, Contains(std::string(row.group) + ":"));
  }
  CHECK_THAT(help, Contains("-p, --processes, --workers N"));
  CHECK_THAT(help, Contains("(default 1; 1..1024)"));
  CHECK_THAT(help, Contains("(default 64k; 1..1073741824)"));
  CHECK_THAT(help, Contains("(repeatable)"));
  CHECK_THAT(help, Contains("items, max_items, maxitems"));
  // the help column starts at the same place on every option line
  std::istringstream lines(help);
  std::set<std::size_t> columns;
  for (std::string line; std::getline(lines, line);) {
    for (const auto* text : {"number of worker processes", "largest value of the default cache",
                             "print this help and exit", "add a directory to sys.path"}) {
      if (const auto at = line.find(text); at != std::string::npos) columns.insert(at);
    }
  }
  CHECK(columns.size() == 1);
}

TEST_CASE("options reference: a Markdown table per group and the --cache2 keys", "[help]") {
  const auto markdown = config::options_reference_markdown();
  CHECK_THAT(markdown, Contains("# Options reference"));
  CHECK_THAT(markdown, Contains("gen-options-doc"));
  CHECK_THAT(markdown, Contains("## Sockets and processes"));
  CHECK_THAT(markdown, Contains("| `--processes N` | `--workers` `-p` | integer | `1` | 1..1024 |"));
  CHECK_THAT(markdown, Contains("## --cache2 keys"));
  CHECK_THAT(markdown, Contains("| `items` | `max_items` `maxitems` | size |"));
  for (const auto& row : config::option_table()) {
    INFO(row.name);
    CHECK_THAT(markdown, Contains("`--" + std::string(row.name)));
  }
}
