// Unit tests of uWSGI's configuration language (config/ini.cpp): magic variables, placeholders, $(ENV),
// @(file), if/for blocks, comments, bare keys, nested ini, UWSGI_* environment variables, unknown keys
// and the options accepted with a WARNING. Expected values are what uWSGI 2.0.21 prints with
// --show-config for the same files (tests/integration/test_config_sources.py compares the two live).
#include <fmt/format.h>
#include <stdlib.h>
#include <unistd.h>

#include <array>
#include <catch2/catch.hpp>
#include <filesystem>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "tests/unit/config/test_support.hpp"

namespace {

using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;

// Sets an environment variable for one test and restores what was there.
class EnvVar {
 public:
  EnvVar(const char* name, const char* value) : name_(name) {
    if (const char* old = getenv(name)) old_ = old;
    if (value != nullptr) {
      setenv(name, value, 1);
    } else {
      unsetenv(name);
    }
  }
  ~EnvVar() {
    if (old_) {
      setenv(name_.c_str(), old_->c_str(), 1);
    } else {
      unsetenv(name_.c_str());
    }
  }
  EnvVar(const EnvVar&) = delete;
  EnvVar& operator=(const EnvVar&) = delete;

 private:
  std::string name_;
  std::optional<std::string> old_;
};

// The lines of --show-config between "[uwsgi]" and ";end of configuration".
std::vector<std::string> shown(const ParseResult& result) {
  std::vector<std::string> lines;
  std::istringstream text(result.show_config);
  bool inside = false;
  for (std::string line; std::getline(text, line);) {
    if (line == ";end of configuration") break;
    if (inside) lines.push_back(line);
    inside |= line == "[uwsgi]";
  }
  return lines;
}

// The value --show-config gives the first occurrence of key ("<none>" when absent).
std::string shown_value(const ParseResult& result, const std::string& key) {
  for (const auto& line : shown(result)) {
    if (line.starts_with(key + " = ")) return line.substr(key.size() + 3);
  }
  return "<none>";
}

std::string all_warnings(const ParseResult& result) {
  std::string text;
  for (const auto& warning : result.warnings) text += warning + "\n";
  return text;
}

std::string real_dir(const TempDir& dir) { return std::filesystem::canonical(dir.path()).string(); }

}  // namespace

TEST_CASE("ini magic: %d %n %p %c %s %e %o and %%, relative to the file", "[ini][magic]") {
  TempDir dir;
  const auto ini = dir.write("conf/app.ini",
                             "[uwsgi]\n"
                             "d = %d\nn = %n\np = %p\nc = %c\ns = %s\ne = %e\n"
                             "pct = 100%%\nunknown-letter = a%zb\nend-percent = x%\n"
                             "pidfile = %d%n.pid\n");
  const auto result = parse({"--ini", ini, "--show-config"});
  const auto conf = real_dir(dir) + "/conf/";
  CHECK(shown_value(result, "d") == conf);  // with the trailing slash
  CHECK(shown_value(result, "n") == "app");
  CHECK(shown_value(result, "p") == conf + "app.ini");
  CHECK(shown_value(result, "c") == "conf");
  CHECK(shown_value(result, "s") == "app.ini");
  CHECK(shown_value(result, "e") == "ini");
  CHECK(shown_value(result, "pct") == "100%");
  CHECK(shown_value(result, "unknown-letter") == "ab");  // uWSGI: an unknown letter is nothing
  CHECK(shown_value(result, "end-percent") == "x%");     // uWSGI would join the next line; we keep it
  CHECK(result.config.pidfile == conf + "app.pid");
  CHECK(shown(result).front() == "ini = " + ini);
  CHECK(shown(result).back() == "show-config = true");
}

TEST_CASE("ini magic: a symlinked file keeps its own name, %k is the CPU count", "[ini][magic]") {
  TempDir dir;
  const auto target = dir.write("real/app.ini", "[uwsgi]\nn = %n\nk = %k\n");
  const auto link = (dir.path() / "link.ini").string();
  std::filesystem::create_symlink(target, link);
  const auto result = parse({"--ini", link, "--show-config"});
  CHECK(shown_value(result, "n") == "link");
  CHECK(std::stoi(shown_value(result, "k")) >= 1);
}

