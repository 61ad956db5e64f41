#include "runnel/pipeline/quota.hpp"

#include <fmt/format.h>

#include "runnel/core/duration.hpp"

namespace runnel::pipeline::quota {
namespace {

using postgres::Params;
using postgres::QuoteIdentifier;

// The current window's start for a window of `seconds` (a bigint parameter): aligned
// to the epoch, in the transaction's time; -infinity (every counter's window) for 0.
std::string WindowStartSql(std::string_view seconds) {
  return fmt::format(
      "CASE WHEN {0} > 0 THEN to_timestamp(floor(extract(epoch FROM now()) / {0}) * {0}) ELSE '-infinity'::timestamptz "
      "END",
      seconds);
}

// The current window's boundaries as ISO text columns window_start and resets_at
// (NULL over all time), of the window `w.start` for a window of `seconds`.
std::string WindowColumnsSql(std::string_view seconds) {
  return fmt::format("CASE WHEN {0} > 0 THEN {1} END AS window_start, CASE WHEN {0} > 0 THEN {2} END AS resets_at",
                     seconds, postgres::IsoTimestampSql("w.start"),
                     postgres::IsoTimestampSql(fmt::format("(w.start + {} * interval '1 second')", seconds)));
}

// Reads WindowColumnsSql's columns from row 0 (empty over all time).
void ReadWindow(const postgres::Result& r, std::string& window_start, std::string& resets_at) {
  window_start = r.GetOptional<std::string>(0, r.ColumnIndex("window_start")).value_or("");
  resets_at = r.GetOptional<std::string>(0, r.ColumnIndex("resets_at")).value_or("");
}

// A Snapshot from rows of WindowColumnsSql's columns, client and requests (a row
// with client NULL carries the window alone).
Snapshot ReadSnapshot(const postgres::Result& r) {
  const int client = r.ColumnIndex("client"), requests = r.ColumnIndex("requests");
  Snapshot out;
  ReadWindow(r, out.window_start, out.resets_at);
  for (int i = 0; i < r.rows(); ++i) {
    if (r.IsNull(i, client)) continue;
    out.clients.push_back({r.Get<std::string>(i, client), r.Get<int64_t>(i, requests)});
  }
  return out;
}

int64_t WindowSeconds(const PipelineConfig& config) {
  return static_cast<int64_t>(config.quota_window.count());
}

// Advances counters: $1 clients (text[], sorted), $2 counts (bigint[]), $3 the window
// in seconds (0: all time). Returns (client, requests in the window after this).
std::string AdvanceSql(const SchemaNames& names) {
  // A counter from an earlier window restarts; one already in a later window (another
  // process crossed the boundary first) takes this count too: never lost, never twice.
  return fmt::format(
      "INSERT INTO {} AS q (client, requests, window_start) SELECT v.client, v.n, {} FROM unnest($1::text[], "
      "$2::bigint[]) AS v(client, n) ORDER BY v.client ON CONFLICT (client) DO UPDATE SET requests = CASE WHEN "
      "EXCLUDED.window_start > q.window_start THEN EXCLUDED.requests ELSE q.requests + EXCLUDED.requests END, "
      "window_start = GREATEST(q.window_start, EXCLUDED.window_start) RETURNING client, requests",
      QuoteIdentifier(names.quota), WindowStartSql("$3::bigint"));
}

}  // namespace

std::map<std::string, int64_t> Advance(postgres::Connection& conn, const PipelineConfig& config,
                                       const std::map<std::string, int64_t>& per_client) {
  std::vector<std::optional<std::string>> clients;
  std::vector<int64_t> counts;
  for (const auto& [client, count] : per_client) {
    clients.emplace_back(client);
    counts.push_back(count);
  }
  auto r = conn.ExecPrepared(AdvanceSql(NamesFor(config)),
                             Params().AddArray(clients).AddArray(counts).Add(WindowSeconds(config)));
  std::map<std::string, int64_t> before;
  const int client_col = r.ColumnIndex("client"), requests_col = r.ColumnIndex("requests");
  for (int i = 0; i < r.rows(); ++i) {
    const auto client = r.Get<std::string>(i, client_col);
    before[client] = r.Get<int64_t>(i, requests_col) - per_client.at(client);
  }
  return before;
}

std::string OverQuotaMessage(const PipelineConfig& config, const std::string& client) {
  return fmt::format("client {} is over its quota of {} requests{}", client, config.quota_max_requests.value_or(0),
                     config.quota_window.count() > 0 ? " per " + FormatDuration(config.quota_window) : "");
}

std::map<std::string, int64_t> Counted(postgres::Connection& conn, const PipelineConfig& config,
                                       const std::map<std::string, int64_t>& per_client) {
  std::vector<std::optional<std::string>> clients;
  for (const auto& [client, count] : per_client) clients.emplace_back(client);
  const auto r = conn.ExecPrepared(
      fmt::format("SELECT client, CASE WHEN window_start >= {} THEN requests ELSE 0 END AS requests FROM {} WHERE "
                  "client = ANY($1::text[])",
                  WindowStartSql("$2::bigint"), QuoteIdentifier(NamesFor(config).quota)),
      Params().AddArray(clients).Add(WindowSeconds(config)));
  std::map<std::string, int64_t> counted;
  const int client_col = r.ColumnIndex("client"), requests_col = r.ColumnIndex("requests");
  for (int i = 0; i < r.rows(); ++i) counted[r.Get<std::string>(i, client_col)] = r.Get<int64_t>(i, requests_col);
  return counted;
}

Snapshot Read(postgres::Connection& conn, const PipelineConfig& config, const std::vector<std::string>& clients) {
  const std::string quota = QuoteIdentifier(NamesFor(config).quota);
  const std::string who =
      clients.empty() ? fmt::format("SELECT client FROM {}", quota) : "SELECT DISTINCT unnest($1::text[]) AS client";
  // One row with the window even when there is no client (client NULL).
  const auto r = conn.Exec(
      fmt::format("SELECT {}, c.client, COALESCE(CASE WHEN q.window_start >= w.start THEN q.requests END, 0) AS "
                  "requests FROM (SELECT {} AS start) w LEFT JOIN ({}) c ON true LEFT JOIN {} q ON q.client = "
                  "c.client ORDER BY c.client",
                  WindowColumnsSql("$2::bigint"), WindowStartSql("$2::bigint"), who, quota),
      Params()
          .AddArray(std::vector<std::optional<std::string>>(clients.begin(), clients.end()))
          .Add(WindowSeconds(config)));
  return ReadSnapshot(r);
}

Snapshot Top(postgres::Connection& conn, const PipelineConfig& config, int64_t limit) {
  // One row with the window even when no client counted in it (client NULL).
  const auto r = conn.Exec(
      fmt::format("SELECT {}, q.client, q.requests FROM (SELECT {} AS start) w LEFT JOIN LATERAL (SELECT client, "
                  "requests FROM {} WHERE window_start >= w.start AND requests > 0 ORDER BY requests DESC, client "
                  "LIMIT $2) q ON true ORDER BY q.requests DESC, q.client",
                  WindowColumnsSql("$1::bigint"), WindowStartSql("$1::bigint"),
                  QuoteIdentifier(NamesFor(config).quota)),
      Params().Add(WindowSeconds(config)).Add(limit));
  return ReadSnapshot(r);
}

Summary Summarize(postgres::Connection& conn, const PipelineConfig& config) {
  const auto r =
      conn.Exec(fmt::format("SELECT {}, count(q.client) AS clients, count(q.client) FILTER (WHERE q.requests >= $2) AS "
                            "at_limit FROM (SELECT {} AS start) w LEFT JOIN {} q ON q.window_start >= w.start AND "
                            "q.requests > 0 GROUP BY w.start",
                            WindowColumnsSql("$1::bigint"), WindowStartSql("$1::bigint"),
                            QuoteIdentifier(NamesFor(config).quota)),
                Params().Add(WindowSeconds(config)).Add(config.quota_max_requests.value_or(0)));
  Summary out;
  ReadWindow(r, out.window_start, out.resets_at);
  out.clients = r.Get<int64_t>(0, r.ColumnIndex("clients"));
  out.at_limit = r.Get<int64_t>(0, r.ColumnIndex("at_limit"));
  return out;
}

int64_t Reset(postgres::Connection& conn, const PipelineConfig& config, const std::vector<std::string>& clients) {
  const std::string quota = QuoteIdentifier(NamesFor(config).quota);
  if (clients.empty()) return conn.Exec(fmt::format("DELETE FROM {}", quota), Params()).AffectedRows();
  return conn
      .Exec(fmt::format("DELETE FROM {} WHERE client = ANY($1::text[])", quota),
            Params().AddArray(std::vector<std::optional<std::string>>(clients.begin(), clients.end())))
      .AffectedRows();
}

std::string Describe(const PipelineConfig& config) {
  const std::string max = config.quota_max_requests ? std::to_string(*config.quota_max_requests) : "unlimited";
  if (config.quota_window.count() == 0) return fmt::format("{} requests per client over all time", max);
  return fmt::format("{} requests per client per {} (UTC-aligned)", max, FormatDuration(config.quota_window));
}

}  // namespace runnel::pipeline::quota
