// The real-time pipeline against a real PostgreSQL: capture, quota, write-back,
// recommendations, catch-up after downtime, bad rows, several processes at once.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <atomic>
#include <fstream>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include "../support/keras_h5_file.hpp"
#include "../support/needs_fixture.hpp"
#include "../support/pg_environment.hpp"
#include "../support/random.hpp"
#include "../support/shared_fixtures.hpp"
#include "runnel/core/csv.hpp"
#include "runnel/core/file.hpp"
#include "runnel/core/process.hpp"
#include "runnel/pipeline/jobs.hpp"
#include "runnel/pipeline/quota.hpp"
#include "runnel/pipeline/replay.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/pipeline/worker.hpp"
#include "runnel/postgres/arrays.hpp"

namespace runnel::pipeline {
namespace {

using postgres::ArrayLiteral;
using postgres::Params;

class PipelineRunTest : public runnel::testing::PostgresTest {
 protected:
  void SetUp() override {
    PostgresTest::SetUp();
    conn_ = std::make_unique<postgres::Connection>(Connect());
    conn_->Exec(runnel::testing::kNeedsSchema);
  }

  // The needs example pipeline with another quota, written beside a model.
  PipelineConfig Config(int64_t quota) {
    std::ifstream in(std::string(RUNNEL_SOURCE_DIR) + "/examples/needs/pipeline.toml");
    std::stringstream text;
    text << in.rdbuf();
    std::string toml = text.str();
    toml.replace(toml.find("max_requests = 1000"), 19, fmt::format("max_requests = {}", quota));
    runnel::testing::WriteFile(dir_ / "pipeline.toml", toml);
    return LoadPipelineConfig(dir_ / "pipeline.toml");
  }

  // A small Keras model: risk = 0.1 * (sum of the 9 scaled features) + 0.5.
  std::shared_ptr<const model::Model> SmallModel() {
    return model::LoadModel(runnel::testing::WriteLinearNeedsModel(dir_ / "small.h5"));
  }

  // Rows of id, client, then the 8 inputs (NaN: NULL), into `table` (a partition, say).
  void Insert(const std::vector<std::vector<double>>& rows, const std::string& table = "needs") {
    std::vector<std::vector<std::optional<double>>> cols(10);
    for (const auto& row : rows) {
      for (size_t c = 0; c < 10; ++c) {
        cols[c].push_back(std::isnan(row[c]) ? std::nullopt : std::optional<double>(row[c]));
      }
    }
    Params p;
    for (const auto& c : cols) p.Add(ArrayLiteral(c));
    conn_->Exec("INSERT INTO " + table +
                    " (id, client_id, age, gender, family_members, financial_education, income, wealth, "
                    "income_investment, accumulation_investment) SELECT * FROM unnest($1::float8[], $2::float8[], "
                    "$3::float8[], $4::float8[], $5::float8[], $6::float8[], $7::float8[], $8::float8[], $9::float8[], "
                    "$10::float8[])",
                p);
  }

  static std::vector<double> Row(double id, double client, double wealth = 100) {
    return {id, client, 40, 1, 2, 0.5, 50, wealth, 1, 0};
  }

  RunSummary Serve(const PipelineConfig& config, std::shared_ptr<const model::Model> model, size_t workers = 2) {
    RunOptions options;
    options.workers = workers;
    options.until_idle = true;
    options.idle_wait = std::chrono::milliseconds(50);
    return RunPipeline(config, ModelProvider::Fixed(model), conninfo(), options);
  }

  std::map<int64_t, std::pair<std::string, std::string>> Results() {
    auto r = conn_->Exec("SELECT key, status, coalesce(error, '') FROM runnel_needs_results ORDER BY key", Params());
    std::map<int64_t, std::pair<std::string, std::string>> out;
    for (int i = 0; i < r.rows(); ++i) out[r.Get<int64_t>(i, 0)] = {r.Get<std::string>(i, 1), r.Get<std::string>(i, 2)};
    return out;
  }

  int64_t Count(const std::string& sql) { return conn_->Exec(sql, Params()).Get<int64_t>(0, 0); }

  // Two `run` command lines at once: one is SIGKILLed after `kill_after_ms`, the other
  // gets SIGTERM (a drain once its handler is installed, else the default action:
  // killed as well). Fails unless the second ended by draining or by that signal.
  static void KillRound(const std::string& run, int kill_after_ms, const std::string& what) {
    auto outcome =
        RunProcess({"/bin/sh", "-c",
                    fmt::format("{r} & a=$!; {r} & b=$!; sleep {s}; kill -9 $a; kill -15 $b; wait $b; s=$?; wait $a; "
                                "[ $s -eq 0 ] || [ $s -eq 143 ]",
                                fmt::arg("r", run), fmt::arg("s", kill_after_ms / 1000.0))});
    ASSERT_EQ(outcome.exit_code, 0) << what << ": no process exits by itself\n" << outcome.output;
  }

  // Done requests whose stored recommendations differ from what `rule` selects in SQL
  // over the rows as they are now.
  int64_t RecommendationsUnlikeSql(const std::string& rule) {
    return Count(
        "SELECT count(*) FROM runnel_needs_results x JOIN needs r ON r.id = x.key WHERE x.status = 'done' AND "
        "x.recommended IS DISTINCT FROM array(SELECT p.id_product::bigint FROM products p WHERE " +
        rule + ")");
  }

  // Every row scored again by a batch job, served until idle.
  RunSummary Rescore(const PipelineConfig& config) {
    auto job = CreateJob(*conn_, config, "", 100);
    while (AdvanceJobs(*conn_, config)) {
    }
    RunOptions options;
    options.until_idle = true;
    options.idle_wait = std::chrono::milliseconds(50);
    auto summary = RunPipeline(config, ModelProvider::Fixed(SmallModel()), conninfo(), options);
    EXPECT_EQ(GetJob(*conn_, job.id)->state, "done");
    return summary;
  }

  static constexpr const char* kNeedsRule =
      "(p.income = r.income_investment OR p.accumulation = r.accumulation_investment) AND p.risk <= "
      "r.risk_propensity";

  std::unique_ptr<postgres::Connection> conn_;
  runnel::testing::TempDir dir_{"runnel-pipeline"};
};

TEST_F(PipelineRunTest, MigrateIsIdempotentAndNamesMissingThings) {
  auto config = Config(10);
  auto first = Migrate(*conn_, config);
  EXPECT_EQ(first.size(), 12u) << "tables, job support, statement queue rows, failure reasons, result events, quota "
                                  "windows, status gone, status superseded, the failed requests' index, request "
                                  "ids of other keys, trigger, and an index";
  EXPECT_NE(first.back().find("created index runnel_needs_key on needs (id)"), std::string::npos) << first.back();
  EXPECT_TRUE(Migrate(*conn_, config).empty()) << "a second run changes nothing";
  EXPECT_EQ(Count("SELECT count(*) FROM pg_trigger WHERE tgname = 'runnel_needs_capture'"), 1);

  conn_->Exec("ALTER TABLE needs RENAME COLUMN wealth TO riches");
  try {
    Migrate(*conn_, config);
    ADD_FAILURE() << "must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("table 'needs' has no column 'wealth'"), std::string::npos) << e.what();
  }
  conn_->Exec("DROP TABLE needs");
  try {
    Migrate(*conn_, config);
    ADD_FAILURE() << "must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("table 'needs' does not exist"), std::string::npos) << e.what();
  }
}

TEST_F(PipelineRunTest, MigrateUpgradesASchemaVersion2DatabaseKeepingItsWork) {
  // What schema version 2 left: one queue row per key, a recommendations table.
  conn_->Exec(R"sql(
    CREATE TABLE runnel_migrations (pipeline text NOT NULL, version int NOT NULL,
      applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (pipeline, version));
    INSERT INTO runnel_migrations (pipeline, version) VALUES ('needs', 1), ('needs', 2);
    CREATE TABLE runnel_needs_queue (seq bigserial PRIMARY KEY, key bigint NOT NULL,
      enqueued_at timestamptz NOT NULL DEFAULT clock_timestamp(), job bigint);
    CREATE TABLE runnel_needs_results (key bigint PRIMARY KEY, status text NOT NULL, error text, model_version text,
      enqueued_at timestamptz, finished_at timestamptz NOT NULL DEFAULT clock_timestamp());
    CREATE INDEX runnel_needs_results_status ON runnel_needs_results (status);
    CREATE TABLE runnel_needs_quota (client text PRIMARY KEY, requests bigint NOT NULL);
    CREATE TABLE runnel_needs_recommendations (request_key bigint NOT NULL, product_key bigint NOT NULL,
      model_version text);
    CREATE TABLE runnel_jobs (id bigserial PRIMARY KEY);
    INSERT INTO runnel_needs_queue (key) VALUES (3), (4);
    INSERT INTO runnel_needs_results (key, status, model_version) VALUES (1, 'done', 'v1'), (2, 'done', 'v1');
    INSERT INTO runnel_needs_recommendations VALUES (1, 2, 'v1'), (1, 3, 'v1');
  )sql");
  Insert({Row(3, 1), Row(4, 1)});  // the rows the queued keys name, from before the capture trigger
  auto config = Config(1000);
  auto changes = Migrate(*conn_, config);
  ASSERT_FALSE(changes.empty());
  EXPECT_NE(changes[0].find("schema version 3"), std::string::npos) << changes[0];
  EXPECT_EQ(Count("SELECT sum(n) FROM runnel_needs_queue"), 2) << "the waiting requests stay queued";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_recommendations WHERE request_key = 1 AND model_version = 'v1'"),
            2);
  EXPECT_EQ(Count("SELECT cardinality(recommended) FROM runnel_needs_results WHERE key = 2"), 0)
      << "a done request without products has an empty list";
  auto summary = Serve(config, SmallModel());
  EXPECT_EQ(summary.done, 2u);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results"), 4);
  EXPECT_EQ(Count("SELECT max(version) FROM runnel_migrations WHERE pipeline = 'needs'"), kSchemaVersion);
}

TEST_F(PipelineRunTest, TheCaptureTriggerQueuesExactlyTheStatementsKeys) {
  auto config = Config(1000);
  Migrate(*conn_, config);
  const int64_t chunk = QueueChunk(config);
  auto queued = [&] {
    return conn_->Exec("SELECT string_agg(keys::text || ':' || n, ' ' ORDER BY seq) FROM runnel_needs_queue", Params())
        .Get<std::string>(0, 0);
  };
  // Consecutive keys: chunks computed from min and max.
  std::vector<std::vector<double>> rows;
  for (int64_t i = 1; i <= chunk + 3; ++i) rows.push_back(Row(static_cast<double>(i), 1));
  Insert(rows);
  EXPECT_EQ(queued(), fmt::format("{{[1,{})}}:{} {{[{},{})}}:3", chunk + 1, chunk, chunk + 1, chunk + 4));
  conn_->Exec("DELETE FROM runnel_needs_queue");
  // Gaps and a repeated key: exactly those keys, nothing between them.
  Insert({Row(10, 1), Row(12, 1), Row(12, 2), Row(15, 1)});
  EXPECT_EQ(queued(), "{[10,11),[12,13),[15,16)}:4");
  conn_->Exec("DELETE FROM runnel_needs_queue");
  // Keys 3, 3, 5: as many rows as [3, 5] is wide, but only two distinct keys.
  Insert({Row(3, 1), Row(3, 1), Row(5, 1)});
  EXPECT_EQ(queued(), "{[3,4),[5,6)}:3");
  conn_->Exec("DELETE FROM runnel_needs_queue");
  Insert({Row(NAN, 1)});  // a NULL key is no request
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 0);
}

TEST_F(PipelineRunTest, ServesWritesBackAndRecommends) {
  auto config = Config(1000);
  Migrate(*conn_, config);
  Insert({Row(1, 7), Row(2, 8)});
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 1) << "one statement, one queue row";
  EXPECT_EQ(Count("SELECT sum(n) FROM runnel_needs_queue"), 2) << "two captured keys";
  auto summary = Serve(config, SmallModel());
  EXPECT_EQ(summary.done, 2u);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 0);
  // financial_status = 0.5 * ln(100); risk = 0.1 * sum(scaled features) + 0.5, computed in SQL.
  auto row = conn_->Exec("SELECT risk_propensity, financial_status FROM needs WHERE id = 1", Params());
  EXPECT_NEAR(row.Get<double>(0, 1), 0.5 * std::log(100.0), 1e-5);
  const double lambda_i = 0.3026418664067109, lambda_w = 0.1336735055366279;
  const std::vector<double> x = {40,
                                 1,
                                 2,
                                 0.5,
                                 (std::pow(50.0, lambda_i) - 1) / lambda_i,
                                 (std::pow(100.0, lambda_w) - 1) / lambda_w,
                                 1,
                                 0,
                                 0.5 * std::log(100.0)};
  const std::vector<double> means = {55.2534,           0.492,  2.5106, 0.41912250425,     7.664003606794818,
                                     5.650795740523163, 0.3836, 0.5132, 1.7884450179129336};
  const std::vector<double> scales = {11.970496582849016,  0.49993599590347565, 0.7617661320904205,
                                      0.15136821202756753, 2.4818937424620633,  1.5813522545815777,
                                      0.4862623160393987,  0.49982572962983807, 0.8569630982206199};
  double expected = 0.5;
  for (size_t i = 0; i < 9; ++i) expected += 0.1 * (x[i] - means[i]) / scales[i];
  EXPECT_NEAR(row.Get<double>(0, 0), expected, 1e-5);
  // Recommendations follow the rule over the written-back risk.
  const auto expected_products = Count(
      "SELECT count(*) FROM needs r JOIN products p ON (p.income = r.income_investment OR p.accumulation = "
      "r.accumulation_investment) AND p.risk <= r.risk_propensity WHERE r.id IN (1, 2)");
  EXPECT_GT(expected_products, 0);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_recommendations"), expected_products);
  EXPECT_EQ(RecommendationsUnlikeSql(kNeedsRule), 0);
  EXPECT_EQ(summary.recommended_by_runnel, summary.batches) << "the rule is inside the subset Runnel evaluates";
  EXPECT_EQ(
      Count("SELECT count(DISTINCT model_version) FROM runnel_needs_results WHERE model_version LIKE 'small.h5@%'"), 1);
}

