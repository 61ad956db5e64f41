// `runnel demo` (what `make demo` runs): a workload end to end on the embedded
// database. `needs` (the default): the model the project ships
// (examples/needs/model/demo_model.h5, made by scripts/make_demo_model.py) and a
// product catalogue of its own. `tickets`: text in, a queue out
// (examples/tickets/build_tickets.py trains the model on this machine's package
// descriptions; docs/tickets.md). Every number it prints is measured in this run.
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
namespace {

const std::filesystem::path kExamples = RUNNEL_EXAMPLES_DIR;

struct DemoArgs {
  std::string workload = "needs";
  std::string pipeline;  // default: the workload's
  int64_t requests = 10000;
  int64_t clients = 8;
  size_t workers = 2;
};

// The embedded cluster started and a fresh database runnel_demo in it; returns the
// database's URL as its owner. Prints step 1.
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

struct Served {
  pipeline::RunSummary summary;
  double seconds = 0;  // from the first insert to the last result
};

// Serves `config` with `model` while `insert` (on `conn`) adds requests, until every
// request it reports inserting has a result. Rethrows what failed the serving.
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
      "SELECT n.id, n.client_id, n.risk_propensity::float8, coalesce(string_agg(p.description, '; ' ORDER BY "
      "p.risk), '(no product matches)') FROM needs n JOIN runnel_needs_results r ON r.key = n.id AND r.status = "
      "'done' LEFT JOIN runnel_needs_recommendations x ON x.request_key = n.id LEFT JOIN products p ON "
      "p.id_product = x.product_key GROUP BY n.id ORDER BY n.id LIMIT 3",
      postgres::Params());
  fmt::print("7. recommendations (risk propensity predicted by the model):\n");
  for (int i = 0; i < recs.rows(); ++i) {
    fmt::print("   request {} (client {}, risk {:.3f}): {}\n", recs.Get<int64_t>(i, 0), recs.Get<int64_t>(i, 1),
               recs.Get<double>(i, 2), recs.Get<std::string>(i, 3));
  }
  fmt::print("explore: psql \"{}\"  (tables needs, runnel_needs_results; view runnel_needs_recommendations)\n", url);
  return 0;
}

// The ticket data set and model into `dir` (examples/tickets/build_tickets.py).
void BuildTickets(const std::filesystem::path& dir) {
  const auto built = RunProcess({"/usr/bin/python3", (kExamples / "tickets/build_tickets.py").string(), dir.string()});
  if (built.exit_code == 77)
    throw Error(ErrorCode::InvalidInput,
                "the tickets workload trains its model with python3-sklearn and "
                "python3-onnx: scripts/install-deps.sh test installs them");
  if (built.exit_code != 0)
    throw Error(ErrorCode::Io, fmt::format("examples/tickets/build_tickets.py failed: {}", built.output));
  fmt::print("2. {}", built.output);
}

struct Ticket {
  int64_t id = 0;
  std::string subject, body, section, priority;
  bool test = false;  // in the split the model never saw
};

// tickets.csv as build_tickets.py writes it: id, subject, body, queue (the package's
// section), priority, split.
std::vector<Ticket> ReadTickets(const std::filesystem::path& csv) {
  std::ifstream in(csv);
  CsvReader reader(in, ',');
  std::vector<std::string> fields;
  reader.Next(fields);  // the header
  std::vector<Ticket> tickets;
  while (reader.Next(fields)) {
    if (fields.size() != 6)
      throw Error(ErrorCode::Io, fmt::format("{}: line {} is malformed", csv.string(), reader.line()));
    tickets.push_back({std::stoll(fields[0]), fields[1], fields[2], fields[3], fields[4], fields[5] == "test"});
  }
  return tickets;
}

// The tickets into the table, 1,000 a statement.
void InsertTickets(postgres::Connection& conn, const std::vector<Ticket>& tickets) {
  for (size_t start = 0; start < tickets.size(); start += 1000) {
    std::vector<int64_t> ids;
    std::vector<std::optional<std::string>> subjects, bodies, priorities;
    for (size_t i = start; i < std::min(tickets.size(), start + 1000); ++i) {
      ids.push_back(tickets[i].id);
      subjects.emplace_back(tickets[i].subject);
      bodies.emplace_back(tickets[i].body);
      priorities.emplace_back(tickets[i].priority);
    }
    conn.Exec(
        "INSERT INTO tickets (id, subject, body, priority) SELECT * FROM unnest($1::bigint[], $2::text[], "
        "$3::text[], $4::text[])",
        postgres::Params().AddArray(ids).AddArray(subjects).AddArray(bodies).AddArray(priorities));
  }
}

