#include <libpq-fe.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <iostream>

#include "commands.hpp"
#include "runnel/core/error.hpp"
#include "runnel/core/logging.hpp"
#include "runnel/core/memory.hpp"
#include "runnel/core/version.hpp"

namespace runnel::cli {

postgres::ClusterOptions EmbeddedClusterOptions(const Config& config) {
  postgres::ClusterOptions options;
  options.dir = config.EmbeddedClusterDir();
  options.port = config.embedded_port;
  options.bin_dir = config.pg_bin_dir;
  return options;
}

char ParseDelimiter(const std::string& text) {
  if (text == "\\t" || text == "tab") return '\t';
  if (text.size() != 1)
    throw Error(ErrorCode::InvalidInput, fmt::format("--delimiter must be one character, got '{}'", text));
  return text[0];
}

bool UsesEmbeddedDatabase(const CliContext& ctx, const std::string& flag) {
  return flag.empty() && ctx.config.db_url.empty();
}

std::string DatabaseUrl(const CliContext& ctx, const std::string& flag) {
  if (!flag.empty()) return flag;
  if (!ctx.config.db_url.empty()) return ctx.config.db_url;
  postgres::EmbeddedCluster cluster(EmbeddedClusterOptions(ctx.config));
  if (cluster.Start() != postgres::StartOutcome::AlreadyRunning) {
    spdlog::info("started the embedded PostgreSQL in {}", cluster.dir().string());
  }
  return cluster.ConnectionStringAs(postgres::kOwnerRole);
}

namespace {

int Run(int argc, char** argv) {
  CLI::App app{"Runnel: real-time ML inference for rows landing in PostgreSQL"};
  app.name("runnel");
  app.require_subcommand(0, 1);  // none: print help; unknown words: named by CLI11
  app.set_help_all_flag("--help-all", "Show help for every subcommand");
  app.set_version_flag("--version", fmt::format("runnel {}", kVersion));
  // Global options (--config, --log-level) also after the subcommand: every
  // subcommand, created below, inherits this and hands options it lacks up.
  app.fallthrough();

  CliContext context;
  app.add_option("--config", context.config_file, "TOML configuration file (default: $RUNNEL_CONFIG)")
      ->check(CLI::ExistingFile);
  app.add_option("--log-level", context.log_level,
                 "trace, debug, info, warn, error, critical or off (default: info, $RUNNEL_LOG_LEVEL)");

  std::vector<Command> commands;
  auto* version = app.add_subcommand("version", "Print Runnel's version and the libpq it uses");
  commands.push_back({version, [](CliContext&) {
                        int libpq = PQlibVersion();
                        fmt::print("runnel {}\nlibpq {}.{}\n", kVersion, libpq / 10000, libpq % 10000);
                        return 0;
                      }});
  AddDbCommands(app, commands);
  AddDemoCommand(app, commands);
  AddGrantsCommand(app, commands);
  AddKeysCommands(app, commands);
  AddModelCommands(app, commands);
  AddPipelineCommands(app, commands);
  AddRunCommand(app, commands);
  AddSnapshotCommands(app, commands);
  AddJetStreamCommands(app, commands);
  AddQuotaCommands(app, commands);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }

  try {
    context.config = LoadConfig(context.config_file, ProcessEnv, ::geteuid() == 0);
    if (!context.log_level.empty()) context.config.log_level = context.log_level;
    InitLogging(context.config.log_level);
    for (auto& command : commands) {
      if (command.app->parsed()) return command.run(context);
    }
    std::cerr << app.help();
    return 2;  // no subcommand given
  } catch (const Error& e) {
    fmt::print(stderr, "runnel: {}\n", e.what());
    return 1;
  }
}

}  // namespace
}  // namespace runnel::cli

int main(int argc, char** argv) {
  runnel::KeepFreedMemoryForReuse();
  return runnel::cli::Run(argc, argv);
}
