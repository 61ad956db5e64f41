// Several pipelines in one process (`runnel run --pipeline a --pipeline b`): one HTTP
// API, one /metrics, one worker budget; here two pipelines on one table, two models
// writing different columns.
#include "http_api_fixture.hpp"

namespace runnel::server::test {
namespace {

class HttpPipelinesTest : public HttpApiTest {
 protected:
  // The needs pipeline as "needs_b": its own registry model (seeded from b.h5, another
  // bias), writing its own column risk_b, updates captured, no recommendations.
  pipeline::PipelineConfig Second(const pipeline::PipelineConfig& first) {
    conn_->Exec("ALTER TABLE needs ADD COLUMN IF NOT EXISTS risk_b real", Params());
    WriteModel("b.h5", 7.5);
    std::ifstream in(first.file);
    std::string toml((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    auto replace = [&](const std::string& from, const std::string& to) {
      const auto at = toml.find(from);
      ASSERT_NE(at, std::string::npos) << from;
      toml.replace(at, from.size(), to);
    };
    replace("name = \"needs\"\n\n[source]", "name = \"needs_b\"\n\n[source]");
    replace("name = \"needs\"\npath = \"v1.h5\"", "name = \"needs_b\"\npath = \"b.h5\"");
    replace("outputs = [\"risk_propensity\"]", "outputs = [\"risk_b\"]");
    replace("[output]\ncolumns = [\"risk_propensity\", \"financial_status\"]", "[output]\ncolumns = [\"risk_b\"]");
    replace("[write_back]\ncolumns = [\"risk_propensity\", \"financial_status\"]",
            "[write_back]\ncolumns = [\"risk_b\"]");
    replace("mode = \"queue\"", "on = [\"insert\", \"update\"]\nmode = \"queue\"");
    toml = toml.substr(0, toml.find("[recommend]"));
    runnel::testing::WriteFile(dir_ / "second.toml", toml);
    return pipeline::LoadPipelineConfig(dir_ / "second.toml");
  }
};

TEST_F(HttpPipelinesTest, TwoPipelinesShareTheApiMetricsAndWorkerBudget) {
  const auto first = Config();
  const auto second = Second(first);
  Start({first, second}, {}, 2);  // one worker each
  EXPECT_NE(service_->Describe(1).find("needs_b@v1"), std::string::npos) << service_->Describe(1);

  // A record posted to either pipeline lands in the shared table: both serve it.
  auto a = client_->Post("/v1/pipelines/needs/requests?wait=20000", kRecord, "application/json");
  ASSERT_TRUE(a);
  ASSERT_EQ(a->status, 200) << a->body;
  const auto id = json::parse(a->body)["id"].get<int64_t>();
  json b;
  ASSERT_TRUE(Eventually([&] {
    b = Body(client_->Get(fmt::format("/v1/pipelines/needs_b/requests/{}", id)));
    return b["status"] == "done";
  })) << b.dump();
  const double risk_a = json::parse(a->body)["outputs"]["risk_propensity"].get<double>();
  const double risk_b = b["outputs"]["risk_b"].get<double>();
  EXPECT_NEAR(risk_b - risk_a, 7.0, 1e-4) << "each pipeline scored with its own model";

  InsertRows(300);
  WaitServed("needs");
  ASSERT_TRUE(Eventually([&] { return Count("SELECT count(*) FROM runnel_needs_b_results") == 301; }));
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE risk_propensity IS NULL OR risk_b IS NULL"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM needs WHERE abs(risk_b - risk_propensity - 7.0) > 1e-4"), 0);
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_needs_b_queue"), 0) << "A's write-back is no input change for B";

  // A pipeline this process does not serve.
  auto other = client_->Get("/v1/pipelines/wine/requests");
  EXPECT_EQ(other->status, 404);
  EXPECT_EQ(Body(other)["error"], "unknown pipeline 'wine' (this process serves: needs, needs_b)");

  // Readiness and quota state cover both.
  EXPECT_EQ(client_->Get("/readyz")->status, 200);
  auto state = Body(client_->Get("/v1/state/clients/7"));
  EXPECT_EQ(state["pipelines"]["needs"]["requests"], 1) << state.dump();
  EXPECT_EQ(state["pipelines"]["needs_b"]["requests"], 1) << state.dump();

  // One exposition, each family described once, a sample per pipeline.
  const auto metrics = client_->Get("/metrics")->body;
  EXPECT_NE(metrics.find("runnel_requests_total{pipeline=\"needs\",status=\"done\"} 301"), std::string::npos)
      << metrics;
  EXPECT_NE(metrics.find("runnel_requests_total{pipeline=\"needs_b\",status=\"done\"} 301"), std::string::npos);
  EXPECT_NE(metrics.find("runnel_queue_depth{pipeline=\"needs_b\"} 0"), std::string::npos);
  EXPECT_NE(metrics.find("runnel_model_rows_total{pipeline=\"needs_b\",model=\"needs_b\""), std::string::npos);
  EXPECT_NE(metrics.find("runnel_ingested_records_total{pipeline=\"needs\"} 1"), std::string::npos);
  for (const char* family : {"runnel_requests_total", "runnel_queue_depth", "runnel_model_rows_total"}) {
    const std::string help = fmt::format("# HELP {} ", family);
    EXPECT_EQ(metrics.find(help, metrics.find(help) + 1), std::string::npos) << family << " described twice";
  }
  if (std::filesystem::exists("/usr/bin/promtool")) {
    runnel::testing::WriteFile(dir_ / "metrics.txt", metrics);
    auto check = RunProcess({"/bin/sh", "-c", "/usr/bin/promtool check metrics < " + (dir_ / "metrics.txt").string()});
    EXPECT_EQ(check.exit_code, 0) << check.output;
  }

  // A model pushed for one pipeline swaps that one only.
  const auto pushed = client_->Put("/v1/models/needs_b?wait=20000", ReadFileBytes(WriteModel("b2.h5", 9.5)),
                                   "application/octet-stream");
  ASSERT_EQ(pushed->status, 201) << pushed->body;
  ASSERT_TRUE(Eventually([&] { return service_->Describe(1).find("needs_b@v2") != std::string::npos; }));
  EXPECT_NE(service_->Describe(0).find("needs@v1"), std::string::npos) << service_->Describe(0);

  service_->Stop();
  const auto summaries = service_->Wait();
  ASSERT_EQ(summaries.size(), 2u);
  EXPECT_EQ(summaries[0].done, 301u);
  EXPECT_EQ(summaries[1].done, 301u);
  service_.reset();
}

TEST_F(HttpPipelinesTest, PipelinesServedTogetherNeedNamesAndWorkersOfTheirOwn) {
  const auto first = Config();
  ServiceOptions options;
  EXPECT_THROW(Service({first, first}, conninfo(), options), Error) << "one name twice";
  options.workers = 1;
  EXPECT_THROW(Service({first, Second(first)}, conninfo(), options), Error) << "a pipeline without a worker";
  options.workers = 2;
  options.model_file = (dir_ / "v1.h5").string();
  EXPECT_THROW(Service({first, Second(first)}, conninfo(), options), Error) << "whose model would --model be?";
}

}  // namespace
}  // namespace runnel::server::test
