// `runnel demo` (what `make demo` runs): the needs workload end to end on the embedded
// database, with the model the project ships (examples/needs/model/demo_model.h5, made
// by scripts/make_demo_model.py) and a product catalogue of its own. Every number it
// prints is measured in this run.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <thread>

#include "commands.hpp"
#include "runnel/core/error.hpp"
#include "runnel/core/file.hpp"
#include "runnel/model/model.hpp"
#include "runnel/pipeline/load.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/pipeline/worker.hpp"
#include "runnel/postgres/connection.hpp"

namespace runnel::cli {
namespace {}  // namespace

void AddDemoCommand(CLI::App& root, std::vector<Command>& commands) {
  auto* demo = root.add_subcommand("demo", "Serve 10,000 needs requests end to end on the embedded database");
  struct Args {
    std::string pipeline = std::string(RUNNEL_EXAMPLES_DIR) + "/needs/pipeline.toml";
    int64_t requests = 10000;
    int64_t clients = 8;
    size_t workers = 2;
  };
  auto args = std::make_shared<Args>();
  demo->add_option("--pipeline", args->pipeline, "Pipeline file (default: examples/needs/pipeline.toml)");
  demo->add_option("--requests", args->requests, "Requests to insert (default 10000)");
  demo->add_option("--clients", args->clients, "Clients the requests cycle over (default 8: some go over quota)");
  demo->add_option("--workers", args->workers, "Worker threads (default 2)");
  commands.push_back(
      {demo, [args](CliContext& ctx) {
         auto config = pipeline::LoadPipelineConfig(args->pipeline);
         if (!config.model_path) throw Error(ErrorCode::InvalidInput, fmt::format("{} names no model", args->pipeline));
         auto model = model::LoadModel(*config.model_path);

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
         const std::string url = cluster.ConnectionStringAs(postgres::kOwnerRole, "runnel_demo");
         auto conn = postgres::Connection::Open(url);
         const std::filesystem::path schema_file = std::filesystem::path(RUNNEL_EXAMPLES_DIR) / "needs/schema.sql";
         conn.Exec(ReadFileBytes(schema_file, "the demo schema"));
         fmt::print("2. database runnel_demo: tables needs and products (10 products)\n");
         for (const auto& line : pipeline::Migrate(conn, config)) fmt::print("3. migrate: {}\n", line);
         fmt::print("4. serving with {} ({} multiply-adds per row), {} workers, quota {} requests per client\n",
                    model->info().version, model->graph().MultiplyAdds(), args->workers,
                    config.quota_max_requests ? std::to_string(*config.quota_max_requests) : "none");

         std::atomic<bool> stop{false};
         pipeline::RunOptions options;
         options.workers = args->workers;
         options.stop = &stop;
         options.idle_wait = std::chrono::milliseconds(20);
         options.log = [](const std::string& m) { spdlog::warn("{}", m); };
         pipeline::RunSummary summary;
         std::exception_ptr failure;
         std::thread runner([&] {
           try {
             summary = pipeline::RunPipeline(config, pipeline::ModelProvider::Fixed(model), url, options);
           } catch (...) {
             failure = std::current_exception();
           }
         });
         pipeline::LoadOptions load;
         load.rows = args->requests;
         load.clients = args->clients;
         load.rows_per_txn = 1000;
         load.seed = 20261121;
         const auto start = std::chrono::steady_clock::now();
         pipeline::LoadSummary loaded;
         try {
           loaded = pipeline::LoadSyntheticRequests(conn, config, load);
           fmt::print("5. inserted {} requests from {} clients in {}-row transactions ({:.2f} s)\n", loaded.inserted,
                      args->clients, load.rows_per_txn, loaded.seconds);
           // Wait until every request has a result (or the runner failed).
           const std::string results = postgres::QuoteIdentifier(pipeline::NamesFor(config).results);
           while (!failure) {
             auto n = conn.Exec(fmt::format("SELECT count(*) FROM {}", results), postgres::Params()).Get<int64_t>(0, 0);
             if (n >= loaded.inserted) break;
             std::this_thread::sleep_for(std::chrono::milliseconds(20));
           }
         } catch (...) {
           stop.store(true);
           runner.join();
           throw;
         }
         const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
         stop.store(true);
         runner.join();
         if (failure) std::rethrow_exception(failure);
         const size_t served = summary.done + summary.throttled + summary.failed;
         fmt::print(
             "6. served {} requests in {:.2f} s from the first insert ({:.0f} requests/s): {} done, {} throttled, {} "
             "failed\n",
             served, seconds, static_cast<double>(served) / seconds, summary.done, summary.throttled, summary.failed);
         fmt::print("   latency from insert commit to result commit: p50 {:.1f} ms, p99 {:.1f} ms\n",
                    summary.LatencyPercentile(0.50), summary.LatencyPercentile(0.99));
         auto recs = conn.Exec(
             "SELECT n.id, n.client_id, n.risk_propensity::float8, coalesce(string_agg(p.description, '; ' ORDER BY "
             "p.risk), "
             "'(no product matches)') FROM needs n JOIN runnel_needs_results r ON r.key = n.id AND r.status = 'done' "
             "LEFT JOIN runnel_needs_recommendations x ON x.request_key = n.id LEFT JOIN products p ON p.id_product = "
             "x.product_key GROUP BY n.id ORDER BY n.id LIMIT 3",
             postgres::Params());
         fmt::print("7. recommendations (risk propensity predicted by the model):\n");
         for (int i = 0; i < recs.rows(); ++i) {
           fmt::print("   request {} (client {}, risk {:.3f}): {}\n", recs.Get<int64_t>(i, 0), recs.Get<int64_t>(i, 1),
                      recs.Get<double>(i, 2), recs.Get<std::string>(i, 3));
         }
         fmt::print("explore: psql \"{}\"  (tables needs, runnel_needs_results; view runnel_needs_recommendations)\n",
                    url);
         return 0;
       }});
}

}  // namespace runnel::cli
