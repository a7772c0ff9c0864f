// The WSGI adapter (PEP 3333) behind server::Application: environ from the uwsgi vars, the response
// as uWSGI writes it (status line from SERVER_PROTOCOL, the app's headers as given, no Content-Length
// added, then the body).
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <array>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

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
  // One loaded callable: the default application (mountpoint "") or a --mount.
  struct App {
    std::string mountpoint;  // "" for the default; else "/x", never ending in '/'
    std::string source;      // the file (.py/.wsgi) or module[:callable] it comes from
    std::string what;        // "module 'x'" / "file 'y'", for messages
    bool is_file = false;    // source is run as a file (--wsgi-file), not imported as a module
    PyObject* callable = nullptr;
  };

  bool try_load(std::string& error);  // GIL held
  bool load_app(App& app, std::string& error);
  // The environ, and the application that takes it (nullptr: none matches and there is no default).
  PyObject* build_environ(const server::Request& request, std::string_view& protocol, const App*& app);
  PyObject* environ_key(std::string_view key, std::size_t position);  // a new reference
  PyObject* spooled_input(int body_fd);                               // a new reference
  void internal_error(server::Reply& reply, std::string_view protocol, const std::string& what,
                      const App* app);

  server::ApplicationSettings settings_;
  std::vector<App> apps_;     // the default first when there is one, then the mounts
  bool has_default_ = false;  // apps_[0] is the default application
  std::string what_;          // what the configuration names, for the load log line
  bool validate_ = false;     // UCACHED_WSGI_VALIDATE: every callable wrapped in wsgiref.validate
  // The environ's keys as interned str, made once per distinct key (the common vars of every
  // request): no decoding per request, and their hash is cached for the dict insertions. Bounded so
  // clients sending ever new header names cannot grow it; GIL-protected.
  struct KeyHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view key) const { return std::hash<std::string_view>{}(key); }
  };
  std::unordered_map<std::string, PyObject*, KeyHash, std::equal_to<>> keys_;
  // The key last seen at each position of the vars block (borrowed from keys_): nginx sends the same
  // keys in the same order on every request, so most lookups are one length check and one memcmp.
  std::array<PyObject*, 64> by_position_{};
  PyObject* script_name_key_ = nullptr;
  PyObject* path_info_key_ = nullptr;
  PyObject* empty_str_ = nullptr;
  // Per-process constants of every environ, made once.
  PyObject* version_ = nullptr;
  PyObject* multithread_ = nullptr;
  PyObject* multiprocess_ = nullptr;
  PyObject* bytes_io_ = nullptr;
  PyObject* open_ = nullptr;  // io.open
  PyObject* file_wrapper_ = nullptr;
  PyObject* uwsgi_version_ = nullptr;
  PyObject* uwsgi_node_ = nullptr;
  PyObject* http_ = nullptr;
  PyObject* https_ = nullptr;
};

}  // namespace pyhost
