#include "pyhost/interpreter.hpp"

#include <fmt/format.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>

#include "common/log.hpp"
#include "pyhost/uwsgi_module.hpp"

#ifndef PYHOST_PYTHON_PREFIX
#define PYHOST_PYTHON_PREFIX "/usr"
#endif
#ifndef PYHOST_PYTHON_DIR
#define PYHOST_PYTHON_DIR ""
#endif
#ifndef PYHOST_INSTALLED_PYTHON_DIR
#define PYHOST_INSTALLED_PYTHON_DIR ""
#endif

namespace pyhost {

namespace {

// Python-side helpers: easier to get right in Python than through the C API, and none of them is on
// a per-request hot path except FileWrapper's iteration (which reads a file anyway).
constexpr const char* kBootstrap = R"PY(
import importlib, importlib.machinery, importlib.util, sys, traceback

def format_exception(exc):
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))

def load_module(name):
    return importlib.import_module(name)

def load_file(path):
    # As uWSGI 2.0.21 and runpy: a module named after the path ("sub/app.py" -> uwsgi_file_sub_app, so
    # two files never share one), registered in sys.modules, with __file__ the path as given. The
    # file's directory is not added to sys.path (uWSGI does not; "." is there).
    name = "uwsgi_file_" + path.replace(".", "_").replace("/", "_")
    if name.endswith("_py"):
        name = name[:-3]
    # An explicit loader: .wsgi (or any suffix) is Python source too.
    loader = importlib.machinery.SourceFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    module = importlib.util.module_from_spec(spec)
    module.__file__ = path  # spec_from_file_location made it absolute; uWSGI and runpy keep it as given
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module

def validate(app):
    # UCACHED_WSGI_VALIDATE: the application behind wsgiref's PEP 3333 checker; its warnings become
    # errors, so every finding fails the request and lands in the log with a traceback.
    import warnings, wsgiref.validate
    warnings.simplefilter("error", wsgiref.validate.WSGIWarning)
    return wsgiref.validate.validator(app)

class FileWrapper:
    """wsgi.file_wrapper (PEP 3333): the file in blocks of blksize bytes; close() closes it."""

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        read, size = self.filelike.read, self.blksize
        while True:
            block = read(size)
            if not block:
                return
            yield block
)PY";

PyInterpreterState* g_interp = nullptr;
PyThreadState* g_main_tstate = nullptr;  // the thread that started the interpreter
PyObject* g_bootstrap = nullptr;         // module _pyhost
pid_t g_start_pid = 0;
pthread_t g_start_thread;
bool g_fork_holds_gil = false;

thread_local PyThreadState* t_tstate = nullptr;
thread_local bool t_holds_gil = false;

// Fork safety without touching the master's fork call: pthread_atfork handlers that act only when the
// thread that started the interpreter forks from the starting process (the master spawning a worker)
// while outside Python. They take the GIL and do what os.fork() does (PyOS_BeforeFork, then
// AfterFork_Parent / AfterFork_Child: import lock, threading's after-fork hooks, thread states of
// threads that do not exist in the child). Forks from Python code (os.fork, subprocess) hold the GIL
// and are left to Python.
void before_fork() {
  if (g_main_tstate == nullptr || getpid() != g_start_pid || !pthread_equal(pthread_self(), g_start_thread) ||
      t_holds_gil) {
    return;
  }
  PyEval_RestoreThread(g_main_tstate);
  PyOS_BeforeFork();
  g_fork_holds_gil = true;
}

void after_fork_parent() {
  if (!g_fork_holds_gil) return;
  g_fork_holds_gil = false;
  PyOS_AfterFork_Parent();
  PyEval_SaveThread();
}

void after_fork_child() {
  if (!g_fork_holds_gil) return;
  g_fork_holds_gil = false;
  PyOS_AfterFork_Child();
  PyEval_SaveThread();
}

std::string status_text(const PyStatus& status) {
  return fmt::format("{}{}{}", status.func ? status.func : "", status.func ? ": " : "",
                     status.err_msg ? status.err_msg : "unknown error");
}

void check(PyStatus status, const char* what) {
  if (PyStatus_Exception(status)) {
    throw std::runtime_error(fmt::format("python: cannot {}: {}", what, status_text(status)));
  }
}

// Runs with the GIL held during start-up; throws with the Python traceback.
void run_or_throw(PyObject* result, const char* what) {
  if (result == nullptr) {
    throw std::runtime_error(fmt::format("python: {} failed:\n{}", what, take_exception_text()));
  }
  Py_DECREF(result);
}

