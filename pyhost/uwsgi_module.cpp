// The uwsgi module's cache API, with uWSGI 2.0.21's signatures and results (spec §7): positional
// arguments only, True / None (never False, never an exception for a cache-level failure), bytes
// results, str keys and values encoded UTF-8. Deliberate differences (docs/python.md):
// - a value or key that is neither str nor bytes raises TypeError naming the argument (uWSGI's
//   message does not; issue #1678 reports workers dying on it);
// - keys are never truncated to 16 bits (uWSGI aliases "a"*65537 to "a"): a key longer than the
//   cache's keysize fails with None, and a remote call with a key over 65535 bytes fails with None;
// - remote cache_inc/dec/mul/div really compute (get, then update: not atomic across clients);
//   uWSGI stores the operand instead;
// - a bare "host:port" or socket path as the cache argument means that server's default cache.
// Local calls keep the GIL (a local operation takes tens of ns, less than releasing and retaking it);
// remote round trips, cache_keys and cache_clear release it.
#include "pyhost/uwsgi_module.hpp"

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <ctime>
#include <string>
#include <string_view>
#include <vector>

#include "common/log.hpp"
#include "pyhost/cache_target.hpp"
#include "pyhost/interpreter.hpp"
#include "server/client.hpp"

namespace pyhost {

namespace {

constexpr const char* kVersion = "2.0.21-ucached";  // uWSGI's API level, then who implements it

struct Context {
  server::ApplicationSettings settings;
  cache::CacheSet* caches = nullptr;
  int timeout_ms = 4000;
};
Context g_context;
std::atomic<int> g_worker_id{0};

using Args = PyObject* const*;
using MathOp = cache::Cache::MathOp;

// ---- argument conversion (each sets a Python exception and returns false on error)

// Positional only, with uWSGI's (PyArg_ParseTuple's) wording for the errors.
bool check_count(const char* fn, Py_ssize_t nargs, PyObject* kwnames, Py_ssize_t min, Py_ssize_t max) {
  if (kwnames != nullptr && PyTuple_GET_SIZE(kwnames) > 0) {
    PyErr_Format(PyExc_TypeError, "%s() takes no keyword arguments", fn);
    return false;
  }
  if (nargs >= min && nargs <= max) return true;
  const Py_ssize_t bound = nargs < min ? min : max;
  PyErr_Format(PyExc_TypeError, "%s() takes %s %zd argument%s (%zd given)", fn,
               min == max    ? "exactly"
               : nargs < min ? "at least"
                             : "at most",
               bound, bound == 1 ? "" : "s", nargs);
  return false;
}

// A str's UTF-8 bytes. The view stays valid while the object is alive (the call's duration): an ASCII
// str's characters are its UTF-8, in place; any other str caches its UTF-8 form in the object.
bool utf8_of(PyObject* str, std::string_view& out) {
  if (PyUnicode_IS_COMPACT_ASCII(str)) {  // most keys and cache names
    out = std::string_view(static_cast<const char*>(PyUnicode_DATA(str)),
                           static_cast<std::size_t>(PyUnicode_GET_LENGTH(str)));
    return true;
  }
  Py_ssize_t size = 0;
  const char* data = PyUnicode_AsUTF8AndSize(str, &size);
  if (data == nullptr) return false;
  out = std::string_view(data, static_cast<std::size_t>(size));
  return true;
}

// str (as UTF-8) or bytes (immutable: the view stays valid for the call).
bool to_blob(PyObject* object, const char* fn, int position, const char* what, std::string_view& out) {
  if (PyBytes_Check(object)) {
    out = std::string_view(PyBytes_AS_STRING(object), static_cast<std::size_t>(PyBytes_GET_SIZE(object)));
    return true;
  }
  if (PyUnicode_Check(object)) return utf8_of(object, out);
  PyErr_Format(PyExc_TypeError, "%s() argument %d (%s) must be str or bytes, not %.100s", fn, position, what,
               Py_TYPE(object)->tp_name);
  return false;
}

// A C long, as uWSGI parses it: int (or anything with __index__); OverflowError beyond 64 bits.
bool to_long(PyObject* object, std::int64_t& out) {
  const long value = PyLong_AsLong(object);
  if (value == -1 && PyErr_Occurred()) return false;
  out = value;
  return true;
}

bool to_cache_name(PyObject* object, const char* fn, int position, std::string_view& out) {
  if (!PyUnicode_Check(object)) {
    PyErr_Format(PyExc_TypeError, "%s() argument %d (cache) must be str, not %.100s", fn, position,
                 Py_TYPE(object)->tp_name);
    return false;
  }
  return utf8_of(object, out);
}

// ---- the operations

// A reused buffer per thread for the calls that go through a std::string: remote gets (the client
// library reads into it), cache_num and remote math. Local cache_get builds its bytes object directly.
std::string& value_buffer() {
  thread_local std::string buffer;
  return buffer;
}

server::CacheClient remote_client(std::string_view address) {
  server::ClientOptions options;
  options.timeout_ms = g_context.timeout_ms;
  options.persistent = false;  // one request per connection, as uWSGI's remote calls do
  return server::CacheClient(std::string(address), options);
}

// The local cache a target names; nullptr when unknown (or remote).
cache::Cache* local_cache(const CacheTarget& target) {
  if (target.remote || g_context.caches == nullptr) return nullptr;
  return target.name.empty() ? g_context.caches->default_cache() : g_context.caches->find(target.name);
}

template <typename Local, typename Remote>
bool dispatch(const CacheTarget& target, Local local, Remote remote) {
  try {
    if (target.remote) {
      server::CacheClient client = remote_client(target.address);
      return remote(client, target.name) == server::ClientStatus::ok;
    }
    cache::Cache* cache = local_cache(target);
    return cache != nullptr && local(*cache) == cache::Status::ok;
  } catch (const std::exception&) {
    return false;  // e.g. a remote key or value longer than the protocol's 16-bit lengths
  }
}

bool do_get(const CacheTarget& target, std::string_view key, std::string& value) {
  value.clear();
  const bool hit = dispatch(
      target, [&](cache::Cache& cache) { return cache.get(key, value); },
      [&](server::CacheClient& client, std::string_view name) { return client.get(key, value, name); });
  return hit && !value.empty();  // uWSGI reads a remote size=0 reply as a miss
}

// A local get builds its result bytes object straight from the cache: one copy of the value, no buffer
// in between. Needs the GIL (local calls keep it).
class BytesSink final : public cache::ValueSink {
 public:
  BytesSink() = default;
  BytesSink(const BytesSink&) = delete;
  BytesSink& operator=(const BytesSink&) = delete;
  ~BytesSink() { Py_XDECREF(bytes_); }
  char* reserve(std::size_t size) override {
    if (bytes_ != nullptr && static_cast<std::size_t>(PyBytes_GET_SIZE(bytes_)) == size)
      return PyBytes_AS_STRING(bytes_);
    Py_CLEAR(bytes_);
    bytes_ = PyBytes_FromStringAndSize(nullptr, static_cast<Py_ssize_t>(size));
    return bytes_ == nullptr ? nullptr : PyBytes_AS_STRING(bytes_);
  }
  PyObject* release() { return std::exchange(bytes_, nullptr); }

