#include "master/extras.hpp"

#include <errno.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "common/clock.hpp"
#include "common/log.hpp"

extern char** environ;

namespace master {

namespace {

using common::monotonic_ms;

constexpr std::int64_t kTouchCheckMs = 1000;        // uWSGI checks on its 1-second master cycle
constexpr std::int64_t kDaemonStopMs = 5000;        // SIGTERM, then SIGKILL after this long
constexpr std::int64_t kDaemonQuickDeathMs = 1000;  // a daemon dying sooner than this is throttled
constexpr std::int64_t kDaemonThrottleMaxMs = 30000;

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exit status {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status)) return fmt::format("killed by signal {}", WTERMSIG(status));
  return "stopped";
}

std::int64_t mtime_ns(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
}

// /bin/sh -c COMMAND in a process group of its own (so a stop reaches what the shell started).
pid_t start_shell(const std::string& command, bool own_group) {
  const pid_t master = getpid();
  const pid_t pid = fork();
  if (pid != 0) return pid;
  if (own_group) setsid();
  prctl(PR_SET_PDEATHSIG, SIGTERM);  // a master killed outright takes its daemons along
  if (getppid() != master) _exit(0);
  sigset_t all;
  sigemptyset(&all);
  sigprocmask(SIG_SETMASK, &all, nullptr);  // the master blocks its signals; the command must not
  signal(SIGPIPE, SIG_DFL);
  execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
  _exit(127);
}

// --add-header: the headers after the status line of every response the application makes.
class HeaderApplication final : public server::Application {
 public:
  HeaderApplication(std::unique_ptr<server::Application> inner, std::string lines)
      : inner_(std::move(inner)), lines_(std::move(lines)) {}
  void handle(const server::Request& request, server::Reply& reply) override {
    inner_->handle(request, reply);
    std::string& head = reply.head.empty() ? reply.body : reply.head;
    const auto end_of_status = head.find("\r\n");
    if (end_of_status != std::string::npos) head.insert(end_of_status + 2, lines_);
  }
  bool blocking() const override { return inner_->blocking(); }
  bool worker_started(int worker_id, std::string& error) override {
    return inner_->worker_started(worker_id, error);
  }

 private:
  std::unique_ptr<server::Application> inner_;
  std::string lines_;
};

std::string header_lines(const std::vector<std::string>& headers) {
  std::string lines;
  for (const std::string& header : headers) lines += header + "\r\n";
  return lines;
}

std::string title_prefix(const config::Config& config) {
  if (!config.procname_prefix_spaced.empty()) return config.procname_prefix_spaced + " ";
  return config.procname_prefix;
}

bool titles_wanted(const config::Config& config) {
  return config.auto_procname || !config.procname_prefix.empty() || !config.procname_prefix_spaced.empty();
}

// The argv (and environment) bytes the kernel shows as /proc/PID/cmdline.
char* g_title_area = nullptr;
std::size_t g_title_size = 0;
// The moved environment, kept for the life of the process (a later setenv may replace `environ`).
char** g_moved_environ = nullptr;

}  // namespace

void remember_argv(int argc, char** argv) {
  if (argc <= 0 || argv == nullptr || argv[0] == nullptr) return;
  char* end = argv[0] + std::strlen(argv[0]);
  for (int i = 1; i < argc; ++i) {
    if (argv[i] != end + 1) break;
    end = argv[i] + std::strlen(argv[i]);
  }
  // The environment strings usually follow the arguments: move them to the heap so that a title longer
  // than the command line has room (uWSGI does the same).
  std::size_t count = 0;
  while (environ != nullptr && environ[count] != nullptr) ++count;
  char** moved = new char*[count + 1];
  for (std::size_t i = 0; i < count; ++i) {
    if (environ[i] == end + 1) end = environ[i] + std::strlen(environ[i]);
    moved[i] = strdup(environ[i]);
  }
  moved[count] = nullptr;
  g_moved_environ = moved;
  environ = moved;
  g_title_area = argv[0];
  g_title_size = static_cast<std::size_t>(end - argv[0]);
}

void set_process_title(const std::string& title) {
  prctl(PR_SET_NAME, title.substr(0, 15).c_str());  // what ps -o comm and top show
  if (g_title_area == nullptr || g_title_size == 0) return;
  const std::size_t length = std::min(title.size(), g_title_size);
  std::memcpy(g_title_area, title.data(), length);
  std::memset(g_title_area + length, 0, g_title_size - length + 1);
}

