// Requests from NATS JetStream (server/jetstream_ingest.hpp) against a real PostgreSQL
// and a nats-server the test starts: every message becomes exactly one row and one
// result, whether delivered once, again after a commit whose acknowledgement was lost,
// or to two processes sharing the consumer; malformed messages and rows the database
// refuses end in the dead-letter subject with their reason and stop nothing.
#include "runnel/server/jetstream_ingest.hpp"
#include "runnel/server/grants.hpp"
#include "runnel/server/jetstream_results.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "../support/nats_server.hpp"
#include "../support/needs_fixture.hpp"
#include "../support/pg_environment.hpp"
#include "../support/shared_paths.hpp"
#include "../support/temp_dir.hpp"
#include "jetstream_fixture.hpp"
#include "runnel/core/process.hpp"
#include "runnel/model/model.hpp"
#include "runnel/pipeline/model_provider.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/pipeline/worker.hpp"

namespace runnel::server {
namespace {

using std::chrono::milliseconds;

class JetStreamIngestTest : public JetStreamFixture {
 protected:
  std::string PipelineText(const std::string& url) const override {
    return runnel::testing::ExampleNeedsPipeline() + JetStreamSection(url);
  }

  pipeline::RunSummary Serve() {
    pipeline::RunOptions options;
    options.workers = 2;
    options.until_idle = true;
    options.idle_wait = milliseconds(50);
    return pipeline::RunPipeline(
        config_,
        pipeline::ModelProvider::Fixed(model::LoadModel(runnel::testing::WriteLinearNeedsModel(dir_ / "m.h5"))),
        conninfo(), options);
  }

  static std::string Record(int i, int age = 30) {
    return fmt::format(
        R"({{"client_id": {}, "age": {}, "gender": 1, "family_members": 2, "financial_education": 0.5, "income": 50,)"
        R"( "wealth": {}, "income_investment": 1, "accumulation_investment": 0}})",
        i % 10, age, 100 + i);
  }

  void Publish(int first, int n) {
    for (int i = first; i < first + n; ++i) js_->Publish("req.needs", Record(i));
  }

  // Rounds until `messages` were handled (or 20 s).
  JetStreamIngest::Counts Drain(JetStreamIngest& ingest, uint64_t messages) {
    JetStreamIngest::Counts total;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    while (total.inserted + total.duplicates + total.dead < messages && std::chrono::steady_clock::now() < deadline) {
      const auto c = ingest.RunOnce(milliseconds(200));
      total.inserted += c.inserted;
      total.duplicates += c.duplicates;
      total.dead += c.dead;
    }
    return total;
  }
  // The dead letters published so far, in order (at most `max`, waiting up to `wait`).
  std::vector<nats::Message> DeadLetters(size_t max, milliseconds wait) {
    auto dead = js_->Consume("DEAD", "check", "runnel.needs.dead", std::chrono::seconds(30));
    return dead->Fetch(max, wait);
  }
};

TEST_F(JetStreamIngestTest, EachMessageBecomesOneRowAndOneResult) {
  Publish(0, 300);
  js_->Publish("req.needs", "{not json");
  js_->Publish("req.needs", "[1]");  // one record, not an object
  js_->Publish("req.needs", R"({"client_id": 1, "shoe_size": 44})");
  js_->Publish("req.needs", Record(999, -1));  // the table's CHECK refuses it
  js_->Publish("req.needs", "{\"client_id\": \"\xff\"}");  // not UTF-8
  Publish(300, 200);
  JetStreamIngest ingest(config_, conninfo());
  ingest.Connect();
  const auto counts = Drain(ingest, 505);
  EXPECT_EQ(counts.inserted, 500u);
  EXPECT_EQ(counts.dead, 5u);
  EXPECT_EQ(counts.duplicates, 0u);
  EXPECT_EQ(Count("SELECT count(*) FROM needs"), 500);
  EXPECT_EQ(Count("SELECT count(DISTINCT request_id) FROM runnel_needs_jetstream WHERE error IS NULL"), 500);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream j JOIN needs n ON n.id = j.request_id "
                  "WHERE n.wealth = 100 + j.seq - 1 - CASE WHEN j.seq > 300 THEN 5 ELSE 0 END"),
            500)
      << "each row is its message's record";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream WHERE published_at BETWEEN now() - interval '1 minute' "
                  "AND taken_at + interval '10 ms'"),
            505)
      << "when the stream stored each message";
  // The dead letters: the message as sent, the reason in a header and in the table.
  const auto letters = DeadLetters(10, milliseconds(2000));
  ASSERT_EQ(letters.size(), 5u);
  EXPECT_EQ(letters[0].data(), "{not json");
  EXPECT_NE(letters[0].Header("Runnel-Error").find("the message is not JSON"), std::string::npos)
      << letters[0].Header("Runnel-Error");
  EXPECT_NE(letters[1].Header("Runnel-Error").find("not a JSON object"), std::string::npos);
  EXPECT_NE(letters[2].Header("Runnel-Error").find("shoe_size: unknown column"), std::string::npos)
      << letters[2].Header("Runnel-Error");
  EXPECT_NE(letters[3].Header("Runnel-Error").find("SQLSTATE 23514"), std::string::npos)
      << letters[3].Header("Runnel-Error");
  EXPECT_NE(letters[4].Header("Runnel-Error").find("UTF-8"), std::string::npos) << letters[4].Header("Runnel-Error");
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream WHERE error IS NOT NULL AND request_id IS NULL"), 5);
  // The workers serve the rows like any others.
  EXPECT_EQ(Serve().done, 500u);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'done'"), 500);
  EXPECT_TRUE(ingest.RunOnce(milliseconds(200)).inserted == 0) << "everything was acknowledged";
}

