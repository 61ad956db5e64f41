// Result events as the pipeline's events table orders them (runnel/server/event_hub.hpp:
// each committed batch's served keys, positions (txid, id, ord)), with each request's
// result and client: read by the SSE hub and by the JetStream results publisher.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/pipeline/request_keys.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/postgres/connection.hpp"
#include "runnel/server/event_hub.hpp"

namespace runnel::server {

struct ResultEvent {
  EventPosition pos;
  std::optional<std::string> client;  // the request's client, when the pipeline has one
  // {"id", "status", "error", "model_version", "outputs", "finished_at"}: what a
  // subscriber receives.
  nlohmann::json data;
};

// Thread safety: immutable; Read and Head on the caller's connection.
class ResultEventReader {
 public:
  ResultEventReader(const pipeline::PipelineConfig& config, const pipeline::RequestKeys& keys);

  // The events after `after` up to `upto` (inclusive), at most `limit`, in order, of
  // transactions older than every running one (no later commit can precede them).
  std::vector<ResultEvent> Read(postgres::Connection& conn, const EventPosition& after, const EventPosition& upto,
                                int64_t limit) const;
  // The newest event no later commit can precede (all zero when there is none).
  EventPosition Head(postgres::Connection& conn) const;

 private:
  ResultEvent ToEvent(const postgres::Result& r, int i) const;

  const pipeline::PipelineConfig& config_;
  pipeline::SchemaNames names_;
  std::string read_sql_;
};

}  // namespace runnel::server
