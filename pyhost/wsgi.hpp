// The WSGI adapter (PEP 3333) behind server::Application: environ from the uwsgi vars, the response
// as uWSGI writes it (status line from SERVER_PROTOCOL, the app's headers as given, no Content-Length
// added, then the body).
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <string>

#include "server/dispatcher.hpp"

namespace pyhost {

class WsgiApplication final : public server::Application {
 public:
  explicit WsgiApplication(const server::ApplicationSettings& settings);
  // The Python objects are deliberately never released: the interpreter is never finalised (workers
  // _exit, and application threads may still be inside Python when the master returns).
  ~WsgiApplication() override = default;

  // Imports the module / runs the file and takes its callable. Throws std::runtime_error with the
  // traceback. Called without the GIL.
  void load();

  void handle(const server::Request& request, server::Reply& reply) override;
  bool blocking() const override { return true; }
  // With --lazy-apps, loads the application here: false with the traceback when it cannot.
  bool worker_started(int worker_id, std::string& error) override;

 private:
  bool try_load(std::string& error);  // GIL held
  PyObject* build_environ(const server::Request& request, std::string_view& protocol);
  void internal_error(server::Reply& reply, std::string_view protocol, const std::string& what);

  server::ApplicationSettings settings_;
  std::string what_;         // "module 'x'" / "file 'y'", for messages
  PyObject* app_ = nullptr;  // the callable
  // Per-process constants of every environ, made once.
  PyObject* version_ = nullptr;
  PyObject* multithread_ = nullptr;
  PyObject* multiprocess_ = nullptr;
  PyObject* bytes_io_ = nullptr;
  PyObject* file_wrapper_ = nullptr;
  PyObject* uwsgi_version_ = nullptr;
  PyObject* uwsgi_node_ = nullptr;
  PyObject* http_ = nullptr;
  PyObject* https_ = nullptr;
};

}  // namespace pyhost