TEST_CASE("ini placeholders: %(key) of any source, first occurrence, later keys, aliases, maths",
          "[ini][placeholders]") {
  TempDir dir;
  const auto ini = dir.write("app.ini",
                             "[uwsgi]\n"
                             "project = myproj\n"
                             "base = /srv/%(project)\n"
                             "chdir = %(base)/src\n"
                             "pidfile = %(later).pid\n"
                             "later = /run/x\n"
                             "socket = /tmp/a.sock\n"
                             "socket = /tmp/b.sock\n"
                             "first = %(socket)\n"
                             "processes = 2\n"
                             "via-alias = %(workers)\n"
                             "mb = %(2 * 1024 * 1024)\n"
                             "sum = %(processes + 3)\n"
                             "concat = %(processes project)\n"
                             "inc = %(processes ++)\n"
                             "div0 = %(processes / 0)\n");
  const auto result = parse({"--ini", ini, "--show-config"});
  CHECK(result.config.chdir == "/srv/myproj/src");
  CHECK(result.config.pidfile == "/run/x.pid");
  CHECK(shown_value(result, "first") == "/tmp/a.sock");
  CHECK(shown_value(result, "via-alias") == "2");
  CHECK(shown_value(result, "mb") == "2097152");
  CHECK(shown_value(result, "sum") == "5");
  CHECK(shown_value(result, "concat") == "2myproj");
  CHECK(shown_value(result, "inc") == "3");
  CHECK(shown_value(result, "div0") == "0");
  // project, base and later are referenced: no WARNING; first, mb, ... are not.
  const auto warnings = all_warnings(result);
  CHECK_THAT(warnings, !Contains("\"project\"") && !Contains("--project ") && !Contains("--base ") &&
                           !Contains("--later "));
  CHECK_THAT(warnings, Contains("unknown option --first (" + ini + ":9)"));
}

TEST_CASE("ini placeholders: one that names nothing or refers to itself is an error with file:line",
          "[ini][placeholders][errors]") {
  TempDir dir;
  const auto nothing = dir.write("nothing.ini", "[uwsgi]\nproject = x\n\npidfile = /tmp/%(projct).pid\n");
  CHECK(error_of({"--ini", nothing}) ==
        nothing +
            ":4: placeholder %(projct) names nothing: no option or key \"projct\" is set in any "
            "configuration source");
  const auto in_maths = dir.write("maths.ini", "[uwsgi]\nprocesses = %(2 + nope)\n");
  CHECK_THAT(error_of({"--ini", in_maths}), StartsWith(in_maths + ":2: placeholder %(nope) names nothing"));
  const auto loop = dir.write("loop.ini", "[uwsgi]\na = %(b)\nb = x%(a)\nchdir = %(a)\n");
  CHECK_THAT(error_of({"--ini", loop}), Contains("refer back to it"));
  const auto outside_logic = dir.write("underscore.ini", "[uwsgi]\nchdir = %(_)\n");
  CHECK_THAT(error_of({"--ini", outside_logic}), Contains(":2: placeholder %(_) names nothing"));
  // Bounded: maths that overflow, values that double at every level, endless repetitions.
  const auto overflow = dir.write("overflow.ini", "[uwsgi]\nchdir = %(9223372036854775807 + 1)\n");
  CHECK_THAT(error_of({"--ini", overflow}), Contains("overflows a 64-bit integer"));
  std::string doubling = "[uwsgi]\nk0 = 0123456789abcdef\n";
  for (int level = 1; level <= 20; ++level) {
    doubling += fmt::format("k{} = %(k{})%(k{})\n", level, level - 1, level - 1);
  }
  const auto blowup = dir.write("doubling.ini", doubling + "chdir = %(k20)\n");
  CHECK_THAT(error_of({"--ini", blowup}), Contains("expands to more than 1048576 bytes"));
  const auto times = dir.write("times.ini", "[uwsgi]\nfor-times = 2000000000\nx = %(_)\nendfor\n");
  CHECK_THAT(error_of({"--ini", times}), Contains("more than 65536 repetitions"));
  // An unknown key that nothing uses may hold anything.
  const auto unused = dir.write("unused.ini", "[uwsgi]\nlog-format = %(addr) - %(user) %(status)\n");
  CHECK_NOTHROW(parse({"--ini", unused}));
}

