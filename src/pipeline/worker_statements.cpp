#include "worker_statements.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "runnel/core/error.hpp"

namespace runnel::pipeline {

using postgres::QuoteIdentifier;
using postgres::QuoteLiteral;

ClaimRows ReadClaim(const postgres::Result& rows, const ClaimColumns& columns, const std::string& queue) {
  using C = ClaimColumns;
  ClaimRows out;
  std::vector<int64_t> seqs;
  for (int r = 0; r < rows.rows(); ++r) {
    if (!rows.IsNull(r, C::kFound)) {
      out.source.emplace_back(rows.Get<int64_t>(r, C::kKey), r);
      continue;
    }
    if (rows.IsNull(r, C::kKey)) {
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("{} row seq {} holds a key range unbounded below; Runnel's capture writes bounded ones",
                              queue, rows.GetOptional<int64_t>(r, columns.seq).value_or(0)));
    }
    ClaimedRange range;
    range.first = rows.Get<int64_t>(r, C::kKey);
    // Unbounded above: up to the largest bigint (KeyRangeSql), inclusive.
    const auto hi = rows.GetOptional<int64_t>(r, columns.hi);
    range.last = hi ? *hi - 1 : std::numeric_limits<int64_t>::max();
    range.enqueued = rows.Get<double>(r, C::kEnqueued);
    range.job = rows.GetOptional<int64_t>(r, C::kJob);
    range.attempts = rows.GetOptional<int32_t>(r, columns.attempts).value_or(0);
    range.seq = rows.GetOptional<int64_t>(r, columns.seq);
    out.ranges.push_back(range);
    if (range.seq) seqs.push_back(*range.seq);
  }
  std::stable_sort(out.source.begin(), out.source.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  std::sort(seqs.begin(), seqs.end());
  out.queue_rows = static_cast<size_t>(std::unique(seqs.begin(), seqs.end()) - seqs.begin());
  return out;
}

bool GuardsWriteBack(const PipelineConfig& config) {
  return config.capture_updates && !config.write_back.empty();
}

namespace {

// The version of the row `alias`: a hash of its watched columns (GuardsWriteBack).
std::string RowVersionSql(const PipelineConfig& config, std::string_view alias) {
  std::string columns;
  for (const auto& column : CaptureUpdateColumns(config))
    columns += fmt::format("{}{}.{}", columns.empty() ? "" : ", ", alias, QuoteIdentifier(column));
  return fmt::format("hash_record_extended(ROW({}), 0)", columns);  // each column by its type's hash
}

std::string ClaimSql(const PipelineConfig& config, const SchemaNames& names, const RequestKeys& keys) {
  const std::string table = QuoteIdentifier(config.table);
  std::string select = "true AS found";
  select += config.client_column.empty() ? ", NULL::text AS client"
                                         : ", t." + QuoteIdentifier(config.client_column) + "::text AS client";
  select += config.model_type_column.empty() ? ", NULL::text AS dtype"
                                             : ", t." + QuoteIdentifier(config.model_type_column) + "::text AS dtype";
  std::string nulls = "NULL::bool, NULL::text, NULL::text";
  for (const auto& column : config.features.input_columns) {
    // As stored: a cast here (say numeric 1e400 to float8) would fail the whole claim
    // for one row's value. The worker converts each value and fails only that row.
    select += ", t." + QuoteIdentifier(column);
    nulls += ", NULL";  // takes the column's type from the other branch
  }
  for (const auto& column : config.features.text_columns) {
    select += ", t." + QuoteIdentifier(column) + "::text";
    nulls += ", NULL::text";
  }
  // Each row's key for messages (a direct key is its own label; a mapped key's
  // request id is its id column, and the rows of a range of ids an index range scan).
  const std::string label = keys.mapped() ? keys.LabelSql("t") : "NULL::text";
  const std::string version = GuardsWriteBack(config) ? RowVersionSql(config, "t") : "NULL::bigint";
  const std::string id = keys.IdOf("t");
  auto rows_of = [&](const std::string& lo, const std::string& hi) {
    const std::string key = "t." + QuoteIdentifier(keys.id_column());
    return fmt::format("{table} t ON {k} >= {lo} AND {k} <= {hi}", fmt::arg("table", table), fmt::arg("k", key),
                       fmt::arg("lo", lo), fmt::arg("hi", hi));
  };
  if (config.capture == CaptureMode::Queue) {
    // $2 queue rows are locked; of those, rows are taken in order while the batch
    // stays within $1 keys (always the first); the rest are released at commit.
    return fmt::format(
        "WITH locked AS (SELECT seq, n FROM {q} ORDER BY seq LIMIT $2 FOR UPDATE SKIP LOCKED), "
        "picked AS (SELECT seq FROM (SELECT seq, n, sum(n) OVER (ORDER BY seq) - n AS before FROM locked) x "
        "WHERE before = 0 OR before + n <= $1), "
        "claimed AS (DELETE FROM {q} q USING picked WHERE q.seq = picked.seq RETURNING q.seq, q.keys, "
        "q.enqueued_at, q.job, q.attempts), "
        "k AS (SELECT c.seq, date_part('epoch', c.enqueued_at) AS enq, c.job, c.attempts, lower(k.keys) AS lo, "
        "upper(k.keys) AS hi FROM claimed c CROSS JOIN LATERAL unnest(c.keys) AS k(keys)) "
        "SELECT k.lo, k.enq, k.job, {nulls}, k.seq, k.hi, k.attempts, NULL::text, NULL::bigint FROM k UNION ALL "
        // The source rows by key range: one index range scan per run of keys.
        "SELECT {id}, k.enq, k.job, {select}, k.seq, NULL::bigint, NULL::integer, {label}, {version} FROM k JOIN "
        "{rows}",
        fmt::arg("q", QuoteIdentifier(names.queue)), fmt::arg("nulls", nulls), fmt::arg("id", id),
        fmt::arg("select", select), fmt::arg("label", label), fmt::arg("version", version),
        fmt::arg("rows", rows_of("k.lo", "coalesce(k.hi - 1, 9223372036854775807)")));
  }
  return fmt::format(
      "WITH k AS (SELECT DISTINCT key AS lo, CASE WHEN key < 9223372036854775807 THEN key + 1 END AS hi, "
      "date_part('epoch', clock_timestamp()) AS enq "
      "FROM unnest($1::bigint[]) AS u(key)) "
      "SELECT k.lo, k.enq, NULL::bigint, {nulls}, NULL::bigint, k.hi, 0, NULL::text, NULL::bigint FROM k UNION ALL "
      "SELECT {id}, k.enq, NULL::bigint, {select}, NULL::bigint, NULL::bigint, NULL::integer, {label}, {version} "
      "FROM k JOIN {rows}",
      fmt::arg("nulls", nulls), fmt::arg("id", id), fmt::arg("select", select), fmt::arg("label", label),
      fmt::arg("version", version), fmt::arg("rows", rows_of("k.lo", "k.lo")));
}

// The statements that write back, record results and recommend, in their variants.
// `marked`: marks each row as it is written (see write_marked). `lean`: without the
// sqlstate and attempts parameters, which the columns' defaults (NULL, 1) then fill:
// a batch of first attempts with no failure sends exactly what it did before them.
class ResultsSql {
 public:
  ResultsSql(const PipelineConfig& config, const SchemaNames& names, const RequestKeys& keys,
             const std::vector<size_t>& write_back_output, bool marked, bool lean)
      : config_(config),
        names_(names),
        write_back_output_(write_back_output),
        marked_(marked),
        lean_(lean),
        first_output_(lean ? WorkerStatements::kFirstOutputParamLean : WorkerStatements::kFirstOutputParam),
        table_(QuoteIdentifier(config.table)),
        // Rows written back (w) and source rows (r) carry their request id in column
        // `id`: the key column itself, or the id column (mapped keys).
        id_(QuoteIdentifier(keys.id_column())),
        guarded_(GuardsWriteBack(config)) {
    for (size_t i = 0; i < config.output_columns.size(); ++i) {
      const std::string col = QuoteIdentifier(config.output_columns[i]);
      out_cols_ += ", " + col;
      out_types_ += fmt::format(", ${}::{}[]", i + static_cast<size_t>(first_output_),
                                IsLabelOutput(config, config.output_columns[i]) ? "text" : "float8");
      out_aliases_ += fmt::format(", o{}", i);
      out_select_ += fmt::format(", v.o{}", i);
      out_update_ += fmt::format(", {} = EXCLUDED.{}", col, col);
    }
    if (guarded_) {  // the row versions, after the outputs
      out_types_ += fmt::format(", ${}::bigint[]", config.output_columns.size() + static_cast<size_t>(first_output_));
      out_aliases_ += ", rowver";
    }
  }

