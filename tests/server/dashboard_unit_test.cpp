// The dashboard's JSON from query results (src/server/dashboard.hpp), without a
// database: series and stage times from samples, output distributions of two windows.
#include "dashboard.hpp"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace runnel::server {
namespace {

using nlohmann::json;

TEST(DashboardTest, SeriesCarryCountsAndLatencyQuantiles) {
  Sample busy{
      .at = 100, .done = 8, .failed = 2, .batches = 2, .latency = std::vector<int64_t>(LatencyBounds().size() + 1)};
  busy.latency[4] = 10;  // (0.005, 0.01]
  busy.stage_seconds[0] = 0.004;
  Sample quiet{.at = 101, .throttled = 3, .batches = 1, .latency = {}};
  const json series = SeriesJson({busy, quiet});
  ASSERT_EQ(series.size(), 2u);
  EXPECT_EQ(series[0]["done"], 8);
  EXPECT_EQ(series[0]["failed"], 2);
  EXPECT_DOUBLE_EQ(series[0]["p50"].get<double>(), 0.0075);
  EXPECT_TRUE(series[1]["p50"].is_null()) << "no latency observed: no quantile";
  EXPECT_EQ(series[1]["throttled"], 3);
  const json stages = StagesJson({busy, quiet});
  ASSERT_EQ(stages.size(), pipeline::kStageCount);
  EXPECT_EQ(stages[0]["stage"], "claim");
  EXPECT_DOUBLE_EQ(stages[0]["seconds_per_batch"].get<double>(), 0.004 / 3);
  EXPECT_DOUBLE_EQ(StagesJson({})[0]["seconds_per_batch"].get<double>(), 0.0);
}

TEST(DashboardTest, NumericOutputsShareBinsAcrossWindows) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const json d = NumericDistribution("risk", {0.0, 0.5, 1.0, std::nullopt, nan}, {0.25, 0.25}, 4);
  EXPECT_EQ(d["kind"], "number");
  EXPECT_EQ(d["edges"], json({0.0, 0.25, 0.5, 0.75, 1.0}));
  EXPECT_EQ(d["latest"]["counts"], json({1, 0, 1, 1})) << "the largest value closes the last bin";
  EXPECT_EQ(d["latest"]["missing"], 2) << "NULL and NaN";
  EXPECT_EQ(d["latest"]["total"], 5);
  EXPECT_EQ(d["previous"]["counts"], json({0, 2, 0, 0}));
  const json constant = NumericDistribution("c", {3.0, 3.0}, {}, 4);
  EXPECT_EQ(constant["latest"]["counts"], json({2, 0, 0, 0})) << "one value: one bin of width 1";
  const json empty = NumericDistribution("e", {}, {}, 4);
  EXPECT_EQ(empty["latest"]["counts"], json({0, 0, 0, 0}));
}

TEST(DashboardTest, LabelsAreCountedMostFrequentFirst) {
  const json d = LabelDistribution("queue", {"admin", "net", "admin", std::nullopt}, {"net", "net", "games"}, 2);
  EXPECT_EQ(d["kind"], "label");
  EXPECT_EQ(d["labels"], json({"net", "admin"})) << "at most 2 labels, the most frequent over both windows";
  EXPECT_EQ(d["latest"]["counts"], json({1, 2}));
  EXPECT_EQ(d["previous"]["counts"], json({2, 0}));
  EXPECT_EQ(d["latest"]["missing"], 1);
}

}  // namespace
}  // namespace runnel::server
