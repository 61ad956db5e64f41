#include "result_events.hpp"

#include <fmt/format.h>

#include "outputs_json.hpp"

namespace runnel::server {

using nlohmann::json;
using postgres::Params;
using postgres::QuoteIdentifier;

namespace {

// The events after $1-$2-$3 up to $4-$5-$6 (inclusive), at most $7, whose transaction
// is older than every running one; with each request's result and client.
std::string ReadSql(const pipeline::PipelineConfig& config, const pipeline::SchemaNames& names,
                    const pipeline::RequestKeys& keys) {
  std::string outputs;
  for (const auto& column : config.output_columns) outputs += ", " + OutputSelectSql(config, column, "r");
  const std::string client =
      config.client_column.empty() ? "NULL::text" : fmt::format("s.{}::text", QuoteIdentifier(config.client_column));
  return fmt::format(
      "SELECT e.txid::text AS txid, e.id, k.ord, {id_json}, r.status, r.error, r.model_version, {client} AS client, "
      "{finished} AS finished_at{outputs} FROM {events} e CROSS JOIN LATERAL unnest(e.keys) WITH ORDINALITY AS k(key, "
      "ord) "
      "LEFT JOIN {results} r ON r.key = k.key{source} "
      "WHERE (e.txid, e.id) >= ($1::xid8, $2) AND (e.txid, e.id, k.ord) > ($1::xid8, $2, $3) "
      "AND (e.txid, e.id) <= ($4::xid8, $5) AND (e.txid, e.id, k.ord) <= ($4::xid8, $5, $6) "
      "AND e.txid < pg_snapshot_xmin(pg_current_snapshot()) ORDER BY e.txid, e.id, k.ord LIMIT $7",
      fmt::arg("client", client), fmt::arg("finished", postgres::IsoTimestampSql("r.finished_at")),
      fmt::arg("outputs", outputs), fmt::arg("events", QuoteIdentifier(names.events)),
      fmt::arg("results", QuoteIdentifier(names.results)),
      fmt::arg("source", keys.JoinSourceById("k.key", QuoteIdentifier(config.table), "s", "m")),
      fmt::arg("id_json", keys.IdJsonSql("m", "k.key")));
}

// Column positions of ReadSql's rows.
constexpr int kTxid = 0, kId = 1, kOrd = 2, kKey = 3, kStatus = 4, kError = 5, kVersion = 6, kClient = 7, kFinished = 8,
              kFirstOutput = 9;

}  // namespace

ResultEventReader::ResultEventReader(const pipeline::PipelineConfig& config, const pipeline::RequestKeys& keys)
    : config_(config), names_(pipeline::NamesFor(config)), read_sql_(ReadSql(config, names_, keys)) {}

std::vector<ResultEvent> ResultEventReader::Read(postgres::Connection& conn, const EventPosition& after,
                                                 const EventPosition& upto, int64_t limit) const {
  auto r = conn.Exec(read_sql_, Params()
                                    .Add(std::to_string(after.txid))
                                    .Add(after.id)
                                    .Add(after.ord)
                                    .Add(std::to_string(upto.txid))
                                    .Add(upto.id)
                                    .Add(upto.ord)
                                    .Add(limit));
  std::vector<ResultEvent> events;
  events.reserve(static_cast<size_t>(r.rows()));
  for (int i = 0; i < r.rows(); ++i) events.push_back(ToEvent(r, i));
  return events;
}

ResultEvent ResultEventReader::ToEvent(const postgres::Result& r, int i) const {
  ResultEvent e;
  e.pos.txid = std::stoull(r.Get<std::string>(i, kTxid));
  e.pos.id = r.Get<int64_t>(i, kId);
  e.pos.ord = r.Get<int64_t>(i, kOrd);
  if (!r.IsNull(i, kClient)) e.client = r.Get<std::string>(i, kClient);
  auto text_or_null = [&](int c) { return r.IsNull(i, c) ? json(nullptr) : json(r.Get<std::string>(i, c)); };
  json& data = e.data;
  data["id"] = json::parse(r.Get<std::string>(i, kKey));  // the key as clients see it (IdJsonSql)
  data["status"] = text_or_null(kStatus);
  data["error"] = text_or_null(kError);
  data["model_version"] = text_or_null(kVersion);
  data["outputs"] = OutputsJson(config_, r, i, kFirstOutput);
  data["finished_at"] = text_or_null(kFinished);
  return e;
}

// The newest event no later commit can precede.
EventPosition ResultEventReader::Head(postgres::Connection& conn) const {
  auto r =
      conn.Exec(fmt::format("SELECT e.txid::text AS txid, e.id, cardinality(e.keys) AS n FROM {} e "
                            "WHERE e.txid < pg_snapshot_xmin(pg_current_snapshot()) "
                            "ORDER BY e.txid DESC, e.id DESC LIMIT 1",
                            QuoteIdentifier(names_.events)));
  if (r.rows() == 0) return {};
  return {std::stoull(r.Get<std::string>(0, "txid")), r.Get<int64_t>(0, "id"), r.Get<int64_t>(0, "n")};
}

}  // namespace runnel::server
