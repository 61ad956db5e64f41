// Issue #21 over HTTP: `runnel run` takes snapshots on its [snapshots] schedule and
// prunes them to `keep`; the API lists versions, describes one and runs read-only
// SELECTs over it (JSON or CSV), refusing what leaves the sandbox, unknown versions,
// malformed bodies and client-bound keys.
#include <thread>

#include "http_api_fixture.hpp"
#include "runnel/server/api_keys.hpp"

namespace runnel::server::test {
namespace {

class SnapshotsHttpTest : public HttpApiTest {
 protected:
  pipeline::PipelineConfig SnapshotConfig() {
    auto config = Config();
    std::ifstream in(config.file);
    std::string toml((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    runnel::testing::WriteFile(config.file, toml + "\n[snapshots]\ndir = \"snaps\"\nevery = \"1s\"\nkeep = 2\n");
    return pipeline::LoadPipelineConfig(config.file);
  }

  json Query(const std::string& sql, int status = 200, const std::string& version = "latest") {
    auto res = client_->Post("/v1/pipelines/needs/snapshots/" + version + "/query", json{{"sql", sql}}.dump(),
                             "application/json");
    EXPECT_TRUE(res && res->status == status) << sql << ": " << (res ? res->body : "no response");
    return Body(res);
  }
};

TEST_F(SnapshotsHttpTest, ScheduledSnapshotsAreListedDescribedAndQueried) {
  Start(SnapshotConfig());
  InsertRows(200);
  WaitServed();
  // A snapshot taken after the last result (the schedule takes one every second).
  ASSERT_TRUE(Eventually([&] {
    auto res =
        client_->Post("/v1/pipelines/needs/snapshots/latest/query",
                      json{{"sql", "SELECT count(*) FROM results WHERE status = 'done'"}}.dump(), "application/json");
    return res && res->status == 200 && Body(res)["rows"][0][0] == 200;
  })) << "no snapshot holds the 200 results";
  // Pruned to keep = 2 while new versions appear.
  json list;
  ASSERT_TRUE(Eventually([&] {
    list = Body(client_->Get("/v1/pipelines/needs/snapshots"));
    return list["versions"].size() == 2 && list["versions"][0]["version"].get<int64_t>() >= 3;
  })) << list.dump();
  EXPECT_EQ(list["every_seconds"], 1);
  EXPECT_EQ(list["keep"], 2);
  const int64_t version = list["versions"][1]["version"].get<int64_t>();
  EXPECT_GT(list["versions"][1]["bytes"].get<int64_t>(), 0);

  auto described = Body(client_->Get(fmt::format("/v1/pipelines/needs/snapshots/{}", version)));
  EXPECT_EQ(described["version"], version);
  std::set<std::string> tables;
  for (const auto& t : described["tables"]) tables.insert(t["name"].get<std::string>());
  for (const char* name : {"results", "inputs", "quota", "models", "requests", "recommendations", "snapshot"}) {
    EXPECT_TRUE(tables.contains(name)) << name << " in " << described.dump();
  }
  EXPECT_FALSE(described["pg_snapshot"].get<std::string>().empty());

  auto answer = Query("SELECT client_id, count(*) AS n, min(latency_ms) >= 0 AS ok FROM requests GROUP BY ALL", 200,
                      std::to_string(version));
  EXPECT_EQ(answer["columns"], json({"client_id", "n", "ok"}));
  EXPECT_EQ(answer["rows"], json::parse("[[3, 200, true]]"));
  EXPECT_FALSE(answer["truncated"].get<bool>());

  auto csv =
      client_->Post("/v1/pipelines/needs/snapshots/latest/query?format=csv",
                    json{{"sql", "SELECT key, status FROM results ORDER BY key LIMIT 2"}}.dump(), "application/json");
  ASSERT_TRUE(csv && csv->status == 200);
  EXPECT_EQ(csv->get_header_value("Content-Type"), "text/csv; charset=utf-8");
  EXPECT_EQ(csv->body, "key,status\r\n1,done\r\n2,done\r\n");
  auto accepted = client_->Post("/v1/pipelines/needs/snapshots/latest/query", {{"Accept", "text/csv"}},
                                json{{"sql", "SELECT 1 AS one"}}.dump(), "application/json");
  ASSERT_TRUE(accepted);
  EXPECT_EQ(accepted->body, "one\r\n1\r\n");

  EXPECT_NE(
      Query("SELECT * FROM read_csv('/etc/passwd')", 422)["error"].get<std::string>().find("disabled by configuration"),
      std::string::npos);
  EXPECT_NE(Query("DROP TABLE results", 422)["error"].get<std::string>().find("only a SELECT"), std::string::npos);
  Query("SELECT 1", 404, "1");  // pruned
  Query("SELECT 1", 404, "v2");
  auto bad = client_->Post("/v1/pipelines/needs/snapshots/latest/query", "SELECT 1", "text/plain");
  ASSERT_TRUE(bad);
  EXPECT_EQ(bad->status, 400);
  EXPECT_EQ(client_
                ->Post("/v1/pipelines/needs/snapshots/latest/query?format=xml", json{{"sql", "SELECT 1"}}.dump(),
                       "application/json")
                ->status,
            400);
}

// A snapshot that cannot be written (its directory is a file) is logged and tried
// again; serving and the API go on.
TEST_F(SnapshotsHttpTest, AFailingSnapshotDoesNotStopServing) {
  auto config = SnapshotConfig();
  runnel::testing::WriteFile(dir_ / "snaps", "not a directory");
  Start(config);
  InsertRows(50);
  WaitServed();
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // a scheduled snapshot failed meanwhile
  InsertRows(50);
  WaitServed();
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'done'"), 100);
  auto list = client_->Get("/v1/pipelines/needs/snapshots");
  ASSERT_TRUE(list);
  EXPECT_EQ(list->status, 200) << list->body;
  EXPECT_EQ(Body(list)["versions"].size(), 0u);
  EXPECT_EQ(client_->Get("/readyz")->status, 200);
}

TEST_F(SnapshotsHttpTest, AKeyBoundToAClientCannotReadSnapshots) {
  HttpOptions http;
  http.token = "s3cret-token";
  Start(SnapshotConfig(), http);
  EXPECT_EQ(client_->Get("/v1/pipelines/needs/snapshots")->status, 401);
  const std::string body = RefusedToBoundKey("/v1/pipelines/needs/snapshots");
  EXPECT_NE(body.find("bound to client '7'"), std::string::npos) << body;
  KeySpec reader;
  reader.scope = Scope::kRead;
  const std::string unbound = CreateKey(*conn_, reader).secret;
  ASSERT_TRUE(Eventually([&] {
    auto res = client_->Get("/v1/pipelines/needs/snapshots", {{"Authorization", "Bearer " + unbound}});
    return res && res->status == 200;
  }));
}

}  // namespace
}  // namespace runnel::server::test