// Two pipelines on one table, two models writing different columns: each captures
// every insert, serves it once with its own model and writes only its own columns,
// and neither's write-back is captured by the other (no loop), even with updates on.
TEST_F(PipelineRunTest, TwoPipelinesOnOneTableServeEveryRowEachWithItsOwnModel) {
  auto first = Config(1000);
  conn_->Exec("ALTER TABLE needs ADD COLUMN risk_b real", Params());
  std::ifstream in(first.file);
  std::stringstream text;
  text << in.rdbuf();
  std::string toml = text.str();
  auto replace = [&](const std::string& from, const std::string& to) {
    const auto at = toml.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    toml.replace(at, from.size(), to);
  };
  replace("name = \"needs\"\n", "name = \"needs_b\"\n");
  replace("outputs = [\"risk_propensity\"]", "outputs = [\"risk_b\"]");
  replace("[output]\ncolumns = [\"risk_propensity\", \"financial_status\"]", "[output]\ncolumns = [\"risk_b\"]");
  replace("[write_back]\ncolumns = [\"risk_propensity\", \"financial_status\"]",
          "[write_back]\ncolumns = [\"risk_b\"]");
  replace("mode = \"queue\"", "on = [\"insert\", \"update\"]\nmode = \"queue\"");
  toml = toml.substr(0, toml.find("[recommend]"));
  runnel::testing::WriteFile(dir_ / "second.toml", toml);
  auto second = LoadPipelineConfig(dir_ / "second.toml");
  Migrate(*conn_, first);
  Migrate(*conn_, second);
  std::vector<std::vector<double>> rows;
  for (int i = 1; i <= 300; ++i) rows.push_back(Row(i, i % 7));
  Insert(rows);
  // Model B: the same features, another bias, so each column shows its model.
  nlohmann::json layers = nlohmann::json::array();
  layers.push_back({{"class_name", "InputLayer"}, {"config", {{"name", "in"}, {"batch_input_shape", {nullptr, 9}}}}});
  layers.push_back({{"class_name", "Dense"}, {"config", {{"name", "d"}, {"units", 1}, {"activation", "linear"}}}});
  runnel::testing::KerasH5File file({{"class_name", "Sequential"}, {"config", {{"name", "s"}, {"layers", layers}}}});
  file.Weights("d", {{"kernel:0", {{9, 1}, std::vector<float>(9, 0.1f)}}, {"bias:0", {{1}, {7.5f}}}});
  auto model_b = model::LoadModel(file.Write(dir_ / "b.h5"));
  std::exception_ptr failed;
  std::thread other([&] {
    try {
      RunOptions options;
      options.until_idle = true;
      options.idle_wait = std::chrono::milliseconds(50);
      EXPECT_EQ(RunPipeline(second, ModelProvider::Fixed(model_b), conninfo(), options).done, 300u);
    } catch (...) {
      failed = std::current_exception();
    }
  });
  EXPECT_EQ(Serve(first, SmallModel()).done, 300u);
  other.join();
  if (failed) std::rethrow_exception(failed);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'done'"), 300);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_b_results WHERE status = 'done'"), 300);
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE risk_propensity IS NULL OR risk_b IS NULL"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE abs(risk_b - risk_propensity - 7.0) > 1e-4"), 0)
      << "each column holds its own model's prediction";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_b_queue"), 0) << "pipeline A's write-back is not an input change";
  // An update of an input: B (updates on) serves it again, A (inserts only) does not.
  conn_->Exec("UPDATE needs SET age = 41 WHERE id <= 10", Params());
  RunOptions options;
  options.until_idle = true;
  options.idle_wait = std::chrono::milliseconds(50);
  EXPECT_EQ(RunPipeline(second, ModelProvider::Fixed(model_b), conninfo(), options).done, 10u);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 0);
}

// Keys that are not one integer column: uuid, text, and composite, each row given a
// request id in the id column. Everything a direct key does: served once each (in
// statements of many rows, with a re-inserted key), written back and recommended,
// failures and deleted rows named by their key, updates re-scored, a batch job over
// rows inserted before the pipeline existed.
struct KeyKind {
  const char* name;
  const char* column_sql;  // ALTER TABLE needs ... to add the key
  const char* key_toml;    // [source] key = ...
  const char* label;       // how messages name a row's key
};

class MappedKeyTest : public PipelineRunTest, public ::testing::WithParamInterface<KeyKind> {
 protected:
  PipelineConfig KeyedConfig() {
    auto config = Config(1000);
    std::ifstream in(config.file);
    std::string toml((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    toml.replace(toml.find("key = \"id\""), 10, std::string("key = ") + GetParam().key_toml);
    toml.replace(toml.find("mode = \"queue\""), 14, "on = [\"insert\", \"update\"]\nmode = \"queue\"");
    runnel::testing::WriteFile(config.file, toml);
    return LoadPipelineConfig(config.file);
  }
};

TEST_P(MappedKeyTest, ServesEachRowOnceWritesBackAndNamesRowsByTheirKey) {
  conn_->Exec(GetParam().column_sql, Params());
  std::vector<std::vector<double>> early;
  for (int i = 1; i <= 20; ++i) early.push_back(Row(i, i % 7));
  Insert(early);  // before the pipeline: only a batch job serves these
  auto config = KeyedConfig();
  Migrate(*conn_, config);
  EXPECT_TRUE(postgres::TableExists(*conn_, "runnel_needs_keys"));
  EXPECT_EQ(Count("SELECT count(DISTINCT runnel_needs_id) FROM needs"), 20) << "rows from before get ids at migrate";
  std::vector<std::vector<double>> rows;
  for (int i = 21; i <= 320; ++i) rows.push_back(Row(i, i % 7));
  Insert({rows.begin(), rows.begin() + 150});
  Insert({rows.begin() + 150, rows.end()});
  conn_->Exec("ALTER TABLE needs ADD CONSTRAINT sane CHECK (id <> 321 OR risk_propensity IS NULL)", Params());
  Insert({Row(321, 1)});  // its write-back is refused by the CHECK
  Insert({Row(322, 2), Row(323, 3)});
  conn_->Exec("DELETE FROM needs WHERE id = 323", Params());  // gone before it is served
  auto summary = Serve(config, SmallModel());
  EXPECT_EQ(summary.done, 301u);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'done'"), 301);
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE id > 20 AND id <> 321 AND risk_propensity IS NULL"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE id <= 20 AND risk_propensity IS NOT NULL"), 0)
      << "rows from before the pipeline are not requests";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 0);
  // Each result belongs to its row through the view of keys: the written-back value is
  // the result's, and the row's recommendations are the ones its risk allows.
  EXPECT_EQ(Count(fmt::format("SELECT count(*) FROM runnel_needs_results r JOIN runnel_needs_keys m ON m.runnel_id = "
                              "r.key JOIN needs n ON {} WHERE r.status = 'done' AND n.risk_propensity::float8 = "
                              "r.risk_propensity::real::float8",
                              GetParam().name == std::string("composite") ? "(n.tenant, n.id) = (m.tenant, m.id)"
                              : GetParam().name == std::string("uuid")    ? "n.loan = m.loan"
                                                                          : "n.code = m.code")),
            301);
  EXPECT_GT(Count("SELECT count(*) FROM runnel_needs_recommendations"), 0);
  auto failed = conn_->Exec(
      "SELECT status, error FROM runnel_needs_results WHERE status IN ('failed', 'gone') "
      "ORDER BY status",
      Params());
  ASSERT_EQ(failed.rows(), 2);
  EXPECT_EQ(failed.Get<std::string>(0, 0), "failed");
  EXPECT_NE(failed.Get<std::string>(0, 1).find(GetParam().label), std::string::npos) << failed.Get<std::string>(0, 1);
  EXPECT_NE(failed.Get<std::string>(0, 1).find("sane"), std::string::npos) << failed.Get<std::string>(0, 1);
  EXPECT_EQ(failed.Get<std::string>(1, 0), "gone");

  // Updates of inputs are served again; a deleted key inserted again is a new request.
  conn_->Exec("UPDATE needs SET age = 41 WHERE id BETWEEN 21 AND 30", Params());
  EXPECT_EQ(Serve(config, SmallModel()).done, 10u);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results"), 303) << "updates re-score into the same result rows";
  const int64_t old_id = Count("SELECT runnel_needs_id FROM needs WHERE id = 40");
  // Copied back without its id (the last column: added at migrate), the row gets a new one.
  conn_->Exec(
      "CREATE TABLE saved AS SELECT * FROM needs WHERE id = 40; ALTER TABLE saved DROP COLUMN runnel_needs_id; "
      "DELETE FROM needs WHERE id = 40; INSERT INTO needs SELECT * FROM saved");
  EXPECT_EQ(Serve(config, SmallModel()).done, 1u);
  EXPECT_GT(Count("SELECT runnel_needs_id FROM needs WHERE id = 40"), old_id);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results"), 304);
  EXPECT_EQ(
      Count(fmt::format("SELECT count(*) FROM runnel_needs_keys m JOIN runnel_needs_gone_keys g USING (runnel_id) "
                        "WHERE m.runnel_id IN (SELECT key FROM runnel_needs_results WHERE status = 'gone') OR "
                        "m.runnel_id = {}",
                        old_id)),
      2)
      << "deleted rows keep their keys: the request of 323 (gone) and the first of 40";

  // A batch job serves the rows from before the pipeline.
  auto job = CreateJob(*conn_, config, "status is null", 100);
  EXPECT_EQ(job.total, 20) << "the rows without a result: those from before the pipeline";
  while (AdvanceJobs(*conn_, config)) {
  }
  Serve(config, SmallModel());
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE id <= 20 AND risk_propensity IS NULL"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_keys"), 322 + 2) << "322 rows and 2 deleted ones";
  conn_->Exec("TRUNCATE needs");
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_keys"), 322 + 2) << "truncated rows keep their keys";
}

// A pipeline migrated by a Runnel of schema version 9 had a key map (a table giving
// each key its request id). Migrating converts it: each row keeps its request id (in
// its id column), a deleted row's key stays in runnel_<p>_gone_keys, new rows get ids
// after the map's, and serving goes on.
TEST_P(MappedKeyTest, AKeyMapOfSchemaVersion9IsConvertedKeepingItsRequestIds) {
  conn_->Exec(GetParam().column_sql, Params());
  auto config = KeyedConfig();
  Migrate(*conn_, config);
  std::vector<std::vector<double>> rows;
  for (int i = 1; i <= 30; ++i) rows.push_back(Row(i, i % 7));
  Insert(rows);
  EXPECT_EQ(Serve(config, SmallModel()).done, 30u);
  // The version 9 schema, by hand: a key map table with the same ids, ids 1000 on
  // (a map's ids need not be the sequence's), the key of row 5 mapped but the row gone.
  const auto signature =
      conn_->Exec("SELECT obj_description('runnel_needs_keys'::regclass, 'pg_class')", Params()).Get<std::string>(0, 0);
  conn_->Exec(
      "UPDATE runnel_needs_results SET key = key + 1000; UPDATE needs SET runnel_needs_id = runnel_needs_id + 1000;"
      "CREATE TABLE v9_map AS SELECT * FROM runnel_needs_keys; DROP VIEW runnel_needs_keys;"
      "DROP TRIGGER runnel_needs_capture_delete ON needs; DROP FUNCTION runnel_needs_capture_delete();"
      "DROP TABLE runnel_needs_gone_keys; DELETE FROM needs WHERE id = 5; CREATE TABLE v9_ids AS SELECT * FROM v9_map;"
      "ALTER TABLE needs DROP COLUMN runnel_needs_id; ALTER TABLE v9_map RENAME TO runnel_needs_keys;"
      "ALTER TABLE runnel_needs_keys ADD PRIMARY KEY (runnel_id);"
      "DELETE FROM runnel_migrations WHERE pipeline = 'needs' AND version = 10");
  conn_->Exec(fmt::format("COMMENT ON TABLE runnel_needs_keys IS {}", postgres::QuoteLiteral(signature)));
  ASSERT_EQ(SchemaVersion(*conn_, config), 9);

  Migrate(*conn_, config);
  EXPECT_EQ(SchemaVersion(*conn_, config), kSchemaVersion);
  const std::string same = GetParam().name == std::string("composite") ? "(n.tenant, n.id) = (v.tenant, v.id)"
                           : GetParam().name == std::string("uuid")    ? "n.loan = v.loan"
                                                                       : "n.code = v.code";
  EXPECT_EQ(Count(fmt::format("SELECT count(*) FROM needs n JOIN v9_ids v ON {} WHERE n.runnel_needs_id = v.runnel_id",
                              same)),
            29)
      << "each row keeps its request id";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_gone_keys g JOIN v9_ids v USING (runnel_id)"), 1)
      << "the key of the deleted row";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results r JOIN runnel_needs_keys m ON m.runnel_id = r.key"), 30);

  rows.clear();
  for (int i = 31; i <= 40; ++i) rows.push_back(Row(i, i % 7));
  Insert(rows);
  EXPECT_EQ(Serve(config, SmallModel()).done, 10u);
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE id > 30 AND runnel_needs_id > 1030 AND risk_propensity IS NOT "
                  "NULL"),
            10)
      << "new rows' ids follow the map's";
}

