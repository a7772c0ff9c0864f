// uWSGI's configuration language (see ini.hpp). Facts from uWSGI 2.0.21 (core/ini.c, core/config.c,
// core/utils.c, core/uwsgi.c), checked against the real binary with --show-config; where we differ on
// purpose, docs/differences.md says so.
#include "config/ini.hpp"

#include <fmt/format.h>
#include <glob.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>
#include <thread>

namespace config::detail {
namespace {

constexpr std::string_view kBlanks = " \t\r";

std::string_view strip(std::string_view text) {
  const auto first = text.find_first_not_of(kBlanks);
  if (first == std::string_view::npos) return {};
  return text.substr(first, text.find_last_not_of(kBlanks) - first + 1);
}

// Options whose values are templates with their own %(name) syntax, expanded per request: an unknown
// placeholder there stays as written (uWSGI leaves every unknown placeholder as written).
bool is_template_option(std::string_view option) { return option == "log-format" || option == "logformat"; }

std::string replace_all(std::string text, std::string_view what, std::string_view with) {
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + with.size())) {
    text.replace(at, what.size(), with);
  }
  return text;
}

// A file read into a value or a for-readline list, or an expanded value: more is a mistake (/dev/zero
// would never end; placeholders naming each other twice per level double at every level).
constexpr std::size_t kMaxReadBytes = std::size_t{1} << 20;
constexpr int kMaxRepeats = 65536;  // for-times

// The whole content of a file; a ConfigError starting with context when it cannot be read or is too big.
std::string read_file(const std::string& path, std::string_view context) {
  std::ifstream file(path, std::ios::binary);
  if (!file) throw ConfigError(fmt::format("{}: cannot read {}: {}", context, path, std::strerror(errno)));
  std::string content(kMaxReadBytes + 1, '\0');
  file.read(content.data(), static_cast<std::streamsize>(content.size()));
  content.resize(static_cast<std::size_t>(file.gcount()));
  if (content.size() > kMaxReadBytes) {
    throw ConfigError(fmt::format("{}: {} is larger than {} bytes", context, path, kMaxReadBytes));
  }
  return content;
}

// uWSGI's magic table entries of one file: o p s d c e n (lower case, upper case for the first file).
void fill_file_magic(std::array<std::string, 256>& table, const std::string& path, bool upper) {
  const auto set = [&](char letter, std::string value) {
    const auto index = static_cast<unsigned char>(upper ? static_cast<char>(std::toupper(letter)) : letter);
    table[index] = std::move(value);
  };
  set('o', path);
  // The full path: resolved, except that a symlink keeps its own name (so %n is the link's name).
  std::string full = path;
  struct stat link_stat {};
  if (lstat(path.c_str(), &link_stat) == 0 && S_ISLNK(link_stat.st_mode)) {
    if (!path.starts_with("/")) {
      std::array<char, PATH_MAX> cwd{};
      if (getcwd(cwd.data(), cwd.size()) != nullptr) full = std::string(cwd.data()) + "/" + path;
    }
  } else if (char* resolved = realpath(path.c_str(), nullptr)) {
    full = resolved;
    free(resolved);
  }
  set('p', full);
  if (struct stat file_stat{}; stat(path.c_str(), &file_stat) == 0)
    set('i', std::to_string(file_stat.st_ino));
  const auto slash = full.rfind('/');
  const auto name = slash == std::string::npos ? full : full.substr(slash + 1);
  const auto dir = slash == std::string::npos ? std::string() : full.substr(0, slash + 1);
  set('s', name);
  set('d', dir);
  if (dir.size() > 1) {
    const auto without_slash = dir.substr(0, dir.size() - 1);
    set('c', without_slash.substr(without_slash.rfind('/') + 1));
  }
  if (const auto dot = path.rfind('.'); dot != std::string::npos) set('e', path.substr(dot + 1));
  if (const auto dot = name.rfind('.'); dot != std::string::npos) set('n', name.substr(0, dot));
  if (!upper) {  // %0 .. %9: the components of the directory
    std::istringstream parts(dir);
    std::string part;
    char digit = '0';
    while (digit <= '9' && std::getline(parts, part, '/')) {
      if (!part.empty()) table[static_cast<unsigned char>(digit++)] = part;
    }
  }
}

std::string user_name(uid_t uid) {
  const passwd* entry = getpwuid(uid);
  return entry != nullptr ? entry->pw_name : std::to_string(uid);
}

std::string group_name(gid_t gid) {
  const group* entry = getgrgid(gid);
  return entry != nullptr ? entry->gr_name : std::to_string(gid);
}