bool run_hook(const std::string& action, const char* phase, std::string& error) {
  common::log("running \"{}\" ({})...", action, phase);
  if (action.starts_with("exec:")) {
    const std::string command = action.substr(5);
    const pid_t pid = start_shell(command, false);
    if (pid < 0) {
      error = fmt::format("fork: {}", std::strerror(errno));
      return false;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
      if (errno != EINTR) {
        error = fmt::format("waitpid: {}", std::strerror(errno));
        return false;
      }
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return true;
    error = fmt::format("command \"{}\" failed: {}", command, describe_status(status));
    return false;
  }
  // unix_signal:N HANDLER maps a signal to one of uWSGI's master handlers. The mappings real
  // configurations use ask for what the signal table already does here; anything else would change
  // it, which this server does not do.
  std::string rest = action.substr(std::strlen("unix_signal:"));
  const auto space = rest.find(' ');
  const std::string number = rest.substr(0, space);
  const std::string handler = space == std::string::npos ? std::string() : rest.substr(space + 1);
  const int signum = std::atoi(number.c_str());
  const bool graceful_stop = (signum == SIGTERM) && handler == "gracefully_kill_them_all";
  const bool immediate_stop = (signum == SIGINT || signum == SIGQUIT) && handler == "kill_them_all";
  const bool reload = signum == SIGHUP && handler == "grace_them_all";
  if (graceful_stop || immediate_stop || reload) return true;  // already this signal's meaning here
  if (signum == SIGINT && handler == "gracefully_kill_them_all") {
    error = "SIGINT stops at once here (SIGTERM stops gracefully); it cannot be remapped";
    return false;
  }
  error = fmt::format(
      "unix_signal:{} {}: only the meanings the signals already have here can be asked for (15 "
      "gracefully_kill_them_all, 2 or 3 kill_them_all, 1 grace_them_all); see docs/architecture.md",
      number, handler);
  return false;
}

Extras::Extras(const config::Config& config) : config_(config) {
  if (config.max_fd > 0) {
    struct rlimit limit {};
    limit.rlim_cur = limit.rlim_max = static_cast<rlim_t>(config.max_fd);
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) {
      throw std::runtime_error(
          fmt::format("--max-fd {}: setrlimit(RLIMIT_NOFILE): {}", config.max_fd, std::strerror(errno)));
    }
    common::log("detected max file descriptor number: {}", config.max_fd);
  }
  if (titles_wanted(config)) set_process_title(title_prefix(config) + "uWSGI master");
  if (config.idle > 0 && config.cheaper == 0)
    common::log(
        "WARNING: --idle has an effect only with --cheaper here (uWSGI's idle mode without it is not "
        "implemented; docs/differences.md)");
  server::StaticSettings statics;
  statics.map = config.static_map;
  statics.map2 = config.static_map2;
  statics.check = config.check_static;
  statics.index = config.static_index;
  statics.expires = config.static_expires;
  statics.gzip_dir = config.static_gzip_dir;
  statics.safe = config.static_safe;
  statics.gzip_all = config.static_gzip_all;
  statics.mime_file = config.mimefile;
  statics.add_header = config.add_header;
  auto files = std::make_unique<server::StaticFiles>(statics);
  if (files->enabled()) static_files_ = std::move(files);
  for (const std::string& path : config.touch_reload) touch_reload_.push_back({path, mtime_ns(path)});
  for (const std::string& command : config.attach_daemon) daemons_.push_back(Daemon{command});
}

Extras::~Extras() { stop(); }

std::unique_ptr<server::Application> Extras::wrap(std::unique_ptr<server::Application> application) const {
  if (config_.add_header.empty() || application == nullptr) return application;
  return std::make_unique<HeaderApplication>(std::move(application), header_lines(config_.add_header));
}

void Extras::serving() {
  for (const std::string& action : config_.hook_master_start) {
    std::string error;
    if (!run_hook(action, "master-start", error))
      throw std::runtime_error(fmt::format("--hook-master-start \"{}\": {}", action, error));
  }
  for (Daemon& daemon : daemons_) spawn(daemon);
  next_touch_check_ms_ = monotonic_ms() + kTouchCheckMs;
}