TEST_CASE("ini: $(ENV) and @(file)", "[ini][placeholders]") {
  TempDir dir;
  const EnvVar set("INI_TEST_APP", "/opt/app");
  const EnvVar unset("INI_TEST_UNSET", nullptr);
  const auto content = dir.write("backlog.txt", "4096\n\n");
  const auto read_content = "@(" + content + ")";
  const auto ini = dir.write("app.ini",
                             "[uwsgi]\n"
                             "chdir = $(INI_TEST_APP)/src\n"
                             "raw = [" +
                                 read_content +
                                 "]\n"
                                 "shell = sh -c 'echo $(INI_TEST_UNSET)'\n"
                                 "pythonpath = %(shell)\n");
  const auto result = parse({"--ini", ini, "--show-config"});
  CHECK(result.config.chdir == "/opt/app/src");
  CHECK_THAT(result.show_config, Contains("\nraw = [4096\n]\n"));  // one trailing newline stripped, as uWSGI
  // uWSGI keeps an unset $(NAME) as written; so do we, with a WARNING.
  CHECK(result.config.pythonpath == std::vector<std::string>{"sh -c 'echo $(INI_TEST_UNSET)'"});
  CHECK_THAT(all_warnings(result), Contains("$(INI_TEST_UNSET) is not set in the environment"));

  const auto listen_file = dir.write("listen.ini", "[uwsgi]\nlisten = " + read_content + "\n");
  CHECK(parse({"--ini", listen_file}).config.listen_backlog == 4096);
  const auto missing = dir.write("missing.ini", "[uwsgi]\n\nlisten = @(/nonexistent/somaxconn)\n");
  CHECK_THAT(error_of({"--ini", missing}),
             Contains("(" + missing + ":3): @(/nonexistent/somaxconn): cannot read"));
}

TEST_CASE("ini logic: if-env, if-not-env, if-opt, if-exists, if-file, if-dir, else", "[ini][logic]") {
  TempDir dir;
  const EnvVar dev("INI_TEST_DEV", "yes");
  const EnvVar unset("INI_TEST_NOPE", nullptr);
  const auto file = dir.write("exists.txt", "x");
  const auto ini = dir.write("app.ini",
                             "[uwsgi]\n"
                             "if-env = INI_TEST_DEV\n"
                             "processes = 3\n"
                             "env = DEV=%(_)\n"
                             "endif =\n"
                             "if-env = INI_TEST_NOPE\n"
                             "processes = 9\n"
                             "endif\n"
                             "if-env = INI_TEST_DEV=no\n"
                             "harakiri = 9\n"
                             "else\n"
                             "harakiri = 30\n"
                             "endif\n"
                             "if-not-env = INI_TEST_NOPE\n"
                             "socket-timeout = 7\n"
                             "endif\n"
                             "mode = fast\n"
                             "if-opt = mode=fast\n"
                             "pythonpath = /opt/%(_)\n"
                             "endif\n"
                             "if-not-opt = missing-key\n"
                             "threads = 4\n"
                             "end\n"
                             "if-exists = " +
                                 file +
                                 "\n"
                                 "wsgi-file = %(_)\n"
                                 "endif\n"
                                 "if-file = " +
                                 real_dir(dir) +
                                 "\n"
                                 "callable = not-a-file\n"
                                 "endif\n"
                                 "if-dir = " +
                                 real_dir(dir) +
                                 "\n"
                                 "chdir = %(_)\n"
                                 "endif\n"
                                 "if-not-file = " +
                                 real_dir(dir) +
                                 "\n"
                                 "module = app.wsgi\n"
                                 "endif\n");
  const auto config = parse({"--ini", ini}).config;
  CHECK(config.processes == 3);
  CHECK(config.env == std::vector<std::string>{"DEV=yes"});
  CHECK(config.harakiri == 30);
  CHECK(config.socket_timeout == 7);
  CHECK(config.pythonpath == std::vector<std::string>{"/opt/fast"});
  CHECK(config.threads == 4);
  CHECK(config.wsgi_file == file);
  CHECK(config.callable == "application");
  CHECK(config.chdir == real_dir(dir));
  CHECK(config.module == "app.wsgi");
}

TEST_CASE("ini logic: for, for-times, for-readline repeat each line with %(_)", "[ini][logic]") {
  TempDir dir;
  const auto lines = dir.write("paths.txt", "/a\n/b\r\n");
  const auto ini = dir.write("app.ini",
                             "[uwsgi]\n"
                             "for = one two  three\n"
                             "socket = /tmp/%(_).sock\n"
                             "env = N_%(_)=1\n"
                             "endfor =\n"
                             "for-times = 2\n"
                             "pythonpath = /lib%(_)\n"
                             "endfor\n"
                             "for-readline = " +
                                 lines +
                                 "\n"
                                 "pythonpath = %(_)\n"
                                 "end-for\n");
  const auto config = parse({"--ini", ini}).config;
  // Each line repeats for every word before the next line (uWSGI's order).
  CHECK(config.sockets == std::vector<std::string>{"/tmp/one.sock", "/tmp/two.sock", "/tmp/three.sock"});
  CHECK(config.env == std::vector<std::string>{"N_one=1", "N_two=1", "N_three=1"});
  CHECK(config.pythonpath == std::vector<std::string>{"/lib1", "/lib2", "/a", "/b"});
}

