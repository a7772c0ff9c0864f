// Hot-item reordering: with a deliberately small hashsize (long chains) and a Zipf workload, the
// average probes per lookup (stats: probes / lookups) must drop after reorder_hot_items().
#include <catch2/catch.hpp>
#include <cmath>
#include <random>
#include <vector>

#include "cache/cache.hpp"
#include "checked_value.hpp"

using cache::Cache;
using cache::Status;
using cachetest::numbered;

namespace {

// Zipf(s) over ranks 0..n-1 by inverse CDF.
class Zipf {
 public:
  Zipf(std::size_t n, double s) : cdf_(n) {
    double sum = 0;
    for (std::size_t i = 0; i < n; ++i) cdf_[i] = (sum += 1.0 / std::pow(static_cast<double>(i + 1), s));
    for (auto& x : cdf_) x /= sum;
  }
  std::size_t operator()(std::mt19937_64& rng) {
    double u = std::uniform_real_distribution<double>(0, 1)(rng);
    return static_cast<std::size_t>(std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin());
  }

 private:
  std::vector<double> cdf_;
};

double probes_per_lookup(Cache& c, Zipf& zipf, std::mt19937_64& rng, int gets) {
  auto before = c.stats();
  std::string v;
  for (int i = 0; i < gets; ++i) REQUIRE(c.get(numbered("item-", zipf(rng)), v) == Status::ok);
  auto after = c.stats();
  return static_cast<double>(after.probes - before.probes) /
         static_cast<double>(after.lookups - before.lookups);
}

}  // namespace

TEST_CASE("reorder_hot_items lowers probes per hit under a Zipf workload", "[cache][reorder]") {
  constexpr std::size_t kItems = 2000;
  cache::Geometry g;
  g.name = "zipf";
  g.items = kItems;
  g.blocksize = 64;
  g.keysize = 32;
  g.hashsize = 8;  // chains of ~250
  auto c = Cache::create(g);
  // Coldest first: without reordering, the hottest keys sit at the chain tails.
  for (std::size_t i = kItems; i-- > 0;) REQUIRE(c->set(numbered("item-", i), "v") == Status::ok);
  Zipf zipf(kItems, 1.1);
  std::mt19937_64 rng(7);
  double before = probes_per_lookup(*c, zipf, rng, 20000);
  auto moved = c->reorder_hot_items();
  CHECK(moved > 0);
  double after = probes_per_lookup(*c, zipf, rng, 20000);
  INFO("probes per lookup: before " << before << ", after " << after << ", moved " << moved);
  CHECK(after < before / 3);
  // A second pass with the (decayed) counts keeps the order good, and keys() still lists everything.
  c->reorder_hot_items();
  double again = probes_per_lookup(*c, zipf, rng, 20000);
  CHECK(again < before / 3);
  std::size_t keys = 0;
  c->for_each_key([&](std::string_view) { ++keys; });
  CHECK(keys == kItems);
  WARN("probes per lookup: before " << before << ", after " << after << ", after 2nd pass " << again);
}

TEST_CASE("reordering follows popularity changes (decay)", "[cache][reorder]") {
  cache::Geometry g;
  g.name = "decay";
  g.items = 64;
  g.blocksize = 16;
  g.keysize = 16;
  g.hashsize = 1;  // one chain
  auto c = Cache::create(g);
  for (int i = 0; i < 64; ++i) REQUIRE(c->set(numbered("k", i), "v") == Status::ok);
  std::string v;
  auto probes_for = [&](const std::string& key) {
    auto b = c->stats().probes;
    REQUIRE(c->get(key, v) == Status::ok);
    return c->stats().probes - b;
  };
  CHECK(probes_for("k63") == 64);
  for (int i = 0; i < 50; ++i) c->get("k63", v);
  c->reorder_hot_items();
  CHECK(probes_for("k63") == 1);
  // k10 becomes the hot one; after a few passes it overtakes the cooling k63.
  for (int pass = 0; pass < 4; ++pass) {
    for (int i = 0; i < 50; ++i) c->get("k10", v);
    c->reorder_hot_items();
  }
  CHECK(probes_for("k10") == 1);
}
