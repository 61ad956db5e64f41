// [jetstream] results: every result event of the pipeline — a served, throttled, failed
// or gone request, in the events table's order (event_hub.hpp) — published to
// `<results>.<client>` with the request's id, status, error, model version, outputs and
// client as JSON, and the header Nats-Msg-Id "<pipeline>:<txid-id-ord>", so that a
// stream capturing the subjects drops an event published twice within its duplicate
// window. A subscriber follows its client's subject.
//
// One process publishes at a time (a session advisory lock); the others wait to take
// over. After each chunk the server has received (flush), its last position is stored
// in runnel_<p>_published; a process that takes over, or starts again, resumes after
// it: the events published after the stored position come again and the duplicate
// window drops them (it must outlast a takeover: JetStream's default is 2 minutes). The
// first publisher starts at the newest event when it starts (before its workers serve):
// results from before publishing was configured are not sent.
//
// Thread safety: Start/Stop from one thread; RunOnce from one thread at a time.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "runnel/nats/jetstream.hpp"
#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/postgres/connection.hpp"
#include "runnel/server/event_hub.hpp"

namespace runnel::server {

class ResultEventReader;

class JetStreamResults {
 public:
  // Precondition: config.jetstream is set with a `results` prefix; the pipeline is
  // migrated.
  JetStreamResults(const pipeline::PipelineConfig& config, std::string conninfo);
  ~JetStreamResults();  // stops
  JetStreamResults(const JetStreamResults&) = delete;
  JetStreamResults& operator=(const JetStreamResults&) = delete;

  // Connects to PostgreSQL and NATS. Throws Error (Unavailable, Database).
  void Connect();
  // Connects; the first publisher of the pipeline stores where to start (results from
  // now on: call before serving); then rounds on a thread until Stop (failures logged,
  // retried). Throws as Connect does.
  void Start();
  void Stop();
  // For a run that ends by itself (until-idle): once Start's rounds find nothing new to
  // publish (or another process leads) they end; then, or after `limit`, stops.
  void Finish(std::chrono::milliseconds limit);

  // One round: takes the lead when free, then publishes up to `limit` new events.
  // Returns how many it published (0 when another process leads or nothing is new).
  size_t RunOnce(int64_t limit = 1000);
  bool leading() const { return leading_; }
  uint64_t published() const { return published_.load(); }

  // A client value as one subject token: letters, digits, '_' and '-' as they are,
  // other bytes as %XX; "_" for none.
  static std::string SubjectToken(const std::optional<std::string>& client);

 private:
  void Loop();
  void Anchor();
  EventPosition StoredPosition();

  const pipeline::PipelineConfig& config_;
  const pipeline::JetStreamConfig& js_config_;
  std::string conninfo_;
  pipeline::SchemaNames names_;
  std::unique_ptr<postgres::Connection> conn_;
  std::unique_ptr<nats::JetStream> js_;
  std::unique_ptr<ResultEventReader> reader_;
  bool leading_ = false;
  EventPosition position_;
  std::atomic<uint64_t> published_{0};
  std::atomic<bool> stop_{false};
  std::atomic<bool> finish_{false};  // end the rounds once nothing is new
  std::atomic<bool> ended_{false};   // the rounds have ended
  std::thread thread_;
};

}  // namespace runnel::server
