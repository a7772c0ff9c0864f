// The signal table: what each signal means to the master and to a worker. The master's loop and
// docs/architecture.md's table (generated: signal_table_markdown) both come from here. No handler runs code:
// the master blocks these signals from its first instruction and reads them from a signalfd in its loop (so a
// signal sent while workers are still starting is queued, never lost); workers get them through libuv.
#pragma once

#include <signal.h>

#include <array>
#include <string>
#include <string_view>

namespace master {

enum class SignalAction { graceful_stop, immediate_stop, graceful_reload, log_stats, child_exited };

struct SignalSpec {
  int signum;
  std::string_view name;
  SignalAction action;
  std::string_view master_does;
  std::string_view worker_does;
};

inline constexpr std::array<SignalSpec, 6> kSignalTable{{
    {SIGTERM, "SIGTERM", SignalAction::graceful_stop,
     "graceful stop: workers stop accepting and finish in-flight requests (bounded by `--reload-mercy`, "
     "default 60 s), stores are flushed, exit 0. uWSGI 2.0 reloads on SIGTERM unless `--die-on-term`; we "
     "stop, as containers expect",
     "stop accepting, finish in-flight requests, exit 0"},
    {SIGINT, "SIGINT", SignalAction::immediate_stop,
     "immediate stop: workers are told to exit at once (SIGKILL after 3 s), stores flushed, exit 0, no "
     "process left behind",
     "exit at once"},
    {SIGQUIT, "SIGQUIT", SignalAction::immediate_stop, "immediate stop, as SIGINT", "exit at once"},
    {SIGHUP, "SIGHUP", SignalAction::graceful_reload,
     "graceful reload, worker by worker: a replacement starts, and once its loop runs the old worker is sent "
     "SIGTERM and finishes its requests; sockets and caches are untouched, so no connection is refused or "
     "reset",
     "(receives SIGTERM from the master)"},
    {SIGUSR1, "SIGUSR1", SignalAction::log_stats,
     "log one stats line per worker (requests, accepts, wake-ups, wasted wake-ups, bad requests) and per "
     "cache",
     "ignored"},
    {SIGCHLD, "SIGCHLD", SignalAction::child_exited,
     "reap; log pid and exit status or signal; respawn at once. A worker that dies within 1 s of starting 3 "
     "times in a row is respawned after 0.5 s, then 1 s, 2 s, … up to 30 s (fork-bomb guard). Exit status 78 "
     "(fatal configuration) stops the whole server with status 1",
     "—"},
}};

// The table as Markdown rows (header included), for docs/architecture.md: gen-signal-doc prints it and
// the master.signal_doc_up_to_date test fails when the doc's copy differs.
std::string signal_table_markdown();

}  // namespace master
