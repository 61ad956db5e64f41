#include "runnel/pipeline/worker.hpp"

#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <span>
#include <thread>

#include "rule_evaluator.hpp"
#include "runnel/core/backoff.hpp"
#include "runnel/core/duration.hpp"
#include "runnel/core/error.hpp"
#include "runnel/core/thread_name.hpp"
#include "runnel/features/features.hpp"
#include "runnel/pipeline/outputs.hpp"
#include "runnel/pipeline/quota.hpp"
#include "runnel/pipeline/request_status.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/pipeline/scorer.hpp"
#include "runnel/pipeline/serving_stages.hpp"
#include "runnel/postgres/connection.hpp"
#include "worker_statements.hpp"

namespace runnel::pipeline {

using postgres::Params;
using postgres::QuoteIdentifier;

namespace {

double NowEpochSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// Thrown inside a batch when its plain results insert met a key that has a result
// already: the batch is served again with an upsert.
struct KeyServedBefore {};
// Thrown inside a batch written without a savepoint (no failure expected) when
// PostgreSQL refused it for a row's sake or a row lock: the transaction is lost, and
// the batch is served again carefully (chunks under savepoints).
struct RowsRefused {};

// The requests of one batch, index i for the i-th distinct key in key order.
struct Requests : Verdicts {
  std::vector<ClaimedKey> claimed;
  std::vector<bool> found;
  std::vector<std::optional<std::string>> clients, data_types;
  std::vector<std::string> labels;    // mapped keys: the row's key, for messages
  std::vector<int64_t> row_versions;  // GuardsWriteBack: as claimed

  size_t size() const { return claimed.size(); }
  void Resize(size_t n) {
    Verdicts::Resize(n);
    found.assign(n, false);
    clients.assign(n, std::nullopt);
    data_types.assign(n, std::nullopt);
    labels.assign(n, std::string());
    row_versions.assign(n, 0);
  }
  bool Deferred(size_t i) const { return status[i] == RequestStatus::kQueued; }
};

// Which requests count against their client's quota, and the decisions.
struct QuotaPlan {
  std::vector<bool> counted;
  std::map<std::string, int64_t> per_client;  // counted requests per client
  std::vector<bool> over;
};

// What a committed batch did, request by request, into `result` (deferred requests
// are not in it: they went back to the queue); failures are logged at warn.
void Tally(const Requests& req, BatchResult& result) {
  const size_t n = req.size();
  const double now = NowEpochSeconds();
  std::map<std::string, size_t> reasons;  // failed requests by SQLSTATE, for the log
  for (size_t i = 0; i < n; ++i) {
    if (req.Deferred(i)) continue;
    CountVerdict(req, i, result);
    if (req.status[i] == RequestStatus::kFailed) ++reasons[result.failed_sqlstates.back()];
    result.latencies_ms.push_back((now - req.claimed[i].enqueued) * 1000.0);
    result.keys.push_back(req.claimed[i].key);
  }
  if (result.failed > 0) {
    const auto first = std::find(req.status.begin(), req.status.end(), RequestStatus::kFailed) - req.status.begin();
    std::string states;
    for (const auto& [state, count] : reasons)
      states += fmt::format("{}{} x{}", states.empty() ? "" : ", ", state, count);
    spdlog::warn("{} request(s) of a batch of {} failed (SQLSTATE {}), e.g. {}", result.failed, n, states,
                 req.error[static_cast<size_t>(first)].value_or(""));
  }
}

class StageClock {
 public:
  explicit StageClock(double* stage_ms) : stage_ms_(stage_ms) {}
  void Lap(size_t stage) {
    const auto now = std::chrono::steady_clock::now();
    stage_ms_[stage] += std::chrono::duration<double, std::milli>(now - mark_).count();
    mark_ = now;
  }

 private:
  double* stage_ms_;
  std::chrono::steady_clock::time_point mark_ = std::chrono::steady_clock::now();
};

std::string ProcessName() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) host[0] = '\0';
  return fmt::format("{}:{}", host, getpid());
}

// Worker `index` of `pipeline`, as its thread and its session are named.
std::string WorkerName(size_t index, const std::string& pipeline) {
  return fmt::format("w{}:{}", index, pipeline);
}

}  // namespace

void CountVerdict(const Verdicts& verdicts, size_t i, BatchResult& result) {
  switch (*verdicts.status[i]) {
    case RequestStatus::kDone: ++result.done; break;
    case RequestStatus::kThrottled: ++result.throttled; break;
    case RequestStatus::kFailed:
      ++result.failed;
      result.failed_sqlstates.push_back(verdicts.sqlstate[i].value_or(kInvalidDataState));
      break;
    case RequestStatus::kGone: ++result.gone; break;
    case RequestStatus::kQueued:
    case RequestStatus::kSuperseded: break;
  }
}

struct Worker::State {
  PipelineConfig config;
  SchemaNames names;
  std::string conninfo;
  BatchScorer scorer;
  std::vector<size_t> write_back_output;  // per write-back column: index into output_columns
  std::vector<ColumnLimit> write_back_limits;
  RequestKeys request_keys;  // learnt with the table's columns (CheckSchema)
  WorkerStatements sql;      // built for `request_keys`
  std::optional<RuleEvaluator> rule;
  std::unique_ptr<postgres::Connection> conn;
  bool small_catalogue = false;  // checked on connecting and every 256 batches
  int batches_since_check = 0;
  int upsert_batches = 0;         // after a key turned out to have a result: upsert for a while
  int64_t lock_rows = 4;          // queue rows to lock per claim: adapts to their size
  double write_failure_rate = 0;  // of requests failing at write-back, decaying over batches
  bool mark_available = false;    // pg_temp.runnel_mark exists (WorkerStatements::write_marked)
  std::vector<int64_t> notified;  // notify mode: keys announced and not yet served
  const std::string process = ProcessName();
  std::string worker_name;  // WorkerName: its thread's, and its session's (application_name)

