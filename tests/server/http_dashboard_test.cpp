// Issue #19: the dashboard against the real server and PostgreSQL. Its JSON: per-second
// samples of what the workers served (through runnel_samples), the processes, the
// model's versions, failures by reason; its page and files served without
// authentication under a policy that lets only them run; its data only with a key.
// Then headless Chromium (Debian's chromium) loads the page: no console message, every
// chart has points, the failed request and a newly pushed version appear, a search
// link finds its request. Screenshots go to $RUNNEL_SCREENSHOTS_DIR when set
// (`make screenshots`: docs/images).
#include <filesystem>
#include <regex>

#include "../support/headless_chromium.hpp"
#include "../support/shared_paths.hpp"
#include "http_api_fixture.hpp"
#include "runnel/server/api_keys.hpp"
#include "runnel/server/samples.hpp"
#include "runnel/snapshot/snapshot.hpp"

namespace runnel::server::test {
namespace {

class DashboardTest : public HttpApiTest {
 protected:
  // Serves one failed and `rows` + 2 served requests; returns the failed one's id.
  int64_t ServeSomeAndOnePoison(int rows) {
    const std::string poison =
        R"({"client_id":15,"age":40,"gender":1,"family_members":2,"financial_education":3e38,"income":50,)"
        R"("wealth":1e38,"income_investment":1,"accumulation_investment":0})";
    auto res = client_->Post("/v1/pipelines/needs/requests?wait=10000",
                             fmt::format("[{}, {}, {}]", kRecord, poison, kRecord), "application/json");
    EXPECT_TRUE(res && res->status == 200) << (res ? res->body : "no response");
    InsertRows(rows);
    WaitServed();
    return Body(res)["requests"][1]["id"].get<int64_t>();
  }

  json Dashboard(const httplib::Headers& headers = {}) {
    auto res = client_->Get("/v1/pipelines/needs/dashboard", headers);
    EXPECT_TRUE(res && res->status == 200) << (res ? res->body : "no response");
    return Body(res);
  }