  void Build(WorkerStatements::Write& out) const {
    // Recommendations evaluated in SQL: the rule sees each row as written back (the
    // UPDATE's RETURNING) without looking it up again.
    const std::string with = BatchCte("", "") + WriteBackCte(" RETURNING t.*");
    const Joins joins = config_.recommend ? RecommendJoins() : Joins{};
    for (const bool small : {false, true}) {
      out.results[small] =
          Insert(with + joins.catalogue[small], joins.recommended) + joins.row + joins.recommend[small];
      out.upsert[small] = Insert(with + joins.catalogue[small], joins.recommended) + joins.upsert_row +
                          joins.recommend[small] + OnConflict();
    }
    if (config_.recommend) BuildRuleStatements(out);
  }

 private:
  // What the results insert joins: each done request's source row (r) and its
  // recommended products (x), in the plain and the [small] catalogue variants.
  struct Joins {
    std::string row, upsert_row, recommend[2], catalogue[2];
    std::string recommended = "NULL::bigint[]";
  };

  // One statement writes back, records results and recommends: the batch's columns
  // are sent and read once. `extra`: more unnested arrays after the outputs.
  std::string BatchCte(const std::string& extra_types, const std::string& extra_aliases) const {
    return fmt::format(
        "WITH v AS MATERIALIZED (SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::float8[], "
        "$5::text[]{}{}{}) AS v(key, status, error, enq, version{}{}{}))",
        lean_ ? "" : ", $6::text[], $7::bigint[]", out_types_, extra_types, lean_ ? "" : ", sqlstate, attempts",
        out_aliases_, extra_aliases);
  }

