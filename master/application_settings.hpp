// What the master tells a hosted application of the configuration (server::ApplicationSettings).
#pragma once

#include "config/config.hpp"
#include "server/application.hpp"

namespace master {

server::ApplicationSettings application_settings(const config::Config& config);

}  // namespace master