  static int64_t Served(const json& d) {
    int64_t n = 0;
    for (const auto& s : d["series"]) n += s["done"].get<int64_t>();
    return n;
  }
};

TEST_F(DashboardTest, JsonShowsWhatWasServedByWhomWithWhichModelAndWhatFailed) {
  Start(Config());
  const int64_t poisoned = ServeSomeAndOnePoison(300);
  json d;
  ASSERT_TRUE(Eventually([&] { return Served(d = Dashboard()) == 302; }))
      << "the samples add up to the requests served: " << d.dump();
  int64_t failed = 0;
  for (const auto& s : d["series"]) {
    failed += s["failed"].get<int64_t>();
    if (s["done"].get<int64_t>() > 0) {
      EXPECT_GT(s["p50"].get<double>(), 0.0) << s.dump();
      EXPECT_GE(s["p99"].get<double>(), s["p50"].get<double>()) << s.dump();
    }
  }
  EXPECT_EQ(failed, 1);
  ASSERT_EQ(d["stages"].size(), pipeline::kStageCount);
  EXPECT_EQ(d["stages"][0]["stage"], "claim");
  EXPECT_GT(d["stages"][0]["seconds_per_batch"].get<double>(), 0.0);
  EXPECT_EQ(d["queue"]["depth"], 0);
  ASSERT_TRUE(Eventually([&] { return (d = Dashboard())["processes"].size() == 1; })) << d.dump();
  EXPECT_EQ(d["processes"][0]["state"], "serving");
  EXPECT_EQ(d["processes"][0]["model"], "needs");
  ASSERT_EQ(d["versions"].size(), 1u);
  EXPECT_EQ(d["versions"][0]["status"], "ready");
  ASSERT_EQ(d["failures"].size(), 1u);
  EXPECT_EQ(d["failures"][0]["count"], 1);
  EXPECT_EQ(d["failures"][0]["sqlstate"], "22003") << d["failures"].dump();
  ASSERT_TRUE(d["clients"].is_object()) << "the needs pipeline has a [quota]";
  ASSERT_GE(d["clients"]["top"].size(), 2u) << d["clients"].dump();
  EXPECT_EQ(d["clients"]["top"][0]["client"], "3") << "300 requests, the most";
  EXPECT_EQ(d["clients"]["top"][0]["requests"], 300);
  EXPECT_EQ(d["clients"]["top"][1]["client"], "7");
  EXPECT_EQ(d["clients"]["top"][0]["throttled"].get<int64_t>(),
            std::max<int64_t>(0, 300 - d["clients"]["max_requests"].get<int64_t>()));
  ASSERT_EQ(d["distributions"].size(), 2u) << "risk_propensity and financial_status";
  EXPECT_EQ(d["distributions"][0]["output"], "risk_propensity");
  EXPECT_EQ(d["distributions"][0]["latest"]["total"], 302) << "the served requests, up to 1,000";
  EXPECT_EQ(d["distributions"][0]["previous"]["total"], 0);
  int64_t binned = 0;
  for (const auto& c : d["distributions"][0]["latest"]["counts"]) binned += c.get<int64_t>();
  EXPECT_EQ(binned + d["distributions"][0]["latest"]["missing"].get<int64_t>(), 302);

  // The samples are per process and second in the database; a second process's add up.
  Sample other;
  other.at = d["series"].back()["t"].get<int64_t>();
  other.done = 1000;
  other.batches = 1;
  WriteSample(*conn_, "needs", "elsewhere:1", other);
  EXPECT_EQ(Served(Dashboard()), 1302);
  EXPECT_EQ(client_->Get("/v1/pipelines/needs/dashboard?window=5")->status, 422);

  auto overview = Body(client_->Get("/v1/dashboard"));
  ASSERT_EQ(overview["pipelines"].size(), 1u) << overview.dump();
  EXPECT_EQ(overview["pipelines"][0]["name"], "needs");
  ASSERT_EQ(d["latest_failed"].size(), 1u) << d.dump();
  EXPECT_EQ(d["latest_failed"][0]["id"], poisoned);
  EXPECT_NE(d["latest_failed"][0]["error"].get<std::string>().find("financial_status"), std::string::npos);
  // Read through the index of failed requests, not a scan of the results.
  auto plan = conn_->Exec(
      "EXPLAIN SELECT key, error FROM runnel_needs_results WHERE status = 'failed' ORDER BY key DESC LIMIT 20");
  std::string text;
  for (int i = 0; i < plan.rows(); ++i) text += plan.Get<std::string>(i, 0) + "\n";
  EXPECT_NE(text.find("runnel_needs_results_failed"), std::string::npos) << text;
}

TEST_F(DashboardTest, ThePageIsOpenItsDataNeedsAKey) {
  HttpOptions http;
  http.token = "s3cret-token";
  Start(Config(), http);
  auto page = client_->Get("/");
  ASSERT_TRUE(page);
  EXPECT_EQ(page->status, 200);
  EXPECT_EQ(page->get_header_value("Content-Type"), "text/html; charset=utf-8");
  EXPECT_NE(page->body.find("/dashboard/dashboard.js"), std::string::npos);
  const std::string policy = page->get_header_value("Content-Security-Policy");
  EXPECT_NE(policy.find("script-src 'self'"), std::string::npos) << policy;
  EXPECT_EQ(policy.find("unsafe-inline"), std::string::npos) << policy;
  EXPECT_EQ(client_->Get("/dashboard/dashboard.js")->status, 200);
  EXPECT_EQ(client_->Get("/dashboard/dashboard.css")->get_header_value("Content-Type"), "text/css; charset=utf-8");
  EXPECT_EQ(client_->Get("/dashboard/secrets.txt")->status, 404);
  EXPECT_EQ(client_->Get("/dashboard/..%2fservice.cpp")->status, 404);
  EXPECT_EQ(client_->Get("/v1/pipelines/needs/dashboard")->status, 401);
  EXPECT_EQ(client_->Get("/v1/dashboard")->status, 401);
  EXPECT_EQ(client_->Get("/v1/dashboard", {{"Authorization", "Bearer s3cret-token"}})->status, 200);
  const std::string body = RefusedToBoundKey("/v1/pipelines/needs/dashboard");
  EXPECT_NE(body.find("bound to client '7'"), std::string::npos) << body;
}

// ---- in the browser ----

struct Page {
  std::string dom;     // after the scripts ran
  std::string output;  // everything Chromium printed
};

class DashboardBrowserTest : public DashboardTest {
 protected:
  void SetUp() override {
    DashboardTest::SetUp();
    if (!runnel::testing::HeadlessChromium::Available()) {
      if (runnel::testing::InCi()) FAIL() << "CI=true but " << kChromium << " is missing (Debian's chromium)";
      GTEST_SKIP() << kChromium << " not found: install Debian's chromium to run the browser tests";
    }
  }

