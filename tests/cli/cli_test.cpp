// The `runnel` binary as a user runs it: help, version, db lifecycle, demo and errors.
#include <gtest/gtest.h>
#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "../support/nats_server.hpp"
#include "../support/needs_fixture.hpp"
#include "../support/shared_fixtures.hpp"
#include "../support/temp_dir.hpp"
#include "runnel/core/process.hpp"
#include "runnel/core/version.hpp"
#include "runnel/nats/jetstream.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/postgres/connection.hpp"
#include "runnel/server/api_keys.hpp"

namespace runnel {
namespace {

using runnel::testing::TempDir;

class CliTest : public ::testing::Test {
 protected:
  void SetUp() override { home_.OpenToAll(); }
  void TearDown() override { Runnel({"db", "stop"}); }

  ProcessResult Runnel(std::vector<std::string> args, std::vector<std::string> env = {},
                       std::optional<RunAs> run_as = std::nullopt) {
    args.insert(args.begin(), RUNNEL_BINARY);
    return RunWithHome(std::move(args), std::move(env), run_as);
  }

  // Any command line, with Runnel's environment as Runnel() sets it.
  ProcessResult RunWithHome(std::vector<std::string> args, std::vector<std::string> env = {},
                            std::optional<RunAs> run_as = std::nullopt) {
    ProcessOptions options;
    options.extra_env = {"RUNNEL_HOME=" + home_.path().string(),
                         "RUNNEL_CONFIG=", "RUNNEL_DB_URL=", "RUNNEL_PG_BIN=", "RUNNEL_LOG_LEVEL="};
    options.extra_env.insert(options.extra_env.end(), env.begin(), env.end());
    options.run_as = run_as;
    return RunProcess(args, options);
  }

  static std::string FirstLine(const std::string& text) { return text.substr(0, text.find('\n')); }

  // A connection to the started embedded database, with the needs example's tables made.
  postgres::Connection ConnectWithNeedsTables() {
    auto conn = postgres::Connection::Open(FirstLine(Runnel({"db", "url"}).output));
    std::ifstream schema(std::string(RUNNEL_SOURCE_DIR) + "/examples/needs/schema.sql");
    conn.Exec(std::string(std::istreambuf_iterator<char>(schema), std::istreambuf_iterator<char>()));
    return conn;
  }

  // examples/needs/pipeline.toml with its model path made absolute (usable anywhere).
  static std::string NeedsPipelineAnywhere() {
    return std::regex_replace(testing::ExampleNeedsPipeline(), std::regex("path = \"model/"),
                              "path = \"" RUNNEL_SOURCE_DIR "/examples/needs/model/");
  }