  State(const PipelineConfig& c, std::shared_ptr<ModelProvider> p, std::string info, size_t index)
      : config(c),
        names(NamesFor(c)),
        conninfo(std::move(info)),
        scorer(config, std::move(p)),
        worker_name(WorkerName(index, c.name)) {
    for (const auto& column : config.write_back) {
      write_back_output.push_back(
          static_cast<size_t>(std::find(config.output_columns.begin(), config.output_columns.end(), column) -
                              config.output_columns.begin()));
    }
  }

  // ---- connection and setup ----

  void Connect() {
    conn.reset();
    // Opened by RunPipeline's thread at first, so named explicitly.
    auto fresh = std::make_unique<postgres::Connection>(postgres::Connection::Open(conninfo, worker_name));
    // Short statements over one batch: JIT compilation (triggered by the planner's
    // guesses for unnest/generate_series) would cost more than it saves.
    fresh->Exec("SET jit = off");
    if (!config.synchronous_commit) fresh->Exec("SET synchronous_commit = off");
    fresh->Exec(fmt::format("SET lock_timeout = {}", config.lock_timeout_ms));
    const std::string channel = config.capture == CaptureMode::Queue ? names.channel : config.notify_channel;
    fresh->Exec("LISTEN " + QuoteIdentifier(channel));
    // Isolating a refused row in one round trip needs a temporary sequence; without
    // the right to create one, failing chunks are bisected.
    try {
      fresh->Exec(WorkerStatements::kCreateMark);
      mark_available = true;
    } catch (const postgres::DatabaseError& e) {
      if (e.IsConnectionLost()) throw;
      spdlog::debug("no temporary sequence ({}): refused rows are found by bisection", e.what());
      mark_available = false;
    }
    CheckSchema(*fresh);
    conn = std::move(fresh);
    CheckCatalogue();
  }

  // The tables as serving needs them: input columns of numeric types, write-back
  // columns and the catalogue present. Learns the write-back columns' limits.
  // Throws Error(InvalidInput) naming what is wrong, Error(Config) for a schema a newer
  // Runnel migrated (CheckNotNewer).
  void CheckSchema(postgres::Connection& c) {
    CheckNotNewer(c, config);
    const auto types = SourceColumns(c, config);
    if (types.empty()) {
      throw Error(ErrorCode::InvalidInput, fmt::format("table '{}' does not exist", config.table));
    }
    CheckInputTypes(config, types);
    request_keys = RequestKeys::Resolve(config, types);
    sql = WorkerStatements::Build(config, names, request_keys, write_back_output, RuleEvaluator::kSmallCatalogue);
    write_back_limits.clear();
    for (const auto& column : config.write_back) {
      const auto type = types.find(column);
      if (type == types.end()) {
        throw Error(ErrorCode::InvalidInput,
                    fmt::format("write-back column '{}' of '{}' does not exist", column, config.table));
      }
      write_back_limits.push_back(ColumnLimitFor(type->second));
    }
    if (config.recommend) {
      if (!postgres::TableExists(c, config.recommend->table)) {
        throw Error(ErrorCode::InvalidInput,
                    fmt::format("recommendation catalogue '{}' does not exist", config.recommend->table));
      }
    }
  }

  // Whether the recommendation catalogue is small enough to copy once per statement.
  void CheckCatalogue() {
    batches_since_check = 0;
    if (!sql.catalogue.empty()) small_catalogue = conn->ExecPrepared(sql.catalogue, Params()).Get<bool>(0, 0);
  }

  // ---- stage 1: claim ----

  // Claims a batch and reads its requests and their inputs (into scorer.inputs()).
  Requests Claim(const std::vector<int64_t>& taken) {
    Params params;
    if (config.capture == CaptureMode::Queue) {
      params.Add(static_cast<int64_t>(config.max_batch)).Add(lock_rows);
    } else {
      params.AddArray(taken);
    }
    const auto rows = conn->ExecPrepared(sql.claim, params);
    const bool guarded = GuardsWriteBack(config);
    const size_t input_count = config.features.input_columns.size();
    const size_t text_count = config.features.text_columns.size();
    const ClaimColumns columns(input_count, text_count);
    ClaimRows claim = ReadClaim(rows, columns, names.queue);
    if (claim.queue_rows > 0) {
      // Lock about as many queue rows as fill a batch at their current size.
      size_t keys = 0;
      for (const auto& range : claim.ranges) keys += static_cast<size_t>(range.last - range.first) + 1;
      const double per_row = static_cast<double>(keys) / static_cast<double>(claim.queue_rows);
      lock_rows = std::clamp<int64_t>(static_cast<int64_t>(std::ceil(static_cast<double>(config.max_batch) / per_row)),
                                      1, static_cast<int64_t>(config.max_batch));
    }
    // The capture trigger writes at most QueueChunk keys per queue row and a claim
    // takes at most max_batch keys (<= 100,000): anything far larger was written by hand.
    Requests req;
    req.claimed = ExpandClaim(claim.ranges, 1'000'000, names.queue);
    const size_t n = req.size();
    req.Resize(n);
    CheckInputColumnTypes(rows, input_count);
    ColumnBatch& batch = scorer.inputs();
    batch.Reset(config.features.input_columns, 0, config.features.text_columns);
    auto next_source = claim.source.begin();
    for (size_t i = 0; i < n; ++i) {
      const int64_t key = req.claimed[i].key;
      while (next_source != claim.source.end() && next_source->first < key) ++next_source;
      const bool has_row = next_source != claim.source.end() && next_source->first == key;
      req.found[i] = has_row;
      const int r = has_row ? next_source->second : -1;
      if (has_row) {
        req.clients[i] = rows.GetOptional<std::string>(r, ClaimColumns::kClient);
        req.data_types[i] = rows.GetOptional<std::string>(r, ClaimColumns::kDataType);
        if (request_keys.mapped()) req.labels[i] = rows.Get<std::string>(r, columns.label);
        if (guarded) req.row_versions[i] = rows.Get<int64_t>(r, columns.version);
      }
      for (size_t c = 0; c < input_count; ++c) {
        const int column = static_cast<int>(ClaimColumns::kFirstInput + c);
        const bool null = !has_row || rows.IsNull(r, column);
        double value = null ? 0.0 : rows.Get<double>(r, column);
        if (!null && std::isinf(value) && rows.ColumnType(column) == postgres::type_oid::kNumeric && !req.status[i]) {
          req.Fail(i, kOutOfRangeState,
                   fmt::format("{}: the value of input column '{}' is out of range for double precision", Label(req, i),
                               config.features.input_columns[c]));
          value = 0.0;
        }
        batch.values[c].push_back(value);
        batch.nulls[c].push_back(null ? 1 : 0);
      }
      for (size_t c = 0; c < text_count; ++c) {
        const int column = columns.first_text + static_cast<int>(c);
        const bool null = !has_row || rows.IsNull(r, column);
        batch.texts[c].push_back(null ? std::string() : rows.Get<std::string>(r, column));
        batch.text_nulls[c].push_back(null ? 1 : 0);
      }
    }
    batch.rows = n;
    return req;
  }