 private:
  PyObject* bytes_ = nullptr;
};

// Remote math: uWSGI sends the operand as an update (the remote then stores the delta). Against our
// server the operation is atomic; against uWSGI we read the number, compute, and write it back keeping
// the item's expiry (two clients racing there can lose an update).
server::ClientStatus remote_math(server::CacheClient& client, std::string_view name, std::string_view key,
                                 MathOp op, std::int64_t operand, std::int64_t expires) {
  // Our server applies the operation atomically (magic cmd=inc/dec/mul/div); a server that does not
  // answer it (uWSGI) gets the read-compute-write below.
  static constexpr std::string_view kCommands[] = {"inc", "dec", "mul", "div"};
  if (client.math(kCommands[static_cast<int>(op)], key, operand, expires, name) == server::ClientStatus::ok) {
    return server::ClientStatus::ok;
  }
  std::string& current = value_buffer();
  std::int64_t expires_at = 0;
  const server::ClientStatus got = client.get(key, current, name, &expires_at);
  if (got == server::ClientStatus::error) return got;
  std::int64_t base = 0;
  if (got == server::ClientStatus::ok && !current.empty()) {
    std::memcpy(&base, current.data(), std::min<std::size_t>(current.size(), 8));  // LE host, zero padded
    expires = 0;
    if (expires_at > 0)
      expires = std::max<std::int64_t>(1, expires_at - static_cast<std::int64_t>(std::time(nullptr)));
  }
  const std::int64_t result = cache::apply_math(op, base, operand);
  char number[8];
  std::memcpy(number, &result, 8);
  return client.update(key, std::string_view(number, 8), expires, name);
}

// ---- the module functions

PyObject* py_cache_get(PyObject*, Args args, Py_ssize_t nargs, PyObject* kw) {
  std::string_view key, spec;
  if (!check_count("cache_get", nargs, kw, 1, 2) || !to_blob(args[0], "cache_get", 1, "key", key) ||
      (nargs > 1 && !to_cache_name(args[1], "cache_get", 2, spec))) {
    return nullptr;
  }
  const CacheTarget target = nargs > 1 ? parse_cache_target(spec) : CacheTarget{};
  if (!target.remote) {
    cache::Cache* cache = local_cache(target);
    if (cache == nullptr) Py_RETURN_NONE;
    BytesSink sink;
    switch (cache->get(key, sink)) {
      case cache::Status::ok:
        return sink.release();
      case cache::Status::out_of_memory:
        return nullptr;  // MemoryError, set by PyBytes
      default:
        Py_RETURN_NONE;
    }
  }
  std::string& value = value_buffer();
  bool hit;
  {
    GilRelease unlocked;  // only a call over the network lets other Python threads run meanwhile
    hit = do_get(target, key, value);
  }
  if (!hit) Py_RETURN_NONE;
  return PyBytes_FromStringAndSize(value.data(), static_cast<Py_ssize_t>(value.size()));
}

PyObject* py_cache_num(PyObject*, Args args, Py_ssize_t nargs, PyObject* kw) {
  std::string_view key, spec;
  if (!check_count("cache_num", nargs, kw, 1, 2) || !to_blob(args[0], "cache_num", 1, "key", key) ||
      (nargs > 1 && !to_cache_name(args[1], "cache_num", 2, spec))) {
    return nullptr;
  }
  std::string& value = value_buffer();
  std::int64_t number = 0;
  const CacheTarget target = parse_cache_target(spec);
  {
    GilRelease unlocked(target.remote);
    if (do_get(target, key, value) && value.size() == 8) std::memcpy(&number, value.data(), 8);
  }
  return PyLong_FromLongLong(number);
}

// Runs an operation where the cache argument points (the GIL released only around a network round
// trip) and answers uWSGI's way: True on success, None otherwise.
template <typename Local, typename Remote>
PyObject* true_or_none(std::string_view spec, Local local, Remote remote) {
  const CacheTarget target = parse_cache_target(spec);
  bool ok;
  {
    GilRelease unlocked(target.remote);
    ok = dispatch(target, local, remote);
  }
  if (ok) Py_RETURN_TRUE;
  Py_RETURN_NONE;
}

enum class Store { set, update };

PyObject* store(const char* fn, Store mode, Args args, Py_ssize_t nargs, PyObject* kw) {
  std::string_view key, value, spec;
  std::int64_t expires = 0;
  if (!check_count(fn, nargs, kw, 2, 4) || !to_blob(args[0], fn, 1, "key", key) ||
      !to_blob(args[1], fn, 2, "value", value) || (nargs > 2 && !to_long(args[2], expires)) ||
      (nargs > 3 && !to_cache_name(args[3], fn, 4, spec))) {
    return nullptr;
  }
  return true_or_none(
      spec,
      [&](cache::Cache& cache) {
        return mode == Store::set ? cache.set(key, value, expires) : cache.update(key, value, expires);
      },
      [&](server::CacheClient& client, std::string_view name) {
        return mode == Store::set ? client.set(key, value, expires, name)
                                  : client.update(key, value, expires, name);
      });
}

PyObject* py_cache_set(PyObject*, Args args, Py_ssize_t nargs, PyObject* kw) {
  return store("cache_set", Store::set, args, nargs, kw);
}
PyObject* py_cache_update(PyObject*, Args args, Py_ssize_t nargs, PyObject* kw) {
  return store("cache_update", Store::update, args, nargs, kw);
}

// The shape of cache_del and cache_exists: (key[, cache]) -> True or None.
template <typename Local, typename Remote>
PyObject* key_command(const char* fn, Args args, Py_ssize_t nargs, PyObject* kw, Local local, Remote remote) {
  std::string_view key, spec;
  if (!check_count(fn, nargs, kw, 1, 2) || !to_blob(args[0], fn, 1, "key", key) ||
      (nargs > 1 && !to_cache_name(args[1], fn, 2, spec))) {
    return nullptr;
  }
  return true_or_none(
      spec, [&](cache::Cache& cache) { return local(cache, key); },
      [&](server::CacheClient& client, std::string_view name) { return remote(client, key, name); });
}

PyObject* py_cache_del(PyObject*, Args args, Py_ssize_t nargs, PyObject* kw) {
  return key_command(
      "cache_del", args, nargs, kw, [](cache::Cache& cache, std::string_view key) { return cache.del(key); },
      [](server::CacheClient& client, std::string_view key, std::string_view name) {
        return client.del(key, name);
      });
}

PyObject* py_cache_exists(PyObject*, Args args, Py_ssize_t nargs, PyObject* kw) {
  return key_command(
      "cache_exists", args, nargs, kw,
      [](cache::Cache& cache, std::string_view key) { return cache.exists(key); },
      [](server::CacheClient& client, std::string_view key, std::string_view name) {
        return client.exists(key, name);
      });
}

PyObject* py_cache_clear(PyObject*, Args args, Py_ssize_t nargs, PyObject* kw) {
  std::string_view spec;
  if (!check_count("cache_clear", nargs, kw, 0, 1) ||
      (nargs > 0 && !to_cache_name(args[0], "cache_clear", 1, spec))) {
    return nullptr;
  }
  const CacheTarget target = parse_cache_target(spec);
  bool ok;
  {
    GilRelease unlocked;
    ok = dispatch(
        target, [&](cache::Cache& cache) { return cache.clear(); },
        [&](server::CacheClient& client, std::string_view name) { return client.clear(name); });
  }
  if (ok) Py_RETURN_TRUE;
  Py_RETURN_NONE;
}

PyObject* math(const char* fn, MathOp op, std::int64_t default_operand, Args args, Py_ssize_t nargs,
               PyObject* kw) {
  std::string_view key, spec;
  std::int64_t operand = default_operand;
  std::int64_t expires = 0;
  if (!check_count(fn, nargs, kw, 1, 4) || !to_blob(args[0], fn, 1, "key", key) ||
      (nargs > 1 && !to_long(args[1], operand)) || (nargs > 2 && !to_long(args[2], expires)) ||
      (nargs > 3 && !to_cache_name(args[3], fn, 4, spec))) {
    return nullptr;
  }
  return true_or_none(
      spec, [&](cache::Cache& cache) { return cache.math(key, op, operand, expires); },
      [&](server::CacheClient& client, std::string_view name) {
        return remote_math(client, name, key, op, operand, expires);
      });
}

PyObject* py_cache_inc(PyObject*, Args args, Py_ssize_t nargs, PyObject* kw) {
  return math("cache_inc", MathOp::inc, 1, args, nargs, kw);
}
PyObject* py_cache_dec(PyObject*, Args args, Py_ssize_t nargs, PyObject* kw) {
  return math("cache_dec", MathOp::dec, 1, args, nargs, kw);
}
PyObject* py_cache_mul(PyObject*, Args args, Py_ssize_t nargs, PyObject* kw) {
  return math("cache_mul", MathOp::mul, 2, args, nargs, kw);
}
PyObject* py_cache_div(PyObject*, Args args, Py_ssize_t nargs, PyObject* kw) {
  return math("cache_div", MathOp::div, 2, args, nargs, kw);
}

PyObject* py_cache_keys(PyObject*, Args args, Py_ssize_t nargs, PyObject* kw) {
  std::string_view spec;
  if (!check_count("cache_keys", nargs, kw, 0, 1) ||
      (nargs > 0 && !to_cache_name(args[0], "cache_keys", 1, spec))) {
    return nullptr;
  }
  const CacheTarget target = parse_cache_target(spec);
  cache::Cache* cache =
      target.remote || g_context.caches == nullptr ? nullptr : g_context.caches->find(target.name);
  if (cache == nullptr) {
    PyErr_SetString(PyExc_ValueError, "no local uWSGI cache available");
    return nullptr;
  }
  std::vector<std::string> keys;
  {
    GilRelease unlocked;
    cache->for_each_key([&](std::string_view key) { keys.emplace_back(key); });
  }
  PyObject* list = PyList_New(static_cast<Py_ssize_t>(keys.size()));
  if (list == nullptr) return nullptr;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    PyObject* item = PyBytes_FromStringAndSize(keys[i].data(), static_cast<Py_ssize_t>(keys[i].size()));
    if (item == nullptr) {
      Py_DECREF(list);
      return nullptr;
    }
    PyList_SET_ITEM(list, static_cast<Py_ssize_t>(i), item);  // steals
  }
  return list;
}

PyObject* py_worker_id(PyObject*, PyObject*) {
  return PyLong_FromLong(g_worker_id.load(std::memory_order_relaxed));
}

PyObject* py_masterpid(PyObject*, PyObject*) {
  return PyLong_FromLong(g_worker_id.load(std::memory_order_relaxed) == 0 ? getpid() : getppid());
}

PyObject* py_log(PyObject*, PyObject* message) {
  Py_ssize_t size = 0;
  const char* text = PyUnicode_Check(message) ? PyUnicode_AsUTF8AndSize(message, &size) : nullptr;
  if (text == nullptr) {
    if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "log() argument must be str");
    return nullptr;
  }
  common::log_write(std::string_view(text, static_cast<std::size_t>(size)));
  Py_RETURN_TRUE;
}

