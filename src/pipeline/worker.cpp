#include "runnel/pipeline/worker.hpp"

#include "runnel/pipeline/outputs.hpp"
#include "runnel/pipeline/recommend_rule.hpp"
#include "runnel/pipeline/schema.hpp"

#include <poll.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>

#include "runnel/core/error.hpp"
#include "runnel/features/features.hpp"
#include "runnel/postgres/connection.hpp"

namespace runnel::pipeline {

using postgres::Params;
using postgres::QuoteIdentifier;

namespace {

double NowEpochSeconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

struct Worker::State {
  PipelineConfig config;
  SchemaNames names;
  std::shared_ptr<ModelProvider> provider;
  std::string conninfo;
  std::unique_ptr<postgres::Connection> conn;
  features::FeatureProgram program;
  // The snapshot serving now, with one session per model; replaced between batches
  // when the provider's generation moves.
  uint64_t generation = UINT64_MAX;
  std::shared_ptr<const ModelSet> models;
  std::map<const ServingModel*, std::unique_ptr<model::ModelSession>> sessions;
  std::map<const ServingModel*, OutputPlan> plans;  // how each model plugs in
  std::vector<size_t> write_back_output;            // per write-back column: index into output_columns
  std::string claim_sql, quota_read_sql, quota_sql, jobs_sql, catalogue_sql;
  std::string results_sql[2], upsert_sql[2];  // [small catalogue]: see BuildSql
  static constexpr int64_t kSmallCatalogue = 1000;
  // The recommendation rule evaluated here (recommend_rule.hpp) when it is inside the
  // subset, every r column it reads is one this worker knows per request (an input or
  // a written-back output, of the subset's types), and the catalogue, read each batch,
  // is small and of the subset's types; otherwise PostgreSQL evaluates it per request.
  struct RuleRequestColumn {
    int input = -1;   // index into input_columns, or
    int output = -1;  // index into output_columns: the value written back
    RuleColumnKind kind = RuleColumnKind::kFloat8;
  };
  std::optional<RecommendRule> rule;
  std::vector<RuleRequestColumn> rule_request;
  std::string rule_catalogue_sql, rule_results_sql, rule_upsert_sql;
  bool small_catalogue = false;  // checked on connecting and every 256 batches
  int batches_since_check = 0;
  int upsert_batches = 0;         // after a key turned out to have a result: upsert for a while
  int64_t lock_rows = 4;          // queue rows to lock per claim: adapts to their size
  std::vector<int64_t> notified;  // notify mode: keys announced and not yet served

  // Reused per batch.
  ColumnBatch batch;
  features::FeatureOutput features;
  std::vector<float> predictions;  // rows x [model].outputs, gathered from every model used
  std::vector<float> subset;       // feature rows of one model's group
  std::vector<float> model_input;  // a named model's input columns
  std::vector<float> mapped;       // one group's outputs in the pipeline's order
  std::vector<int64_t> catalogue_keys, recommended_keys, recommended_from, recommended_to;
  std::vector<double> catalogue_values, request_values;
  std::vector<uint8_t> catalogue_nulls, request_nulls;

  State(const PipelineConfig& c, std::shared_ptr<ModelProvider> p, std::string info)
      : config(c),
        names(NamesFor(c)),
        provider(std::move(p)),
        conninfo(std::move(info)),
        program(features::FeatureProgram::Compile(c.features, c.file.string())) {}

  // Picks up a newly published model set. Every model was checked to fit the
  // pipeline before publication (or is checked here, for fixed files).
  void SyncModels() {
    const uint64_t now = provider->generation();
    if (now == generation) return;
    generation = now;
    models = provider->Current();
    std::map<const ServingModel*, std::unique_ptr<model::ModelSession>> next;
    plans.clear();
    for (const auto& serving : models->All()) {
      plans.emplace(serving.get(), OutputPlan::Resolve(config, program, *serving->model));
      auto it = sessions.find(serving.get());
      next[serving.get()] =
          it != sessions.end() ? std::move(it->second) : std::make_unique<model::ModelSession>(serving->model);
    }
    sessions = std::move(next);
  }

  void Connect() {
    conn = std::make_unique<postgres::Connection>(postgres::Connection::Open(conninfo));
    // Short statements over one batch: JIT compilation (triggered by the planner's
    // guesses for unnest/generate_series) would cost more than it saves.
    conn->Exec("SET jit = off");
    if (!config.synchronous_commit) conn->Exec("SET synchronous_commit = off");
    const std::string channel = config.capture == CaptureMode::Queue ? names.channel : config.notify_channel;
    conn->Exec("LISTEN " + QuoteIdentifier(channel));
    CheckCatalogue();
  }

  // Whether the recommendation catalogue is small enough to copy once per statement.
  void CheckCatalogue() {
    batches_since_check = 0;
    if (!catalogue_sql.empty()) small_catalogue = conn->ExecPrepared(catalogue_sql, Params()).Get<bool>(0, 0);
  }