// Where python/'s modules are: installed beside this binary (PYHOST_INSTALLED_PYTHON_DIR, relative to
// the binary's directory unless absolute), else the source tree's python/ (a server run from its
// build tree). The marker module tells our installed modules from a directory that merely exists.
std::string project_python_dir() {
  auto has_modules = [](const std::string& dir) {
    struct stat st {};
    return !dir.empty() && stat((dir + "/uwsgi_django_cache.py").c_str(), &st) == 0 && S_ISREG(st.st_mode);
  };
  std::string installed = PYHOST_INSTALLED_PYTHON_DIR;
  if (!installed.empty() && installed.front() != '/') {
    char exe[4096];
    const ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    std::string_view bin(exe, n > 0 ? static_cast<std::size_t>(n) : 0);
    const auto slash = bin.rfind('/');
    installed = slash == std::string_view::npos ? "" : std::string(bin.substr(0, slash + 1)) + installed;
  }
  if (has_modules(installed)) {
    char real[PATH_MAX];
    return realpath(installed.c_str(), real) != nullptr ? std::string(real) : installed;
  }
  return has_modules(PYHOST_PYTHON_DIR) ? std::string(PYHOST_PYTHON_DIR) : std::string();
}

void set_up_sys_path(const server::ApplicationSettings& settings) {
  PyObject* path = PySys_GetObject("path");  // borrowed
  if (path == nullptr || !PyList_Check(path)) throw std::runtime_error("python: sys.path is not a list");
  // uWSGI's order: the current directory ("." and ""), then each --pythonpath inserted at the front.
  auto insert_front = [&](const std::string& entry) {
    PyObject* item = PyUnicode_DecodeFSDefault(entry.c_str());
    if (item == nullptr || PyList_Insert(path, 0, item) != 0) {
      Py_XDECREF(item);
      throw std::runtime_error(
          fmt::format("python: cannot add {} to sys.path:\n{}", entry, take_exception_text()));
    }
    Py_DECREF(item);
  };
  insert_front("");
  insert_front(".");
  for (const std::string& dir : settings.pythonpath) insert_front(dir);
  // The project's python/ (uwsgi_django_cache, uwsgi_cache_client), last so the app's own win.
  const std::string dir = project_python_dir();
  if (dir.empty()) return;
  PyObject* item = PyUnicode_DecodeFSDefault(dir.c_str());
  int present = item == nullptr ? -1 : PySequence_Contains(path, item);  // e.g. PREFIX=/usr/local
  if (present < 0 || (present == 0 && PyList_Append(path, item) != 0)) {
    Py_XDECREF(item);
    throw std::runtime_error(fmt::format("python: cannot extend sys.path:\n{}", take_exception_text()));
  }
  Py_DECREF(item);
}

PyObject* init_uwsgi_trampoline() { return init_uwsgi_module(); }

// --virtualenv/--home DIR, as uWSGI: a PEP 405 environment (DIR/pyvenv.cfg, what `python3 -m venv`
// makes) is found by Python itself from the program name DIR/bin/python (sys.prefix DIR, its
// site-packages, the base installation's standard library); anything else is a full Python home.
// The environment must be one of this interpreter's version, or its site-packages would not load.
void use_virtualenv(PyConfig& py_config, const std::string& home) {
  const std::string version = fmt::format("python{}.{}", PY_MAJOR_VERSION, PY_MINOR_VERSION);
  struct stat st {};
  if (::stat((home + "/lib/" + version).c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    throw std::runtime_error(
        fmt::format("--virtualenv {}: no lib/{} in it: the environment must be made with Python {}.{} (e.g. "
                    "{}/bin/python3 -m venv DIR), the version this server embeds",
                    home, version, PY_MAJOR_VERSION, PY_MINOR_VERSION, PYHOST_PYTHON_PREFIX));
  }
  if (::stat((home + "/pyvenv.cfg").c_str(), &st) == 0) {
    common::log("PEP 405 virtualenv detected: {}", home);
    check(PyConfig_SetBytesString(&py_config, &py_config.program_name, (home + "/bin/python").c_str()),
          "set program_name");
  } else {
    check(PyConfig_SetBytesString(&py_config, &py_config.home, home.c_str()), "set home");
    common::log("Set PythonHome to {}", home);
  }
}

}  // namespace