  // A column altered to a type the features cannot read shows in the claim's result:
  // pause (the schema check then names the column and its type).
  void CheckInputColumnTypes(const postgres::Result& rows, size_t input_count) const {
    using namespace postgres::type_oid;
    for (size_t c = 0; c < input_count; ++c) {
      const Oid type = rows.ColumnType(static_cast<int>(ClaimColumns::kFirstInput + c));
      if (type != kInt2 && type != kInt4 && type != kInt8 && type != kFloat4 && type != kFloat8 && type != kNumeric) {
        throw Error(ErrorCode::InvalidInput, fmt::format("input column '{}' of '{}' is no longer numeric (type oid {})",
                                                         config.features.input_columns[c], config.table, type));
      }
    }
  }

  // The request's key for messages: "id = 5", "loan_id = '8f0c...'"; a mapped key
  // whose row is gone has only its request id.
  std::string Label(const Requests& req, size_t i) const {
    if (!request_keys.mapped()) return request_keys.Label(req.claimed[i].key);
    if (req.labels[i].empty()) return fmt::format("request id {} in {}", req.claimed[i].key, names.keys);
    return req.labels[i];
  }

  // Requests that cannot be served whatever the model says: no row, no client.
  void MarkUnservable(Requests& req) const {
    for (size_t i = 0; i < req.size(); ++i) {
      if (req.status[i]) continue;
      if (!req.found[i]) {
        // Deleted before it was served (or never committed): nothing to score, no failure.
        req.status[i] = RequestStatus::kGone;
        req.error[i] = fmt::format("row with {} was deleted from {} before it was served", Label(req, i), config.table);
      } else if (config.quota_max_requests && !req.clients[i] && !req.claimed[i].job) {
        req.Fail(i, kNullClientState, fmt::format("{}: column '{}' is NULL", Label(req, i), config.client_column));
      }
    }
  }

  // ---- stage 2: quota ----

  QuotaPlan PlanQuota(const Requests& req) const {
    QuotaPlan plan;
    plan.counted.assign(req.size(), false);
    if (!config.quota_max_requests) return plan;
    // Rescoring by a batch job is not a client's request: it does not count.
    for (size_t i = 0; i < req.size(); ++i) {
      plan.counted[i] = !req.status[i] && !req.claimed[i].job;
      if (plan.counted[i]) ++plan.per_client[*req.clients[i]];
    }
    return plan;
  }

  std::map<std::string, int64_t> ReadCounters(const QuotaPlan& plan) {
    return quota::Counted(*conn, config, plan.per_client);
  }

  // Advances the counters by the plan; returns what they held before this batch.
  std::map<std::string, int64_t> AdvanceCounters(const QuotaPlan& plan) {
    return quota::Advance(*conn, config, plan.per_client);
  }

  void ApplyThrottling(Requests& req, const QuotaPlan& plan) const {
    for (size_t i = 0; i < req.size(); ++i) {
      if (!plan.over[i]) continue;
      req.status[i] = RequestStatus::kThrottled;
      req.error[i] = quota::OverQuotaMessage(config, *req.clients[i]);
    }
  }

  // Deferred requests do not count now (they count when served); then advances the
  // counters (optimistic) or corrects them (pessimistic: advanced at stage 2). Returns
  // false when another worker moved a counter so that a decision changes.
  bool SettleQuota(const Requests& req, QuotaPlan& plan, bool optimistic) {
    if (plan.per_client.empty()) return true;
    std::map<std::string, int64_t> uncounted;
    for (size_t i = 0; i < req.size(); ++i) {
      if (!plan.counted[i] || !req.Deferred(i)) continue;
      plan.counted[i] = false;
      --plan.per_client[*req.clients[i]];
      --uncounted[*req.clients[i]];
    }
    if (!optimistic) {
      if (!uncounted.empty()) {
        quota::Advance(*conn, config, uncounted);
      }
      return true;
    }
    std::erase_if(plan.per_client, [](const auto& entry) { return entry.second == 0; });
    if (plan.per_client.empty()) return true;
    // Counters before job rows, as the pessimistic path takes them: one lock order.
    const auto now = Throttle(req.clients, plan.counted, AdvanceCounters(plan), *config.quota_max_requests);
    for (size_t i = 0; i < req.size(); ++i) {
      if (plan.counted[i] && now[i] != plan.over[i]) return false;
    }
    return true;
  }

