// `runnel run`: serve one pipeline, or several in one process (one HTTP API, one
// model registry, one /metrics labelled by pipeline, one worker budget), until Ctrl-C.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <thread>
#include <tuple>

#include "commands.hpp"
#include "runnel/core/error.hpp"
#include "runnel/core/file.hpp"
#include "runnel/core/thread_name.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/pipeline/worker.hpp"
#include "runnel/postgres/connection.hpp"
#include "runnel/server/grants.hpp"
#include "runnel/server/service.hpp"

namespace runnel::cli {
namespace {

struct RunArgs {
  std::vector<std::string> pipelines;  // --pipeline, repeatable
  std::string pipelines_dir, db, model, http, http_token, http_token_file, access_log, https_cert, https_key;
  size_t workers = 0;  // the budget of all pipelines; 0: the API only (when given)
  bool workers_given = false;
  bool no_migrate = false, until_idle = false, insecure = false;
  size_t http_threads = 0, http_max_connections = 0, http_wait_slots = 0;
};

// The pipelines to serve: each --pipeline file, then every *.toml of --pipelines DIR
// in name order.
std::vector<pipeline::PipelineConfig> LoadRunPipelines(const RunArgs& args) {
  std::vector<std::filesystem::path> files(args.pipelines.begin(), args.pipelines.end());
  if (!args.pipelines_dir.empty()) {
    std::vector<std::filesystem::path> found;
    for (const auto& entry : std::filesystem::directory_iterator(args.pipelines_dir)) {
      if (entry.is_regular_file() && entry.path().extension() == ".toml") found.push_back(entry.path());
    }
    if (found.empty()) {
      throw Error(ErrorCode::InvalidInput, fmt::format("--pipelines {}: no *.toml file in it", args.pipelines_dir));
    }
    std::sort(found.begin(), found.end());
    files.insert(files.end(), found.begin(), found.end());
  }
  if (files.empty()) throw Error(ErrorCode::InvalidInput, "give --pipeline FILE (repeatable) or --pipelines DIR");
  std::vector<pipeline::PipelineConfig> configs;
  for (const auto& file : files) configs.push_back(pipeline::LoadPipelineConfig(file.string()));
  return configs;
}

// Two workers per pipeline unless --workers says otherwise (the whole budget).
size_t WorkersOf(const RunArgs& args, size_t pipelines) {
  return args.workers_given ? args.workers : 2 * pipelines;
}

// The database `run` serves: --db or the configured URL as given; on the embedded
// cluster, its owner role migrates and grants, and serving runs as the cluster's
// serving role, which owns nothing, so SQL injected anywhere in serving can do no more
// than serve.
std::string ServingUrl(const CliContext& ctx, const std::string& flag,
                       const std::vector<pipeline::PipelineConfig>& configs, server::ServiceOptions& options) {
  const std::string url = DatabaseUrl(ctx, flag);
  if (!UsesEmbeddedDatabase(ctx, flag)) return url;
  auto conn = postgres::Connection::Open(url);
  for (const auto& config : configs) {
    if (options.migrate) {
      for (const auto& line : pipeline::Migrate(conn, config)) spdlog::info("migrate {}: {}", config.name, line);
    }
    server::ApplyGrants(conn, config, std::string(postgres::kServeRole));
  }
  options.migrate = false;
  spdlog::info("serving as role {}: no superuser, only what `runnel grants` lists", postgres::kServeRole);
  return postgres::EmbeddedCluster(EmbeddedClusterOptions(ctx.config)).ConnectionStringAs(postgres::kServeRole);
}

// What `run` prints when it ends: counts, the rate over the time spent serving (not
// the idle time before Ctrl-C), time per stage, latency, and what to do about failures.
void PrintRunSummary(const pipeline::RunSummary& summary) {
  const size_t served = summary.done + summary.throttled + summary.failed + summary.gone;
  fmt::print(
      "served {} requests in {:.2f} s of serving ({:.0f}/s; {:.1f} s running) in {} batches: {} done, {} "
      "throttled, {} failed{}\n",
      served, summary.busy_seconds, summary.busy_seconds > 0 ? static_cast<double>(served) / summary.busy_seconds : 0.0,
      summary.seconds, summary.batches, summary.done, summary.throttled, summary.failed,
      summary.gone > 0 ? fmt::format(", {} gone (rows deleted before they were served)", summary.gone) : "");
  if (summary.scored_directly > 0) {
    fmt::print("scored {} JetStream records without rows (`runnel status` counts them by status)\n",
               summary.scored_directly);
  }
  if (summary.redone > 0) {
    fmt::print(
        "{} batches were rolled back and served again (quota counters moved under them, or a request "
        "key had a result already)\n",
        summary.redone);
  }
  if (summary.batches > 0) {
    std::string stages;
    for (size_t k = 0; k < pipeline::kStageCount; ++k) {
      stages += fmt::format("{}{} {:.0f} ms", k ? ", " : "", pipeline::kStageNames[k], summary.stage_ms[k]);
    }
    fmt::print("time in stages, summed over workers: {}\n", stages);
  }
  if (!summary.latencies_ms.empty()) {
    fmt::print("latency from insert to result (ms): p50 {:.2f}, p99 {:.2f}\n", summary.LatencyPercentile(0.50),
               summary.LatencyPercentile(0.99));
  }
  if (summary.failed > 0) {
    fmt::print("{} request(s) failed: `runnel status` lists the reasons, `runnel retry` replays them\n",
               summary.failed);
  }
}

// A secret kept in a file: its first line, without surrounding whitespace.
std::string ReadTokenFile(const std::string& path) {
  std::string text = ReadFileBytes(path, "the HTTP token file");
  text = text.substr(0, text.find('\n'));
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front()))) text.erase(text.begin());
  if (text.empty()) throw Error(ErrorCode::Config, fmt::format("{}: the HTTP token file is empty", path));
  return text;
}

