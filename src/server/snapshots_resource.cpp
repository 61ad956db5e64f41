// Analytics snapshots over HTTP (read scope; a snapshot holds every client's requests,
// so a client-bound key is refused):
//   GET  /v1/pipelines/{p}/snapshots                      the published versions
//   GET  /v1/pipelines/{p}/snapshots/{version}            one version: its tables
//   GET  /v1/pipelines/{p}/snapshots/{version}/analyses   the ready-made analyses the
//        dashboard draws (snapshot::Analyses), computed once per version and kept
//   POST /v1/pipelines/{p}/snapshots/{version}/query      {"sql": "SELECT ..."}: the answer
//        as JSON, or CSV with ?format=csv or Accept: text/csv; {version} may be "latest".
// Queries run sandboxed (snapshot::Query) on the handler pool, at most kConcurrentQueries
// at once per process (each may use [snapshots] query_memory_mb): more get 503.
#include <fmt/chrono.h>
#include <fmt/format.h>

#include <atomic>
#include <charconv>

#include "api.hpp"
#include "runnel/core/mutex.hpp"
#include "runnel/snapshot/snapshot.hpp"

namespace runnel::server {

using nlohmann::json;

namespace {

constexpr int kConcurrentQueries = 2;
constexpr size_t kMaxQueryBody = 1 << 20;

std::optional<int64_t> VersionOf(const std::string& text) {
  if (text == "latest") return std::nullopt;
  int64_t version = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), version);
  if (ec != std::errc() || end != text.data() + text.size() || version < 1) {
    throw HttpError{404, fmt::format("'{}' is not a snapshot version (a number, or \"latest\")", text)};
  }
  return version;
}

std::string Iso(std::chrono::system_clock::time_point t) {
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}Z", std::chrono::floor<std::chrono::seconds>(t));
}

json InfoJson(const snapshot::SnapshotInfo& info) {
  return {{"version", info.version}, {"bytes", info.bytes}, {"created_at", Iso(info.created)}};
}

// Unavailable from a query is its own limit (time, memory): the caller's to change.
[[noreturn]] void ThrowQueryError(const Error& e) {
  if (e.code() == ErrorCode::Unavailable) throw HttpError{422, e.what()};
  throw;
}

class SnapshotsResource {
 public:
  explicit SnapshotsResource(Api& api) : api_(api), store_(api.config.snapshots.dir, api.config.name) {}

  void List(const HttpRequest& req, HttpResponse& res, const PathParams&) {
    CheckUnboundKey(req, "a snapshot holds");
    json versions = json::array();
    for (const auto& info : store_.List()) versions.push_back(InfoJson(info));
    const auto& s = api_.config.snapshots;
    res.body = json{
        {"pipeline", api_.config.name},
        {"versions", std::move(versions)},
        {"every_seconds", s.every.count()},
        {"keep",
         s.keep}}.dump();
  }

  void Get(const HttpRequest& req, HttpResponse& res, const PathParams& m) {
    CheckUnboundKey(req, "a snapshot holds");
    const auto reader = store_.Open(VersionOf(m[1]));
    json out = InfoJson(reader.info());
    try {
      const auto tables = snapshot::Query(
          reader,
          "SELECT table_name, CASE WHEN estimated_size IS NULL THEN 'view' ELSE 'table' END, column_count FROM "
          "(SELECT table_name, estimated_size, column_count FROM duckdb_tables() UNION ALL SELECT view_name, NULL, "
          "column_count FROM duckdb_views() WHERE NOT internal) ORDER BY 1",
          Limits());
      json list = json::array();
      for (const auto& row : tables.rows) {
        list.push_back({{"name", row[0].value_or("")},
                        {"kind", row[1].value_or("")},
                        {"columns", std::stoll(row[2].value_or("0"))}});
      }
      out["tables"] = std::move(list);
      const auto meta = snapshot::Query(reader, "SELECT taken_at, pg_snapshot FROM snapshot", Limits());
      if (!meta.rows.empty()) {
        out["taken_at"] = meta.rows[0][0].value_or("");
        out["pg_snapshot"] = meta.rows[0][1].value_or("");
      }
    } catch (const Error& e) {
      ThrowQueryError(e);
    }
    res.body = out.dump();
  }

