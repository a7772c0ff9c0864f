#include "pyhost/wsgi.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <utility>

#include "common/log.hpp"
#include "pyhost/autoreload.hpp"
#include "pyhost/interpreter.hpp"
#include "pyhost/uwsgi_module.hpp"
#include "server/protocol.hpp"

namespace pyhost {

namespace {

// Attribute names and environ keys used on every request, interned once (PyObject_GetAttrString and
// PyDict_SetItemString would build, hash and intern a new str per call: measurable per request).
struct Names {
  PyObject *write, *start_response, *close;
  PyObject *wsgi_version, *wsgi_input, *wsgi_errors, *wsgi_url_scheme, *wsgi_multithread, *wsgi_multiprocess,
      *wsgi_run_once, *wsgi_file_wrapper, *uwsgi_version, *uwsgi_node, *uwsgi_core;
};
Names g_names{};

bool make_names() {
  if (g_names.write != nullptr) return true;
  const std::pair<PyObject**, const char*> all[] = {
      {&g_names.write, "write"},
      {&g_names.start_response, "start_response"},
      {&g_names.close, "close"},
      {&g_names.wsgi_version, "wsgi.version"},
      {&g_names.wsgi_input, "wsgi.input"},
      {&g_names.wsgi_errors, "wsgi.errors"},
      {&g_names.wsgi_url_scheme, "wsgi.url_scheme"},
      {&g_names.wsgi_multithread, "wsgi.multithread"},
      {&g_names.wsgi_multiprocess, "wsgi.multiprocess"},
      {&g_names.wsgi_run_once, "wsgi.run_once"},
      {&g_names.wsgi_file_wrapper, "wsgi.file_wrapper"},
      {&g_names.uwsgi_version, "uwsgi.version"},
      {&g_names.uwsgi_node, "uwsgi.node"},
      {&g_names.uwsgi_core, "uwsgi.core"},
  };
  for (const auto& [slot, text] : all) {
    *slot = PyUnicode_InternFromString(text);
    if (*slot == nullptr) return false;
  }
  return true;
}

// ---- the start_response / write object of one request

struct ResponseObject {
  PyObject_HEAD PyObject* status;  // str or bytes; null until start_response()
  PyObject* headers;               // the list given to start_response()
  std::string* body;               // where write() appends; null once the request is over
  bool headers_sent;  // a non-empty chunk was produced: start_response() can no longer change them
};

void response_dealloc(PyObject* self) {
  auto* response = reinterpret_cast<ResponseObject*>(self);
  Py_XDECREF(response->status);
  Py_XDECREF(response->headers);
  PyTypeObject* type = Py_TYPE(self);
  type->tp_free(self);
  Py_DECREF(type);  // instances of heap types own a reference to their type
}

// start_response(status, response_headers, exc_info=None) -> write
PyObject* response_start(PyObject* self, PyObject* const* args, Py_ssize_t nargs) {
  auto* response = reinterpret_cast<ResponseObject*>(self);
  if (nargs < 2 || nargs > 3) {
    PyErr_Format(PyExc_TypeError, "start_response() takes 2 or 3 arguments (%zd given)", nargs);
    return nullptr;
  }
  PyObject* exc_info = nargs == 3 ? args[2] : Py_None;
  if (exc_info != Py_None) {
    if (response->headers_sent) {
      // PEP 3333: too late to change the status: re-raise the application's exception.
      PyObject *type, *value, *traceback;
      if (!PyArg_ParseTuple(exc_info, "OOO:start_response exc_info", &type, &value, &traceback))
        return nullptr;
      Py_INCREF(type);
      Py_INCREF(value);
      Py_INCREF(traceback);
      PyErr_Restore(type, value, traceback);
      return nullptr;
    }
  } else if (response->headers_sent) {
    PyErr_SetString(PyExc_RuntimeError,
                    "start_response() called again without exc_info after the body began");
    return nullptr;
  }
  if (!PyUnicode_Check(args[0]) && !PyBytes_Check(args[0])) {
    PyErr_Format(PyExc_TypeError, "start_response() status must be str, not %.100s",
                 Py_TYPE(args[0])->tp_name);
    return nullptr;
  }
  if (!PyList_Check(args[1]) && !PyTuple_Check(args[1])) {
    PyErr_Format(PyExc_TypeError,
                 "start_response() headers must be a list of (name, value) tuples, not %.100s",
                 Py_TYPE(args[1])->tp_name);
    return nullptr;
  }
  Py_INCREF(args[0]);
  Py_INCREF(args[1]);
  Py_XSETREF(response->status, args[0]);
  Py_XSETREF(response->headers, args[1]);
  return PyObject_GetAttr(self, g_names.write);
}

// Appends one body chunk (from the iterable or write()). Needs the GIL; sets an exception on error.
bool append_chunk(ResponseObject* response, PyObject* chunk) {
  if (!PyBytes_Check(chunk)) {
    PyErr_Format(PyExc_TypeError, "the application produced a %.100s where PEP 3333 wants bytes",
                 Py_TYPE(chunk)->tp_name);
    return false;
  }
  const Py_ssize_t size = PyBytes_GET_SIZE(chunk);
  if (size == 0) return true;
  if (response->status == nullptr) {
    PyErr_SetString(PyExc_RuntimeError,
                    "the application produced body bytes before calling start_response()");
    return false;
  }
  if (response->body == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "write() called after the response ended");
    return false;
  }
  response->headers_sent = true;
  response->body->append(PyBytes_AS_STRING(chunk), static_cast<std::size_t>(size));
  return true;
}

PyObject* response_write(PyObject* self, PyObject* data) {
  if (!append_chunk(reinterpret_cast<ResponseObject*>(self), data)) return nullptr;
  Py_RETURN_NONE;
}

PyMethodDef g_response_methods[] = {
    {"start_response", reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(response_start)),
     METH_FASTCALL, "start_response(status, response_headers, exc_info=None) -> write"},
    {"write", response_write, METH_O, "write(data): the PEP 3333 write() callable"},
    {nullptr, nullptr, 0, nullptr},
};

