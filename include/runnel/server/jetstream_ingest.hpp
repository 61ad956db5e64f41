// Requests from a NATS JetStream stream ([jetstream] in the pipeline file) inserted
// into the pipeline's source table exactly once; from there they take the path of any
// insert (capture trigger, queue, workers, results, write-back).
//
// Each round fetches up to `batch` messages from the durable pull consumer that every
// Runnel process of the pipeline shares (a work queue), then in one transaction:
// looks up the messages' (stream, sequence) in runnel_<p>_jetstream — a message
// delivered again after a crash between commit and acknowledgement is found there and
// only acknowledged —, inserts the new records (RecordWriter), and records each
// record with the request id it became; commits; then acknowledges. A message carries
// one record, a JSON object of the table's columns checked as the HTTP API checks a
// record, or a batch of them: a JSON array, or NDJSON under the header Content-Type:
// application/x-ndjson (ParseRecords: at most kMaxRecordsPerRequest). A record that is
// not one, or whose row the database refuses for the row's sake (a CHECK constraint, a
// value out of range: postgres/sqlstate.hpp), is recorded with its reason and
// published to the dead-letter subject with the reason in its Runnel-Error header (a
// batch's record as its own letter); the others are served. A message refused whole
// (malformed, or every record refused) is terminated, the others acknowledged.
//
// Start's rounds fetch the next batch while they take one in (a second thread, the
// consumer used by one fetch at a time); a round of first deliveries skips the lookup
// (only a message delivered before can have been taken in before; the table's primary
// key catches a consumer made anew, and the round is done again with it).
//
// With [jetstream] mode = "direct" the valid records are not inserted: they are scored
// in the round's transaction and their results stored in runnel_<p>_jetstream
// (DirectScoring, jetstream_direct.hpp), published after the commit (with `results`)
// and before the acknowledgements, and published again when a message comes again.
//
// Thread safety: Start/Stop from one thread; RunOnce from one thread at a time.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "runnel/core/mutex.hpp"
#include "runnel/nats/jetstream.hpp"
#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/postgres/connection.hpp"
#include "runnel/server/jetstream_direct.hpp"
#include "runnel/server/metrics.hpp"
#include "runnel/server/record_schema.hpp"

namespace runnel::server {

// How a [jetstream] pipeline reaches NATS (servers, credentials and TLS files), as the
// client `name` shown by the server.
nats::ConnectOptions ConnectOptionsFor(const pipeline::JetStreamConfig& config, const std::string& name);

class JetStreamIngest {
 public:
  struct Counts {
    uint64_t inserted = 0;    // records inserted
    uint64_t scored = 0;      // records scored without a row (mode "direct")
    uint64_t duplicates = 0;  // messages delivered again, already taken in
    uint64_t dead = 0;        // dead letters: messages refused whole, records of a batch refused
  };

  // Precondition: config.jetstream is set; the pipeline is migrated. `models` scores
  // the records in mode "direct" (required there; unused otherwise).
  JetStreamIngest(const pipeline::PipelineConfig& config, std::string conninfo,
                  std::shared_ptr<pipeline::ModelProvider> models = nullptr);
  ~JetStreamIngest();  // stops
  JetStreamIngest(const JetStreamIngest&) = delete;
  JetStreamIngest& operator=(const JetStreamIngest&) = delete;

  // Reads the table and connects to NATS, binding the consumer. Throws Error
  // (Unavailable: NATS or the stream cannot be reached; NotFound: no table).
  void Connect();
  // Runs rounds on a thread until Stop, a failed round logged and retried after a
  // backoff (NATS reconnects by itself; PostgreSQL is reconnected). Connects first:
  // throws as Connect does, except when NATS was reached but did not answer in time
  // (then the rounds bind the consumer).
  void Start();
  void Stop();

  // One round on the caller's thread, waiting up to `wait` for messages. Throws (then
  // nothing of the round is acknowledged: its messages come again).
  Counts RunOnce(std::chrono::milliseconds wait);
  // Where the rounds of Start's thread are counted (may be null), and whether they read
  // the consumer's state into it too (once a second; one thread of a process does).
  // Call before Start; `metrics` outlives this object.
  void SetMetrics(PipelineMetrics* metrics, bool read_consumer);
  // Skips acknowledging (tests: a process that died after its commit).
  void SetAcknowledge(bool acknowledge) { acknowledge_ = acknowledge; }

  Counts totals() const;
  // Whether Start's rounds expect nothing more for now (for `runnel run --until-idle`):
  // they last found the consumer drained — a fetch came back empty, then every message
  // of the stream was acknowledged (none pending, none delivered and unacknowledged),
  // so every message published before is in the table — or their last kFailedRounds
  // rounds failed (what is left is said by the caller). Any thread.
  static constexpr int kFailedRounds = 3;
  bool settled() const { return drained_.load() || failed_rounds_.load() >= kFailedRounds; }
  nats::JetStream& jetstream() { return *js_; }

 private:
  struct Taken;
  void Bind();
  std::vector<nats::Message> Fetch(std::chrono::milliseconds wait);
  // The rest of a round: classify, insert and record in one transaction, settle.
  Counts Take(std::vector<nats::Message> messages);
  void Classify(std::vector<Taken>& taken) const;
  std::string CheckRecord(nlohmann::json& record) const;
  struct SeenBefore {};  // thrown by Insert without its lookup: a message was taken in before
  void Insert(std::vector<Taken>& taken, bool careful, bool look_up);
  void InsertRows(std::vector<Taken>& taken, bool careful);
  void ScoreRecords(std::vector<Taken>& taken, bool careful);
  void LookUp(std::vector<Taken>& taken);
  void Record(const std::vector<Taken>& taken);
  void DeadLetters(const Taken& t, std::vector<nats::OutgoingMessage>& letters) const;
  void PublishResults();
  void Settle(std::vector<Taken>& taken, Counts& counts);
  void Loop();
  void ReportConsumer(std::chrono::steady_clock::time_point& next);
  void CheckDrained();

  const pipeline::PipelineConfig& config_;
  const pipeline::JetStreamConfig& js_config_;
  std::string conninfo_;
  pipeline::SchemaNames names_;
  RecordSchema schema_;
  std::unique_ptr<RecordWriter> writer_;
  std::shared_ptr<pipeline::ModelProvider> models_;
  std::unique_ptr<DirectScoring> direct_;  // mode "direct"
  std::vector<DirectResult> results_;      // of the round's transaction, published after its commit
  pipeline::BatchResult direct_tally_;     // what the round's transaction scored, for the metrics
  std::unique_ptr<postgres::Connection> conn_;
  std::unique_ptr<nats::JetStream> js_;
  std::unique_ptr<nats::PullConsumer> consumer_;
  bool acknowledge_ = true;
  PipelineMetrics* metrics_ = nullptr;
  bool read_consumer_ = false;
  std::atomic<bool> stop_{false};
  std::atomic<bool> drained_{false};
  std::atomic<int> failed_rounds_{0};  // in a row
  std::thread thread_;
  mutable Mutex mutex_;
  Counts totals_ GUARDED_BY(mutex_);
};

}  // namespace runnel::server
