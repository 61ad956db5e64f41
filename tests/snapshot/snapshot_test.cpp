// Snapshots against a real PostgreSQL: a snapshot taken while the needs pipeline serves
// holds exactly the results its PostgreSQL snapshot saw; old versions stay while a
// reader (of this process or another DuckDB) holds them; queries cannot leave the file
// or outrun their limits; Parquet archives read back by DuckDB and by hyparquet.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>
#include <tuple>

#include "../support/keras_h5_file.hpp"
#include "../support/needs_fixture.hpp"
#include "../support/pg_environment.hpp"
#include "../support/shared_paths.hpp"
#include "../support/temp_dir.hpp"
#include "duckdb.hpp"
#include "runnel/core/process.hpp"
#include "runnel/model/model.hpp"
#include "runnel/pipeline/model_provider.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/pipeline/worker.hpp"
#include "runnel/snapshot/snapshot.hpp"

namespace runnel::snapshot {
namespace {

using postgres::Params;

class SnapshotTest : public runnel::testing::PostgresTest {
 protected:
  void SetUp() override {
    PostgresTest::SetUp();
    conn_ = std::make_unique<postgres::Connection>(Connect());
    conn_->Exec(runnel::testing::kNeedsSchema);
    std::ifstream in(std::string(RUNNEL_SOURCE_DIR) + "/examples/needs/pipeline.toml");
    std::stringstream text;
    text << in.rdbuf();
    runnel::testing::WriteFile(dir_ / "pipeline.toml", text.str() + "\n[snapshots]\ndir = \"snaps\"\nkeep = 2\n");
    config_ = pipeline::LoadPipelineConfig(dir_ / "pipeline.toml");
    pipeline::Migrate(*conn_, config_);
  }

  // risk = 0.1 * (sum of the 9 scaled features) + 0.5.
  std::shared_ptr<const model::Model> SmallModel() {
    return model::LoadModel(runnel::testing::WriteLinearNeedsModel(dir_ / "small.h5"));
  }

  // Rows first..first+n-1, 100 clients.
  void Insert(postgres::Connection& conn, int64_t first, int64_t n) {
    conn.Exec(
        "INSERT INTO needs (id, client_id, age, gender, family_members, financial_education, income, wealth, "
        "income_investment, accumulation_investment) SELECT i, i % 100, 20 + i % 50, i % 2, i % 4, 0.5, 50, "
        "100 + i % 1000, 1, 0 FROM generate_series($1::int, $2::int) i",
        Params().Add(first).Add(first + n - 1));
  }

  pipeline::RunSummary ServeAll() {
    pipeline::RunOptions options;
    options.workers = 2;
    options.until_idle = true;
    options.idle_wait = std::chrono::milliseconds(50);
    return pipeline::RunPipeline(config_, pipeline::ModelProvider::Fixed(SmallModel()), conninfo(), options);
  }

  SnapshotStore Store() const { return SnapshotStore(config_.snapshots.dir, config_.name); }

  static std::string One(const Reader& reader, const std::string& sql) {
    const auto answer = Query(reader, sql, QueryLimits{});
    EXPECT_EQ(answer.rows.size(), 1u) << sql;
    return answer.rows.empty() || !answer.rows[0][0] ? "" : *answer.rows[0][0];
  }