  std::string WriteBackCte(const std::string& returning) const {
    if (config_.write_back.empty()) return std::string();
    std::string sets;
    for (size_t i = 0; i < config_.write_back.size(); ++i) {
      // Marked: the first column's value passes through setval, evaluated per row just
      // before the row is updated (triggers and constraints run after it).
      const std::string value =
          marked_ && i == 0 ? fmt::format("CASE WHEN setval('pg_temp.runnel_mark', v.key) IS NOT NULL THEN v.o{} END",
                                          write_back_output_[i])
                            : fmt::format("v.o{}", write_back_output_[i]);
      sets += fmt::format("{}{} = {}", i ? ", " : "", QuoteIdentifier(config_.write_back[i]), value);
    }
    // Guarded: only rows still as claimed; w returns each row written (by its id).
    const std::string guard = guarded_ ? fmt::format(" AND {} = v.rowver", RowVersionSql(config_, "t")) : "";
    const std::string returned = !guarded_ || !returning.empty() ? returning : fmt::format(" RETURNING t.{}", id_);
    return fmt::format(", w AS (UPDATE {} t SET {} FROM v WHERE v.status = 'done' AND t.{} = v.key{}{})", table_, sets,
                       id_, guard, returned);
  }

  // Guarded: a done request whose row was not written (changed since the claim) is
  // superseded.
  std::string Status() const {
    if (!guarded_) return "v.status";
    return fmt::format(
        "CASE WHEN v.status = 'done' AND NOT EXISTS (SELECT 1 FROM w WHERE w.{} = v.key) THEN "
        "'superseded' ELSE v.status END",
        id_);
  }

