// `runnel quota show|reset`: per-client quota counters (pipeline/quota.hpp).
#include <fmt/format.h>

#include <memory>

#include "commands.hpp"
#include "runnel/core/error.hpp"
#include "runnel/pipeline/quota.hpp"
#include "runnel/pipeline/schema.hpp"

namespace runnel::cli {
namespace {

// The pipeline's config; throws Error(InvalidInput) when it keeps no quota.
pipeline::PipelineConfig QuotaPipeline(const std::string& file) {
  auto config = pipeline::LoadPipelineConfig(file);
  if (!config.quota_max_requests) {
    throw Error(ErrorCode::InvalidInput, fmt::format("{}: pipeline '{}' has no [quota]", file, config.name));
  }
  return config;
}

void PrintQuota(const pipeline::PipelineConfig& config, const pipeline::quota::Snapshot& snapshot) {
  fmt::print("quota: {}\n", pipeline::quota::Describe(config));
  if (!snapshot.resets_at.empty()) fmt::print("window: {} to {}\n", snapshot.window_start, snapshot.resets_at);
  fmt::print("{:<24} {:>12} {:>12}\n", "CLIENT", "REQUESTS", "REMAINING");
  for (const auto& c : snapshot.clients) {
    fmt::print("{:<24} {:>12} {:>12}\n", c.client, c.requests,
               std::max<int64_t>(0, *config.quota_max_requests - c.requests));
  }
}

}  // namespace

void AddQuotaCommands(CLI::App& root, std::vector<Command>& commands) {
  auto* quota = root.add_subcommand("quota", "Show or reset per-client quota counters");
  quota->require_subcommand(1);
  struct Args {
    std::string pipeline, db;
    std::vector<std::string> clients;
    bool all = false;
  };
  auto args = std::make_shared<Args>();
  auto add_common = [&](CLI::App* app) {
    app->add_option("--pipeline", args->pipeline, "Pipeline TOML file")->required()->check(CLI::ExistingFile);
    app->add_option("--db", args->db, "libpq connection string (default: RUNNEL_DB_URL, else the embedded database)");
    app->add_option("--client", args->clients, "A client (repeat for several)");
  };

  auto* show = quota->add_subcommand("show", "Requests counted in the current window, per client");
  add_common(show);
  commands.push_back({show, [args](CliContext& ctx) {
                        const auto config = QuotaPipeline(args->pipeline);
                        auto conn = postgres::Connection::Open(DatabaseUrl(ctx, args->db));
                        PrintQuota(config, pipeline::quota::Read(conn, config, args->clients));
                        return 0;
                      }});

  auto* reset = quota->add_subcommand("reset", "Forget clients' counters: their next request starts a new count");
  add_common(reset);
  reset->add_flag("--all-clients", args->all, "Every client's counter");
  commands.push_back({reset, [args](CliContext& ctx) {
                        if (args->clients.empty() == !args->all) {
                          throw Error(ErrorCode::InvalidInput,
                                      "quota reset: name --client C (one or more) or "
                                      "--all-clients");
                        }
                        const auto config = QuotaPipeline(args->pipeline);
                        auto conn = postgres::Connection::Open(DatabaseUrl(ctx, args->db));
                        const int64_t n = pipeline::quota::Reset(conn, config, args->clients);
                        fmt::print("reset {} counter(s) of pipeline {}\n", n, config.name);
                        return 0;
                      }});
}

}  // namespace runnel::cli
