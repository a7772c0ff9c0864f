#include "pyhost/wsgi.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cstdio>
#include <stdexcept>

#include "common/log.hpp"
#include "pyhost/interpreter.hpp"
#include "pyhost/uwsgi_module.hpp"
#include "server/protocol.hpp"

namespace pyhost {

namespace {

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
  return PyObject_GetAttrString(self, "write");
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
  // close() runs with no exception pending (the attribute lookup itself would clear it).
  PyObject *type, *value, *traceback;
  PyErr_Fetch(&type, &value, &traceback);
  PyObject* close = PyObject_GetAttrString(result, "close");
  if (close == nullptr) {
    PyErr_Clear();
  } else {
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

bool set_item(PyObject* dict, const char* key, PyObject* value) {
  return PyDict_SetItemString(dict, key, value) == 0;
}

int thread_core_index() {
  static std::atomic<int> next{0};
  thread_local int index = next.fetch_add(1, std::memory_order_relaxed);
  return index;
}

}  // namespace

WsgiApplication::WsgiApplication(const server::ApplicationSettings& settings) : settings_(settings) {
  if (!settings_.module.empty()) {
    what_ = fmt::format("module '{}'", settings_.module);
  } else {
    what_ = fmt::format("file '{}'", settings_.wsgi_file);
  }
  GilGuard gil;
  if (g_response_type == nullptr) {
    g_response_type = reinterpret_cast<PyTypeObject*>(PyType_FromSpec(&g_response_spec));
    if (g_response_type == nullptr)
      throw std::runtime_error("python: cannot create the response type:\n" + take_exception_text());
  }
  PyObject* io = PyImport_ImportModule("io");
  if (io == nullptr) throw std::runtime_error("python: cannot import io:\n" + take_exception_text());
  bytes_io_ = PyObject_GetAttrString(io, "BytesIO");
  Py_DECREF(io);
  if (bytes_io_ == nullptr) throw std::runtime_error("python: no io.BytesIO:\n" + take_exception_text());
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
  if (version_ == nullptr || uwsgi_version_ == nullptr || uwsgi_node_ == nullptr || http_ == nullptr ||
      https_ == nullptr) {
    throw std::runtime_error("python: cannot build the environ constants:\n" + take_exception_text());
  }
}

bool WsgiApplication::try_load(std::string& error) {
  std::string callable = settings_.callable.empty() ? "application" : settings_.callable;
  PyObject* module = nullptr;
  if (!settings_.module.empty()) {
    std::string name = settings_.module;
    if (const auto colon = name.find(':'); colon != std::string::npos) {  // --module NAME:callable
      callable = name.substr(colon + 1);
      name.resize(colon);
    }
    PyObject* py_name = PyUnicode_FromString(name.c_str());
    module = py_name == nullptr ? nullptr : PyObject_CallOneArg(bootstrap("load_module"), py_name);
    Py_XDECREF(py_name);
  } else if (!settings_.wsgi_file.empty()) {
    PyObject* path = PyUnicode_DecodeFSDefault(settings_.wsgi_file.c_str());
    module = path == nullptr ? nullptr : PyObject_CallOneArg(bootstrap("load_file"), path);
    Py_XDECREF(path);
  } else {
    error = "no application given (--module or --wsgi-file)";
    return false;
  }
  if (module == nullptr) {
    error = fmt::format("cannot import the WSGI application from {}:\n{}", what_, take_exception_text());
    return false;
  }
  PyObject* app = PyObject_GetAttrString(module, callable.c_str());
  Py_DECREF(module);  // sys.modules keeps it
  if (app == nullptr) {
    error = fmt::format("the WSGI application {} has no callable '{}':\n{}", what_, callable,
                        take_exception_text());
    return false;
  }
  if (!PyCallable_Check(app)) {
    error = fmt::format("'{}' in the WSGI application {} is a {}, not a callable", callable, what_,
                        Py_TYPE(app)->tp_name);
    Py_DECREF(app);
    return false;
  }
  Py_XSETREF(app_, app);
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
  if (!settings_.lazy_apps) return true;
  bool ok;
  {
    GilGuard gil;
    ok = try_load(error);
  }
  if (ok) common::log("worker {}: WSGI application loaded from {} (--lazy-apps)", worker_id, what_);
  return ok;
}

PyObject* WsgiApplication::build_environ(const server::Request& request, std::string_view& protocol) {
  PyObject* environ = PyDict_New();
  if (environ == nullptr) return nullptr;
  std::string_view content_length, https, scheme;
  server::VarsReader reader(request.payload);
  std::string_view key, value;
  while (reader.next(key, value)) {
    // PEP 3333 "native strings": every byte maps to one code point (latin-1), reversibly.
    PyObject* py_key = PyUnicode_DecodeLatin1(key.data(), static_cast<Py_ssize_t>(key.size()), nullptr);
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
    }
  }
  // wsgi.input: the body the worker buffered, cut to CONTENT_LENGTH (none without one).
  std::uint64_t length = 0;
  if (!server::parse_decimal(content_length, length)) length = 0;
  const std::string_view body = request.body.substr(0, std::min<std::uint64_t>(length, request.body.size()));
  PyObject* body_bytes = PyBytes_FromStringAndSize(body.data(), static_cast<Py_ssize_t>(body.size()));
  PyObject* input = body_bytes == nullptr ? nullptr : PyObject_CallOneArg(bytes_io_, body_bytes);
  Py_XDECREF(body_bytes);
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
  const bool ok = input != nullptr && url_scheme != nullptr && core != nullptr &&
                  set_item(environ, "wsgi.version", version_) && set_item(environ, "wsgi.input", input) &&
                  set_item(environ, "wsgi.errors", errors != nullptr ? errors : Py_None) &&
                  set_item(environ, "wsgi.url_scheme", url_scheme) &&
                  set_item(environ, "wsgi.multithread", multithread_) &&
                  set_item(environ, "wsgi.multiprocess", multiprocess_) &&
                  set_item(environ, "wsgi.run_once", Py_False) &&
                  set_item(environ, "wsgi.file_wrapper", file_wrapper_) &&
                  set_item(environ, "uwsgi.version", uwsgi_version_) &&
                  set_item(environ, "uwsgi.node", uwsgi_node_) && set_item(environ, "uwsgi.core", core);
  Py_XDECREF(input);
  Py_XDECREF(owned_scheme);
  Py_XDECREF(core);
  if (!ok) {
    Py_DECREF(environ);
    return nullptr;
  }
  return environ;
}

void WsgiApplication::internal_error(server::Reply& reply, std::string_view protocol,
                                     const std::string& what) {
  common::log("wsgi: {} failed, answering 500:\n{}", what_, what);
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
  if (app_ == nullptr) {
    PyErr_SetString(PyExc_RuntimeError, "no application loaded");
    return internal_error(reply, protocol, take_exception_text());
  }
  PyObject* environ = build_environ(request, protocol);
  if (environ == nullptr) return internal_error(reply, protocol, take_exception_text());
  auto* response = PyObject_New(ResponseObject, g_response_type);
  if (response == nullptr) {
    Py_DECREF(environ);
    return internal_error(reply, protocol, take_exception_text());
  }
  response->status = nullptr;
  response->headers = nullptr;
  response->body = &reply.body;
  response->headers_sent = false;
  PyObject* start_response = PyObject_GetAttrString(reinterpret_cast<PyObject*>(response), "start_response");
  PyObject* result = start_response == nullptr
                         ? nullptr
                         : PyObject_CallFunctionObjArgs(app_, environ, start_response, nullptr);
  const bool ok =
      result != nullptr && consume(result, response) && compose_head(reply.head, protocol, response);
  std::string error;
  if (!ok) error = take_exception_text();  // before the releases below can run any Python code
  response->body = nullptr;                // the app may keep write(); it must not reach this reply any more
  Py_XDECREF(result);
  Py_XDECREF(start_response);
  Py_DECREF(environ);
  Py_DECREF(response);
  if (!ok) internal_error(reply, protocol, error);
}

}  // namespace pyhost