std::optional<server::HttpOptions> HttpOptionsOf(const RunArgs& args) {
  if (args.http.empty()) return std::nullopt;
  server::HttpOptions http;
  server::ParseListenAddress(args.http, http);
  http.token = args.http_token;
  if (!args.http_token_file.empty()) http.token = ReadTokenFile(args.http_token_file);
  if (http.token.empty()) {
    if (const char* env = std::getenv("RUNNEL_HTTP_TOKEN")) http.token = env;
  }
  http.insecure = args.insecure;
  if (args.http_threads > 0) http.handler_threads = args.http_threads;
  if (args.http_max_connections > 0) http.max_connections = args.http_max_connections;
  if (args.http_wait_slots > 0) http.wait_slots = args.http_wait_slots;
  http.access_log = args.access_log;
  http.https_cert = args.https_cert;
  http.https_key = args.https_key;
  return http;
}

// Progress every 5 s while serving, and Ctrl-C turned into a drain. Best effort: it
// (re)connects on its own and never throws out of its thread; the workers report
// real failures.
class ProgressReporter {
 public:
  ProgressReporter(server::Service& service, std::string url, std::vector<pipeline::PipelineConfig> configs)
      : service_(service), url_(std::move(url)), configs_(std::move(configs)), thread_([this] {
          NameThisThread("progress");
          Loop();
        }) {}
  ~ProgressReporter() {
    finished_.store(true);
    thread_.join();
  }

 private:
  using Shown = std::tuple<int64_t, int64_t, int64_t, int64_t>;