TEST_CASE("ini logic: for-glob, if-not-exists, if-not-dir, if-hostname", "[ini][logic]") {
  TempDir dir;
  dir.write("apps/a.ini", "");
  dir.write("apps/b.ini", "");
  std::array<char, 256> host{};
  REQUIRE(gethostname(host.data(), host.size() - 1) == 0);
  const auto base = real_dir(dir);
  const auto ini = dir.write("app.ini",
                             "[uwsgi]\n"
                             "for-glob = " +
                                 base +
                                 "/apps/*.ini\n"
                                 "pythonpath = %(_)\n"
                                 "endfor\n"
                                 "if-not-exists = " +
                                 base +
                                 "/nothing-here\n"
                                 "env = MISSING=%(_)\n"
                                 "endif\n"
                                 "if-not-dir = " +
                                 base +
                                 "/apps\n"
                                 "env = NEVER=1\n"
                                 "endif\n"
                                 "if-hostname = " +
                                 std::string(host.data()) +
                                 "\n"
                                 "callable = on_this_host\n"
                                 "endif\n"
                                 "if-not-hostname = " +
                                 std::string(host.data()) +
                                 "\n"
                                 "module = elsewhere\n"
                                 "endif\n");
  const auto config = parse({"--ini", ini}).config;
  CHECK(config.pythonpath == std::vector<std::string>{base + "/apps/a.ini", base + "/apps/b.ini"});
  CHECK(config.env == std::vector<std::string>{"MISSING=" + base + "/nothing-here"});
  CHECK(config.callable == "on_this_host");
  CHECK(config.module.empty());
}

TEST_CASE("ini logic: blocks do not nest; unreadable for-readline is an error", "[ini][logic][errors]") {
  TempDir dir;
  const auto nested = dir.write("nested.ini", "[uwsgi]\nif-env = PATH\nif-env = HOME\nendif\n");
  CHECK_THAT(error_of({"--ini", nested}),
             Contains("if-env (" + nested + ":3): if/for blocks do not nest") && Contains(nested + ":2"));
  const auto readline =
      dir.write("readline.ini", "[uwsgi]\nfor-readline = /nonexistent/list\nx = %(_)\nendfor\n");
  CHECK_THAT(error_of({"--ini", readline}), Contains("cannot read /nonexistent/list"));
  // A file read into a value or a list is bounded: /dev/zero is an error, not a hang.
  const auto endless = dir.write("endless.ini", "[uwsgi]\nfor-readline = /dev/zero\nx = %(_)\nendfor\n");
  CHECK_THAT(error_of({"--ini", endless}), Contains("/dev/zero is larger than 1048576 bytes"));
  const auto endless_value = dir.write("endless-value.ini", "[uwsgi]\nlisten = @(/dev/zero)\n");
  CHECK_THAT(error_of({"--ini", endless_value}),
             Contains("listen (" + endless_value + ":2): @(/dev/zero): /dev/zero is larger than"));
}

TEST_CASE("ini comments: only whole lines; numbers and flags ignore an inline comment", "[ini][comments]") {
  TempDir dir;
  const auto ini = dir.write("app.ini",
                             "[uwsgi]\n"
                             "  # an indented comment\n"
                             "\t; another\n"
                             "workers = 64  # note\n"
                             "harakiri = 30 ; seconds\n"
                             "lazy-apps = true  ; note\n"
                             "master = false # off\n"
                             "pidfile = /tmp/x.pid # stays\n"
                             "buffer-size = 32k\t# size\n");
  const auto config = parse({"--ini", ini}).config;
  CHECK(config.processes == 64);  // uWSGI's atoi reads the leading number too
  CHECK(config.harakiri == 30);
  CHECK(config.lazy_apps);
  CHECK_FALSE(config.master);                     // uWSGI: any text but false/0/no/off is true
  CHECK(config.pidfile == "/tmp/x.pid # stays");  // text after a string value belongs to it (uWSGI)
  CHECK(config.buffer_size == 32 * 1024);
  const auto garbage = dir.write("garbage.ini", "[uwsgi]\nworkers = 4abc\n");
  CHECK_THAT(error_of({"--ini", garbage}), Contains("--processes \"4abc\""));
}

