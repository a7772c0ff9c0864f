#include "master/application_settings.hpp"

#include <string>
#include <type_traits>
#include <variant>

namespace master {

namespace {

// uwsgi.opt lists the options that were given. We have the parsed Config, not the raw arguments, so
// "given" means "differs from the default"; a list option shows its last value, as uWSGI's does.
std::vector<server::ApplicationSettings::GivenOption> given_options(const config::Config& config) {
  static const config::Config defaults;
  std::vector<server::ApplicationSettings::GivenOption> given;
  for (const config::OptionSpec& spec : config::option_table()) {
    std::visit(
        [&](auto member) {
          using Member = decltype(member);
          if constexpr (!std::is_same_v<Member, std::monostate>) {
            const auto& mine = config.*member;
            if (mine == defaults.*member) return;
            server::ApplicationSettings::GivenOption option;
            option.name = std::string(spec.name);
            using Value = std::remove_cvref_t<decltype(mine)>;
            if constexpr (std::is_same_v<Value, bool>) {
              option.is_flag = true;
              option.flag = mine;
            } else if constexpr (std::is_same_v<Value, std::string>) {
              option.value = mine;
            } else if constexpr (std::is_same_v<Value, std::vector<std::string>>) {
              if (mine.empty()) return;
              option.value = mine.back();
            } else {
              option.value = std::to_string(mine);
            }
            given.push_back(std::move(option));
          }
        },
        spec.target);
  }
  return given;
}

}  // namespace

server::ApplicationSettings application_settings(const config::Config& config) {
  server::ApplicationSettings settings;
  settings.module = config.module;
  settings.wsgi_file = config.wsgi_file;
  settings.callable = config.callable;
  settings.chdir = config.chdir;
  settings.pythonpath = config.pythonpath;
  settings.env = config.env;
  // A reload must run the new code: with --touch-reload or --py-autoreload each worker loads the
  // application (uWSGI re-executes its whole binary instead; a worker forked from a master that holds
  // the old modules would keep them).
  settings.lazy_apps = config.lazy_apps || !config.touch_reload.empty() || config.py_autoreload > 0;
  settings.home = config.virtualenv;
  settings.py_autoreload = config.py_autoreload;
  settings.mounts = config.mounts;
  settings.manage_script_name = config.manage_script_name;
  settings.processes = config.processes;
  settings.threads = config.threads;
  settings.socket_timeout_s = config.socket_timeout;
  settings.buffer_size = config.buffer_size;
  settings.file_wrapper = !config.wsgi_disable_file_wrapper;
  settings.given_options = given_options(config);
  return settings;
}

}  // namespace master
