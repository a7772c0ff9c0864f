#include "pyhost/pyhost.hpp"

#include <cstdio>
#include <memory>
#include <string>

#include "pyhost/interpreter.hpp"
#include "pyhost/uwsgi_module.hpp"
#include "pyhost/wsgi.hpp"
#include "server/application.hpp"

namespace pyhost {

namespace {

std::unique_ptr<server::Application> create_application(const server::ApplicationSettings& settings,
                                                        cache::CacheSet& caches) {
  configure_uwsgi_module(settings, &caches);
  start_interpreter(settings);
  auto application = std::make_unique<WsgiApplication>(settings);
  if (!settings.lazy_apps) application->load();
  return application;
}

int run_script(const server::ApplicationSettings& settings, cache::CacheSet& caches,
               const std::string& path) {
  configure_uwsgi_module(settings, &caches);
  start_interpreter(settings);
  GilGuard gil;
  PyObject* result = nullptr;
  PyObject* run_path = nullptr;
  if (PyObject* runpy = PyImport_ImportModule("runpy"); runpy != nullptr) {
    run_path = PyObject_GetAttrString(runpy, "run_path");
    Py_DECREF(runpy);
  }
  PyObject* args = Py_BuildValue("(s)", path.c_str());
  PyObject* kwargs = Py_BuildValue("{s:s}", "run_name", "__main__");
  if (run_path != nullptr && args != nullptr && kwargs != nullptr)
    result = PyObject_Call(run_path, args, kwargs);
  Py_XDECREF(run_path);
  Py_XDECREF(args);
  Py_XDECREF(kwargs);
  int status = 0;
  if (result != nullptr) {
    Py_DECREF(result);
  } else if (PyErr_ExceptionMatches(PyExc_SystemExit)) {
    PyObject *type = nullptr, *value = nullptr, *traceback = nullptr;
    PyErr_Fetch(&type, &value, &traceback);
    PyErr_NormalizeException(&type, &value, &traceback);
    PyObject* code = value != nullptr ? PyObject_GetAttrString(value, "code") : nullptr;
    if (code == nullptr || code == Py_None) {
      PyErr_Clear();
    } else if (PyLong_Check(code)) {
      status = static_cast<int>(PyLong_AsLong(code));
    } else {  // sys.exit("message"): the message on stderr, status 1, as Python itself does
      if (PyObject* text = PyObject_Str(code); text != nullptr) {
        std::fprintf(stderr, "%s\n", PyUnicode_AsUTF8(text));
        Py_DECREF(text);
      }
      PyErr_Clear();
      status = 1;
    }
    Py_XDECREF(code);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(traceback);
  } else {
    std::string text = take_exception_text();
    if (!text.empty() && text.back() != '\n') text += '\n';
    std::fprintf(stderr, "--pyrun %s: %s", path.c_str(), text.c_str());
    status = 1;
  }
  for (const char* name : {"stdout", "stderr"}) {  // the script's buffered output, before the exit
    if (PyObject* stream = PySys_GetObject(name); stream != nullptr && stream != Py_None) {
      PyObject* flushed = PyObject_CallMethod(stream, "flush", nullptr);
      Py_XDECREF(flushed);
    }
  }
  PyErr_Clear();
  return status;
}

class PythonHost final : public server::ApplicationHost {
 public:
  std::unique_ptr<server::Application> create(const server::ApplicationSettings& settings,
                                              cache::CacheSet& caches) override {
    return create_application(settings, caches);
  }
  int run_script(const server::ApplicationSettings& settings, cache::CacheSet& caches,
                 const std::string& path) override {
    return pyhost::run_script(settings, caches, path);
  }
};

}  // namespace

void register_host() {
  static PythonHost host;
  server::register_application_host(&host);
}

}  // namespace pyhost
