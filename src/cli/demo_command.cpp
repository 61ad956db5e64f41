// `runnel demo` (what `make demo` runs): a workload end to end on the embedded
// database. `needs` (the default): the model the project ships
// (examples/needs/model/demo_model.h5, made by scripts/make_demo_model.py) and a
// product catalogue of its own. `tickets` and `reviews`: text in, a label out
// (demo_text.cpp). Every number it prints is measured in this run.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <thread>

#include "commands.hpp"
#include "demo.hpp"
#include "runnel/core/csv.hpp"
#include "runnel/core/error.hpp"
#include "runnel/core/file.hpp"
#include "runnel/core/process.hpp"
#include "runnel/model/model.hpp"
#include "runnel/pipeline/load.hpp"
#include "runnel/pipeline/model_provider.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/pipeline/worker.hpp"
#include "runnel/postgres/connection.hpp"

namespace runnel::cli {

std::string FreshDemoDatabase(const CliContext& ctx, std::filesystem::path* home) {
  if (!ctx.config.db_url.empty()) fmt::print("(the demo uses its own embedded database, not RUNNEL_DB_URL)\n");
  postgres::EmbeddedCluster cluster(EmbeddedClusterOptions(ctx.config));
  auto outcome = cluster.Start();
  fmt::print("1. embedded PostgreSQL in {}: {}\n", cluster.dir().string(),
             outcome == postgres::StartOutcome::Initialized ? "created and started"
             : outcome == postgres::StartOutcome::Started   ? "started"
                                                            : "already running");
  {
    auto admin = postgres::Connection::Open(cluster.ConnectionString("postgres"));
    admin.Exec("DROP DATABASE IF EXISTS runnel_demo WITH (FORCE)");
    admin.Exec(fmt::format("CREATE DATABASE runnel_demo OWNER {}", postgres::kOwnerRole));
  }
  if (home != nullptr) *home = cluster.dir().parent_path();
  return cluster.ConnectionStringAs(postgres::kOwnerRole, "runnel_demo");
}

Served ServeWhile(const pipeline::PipelineConfig& config, std::shared_ptr<const model::Model> model,
                  const std::string& url, size_t workers, postgres::Connection& conn,
                  const std::function<int64_t()>& insert) {
  std::atomic<bool> stop{false};
  pipeline::RunOptions options;
  options.workers = workers;
  options.stop = &stop;
  options.idle_wait = std::chrono::milliseconds(20);
  options.log = [](const std::string& m) { spdlog::warn("{}", m); };
  Served served;
  std::exception_ptr failure;
  std::thread runner([&] {
    try {
      served.summary = pipeline::RunPipeline(config, pipeline::ModelProvider::Fixed(model), url, options);
    } catch (...) {
      failure = std::current_exception();
    }
  });
  const auto start = std::chrono::steady_clock::now();
  try {
    const int64_t inserted = insert();
    const std::string results = postgres::QuoteIdentifier(pipeline::NamesFor(config).results);
    while (!failure) {
      auto n = conn.Exec(fmt::format("SELECT count(*) FROM {}", results), postgres::Params()).Get<int64_t>(0, 0);
      if (n >= inserted) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  } catch (...) {
    stop.store(true);
    runner.join();
    throw;
  }
  served.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  stop.store(true);
  runner.join();
  if (failure) std::rethrow_exception(failure);
  return served;
}

void RunBuildScript(const std::string& script, const std::filesystem::path& dir, const std::string& packages,
                    const std::vector<std::string>& arguments) {
  std::vector<std::string> command = {"/usr/bin/python3", (kExamples / script).string(), dir.string()};
  command.insert(command.end(), arguments.begin(), arguments.end());
  const auto built = RunProcess(command);
  if (built.exit_code == 77) {
    throw Error(ErrorCode::InvalidInput,
                fmt::format("examples/{} needs {}: scripts/install-deps.sh test installs them", script, packages));
  }
  if (built.exit_code != 0) throw Error(ErrorCode::Io, fmt::format("examples/{} failed: {}", script, built.output));
  fmt::print("2. {}", built.output);
}

namespace {

int NeedsDemo(const DemoArgs& args, CliContext& ctx) {
  const std::string file = args.pipeline.empty() ? (kExamples / "needs/pipeline.toml").string() : args.pipeline;
  auto config = pipeline::LoadPipelineConfig(file);
  if (!config.model_path) throw Error(ErrorCode::InvalidInput, fmt::format("{} names no model", file));
  auto model = pipeline::LoadFileModel(config, "");
  const std::string url = FreshDemoDatabase(ctx, nullptr);
  auto conn = postgres::Connection::Open(url);
  conn.Exec(ReadFileBytes(kExamples / "needs/schema.sql", "the demo schema"));
  fmt::print("2. database runnel_demo: tables needs and products (10 products)\n");
  for (const auto& line : pipeline::Migrate(conn, config)) fmt::print("3. migrate: {}\n", line);
  fmt::print("4. serving with {} ({} multiply-adds per row), {} workers, quota {} requests per client\n",
             model->info().version, model->graph().MultiplyAdds(), args.workers,
             config.quota_max_requests ? std::to_string(*config.quota_max_requests) : "none");
  pipeline::LoadOptions load;
  load.rows = args.requests;
  load.clients = args.clients;
  load.rows_per_txn = 1000;
  load.seed = 20261121;
  const auto served = ServeWhile(config, model, url, args.workers, conn, [&] {
    const auto loaded = pipeline::LoadSyntheticRequests(conn, config, load);
    fmt::print("5. inserted {} requests from {} clients in {}-row transactions ({:.2f} s)\n", loaded.inserted,
               args.clients, load.rows_per_txn, loaded.seconds);
    return loaded.inserted;
  });
  const auto& s = served.summary;
  const size_t n = s.done + s.throttled + s.failed;
  fmt::print(
      "6. served {} requests in {:.2f} s from the first insert ({:.0f} requests/s): {} done, {} throttled, {} failed\n",
      n, served.seconds, static_cast<double>(n) / served.seconds, s.done, s.throttled, s.failed);
  fmt::print("   latency from insert commit to result commit: p50 {:.1f} ms, p99 {:.1f} ms\n",
             s.LatencyPercentile(0.50), s.LatencyPercentile(0.99));
  auto recs = conn.Exec(
      "SELECT n.id, n.client_id, n.risk_propensity::float8 AS risk, coalesce(string_agg(p.description, '; ' ORDER BY "
      "p.risk), '(no product matches)') AS products FROM needs n JOIN runnel_needs_results r ON r.key = n.id AND "
      "r.status = "
      "'done' LEFT JOIN runnel_needs_recommendations x ON x.request_key = n.id LEFT JOIN products p ON "
      "p.id_product = x.product_key GROUP BY n.id ORDER BY n.id LIMIT 3",
      postgres::Params());
  fmt::print("7. recommendations (risk propensity predicted by the model):\n");
  for (int i = 0; i < recs.rows(); ++i) {
    fmt::print("   request {} (client {}, risk {:.3f}): {}\n", recs.Get<int64_t>(i, "id"),
               recs.Get<int64_t>(i, "client_id"), recs.Get<double>(i, "risk"), recs.Get<std::string>(i, "products"));
  }
  fmt::print("explore: psql \"{}\"  (tables needs, runnel_needs_results; view runnel_needs_recommendations)\n", url);
  return 0;
}

}  // namespace

void AddDemoCommand(CLI::App& root, std::vector<Command>& commands) {
  auto* demo = root.add_subcommand("demo",
                                   "Serve a workload end to end on the embedded database (default: 10,000 "
                                   "needs requests)");
  auto args = std::make_shared<DemoArgs>();
  demo->add_option("--workload", args->workload,
                   "needs (default), tickets (text in, a queue out) or reviews (a transformer scores emotions)")
      ->check(CLI::IsMember({"needs", "tickets", "reviews"}));
  demo->add_option("--pipeline", args->pipeline, "Pipeline file (default: the workload's)");
  demo->add_option("--requests", args->requests, "needs: requests to insert (default 10000)");
  demo->add_option("--clients", args->clients,
                   "needs: clients the requests cycle over (default 8: some go over quota)");
  demo->add_option("--workers", args->workers, "Worker threads (default 2)");
  commands.push_back({demo, [args](CliContext& ctx) {
                        if (args->workload == "tickets") return TicketsDemo(*args, ctx);
                        if (args->workload == "reviews") return ReviewsDemo(*args, ctx);
                        return NeedsDemo(*args, ctx);
                      }});
}

}  // namespace runnel::cli
