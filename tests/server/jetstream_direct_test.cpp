// [jetstream] mode = "direct" (server/jetstream_direct.hpp) against a real PostgreSQL
// and a nats-server the test starts: each record is scored once and never becomes a
// row — its outputs equal those of the same record served as a row, its result stored
// keyed by stream sequence and published once to its client's subject, whether its
// message comes once, again after a commit whose acknowledgement was lost, or to a
// consumer made anew; quotas count each record once.
#include "runnel/server/jetstream_direct.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <map>
#include <set>
#include <thread>

#include "../support/nats_server.hpp"
#include "../support/needs_fixture.hpp"
#include "../support/pg_environment.hpp"
#include "../support/temp_dir.hpp"
#include "jetstream_fixture.hpp"
#include "runnel/core/error.hpp"
#include "runnel/model/model.hpp"
#include "runnel/pipeline/model_provider.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/pipeline/worker.hpp"
#include "runnel/server/jetstream_ingest.hpp"
#include "runnel/server/metrics.hpp"

namespace runnel::server {
namespace {

using nlohmann::json;
using std::chrono::milliseconds;

// The needs pipeline without [recommend] (a row's products: table mode only), with a
// quota small enough to reach and records taken by mode "direct".
class JetStreamDirectTest : public JetStreamFixture {
 protected:
  std::string PipelineText(const std::string& url) const override {
    std::string text = runnel::testing::ExampleNeedsPipeline();
    text = text.substr(0, text.find("[recommend]"));
    const std::string quota = "max_requests = 1000";
    text.replace(text.find(quota), quota.size(), "max_requests = 40");
    return text + JetStreamSection(url, "mode = \"direct\"\n");
  }

  void SetUp() override {
    JetStreamFixture::SetUp();
    if (IsSkipped() || HasFatalFailure()) return;
    models_ = pipeline::ModelProvider::Fixed(model::LoadModel(runnel::testing::WriteLinearNeedsModel(dir_ / "m.h5")));
  }

  static std::string Record(int i, int client, double income = 50) {
    return fmt::format(
        R"({{"client_id": {}, "age": {}, "gender": 1, "family_members": 2, "financial_education": 0.5, "income": {},)"
        R"( "wealth": {}, "income_investment": 1, "accumulation_investment": 0}})",
        client, 20 + i % 50, income, 100 + i);
  }

  // Rounds until `records` were handled (or 20 s).
  JetStreamIngest::Counts Drain(JetStreamIngest& ingest, uint64_t records) {
    JetStreamIngest::Counts total;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (total.scored + total.duplicates + total.dead < records && std::chrono::steady_clock::now() < deadline) {
      const auto c = ingest.RunOnce(milliseconds(200));
      total.scored += c.scored;
      total.inserted += c.inserted;
      total.duplicates += c.duplicates;
      total.dead += c.dead;
    }
    return total;
  }

