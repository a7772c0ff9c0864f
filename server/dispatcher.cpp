#include "server/dispatcher.hpp"

#include <fmt/format.h>

#include <exception>

namespace server {

Dispatcher::Dispatcher(cache::CacheSet& caches, Application* application)
    : caches_(caches), application_(application) {}

void Dispatcher::handle(const Request& request, Reply& reply, std::string* note) {
  reply.clear();
  std::string& reason = note != nullptr ? *note : note_scratch_;
  reason.clear();
  switch (request.header.modifier1) {
    case kModifierCache:
      handle_cache_request(caches_, request, reply, scratch_, reason);
      return;
    case kModifierApp:
      if (request.payload.empty()) {
        reason = "empty application request (modifier1 0, datasize 0), skipped";
        return;
      }
      if (application_ == nullptr) {
        reason = "no application for modifier1 0";
        return;
      }
      try {
        application_->handle(request, reply);
      } catch (const std::exception& error) {
        // A half-written response is worse than none: nginx turns an empty reply into a clean 502.
        reply.clear();
        reason = fmt::format("application failed: {}", error.what());
      }
      return;
    default:
      reason = fmt::format("unavailable modifier requested: {}", request.header.modifier1);
      return;
  }
}

}  // namespace server