  std::string Insert(const std::string& with, const std::string& recommended) const {
    return fmt::format(
        "{} INSERT INTO {} AS res (key, status, error, {}model_version, enqueued_at, finished_at, "
        "recommended{}) SELECT v.key, {}, v.error, {}v.version, to_timestamp(v.enq), "
        "clock_timestamp(), {}{} FROM v ",
        with, QuoteIdentifier(names_.results), lean_ ? "" : "sqlstate, attempts, ", out_cols_, Status(),
        lean_ ? "" : "v.sqlstate, v.attempts, ", recommended, out_select_);
  }

  // A plain INSERT unless a key may have a result already (a batch job rescoring, a
  // retried request, or a key captured again): the upsert's conflict check costs ~20%
  // of the statement.
  std::string OnConflict() const {
    return fmt::format(
        "ON CONFLICT (key) DO UPDATE SET status = EXCLUDED.status, error = EXCLUDED.error, "
        "sqlstate = EXCLUDED.sqlstate, attempts = res.attempts + EXCLUDED.attempts, "
        "model_version = EXCLUDED.model_version, enqueued_at = EXCLUDED.enqueued_at, "
        "finished_at = EXCLUDED.finished_at, recommended = EXCLUDED.recommended{}{}",
        out_update_, guarded_ ? " WHERE EXCLUDED.status <> 'superseded'" : "");
  }

  // Binds r to each done request's source row: the row written back, or the source
  // table (mapped: joined to its keys). The upsert, used when keys may repeat, takes
  // one source row per key: a key column that is not unique must not make one
  // statement insert a key twice.
  void SourceJoins(Joins& joins) const {
    if (!config_.write_back.empty()) {
      joins.row = fmt::format("LEFT JOIN w r ON r.{} = v.key ", id_);
      joins.upsert_row = fmt::format("LEFT JOIN (SELECT DISTINCT ON ({k}) * FROM w ORDER BY {k}) r ON r.{k} = v.key ",
                                     fmt::arg("k", id_));
      return;
    }
    joins.row = fmt::format("LEFT JOIN {} r ON v.status = 'done' AND r.{} = v.key ", table_, id_);
    joins.upsert_row = fmt::format(
        "LEFT JOIN LATERAL (SELECT * FROM {} t WHERE v.status = 'done' AND t.{} = v.key LIMIT 1) r ON true ", table_,
        id_);
  }

  // [small]: a catalogue of at most kSmallCatalogue rows is copied once per statement
  // (a materialised CTE) and the rule scans the copy per request: no buffer pins and
  // visibility checks per product and request (~8% of the statement). A larger one
  // is queried per request, where its indexes can serve the rule.
  Joins RecommendJoins() const {
    const auto& rec = *config_.recommend;
    Joins joins;
    SourceJoins(joins);
    joins.recommended = "x.products";
    for (const bool small : {false, true}) {
      joins.recommend[small] = fmt::format(
          "LEFT JOIN LATERAL (SELECT array(SELECT p.{pkey}::bigint FROM {products} p WHERE {where}) AS products) x "
          "ON r.{key} IS NOT NULL ",
          fmt::arg("key", id_), fmt::arg("pkey", QuoteIdentifier(rec.key_column)),
          fmt::arg("products", small ? std::string("runnel_catalogue") : QuoteIdentifier(rec.table)),
          fmt::arg("where", rec.where));
    }
    joins.catalogue[true] =
        fmt::format(", runnel_catalogue AS MATERIALIZED (SELECT * FROM {})", QuoteIdentifier(rec.table));
    return joins;
  }

