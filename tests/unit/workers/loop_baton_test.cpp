// LoopBaton (workers/loop_baton.hpp): which lends the standby takes, told by the lend's start.
#include "workers/loop_baton.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <future>
#include <thread>

#include "common/clock.hpp"

namespace {

using namespace std::chrono_literals;

constexpr std::chrono::nanoseconds kDelay = 1ms;
constexpr std::chrono::nanoseconds kPeriod = 3ms;

}  // namespace

TEST_CASE("the standby takes a lend that has run the takeover delay; its lender finds it taken") {
  workers::LoopBaton baton;
  auto standby = std::async(std::launch::async, [&] { return baton.wait_to_take(kDelay, kPeriod); });
  // Began 10 ms ago: older than the delay at the standby's first look, whenever that is.
  const std::uint64_t lent = baton.lend(common::monotonic_ns() - 10'000'000);
  REQUIRE(standby.get());
  CHECK_FALSE(baton.reclaim(lent));
}

TEST_CASE("a lend younger than the delay stays the lender's, and the standby ends with the loop") {
  workers::LoopBaton baton;
  auto standby = std::async(std::launch::async, [&] { return baton.wait_to_take(kDelay, kPeriod); });
  // Dated an hour ahead: never old enough, however long the standby looks at it (several periods).
  const std::uint64_t lent = baton.lend(common::monotonic_ns() + 3'600'000'000'000);
  std::this_thread::sleep_for(4 * kPeriod);  // not a wait for an event: time for the standby to look
  CHECK(baton.reclaim(lent));
  baton.finish();
  CHECK_FALSE(standby.get());
}

TEST_CASE("the standby sleeping while the loop is idle wakes for the next lend and takes it once old") {
  workers::LoopBaton baton;
  auto standby = std::async(std::launch::async, [&] { return baton.wait_to_take(kDelay, kPeriod); });
  std::this_thread::sleep_for(4 * kPeriod);  // held and unchanged: the standby goes to its untimed sleep
  const std::uint64_t lent = baton.lend(common::monotonic_ns() - 10'000'000);
  REQUIRE(standby.get());
  CHECK_FALSE(baton.reclaim(lent));
}
