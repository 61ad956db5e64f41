// The `runnel` command line: each file registers its subcommands here. Faces only:
// commands parse, call the library and format answers.
#pragma once

#include <CLI/CLI.hpp>

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "runnel/core/config.hpp"
#include "runnel/nats/jetstream.hpp"
#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/postgres/cluster.hpp"
#include "runnel/postgres/connection.hpp"

namespace runnel::cli {

struct CliContext {
  std::optional<std::filesystem::path> config_file;  // --config
  std::string log_level;                             // --log-level, empty: from config
  Config config;                                     // loaded before a command runs
};

// Runs a parsed subcommand; returns the process exit code.
using CommandFn = std::function<int(CliContext&)>;

struct Command {
  CLI::App* app;  // non-owning: owned by the root CLI::App
  CommandFn run;
};

void AddDbCommands(CLI::App& root, std::vector<Command>& commands);
void AddDemoCommand(CLI::App& root, std::vector<Command>& commands);
void AddKeysCommands(CLI::App& root, std::vector<Command>& commands);  // access_commands.cpp
void AddGrantsCommand(CLI::App& root, std::vector<Command>& commands);
void AddJetStreamCommands(CLI::App& root, std::vector<Command>& commands);  // jetstream_command.cpp
// The [jetstream] consumer's state, and as one line its pending, unacknowledged and
// redelivered messages. Throw Error when NATS cannot be reached or has no such consumer.
nats::ConsumerInfo ReadConsumer(const pipeline::JetStreamConfig& js);
std::string DescribeConsumer(const pipeline::JetStreamConfig& js);
void AddModelCommands(CLI::App& root, std::vector<Command>& commands);
void AddPipelineCommands(CLI::App& root, std::vector<Command>& commands);
void AddQuotaCommands(CLI::App& root, std::vector<Command>& commands);
void AddRunCommand(CLI::App& root, std::vector<Command>& commands);  // run_command.cpp
void AddSnapshotCommands(CLI::App& root, std::vector<Command>& commands);

// Set by Ctrl-C and SIGTERM once InstallStopHandler ran (it clears it): long commands
// drain and return.
extern std::atomic<bool> g_stop;
void InstallStopHandler();

// A pipeline's queue and result counts, for `status` and `run`'s progress lines.
struct Counts {
  int64_t queued = 0, done = 0, throttled = 0, failed = 0, gone = 0, superseded = 0, requeued = 0;
  double oldest_seconds = 0;
};
Counts ReadCounts(postgres::Connection& conn, const pipeline::PipelineConfig& config);

// The embedded cluster that the configuration describes.
postgres::ClusterOptions EmbeddedClusterOptions(const Config& config);

// --delimiter: one character, or "tab" / "\t". Throws Error(InvalidInput).
char ParseDelimiter(const std::string& text);

// --db when given, else RUNNEL_DB_URL / the config file, else the embedded cluster
// (started if needed) as its owner role, which is no superuser.
std::string DatabaseUrl(const CliContext& ctx, const std::string& flag);
// Whether DatabaseUrl answers with the embedded cluster (neither --db nor a configured URL).
bool UsesEmbeddedDatabase(const CliContext& ctx, const std::string& flag);

}  // namespace runnel::cli