  // ---- stage 3: features, model, write-back limits ----

  ScoredOutputs Score(Requests& req) {
    return scorer.Score(req, req.data_types, [&](size_t i) { return Label(req, i); });
  }

  // Outputs their write-back column cannot hold fail here, as PostgreSQL would refuse
  // them, without costing the batch a failed statement. The columns' types are read
  // again before the first refusal is recorded: they may have been altered.
  void CheckWriteBack(Requests& req, const ScoredOutputs& out) {
    bool fresh = false;
    auto refusal_for = [&](size_t w, double value) {
      auto refusal = RefusalFor(write_back_limits[w], value);
      if (refusal && !fresh) {
        CheckSchema(*conn);
        fresh = true;
        refusal = RefusalFor(write_back_limits[w], value);
      }
      return refusal;
    };
    for (size_t i = 0; i < req.size(); ++i) {
      if (req.status[i] != RequestStatus::kDone) continue;
      for (size_t w = 0; w < config.write_back.size(); ++w) {
        const auto& value = out.values[write_back_output[w]][i];
        if (!value) continue;
        if (auto refusal = refusal_for(w, *value)) {
          req.Fail(i, kOutOfRangeState,
                   fmt::format("{}: output {} = {} cannot be written back to column '{}': {}", Label(req, i),
                               config.write_back[w], *value, config.write_back[w], *refusal));
          break;
        }
      }
    }
  }

  // ---- stage 4: write-back, results, recommendations ----

  // The results statement's parameters for the requests `rows`.
  Params WriteParams(const Requests& req, const ScoredOutputs& out, std::span<const size_t> rows, bool by_rule,
                     bool lean = false) const {
    std::vector<int64_t> keys, attempts;
    std::vector<std::optional<std::string>> status, error, versions, sqlstate;
    std::vector<std::optional<double>> enqueued;
    for (size_t i : rows) {
      keys.push_back(req.claimed[i].key);
      status.emplace_back(RequestStatusName(*req.status[i]));
      error.push_back(req.error[i]);
      enqueued.emplace_back(req.claimed[i].enqueued);
      versions.push_back(req.status[i] == RequestStatus::kDone ? out.versions[i] : std::nullopt);
      if (lean) continue;  // the columns' defaults: nothing to send
      sqlstate.push_back(req.sqlstate[i]);
      attempts.push_back(req.claimed[i].attempts + 1);
    }
    Params params;
    params.AddArray(keys).AddArray(status).AddArray(error).AddArray(enqueued).AddArray(versions);
    if (!lean) params.AddArray(sqlstate).AddArray(attempts);
    for (size_t o = 0; o < out.values.size(); ++o) {
      if (IsLabelOutput(config, config.output_columns[o])) {
        std::vector<std::optional<std::string>> labels;
        labels.reserve(rows.size());
        for (size_t i : rows) labels.push_back(out.labels[o][i]);
        params.AddArray(labels);
        continue;
      }
      std::vector<std::optional<double>> values;
      values.reserve(rows.size());
      for (size_t i : rows) values.push_back(out.values[o][i]);
      params.AddArray(values);
    }
    if (GuardsWriteBack(config)) {
      std::vector<int64_t> versions_claimed;
      for (size_t i : rows) versions_claimed.push_back(req.row_versions[i]);
      params.AddArray(versions_claimed);
    }
    if (by_rule) {
      // Each request's slice of the rule's product keys, re-cut for this subset.
      std::vector<int64_t> from, to, products;
      for (size_t i : rows) {
        from.push_back(static_cast<int64_t>(products.size()) + 1);
        for (int64_t k = rule->from()[i]; k <= rule->to()[i]; ++k) {
          products.push_back(rule->keys()[static_cast<size_t>(k - 1)]);
        }
        to.push_back(static_cast<int64_t>(products.size()));
      }
      params.AddArray(from).AddArray(to).AddArray(products);
    }
    return params;
  }

  // Which of the done requests among `rows` wait for a row lock another transaction
  // holds: they go back to the queue (kQueued), or fail after max_attempts. Returns
  // whether any did.
  bool DeferLocked(Requests& req, std::span<const size_t> rows) {
    std::vector<int64_t> keys;
    for (size_t i : rows) {
      if (req.status[i] == RequestStatus::kDone) keys.push_back(req.claimed[i].key);
    }
    if (keys.empty()) return false;
    auto lockable = conn->ExecPrepared(sql.probe_locked, Params().AddArray(keys));
    std::set<int64_t> lockable_keys;
    for (int r = 0; r < lockable.rows(); ++r) lockable_keys.insert(lockable.Get<int64_t>(r, 0));
    bool any = false;
    for (size_t i : rows) {
      if (req.status[i] != RequestStatus::kDone || lockable_keys.contains(req.claimed[i].key)) continue;
      any = true;
      const int32_t attempts = req.claimed[i].attempts + 1;
      if (config.capture == CaptureMode::Queue && attempts < config.max_attempts) {
        req.status[i] = RequestStatus::kQueued;
        continue;
      }
      req.Fail(i, postgres::kLockNotAvailable,
               fmt::format("{}: the row stayed locked by another transaction through {} attempt(s) of {} ms "
                           "(lock_timeout)",
                           Label(req, i), attempts, config.lock_timeout_ms));
    }
    return any;
  }