// A process that committed but died before acknowledging: the messages come again
// after ack_wait and are recognised, not inserted twice.
TEST_F(JetStreamIngestTest, ADeliveryAfterACommitIsRecognised) {
  Publish(0, 150);
  {
    JetStreamIngest first(config_, conninfo());
    first.Connect();
    first.SetAcknowledge(false);
    EXPECT_EQ(Drain(first, 150).inserted, 150u);
  }
  std::this_thread::sleep_for(milliseconds(1200));  // ack_wait
  JetStreamIngest second(config_, conninfo());
  second.Connect();
  const auto counts = Drain(second, 150);
  EXPECT_EQ(counts.duplicates, 150u);
  EXPECT_EQ(counts.inserted, 0u);
  EXPECT_EQ(Count("SELECT count(*) FROM needs"), 150);
  // Acknowledgements travel asynchronously: the consumer sees them shortly.
  int64_t pending = -1;
  for (int i = 0; i < 40 && pending != 0; ++i) {
    pending = js_->Info("REQ", config_.jetstream->durable).ack_pending;
    if (pending != 0) std::this_thread::sleep_for(milliseconds(50));
  }
  EXPECT_EQ(pending, 0);
}

// First deliveries skip the lookup; a consumer made anew (another durable name)
// delivers every message a first time again: the table's key says they were taken in.
TEST_F(JetStreamIngestTest, AConsumerMadeAnewDoesNotTakeInTwice) {
  Publish(0, 150);
  js_->Publish("req.needs", "{not json");
  {
    JetStreamIngest first(config_, conninfo());
    first.Connect();
    const auto counts = Drain(first, 151);
    EXPECT_EQ(counts.inserted, 150u);
    EXPECT_EQ(counts.dead, 1u);
  }
  config_.jetstream->durable = "runnel-needs-again";
  JetStreamIngest second(config_, conninfo());
  second.Connect();
  const auto counts = Drain(second, 151);
  EXPECT_EQ(counts.duplicates, 150u);
  EXPECT_EQ(counts.dead, 1u) << "refused again, as recorded";
  EXPECT_EQ(counts.inserted, 0u);
  EXPECT_EQ(Count("SELECT count(*) FROM needs"), 150);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream"), 151);
}

