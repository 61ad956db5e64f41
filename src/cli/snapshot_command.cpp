// `runnel snapshot create | list | query | archive | prune`: analytics snapshots of a
// pipeline (include/runnel/snapshot/snapshot.hpp).
#include <fmt/chrono.h>
#include <fmt/format.h>

#include <algorithm>
#include <memory>

#include "commands.hpp"
#include "runnel/core/error.hpp"
#include "runnel/snapshot/snapshot.hpp"

namespace runnel::cli {

namespace {

struct SnapshotArgs {
  std::string pipeline, db, dir, sql, format = "table", by = "model_version", out;
  std::optional<int64_t> version;
  std::optional<int> keep;
  std::optional<double> pace;
};

snapshot::SnapshotStore StoreFor(const SnapshotArgs& args, const pipeline::PipelineConfig& config) {
  const std::filesystem::path root = args.dir.empty() ? config.snapshots.dir : std::filesystem::absolute(args.dir);
  return snapshot::SnapshotStore(root, config.name);
}

std::string Megabytes(int64_t bytes) {
  return fmt::format("{:.1f} MB", static_cast<double>(bytes) / 1e6);
}

// An aligned text table, as psql prints one.
void PrintTable(const snapshot::QueryAnswer& answer) {
  std::vector<size_t> widths;
  for (const auto& c : answer.columns) widths.push_back(c.size());
  for (const auto& row : answer.rows) {
    for (size_t c = 0; c < row.size(); ++c) widths[c] = std::max(widths[c], row[c] ? row[c]->size() : 4);
  }
  const auto line = [&](const auto& cell) {
    std::string out;
    for (size_t c = 0; c < widths.size(); ++c) out += fmt::format("{}{:<{}}", c ? " | " : "", cell(c), widths[c]);
    fmt::print("{}\n", out);
  };
  line([&](size_t c) { return answer.columns[c]; });
  std::string rule;
  for (size_t c = 0; c < widths.size(); ++c) rule += (c ? "-+-" : "") + std::string(widths[c], '-');
  fmt::print("{}\n", rule);
  for (const auto& row : answer.rows) line([&](size_t c) { return row[c] ? *row[c] : std::string("NULL"); });
  fmt::print("({} row{}{})\n", answer.rows.size(), answer.rows.size() == 1 ? "" : "s",
             answer.truncated ? ", cut off at the row limit" : "");
}

int Create(CliContext& ctx, const SnapshotArgs& args) {
  auto config = pipeline::LoadPipelineConfig(args.pipeline);
  if (args.pace) config.snapshots.pace = *args.pace;
  auto conn = postgres::Connection::Open(DatabaseUrl(ctx, args.db));
  const auto store = StoreFor(args, config);
  const auto outcome = store.Create(conn, config);
  std::string rows;
  for (const auto& [table, n] : outcome.rows) rows += fmt::format("{}{} {}", rows.empty() ? "" : ", ", n, table);
  fmt::print("snapshot {} v{}: {} ({}) in {} ms: {}\n", config.name, outcome.info.version, outcome.info.path.string(),
             Megabytes(outcome.info.bytes), outcome.took.count(), rows);
  const int keep = args.keep.value_or(config.snapshots.keep);
  for (int64_t removed : store.Prune(keep)) fmt::print("removed v{} (keeping the newest {})\n", removed, keep);
  return 0;
}

int List(const SnapshotArgs& args) {
  auto config = pipeline::LoadPipelineConfig(args.pipeline);
  const auto versions = StoreFor(args, config).List();
  if (versions.empty()) {
    fmt::print("pipeline {}: no snapshot in {}\n", config.name, StoreFor(args, config).dir().string());
    return 0;
  }
  for (const auto& info : versions) {
    fmt::print("v{}  {:%Y-%m-%d %H:%M:%S} UTC  {:>10}  {}\n", info.version,
               std::chrono::floor<std::chrono::seconds>(info.created), Megabytes(info.bytes), info.path.string());
  }
  return 0;
}

int Query(const SnapshotArgs& args) {
  auto config = pipeline::LoadPipelineConfig(args.pipeline);
  const auto reader = StoreFor(args, config).Open(args.version);
  snapshot::QueryLimits limits{config.snapshots.query_timeout, config.snapshots.query_memory_mb,
                               config.snapshots.query_max_rows};
  const auto answer = snapshot::Query(reader, args.sql, limits);
  if (args.format == "json") {
    fmt::print("{}\n", snapshot::AnswerJson(answer));
  } else if (args.format == "csv") {
    fmt::print("{}", snapshot::AnswerCsv(answer));
  } else {
    PrintTable(answer);
  }
  return 0;
}

int Archive(const SnapshotArgs& args) {
  auto config = pipeline::LoadPipelineConfig(args.pipeline);
  const auto store = StoreFor(args, config);
  const auto reader = store.Open(args.version);
  const std::filesystem::path out = args.out.empty()
                                        ? store.dir() / fmt::format("archive-v{}-by-{}", reader.info().version, args.by)
                                        : std::filesystem::path(args.out);
  const auto outcome =
      snapshot::Archive(reader, out, args.by == "day" ? snapshot::ArchiveBy::Day : snapshot::ArchiveBy::ModelVersion);
  fmt::print("archived {} request(s) of snapshot v{} into {} ({} Parquet file(s), partitioned by {})\n", outcome.rows,
             reader.info().version, outcome.dir.string(), outcome.files.size(), args.by);
  return 0;
}

}  // namespace

void AddSnapshotCommands(CLI::App& root, std::vector<Command>& commands) {
  auto args = std::make_shared<SnapshotArgs>();
  auto* snapshot = root.add_subcommand(
      "snapshot", "Read-only DuckDB snapshots of a pipeline's results, queries over them, Parquet archives");
  snapshot->require_subcommand(1);
  const auto add_common = [&](CLI::App* app) {
    app->add_option("--pipeline", args->pipeline, "Pipeline TOML file")->required()->check(CLI::ExistingFile);
    app->add_option("--dir", args->dir,
                    "Snapshots directory (default: [snapshots] dir, else snapshots/ beside the file)");
  };
  auto* create = snapshot->add_subcommand(
      "create", "Copy the pipeline's results, inputs, models and samples, as of one moment, into a new version");
  add_common(create);
  create->add_option("--db", args->db, "libpq connection string (default: RUNNEL_DB_URL, else the embedded database)");
  create->add_option("--keep", args->keep, "Versions to keep (default: [snapshots] keep, 3)")
      ->check(CLI::Range(1, 1000));
  create
      ->add_option("--pace", args->pace,
                   "Share of the time the copy works, resting the rest so serving keeps the cores "
                   "(default: [snapshots] pace, 0.5; 1: as fast as it can)")
      ->check(CLI::Range(0.05, 1.0));
  commands.push_back({create, [args](CliContext& ctx) { return Create(ctx, *args); }});

  auto* list = snapshot->add_subcommand("list", "List the published versions");
  add_common(list);
  commands.push_back({list, [args](CliContext&) { return List(*args); }});

  auto* query = snapshot->add_subcommand(
      "query",
      "Run one read-only SELECT over a version (tables results, inputs, quota, models, samples, snapshot; "
      "views requests, recommendations)");
  add_common(query);
  query->add_option("sql", args->sql, "The SELECT")->required();
  query->add_option("--version", args->version, "Version (default: the newest)");
  query->add_option("--format", args->format, "table, json or csv")->check(CLI::IsMember({"table", "json", "csv"}));
  commands.push_back({query, [args](CliContext&) { return Query(*args); }});

  auto* archive = snapshot->add_subcommand("archive", "Write a version's requests as Parquet files, hive-partitioned");
  add_common(archive);
  archive->add_option("--version", args->version, "Version (default: the newest)");
  archive->add_option("--by", args->by, "Partition by model_version or day")
      ->check(CLI::IsMember({"model_version", "day"}));
  archive->add_option("--out", args->out,
                      "Directory to make (default: archive-v<N>-by-<by> in the snapshots directory)");
  commands.push_back({archive, [args](CliContext&) { return Archive(*args); }});
}

}  // namespace runnel::cli
