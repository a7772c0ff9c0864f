#include "server/application.hpp"

namespace server {

namespace {
ApplicationHost* g_host = nullptr;  // set once from main(), before any thread or fork
}  // namespace

void register_application_host(ApplicationHost* host) { g_host = host; }

ApplicationHost* application_host() { return g_host; }

}  // namespace server
