// Dispatch by modifier1: 111 → the cache commands, 0 → the hosted application, anything else → logged
// and closed without a reply.
#pragma once

#include <memory>
#include <string>

#include "cache/cache.hpp"
#include "server/application.hpp"
#include "server/cache_commands.hpp"
#include "server/protocol.hpp"

namespace server {

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