// Replaces every SYMBOL(name) in text (nested parentheses belong to the name) by resolve(name);
// nullopt from resolve keeps the text as written.
template <typename Resolve>
std::string replace_tokens(std::string_view text, char symbol, const Resolve& resolve,
                           std::string_view context) {
  std::string out;
  std::size_t i = 0;
  while (i < text.size()) {
    if (out.size() > kMaxReadBytes) {
      throw ConfigError(fmt::format("{}: the value expands to more than {} bytes", context, kMaxReadBytes));
    }
    if (text[i] != symbol || i + 1 >= text.size() || text[i + 1] != '(') {
      out += text[i++];
      continue;
    }
    std::size_t depth = 0, end = i + 2;
    for (; end < text.size(); ++end) {
      if (text[end] == '(') ++depth;
      if (text[end] == ')' && depth-- == 0) break;
    }
    if (end >= text.size()) {  // no closing parenthesis: plain text, as uWSGI leaves it
      out += text.substr(i);
      break;
    }
    const auto name = text.substr(i + 2, end - i - 2);
    if (const auto value = resolve(name)) {
      out += *value;
    } else {
      out += text.substr(i, end - i + 1);
    }
    i = end + 1;
  }
  if (out.size() > kMaxReadBytes) {
    throw ConfigError(fmt::format("{}: the value expands to more than {} bytes", context, kMaxReadBytes));
  }
  return out;
}

bool is_digits(std::string_view text) {
  return !text.empty() && text.find_first_not_of("0123456789") == std::string_view::npos;
}

}  // namespace

std::string substitute_file_magic(std::string_view text, const std::string& path,
                                  const std::string& top_path) {
  std::array<std::string, 256> table;  // an unknown letter gives "", as in uWSGI
  table['%'].assign(1, '%');  // not = "%": GCC 12 at -O3 sees a false -Wrestrict overlap in that copy
  table['('] = "%(";
  fill_file_magic(table, path, false);
  fill_file_magic(table, top_path, true);
  table['k'] = std::to_string(std::max(1U, std::thread::hardware_concurrency()));
  std::array<char, 256> host{};
  if (gethostname(host.data(), host.size() - 1) == 0) table['h'] = host.data();
  std::array<char, PATH_MAX> cwd{};
  if (getcwd(cwd.data(), cwd.size()) != nullptr) table['v'] = cwd.data();
  std::array<char, PATH_MAX> binary{};
  if (readlink("/proc/self/exe", binary.data(), binary.size() - 1) > 0) table['b'] = binary.data();
  table['u'] = std::to_string(getuid());
  table['U'] = user_name(getuid());
  table['g'] = std::to_string(getgid());
  table['G'] = group_name(getgid());
  // The start time, as uWSGI sets them once: every file (and every reload of one) sees the same.
  static const auto start = std::chrono::system_clock::now().time_since_epoch();
  table['t'] = std::to_string(std::chrono::duration_cast<std::chrono::seconds>(start).count());
  table['T'] = std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(start).count());

  std::string out;
  out.reserve(text.size());
  for (std::size_t i = 0; i < text.size(); ++i) {
    // uWSGI also swallows a '%' ending a line together with the newline (joining two lines): we keep both.
    if (text[i] == '%' && i + 1 < text.size() && text[i + 1] != '\n') {
      out += table[static_cast<unsigned char>(text[++i])];
    } else {
      out += text[i];
    }
  }
  return out;
}

// uWSGI's ini rules: lines are stripped of blanks; "[name]" starts a section; a line starting with ';'
// or '#' is a comment (nothing else is: text after a value belongs to it); "key = value" splits at the
// first '='; a bare key has the value "".
IniSection read_ini_section(std::string_view text, std::string_view section, const std::string& path) {
  IniSection result;
  std::string_view current;
  bool in_wanted = false;
  int line_number = 0;
  std::size_t pos = 0;
  while (pos < text.size()) {
    const auto newline = std::min(text.find('\n', pos), text.size());
    const auto line = strip(text.substr(pos, newline - pos));
    pos = newline + 1;
    ++line_number;
    if (line.empty() || line.front() == ';' || line.front() == '#') continue;
    if (line.front() == '[') {
      if (line.back() != ']') {
        throw ConfigError(
            fmt::format("{}:{}: expected a section header [name], got \"{}\"", path, line_number, line));
      }
      current = strip(line.substr(1, line.size() - 2));
      in_wanted = current == section;
      result.found |= in_wanted;
      continue;
    }
    if (!in_wanted) continue;
    const auto equals = line.find('=');
    const auto key = strip(line.substr(0, equals));
    const auto value = equals == std::string_view::npos ? std::string_view() : strip(line.substr(equals + 1));
    result.entries.push_back({std::string(key), std::string(value), line_number});
  }
  return result;
}