  void Loop() {
    std::unique_ptr<postgres::Connection> conn;
    std::map<std::string, Shown> shown;
    auto last = std::chrono::steady_clock::now();
    while (!finished_.load()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      if (g_stop.load()) service_.Stop();
      if (std::chrono::steady_clock::now() - last < std::chrono::seconds(5)) continue;
      last = std::chrono::steady_clock::now();
      try {
        if (!conn || !conn->IsOpen()) conn = std::make_unique<postgres::Connection>(postgres::Connection::Open(url_));
        for (const auto& config : configs_) Report(*conn, config, shown[config.name]);
      } catch (const Error& e) {
        spdlog::debug("progress: {}", e.what());
      }
    }
  }

  // An idle pipeline says nothing: only a change is news.
  void Report(postgres::Connection& conn, const pipeline::PipelineConfig& config, Shown& shown) const {
    const auto c = ReadCounts(conn, config);
    const auto now = std::make_tuple(c.done, c.throttled, c.failed, c.queued);
    if (now == shown) return;
    shown = now;
    spdlog::info("{}done {} throttled {} failed {}; queue {} (oldest {:.1f} s)",
                 configs_.size() > 1 ? config.name + ": " : "", c.done, c.throttled, c.failed, c.queued,
                 c.oldest_seconds);
  }

  server::Service& service_;
  std::string url_;
  std::vector<pipeline::PipelineConfig> configs_;
  std::atomic<bool> finished_{false};
  std::thread thread_;  // last: starts once the members above exist
};

// Whether a [jetstream] consumer is drained (every message taken in); says why not.
bool JetStreamDrained(const pipeline::JetStreamConfig& js, const std::string& of) {
  try {
    const auto info = ReadConsumer(js);
    if (info.pending == 0 && info.ack_pending == 0) return true;
    fmt::print(stderr, "{}{} message(s) of JetStream stream '{}' are still to be taken in\n", of,
               info.pending + static_cast<uint64_t>(std::max<int64_t>(info.ack_pending, 0)), js.stream);
  } catch (const Error& e) {
    fmt::print(stderr, "{}JetStream consumer '{}': {}\n", of, js.durable, e.what());
  }
  return false;
}

// Requests another process is serving, and messages its JetStream consumer still
// holds, are not left behind. Returns the exit code.
int CheckDrained(const std::string& url, const std::vector<pipeline::PipelineConfig>& configs,
                 const std::vector<pipeline::RunSummary>& summaries) {
  int code = 0;
  auto conn = postgres::Connection::Open(url);
  for (size_t i = 0; i < configs.size(); ++i) {
    const std::string of = configs.size() > 1 ? fmt::format("pipeline {}: ", configs[i].name) : "";
    for (const auto& reason : summaries[i].paused) fmt::print(stderr, "{}paused: {}\n", of, reason);
    const auto left = pipeline::UnclaimedRequests(conn, configs[i]);
    if (left > 0) {
      fmt::print(stderr, "{}{} request(s) are still queued\n", of, left);
      code = 1;
    }
    if (configs[i].jetstream && !JetStreamDrained(*configs[i].jetstream, of)) code = 1;
  }
  return code;
}

int Run(CliContext& ctx, const RunArgs& args) {
  auto configs = LoadRunPipelines(args);
  server::ServiceOptions options;
  options.workers = WorkersOf(args, configs.size());
  options.until_idle = args.until_idle;
  options.migrate = !args.no_migrate;
  options.model_file = args.model;
  options.log = [](const std::string& m) { spdlog::info("{}", m); };
  options.http = HttpOptionsOf(args);
  if (options.workers == 0 && !options.http) {
    throw Error(ErrorCode::InvalidInput, "--workers 0 serves nothing without --http");
  }
  const std::string url = ServingUrl(ctx, args.db, configs, options);
  InstallStopHandler();
  server::Service service(configs, url, options);
  service.Start();
  const auto shares = server::WorkerShares(options.workers, configs.size());
  for (size_t i = 0; i < configs.size(); ++i) {
    spdlog::info("serving pipeline '{}' with {}, {} worker(s); Ctrl-C drains and stops", configs[i].name,
                 service.Describe(i), shares[i]);
  }
  if (options.http) {
    spdlog::info("HTTP API on {}://{}:{}/v1 ({})", options.http->https_cert.empty() ? "http" : "https",
                 options.http->host, service.http_port(),
                 options.http->token.empty() ? "API keys: `runnel keys`" : "the token or API keys");
  }
  std::vector<pipeline::RunSummary> summaries;
  {
    ProgressReporter progress(service, url, configs);
    summaries = service.Wait();
  }
  for (size_t i = 0; i < configs.size(); ++i) {
    if (configs.size() > 1) fmt::print("pipeline {}:\n", configs[i].name);
    PrintRunSummary(summaries[i]);
  }
  return args.until_idle ? CheckDrained(url, configs, summaries) : 0;
}

}  // namespace