PyType_Slot g_response_slots[] = {
    {Py_tp_dealloc, reinterpret_cast<void*>(response_dealloc)},
    {Py_tp_methods, g_response_methods},
    {0, nullptr},
};

PyType_Spec g_response_spec = {"_pyhost.Response", sizeof(ResponseObject), 0, Py_TPFLAGS_DEFAULT,
                               g_response_slots};

PyTypeObject* g_response_type = nullptr;

// ---- helpers

// Appends a str as ISO-8859-1 (PEP 3333's encoding of status and headers), or bytes as they are.
// Refuses CR/LF, which would let a header value start a new header.
bool append_latin1(std::string& out, PyObject* object, const char* what) {
  std::size_t start = out.size();
  if (PyBytes_Check(object)) {
    out.append(PyBytes_AS_STRING(object), static_cast<std::size_t>(PyBytes_GET_SIZE(object)));
  } else if (PyUnicode_Check(object)) {
    if (PyUnicode_KIND(object) != PyUnicode_1BYTE_KIND) {
      PyErr_Format(PyExc_ValueError, "%s %R has characters outside ISO-8859-1", what, object);
      return false;
    }
    out.append(reinterpret_cast<const char*>(PyUnicode_1BYTE_DATA(object)),
               static_cast<std::size_t>(PyUnicode_GET_LENGTH(object)));
  } else {
    PyErr_Format(PyExc_TypeError, "%s must be str, not %.100s", what, Py_TYPE(object)->tp_name);
    return false;
  }
  if (out.find_first_of("\r\n", start) != std::string::npos) {
    PyErr_Format(PyExc_ValueError, "%s %R contains a line break", what, object);
    return false;
  }
  return true;
}