// Exactly once under SIGKILL with keys that need request ids: the rows' ids, the
// queue and the results commit together, so no key is given two ids or served twice.
TEST_P(MappedKeyTest, SigkilledWorkersNeverLoseOrRepeatARequest) {
  conn_->Exec(GetParam().column_sql, Params());
  auto config = KeyedConfig();
  Migrate(*conn_, config);
  SmallModel();
  std::string toml;
  {
    std::ifstream in(config.file);
    toml.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  toml.replace(toml.find("max_batch = 2048"), 16, "max_batch = 8");
  runnel::testing::WriteFile(config.file, toml);
  std::mt19937_64 rng(runnel::testing::TestSeed());
  const std::string run = fmt::format("{} run --pipeline {} --model {} --db '{}' --no-migrate --workers 2",
                                      RUNNEL_BINARY, config.file.string(), (dir_ / "small.h5").string(), conninfo());
  int next = 1;
  for (int round = 0; round < 4; ++round) {
    std::vector<std::vector<double>> rows;
    for (int i = 0; i < 100; ++i, ++next) rows.push_back(Row(next, next % 10 + 1));
    Insert(rows);
    KillRound(run, std::uniform_int_distribution<int>(20, 400)(rng), fmt::format("round {}", round));
    if (HasFatalFailure()) return;
  }
  auto last = RunProcess({"/bin/sh", "-c", run + " --until-idle"});
  ASSERT_EQ(last.exit_code, 0) << last.output;
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'done'"), next - 1);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_keys"), next - 1) << "one request id per key";
  EXPECT_EQ(Count("SELECT sum(requests)::bigint FROM runnel_needs_quota"), next - 1) << "each counted once";
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE risk_propensity IS NULL"), 0);
}

INSTANTIATE_TEST_SUITE_P(
    Keys, MappedKeyTest,
    ::testing::Values(KeyKind{"uuid",
                              "ALTER TABLE needs ADD COLUMN loan uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE",
                              "\"loan\"", "loan = '"},
                      KeyKind{"text", "ALTER TABLE needs ADD COLUMN code text NOT NULL DEFAULT md5(random()::text)",
                              "\"code\"", "code = '"},
                      KeyKind{"composite", "ALTER TABLE needs ADD COLUMN tenant varchar(20) NOT NULL DEFAULT 'acme'",
                              "[\"tenant\", \"id\"]", "tenant = 'acme', id = '321'"}),
    [](const ::testing::TestParamInfo<KeyKind>& kind) { return std::string(kind.param.name); });

// The summary's serving time spans the batches, not the idle time around them (the
// rate `runnel run` prints on Ctrl-C).
TEST_F(PipelineRunTest, BusyTimeExcludesIdleTime) {
  auto config = Config(1000);
  Migrate(*conn_, config);
  Insert({Row(1, 7), Row(2, 8)});
  std::atomic<bool> stop{false};
  RunOptions options;
  options.workers = 1;
  options.stop = &stop;
  options.idle_wait = std::chrono::milliseconds(50);
  std::thread stopper([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    stop = true;
  });
  const auto summary = RunPipeline(config, ModelProvider::Fixed(SmallModel()), conninfo(), options);
  stopper.join();
  EXPECT_EQ(summary.done, 2u);
  EXPECT_GE(summary.seconds, 1.4);
  EXPECT_GT(summary.busy_seconds, 0.0);
  EXPECT_LT(summary.busy_seconds, 1.0) << "two rows are served in far less than the idle second";
}

TEST_F(PipelineRunTest, ALargeCatalogueIsQueriedPerRequestWithTheSameRecommendations) {
  auto config = Config(1000);
  Migrate(*conn_, config);
  // More products than are copied once per statement (1,000).
  conn_->Exec(
      "INSERT INTO products SELECT 100 + g, g % 2, (g + 1) % 2, (g % 100) / 100.0, 'p' || g "
      "FROM generate_series(1, 1500) g");
  std::vector<std::vector<double>> rows;
  for (int i = 1; i <= 40; ++i) rows.push_back(Row(i, i % 4 + 1));
  Insert(rows);
  EXPECT_EQ(Serve(config, SmallModel(), 1).recommended_by_runnel, 0u) << "too large to read per batch";
  const auto expected = Count(
      "SELECT count(*) FROM needs r JOIN products p ON (p.income = r.income_investment OR p.accumulation = "
      "r.accumulation_investment) AND p.risk <= r.risk_propensity");
  EXPECT_GT(expected, 40 * 100);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_recommendations"), expected);
  // The same rule over the small catalogue path: back to the four products.
  conn_->Exec("DELETE FROM products WHERE id_product > 100");
  auto job = CreateJob(*conn_, config, "", 100);
  while (AdvanceJobs(*conn_, config)) {
  }
  RunOptions options;
  options.until_idle = true;
  options.idle_wait = std::chrono::milliseconds(50);
  RunPipeline(config, ModelProvider::Fixed(SmallModel()), conninfo(), options);
  EXPECT_EQ(GetJob(*conn_, job.id)->state, "done");
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_recommendations"),
            Count("SELECT count(*) FROM needs r JOIN products p ON (p.income = r.income_investment OR p.accumulation "
                  "= r.accumulation_investment) AND p.risk <= r.risk_propensity"));
}

TEST_F(PipelineRunTest, RecommendationsEvaluatedByRunnelAreThoseOfSql) {
  auto config = Config(1000);
  Migrate(*conn_, config);
  std::mt19937_64 rng(runnel::testing::TestSeed());
  std::vector<std::vector<double>> rows;
  for (int i = 1; i <= 60; ++i) {
    auto row = Row(i, i % 5 + 1, std::uniform_real_distribution<double>(2, 2000)(rng));
    row[2] = std::uniform_int_distribution<int>(18, 90)(rng);  // age
    row[8] = std::uniform_int_distribution<int>(0, 1)(rng);    // income_investment
    row[9] = std::uniform_int_distribution<int>(0, 1)(rng);    // accumulation_investment
    rows.push_back(row);
  }
  Insert(rows);
  conn_->Exec("INSERT INTO products VALUES (99, 1, NULL, NULL, 'unknown risk'), (98, NULL, 1, 0, 'no income')");
  auto first = Serve(config, SmallModel(), 1);
  EXPECT_EQ(first.done, 60u);
  EXPECT_EQ(first.recommended_by_runnel, first.batches);
  EXPECT_EQ(RecommendationsUnlikeSql(kNeedsRule), 0);

  // Products priced exactly at written-back risks: real against real, the boundary
  // where comparing the unrounded prediction would decide otherwise.
  conn_->Exec(
      "UPDATE products p SET risk = r.risk_propensity FROM needs r WHERE r.id = p.id_product * 7; "
      "INSERT INTO products SELECT 10 + r.id, r.income_investment, 1 - r.accumulation_investment, "
      "r.risk_propensity, 'at ' || r.id FROM needs r WHERE r.id % 3 = 0");
  auto again = Rescore(config);
  EXPECT_EQ(again.recommended_by_runnel, again.batches);
  EXPECT_EQ(RecommendationsUnlikeSql(kNeedsRule), 0);
  EXPECT_GT(Count("SELECT count(*) FROM runnel_needs_results x, products p WHERE p.id_product > 10 AND "
                  "p.id_product = ANY (x.recommended) AND x.key = p.id_product - 10"),
            0)
      << "a product priced at a request's own risk is recommended to it";

  // The same over a derived output, a double written back to a real column: Runnel
  // compares the value as the column holds it, not as computed.
  conn_->Exec(
      "DELETE FROM products WHERE id_product > 10; INSERT INTO products SELECT 10 + r.id, r.income_investment, 0, "
      "r.financial_status, 'at ' || r.id FROM needs r WHERE r.id % 2 = 0");
  auto derived = config;
  derived.recommend->where = "p.income = r.income_investment AND p.risk <= r.financial_status";
  auto by_status = Rescore(derived);
  EXPECT_EQ(by_status.recommended_by_runnel, by_status.batches);
  EXPECT_EQ(RecommendationsUnlikeSql(derived.recommend->where), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results x WHERE x.key % 2 = 0 AND NOT (x.key + 10 = ANY "
                  "(x.recommended))"),
            0)
      << "every even request gets the product priced at its own financial status";

  // A rule outside the subset is evaluated by PostgreSQL, with the same outcome.
  auto text_rule = config;
  text_rule.recommend->where = std::string(kNeedsRule) + " AND p.description <> ''";
  auto by_sql = Rescore(text_rule);
  EXPECT_EQ(by_sql.recommended_by_runnel, 0u);
  EXPECT_EQ(RecommendationsUnlikeSql(text_rule.recommend->where), 0);

  // So is a catalogue whose column left the subset's types while serving.
  conn_->Exec("ALTER TABLE products ALTER COLUMN risk TYPE numeric");
  auto numeric = Rescore(config);
  EXPECT_EQ(numeric.recommended_by_runnel, 0u);
  EXPECT_GT(numeric.batches, 0u);
  EXPECT_EQ(RecommendationsUnlikeSql(kNeedsRule), 0);
}

TEST_F(PipelineRunTest, AsynchronousCommitsServeTheSame) {
  // The workers' sessions, seen in the server's statement log: only the configured
  // pipeline turns synchronous commits off.
  const auto log = runnel::testing::PostgresEnvironment::Get().cluster().log_file();
  conn_->Exec(fmt::format("ALTER DATABASE {} SET log_statement = 'all'", postgres::QuoteIdentifier(dbname())));
  auto logged_since = [&](size_t from) { return ReadFileBytes(log).substr(from); };
  const std::string kAsync = "SET synchronous_commit = off";

  auto config = Config(3);
  Migrate(*conn_, config);
  Insert({Row(1, 1)});
  size_t from = ReadFileBytes(log).size();
  EXPECT_EQ(Serve(config, SmallModel(), 1).done, 1u);
  EXPECT_EQ(logged_since(from).find(kAsync), std::string::npos) << "synchronous by default";

  config.synchronous_commit = false;
  Insert({Row(2, 1), Row(3, 1), Row(4, 1), Row(5, 2)});
  from = ReadFileBytes(log).size();
  auto summary = Serve(config, SmallModel(), 2);
  EXPECT_NE(logged_since(from).find(kAsync), std::string::npos) << "each worker session commits asynchronously";
  EXPECT_EQ(summary.done, 3u);
  EXPECT_EQ(summary.throttled, 1u);
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE risk_propensity IS NOT NULL"), 4);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 0);
}