#define FASTCALL(name, fn, doc)                                                                           \
  {                                                                                                       \
    name, reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fn)), METH_FASTCALL | METH_KEYWORDS, \
        doc                                                                                               \
  }

PyMethodDef g_methods[] = {
    FASTCALL("cache_get", py_cache_get, "cache_get(key[, cache]) -> bytes or None"),
    FASTCALL("cache_set", py_cache_set,
             "cache_set(key, value[, expires[, cache]]) -> True or None (never overwrites)"),
    FASTCALL("cache_update", py_cache_update, "cache_update(key, value[, expires[, cache]]) -> True or None"),
    FASTCALL("cache_del", py_cache_del, "cache_del(key[, cache]) -> True or None"),
    FASTCALL("cache_exists", py_cache_exists, "cache_exists(key[, cache]) -> True or None"),
    FASTCALL("cache_clear", py_cache_clear, "cache_clear([cache]) -> True or None"),
    FASTCALL("cache_inc", py_cache_inc, "cache_inc(key[, delta=1[, expires[, cache]]]) -> True or None"),
    FASTCALL("cache_dec", py_cache_dec, "cache_dec(key[, delta=1[, expires[, cache]]]) -> True or None"),
    FASTCALL("cache_mul", py_cache_mul, "cache_mul(key[, factor=2[, expires[, cache]]]) -> True or None"),
    FASTCALL("cache_div", py_cache_div, "cache_div(key[, divisor=2[, expires[, cache]]]) -> True or None"),
    FASTCALL("cache_num", py_cache_num, "cache_num(key[, cache]) -> int (0 if missing or not 8 bytes)"),
    FASTCALL("cache_keys", py_cache_keys, "cache_keys([cache]) -> list of bytes (local caches only)"),
    {"worker_id", py_worker_id, METH_NOARGS, "worker_id() -> 0 in the master, 1..N in a worker"},
    {"masterpid", py_masterpid, METH_NOARGS, "masterpid() -> the master's pid"},
    {"log", py_log, METH_O, "log(message): one line in the server log"},
    {nullptr, nullptr, 0, nullptr},
};