  // Decides, once per worker, whether Runnel can evaluate the recommendation rule
  // itself (see `rule`). Throws DatabaseError.
  void PrepareRule() {
    if (!config.recommend) return;
    std::string why_not;
    auto parsed = RecommendRule::Parse(config.recommend->where, &why_not);
    if (!parsed) {
      spdlog::debug("[recommend] where is evaluated by PostgreSQL: {}", why_not);
      return;
    }
    const auto types = SourceColumns(*conn, config);
    std::vector<RuleRequestColumn> columns;
    for (const auto& name : parsed->request_columns()) {
      RuleRequestColumn column;
      const auto type = types.find(name);
      const auto kind = type != types.end() ? ColumnKindFor(type->second) : std::nullopt;
      // Not bigint: inputs are read as float8 (inexact past 2^53). Other types do not
      // compare as doubles.
      if (!kind || *kind == RuleColumnKind::kBigint) {
        spdlog::debug("[recommend] where is evaluated by PostgreSQL: r.{} is {}", name,
                      type != types.end() ? type->second : "not a column of " + config.table);
        return;
      }
      column.kind = *kind;
      const auto written = std::find(config.write_back.begin(), config.write_back.end(), name);
      const auto& inputs = config.features.input_columns;
      const auto input = std::find(inputs.begin(), inputs.end(), name);
      if (written != config.write_back.end()) {
        column.output = static_cast<int>(write_back_output[static_cast<size_t>(written - config.write_back.begin())]);
      } else if (input != inputs.end()) {
        column.input = static_cast<int>(input - inputs.begin());
      } else {
        spdlog::debug("[recommend] where is evaluated by PostgreSQL: r.{} is neither an input nor written back", name);
        return;
      }
      columns.push_back(column);
    }
    std::string select = fmt::format("SELECT p.{}::bigint", QuoteIdentifier(config.recommend->key_column));
    for (const auto& name : parsed->product_columns()) select += ", p." + QuoteIdentifier(name);
    rule_catalogue_sql =
        fmt::format("{} FROM {} p LIMIT {}", select, QuoteIdentifier(config.recommend->table), kSmallCatalogue + 1);
    rule_request = std::move(columns);
    rule = std::move(parsed);
  }

  // Recommends for the batch's done requests with `rule`: fills `recommended_keys` (product
  // keys, request after request) and each request's 1-based [from, to] slice of it.
  // Returns false (the per-request arrays untouched) when the catalogue as it is now is not for
  // Runnel (too large, a column outside the subset, a NULL key, a bigint past 2^53):
  // PostgreSQL then evaluates the rule for this batch. Throws DatabaseError.
  bool Recommend(const std::vector<std::optional<std::string>>& status,
                 const std::vector<std::vector<std::optional<double>>>& outputs) {
    auto products = conn->ExecPrepared(rule_catalogue_sql, Params());
    if (products.rows() > kSmallCatalogue) return false;
    const size_t width = rule->product_columns().size();
    using namespace postgres::type_oid;
    for (size_t c = 0; c < width; ++c) {
      const Oid type = products.ColumnType(static_cast<int>(c + 1));
      if (type != kInt2 && type != kInt4 && type != kInt8 && type != kFloat4 && type != kFloat8) return false;
    }
    const auto rows = static_cast<size_t>(products.rows());
    catalogue_keys.resize(rows);
    catalogue_values.assign(rows * width, 0.0);
    catalogue_nulls.assign(rows * width, 0);
    for (size_t p = 0; p < rows; ++p) {
      if (products.IsNull(static_cast<int>(p), 0)) return false;
      catalogue_keys[p] = products.Get<int64_t>(static_cast<int>(p), 0);
      for (size_t c = 0; c < width; ++c) {
        const int column = static_cast<int>(c + 1);
        if (products.IsNull(static_cast<int>(p), column)) {
          catalogue_nulls[p * width + c] = 1;
          continue;
        }
        const double value = products.Get<double>(static_cast<int>(p), column);
        if (products.ColumnType(column) == kInt8 && std::fabs(value) >= 9007199254740992.0) return false;
        catalogue_values[p * width + c] = value;
      }
    }
    const size_t n = status.size();
    const size_t request_width = rule_request.size();
    request_values.assign(request_width, 0.0);
    request_nulls.assign(request_width, 0);
    recommended_keys.clear();
    recommended_from.assign(n, 1);
    recommended_to.assign(n, 0);
    for (size_t i = 0; i < n; ++i) {
      if (*status[i] != "done") continue;
      // r as written back: outputs take the column's type as the UPDATE casts them.
      for (size_t c = 0; c < request_width; ++c) {
        const RuleRequestColumn& column = rule_request[c];
        std::optional<double> value;
        if (column.output >= 0) {
          value = outputs[static_cast<size_t>(column.output)][i];
          if (value && column.kind == RuleColumnKind::kFloat4) value = static_cast<double>(static_cast<float>(*value));
          if (value && column.kind == RuleColumnKind::kInteger) value = std::nearbyint(*value);
        } else if (!batch.nulls[static_cast<size_t>(column.input)][i]) {
          value = batch.values[static_cast<size_t>(column.input)][i];
        }
        request_nulls[c] = value ? 0 : 1;
        request_values[c] = value.value_or(0.0);
      }
      recommended_from[i] = static_cast<int64_t>(recommended_keys.size()) + 1;
      const RuleValues request{request_values.data(), request_nulls.data()};
      for (size_t p = 0; p < rows; ++p) {
        if (rule->Matches({catalogue_values.data() + p * width, catalogue_nulls.data() + p * width}, request)) {
          recommended_keys.push_back(catalogue_keys[p]);
        }
      }
      recommended_to[i] = static_cast<int64_t>(recommended_keys.size());
    }
    return true;
  }