  // Writes the requests `rows` (skipping deferred ones) under a savepoint. Returns the
  // database's reason when it refuses them for a reason about rows; the savepoint is
  // then rolled back. Row locks held elsewhere defer their requests and the rest is
  // written. Throws KeyServedBefore (plain insert only) and every other error.
  std::optional<RowFailure> WriteRows(Requests& req, const ScoredOutputs& out, std::span<const size_t> rows,
                                      bool upsert, bool by_rule) {
    const bool marked = mark_available && !sql.write_marked.results[0].empty();
    const std::string& statement = (marked ? sql.write_marked : sql.write).For(upsert, by_rule, small_catalogue);
    for (int round = 0;; ++round) {
      std::vector<size_t> live;
      for (size_t i : rows) {
        if (!req.Deferred(i)) live.push_back(i);
      }
      if (live.empty()) return std::nullopt;
      conn->Exec("SAVEPOINT runnel_write");
      try {
        conn->ExecPrepared(statement, WriteParams(req, out, live, by_rule));
        return std::nullopt;
      } catch (const postgres::DatabaseError& e) {
        if (e.IsConnectionLost()) throw;
        std::optional<int64_t> mark;
        if (marked) {
          mark = conn->Exec(std::string("ROLLBACK TO SAVEPOINT runnel_write; RELEASE SAVEPOINT runnel_write; ") +
                            WorkerStatements::kReadMark)
                     .GetOptional<int64_t>(0, 0);
        } else {
          conn->Exec("ROLLBACK TO SAVEPOINT runnel_write; RELEASE SAVEPOINT runnel_write");
        }
        if (e.sqlstate() == postgres::kLockNotAvailable && round < 3 && DeferLocked(req, live)) continue;
        if (!upsert && e.sqlstate() == postgres::kUniqueViolation) throw KeyServedBefore{};
        if (e.failure_class() != postgres::FailureClass::kRow) throw;
        RowFailure failure{0, e.sqlstate(), e.primary(), std::nullopt};
        // The row being written when PostgreSQL refused (live is in key order).
        const auto at = mark ? std::lower_bound(live.begin(), live.end(), *mark,
                                                [&](size_t i, int64_t key) { return req.claimed[i].key < key; })
                             : live.end();
        if (at != live.end() && req.claimed[*at].key == *mark) failure.blamed = *at;
        return failure;
      }
    }
  }

  // Writes the requests `rows` in one statement, without a savepoint. Throws
  // RowsRefused (the transaction is then lost) when PostgreSQL refuses them for a
  // row's sake or a row lock, KeyServedBefore (plain insert only), and the rest.
  void WriteWhole(Requests& req, const ScoredOutputs& out, std::span<const size_t> rows, bool upsert, bool by_rule) {
    // Lean when every request is a first attempt and none has failed: the columns'
    // defaults say the same.
    const bool lean = std::all_of(rows.begin(), rows.end(),
                                  [&](size_t i) { return req.claimed[i].attempts == 0 && !req.sqlstate[i]; });
    const std::string& statement = (lean ? sql.write_lean : sql.write).For(upsert, by_rule, small_catalogue);
    try {
      conn->ExecPrepared(statement, WriteParams(req, out, rows, by_rule, lean));
    } catch (const postgres::DatabaseError& e) {
      if (e.IsConnectionLost()) throw;
      if (!upsert && e.sqlstate() == postgres::kUniqueViolation) throw KeyServedBefore{};
      if (e.sqlstate() == postgres::kLockNotAvailable || e.failure_class() == postgres::FailureClass::kRow) {
        spdlog::debug("batch of {}: {}; serving it again in chunks under savepoints", rows.size(), e.what());
        write_failure_rate = std::max(write_failure_rate, 1.0 / static_cast<double>(rows.size()));
        throw RowsRefused{};
      }
      throw;
    }
  }

  // Stage 4: writes the batch; requests whose own write fails are recorded failed.
  // While recent batches had such requests, it is written in chunks from the start
  // (IsolationChunk), so that a failure wastes a chunk, not the whole batch.
  void Write(Requests& req, const ScoredOutputs& out, bool upsert, bool careful, BatchResult& result) {
    const bool rescoring =
        std::any_of(req.claimed.begin(), req.claimed.end(), [](const ClaimedKey& k) { return k.job.has_value(); });
    upsert = upsert || rescoring;
    const bool by_rule = rule && rule->Recommend(*conn, req.status, out.values, scorer.inputs());
    result.recommended_by_runnel = by_rule;
    const size_t n = req.size();
    std::vector<size_t> all(n);
    for (size_t i = 0; i < n; ++i) all[i] = i;
    auto attempt = [&](std::span<const size_t> rows) { return WriteRows(req, out, rows, upsert, by_rule); };
    std::vector<RowFailure> failures;
    const size_t chunk = IsolationChunk(write_failure_rate, n);
    if (chunk < n || careful) {
      failures = IsolateFailures(all, chunk, attempt);
    } else {
      // No failure expected: one statement without a savepoint, as fast as it gets.
      WriteWhole(req, out, all, upsert, by_rule);
    }
    write_failure_rate = 0.5 * write_failure_rate + 0.5 * static_cast<double>(failures.size()) / static_cast<double>(n);
    if (failures.empty()) return;
    std::vector<size_t> failed;
    for (auto& failure : failures) {
      req.Fail(failure.index, failure.sqlstate, fmt::format("{}: {}", Label(req, failure.index), failure.message));
      failed.push_back(failure.index);
    }
    spdlog::debug("batch of {}: {} request(s) failed in the write-back; the others were written", n, failed.size());
    // Their results, as failed: no write-back, nothing a row can refuse.
    if (auto again = WriteRows(req, out, failed, upsert, by_rule)) {
      throw postgres::DatabaseError(fmt::format("recording failed requests: {}", again->message), again->sqlstate);
    }
  }