// [capture] gather_ms: after a batch that emptied the queue, the worker waits before
// claiming again, so requests that trickle in meanwhile are served as one batch.
TEST_F(PipelineRunTest, AGatheringWorkerServesATrickleInFewerBatches) {
  auto config = Config(1000);
  Migrate(*conn_, config);
  auto trickle = [&](int first) {
    std::atomic<bool> stop{false}, started{false};
    std::atomic<int> batches{0};
    RunOptions options;
    options.workers = 1;
    options.stop = &stop;
    options.idle_wait = std::chrono::milliseconds(20);
    options.on_started = [&] { started = true; };
    options.on_batch = [&](const BatchResult&) { ++batches; };
    std::thread run([&] { RunPipeline(config, ModelProvider::Fixed(SmallModel()), conninfo(), options); });
    while (!started) std::this_thread::sleep_for(std::chrono::milliseconds(5));
    for (int i = 0; i < 6; ++i) {
      Insert({Row(first + i, 1)});
      std::this_thread::sleep_for(std::chrono::milliseconds(40));
    }
    for (int i = 0; i < 300 && Count("SELECT count(*) FROM runnel_needs_queue") > 0; ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // the last batch commits
    stop = true;
    run.join();
    EXPECT_EQ(
        Count(fmt::format("SELECT count(*) FROM runnel_needs_results WHERE key >= {} AND key < {}", first, first + 6)),
        6);
    return batches.load();
  };
  // Six single-row inserts 40 ms apart: served as they come, each its own batch (at
  // least four: a slow machine may find two queued at once)...
  EXPECT_GE(trickle(1), 4);
  // ...or, gathering for 1 s after each batch, as the first row and then the other five.
  config.gather_ms = 1000;
  EXPECT_EQ(trickle(101), 2);
}

TEST_F(PipelineRunTest, QuotaBoundariesAreExact) {
  auto config = Config(3);
  Migrate(*conn_, config);
  std::mt19937_64 rng(runnel::testing::TestSeed());
  // Client 1: 5 requests, client 2: 2, spread over statements of random size.
  std::vector<std::vector<double>> rows = {Row(1, 1), Row(2, 2), Row(3, 1), Row(4, 1), Row(5, 2), Row(6, 1), Row(7, 1)};
  for (size_t at = 0; at < rows.size();) {
    size_t n = std::uniform_int_distribution<size_t>(1, 3)(rng);
    n = std::min(n, rows.size() - at);
    Insert({rows.begin() + static_cast<std::ptrdiff_t>(at), rows.begin() + static_cast<std::ptrdiff_t>(at + n)});
    at += n;
  }
  // One worker serves queue rows in insertion order, so a client's requests count in
  // key order. (With several workers the counts stay exact, but which of a client's
  // requests cross the threshold follows the order their batches commit in: the
  // three-process test below.)
  Serve(config, SmallModel(), 1);
  auto results = Results();
  ASSERT_EQ(results.size(), 7u);
  // Client 1's 1st-3rd (keys 1, 3, 4) are served.
  for (int64_t key : {1, 2, 3, 4, 5}) EXPECT_EQ(results[key].first, "done") << key;
  for (int64_t key : {6, 7}) {
    EXPECT_EQ(results[key].first, "throttled") << key;
    EXPECT_EQ(results[key].second, "client 1 is over its quota of 3 requests");
  }
  EXPECT_EQ(Count("SELECT requests FROM runnel_needs_quota WHERE client = '1'"), 5);
  EXPECT_EQ(Count("SELECT requests FROM runnel_needs_quota WHERE client = '2'"), 2);
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE id IN (6, 7) AND risk_propensity IS NOT NULL"), 0)
      << "throttled requests are not scored";
  Insert({Row(8, 2), Row(9, 2)});
  Serve(config, SmallModel(), 1);
  results = Results();
  EXPECT_EQ(results[8].first, "done") << "client 2's third request";
  EXPECT_EQ(results[9].first, "throttled") << "client 2's fourth request";
}

TEST_F(PipelineRunTest, QuotaCountersMovedByAnotherWorkerMidBatchAreHonoured) {
  auto config = Config(3);
  Migrate(*conn_, config);
  Insert({Row(1, 1), Row(2, 1)});
  // Another worker's batch has counted two requests of client 1 and not committed:
  // the counter row is locked and its committed value still says 0.
  auto other = Connect();
  other.Exec("BEGIN");
  other.Exec("INSERT INTO runnel_needs_quota VALUES ('1', 2)");
  Worker worker(config, ModelProvider::Fixed(SmallModel()), conninfo());
  BatchResult batch;
  std::thread serving([&] { batch = worker.ServeBatch(); });
  // The worker planned both requests as client 1's 1st and 2nd, and now waits on the
  // counter to advance it.
  auto waiting = [&] {
    return Count(
               "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE "
               "'INSERT INTO \"runnel_needs_quota\"%'") > 0;
  };
  for (int i = 0; i < 500 && !waiting(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_TRUE(waiting());
  other.Exec("COMMIT");
  serving.join();
  EXPECT_TRUE(batch.redone) << "the counters moved under the batch: it is served again, counters first";
  EXPECT_EQ(batch.done, 1u);
  EXPECT_EQ(batch.throttled, 1u);
  auto results = Results();
  EXPECT_EQ(results[1].first, "done") << "client 1's 3rd request";
  EXPECT_EQ(results[2].first, "throttled") << "client 1's 4th request";
  EXPECT_EQ(Count("SELECT requests FROM runnel_needs_quota WHERE client = '1'"), 4);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 0);
}

// A window of `seconds` on the needs pipeline's quota.
PipelineConfig WithWindow(PipelineConfig config, int64_t seconds) {
  config.quota_window = std::chrono::seconds(seconds);
  return config;
}

TEST_F(PipelineRunTest, QuotaWindowsRestartTheCountAtEachBoundaryAcrossWorkers) {
  constexpr int64_t kWindow = 4;  // a round takes well under a second; 3.5 s of margin
  const auto config = WithWindow(Config(3), kWindow);
  Migrate(*conn_, config);
  // Seconds into the current window by the database's clock, which every process shares.
  auto into_window = [&] {
    return conn_->Exec(fmt::format("SELECT (extract(epoch FROM clock_timestamp()) % {})::float8", kWindow), Params())
        .Get<double>(0, 0);
  };
  auto window_of = [&](const char* ts) {
    return Count(fmt::format("SELECT floor(extract(epoch FROM {}) / {})::bigint", ts, kWindow));
  };
  // Start a round just after a boundary so that it stays in one window.
  auto await_window_start = [&] {
    while (into_window() > 0.25) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  };
  int64_t next_key = 1;
  auto round = [&] {
    // Five requests per client, one statement each, so that both workers take some.
    for (int i = 0; i < 5; ++i) {
      Insert({Row(static_cast<double>(next_key), 1)});
      Insert({Row(static_cast<double>(next_key + 1), 2)});
      next_key += 2;
    }
    const auto window = window_of("now()");
    auto summary = Serve(config, SmallModel(), 2);
    EXPECT_EQ(window_of("now()"), window) << "the round crossed a boundary: the machine is too slow for this test";
    return summary;
  };

  await_window_start();
  const int64_t first = window_of("clock_timestamp()");
  auto a = round();
  EXPECT_EQ(a.done, 6u) << "3 per client";
  EXPECT_EQ(a.throttled, 4u);
  EXPECT_EQ(Count("SELECT requests FROM runnel_needs_quota WHERE client = '1'"), 5);

  while (window_of("clock_timestamp()") == first) std::this_thread::sleep_for(std::chrono::milliseconds(20));
  await_window_start();
  auto b = round();
  EXPECT_EQ(b.done, 6u) << "a new window: each client has 3 again";
  EXPECT_EQ(b.throttled, 4u);
  for (const char* client : {"1", "2"}) {
    EXPECT_EQ(Count(fmt::format("SELECT requests FROM runnel_needs_quota WHERE client = '{}'", client)), 5)
        << "counted from 0 in the new window, not 10";
    EXPECT_GT(Count(fmt::format("SELECT floor(extract(epoch FROM window_start) / {})::bigint FROM runnel_needs_quota "
                                "WHERE client = '{}'",
                                kWindow, client)),
              first);
  }
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'done'"), 12);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE error = 'client 1 is over its quota of 3 requests "
                  "per 4s'"),
            4);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 0);
}

TEST_F(PipelineRunTest, AQuotaCounterAlreadyInALaterWindowTakesTheCountAndAnOldOneRestarts) {
  const auto config = WithWindow(Config(3), 3600);
  Migrate(*conn_, config);
  // Client 1's counter was moved into the next hour by another process (a batch that
  // began before the boundary commits after it); client 2's is from an hour ago.
  conn_->Exec(
      "INSERT INTO runnel_needs_quota VALUES ('1', 2, to_timestamp((floor(extract(epoch FROM now()) / 3600) + 1) * "
      "3600)), ('2', 100, to_timestamp((floor(extract(epoch FROM now()) / 3600) - 1) * 3600))");
  Insert({Row(1, 1), Row(2, 1), Row(3, 2)});
  auto summary = Serve(config, SmallModel(), 1);
  EXPECT_EQ(summary.done, 2u) << "client 1's 3rd and client 2's 1st";
  EXPECT_EQ(summary.throttled, 1u) << "client 1's 4th";
  EXPECT_EQ(Count("SELECT requests FROM runnel_needs_quota WHERE client = '1'"), 4);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_quota WHERE client = '1' AND window_start > now()"), 1)
      << "the later window stays";
  EXPECT_EQ(Count("SELECT requests FROM runnel_needs_quota WHERE client = '2'"), 1) << "the old window restarted";
}

TEST_F(PipelineRunTest, QuotaResetAndReadAgreeWithTheWorker) {
  const auto config = WithWindow(Config(3), 86400);
  Migrate(*conn_, config);
  Insert({Row(1, 1), Row(2, 1), Row(3, 1), Row(4, 1), Row(5, 2)});
  Serve(config, SmallModel(), 1);
  auto snapshot = quota::Read(*conn_, config, {"1", "2", "9"});
  ASSERT_EQ(snapshot.clients.size(), 3u);
  EXPECT_EQ(snapshot.clients[0].requests, 4);
  EXPECT_EQ(snapshot.clients[1].requests, 1);
  EXPECT_EQ(snapshot.clients[2].requests, 0) << "a client never seen";
  EXPECT_EQ(snapshot.window_start.substr(11), "00:00:00.000000Z") << "a day window starts at midnight UTC";
  EXPECT_EQ(snapshot.resets_at.substr(11), "00:00:00.000000Z");
  EXPECT_NE(snapshot.window_start, snapshot.resets_at);
  EXPECT_EQ(quota::Read(*conn_, config, {}).clients.size(), 2u) << "every client with a counter";
  const auto summary = quota::Summarize(*conn_, config);
  EXPECT_EQ(summary.clients, 2);
  EXPECT_EQ(summary.at_limit, 1) << "client 1 (4 of 3)";
  EXPECT_EQ(summary.resets_at, snapshot.resets_at);

  EXPECT_EQ(quota::Reset(*conn_, config, {"1"}), 1);
  Insert({Row(6, 1), Row(7, 2), Row(8, 2), Row(9, 2)});
  auto after = Serve(config, SmallModel(), 1);
  EXPECT_EQ(after.done, 3u) << "client 1 starts again; client 2 reaches 3";
  EXPECT_EQ(after.throttled, 1u);
  EXPECT_EQ(Results()[9].first, "throttled");
  EXPECT_EQ(quota::Reset(*conn_, config, {}), 2);
  EXPECT_TRUE(quota::Read(*conn_, config, {}).clients.empty());
  EXPECT_EQ(quota::Describe(config), "3 requests per client per 1d (UTC-aligned)");
}

PipelineConfig WithUpdates(PipelineConfig config) {
  config.capture_updates = true;
  return config;
}

TEST_F(PipelineRunTest, UpdatesOfWatchedColumnsAreServedAgainAndTheWriteBackDoesNotLoop) {
  const auto config = WithUpdates(Config(1000));
  auto changes = Migrate(*conn_, config);
  EXPECT_EQ(std::count_if(changes.begin(), changes.end(),
                          [](const std::string& c) {
                            return c.starts_with(
                                "installed update capture trigger runnel_needs_capture_update on needs (\"id\", "
                                "\"age\"");
                          }),
            1)
      << fmt::format("{}", fmt::join(changes, "\n"));
  EXPECT_TRUE(Migrate(*conn_, config).empty()) << "installed once";
  conn_->Exec("CREATE UNIQUE INDEX needs_id ON needs (id)");
  Insert({Row(1, 1, 100), Row(2, 1, 100), Row(3, 2, 100)});
  EXPECT_EQ(Serve(config, SmallModel(), 2).done, 3u);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 0) << "the write-back captured nothing";

  auto financial_status = [&](int64_t id) {
    return conn_->Exec(fmt::format("SELECT financial_status::float8 FROM needs WHERE id = {}", id), Params())
        .Get<double>(0, 0);
  };
  conn_->Exec("UPDATE needs SET wealth = 400 WHERE id = 1");                        // an input: served again
  conn_->Exec("UPDATE needs SET client_id = 9, risk_propensity = 0 WHERE id = 2");  // neither input nor key
  conn_->Exec("UPDATE needs SET wealth = wealth WHERE id = 3");                     // an input, unchanged
  conn_->Exec(
      "INSERT INTO needs (id, client_id, age, gender, family_members, financial_education, income, wealth, "
      "income_investment, accumulation_investment) VALUES (3, 2, 40, 1, 2, 0.5, 50, 900, 1, 0), "
      "(4, 2, 40, 1, 2, 0.5, 50, 100, 1, 0) ON CONFLICT (id) DO UPDATE SET wealth = EXCLUDED.wealth");  // an upsert
  EXPECT_EQ(Count("SELECT coalesce(sum(n), 0)::bigint FROM runnel_needs_queue"), 3) << "keys 1, 3 (upsert) and 4";
  auto summary = Serve(config, SmallModel(), 2);
  EXPECT_EQ(summary.done, 3u);
  EXPECT_NEAR(financial_status(1), 0.5 * std::log(400.0), 1e-5) << "re-scored from the new wealth";
  EXPECT_NEAR(financial_status(3), 0.5 * std::log(900.0), 1e-5) << "the upsert's update re-scored it";
  EXPECT_NEAR(financial_status(4), 0.5 * std::log(100.0), 1e-5) << "the upsert's insert";
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE id = 2 AND risk_propensity = 0"), 1) << "not watched: not served";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results"), 4) << "one result per key, replaced";
  EXPECT_EQ(Serve(config, SmallModel(), 2).done, 0u) << "serving again finds nothing: no loop";

  // Without "update" in capture.on, migrate removes the trigger.
  changes = Migrate(*conn_, Config(1000));
  ASSERT_FALSE(changes.empty());
  EXPECT_NE(changes.back().find("removed update capture trigger"), std::string::npos) << changes.back();
  conn_->Exec("UPDATE needs SET wealth = 50 WHERE id = 1");
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 0);
}

