// The embedded CPython (Debian's libpython3.11): start-up, the GIL per thread, fork safety.
// One interpreter per process, started in the master before the workers are forked.
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string>

#include "server/application.hpp"

namespace pyhost {

// Starts the interpreter once: applies --env, --chdir, registers the built-in `uwsgi` module, sets
// sys.path (--pythonpath first, then ".", "", the standard paths, the project's python/ modules: as
// installed beside the binary, else the source tree's) and the fork handlers. Returns with the GIL released.
// Throws std::runtime_error with the reason.
void start_interpreter(const server::ApplicationSettings& settings);

// Holds the GIL in the calling thread for its scope. Each thread keeps one PyThreadState for its
// lifetime (threading.local and C extensions' per-thread state survive across requests). Not
// reentrant: never nest two in one thread.
class GilGuard {
 public:
  GilGuard();
  ~GilGuard();
  GilGuard(const GilGuard&) = delete;
  GilGuard& operator=(const GilGuard&) = delete;
};

// Releases the GIL for its scope (around socket I/O and long cache walks); exception-safe, unlike the
// Py_BEGIN_ALLOW_THREADS macro pair. `release` = false keeps it: a local get or set takes ~40-90 ns
// and never waits on I/O (a shard lock is held for a bounded copy), so releasing and retaking the
// GIL (~25 ns) would only slow the call down.
class GilRelease {
 public:
  explicit GilRelease(bool release = true) : saved_(release ? PyEval_SaveThread() : nullptr) {}
  ~GilRelease() {
    if (saved_ != nullptr) PyEval_RestoreThread(saved_);
  }
  GilRelease(const GilRelease&) = delete;
  GilRelease& operator=(const GilRelease&) = delete;

 private:
  PyThreadState* saved_;
};

// The pending Python exception as text, traceback included, and clears it. Needs the GIL.
std::string take_exception_text();

// A helper from the embedded bootstrap module `_pyhost` (load_module, load_file, FileWrapper, ...).
// Borrowed reference, valid for the life of the process. Needs the GIL.
PyObject* bootstrap(const char* name);

}  // namespace pyhost