  // Deferred requests back into the queue, their attempts counted.
  void Requeue(const Requests& req, BatchResult& result) {
    std::vector<int64_t> keys, attempts;
    std::vector<std::optional<std::string>> jobs;
    std::vector<std::optional<double>> enqueued;
    for (size_t i = 0; i < req.size(); ++i) {
      if (!req.Deferred(i)) continue;
      keys.push_back(req.claimed[i].key);
      jobs.push_back(req.claimed[i].job ? std::optional(std::to_string(*req.claimed[i].job)) : std::nullopt);
      enqueued.emplace_back(req.claimed[i].enqueued);
      attempts.push_back(req.claimed[i].attempts + 1);
    }
    result.deferred = keys.size();
    if (keys.empty()) return;
    spdlog::info("{} request(s) deferred: their rows stay locked by another transaction", keys.size());
    conn->ExecPrepared(sql.defer, Params().AddArray(keys).AddArray(jobs).AddArray(enqueued).AddArray(attempts));
  }

  // ---- stage 5: jobs' progress ----

  void AdvanceJobs(const Requests& req) {
    std::map<int64_t, int64_t> per_job;
    for (size_t i = 0; i < req.size(); ++i) {
      if (req.claimed[i].job && !req.Deferred(i)) ++per_job[*req.claimed[i].job];
    }
    if (per_job.empty()) return;
    std::vector<int64_t> ids, counts;
    for (const auto& [id, count] : per_job) {
      ids.push_back(id);
      counts.push_back(count);
    }
    conn->ExecPrepared(sql.jobs, Params().AddArray(ids).AddArray(counts));
  }

  // The served keys (done, throttled, failed) as a result event, in the batch's
  // transaction: subscribers see exactly the committed batches.
  void PublishEvents(const Requests& req) {
    std::vector<int64_t> served;
    for (size_t i = 0; i < req.size(); ++i) {
      if (!req.Deferred(i)) served.push_back(req.claimed[i].key);
    }
    if (!served.empty()) conn->ExecPrepared(sql.publish, Params().AddArray(served));
  }
};

Worker::Worker(const PipelineConfig& config, std::shared_ptr<ModelProvider> models, std::string conninfo, size_t index)
    : state_(std::make_unique<State>(config, std::move(models), std::move(conninfo), index)) {
  state_->scorer.Sync();
  state_->Connect();
  state_->rule = RuleEvaluator::Prepare(*state_->conn, state_->config, state_->write_back_output);
}

Worker::~Worker() = default;

void Worker::Reconnect() {
  state_->Connect();
}

void Worker::ReportPause(const std::optional<std::string>& reason) {
  auto& s = *state_;
  try {
    // The worker's own connection when it has one; a plain one otherwise (it must not
    // become the worker's: serving connections are set up by Connect).
    std::optional<postgres::Connection> own;
    if (!s.conn) own.emplace(postgres::Connection::Open(s.conninfo));
    postgres::Connection& conn = s.conn ? *s.conn : *own;
    if (reason) {
      conn.Exec(
          "INSERT INTO runnel_pauses (pipeline, process, reason) VALUES ($1, $2, $3) ON CONFLICT (pipeline, process) "
          "DO UPDATE SET reason = EXCLUDED.reason, seen_at = clock_timestamp(), since = CASE WHEN "
          "runnel_pauses.reason = EXCLUDED.reason THEN runnel_pauses.since ELSE clock_timestamp() END",
          Params().Add(s.config.name).Add(s.process).Add(*reason));
    } else {
      conn.Exec("DELETE FROM runnel_pauses WHERE pipeline = $1 AND process = $2",
                Params().Add(s.config.name).Add(s.process));
    }
  } catch (const Error& e) {
    spdlog::debug("recording the pause in runnel_pauses: {}", e.what());
  }
}

bool Worker::WaitForWork(std::chrono::milliseconds timeout) {
  auto& s = *state_;
  if (!s.conn) s.Connect();  // a previous reconnect failed
  const auto notifications = s.conn->WaitForNotifications(timeout);
  if (s.config.capture == CaptureMode::Notify) {
    for (const auto& n : notifications) {
      // The reference trigger's payload: {"id": ..., "client_id": ...}.
      try {
        auto payload = nlohmann::json::parse(n.payload);
        if (payload.contains("id") && payload["id"].is_number_integer())
          s.notified.push_back(payload["id"].get<int64_t>());
      } catch (const nlohmann::json::exception& e) {
        spdlog::warn("ignoring a malformed notification on '{}': {}", s.config.notify_channel, e.what());
      }
    }
  }
  return !notifications.empty();
}

BatchResult Worker::ServeBatch() {
  // Quota counters are read first and advanced last, just before COMMIT, so that a
  // counter row is locked for the commit only and two workers serving the same
  // clients do not wait for each other's whole batch. If another worker advanced a
  // counter in between so that a request's throttling changes, the batch is rolled
  // back and served again with the counters locked first.
  //
  // Results are inserted plainly; if a request's key has a result already (a key
  // captured twice), the batch is rolled back and served again with an upsert, as
  // the next batches are for a while.
  auto& s = *state_;
  if (s.conn && ++s.batches_since_check >= 256) s.CheckCatalogue();
  bool optimistic = true;
  bool careful = false;
  bool upsert = s.upsert_batches > 0;
  if (upsert) --s.upsert_batches;
  for (int attempt = 0;; ++attempt) {
    Retry why = Retry::kNone;
    if (auto served = ServeOnce(optimistic, upsert, careful, &why)) {
      served->redone = attempt > 0;
      return std::move(*served);
    }
    // Each reason turns its optimism off, so there are at most four attempts.
    switch (why) {
      case Retry::kQuotaMoved: optimistic = false; break;
      case Retry::kRowsRefused: careful = true; break;
      case Retry::kKeyServedBefore:
      case Retry::kNone:
        upsert = true;
        s.upsert_batches = 100;
        break;
    }
  }
}

