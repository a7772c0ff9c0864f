#include "pyhost/autoreload.hpp"

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <map>
#include <string>
#include <thread>
#include <vector>

#include "common/log.hpp"
#include "pyhost/interpreter.hpp"

namespace pyhost {

namespace {

// The source files of every loaded module (what a code change touches); the GIL must be held.
std::vector<std::string> module_files() {
  std::vector<std::string> files;
  PyObject* modules = PySys_GetObject("modules");  // borrowed
  if (modules == nullptr || !PyDict_Check(modules)) return files;
  PyObject* snapshot = PyDict_Values(modules);  // the dict may change while we look
  if (snapshot == nullptr) {
    PyErr_Clear();
    return files;
  }
  for (Py_ssize_t i = 0; i < PyList_GET_SIZE(snapshot); ++i) {
    PyObject* file = PyObject_GetAttrString(PyList_GET_ITEM(snapshot, i), "__file__");
    if (file == nullptr) {
      PyErr_Clear();
      continue;
    }
    if (PyUnicode_Check(file)) {
      if (const char* text = PyUnicode_AsUTF8(file)) files.emplace_back(text);
    }
    PyErr_Clear();
    Py_DECREF(file);
  }
  Py_DECREF(snapshot);
  return files;
}

std::int64_t mtime_ns(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return -1;
  return static_cast<std::int64_t>(st.st_mtim.tv_sec) * 1000000000LL + st.st_mtim.tv_nsec;
}

}  // namespace

void start_autoreloader(int interval_s, int worker_id) {
  if (interval_s <= 0 || worker_id != 1) return;
  const pid_t master = getppid();
  std::thread([interval_s, master] {
    std::map<std::string, std::int64_t> known;  // path -> mtime when first seen
    for (bool first = true;; first = false) {
      std::vector<std::string> files;
      {
        GilGuard gil;
        files = module_files();
      }
      for (const std::string& path : files) {
        const std::int64_t mtime = mtime_ns(path);
        if (mtime < 0) continue;
        const auto [entry, first_seen] = known.emplace(path, mtime);
        if (first_seen || entry->second == mtime) continue;
        common::log("[uwsgi-python-reloader] module/file {} has been modified", path);
        // The master's graceful reload (this worker is replaced with the rest). A worker whose master is
        // gone has been re-parented: never signal whoever adopted it.
        if (getppid() == master) kill(master, SIGHUP);
        return;
      }
      if (first) {  // logged once the first mtimes are known: a change from here on is seen
        common::log("python auto-reloader enabled: watching {} module file(s), checked every {} s",
                    known.size(), interval_s);
      }
      std::this_thread::sleep_for(std::chrono::seconds(interval_s));  // uWSGI's polling period
    }
  }).detach();
}

}  // namespace pyhost