bool compose_head(std::string& head, std::string_view protocol, ResponseObject* response) {
  if (response->status == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "the application returned without calling start_response()");
    return false;
  }
  head.assign(protocol);
  head.push_back(' ');
  if (!append_latin1(head, response->status, "status")) return false;
  head.append("\r\n");
  PyObject* headers = PySequence_Fast(response->headers, "headers must be a sequence");
  if (headers == nullptr) return false;
  const Py_ssize_t count = PySequence_Fast_GET_SIZE(headers);
  PyObject** items = PySequence_Fast_ITEMS(headers);
  bool ok = true;
  for (Py_ssize_t i = 0; ok && i < count; ++i) {
    PyObject* pair = items[i];
    if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
      PyErr_Format(PyExc_TypeError, "header %zd must be a (name, value) tuple, not %R", i, pair);
      ok = false;
      break;
    }
    ok = append_latin1(head, PyTuple_GET_ITEM(pair, 0), "header name");
    if (ok) head.append(": ");
    ok = ok && append_latin1(head, PyTuple_GET_ITEM(pair, 1), "header value");
    if (ok) head.append("\r\n");
  }
  Py_DECREF(headers);
  if (ok) head.append("\r\n");
  return ok;
}

// Runs the iterable into the body, then its close() whatever happened (PEP 3333).
bool consume(PyObject* result, ResponseObject* response) {
  bool ok = true;
  if (PyList_CheckExact(result) || PyTuple_CheckExact(result)) {
    const Py_ssize_t count = PySequence_Fast_GET_SIZE(result);
    PyObject** items = PySequence_Fast_ITEMS(result);
    for (Py_ssize_t i = 0; ok && i < count; ++i) ok = append_chunk(response, items[i]);
  } else {
    PyObject* iterator = PyObject_GetIter(result);
    if (iterator == nullptr) {
      ok = false;
    } else {
      while (PyObject* chunk = PyIter_Next(iterator)) {
        ok = append_chunk(response, chunk);
        Py_DECREF(chunk);
        if (!ok) break;
      }
      if (ok && PyErr_Occurred()) ok = false;
      Py_DECREF(iterator);
    }
  }
  // A list or tuple has no close(): no lookup (a failed one builds an AttributeError per request).
  if (PyList_CheckExact(result) || PyTuple_CheckExact(result)) return ok;
  // close() runs with no exception pending (the attribute lookup itself would clear it).
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  PyObject* close = nullptr;
  if (_PyObject_LookupAttr(result, g_names.close, &close) < 0)
    PyErr_Clear();  // 0: none, without an exception
  if (close != nullptr) {
    PyObject* closed = PyObject_CallNoArgs(close);
    Py_DECREF(close);
    if (closed == nullptr) {
      if (type == nullptr) return false;  // close()'s own error is the one to report
      // The body's error is the one worth reporting; close()'s goes to the log.
      common::log("wsgi: close() of the response iterable failed as well:\n{}", take_exception_text());
    }
    Py_XDECREF(closed);
  }
  PyErr_Restore(type, value, traceback);
  return ok;
}

bool set_item(PyObject* dict, PyObject* key, PyObject* value) {
  return PyDict_SetItem(dict, key, value) == 0;
}

int thread_core_index() {
  static std::atomic<int> next{0};
  thread_local int index = next.fetch_add(1, std::memory_order_relaxed);
  return index;
}

}  // namespace

