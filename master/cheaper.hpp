// uWSGI's cheaper subsystem, "spare" algorithm: between --cheaper and --processes workers, more when
// every running worker is busy, fewer when they idle. The master asks once a second (uWSGI's master
// cycle) and does what it says; the decision itself is pure, so it is unit-testable.
#pragma once

#include <cstdint>

#include "config/config.hpp"

namespace master {

class Cheaper {
 public:
  explicit Cheaper(const config::Config& config);
  bool enabled() const { return minimum_ > 0; }
  // How many workers should run now (the master starts ids 1..target()).
  int target() const { return target_; }
  // One decision per second: `running` workers, `busy` of them in a request, `requests` served so far
  // by all (for --idle). Returns how many workers to start (> 0), -1 to stop the highest one, or 0;
  // target() already reflects the decision.
  int tick(int running, int busy, std::uint64_t requests, std::int64_t now_ms);

 private:
  int minimum_;
  int maximum_;
  int step_;
  int overload_;  // seconds
  int idle_s_;
  int target_;
  int overload_count_ = 0;
  int idle_count_ = 0;
  std::uint64_t last_requests_ = 0;
  std::int64_t last_request_ms_ = 0;
};

}  // namespace master
