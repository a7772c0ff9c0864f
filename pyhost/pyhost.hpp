// The Python host's one entry point for the master: the hosted WSGI application behind the
// server::Application interface. Nothing else of ours reaches into pyhost/.
#pragma once

#include <memory>

#include "cache/cache.hpp"
#include "config/config.hpp"
#include "server/dispatcher.hpp"

namespace pyhost {

// Starts the embedded interpreter and, unless --lazy-apps, loads the application named by
// --module / --wsgi-file now (in the master, before fork: the workers share its pages copy-on-write).
// Throws std::runtime_error naming the module or file, with the Python traceback, when it cannot.
// `caches` must outlive the application (the uwsgi module serves them).
std::unique_ptr<server::Application> create_application(const config::Config& config,
                                                        cache::CacheSet& caches);

// --pyrun: starts the interpreter with the uwsgi module serving `caches`, runs the script as __main__
// and returns its exit status (SystemExit's code; 1 and the traceback on stderr for an exception).
int run_script(const config::Config& config, cache::CacheSet& caches, const std::string& path);

}  // namespace pyhost