WsgiApplication::WsgiApplication(const server::ApplicationSettings& settings) : settings_(settings) {
  std::vector<std::string> names;
  if (!settings_.module.empty() || !settings_.wsgi_file.empty()) {
    App app;
    app.source = settings_.module.empty() ? settings_.wsgi_file : settings_.module;
    app.what = settings_.module.empty() ? fmt::format("file '{}'", settings_.wsgi_file)
                                        : fmt::format("module '{}'", settings_.module);
    app.is_file = settings_.module.empty();
    names.push_back(app.what);
    apps_.push_back(std::move(app));
    has_default_ = true;
  }
  for (const std::string& mount : settings_.mounts) {  // MOUNTPOINT=APP, checked by config/
    const auto equals = mount.find('=');
    App app;
    app.mountpoint = mount.substr(0, equals);
    while (!app.mountpoint.empty() && app.mountpoint.back() == '/') app.mountpoint.pop_back();
    app.source = mount.substr(equals + 1);
    app.what = fmt::format("'{}' mounted on '{}'", app.source, app.mountpoint);
    // As uWSGI's mount loader: a name ending in .py or .wsgi is a file, anything else a module.
    app.is_file = app.source.ends_with(".py") || app.source.ends_with(".wsgi");
    for (const App& other : apps_) {
      if (other.mountpoint == app.mountpoint)
        throw std::runtime_error(
            fmt::format("--mount {}: mountpoint '{}' already has {}", mount, app.mountpoint, other.what));
    }
    names.push_back(app.what);
    if (app.mountpoint.empty()) {  // --mount /=app: the default application
      apps_.insert(apps_.begin(), std::move(app));
      has_default_ = true;
    } else {
      apps_.push_back(std::move(app));
    }
  }
  what_ = fmt::format("{}", fmt::join(names, ", "));
  const char* validate = std::getenv("UCACHED_WSGI_VALIDATE");
  validate_ = validate != nullptr && *validate != '\0' && std::string_view(validate) != "0";
  GilGuard gil;
  if (!make_names()) throw std::runtime_error("python: cannot intern names:\n" + take_exception_text());
  if (g_response_type == nullptr) {
    g_response_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&g_response_spec));
    if (g_response_type == nullptr)
      throw std::runtime_error("python: cannot create the response type:\n" + take_exception_text());
  }
  PyObject* io = PyImport_ImportModule("io");
  if (io == nullptr) throw std::runtime_error("python: cannot import io:\n" + take_exception_text());
  bytes_io_ = PyObject_GetAttrString(io, "BytesIO");
  open_ = PyObject_GetAttrString(io, "open");
  Py_DECREF(io);
  if (bytes_io_ == nullptr || open_ == nullptr)
    throw std::runtime_error("python: no io.BytesIO or io.open:\n" + take_exception_text());
  file_wrapper_ = bootstrap("FileWrapper");
  Py_INCREF(file_wrapper_);
  version_ = Py_BuildValue("(ii)", 1, 0);
  multithread_ = PyBool_FromLong(settings_.threads > 1);
  multiprocess_ = PyBool_FromLong(settings_.processes > 1);
  uwsgi_version_ = PyBytes_FromString("2.0.21-ucached");
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  uwsgi_node_ = PyBytes_FromString(host);
  http_ = PyUnicode_InternFromString("http");
  https_ = PyUnicode_InternFromString("https");
  script_name_key_ = PyUnicode_InternFromString("SCRIPT_NAME");
  path_info_key_ = PyUnicode_InternFromString("PATH_INFO");
  empty_str_ = PyUnicode_InternFromString("");
  if (version_ == nullptr || uwsgi_version_ == nullptr || uwsgi_node_ == nullptr || http_ == nullptr ||
      https_ == nullptr || script_name_key_ == nullptr || path_info_key_ == nullptr ||
      empty_str_ == nullptr) {
    throw std::runtime_error("python: cannot build the environ constants:\n" + take_exception_text());
  }
}

bool WsgiApplication::load_app(App& app, std::string& error) {
  std::string callable = settings_.callable.empty() ? "application" : settings_.callable;
  std::string source = app.source;
  PyObject* module = nullptr;
  if (app.is_file) {
    PyObject* path = PyUnicode_DecodeFSDefault(source.c_str());
    module = path == nullptr ? nullptr : PyObject_CallOneArg(bootstrap("load_file"), path);
    Py_XDECREF(path);
  } else {
    if (const auto colon = source.find(':'); colon != std::string::npos) {  // NAME:callable
      callable = source.substr(colon + 1);
      source.resize(colon);
    }
    PyObject* py_name = PyUnicode_FromString(source.c_str());
    module = py_name == nullptr ? nullptr : PyObject_CallOneArg(bootstrap("load_module"), py_name);
    Py_XDECREF(py_name);
  }
  if (module == nullptr) {
    error = fmt::format("cannot import the WSGI application from {}:\n{}", app.what, take_exception_text());
    return false;
  }
  PyObject* callable_object = PyObject_GetAttrString(module, callable.c_str());
  Py_DECREF(module);  // sys.modules keeps it
  if (callable_object == nullptr) {
    error = fmt::format("the WSGI application {} has no callable '{}':\n{}", app.what, callable,
                        take_exception_text());
    return false;
  }
  if (!PyCallable_Check(callable_object)) {
    error = fmt::format("'{}' in the WSGI application {} is a {}, not a callable", callable, app.what,
                        Py_TYPE(callable_object)->tp_name);
    Py_DECREF(callable_object);
    return false;
  }
  if (validate_) {  // a debugging aid (and the test suite's PEP 3333 check): see docs/python.md
    PyObject* wrapped = PyObject_CallOneArg(bootstrap("validate"), callable_object);
    Py_DECREF(callable_object);
    if (wrapped == nullptr) {
      error = fmt::format("cannot wrap {} in wsgiref.validate:\n{}", app.what, take_exception_text());
      return false;
    }
    callable_object = wrapped;
  }
  Py_XSETREF(app.callable, callable_object);
  return true;
}