  TempDir home_{"runnel-cli"};
};

TEST_F(CliTest, EverySubcommandHasHelp) {
  for (const auto& args : std::vector<std::vector<std::string>>{{"--help"},
                                                                {"version", "--help"},
                                                                {"db", "--help"},
                                                                {"db", "start", "--help"},
                                                                {"db", "stop", "--help"},
                                                                {"db", "status", "--help"},
                                                                {"db", "url", "--help"},
                                                                {"demo", "--help"},
                                                                {"model", "inspect", "--help"},
                                                                {"model", "push", "--help"},
                                                                {"model", "list", "--help"},
                                                                {"model", "rollback", "--help"},
                                                                {"predict", "--help"},
                                                                {"migrate", "--help"},
                                                                {"run", "--help"},
                                                                {"load", "--help"},
                                                                {"status", "--help"},
                                                                {"keys", "create", "--help"},
                                                                {"keys", "list", "--help"},
                                                                {"keys", "revoke", "--help"},
                                                                {"snapshot", "create", "--help"},
                                                                {"snapshot", "list", "--help"},
                                                                {"snapshot", "query", "--help"},
                                                                {"snapshot", "archive", "--help"},
                                                                {"jetstream", "setup", "--help"},
                                                                {"jetstream", "status", "--help"}}) {
    auto result = Runnel(args);
    EXPECT_EQ(result.exit_code, 0) << args.front() << ": " << result.output;
    EXPECT_NE(result.output.find("Usage"), std::string::npos) << result.output;
  }
}

TEST_F(CliTest, VersionAndUsageErrors) {
  auto version = Runnel({"version"});
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_EQ(FirstLine(version.output), std::string("runnel ") + kVersion);
  EXPECT_NE(Runnel({}).exit_code, 0) << "a subcommand is required";
  auto unknown = Runnel({"frobnicate"});
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_NE(unknown.output.find("frobnicate"), std::string::npos) << unknown.output;
  EXPECT_NE(Runnel({"--log-level", "loud", "version"}).exit_code, 0);
  auto flag = Runnel({"--version"});
  EXPECT_EQ(flag.exit_code, 0) << flag.output;
  EXPECT_EQ(FirstLine(flag.output), std::string("runnel ") + kVersion);
  // Global options after the subcommand, as users type them.
  auto after = Runnel({"db", "status", "--log-level", "loud"});
  EXPECT_NE(after.exit_code, 0);
  EXPECT_NE(after.output.find("loud"), std::string::npos) << "checked as the global option: " << after.output;
  auto debug = Runnel({"db", "status", "--log-level", "debug"});
  EXPECT_EQ(debug.exit_code, 3) << "stopped: " << debug.output;
  EXPECT_NE(Runnel({"db", "status", "--no-such-flag"}).exit_code, 0) << "unknown flags are still refused";
}

TEST_F(CliTest, DatabaseLifecycle) {
  auto before = Runnel({"db", "status"});
  EXPECT_EQ(before.exit_code, 3);
  EXPECT_NE(before.output.find("no cluster yet"), std::string::npos) << before.output;
  EXPECT_NE(Runnel({"db", "url"}).exit_code, 0) << "no url while stopped";

  auto start = Runnel({"db", "start"});
  ASSERT_EQ(start.exit_code, 0) << start.output;
  EXPECT_NE(start.output.find("created a new PostgreSQL cluster"), std::string::npos) << start.output;

  auto url = Runnel({"db", "url"});
  ASSERT_EQ(url.exit_code, 0) << url.output;
  auto conn = postgres::Connection::Open(FirstLine(url.output));
  EXPECT_EQ(conn.Exec("SELECT current_database()").Get<std::string>(0, 0), "runnel");
  auto tcp = Runnel({"db", "url", "--tcp", "--dbname", "postgres"});
  ASSERT_EQ(tcp.exit_code, 0);
  EXPECT_EQ(postgres::Connection::Open(FirstLine(tcp.output)).Exec("SELECT current_database()").Get<std::string>(0, 0),
            "postgres");

  auto again = Runnel({"db", "start"});
  EXPECT_EQ(again.exit_code, 0);
  EXPECT_NE(again.output.find("already running"), std::string::npos) << again.output;
  EXPECT_EQ(Runnel({"db", "status"}).exit_code, 0);

  auto stop = Runnel({"db", "stop"});
  EXPECT_EQ(stop.exit_code, 0);
  EXPECT_NE(stop.output.find("stopped"), std::string::npos) << stop.output;
  auto after = Runnel({"db", "status"});
  EXPECT_EQ(after.exit_code, 3);
  EXPECT_NE(after.output.find("initialized"), std::string::npos) << after.output;
  EXPECT_NE(Runnel({"db", "stop"}).output.find("not running"), std::string::npos);
}

TEST_F(CliTest, ErrorsAreClear) {
  testing::WriteFile(home_ / "bad.toml", "home = 1\n");
  auto bad_config = Runnel({"--config", (home_ / "bad.toml").string(), "db", "status"});
  EXPECT_EQ(bad_config.exit_code, 1);
  EXPECT_NE(bad_config.output.find("bad.toml:1:"), std::string::npos) << bad_config.output;

  auto unreachable = Runnel({"run", "--pipeline", std::string(RUNNEL_SOURCE_DIR) + "/examples/needs/pipeline.toml",
                             "--db", "host=127.0.0.1 port=1 connect_timeout=1", "--no-migrate"});
  EXPECT_EQ(unreachable.exit_code, 1) << unreachable.output;
  EXPECT_NE(unreachable.output.find("cannot connect to PostgreSQL (host=127.0.0.1 port=1)"), std::string::npos)
      << unreachable.output;

  auto no_binaries = Runnel({"db", "start"}, {"RUNNEL_PG_BIN=/nonexistent/bin"});
  EXPECT_EQ(no_binaries.exit_code, 1);
  EXPECT_NE(no_binaries.output.find("sudo apt-get install postgresql"), std::string::npos) << no_binaries.output;
}

TEST_F(CliTest, DemoServesRequestsEndToEnd) {
  auto demo = Runnel({"demo"});
  ASSERT_EQ(demo.exit_code, 0) << demo.output;
  EXPECT_NE(demo.output.find("created and started"), std::string::npos) << demo.output;
  // 10,000 requests from 8 clients, quota 1,000 per client: exactly 2,000 throttled.
  EXPECT_NE(demo.output.find("served 10000 requests"), std::string::npos) << demo.output;
  EXPECT_NE(demo.output.find("8000 done, 2000 throttled, 0 failed"), std::string::npos) << demo.output;
  EXPECT_NE(demo.output.find("request 1 (client 1, risk "), std::string::npos) << demo.output;
  auto conn = postgres::Connection::Open(FirstLine(Runnel({"db", "url", "--dbname", "runnel_demo"}).output));
  EXPECT_EQ(conn.Exec("SELECT count(*) FROM runnel_needs_results").Get<int64_t>(0, 0), 10000);
  EXPECT_EQ(conn.Exec("SELECT count(*) FROM needs WHERE risk_propensity IS NOT NULL").Get<int64_t>(0, 0), 8000);
  EXPECT_EQ(conn.Exec("SELECT count(*) FROM runnel_needs_queue").Get<int64_t>(0, 0), 0);
  auto second = Runnel({"demo", "--requests", "100"});
  EXPECT_EQ(second.exit_code, 0) << "the demo can run again: " << second.output;
  EXPECT_NE(second.output.find("already running"), std::string::npos) << second.output;
  EXPECT_NE(second.output.find("served 100 requests"), std::string::npos) << second.output;
}

// The ticket workload: the model trained here on the machine's package descriptions,
// every ticket routed and its queue written back as text.
TEST_F(CliTest, DemoRoutesTicketsEndToEnd) {
  auto demo = Runnel({"demo", "--workload", "tickets"});
  if (demo.output.find("python3-sklearn and python3-onnx") != std::string::npos && std::getenv("CI") == nullptr)
    GTEST_SKIP() << "python3-sklearn and python3-onnx are not installed";
  ASSERT_EQ(demo.exit_code, 0) << demo.output;
  EXPECT_NE(demo.output.find(" done, 0 failed"), std::string::npos) << demo.output;
  EXPECT_NE(demo.output.find("of the tickets the model never saw"), std::string::npos) << demo.output;
  auto conn = postgres::Connection::Open(FirstLine(Runnel({"db", "url", "--dbname", "runnel_demo"}).output));
  EXPECT_GT(conn.Exec("SELECT count(*) FROM tickets").Get<int64_t>(0, 0), 100);
  EXPECT_EQ(conn.Exec("SELECT count(*) FROM tickets WHERE queue IS NULL").Get<int64_t>(0, 0), 0);
  EXPECT_EQ(conn.Exec("SELECT count(*) FROM tickets t JOIN runnel_tickets_results r ON r.key = t.id WHERE r.queue "
                      "IS DISTINCT FROM t.queue")
                .Get<int64_t>(0, 0),
            0);
}

// `run --pipelines DIR` (or --pipeline repeated): one process serving two pipelines on
// one table, two models writing different columns, the worker budget shared.
TEST_F(CliTest, RunServesSeveralPipelinesInOneProcess) {
  ASSERT_EQ(Runnel({"db", "start"}).exit_code, 0);
  auto conn = postgres::Connection::Open(FirstLine(Runnel({"db", "url"}).output));
  const std::string examples = std::string(RUNNEL_SOURCE_DIR) + "/examples/needs";
  std::ifstream schema(examples + "/schema.sql");
  conn.Exec(std::string(std::istreambuf_iterator<char>(schema), std::istreambuf_iterator<char>()));
  conn.Exec("ALTER TABLE needs ADD COLUMN risk_b real");
  std::ifstream in(examples + "/pipeline.toml");
  std::string toml((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto replace = [](std::string& text, const std::string& from, const std::string& to) {
    const auto at = text.find(from);
    ASSERT_NE(at, std::string::npos) << from;
    text.replace(at, from.size(), to);
  };
  replace(toml, "path = \"model/demo_model.h5\"", "path = \"" + examples + "/model/demo_model.h5\"");
  std::string second = toml.substr(0, toml.find("[recommend]"));
  replace(second, "name = \"needs\"\n\n[source]", "name = \"needs_b\"\n\n[source]");
  replace(second, "name = \"needs\"\npath", "name = \"needs_b\"\npath");
  replace(second, "outputs = [\"risk_propensity\"]", "outputs = [\"risk_b\"]");
  replace(second, "[output]\ncolumns = [\"risk_propensity\", \"financial_status\"]",
          "[output]\ncolumns = [\"risk_b\"]");
  replace(second, "[write_back]\ncolumns = [\"risk_propensity\", \"financial_status\"]",
          "[write_back]\ncolumns = [\"risk_b\"]");
  const auto dir = home_.path() / "pipelines";
  std::filesystem::create_directories(dir);
  runnel::testing::WriteFile(dir / "a.toml", toml);
  runnel::testing::WriteFile(dir / "b.toml", second);
  runnel::testing::WriteFile(dir / "notes.txt", "not a pipeline");

  auto none = Runnel({"run", "--until-idle"});
  EXPECT_EQ(none.exit_code, 1) << none.output;
  EXPECT_NE(none.output.find("--pipeline FILE (repeatable) or --pipelines DIR"), std::string::npos) << none.output;
  auto starved = Runnel({"run", "--pipelines", dir.string(), "--workers", "1", "--until-idle"});
  EXPECT_EQ(starved.exit_code, 1) << starved.output;
  EXPECT_NE(starved.output.find("1 worker(s) cannot serve 2 pipelines"), std::string::npos) << starved.output;
  auto twice = Runnel({"run", "--pipeline", (dir / "a.toml").string(), "--pipeline", (dir / "a.toml").string()});
  EXPECT_EQ(twice.exit_code, 1) << twice.output;
  EXPECT_NE(twice.output.find("pipeline 'needs' is given twice"), std::string::npos) << twice.output;

  ASSERT_EQ(Runnel({"migrate", "--pipeline", (dir / "a.toml").string()}).exit_code, 0);
  ASSERT_EQ(Runnel({"migrate", "--pipeline", (dir / "b.toml").string()}).exit_code, 0);
  auto load = Runnel({"load", "--pipeline", (dir / "a.toml").string(), "--rows", "200", "--clients", "4"});
  ASSERT_EQ(load.exit_code, 0) << load.output;
  auto run = Runnel({"run", "--pipelines", dir.string(), "--until-idle"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("serving pipeline 'needs' with needs@v1"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("serving pipeline 'needs_b' with needs_b@v1"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("2 worker(s)"), std::string::npos) << "two per pipeline by default: " << run.output;
  EXPECT_NE(run.output.find("pipeline needs:\nserved 200 requests"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("pipeline needs_b:\nserved 200 requests"), std::string::npos) << run.output;
  EXPECT_EQ(conn.Exec("SELECT count(*) FROM needs WHERE risk_b IS NULL OR risk_propensity IS NULL").Get<int64_t>(0, 0),
            0);
  auto status = Runnel({"status"});
  EXPECT_NE(status.output.find(fmt::format("pipeline needs_b (schema {}): queue 0", pipeline::kSchemaVersion)),
            std::string::npos)
      << status.output;
}

TEST_F(CliTest, MigrateLoadStatusRunAsAUserWould) {
  ASSERT_EQ(Runnel({"db", "start"}).exit_code, 0);
  auto conn = ConnectWithNeedsTables();
  const std::string pipeline = std::string(RUNNEL_SOURCE_DIR) + "/examples/needs/pipeline.toml";

  auto dry = Runnel({"migrate", "--pipeline", pipeline, "--dry-run"});
  ASSERT_EQ(dry.exit_code, 0) << dry.output;
  EXPECT_NE(dry.output.find("CREATE TABLE IF NOT EXISTS \"runnel_needs_queue\""), std::string::npos) << dry.output;
  EXPECT_NE(dry.output.find("CREATE TRIGGER \"runnel_needs_capture\" AFTER INSERT ON \"needs\""), std::string::npos)
      << dry.output;
  EXPECT_NE(dry.output.find("nothing applied"), std::string::npos) << dry.output;
  EXPECT_EQ(dry.output.find("\nSELECT "), std::string::npos) << "only what changes the schema: " << dry.output;
  EXPECT_FALSE(conn.Exec("SELECT to_regclass('runnel_needs_queue') IS NOT NULL", postgres::Params()).Get<bool>(0, 0))
      << "a dry run changes nothing";

  auto migrate = Runnel({"migrate", "--pipeline", pipeline});
  ASSERT_EQ(migrate.exit_code, 0) << migrate.output;
  EXPECT_NE(migrate.output.find("installed statement-level capture trigger"), std::string::npos) << migrate.output;
  auto load = Runnel(
      {"load", "--pipeline", pipeline, "--rows", "250", "--clients", "5", "--rows-per-txn", "100", "--seed", "7"});
  ASSERT_EQ(load.exit_code, 0) << load.output;
  EXPECT_NE(load.output.find("inserted 250 rows from key 1"), std::string::npos) << load.output;
  auto queued = Runnel({"status", "--pipeline", pipeline});
  EXPECT_NE(queued.output.find("queue 250"), std::string::npos) << queued.output;
  EXPECT_NE(queued.output.find("done 0, throttled 0, failed 0"), std::string::npos) << queued.output;

  auto grants = Runnel({"grants", "--pipeline", pipeline, "--role", "analyst"});
  ASSERT_EQ(grants.exit_code, 0) << grants.output;
  EXPECT_NE(grants.output.find("GRANT SELECT, INSERT ON \"needs\" TO \"analyst\";\nGRANT UPDATE (\"risk_propensity\", "
                               "\"financial_status\") ON \"needs\" TO \"analyst\";"),
            std::string::npos)
      << grants.output;
  EXPECT_NE(grants.output.find("GRANT SELECT ON \"products\" TO \"analyst\";"), std::string::npos) << grants.output;
  auto unmigrated = Runnel(
      {"grants", "--pipeline", std::string(RUNNEL_SOURCE_DIR) + "/examples/wine/pipeline.toml", "--role", "analyst"});
  EXPECT_EQ(unmigrated.exit_code, 1);
  EXPECT_NE(unmigrated.output.find("is not migrated"), std::string::npos) << unmigrated.output;

  auto run = Runnel({"run", "--pipeline", pipeline, "--until-idle"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("served 250 requests"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("serving as role runnel_serve"), std::string::npos) << run.output;
  EXPECT_NE(run.output.find("time in stages"), std::string::npos) << run.output;
  auto served = Runnel({"status", "--pipeline", pipeline});
  EXPECT_NE(served.output.find("queue 0"), std::string::npos) << served.output;
  EXPECT_NE(served.output.find("done 250, throttled 0, failed 0"), std::string::npos) << served.output;
  // Snapshots: taken, listed, queried, archived as Parquet.
  const std::string snaps = (home_.path() / "snaps").string();
  auto snapshot = Runnel({"snapshot", "create", "--pipeline", pipeline, "--dir", snaps});
  ASSERT_EQ(snapshot.exit_code, 0) << snapshot.output;
  EXPECT_NE(snapshot.output.find("snapshot needs v1: " + snaps + "/needs/v1.duckdb"), std::string::npos)
      << snapshot.output;
  EXPECT_NE(snapshot.output.find("250 results"), std::string::npos) << snapshot.output;
  auto listed = Runnel({"snapshot", "list", "--pipeline", pipeline, "--dir", snaps});
  EXPECT_NE(listed.output.find("v1  "), std::string::npos) << listed.output;
  auto counted = Runnel({"snapshot", "query", "--pipeline", pipeline, "--dir", snaps, "--format", "csv",
                         "SELECT client_id, count(*) AS n FROM requests GROUP BY 1 ORDER BY 1 LIMIT 2"});
  ASSERT_EQ(counted.exit_code, 0) << counted.output;
  EXPECT_EQ(counted.output, "client_id,n\r\n1,50\r\n2,50\r\n");
  auto table = Runnel({"snapshot", "query", "--pipeline", pipeline, "--dir", snaps, "SELECT 1 AS one"});
  EXPECT_NE(table.output.find("one\n---\n1  \n(1 row)"), std::string::npos) << table.output;
  auto escape = Runnel({"snapshot", "query", "--pipeline", pipeline, "--dir", snaps, "COPY results TO '/tmp/x.csv'"});
  EXPECT_EQ(escape.exit_code, 1) << escape.output;
  EXPECT_NE(escape.output.find("disabled by configuration"), std::string::npos) << escape.output;
  auto archived = Runnel({"snapshot", "archive", "--pipeline", pipeline, "--dir", snaps, "--by", "day"});
  ASSERT_EQ(archived.exit_code, 0) << archived.output;
  EXPECT_NE(archived.output.find("archived 250 request(s) of snapshot v1 into " + snaps + "/needs/archive-v1-by-day"),
            std::string::npos)
      << archived.output;
  auto missing = Runnel({"snapshot", "query", "--pipeline", pipeline, "--dir", snaps, "--version", "7", "SELECT 1"});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("no snapshot version 7"), std::string::npos) << missing.output;
  // rescore starts a batch job and follows it while a `run` serves it.
  auto rescore =
      RunWithHome({"/bin/sh", "-c",
                   "\"$0\" run --pipeline \"$1\" & run=$!; \"$0\" rescore --pipeline \"$1\" --where 'client_id = 1' "
                   "--batch-size 20; status=$?; \"$0\" status; kill -INT $run; wait $run; exit $status",
                   RUNNEL_BINARY, pipeline});
  ASSERT_EQ(rescore.exit_code, 0) << rescore.output;
  EXPECT_NE(rescore.output.find("job 1: 50 row(s) to score where client_id = 1"), std::string::npos) << rescore.output;
  EXPECT_NE(rescore.output.find("job 1: done, 50 of 50 served"), std::string::npos) << rescore.output;
  // status without --pipeline: every pipeline, and the processes serving it.
  EXPECT_NE(rescore.output.find(fmt::format("pipeline needs (schema {}): queue 0", pipeline::kSchemaVersion)),
            std::string::npos)
      << rescore.output;
  EXPECT_NE(rescore.output.find("done 250, throttled 0, failed 0, gone 0"), std::string::npos) << rescore.output;
  EXPECT_NE(rescore.output.find(": needs@v1\n"), std::string::npos)
      << "the serving process and its model: " << rescore.output;
  auto none_serving = Runnel({"status"});
  EXPECT_NE(none_serving.output.find("no process is serving it"), std::string::npos) << none_serving.output;
  auto bad_filter = Runnel({"rescore", "--pipeline", pipeline, "--where", "nope = 1", "--no-wait"});
  EXPECT_EQ(bad_filter.exit_code, 1) << bad_filter.output;
  EXPECT_NE(bad_filter.output.find("nope"), std::string::npos) << bad_filter.output;
  // New requests continue after the largest key.
  auto again = Runnel({"load", "--pipeline", pipeline, "--rows", "1", "--seed", "7"});
  EXPECT_NE(again.output.find("inserted 1 rows from key 251"), std::string::npos) << again.output;
  EXPECT_EQ(again.output.find("warning"), std::string::npos) << "within the quota: " << again.output;
  // 5 clients have used 50 of 1,000 each: 5,000 more (1,000 each) throttle 250.
  auto over = Runnel({"load", "--pipeline", pipeline, "--rows", "5000", "--clients", "5"});
  EXPECT_NE(over.output.find("warning: about 250 of these 5000 requests will be throttled"), std::string::npos)
      << over.output;
  EXPECT_NE(over.output.find("the quota is 1000 requests per client over all time"), std::string::npos) << over.output;

  // The counters: shown by status and `quota show`, forgotten by `quota reset`.
  EXPECT_NE(served.output.find("quota: 1000 requests per client over all time; 0 of 5 client(s) counted in this "
                               "window at the limit"),
            std::string::npos)
      << served.output;
  auto show = Runnel({"quota", "show", "--pipeline", pipeline, "--client", "2", "--client", "nobody"});
  ASSERT_EQ(show.exit_code, 0) << show.output;
  EXPECT_NE(show.output.find("2                                  50          950"), std::string::npos) << show.output;
  EXPECT_NE(show.output.find("nobody                              0         1000"), std::string::npos) << show.output;
  auto neither = Runnel({"quota", "reset", "--pipeline", pipeline});
  EXPECT_EQ(neither.exit_code, 1) << neither.output;
  EXPECT_NE(neither.output.find("--client C (one or more) or --all-clients"), std::string::npos) << neither.output;
  auto reset = Runnel({"quota", "reset", "--pipeline", pipeline, "--all-clients"});
  ASSERT_EQ(reset.exit_code, 0) << reset.output;
  EXPECT_NE(reset.output.find("reset 5 counter(s) of pipeline needs"), std::string::npos) << reset.output;
  auto fits = Runnel({"load", "--pipeline", pipeline, "--rows", "5000", "--clients", "5"});
  EXPECT_EQ(fits.output.find("warning"), std::string::npos) << "counts start again: " << fits.output;

  // unmigrate asks for the pipeline's name (read from standard input) unless --yes.
  auto answering = [&](const std::string& answer) {
    return RunWithHome({"/bin/sh", "-c", fmt::format("echo {} | \"$0\" unmigrate --pipeline \"$1\"", answer),
                        RUNNEL_BINARY, pipeline});
  };
  auto refused = answering("wrong");
  EXPECT_EQ(refused.exit_code, 1) << refused.output;
  EXPECT_NE(refused.output.find("table runnel_needs_queue"), std::string::npos) << "lists what it would remove";
  EXPECT_NE(refused.output.find("nothing removed"), std::string::npos) << refused.output;
  EXPECT_EQ(Runnel({"status", "--pipeline", pipeline}).exit_code, 0) << "still installed";
  auto removed = answering("needs");
  ASSERT_EQ(removed.exit_code, 0) << removed.output;
  EXPECT_NE(removed.output.find("removed table runnel_needs_results"), std::string::npos) << removed.output;
  EXPECT_NE(removed.output.find("table needs and its rows are as they were"), std::string::npos) << removed.output;
  auto nothing = Runnel({"unmigrate", "--pipeline", pipeline, "--yes"});
  EXPECT_NE(nothing.output.find("nothing installed"), std::string::npos) << nothing.output;
}

// A partition attached after migrate is captured through the parent only: status names
// it until migrate runs again, which puts the capture's trigger on it.
TEST_F(CliTest, StatusNamesAPartitionAttachedSinceTheLastMigrate) {
  ASSERT_EQ(Runnel({"db", "start"}).exit_code, 0);
  auto conn = ConnectWithNeedsTables();
  conn.Exec(
      "DROP TABLE needs; CREATE TABLE needs (id integer, age integer, gender integer, family_members integer, "
      "financial_education real, risk_propensity real, income real, wealth real, income_investment integer, "
      "accumulation_investment integer, financial_status real, client_id integer) PARTITION BY RANGE (id); "
      "CREATE TABLE needs_low PARTITION OF needs FOR VALUES FROM (1) TO (1000)");
  const std::string pipeline = std::string(RUNNEL_SOURCE_DIR) + "/examples/needs/pipeline.toml";
  auto migrate = Runnel({"migrate", "--pipeline", pipeline});
  ASSERT_EQ(migrate.exit_code, 0) << migrate.output;
  EXPECT_NE(migrate.output.find("installed trigger runnel_needs_capture on partition needs_low of needs"),
            std::string::npos)
      << migrate.output;
  EXPECT_EQ(Runnel({"status", "--pipeline", pipeline}).output.find("not captured"), std::string::npos);

  conn.Exec("CREATE TABLE needs_high PARTITION OF needs FOR VALUES FROM (1000) TO (2000)");
  auto status = Runnel({"status", "--pipeline", pipeline});
  EXPECT_NE(status.output.find("not captured: partition needs_high (attached since the last migrate): rows inserted "
                               "straight into it are no requests until `runnel migrate` runs again"),
            std::string::npos)
      << status.output;
  auto again = Runnel({"migrate", "--pipeline", pipeline});
  EXPECT_NE(again.output.find("installed trigger runnel_needs_capture on partition needs_high of needs"),
            std::string::npos)
      << again.output;
  EXPECT_EQ(Runnel({"status", "--pipeline", pipeline}).output.find("not captured"), std::string::npos);
}

// `runnel load --input` replays a CSV file; then `model push`, `list`, `rollback`.
TEST_F(CliTest, LoadReplaysACsvFileAndModelsArePushedAndRolledBack) {
  ASSERT_EQ(Runnel({"db", "start"}).exit_code, 0);
  auto conn = postgres::Connection::Open(FirstLine(Runnel({"db", "url"}).output));
  std::ifstream schema(std::string(RUNNEL_SOURCE_DIR) + "/examples/wine/schema.sql");
  conn.Exec(std::string(std::istreambuf_iterator<char>(schema), std::istreambuf_iterator<char>()));
  const std::string pipeline = std::string(RUNNEL_SOURCE_DIR) + "/examples/wine/pipeline.toml";
  {
    std::ofstream csv(home_ / "wines.csv");
    csv << "7.4;0.7;0;1.9;0.076;11;34;0.9978;3.51;0.56;9.4;5;x\n"
           "7.8;0.88;0;2.6;0.098;25;67;0.9968;3.2;0.68;9.8;5;y\n"
           "11.2;0.28;0.56;1.9;0.075;17;60;0.998;3.16;0.58;9.8;6;z";
  }
  auto load = Runnel({"load", "--pipeline", pipeline, "--input", (home_ / "wines.csv").string(), "--delimiter", ";",
                      "--columns",
                      "fixed acidity,volatile acidity,citric acid,residual sugar,chlorides,free sulfur dioxide,"
                      "total sulfur dioxide,density,pH,sulphates,alcohol,quality,note",
                      "--reverse", "--data-type", "red"});
  ASSERT_EQ(load.exit_code, 0) << load.output;
  EXPECT_NE(load.output.find("inserted 3 rows"), std::string::npos) << load.output;
  EXPECT_NE(load.output.find("ignored columns not in wine: note"), std::string::npos) << load.output;
  auto rows = conn.Exec("SELECT fixed_acidity, quality, data_type FROM wine ORDER BY id", postgres::Params());
  ASSERT_EQ(rows.rows(), 3);
  EXPECT_DOUBLE_EQ(rows.Get<double>(0, 0), 11.2) << "--reverse: the last line first";
  EXPECT_EQ(rows.Get<int64_t>(0, 1), 6);
  EXPECT_EQ(rows.Get<std::string>(2, 2), "red");
  // --loop runs until Ctrl-C and says how far it got every 5 s.
  ProcessOptions shell;
  shell.extra_env = {"RUNNEL_HOME=" + home_.path().string(), "RUNNEL_CONFIG=", "RUNNEL_DB_URL=", "RUNNEL_LOG_LEVEL="};
  auto looping = RunProcess(
      {"/bin/sh", "-c",
       fmt::format("{} load --pipeline {} --input {} --delimiter ';' --columns 'fixed acidity,volatile acidity,citric "
                   "acid,residual sugar,chlorides,free sulfur dioxide,total sulfur dioxide,density,pH,sulphates,"
                   "alcohol,quality,note' --loop --rate 20 & p=$!; sleep 6; kill -INT $p; wait $p",
                   RUNNEL_BINARY, pipeline, (home_ / "wines.csv").string())},
      shell);
  EXPECT_EQ(looping.exit_code, 0) << looping.output;
  EXPECT_NE(looping.output.find(" rows/s); Ctrl-C stops"), std::string::npos) << "progress: " << looping.output;
  EXPECT_NE(looping.output.find("inserted 1"), std::string::npos) << looping.output;
  auto bad = Runnel({"load", "--pipeline", pipeline, "--input", (home_ / "wines.csv").string(), "--delimiter", ";"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("no column matches a column of table 'wine'"), std::string::npos) << bad.output;

  // The registry from the command line; a file that does not load never gets in.
  runnel::testing::WriteFile(home_ / "broken.pmml", "<PMML version=\"4.3\"><DataDictionary>");
  auto refused = Runnel({"model", "push", "--name", "wine", "--file", (home_ / "broken.pmml").string()});
  EXPECT_EQ(refused.exit_code, 1);
  EXPECT_NE(refused.output.find("broken.pmml:1: malformed XML"), std::string::npos) << refused.output;
  const std::string model = std::string(RUNNEL_SOURCE_DIR) + "/examples/needs/model/demo_model.h5";
  for (const char* description : {"first", "second"}) {
    auto push = Runnel({"model", "push", "--name", "demo", "--file", model, "--description", description});
    ASSERT_EQ(push.exit_code, 0) << push.output;
  }
  conn.Exec("UPDATE runnel_models SET status = 'ready' WHERE name = 'demo'", postgres::Params());  // no server ran
  auto list = Runnel({"model", "list", "--name", "demo"});
  EXPECT_NE(list.output.find("  NAME             VER   STATUS"), std::string::npos) << list.output;
  EXPECT_NE(list.output.find("* demo             v2"), std::string::npos) << "the serving one: " << list.output;
  EXPECT_NE(list.output.find("  demo             v1"), std::string::npos) << list.output;
  auto rollback = Runnel({"model", "rollback", "--name", "demo"});
  EXPECT_EQ(rollback.exit_code, 0) << rollback.output;
  EXPECT_NE(rollback.output.find("demo is back at v1"), std::string::npos) << rollback.output;
  auto again = Runnel({"model", "rollback", "--name", "demo"});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.output.find("no earlier good version"), std::string::npos) << again.output;
}

// `runnel load --jetstream` publishes synthetic records to the pipeline's subject, one
// message each, as the JetStream ingest takes them (server/jetstream_ingest_test.cpp).
TEST_F(CliTest, LoadPublishesToJetStream) {
  RUNNEL_REQUIRE_NATS_SERVER();
  testing::NatsServer server;
  nats::ConnectOptions options;
  options.servers = {server.url()};
  nats::JetStream js(options);
  const std::string pipeline = (home_.path() / "p.toml").string();
  testing::WriteFile(
      pipeline, testing::ExampleNeedsPipeline() + fmt::format("\n[jetstream]\nservers = [\"{}\"]\nstream = \"REQ\"\n"
                                                              "subject = \"req.>\"\nresults = \"res.needs\"\n",
                                                              server.url()));
  auto setup = Runnel({"jetstream", "setup", "--pipeline", pipeline});
  ASSERT_EQ(setup.exit_code, 0) << setup.output;
  EXPECT_NE(setup.output.find("stream REQ on req.> (1 replica(s))"), std::string::npos) << setup.output;
  EXPECT_NE(setup.output.find("stream REQ_RESULTS on res.needs.>"), std::string::npos) << setup.output;
  EXPECT_EQ(Runnel({"jetstream", "setup", "--pipeline", pipeline}).exit_code, 0) << "again: they exist";
  auto wildcard = Runnel({"load", "--pipeline", pipeline, "--jetstream", "--rows", "10"});
  EXPECT_EQ(wildcard.exit_code, 1);
  EXPECT_NE(wildcard.output.find("has a wildcard: give --subject"), std::string::npos) << wildcard.output;
  auto load = Runnel({"load", "--pipeline", pipeline, "--jetstream", "--subject", "req.needs", "--rows", "1500",
                      "--clients", "3", "--seed", "5"});
  ASSERT_EQ(load.exit_code, 0) << load.output;
  EXPECT_NE(load.output.find("published 1500 requests to req.needs"), std::string::npos) << load.output;
  auto consumer = js.Consume("REQ", "check", "req.>", std::chrono::seconds(30));
  size_t got = 0;
  std::set<int> clients;
  for (int round = 0; round < 20 && got < 1500; ++round) {
    for (auto& m : consumer->Fetch(500, std::chrono::milliseconds(500))) {
      const auto record = nlohmann::json::parse(m.data());
      clients.insert(record["client_id"].get<int>());
      EXPECT_GE(record["age"].get<double>(), 18);
      m.Ack();
      ++got;
    }
  }
  EXPECT_EQ(got, 1500u);
  EXPECT_EQ(clients, (std::set<int>{1, 2, 3}));
  // Batches: NDJSON messages of --per-message records.
  auto batched = Runnel({"load", "--pipeline", pipeline, "--jetstream", "--subject", "req.batch", "--rows", "250",
                         "--per-message", "100", "--seed", "5"});
  ASSERT_EQ(batched.exit_code, 0) << batched.output;
  auto batches = js.Consume("REQ", "check-batch", "req.batch", std::chrono::seconds(30));
  std::vector<size_t> lines;
  for (auto& m : batches->Fetch(10, std::chrono::milliseconds(1000))) {
    EXPECT_EQ(m.Header("Content-Type"), "application/x-ndjson");
    std::istringstream in{std::string(m.data())};
    size_t n = 0;
    for (std::string line; std::getline(in, line);) n += nlohmann::json::parse(line).is_object();
    lines.push_back(n);
    m.Ack();
  }
  EXPECT_EQ(lines, (std::vector<size_t>{100, 100, 50}));
  js.Consume("REQ", "runnel-needs", "req.>", std::chrono::seconds(30));  // the pipeline's consumer, bound
  auto status = Runnel({"jetstream", "status", "--pipeline", pipeline});
  ASSERT_EQ(status.exit_code, 0) << status.output;
  EXPECT_NE(status.output.find("consumer runnel-needs of stream REQ: pending 1503"), std::string::npos)
      << status.output;
  auto nowhere =
      Runnel({"load", "--pipeline", std::string(RUNNEL_SOURCE_DIR) + "/examples/needs/pipeline.toml", "--jetstream"});
  EXPECT_EQ(nowhere.exit_code, 1);
  EXPECT_NE(nowhere.output.find("has no [jetstream] section"), std::string::npos) << nowhere.output;
}

// mode "direct" end to end: `runnel run --until-idle` scores every message of the
// stream without making a row, publishes each result once, and `runnel status` says
// how many were scored.
TEST_F(CliTest, RunUntilIdleScoresADirectStreamWithoutRows) {
  RUNNEL_REQUIRE_NATS_SERVER();
  testing::NatsServer server;
  ASSERT_EQ(Runnel({"db", "start"}).exit_code, 0);
  auto conn = ConnectWithNeedsTables();
  std::string text = NeedsPipelineAnywhere();
  text = text.substr(0, text.find("[recommend]"));  // a row's products: table mode only
  const std::string pipeline = (home_.path() / "p.toml").string();
  testing::WriteFile(pipeline, text + fmt::format("\n[jetstream]\nmode = \"direct\"\nservers = [\"{}\"]\n"
                                                  "stream = \"REQ\"\nsubject = \"req.>\"\nresults = \"res.needs\"\n"
                                                  "batch = 300\n",
                                                  server.url()));
  ASSERT_EQ(Runnel({"jetstream", "setup", "--pipeline", pipeline}).exit_code, 0);
  ASSERT_EQ(Runnel({"migrate", "--pipeline", pipeline}).exit_code, 0);
  auto load = Runnel({"load", "--pipeline", pipeline, "--jetstream", "--subject", "req.needs", "--rows", "1200",
                      "--clients", "4", "--seed", "3"});
  ASSERT_EQ(load.exit_code, 0) << load.output;
  auto run = Runnel({"run", "--pipeline", pipeline, "--until-idle", "--no-migrate"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("scored 1200 JetStream records without rows"), std::string::npos) << run.output;
  EXPECT_EQ(conn.Exec("SELECT count(*) FROM needs").Get<int64_t>(0, 0), 0) << "no row made";
  EXPECT_EQ(conn.Exec("SELECT count(*) FROM runnel_needs_jetstream WHERE status = 'done' AND "
                      "(outputs->>'risk_propensity')::float8 BETWEEN 0 AND 1")
                .Get<int64_t>(0, 0),
            1200);
  auto status = Runnel({"status", "--pipeline", pipeline});
  ASSERT_EQ(status.exit_code, 0) << status.output;
  EXPECT_NE(status.output.find("jetstream records scored without rows: done 1200, throttled 0, failed 0"),
            std::string::npos)
      << status.output;
  EXPECT_NE(status.output.find("pending 0, delivered and not acknowledged 0"), std::string::npos) << status.output;
  nats::ConnectOptions options;
  options.servers = {server.url()};
  nats::JetStream js(options);
  auto results = js.Consume("REQ_RESULTS", "check", "res.needs.>", std::chrono::seconds(30));
  std::set<std::string> ids;
  size_t messages = 0;
  for (int round = 0; round < 10; ++round) {
    auto got = results->Fetch(1000, std::chrono::milliseconds(300));
    if (got.empty()) break;
    for (auto& m : got) {
      ids.insert(m.Header("Nats-Msg-Id"));
      ++messages;
      m.Ack();
    }
  }
  EXPECT_EQ(messages, 1200u);
  EXPECT_EQ(ids.size(), 1200u);
}

// `runnel run --until-idle` on a [jetstream] pipeline ends once every message of the
// stream is in the table and served, and every result published: its workers do not
// take an empty queue for the end while the consumer still has messages.
TEST_F(CliTest, RunUntilIdleTakesInTheWholeStream) {
  RUNNEL_REQUIRE_NATS_SERVER();
  testing::NatsServer server;
  ASSERT_EQ(Runnel({"db", "start"}).exit_code, 0);
  auto conn = ConnectWithNeedsTables();
  const std::string pipeline = (home_.path() / "p.toml").string();
  testing::WriteFile(pipeline,
                     NeedsPipelineAnywhere() + fmt::format("\n[jetstream]\nservers = [\"{}\"]\nstream = \"REQ\"\n"
                                                           "subject = \"req.>\"\nresults = \"res.needs\"\n"
                                                           "batch = 300\n",
                                                           server.url()));
  ASSERT_EQ(Runnel({"jetstream", "setup", "--pipeline", pipeline}).exit_code, 0);
  ASSERT_EQ(Runnel({"migrate", "--pipeline", pipeline}).exit_code, 0);
  auto load = Runnel({"load", "--pipeline", pipeline, "--jetstream", "--subject", "req.needs", "--rows", "2000",
                      "--clients", "4", "--seed", "3"});
  ASSERT_EQ(load.exit_code, 0) << load.output;

  // A BEFORE INSERT trigger `name` on needs running `body` (plpgsql) for each `level`.
  const auto trigger = [&](const std::string& name, const std::string& body, const std::string& level) {
    conn.Exec(fmt::format("CREATE FUNCTION {0}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN {1} END $$", name, body));
    conn.Exec(
        fmt::format("CREATE TRIGGER {0} BEFORE INSERT ON needs FOR EACH {1} EXECUTE FUNCTION {0}()", name, level));
  };
  // Each insert of the ingest takes a while: the queue stays empty meanwhile.
  trigger("slow", "PERFORM pg_sleep(0.5); RETURN NULL;", "STATEMENT");
  auto run = Runnel({"run", "--pipeline", pipeline, "--until-idle", "--no-migrate"});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("served 2000 requests"), std::string::npos) << run.output;
  conn.Exec("DROP TRIGGER slow ON needs");
  EXPECT_EQ(conn.Exec("SELECT count(*) FROM runnel_needs_results WHERE status = 'done'").Get<int64_t>(0, 0), 2000);
  auto status = Runnel({"jetstream", "status", "--pipeline", pipeline});
  EXPECT_NE(status.output.find("consumer runnel-needs of stream REQ: pending 0, delivered and not acknowledged 0"),
            std::string::npos)
      << status.output;
  nats::ConnectOptions options;
  options.servers = {server.url()};
  nats::JetStream js(options);
  auto results = js.Consume("REQ_RESULTS", "check", "res.needs.>", std::chrono::seconds(30));
  std::set<std::string> ids;
  for (int round = 0; round < 10; ++round) {
    auto got = results->Fetch(1000, std::chrono::milliseconds(300));
    if (got.empty()) break;
    for (auto& m : got) {
      ids.insert(nlohmann::json::parse(m.data())["id"].dump());
      m.Ack();
    }
  }
  EXPECT_EQ(ids.size(), 2000u) << "each result published before the run ended";

  // Messages it cannot take in (its inserts refused, not for a row's sake) end the run
  // after a few rounds, said, with a failure; once they can be, the next run takes them.
  // They come from a CSV file (typed by the table's columns; one it lacks is ignored).
  std::string csv =
      "age,gender,family_members,financial_education,income,wealth,income_investment,"
      "accumulation_investment,client_id,note\n";
  for (int i = 1; i <= 5; ++i) csv += fmt::format("4{},1,2,0.5,60.5,100{}.5,1,0,7,n{}\n", i, i, i);
  testing::WriteFile(home_.path() / "more.csv", csv);
  auto more = Runnel({"load", "--pipeline", pipeline, "--jetstream", "--subject", "req.needs", "--input",
                      (home_.path() / "more.csv").string()});
  ASSERT_EQ(more.exit_code, 0) << more.output;
  EXPECT_NE(more.output.find("ignored columns not in needs: note"), std::string::npos) << more.output;
  EXPECT_NE(more.output.find("published 5 requests to req.needs"), std::string::npos) << more.output;
  trigger("closed", "RAISE EXCEPTION 'closed' USING ERRCODE = '42501';", "ROW");
  auto stuck = Runnel({"run", "--pipeline", pipeline, "--until-idle", "--no-migrate"});
  EXPECT_EQ(stuck.exit_code, 1) << stuck.output;
  EXPECT_NE(stuck.output.find("5 message(s) of JetStream stream 'REQ' are still to be taken in"), std::string::npos)
      << stuck.output;
  conn.Exec("DROP TRIGGER closed ON needs");
  auto open = Runnel({"run", "--pipeline", pipeline, "--until-idle", "--no-migrate"});
  EXPECT_EQ(open.exit_code, 0) << open.output;
  EXPECT_EQ(conn.Exec("SELECT count(*) FROM runnel_needs_results WHERE status = 'done'").Get<int64_t>(0, 0), 2005);
  EXPECT_EQ(conn.Exec("SELECT count(*) FROM needs WHERE client_id = 7 AND wealth = 1000.5 + (age - 40) AND age "
                      "BETWEEN 41 AND 45 AND risk_propensity IS NOT NULL")
                .Get<int64_t>(0, 0),
            5)
      << "the CSV's rows, served";
}

TEST_F(CliTest, RunChecksItsAddressAndTokenFileBeforeStarting) {
  const std::string pipeline = std::string(RUNNEL_SOURCE_DIR) + "/examples/needs/pipeline.toml";
  auto bad = Runnel({"run", "--pipeline", pipeline, "--http", "localhost"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("expected host:port"), std::string::npos) << bad.output;
  // A token from a file, never on the command line: it satisfies the same check.
  auto missing = Runnel({"run", "--pipeline", pipeline, "--http", "0.0.0.0:0", "--http-token-file",
                         (home_.path() / "no-such-token").string()});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("no-such-token"), std::string::npos) << missing.output;
  testing::WriteFile(home_.path() / "empty-token", "\n");
  auto empty = Runnel({"run", "--pipeline", pipeline, "--http", "0.0.0.0:0", "--http-token-file",
                       (home_.path() / "empty-token").string()});
  EXPECT_EQ(empty.exit_code, 1);
  EXPECT_NE(empty.output.find("the HTTP token file is empty"), std::string::npos) << empty.output;
  testing::WriteFile(home_.path() / "token", "  s3cret \n");
  auto from_file = Runnel({"run", "--pipeline", pipeline, "--http", "0.0.0.0:0", "--http-token-file",
                           (home_.path() / "token").string(), "--db", "host=/nonexistent-runnel-socket"});
  EXPECT_EQ(from_file.exit_code, 1) << "no database there";
  EXPECT_NE(from_file.output.find("nonexistent-runnel-socket"), std::string::npos) << from_file.output;
  auto both = Runnel({"run", "--pipeline", pipeline, "--http", "127.0.0.1:0", "--http-token", "x", "--http-token-file",
                      (home_.path() / "token").string()});
  EXPECT_NE(both.exit_code, 0);
  auto idle = Runnel({"run", "--pipeline", pipeline, "--workers", "0"});
  EXPECT_EQ(idle.exit_code, 1);
  EXPECT_NE(idle.output.find("--workers 0 serves nothing without --http"), std::string::npos) << idle.output;
}

TEST_F(CliTest, KeysAreCreatedListedAndRevoked) {
  ASSERT_EQ(Runnel({"db", "start"}).exit_code, 0);
  auto create = Runnel({"keys", "create", "--scope", "submit", "--client", "acme", "--expires", "30d", "--note", "ci"});
  ASSERT_EQ(create.exit_code, 0) << create.output;
  const auto at = create.output.find("rnl_");
  ASSERT_NE(at, std::string::npos) << create.output;
  const std::string secret = create.output.substr(at, 68);
  EXPECT_NE(create.output.find("submit scope, client acme, expires"), std::string::npos) << create.output;
  auto conn = postgres::Connection::Open(FirstLine(Runnel({"db", "url"}).output));
  auto stored = conn.Exec("SELECT hash, prefix FROM runnel_api_keys");
  ASSERT_EQ(stored.rows(), 1);
  EXPECT_EQ(stored.Get<std::string>(0, 0), server::HashKey(secret)) << "only the hash is stored";
  auto list = Runnel({"keys", "list"});
  ASSERT_EQ(list.exit_code, 0) << list.output;
  EXPECT_NE(list.output.find(stored.Get<std::string>(0, 1)), std::string::npos) << list.output;
  EXPECT_NE(list.output.find("acme"), std::string::npos) << list.output;
  EXPECT_EQ(list.output.find(secret), std::string::npos) << "never the secret";
  EXPECT_EQ(Runnel({"keys", "revoke", "1"}).exit_code, 0);
  auto again = Runnel({"keys", "revoke", "1"});
  EXPECT_EQ(again.exit_code, 1);
  EXPECT_NE(again.output.find("no unrevoked key 1"), std::string::npos) << again.output;
  EXPECT_NE(Runnel({"keys", "list"}).output.find("revoked"), std::string::npos);
  auto bad = Runnel({"keys", "create", "--expires", "soon"});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("--expires 'soon'"), std::string::npos) << bad.output;
  EXPECT_NE(Runnel({"keys", "create", "--scope", "root"}).exit_code, 0);
}

TEST_F(CliTest, WorksForAnOrdinaryUser) {
  if (::geteuid() != 0) GTEST_SKIP() << "this process already is an ordinary user; the other tests cover it";
  passwd* nobody = ::getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  ASSERT_EQ(::chown(home_.path().c_str(), nobody->pw_uid, nobody->pw_gid), 0);
  RunAs as_nobody{nobody->pw_uid, nobody->pw_gid};
  ProcessOptions probe;
  probe.run_as = as_nobody;
  if (RunProcess({"/usr/bin/test", "-x", RUNNEL_BINARY}, probe).exit_code != 0) {
    GTEST_SKIP() << "user nobody cannot reach " << RUNNEL_BINARY << " (a parent directory is private)";
  }
  auto start = Runnel({"db", "start"}, {}, as_nobody);
  ASSERT_EQ(start.exit_code, 0) << start.output;
  auto status = Runnel({"db", "status"}, {}, as_nobody);
  EXPECT_EQ(status.exit_code, 0) << status.output;
  auto owner = RunProcess({"/usr/bin/stat", "-c", "%U", (home_ / "pg" / "data").string()});
  EXPECT_EQ(owner.output, std::string(nobody->pw_name) + "\n") << "no service user without root";
  auto stop = Runnel({"db", "stop"}, {}, as_nobody);
  EXPECT_EQ(stop.exit_code, 0) << stop.output;
}

TEST_F(CliTest, ModelInspect) {
  RUNNEL_REQUIRE_SHARED();
  auto inspect = Runnel({"model", "inspect", (testing::SharedDir() / "models/needs/deep_model.keras").string()});
  ASSERT_EQ(inspect.exit_code, 0) << inspect.output;
  EXPECT_NE(inspect.output.find("Keras v3 (.keras)"), std::string::npos) << inspect.output;
  EXPECT_NE(inspect.output.find("parameters:  21211"), std::string::npos) << inspect.output;
  EXPECT_NE(inspect.output.find("dense_33"), std::string::npos) << inspect.output;
  testing::WriteFile(home_ / "bad.onnx", "not a model");
  auto bad = Runnel({"model", "inspect", (home_ / "bad.onnx").string()});
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("bad.onnx"), std::string::npos) << bad.output;
  // By content, not by name: a README is no model of any kind; a missing file says so.
  auto readme = Runnel({"model", "inspect", std::string(RUNNEL_SOURCE_DIR) + "/README.md"});
  EXPECT_EQ(readme.exit_code, 1);
  EXPECT_NE(readme.output.find("README.md: not a model file Runnel reads"), std::string::npos) << readme.output;
  auto missing = Runnel({"model", "inspect", (home_ / "model.h5").string()});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("model.h5: no such file"), std::string::npos) << missing.output;
}

TEST_F(CliTest, PredictScoresEveryRowInOrder) {
  RUNNEL_REQUIRE_SHARED();
  const std::string pipeline = std::string(RUNNEL_SOURCE_DIR) + "/examples/needs/pipeline.toml";
  const std::string model = (testing::SharedDir() / "models/needs/deep_model.h5").string();
  // Headers in another spelling, a BOM, and rows that must fail without being dropped.
  testing::WriteFile(home_ / "in.csv",
                     "\xEF\xBB\xBFID,Age,Gender,FamilyMembers,Financial Education,Income,Wealth,IncomeInvestment,"
                     "Accumulation-Investment\n"
                     "21,60,0,2,0.2,68.1,53.2,0,1\n"
                     "22,60,0,2,0.2,68.1,-5,0,1\n"
                     "23,60,0,2,0.2,abc,53.2,0,1\n"
                     "24,60,0,2\n"
                     "25,60,0,2,0.2,68.1,,0,1\n"
                     "26,33,1,2,0.3,23.2,66.3,0,1\n");
  auto run = Runnel({"predict", "--pipeline", pipeline, "--model", model, "--input", (home_ / "in.csv").string(),
                     "--output", (home_ / "out.csv").string()});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("scored 6 rows, 4 failed"), std::string::npos) << run.output;
  std::ifstream in(home_ / "out.csv");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  ASSERT_EQ(lines.size(), 7u);
  EXPECT_EQ(lines[0], "id,risk_propensity,financial_status,error");
  EXPECT_TRUE(lines[1].starts_with("21,0.")) << lines[1];
  EXPECT_TRUE(lines[1].ends_with(",")) << "no error: " << lines[1];
  EXPECT_EQ(lines[2], "22,,,feature 'financial_status': ln of non-positive value -5 in ln(wealth)");
  EXPECT_EQ(lines[3], "23,,,line 4: column 'Income' is not a number: 'abc'");
  EXPECT_EQ(lines[4], "24,,,\"line 5: 4 fields, the header has 9\"") << "a message holding a comma is quoted";
  EXPECT_EQ(lines[5], "25,,,column 'wealth' is NULL");
  EXPECT_TRUE(lines[6].starts_with("26,0.")) << lines[6];

  // Headerless, ';'-delimited, to standard output.
  testing::WriteFile(home_ / "raw.csv", "60;0;2;0.2;68.1;53.2;0;1;21\n");
  auto raw = Runnel({"predict", "--pipeline", pipeline, "--model", model, "--input", (home_ / "raw.csv").string(),
                     "--delimiter", ";", "--columns",
                     "age,gender,family_members,financial_education,income,wealth,income_investment,"
                     "accumulation_investment,id"});
  ASSERT_EQ(raw.exit_code, 0) << raw.output;
  EXPECT_NE(raw.output.find(lines[1]), std::string::npos) << "same row, same result:\n" << raw.output;

  // Rows that all fail: the job failed, and the exit status says so.
  testing::WriteFile(home_ / "bad.csv", "60;0;2;0.2;68.1;-5;0;1;21\n60;0;2;0.2;68.1;;0;1;22\n");
  auto bad = Runnel({"predict", "--pipeline", pipeline, "--model", model, "--input", (home_ / "bad.csv").string(),
                     "--delimiter", ";", "--columns",
                     "age,gender,family_members,financial_education,income,wealth,income_investment,"
                     "accumulation_investment,id"});
  EXPECT_EQ(bad.exit_code, 1) << bad.output;
  EXPECT_NE(bad.output.find("every row failed"), std::string::npos) << bad.output;
}

// PMML and TensorFlow graphs through `runnel predict`, as the wine README shows it.
TEST_F(CliTest, PredictWithPmmlAndTensorFlowModels) {
  RUNNEL_REQUIRE_SHARED();
  const std::string pipeline = std::string(RUNNEL_SOURCE_DIR) + "/examples/wine/pipeline.toml";
  const std::string csv = (runnel::testing::SharedDir() / "data/wine/winequality_red.csv").string();
  const std::string columns =
      "fixed_acidity,volatile_acidity,citric_acid,residual_sugar,chlorides,free_sulfur_dioxide,"
      "total_sulfur_dioxide,density,ph,sulphates,alcohol,quality";
  auto read = [](const std::filesystem::path& path) {
    std::ifstream in(path);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
  };
  auto forest =
      Runnel({"predict", "--pipeline", pipeline, "--model",
              (runnel::testing::SharedDir() / "models/wine/winequalityRandonForrestClassification.pmml").string(),
              "--input", csv, "--delimiter", ";", "--columns", columns, "--output", (home_ / "forest.csv").string()});
  ASSERT_EQ(forest.exit_code, 0) << forest.output;
  auto lines = read(home_ / "forest.csv");
  ASSERT_EQ(lines.size(), 1600u);
  const std::string header =
      "id,predicted_quality,probability_3,probability_4,probability_5,probability_6,probability_7,probability_8,"
      "error";
  EXPECT_EQ(lines[0], header) << "the pipeline's [output].columns, as the live pipeline writes them";
  EXPECT_TRUE(lines[1].starts_with("1,5,")) << lines[1];
  for (size_t i = 1; i < lines.size(); ++i) {
    // The probabilities follow the columns' classes: they sum to 1 and the largest is
    // the predicted class's.
    std::vector<std::string> fields;
    std::stringstream line(lines[i]);
    for (std::string f; std::getline(line, f, ',');) fields.push_back(f);
    ASSERT_GE(fields.size(), 8u) << lines[i];
    double sum = 0;
    size_t best = 2;
    for (size_t c = 2; c < 8; ++c) {
      sum += std::stod(fields[c]);
      if (std::stod(fields[c]) > std::stod(fields[best])) best = c;
    }
    EXPECT_NEAR(sum, 1.0, 1e-5) << lines[i];
    EXPECT_EQ(std::stoi(fields[1]), static_cast<int>(best) + 1) << "class of the largest probability: " << lines[i];
  }
  auto linear =
      Runnel({"predict", "--pipeline", pipeline, "--model",
              (runnel::testing::SharedDir() / "models/wine/winequalityLinearRegression.pmml").string(), "--input", csv,
              "--delimiter", ";", "--columns", columns, "--output", (home_ / "linear.csv").string()});
  ASSERT_EQ(linear.exit_code, 0) << linear.output;
  lines = read(home_ / "linear.csv");
  EXPECT_EQ(lines[0], header) << "a regression has no probabilities: those columns stay empty";
  EXPECT_TRUE(lines[1].ends_with(",,,,,,")) << lines[1];
  auto graph = Runnel({"predict", "--pipeline", pipeline, "--model",
                       (runnel::testing::SharedDir() / "models/wine/optimized_WineQuality.pb").string(), "--input", csv,
                       "--delimiter", ";", "--columns", columns, "--output", (home_ / "graph.csv").string()});
  ASSERT_EQ(graph.exit_code, 0) << graph.output;
  lines = read(home_ / "graph.csv");
  EXPECT_TRUE(lines[0].starts_with("id,predicted_quality,probability_3")) << lines[0];
  EXPECT_TRUE(lines[1].starts_with("1,5,,")) << lines[1];
  auto inspect = Runnel({"model", "inspect",
                         (runnel::testing::SharedDir() / "models/wine/winequalityMultilayerPerceptron.pmml").string()});
  EXPECT_EQ(inspect.exit_code, 0) << inspect.output;
  EXPECT_NE(inspect.output.find("NeuralNetwork (classification), 11 inputs, 3 layers, 36 neurons"), std::string::npos)
      << inspect.output;
}

// A tree model as its library saves it, through `runnel predict`: with
// features.missing = "nan" an empty field reaches the model as missing and every row
// is scored as XGBoost scores it; by default such rows fail alone.
TEST_F(CliTest, PredictWithAnXGBoostModelAndMissingValues) {
  const int made = std::system(
      fmt::format("/usr/bin/python3 {}/tests/model/xgboost_fixtures.py {}", RUNNEL_SOURCE_DIR, home_.path().string())
          .c_str());
  if (WIFEXITED(made) && WEXITSTATUS(made) == 77 && !testing::InCi())
    GTEST_SKIP() << "python3-xgboost is not installed (scripts/install-deps.sh test installs it)";
  ASSERT_TRUE(WIFEXITED(made) && WEXITSTATUS(made) == 0) << "tests/model/xgboost_fixtures.py failed";
  const std::string pipeline = R"(name = "trees"
[source]
table = "t"
key = "id"
columns = ["f0", "f1", "f2", "f3", "f4", "f5"]
[model]
path = "regression.json"
outputs = ["prediction"]
[features]
inputs = ["f0", "f1", "f2", "f3", "f4", "f5"]
missing = "nan"
[output]
columns = ["prediction"]
)";
  testing::WriteFile(home_ / "trees.toml", pipeline);
  // The fixture's rows as a CSV with a key; "nan" becomes an empty field (NULL).
  std::ifstream rows(home_ / "regression.input.csv");
  std::string csv = "id,f0,f1,f2,f3,f4,f5\n";
  size_t count = 0, with_missing = 0;
  for (std::string line; std::getline(rows, line); ++count) {
    const bool missing = line.find("nan") != std::string::npos;
    with_missing += missing ? 1 : 0;
    for (size_t at; (at = line.find("nan")) != std::string::npos;) line.erase(at, 3);
    csv += std::to_string(count + 1) + "," + line + "\n";
  }
  testing::WriteFile(home_ / "in.csv", csv);
  ASSERT_GT(with_missing, 50u);
  auto run = Runnel({"predict", "--pipeline", (home_ / "trees.toml").string(), "--input", (home_ / "in.csv").string(),
                     "--output", (home_ / "out.csv").string()});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  std::ifstream out(home_ / "out.csv"), expected(home_ / "regression.expected.csv");
  std::string line, want;
  std::getline(out, line);
  EXPECT_EQ(line, "id,prediction,error");
  for (size_t r = 1; std::getline(out, line) && std::getline(expected, want); ++r) {
    ASSERT_TRUE(line.starts_with(std::to_string(r) + ",")) << line;
    const double got = std::stod(line.substr(line.find(',') + 1));
    EXPECT_NEAR(got, std::stod(want), 1e-5 + 1e-5 * std::fabs(std::stod(want))) << "row " << r << ": " << line;
    EXPECT_TRUE(line.ends_with(",")) << "no error: " << line;
  }
  // The default: rows with a NULL input fail, naming the column; the others are scored.
  std::string strict = pipeline;
  strict.erase(strict.find("missing = \"nan\"\n"), std::string("missing = \"nan\"\n").size());
  testing::WriteFile(home_ / "trees.toml", strict);
  run = Runnel({"predict", "--pipeline", (home_ / "trees.toml").string(), "--input", (home_ / "in.csv").string(),
                "--output", (home_ / "out.csv").string()});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find(fmt::format("scored {} rows, {} failed", count, with_missing)), std::string::npos)
      << run.output;
  auto inspect = Runnel({"model", "inspect", (home_ / "regression.json").string()});
  ASSERT_EQ(inspect.exit_code, 0) << inspect.output;
  EXPECT_NE(inspect.output.find("format:      XGBoost JSON"), std::string::npos) << inspect.output;
  EXPECT_NE(inspect.output.find("40 trees"), std::string::npos) << inspect.output;
}

TEST_F(CliTest, PredictErrorsAreClear) {
  RUNNEL_REQUIRE_SHARED();
  const std::string pipeline = std::string(RUNNEL_SOURCE_DIR) + "/examples/needs/pipeline.toml";
  testing::WriteFile(home_ / "in.csv", "id,age\n1,2\n");
  std::ifstream example(pipeline);
  std::string text((std::istreambuf_iterator<char>(example)), std::istreambuf_iterator<char>());
  text.erase(text.find("path = \"model/demo_model.h5\""), 29);
  testing::WriteFile(home_ / "no-model.toml", text);
  auto no_model =
      Runnel({"predict", "--pipeline", (home_ / "no-model.toml").string(), "--input", (home_ / "in.csv").string()});
  EXPECT_EQ(no_model.exit_code, 1);
  EXPECT_NE(no_model.output.find("pass --model"), std::string::npos) << no_model.output;
  auto missing = Runnel({"predict", "--pipeline", pipeline, "--model",
                         (testing::SharedDir() / "models/needs/deep_model.onnx").string(), "--input",
                         (home_ / "in.csv").string()});
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find("no column matches 'gender'"), std::string::npos) << missing.output;
}

// `runnel model run` on the ONNX backend's PyTorch-converted Conv2d test (Debian's
// libonnx-testdata): the output file holds what PyTorch computed. The same run with
// .npy files that NumPy wrote and reads back; a model's output named "../escape" is
// written inside the output directory.
TEST_F(CliTest, ModelRunWritesTheOutputsPyTorchComputed) {
  const std::filesystem::path test = "/usr/share/libonnx-testdata/data/pytorch-converted/test_Conv2d";
  if (!std::filesystem::exists(test)) {
    if (testing::InCi()) FAIL() << test << " is missing: apt-get install libonnx-testdata";
    GTEST_SKIP() << "libonnx-testdata is missing (Debian package libonnx-testdata)";
  }
  const auto out = home_ / "out";
  auto run = Runnel({"model", "run", "--model", (test / "model.onnx").string(), "--input",
                     (test / "test_data_set_0/input_0.pb").string(), "--output-dir", out.string()});
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("3.pb: float [2, 4, 5, 4]"), std::string::npos) << run.output;
  // NumPy and ONNX's own helpers read what was written and compare it with PyTorch's.
  const std::string check = fmt::format(
      "import sys, numpy as np, onnx\n"
      "from onnx import numpy_helper as h\n"
      "want = h.to_array(onnx.load_tensor('{0}/test_data_set_0/output_0.pb'))\n"
      "got = h.to_array(onnx.load_tensor('{1}/3.pb'))\n"
      "sys.exit(0 if got.shape == want.shape and np.allclose(got, want, rtol=1e-5, atol=1e-6) else 1)\n",
      test.string(), out.string());
  testing::WriteFile(home_ / "check.py", check);
  const int missing = 77 << 8;
  const int status = std::system(("/usr/bin/python3 -c 'import numpy, onnx' 2>/dev/null || exit 77; /usr/bin/python3 " +
                                  (home_ / "check.py").string())
                                     .c_str());
  if (status == missing && !testing::InCi()) GTEST_SKIP() << "python3-numpy and python3-onnx are not installed";
  ASSERT_EQ(status, 0) << "the written output differs from PyTorch's";

