#include "pyhost/pyhost.hpp"

#include "pyhost/interpreter.hpp"
#include "pyhost/uwsgi_module.hpp"
#include "pyhost/wsgi.hpp"

namespace pyhost {

std::unique_ptr<server::Application> create_application(const config::Config& config,
                                                        cache::CacheSet& caches) {
  configure_uwsgi_module(config, &caches);
  start_interpreter(config);
  auto application = std::make_unique<WsgiApplication>(config);
  if (!config.lazy_apps) application->load();
  return application;
}

}  // namespace pyhost