  // The page at `fragment`, as Chromium leaves it after `budget_ms` of virtual time
  // (its fetches complete within it); with a screenshot `shot` when not empty.
  Page Load(const std::string& fragment, const std::string& shot = "", int budget_ms = 3000) {
    const std::string url = fmt::format("http://127.0.0.1:{}/{}", port_, fragment);
    std::vector<std::string> argv = {kChromium,
                                     "--headless=new",
                                     "--no-sandbox",
                                     "--disable-gpu",
                                     "--no-first-run",
                                     "--hide-scrollbars",
                                     "--enable-logging=stderr",
                                     "--v=0",
                                     "--user-data-dir=" + (dir_ / "chromium").string(),
                                     fmt::format("--virtual-time-budget={}", budget_ms),
                                     "--window-size=1280,1400"};
    Page page;
    if (!shot.empty()) {
      auto shots = dir_ / "screenshots";
      if (const char* env = std::getenv("RUNNEL_SCREENSHOTS_DIR"); env != nullptr && *env != '\0') shots = env;
      std::filesystem::create_directories(shots);
      auto with_shot = argv;
      with_shot.push_back("--screenshot=" + (shots / shot).string());
      with_shot.push_back(url);
      const auto r = RunProcess(with_shot);
      EXPECT_EQ(r.exit_code, 0) << r.output;
      EXPECT_TRUE(std::filesystem::exists(shots / shot)) << r.output;
    }
    argv.push_back("--dump-dom");
    argv.push_back(url);
    const auto r = RunProcess(argv);
    EXPECT_EQ(r.exit_code, 0) << r.output;
    page.output = r.output;
    const auto html = r.output.find("<html");
    page.dom = html == std::string::npos ? "" : r.output.substr(html);
    return page;
  }

  // Console messages: the page logs none, so any is an error (a script error, a
  // failed load, a refused policy).
  static std::vector<std::string> ConsoleLines(const Page& page) {
    std::vector<std::string> lines;
    std::istringstream in(page.output);
    for (std::string line; std::getline(in, line);) {
      if (line.find("CONSOLE") != std::string::npos || line.find("Content Security Policy") != std::string::npos)
        lines.push_back(line);
    }
    return lines;
  }

  static std::vector<int> ChartPoints(const Page& page) {
    std::vector<int> points;
    const std::regex re("data-points=\"([0-9]+)\"");
    for (auto it = std::sregex_iterator(page.dom.begin(), page.dom.end(), re); it != std::sregex_iterator(); ++it)
      points.push_back(std::stoi((*it)[1]));
    return points;
  }

  static constexpr const char* kChromium = runnel::testing::HeadlessChromium::kBinary;
};

TEST_F(DashboardBrowserTest, ThePageDrawsServingSwapsFailuresAndFindsARequest) {
  const auto config = Config();
  Start(config);
  const int64_t poisoned = ServeSomeAndOnePoison(300);
  ASSERT_TRUE(Eventually([&] { return Served(Dashboard()) == 302; }));
  snapshot::SnapshotStore(config.snapshots.dir, "needs").Create(*conn_, config);

  Page page = Load("#/p/needs", "dashboard-pipeline.png");
  EXPECT_EQ(ConsoleLines(page), std::vector<std::string>{}) << page.output;
  for (const char* section : {"Throughput", "Latency", "Queue and stages", "Processes", "Model versions", "Clients",
                              "What the model says", "Failures", "Search", "From the newest snapshot"}) {
    EXPECT_NE(page.dom.find(fmt::format("data-section=\"{}\"", section)), std::string::npos) << section;
  }
  for (const char* analysis : {"clients_per_hour", "outputs_by_version", "drift", "latency_by_version", "stage_ms"}) {
    EXPECT_NE(page.dom.find(fmt::format("data-analysis=\"{}\"", analysis)), std::string::npos) << analysis;
  }
  EXPECT_NE(page.dom.find("Snapshot v1, taken"), std::string::npos) << page.dom;
  EXPECT_NE(page.dom.find("data-drift=\""), std::string::npos) << "a drift chart per version and output";
  const auto points = ChartPoints(page);
  ASSERT_EQ(points.size(), 6u) << "throughput, latency, the needs pipeline's two outputs and their drift";
  for (const int n : points) EXPECT_GT(n, 0) << page.dom;
  EXPECT_NE(page.dom.find(fmt::format("data-failed=\"{}\"", poisoned)), std::string::npos) << page.dom;
  EXPECT_NE(page.dom.find("data-version=\"1\""), std::string::npos);
  EXPECT_NE(page.dom.find("state-serving"), std::string::npos) << "the serving process is listed";
  EXPECT_NE(page.dom.find("data-client=\"3\""), std::string::npos) << "the top client is listed";

  // An admin's click on the failed request's Retry re-queues it: a job serves it again.
  {
    runnel::testing::HeadlessChromium browser(fmt::format("http://127.0.0.1:{}/#/p/needs", port_), dir_ / "cdp");
    const auto clicked = browser.Evaluate(fmt::format(R"JS((async () => {{
        for (let i = 0; i < 400; ++i) {{
          const cell = document.querySelector('[data-failed="{0}"]');
          const button = cell && cell.closest("tr").querySelector("button");
          if (button) {{
            button.click();
            for (let j = 0; j < 400; ++j) {{
              const outcome = document.querySelector('[data-retried="{0}"]');
              if (outcome) return outcome.textContent;
              await new Promise((r) => setTimeout(r, 25));
            }}
            return "no outcome shown";
          }}
          await new Promise((r) => setTimeout(r, 25));
        }}
        return "no retry button";
      }})())JS",
                                                      poisoned));
    EXPECT_TRUE(clicked.is_string() && clicked.get<std::string>().starts_with("re-queued (job ")) << clicked.dump();
  }
  EXPECT_EQ(Count("SELECT count(*) FROM runnel_jobs WHERE pipeline = 'needs'"), 1);
  ASSERT_TRUE(Eventually([&] {
    return Count(fmt::format("SELECT attempts FROM runnel_needs_results WHERE key = {}", poisoned)) == 2;
  })) << "served again (and failed again: its data has not changed)";

  // A pushed version is on the timeline at once: the page reads the registry on each
  // refresh (every 2 s), and a load right after the push shows it.
  {
    auto conn = Connect();
    registry::Push(conn, {"needs", ReadFileBytes(WriteModel("v2.h5", 0.25f)), "retrained", std::nullopt});
  }
  page = Load("#/p/needs", "", 1500);
  EXPECT_NE(page.dom.find("data-version=\"2\""), std::string::npos) << page.dom;

  // A search link finds its request.
  page = Load(fmt::format("#/p/needs?key={}", poisoned), "dashboard-search.png");
  EXPECT_NE(page.dom.find(fmt::format("data-request=\"{}\"", poisoned)), std::string::npos) << page.dom;
  EXPECT_NE(page.dom.find("\"status\": \"failed\""), std::string::npos) << "its status and error are shown";
  page = Load("#/p/needs?status=failed");
  EXPECT_NE(page.dom.find("status-failed"), std::string::npos) << page.dom;

  page = Load("#/", "dashboard-overview.png");
  EXPECT_EQ(ConsoleLines(page), std::vector<std::string>{}) << page.output;
  EXPECT_NE(page.dom.find("href=\"#/p/needs\""), std::string::npos) << page.dom;
}

