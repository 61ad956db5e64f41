// API keys against the real server and PostgreSQL: scopes, client binding (and the
// quota it enforces), revocation, expiry and /v1/keys.
#include <fmt/format.h>

#include <chrono>
#include <fstream>
#include <string>
#include <thread>

#include "http_api_fixture.hpp"
#include "runnel/server/api_keys.hpp"

namespace runnel::server {
namespace {

using nlohmann::json;
using test::Eventually;
using test::HttpApiTest;
using test::kRecord;

// kRecord (client 7) with another client, or with none.
std::string RecordOf(const std::string& client) {
  std::string record = kRecord;
  const std::string field = "\"client_id\": 7, ";
  record.replace(record.find(field), field.size(), client.empty() ? "" : fmt::format("\"client_id\": {}, ", client));
  return record;
}

httplib::Headers Bearer(const std::string& key) {
  return {{"Authorization", "Bearer " + key}};
}

class HttpKeysTest : public HttpApiTest {
 protected:
  std::string Key(Scope scope, std::optional<std::string> client = std::nullopt,
                  std::optional<std::chrono::seconds> lifetime = std::nullopt) {
    KeySpec spec;
    spec.scope = scope;
    spec.client = std::move(client);
    spec.lifetime = lifetime;
    return CreateKey(*conn_, spec).secret;
  }

  // Waits until the server has read the keys created so far: one reload reads them
  // all, and the first key closes a loopback server to requests without one.
  void AwaitKeys() {
    ASSERT_TRUE(Eventually([&] { return Status("GET", "/metrics", "") == 401; })) << "the keys were never read";
  }

  int Status(const std::string& method, const std::string& path, const std::string& key, const std::string& body = "") {
    const auto headers = key.empty() ? httplib::Headers{} : Bearer(key);
    httplib::Result res = method == "GET"      ? client_->Get(path, headers)
                          : method == "DELETE" ? client_->Delete(path, headers)
                                               : client_->Post(path, headers, body, "application/json");
    return res ? res->status : -1;
  }