void AddRunCommand(CLI::App& root, std::vector<Command>& commands) {
  auto args = std::make_shared<RunArgs>();
  auto* run = root.add_subcommand("run", "Serve every inserted row of the pipelines' tables until Ctrl-C");
  run->add_option("--pipeline", args->pipelines, "Pipeline TOML file; repeat it to serve several in one process")
      ->check(CLI::ExistingFile);
  run->add_option("--pipelines", args->pipelines_dir, "Serve every *.toml pipeline file in this directory")
      ->check(CLI::ExistingDirectory);
  run->add_option("--db", args->db, "libpq connection string (default: RUNNEL_DB_URL, else the embedded database)");
  run->add_option("--model", args->model,
                  "Serve this model file only, with one pipeline (default: the registry's model stream when "
                  "[model].name is set, else [model].path)");
  run->add_option("--workers", args->workers,
                  "Worker threads of all pipelines together, each with its own connection (default 2 per pipeline; "
                  "0 with --http: API only)");
  run->add_flag("--no-migrate", args->no_migrate, "Do not run `runnel migrate` first");
  run->add_flag("--until-idle", args->until_idle, "Exit once the queue is empty instead of waiting for more");
  run->add_option("--http", args->http, "Serve the HTTP API on HOST:PORT, e.g. 127.0.0.1:8080");
  run->add_option("--http-token", args->http_token,
                  "Bearer token every endpoint but /healthz requires (default: $RUNNEL_HTTP_TOKEN); visible to "
                  "every user in the process list: prefer --http-token-file or the environment");
  run->add_option("--http-token-file", args->http_token_file, "Read the bearer token from this file (its first line)")
      ->excludes(run->get_option("--http-token"));
  run->add_flag("--insecure", args->insecure,
                "On a non-loopback --http address, accept requests without a key while no token or API key "
                "exists (without it, such a server answers 401 until `runnel keys create`)");
  run->add_option("--http-threads", args->http_threads,
                  "HTTP handler threads (default 16; sockets are served by two I/O threads)");
  run->add_option("--http-max-connections", args->http_max_connections,
                  "Open HTTP connections at most; beyond, 503 at once (default 4096)");
  run->add_option("--http-wait-slots", args->http_wait_slots,
                  "HTTP requests waiting for results at once (?wait=, model pushes); beyond, 503 (default 64)");
  auto* cert = run->add_option("--https-cert", args->https_cert, "Serve HTTPS only, with this PEM certificate chain")
                   ->check(CLI::ExistingFile);
  run->add_option("--https-key", args->https_key, "The private key (PEM) of --https-cert")
      ->check(CLI::ExistingFile)
      ->needs(cert);
  cert->needs(run->get_option("--https-key"));
  run->add_option("--access-log", args->access_log,
                  "Append one line per HTTP response (client, method, path, status, bytes, ms) to this file; "
                  "'-' for stderr");
  run->callback([args, workers = run->get_option("--workers")] { args->workers_given = workers->count() > 0; });
  commands.push_back({run, [args](CliContext& ctx) { return Run(ctx, *args); }});
}

}  // namespace runnel::cli