  void Analyses(const HttpRequest& req, HttpResponse& res, const PathParams& m) {
    CheckUnboundKey(req, "a snapshot holds");
    const auto reader = store_.Open(VersionOf(m[1]));
    const int64_t version = reader.info().version;
    {
      MutexLock lock(mutex_);
      if (analyses_version_ == version) {
        res.body = analyses_;
        return;
      }
    }
    json out = InfoJson(reader.info());
    json analyses = json::object();
    try {
      for (const auto& a : snapshot::Analyses(reader, api_.config, Limits())) {
        analyses[a.name] = json::parse(snapshot::AnswerJson(a.answer));
      }
    } catch (const Error& e) {
      ThrowQueryError(e);
    }
    out["analyses"] = std::move(analyses);
    res.body = out.dump();
    MutexLock lock(mutex_);
    analyses_version_ = version;
    analyses_ = res.body;
  }

  void Query(const HttpRequest& req, HttpResponse& res, const PathParams& m) {
    CheckUnboundKey(req, "a snapshot holds");
    const json body = json::parse(req.Body(), nullptr, false);
    if (body.is_discarded() || !body.is_object() || !body.contains("sql") || !body["sql"].is_string()) {
      throw HttpError{400, "the body must be a JSON object with \"sql\": the SELECT to run"};
    }
    const bool csv = req.Query("format") == "csv" || req.Header("Accept").value_or("").find("text/csv") == 0;
    if (auto format = req.Query("format"); format && *format != "csv" && *format != "json") {
      throw HttpError{400, fmt::format("format '{}': \"json\" or \"csv\"", *format)};
    }
    const auto reader = store_.Open(VersionOf(m[1]));
    if (running_.fetch_add(1) >= kConcurrentQueries) {
      running_.fetch_sub(1);
      throw HttpError{503, fmt::format("{} snapshot queries are running: try again shortly", kConcurrentQueries)};
    }
    struct Release {
      std::atomic<int>& n;
      ~Release() { n.fetch_sub(1); }
    } release{running_};
    try {
      const auto answer = snapshot::Query(reader, body["sql"].get<std::string>(), Limits());
      res.SetHeader("X-Runnel-Snapshot-Version", std::to_string(reader.info().version));
      if (csv) {
        res.content_type = "text/csv; charset=utf-8";
        res.body = snapshot::AnswerCsv(answer);
      } else {
        res.body = snapshot::AnswerJson(answer);
      }
    } catch (const Error& e) {
      ThrowQueryError(e);
    }
  }

 private:
  snapshot::QueryLimits Limits() const {
    const auto& s = api_.config.snapshots;
    return {s.query_timeout, s.query_memory_mb, s.query_max_rows};
  }

  Api& api_;
  snapshot::SnapshotStore store_;
  std::atomic<int> running_{0};
  // The newest analyses answered: dashboards ask every few seconds, a version never changes.
  Mutex mutex_;
  int64_t analyses_version_ GUARDED_BY(mutex_) = 0;
  std::string analyses_ GUARDED_BY(mutex_);
};

}  // namespace

void AddSnapshotRoutes(Router& router, Api& api) {
  auto resource = std::make_shared<SnapshotsResource>(api);
  const auto read = RouteOptions::For(Scope::kRead);
  router.AddForPipeline(api.config.name, "GET", "/v1/pipelines/{p}/snapshots", Bind(resource, &SnapshotsResource::List),
                        read);
  router.AddForPipeline(api.config.name, "GET", "/v1/pipelines/{p}/snapshots/{version}",
                        Bind(resource, &SnapshotsResource::Get), read);
  router.AddForPipeline(api.config.name, "GET", "/v1/pipelines/{p}/snapshots/{version}/analyses",
                        Bind(resource, &SnapshotsResource::Analyses), read);
  auto query = read;
  query.max_body_bytes = kMaxQueryBody;
  router.AddForPipeline(api.config.name, "POST", "/v1/pipelines/{p}/snapshots/{version}/query",
                        Bind(resource, &SnapshotsResource::Query), query);
}

}  // namespace runnel::server
