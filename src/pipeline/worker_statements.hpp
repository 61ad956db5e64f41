// The statements one worker runs, built once per worker from the pipeline, and the
// readers of their rows. See worker.hpp for the order in which a batch runs them.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/pipeline/request_keys.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/pipeline/serving_stages.hpp"
#include "runnel/postgres/connection.hpp"

namespace runnel::pipeline {

// The claim returns two kinds of rows, told apart by `found`: one per range of claimed
// keys (found NULL: key = its first key, hi = one past its last, NULL when the range
// runs to the largest bigint, see KeyRangeSql; the queue row's enqueue time, job, seq
// and attempts), and one per source row found in those ranges (found true: the row's
// request id, client, data type and input columns as the table stores them, for
// mapped keys its key as text for messages, and with update capture the version of
// its watched columns, see GuardsWriteBack). Columns by position, named here.
struct ClaimColumns {
  static constexpr int kKey = 0, kEnqueued = 1, kJob = 2, kFound = 3, kClient = 4, kDataType = 5, kFirstInput = 6;
  // `inputs` numeric input columns, then `texts` text columns (as text).
  ClaimColumns(size_t inputs, size_t texts)
      : first_text(static_cast<int>(kFirstInput + inputs)),
        seq(first_text + static_cast<int>(texts)),
        hi(seq + 1),
        attempts(seq + 2),
        label(seq + 3),
        version(seq + 4) {}
  int first_text, seq, hi, attempts, label, version;
};

// With update capture and write-back, a row may change again between a batch's claim
// and its write-back, and the newer change's request may even be served first: the
// write-back then applies only to rows whose watched columns (CaptureUpdateColumns)
// are still as claimed — a hash of them, the row version, read by the claim and sent
// back with the outputs. A row changed since is left to its newer request, and this
// one is recorded `superseded` (never over an existing result).
bool GuardsWriteBack(const PipelineConfig& config);

// What one claim read: the claimed ranges and the source rows by key.
struct ClaimRows {
  std::vector<ClaimedRange> ranges;
  std::vector<std::pair<int64_t, int>> source;  // key, row of the result, in key order
  size_t queue_rows = 0;                        // distinct queue rows claimed
};
// Reads a claim's result. Throws Error(InvalidInput) for a queue row that holds a key
// range unbounded below (Runnel's capture writes bounded ones).
ClaimRows ReadClaim(const postgres::Result& rows, const ClaimColumns& columns, const std::string& queue);

struct WorkerStatements {
  // The parameters of every results statement: $1 keys, $2 status, $3 error, $4
  // enqueued (epoch s), $5 model version, $6 sqlstate, $7 attempts, then one float8[]
  // per output column, then (GuardsWriteBack) the row versions, then
  // (Runnel-evaluated rules) from, to and the product keys.
  static constexpr int kFirstOutputParam = 8;
  static constexpr int kFirstOutputParamLean = 6;  // write_lean: no $6 sqlstate, $7 attempts

  // The write statement's variants: plain insert or upsert, [small catalogue], and
  // with the rule's products as parameters (see Build).
  struct Write {
    std::string results[2], upsert[2];
    std::string rule_results, rule_upsert;
    const std::string& For(bool upsert_mode, bool by_rule, bool small) const {
      return by_rule ? (upsert_mode ? rule_upsert : rule_results) : (upsert_mode ? upsert[small] : results[small]);
    }
  };
  std::string claim, jobs, catalogue;
  Write write;
  // The same without the sqlstate and attempts parameters (their columns' defaults):
  // for batches of first attempts where nothing has failed yet.
  Write write_lean;
  // The same, marking each source row as it is updated in the session's temporary
  // sequence pg_temp.runnel_mark (setval is not undone by a rollback): after a refusal
  // the sequence names the row being written. Empty without write-back.
  Write write_marked;
  static constexpr const char* kCreateMark =
      "CREATE TEMP SEQUENCE IF NOT EXISTS runnel_mark MINVALUE -9223372036854775808 MAXVALUE 9223372036854775807";
  static constexpr const char* kReadMark = "SELECT last_value FROM pg_temp.runnel_mark";
  std::string defer;                       // back to the queue: $1 keys, $2 jobs (text), $3 enqueued, $4 attempts
  std::string probe_locked;                // the keys of $1 whose source rows this transaction can lock now
  std::string publish;                     // $1 the served keys: an event row and NOTIFYs on the served channel
  static constexpr int kNotifyKeys = 400;  // keys per NOTIFY payload (20 digits and a comma each)

  static WorkerStatements Build(const PipelineConfig& config, const SchemaNames& names, const RequestKeys& keys,
                                const std::vector<size_t>& write_back_output, int64_t small_catalogue);
};

}  // namespace runnel::pipeline
