// `runnel jetstream setup|status`: the streams a [jetstream] pipeline uses, created with
// the replicas asked for, and its consumer's state (docs/jetstream.md).
#include <fmt/format.h>

#include <memory>

#include "commands.hpp"
#include "runnel/core/error.hpp"
#include "runnel/nats/jetstream.hpp"
#include "runnel/server/jetstream_ingest.hpp"

namespace runnel::cli {

namespace {

struct JetStreamArgs {
  std::string pipeline;
  int replicas = 1;
};

pipeline::PipelineConfig JetStreamPipeline(const std::string& file) {
  auto config = pipeline::LoadPipelineConfig(file);
  if (!config.jetstream)
    throw Error(ErrorCode::InvalidInput, fmt::format("{} has no [jetstream] section", config.file.string()));
  return config;
}

std::unique_ptr<nats::JetStream> Connect(const pipeline::JetStreamConfig& js) {
  return std::make_unique<nats::JetStream>(server::ConnectOptionsFor(js, "runnel jetstream"));
}

// The requests stream on the subject, a stream for the dead letters and, with
// `results`, one capturing every client's results (duplicate window: the server's
// default).
int Setup(const JetStreamArgs& args) {
  const auto config = JetStreamPipeline(args.pipeline);
  const auto& js = *config.jetstream;
  auto conn = Connect(js);
  conn->EnsureStream(js.stream, {js.subject}, args.replicas);
  fmt::print("stream {} on {} ({} replica(s))\n", js.stream, js.subject, args.replicas);
  conn->EnsureStream(js.stream + "_DEAD", {js.dead_letter}, args.replicas);
  fmt::print("stream {}_DEAD on {}\n", js.stream, js.dead_letter);
  if (!js.results.empty()) {
    conn->EnsureStream(js.stream + "_RESULTS", {js.results + ".>"}, args.replicas);
    fmt::print("stream {}_RESULTS on {}.>\n", js.stream, js.results);
  }
  return 0;
}

int Status(const JetStreamArgs& args) {
  const auto config = JetStreamPipeline(args.pipeline);
  fmt::print("{}\n", DescribeConsumer(*config.jetstream));
  return 0;
}

}  // namespace

nats::ConsumerInfo ReadConsumer(const pipeline::JetStreamConfig& js) {
  return Connect(js)->Info(js.stream, js.durable);
}

std::string DescribeConsumer(const pipeline::JetStreamConfig& js) {
  const auto info = ReadConsumer(js);
  return fmt::format("consumer {} of stream {}: pending {}, delivered and not acknowledged {}, redelivered {}",
                     js.durable, js.stream, info.pending, info.ack_pending, info.redelivered);
}

void AddJetStreamCommands(CLI::App& root, std::vector<Command>& commands) {
  auto args = std::make_shared<JetStreamArgs>();
  auto* jetstream =
      root.add_subcommand("jetstream", "The NATS JetStream streams and consumer of a [jetstream] pipeline");
  jetstream->require_subcommand(1);
  auto* setup = jetstream->add_subcommand(
      "setup", "Create the pipeline's streams unless they exist: requests, dead letters, results");
  setup->add_option("--pipeline", args->pipeline, "Pipeline TOML file")->required()->check(CLI::ExistingFile);
  setup->add_option("--replicas", args->replicas, "Copies of each stream in a cluster (default 1)")
      ->check(CLI::Range(1, 5));
  commands.push_back({setup, [args](CliContext&) { return Setup(*args); }});
  auto* status = jetstream->add_subcommand("status", "The consumer's pending, unacknowledged and redelivered messages");
  status->add_option("--pipeline", args->pipeline, "Pipeline TOML file")->required()->check(CLI::ExistingFile);
  commands.push_back({status, [args](CliContext&) { return Status(*args); }});
}

}  // namespace runnel::cli