  void BuildSql() {
    const std::string table = QuoteIdentifier(config.table);
    const std::string key = QuoteIdentifier(config.key_column);
    std::string select = "true AS found";
    select += config.client_column.empty() ? ", NULL::text AS client"
                                           : ", t." + QuoteIdentifier(config.client_column) + "::text AS client";
    select += config.model_type_column.empty() ? ", NULL::text AS dtype"
                                               : ", t." + QuoteIdentifier(config.model_type_column) + "::text AS dtype";
    std::string nulls = "NULL::bool, NULL::text, NULL::text";
    for (size_t i = 0; i < config.features.input_columns.size(); ++i) {
      select += fmt::format(", t.{}::float8", QuoteIdentifier(config.features.input_columns[i]));
      nulls += ", NULL::float8";
    }
    // Two kinds of rows, told apart by `found`: one per range of claimed keys (found
    // NULL; key = its first key, hi = one past its last (NULL: the range runs to the
    // largest bigint, see KeyRangeSql), the queue row's enqueue time,
    // job and seq), and one per source row found in those ranges (found true). The
    // worker expands the ranges and matches the rows to them: keys with no row fail.
    if (config.capture == CaptureMode::Queue) {
      // $2 queue rows are locked; of those, rows are taken in order while the batch
      // stays within $1 keys (always the first); the rest are released at commit.
      claim_sql = fmt::format(
          "WITH locked AS (SELECT seq, n FROM {q} ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED), "
          "picked AS (SELECT seq FROM (SELECT seq, n, sum(n) OVER (ORDER BY seq) - n AS before FROM locked) x "
          "WHERE before = 0 OR before + n <= $1), "
          "claimed AS (DELETE FROM {q} q USING picked WHERE q.seq = picked.seq RETURNING q.seq, q.keys, "
          "q.enqueued_at, q.job), "
          "k AS (SELECT c.seq, date_part('epoch', c.enqueued_at) AS enq, c.job, lower(k.keys) AS lo, "
          "upper(k.keys) AS hi FROM claimed c CROSS JOIN LATERAL unnest(c.keys) AS k(keys)) "
          "SELECT k.lo, k.enq, k.job, {nulls}, k.seq, k.hi FROM k UNION ALL "
          // The source rows by key range: one index range scan per run of keys.
          "SELECT t.{key}::bigint, k.enq, k.job, {select}, k.seq, NULL::bigint FROM k JOIN {table} t "
          "ON t.{key} >= k.lo AND t.{key} <= coalesce(k.hi - 1, 9223372036854775807)",
          fmt::arg("q", QuoteIdentifier(names.queue)), fmt::arg("nulls", nulls), fmt::arg("key", key),
          fmt::arg("select", select), fmt::arg("table", table));
    } else {
      claim_sql = fmt::format(
          "WITH k AS (SELECT DISTINCT key AS lo, CASE WHEN key < 9223372036854775807 THEN key + 1 END AS hi, "
          "date_part('epoch', clock_timestamp()) AS enq "
          "FROM unnest($1::bigint[]) AS u(key)) "
          "SELECT k.lo, k.enq, NULL::bigint, {nulls}, NULL::bigint, k.hi FROM k UNION ALL "
          "SELECT t.{key}::bigint, k.enq, NULL::bigint, {select}, NULL::bigint, NULL::bigint FROM k JOIN {table} t "
          "ON t.{key} = k.lo",
          fmt::arg("nulls", nulls), fmt::arg("key", key), fmt::arg("select", select), fmt::arg("table", table));
    }
    quota_read_sql =
        fmt::format("SELECT client, requests FROM {} WHERE client = ANY($1::text[])", QuoteIdentifier(names.quota));
    quota_sql = fmt::format(
        "INSERT INTO {} AS q (client, requests) SELECT v.client, v.n FROM unnest($1::text[], $2::bigint[]) AS "
        "v(client, n) ORDER BY v.client ON CONFLICT (client) DO UPDATE SET requests = q.requests + EXCLUDED.requests "
        "RETURNING client, requests",
        QuoteIdentifier(names.quota));
    std::string out_cols, out_types, out_aliases, out_select, out_update;
    for (size_t i = 0; i < config.output_columns.size(); ++i) {
      const std::string col = QuoteIdentifier(config.output_columns[i]);
      out_cols += ", " + col;
      out_types += fmt::format(", ${}::float8[]", i + 6);
      out_aliases += fmt::format(", o{}", i);
      out_select += fmt::format(", v.o{}", i);
      out_update += fmt::format(", {} = EXCLUDED.{}", col, col);
    }
    // One statement writes back, records results and recommends: the batch's columns
    // are sent and read once. `extra`: more unnested arrays after the outputs.
    auto batch_cte = [&](const std::string& extra_types, const std::string& extra_aliases) {
      return fmt::format(
          "WITH v AS MATERIALIZED (SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::float8[], "
          "$5::text[]{}{}) AS v(key, status, error, enq, version{}{}))",
          out_types, extra_types, out_aliases, extra_aliases);
    };
    auto write_back_cte = [&](const std::string& returning) {
      if (config.write_back.empty()) return std::string();
      std::string sets;
      for (size_t i = 0; i < config.write_back.size(); ++i) {
        sets += fmt::format("{}{} = v.o{}", i ? ", " : "", QuoteIdentifier(config.write_back[i]), write_back_output[i]);
      }
      return fmt::format(", w AS (UPDATE {} t SET {} FROM v WHERE v.status = 'done' AND t.{} = v.key{})", table, sets,
                         key, returning);
    };
    auto insert = [&](const std::string& with, const std::string& recommended) {
      return fmt::format(
          "{} INSERT INTO {} (key, status, error, model_version, enqueued_at, finished_at, recommended{}) "
          "SELECT v.key, v.status, v.error, v.version, to_timestamp(v.enq), clock_timestamp(), {}{} FROM v ",
          with, QuoteIdentifier(names.results), out_cols, recommended, out_select);
    };
    // A plain INSERT unless a key may have a result already (a batch job rescoring,
    // or a key captured again): the upsert's conflict check costs ~20% of the statement.
    const std::string on_conflict = fmt::format(
        "ON CONFLICT (key) DO UPDATE SET status = EXCLUDED.status, error = EXCLUDED.error, "
        "model_version = EXCLUDED.model_version, enqueued_at = EXCLUDED.enqueued_at, "
        "finished_at = EXCLUDED.finished_at, recommended = EXCLUDED.recommended{}",
        out_update);

    // Recommendations evaluated in SQL: the rule sees each row as written back (the
    // UPDATE's RETURNING) without looking it up again.
    const std::string with = batch_cte("", "") + write_back_cte(" RETURNING t.*");
    std::string row_join;  // binds r to each done request's source row
    // The upsert, used when keys may repeat, also takes one source row per key: a key
    // column that is not unique must not make one statement insert a key twice.
    std::string upsert_row_join;
    if (!config.write_back.empty()) {
      row_join = fmt::format("LEFT JOIN w r ON r.{} = v.key ", key);
      upsert_row_join = fmt::format("LEFT JOIN (SELECT DISTINCT ON ({k}) * FROM w ORDER BY {k}) r ON r.{k} = v.key ",
                                    fmt::arg("k", key));
    } else {
      row_join = fmt::format("LEFT JOIN {} r ON v.status = 'done' AND r.{} = v.key ", table, key);
      upsert_row_join = fmt::format(
          "LEFT JOIN LATERAL (SELECT * FROM {} t WHERE v.status = 'done' AND t.{} = v.key LIMIT 1) r ON true ", table,
          key);
    }
    std::string recommended = "NULL::bigint[]";
    // [small]: a catalogue of at most kSmallCatalogue rows is copied once per statement
    // (a materialised CTE) and the rule scans the copy per request: no buffer pins and
    // visibility checks per product and request (~8% of the statement). A larger one
    // is queried per request, where its indexes can serve the rule.
    std::string recommend_join[2], catalogue[2];
    if (config.recommend) {
      const auto& rec = *config.recommend;
      recommended = "x.products";
      for (const bool small : {false, true}) {
        recommend_join[small] = fmt::format(
            "LEFT JOIN LATERAL (SELECT array(SELECT p.{pkey}::bigint FROM {products} p WHERE {where}) AS products) x "
            "ON r.{key} IS NOT NULL ",
            fmt::arg("key", key), fmt::arg("pkey", QuoteIdentifier(rec.key_column)),
            fmt::arg("products", small ? std::string("runnel_catalogue") : QuoteIdentifier(rec.table)),
            fmt::arg("where", rec.where));
      }
      catalogue[true] =
          fmt::format(", runnel_catalogue AS MATERIALIZED (SELECT * FROM {})", QuoteIdentifier(rec.table));
    } else {
      row_join.clear();  // nothing reads r
      upsert_row_join.clear();
    }
    for (const bool small : {false, true}) {
      results_sql[small] = insert(with + catalogue[small], recommended) + row_join + recommend_join[small];
      upsert_sql[small] =
          insert(with + catalogue[small], recommended) + upsert_row_join + recommend_join[small] + on_conflict;
    }
    if (config.recommend) {
      // Recommendations evaluated here: each request's products are the slice
      // [from, to] of one array of product keys (no row of w is read back).
      const size_t first = config.output_columns.size() + 6;
      const std::string rule_with =
          batch_cte(fmt::format(", ${}::bigint[], ${}::bigint[]", first, first + 1), ", rec_from, rec_to") +
          write_back_cte("");
      const std::string sliced =
          fmt::format("CASE WHEN v.status = 'done' THEN (${}::bigint[])[v.rec_from:v.rec_to] END", first + 2);
      rule_results_sql = insert(rule_with, sliced);
      rule_upsert_sql = insert(rule_with, sliced) + on_conflict;
    }
    if (config.recommend) {
      catalogue_sql = fmt::format("SELECT count(*) <= {} FROM (SELECT 1 FROM {} LIMIT {}) s", kSmallCatalogue,
                                  QuoteIdentifier(config.recommend->table), kSmallCatalogue + 1);
    }
    jobs_sql =
        "UPDATE runnel_jobs j SET served = j.served + v.n, updated_at = clock_timestamp(), "
        "state = CASE WHEN j.state = 'running' AND j.enqueue_done AND j.served + v.n >= j.enqueued THEN 'done' "
        "ELSE j.state END, finished_at = CASE WHEN j.state = 'running' AND j.enqueue_done AND "
        "j.served + v.n >= j.enqueued THEN clock_timestamp() ELSE j.finished_at END "
        "FROM unnest($1::bigint[], $2::bigint[]) AS v(id, n) WHERE j.id = v.id";
  }