TEST_CASE("ini: a bare key or an empty value turns a flag on", "[ini]") {
  TempDir dir;
  const auto ini = dir.write("app.ini", "[uwsgi]\nlazy-apps\nlog-debug =\nmaster\n");
  const auto config = parse({"--ini", ini, "--master=false"}).config;
  CHECK(config.lazy_apps);
  CHECK(config.debug_log);
  CHECK_FALSE(config.master);  // the command line came later
}

TEST_CASE("ini inside ini: %d of the inner file, ini = :section, a positional file", "[ini][include]") {
  TempDir dir;
  dir.write("conf/inner/base.ini", "[uwsgi]\nchdir = %d\nprocesses = 2\n[prod]\nprocesses = 8\n");
  const auto outer = dir.write("conf/app.ini",
                               "[uwsgi]\n"
                               "ini = %dinner/base.ini\n"
                               "pidfile = %d%n.pid\n"
                               "[extra]\n"
                               "harakiri = 12\n");
  const auto config = parse({"--ini", outer}).config;
  CHECK(config.chdir == real_dir(dir) + "/conf/inner/");
  CHECK(config.pidfile == real_dir(dir) + "/conf/app.pid");  // %d is the outer file's again
  CHECK(config.processes == 2);

  const auto sections = dir.write("conf/sections.ini", "[uwsgi]\nini = :prod\n[prod]\nprocesses = 6\n");
  CHECK(parse({"--ini", sections}).config.processes == 6);
  CHECK(parse({outer}).config.processes == 2);  // `server app.ini`
  CHECK(parse({"--ini", outer + ":extra"}).config.harakiri == 12);
}

TEST_CASE("environment: UWSGI_* variables are options read before the command line", "[env]") {
  TempDir dir;
  const auto ini = dir.write("env.ini", "[uwsgi]\nprocesses = 5\n");
  const auto uses_project = dir.write("project.ini", "[uwsgi]\npidfile = /tmp/%(project).pid\n");
  SECTION("UWSGI_PROCESSES, UWSGI_SOCKET, UWSGI_PYTHON_PATH; later sources win, lists accumulate") {
    const EnvVar processes("UWSGI_PROCESSES", "4");
    const EnvVar socket("UWSGI_SOCKET", "/tmp/env.sock");
    const EnvVar pythonpath("UWSGI_PYTHONPATH", "/env/lib");
    const EnvVar master("UWSGI_MASTER", "");
    CHECK(parse({}).config.processes == 4);
    const auto config = parse({"--socket", ":3031", "--processes", "2"}).config;
    CHECK(config.processes == 2);
    CHECK(config.sockets == std::vector<std::string>{"/tmp/env.sock", ":3031"});
    CHECK(config.pythonpath == std::vector<std::string>{"/env/lib"});
    CHECK(parse({"--ini", ini, "--pidfile", "/x"}).config.processes == 5);
  }
  SECTION("an unknown UWSGI_ variable is a placeholder; uWSGI's own variables are not options") {
    const EnvVar project("UWSGI_PROJECT", "envproj");
    const EnvVar reloads("UWSGI_RELOADS", "3");
    const auto result = parse({"--ini", uses_project});
    CHECK(result.config.pidfile == "/tmp/envproj.pid");
    CHECK(result.warnings.empty());
  }
  SECTION("UWSGI_INI loads a file; a bad value names the variable") {
    const EnvVar file("UWSGI_INI", ini.c_str());
    const EnvVar project("UWSGI_PROJECT", "p");
    CHECK(parse({}).config.processes == 5);
    const EnvVar bad("UWSGI_HARAKIRI", "soon");
    CHECK_THAT(error_of({}), Contains("--harakiri \"soon\" (environment UWSGI_HARAKIRI)"));
  }
  SECTION("an unknown variable nobody uses gets a WARNING like an unknown key") {
    const EnvVar typo("UWSGI_PROCESES", "4");
    CHECK_THAT(all_warnings(parse({})),
               Contains("unknown option --proceses (environment UWSGI_PROCESES); did you mean --processes?"));
  }
}

