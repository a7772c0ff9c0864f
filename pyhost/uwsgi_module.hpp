// The built-in `uwsgi` module a hosted application imports: uWSGI 2.0's cache API (local caches in
// shared memory, remote ones through server::CacheClient), uwsgi.opt, worker_id(), numproc, version.
#pragma once

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "cache/cache.hpp"
#include "server/application.hpp"

namespace pyhost {

// What the module serves; call before the interpreter starts. `caches` outlives the interpreter.
void configure_uwsgi_module(const server::ApplicationSettings& settings, cache::CacheSet* caches);

// The module's init function, registered with PyImport_AppendInittab("uwsgi", ...).
PyObject* init_uwsgi_module();

// uwsgi.worker_id(): 0 in the master, 1..processes in a worker.
void set_worker_id(int id);

}  // namespace pyhost