std::optional<BatchResult> Worker::ServeOnce(bool optimistic, bool upsert, bool careful, Retry* why) {
  auto& s = *state_;
  BatchResult result;
  if (!s.conn) s.Connect();                   // a previous reconnect failed
  s.scorer.Sync();                            // between batches only: one batch, one model snapshot
  if (s.scorer.empty()) return result;        // nothing to serve with yet: requests wait queued
  std::vector<int64_t> taken;
  if (s.config.capture == CaptureMode::Notify) {
    if (s.notified.empty()) WaitForWork(std::chrono::milliseconds(0));
    if (s.notified.empty()) return result;
    const size_t n = std::min(s.config.max_batch, s.notified.size());
    taken.assign(s.notified.begin(), s.notified.begin() + static_cast<std::ptrdiff_t>(n));
    s.notified.erase(s.notified.begin(), s.notified.begin() + static_cast<std::ptrdiff_t>(n));
  }
  // Notify mode: keys of a batch that does not commit stay pending.
  auto give_back = [&] { s.notified.insert(s.notified.begin(), taken.begin(), taken.end()); };
  StageClock clock(result.stage_ms);
  postgres::Transaction tx(*s.conn);
  Requests req;
  try {
    req = s.Claim(taken);
  } catch (...) {
    give_back();
    throw;
  }
  const size_t n = req.size();
  result.claimed = n;
  if (n == 0) {
    tx.Commit();
    return result;
  }
  clock.Lap(0);

  s.MarkUnservable(req);
  QuotaPlan quota = s.PlanQuota(req);
  if (!quota.per_client.empty()) {
    quota.over = Throttle(req.clients, quota.counted, optimistic ? s.ReadCounters(quota) : s.AdvanceCounters(quota),
                          *s.config.quota_max_requests);
    s.ApplyThrottling(req, quota);
  }
  clock.Lap(1);

  const ScoredOutputs out = s.Score(req);
  s.CheckWriteBack(req, out);
  clock.Lap(2);

  try {
    s.Write(req, out, upsert, careful, result);
    s.Requeue(req, result);
  } catch (const RowsRefused&) {
    *why = Retry::kRowsRefused;
    give_back();
    return std::nullopt;  // rolled back by tx
  } catch (const KeyServedBefore&) {
    spdlog::debug("batch of {}: a request key has a result already; serving it again with an upsert", n);
    *why = Retry::kKeyServedBefore;
    give_back();
    return std::nullopt;  // rolled back by tx
  } catch (...) {
    give_back();
    throw;
  }
  clock.Lap(3);
  if (!s.SettleQuota(req, quota, optimistic)) {
    spdlog::debug("batch of {}: quota counters moved under it; serving it again with the counters locked", n);
    *why = Retry::kQuotaMoved;
    give_back();
    return std::nullopt;  // rolled back by tx
  }
  s.AdvanceJobs(req);
  s.PublishEvents(req);
  clock.Lap(4);
  tx.Commit();
  clock.Lap(5);
  spdlog::debug(
      "batch of {}: claim {:.2f} ms, quota {:.2f}, features+model {:.2f}, write-back+results {:.2f}, "
      "quota+jobs {:.2f}, commit {:.2f}",
      n, result.stage_ms[0], result.stage_ms[1], result.stage_ms[2], result.stage_ms[3], result.stage_ms[4],
      result.stage_ms[5]);
  Tally(req, result);
  return result;
}

double RunSummary::LatencyPercentile(double p) const {
  if (latencies_ms.empty()) return 0;
  std::vector<double> sorted = latencies_ms;
  const auto at = std::min(sorted.size() - 1, static_cast<size_t>(p * static_cast<double>(sorted.size())));
  std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(at), sorted.end());
  return sorted[at];
}

namespace {

// One worker thread's loop: serve, wait for work, and ride out errors. Data never
// stops it: lost connections are retried, errors that are not about rows pause it.
class ServeLoop {
 public:
  ServeLoop(Worker& worker, size_t index, const PipelineConfig& config, const RunOptions& options,
            std::function<bool()> stopping)
      : worker_(worker), index_(index), config_(config), options_(options), stopping_(std::move(stopping)) {}

  // Returns when stopping, or idle with until_idle; `record` gets each committed batch.
  void Run(const std::function<void(const BatchResult&)>& record) {
    int idle_rounds = 0;
    while (!stopping_()) {
      try {
        if (reconnect_) {
          reconnect_ = false;
          worker_.Reconnect();  // checks the tables: throws naming what is still wrong
        }
        // Asked before looking at the queue: settled sources have put in it all they will.
        const bool settled = !options_.until_idle || !options_.sources_settled || options_.sources_settled();
        BatchResult batch = worker_.ServeBatch();
        Resumed();
        if (batch.claimed == 0) {
          if (options_.until_idle && settled && ++idle_rounds >= 2) break;
          worker_.WaitForWork(options_.idle_wait);
          continue;
        }
        idle_rounds = 0;
        record(batch);
        Gather(batch);
      } catch (const postgres::DatabaseError& e) {
        // Rolled back: the claimed requests are back in the queue.
        if (e.failure_class() == postgres::FailureClass::kTransient) {
          Transient(e);
        } else {
          // A row error outside the write-back cannot be pinned on a row: the
          // pipeline's own statements failed, which is about the setup. The reason
          // without the statement: it is shown in /readyz and `runnel status`.
          Setup(fmt::format("{} [SQLSTATE {}]", e.primary(), e.sqlstate()));
        }
      } catch (const Error& e) {
        Setup(e.what());
      }
      // A run that should drain the queue and return cannot while paused: after a few
      // tries it returns, saying why (RunSummary::paused).
      if (options_.until_idle && paused_ && pause_rounds_ >= 3) break;
    }
  }

  // The reason this worker is paused at its end, if it is.
  const std::optional<std::string>& paused() const { return paused_; }

