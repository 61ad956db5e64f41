// The pipeline file: one TOML file declaring a workload. Format (see
// docs/pipeline-format.md for the full reference):
//
//   name = "needs"
//   [source]
//   table   = "needs"                  # the table whose inserts are requests
//   key     = "id"                     # the key column, or up to 4: ["tenant", "id"]
//   columns = ["age", "wealth", ...]   # numeric input columns
//   [model]
//   path    = "model.h5"               # relative to this file; --model overrides
//   outputs = ["risk_propensity"]      # names of the model's output columns
//   labels  = ["queue"]                # optional: outputs that are class labels (text)
//   tokenizer = "tokenizer.json"       # optional: a transformer's Hugging Face tokenizer
//   max_tokens = 256                   # optional: tokens per text (default: the file's)
//   labels_file = "labels.txt"         # optional: logits' classes (or config.json's id2label)
//   name    = "needs"                  # optional: serve the registry's model stream
//   type_column = "data_type"          # optional: one registry model per data type
//   [[derived]]                        # named expressions, in order
//   name = "financial_status"
//   expr = "financial_education * ln(wealth)"
//   [features]
//   inputs = ["age", "box_cox(income, 0.30)", ...]   # the model input vector
//   means  = [...]                     # optional standard scaling, per feature column
//   scales = [...]
//   [output]
//   columns = ["risk_propensity", "financial_status"]  # model outputs or derived names
//   The real-time pipeline (`runnel run`) adds:
//   [source] client = "client_id"      # the quota key
//   [quota] max_requests = 1000        # per client; later requests are `throttled`
//           window = "1h"              # optional: per UTC-aligned hour ("30m", "1d"...)
//   [capture] mode = "queue"|"notify", channel = "table_insert", max_batch = 512, gather_ms = 0,
//             synchronous_commit = true, on = ["insert", "update"]
//   [serving] lock_timeout_ms = 2000, max_attempts = 5, event_retention_s = 3600
//   [write_back] columns = ["risk_propensity", "financial_status"]
//   [recommend] table = "products", key = "id_product", where = "p.risk <= r.risk_propensity"
#pragma once

#include <chrono>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

#include "runnel/features/features.hpp"