TEST_CASE("unknown keys: a WARNING with 'did you mean' unless used; strict makes them errors", "[unknown]") {
  TempDir dir;
  const auto ini = dir.write("app.ini",
                             "[uwsgi]\n"
                             "project = demo\n"
                             "hunder-lock = true\n"
                             "pidfile = /tmp/%(project).pid\n");
  const auto result = parse({"--ini", ini});
  CHECK(result.config.pidfile == "/tmp/demo.pid");
  REQUIRE(result.warnings.size() == 1);  // project is used as a placeholder
  CHECK(result.warnings[0] == "unknown option --hunder-lock (" + ini +
                                  ":3); did you mean --thunder-lock?; ignored (uWSGI ignores it silently; "
                                  "strict makes it an error)");

  const auto strict = dir.write("strict.ini", "[uwsgi]\nhunder-lock = true\nstrict = true\n");
  CHECK(error_of({"--ini", strict}) ==
        "unknown option --hunder-lock (" + strict + ":2); did you mean --thunder-lock? (strict is on)");
  const auto declared = dir.write(
      "declared.ini", "[uwsgi]\nstrict\nset-placeholder = project=demo\npidfile = /run/%(project).pid\n");
  CHECK(parse({"--ini", declared}).config.pidfile == "/run/demo.pid");
  // Even a used key is an error with strict, as in uWSGI.
  const auto used = dir.write("used.ini", "[uwsgi]\nstrict = 1\nproject = x\nchdir = %(project)\n");
  CHECK_THAT(error_of({"--ini", used}), Contains("unknown option --project"));
  // The command line stays strict.
  CHECK_THAT(error_of({"--vaccum"}), Contains("unknown option --vaccum (command line)"));

  const auto toml = dir.write("app.toml", "project = \"t\"\nchdir = \"%d%(project)\"\ntypo-key = 1\n");
  const auto from_toml = parse({"--toml", toml});
  CHECK(from_toml.config.chdir == real_dir(dir) + "/t");
  CHECK_THAT(all_warnings(from_toml), Contains("unknown option --typo-key (" + toml + ":3)"));
}

TEST_CASE("accepted options: one WARNING each saying why; unknown plugins are errors", "[accepted]") {
  TempDir dir;
  const auto ini = dir.write("app.ini",
                             "[uwsgi]\n"
                             "thunder-lock = true\n"
                             "thunder-lock = true\n"
                             "enable-threads\n"
                             "single-interpreter = 1\n"
                             "die-on-term = false\n"
                             "plugins = python3,http\n"
                             "plugin = python312\n"
                             "plugin = cache\n");
  const auto result = parse({"--ini", ini, "-i"});
  const auto warnings = all_warnings(result);
  CHECK(result.warnings.size() == 4);  // thunder-lock once, enable-threads, single-interpreter, plugins
  CHECK_THAT(warnings, Contains("--thunder-lock (" + ini + ":2) has no effect here: workers wait"));
  CHECK_THAT(warnings, Contains("--enable-threads (" + ini + ":4) has no effect here"));
  CHECK_THAT(warnings, Contains("--plugins (" + ini + ":7) has no effect here"));
  CHECK_THAT(warnings, !Contains("die-on-term"));  // false asks for nothing

  const auto unknown = dir.write("plugin.ini", "[uwsgi]\nplugins = python3,router_basicauth\n");
  CHECK_THAT(error_of({"--ini", unknown}), Contains("--plugins \"python3,router_basicauth\" (" + unknown +
                                                    ":2): plugin \"router_basicauth\""));
  CHECK_THAT(error_of({"--thunder-lock=maybe"}), Contains("expected true/false"));
}

TEST_CASE("--show-config: uWSGI's form, keys as written, flags without a value as true", "[show-config]") {
  TempDir dir;
  const auto ini = dir.write("app.ini", "[uwsgi]\nworkers = 2\nmaster\nfor = a b\nx = %(_)\nendfor\n");
  const auto result = parse({"--ini", ini, "--lazy-apps", "-p", "3", "--show-config"});
  CHECK_THAT(result.show_config, StartsWith("\n;uWSGI instance configuration\n[uwsgi]\n"));
  CHECK(shown(result) == std::vector<std::string>{"ini = " + ini, "workers = 2", "master = ", "for = a b",
                                                  "x = a", "x = b", "endfor = ", "lazy-apps = true",
                                                  "processes = 3", "show-config = true"});
  CHECK(parse({"--ini", ini}).show_config.empty());
}