void start_interpreter(const server::ApplicationSettings& settings) {
  if (g_main_tstate != nullptr) return;
  for (const std::string& pair : settings.env) {
    const auto eq = pair.find('=');
    if (eq == std::string::npos || eq == 0)
      throw std::runtime_error(fmt::format("--env {}: expected KEY=VALUE", pair));
    if (setenv(pair.substr(0, eq).c_str(), pair.substr(eq + 1).c_str(), 1) != 0) {
      throw std::runtime_error(fmt::format("--env {}: {}", pair, std::strerror(errno)));
    }
  }
  if (!settings.chdir.empty() && chdir(settings.chdir.c_str()) != 0) {
    throw std::runtime_error(fmt::format("--chdir {}: {}", settings.chdir, std::strerror(errno)));
  }
  if (PyImport_AppendInittab("uwsgi", init_uwsgi_trampoline) != 0) {
    throw std::runtime_error("python: cannot register the built-in uwsgi module");
  }

  PyConfig py_config;
  PyConfig_InitPythonConfig(&py_config);
  // The master owns the signals (signalfd); Python must not install its SIGINT handler.
  py_config.install_signal_handlers = 0;
  py_config.parse_argv = 0;
  try {
    // Pin the installation to Debian's: sys.prefix /usr, its dist-packages, whatever python3 comes
    // first on PATH (a pyenv build there has a different stdlib and no python3-django).
    if (settings.home.empty()) {
      check(PyConfig_SetBytesString(&py_config, &py_config.program_name, PYHOST_PYTHON_PREFIX "/bin/python3"),
            "set program_name");
      check(PyConfig_SetBytesString(&py_config, &py_config.home, PYHOST_PYTHON_PREFIX), "set home");
    } else {
      use_virtualenv(py_config, settings.home);
    }
    char* argv[] = {const_cast<char*>("server")};
    check(PyConfig_SetBytesArgv(&py_config, 1, argv), "set sys.argv");
    check(Py_InitializeFromConfig(&py_config), "initialise the interpreter");
  } catch (...) {
    PyConfig_Clear(&py_config);
    throw;
  }
  PyConfig_Clear(&py_config);

  set_up_sys_path(settings);
  g_bootstrap = PyImport_AddModule("_pyhost");  // borrowed, owned by sys.modules
  if (g_bootstrap == nullptr) throw std::runtime_error("python: cannot create the _pyhost module");
  PyObject* globals = PyModule_GetDict(g_bootstrap);
  if (PyDict_SetItemString(globals, "__builtins__", PyEval_GetBuiltins()) != 0) {
    throw std::runtime_error("python: cannot set up the _pyhost module");
  }
  run_or_throw(PyRun_String(kBootstrap, Py_file_input, globals, globals), "the bootstrap module");

  g_interp = PyInterpreterState_Get();
  g_start_pid = getpid();
  g_start_thread = pthread_self();
  if (int rc = pthread_atfork(before_fork, after_fork_parent, after_fork_child); rc != 0) {
    throw std::runtime_error(fmt::format("python: pthread_atfork: {}", std::strerror(rc)));
  }
  // Let the application threads of the workers take the GIL.
  g_main_tstate = PyEval_SaveThread();
  t_tstate = g_main_tstate;
}

GilGuard::GilGuard() {
  if (t_tstate == nullptr) t_tstate = PyThreadState_New(g_interp);
  PyEval_RestoreThread(t_tstate);
  t_holds_gil = true;
}

GilGuard::~GilGuard() {
  t_holds_gil = false;
  PyEval_SaveThread();
}

std::string take_exception_text() {
  PyObject* exc = nullptr;
  {
    PyObject *type, *value, *traceback;
    PyErr_Fetch(&type, &value, &traceback);
    if (type == nullptr) return "(no Python exception set)";
    PyErr_NormalizeException(&type, &value, &traceback);
    if (traceback != nullptr && value != nullptr) PyException_SetTraceback(value, traceback);
    exc = value;
    Py_XDECREF(type);
    Py_XDECREF(traceback);
  }
  std::string text;
  // During start-up the bootstrap may not exist yet: then the exception's str() is all we have.
  PyObject* format = g_bootstrap == nullptr
                         ? nullptr
                         : PyDict_GetItemString(PyModule_GetDict(g_bootstrap), "format_exception");
  PyObject* formatted = exc == nullptr      ? nullptr
                        : format != nullptr ? PyObject_CallOneArg(format, exc)
                                            : PyObject_Str(exc);
  Py_ssize_t size = 0;
  const char* utf8 = formatted == nullptr ? nullptr : PyUnicode_AsUTF8AndSize(formatted, &size);
  if (utf8 != nullptr) {
    text.assign(utf8, static_cast<std::size_t>(size));
    while (!text.empty() && text.back() == '\n') text.pop_back();
  } else {
    PyErr_Clear();
    text = "(the exception could not be formatted)";
  }
  Py_XDECREF(formatted);
  Py_XDECREF(exc);
  return text;
}

PyObject* bootstrap(const char* name) {
  PyObject* item = PyDict_GetItemString(PyModule_GetDict(g_bootstrap), name);
  if (item == nullptr) Py_FatalError("pyhost: a bootstrap helper is missing");
  return item;
}

}  // namespace pyhost