// Two processes share the consumer: every message is taken in once between them.
TEST_F(JetStreamIngestTest, TwoProcessesShareTheWork) {
  Publish(0, 2000);
  JetStreamIngest a(config_, conninfo()), b(config_, conninfo());
  a.Start();
  b.Start();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (a.totals().inserted + b.totals().inserted < 2000 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(milliseconds(50));
  a.Stop();
  b.Stop();
  EXPECT_EQ(a.totals().inserted + b.totals().inserted, 2000u);
  EXPECT_GT(a.totals().inserted, 0u);
  EXPECT_GT(b.totals().inserted, 0u);
  EXPECT_EQ(Count("SELECT count(*) FROM needs"), 2000);
  EXPECT_EQ(Count("SELECT count(DISTINCT wealth) FROM needs"), 2000);
}

// The ingest thread counts its messages and reads the consumer into the metrics.
TEST_F(JetStreamIngestTest, MetricsCountMessagesAndShowTheConsumer) {
  Publish(0, 300);
  js_->Publish("req.needs", "{not json");
  Metrics metrics;
  auto& needs = metrics.AddPipeline("needs");
  JetStreamIngest ingest(config_, conninfo());
  ingest.SetMetrics(&needs, true);
  ingest.Start();
  std::string out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  const std::string want = "runnel_jetstream_consumer_ack_pending{pipeline=\"needs\"} 0\n";
  while (std::chrono::steady_clock::now() < deadline) {
    out = metrics.Render({});
    if (out.find("outcome=\"inserted\"} 300\n") != std::string::npos && out.find(want) != std::string::npos &&
        out.find("consumer_pending{pipeline=\"needs\"} 0\n") != std::string::npos)
      break;
    std::this_thread::sleep_for(milliseconds(100));
  }
  ingest.Stop();
  EXPECT_NE(out.find("runnel_jetstream_messages_total{pipeline=\"needs\",outcome=\"inserted\"} 300\n"),
            std::string::npos)
      << out;
  EXPECT_NE(out.find("runnel_jetstream_messages_total{pipeline=\"needs\",outcome=\"dead\"} 1\n"), std::string::npos)
      << out;
  EXPECT_NE(out.find("runnel_jetstream_consumer_pending{pipeline=\"needs\"} 0\n"), std::string::npos) << out;
  EXPECT_NE(out.find(want), std::string::npos) << out;
  if (std::filesystem::exists("/usr/bin/promtool")) {  // HttpApiTest requires it in CI
    runnel::testing::WriteFile(dir_ / "metrics.txt", out);
    auto check = RunProcess({"/bin/sh", "-c", "/usr/bin/promtool check metrics < " + (dir_ / "metrics.txt").string()});
    EXPECT_EQ(check.exit_code, 0) << check.output;
    EXPECT_EQ(check.output, "") << "no lint warnings";
  }
}

// Each result once on its client's subject, also when a publisher that died before
// storing its position is followed by another; one publisher at a time.
TEST_F(JetStreamIngestTest, ResultsArePublishedOncePerClient) {
  auto first = std::make_unique<JetStreamResults>(config_, conninfo());
  first->Connect();
  EXPECT_EQ(first->RunOnce(), 0u) << "nothing served yet";
  EXPECT_TRUE(first->leading());
  JetStreamResults second(config_, conninfo());
  second.Connect();
  EXPECT_EQ(second.RunOnce(), 0u);
  EXPECT_FALSE(second.leading()) << "one publisher at a time";
  Publish(0, 200);
  JetStreamIngest ingest(config_, conninfo());
  ingest.Connect();
  EXPECT_EQ(Drain(ingest, 200).inserted, 200u);
  EXPECT_EQ(Serve().done, 200u);
  size_t published = 0;
  for (int i = 0; i < 50 && published < 200; ++i) published += first->RunOnce(64);
  EXPECT_EQ(published, 200u);
  // As if it died after publishing, before storing how far: the one that takes over
  // publishes the same events again, and the stream's duplicate window drops them.
  conn_->Exec("UPDATE runnel_needs_published SET txid = '0'::xid8, id = 0, ord = 0");
  first.reset();  // its session, and its lead, end (once its backend has gone)
  size_t again = 0;
  for (int i = 0; i < 200 && again < 200; ++i) {
    again += second.RunOnce(500);
    if (!second.leading()) std::this_thread::sleep_for(milliseconds(25));
  }
  EXPECT_TRUE(second.leading());
  EXPECT_EQ(again, 200u);
  const auto results = AllResults("check");
  ASSERT_EQ(results.size(), 200u) << "each result once";
  std::map<std::string, int> per_subject;
  std::set<int64_t> ids;
  for (const auto& m : results) {
    ++per_subject[std::string(m.subject())];
    const auto body = nlohmann::json::parse(m.data());
    EXPECT_EQ(body["status"], "done");
    EXPECT_TRUE(body["outputs"].contains("risk_propensity"));
    EXPECT_EQ(m.subject(), "runnel.needs.results." + body["client"].get<std::string>());
    ids.insert(body["id"].get<int64_t>());
  }
  EXPECT_EQ(ids.size(), 200u);
  EXPECT_EQ(per_subject.size(), 10u);
  EXPECT_EQ(per_subject["runnel.needs.results.3"], 20);
}

// `runnel run` serves as a role with only what ApplyGrants gives it: the ingest and
// the results publisher work with those rights.
TEST_F(JetStreamIngestTest, IngestAndPublisherWorkAsTheGrantedRole) {
  const std::string role = "js_" + conn_->Exec("SELECT current_database()").Get<std::string>(0, 0);
  conn_->Exec(fmt::format("CREATE ROLE {} LOGIN", role));
  ApplyGrants(*conn_, config_, role);
  const std::string as_role = conninfo() + " user=" + role;
  JetStreamResults results(config_, as_role);
  results.Connect();
  EXPECT_EQ(results.RunOnce(), 0u);
  Publish(0, 20);
  js_->Publish("req.needs", "{not json");
  JetStreamIngest ingest(config_, as_role);
  ingest.Connect();
  const auto counts = Drain(ingest, 21);
  EXPECT_EQ(counts.inserted, 20u);
  EXPECT_EQ(counts.dead, 1u);
  EXPECT_EQ(Serve().done, 20u);
  size_t published = 0;
  for (int i = 0; i < 50 && published < 20; ++i) published += results.RunOnce(64);
  EXPECT_EQ(published, 20u);
}

// A table from before published_at and item were recorded (its key (stream, seq)) gets
// them from migrate.
TEST_F(JetStreamIngestTest, MigrateUpgradesAnOlderTable) {
  conn_->Exec("ALTER TABLE runnel_needs_jetstream DROP COLUMN published_at");
  conn_->Exec("ALTER TABLE runnel_needs_jetstream DROP COLUMN item");  // and the primary key with it
  conn_->Exec("ALTER TABLE runnel_needs_jetstream ADD PRIMARY KEY (stream, seq)");
  const auto done = pipeline::Migrate(*conn_, config_);
  EXPECT_NE(std::find(done.begin(), done.end(),
                      "added column published_at and column item (in the primary key) to runnel_needs_jetstream"),
            done.end())
      << fmt::format("{}", fmt::join(done, "; "));
  EXPECT_TRUE(pipeline::Migrate(*conn_, config_).empty()) << "once";
  EXPECT_EQ(conn_
                ->Exec("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = "
                       "'runnel_needs_jetstream'::regclass AND contype = 'p'")
                .Get<std::string>(0, 0),
            "PRIMARY KEY (stream, seq, item)");
  Publish(0, 3);
  JetStreamIngest ingest(config_, conninfo());
  ingest.Connect();
  EXPECT_EQ(Drain(ingest, 3).inserted, 3u);
  EXPECT_EQ(Count("SELECT count(published_at) FROM runnel_needs_jetstream"), 3);
}

// A value its column's type refuses: the record is a dead letter whose reason names
// the field (a COPY of it, undone, says which); the message's other records go in.
TEST_F(JetStreamIngestTest, ARecordItsColumnRefusesIsADeadLetterNamingTheField) {
  conn_->Exec("ALTER TABLE needs ADD COLUMN note varchar(5)");
  auto with_note = [](int i, const char* note) {
    auto record = nlohmann::json::parse(Record(i));
    record["note"] = note;
    return record.dump();
  };
  const std::vector<nats::OutgoingMessage> message{
      {"req.needs", with_note(0, "fine") + "\n" + with_note(1, "toolong"), {{"Content-Type", "application/x-ndjson"}}}};
  js_->PublishAll(message);
  JetStreamIngest ingest(config_, conninfo());
  ingest.Connect();
  const auto counts = Drain(ingest, 2);
  EXPECT_EQ(counts.inserted, 1u);
  EXPECT_EQ(counts.dead, 1u);
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE note = 'fine'"), 1);
  const auto letters = DeadLetters(10, milliseconds(2000));
  ASSERT_EQ(letters.size(), 1u);
  const std::string reason = letters[0].Header("Runnel-Error");
  EXPECT_NE(reason.find("record 2 of the message: the database refused the row at field 'note' (SQLSTATE 22001)"),
            std::string::npos)
      << reason;
}

// A message may be a batch: NDJSON (Content-Type: application/x-ndjson) or a JSON array.
// Its records are taken in one by one — a refused record is its own dead letter, the
// others are served — and exactly once when the message comes again.
TEST_F(JetStreamIngestTest, ABatchMessageIsTakenInRecordByRecord) {
  const std::vector<std::pair<std::string, std::string>> ndjson{{"Content-Type", "application/x-ndjson"}};
  std::vector<nats::OutgoingMessage> messages{
      {"req.needs",
       Record(0) + "\n" + Record(1) + "\n\n" + Record(2) + "\n" + Record(3, -1) + "\n" +
           R"({"client_id": 1, "shoe_size": 44})" + "\n",
       ndjson},
      {"req.needs", "[" + Record(4) + ", " + Record(5) + "]", {}},
      {"req.needs", Record(6) + "\n{not json\n", ndjson},
      {"req.needs", "[]", {}},
  };
  js_->PublishAll(messages);
  {
    JetStreamIngest first(config_, conninfo());
    first.Connect();
    first.SetAcknowledge(false);  // it dies after its commit
    const auto counts = Drain(first, 9);
    EXPECT_EQ(counts.inserted, 5u);
    EXPECT_EQ(counts.dead, 4u);
  }
  EXPECT_EQ(Count("SELECT count(*) FROM needs"), 5);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream"), 9) << "a row per record, one per message refused";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream j JOIN needs n ON n.id = j.request_id "
                  "WHERE n.wealth = 100 + CASE j.seq WHEN 1 THEN j.item ELSE 4 + j.item END"),
            5)
      << "each row is its record";
  std::this_thread::sleep_for(milliseconds(1200));  // ack_wait
  JetStreamIngest second(config_, conninfo());
  second.Connect();
  const auto again = Drain(second, 6);
  EXPECT_EQ(again.duplicates, 2u);
  EXPECT_EQ(again.dead, 4u) << "the letters again (the stream drops them: same ids)";
  EXPECT_EQ(again.inserted, 0u);
  EXPECT_EQ(Count("SELECT count(*) FROM needs"), 5);
  const auto letters = DeadLetters(10, milliseconds(1000));
  ASSERT_EQ(letters.size(), 4u);
  EXPECT_EQ(nlohmann::json::parse(letters[0].data())["age"], -1) << "the refused record itself";
  EXPECT_NE(letters[0].Header("Runnel-Error").find("record 4 of the message: the database refused the row"),
            std::string::npos)
      << letters[0].Header("Runnel-Error");
  EXPECT_EQ(letters[0].Header("Nats-Msg-Id"), "needs:dead:REQ:1:3");
  EXPECT_NE(letters[1].Header("Runnel-Error").find("record 5 of the message: shoe_size: unknown column"),
            std::string::npos)
      << letters[1].Header("Runnel-Error");
  EXPECT_EQ(letters[2].data(), Record(6) + "\n{not json\n") << "refused whole: the message as sent";
  EXPECT_NE(letters[2].Header("Runnel-Error").find("the message is not JSON: malformed JSON at byte"),
            std::string::npos)
      << letters[2].Header("Runnel-Error");
  EXPECT_EQ(letters[3].Header("Runnel-Error"), "the message: the body holds no records");
  EXPECT_EQ(Serve().done, 5u);
}

TEST(JetStreamResultsTokens, ClientsBecomeSafeSubjectTokens) {
  EXPECT_EQ(JetStreamResults::SubjectToken(std::nullopt), "_");
  EXPECT_EQ(JetStreamResults::SubjectToken(std::string()), "_");
  EXPECT_EQ(JetStreamResults::SubjectToken(std::string("client_7-a")), "client_7-a");
  EXPECT_EQ(JetStreamResults::SubjectToken(std::string("a.b *>é")), "a%2Eb%20%2A%3E%C3%A9");
}

TEST_F(JetStreamIngestTest, AnUnreachableServerFailsAtStartNamingIt) {
  config_.jetstream->servers = {"nats://127.0.0.1:1"};
  JetStreamIngest ingest(config_, conninfo());
  try {
    ingest.Connect();
    FAIL() << "connected";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("nats://127.0.0.1:1"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace runnel::server