// A phone's width (390 CSS pixels) scrolls nothing sideways, and the page follows the
// system's dark or light preference.
TEST_F(DashboardBrowserTest, ItFitsAPhoneAndFollowsTheDarkPreference) {
  Start(Config());
  ServeSomeAndOnePoison(20);
  runnel::testing::HeadlessChromium browser(fmt::format("http://127.0.0.1:{}/#/p/needs", port_), dir_ / "cdp");
  browser.Command("Emulation.setDeviceMetricsOverride",
                  {{"width", 390}, {"height", 844}, {"deviceScaleFactor", 2}, {"mobile", true}});
  auto prefer = [&](const char* scheme) {
    browser.Command("Emulation.setEmulatedMedia",
                    {{"features", json::array({{{"name", "prefers-color-scheme"}, {"value", scheme}}})}});
    return browser.Evaluate("getComputedStyle(document.body).backgroundColor").get<std::string>();
  };
  const auto drawn = browser.Evaluate(R"JS((async () => {
      for (let i = 0; i < 400; ++i) {
        if (document.querySelector('[data-section="Failures"] [data-failed]')) return true;
        await new Promise((r) => setTimeout(r, 25));
      }
      return false;
    })())JS");
  ASSERT_EQ(drawn, true) << "the pipeline page was drawn";
  EXPECT_NE(browser.Evaluate("document.querySelector('[data-section=\"From the newest snapshot\"]').textContent")
                .get<std::string>()
                .find("No snapshot yet"),
            std::string::npos);
  EXPECT_LE(browser.Evaluate("document.documentElement.scrollWidth - window.innerWidth").get<int>(), 0)
      << "nothing wider than the phone";
  EXPECT_EQ(prefer("dark"), "rgb(21, 23, 27)");
  EXPECT_EQ(prefer("light"), "rgb(247, 247, 245)");
}

TEST_F(DashboardBrowserTest, WithATokenThePageAsksForItAndKeepsItForTheTab) {
  HttpOptions http;
  http.token = "s3cret-token";
  Start(Config(), http);
  Page page = Load("#/p/needs");
  EXPECT_NE(page.dom.find("data-section=\"Sign in\""), std::string::npos) << page.dom;
  page = Load("#key=s3cret-token&page=/p/needs");
  EXPECT_NE(page.dom.find("data-section=\"Throughput\""), std::string::npos) << page.dom;
  EXPECT_EQ(page.dom.find("s3cret-token"), std::string::npos) << "the key leaves the address and the page";
}

}  // namespace
}  // namespace runnel::server::test