TEST_F(PipelineRunTest, AnUpdateStormWhileServingLeavesEveryRowScoredFromItsFinalInputs) {
  const auto config = WithUpdates(Config(1000000));
  Migrate(*conn_, config);
  constexpr int kKeys = 1000, kRounds = 50;
  std::vector<std::vector<double>> rows;
  for (int k = 1; k <= kKeys; ++k) rows.push_back(Row(k, k % 10, 100));
  Insert(rows);
  std::mt19937_64 rng(runnel::testing::TestSeed());
  const uint64_t seed = rng();
  std::atomic<bool> updating{true};
  std::atomic<int> deadlocks{0};
  std::thread updater([&] {
    auto conn = Connect();
    // Each round changes every key's wealth (a random permutation of keys, in a few
    // statements), so a key changes 50 times while workers serve it.
    std::mt19937_64 local(seed);
    for (int round = 0; round < kRounds; ++round) {
      const int parts = std::uniform_int_distribution<int>(1, 4)(local);
      for (int part = 0; part < parts; ++part) {
        const auto update =
            fmt::format("UPDATE needs SET wealth = 100 + {} + id % 7 WHERE id % {} = {}", round * 10, parts, part);
        for (;;) {
          try {
            conn.Exec(update, Params());
            break;
          } catch (const postgres::DatabaseError& e) {
            // A multi-row UPDATE and a batch's write-back can lock rows in opposite
            // orders; PostgreSQL then aborts one, and an application retries.
            if (e.sqlstate() != "40P01") throw;
            ++deadlocks;
          }
        }
      }
    }
    updating = false;
  });
  size_t served = 0;
  while (updating || Count("SELECT count(*) FROM runnel_needs_queue") > 0)
    served += Serve(config, SmallModel(), 2).done;
  updater.join();
  served += Serve(config, SmallModel(), 2).done;
  std::printf("served %zu requests for %d updates of %d keys; the updater retried %d deadlocked statements\n", served,
              kKeys * kRounds, kKeys, deadlocks.load());
  EXPECT_GE(served, static_cast<size_t>(kKeys));
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'done'"), kKeys);
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE abs(financial_status - 0.5 * ln(wealth)) > 1e-4 "
                  "OR financial_status IS NULL"),
            0)
      << "every key's output follows its final input";
  EXPECT_EQ(Count(fmt::format("SELECT count(*) FROM needs WHERE wealth <> 100 + {} + id % 7", (kRounds - 1) * 10)), 0);
}

TEST_F(PipelineRunTest, ARowDeletedBeforeItIsServedIsGoneNotFailed) {
  const auto config = Config(1000);
  Migrate(*conn_, config);
  Insert({Row(1, 1), Row(2, 1), Row(3, 1)});
  conn_->Exec("DELETE FROM needs WHERE id = 2");
  auto summary = Serve(config, SmallModel(), 1);
  EXPECT_EQ(summary.done, 2u);
  EXPECT_EQ(summary.gone, 1u);
  EXPECT_EQ(summary.failed, 0u);
  EXPECT_EQ(Results()[2].first, "gone");
}

TEST_F(PipelineRunTest, UnmigrateLeavesTheTableAsItWasAndMigrateAgainStartsClean) {
  const auto config = WithUpdates(Config(3));
  auto relations = [&] {
    return Count(
        "SELECT (SELECT count(*) FROM pg_class WHERE relname LIKE 'runnel\\_needs%') + (SELECT count(*) FROM "
        "pg_proc WHERE proname LIKE 'runnel\\_needs%') + (SELECT count(*) FROM pg_trigger WHERE tgrelid = "
        "'needs'::regclass AND NOT tgisinternal)");
  };
  auto needs_columns = [&] {
    return Count("SELECT count(*) FROM information_schema.columns WHERE table_name = 'needs'");
  };
  const int64_t columns_before = needs_columns();
  const auto fresh = Migrate(*conn_, config);
  const int64_t installed = relations();
  Insert({Row(1, 1), Row(2, 1)});
  Serve(config, SmallModel(), 1);
  Insert({Row(3, 1)});  // still queued when the pipeline is removed
  conn_->Exec("UPDATE needs SET wealth = 200 WHERE id = 1");
  const auto plan = UnmigratePlan(*conn_, config);
  EXPECT_EQ(std::count(plan.begin(), plan.end(), "table runnel_needs_queue"), 1)
      << fmt::format("{}", fmt::join(plan, "\n"));
  auto removed = Unmigrate(*conn_, config);
  EXPECT_EQ(removed.size(), plan.size());
  EXPECT_EQ(relations(), 0) << "no trigger, function, table, view, index or sequence of the pipeline is left";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_migrations WHERE pipeline = 'needs'"), 0);
  EXPECT_EQ(needs_columns(), columns_before) << "the table keeps its columns";
  EXPECT_EQ(Count("SELECT count(*) FROM needs"), 3) << "and its rows";
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE risk_propensity IS NOT NULL"), 2)
      << "and their written-back values";
  conn_->Exec("INSERT INTO needs (id, client_id, wealth) VALUES (4, 1, 10)");  // no trigger to fail or queue
  conn_->Exec("UPDATE needs SET wealth = 300 WHERE id = 1");
  EXPECT_TRUE(Unmigrate(*conn_, config).empty()) << "nothing left to remove";

  EXPECT_EQ(Migrate(*conn_, config), fresh) << "migrating again does what it did the first time";
  EXPECT_EQ(relations(), installed);
  Insert({Row(5, 1)});
  EXPECT_EQ(Serve(config, SmallModel(), 1).done, 1u) << "a fresh quota: the first request of client 1";
}

TEST_F(PipelineRunTest, APartitionedSourceIsServedIncludingAPartitionAttachedWhileServing) {
  conn_->Exec(
      "DROP TABLE needs; CREATE TABLE needs (id integer, age integer, gender integer, family_members integer, "
      "financial_education real, risk_propensity real, income real, wealth real, income_investment integer, "
      "accumulation_investment integer, financial_status real, client_id integer) PARTITION BY RANGE (id); "
      "CREATE TABLE needs_1 PARTITION OF needs FOR VALUES FROM (1) TO (1000); "
      "CREATE TABLE needs_2 PARTITION OF needs FOR VALUES FROM (1000) TO (2000)");
  const auto config = WithUpdates(Config(1000000));
  Migrate(*conn_, config);
  EXPECT_TRUE(UncapturedPartitions(*conn_, config).empty());
  Insert({Row(1, 1), Row(999, 1), Row(1000, 2)});
  Insert({Row(1500, 2)}, "needs_2");  // straight into a partition: its own statement-level trigger
  EXPECT_EQ(Serve(config, SmallModel(), 2).done, 4u);
  // A partition attached while serving: rows inserted through the parent are requests
  // like any other; those inserted straight into it once migrate has run again.
  conn_->Exec("CREATE TABLE needs_3 (LIKE needs)");
  conn_->Exec("ALTER TABLE needs ATTACH PARTITION needs_3 FOR VALUES FROM (2000) TO (3000)");
  EXPECT_EQ(UncapturedPartitions(*conn_, config), std::vector<std::string>{"needs_3"});
  Insert({Row(2000, 3), Row(2999, 3), Row(5, 1)});
  conn_->Exec("UPDATE needs SET wealth = 400 WHERE id IN (1, 2000)");  // updates in two partitions
  auto summary = Serve(config, SmallModel(), 2);
  // Keys 2000, 2999, 5 inserted and 1, 2000 updated: 2000's insert and update are one
  // request when one batch claims both.
  EXPECT_GE(summary.done, 4u);
  EXPECT_LE(summary.done, 5u);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'done'"), 7);
  const auto done = Migrate(*conn_, config);
  EXPECT_NE(std::find(done.begin(), done.end(), "installed trigger runnel_needs_capture on partition needs_3 of needs"),
            done.end())
      << fmt::format("{}", fmt::join(done, "; "));
  EXPECT_TRUE(UncapturedPartitions(*conn_, config).empty());
  Insert({Row(2500, 3)}, "needs_3");
  EXPECT_EQ(Serve(config, SmallModel(), 2).done, 1u);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'done'"), 8);
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE financial_status IS NULL OR "
                  "abs(financial_status - 0.5 * ln(wealth)) > 1e-4"),
            0)
      << "every row, in every partition, written back from its latest inputs";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 0);

  // A detached partition loses Runnel's trigger at the next migrate; unmigrate removes
  // the partitions' triggers with the parent's.
  conn_->Exec("ALTER TABLE needs DETACH PARTITION needs_1");
  const auto again = Migrate(*conn_, config);
  EXPECT_NE(std::find(again.begin(), again.end(),
                      "removed trigger runnel_needs_capture from needs_1: no longer a partition of needs"),
            again.end())
      << fmt::format("{}", fmt::join(again, "; "));
  EXPECT_EQ(Count("SELECT count(*) FROM pg_trigger WHERE tgrelid = 'needs_1'::regclass"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'runnel%' AND tgparentid = 0"), 4)
      << "insert capture on needs, needs_2 and needs_3, update capture on needs (cloned to its partitions)";
  Unmigrate(*conn_, config);
  EXPECT_EQ(Count("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'runnel%'"), 0);
}

// A list-partitioned table keyed by (region, id): the request id column and the triggers sit on
// the parent, so a partition attached while serving is covered as well.
TEST_F(PipelineRunTest, APartitionedSourceWithACompositeKeyIsServedIncludingAnAttachedPartition) {
  conn_->Exec(
      "DROP TABLE needs; CREATE TABLE needs (region text NOT NULL DEFAULT 'eu', id integer, age integer, "
      "gender integer, family_members integer, financial_education real, risk_propensity real, income real, "
      "wealth real, income_investment integer, accumulation_investment integer, financial_status real, "
      "client_id integer) PARTITION BY LIST (region); "
      "CREATE TABLE needs_eu PARTITION OF needs FOR VALUES IN ('eu'); "
      "CREATE TABLE needs_us PARTITION OF needs FOR VALUES IN ('us')");
  auto config = WithUpdates(Config(1000000));
  config.key_columns = {"region", "id"};
  Migrate(*conn_, config);
  Insert({Row(1, 1), Row(2, 1)});  // eu
  conn_->Exec(
      "INSERT INTO needs SELECT 'us', * FROM (SELECT id, age, gender, family_members, financial_education, "
      "risk_propensity, income, wealth, income_investment, accumulation_investment, financial_status, "
      "client_id FROM needs) s");  // the same ids in us: other keys
  EXPECT_EQ(Serve(config, SmallModel(), 2).done, 4u);
  // Deleted straight from a partition: the request keeps its key (gone keys).
  conn_->Exec("DELETE FROM needs_us WHERE id = 2");
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_gone_keys"), 1);
  conn_->Exec("CREATE TABLE needs_apac (LIKE needs)");
  conn_->Exec("ALTER TABLE needs ATTACH PARTITION needs_apac FOR VALUES IN ('apac')");
  conn_->Exec(
      "INSERT INTO needs SELECT 'apac', id, age, gender, family_members, financial_education, "
      "risk_propensity, income, wealth, income_investment, accumulation_investment, NULL, client_id "
      "FROM needs WHERE region = 'eu'");
  conn_->Exec("UPDATE needs SET wealth = 400 WHERE id = 1 AND region IN ('us', 'apac')");
  Serve(config, SmallModel(), 2);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'done'"), 6);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_keys"), 6);
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE financial_status IS NULL OR "
                  "abs(financial_status - 0.5 * ln(wealth)) > 1e-4"),
            0)
      << "every row, in every partition, written back from its latest inputs";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 0);
  // TRUNCATE fires no delete trigger: a BEFORE TRUNCATE one keeps the keys, of one
  // partition or of the whole table (PostgreSQL fires the partitions' triggers, so the
  // partition attached above needs migrate to have run since).
  EXPECT_EQ(UncapturedPartitions(*conn_, config), std::vector<std::string>{"needs_apac"});
  Migrate(*conn_, config);
  conn_->Exec("TRUNCATE needs_apac");
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_gone_keys"), 3);
  conn_->Exec("TRUNCATE needs");
  EXPECT_EQ(Count("SELECT count(*) FROM needs"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_keys"), 6) << "every request keeps its key";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_keys k JOIN runnel_needs_results r ON r.key = k.runnel_id"), 6);
}