namespace runnel::pipeline {

enum class CaptureMode {
  Queue,   // statement-level trigger into a queue table: exactly once
  Notify,  // the reference per-row pg_notify trigger: at most once (compatibility)
};

struct RecommendConfig {
  std::string table;       // e.g. "products", aliased p in `where`
  std::string key_column;  // e.g. "id_product"
  std::string where;       // SQL over p (product) and r (the scored source row)
};

// [snapshots]: read-only DuckDB copies of the pipeline's results (src/snapshot).
struct SnapshotConfig {
  std::filesystem::path dir;                       // absolute; a pipeline's go in dir/<name>/
  std::chrono::seconds every{0};                   // `runnel run` takes one this often; 0: on demand only
  int keep = 3;                                    // newest versions kept by pruning
  double pace = 0.5;  // share of the time a copy works; it rests the rest, so serving keeps the cores
  std::chrono::milliseconds query_timeout{10000};  // per read-only query
  int64_t query_memory_mb = 256;                   // DuckDB's memory limit per query
  int64_t query_max_rows = 10000;                  // rows answered; more are cut off (truncated)
};

// What becomes of a JetStream record: a row of the table, which the workers then
// serve like any insert (kTable); or scored at once and its result stored keyed by
// its stream sequence, never a row (kDirect: server/jetstream_direct.hpp).
enum class JetStreamMode { kTable, kDirect };

// [jetstream]: requests taken from a NATS JetStream stream, exactly once
// (server/jetstream_ingest.hpp).
struct JetStreamConfig {
  JetStreamMode mode = JetStreamMode::kTable;
  std::vector<std::string> servers;   // nats:// or tls:// URLs
  std::string stream;                 // the stream holding the requests
  std::string subject;                // the consumer's filter subject
  std::string durable;                // the durable consumer every process shares (runnel-<name>)
  std::string dead_letter;            // where malformed messages go (runnel.<name>.dead)
  std::string results;                // results published to <results>.<client>; empty: not published
  int64_t batch = 2000;               // messages per fetch and transaction
  int64_t threads = 1;                // ingest threads per process, each with its connections
  std::chrono::seconds ack_wait{30};  // a message not acknowledged by then is delivered again
  std::filesystem::path credentials, ca_file, cert_file, key_file;  // absolute; empty: none
};

// `[model] inputs = { region = ["region"], numbers = ["income", "age"] }`: the model
// input named `input` takes these features, in order.
struct ModelInputBinding {
  std::string input;
  std::vector<std::string> features;
};

// `[model] output_from = { p_yes = "probabilities[1]" }`: output column `column` is
// element `element` (0 when not written) of the model output named `output`.
struct ModelOutputBinding {
  std::string column;
  std::string output;
  size_t element = 0;
};

// "probabilities[1]" -> {"probabilities", 1}; "label" -> {"label", 0}. Throws
// Error(Config) for an empty name, a malformed or negative index.
ModelOutputBinding ParseOutputReference(std::string column, std::string_view text);

struct PipelineConfig {
  std::filesystem::path file;  // the file read
  std::string name;            // an SQL identifier: names Runnel's tables runnel_<name>_*
  std::string table;
  // The columns that identify a row, 1 to 4 ([source] key): one integer column is the
  // request id itself; any other key is mapped to one (request_keys.hpp).
  std::vector<std::string> key_columns;
  std::string client_column;                  // empty: no per-client quota
  // HTTP clients may submit the key column although the database assigns it (a
  // default, identity or serial): off, as a client could take others' future keys.
  bool clients_set_keys = false;
  std::optional<int64_t> quota_max_requests;  // per client and window
  // The quota's window (pipeline/quota.hpp): 0 counts over all time.
  std::chrono::seconds quota_window{0};
  CaptureMode capture = CaptureMode::Queue;
  // [capture] on = ["insert", "update"]: an UPDATE (or upsert) that changes the key, an
  // input column or the model type column requests a new prediction for the row.
  bool capture_updates = false;
  std::string notify_channel = "table_insert";  // Notify mode only
  size_t max_batch = 512;
  // After a batch that emptied the queue (fewer than max_batch requests), a worker
  // waits this long before claiming again, so that under a steady stream batches grow
  // and each statement's fixed cost is spread over more requests. Costs up to this
  // much latency; 0 (the default) claims again at once.
  int64_t gather_ms = 0;
  // false: workers commit batches without waiting for the WAL flush (PostgreSQL's
  // synchronous_commit = off). A database crash can then undo the last fraction of a
  // second of serving — claims, results, quota and write-back together, so those
  // requests are served again — but never a request.
  bool synchronous_commit = true;
  // A worker waits at most this long for a row lock another transaction holds on a
  // source row it writes back (the session's lock_timeout); such a request is deferred
  // to a later batch, and failed after max_attempts deferrals.
  int64_t lock_timeout_ms = 2000;
  int32_t max_attempts = 5;
  // Result events (GET /v1/pipelines/{p}/events, Last-Event-ID) are kept this long.
  int64_t event_retention_s = 3600;
  std::vector<std::string> write_back;  // outputs written to same-named source columns
  std::optional<RecommendConfig> recommend;
  std::optional<std::filesystem::path> model_path;  // absolute once loaded
  // Registry name: serve the model stream's current version of this model (the file
  // at model_path seeds the registry when it holds no version yet). Empty: file only.
  std::string model_name;
  // Keyed serving: the source column whose value picks the model (one per data type).
  std::string model_type_column;
  // A positional model with more outputs than [model].outputs predicts the index of
  // its largest output (a classifier's class scores); the other outputs are NULL.
  bool class_from_argmax = false;
  std::vector<std::string> model_outputs;
  // [model] inputs: a model's inputs fed by name, each from features of [features]
  // inputs, in order (empty: the feature vector in the model's input order).
  std::vector<ModelInputBinding> model_inputs;
  // [model] output_from: each of model_outputs from a named model output's element
  // (empty: the model's outputs in order).
  std::vector<ModelOutputBinding> model_output_from;
  // [model] labels: the model outputs that are a classifier's class label, stored and
  // written back as text (the model must give labels there: OutputPlan checks).
  std::vector<std::string> label_outputs;
  // [model] tokenizer / max_tokens / labels_file (absolute once loaded): a
  // transformer's token inputs and the classes of its logits (model::LoadOptions).
  std::optional<std::filesystem::path> model_tokenizer, model_labels_file;
  size_t model_max_tokens = 0;
  features::FeatureSpec features;
  std::vector<std::string> output_columns;
  SnapshotConfig snapshots;
  std::optional<JetStreamConfig> jetstream;
};

// Reads and checks a pipeline file. Throws Error(Config) naming the file, line and
// key; Error(Io) when it cannot be read. Expressions are checked by compiling them.
PipelineConfig LoadPipelineConfig(const std::filesystem::path& file);

// Whether output column `column` is one of [model].labels: stored as text.
bool IsLabelOutput(const PipelineConfig& config, std::string_view column);

// The columns whose change makes an UPDATE a request (capture_updates): the key, the
// input columns and the model type column, each once.
std::vector<std::string> CaptureUpdateColumns(const PipelineConfig& config);

}  // namespace runnel::pipeline