// How often the queue written back is the package's own section, over all tickets
// and over the test split; then three examples.
void PrintAgreement(postgres::Connection& conn, const std::vector<Ticket>& tickets) {
  std::map<int64_t, const Ticket*> by_id;
  for (const auto& t : tickets) by_id[t.id] = &t;
  auto rows = conn.Exec("SELECT id, queue, subject FROM tickets ORDER BY id", postgres::Params());
  size_t test = 0, test_right = 0, right = 0;
  for (int i = 0; i < rows.rows(); ++i) {
    const auto it = by_id.find(rows.Get<int64_t>(i, 0));
    if (it == by_id.end()) continue;
    const bool ok = rows.GetOptional<std::string>(i, 1) == it->second->section;
    right += ok;
    test += it->second->test;
    test_right += ok && it->second->test;
  }
  fmt::print(
      "7. queue written back = the package's section: {:.1f}% of all tickets; {:.1f}% of the tickets the "
      "model never saw ({} of them)\n",
      100.0 * static_cast<double>(right) / std::max<double>(1, rows.rows()),
      100.0 * static_cast<double>(test_right) / std::max<double>(1, static_cast<double>(test)), test);
  for (int i = 0; i < std::min(rows.rows(), 3); ++i) {
    fmt::print("   ticket {} \"{}\" -> {}\n", rows.Get<int64_t>(i, 0), rows.Get<std::string>(i, 2),
               rows.GetOptional<std::string>(i, 1).value_or("(none)"));
  }
}

int TicketsDemo(const DemoArgs& args, CliContext& ctx) {
  std::filesystem::path home;
  const std::string url = FreshDemoDatabase(ctx, &home);
  const std::filesystem::path dir = home / "demo-tickets";
  BuildTickets(dir);
  const std::string file = args.pipeline.empty() ? (dir / "pipeline.toml").string() : args.pipeline;
  auto config = pipeline::LoadPipelineConfig(file);
  if (!config.model_path) throw Error(ErrorCode::InvalidInput, fmt::format("{} names no model", file));
  auto model = pipeline::LoadFileModel(config, "");
  auto conn = postgres::Connection::Open(url);
  conn.Exec(ReadFileBytes(kExamples / "tickets/schema.sql", "the tickets schema"));
  for (const auto& line : pipeline::Migrate(conn, config)) fmt::print("3. migrate: {}\n", line);
  fmt::print("4. serving {} ({}), {} workers\n", model->info().version, model->info().producer, args.workers);
  const auto tickets = ReadTickets(dir / "tickets.csv");
  const auto served = ServeWhile(config, model, url, args.workers, conn, [&] {
    InsertTickets(conn, tickets);
    fmt::print("5. inserted {} tickets (subject, body)\n", tickets.size());
    return static_cast<int64_t>(tickets.size());
  });
  const auto& s = served.summary;
  fmt::print("6. routed {} tickets in {:.2f} s from the first insert ({:.0f} tickets/s): {} done, {} failed\n",
             s.done + s.failed, served.seconds, static_cast<double>(s.done + s.failed) / served.seconds, s.done,
             s.failed);
  PrintAgreement(conn, tickets);
  fmt::print("explore: psql \"{}\"  (tables tickets, runnel_tickets_results); the REST flow: docs/tickets.md\n", url);
  return 0;
}

}  // namespace

void AddDemoCommand(CLI::App& root, std::vector<Command>& commands) {
  auto* demo = root.add_subcommand("demo",
                                   "Serve a workload end to end on the embedded database (default: 10,000 "
                                   "needs requests)");
  auto args = std::make_shared<DemoArgs>();
  demo->add_option("--workload", args->workload, "needs (default) or tickets (text in, a queue out)")
      ->check(CLI::IsMember({"needs", "tickets"}));
  demo->add_option("--pipeline", args->pipeline, "Pipeline file (default: the workload's)");
  demo->add_option("--requests", args->requests, "needs: requests to insert (default 10000)");
  demo->add_option("--clients", args->clients,
                   "needs: clients the requests cycle over (default 8: some go over quota)");
  demo->add_option("--workers", args->workers, "Worker threads (default 2)");
  commands.push_back({demo, [args](CliContext& ctx) {
                        return args->workload == "tickets" ? TicketsDemo(*args, ctx) : NeedsDemo(*args, ctx);
                      }});
}

}  // namespace runnel::cli
