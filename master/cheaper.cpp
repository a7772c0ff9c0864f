#include "master/cheaper.hpp"

#include <algorithm>

namespace master {

// The spare algorithm, as uWSGI 2.0 (core/master_utils.c, uwsgi_cheaper_algo_spare) decides it:
// - every second, if every running worker is busy, the overload count rises (and the idle count
//   resets); otherwise it falls by one;
// - once it exceeds --cheaper-overload, --cheaper-step more workers start (up to --processes) and it
//   resets;
// - with no overload, one spare worker is the stable state; with more idle ones, the idle count rises
//   and every --cheaper-overload seconds one worker above --cheaper stops (the newest).
// --idle (ours for cheaper mode, see docs/differences.md): no request at all for that long brings
// the count straight back to the minimum.
Cheaper::Cheaper(const config::Config& config)
    : minimum_(config.cheaper > 0 ? std::min(config.cheaper, config.processes) : 0),
      maximum_(config.processes),
      step_(std::max(1, config.cheaper_step)),
      overload_(std::max(1, config.cheaper_overload)),
      idle_s_(config.idle),
      target_(config.processes) {
  if (minimum_ > 0) {
    const int initial = config.cheaper_initial > 0 ? config.cheaper_initial : minimum_;
    target_ = std::clamp(initial, minimum_, maximum_);
  }
}

int Cheaper::tick(int running, int busy, std::uint64_t requests, std::int64_t now_ms) {
  if (!enabled()) return 0;
  if (requests != last_requests_ || last_request_ms_ == 0) {
    last_requests_ = requests;
    last_request_ms_ = now_ms;
  }
  if (idle_s_ > 0 && busy == 0 && target_ > minimum_ && now_ms - last_request_ms_ >= idle_s_ * 1000LL) {
    target_ = minimum_;
    overload_count_ = idle_count_ = 0;
    return -1;
  }
  if (running > 0 && busy >= running) {
    ++overload_count_;
    idle_count_ = 0;
  } else if (overload_count_ > 0) {
    --overload_count_;
  }
  if (overload_count_ > overload_ && target_ < maximum_) {
    const int more = std::min(step_, maximum_ - target_);
    target_ += more;
    overload_count_ = 0;
    return more;
  }
  if (overload_count_ != 0) return 0;
  if (running > busy && running - busy == 1) return 0;  // one spare worker: stable
  ++idle_count_;
  if (target_ > minimum_ && running >= target_ && idle_count_ % overload_ == 0) {
    --target_;
    return -1;
  }
  return 0;
}

}  // namespace master
