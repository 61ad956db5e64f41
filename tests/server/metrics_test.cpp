// Prometheus exposition: histograms are cumulative, counters add up batches.
#include "runnel/server/metrics.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <ctime>
#include <map>

#include "runnel/core/error.hpp"

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

// JetStream families only for pipelines with an ingest; consumer gauges once read.
TEST(MetricsTest, JetStreamMessagesAndTheConsumerAreShownForItsPipelinesOnly) {
  Metrics m;
  auto& needs = m.AddPipeline("needs");
  m.AddPipeline("wine");
  EXPECT_EQ(m.Render({}).find("runnel_jetstream"), std::string::npos) << "no pipeline takes JetStream requests";
  needs.RecordJetStreamRound(250, 7, 3, 1);
  needs.RecordJetStreamRound(6, 2, 0, 0);
  std::string out = m.Render({});
  EXPECT_NE(out.find("runnel_jetstream_messages_total{pipeline=\"needs\",outcome=\"inserted\"} 256\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("runnel_jetstream_messages_total{pipeline=\"needs\",outcome=\"scored\"} 9\n"), std::string::npos)
      << out;
  EXPECT_NE(out.find("runnel_jetstream_messages_total{pipeline=\"needs\",outcome=\"duplicate\"} 3\n"),
            std::string::npos);
  EXPECT_NE(out.find("runnel_jetstream_messages_total{pipeline=\"needs\",outcome=\"dead\"} 1\n"), std::string::npos);
  EXPECT_EQ(out.find("pipeline=\"wine\",outcome"), std::string::npos) << out;
  EXPECT_EQ(out.find("runnel_jetstream_consumer_pending{"), std::string::npos) << "not read yet: no sample";
  needs.SetJetStreamConsumer(40, 7, 2);
  out = m.Render({});
  EXPECT_NE(out.find("runnel_jetstream_consumer_pending{pipeline=\"needs\"} 40\n"), std::string::npos) << out;
  EXPECT_NE(out.find("runnel_jetstream_consumer_ack_pending{pipeline=\"needs\"} 7\n"), std::string::npos);
  EXPECT_NE(out.find("runnel_jetstream_consumer_redelivered{pipeline=\"needs\"} 2\n"), std::string::npos);
  EXPECT_EQ(out.find("# HELP runnel_jetstream_messages_total"), out.rfind("# HELP runnel_jetstream_messages_total"));
}

TEST(MetricsTest, BatchesAndHttpResponsesAreCounted) {
  Metrics m;
  auto& needs = m.AddPipeline("needs");
  pipeline::BatchResult batch;
  batch.claimed = 3;
  batch.done = 2;
  batch.failed = 1;
  batch.latencies_ms = {1, 2, 3};
  needs.RecordBatch(batch);
  needs.RecordBatch(batch);
  m.RecordHttp("/v1/models", 200, 0.001);
  const std::string out = m.Render({{"runnel_queue_depth", "Queued.", "gauge", {{"pipeline=\"needs\"", 4}}}});
  EXPECT_NE(out.find("runnel_requests_total{pipeline=\"needs\",status=\"done\"} 4\n"), std::string::npos) << out;
  EXPECT_NE(out.find("runnel_requests_total{pipeline=\"needs\",status=\"failed\"} 2\n"), std::string::npos);
  EXPECT_NE(out.find("runnel_batch_size_count{pipeline=\"needs\"} 2\n"), std::string::npos);
  EXPECT_NE(out.find("runnel_request_latency_seconds_count{pipeline=\"needs\"} 6\n"), std::string::npos);
  EXPECT_NE(out.find("runnel_http_requests_total{route=\"/v1/models\",code=\"200\"} 1\n"), std::string::npos);
  EXPECT_NE(out.find("# HELP runnel_queue_depth Queued.\n# TYPE runnel_queue_depth gauge\n"
                     "runnel_queue_depth{pipeline=\"needs\"} 4\n"),
            std::string::npos)
      << out;
}

TEST(MetricsTest, BatchSizeBucketsFollowMaxBatch) {
  Metrics m;
  m.AddPipeline("needs", 2048);
  const std::string out = m.Render({});
  EXPECT_NE(out.find("le=\"1024\""), std::string::npos) << out;
  EXPECT_NE(out.find("runnel_batch_size_bucket{pipeline=\"needs\",le=\"2048\"} 0\n"), std::string::npos) << out;
  EXPECT_EQ(out.find("le=\"4096\""), std::string::npos) << "no bucket past the largest batch";
  Metrics odd;
  odd.AddPipeline("x", 300);
  const std::string odd_out = odd.Render({});
  EXPECT_NE(odd_out.find("le=\"256\""), std::string::npos);
  EXPECT_NE(odd_out.find("le=\"300\""), std::string::npos) << odd_out;
}

// Several pipelines in one process: each family is described once (Prometheus refuses
// a repeated HELP/TYPE), with one sample per pipeline, counted apart.
TEST(MetricsTest, PipelinesShareFamiliesAndKeepTheirCounts) {
  Metrics m;
  auto& a = m.AddPipeline("a");
  auto& b = m.AddPipeline("b");
  pipeline::BatchResult batch;
  batch.claimed = 2;
  batch.done = 2;
  a.RecordBatch(batch);
  b.RecordIngested(5);
  const std::string out = m.Render({});
  for (const char* family :
       {"runnel_requests_total", "runnel_batch_size", "runnel_stage_seconds", "runnel_ingested_records_total"}) {
    const std::string help = fmt::format("# HELP {} ", family);
    const auto first = out.find(help);
    ASSERT_NE(first, std::string::npos) << family;
    EXPECT_EQ(out.find(help, first + 1), std::string::npos) << family << " described twice:\n" << out;
  }
  EXPECT_NE(out.find("runnel_requests_total{pipeline=\"a\",status=\"done\"} 2\n"), std::string::npos) << out;
  EXPECT_NE(out.find("runnel_requests_total{pipeline=\"b\",status=\"done\"} 0\n"), std::string::npos) << out;
  EXPECT_NE(out.find("runnel_ingested_records_total{pipeline=\"b\"} 5\n"), std::string::npos) << out;
  EXPECT_NE(out.find("runnel_ingested_records_total{pipeline=\"a\"} 0\n"), std::string::npos) << out;
  EXPECT_THROW(m.AddPipeline("a"), Error);
}

TEST(MetricsTest, ProcessMetricsDescribeThisProcess) {
  std::map<std::string, double> values;
  for (const auto& family : ProcessMetrics()) {
    ASSERT_EQ(family.samples.size(), 1u) << family.name;
    values[family.name] = family.samples.front().second;
  }
  EXPECT_GT(values["process_resident_memory_bytes"], 1 << 20);
  EXPECT_GE(values["process_virtual_memory_bytes"], values["process_resident_memory_bytes"]);
  EXPECT_GE(values["process_open_fds"], 3);
  EXPECT_GE(values["process_max_fds"], values["process_open_fds"]);
  EXPECT_GT(values["process_cpu_seconds_total"], 0);
  const double now = static_cast<double>(std::time(nullptr));
  EXPECT_LE(values["process_start_time_seconds"], now + 1);
  EXPECT_GT(values["process_start_time_seconds"], now - 3600) << "this test process started within the hour";
}

}  // namespace
}  // namespace runnel::server
