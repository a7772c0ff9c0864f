// uWSGI's configuration language, private to config/: the ini reader, the magic variables of a config
// file (%d, %n, ...), placeholders (%(name), $(ENV), @(file)), if-*/for blocks and the options taken
// from UWSGI_* environment variables. The Parser in options.cpp feeds every key/value of every source
// through a Collector, in source order, and applies what it keeps once all sources are read (as uWSGI
// expands placeholders only after reading every source).
#pragma once

#include <cstddef>
#include <functional>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "config/config.hpp"

namespace config::detail {

enum class Origin { environment, command_line, file };

// One key/value as a source gave it (uWSGI's "exported option").
struct Setting {
  std::string key;                   // as written: "workers", "project", "if-env"
  std::optional<std::string> value;  // nullopt: a command-line flag given without a value
  std::string source;                // "app.ini:4", "command line", "environment (UWSGI_PROCESSES)"
  Origin origin = Origin::file;
  const OptionSpec* row = nullptr;  // nullptr: not an option (a placeholder, or a typo)
  bool referenced = false;          // named by a placeholder or an if-opt
  bool declared = false;            // by --set-placeholder: never an unknown key
};

// text with the magic variables of the config file at path substituted, as uWSGI does to the whole
// file before parsing it (%d, %n, %p, ...; upper case: the first config file, top_path).
std::string substitute_file_magic(std::string_view text, const std::string& path,
                                  const std::string& top_path);

struct IniEntry {
  std::string key;
  std::string value;  // "" for a bare key ("master" on its own line)
  int line = 0;
};
struct IniSection {
  std::vector<IniEntry> entries;
  bool found = false;
};
// The key/value lines of one section, by uWSGI's rules (see ini.cpp). Throws ConfigError for a header
// without its closing bracket.
IniSection read_ini_section(std::string_view text, std::string_view section, const std::string& path);

// The UWSGI_* variables of an environment as (option name, value): UWSGI_PYTHON_PATH=x -> python-path, x.
std::vector<std::pair<std::string, std::string>> environment_options(const char* const* environment);

// The text a flag or a number is read from: trimmed, an inline comment ("64  # note") dropped.
std::string_view typed_value_text(std::string_view value);

// The keys the Collector handles itself: if-*, for*, else, endif, endfor, end.
bool is_logic_key(std::string_view key);

class Collector {
 public:
  enum class Logic {
    none,
    if_env,
    if_not_env,
    if_opt,
    if_not_opt,
    if_exists,
    if_not_exists,
    if_file,
    if_not_file,
    if_dir,
    if_not_dir,
    if_hostname,
    if_not_hostname,
    for_words,
    for_glob,
    for_readline,
    for_times,
    otherwise
  };

  using RowFinder = std::function<const OptionSpec*(std::string_view name)>;
  // Called for every setting kept, with its index in settings(): ini, toml and help act at once.
  using OnAdded = std::function<void(std::size_t index)>;

  Collector(RowFinder find_row, OnAdded on_added);

  // uWSGI's add_exported_option: an open if/for block decides what is kept and substitutes %(_).
  void add(Setting setting);

  const std::vector<Setting>& settings() const { return settings_; }

  // settings()[index]'s value with $(ENV), @(file) and %(placeholder) expanded ("true" for a
  // command-line flag without a value). Throws ConfigError naming the source.
  std::string expanded_value(std::size_t index);
  // Any text from that source, for that option (an immediate value such as `ini = %(base).ini`).
  std::string expand(std::string_view text, const std::string& source, std::string_view option);

  std::vector<std::string>& warnings() { return warnings_; }

  // The resolved configuration in uWSGI's --show-config form.
  std::string show_config();

 private:
  void keep(Setting setting);
  void run_logic(const Setting& setting);
  std::optional<std::size_t> find_setting(std::string_view name) const;
  std::string placeholder(std::string_view name, const std::string& source);
  std::string lookup(std::string_view name, const std::string& source);

  RowFinder find_row_;
  OnAdded on_added_;
  std::vector<Setting> settings_;
  std::vector<std::optional<std::string>> expanded_;  // parallel to settings_
  std::set<std::size_t> expanding_;                   // to catch a placeholder naming itself
  std::vector<std::string> warnings_;
  std::set<std::string, std::less<>> warned_env_;
  Logic logic_ = Logic::none;
  std::string logic_key_;
  std::string logic_arg_;
  std::string logic_source_;
  bool logic_failed_ = false;  // the last if failed (for else)
};

}  // namespace config::detail