  int64_t Submit(const std::string& key, const std::string& record) {
    auto res = client_->Post("/v1/pipelines/needs/requests", Bearer(key), record, "application/json");
    EXPECT_EQ(res->status, 202) << res->body;
    return Body(res).value("id", int64_t{-1});
  }
};

TEST_F(HttpKeysTest, ScopesDecideWhatAKeyMayDo) {
  Start(Config());
  EXPECT_EQ(Status("GET", "/metrics", ""), 200) << "no token and no key: open on loopback";
  const auto admin = Key(Scope::kAdmin), submit = Key(Scope::kSubmit), read = Key(Scope::kRead);
  AwaitKeys();
  auto res = client_->Get("/v1/models");
  EXPECT_EQ(res->get_header_value("WWW-Authenticate"), "Bearer");
  EXPECT_EQ(Status("GET", "/healthz", ""), 200);
  EXPECT_EQ(Status("GET", "/metrics", "rnl_" + std::string(64, '0')), 401) << "an unknown key";
  EXPECT_EQ(Status("GET", "/metrics", admin.substr(0, admin.size() - 1) + "0"), 401) << "one digit off";

  const std::string requests = "/v1/pipelines/needs/requests";
  const int64_t id = Submit(submit, kRecord);
  EXPECT_EQ(Status("GET", fmt::format("{}/{}", requests, id), submit), 200);
  EXPECT_EQ(Status("GET", fmt::format("{}/{}", requests, id), read), 200);
  EXPECT_EQ(Status("POST", requests, read, kRecord), 403) << "read may not submit";
  res = client_->Get("/v1/models", Bearer(submit));
  EXPECT_EQ(res->status, 403);
  EXPECT_EQ(res->get_header_value("WWW-Authenticate"), "") << "403 asks for no other credentials";
  EXPECT_NE(Body(res)["error"].get<std::string>().find("needs 'admin'"), std::string::npos) << res->body;
  EXPECT_EQ(Status("POST", "/v1/pipelines/needs/jobs", submit, "{}"), 403);
  EXPECT_EQ(Status("POST", "/v1/models/needs/rollback", submit), 403);
  EXPECT_EQ(Status("POST", "/v1/keys", submit, R"({"scope": "admin"})"), 403) << "no escalation";
  EXPECT_EQ(Status("GET", "/v1/keys", read), 403);
  EXPECT_EQ(Status("GET", "/v1/models", admin), 200);
  EXPECT_EQ(Status("GET", "/metrics", read), 200);
  EXPECT_EQ(Status("GET", "/readyz", read), 200);
}

// The quota holds for a key bound to a client however its requests name the client,
// and the key sees only that client's requests, results and events.
TEST_F(HttpKeysTest, BoundKeyOwnsItsClientsQuotaAndRequests) {
  auto config = Config();
  config.quota_max_requests = 3;
  Start(config);
  const auto seven = Key(Scope::kSubmit, "7"), seven_reads = Key(Scope::kRead, "7"), admin = Key(Scope::kAdmin);
  AwaitKeys();
  InsertRows(2, 3);  // client 3's, inserted directly
  const int64_t other = conn_->Exec("SELECT max(id) FROM needs").Get<int64_t>(0, 0);

  const std::string requests = "/v1/pipelines/needs/requests";
  auto res = client_->Post(requests, Bearer(seven), RecordOf("8"), "application/json");
  EXPECT_EQ(res->status, 422) << res->body;
  EXPECT_NE(res->body.find("the API key's client"), std::string::npos) << res->body;
  res = client_->Post(requests, Bearer(seven), "[" + RecordOf("") + "," + RecordOf("9") + "]", "application/json");
  EXPECT_EQ(res->status, 422) << "one foreign record refuses the whole body";
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE client_id <> 3"), 0) << "nothing was inserted";

  std::vector<int64_t> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(Submit(seven, RecordOf("")));
  ids.push_back(Submit(seven, RecordOf("7")));
  ids.push_back(Submit(seven, RecordOf("")));
  WaitServed();
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE client_id = 7"), 5) << "filled in from the key";
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'throttled'"), 2) << "quota of 3 holds";

  EXPECT_EQ(Status("GET", fmt::format("{}/{}", requests, ids[0]), seven_reads), 200);
  EXPECT_EQ(Status("GET", fmt::format("{}/{}", requests, other), seven_reads), 404) << "another client's request";
  EXPECT_EQ(Status("GET", fmt::format("{}/{}", requests, other), admin), 200);
  EXPECT_EQ(Status("POST", fmt::format("{}/{}/retry", requests, other), seven), 404);
  auto listed = Body(client_->Get(requests + "?limit=1000", Bearer(seven_reads)));
  EXPECT_EQ(listed["requests"].size(), 5u) << listed.dump();
  listed = Body(client_->Get(requests + "?client_id=3", Bearer(seven_reads)));
  EXPECT_EQ(listed["requests"].size(), 0u) << "a filter cannot widen what the key sees";
  EXPECT_EQ(Body(client_->Get(requests + "?limit=1000", Bearer(admin)))["requests"].size(), 7u);
  EXPECT_EQ(Status("GET", "/v1/state/clients/7", seven_reads), 200);
  EXPECT_EQ(Status("GET", "/v1/state/clients/3", seven_reads), 403);
  EXPECT_EQ(Status("GET", "/v1/pipelines/needs/events?client=3", seven_reads), 403);
}

TEST_F(HttpKeysTest, RevokedAndExpiredKeysStopWorking) {
  HttpOptions http;
  http.access_log = (dir_ / "access.log").string();
  Start(Config(), http);
  const auto admin = Key(Scope::kAdmin), brief = Key(Scope::kRead, std::nullopt, std::chrono::seconds(2));
  AwaitKeys();
  EXPECT_EQ(Status("GET", "/metrics", brief), 200);
  ASSERT_TRUE(Eventually([&] { return Status("GET", "/metrics", brief) == 401; }, std::chrono::seconds(5)))
      << "expired after 2 s";

  // Keys over the API: the secret is in the creation's answer only.
  auto res = client_->Post("/v1/keys", Bearer(admin), R"({"scope": "submit", "client": "c1", "note": "batch job"})",
                           "application/json");
  ASSERT_EQ(res->status, 201) << res->body;
  const auto created = Body(res);
  const auto secret = created["key"].get<std::string>();
  EXPECT_EQ(created["client"], "c1");
  EXPECT_EQ(secret.substr(0, created["prefix"].get<std::string>().size()), created["prefix"].get<std::string>());
  ASSERT_TRUE(Eventually([&] { return Status("GET", "/metrics", secret) == 200; }));
  res = client_->Get("/v1/keys", Bearer(admin));
  EXPECT_EQ(res->status, 200);
  EXPECT_EQ(res->body.find(secret), std::string::npos) << "listings never show a secret";
  EXPECT_EQ(res->body.find(HashKey(secret)), std::string::npos) << "nor its hash";
  EXPECT_EQ(Body(res)["keys"].size(), 3u);
  EXPECT_EQ(Status("POST", "/v1/keys", admin, R"({"scope": "root"})"), 422);
  EXPECT_EQ(Status("POST", "/v1/keys", admin, R"({"client": "x"})"), 422) << "scope is required";
  EXPECT_EQ(Status("POST", "/v1/keys", admin, R"({"scope": "read", "expires_in": "soon"})"), 422);

  EXPECT_EQ(Status("DELETE", fmt::format("/v1/keys/{}", created["id"].get<int64_t>()), admin), 200);
  EXPECT_EQ(Status("DELETE", fmt::format("/v1/keys/{}", created["id"].get<int64_t>()), admin), 404);
  ASSERT_TRUE(Eventually([&] { return Status("GET", "/metrics", secret) == 401; }, std::chrono::seconds(3)))
      << "revoked: refused within a second or so";
  EXPECT_EQ(Status("GET", "/metrics", admin), 200);
  std::string log;
  ASSERT_TRUE(Eventually([&] {
    std::ifstream in(dir_ / "access.log");
    log.assign(std::istreambuf_iterator<char>(in), {});
    return log.find(fmt::format("\"DELETE /v1/keys/{}\" 404", created["id"].get<int64_t>())) != std::string::npos;
  })) << log;
  EXPECT_NE(log.find("\"GET /metrics\" 200 "), std::string::npos) << log;
  EXPECT_NE(log.find(" key=1\n"), std::string::npos) << "the admin key, by id: " << log;
  EXPECT_EQ(log.find("rnl_"), std::string::npos) << "never a secret";
}

}  // namespace
}  // namespace runnel::server
