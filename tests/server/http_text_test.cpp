// The ticket service's REST flow on Runnel's API (docs/tickets.md): submit a ticket
// (text in, queue out), get it by id, list tickets by queue, re-process a batch and
// follow the job, with the model and pipeline examples/tickets/build_tickets.py makes
// (TF-IDF + logistic regression trained by Debian's python3-sklearn).
#include "../support/python_fixtures.hpp"
#include "http_api_fixture.hpp"
#include "runnel/core/file.hpp"

namespace runnel::server::test {
namespace {

runnel::testing::PythonFixtures& Tickets() {
  static runnel::testing::PythonFixtures fixtures("../../examples/tickets/build_tickets.py");
  return fixtures;
}

class HttpTextTest : public HttpApiTest {
 protected:
  void SetUp() override {
    if (!Tickets().Ready("python3-sklearn and python3-onnx")) GTEST_SKIP();
    HttpApiTest::SetUp();
    conn_->Exec(ReadFileBytes(std::string(RUNNEL_SOURCE_DIR) + "/examples/tickets/schema.sql"));
    std::ifstream in(Tickets() / "labels.txt");
    for (std::string line; std::getline(in, line);) labels_.push_back(line);
  }
  std::vector<std::string> labels_;
};

TEST_F(HttpTextTest, SubmitGetListByQueueAndReprocess) {
  const auto config = pipeline::LoadPipelineConfig(Tickets() / "pipeline.toml");
  Start(config);

  // Submit: text in; the answer names the queue as text, with a probability per queue.
  auto submitted = client_->Post("/v1/pipelines/tickets/requests?wait=20000",
                                 R"({"subject": "Python 3 module for parsing YAML",
                                     "body": "This package provides a Python 3 interface to libyaml."})",
                                 "application/json");
  ASSERT_TRUE(submitted);
  ASSERT_EQ(submitted->status, 200) << submitted->body;
  const json ticket = json::parse(submitted->body);
  const auto id = ticket["id"].get<int64_t>();
  ASSERT_TRUE(ticket["outputs"]["queue"].is_string()) << ticket.dump();
  const std::string queue = ticket["outputs"]["queue"];
  EXPECT_NE(std::find(labels_.begin(), labels_.end(), queue), labels_.end()) << queue;
  double total = 0;
  for (const auto& label : labels_) total += ticket["outputs"]["p_" + label].get<double>();
  EXPECT_NEAR(total, 1.0, 1e-5);

  // Get it by id; the queue was written back into the table too.
  EXPECT_EQ(Body(client_->Get(fmt::format("/v1/pipelines/tickets/requests/{}", id)))["outputs"]["queue"], queue);
  EXPECT_EQ(Count(fmt::format("SELECT count(*) FROM tickets WHERE id = {} AND queue = '{}'", id, queue)), 1);

  // Many tickets, then listed by queue (string equality), page after page.
  conn_->Exec(
      "INSERT INTO tickets (subject, body) SELECT 'Perl module ' || i, 'This package provides a Perl module for "
      "parsing things, number ' || i FROM generate_series(1, 150) i",
      Params());
  WaitServed("tickets");
  // The queue most of them went to (the queues are the machine's commonest sections).
  const std::string common =
      conn_->Exec("SELECT queue FROM runnel_tickets_results GROUP BY queue ORDER BY count(*) DESC LIMIT 1", Params())
          .Get<std::string>(0, 0);
  const int64_t in_queue =
      conn_->Exec("SELECT count(*) FROM runnel_tickets_results WHERE queue = $1", Params().Add(common))
          .Get<int64_t>(0, 0);
  EXPECT_GT(in_queue, 50);
  int64_t listed = 0;
  std::string after;
  for (int page = 0; page < 10; ++page) {
    const auto list = Body(client_->Get("/v1/pipelines/tickets/requests?queue=" + common + "&limit=50" +
                                        (after.empty() ? "" : "&after=" + after)));
    for (const auto& item : list["requests"]) {
      EXPECT_EQ(item["outputs"]["queue"], common) << item.dump();
      ++listed;
    }
    if (!list.contains("next") || list["next"].is_null()) break;
    after = list["next"].is_string() ? list["next"].get<std::string>() : list["next"].dump();
  }
  EXPECT_EQ(listed, in_queue);
  EXPECT_EQ(client_->Get("/v1/pipelines/tickets/requests?queue.gte=a")->status, 422);

  // Re-process a batch (that queue's tickets) and follow the job.
  auto job = client_->Post("/v1/pipelines/tickets/jobs", json{{"where", "queue = '" + common + "'"}}.dump(),
                           "application/json");
  ASSERT_EQ(job->status, 201) << job->body;
  const auto job_id = json::parse(job->body)["id"].get<int64_t>();
  json state;
  ASSERT_TRUE(Eventually([&] {
    state = Body(client_->Get(fmt::format("/v1/jobs/{}", job_id)));
    return state["state"] == "done";
  })) << state.dump();
  EXPECT_EQ(state["total"], in_queue) << state.dump();
}

}  // namespace
}  // namespace runnel::server::test