  std::unique_ptr<postgres::Connection> conn_;
  runnel::testing::TempDir dir_{"runnel-snapshot"};
  pipeline::PipelineConfig config_;
};

TEST_F(SnapshotTest, TablesAndViewsHoldWhatPostgresHolds) {
  Insert(*conn_, 1, 500);
  ASSERT_EQ(ServeAll().done, 500u);
  const auto outcome = Store().Create(*conn_, config_);
  EXPECT_EQ(outcome.info.version, 1);
  EXPECT_EQ(outcome.info.path, dir_ / "snaps" / "needs" / "v1.duckdb");
  EXPECT_EQ(outcome.rows.at("results"), 500);
  EXPECT_EQ(outcome.rows.at("inputs"), 500);
  EXPECT_EQ(outcome.rows.at("quota"), 100);
  // Not for other local users: every client's requests are in it.
  EXPECT_EQ(std::filesystem::status(outcome.info.path).permissions(), std::filesystem::perms::owner_read |
                                                                          std::filesystem::perms::owner_write |
                                                                          std::filesystem::perms::group_read);
  EXPECT_EQ(std::filesystem::status(outcome.info.path.parent_path()).permissions() & std::filesystem::perms::others_all,
            std::filesystem::perms::none);
  const auto reader = Store().Open();
  EXPECT_EQ(One(reader, "SELECT count(*) FROM requests WHERE status = 'done' AND age IS NOT NULL"), "500");
  // Values as PostgreSQL holds them: the written-back risk, the inputs, the products.
  auto pg = conn_->Exec(
      "SELECT sum(r.risk_propensity)::float8, sum(n.wealth)::float8, sum(cardinality(r.recommended))::bigint FROM "
      "runnel_needs_results r JOIN needs n ON n.id = r.key",
      Params());
  EXPECT_NEAR(std::stod(One(reader, "SELECT sum(risk_propensity) FROM requests")), pg.Get<double>(0, 0), 1e-6);
  EXPECT_NEAR(std::stod(One(reader, "SELECT sum(wealth) FROM requests")), pg.Get<double>(0, 1), 1e-6);
  EXPECT_EQ(One(reader, "SELECT count(*) FROM recommendations"), std::to_string(pg.Get<int64_t>(0, 2)));
  EXPECT_EQ(One(reader, "SELECT typeof(recommended) FROM results LIMIT 1"), "BIGINT[]");
  EXPECT_EQ(One(reader, "SELECT typeof(finished_at) FROM results LIMIT 1"), "TIMESTAMP WITH TIME ZONE");
  EXPECT_EQ(One(reader, "SELECT count(*) FROM requests WHERE latency_ms >= 0"), "500");
  EXPECT_EQ(One(reader, "SELECT pipeline || ' v' || version FROM snapshot"), "needs v1");
  EXPECT_EQ(One(reader, "SELECT pg_snapshot FROM snapshot"), outcome.pg_snapshot);
}

TEST_F(SnapshotTest, ReadyMadeAnalysesAgreeWithPostgres) {
  Insert(*conn_, 1, 300);
  // Client 7 is over no quota, but 3 of its rows fail (an input out of range).
  conn_->Exec(
      "UPDATE needs SET financial_education = 3e38, wealth = 1e38 WHERE client_id = 7 AND id <= 300 AND id % 2 = 1");
  ServeAll();
  // The results past key 150 finished two hours later, and higher: the version's last
  // hour is theirs, its first hour the others'.
  conn_->Exec(
      "UPDATE runnel_needs_results SET finished_at = finished_at + interval '2 hours', risk_propensity = "
      "risk_propensity + 1 WHERE key > 150");
  Store().Create(*conn_, config_);
  const auto analyses = Analyses(Store().Open(), config_, QueryLimits{});
  std::map<std::string, const QueryAnswer*> by_name;
  for (const auto& a : analyses) by_name[a.name] = &a.answer;
  ASSERT_TRUE(by_name.contains("clients_per_hour"));
  ASSERT_TRUE(by_name.contains("outputs_by_version"));
  ASSERT_TRUE(by_name.contains("latency_by_version"));
  EXPECT_FALSE(by_name.contains("stage_ms")) << "no runnel_samples in this database: no samples table";

  const auto& clients = *by_name["clients_per_hour"];
  EXPECT_EQ(clients.columns, (std::vector<std::string>{"hour", "client", "requests", "throttled", "failed"}));
  auto pg = conn_->Exec(
      "SELECT n.client_id::text, count(*), count(*) FILTER (WHERE r.status = 'failed') FROM runnel_needs_results r "
      "JOIN needs n ON n.id = r.key GROUP BY 1",
      Params());
  std::map<std::string, std::pair<int64_t, int64_t>> expected, found;
  for (int i = 0; i < pg.rows(); ++i)
    expected[pg.Get<std::string>(i, 0)] = {pg.Get<int64_t>(i, 1), pg.Get<int64_t>(i, 2)};
  for (const auto& row : clients.rows) {
    auto& f = found[*row[1]];
    f.first += std::stoll(*row[2]);
    f.second += std::stoll(*row[4]);
  }
  EXPECT_EQ(found, expected);
  EXPECT_GT(expected["7"].second, 0) << "the poisoned rows of client 7 failed";

  const auto& outputs = *by_name["outputs_by_version"];
  auto avg = conn_->Exec(
      "SELECT avg(risk_propensity)::float8, count(*) FROM runnel_needs_results WHERE status = 'done'", Params());
  bool risk = false;
  for (const auto& row : outputs.rows) {
    if (*row[1] != "risk_propensity") continue;
    risk = true;
    EXPECT_EQ(std::stoll(*row[2]), avg.Get<int64_t>(0, 1));
    EXPECT_NEAR(std::stod(*row[3]), avg.Get<double>(0, 0), 1e-9);
    EXPECT_LE(std::stod(*row[4]), std::stod(*row[5]));
    EXPECT_LE(std::stod(*row[5]), std::stod(*row[6]));
  }
  EXPECT_TRUE(risk) << "risk_propensity is a numeric output";
  ASSERT_TRUE(by_name.contains("drift"));
  const auto& drift = *by_name["drift"];
  EXPECT_EQ(drift.columns,
            (std::vector<std::string>{"model_version", "output", "bin", "lower", "first_hour", "last_hour"}));
  // The same histogram computed by PostgreSQL: bins of (max - min) / 20 over the version.
  auto expected_bins = conn_->Exec(
      "WITH d AS (SELECT key, risk_propensity::float8 AS x FROM runnel_needs_results WHERE status = 'done'), "
      "v AS (SELECT min(x) AS lo, max(x) AS hi FROM d) SELECT least(19, floor((x - lo) / greatest(hi - lo, 1e-300) "
      "* 20)::int) AS bin, count(*) FILTER (WHERE key <= 150), count(*) FILTER (WHERE key > 150) FROM d, v "
      "GROUP BY 1 ORDER BY 1",
      Params());
  std::vector<std::tuple<int64_t, int64_t, int64_t>> want, got;
  for (int i = 0; i < expected_bins.rows(); ++i) {
    want.emplace_back(expected_bins.Get<int64_t>(i, 0), expected_bins.Get<int64_t>(i, 1),
                      expected_bins.Get<int64_t>(i, 2));
  }
  for (const auto& row : drift.rows) {
    if (*row[1] == "risk_propensity") got.emplace_back(std::stoll(*row[2]), std::stoll(*row[4]), std::stoll(*row[5]));
  }
  EXPECT_EQ(got, want);
  ASSERT_GT(want.size(), 2u);
  int64_t first = 0, last = 0;
  for (const auto& [bin, f, l] : want) {
    first += f;
    last += l;
  }
  EXPECT_GT(first, 0);
  EXPECT_GT(last, 0);
  const auto& latency = *by_name["latency_by_version"];
  ASSERT_EQ(latency.rows.size(), 1u);
  EXPECT_EQ(std::stoll(*latency.rows[0][1]), avg.Get<int64_t>(0, 1));
  EXPECT_LE(std::stod(*latency.rows[0][2]), std::stod(*latency.rows[0][4]));
}

TEST_F(SnapshotTest, ATableKeyedByUuidKeepsItsKeyInTheSnapshot) {
  pipeline::Unmigrate(*conn_, config_);  // SetUp migrated it keyed by id
  conn_->Exec("ALTER TABLE needs ADD COLUMN uid uuid NOT NULL DEFAULT gen_random_uuid()");
  std::ifstream in(config_.file);
  std::string toml((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string from = "key = \"id\"";
  ASSERT_NE(toml.find(from), std::string::npos);
  toml.replace(toml.find(from), from.size(), "key = \"uid\"");
  runnel::testing::WriteFile(config_.file, toml);
  config_ = pipeline::LoadPipelineConfig(config_.file);
  pipeline::Migrate(*conn_, config_);
  Insert(*conn_, 1, 40);
  ASSERT_EQ(ServeAll().done, 40u);
  Store().Create(*conn_, config_);
  const auto reader = Store().Open();
  EXPECT_EQ(One(reader, "SELECT typeof(uid) FROM inputs LIMIT 1"), "UUID");
  // Each result joined to its row through the request ids of runnel_needs_keys.
  EXPECT_EQ(One(reader, "SELECT count(DISTINCT uid) FROM requests WHERE status = 'done'"), "40");
  auto pg = conn_->Exec(
      "SELECT string_agg(n.uid::text, ',' ORDER BY n.uid) FROM runnel_needs_results r JOIN runnel_needs_keys k ON "
      "k.runnel_id = r.key JOIN needs n ON n.uid = k.uid",
      Params());
  EXPECT_EQ(One(reader, "SELECT string_agg(uid::VARCHAR, ',' ORDER BY uid) FROM requests"), pg.Get<std::string>(0, 0));
}

TEST_F(SnapshotTest, ASnapshotTakenWhileServingHoldsExactlyTheResultsItsPostgresSnapshotSaw) {
  std::atomic<bool> stop{false};
  std::atomic<int64_t> inserted{0};
  std::thread producer([&] {
    auto conn = Connect();
    for (int64_t next = 1; !stop.load(); next += 200) {
      Insert(conn, next, 200);
      inserted = next + 199;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  pipeline::RunOptions options;
  options.workers = 2;
  options.stop = &stop;
  std::thread server(
      [&] { pipeline::RunPipeline(config_, pipeline::ModelProvider::Fixed(SmallModel()), conninfo(), options); });
  std::vector<CreateOutcome> taken;
  for (int i = 0; i < 3; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
    taken.push_back(Store().Create(*conn_, config_));
  }
  stop = true;
  producer.join();
  server.join();
  const int64_t total = conn_->Exec("SELECT count(*) FROM runnel_needs_results", Params()).Get<int64_t>(0, 0);
  ASSERT_GT(total, 0);
  const auto store = Store();
  for (const auto& outcome : taken) {
    const auto reader = store.Open(outcome.info.version);
    // Counted both ways: the keys in the file are exactly those of the result rows
    // visible in its PostgreSQL snapshot (results are only inserted here).
    auto pg = conn_->Exec(
        "SELECT count(*), coalesce(sum(key), 0)::bigint, coalesce(sum(key * key), 0)::numeric::text FROM "
        "runnel_needs_results WHERE pg_visible_in_snapshot(xmin::text::xid8, $1::pg_snapshot)",
        Params().Add(outcome.pg_snapshot));
    const auto answer = Query(reader, "SELECT count(*), sum(key), sum(key * key::HUGEINT) FROM results", {});
    ASSERT_EQ(answer.rows.size(), 1u);
    EXPECT_EQ(answer.rows[0][0].value_or("0"), std::to_string(pg.Get<int64_t>(0, 0))) << outcome.pg_snapshot;
    EXPECT_EQ(answer.rows[0][1].value_or("0"), std::to_string(pg.Get<int64_t>(0, 1)));
    EXPECT_EQ(answer.rows[0][2].value_or("0"), pg.Get<std::string>(0, 2));
    EXPECT_EQ(outcome.rows.at("results"), pg.Get<int64_t>(0, 0));
    // Every result's row was inserted before it, so it is in the same snapshot.
    EXPECT_EQ(One(reader, "SELECT count(*) FROM requests WHERE age IS NULL"), "0");
  }
  EXPECT_GT(taken.front().rows.at("results"), 0) << "served nothing before the first snapshot";
  EXPECT_LT(taken.front().rows.at("results"), total) << "the first snapshot should miss later results";
  // keep = 2 in [snapshots]; Create itself does not prune.
  EXPECT_EQ(store.List().size(), 3u);
  EXPECT_EQ(store.Prune(config_.snapshots.keep), std::vector<int64_t>{1});
}

// A reader in another process: the DuckDB C API holding the file read-only.
class Holder {
 public:
  Holder(const std::filesystem::path& file, const std::filesystem::path& ready)
      : pipe_(::popen(fmt::format("{} '{}' > '{}'", RUNNEL_SNAPSHOT_HOLDER, file.string(), ready.string()).c_str(),
                      "w")) {
    for (int i = 0; i < 500; ++i) {
      std::ifstream in(ready);
      std::string line;
      if (std::getline(in, line) && line == "ready") return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "the holder did not open " << file;
  }
  ~Holder() {
    if (pipe_ != nullptr) ::pclose(pipe_);  // its stdin closes: it exits
  }

 private:
  FILE* pipe_;
};

TEST_F(SnapshotTest, OldVersionsStayWhileAReaderHoldsThem) {
  Insert(*conn_, 1, 50);
  ServeAll();
  const auto store = Store();
  for (int i = 0; i < 3; ++i) store.Create(*conn_, config_);
  {
    const auto reader = store.Open(1);                         // this process
    Holder holder(store.dir() / "v2.duckdb", dir_ / "ready");  // another process
    const auto versions = store.List();
    ASSERT_EQ(versions.size(), 3u);
    EXPECT_TRUE(store.Prune(1).empty());
    EXPECT_EQ(store.List().size(), 3u);
    // A new version is published while both readers hold theirs.
    store.Create(*conn_, config_);
    EXPECT_EQ(store.Prune(1), std::vector<int64_t>{3});
    EXPECT_EQ(One(reader, "SELECT version FROM snapshot"), "1");
  }
  EXPECT_EQ(store.Prune(1), (std::vector<int64_t>{1, 2}));
  ASSERT_EQ(store.List().size(), 1u);
  EXPECT_EQ(store.List()[0].version, 4);
  EXPECT_EQ(store.Open().info().version, 4);
  try {
    store.Open(2);
    FAIL() << "a pruned version opened";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NotFound);
    EXPECT_NE(std::string(e.what()).find("no snapshot version 2"), std::string::npos) << e.what();
  }
}

TEST_F(SnapshotTest, AFailedCopyPublishesNothingAndLeavesNothingBehind) {
  Insert(*conn_, 1, 20);
  ServeAll();
  const auto store = Store();
  store.Create(*conn_, config_);
  // The source table loses an input column: the copy fails midway.
  conn_->Exec("ALTER TABLE needs RENAME COLUMN wealth TO wealth_gone");
  EXPECT_THROW(store.Create(*conn_, config_), Error);
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(store.dir())) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{".lock", "v1.duckdb"}));
  conn_->Exec("ALTER TABLE needs RENAME COLUMN wealth_gone TO wealth");
  EXPECT_EQ(store.Create(*conn_, config_).info.version, 2);
}

TEST_F(SnapshotTest, QueriesCannotLeaveTheFileChangeItOrOutrunTheirLimits) {
  Insert(*conn_, 1, 20);
  ServeAll();
  const auto store = Store();
  store.Create(*conn_, config_);
  runnel::testing::WriteFile(dir_ / "secret.csv", "a\n1\n");
  const std::string secret = (dir_ / "secret.csv").string();
  const auto reader = store.Open();
  const std::pair<std::string, std::string> refused[] = {
      {"SELECT * FROM read_csv('" + secret + "')", "disabled by configuration"},
      {"SELECT * FROM read_csv('/etc/passwd')", "disabled by configuration"},
      {"SELECT * FROM read_text('/etc/passwd')", "disabled by configuration"},
      {"SELECT * FROM glob('/etc/*')", "disabled by configuration"},
      {"SELECT * FROM read_parquet('" + secret + "')", "disabled by configuration"},
      {"ATTACH '" + (dir_ / "other.duckdb").string() + "' AS other", "only a SELECT"},
      {"INSTALL httpfs", "only a SELECT"},
      {"LOAD httpfs", "only a SELECT"},
      {"COPY results TO '" + (dir_ / "out.csv").string() + "'", "disabled by configuration"},
      {"COPY results FROM '" + secret + "'", "disabled by configuration"},
      {"SET enable_external_access = true", "only a SELECT"},
      {"SET memory_limit = '100GB'", "only a SELECT"},
      {"CREATE TABLE t AS SELECT 1", "only a SELECT"},
      {"INSERT INTO results (key) VALUES (-1)", "only a SELECT"},
      {"DROP TABLE results", "only a SELECT"},
      {"SELECT 1; DROP TABLE results", "2 statements"},
      {"EXPORT DATABASE '" + (dir_ / "export").string() + "'", "disabled by configuration"},
      {"CHECKPOINT", "only a SELECT"},
      {"SELECT 1) UNION ALL (SELECT * FROM read_text('/etc/passwd')", ""},
      {"", "no statement"},
  };
  for (const auto& [sql, reason] : refused) {
    try {
      Query(reader, sql, {});
      ADD_FAILURE() << "ran: " << sql;
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::InvalidInput) << sql << ": " << e.what();
      EXPECT_NE(std::string(e.what()).find(reason), std::string::npos) << sql << ": " << e.what();
    }
  }
  EXPECT_FALSE(std::filesystem::exists(dir_ / "out.csv"));
  EXPECT_FALSE(std::filesystem::exists(dir_ / "other.duckdb"));
  EXPECT_FALSE(std::filesystem::exists(dir_ / "export"));

  QueryLimits limits;
  limits.timeout = std::chrono::milliseconds(300);
  const auto started = std::chrono::steady_clock::now();
  try {
    Query(reader, "SELECT count(*) FROM range(1000000000) a, range(1000000000) b", limits);
    ADD_FAILURE() << "a cross join of 10^18 rows finished";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Unavailable) << e.what();
    EXPECT_NE(std::string(e.what()).find("cut off after 300 ms"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(10));

  limits = QueryLimits{};
  limits.memory_mb = 64;
  try {
    Query(reader, "SELECT string_agg(x::VARCHAR, ',') FROM range(100000000) r(x)", limits);
    ADD_FAILURE() << "a 1 GB string was built under a 64 MB limit";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Unavailable) << e.what();
    EXPECT_NE(std::string(e.what()).find("Out of Memory"), std::string::npos) << e.what();
  }

  limits = QueryLimits{};
  limits.max_rows = 7;
  auto answer = Query(reader, "SELECT * FROM range(100);", limits);
  EXPECT_EQ(answer.rows.size(), 7u);
  EXPECT_TRUE(answer.truncated);
  // A gigabyte of answer under the row limit is cut off by the byte limit.
  limits.max_rows = 10000;
  limits.max_bytes = 8 << 20;
  answer = Query(reader, "SELECT repeat('x', 1000000) AS big FROM range(1000)", limits);
  EXPECT_EQ(answer.rows.size(), 8u);
  EXPECT_TRUE(answer.truncated);
  limits = QueryLimits{};
  limits.max_rows = 7;
  answer = Query(reader, "SELECT key FROM results ORDER BY key LIMIT 7 -- a comment", limits);
  EXPECT_EQ(answer.rows.size(), 7u);
  EXPECT_FALSE(answer.truncated);

  // Nothing was written beside the snapshot (no WAL, no temporary files).
  std::vector<std::string> names;
  for (const auto& entry : std::filesystem::directory_iterator(store.dir())) {
    names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{".lock", "v1.duckdb"}));
}

TEST_F(SnapshotTest, ParquetArchivesReadBackByDuckDbAndByHyparquet) {
  Insert(*conn_, 1, 300);
  ServeAll();
  const auto store = Store();
  store.Create(*conn_, config_);
  const auto reader = store.Open();
  const auto by_model = Archive(reader, dir_ / "by-model", ArchiveBy::ModelVersion);
  EXPECT_EQ(by_model.rows, 300);
  ASSERT_FALSE(by_model.files.empty());
  // Hive-style, one directory per version.
  const std::string version = One(reader, "SELECT DISTINCT model_version FROM results");
  ASSERT_FALSE(version.empty());
  // (percent-encoded: "small.h5@..." is in model_version=small.h5%40...)
  EXPECT_TRUE(by_model.files.front().parent_path().filename().string().starts_with("model_version=small.h5%40"))
      << by_model.files.front();
  const auto by_day = Archive(reader, dir_ / "by-day", ArchiveBy::Day);
  EXPECT_EQ(by_day.rows, 300);
  // Not into a directory with something in it.
  EXPECT_THROW(Archive(reader, dir_ / "by-day", ArchiveBy::Day), Error);

  const double risk_sum = std::stod(One(reader, "SELECT sum(risk_propensity) FROM requests"));
  {
    duck::Database db(":memory:", {});
    duck::Connection conn(db);
    const auto rows = conn.Scalar(
        fmt::format("SELECT count(*) || ' ' || sum(risk_propensity) FROM read_parquet({}, "
                    "hive_partitioning = true) WHERE model_version = {}",
                    duck::Literal((dir_ / "by-model" / "**" / "*.parquet").string()), duck::Literal(version)),
        "read back");
    ASSERT_NE(rows.find(' '), std::string::npos) << rows;
    EXPECT_EQ(rows.substr(0, rows.find(' ')), "300");
    EXPECT_NEAR(std::stod(rows.substr(rows.find(' ') + 1)), risk_sum, 1e-6);
  }

  const std::filesystem::path hyparquet =
      std::filesystem::path(RUNNEL_SOURCE_DIR) / ".deps/node/node_modules/hyparquet";
  if (!std::filesystem::exists(hyparquet / "package.json") || !std::filesystem::exists("/usr/bin/node")) {
    if (runnel::testing::InCi()) FAIL() << "CI=true but hyparquet or node is missing (scripts/install-deps.sh test)";
    GTEST_SKIP() << "hyparquet not installed (scripts/install-deps.sh test installs it)";
  }
  for (const auto* outcome : {&by_model, &by_day}) {
    std::vector<std::string> argv = {"/usr/bin/node",
                                     std::string(RUNNEL_SOURCE_DIR) + "/tests/snapshot/read_parquet.mjs",
                                     hyparquet.string(), "risk_propensity", "request_id"};
    for (const auto& file : outcome->files) argv.push_back(file.string());
    const auto result = RunProcess(argv);
    ASSERT_EQ(result.exit_code, 0) << result.output;
    const auto read = nlohmann::json::parse(result.output);
    EXPECT_EQ(read["rows"], 300);
    EXPECT_NEAR(read["sum"].get<double>(), risk_sum, 1e-6);
    std::vector<int64_t> expected(300);
    for (int64_t i = 0; i < 300; ++i) expected[static_cast<size_t>(i)] = i + 1;
    EXPECT_EQ(read["keys"].get<std::vector<int64_t>>(), expected);
  }
}

}  // namespace
}  // namespace runnel::snapshot
