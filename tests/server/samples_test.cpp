// The dashboard's per-second samples: what a second adds to a pipeline's counters,
// several processes' seconds summed, latency quantiles from histogram buckets. Pure:
// no database (the samples' trip through PostgreSQL is in http_dashboard_test.cpp).
#include "runnel/server/samples.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "../support/random.hpp"

namespace runnel::server {
namespace {

pipeline::BatchResult Batch(size_t done, size_t failed, std::vector<double> latencies_ms) {
  pipeline::BatchResult b;
  b.claimed = done + failed;
  b.done = done;
  b.failed = failed;
  b.latencies_ms = std::move(latencies_ms);
  for (size_t k = 0; k < pipeline::kStageCount; ++k) b.stage_ms[k] = static_cast<double>(k + 1);
  return b;
}

TEST(SamplesTest, ASampleIsWhatTheSecondAddedToTheCounters) {
  PipelineMetrics metrics("needs");
  metrics.RecordBatch(Batch(3, 0, {1, 2, 3}));
  const MetricsSnapshot before = metrics.Snapshot();
  metrics.RecordBatch(Batch(4, 1, {20, 20, 20, 20, 20}));
  metrics.RecordBatch(Batch(1, 0, {0.2}));
  const Sample s = Difference(metrics.Snapshot(), before, 1700000000);
  EXPECT_EQ(s.at, 1700000000);
  EXPECT_EQ(s.done, 5);
  EXPECT_EQ(s.failed, 1);
  EXPECT_EQ(s.throttled, 0);
  EXPECT_EQ(s.batches, 2);
  int64_t observed = 0;
  for (const int64_t c : s.latency) observed += c;
  EXPECT_EQ(observed, 6) << "the latencies of the two batches since the snapshot";
  EXPECT_EQ(s.latency.size(), LatencyBounds().size() + 1);
  for (size_t k = 0; k < pipeline::kStageCount; ++k)
    EXPECT_DOUBLE_EQ(s.stage_seconds[k], 2 * static_cast<double>(k + 1) / 1000.0) << pipeline::kStageNames[k];
}

TEST(SamplesTest, SecondsOfSeveralProcessesAreSummedInTimeOrder) {
  Sample a{.at = 20, .done = 2, .latency = {1, 0, 2}};
  Sample b{.at = 10, .done = 5, .failed = 1, .latency = {0, 3}};
  Sample c{.at = 20, .done = 1, .throttled = 4, .latency = {0, 1, 0, 7}};
  const auto merged = MergeByTime({a, b, c});
  ASSERT_EQ(merged.size(), 2u);
  EXPECT_EQ(merged[0].at, 10);
  EXPECT_EQ(merged[0].done, 5);
  EXPECT_EQ(merged[1].at, 20);
  EXPECT_EQ(merged[1].done, 3);
  EXPECT_EQ(merged[1].throttled, 4);
  EXPECT_EQ(merged[1].latency, (std::vector<int64_t>{1, 1, 2, 7}));
}

TEST(SamplesTest, QuantilesInterpolateWithinTheirBucket) {
  const std::vector<double> bounds = {1, 2, 4};
  EXPECT_FALSE(Quantile(bounds, {0, 0, 0, 0}, 0.5));
  EXPECT_FALSE(Quantile(bounds, {1, 2}, 0.5)) << "counts must be one per bound plus +Inf";
  EXPECT_DOUBLE_EQ(*Quantile(bounds, {0, 4, 0, 0}, 0.5), 1.5);   // half way through (1, 2]
  EXPECT_DOUBLE_EQ(*Quantile(bounds, {2, 0, 2, 0}, 0.75), 3.0);  // half way through (2, 4]
  EXPECT_DOUBLE_EQ(*Quantile(bounds, {0, 0, 0, 3}, 0.99), 4.0);  // +Inf answers its lower bound
  EXPECT_DOUBLE_EQ(*Quantile(bounds, {4, 0, 0, 0}, 0.0), 0.0);

  // Against the exact quantile of random latencies: within the bucket that holds it.
  std::mt19937_64 rng(runnel::testing::TestSeed());
  std::lognormal_distribution<double> latency(-4.0, 1.0);  // ~18 ms median
  Histogram h(LatencyBounds());
  std::vector<double> values(5000);
  for (double& v : values) h.Observe(v = latency(rng));
  std::sort(values.begin(), values.end());
  for (const double q : {0.5, 0.9, 0.99}) {
    const double exact = values[static_cast<size_t>(q * static_cast<double>(values.size())) - 1];
    const auto& b = LatencyBounds();
    const auto upper = std::lower_bound(b.begin(), b.end(), exact);
    const double lo = upper == b.begin() ? 0.0 : *(upper - 1), hi = upper == b.end() ? exact : *upper;
    const double estimate = *Quantile(b, h.Counts(), q);
    EXPECT_GE(estimate, lo) << "q " << q << " exact " << exact;
    EXPECT_LE(estimate, hi) << "q " << q << " exact " << exact;
  }
}

}  // namespace
}  // namespace runnel::server
