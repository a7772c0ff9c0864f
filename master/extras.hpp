// The master's optional duties from uWSGI's options, kept out of the master loop (master.cpp calls
// one method at each point): static files (--static-map & co), --add-header, --touch-reload,
// --attach-daemon, --hook-master-start / --hook-accepting1, process titles (--auto-procname), --max-fd.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "config/config.hpp"
#include "server/application.hpp"
#include "server/static_files.hpp"

namespace master {

class Extras {
 public:
  // At the master's start, before anything is bound: --max-fd, the master's title, the static file
  // table (folders resolved now). Throws std::runtime_error naming the option when one is unusable.
  explicit Extras(const config::Config& config);
  ~Extras();
  Extras(const Extras&) = delete;
  Extras& operator=(const Extras&) = delete;

  const server::StaticFiles* static_files() const { return static_files_.get(); }
  // --add-header: the application wrapped so that every response carries the headers.
  std::unique_ptr<server::Application> wrap(std::unique_ptr<server::Application> application) const;

  // The workers are being started: --hook-master-start (a failing exec: throws), --attach-daemon.
  void serving();
  // One pass of the master loop. True when a graceful reload is due (--touch-reload). `worker_ready`:
  // some worker's loop runs (for --hook-accepting1).
  bool tick(bool worker_ready);
  // A child the master reaped that is not a worker: true when it was one of the daemons.
  bool child_exited(pid_t pid, int status);
  // The server stops: each daemon gets SIGTERM, SIGKILL after kDaemonStopMs.
  void stop();
  // In a freshly forked worker: its process title.
  void in_worker(int id) const;

 private:
  struct Daemon {
    std::string command;
    pid_t pid = -1;
    std::int64_t started_ms = 0;
    std::int64_t respawn_at_ms = 0;  // 0 = not waiting
    int quick_deaths = 0;
  };
  struct Watched {
    std::string path;
    std::int64_t mtime_ns = -1;  // -1 = missing
  };
  void spawn(Daemon& daemon);

  config::Config config_;
  std::unique_ptr<server::StaticFiles> static_files_;
  std::vector<Daemon> daemons_;
  std::vector<Watched> touch_reload_;
  std::int64_t next_touch_check_ms_ = 0;
  bool accepting_hooks_done_ = false;
  bool stopped_ = false;
};

// uWSGI's hook actions: exec:COMMAND (/bin/sh -c, waited for; false with `error` when it fails) and
// unix_signal:N HANDLER (only the mappings this server already has; others are an error).
bool run_hook(const std::string& action, const char* phase, std::string& error);

// Process titles (what ps shows): main() hands its argv over once; set_process_title then rewrites it.
void remember_argv(int argc, char** argv);
void set_process_title(const std::string& title);

}  // namespace master
