// What the workloads of `runnel demo` share (demo_command.cpp: needs; demo_text.cpp:
// tickets and reviews).
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <string>

#include "commands.hpp"
#include "runnel/model/model.hpp"
#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/pipeline/worker.hpp"
#include "runnel/postgres/connection.hpp"

namespace runnel::cli {

inline const std::filesystem::path kExamples = RUNNEL_EXAMPLES_DIR;

struct DemoArgs {
  std::string workload = "needs";
  std::string pipeline;  // default: the workload's
  int64_t requests = 10000;
  int64_t clients = 8;
  size_t workers = 2;
};

// The embedded cluster started and a fresh database runnel_demo in it; returns the
// database's URL as its owner (and the cluster's parent directory in `home`). Prints
// step 1.
std::string FreshDemoDatabase(const CliContext& ctx, std::filesystem::path* home);

struct Served {
  pipeline::RunSummary summary;
  double seconds = 0;  // from the first insert to the last result
};

// Serves `config` with `model` while `insert` (on `conn`) adds requests, until every
// request it reports inserting has a result. Rethrows what failed the serving.
Served ServeWhile(const pipeline::PipelineConfig& config, std::shared_ptr<const model::Model> model,
                  const std::string& url, size_t workers, postgres::Connection& conn,
                  const std::function<int64_t()>& insert);

// Runs examples/`script` OUTDIR `arguments`...; prints its output as step 2. Throws
// Error(InvalidInput) naming `packages` when the script exits 77 (they are missing).
void RunBuildScript(const std::string& script, const std::filesystem::path& dir, const std::string& packages,
                    const std::vector<std::string>& arguments = {});

int TicketsDemo(const DemoArgs& args, CliContext& ctx);
int ReviewsDemo(const DemoArgs& args, CliContext& ctx);

}  // namespace runnel::cli