  // Recommendations evaluated here: each request's products are the slice [from, to]
  // of one array of product keys (no row of w is read back).
  void BuildRuleStatements(WorkerStatements::Write& out) const {
    const size_t first = config_.output_columns.size() + static_cast<size_t>(first_output_) + (guarded_ ? 1 : 0);
    const std::string rule_with =
        BatchCte(fmt::format(", ${}::bigint[], ${}::bigint[]", first, first + 1), ", rec_from, rec_to") +
        WriteBackCte("");
    const std::string sliced =
        fmt::format("CASE WHEN v.status = 'done' THEN (${}::bigint[])[v.rec_from:v.rec_to] END", first + 2);
    out.rule_results = Insert(rule_with, sliced);
    out.rule_upsert = Insert(rule_with, sliced) + OnConflict();
  }

  const PipelineConfig& config_;
  const SchemaNames& names_;
  const std::vector<size_t>& write_back_output_;
  const bool marked_;
  const bool lean_;
  const int first_output_;
  const std::string table_;
  const std::string id_;
  const bool guarded_;
  // Per output column: the column list, the parameters' types, the batch's aliases,
  // their selection and the upsert's assignments.
  std::string out_cols_, out_types_, out_aliases_, out_select_, out_update_;
};

}  // namespace

WorkerStatements WorkerStatements::Build(const PipelineConfig& config, const SchemaNames& names,
                                         const RequestKeys& keys, const std::vector<size_t>& write_back_output,
                                         int64_t small_catalogue) {
  WorkerStatements out;
  out.claim = ClaimSql(config, names, keys);
  ResultsSql(config, names, keys, write_back_output, false, false).Build(out.write);
  ResultsSql(config, names, keys, write_back_output, false, true).Build(out.write_lean);
  if (!config.write_back.empty())
    ResultsSql(config, names, keys, write_back_output, true, false).Build(out.write_marked);
  if (config.recommend) {
    out.catalogue = fmt::format("SELECT count(*) <= {} FROM (SELECT 1 FROM {} LIMIT {}) s", small_catalogue,
                                QuoteIdentifier(config.recommend->table), small_catalogue + 1);
  }
  out.jobs =
      "UPDATE runnel_jobs j SET served = j.served + v.n, updated_at = clock_timestamp(), "
      "state = CASE WHEN j.state = 'running' AND j.enqueue_done AND j.served + v.n >= j.enqueued THEN 'done' "
      "ELSE j.state END, finished_at = CASE WHEN j.state = 'running' AND j.enqueue_done AND "
      "j.served + v.n >= j.enqueued THEN clock_timestamp() ELSE j.finished_at END "
      "FROM unnest($1::bigint[], $2::bigint[]) AS v(id, n) WHERE j.id = v.id";
  out.defer = fmt::format(
      "INSERT INTO {} (keys, n, job, enqueued_at, attempts) SELECT int8multirange({}), 1, u.job::bigint, "
      "to_timestamp(u.enq), u.attempts FROM unnest($1::bigint[], $2::text[], $3::float8[], $4::bigint[]) AS "
      "u(k, job, enq, attempts)",
      QuoteIdentifier(names.queue), KeyRangeSql("u.k"));
  // The batch's served keys as one event row, and on the served channel in payloads
  // of at most kNotifyKeys keys (NOTIFY payloads stop at 8,000 bytes): $1 keys.
  out.publish = fmt::format(
      "WITH e AS (INSERT INTO {events} (keys) VALUES ($1::bigint[])) "
      "SELECT pg_notify({channel}, array_to_string(($1::bigint[])[c * {n} + 1:(c + 1) * {n}], ',')) "
      "FROM generate_series(0, (cardinality($1::bigint[]) - 1) / {n}) AS c",
      fmt::arg("events", QuoteIdentifier(names.events)), fmt::arg("channel", QuoteLiteral(names.served_channel)),
      fmt::arg("n", WorkerStatements::kNotifyKeys));
  out.probe_locked =
      fmt::format("SELECT {id} FROM {table} t WHERE {id} = ANY($1::bigint[]) FOR NO KEY UPDATE OF t SKIP LOCKED",
                  fmt::arg("id", keys.IdOf("t")), fmt::arg("table", QuoteIdentifier(config.table)));
  return out;
}

}  // namespace runnel::pipeline
