// The application interface (modifier1 0) and the registry of application hosts. The master sees only
// these: a host (the embedded Python host, pyhost/) registers itself from main() when it was built, and
// the master asks the registry for the application the configuration names.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cache/cache.hpp"
#include "server/protocol.hpp"

namespace server {

// The application interface (modifier1 0). The Python host implements it; a built-in demo app is the
// default so the server is useful without Python (make_demo_application, dispatcher.hpp).
class Application {
 public:
  virtual ~Application() = default;
  // Writes raw HTTP response bytes into reply.body (as uWSGI does: status line, headers, body).
  // The worker may call it from several threads at once (its application threads): keep no
  // per-request state in members.
  // For a blocking() application it is called on one of the worker's application threads, never on
  // the event loop, possibly from several threads at once (--threads).
  virtual void handle(const Request& request, Reply& reply) = 0;
  // True when handle() may take long (a hosted application): the worker then runs it off its event
  // loop, so cache requests on the same worker keep being served.
  virtual bool blocking() const { return false; }
  // Called in each worker process right after fork, before it serves anything (e.g. to reinitialise
  // an interpreter's state after fork, or to load the application there with --lazy-apps). False
  // (with `error` set) when the application can never start: the worker stops and reports it.
  virtual bool worker_started(int worker_id, std::string& error) {
    (void)worker_id;
    (void)error;
    return true;
  }
};

// What a hosted application is told of the configuration (the master fills it from config/).
struct ApplicationSettings {
  std::string module;     // --module (NAME or NAME:callable)
  std::string wsgi_file;  // --wsgi-file
  std::string callable = "application";
  std::string chdir;
  std::vector<std::string> pythonpath;
  std::vector<std::string> env;     // KEY=VALUE
  std::vector<std::string> mounts;  // MOUNTPOINT=APP (a .py/.wsgi file or module[:callable])
  bool manage_script_name = false;  // mounts are chosen by PATH_INFO's prefix, which moves to SCRIPT_NAME
  bool lazy_apps = false;
  std::string home;       // --virtualenv/--home: the Python environment to use
  int py_autoreload = 0;  // --py-autoreload: seconds between checks of the loaded modules (0 = off)
  int processes = 1;
  int threads = 1;
  int socket_timeout_s = 4;
  std::uint32_t buffer_size = 65535;
  bool file_wrapper = true;  // wsgi.file_wrapper in the environ (--wsgi-disable-file-wrapper: no)
  // The options given (those that differ from their default), as uWSGI's uwsgi.opt shows them.
  struct GivenOption {
    std::string name;
    bool is_flag = false;
    bool flag = false;  // is_flag: its value
    std::string value;  // otherwise: the (last) value as text
  };
  std::vector<GivenOption> given_options;
};

// Something that runs hosted applications (one per build at most: the Python host).
class ApplicationHost {
 public:
  virtual ~ApplicationHost() = default;
  // Loads the application the settings name (unless lazy_apps: then each worker_started() does).
  // Throws std::runtime_error naming it, with the reason, when it cannot. `caches` must outlive it.
  virtual std::unique_ptr<Application> create(const ApplicationSettings& settings,
                                              cache::CacheSet& caches) = 0;
  // Runs a script with the caches (uWSGI's --pyrun) and returns its exit status.
  virtual int run_script(const ApplicationSettings& settings, cache::CacheSet& caches,
                         const std::string& path) = 0;
};

// Called once from main(), before the master runs; the host must outlive the process.
void register_application_host(ApplicationHost* host);
// nullptr when this build has no application host.
ApplicationHost* application_host();

}  // namespace server