std::vector<std::pair<std::string, std::string>> environment_options(const char* const* environment) {
  // Set by uWSGI for its own children, never options (uWSGI's parse_sys_envs skips the same).
  static constexpr std::array<std::string_view, 8> kNotOptions = {
      "RELOADS",           "VASSALS_DIR",   "EMPEROR_FD", "BROODLORD_NUM",
      "EMPEROR_FD_CONFIG", "EMPEROR_PROXY", "JAIL_PID",   "ORIGINAL_PROC_NAME"};
  std::vector<std::pair<std::string, std::string>> options;
  for (auto entry = environment; entry != nullptr && *entry != nullptr; ++entry) {
    const std::string_view variable = *entry;
    const auto equals = variable.find('=');
    if (!variable.starts_with("UWSGI_") || equals == std::string_view::npos) continue;
    const auto name = variable.substr(6, equals - 6);
    if (name.empty() || std::find(kNotOptions.begin(), kNotOptions.end(), name) != kNotOptions.end())
      continue;
    std::string option;
    for (const char c : name) option += c == '_' ? '-' : static_cast<char>(std::tolower(c));
    options.emplace_back(std::move(option), std::string(variable.substr(equals + 1)));
  }
  return options;
}

std::string_view typed_value_text(std::string_view value) {
  for (std::size_t i = 1; i < value.size(); ++i) {
    if ((value[i] == '#' || value[i] == ';') && (value[i - 1] == ' ' || value[i - 1] == '\t')) {
      value = value.substr(0, i);
      break;
    }
  }
  return strip(value);
}

namespace {

// Every logic key with the block it opens; the closers open none.
using Logic = Collector::Logic;
constexpr std::array<std::pair<std::string_view, Logic>, 22> kLogicKeys = {{
    {"if-env", Logic::if_env},
    {"if-not-env", Logic::if_not_env},
    {"if-opt", Logic::if_opt},
    {"if-not-opt", Logic::if_not_opt},
    {"if-exists", Logic::if_exists},
    {"if-not-exists", Logic::if_not_exists},
    {"if-file", Logic::if_file},
    {"if-not-file", Logic::if_not_file},
    {"if-dir", Logic::if_dir},
    {"if-not-dir", Logic::if_not_dir},
    {"if-hostname", Logic::if_hostname},
    {"if-not-hostname", Logic::if_not_hostname},
    {"for", Logic::for_words},
    {"for-glob", Logic::for_glob},
    {"for-readline", Logic::for_readline},
    {"for-times", Logic::for_times},
    {"else", Logic::otherwise},
    {"endif", Logic::none},
    {"end-if", Logic::none},
    {"endfor", Logic::none},
    {"end-for", Logic::none},
    {"end", Logic::none},
}};

std::optional<Logic> logic_kind(std::string_view key) {
  for (const auto& [name, kind] : kLogicKeys) {
    if (name == key) return kind;
  }
  return std::nullopt;
}

}  // namespace

bool is_logic_key(std::string_view key) { return logic_kind(key).has_value(); }

Collector::Collector(RowFinder find_row, OnAdded on_added)
    : find_row_(std::move(find_row)), on_added_(std::move(on_added)) {}

void Collector::add(Setting setting) {
  const auto kind = logic_kind(setting.key);
  if (kind == Logic::none) {  // endif, endfor, end: closes the block
    logic_ = Logic::none;
    logic_failed_ = false;
    keep(std::move(setting));
    return;
  }
  if (kind == Logic::otherwise) logic_ = Logic::none;  // else: closes the if, keeps logic_failed_
  if (kind && logic_ != Logic::none) {
    throw ConfigError(fmt::format(
        "{} ({}): if/for blocks do not nest; close the block opened by {} ({}) first with endif/endfor",
        setting.key, setting.source, logic_key_, logic_source_));
  }
  if (logic_ != Logic::none) {
    run_logic(setting);
    return;
  }
  if (kind) {
    logic_ = *kind;
    logic_key_ = setting.key;
    logic_arg_ = setting.value.value_or("");
    logic_source_ = setting.source;
  }
  keep(std::move(setting));
}

void Collector::keep(Setting setting) {
  settings_.push_back(std::move(setting));
  expanded_.emplace_back();
  on_added_(settings_.size() - 1);
}

