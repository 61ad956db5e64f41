// [jetstream] mode = "direct": records scored as they come, never rows of the table.
//
// The JetStream ingest (jetstream_ingest.hpp) fetches, checks and deduplicates the
// messages as in table mode; in its transaction DirectScoring then serves the valid
// records as the workers serve rows — quota counters advanced (throttled past
// max_requests), the pipeline's features, each record's model (keyed serving by its
// data type), the outputs — and stores each result in runnel_<p>_jetstream keyed by
// (stream, sequence, item), in the same transaction as the quota. After the commit the
// results are published to `<results>.<client>` with the header Nats-Msg-Id
// "<pipeline>:<stream>:<sequence>:<item>", then the messages are acknowledged; a
// message delivered again (after a crash between commit and acknowledgement) is found
// by its key, its stored results published again (the stream's duplicate window drops
// what it has) and acknowledged: each record is scored once.
//
// The table gives the records' columns and types (RecordSchema) and nothing else: a
// column a record leaves out is NULL (the table's defaults are not applied), and the
// results are not written back to it.
//
// Thread safety: one DirectScoring per ingest thread.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "runnel/core/batch.hpp"
#include "runnel/pipeline/model_provider.hpp"
#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/pipeline/scorer.hpp"
#include "runnel/pipeline/worker.hpp"
#include "runnel/postgres/connection.hpp"

namespace runnel::server {

// One valid record of a message.
struct DirectRecord {
  const nlohmann::json* record = nullptr;  // checked against the table (RecordSchema::Validate)
  int64_t seq = 0;                         // its message's stream sequence
  int64_t item = 0;                        // its place in the message (0 unless a batch)
  int64_t stored_us = 0;                   // when the stream stored the message, epoch microseconds
};

// A stored result as it is published.
struct DirectResult {
  std::optional<std::string> client;
  std::string id;  // Nats-Msg-Id: <pipeline>:<stream>:<seq>:<item>
  // {"stream", "seq", "item", "status", "error", "model_version", "outputs", "finished_at", "client"}
  std::string body;
};

// The records' values as the features and the quota read them (pure). Numeric input
// columns take JSON numbers; text inputs, the client and the data type take strings
// and numbers (as their JSON text); anything else, or a column left out, is NULL.
struct DirectInputs {
  std::vector<std::optional<std::string>> clients, data_types;
};
DirectInputs ReadDirectInputs(const pipeline::PipelineConfig& config, std::span<const DirectRecord> records,
                              ColumnBatch& batch);

// Each done request's outputs as the API shows a result's (outputs_json.hpp): a JSON
// object of the pipeline's output columns, a label column as text, null for an output
// the model does not give; no object (SQL NULL) for a request not done.
std::vector<std::optional<std::string>> ScoredOutputsJson(const pipeline::PipelineConfig& config,
                                                          const pipeline::Verdicts& verdicts,
                                                          const pipeline::ScoredOutputs& outputs);

// How many records were scored directly, by status (for `runnel status`).
struct DirectCounts {
  int64_t done = 0, throttled = 0, failed = 0;
};
// Precondition: the pipeline is migrated with [jetstream]. Throws DatabaseError.
DirectCounts ReadDirectCounts(postgres::Connection& conn, const pipeline::PipelineConfig& config);

class DirectScoring {
 public:
  // Precondition: config.jetstream is set. `models` is shared with the model stream.
  DirectScoring(const pipeline::PipelineConfig& config, std::shared_ptr<pipeline::ModelProvider> models);

  // Serves `records` of stream `stream` and stores their results, in the caller's
  // transaction; returns them as published and adds each record's status (done,
  // throttled, failed with its SQLSTATE) and latency from the stream to now to
  // `tally`. Throws Error(Unavailable) while no model is ready (nothing done),
  // DatabaseError (a unique violation: a record stored before).
  std::vector<DirectResult> Serve(postgres::Connection& conn, const std::string& stream,
                                  std::span<const DirectRecord> records, pipeline::BatchResult& tally);
  // The results stored for messages `seqs` of `stream` (delivered again).
  std::vector<DirectResult> Stored(postgres::Connection& conn, const std::string& stream,
                                   const std::vector<int64_t>& seqs) const;

 private:
  std::vector<DirectResult> Store(postgres::Connection& conn, const std::string& stream,
                                  std::span<const DirectRecord> records, const pipeline::Verdicts& verdicts,
                                  const DirectInputs& inputs, const pipeline::ScoredOutputs& outputs) const;
  std::vector<DirectResult> ReadResults(const postgres::Result& rows, const std::string& stream) const;
  void Tally(const pipeline::Verdicts& verdicts, std::span<const DirectRecord> records,
             pipeline::BatchResult& tally) const;
  void ApplyQuota(pipeline::Verdicts& verdicts, const DirectInputs& inputs, postgres::Connection& conn) const;

  const pipeline::PipelineConfig& config_;
  std::string table_;  // runnel_<p>_jetstream, quoted
  pipeline::BatchScorer scorer_;
};

}  // namespace runnel::server