  // .npy in and out, through NumPy.
  const std::string npy = fmt::format(
      "import numpy as np, onnx\n"
      "from onnx import helper, numpy_helper as h, TensorProto as T\n"
      "np.save('{1}/in.npy', h.to_array(onnx.load_tensor('{0}/test_data_set_0/input_0.pb')))\n"
      "g = helper.make_graph([helper.make_node('Identity', ['x'], ['../escape'])], 'g',\n"
      "    [helper.make_tensor_value_info('x', T.INT64, [3])], [helper.make_tensor_value_info('../escape', T.INT64, "
      "[3])])\n"
      "onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid('', 15)]), '{1}/identity.onnx')\n"
      "np.save('{1}/ints.npy', np.array([7, -8, 9], dtype=np.int64))\n",
      test.string(), home_.path().string());
  testing::WriteFile(home_ / "npy.py", npy);
  ASSERT_EQ(std::system(("/usr/bin/python3 " + (home_ / "npy.py").string()).c_str()), 0);
  auto npy_run = Runnel({"model", "run", "--model", (test / "model.onnx").string(), "--input",
                         "0=" + (home_ / "in.npy").string(), "--output-dir", (home_ / "npy").string(), "--npy"});
  ASSERT_EQ(npy_run.exit_code, 0) << npy_run.output;
  testing::WriteFile(home_ / "check_npy.py",
                     fmt::format("import sys, numpy as np, onnx\n"
                                 "from onnx import numpy_helper as h\n"
                                 "want = h.to_array(onnx.load_tensor('{0}/test_data_set_0/output_0.pb'))\n"
                                 "got = np.load('{1}/npy/3.npy')\n"
                                 "ints = np.load('{1}/escaped/.._escape.npy')\n"
                                 "sys.exit(0 if np.allclose(got, want, rtol=1e-5, atol=1e-6) and "
                                 "ints.dtype == np.int64 and list(ints) == [7, -8, 9] else 1)\n",
                                 test.string(), home_.path().string()));
  auto escaped = Runnel({"model", "run", "--model", (home_ / "identity.onnx").string(), "--input",
                         (home_ / "ints.npy").string(), "--output-dir", (home_ / "escaped").string(), "--npy"});
  ASSERT_EQ(escaped.exit_code, 0) << escaped.output;
  EXPECT_FALSE(std::filesystem::exists(home_.path().parent_path() / "escape.npy"));
  ASSERT_EQ(std::system(("/usr/bin/python3 " + (home_ / "check_npy.py").string()).c_str()), 0)
      << "NumPy does not read back what was written";

  // Inputs named wrong or missing are named in the error.
  auto wrong = Runnel({"model", "run", "--model", (test / "model.onnx").string(), "--input",
                       "image=" + (home_ / "in.npy").string(), "--output-dir", out.string()});
  EXPECT_EQ(wrong.exit_code, 1);
  EXPECT_NE(wrong.output.find("the model's input '0' is not given (--input 0=FILE; its inputs: 0)"), std::string::npos)
      << wrong.output;
}

}  // namespace
}  // namespace runnel
