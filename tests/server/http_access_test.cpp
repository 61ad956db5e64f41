// Access against the real server and PostgreSQL: API keys (scopes, client binding and
// the quota it enforces, revocation, expiry, /v1/keys), serving as a role with only
// the granted rights, and HTTPS.
#include <fmt/format.h>

#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "http_api_fixture.hpp"
#include "runnel/core/process.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/postgres/sqlstate.hpp"
#include "runnel/server/api_keys.hpp"
#include "runnel/server/grants.hpp"

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

class HttpAccessTest : public HttpApiTest {
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

TEST_F(HttpAccessTest, ScopesDecideWhatAKeyMayDo) {
  Start(Config());
  EXPECT_EQ(Status("GET", "/metrics", ""), 200) << "no token and no key: open on loopback";
  const auto admin = Key(Scope::kAdmin), submit = Key(Scope::kSubmit), read = Key(Scope::kRead);
  AwaitKeys();
  auto res = client_->Get("/v1/models");
  EXPECT_EQ(res->get_header_value("WWW-Authenticate"), "Bearer");
  EXPECT_EQ(Status("GET", "/healthz", ""), 200);
  EXPECT_EQ(Status("GET", "/metrics", "rnl_" + std::string(64, '0')), 401) << "an unknown key";
  std::string off = admin;
  off.back() = off.back() == '0' ? '1' : '0';
  EXPECT_EQ(Status("GET", "/metrics", off), 401) << "one digit off";

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
TEST_F(HttpAccessTest, BoundKeyOwnsItsClientsQuotaAndRequests) {
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

TEST_F(HttpAccessTest, RevokedAndExpiredKeysStopWorking) {
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

// Workers and the API serve as a role that is no superuser and owns nothing, with
// exactly what `runnel grants` gives it; the role can do nothing else.
// A uuid key's rows get request ids from the sequence of runnel_needs_id: the granted
// role (the API inserting, the worker reading the view of keys) needs its rights on it
// and on the view too.
TEST_F(HttpAccessTest, ServesUuidKeysAsARoleWithOnlyTheGrantedRights) {
  conn_->Exec("ALTER TABLE needs ADD COLUMN loan uuid NOT NULL DEFAULT gen_random_uuid() UNIQUE");
  const auto config = Rekeyed(Config(), "key = \"id\"", "key = \"loan\"");
  pipeline::Migrate(*conn_, config);
  const std::string role = "keyed_" + conn_->Exec("SELECT current_database()").Get<std::string>(0, 0);
  conn_->Exec(fmt::format("CREATE ROLE {} LOGIN", role));
  ApplyGrants(*conn_, config, role);
  serve_conninfo_ = conninfo() + " user=" + role;
  Start(config);
  auto res = client_->Post("/v1/pipelines/needs/requests?wait=20000", kRecord, "application/json");
  ASSERT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(Body(res)["status"], "done") << res->body;
  EXPECT_TRUE(Body(res)["id"].is_string()) << res->body;
  InsertRows(20);  // by the owner; served by the role
  ASSERT_TRUE(
      test::Eventually([&] { return Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'done'") == 21; }));
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE risk_propensity IS NULL"), 0) << "written back";
}

TEST_F(HttpAccessTest, ServesAsARoleWithOnlyTheGrantedRights) {
  auto config = Config();
  pipeline::Migrate(*conn_, config);
  const std::string role = "serve_" + conn_->Exec("SELECT current_database()").Get<std::string>(0, 0);
  conn_->Exec(fmt::format("CREATE ROLE {} LOGIN", role));
  EXPECT_THROW(GrantStatements(
                   *conn_,
                   [&] {
                     auto other = config;
                     other.name = "unmigrated";
                     return other;
                   }(),
                   role),
               Error);
  ApplyGrants(*conn_, config, role);
  serve_conninfo_ = conninfo() + " user=" + role;
  Start(config);

  auto res = client_->Post("/v1/pipelines/needs/requests?wait=20000", kRecord, "application/json");
  ASSERT_EQ(res->status, 200) << res->body;
  const auto served = Body(res);
  EXPECT_EQ(served["status"], "done") << res->body;
  InsertRows(20);  // by the owner; served by the role
  WaitServed();
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_results WHERE status = 'done'"), 21);
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE risk_propensity IS NULL"), 0) << "written back";
  std::ifstream model(WriteModel("v2.h5", 0.7), std::ios::binary);
  res = client_->Put("/v1/models/needs", std::string(std::istreambuf_iterator<char>(model), {}),
                     "application/octet-stream");
  EXPECT_EQ(res->status, 201) << "a model push through the API: " << res->body;
  EXPECT_EQ(Body(res)["status"], "ready") << res->body;
  EXPECT_EQ(Status("POST", "/v1/pipelines/needs/jobs", "", R"({"where": "client_id = 3"})"), 201);

  // A role without the grants cannot migrate, and says what to run.
  const std::string bare = role + "_bare";
  conn_->Exec(fmt::format("CREATE ROLE {} LOGIN", bare));
  auto other = config;
  other.name = "unmigrated";
  try {
    Service(other, conninfo() + " user=" + bare, ServiceOptions{}).Start();
    ADD_FAILURE() << "a role that may not migrate an unmigrated pipeline must not start";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Config) << e.what();
    EXPECT_NE(std::string(e.what()).find("run `runnel migrate` and `runnel grants` as the table's owner"),
              std::string::npos)
        << e.what();
  }

  // A database whose owner has not made the dashboard's samples table yet (migrated by
  // an older version): the role serves all the same, without samples.
  service_->Stop();
  service_->Wait();
  service_.reset();
  conn_->Exec("DROP TABLE runnel_samples");
  Start(config);
  res = client_->Post("/v1/pipelines/needs/requests?wait=20000", kRecord, "application/json");
  EXPECT_EQ(res->status, 200) << res->body;
  EXPECT_FALSE(postgres::TableExists(*conn_, "runnel_samples")) << "the role may not create it";
  res = client_->Get("/v1/pipelines/needs/dashboard");
  EXPECT_EQ(res->status, 200) << res->body;
  EXPECT_TRUE(Body(res)["series"].empty()) << "no samples, the rest as usual";

  auto as_role = postgres::Connection::Open(serve_conninfo_);
  EXPECT_FALSE(as_role.Exec("SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Get<bool>(0, 0));
  for (const std::string sql :
       {"CREATE TABLE stolen (i int)", "DROP TABLE needs", "UPDATE needs SET age = 1", "DELETE FROM needs",
        "TRUNCATE runnel_needs_results", "COPY (SELECT 1) TO PROGRAM 'true'", "SELECT pg_read_file('postgresql.conf')",
        "CREATE ROLE sneaky SUPERUSER"}) {
    try {
      as_role.Exec(sql);
      ADD_FAILURE() << "the serving role could: " << sql;
    } catch (const postgres::DatabaseError& e) {
      EXPECT_EQ(e.sqlstate(), postgres::kInsufficientPrivilege) << sql << ": " << e.what();
    }
  }
}

// A self-signed certificate for localhost and 127.0.0.1, made by the openssl tool.
struct Certificate {
  std::string cert, key;
};

Certificate MakeCertificate(const std::filesystem::path& dir) {
  Certificate c{(dir / "server.crt").string(), (dir / "server.key").string()};
  auto made = RunProcess({"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                          "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", c.key, "-out", c.cert, "-days", "2",
                          "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"});
  EXPECT_EQ(made.exit_code, 0) << made.output;
  return c;
}

TEST_F(HttpAccessTest, HttpsOnlyWhenGivenACertificate) {
  const auto certificate = MakeCertificate(dir_.path());
  HttpOptions http;
  http.https_cert = certificate.cert;
  http.https_key = certificate.key;
  http.head_timeout_ms = 500;
  const int port = Start(Config(), http);

  httplib::SSLClient tls("127.0.0.1", port);
  tls.set_ca_cert_path(certificate.cert.c_str());
  tls.enable_server_certificate_verification(true);
  tls.set_read_timeout(30, 0);
  auto res = tls.Post("/v1/pipelines/needs/requests?wait=20000", kRecord, "application/json");
  ASSERT_TRUE(res) << "HTTPS with the certificate verified: " << httplib::to_string(res.error());
  EXPECT_EQ(res->status, 200) << res->body;
  EXPECT_EQ(Body(res)["status"], "done");
  EXPECT_EQ(tls.Get("/healthz")->status, 200) << "kept alive over TLS";

  auto plain = client_->Get("/healthz");
  EXPECT_FALSE(plain) << "plain HTTP on an HTTPS port gets no answer";
  httplib::SSLClient untrusted("127.0.0.1", port);
  untrusted.enable_server_certificate_verification(true);
  EXPECT_FALSE(untrusted.Get("/healthz")) << "a client that does not trust the certificate";

  // A client that connects and never starts the handshake is cut at the head deadline.
  const int fd = test::ConnectLoopback(port);
  ASSERT_GE(fd, 0);
  pollfd wait{fd, POLLIN, 0};
  const auto started = std::chrono::steady_clock::now();
  ASSERT_EQ(::poll(&wait, 1, 5000), 1) << "still open after 5 s";
  char byte = 0;
  EXPECT_EQ(::read(fd, &byte, 1), 0) << "closed";
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(3));
  ::close(fd);

  service_->Stop();
  service_->Wait();
  http.https_key = certificate.cert;  // not a key
  try {
    Start(Config(), http);
    ADD_FAILURE() << "a certificate given as its own key must be refused";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("--https-key '" + certificate.cert + "'"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace runnel::server