TEST_F(PipelineRunTest, AKeyCapturedAgainIsServedAgainWithItsResultReplaced) {
  auto config = Config(1000);
  Migrate(*conn_, config);
  Insert({Row(1, 1), Row(2, 1)});
  auto first = Serve(config, SmallModel(), 1);
  EXPECT_EQ(first.done, 2u);
  EXPECT_EQ(first.redone, 0u);
  // needs.id is not unique here: the same key arrives again, with another wealth.
  conn_->Exec("DELETE FROM needs WHERE id = 2");
  Insert({Row(2, 1, 500), Row(3, 1)});
  auto second = Serve(config, SmallModel(), 1);
  EXPECT_EQ(second.done, 2u);
  EXPECT_EQ(second.redone, 1u) << "the plain insert met key 2's result: rolled back, served with an upsert";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results"), 3);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 0);
  EXPECT_EQ(Count("SELECT requests FROM runnel_needs_quota WHERE client = '1'"), 4)
      << "the rolled-back attempt counted nothing";
  auto row = conn_->Exec(
      "SELECT r.financial_status, n.financial_status FROM runnel_needs_results r JOIN needs n ON n.id = r.key "
      "WHERE r.key = 2",
      Params());
  EXPECT_NEAR(row.Get<double>(0, 0), 0.5 * std::log(500.0), 1e-5) << "the result is the new row's";
  EXPECT_NEAR(row.Get<double>(0, 1), 0.5 * std::log(500.0), 1e-5);
}

TEST_F(PipelineRunTest, ATableWhoseKeyIsNotUniqueIsServedWithoutStopping) {
  auto config = Config(1000);
  Migrate(*conn_, config);
  // Two rows share key 7 (needs.id has no unique constraint here), in one statement.
  Insert({Row(6, 1), Row(7, 1), Row(7, 2, 500), Row(8, 1)});
  auto summary = Serve(config, SmallModel(), 1);
  EXPECT_EQ(summary.done, 3u) << "one request per key";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'done'"), 3);
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE risk_propensity IS NULL"), 0) << "both rows of key 7 written back";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 0);
}

TEST_F(PipelineRunTest, BadRowsFailWithAReasonAndNothingIsLost) {
  auto config = Config(1000);
  Migrate(*conn_, config);
  Insert({Row(1, 1), Row(2, 1, -5), Row(3, 1, NAN), Row(4, NAN), Row(5, 1), Row(6, 1)});
  conn_->Exec("DELETE FROM needs WHERE id = 5");  // gone before it is served: a hole in the captured range
  Serve(config, SmallModel());
  auto results = Results();
  ASSERT_EQ(results.size(), 6u);
  EXPECT_EQ(results[6].first, "done");
  EXPECT_EQ(results[1].first, "done");
  EXPECT_EQ(
      results[2],
      std::make_pair(std::string("failed"),
                     std::string("id = 2: feature 'financial_status': ln of non-positive value -5 in ln(wealth)")));
  EXPECT_EQ(results[3], std::make_pair(std::string("failed"), std::string("id = 3: column 'wealth' is NULL")));
  EXPECT_EQ(results[4], std::make_pair(std::string("failed"), std::string("id = 4: column 'client_id' is NULL")));
  EXPECT_EQ(results[5], std::make_pair(std::string("gone"),
                                       std::string("row with id = 5 was deleted from needs before it was served")))
      << "a deleted row is not a failure";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE key = 5 AND sqlstate IS NULL"), 1);
}

TEST_F(PipelineRunTest, AHandWrittenQueueRowTooLargeToExpandPausesServingNamingIt) {
  auto config = Config(1000);
  Migrate(*conn_, config);
  // Not a request Runnel made: serving pauses naming the row (until_idle returns
  // with the reason) and claims nothing.
  auto paused_for = [&] {
    auto summary = Serve(config, SmallModel(), 1);
    return summary.paused.empty() ? std::string("not paused") : summary.paused.front();
  };
  conn_->Exec("INSERT INTO runnel_needs_queue (keys, n) VALUES ('{[1,100000000)}', 1)");
  auto error = paused_for();
  EXPECT_NE(error.find("runnel_needs_queue row seq"), std::string::npos) << error;
  EXPECT_NE(error.find("[1, 99999999]"), std::string::npos) << error;
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 1) << "rolled back: nothing claimed, nothing lost";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_pauses WHERE pipeline = 'needs'"), 1) << "for runnel status";
  conn_->Exec("UPDATE runnel_needs_queue SET keys = '{[1,)}'");  // 1 up to the largest bigint
  error = paused_for();
  EXPECT_NE(error.find("[1, 9223372036854775807]: a claim of more than"), std::string::npos) << error;
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 1);
  conn_->Exec("UPDATE runnel_needs_queue SET keys = '{(,5)}'");
  error = paused_for();
  EXPECT_NE(error.find("unbounded below"), std::string::npos) << error;
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 1);
  // The command that was to drain the queue says it did not, in its exit status.
  auto run = RunProcess({RUNNEL_BINARY, "run", "--pipeline", (dir_ / "pipeline.toml").string(), "--model",
                         (dir_ / "small.h5").string(), "--db", conninfo(), "--no-migrate", "--until-idle"});
  EXPECT_EQ(run.exit_code, 1) << run.output;
  EXPECT_NE(run.output.find("paused: "), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("request(s) are still queued"), std::string::npos) << run.output;
  // Fixed (the row deleted): serving resumes and clears its pause.
  conn_->Exec("DELETE FROM runnel_needs_queue");
  Insert({Row(1, 1)});
  auto summary = Serve(config, SmallModel(), 1);
  EXPECT_TRUE(summary.paused.empty());
  EXPECT_EQ(summary.done, 1u);
}

// A pipeline a newer Runnel migrated (its capture may queue what this build's claim
// cannot read) is neither migrated back nor served by this build: migrate refuses and
// serving does not start, naming the versions; nothing queued is claimed.
TEST_F(PipelineRunTest, APipelineANewerRunnelMigratedIsNeitherChangedNorServed) {
  auto config = Config(1000);
  Migrate(*conn_, config);
  Insert({Row(1, 1)});
  conn_->Exec(
      fmt::format("INSERT INTO runnel_migrations (pipeline, version) VALUES ('needs', {})", kSchemaVersion + 1));
  const std::string expected = fmt::format(
      "pipeline 'needs' was migrated by a newer Runnel (schema version {}; this "
      "build knows up to {})",
      kSchemaVersion + 1, kSchemaVersion);
  const auto capture = [&] {
    return conn_->Exec("SELECT prosrc FROM pg_proc WHERE proname = 'runnel_needs_capture'").Get<std::string>(0, 0);
  };
  conn_->Exec(
      "CREATE OR REPLACE FUNCTION runnel_needs_capture() RETURNS trigger LANGUAGE plpgsql AS "
      "$$ BEGIN RETURN NULL; END $$");  // as a newer build might have it
  try {
    Migrate(*conn_, config);
    ADD_FAILURE() << "migrated a newer schema";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Config);
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
  }
  EXPECT_EQ(capture(), " BEGIN RETURN NULL; END ") << "the newer capture left as it was";
  try {
    Serve(config, SmallModel(), 1);  // a running worker would pause (its schema check on reconnecting)
    ADD_FAILURE() << "served a newer schema";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(expected), std::string::npos) << e.what();
  }
  EXPECT_EQ(Count("SELECT coalesce(sum(n), 0)::bigint FROM runnel_needs_queue"), 1) << "nothing claimed";
}

TEST_F(PipelineRunTest, TheLargestBigintKeyIsCapturedAndServed) {
  // [k, k + 1) overflows for k = 2^63 - 1: such a key is queued unbounded above.
  conn_->Exec("ALTER TABLE needs ALTER COLUMN id TYPE bigint");
  auto config = Config(1000);
  Migrate(*conn_, config);
  const std::string columns =
      "id, client_id, age, gender, family_members, financial_education, income, wealth, income_investment, "
      "accumulation_investment";
  const std::string values = "1, 40, 1, 2, 0.5, 50, 100, 1, 0";
  // Consecutive keys ending at the largest bigint, then a statement with a gap.
  conn_->Exec(
      fmt::format("INSERT INTO needs ({}) SELECT k, {} FROM generate_series(9223372036854775805, "
                  "9223372036854775807) k",
                  columns, values));
  EXPECT_EQ(Count("SELECT sum(n) FROM runnel_needs_queue"), 3);
  auto first = Serve(config, SmallModel(), 1);
  EXPECT_EQ(first.done, 3u);
  conn_->Exec("DELETE FROM needs WHERE id = 9223372036854775807");
  conn_->Exec("DELETE FROM runnel_needs_results WHERE key = 9223372036854775807");
  conn_->Exec(fmt::format("INSERT INTO needs ({0}) VALUES (7, {1}), (9223372036854775807, {1})", columns, values));
  EXPECT_EQ(Count("SELECT sum(n) FROM runnel_needs_queue"), 2);
  auto second = Serve(config, SmallModel(), 1);
  EXPECT_EQ(second.done, 2u);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'done' AND key IN (7, "
                  "9223372036854775805, 9223372036854775806, 9223372036854775807)"),
            4);
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE risk_propensity IS NULL"), 0) << "every row written back";
}

TEST_F(PipelineRunTest, RequestsInsertedWhileDownAreServedOnStart) {
  auto config = Config(1000);
  Migrate(*conn_, config);
  std::vector<std::vector<double>> rows;
  for (int i = 1; i <= 1500; ++i) rows.push_back(Row(i, i % 10 + 1));
  Insert(rows);  // nobody is running
  EXPECT_EQ(Count("SELECT sum(n) FROM runnel_needs_queue"), 1500);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"),
            (1500 + pipeline::QueueChunk(config) - 1) / pipeline::QueueChunk(config))
      << "one queue row per chunk of the statement";
  auto summary = Serve(config, SmallModel(), 3);
  EXPECT_EQ(summary.done, 1500u);
  EXPECT_GE(summary.batches, (1500 + config.max_batch - 1) / config.max_batch)
      << "batches are bounded by capture.max_batch";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'done'"), 1500);
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE risk_propensity IS NULL"), 0);
}

TEST_F(PipelineRunTest, ThreeProcessesServeEachRequestExactlyOnce) {
  auto config = Config(100);
  Migrate(*conn_, config);
  SmallModel();  // writes small.h5
  std::vector<std::vector<double>> rows;
  for (int i = 1; i <= 3000; ++i) rows.push_back(Row(i, i % 20 + 1));
  Insert(rows);
  std::vector<ProcessResult> outcomes(3);
  std::vector<std::thread> processes;
  for (int p = 0; p < 3; ++p) {
    processes.emplace_back([&, p] {
      outcomes[static_cast<size_t>(p)] = RunProcess(
          {RUNNEL_BINARY, "run", "--pipeline", (dir_ / "pipeline.toml").string(), "--model",
           (dir_ / "small.h5").string(), "--db", conninfo(), "--workers", "2", "--until-idle", "--no-migrate"});
    });
  }
  for (auto& t : processes) t.join();
  size_t served = 0;
  for (const auto& outcome : outcomes) {
    ASSERT_EQ(outcome.exit_code, 0) << outcome.output;
    auto at = outcome.output.find("served ");
    ASSERT_NE(at, std::string::npos) << outcome.output;
    served += std::stoul(outcome.output.substr(at + 7));
  }
  EXPECT_EQ(served, 3000u) << "the processes' counts add up: no request was served twice";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results"), 3000);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 0);
  // 20 clients x 150 requests, quota 100: exactly 100 done per client.
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'done'"), 2000);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_quota WHERE requests = 150"), 20);
}