bool WsgiApplication::try_load(std::string& error) {
  if (apps_.empty()) {
    error = "no application given (--module, --wsgi-file or --mount)";
    return false;
  }
  for (App& app : apps_) {
    if (!load_app(app, error)) return false;
    if (!app.mountpoint.empty())
      common::log("mounting {} on {}", app.source, app.mountpoint);  // uWSGI's words
  }
  return true;
}

void WsgiApplication::load() {
  std::string error;
  bool ok;
  {
    GilGuard gil;
    ok = try_load(error);
  }
  if (!ok) throw std::runtime_error(error);
  common::log("python: WSGI application loaded from {}", what_);
}

bool WsgiApplication::worker_started(int worker_id, std::string& error) {
  set_worker_id(worker_id);
  if (settings_.lazy_apps) {
    bool ok;
    {
      GilGuard gil;
      ok = try_load(error);
    }
    if (!ok) return false;
    common::log("worker {}: WSGI application loaded from {} (--lazy-apps)", worker_id, what_);
  }
  start_autoreloader(settings_.py_autoreload, worker_id);  // once the application's modules are loaded
  return true;
}

PyObject* WsgiApplication::environ_key(std::string_view key, std::size_t position) {
  constexpr std::size_t kMaxKeys = 512;  // far more than nginx's uwsgi_params plus a browser's headers
  // First guess: the key seen at this position last time (a memcmp, no hashing). An interned key made
  // by DecodeLatin1 holds exactly the key's bytes.
  const bool positioned = position < by_position_.size();
  if (PyObject* last = positioned ? by_position_[position] : nullptr;
      last != nullptr && static_cast<std::size_t>(PyUnicode_GET_LENGTH(last)) == key.size() &&
      std::memcmp(PyUnicode_1BYTE_DATA(last), key.data(), key.size()) == 0) {
    Py_INCREF(last);
    return last;
  }
  PyObject* made = nullptr;
  if (auto found = keys_.find(key); found != keys_.end()) {
    made = found->second;
    Py_INCREF(made);
  } else {
    // PEP 3333 "native strings": every byte maps to one code point (latin-1), reversibly.
    made = PyUnicode_DecodeLatin1(key.data(), static_cast<Py_ssize_t>(key.size()), nullptr);
    if (made == nullptr || keys_.size() >= kMaxKeys) return made;
    PyUnicode_InternInPlace(&made);
    Py_INCREF(made);  // the cache's reference
    keys_.emplace(std::string(key), made);
  }
  if (positioned) by_position_[position] = made;  // borrowed: keys_ keeps it
  return made;
}

