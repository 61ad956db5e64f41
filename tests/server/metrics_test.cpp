// Prometheus exposition: histograms are cumulative, counters add up batches.
#include "runnel/server/metrics.hpp"

#include <gtest/gtest.h>

namespace runnel::server {
namespace {

TEST(MetricsTest, HistogramBucketsAreCumulative) {
  Histogram h({1, 2, 5});
  for (double v : {0.5, 1.0, 1.5, 3.0, 7.0}) h.Observe(v);
  std::string out;
  h.Write(out, "x", "a=\"b\"");
  EXPECT_NE(out.find("x_bucket{a=\"b\",le=\"1\"} 2\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_bucket{a=\"b\",le=\"2\"} 3\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_bucket{a=\"b\",le=\"5\"} 4\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_bucket{a=\"b\",le=\"+Inf\"} 5\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_sum{a=\"b\"} 13\n"), std::string::npos) << out;
  EXPECT_NE(out.find("x_count{a=\"b\"} 5\n"), std::string::npos) << out;
}

TEST(MetricsTest, BatchesAndHttpResponsesAreCounted) {
  Metrics m("needs");
  pipeline::BatchResult batch;
  batch.claimed = 3;
  batch.done = 2;
  batch.failed = 1;
  batch.latencies_ms = {1, 2, 3};
  m.RecordBatch(batch);
  m.RecordBatch(batch);
  m.RecordHttp("/v1/models", 200, 0.001);
  const std::string out = m.Render({{"runnel_queue_depth{pipeline=\"needs\"}", 4}});
  EXPECT_NE(out.find("runnel_requests_total{pipeline=\"needs\",status=\"done\"} 4\n"), std::string::npos) << out;
  EXPECT_NE(out.find("runnel_requests_total{pipeline=\"needs\",status=\"failed\"} 2\n"), std::string::npos);
  EXPECT_NE(out.find("runnel_batch_size_count{pipeline=\"needs\"} 2\n"), std::string::npos);
  EXPECT_NE(out.find("runnel_request_latency_seconds_count{pipeline=\"needs\"} 6\n"), std::string::npos);
  EXPECT_NE(out.find("runnel_http_requests_total{route=\"/v1/models\",code=\"200\"} 1\n"), std::string::npos);
  EXPECT_NE(out.find("runnel_queue_depth{pipeline=\"needs\"} 4\n"), std::string::npos);
}

}  // namespace
}  // namespace runnel::server