  void ResolveOutputs() {
    for (const auto& column : config.write_back) {
      write_back_output.push_back(
          static_cast<size_t>(std::find(config.output_columns.begin(), config.output_columns.end(), column) -
                              config.output_columns.begin()));
    }
  }
};

Worker::Worker(const PipelineConfig& config, std::shared_ptr<ModelProvider> models, std::string conninfo)
    : state_(std::make_unique<State>(config, std::move(models), std::move(conninfo))) {
  state_->SyncModels();
  state_->ResolveOutputs();
  state_->BuildSql();
  state_->Connect();
  state_->PrepareRule();
}

Worker::~Worker() = default;

void Worker::Reconnect() {
  state_->conn.reset();
  state_->Connect();
}

bool Worker::WaitForWork(std::chrono::milliseconds timeout) {
  auto& s = *state_;
  if (!s.conn) s.Connect();  // a previous reconnect failed
  PGconn* raw = s.conn->raw();
  auto drain = [&] {
    bool any = false;
    while (PGnotify* n = PQnotifies(raw)) {
      any = true;
      if (s.config.capture == CaptureMode::Notify) {
        // The reference trigger's payload: {"id": ..., "client_id": ...}.
        try {
          auto payload = nlohmann::json::parse(n->extra);
          if (payload.contains("id") && payload["id"].is_number_integer())
            s.notified.push_back(payload["id"].get<int64_t>());
        } catch (const nlohmann::json::exception& e) {
          spdlog::warn("ignoring a malformed notification on '{}': {}", s.config.notify_channel, e.what());
        }
      }
      PQfreemem(n);
    }
    return any;
  };
  if (PQconsumeInput(raw) == 0) throw postgres::DatabaseError(PQerrorMessage(raw), "08006");
  if (drain()) return true;
  pollfd p{PQsocket(raw), POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) > 0) {
    if (PQconsumeInput(raw) == 0) throw postgres::DatabaseError(PQerrorMessage(raw), "08006");
  }
  return drain();
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
  bool upsert = s.upsert_batches > 0;
  if (upsert) --s.upsert_batches;
  for (int attempt = 0;; ++attempt) {
    Retry why = Retry::kNone;
    if (auto served = ServeOnce(optimistic, upsert, &why)) {
      served->redone = attempt > 0;
      return std::move(*served);
    }
    // Each reason turns its optimism off, so there are at most three attempts.
    if (why == Retry::kQuotaMoved) {
      optimistic = false;
    } else {
      upsert = true;
      s.upsert_batches = 100;
    }
  }
}

std::optional<BatchResult> Worker::ServeOnce(bool optimistic, bool upsert, Retry* why) {
  auto& s = *state_;
  const auto& cfg = s.config;
  BatchResult result;
  if (!s.conn) s.Connect();  // a previous reconnect failed
  postgres::Connection& conn = *s.conn;
  s.SyncModels();                        // between batches only: one batch, one model snapshot
  if (s.models->empty()) return result;  // nothing to serve with yet: requests wait queued
  if (cfg.capture == CaptureMode::Notify && s.notified.empty()) {
    WaitForWork(std::chrono::milliseconds(0));
    if (s.notified.empty()) return result;
  }
  auto mark = std::chrono::steady_clock::now();
  auto lap = [&](int stage) {
    const auto now = std::chrono::steady_clock::now();
    result.stage_ms[stage] += std::chrono::duration<double, std::milli>(now - mark).count();
    mark = now;
  };
  postgres::Transaction tx(conn);
  Params claim_params;
  std::vector<int64_t> taken;
  if (cfg.capture == CaptureMode::Queue) {
    claim_params.Add(static_cast<int64_t>(cfg.max_batch)).Add(s.lock_rows);
  } else {
    const size_t n = std::min(cfg.max_batch, s.notified.size());
    taken.assign(s.notified.begin(), s.notified.begin() + static_cast<std::ptrdiff_t>(n));
    s.notified.erase(s.notified.begin(), s.notified.begin() + static_cast<std::ptrdiff_t>(n));
    claim_params.AddArray(taken);
  }
  // Notify mode: keys of a batch that is rolled back to be served again stay pending.
  auto give_back = [&] { s.notified.insert(s.notified.begin(), taken.begin(), taken.end()); };
  auto rows = conn.ExecPrepared(s.claim_sql, claim_params);

  // The claimed ranges, expanded into distinct keys in key order (a key queued twice
  // is one request; a batch job's tag wins), matched to the source rows read.
  constexpr int kFirstInput = 6;  // key, enqueued, job, found, client, data type
  const size_t input_count = cfg.features.input_columns.size();
  const int seq_column = static_cast<int>(kFirstInput + input_count);
  const int hi_column = seq_column + 1;
  struct Claimed {
    int64_t key;
    double enqueued;
    std::optional<int64_t> job;
  };
  std::vector<Claimed> claimed;
  std::vector<std::pair<int64_t, int>> source;  // key, row of `rows`
  std::vector<int64_t> seqs;
  for (int r = 0; r < rows.rows(); ++r) {
    if (!rows.IsNull(r, 3)) {  // found: a source row
      source.emplace_back(rows.Get<int64_t>(r, 0), r);
      continue;
    }
    if (rows.IsNull(r, 0)) {
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("{} row seq {} holds a key range unbounded below; Runnel's capture writes bounded ones",
                              s.names.queue, rows.GetOptional<int64_t>(r, seq_column).value_or(0)));
    }
    const auto key = rows.Get<int64_t>(r, 0);
    // Unbounded above: up to the largest bigint (KeyRangeSql), inclusive.
    const auto hi = rows.GetOptional<int64_t>(r, hi_column);
    const int64_t last = hi ? *hi - 1 : std::numeric_limits<int64_t>::max();
    // The capture trigger writes at most QueueChunk keys per queue row and a claim
    // takes at most max_batch keys (<= 100,000): anything far larger was written by
    // hand (or with a wrong n), and expanding it could exhaust memory.
    constexpr uint64_t kMaxClaim = 1'000'000;
    const uint64_t width_less_one = static_cast<uint64_t>(last) - static_cast<uint64_t>(key);
    if (width_less_one >= kMaxClaim || claimed.size() + width_less_one + 1 > kMaxClaim) {
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("{} row seq {} holds keys [{}, {}]: a claim of more than {} keys; Runnel's capture "
                              "writes at most {} per row",
                              s.names.queue, rows.GetOptional<int64_t>(r, seq_column).value_or(0), key, last, kMaxClaim,
                              QueueChunk(cfg)));
    }
    const double enqueued_at = rows.Get<double>(r, 1);
    const auto job = rows.GetOptional<int64_t>(r, 2);
    for (int64_t k = key;; ++k) {
      claimed.push_back({k, enqueued_at, job});
      if (k == last) break;
    }
    if (!rows.IsNull(r, seq_column)) seqs.push_back(rows.Get<int64_t>(r, seq_column));
  }
  std::stable_sort(claimed.begin(), claimed.end(), [](const Claimed& a, const Claimed& b) { return a.key < b.key; });
  std::stable_sort(source.begin(), source.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  std::sort(seqs.begin(), seqs.end());
  const size_t queue_rows = static_cast<size_t>(std::unique(seqs.begin(), seqs.end()) - seqs.begin());
  if (queue_rows > 0) {
    // Lock about as many queue rows as fill a batch at their current size.
    const double per_row = static_cast<double>(claimed.size()) / static_cast<double>(queue_rows);
    s.lock_rows = std::clamp<int64_t>(static_cast<int64_t>(std::ceil(static_cast<double>(cfg.max_batch) / per_row)), 1,
                                      static_cast<int64_t>(cfg.max_batch));
  }
  std::vector<int64_t> keys;
  std::vector<double> enqueued;
  std::vector<std::optional<int64_t>> jobs;
  std::vector<std::optional<std::string>> clients, data_types;
  std::vector<bool> found;
  s.batch.Reset(cfg.features.input_columns, 0);
  auto next_source = source.begin();
  for (const Claimed& request : claimed) {
    if (!keys.empty() && keys.back() == request.key) {
      if (!jobs.back()) jobs.back() = request.job;
      continue;
    }
    keys.push_back(request.key);
    enqueued.push_back(request.enqueued);
    jobs.push_back(request.job);
    while (next_source != source.end() && next_source->first < request.key) ++next_source;
    const bool has_row = next_source != source.end() && next_source->first == request.key;
    found.push_back(has_row);
    const int r = has_row ? next_source->second : -1;
    clients.push_back(has_row ? rows.GetOptional<std::string>(r, 4) : std::nullopt);
    data_types.push_back(has_row ? rows.GetOptional<std::string>(r, 5) : std::nullopt);
    for (size_t c = 0; c < input_count; ++c) {
      const int column = static_cast<int>(kFirstInput + c);
      const bool null = !has_row || rows.IsNull(r, column);
      s.batch.values[c].push_back(null ? 0.0 : rows.Get<double>(r, column));
      s.batch.nulls[c].push_back(null ? 1 : 0);
    }
  }
  const size_t n = keys.size();
  result.claimed = n;
  if (n == 0) {
    tx.Commit();
    return result;
  }
  s.batch.rows = n;
  lap(0);

  // Status per request, by precedence: missing row, no client, throttled, bad features.
  std::vector<std::optional<std::string>> status(n), error(n);
  for (size_t i = 0; i < n; ++i) {
    if (!found[i]) {
      status[i] = "failed";
      error[i] = fmt::format("row with {} = {} not found in {}", cfg.key_column, keys[i], cfg.table);
    } else if (cfg.quota_max_requests && !clients[i] && !jobs[i]) {
      status[i] = "failed";
      error[i] = fmt::format("column '{}' is NULL", cfg.client_column);
    }
  }
  // Rescoring by a batch job is not a client's request: it does not count.
  std::vector<bool> counted(n, false);        // requests of this batch that count
  std::map<std::string, int64_t> per_client;  // and how many per client
  if (cfg.quota_max_requests) {
    for (size_t i = 0; i < n; ++i) {
      counted[i] = !status[i] && !jobs[i];
      if (counted[i]) ++per_client[*clients[i]];
    }
  }
  std::vector<std::optional<std::string>> quota_names;
  std::vector<int64_t> quota_counts;
  for (const auto& [client, count] : per_client) {
    quota_names.emplace_back(client);
    quota_counts.push_back(count);
  }
  // Throttled or not, per request: its ordinal for its client against the threshold.
  auto throttling = [&](std::map<std::string, int64_t> seen_before) {
    std::vector<bool> over(n, false);
    for (size_t i = 0; i < n; ++i) {
      if (counted[i]) over[i] = ++seen_before[*clients[i]] > *cfg.quota_max_requests;
    }
    return over;
  };
  // Counters as the upsert left them, minus this batch: what came before it.
  auto advance = [&] {
    auto counters = conn.ExecPrepared(s.quota_sql, Params().AddArray(quota_names).AddArray(quota_counts));
    std::map<std::string, int64_t> before;
    for (int r = 0; r < counters.rows(); ++r) {
      const auto client = counters.Get<std::string>(r, 0);
      before[client] = counters.Get<int64_t>(r, 1) - per_client[client];
    }
    return before;
  };
  std::vector<bool> over;
  if (!per_client.empty()) {
    if (optimistic) {
      auto counters = conn.ExecPrepared(s.quota_read_sql, Params().AddArray(quota_names));
      std::map<std::string, int64_t> before;
      for (int r = 0; r < counters.rows(); ++r) before[counters.Get<std::string>(r, 0)] = counters.Get<int64_t>(r, 1);
      over = throttling(std::move(before));
    } else {
      over = throttling(advance());
    }
    for (size_t i = 0; i < n; ++i) {
      if (over[i]) {
        status[i] = "throttled";
        error[i] = fmt::format("client {} is over its quota of {} requests", *clients[i], *cfg.quota_max_requests);
      }
    }
  }

  lap(1);
  s.program.Evaluate(s.batch, s.features);
  // Each row's model (keyed serving: by its data type), then one Predict per model
  // over its rows, gathered into one rows x outputs matrix.
  std::vector<const ServingModel*> row_model(n, nullptr);
  std::map<const ServingModel*, std::vector<size_t>> groups;
  for (size_t i = 0; i < n; ++i) {
    if (status[i]) continue;
    if (s.features.Failed(i)) {
      status[i] = "failed";
      error[i] = s.features.errors[i];
      continue;
    }
    row_model[i] = s.models->For(data_types[i]);
    if (row_model[i] == nullptr) {
      status[i] = "failed";
      error[i] = data_types[i]
                     ? fmt::format("no model serves data type '{}' and there is no default model", *data_types[i])
                     : fmt::format("column '{}' is NULL and there is no default model", cfg.model_type_column);
      continue;
    }
    groups[row_model[i]].push_back(i);
  }
  const size_t width = cfg.model_outputs.size();
  const size_t feature_width = s.program.width();
  s.predictions.assign(n * width, 0.0f);
  for (const auto& [serving, members] : groups) {
    model::ModelSession& session = *s.sessions.at(serving);
    const OutputPlan& plan = s.plans.at(serving);
    const auto started = std::chrono::steady_clock::now();
    std::span<const float> rows_in = s.features.matrix;
    if (members.size() != n) {
      s.subset.resize(members.size() * feature_width);
      for (size_t j = 0; j < members.size(); ++j) {
        std::copy_n(s.features.matrix.begin() + static_cast<std::ptrdiff_t>(members[j] * feature_width), feature_width,
                    s.subset.begin() + static_cast<std::ptrdiff_t>(j * feature_width));
      }
      rows_in = s.subset;
    }
    auto out = session.Predict(plan.ModelInput(rows_in, members.size(), s.model_input), members.size());
    serving->stats->Record(
        static_cast<int64_t>(members.size()),
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - started).count());
    s.mapped.resize(members.size() * width);
    plan.MapOutputs(out, members.size(), s.mapped.data());
    for (size_t j = 0; j < members.size(); ++j) {
      std::copy_n(s.mapped.begin() + static_cast<std::ptrdiff_t>(j * width), width,
                  s.predictions.begin() + static_cast<std::ptrdiff_t>(members[j] * width));
    }
  }
  std::vector<std::vector<std::optional<double>>> outputs(cfg.output_columns.size(),
                                                          std::vector<std::optional<double>>(n));
  std::vector<std::optional<std::string>> versions(n);
  for (size_t i = 0; i < n; ++i) {
    if (status[i]) continue;
    if (std::isnan(s.predictions[i * width])) {
      status[i] = "failed";
      error[i] = fmt::format("{} made no prediction for this row (a missing or invalid input)", row_model[i]->label());
      continue;
    }
    status[i] = "done";
    versions[i] = row_model[i]->label();
    const OutputPlan& plan = s.plans.at(row_model[i]);
    for (size_t o = 0; o < plan.size(); ++o) {
      const double v = plan.Value(o, i, s.predictions, s.features);
      if (!std::isnan(v)) outputs[o][i] = v;  // NaN: an output this model does not give
    }
  }

  lap(2);
  std::vector<int64_t> done_keys;
  for (size_t i = 0; i < n; ++i) {
    if (*status[i] == "done") done_keys.push_back(keys[i]);
    (*status[i] == "done" ? result.done : *status[i] == "throttled" ? result.throttled : result.failed)++;
  }
  {
    std::vector<std::optional<double>> enq(enqueued.begin(), enqueued.end());
    Params results;
    results.AddArray(keys).AddArray(status).AddArray(error).AddArray(enq).AddArray(versions);
    for (const auto& column : outputs) results.AddArray(column);
    const bool rescoring = std::any_of(jobs.begin(), jobs.end(), [](const auto& job) { return job.has_value(); });
    const std::string* insert_sql = &s.results_sql[s.small_catalogue];
    const std::string* upsert_sql = &s.upsert_sql[s.small_catalogue];
    if (s.rule && s.Recommend(status, outputs)) {
      results.AddArray(s.recommended_from).AddArray(s.recommended_to).AddArray(s.recommended_keys);
      insert_sql = &s.rule_results_sql;
      upsert_sql = &s.rule_upsert_sql;
      result.recommended_by_runnel = true;
    }
    if (upsert || rescoring) {
      conn.ExecPrepared(*upsert_sql, results);
    } else {
      try {
        conn.ExecPrepared(*insert_sql, results);
      } catch (const postgres::DatabaseError& e) {
        if (e.sqlstate() != "23505") throw;  // unique_violation: a key was served before
        spdlog::debug("batch of {}: a request key has a result already; serving it again with an upsert", n);
        *why = Retry::kKeyServedBefore;
        give_back();
        return std::nullopt;  // rolled back by tx
      }
    }
  }
  lap(3);
  // Counters before job rows, as the pessimistic path takes them: one lock order.
  if (optimistic && !per_client.empty() && throttling(advance()) != over) {
    spdlog::debug("batch of {}: quota counters moved under it; serving it again with the counters locked", n);
    *why = Retry::kQuotaMoved;
    give_back();
    return std::nullopt;  // rolled back by tx
  }
  {
    std::map<int64_t, int64_t> per_job;
    for (const auto& job : jobs) {
      if (job) ++per_job[*job];
    }
    if (!per_job.empty()) {
      std::vector<int64_t> ids, counts;
      for (const auto& [id, count] : per_job) {
        ids.push_back(id);
        counts.push_back(count);
      }
      conn.ExecPrepared(s.jobs_sql, Params().AddArray(ids).AddArray(counts));
    }
  }
  lap(4);
  tx.Commit();
  lap(5);
  spdlog::debug(
      "batch of {}: claim {:.2f} ms, quota {:.2f}, features+model {:.2f}, write-back+results {:.2f}, "
      "quota+jobs {:.2f}, commit {:.2f}",
      n, result.stage_ms[0], result.stage_ms[1], result.stage_ms[2], result.stage_ms[3], result.stage_ms[4],
      result.stage_ms[5]);
  const double now = NowEpochSeconds();
  for (size_t i = 0; i < n; ++i) result.latencies_ms.push_back((now - enqueued[i]) * 1000.0);
  result.keys = std::move(keys);
  return result;
}

