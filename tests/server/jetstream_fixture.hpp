// What the JetStream ingest tests share: a real PostgreSQL with the needs tables (keys
// from the table, a CHECK on ages) and a nats-server the test starts, with streams REQ
// (req.>), DEAD (the dead letters) and RES (the results), and the pipeline file the
// test gives (PipelineText) loaded and migrated.
#pragma once

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <vector>

#include "../support/nats_server.hpp"
#include "../support/needs_fixture.hpp"
#include "../support/pg_environment.hpp"
#include "../support/temp_dir.hpp"
#include "runnel/nats/jetstream.hpp"
#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/pipeline/schema.hpp"

namespace runnel::server {

class JetStreamFixture : public runnel::testing::PostgresTest {
 protected:
  // The pipeline file, for a nats-server at `url`.
  virtual std::string PipelineText(const std::string& url) const = 0;

  void SetUp() override {
    PostgresTest::SetUp();
    RUNNEL_REQUIRE_NATS_SERVER();
    nats_ = std::make_unique<testing::NatsServer>();
    conn_ = std::make_unique<postgres::Connection>(Connect());
    conn_->Exec(runnel::testing::kNeedsSchema);
    conn_->Exec(runnel::testing::kNeedsTableKeysAndCheck);
    runnel::testing::WriteFile(dir_ / "pipeline.toml", PipelineText(nats_->url()));
    config_ = pipeline::LoadPipelineConfig(dir_ / "pipeline.toml");
    pipeline::Migrate(*conn_, config_);
    nats::ConnectOptions options;
    options.servers = {nats_->url()};
    js_ = std::make_unique<nats::JetStream>(options);
    js_->EnsureStream("REQ", {"req.>"});
    js_->EnsureStream("DEAD", {"runnel.needs.dead"});
    js_->EnsureStream("RES", {"runnel.needs.results.>"});
  }

  // The [jetstream] section the tests share (stream REQ on req.needs, batches of 64,
  // ack_wait 1 s, results), with `extra` lines.
  static std::string JetStreamSection(const std::string& url, const std::string& extra = "") {
    return fmt::format(
        "\n[jetstream]\nservers = [\"{}\"]\nstream = \"REQ\"\nsubject = \"req.needs\"\nbatch = 64\nack_wait = \"1s\"\n"
        "results = \"runnel.needs.results\"\n{}",
        url, extra);
  }

  // Every message of stream RES, by a new consumer.
  std::vector<nats::Message> AllResults(const std::string& consumer) {
    auto c = js_->Consume("RES", consumer, "runnel.needs.results.>", std::chrono::seconds(30));
    std::vector<nats::Message> out;
    for (int round = 0; round < 20; ++round) {
      auto got = c->Fetch(500, std::chrono::milliseconds(300));
      if (got.empty()) break;
      for (auto& m : got) out.push_back(std::move(m));
    }
    return out;
  }

  int64_t Count(const std::string& sql) { return conn_->Exec(sql).Get<int64_t>(0, 0); }

  runnel::testing::TempDir dir_{"runnel-jetstream"};
  std::unique_ptr<testing::NatsServer> nats_;
  std::unique_ptr<postgres::Connection> conn_;
  std::unique_ptr<nats::JetStream> js_;
  pipeline::PipelineConfig config_;
};

}  // namespace runnel::server