PyObject* WsgiApplication::build_environ(const server::Request& request, std::string_view& protocol,
                                         const App*& app) {
  PyObject* environ = PyDict_New();
  if (environ == nullptr) return nullptr;
  std::string_view content_length, https, scheme, script_name, path_info;
  bool has_script_name = false;
  server::VarsReader reader(request.payload);
  std::string_view key, value;
  for (std::size_t position = 0; reader.next(key, value); ++position) {
    // nginx passes every request header as HTTP_*, Content-Type and Content-Length too, beside the
    // CONTENT_TYPE/CONTENT_LENGTH of uwsgi_params; PEP 3333 (CGI) has only the latter. uWSGI keeps both.
    if (key.starts_with("HTTP_CONTENT_") && (key == "HTTP_CONTENT_TYPE" || key == "HTTP_CONTENT_LENGTH"))
      continue;
    PyObject* py_key = environ_key(key, position);
    PyObject* py_value = PyUnicode_DecodeLatin1(value.data(), static_cast<Py_ssize_t>(value.size()), nullptr);
    const bool ok =
        py_key != nullptr && py_value != nullptr && PyDict_SetItem(environ, py_key, py_value) == 0;
    Py_XDECREF(py_key);
    Py_XDECREF(py_value);
    if (!ok) {
      Py_DECREF(environ);
      return nullptr;
    }
    if (key == "SERVER_PROTOCOL" && !value.empty()) {
      protocol = value;
    } else if (key == "CONTENT_LENGTH") {
      content_length = value;
    } else if (key == "HTTPS") {
      https = value;
    } else if (key == "UWSGI_SCHEME") {
      scheme = value;
    } else if (key == "SCRIPT_NAME") {
      script_name = value;
      has_script_name = true;
    } else if (key == "PATH_INFO") {
      path_info = value;
    }
  }
  // Which application: as uWSGI. --manage-script-name: the longest mountpoint that is a whole-segment
  // prefix of PATH_INFO, which moves from PATH_INFO to SCRIPT_NAME. Otherwise the mountpoint equal to
  // the SCRIPT_NAME the web server sent. Else the default application.
  app = has_default_ ? &apps_.front() : nullptr;
  std::size_t moved = 0;  // bytes of PATH_INFO that became SCRIPT_NAME
  bool matched = false;
  for (const App& candidate : apps_) {
    const std::string& point = candidate.mountpoint;
    if (point.empty()) continue;
    if (settings_.manage_script_name) {
      if (point.size() > moved && path_info.starts_with(point) &&
          (path_info.size() == point.size() || path_info[point.size()] == '/')) {
        app = &candidate;
        moved = point.size();
        matched = true;
      }
    } else if (has_script_name && script_name == point) {
      app = &candidate;
      break;
    }
  }
  bool ok = true;
  if (matched) {
    PyObject* new_script = PyUnicode_DecodeLatin1(path_info.data(), static_cast<Py_ssize_t>(moved), nullptr);
    PyObject* new_path = PyUnicode_DecodeLatin1(path_info.data() + moved,
                                                static_cast<Py_ssize_t>(path_info.size() - moved), nullptr);
    ok = new_script != nullptr && new_path != nullptr &&
         PyDict_SetItem(environ, script_name_key_, new_script) == 0 &&
         PyDict_SetItem(environ, path_info_key_, new_path) == 0;
    Py_XDECREF(new_script);
    Py_XDECREF(new_path);
  } else if (!has_script_name) {  // uWSGI always passes one ("" at the root)
    ok = PyDict_SetItem(environ, script_name_key_, empty_str_) == 0;
  }
  // wsgi.input: the body the worker buffered, cut to CONTENT_LENGTH (none without one).
  PyObject* input = nullptr;
  if (request.body_fd >= 0) {
    input = spooled_input(request.body_fd);
  } else {
    std::uint64_t length = 0;
    if (!server::parse_decimal(content_length, length)) length = 0;
    const std::string_view body =
        request.body.substr(0, std::min<std::uint64_t>(length, request.body.size()));
    PyObject* body_bytes = PyBytes_FromStringAndSize(body.data(), static_cast<Py_ssize_t>(body.size()));
    input = body_bytes == nullptr ? nullptr : PyObject_CallOneArg(bytes_io_, body_bytes);
    Py_XDECREF(body_bytes);
  }
  PyObject* url_scheme = nullptr;
  PyObject* owned_scheme = nullptr;
  if (!scheme.empty()) {
    owned_scheme = PyUnicode_DecodeLatin1(scheme.data(), static_cast<Py_ssize_t>(scheme.size()), nullptr);
    url_scheme = owned_scheme;
  } else {
    const bool secure = !https.empty() && (https[0] == 'o' || https[0] == 'O' || https[0] == '1');
    url_scheme = secure ? https_ : http_;
  }
  PyObject* errors = PySys_GetObject("stderr");  // borrowed; the app may have replaced it
  PyObject* core = PyLong_FromLong(thread_core_index());
  ok = ok && input != nullptr && url_scheme != nullptr && core != nullptr &&
       set_item(environ, g_names.wsgi_version, version_) && set_item(environ, g_names.wsgi_input, input) &&
       set_item(environ, g_names.wsgi_errors, errors != nullptr ? errors : Py_None) &&
       set_item(environ, g_names.wsgi_url_scheme, url_scheme) &&
       set_item(environ, g_names.wsgi_multithread, multithread_) &&
       set_item(environ, g_names.wsgi_multiprocess, multiprocess_) &&
       set_item(environ, g_names.wsgi_run_once, Py_False) &&
       (!settings_.file_wrapper || set_item(environ, g_names.wsgi_file_wrapper, file_wrapper_)) &&
       set_item(environ, g_names.uwsgi_version, uwsgi_version_) &&
       set_item(environ, g_names.uwsgi_node, uwsgi_node_) && set_item(environ, g_names.uwsgi_core, core);
  Py_XDECREF(input);
  Py_XDECREF(owned_scheme);
  Py_XDECREF(core);
  if (!ok) {
    Py_DECREF(environ);
    return nullptr;
  }
  return environ;
}