PyModuleDef g_module = {
    PyModuleDef_HEAD_INIT,
    "uwsgi",
    "The server's uWSGI-compatible API (cache functions, options, worker id).",
    -1,
    g_methods,
    nullptr,
    nullptr,
    nullptr,
    nullptr,
};

// uwsgi.opt as uWSGI 2.0.21 builds it: the options that were given, flags as True, values as bytes; a
// repeated option keeps only its last value (the master lists them: ApplicationSettings::given_options).
PyObject* build_opt_dict(const server::ApplicationSettings& settings) {
  PyObject* dict = PyDict_New();
  if (dict == nullptr) return nullptr;
  for (const auto& option : settings.given_options) {
    PyObject* value = option.is_flag ? PyBool_FromLong(option.flag)
                                     : PyBytes_FromStringAndSize(
                                           option.value.data(), static_cast<Py_ssize_t>(option.value.size()));
    const int rc = value == nullptr ? -1 : PyDict_SetItemString(dict, option.name.c_str(), value);
    Py_XDECREF(value);
    if (rc != 0) {
      Py_DECREF(dict);
      return nullptr;
    }
  }
  return dict;
}

// PyModule_AddObject steals only on success.
bool add_object(PyObject* module, const char* name, PyObject* value) {
  if (value == nullptr) return false;
  if (PyModule_AddObject(module, name, value) != 0) {
    Py_DECREF(value);
    return false;
  }
  return true;
}

}  // namespace

void configure_uwsgi_module(const server::ApplicationSettings& settings, cache::CacheSet* caches) {
  g_context.settings = settings;
  g_context.caches = caches;
  g_context.timeout_ms = std::max(1, settings.socket_timeout_s) * 1000;
}

void set_worker_id(int id) { g_worker_id.store(id, std::memory_order_relaxed); }

PyObject* init_uwsgi_module() {
  PyObject* module = PyModule_Create(&g_module);
  if (module == nullptr) return nullptr;
  const server::ApplicationSettings& settings = g_context.settings;
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  const bool ok =
      add_object(module, "opt", build_opt_dict(settings)) &&
      add_object(module, "version", PyBytes_FromString(kVersion)) &&
      add_object(module, "version_info", Py_BuildValue("(iiiis)", 2, 0, 21, 0, "ucached")) &&
      add_object(module, "hostname", PyBytes_FromString(host)) &&
      PyModule_AddIntConstant(module, "numproc", settings.processes) == 0 &&
      PyModule_AddIntConstant(module, "cores", settings.threads) == 0 &&
      PyModule_AddIntConstant(module, "buffer_size", static_cast<long>(settings.buffer_size)) == 0;
  if (!ok) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}

}  // namespace pyhost
