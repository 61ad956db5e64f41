// Requests from a 3-node JetStream cluster (R3 streams) served by two `runnel run`
// processes while one NATS node and, three times, a Runnel process are SIGKILLed and
// started again: every request has exactly one row, one result in PostgreSQL and one message
// on the results subjects; malformed messages end in the dead-letter stream with a row
// saying why; a subscriber of one client's subject receives exactly that client's
// results. RUNNEL_CHAOS_REQUESTS sets how many requests (default 100,000: about 50 s
// under ASan on 2 cores). The same with [jetstream] mode = "direct" (no rows: each
// record's result once in runnel_<p>_jetstream, its quota counted once):
// RUNNEL_CHAOS_DIRECT_REQUESTS, default 30,000.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "../support/child_process.hpp"
#include "../support/nats_server.hpp"
#include "../support/needs_fixture.hpp"
#include "../support/pg_environment.hpp"
#include "../support/random.hpp"
#include "../support/temp_dir.hpp"
#include "runnel/core/error.hpp"
#include "runnel/core/process.hpp"
#include "runnel/nats/jetstream.hpp"
#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/pipeline/schema.hpp"

namespace runnel::server {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

constexpr int kBadEvery = 997;  // every 997th message is malformed

class JetStreamClusterTest : public runnel::testing::PostgresTest {
 protected:
  void SetUp() override {
    PostgresTest::SetUp();
    RUNNEL_REQUIRE_NATS_SERVER();
    cluster_ = std::make_unique<testing::NatsCluster>(3);
    conn_ = std::make_unique<postgres::Connection>(Connect());
    conn_->Exec(runnel::testing::kNeedsSchema);
    conn_->Exec(runnel::testing::kNeedsTableKeysAndCheck);
    std::string servers;
    for (const auto& url : cluster_->urls()) servers += (servers.empty() ? "\"" : ", \"") + url + "\"";
    runnel::testing::WriteFile(dir_ / "pipeline.toml",
                               runnel::testing::ExampleNeedsPipeline() +
                                   fmt::format("\n[jetstream]\nservers = [{}]\nstream = \"REQ\"\n"
                                               "subject = \"req.needs\"\nbatch = 256\nack_wait = \"2s\"\n"
                                               "results = \"runnel.needs.results\"\n",
                                               servers));
    config_ = pipeline::LoadPipelineConfig(dir_ / "pipeline.toml");
    pipeline::Migrate(*conn_, config_);
    runnel::testing::WriteLinearNeedsModel(dir_ / "m.h5");
    nats::ConnectOptions options;
    options.servers = cluster_->urls();
    options.timeout = seconds(5);
    js_ = std::make_unique<nats::JetStream>(options);
    // The cluster elects its JetStream leader a moment after the nodes are up.
    const auto deadline = std::chrono::steady_clock::now() + seconds(30);
    for (;;) {
      try {
        js_->EnsureStream("REQ", {"req.>"}, 3);
        break;
      } catch (const Error& e) {
        if (std::chrono::steady_clock::now() > deadline) FAIL() << "no JetStream cluster: " << e.what();
        std::this_thread::sleep_for(milliseconds(250));
      }
    }
    js_->EnsureStream("DEAD", {"runnel.needs.dead"}, 3);
    js_->EnsureStream("RES", {"runnel.needs.results.>"}, 3);
  }

  testing::ChildProcess StartRunnel(const std::string& name, const std::string& pipeline = "pipeline.toml") {
    return testing::ChildProcess({RUNNEL_BINARY, "run", "--pipeline", (dir_ / pipeline).string(), "--model",
                                  (dir_ / "m.h5").string(), "--db", conninfo(), "--no-migrate", "--workers", "1"},
                                 dir_ / (name + ".log"));
  }

  static std::string Record(int i) {
    if (i % kBadEvery == kBadEvery - 1) return fmt::format(R"({{"client_id": {}, "shoe_size": 44}})", i % 10);
    return fmt::format(
        R"({{"client_id": {}, "age": {}, "gender": 1, "family_members": 2, "financial_education": 0.5, "income": 50,)"
        R"( "wealth": {}, "income_investment": 1, "accumulation_investment": 0}})",
        i % 10, 20 + i % 50, 100 + i);
  }

  // Publishes messages 0..n-1 in chunks, each with a message id: a chunk that failed
  // (its node killed) is published again and the stream keeps one copy of each.
  void PublishAll(int n, std::atomic<int>& published) {
    constexpr int kChunk = 500;
    for (int first = 0; first < n;) {
      std::vector<nats::OutgoingMessage> chunk;
      for (int i = first; i < std::min(n, first + kChunk); ++i)
        chunk.push_back({"req.needs", Record(i), {{"Nats-Msg-Id", fmt::format("req-{}", i)}}});
      try {
        js_->PublishAll(chunk);
        first += static_cast<int>(chunk.size());
        published = first;
      } catch (const Error&) {
        std::this_thread::sleep_for(milliseconds(200));
      }
    }
  }

