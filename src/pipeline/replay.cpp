#include "runnel/pipeline/replay.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "runnel/core/error.hpp"
#include "runnel/pipeline/filter.hpp"
#include "runnel/pipeline/request_keys.hpp"
#include "runnel/pipeline/schema.hpp"

namespace runnel::pipeline {

using postgres::Params;
using postgres::QuoteIdentifier;

namespace {

void CheckSqlState(const std::string& state) {
  const bool shape =
      (state.size() == 2 || state.size() == 5) &&
      std::all_of(state.begin(), state.end(), [](unsigned char c) { return std::isdigit(c) || std::isupper(c); });
  if (!shape) {
    throw Error(ErrorCode::InvalidInput,
                fmt::format("'{}' is not a SQLSTATE (five characters, e.g. 23514) or its class (two, e.g. 23)", state));
  }
}

}  // namespace

RetryOutcome RetryFailed(postgres::Connection& conn, const PipelineConfig& config, const RetryFilter& filter) {
  const auto names = NamesFor(config);
  if (filter.sqlstate) CheckSqlState(*filter.sqlstate);
  postgres::Transaction tx(conn);
  const auto columns = SourceColumns(conn, config);
  const auto compiled = CompileFilter(filter.where, columns, 2);
  const auto keys = RequestKeys::Resolve(config, columns);
  Params params;
  std::string description =
      filter.where.empty() ? "retry failed requests" : "retry failed requests where " + filter.where;
  if (filter.sqlstate) description += " with SQLSTATE " + *filter.sqlstate;
  if (filter.key) description = fmt::format("retry failed request {}", *filter.key);
  auto job = conn.Exec(
      "INSERT INTO runnel_jobs (pipeline, filter, batch_size, total, enqueued, enqueue_done, state) "
      "VALUES ($1, $2, $3, 0, 0, true, 'running') RETURNING id",
      Params().Add(config.name).Add(description).Add(static_cast<int32_t>(config.max_batch)));
  const auto job_id = job.Get<int64_t>(0, 0);
  params.Add(std::to_string(job_id));
  for (const auto& value : compiled.params) params.Add(value);
  int next = 2 + static_cast<int>(compiled.params.size());
  std::string where = "r.status = 'failed' AND (" + compiled.sql + ")";
  if (filter.sqlstate) {
    params.Add(*filter.sqlstate);
    where += fmt::format(" AND left(r.sqlstate, {}) = ${}", filter.sqlstate->size(), next++);
  }
  if (filter.key) {
    params.Add(std::to_string(*filter.key));
    where += fmt::format(" AND r.key = ${}::bigint", next++);
  }
  // FOR UPDATE: a concurrent retry waits, then sees 'queued' and takes nothing.
  auto queued = conn.Exec(
      fmt::format("WITH picked AS (SELECT r.key FROM {results} r LEFT JOIN {source} ON {id} = r.key WHERE {where} "
                  "ORDER BY r.key FOR UPDATE OF r), "
                  "marked AS (UPDATE {results} r SET status = 'queued' FROM picked WHERE r.key = picked.key "
                  "RETURNING r.key), "
                  "queued AS ({insert} RETURNING n) "
                  "SELECT coalesce(sum(n), 0)::bigint FROM queued",
                  fmt::arg("results", QuoteIdentifier(names.results)),
                  fmt::arg("source", QuoteIdentifier(config.table) + " s"), fmt::arg("id", keys.IdOf("s")),
                  fmt::arg("where", where),
                  fmt::arg("insert", QueueInsertSql(config, "SELECT key FROM marked", "$1::bigint"))),
      params);
  RetryOutcome outcome;
  outcome.requeued = queued.Get<int64_t>(0, 0);
  if (outcome.requeued == 0) {
    conn.Exec("DELETE FROM runnel_jobs WHERE id = $1", Params().Add(job_id));
  } else {
    conn.Exec("UPDATE runnel_jobs SET total = $2, enqueued = $2 WHERE id = $1",
              Params().Add(job_id).Add(outcome.requeued));
    conn.Exec(fmt::format("SELECT pg_notify({}, '')", postgres::QuoteLiteral(names.channel)));
    outcome.job = job_id;
  }
  tx.Commit();
  return outcome;
}

std::vector<FailureReason> TopFailureReasons(postgres::Connection& conn, const PipelineConfig& config, int limit,
                                             int64_t of_latest) {
  const std::string results = QuoteIdentifier(NamesFor(config).results);
  Params params;
  params.Add(static_cast<int64_t>(limit));
  std::string failed = fmt::format("(SELECT sqlstate, error FROM {} WHERE status = 'failed')", results);
  if (of_latest > 0) {  // the latest by key, through the index of failed requests (schema version 9)
    failed =
        fmt::format("(SELECT sqlstate, error FROM {} WHERE status = 'failed' ORDER BY key DESC LIMIT $2)", results);
    params.Add(of_latest);
  }
  // Messages start with "<key column> = <key>: "; numbers vary per request.
  auto r =
      conn.Exec(fmt::format("SELECT coalesce(sqlstate, '') AS sqlstate, reason, count(*) AS n FROM (SELECT sqlstate, "
                            "regexp_replace(regexp_replace(coalesce(error, ''), '^[^:]* = [^:]*: ', ''), "
                            "'-?[0-9][0-9.]*(e[+-]?[0-9]+)?', 'N', 'g') AS reason FROM {} l) f "
                            "GROUP BY 1, 2 ORDER BY 3 DESC, 1, 2 LIMIT $1",
                            failed),
                params);
  std::vector<FailureReason> out;
  out.reserve(static_cast<size_t>(r.rows()));
  for (int i = 0; i < r.rows(); ++i) {
    out.push_back({r.Get<std::string>(i, "sqlstate"), r.Get<std::string>(i, "reason"), r.Get<int64_t>(i, "n")});
  }
  return out;
}

std::vector<PausedProcess> PausedProcesses(postgres::Connection& conn, const PipelineConfig& config) {
  if (!postgres::TableExists(conn, "runnel_pauses")) return {};
  auto r = conn.Exec(
      "SELECT process, reason, extract(epoch FROM clock_timestamp() - since)::float8 AS seconds FROM runnel_pauses "
      "WHERE pipeline = $1 AND seen_at > clock_timestamp() - interval '1 minute' ORDER BY process",
      Params().Add(config.name));
  std::vector<PausedProcess> out;
  out.reserve(static_cast<size_t>(r.rows()));
  for (int i = 0; i < r.rows(); ++i) {
    out.push_back({r.Get<std::string>(i, "process"), r.Get<std::string>(i, "reason"), r.Get<double>(i, "seconds")});
  }
  return out;
}

}  // namespace runnel::pipeline
