#include "worker_statements.hpp"

#include <fmt/format.h>

#include <algorithm>

#include "runnel/core/error.hpp"
#include "runnel/pipeline/quota.hpp"

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
  // Mapped keys: the source rows of a range of request ids through the key map, and
  // each row's key for messages (a direct key is its own label).
  const std::string label = keys.mapped() ? keys.LabelSql("t") : "NULL::text";
  const std::string version = GuardsWriteBack(config) ? RowVersionSql(config, "t") : "NULL::bigint";
  const std::string id = keys.IdOf("t", "m");
  auto rows_of = [&](const std::string& lo, const std::string& hi) {
    if (!keys.mapped()) {
      const std::string key = "t." + QuoteIdentifier(keys.columns().front().name);
      return fmt::format("{table} t ON {k} >= {lo} AND {k} <= {hi}", fmt::arg("table", table), fmt::arg("k", key),
                         fmt::arg("lo", lo), fmt::arg("hi", hi));
    }
    return fmt::format("{map} m ON m.{id} >= {lo} AND m.{id} <= {hi} JOIN {table} t ON {same}",
                       fmt::arg("map", keys.map_table()), fmt::arg("id", RequestKeys::kIdColumn), fmt::arg("lo", lo),
                       fmt::arg("hi", hi), fmt::arg("table", table), fmt::arg("same", keys.SameKey("t", "m")));
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
void BuildResultsSql(const PipelineConfig& config, const SchemaNames& names, const RequestKeys& keys,
                     const std::vector<size_t>& write_back_output, bool marked, bool lean,
                     WorkerStatements::Write& out) {
  const int first_output = lean ? WorkerStatements::kFirstOutputParamLean : WorkerStatements::kFirstOutputParam;
  const std::string table = QuoteIdentifier(config.table);
  // Rows written back (w) and source rows (r) carry their request id in column `id`:
  // the key column itself, or the map's id column (mapped keys).
  const std::string id = keys.mapped() ? RequestKeys::kIdColumn : QuoteIdentifier(keys.columns().front().name);
  std::string out_cols, out_types, out_aliases, out_select, out_update;
  for (size_t i = 0; i < config.output_columns.size(); ++i) {
    const std::string col = QuoteIdentifier(config.output_columns[i]);
    out_cols += ", " + col;
    out_types += fmt::format(", ${}::{}[]", i + static_cast<size_t>(first_output),
                             IsLabelOutput(config, config.output_columns[i]) ? "text" : "float8");
    out_aliases += fmt::format(", o{}", i);
    out_select += fmt::format(", v.o{}", i);
    out_update += fmt::format(", {} = EXCLUDED.{}", col, col);
  }
  const bool guarded = GuardsWriteBack(config);
  if (guarded) {  // the row versions, after the outputs
    out_types += fmt::format(", ${}::bigint[]", config.output_columns.size() + static_cast<size_t>(first_output));
    out_aliases += ", rowver";
  }
  // One statement writes back, records results and recommends: the batch's columns
  // are sent and read once. `extra`: more unnested arrays after the outputs.
  auto batch_cte = [&](const std::string& extra_types, const std::string& extra_aliases) {
    return fmt::format(
        "WITH v AS MATERIALIZED (SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::float8[], "
        "$5::text[]{}{}{}) AS v(key, status, error, enq, version{}{}{}))",
        lean ? "" : ", $6::text[], $7::bigint[]", out_types, extra_types, lean ? "" : ", sqlstate, attempts",
        out_aliases, extra_aliases);
  };
  auto write_back_cte = [&](const std::string& returning) {
    if (config.write_back.empty()) return std::string();
    std::string sets;
    for (size_t i = 0; i < config.write_back.size(); ++i) {
      // Marked: the first column's value passes through setval, evaluated per row just
      // before the row is updated (triggers and constraints run after it).
      const std::string value =
          marked && i == 0 ? fmt::format("CASE WHEN setval('pg_temp.runnel_mark', v.key) IS NOT NULL THEN v.o{} END",
                                         write_back_output[i])
                           : fmt::format("v.o{}", write_back_output[i]);
      sets += fmt::format("{}{} = {}", i ? ", " : "", QuoteIdentifier(config.write_back[i]), value);
    }
    // Guarded: only rows still as claimed; w returns each row written (by its id).
    const std::string guard = guarded ? fmt::format(" AND {} = v.rowver", RowVersionSql(config, "t")) : "";
    const std::string returned =
        !guarded || !returning.empty() ? returning : fmt::format(" RETURNING {}.{}", keys.mapped() ? "m" : "t", id);
    if (!keys.mapped()) {
      return fmt::format(", w AS (UPDATE {} t SET {} FROM v WHERE v.status = 'done' AND t.{} = v.key{}{})", table, sets,
                         id, guard, returned);
    }
    return fmt::format(
        ", w AS (UPDATE {} t SET {} FROM v JOIN {} m ON m.{} = v.key WHERE v.status = 'done' AND {}{}{})", table, sets,
        keys.map_table(), id, keys.SameKey("t", "m"), guard, returned);
  };
  // Guarded: a done request whose row was not written (changed since the claim) is
  // superseded.
  const std::string status =
      guarded ? fmt::format(
                    "CASE WHEN v.status = 'done' AND NOT EXISTS (SELECT 1 FROM w WHERE w.{} = v.key) THEN "
                    "'superseded' ELSE v.status END",
                    id)
              : "v.status";
  auto insert = [&](const std::string& with, const std::string& recommended) {
    return fmt::format(
        "{} INSERT INTO {} AS res (key, status, error, {}model_version, enqueued_at, finished_at, "
        "recommended{}) SELECT v.key, {}, v.error, {}v.version, to_timestamp(v.enq), "
        "clock_timestamp(), {}{} FROM v ",
        with, QuoteIdentifier(names.results), lean ? "" : "sqlstate, attempts, ", out_cols, status,
        lean ? "" : "v.sqlstate, v.attempts, ", recommended, out_select);
  };
  // A plain INSERT unless a key may have a result already (a batch job rescoring, a
  // retried request, or a key captured again): the upsert's conflict check costs ~20%
  // of the statement.
  const std::string on_conflict = fmt::format(
      "ON CONFLICT (key) DO UPDATE SET status = EXCLUDED.status, error = EXCLUDED.error, "
      "sqlstate = EXCLUDED.sqlstate, attempts = res.attempts + EXCLUDED.attempts, "
      "model_version = EXCLUDED.model_version, enqueued_at = EXCLUDED.enqueued_at, "
      "finished_at = EXCLUDED.finished_at, recommended = EXCLUDED.recommended{}{}",
      out_update, guarded ? " WHERE EXCLUDED.status <> 'superseded'" : "");

  // Recommendations evaluated in SQL: the rule sees each row as written back (the
  // UPDATE's RETURNING) without looking it up again.
  const std::string with =
      batch_cte("", "") + write_back_cte(keys.mapped() ? fmt::format(" RETURNING t.*, m.{}", id) : " RETURNING t.*");
  std::string row_join;  // binds r to each done request's source row
  // The upsert, used when keys may repeat, also takes one source row per key: a key
  // column that is not unique must not make one statement insert a key twice.
  std::string upsert_row_join;
  // Source rows with their request id: the table, or (mapped) the table joined to its keys.
  const std::string source =
      keys.mapped() ? fmt::format("(SELECT t.*, m.{} FROM {} t{})", id, table, keys.JoinMap("t", "m")) : table;
  if (!config.write_back.empty()) {
    row_join = fmt::format("LEFT JOIN w r ON r.{} = v.key ", id);
    upsert_row_join = fmt::format("LEFT JOIN (SELECT DISTINCT ON ({k}) * FROM w ORDER BY {k}) r ON r.{k} = v.key ",
                                  fmt::arg("k", id));
  } else {
    row_join = fmt::format("LEFT JOIN {} r ON v.status = 'done' AND r.{} = v.key ", source, id);
    upsert_row_join = fmt::format(
        "LEFT JOIN LATERAL (SELECT * FROM {} t WHERE v.status = 'done' AND t.{} = v.key LIMIT 1) r ON true ", source,
        id);
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
          fmt::arg("key", id), fmt::arg("pkey", QuoteIdentifier(rec.key_column)),
          fmt::arg("products", small ? std::string("runnel_catalogue") : QuoteIdentifier(rec.table)),
          fmt::arg("where", rec.where));
    }
    catalogue[true] = fmt::format(", runnel_catalogue AS MATERIALIZED (SELECT * FROM {})", QuoteIdentifier(rec.table));
  } else {
    row_join.clear();  // nothing reads r
    upsert_row_join.clear();
  }
  for (const bool small : {false, true}) {
    out.results[small] = insert(with + catalogue[small], recommended) + row_join + recommend_join[small];
    out.upsert[small] =
        insert(with + catalogue[small], recommended) + upsert_row_join + recommend_join[small] + on_conflict;
  }
  if (config.recommend) {
    // Recommendations evaluated here: each request's products are the slice
    // [from, to] of one array of product keys (no row of w is read back).
    const size_t first = config.output_columns.size() + static_cast<size_t>(first_output) + (guarded ? 1 : 0);
    const std::string rule_with =
        batch_cte(fmt::format(", ${}::bigint[], ${}::bigint[]", first, first + 1), ", rec_from, rec_to") +
        write_back_cte("");
    const std::string sliced =
        fmt::format("CASE WHEN v.status = 'done' THEN (${}::bigint[])[v.rec_from:v.rec_to] END", first + 2);
    out.rule_results = insert(rule_with, sliced);
    out.rule_upsert = insert(rule_with, sliced) + on_conflict;
  }
}

}  // namespace

WorkerStatements WorkerStatements::Build(const PipelineConfig& config, const SchemaNames& names,
                                         const RequestKeys& keys, const std::vector<size_t>& write_back_output,
                                         int64_t small_catalogue) {
  WorkerStatements out;
  out.claim = ClaimSql(config, names, keys);
  out.quota_read = quota::ReadSql(names);
  BuildResultsSql(config, names, keys, write_back_output, false, false, out.write);
  BuildResultsSql(config, names, keys, write_back_output, false, true, out.write_lean);
  if (!config.write_back.empty())
    BuildResultsSql(config, names, keys, write_back_output, true, false, out.write_marked);
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
      fmt::format("SELECT {id} FROM {table} t{join} WHERE {id} = ANY($1::bigint[]) FOR NO KEY UPDATE OF t SKIP LOCKED",
                  fmt::arg("id", keys.IdOf("t", "m")), fmt::arg("table", QuoteIdentifier(config.table)),
                  fmt::arg("join", keys.JoinMap("t", "m")));
  return out;
}

}  // namespace runnel::pipeline