  // Every message of `stream` on `filter`, through a new consumer.
  std::vector<nats::Message> All(const std::string& stream, const std::string& filter, const std::string& name) {
    std::unique_ptr<nats::PullConsumer> consumer;
    for (int attempt = 0; !consumer; ++attempt) {
      try {
        consumer = js_->Consume(stream, name, filter, seconds(60));
      } catch (const Error&) {  // a node that came back may still be catching up
        if (attempt == 20) throw;
        std::this_thread::sleep_for(milliseconds(500));
      }
    }
    std::vector<nats::Message> out;
    for (int empty = 0; empty < 3;) {
      auto got = consumer->Fetch(2000, milliseconds(500));
      empty = got.empty() ? empty + 1 : 0;
      for (auto& m : got) out.push_back(std::move(m));
    }
    return out;
  }

  int64_t Count(const std::string& sql) { return conn_->Exec(sql).Get<int64_t>(0, 0); }

  struct Processes {
    testing::ChildProcess a, b;
  };
  // Two `runnel run` processes serve `pipeline` while messages 0..n-1 are published.
  // Once `progress` (a count query) reaches a tenth, the publisher still running, a
  // NATS node (picked by the test's seed) and process a die; they come back 2 s later.
  // At a quarter and at two fifths, b then a die again. The processes are busy with a
  // backlog then: each dies with a batch in hand. Returns once every message is
  // published, with both processes running.
  Processes ServeThroughKills(const std::string& pipeline, const std::string& progress, int n) {
    std::mt19937_64 rng(runnel::testing::TestSeed());
    const size_t victim_node = std::uniform_int_distribution<size_t>(0, 2)(rng);
    Processes p{StartRunnel("a", pipeline), StartRunnel("b", pipeline)};
    std::atomic<int> published{0};
    std::thread publisher([&] { PublishAll(n, published); });
    const auto await = [&](int count) {
      const auto deadline = std::chrono::steady_clock::now() + seconds(120);
      while (Count(progress) < count && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(milliseconds(20));
    };
    await(n / 10);
    cluster_->node(victim_node).Kill();
    EXPECT_EQ(p.a.Stop(SIGKILL), 128 + SIGKILL);
    std::this_thread::sleep_for(seconds(2));
    cluster_->node(victim_node).Start();
    p.a = StartRunnel("a2", pipeline);
    await(n / 4);
    EXPECT_EQ(p.b.Stop(SIGKILL), 128 + SIGKILL);
    p.b = StartRunnel("b2", pipeline);
    await(2 * n / 5);
    EXPECT_EQ(p.a.Stop(SIGKILL), 128 + SIGKILL);
    p.a = StartRunnel("a3", pipeline);
    publisher.join();
    return p;
  }

  // Every result message, once `expected` are there (or 20 s passed): the last ones
  // are published shortly after they are served.
  std::vector<nats::Message> AllResults(size_t expected) {
    std::vector<nats::Message> results;
    for (int attempt = 0; attempt < 40 && results.size() < expected; ++attempt) {
      if (attempt > 0) std::this_thread::sleep_for(milliseconds(500));
      results = All("RES", "runnel.needs.results.>", fmt::format("check{}", attempt));
    }
    return results;
  }

  // Waits until `sql` counts `expected` (or `limit` passed); returns the last count.
  int64_t AwaitCount(const std::string& sql, int64_t expected, seconds limit) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    int64_t n = Count(sql);
    while (n != expected && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(milliseconds(250));
      n = Count(sql);
    }
    return n;
  }