std::optional<std::size_t> Collector::find_setting(std::string_view name) const {
  for (std::size_t i = 0; i < settings_.size(); ++i) {
    if (settings_[i].key == name) return i;
  }
  // An alias names the same option: %(workers) finds "processes = 4".
  if (const auto* row = find_row_(name)) {
    for (std::size_t i = 0; i < settings_.size(); ++i) {
      if (settings_[i].row == row) return i;
    }
  }
  return std::nullopt;
}

void Collector::run_logic(const Setting& setting) {
  // Keeps setting with %(_) replaced by data (uWSGI leaves %(_) when there is no data).
  const auto keep_with = [&](const std::optional<std::string>& data) {
    Setting copy = setting;
    if (data && copy.value) copy.value = replace_all(*copy.value, "%(_)", *data);
    keep(std::move(copy));
  };
  // The condition of an if: kept or not, and what %(_) stands for.
  const auto decide = [&](bool holds, const std::optional<std::string>& data) {
    logic_failed_ = !holds;
    if (holds) keep_with(data);
  };
  // NAME or NAME=VALUE against a value that may be absent.
  const auto matches = [&](const char* found, bool negate) {
    const auto equals = logic_arg_.find('=');
    const bool present = found != nullptr;
    const bool equal = present && (equals == std::string::npos || logic_arg_.substr(equals + 1) == found);
    const std::optional<std::string> data = present ? std::optional<std::string>(found) : std::nullopt;
    decide(negate ? !equal : equal, data);
  };
  const auto name_part = logic_arg_.substr(0, logic_arg_.find('='));
  struct stat info {};
  const bool exists = stat(logic_arg_.c_str(), &info) == 0;
  switch (logic_) {
    case Logic::if_env:
    case Logic::if_not_env:
      matches(getenv(name_part.c_str()), logic_ == Logic::if_not_env);
      return;
    case Logic::if_opt:
    case Logic::if_not_opt: {
      const auto index = find_setting(name_part);
      if (index) settings_[*index].referenced = true;
      const std::string raw = index ? settings_[*index].value.value_or("true") : std::string();
      matches(index ? raw.c_str() : nullptr, logic_ == Logic::if_not_opt);
      return;
    }
    case Logic::if_exists:
      decide(access(logic_arg_.c_str(), R_OK) == 0, logic_arg_);
      return;
    case Logic::if_not_exists:
      decide(access(logic_arg_.c_str(), R_OK) != 0, logic_arg_);
      return;
    case Logic::if_file:
      decide(exists && S_ISREG(info.st_mode), logic_arg_);
      return;
    case Logic::if_not_file:
      decide(!(exists && S_ISREG(info.st_mode)), logic_arg_);
      return;
    case Logic::if_dir:
      decide(exists && S_ISDIR(info.st_mode), logic_arg_);
      return;
    case Logic::if_not_dir:
      decide(!(exists && S_ISDIR(info.st_mode)), logic_arg_);
      return;
    case Logic::if_hostname:
    case Logic::if_not_hostname: {
      std::array<char, 256> host{};
      gethostname(host.data(), host.size() - 1);
      decide((logic_arg_ == host.data()) == (logic_ == Logic::if_hostname), logic_arg_);
      return;
    }
    case Logic::otherwise:
      if (logic_failed_) keep(setting);
      return;
    case Logic::for_words: {
      std::istringstream words(logic_arg_);
      std::string word;
      while (words >> word) keep_with(word);
      return;
    }
    case Logic::for_glob: {
      glob_t matches_found{};
      if (glob(logic_arg_.c_str(), GLOB_MARK | GLOB_NOCHECK, nullptr, &matches_found) == 0) {
        for (std::size_t i = 0; i < matches_found.gl_pathc; ++i) keep_with(matches_found.gl_pathv[i]);
      }
      globfree(&matches_found);
      return;
    }
    case Logic::for_readline: {
      std::istringstream lines(
          read_file(logic_arg_, fmt::format("for-readline \"{}\" ({})", logic_arg_, logic_source_)));
      std::string line;
      while (std::getline(lines, line)) {
        while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.pop_back();
        keep_with(line);
      }
      return;
    }
    case Logic::for_times: {
      const int times = std::atoi(logic_arg_.c_str());  // as uWSGI: garbage is 0 times
      if (times > kMaxRepeats) {
        throw ConfigError(fmt::format("for-times \"{}\" ({}): more than {} repetitions", logic_arg_,
                                      logic_source_, kMaxRepeats));
      }
      for (int i = 1; i <= times; ++i) keep_with(std::to_string(i));
      return;
    }
    case Logic::none:
      return;
  }
}

