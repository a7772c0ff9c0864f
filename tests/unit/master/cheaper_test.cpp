// master/cheaper: uWSGI's spare algorithm, decision by decision (one call = one second).
#include "master/cheaper.hpp"

#include <catch2/catch.hpp>

namespace {

config::Config cheaper_config(int processes, int cheaper, int overload, int step = 1, int initial = 0) {
  config::Config config;
  config.processes = processes;
  config.cheaper = cheaper;
  config.cheaper_overload = overload;
  config.cheaper_step = step;
  config.cheaper_initial = initial;
  return config;
}

}  // namespace

TEST_CASE("cheaper: off without --cheaper, the minimum or cheaper-initial at start", "[cheaper]") {
  CHECK_FALSE(master::Cheaper(cheaper_config(4, 0, 3)).enabled());
  CHECK(master::Cheaper(cheaper_config(4, 0, 3)).target() == 4);
  CHECK(master::Cheaper(cheaper_config(4, 2, 3)).target() == 2);
  CHECK(master::Cheaper(cheaper_config(4, 2, 3, 1, 3)).target() == 3);
  CHECK(master::Cheaper(cheaper_config(4, 2, 3, 1, 9)).target() == 4);  // bounded by --processes
  CHECK(master::Cheaper(cheaper_config(2, 5, 3)).target() == 2);        // --cheaper above --processes
}

TEST_CASE("cheaper: all busy for more than cheaper-overload seconds starts cheaper-step more", "[cheaper]") {
  master::Cheaper cheaper(cheaper_config(5, 1, 2, 2));
  std::int64_t now = 1000;
  std::uint64_t requests = 0;
  CHECK(cheaper.tick(1, 1, ++requests, now += 1000) == 0);
  CHECK(cheaper.tick(1, 1, ++requests, now += 1000) == 0);
  CHECK(cheaper.tick(1, 1, ++requests, now += 1000) == 2);  // overload count 3 > 2
  CHECK(cheaper.target() == 3);
  // One spare worker is the stable state: nothing changes.
  for (int i = 0; i < 5; ++i) CHECK(cheaper.tick(3, 2, ++requests, now += 1000) == 0);
  // All idle: one worker stops every cheaper-overload seconds, down to the minimum.
  CHECK(cheaper.tick(3, 0, requests, now += 1000) == 0);
  CHECK(cheaper.tick(3, 0, requests, now += 1000) == -1);
  CHECK(cheaper.target() == 2);
  CHECK(cheaper.tick(2, 0, requests, now += 1000) == 0);
  CHECK(cheaper.tick(2, 0, requests, now += 1000) == -1);
  CHECK(cheaper.target() == 1);
  for (int i = 0; i < 5; ++i) CHECK(cheaper.tick(1, 0, requests, now += 1000) == 0);
  CHECK(cheaper.target() == 1);
}

TEST_CASE("cheaper: never above --processes; --idle drops to the minimum", "[cheaper]") {
  config::Config config = cheaper_config(2, 1, 1, 4);
  config.idle = 10;
  master::Cheaper cheaper(config);
  std::int64_t now = 1000;
  cheaper.tick(1, 1, 1, now += 1000);
  CHECK(cheaper.tick(1, 1, 2, now += 1000) == 1);  // step 4, but only one more fits
  CHECK(cheaper.target() == 2);
  CHECK(cheaper.tick(2, 2, 3, now += 1000) == 0);
  CHECK(cheaper.tick(2, 2, 4, now += 1000) == 0);  // at --processes: nothing more to start
  CHECK(cheaper.target() == 2);
  CHECK(cheaper.tick(2, 1, 5, now += 1000) == 0);   // one spare
  CHECK(cheaper.tick(2, 1, 5, now += 9000) == 0);   // a request is still in flight
  CHECK(cheaper.tick(2, 0, 5, now += 2000) == -1);  // 11 s without a request
  CHECK(cheaper.target() == 1);
}