  std::shared_ptr<pipeline::ModelProvider> models_;
};

TEST_F(JetStreamDirectTest, EachRecordIsScoredOnceAsItsRowWouldBeAndNeverBecomesARow) {
  for (int i = 0; i < 120; ++i) js_->Publish("req.needs", Record(i, 100 + i % 6));  // seq 1..120
  js_->Publish("req.needs", Record(500, 7, -5));                                    // 121: income -5, no Box-Cox
  js_->Publish("req.needs", "{not json");                                           // 122: a dead letter
  const nats::OutgoingMessage batch{
      "req.needs",
      Record(501, 7) + "\n" + R"({"client_id": 7, "shoe_size": 44})" + "\n" + Record(502, 8),
      {{"Content-Type", "application/x-ndjson"}}};
  js_->PublishAll({&batch, 1});  // 123: 3 records, one refused
  JetStreamIngest ingest(config_, conninfo(), models_);
  ingest.Connect();
  const auto counts = Drain(ingest, 125);
  EXPECT_EQ(counts.scored, 123u);
  EXPECT_EQ(counts.inserted, 0u);
  EXPECT_EQ(counts.dead, 2u);
  EXPECT_EQ(Count("SELECT count(*) FROM needs"), 0) << "no record became a row";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream WHERE status = 'done'"), 122);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream WHERE seq = 121 AND status = 'failed' AND sqlstate = "
                  "'22000' AND error LIKE 'stream REQ sequence 121 record 1: %income%'"),
            1)
      << conn_->Exec("SELECT error FROM runnel_needs_jetstream WHERE seq = 121")
             .GetOptional<std::string>(0, 0)
             .value_or("");
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream WHERE status IS NULL AND error IS NOT NULL"), 2)
      << "the dead letters: the malformed message, the batch's unknown column";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream WHERE seq = 123 AND item = 2 AND status = 'done' AND "
                  "client = '8'"),
            1);

  // The same records as rows of the table, served by the workers: the same outputs.
  for (int i = 0; i < 120; ++i) {
    auto r = json::parse(Record(i, 100 + i % 6));
    conn_->Exec(
        fmt::format("INSERT INTO needs (client_id, age, gender, family_members, financial_education, income, "
                    "wealth, income_investment, accumulation_investment) VALUES ({}, {}, 1, 2, 0.5, 50, {}, 1, "
                    "0)",
                    r["client_id"].get<int>(), r["age"].get<int>(), r["wealth"].get<double>()));
  }
  pipeline::RunOptions options;
  options.until_idle = true;
  options.idle_wait = milliseconds(50);
  EXPECT_EQ(pipeline::RunPipeline(config_, models_, conninfo(), options).done, 120u);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream j JOIN needs n ON n.wealth = 100 + j.seq - 1 WHERE "
                  "j.seq <= 120 AND abs((j.outputs->>'risk_propensity')::float8 - n.risk_propensity) <= 1e-5 * "
                  "greatest(1, abs(n.risk_propensity)) AND abs((j.outputs->>'financial_status')::float8 - "
                  "n.financial_status) <= 1e-5 * greatest(1, abs(n.financial_status)) AND j.model_version IS NOT NULL"),
            120)
      << "each record's outputs are its row's";

  // Published: one result per scored record on its client's subject.
  const auto results = AllResults("check");
  ASSERT_EQ(results.size(), 123u);
  std::set<std::string> ids;
  for (const auto& m : results) {
    ids.insert(m.Header("Nats-Msg-Id"));
    const auto body = json::parse(m.data());
    EXPECT_EQ(std::string(m.subject()), "runnel.needs.results." + body["client"].get<std::string>());
    EXPECT_EQ(body["stream"], "REQ");
    if (body["seq"] == 121) {
      EXPECT_EQ(body["status"], "failed");
      EXPECT_TRUE(body["outputs"].is_null());
    } else {
      EXPECT_EQ(body["status"], "done") << m.data();
      EXPECT_TRUE(body["outputs"]["risk_propensity"].is_number()) << m.data();
    }
  }
  EXPECT_EQ(ids.size(), 123u);
  EXPECT_TRUE(ids.contains("needs:REQ:123:2"));
}

// A process that committed but died before publishing and acknowledging; then a
// consumer made anew that delivers everything a first time again: each record is
// scored once, counted once against its quota, and published once.
TEST_F(JetStreamDirectTest, ARecordDeliveredAgainIsNotScoredOrCountedAgain) {
  for (int i = 0; i < 100; ++i) js_->Publish("req.needs", Record(i, i < 60 ? 1 : 2));
  {
    JetStreamIngest first(config_, conninfo(), models_);
    first.Connect();
    first.SetAcknowledge(false);
    EXPECT_EQ(Drain(first, 100).scored, 100u);
  }
  EXPECT_EQ(AllResults("before").size(), 0u) << "the first process died before publishing";
  std::this_thread::sleep_for(milliseconds(1200));  // ack_wait
  {
    JetStreamIngest second(config_, conninfo(), models_);
    second.Connect();
    const auto counts = Drain(second, 100);
    EXPECT_EQ(counts.duplicates, 100u);
    EXPECT_EQ(counts.scored, 0u);
  }
  config_.jetstream->durable = "runnel-needs-again";
  JetStreamIngest third(config_, conninfo(), models_);
  third.Connect();
  const auto counts = Drain(third, 100);
  EXPECT_EQ(counts.duplicates, 100u);
  EXPECT_EQ(counts.scored, 0u);

  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream"), 100);
  // Client 1 sent 60 records: 40 done, then throttled; client 2's 40 all done.
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream WHERE client = '1' AND status = 'done'"), 40);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream WHERE client = '1' AND status = 'throttled' AND error "
                  "LIKE 'client 1 is over its quota of 40 requests%'"),
            20);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream WHERE client = '2' AND status = 'done'"), 40);
  EXPECT_EQ(Count("SELECT requests FROM runnel_needs_quota WHERE client = '1'"), 60) << "counted once";
  EXPECT_EQ(Count("SELECT requests FROM runnel_needs_quota WHERE client = '2'"), 40);
  // Published by the second process, again by the third: the duplicate window keeps one.
  const auto results = AllResults("after");
  EXPECT_EQ(results.size(), 100u);
  std::set<std::string> ids;
  for (const auto& m : results) ids.insert(m.Header("Nats-Msg-Id"));
  EXPECT_EQ(ids.size(), 100u);
}