std::string Collector::expanded_value(std::size_t index) {
  if (expanded_[index]) return *expanded_[index];
  const Setting& setting = settings_[index];
  if (!setting.value) return "true";
  if (!expanding_.insert(index).second) {
    throw ConfigError(fmt::format("{} \"{}\" ({}): its placeholders refer back to it (a loop)", setting.key,
                                  *setting.value, setting.source));
  }
  const std::string value = *setting.value;  // copies: expansion may add settings (never here, but cheap)
  const std::string source = setting.source;
  const std::string key = setting.key;
  auto result = expand(value, source, key);
  expanding_.erase(index);
  expanded_[index] = result;
  return result;
}

std::string Collector::expand(std::string_view text, const std::string& source, std::string_view option) {
  // uWSGI's three passes, in its order: environment variables, files, then references.
  const auto context = fmt::format("{} ({})", option, source);
  auto value = replace_tokens(
      text, '$',
      [&](std::string_view name) -> std::optional<std::string> {
        if (const char* found = getenv(std::string(name).c_str())) return std::string(found);
        // uWSGI keeps $(NAME) as written; so do we (it may be meant for a shell), and say so once.
        if (warned_env_.emplace(name).second) {
          warnings_.push_back(fmt::format("{} ({}): $({}) is not set in the environment; kept as written",
                                          option, source, name));
        }
        return std::nullopt;
      },
      context);
  value = replace_tokens(
      value, '@',
      [&](std::string_view name) -> std::optional<std::string> {
        const std::string path(name);
        auto content = read_file(path, fmt::format("{} ({}): @({})", option, source, path));
        if (!content.empty() && (content.back() == '\n' || content.back() == '\r')) content.pop_back();
        return content;
      },
      context);
  return replace_tokens(
      value, '%',
      [&](std::string_view name) -> std::optional<std::string> {
        if (is_template_option(option) && !find_setting(name)) return std::nullopt;
        return placeholder(name, source);
      },
      context);
}

std::string Collector::lookup(std::string_view name, const std::string& source) {
  const auto index = find_setting(name);
  if (!index) {
    throw ConfigError(
        fmt::format("{}: placeholder %({}) names nothing: no option or key \"{}\" is set in any "
                    "configuration source",
                    source, name, name));
  }
  settings_[*index].referenced = true;
  return expanded_value(*index);
}

// %(name), or uWSGI's arithmetic form: words separated by spaces are concatenated, except that
// + - * / apply to the next word as integers and ++ / -- change the result by one.
std::string Collector::placeholder(std::string_view name, const std::string& source) {
  if (name.find(' ') == std::string_view::npos) return lookup(name, source);
  std::optional<std::string> current;
  char operation = 0;
  std::istringstream words{std::string(name)};
  std::string word;
  const auto number = [](const std::optional<std::string>& text) {
    return text ? std::strtoll(text->c_str(), nullptr, 10) : 0LL;
  };
  const auto arithmetic = [&](char operation, long long left, long long right) {
    long long result = 0;
    bool overflow = false;
    switch (operation) {
      case '+':
        overflow = __builtin_add_overflow(left, right, &result);
        break;
      case '-':
        overflow = __builtin_sub_overflow(left, right, &result);
        break;
      case '*':
        overflow = __builtin_mul_overflow(left, right, &result);
        break;
      default:  // '/': uWSGI gives 0 for a division by zero
        overflow = left == std::numeric_limits<long long>::min() && right == -1;
        result = right == 0 || overflow ? 0 : left / right;
        break;
    }
    if (overflow) {
      throw ConfigError(fmt::format("{}: placeholder %({}) overflows a 64-bit integer", source, name));
    }
    return std::to_string(result);
  };
  while (words >> word) {
    if (word == "+" || word == "-" || word == "*" || word == "/") {
      operation = word[0];
      continue;
    }
    if (word == "++" || word == "--") {
      if (current) current = arithmetic(word[0], number(current), 1);
      operation = 0;
      continue;
    }
    const std::string operand = is_digits(word) ? word : lookup(word, source);
    if (operation == 0) {
      current = current.value_or("") + operand;
    } else {
      current = arithmetic(operation, number(current), number(operand));
    }
    operation = 0;
  }
  return current.value_or("");
}

std::string Collector::show_config() {
  std::string text = "\n;uWSGI instance configuration\n[uwsgi]\n";
  for (std::size_t i = 0; i < settings_.size(); ++i) {
    std::string value;
    try {
      value = expanded_value(i);
    } catch (const ConfigError&) {  // an unused key with a broken placeholder: shown as written
      value = settings_[i].value.value_or("true");
    }
    text += fmt::format("{} = {}\n", settings_[i].key, value);
  }
  return text + ";end of configuration\n\n";
}

}  // namespace config::detail