double RunSummary::LatencyPercentile(double p) const {
  if (latencies_ms.empty()) return 0;
  std::vector<double> sorted = latencies_ms;
  const auto at = std::min(sorted.size() - 1, static_cast<size_t>(p * static_cast<double>(sorted.size())));
  std::nth_element(sorted.begin(), sorted.begin() + static_cast<std::ptrdiff_t>(at), sorted.end());
  return sorted[at];
}

RunSummary RunPipeline(const PipelineConfig& config, const std::shared_ptr<ModelProvider>& models,
                       const std::string& conninfo, const RunOptions& options) {
  const size_t workers = config.capture == CaptureMode::Notify ? 1 : std::max<size_t>(1, options.workers);
  auto log = [&](const std::string& message) {
    if (options.log) options.log(message);
  };
  if (config.capture == CaptureMode::Notify && options.workers > 1) {
    log("notify capture: one worker (every listener receives every notification)");
  }
  // Start every worker first so that a bad model or database fails the run at once.
  std::vector<std::unique_ptr<Worker>> pool;
  for (size_t i = 0; i < workers; ++i) pool.push_back(std::make_unique<Worker>(config, models, conninfo));
  if (options.on_started) options.on_started();

  RunSummary summary;
  std::mutex mutex;
  std::atomic<bool> stop_all{false};
  std::exception_ptr fatal;
  const auto start = std::chrono::steady_clock::now();
  std::vector<std::thread> threads;
  for (size_t i = 0; i < workers; ++i) {
    threads.emplace_back([&, i] {
      Worker& worker = *pool[i];
      int idle_rounds = 0;
      auto backoff = std::chrono::milliseconds(100);
      while ((options.stop == nullptr || !options.stop->load()) && !stop_all.load()) {
        try {
          BatchResult batch = worker.ServeBatch();
          backoff = std::chrono::milliseconds(100);
          if (batch.claimed == 0) {
            if (options.until_idle && ++idle_rounds >= 2) break;
            worker.WaitForWork(options.idle_wait);
            continue;
          }
          idle_rounds = 0;
          if (options.on_batch) options.on_batch(batch);
          std::lock_guard lock(mutex);
          summary.done += batch.done;
          summary.throttled += batch.throttled;
          summary.failed += batch.failed;
          ++summary.batches;
          if (batch.redone) ++summary.redone;
          if (batch.recommended_by_runnel) ++summary.recommended_by_runnel;
          for (size_t k = 0; k < kStageCount; ++k) summary.stage_ms[k] += batch.stage_ms[k];
          summary.latencies_ms.insert(summary.latencies_ms.end(), batch.latencies_ms.begin(), batch.latencies_ms.end());
        } catch (const postgres::DatabaseError& e) {
          // Rolled back: the claimed requests are back in the queue for someone. Lost
          // connections, deadlocks/serialization failures (class 40) and resource
          // shortages (class 53) pass; anything else is a mistake that retrying repeats.
          const bool transient = e.IsConnectionLost() || e.sqlstate().starts_with("40") ||
                                 e.sqlstate().starts_with("53") || e.sqlstate() == "57014";
          if (!transient) {
            std::lock_guard lock(mutex);
            if (!fatal) fatal = std::current_exception();
            stop_all.store(true);
            break;
          }
          log(fmt::format("worker {}: {}; reconnecting in {} ms", i, e.what(), backoff.count()));
          std::this_thread::sleep_for(backoff);
          backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
          try {
            worker.Reconnect();
          } catch (const Error& again) {
            log(fmt::format("worker {}: reconnect failed: {}", i, again.what()));
          }
        } catch (...) {
          std::lock_guard lock(mutex);
          if (!fatal) fatal = std::current_exception();
          stop_all.store(true);
          break;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  if (fatal) std::rethrow_exception(fatal);
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

}  // namespace runnel::pipeline