  runnel::testing::TempDir dir_{"runnel-jetstream-cluster"};
  std::unique_ptr<testing::NatsCluster> cluster_;
  std::unique_ptr<postgres::Connection> conn_;
  std::unique_ptr<nats::JetStream> js_;
  pipeline::PipelineConfig config_;
};

TEST_F(JetStreamClusterTest, ANodeAndAProcessKilledLoseAndRepeatNothing) {
  const char* env = std::getenv("RUNNEL_CHAOS_REQUESTS");
  const int n = env != nullptr ? std::atoi(env) : 100'000;
  ASSERT_GT(n, 1000);
  const int bad = n / kBadEvery;
  const int good = n - bad;
  auto [a, b] = ServeThroughKills("pipeline.toml", "SELECT count(*) FROM needs", n);
  // Served (done, or throttled by the demo's quota of 1,000 per client).
  EXPECT_EQ(AwaitCount("SELECT count(*) FROM runnel_needs_results", good, seconds(240)), good) << a.Log() << b.Log();
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE status NOT IN ('done', 'throttled')"), 0);
  EXPECT_EQ(AwaitCount("SELECT count(*) FROM runnel_needs_jetstream WHERE error IS NOT NULL", bad, seconds(30)), bad);
  // Each message one row and one result.
  EXPECT_EQ(Count("SELECT count(*) FROM needs"), good);
  EXPECT_EQ(Count("SELECT count(DISTINCT wealth) FROM needs"), good);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream"), n) << "each stream sequence recorded once";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream WHERE error LIKE '%shoe_size: unknown column%'"), bad);
  // Each result one message.
  const auto results = AllResults(static_cast<size_t>(good));
  ASSERT_EQ(results.size(), static_cast<size_t>(good)) << "exactly one message per result";
  std::set<int64_t> ids;
  std::map<std::string, int64_t> per_client;
  for (const auto& m : results) {
    const auto body = nlohmann::json::parse(m.data());
    ids.insert(body["id"].get<int64_t>());
    ++per_client[body["client"].get<std::string>()];
  }
  EXPECT_EQ(ids.size(), static_cast<size_t>(good));
  int64_t id_sum = 0;
  for (const int64_t id : ids) id_sum += id;
  EXPECT_EQ(id_sum, Count("SELECT sum(id)::bigint FROM needs")) << "the ids of the rows, each once";
  // A subscriber of client 3 gets exactly client 3's results.
  const auto mine = All("RES", "runnel.needs.results.3", "client3");
  EXPECT_EQ(static_cast<int64_t>(mine.size()), Count("SELECT count(*) FROM needs WHERE client_id = 3"));
  EXPECT_EQ(static_cast<int64_t>(mine.size()), per_client["3"]);
  for (const auto& m : mine) EXPECT_EQ(nlohmann::json::parse(m.data())["client"], "3");
  // The dead letters: each malformed message once, with its reason.
  const auto letters = All("DEAD", "runnel.needs.dead", "letters");
  EXPECT_EQ(letters.size(), static_cast<size_t>(bad));
  for (const auto& m : letters)
    EXPECT_NE(m.Header("Runnel-Error").find("shoe_size: unknown column"), std::string::npos)
        << m.Header("Runnel-Error");
  // `runnel status` shows the consumer, drained.
  const auto status =
      RunProcess({RUNNEL_BINARY, "status", "--pipeline", (dir_ / "pipeline.toml").string(), "--db", conninfo()});
  EXPECT_EQ(status.exit_code, 0) << status.output;
  EXPECT_NE(status.output.find("jetstream: consumer runnel-needs of stream REQ: pending 0, delivered and not "
                               "acknowledged 0"),
            std::string::npos)
      << status.output;
  EXPECT_EQ(b.Stop(SIGTERM), 0) << b.Log();
  EXPECT_EQ(a.Stop(SIGTERM), 0) << a.Log();
}

// Mode "direct": the same failures while the records are scored without rows.
TEST_F(JetStreamClusterTest, ADirectStreamKilledScoresAndCountsEachRecordOnce) {
  const char* env = std::getenv("RUNNEL_CHAOS_DIRECT_REQUESTS");
  const int n = env != nullptr ? std::atoi(env) : 30'000;
  ASSERT_GT(n, 1000);
  const int bad = n / kBadEvery;
  const int good = n - bad;
  std::string text;
  {
    std::ifstream in(dir_ / "pipeline.toml");
    text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  const auto jetstream = text.find("[jetstream]");
  text = text.substr(0, text.find("[recommend]")) + text.substr(jetstream) + "mode = \"direct\"\n";
  runnel::testing::WriteFile(dir_ / "direct.toml", text);
  const std::string scored = "SELECT count(*) FROM runnel_needs_jetstream WHERE status IS NOT NULL";
  auto [a, b] = ServeThroughKills("direct.toml", scored, n);
  EXPECT_EQ(AwaitCount(scored, good, seconds(240)), good) << a.Log() << b.Log();
  EXPECT_EQ(AwaitCount("SELECT count(*) FROM runnel_needs_jetstream WHERE status IS NULL", bad, seconds(30)), bad);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream"), n) << "each stream sequence recorded once";
  EXPECT_EQ(Count("SELECT count(*) FROM needs"), 0) << "no row made";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream WHERE status NOT IN ('done', 'throttled')"), 0);
  // The demo's quota, 1,000 per client: each record counted once, whoever scored it.
  EXPECT_EQ(Count("SELECT sum(requests)::bigint FROM runnel_needs_quota"), good);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_jetstream WHERE status = 'done'"),
            Count("SELECT sum(least(requests, 1000))::bigint FROM runnel_needs_quota"));
  // Each result one message, whatever was published again after the kills.
  const auto results = AllResults(static_cast<size_t>(good));
  ASSERT_EQ(results.size(), static_cast<size_t>(good)) << "exactly one message per result";
  std::set<std::string> ids;
  for (const auto& m : results) ids.insert(m.Header("Nats-Msg-Id"));
  EXPECT_EQ(ids.size(), static_cast<size_t>(good));
  const auto mine = All("RES", "runnel.needs.results.3", "client3");
  EXPECT_EQ(static_cast<int64_t>(mine.size()),
            Count("SELECT count(*) FROM runnel_needs_jetstream WHERE client = '3' AND status IS NOT NULL"));
  EXPECT_EQ(All("DEAD", "runnel.needs.dead", "letters").size(), static_cast<size_t>(bad));
  EXPECT_EQ(b.Stop(SIGTERM), 0) << b.Log();
  EXPECT_EQ(a.Stop(SIGTERM), 0) << a.Log();
}

}  // namespace
}  // namespace runnel::server