// A record whose result the database refuses for the record's sake (a NUL in its
// client's text; a constraint) is a dead letter with the reason; the others of its
// round are scored, and the stream goes on.
TEST_F(JetStreamDirectTest, ARecordWhoseResultIsRefusedIsADeadLetterAndStopsNothing) {
  conn_->Exec("ALTER TABLE needs ALTER COLUMN client_id TYPE text");
  conn_->Exec("ALTER TABLE runnel_needs_jetstream ADD CONSTRAINT no_13 CHECK (client IS DISTINCT FROM '13')");
  for (int i = 0; i < 30; ++i) {
    auto record = json::parse(Record(i, 10 + i % 5));
    record["client_id"] = std::to_string(10 + i % 5);
    if (i == 7) record["client_id"] = std::string("a\0b", 3);
    js_->Publish("req.needs", record.dump());
  }
  JetStreamIngest ingest(config_, conninfo(), models_);
  ingest.Connect();
  const auto counts = Drain(ingest, 30);
  EXPECT_EQ(counts.scored, 23u) << "30 less the six of client 13 and the NUL";
  EXPECT_EQ(counts.dead, 7u);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream WHERE status = 'done'"), 23);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream WHERE status IS NULL AND error LIKE "
                  "'the database refused its result (SQLSTATE 23514)%'"),
            6);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream WHERE seq = 8 AND status IS NULL AND error LIKE "
                  "'the database refused its result (SQLSTATE 22%'"),
            1)
      << conn_->Exec("SELECT error FROM runnel_needs_jetstream WHERE seq = 8")
             .GetOptional<std::string>(0, 0)
             .value_or("");
  auto dead = js_->Consume("DEAD", "check", "runnel.needs.dead", std::chrono::seconds(30));
  EXPECT_EQ(dead->Fetch(20, milliseconds(1000)).size(), 7u);
  EXPECT_EQ(AllResults("check").size(), 23u);
  // Every message was settled: nothing comes again.
  std::this_thread::sleep_for(milliseconds(1200));  // ack_wait
  EXPECT_EQ(ingest.RunOnce(milliseconds(300)).scored + ingest.RunOnce(milliseconds(300)).dead, 0u);
}

// The ingest thread counts what it scored as requests by status, with their latency.
TEST_F(JetStreamDirectTest, MetricsCountTheScoredRecordsAsRequests) {
  for (int i = 0; i < 45; ++i) js_->Publish("req.needs", Record(i, 1));  // quota 40: 5 throttled
  js_->Publish("req.needs", Record(45, 2, -5));                          // failed: no Box-Cox of -5
  Metrics metrics;
  auto& needs = metrics.AddPipeline("needs");
  JetStreamIngest ingest(config_, conninfo(), models_);
  ingest.SetMetrics(&needs, false);
  ingest.Start();
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (std::chrono::steady_clock::now() < deadline) {
    out = metrics.Render({});
    if (out.find("outcome=\"scored\"} 46\n") != std::string::npos) break;
    std::this_thread::sleep_for(milliseconds(50));
  }
  ingest.Stop();
  EXPECT_NE(out.find("runnel_jetstream_messages_total{pipeline=\"needs\",outcome=\"scored\"} 46\n"), std::string::npos)
      << out;
  EXPECT_NE(out.find("runnel_requests_total{pipeline=\"needs\",status=\"done\"} 40\n"), std::string::npos) << out;
  EXPECT_NE(out.find("runnel_requests_total{pipeline=\"needs\",status=\"throttled\"} 5\n"), std::string::npos) << out;
  EXPECT_NE(out.find("runnel_requests_total{pipeline=\"needs\",status=\"failed\"} 1\n"), std::string::npos) << out;
  EXPECT_NE(out.find("runnel_request_latency_seconds_count{pipeline=\"needs\"} 46\n"), std::string::npos) << out;
}