void Extras::spawn(Daemon& daemon) {
  daemon.respawn_at_ms = 0;
  daemon.pid = start_shell(daemon.command, true);
  if (daemon.pid < 0) {
    common::log("[uwsgi-daemons] cannot start \"{}\": fork: {}", daemon.command, std::strerror(errno));
    daemon.respawn_at_ms = monotonic_ms() + kDaemonThrottleMaxMs;
    return;
  }
  daemon.started_ms = monotonic_ms();
  common::log("[uwsgi-daemons] spawning \"{}\" (pid {})", daemon.command, daemon.pid);
}

bool Extras::tick(bool worker_ready) {
  const std::int64_t now = monotonic_ms();
  if (worker_ready && !accepting_hooks_done_) {
    accepting_hooks_done_ = true;
    for (const std::string& action : config_.hook_accepting1) {
      std::string error;
      if (!run_hook(action, "accepting1", error)) common::log("--hook-accepting1 \"{}\": {}", action, error);
    }
  }
  for (Daemon& daemon : daemons_) {
    if (daemon.respawn_at_ms != 0 && now >= daemon.respawn_at_ms && !stopped_) spawn(daemon);
  }
  if (touch_reload_.empty() || now < next_touch_check_ms_) return false;
  next_touch_check_ms_ = now + kTouchCheckMs;
  bool touched = false;
  for (Watched& watched : touch_reload_) {
    const std::int64_t mtime = mtime_ns(watched.path);
    if (mtime != watched.mtime_ns && mtime != -1) {
      common::log("*** {} has been touched... grace them all !!! ***", watched.path);
      touched = true;
    }
    watched.mtime_ns = mtime;
  }
  return touched;
}

bool Extras::child_exited(pid_t pid, int status) {
  for (Daemon& daemon : daemons_) {
    if (daemon.pid != pid) continue;
    daemon.pid = -1;
    if (stopped_) return true;
    const std::int64_t now = monotonic_ms();
    daemon.quick_deaths = now - daemon.started_ms < kDaemonQuickDeathMs ? daemon.quick_deaths + 1 : 0;
    const std::int64_t delay =
        daemon.quick_deaths == 0
            ? 0
            : std::min<std::int64_t>(kDaemonThrottleMaxMs, 500LL << std::min(daemon.quick_deaths, 6));
    common::log("[uwsgi-daemons] \"{}\" (pid {}) died: {}; respawning{}", daemon.command, pid,
                describe_status(status), delay == 0 ? std::string() : fmt::format(" in {} ms", delay));
    daemon.respawn_at_ms = now + delay;
    if (daemon.respawn_at_ms == 0) daemon.respawn_at_ms = 1;
    return true;
  }
  return false;
}

void Extras::stop() {
  if (stopped_) return;
  stopped_ = true;
  bool any = false;
  for (Daemon& daemon : daemons_) {
    if (daemon.pid <= 0) continue;
    common::log("[uwsgi-daemons] stopping \"{}\" (pid {})", daemon.command, daemon.pid);
    kill(-daemon.pid, SIGTERM);
    any = true;
  }
  if (!any) return;
  const std::int64_t deadline = monotonic_ms() + kDaemonStopMs;
  for (Daemon& daemon : daemons_) {
    while (daemon.pid > 0) {
      int status = 0;
      const pid_t gone = waitpid(daemon.pid, &status, WNOHANG);
      if (gone == daemon.pid || (gone < 0 && errno == ECHILD)) {
        daemon.pid = -1;
        break;
      }
      if (monotonic_ms() >= deadline) {
        common::log("[uwsgi-daemons] \"{}\" (pid {}) did not stop in {} ms: SIGKILL", daemon.command,
                    daemon.pid, kDaemonStopMs);
        kill(-daemon.pid, SIGKILL);
        waitpid(daemon.pid, &status, 0);
        daemon.pid = -1;
        break;
      }
      usleep(10000);  // polling the exit of a process we cannot wait on with a timeout otherwise
    }
  }
}

void Extras::in_worker(int id) const {
  if (titles_wanted(config_)) set_process_title(fmt::format("{}uWSGI worker {}", title_prefix(config_), id));
}

}  // namespace master
