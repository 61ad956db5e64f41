// `runnel migrate | unmigrate | load | status | retry | rescore`: the real-time pipeline against PostgreSQL
// (`run` is in run_command.cpp).
#include <signal.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iostream>
#include <limits>
#include <map>
#include <memory>
#include <thread>
#include <tuple>

#include "commands.hpp"
#include "runnel/core/csv.hpp"
#include "runnel/core/error.hpp"
#include "runnel/core/file.hpp"
#include "runnel/nats/jetstream.hpp"
#include "runnel/pipeline/load.hpp"
#include "runnel/pipeline/quota.hpp"
#include "runnel/pipeline/replay.hpp"
#include "runnel/pipeline/request_status.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/pipeline/worker.hpp"
#include "runnel/postgres/connection.hpp"
#include "runnel/registry/registry.hpp"
#include "runnel/server/grants.hpp"
#include "runnel/server/jetstream_direct.hpp"
#include "runnel/server/jetstream_ingest.hpp"
#include "runnel/server/samples.hpp"
#include "runnel/server/service.hpp"

namespace runnel::cli {

std::atomic<bool> g_stop{false};

namespace {

void OnSignal(int) {
  g_stop.store(true);
}

// migrate --dry-run: the statements that would change the schema, from a migration
// run in a transaction that is rolled back (reads and locks are left out).
int PrintMigrationSql(postgres::Connection& conn, const pipeline::PipelineConfig& config) {
  std::vector<std::string> statements;
  struct StopObserving {  // also when Migrate throws: the observer refers to `statements`
    postgres::Connection& conn;
    ~StopObserving() { conn.ObserveStatements({}); }
  } stop{conn};
  conn.ObserveStatements([&](std::string_view sql) {
    static constexpr std::string_view kChanging[] = {"CREATE ", "ALTER ", "DROP ", "INSERT ", "UPDATE ", "COMMENT "};
    for (auto prefix : kChanging) {
      if (sql.starts_with(prefix)) statements.emplace_back(sql);
    }
  });
  const auto changes = pipeline::Migrate(conn, config, pipeline::MigrateMode::kDryRun);
  for (const auto& sql : statements) fmt::print("{};\n", sql);
  fmt::print("-- dry run: {} change(s) described, nothing applied{}\n", changes.size(),
             changes.empty() ? " (the pipeline is up to date)" : "");
  return 0;
}

// rescore: prints a job's progress until it ends; 0 when it is done. Ctrl-C stops
// watching only (the job goes on). Says once when nothing moves for 10 s.
int FollowJob(postgres::Connection& conn, int64_t id) {
  auto last_change = std::chrono::steady_clock::now();
  std::tuple<int64_t, int64_t> last{-1, -1};
  bool hinted = false;
  for (;;) {
    const auto job = pipeline::GetJob(conn, id);
    if (!job) throw Error(ErrorCode::NotFound, fmt::format("job {} disappeared", id));
    const auto now = std::chrono::steady_clock::now();
    if (std::make_tuple(job->enqueued, job->served) != last || job->state != "running") {
      last = {job->enqueued, job->served};
      last_change = now;
      fmt::print("job {}: {}, {} of {} served ({} handed to workers)\n", id, job->state, job->served, job->total,
                 job->enqueued);
    } else if (!hinted && now - last_change > std::chrono::seconds(10)) {
      hinted = true;
      fmt::print("job {}: no progress for 10 s: is `runnel run` serving this pipeline?\n", id);
    }
    if (job->state != "running") {
      if (job->error) fmt::print("job {}: {}\n", id, *job->error);
      return job->state == "done" ? 0 : 1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

// status without --pipeline: one line per pipeline in the database, then the processes
// serving it (those that reported their models within 10 s) and the versions they serve.
int PrintPipelines(postgres::Connection& conn) {
  const auto pipelines = pipeline::ListPipelines(conn);
  if (pipelines.empty()) fmt::print("no pipeline is installed in this database (`runnel migrate` installs one)\n");
  using pipeline::RequestStatus;
  for (const auto& p : pipelines) {
    auto count = [&](RequestStatus s) { return p.results.contains(s) ? p.results.at(s) : 0; };
    fmt::print(
        "pipeline {} (schema {}): queue {} (oldest waiting {:.1f} s); done {}, throttled {}, failed {}, gone {}\n",
        p.name, p.schema_version, p.queue.requests, p.queue.oldest_seconds, count(RequestStatus::kDone),
        count(RequestStatus::kThrottled), count(RequestStatus::kFailed), count(RequestStatus::kGone));
    std::map<std::string, std::vector<std::string>> by_process;
    for (const auto& s : registry::ReadPipelineState(conn, p.name, 10.0)) {
      by_process[s.process].push_back(
          fmt::format("{}@v{}{}", s.name, s.version, s.data_type ? " (" + *s.data_type + ")" : std::string()));
    }
    if (by_process.empty()) fmt::print("  no process is serving it\n");
    for (const auto& [process, models] : by_process) {
      fmt::print("  served by {}: {}\n", process, fmt::join(models, ", "));
    }
  }
  return 0;
}

// Lists what will be removed and asks for the pipeline's name on standard input.
bool ConfirmByName(const std::string& name, const std::vector<std::string>& plan) {
  fmt::print("this removes, for pipeline {} (requests still queued are lost):\n", name);
  for (const auto& line : plan) fmt::print("  {}\n", line);
  fmt::print("type the pipeline's name ({}) to go on: ", name);
  std::fflush(stdout);
  std::string answer;
  return std::getline(std::cin, answer) && answer == name;
}

// One line: the quota, how many clients reached it in this window, when it resets.
void PrintQuotaSummary(postgres::Connection& conn, const pipeline::PipelineConfig& config) {
  const auto summary = pipeline::quota::Summarize(conn, config);
  fmt::print("quota: {}; {} of {} client(s) counted in this window at the limit{}\n", pipeline::quota::Describe(config),
             summary.at_limit, summary.clients,
             summary.resets_at.empty() ? "" : fmt::format(" (it resets at {})", summary.resets_at));
}

// One line on the [jetstream] consumer; NATS away is said, not fatal (the rest of the
// status is the database's). In mode "direct", a line on the records scored.
void PrintJetStreamStatus(postgres::Connection& conn, const pipeline::PipelineConfig& config) {
  if (config.jetstream->mode == pipeline::JetStreamMode::kDirect) {
    const auto c = server::ReadDirectCounts(conn, config);
    fmt::print("jetstream records scored without rows: done {}, throttled {}, failed {} (in {})\n", c.done, c.throttled,
               c.failed, pipeline::NamesFor(config).jetstream);
  }
  try {
    fmt::print("jetstream: {}\n", DescribeConsumer(*config.jetstream));
  } catch (const Error& e) {
    fmt::print("jetstream: {}\n", e.what());
  }
}

}  // namespace

// Ctrl-C and SIGTERM set g_stop (cleared here): long commands drain and return.
void InstallStopHandler() {
  g_stop.store(false);
  struct sigaction action {};
  action.sa_handler = OnSignal;
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

Counts ReadCounts(postgres::Connection& conn, const pipeline::PipelineConfig& config) {
  const auto names = pipeline::NamesFor(config);
  Counts c;
  const auto queue = pipeline::ReadQueueState(conn, config);
  c.queued = queue.requests;
  c.oldest_seconds = queue.oldest_seconds;
  for (const auto& [status, count] : pipeline::CountResults(conn, names)) {
    switch (status) {
      case pipeline::RequestStatus::kDone: c.done = count; break;
      case pipeline::RequestStatus::kThrottled: c.throttled = count; break;
      case pipeline::RequestStatus::kFailed: c.failed = count; break;
      case pipeline::RequestStatus::kGone: c.gone = count; break;
      case pipeline::RequestStatus::kSuperseded: c.superseded = count; break;
      case pipeline::RequestStatus::kQueued: c.requeued = count; break;
    }
  }
  return c;
}

namespace {

// The options of `runnel load`.
struct LoadArgs {
  std::string pipeline, db, input, delimiter = ",", columns, data_type, subject;
  bool loop = false, reverse = false, jetstream = false;
  int64_t rows = 1000, clients = 100, rows_per_txn = 1000, per_message = 1;
  double rate = 0;
  uint64_t seed = 0;
};

// --input and the options that go with it.
pipeline::CsvLoadOptions CsvOptions(const LoadArgs& args) {
  pipeline::CsvLoadOptions options;
  options.input = args.input;
  options.delimiter = ParseDelimiter(args.delimiter);
  if (!args.columns.empty()) options.columns = SplitAt(args.columns, ',');
  options.data_type = args.data_type;
  options.rate = args.rate;
  options.loop = args.loop;
  options.reverse = args.reverse;
  options.rows_per_txn = args.rows_per_txn;
  return options;
}

// What `runnel load --jetstream` publishes: records [first, first + n) of its source.
using RecordBatches = std::function<std::vector<std::string>(int64_t first, int64_t n)>;

// Where `runnel load --jetstream` takes its records, how many (INT64_MAX: until
// Ctrl-C), and "from ..." for its first line.
struct RecordSource {
  RecordBatches batches;
  int64_t total = 0;
  std::string from;
};

// --input: the file's rows, read against the table's columns (the database is asked for
// them), each field typed by its column; --loop repeats them.
RecordSource CsvSource(CliContext& ctx, const pipeline::PipelineConfig& config, const LoadArgs& args) {
  const pipeline::CsvLoadOptions options = CsvOptions(args);
  auto conn = postgres::Connection::Open(DatabaseUrl(ctx, args.db));
  auto types = std::make_shared<const std::map<std::string, std::string>>(pipeline::SourceColumns(conn, config));
  std::vector<std::string> ignored;
  auto csv = std::make_shared<const pipeline::CsvRows>(pipeline::ReadCsvRows(config, *types, options, &ignored));
  if (!ignored.empty()) fmt::print(stderr, "ignored columns not in {}: {}\n", config.table, fmt::join(ignored, ", "));
  if (csv->rows.empty()) throw Error(ErrorCode::InvalidInput, fmt::format("{}: no rows", args.input));
  RecordSource source;
  source.total = args.loop ? std::numeric_limits<int64_t>::max() : static_cast<int64_t>(csv->rows.size());
  source.from = " from " + args.input;
  source.batches = [csv, types, &config, data_type = args.data_type](int64_t first, int64_t n) {
    std::vector<std::string> out;
    for (int64_t i = first; i < first + n; ++i)
      out.push_back(
          pipeline::CsvRecordJson(*csv, static_cast<size_t>(i) % csv->rows.size(), *types, config, data_type));
    return out;
  };
  return source;
}

// --rows synthetic records, the demo's distributions.
RecordSource SyntheticSource(const pipeline::PipelineConfig& config, const LoadArgs& args) {
  const uint64_t seed =
      args.seed != 0 ? args.seed : static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  RecordSource source;
  source.total = args.rows;
  source.from = fmt::format(" (seed {})", seed);
  source.batches = [&config, clients = args.clients, seed](int64_t first, int64_t n) {
    return pipeline::SyntheticRecords(config, first, n, clients, seed + static_cast<uint64_t>(first));
  };
  return source;
}

// `records` as messages to `subject`: one each, or (per_message > 1) NDJSON of up to
// per_message.
std::vector<nats::OutgoingMessage> AsMessages(const std::string& subject, std::vector<std::string> records,
                                              int64_t per_message) {
  std::vector<nats::OutgoingMessage> messages;
  int64_t in_message = 0;
  for (auto& record : records) {
    if (per_message == 1) {
      messages.push_back({subject, std::move(record), {}});
      continue;
    }
    if (in_message++ % per_message == 0) messages.push_back({subject, "", {{"Content-Type", "application/x-ndjson"}}});
    messages.back().data += record + "\n";
  }
  return messages;
}

// `runnel load --jetstream`: requests — synthetic, or a CSV file's rows — published at
// --rate in chunks of up to 1,000 (a hundredth of a second's worth at a rate), each
// chunk stored by the stream before the next; --per-message N > 1 puts N records in
// each message, as NDJSON.
int PublishRequests(CliContext& ctx, const pipeline::PipelineConfig& config, const LoadArgs& args) {
  if (!config.jetstream) {
    throw Error(ErrorCode::InvalidInput,
                fmt::format("{} has no [jetstream] section: nowhere to publish", config.file.string()));
  }
  const std::string subject = args.subject.empty() ? config.jetstream->subject : args.subject;
  if (subject.find_first_of("*>") != std::string::npos) {
    throw Error(ErrorCode::InvalidInput,
                fmt::format("the subject '{}' has a wildcard: give --subject to publish to", subject));
  }
  const RecordSource source = args.input.empty() ? SyntheticSource(config, args) : CsvSource(ctx, config, args);
  nats::JetStream js(server::ConnectOptionsFor(*config.jetstream, "runnel load"));
  InstallStopHandler();
  fmt::print(stderr, "publishing {} requests to {}{}\n",
             source.total == std::numeric_limits<int64_t>::max() ? std::string("looped") : std::to_string(source.total),
             subject, source.from);
  const auto start = std::chrono::steady_clock::now();
  const int64_t chunk = std::max(
      args.per_message, args.rate > 0 ? std::clamp<int64_t>(static_cast<int64_t>(args.rate / 100), 1, 1000) : 1000);
  int64_t published = 0;
  while (published < source.total && !g_stop.load()) {
    const int64_t n = std::min(chunk, source.total - published);
    js.PublishAll(AsMessages(subject, source.batches(published, n), args.per_message));  // each stored by the stream
    published += n;
    pipeline::PaceTo(start, published, args.rate);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  fmt::print("published {} requests to {} in {:.2f} s ({:.0f}/s)\n", published, subject, seconds,
             seconds > 0 ? static_cast<double>(published) / seconds : 0.0);
  return 0;
}

// The options of the pipeline commands other than load.
struct PipelineArgs {
  std::string pipeline, db, where, sqlstate;
  bool yes = false, dry_run = false, no_wait = false;
  int64_t batch_size = 1000;
};

void AddCommonOptions(CLI::App* app, std::string& pipeline, std::string& db) {
  app->add_option("--pipeline", pipeline, "Pipeline TOML file")->required()->check(CLI::ExistingFile);
  app->add_option("--db", db, "libpq connection string (default: RUNNEL_DB_URL, else the embedded database)");
}

int RunMigrate(CliContext& ctx, const PipelineArgs& args) {
  auto config = pipeline::LoadPipelineConfig(args.pipeline);
  auto conn = postgres::Connection::Open(DatabaseUrl(ctx, args.db));
  if (args.dry_run) return PrintMigrationSql(conn, config);
  auto changes = pipeline::Migrate(conn, config);
  server::MigrateSamples(conn);  // the dashboard's, shared by every pipeline
  for (const auto& line : changes) fmt::print("{}\n", line);
  fmt::print("pipeline '{}' is at schema version {}{}\n", config.name, pipeline::kSchemaVersion,
             changes.empty() ? " (nothing to do)" : "");
  return 0;
}

// `runnel load --input`: a CSV file's rows at --rate, a line every 5 s while it runs
// (a --loop runs until Ctrl-C).
int LoadCsv(postgres::Connection& conn, const pipeline::PipelineConfig& config, const LoadArgs& args) {
  InstallStopHandler();
  const std::function<bool()> cancelled = [] { return g_stop.load(); };
  pipeline::CsvLoadOptions options = CsvOptions(args);
  options.cancelled = &cancelled;
  const auto started = std::chrono::steady_clock::now();
  auto last = started;
  options.progress = [&](int64_t inserted) {
    const auto now = std::chrono::steady_clock::now();
    if (now - last < std::chrono::seconds(5)) return;
    last = now;
    const double seconds = std::chrono::duration<double>(now - started).count();
    fmt::print(stderr, "inserted {} rows in {:.0f} s ({:.1f} rows/s); Ctrl-C stops\n", inserted, seconds,
               static_cast<double>(inserted) / seconds);
  };
  std::vector<std::string> ignored;
  auto summary = pipeline::LoadCsvRequests(conn, config, options, &ignored);
  if (!ignored.empty()) fmt::print(stderr, "ignored columns not in {}: {}\n", config.table, fmt::join(ignored, ", "));
  fmt::print("inserted {} rows from {} in {:.2f} s\n", summary.inserted, args.input, summary.seconds);
  return 0;
}

// `runnel load`: synthetic rows, the demo's distributions (the seed printed).
int LoadSynthetic(postgres::Connection& conn, const pipeline::PipelineConfig& config, const LoadArgs& args) {
  pipeline::LoadOptions options;
  options.rows = args.rows;
  options.clients = args.clients;
  options.rows_per_txn = args.rows_per_txn;
  options.rate = args.rate;
  options.seed =
      args.seed != 0 ? args.seed : static_cast<uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  fmt::print(stderr, "loading {} rows into {} (seed {})\n", options.rows, config.table, options.seed);
  if (auto warning = pipeline::QuotaWarning(conn, config, options)) fmt::print(stderr, "warning: {}\n", *warning);
  auto summary = pipeline::LoadSyntheticRequests(conn, config, options);
  fmt::print("inserted {} rows from key {} in {:.2f} s ({:.0f} rows/s)\n", summary.inserted, summary.first_key,
             summary.seconds, summary.seconds > 0 ? static_cast<double>(summary.inserted) / summary.seconds : 0.0);
  return 0;
}

int LoadRequests(CliContext& ctx, const LoadArgs& args) {
  auto config = pipeline::LoadPipelineConfig(args.pipeline);
  if (args.jetstream) return PublishRequests(ctx, config, args);
  auto conn = postgres::Connection::Open(DatabaseUrl(ctx, args.db));
  return args.input.empty() ? LoadSynthetic(conn, config, args) : LoadCsv(conn, config, args);
}

// `runnel status --pipeline`: counts, quota, paused processes, failures by reason,
// JetStream; without --pipeline, every pipeline in the database.
int PrintStatus(CliContext& ctx, const PipelineArgs& args) {
  auto conn = postgres::Connection::Open(DatabaseUrl(ctx, args.db));
  if (args.pipeline.empty()) return PrintPipelines(conn);
  auto config = pipeline::LoadPipelineConfig(args.pipeline);
  auto c = ReadCounts(conn, config);
  fmt::print("pipeline {}: queue {} (oldest waiting {:.1f} s); done {}, throttled {}, failed {}{}\n", config.name,
             c.queued, c.oldest_seconds, c.done, c.throttled, c.failed,
             (c.gone > 0 ? fmt::format(", gone {}", c.gone) : "") +
                 (c.superseded > 0 ? fmt::format(", superseded {}", c.superseded) : "") +
                 (c.requeued > 0 ? fmt::format(", re-queued {}", c.requeued) : ""));
  for (const auto& partition : pipeline::UncapturedPartitions(conn, config)) {
    fmt::print(
        "not captured: partition {} (attached since the last migrate): rows inserted straight into it are "
        "no requests until `runnel migrate` runs again; rows inserted through {} are\n",
        partition, config.table);
  }
  if (config.quota_max_requests) PrintQuotaSummary(conn, config);
  for (const auto& p : pipeline::PausedProcesses(conn, config))
    fmt::print("paused: {} (process {}, for {:.0f} s)\n", p.reason, p.process, p.seconds);
  const auto reasons = pipeline::TopFailureReasons(conn, config, 5);
  if (!reasons.empty()) fmt::print("failures by reason:\n");
  for (const auto& r : reasons)
    fmt::print("  {:>8}  {}  {}\n", r.count, r.sqlstate.empty() ? "-----" : r.sqlstate, r.reason);
  if (config.jetstream) PrintJetStreamStatus(conn, config);
  return 0;
}

int RunUnmigrate(CliContext& ctx, const PipelineArgs& args) {
  auto config = pipeline::LoadPipelineConfig(args.pipeline);
  auto conn = postgres::Connection::Open(DatabaseUrl(ctx, args.db));
  const auto plan = pipeline::UnmigratePlan(conn, config);
  if (plan.empty()) {
    fmt::print("pipeline {}: nothing installed, nothing to remove\n", config.name);
    return 0;
  }
  if (!args.yes && !ConfirmByName(config.name, plan)) {
    fmt::print(stderr, "nothing removed\n");
    return 1;
  }
  for (const auto& line : pipeline::Unmigrate(conn, config)) fmt::print("{}\n", line);
  fmt::print("table {} and its rows are as they were\n", config.table);
  return 0;
}

int RunRescore(CliContext& ctx, const PipelineArgs& args) {
  auto config = pipeline::LoadPipelineConfig(args.pipeline);
  auto conn = postgres::Connection::Open(DatabaseUrl(ctx, args.db));
  const auto job = pipeline::CreateJob(conn, config, args.where, args.batch_size);
  fmt::print("job {}: {} row(s) to score{}; served by the pipeline's `runnel run` processes\n", job.id, job.total,
             args.where.empty() ? "" : " where " + args.where);
  if (args.no_wait) return 0;
  return FollowJob(conn, job.id);
}

int RunRetry(CliContext& ctx, const PipelineArgs& args) {
  auto config = pipeline::LoadPipelineConfig(args.pipeline);
  auto conn = postgres::Connection::Open(DatabaseUrl(ctx, args.db));
  pipeline::RetryFilter filter;
  filter.where = args.where;
  if (!args.sqlstate.empty()) filter.sqlstate = args.sqlstate;
  auto outcome = pipeline::RetryFailed(conn, config, filter);
  if (outcome.job) {
    fmt::print("re-queued {} failed request(s) as job {}\n", outcome.requeued, *outcome.job);
  } else {
    fmt::print("no failed request matches: nothing re-queued\n");
  }
  return 0;
}

void AddLoadCommand(CLI::App& root, std::vector<Command>& commands) {
  auto args = std::make_shared<LoadArgs>();
  auto* load = root.add_subcommand("load", "Insert synthetic requests (the reference generator's distributions)");
  AddCommonOptions(load, args->pipeline, args->db);
  load->add_option("--rows", args->rows, "Rows to insert (default 1000)");
  load->add_option("--clients", args->clients, "Client ids cycle over 1..N (default 100)");
  load->add_option("--rate", args->rate, "Rows per second (default: as fast as possible)");
  load->add_option("--rows-per-txn", args->rows_per_txn, "Rows per INSERT transaction (default 1000)");
  load->add_option("--seed", args->seed, "Random seed (default: from the clock; printed)");
  load->add_option("--input", args->input, "Replay this CSV file instead of synthetic rows")->check(CLI::ExistingFile);
  load->add_option("--delimiter", args->delimiter, "--input's field delimiter (default ',')");
  load->add_option("--columns", args->columns, "--input's column names, comma-separated (default: its header)");
  load->add_option("--data-type", args->data_type, "Set the pipeline's [model].type_column to this on every row");
  load->add_flag("--loop", args->loop, "--input: start over at the end, until Ctrl-C");
  load->add_flag("--reverse", args->reverse, "--input: last row first");
  load->add_flag("--jetstream", args->jetstream,
                 "Publish the requests (synthetic, or --input's rows) to the pipeline's [jetstream] subject instead of "
                 "inserting them");
  load->add_option("--subject", args->subject, "--jetstream: publish to this subject (default: [jetstream] subject)");
  load->add_option("--per-message", args->per_message,
                   "--jetstream: records per message (default 1; more: NDJSON, Content-Type: application/x-ndjson)")
      ->check(CLI::Range(int64_t{1}, int64_t{100000}));
  commands.push_back({load, [args](CliContext& ctx) { return LoadRequests(ctx, *args); }});
}

void AddStatusCommand(CLI::App& root, std::vector<Command>& commands) {
  auto args = std::make_shared<PipelineArgs>();
  auto* status = root.add_subcommand(
      "status", "Queue depth, served/throttled/failed counts and lag; without --pipeline, every pipeline");
  status->add_option("--pipeline", args->pipeline, "Pipeline TOML file (default: list every pipeline)")
      ->check(CLI::ExistingFile);
  status->add_option("--db", args->db, "libpq connection string (default: RUNNEL_DB_URL, else the embedded database)");
  commands.push_back({status, [args](CliContext& ctx) { return PrintStatus(ctx, *args); }});
}

void AddMigrateCommand(CLI::App& root, std::vector<Command>& commands) {
  auto args = std::make_shared<PipelineArgs>();
  auto* migrate =
      root.add_subcommand("migrate", "Install the pipeline's queue, trigger and result tables (idempotent)");
  AddCommonOptions(migrate, args->pipeline, args->db);
  migrate->add_flag("--dry-run", args->dry_run, "Print the SQL it would run, and change nothing");
  commands.push_back({migrate, [args](CliContext& ctx) { return RunMigrate(ctx, *args); }});
}

// unmigrate, rescore and retry.
void AddJobCommands(CLI::App& root, std::vector<Command>& commands) {
  auto args = std::make_shared<PipelineArgs>();

  auto* unmigrate = root.add_subcommand(
      "unmigrate", "Remove what migrate installed (triggers, queue, results, quota, events); the table stays");
  AddCommonOptions(unmigrate, args->pipeline, args->db);
  unmigrate->add_flag("--yes", args->yes, "Do not ask for confirmation");
  commands.push_back({unmigrate, [args](CliContext& ctx) { return RunUnmigrate(ctx, *args); }});

  auto* rescore = root.add_subcommand(
      "rescore", "Score existing rows again (a batch job, as POST /v1/pipelines/{p}/jobs) and follow its progress");
  AddCommonOptions(rescore, args->pipeline, args->db);
  rescore->add_option(
      "--where", args->where,
      "Only rows matching this filter, e.g. \"status is null\" or \"client_id = 7\" (docs/http-api.md)");
  rescore->add_option("--batch-size", args->batch_size, "Rows handed to the workers per step (1..100000)");
  rescore->add_flag("--no-wait", args->no_wait, "Print the job and return; it goes on in the serving processes");
  commands.push_back({rescore, [args](CliContext& ctx) { return RunRescore(ctx, *args); }});

  auto* retry = root.add_subcommand("retry", "Re-queue failed requests (once each) after fixing their cause");
  AddCommonOptions(retry, args->pipeline, args->db);
  retry->add_option("--where", args->where,
                    "Only failed requests whose row matches this filter, e.g. \"client_id = 7\" (docs/http-api.md)");
  retry->add_option("--sqlstate", args->sqlstate, "Only failures with this SQLSTATE (23514) or class (23)");
  commands.push_back({retry, [args](CliContext& ctx) { return RunRetry(ctx, *args); }});
}

}  // namespace

void AddPipelineCommands(CLI::App& root, std::vector<Command>& commands) {
  AddMigrateCommand(root, commands);
  AddLoadCommand(root, commands);
  AddStatusCommand(root, commands);
  AddJobCommands(root, commands);
}

}  // namespace runnel::cli