TEST_F(PipelineRunTest, NotifyModeServesTheReferenceTriggerAtMostOnce) {
  // The reference implementations' per-row trigger, untouched.
  conn_->Exec(R"sql(
    CREATE FUNCTION notify_needs_insert() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE payload TEXT;
    BEGIN
      payload := json_build_object('id', NEW.id, 'client_id', NEW.client_id)::TEXT;
      PERFORM pg_notify('table_insert', payload);
      RETURN NEW;
    END; $$;
    CREATE TRIGGER needs_insert_trigger AFTER INSERT ON needs FOR EACH ROW EXECUTE PROCEDURE notify_needs_insert();
  )sql");
  auto config = Config(1000);
  config.capture = CaptureMode::Notify;
  Migrate(*conn_, config);
  EXPECT_EQ(Count("SELECT count(*) FROM pg_trigger WHERE tgname = 'runnel_needs_capture'"), 0)
      << "notify mode installs no capture trigger";
  Insert({Row(1, 1)});  // nobody listens yet: this notification is lost (at most once)
  std::atomic<bool> stop{false};
  RunOptions options;
  options.workers = 3;  // notify mode uses one: every listener hears every notification
  options.stop = &stop;
  options.idle_wait = std::chrono::milliseconds(20);
  RunSummary summary;
  std::thread runner([&] { summary = RunPipeline(config, ModelProvider::Fixed(SmallModel()), conninfo(), options); });
  // Wait for the LISTEN before inserting.
  for (int i = 0; i < 200 && Count("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'") == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  Insert({Row(2, 1), Row(3, 2)});
  Insert({Row(4, 2)});
  for (int i = 0; i < 500 && Count("SELECT count(*) FROM runnel_needs_results") < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  stop.store(true);
  runner.join();
  auto results = Results();
  EXPECT_EQ(results.size(), 3u);
  EXPECT_FALSE(results.contains(1)) << "inserted while nobody listened: lost, as with the reference implementations";
  for (int64_t key : {2, 3, 4}) EXPECT_EQ(results[key].first, "done") << key;
  EXPECT_EQ(summary.done, 3u) << "served once although three workers were asked for";
}

TEST_F(PipelineRunTest, CtrlCDrainsAndExitsCleanly) {
  auto config = Config(1000);
  Migrate(*conn_, config);
  SmallModel();
  Insert({Row(1, 1), Row(2, 2)});
  const std::string command = fmt::format(
      "{} run --pipeline {} --model {} --db '{}' --no-migrate & pid=$!; sleep 1.5; kill -INT $pid; wait $pid",
      RUNNEL_BINARY, (dir_ / "pipeline.toml").string(), (dir_ / "small.h5").string(), conninfo());
  auto outcome = RunProcess({"/bin/sh", "-c", command});
  EXPECT_EQ(outcome.exit_code, 0) << outcome.output;
  EXPECT_NE(outcome.output.find("served 2 requests"), std::string::npos) << outcome.output;
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'done'"), 2);
}

TEST_F(PipelineRunTest, DatabaseRestartMidRunLosesNothing) {
  auto config = Config(1000000);
  config.max_batch = 16;  // many batches in flight when the server goes away
  Migrate(*conn_, config);
  std::atomic<bool> stop{false};
  RunOptions options;
  options.workers = 2;
  options.stop = &stop;
  options.idle_wait = std::chrono::milliseconds(20);
  RunSummary summary;
  std::exception_ptr failure;
  std::thread runner([&] {
    try {
      summary = RunPipeline(config, ModelProvider::Fixed(SmallModel()), conninfo(), options);
    } catch (...) {
      failure = std::current_exception();
    }
  });
  std::vector<std::vector<double>> first, second;
  for (int i = 1; i <= 400; ++i) first.push_back(Row(i, i % 7 + 1));
  for (int i = 401; i <= 800; ++i) second.push_back(Row(i, i % 7 + 1));
  Insert(first);
  // Restart the server under the workers once they are serving (fast shutdown: their
  // connections drop, claimed batches roll back).
  for (int i = 0; i < 1000 && Count("SELECT count(*) FROM runnel_needs_results") == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  auto& cluster = runnel::testing::PostgresEnvironment::Get().cluster();
  conn_.reset();
  ASSERT_TRUE(cluster.Stop());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  ASSERT_EQ(cluster.Start(), postgres::StartOutcome::Started);
  conn_ = std::make_unique<postgres::Connection>(Connect());
  Insert(second);
  for (int i = 0; i < 1500 && Count("SELECT count(*) FROM runnel_needs_results") < 800; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  stop.store(true);
  runner.join();
  if (failure) {
    try {
      std::rethrow_exception(failure);
    } catch (const std::exception& e) {
      FAIL() << "lost connections are retried, not fatal: " << e.what();
    }
  }
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'done'"), 800);
  EXPECT_EQ(Count("SELECT sum(requests)::bigint FROM runnel_needs_quota"), 800) << "each request counted once";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 0);
}

TEST_F(PipelineRunTest, SigkilledWorkersNeverLoseOrRepeatARequest) {
  auto config = Config(150);
  Migrate(*conn_, config);
  SmallModel();
  std::mt19937_64 rng(runnel::testing::TestSeed());
  // Small batches so that kills land inside transactions.
  std::string toml;
  {
    std::ifstream in(dir_ / "pipeline.toml");
    toml.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  }
  toml.replace(toml.find("max_batch = 2048"), 16, "max_batch = 8");
  runnel::testing::WriteFile(dir_ / "pipeline.toml", toml);
  const std::string run =
      fmt::format("{} run --pipeline {} --model {} --db '{}' --no-migrate --workers 2", RUNNEL_BINARY,
                  (dir_ / "pipeline.toml").string(), (dir_ / "small.h5").string(), conninfo());
  int next = 1;
  constexpr int kRounds = 12;
  for (int round = 0; round < kRounds; ++round) {
    std::vector<std::vector<double>> rows;
    for (int i = 0; i < 150; ++i, ++next) rows.push_back(Row(next, next % 10 + 1));
    Insert(rows);
    KillRound(run, std::uniform_int_distribution<int>(20, 400)(rng), fmt::format("round {}", round));
    if (HasFatalFailure()) return;
  }
  // Whatever is left is served by one clean run.
  auto last = RunProcess({"/bin/sh", "-c", run + " --until-idle"});
  ASSERT_EQ(last.exit_code, 0) << last.output;
  const int64_t total = next - 1;
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results"), total) << "every request has exactly one result";
  EXPECT_EQ(Count("SELECT sum(requests)::bigint FROM runnel_needs_quota"), total) << "and was counted exactly once";
  // 10 clients x 180 requests, quota 150: exactly 150 done per client.
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'done'"), 10 * 150);
  EXPECT_EQ(Count("SELECT count(*) FROM needs n JOIN runnel_needs_results r ON r.key = n.id "
                  "WHERE (r.status = 'done') <> (n.risk_propensity IS NOT NULL)"),
            0)
      << "written back exactly for the served requests";
}

TEST_F(PipelineRunTest, SharedModelReproducesKerasThroughTheDatabase) {
  RUNNEL_REQUIRE_SHARED();
  auto config = Config(1000000);
  Migrate(*conn_, config);
  // The reference rows of Needs.csv, inserted as requests.
  std::map<std::string, std::pair<double, double>> reference;
  {
    std::ifstream in(runnel::testing::SharedDir() / "data/needs/reference_keras.csv");
    CsvReader reader(in, ',');
    std::vector<std::string> f;
    reader.Next(f);
    while (reader.Next(f)) reference[f[0]] = {std::stod(f[1]), std::stod(f[2])};
  }
  std::vector<std::vector<double>> rows;
  {
    std::ifstream in(runnel::testing::SharedDir() / "data/needs/Needs.csv");
    CsvReader reader(in, ',');
    std::vector<std::string> f;
    reader.Next(f);  // ID,Age,Gender,FamilyMembers,FinancialEducation,RiskPropensity,Income,Wealth,IncomeInv,AccInv,FS
    while (reader.Next(f)) {
      if (!reference.contains(f[0])) continue;
      rows.push_back({std::stod(f[0]), 1, std::stod(f[1]), std::stod(f[2]), std::stod(f[3]), std::stod(f[4]),
                      std::stod(f[6]), std::stod(f[7]), std::stod(f[8]), std::stod(f[9])});
    }
  }
  ASSERT_EQ(rows.size(), 200u);
  Insert(rows);
  auto summary = Serve(config, model::LoadModel(runnel::testing::SharedDir() / "models/needs/deep_model.h5"));
  EXPECT_EQ(summary.done, 200u);
  auto scored = conn_->Exec("SELECT id, risk_propensity, financial_status FROM needs", Params());
  ASSERT_EQ(scored.rows(), 200);
  for (int i = 0; i < scored.rows(); ++i) {
    const auto& [risk, status] = reference.at(std::to_string(scored.Get<int32_t>(i, 0)));
    // The table stores real (float32) inputs and outputs, as the reference schema does.
    EXPECT_NEAR(scored.Get<double>(i, 1), risk, 1e-5) << "id " << scored.Get<int32_t>(i, 0);
    EXPECT_NEAR(scored.Get<double>(i, 2), status, 1e-5) << "id " << scored.Get<int32_t>(i, 0);
  }
}

TEST_F(PipelineRunTest, EachSetupErrorPausesServingUntilFixedLosingNothing) {
  auto config = Config(1000000);
  Migrate(*conn_, config);
  std::mutex mutex;
  std::optional<std::string> paused;  // the latest reason reported, nullopt once resumed
  std::atomic<bool> stop{false};
  RunOptions options;
  options.workers = 2;
  options.idle_wait = std::chrono::milliseconds(50);
  options.stop = &stop;
  options.on_pause = [&](size_t, const std::optional<std::string>& reason) {
    std::lock_guard lock(mutex);
    paused = reason;
  };
  RunSummary summary;
  // The workers act as a role without superuser rights, so that revoking one counts.
  conn_->Exec(
      "CREATE ROLE runnel_worker; GRANT ALL ON ALL TABLES IN SCHEMA public TO runnel_worker; "
      "GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO runnel_worker; GRANT CREATE ON SCHEMA public TO runnel_worker");
  const std::string as_worker = conninfo() + " options='-c role=runnel_worker'";
  std::thread serving([&] { summary = RunPipeline(config, ModelProvider::Fixed(SmallModel()), as_worker, options); });
  // Stops and joins however the test ends (a failed ASSERT returns early).
  struct Join {
    std::atomic<bool>& stop;
    std::thread& thread;
    ~Join() {
      stop.store(true);
      if (thread.joinable()) thread.join();
    }
  } join{stop, serving};
  auto eventually = [&](const std::function<bool()>& condition) {
    for (int i = 0; i < 400 && !condition(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    return condition();
  };
  auto reason = [&] {
    std::lock_guard lock(mutex);
    return paused.value_or("");
  };
  int64_t next = 1;
  auto insert = [&](int n) {
    std::vector<std::vector<double>> rows;
    for (int i = 0; i < n; ++i, ++next) rows.push_back(Row(static_cast<double>(next), 1));
    Insert(rows);
  };
  auto all_served = [&] {
    return Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'done'") == next - 1;
  };
  // break, what the pause must say, repair
  const std::vector<std::tuple<std::string, std::string, std::string>> causes = {
      {"ALTER TABLE needs ALTER age TYPE text", "input column 'age' of 'needs' is text",
       "ALTER TABLE needs ALTER age TYPE integer USING age::integer"},
      {"ALTER TABLE products RENAME TO products_gone", "recommendation catalogue 'products' does not exist",
       "ALTER TABLE products_gone RENAME TO products"},
      {"ALTER TABLE needs DROP COLUMN risk_propensity", "write-back column 'risk_propensity' of 'needs' does not exist",
       "ALTER TABLE needs ADD COLUMN risk_propensity real"},
      {"REVOKE UPDATE ON needs FROM runnel_worker", "permission denied for table needs",
       "GRANT UPDATE ON needs TO runnel_worker"},
      {"ALTER TABLE needs RENAME TO needs_elsewhere", "table 'needs' does not exist",
       "ALTER TABLE needs_elsewhere RENAME TO needs"},
  };
  insert(20);
  ASSERT_TRUE(eventually(all_served));
  for (const auto& [breaking, expected, repair] : causes) {
    conn_->Exec(breaking);
    if (breaking.find("RENAME TO needs_elsewhere") != std::string::npos) {
      // Rows inserted into the renamed table are captured by its trigger all the same.
      conn_->Exec(fmt::format(
          "INSERT INTO needs_elsewhere (id, client_id, age, gender, family_members, financial_education, income, "
          "wealth, income_investment, accumulation_investment) SELECT g, 1, 40, 1, 2, 0.5, 50, 100, 1, 0 FROM "
          "generate_series({}, {}) g",
          next, next + 19));
      next += 20;
    } else {
      insert(20);
    }
    ASSERT_TRUE(eventually([&] { return reason().find(expected) != std::string::npos; }))
        << breaking << ": paused for '" << reason() << "'";
    EXPECT_EQ(Count("SELECT count(*) FROM runnel_pauses WHERE pipeline = 'needs'"), 1) << breaking;
    auto status =
        RunProcess({RUNNEL_BINARY, "status", "--pipeline", (dir_ / "pipeline.toml").string(), "--db", conninfo()});
    EXPECT_NE(status.output.find("paused: " + reason()), std::string::npos) << status.output;
    EXPECT_GT(Count("SELECT coalesce(sum(n), 0)::bigint FROM runnel_needs_queue"), 0) << "nothing lost: still queued";
    conn_->Exec(repair);
    ASSERT_TRUE(eventually(all_served)) << repair;
    // Every worker resumes, each after its own backoff: `reason` is only the last
    // report (one worker may have resumed and served everything while the other waits).
    ASSERT_TRUE(eventually([&] {
      return reason().empty() && Count("SELECT count(*) FROM runnel_pauses WHERE pipeline = 'needs'") == 0;
    })) << "resumed after "
        << repair;
  }
  // A catalogue column altered under load: the next batches fall back, nothing pauses.
  conn_->Exec("ALTER TABLE products ALTER risk TYPE numeric");
  insert(50);
  ASSERT_TRUE(eventually(all_served));
  EXPECT_EQ(reason(), "");
  stop.store(true);
  serving.join();
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results"), next - 1) << "each request served exactly once";
  EXPECT_EQ(summary.failed, 0u);
}

TEST_F(PipelineRunTest, MigrateAndRunRefuseAnInputColumnOfAnotherTypeNamingIt) {
  conn_->Exec("ALTER TABLE needs ALTER wealth TYPE text");
  auto config = Config(1000);
  try {
    Migrate(*conn_, config);
    ADD_FAILURE() << "must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("input column 'wealth' of 'needs' is text"), std::string::npos) << e.what();
  }
  conn_->Exec("ALTER TABLE needs ALTER wealth TYPE real USING wealth::real");
  Migrate(*conn_, config);
  conn_->Exec("ALTER TABLE needs ALTER wealth TYPE timestamptz USING now()");
  EXPECT_THROW(Worker(config, ModelProvider::Fixed(SmallModel()), conninfo()), Error) << "run refuses at start";
}

// ---- fault isolation (issue #12): no row's value stops serving ----

class FaultIsolationTest : public PipelineRunTest {
 protected:
  // The kinds of poison: each makes PostgreSQL (or the conversion to float8) refuse
  // exactly that row.
  enum class Poison { kNone, kCheck, kRealOverflow, kNumericOverflow, kTrigger, kHugeNumericInput, kLocked };

  void SetUp() override {
    PipelineRunTest::SetUp();
    conn_->Exec(R"sql(
      ALTER TABLE needs ALTER financial_status TYPE numeric(4,2);
      ALTER TABLE needs ALTER income TYPE numeric;
      ALTER TABLE needs ADD CONSTRAINT scored_families_are_small
        CHECK (risk_propensity IS NULL OR family_members <> 97);
      CREATE FUNCTION refuse_gender_7() RETURNS trigger LANGUAGE plpgsql AS $$
      BEGIN
        IF NEW.gender = 7 AND NEW.risk_propensity IS NOT NULL THEN
          RAISE EXCEPTION 'gender 7 is refused for id %', NEW.id;
        END IF;
        RETURN NEW;
      END $$;
      CREATE TRIGGER refuse_gender_7 BEFORE UPDATE ON needs FOR EACH ROW EXECUTE FUNCTION refuse_gender_7();
    )sql");
  }

  // A pipeline file with a short lock timeout and few attempts.
  PipelineConfig FaultConfig(size_t max_batch) {
    Config(1000000000);
    std::ifstream in(dir_ / "pipeline.toml");
    std::string toml((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    toml.replace(toml.find("max_batch = 2048"), 16, fmt::format("max_batch = {}", max_batch));
    toml += "\n[serving]\nlock_timeout_ms = 50\nmax_attempts = 3\n";
    runnel::testing::WriteFile(dir_ / "pipeline.toml", toml);
    return LoadPipelineConfig(dir_ / "pipeline.toml");
  }

  // Inserts rows [first, first + count) with poison drawn at `rate`; returns each key's poison.
  std::map<int64_t, Poison> InsertWithPoison(int64_t first, int64_t count, double rate, std::mt19937_64& rng) {
    std::map<int64_t, Poison> poison;
    std::vector<std::vector<double>> rows;
    std::vector<int64_t> huge;
    for (int64_t id = first; id < first + count; ++id) {
      auto row = Row(static_cast<double>(id), static_cast<double>(id % 10 + 1));
      Poison kind = Poison::kNone;
      if (std::uniform_real_distribution<double>(0, 1)(rng) < rate) {
        kind = static_cast<Poison>(std::uniform_int_distribution<int>(1, 6)(rng));
      }
      // Row(): id, client, age, gender, family_members, financial_education, income, wealth, ...
      switch (kind) {
        case Poison::kCheck: row[4] = 97; break;
        case Poison::kRealOverflow: row[5] = 3e38, row[7] = 1e38; break;  // 2.6e40 in a real
        case Poison::kNumericOverflow: row[5] = 2, row[7] = 1e38; break;  // 175 in numeric(4,2)
        case Poison::kTrigger: row[3] = 7; break;
        case Poison::kHugeNumericInput: huge.push_back(id); break;  // income 1e400
        case Poison::kLocked:
        case Poison::kNone: break;
      }
      poison[id] = kind;
      rows.push_back(row);
    }
    Insert(rows);
    if (!huge.empty()) {
      conn_->Exec("UPDATE needs SET income = 1e400 WHERE id = ANY($1::bigint[])", Params().Add(ArrayLiteral(huge)));
    }
    return poison;
  }

  // Every good request done once with its outputs written back, every poison request
  // failed with its SQLSTATE, nothing queued.
  void ExpectOutcome(const std::map<int64_t, Poison>& poison) {
    static const std::map<Poison, std::string> kState = {
        {Poison::kCheck, "23514"},   {Poison::kRealOverflow, "22003"},     {Poison::kNumericOverflow, "22003"},
        {Poison::kTrigger, "P0001"}, {Poison::kHugeNumericInput, "22003"}, {Poison::kLocked, "55P03"}};
    EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_queue"), 0) << "nothing left queued";
    EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results"), static_cast<int64_t>(poison.size()))
        << "every request has exactly one result";
    auto r = conn_->Exec(
        "SELECT r.key, r.status, coalesce(r.sqlstate, ''), coalesce(r.error, ''), n.risk_propensity IS NOT NULL, "
        "coalesce(abs(n.financial_status - n.financial_education * ln(n.wealth)) < 0.01, false) "
        "FROM runnel_needs_results r JOIN needs n ON n.id = r.key ORDER BY r.key",
        Params());
    int wrong = 0;
    for (int i = 0; i < r.rows() && wrong < 10; ++i) {
      const auto key = r.Get<int64_t>(i, 0);
      const auto kind = poison.at(key);
      const auto status = r.Get<std::string>(i, 1);
      const auto state = r.Get<std::string>(i, 2);
      const auto error = r.Get<std::string>(i, 3);
      if (kind == Poison::kNone) {
        const bool ok = status == "done" && r.Get<bool>(i, 4) && r.Get<bool>(i, 5);
        if (!ok) ++wrong;
        EXPECT_TRUE(ok) << "key " << key << ": " << status << " " << state << " " << error;
      } else {
        const bool ok = status == "failed" && state == kState.at(kind) &&
                        error.find(fmt::format("id = {}", key)) != std::string::npos && !r.Get<bool>(i, 4);
        if (!ok) ++wrong;
        EXPECT_TRUE(ok) << "key " << key << " poison " << static_cast<int>(kind) << ": " << status << " " << state
                        << " " << error;
      }
    }
  }

  // Holds row locks on the kLocked rows from another session until destroyed.
  struct LockHolder {
    postgres::Connection conn;
    std::unique_ptr<postgres::Transaction> tx;
    LockHolder(postgres::Connection c, const std::map<int64_t, Poison>& poison) : conn(std::move(c)) {
      std::vector<int64_t> keys;
      for (const auto& [key, kind] : poison) {
        if (kind == Poison::kLocked) keys.push_back(key);
      }
      tx = std::make_unique<postgres::Transaction>(conn);
      conn.Exec("SELECT id FROM needs WHERE id = ANY($1::bigint[]) FOR UPDATE", Params().Add(ArrayLiteral(keys)));
    }
  };
};

TEST_F(FaultIsolationTest, EachKindOfPoisonFailsOnlyItsRowAndNamesIt) {
  auto config = FaultConfig(64);
  Migrate(*conn_, config);
  std::map<int64_t, Poison> poison;
  std::vector<std::vector<double>> rows;
  // One batch: good rows around one row of each kind.
  std::mt19937_64 rng(1);
  poison = InsertWithPoison(1, 40, 0.0, rng);
  const std::vector<std::pair<int64_t, Poison>> planted = {
      {3, Poison::kCheck},    {9, Poison::kRealOverflow},      {14, Poison::kNumericOverflow},
      {20, Poison::kTrigger}, {27, Poison::kHugeNumericInput}, {33, Poison::kLocked}};
  conn_->Exec("UPDATE needs SET family_members = 97 WHERE id = 3");
  conn_->Exec("UPDATE needs SET financial_education = 3e38, wealth = 1e38 WHERE id = 9");
  conn_->Exec("UPDATE needs SET financial_education = 2, wealth = 1e38 WHERE id = 14");
  conn_->Exec("UPDATE needs SET gender = 7 WHERE id = 20");
  conn_->Exec("UPDATE needs SET income = 1e400 WHERE id = 27");
  for (const auto& [key, kind] : planted) poison[key] = kind;
  RunSummary summary;
  {
    LockHolder lock(Connect(), poison);
    summary = Serve(config, SmallModel(), 1);
  }
  EXPECT_TRUE(summary.paused.empty());
  EXPECT_EQ(summary.done, 34u);
  EXPECT_EQ(summary.failed, 6u);
  EXPECT_EQ(summary.deferred, 2u) << "the locked row was tried three times";
  ExpectOutcome(poison);
  auto attempts = Count("SELECT attempts FROM runnel_needs_results WHERE key = 33");
  EXPECT_EQ(attempts, 3);
}

TEST_F(FaultIsolationTest, PoisonRowsUnderSigkillsLeaveEveryGoodRequestServedExactlyOnce) {
  auto config = FaultConfig(256);
  Migrate(*conn_, config);
  SmallModel();
  const auto seed = runnel::testing::TestSeed();
  std::mt19937_64 rng(seed);
  const std::string run =
      fmt::format("{} run --pipeline {} --model {} --db '{}' --no-migrate --workers 1", RUNNEL_BINARY,
                  (dir_ / "pipeline.toml").string(), (dir_ / "small.h5").string(), conninfo());
  std::map<int64_t, Poison> poison;
  constexpr int kRounds = 4;
  constexpr int kPerRound = 25000;  // 100,000 requests
  {
    for (int round = 0; round < kRounds; ++round) {
      auto more = InsertWithPoison(1 + round * kPerRound, kPerRound, 0.001, rng);
      poison.insert(more.begin(), more.end());
    }
    std::map<Poison, int> kinds;
    for (const auto& [key, kind] : poison) ++kinds[kind];
    ASSERT_EQ(kinds.size(), 7u) << "every kind of poison among the requests";
    LockHolder lock(Connect(), poison);
    for (int round = 0; round < kRounds; ++round) {
      KillRound(run, std::uniform_int_distribution<int>(300, 3000)(rng), fmt::format("round {}", round));
      if (HasFatalFailure()) return;
    }
    // Whatever is left is served by one clean run; locked rows fail after their attempts.
    auto last = RunProcess({"/bin/sh", "-c", run + " --until-idle"});
    ASSERT_EQ(last.exit_code, 0) << last.output;
  }
  ExpectOutcome(poison);
}

TEST_F(FaultIsolationTest, RetryReplaysFailedRequestsExactlyOnceAfterTheCauseIsFixed) {
  auto config = FaultConfig(64);
  Migrate(*conn_, config);
  std::mt19937_64 rng(2);
  InsertWithPoison(1, 30, 0.0, rng);
  conn_->Exec("UPDATE needs SET family_members = 97 WHERE id IN (4, 5, 6)");
  conn_->Exec("UPDATE needs SET gender = 7 WHERE id = 10");
  auto first = Serve(config, SmallModel(), 1);
  EXPECT_EQ(first.failed, 4u);
  EXPECT_EQ(first.done, 26u);
  auto reasons = TopFailureReasons(*conn_, config, 5);
  ASSERT_EQ(reasons.size(), 2u);
  EXPECT_EQ(reasons[0].sqlstate, "23514");
  EXPECT_EQ(reasons[0].count, 3);
  EXPECT_NE(reasons[0].reason.find("scored_families_are_small"), std::string::npos) << reasons[0].reason;
  EXPECT_EQ(reasons[1].sqlstate, "P0001");
  auto status =
      RunProcess({RUNNEL_BINARY, "status", "--pipeline", (dir_ / "pipeline.toml").string(), "--db", conninfo()});
  ASSERT_EQ(status.exit_code, 0) << status.output;
  EXPECT_NE(status.output.find("failed 4"), std::string::npos) << status.output;
  EXPECT_NE(status.output.find("failures by reason:"), std::string::npos) << status.output;
  EXPECT_NE(status.output.find("3  23514  new row for relation \"needs\" violates check constraint "
                               "\"scored_families_are_small\""),
            std::string::npos)
      << status.output;

  // Fix the constraint; retry only its failures (the trigger's stays failed).
  conn_->Exec("ALTER TABLE needs DROP CONSTRAINT scored_families_are_small");
  EXPECT_THROW(RetryFailed(*conn_, config, {"", std::string("2351"), std::nullopt}), Error) << "not a SQLSTATE";
  auto retried = RetryFailed(*conn_, config, {"", std::string("23"), std::nullopt});
  EXPECT_EQ(retried.requeued, 3);
  ASSERT_TRUE(retried.job);
  EXPECT_EQ(RetryFailed(*conn_, config, {"", std::string("23"), std::nullopt}).requeued, 0) << "exactly once";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'queued'"), 3);
  auto second = Serve(config, SmallModel(), 1);
  EXPECT_EQ(second.done, 3u);
  EXPECT_EQ(second.failed, 0u);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'done'"), 29);
  EXPECT_EQ(Count("SELECT attempts FROM runnel_needs_results WHERE key = 5"), 2) << "tried twice";
  EXPECT_EQ(GetJob(*conn_, *retried.job)->state, "done");
  EXPECT_EQ(Count("SELECT sum(requests)::bigint FROM runnel_needs_quota"), 30) << "a retry is not counted again";
  // One request by key, with a filter on its source row.
  conn_->Exec("DROP TRIGGER refuse_gender_7 ON needs");
  EXPECT_EQ(RetryFailed(*conn_, config, {"gender = 6", std::nullopt, std::nullopt}).requeued, 0);
  EXPECT_EQ(RetryFailed(*conn_, config, {"gender = 7", std::nullopt, 10}).requeued, 1);
  EXPECT_EQ(Serve(config, SmallModel(), 1).done, 1u);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'done'"), 30);
}

}  // namespace
}  // namespace runnel::pipeline
