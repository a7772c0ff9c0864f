// Dispatch by modifier1: 111 → the cache commands, 0 → the hosted application, anything else → logged
// and closed without a reply.
#pragma once

#include <memory>
#include <string>

#include "cache/cache.hpp"
#include "server/cache_commands.hpp"
#include "server/protocol.hpp"

namespace server {

// The application interface (modifier1 0). The Python host implements it; a built-in demo app is the
// default so the server is useful without Python.
class Application {
 public:
  virtual ~Application() = default;
  // Writes raw HTTP response bytes into reply.body (as uWSGI does: status line, headers, body).
  // The worker may call it from several threads at once (its application threads): keep no
  // per-request state in members.
  // For a blocking() application it is called on one of the worker's application threads, never on
  // the event loop, possibly from several threads at once (--threads).
  virtual void handle(const Request& request, Reply& reply) = 0;
  // True when handle() may take long (a hosted application): the worker then runs it off its event
  // loop, so cache requests on the same worker keep being served.
  virtual bool blocking() const { return false; }
  // Called in each worker process right after fork, before it serves anything (e.g. to reinitialise
  // an interpreter's state after fork, or to load the application there with --lazy-apps). False
  // (with `error` set) when the application can never start: the worker stops and reports it.
  virtual bool worker_started(int worker_id, std::string& error) {
    (void)worker_id;
    (void)error;
    return true;
  }
};

// The demo application served on modifier1 0 when no application is configured: shows cache stats
// and answers GET /cache/<key> from the default cache.
std::unique_ptr<Application> make_demo_application(cache::CacheSet& caches);

class Dispatcher {
 public:
  Dispatcher(cache::CacheSet& caches, Application* application);
  // Handles one complete request. An empty reply means "close without a reply" (a miss, a failure,
  // or an unknown modifier). `note` receives a log line's text when something was wrong (it is
  // cleared first; misses leave it empty). Clears `reply` first, keeping its buffers' capacity.
  void handle(const Request& request, Reply& reply, std::string* note = nullptr);

 private:
  cache::CacheSet& caches_;
  Application* application_;
  CacheScratch scratch_;      // reused across requests
  std::string note_scratch_;  // where notes go when the caller passes none
};

}  // namespace server