// A body the worker spooled to a file (--post-buffering): a buffered reader of its own descriptor, so
// it stays readable whatever the worker does with its own once the request is over.
PyObject* WsgiApplication::spooled_input(int body_fd) {
  const int fd = fcntl(body_fd, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) {
    PyErr_SetFromErrno(PyExc_OSError);
    return nullptr;
  }
  if (lseek(fd, 0, SEEK_SET) != 0) {
    PyErr_SetFromErrno(PyExc_OSError);
    close(fd);
    return nullptr;
  }
  PyObject* input = PyObject_CallFunction(open_, "is", fd, "rb");
  if (input == nullptr) close(fd);
  return input;
}

void WsgiApplication::internal_error(server::Reply& reply, std::string_view protocol, const std::string& what,
                                     const App* app) {
  common::log("wsgi: {} failed, answering 500:\n{}", app != nullptr ? app->what : what_, what);
  reply.head.clear();
  reply.body.clear();
  fmt::format_to(std::back_inserter(reply.head),
                 "{} 500 Internal Server Error\r\nContent-Type: text/plain\r\nContent-Length: 22\r\n\r\n",
                 protocol);
  reply.body.assign("Internal Server Error\n");
  reply.failed = true;  // the stats' `exceptions`
}

void WsgiApplication::handle(const server::Request& request, server::Reply& reply) {
  std::string_view protocol = "HTTP/1.0";  // uWSGI's default when SERVER_PROTOCOL is absent
  GilGuard gil;
  const App* app = nullptr;
  PyObject* environ = build_environ(request, protocol, app);
  if (environ == nullptr) return internal_error(reply, protocol, take_exception_text(), app);
  if (app == nullptr || app->callable == nullptr) {
    Py_DECREF(environ);
    common::log("--- no python application found, check your startup logs for errors ---");  // uWSGI's words
    return internal_error(reply, protocol, "no application for this SCRIPT_NAME/PATH_INFO", app);
  }
  auto* response = PyObject_New(ResponseObject, g_response_type);
  if (response == nullptr) {
    Py_DECREF(environ);
    return internal_error(reply, protocol, take_exception_text(), app);
  }
  response->status = nullptr;
  response->headers = nullptr;
  response->body = &reply.body;
  response->headers_sent = false;
  PyObject* start_response = PyObject_GetAttr(reinterpret_cast<PyObject*>(response), g_names.start_response);
  PyObject* args[] = {environ, start_response};
  PyObject* result =
      start_response == nullptr ? nullptr : PyObject_Vectorcall(app->callable, args, 2, nullptr);
  const bool ok =
      result != nullptr && consume(result, response) && compose_head(reply.head, protocol, response);
  std::string error;
  if (!ok) error = take_exception_text();  // before the releases below can run any Python code
  response->body = nullptr;                // the app may keep write(); it must not reach this reply any more
  Py_XDECREF(result);
  Py_XDECREF(start_response);
  Py_DECREF(environ);
  Py_DECREF(response);
  if (!ok) internal_error(reply, protocol, error, app);
}

}  // namespace pyhost