// Results on subjects no stream captures are not published (said) and stop nothing:
// the messages are acknowledged, their results in the table.
TEST_F(JetStreamDirectTest, ResultsNoStreamCapturesDoNotHoldTheMessagesBack) {
  config_.jetstream->results = "nowhere.results";
  for (int i = 0; i < 20; ++i) js_->Publish("req.needs", Record(i, 1));
  JetStreamIngest ingest(config_, conninfo(), models_);
  ingest.Connect();
  EXPECT_EQ(Drain(ingest, 20).scored, 20u);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream WHERE status = 'done'"), 20);
  std::this_thread::sleep_for(milliseconds(1200));  // ack_wait
  EXPECT_EQ(ingest.RunOnce(milliseconds(300)).duplicates, 0u) << "acknowledged";
}

// Until a model is ready nothing is scored: the round fails and its messages come again.
TEST_F(JetStreamDirectTest, WithoutAModelTheMessagesWait) {
  js_->Publish("req.needs", Record(0, 1));
  JetStreamIngest ingest(config_, conninfo(), std::make_shared<pipeline::ModelProvider>());
  ingest.Connect();
  try {
    ingest.RunOnce(milliseconds(2000));
    ADD_FAILURE() << "scored without a model";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Unavailable);
    EXPECT_NE(std::string(e.what()).find("no model of pipeline 'needs' is ready"), std::string::npos) << e.what();
  }
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream"), 0);
  JetStreamIngest served(config_, conninfo(), models_);
  served.Connect();
  EXPECT_EQ(Drain(served, 1).scored, 1u) << "given back at once, served by the next";
}

// The pure stage: JSON records into the features' columns, the client and data type.
TEST(DirectInputs, RecordsBecomeColumnsAndMissingValuesNull) {
  pipeline::PipelineConfig config;
  config.features.input_columns = {"age", "income"};
  config.features.text_columns = {"note"};
  config.client_column = "client_id";
  config.model_type_column = "kind";
  const json a = json::parse(R"({"age": 41, "income": 2.5, "note": "hello", "client_id": 7, "kind": "x"})");
  const json b = json::parse(R"({"age": null, "note": 12, "client_id": "c-9"})");
  const DirectRecord records[] = {{&a, 1, 0, 0}, {&b, 2, 0, 0}};
  ColumnBatch batch;
  const auto inputs = ReadDirectInputs(config, records, batch);
  ASSERT_EQ(batch.rows, 2u);
  EXPECT_EQ(batch.values[0][0], 41);
  EXPECT_EQ(batch.values[1][0], 2.5);
  EXPECT_EQ(batch.nulls[0][0], 0);
  EXPECT_EQ(batch.nulls[0][1], 1) << "null";
  EXPECT_EQ(batch.nulls[1][1], 1) << "left out";
  EXPECT_EQ(batch.texts[0][0], "hello");
  EXPECT_EQ(batch.texts[0][1], "12");
  EXPECT_EQ(batch.text_nulls[0][1], 0);
  EXPECT_EQ(inputs.clients[0], "7");
  EXPECT_EQ(inputs.clients[1], "c-9");
  EXPECT_EQ(inputs.data_types[0], "x");
  EXPECT_EQ(inputs.data_types[1], std::nullopt);
}

// The pure stage: a done request's outputs as the API shows them; none otherwise.
TEST(DirectInputs, OutputsAreAnObjectOfTheOutputColumnsForDoneRequests) {
  pipeline::PipelineConfig config;
  config.output_columns = {"p", "label", "extra"};
  pipeline::Verdicts verdicts;
  verdicts.Resize(2);
  verdicts.status[0] = pipeline::RequestStatus::kDone;
  verdicts.Fail(1, pipeline::kInvalidDataState, "bad");
  pipeline::ScoredOutputs outputs;
  outputs.values = {{0.25, 9.0}, {std::nullopt, std::nullopt}, {std::nullopt, std::nullopt}};
  outputs.labels = {{}, {std::string("yes"), std::nullopt}, {}};
  const auto objects = ScoredOutputsJson(config, verdicts, outputs);
  ASSERT_EQ(objects.size(), 2u);
  ASSERT_TRUE(objects[0].has_value());
  EXPECT_EQ(json::parse(*objects[0]), json::parse(R"({"p": 0.25, "label": "yes", "extra": null})"));
  EXPECT_FALSE(objects[1].has_value()) << "failed: no outputs";
}

}  // namespace
}  // namespace runnel::server