 private:
  // A batch smaller than max_batch emptied the queue: under a steady stream, waiting a
  // little lets the next one be larger ([capture] gather_ms).
  void Gather(const BatchResult& batch) {
    if (config_.gather_ms > 0 && batch.claimed < config_.max_batch)
      SleepUnlessStopped(std::chrono::milliseconds(config_.gather_ms), stopping_);
  }

  void Transient(const postgres::DatabaseError& e) {
    const auto wait = backoff_.Next();
    spdlog::warn("pipeline '{}' worker {}: {} (SQLSTATE {}); retrying in {} ms", config_.name, index_, e.what(),
                 e.sqlstate(), wait.count());
    SleepUnlessStopped(wait, stopping_);
    reconnect_ = true;
  }

  void Setup(const std::string& what) {
    reconnect_ = true;
    // Often a statement prepared before some DDL ("cached plan must not change result
    // type"): prepared anew on a fresh connection, it runs. So the first failure
    // reconnects at once; only a second one in a row pauses.
    if (!paused_ && setup_failures_++ == 0) {
      spdlog::info("pipeline '{}' worker {}: {}; preparing its statements anew", config_.name, index_, what);
      return;
    }
    ++pause_rounds_;
    // The row for `runnel status` first: whoever sees the pause in /readyz (on_pause)
    // finds it there too. Written every round: its seen_at says the pause is live.
    worker_.ReportPause(what);
    if (paused_ != what) {
      spdlog::error(
          "pipeline '{}' worker {} paused: {}. Nothing is lost: requests stay queued, and serving resumes "
          "by itself once this is fixed (retrying with backoff up to 5 s)",
          config_.name, index_, what);
      paused_ = what;
      if (options_.on_pause) options_.on_pause(index_, paused_);
    }
    SleepUnlessStopped(backoff_.Next(), stopping_);
  }

  void Resumed() {
    backoff_.Reset();
    setup_failures_ = 0;
    pause_rounds_ = 0;
    if (!paused_) return;
    spdlog::warn("pipeline '{}' worker {} resumed serving (was paused: {})", config_.name, index_, *paused_);
    paused_.reset();
    worker_.ReportPause(std::nullopt);
    if (options_.on_pause) options_.on_pause(index_, std::nullopt);
  }

  Worker& worker_;
  size_t index_;
  const PipelineConfig& config_;
  const RunOptions& options_;
  std::function<bool()> stopping_;
  Backoff backoff_;
  std::optional<std::string> paused_;
  int setup_failures_ = 0;
  int pause_rounds_ = 0;
  bool reconnect_ = false;
};

}  // namespace

RunSummary RunPipeline(const PipelineConfig& config, const std::shared_ptr<ModelProvider>& models,
                       const std::string& conninfo, const RunOptions& options) {
  const size_t workers = config.capture == CaptureMode::Notify ? 1 : std::max<size_t>(1, options.workers);
  if (config.capture == CaptureMode::Notify && options.workers > 1 && options.log) {
    options.log("notify capture: one worker (every listener receives every notification)");
  }
  // Start every worker first so that a bad model or database fails the run at once.
  std::vector<std::unique_ptr<Worker>> pool;
  for (size_t i = 0; i < workers; ++i) pool.push_back(std::make_unique<Worker>(config, models, conninfo, i));
  if (options.on_started) options.on_started();

  RunSummary summary;
  std::mutex mutex;
  std::atomic<bool> stop_all{false};
  std::exception_ptr fatal;
  const auto start = std::chrono::steady_clock::now();
  std::chrono::steady_clock::time_point first_batch, last_commit;  // guarded by mutex
  auto stopping = [&] { return (options.stop != nullptr && options.stop->load()) || stop_all.load(); };
  auto record = [&](const BatchResult& batch) {
    if (options.on_batch) options.on_batch(batch);
    const auto now = std::chrono::steady_clock::now();
    double batch_ms = 0;
    for (double ms : batch.stage_ms) batch_ms += ms;
    const auto began = now - std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                 std::chrono::duration<double, std::milli>(batch_ms));
    std::lock_guard lock(mutex);
    if (summary.batches == 0 || began < first_batch) first_batch = began;
    last_commit = now;
    summary.done += batch.done;
    summary.throttled += batch.throttled;
    summary.failed += batch.failed;
    summary.gone += batch.gone;
    summary.deferred += batch.deferred;
    ++summary.batches;
    if (batch.redone) ++summary.redone;
    if (batch.recommended_by_runnel) ++summary.recommended_by_runnel;
    for (size_t k = 0; k < kStageCount; ++k) summary.stage_ms[k] += batch.stage_ms[k];
    summary.latencies_ms.insert(summary.latencies_ms.end(), batch.latencies_ms.begin(), batch.latencies_ms.end());
  };
  std::vector<std::thread> threads;
  for (size_t i = 0; i < workers; ++i) {
    threads.emplace_back([&, i] {
      NameThisThread(WorkerName(i, config.name));
      try {
        ServeLoop loop(*pool[i], i, config, options, stopping);
        loop.Run(record);
        if (loop.paused()) {
          std::lock_guard lock(mutex);
          if (std::find(summary.paused.begin(), summary.paused.end(), *loop.paused()) == summary.paused.end())
            summary.paused.push_back(*loop.paused());
        }
      } catch (...) {
        // A programmer error (or memory exhausted): stop every worker and rethrow.
        std::lock_guard lock(mutex);
        if (!fatal) fatal = std::current_exception();
        stop_all.store(true);
      }
    });
  }
  for (auto& t : threads) t.join();
  if (fatal) std::rethrow_exception(fatal);
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (summary.batches > 0) summary.busy_seconds = std::chrono::duration<double>(last_commit - first_batch).count();
  return summary;
}

}  // namespace runnel::pipeline
