// The dashboard: its page and files at / (built into the binary, no authentication:
// they hold no data), and the JSON it draws, read-scope like /metrics:
// GET /v1/dashboard (every pipeline the process serves) and
// GET /v1/pipelines/{p}/dashboard (one pipeline: per-second throughput and latency
// from runnel_samples, stage times, the queue, the processes serving it and their
// state, the model's versions, the top clients, each output's distribution in the
// latest requests and those before, the latest failures and their reasons). Every
// query reads a bounded number of rows through an index, whatever the tables hold:
// dashboards left open must not load the database that serves.
#include <fmt/format.h>

#include <chrono>

#include "api.hpp"
#include "dashboard.hpp"
#include "dashboard_assets.hpp"
#include "runnel/pipeline/quota.hpp"
#include "runnel/pipeline/replay.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/registry/registry.hpp"
#include "runnel/server/samples.hpp"

namespace runnel::server {

using nlohmann::json;

namespace {

std::string_view ContentTypeOf(std::string_view name) {
  if (name.ends_with(".html")) return "text/html; charset=utf-8";
  if (name.ends_with(".js")) return "text/javascript; charset=utf-8";
  if (name.ends_with(".css")) return "text/css; charset=utf-8";
  return "application/octet-stream";
}

// The page's files: only they may run in it (no inline script, no other origin).
void ServeAsset(std::string_view name, HttpResponse& res) {
  for (const auto& asset : DashboardAssets()) {
    if (asset.name != name) continue;
    res.status = 200;
    res.content_type = std::string(ContentTypeOf(name));
    res.body = std::string(asset.bytes);
    res.SetHeader("Content-Security-Policy",
                  "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
                  "base-uri 'none'; form-action 'self'; frame-ancestors 'none'");
    res.SetHeader("X-Content-Type-Options", "nosniff");
    res.SetHeader("Cache-Control", "no-cache");
    return;
  }
  throw HttpError{404, fmt::format("no dashboard file '{}'", name)};
}

class DashboardResource {
 public:
  explicit DashboardResource(const std::vector<std::unique_ptr<Api>>& apis) : apis_(apis) {}

  void Overview(const HttpRequest& req, HttpResponse& res, const PathParams&) {
    CheckUnboundKey(req, "the dashboard shows");
    json pipelines = json::array();
    for (const auto& api : apis_) {
      api->pool.Run([&](postgres::Connection& conn) {
        const auto queue = pipeline::ReadQueueState(conn, api->config);
        Sample minute;
        for (const auto& s : ReadSamples(conn, api->config.name, std::chrono::seconds(60))) minute.Add(s);
        pipelines.push_back(
            {{"name", api->config.name},
             {"queue", {{"depth", queue.requests}, {"oldest_seconds", queue.oldest_seconds}}},
             {"last_minute", {{"done", minute.done}, {"throttled", minute.throttled}, {"failed", minute.failed}}}});
        return 0;
      });
    }
    Reply(res, 200, {{"pipelines", pipelines}, {"now", Now()}});
  }

  void Pipeline(Api& api, const HttpRequest& req, HttpResponse& res) {
    CheckUnboundKey(req, "the dashboard shows");
    const auto window = Window(req);
    json body = api.pool.Run([&](postgres::Connection& conn) {
      const auto samples = ReadSamples(conn, api.config.name, window);
      const auto queue = pipeline::ReadQueueState(conn, api.config);
      return json{{"pipeline", api.config.name},
                  {"now", Now()},
                  {"window_seconds", window.count()},
                  {"series", SeriesJson(samples)},
                  {"stages", StagesJson(samples)},
                  {"queue", {{"depth", queue.requests}, {"oldest_seconds", queue.oldest_seconds}}},
                  {"processes", ProcessesJson(conn, api)},
                  {"model", api.config.model_name.empty() ? json(nullptr) : json(api.config.model_name)},
                  {"versions", VersionsJson(conn, api)},
                  {"failures", FailuresJson(conn, api)},
                  {"latest_failed", LatestFailedJson(conn, api)},
                  {"clients", ClientsJson(conn, api)},
                  {"window_requests", kWindowRequests},
                  {"distributions", DistributionsJson(conn, api)},
                  {"outputs", api.config.output_columns},
                  {"client_column", api.config.client_column.empty() ? json(nullptr) : json(api.config.client_column)}};
    });
    Reply(res, 200, body);
  }

 private:
  static double Now() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  }

  // ?window=SECONDS, 10..900 (default 900).
  static std::chrono::seconds Window(const HttpRequest& req) {
    const auto text = req.Query("window");
    if (!text) return kSampleHorizon;
    const auto seconds = ParseInt(*text);
    if (!seconds || *seconds < 10 || *seconds > kSampleHorizon.count())
      throw HttpError{422, fmt::format("'window' must be 10 to {} seconds", kSampleHorizon.count())};
    return std::chrono::seconds(*seconds);
  }

  // The processes that reported in the last 10 s, with what they serve and whether
  // they are paused (and why).
  static json ProcessesJson(postgres::Connection& conn, Api& api) {
    std::map<std::string, json> by_process;
    for (const auto& s : registry::ReadPipelineState(conn, api.config.name, 10.0)) {
      by_process[s.process] = {{"process", s.process},
                               {"model", s.name},
                               {"version", s.version},
                               {"loaded_since", IsoFromEpoch(s.loaded_at)},
                               {"invocations", s.invocations},
                               {"mean_ms", s.invocations > 0 ? s.total_ms / static_cast<double>(s.invocations) : 0.0},
                               {"max_ms", s.max_ms},
                               {"state", "serving"}};
    }
    for (const auto& p : pipeline::PausedProcesses(conn, api.config)) {
      auto& entry = by_process[p.process];
      entry["process"] = p.process;
      entry["state"] = "paused";
      entry["reason"] = p.reason;
    }
    json out = json::array();
    for (auto& [process, entry] : by_process) out.push_back(std::move(entry));
    return out;
  }

  static json VersionsJson(postgres::Connection& conn, Api& api) {
    json out = json::array();
    if (api.config.model_name.empty() || !postgres::TableExists(conn, "runnel_models")) return out;
    for (const auto& v : registry::Versions(conn, api.config.model_name)) {
      out.push_back({{"version", v.version},
                     {"status", registry::ModelStatusName(v.status)},
                     {"created_at", v.created_at},
                     {"description", v.description},
                     {"format", v.format},
                     {"error", v.error ? json(*v.error) : json(nullptr)}});
      if (out.size() == 50) break;
    }
    return out;
  }

  // Each output's values in the latest kWindowRequests requests against the
  // kWindowRequests before them (served ones only: the others have no outputs): drift
  // at a glance. Newest by key through the results' primary key: 2 * kWindowRequests
  // rows read whatever the table holds and however few of them were served.
  static constexpr int64_t kWindowRequests = 1000;

  static json DistributionsJson(postgres::Connection& conn, Api& api) {
    const auto& outputs = api.config.output_columns;
    json out = json::array();
    if (outputs.empty()) return out;
    std::vector<std::string> columns;
    for (const auto& c : outputs) columns.push_back(postgres::QuoteIdentifier(c));
    auto r = conn.Exec(fmt::format("SELECT status = 'done' AS served, {} FROM {} ORDER BY key DESC LIMIT $1",
                                   fmt::join(columns, ", "), postgres::QuoteIdentifier(api.names.results)),
                       postgres::Params().Add(2 * kWindowRequests));
    const int served = r.ColumnIndex("served");
    for (size_t c = 0; c < outputs.size(); ++c) {
      const int column = r.ColumnIndex(outputs[c]);
      auto split = [&](auto read, auto& latest, auto& previous) {
        for (int i = 0; i < r.rows(); ++i) {
          if (r.Get<bool>(i, served)) (i < kWindowRequests ? latest : previous).push_back(read(i, column));
        }
      };
      if (pipeline::IsLabelOutput(api.config, outputs[c])) {
        std::vector<std::optional<std::string>> latest, previous;
        split([&](int i, int col) { return r.GetOptional<std::string>(i, col); }, latest, previous);
        out.push_back(LabelDistribution(outputs[c], latest, previous));
      } else {
        std::vector<std::optional<double>> latest, previous;
        split([&](int i, int col) { return r.GetOptional<double>(i, col); }, latest, previous);
        out.push_back(NumericDistribution(outputs[c], latest, previous));
      }
    }
    return out;
  }

  // The top clients by requests in the quota's current window, with what they have
  // left and how many were throttled; null without a [quota].
  static json ClientsJson(postgres::Connection& conn, Api& api) {
    const auto& config = api.config;
    if (!config.quota_max_requests) return nullptr;
    const auto top = pipeline::quota::Top(conn, config, 10);
    const int64_t max = *config.quota_max_requests;
    json clients = json::array();
    for (const auto& c : top.clients) {
      json client = QuotaCountJson(c.requests, max);
      client["client"] = c.client;
      clients.push_back(std::move(client));
    }
    return {{"max_requests", max},
            {"window_start", TextOrNull(top.window_start)},
            {"resets_at", TextOrNull(top.resets_at)},
            {"top", clients}};
  }

  // The reasons of the latest kLatestFailures failed requests, grouped.
  static constexpr int64_t kLatestFailures = 1000;

  static json FailuresJson(postgres::Connection& conn, Api& api) {
    json out = json::array();
    for (const auto& f : pipeline::TopFailureReasons(conn, api.config, 10, kLatestFailures)) {
      out.push_back({{"sqlstate", f.sqlstate}, {"reason", f.reason}, {"count", f.count}});
    }
    return out;
  }

  // The 20 latest failed requests (ids as clients see them), newest first, through the
  // index of failed requests: never a scan, however rare or common failures are.
  static json LatestFailedJson(postgres::Connection& conn, Api& api) {
    const auto& keys = api.schema.keys;
    const std::string map = keys.mapped() ? fmt::format(" LEFT JOIN {} m ON m.{} = f.key", keys.map_table(),
                                                        pipeline::RequestKeys::kIdColumn)
                                          : std::string();
    auto r =
        conn.Exec(fmt::format("SELECT {} AS id, f.error FROM (SELECT key, error FROM {} WHERE status = 'failed' "
                              "ORDER BY key DESC LIMIT 20) f{} ORDER BY f.key DESC",
                              keys.IdJsonSql("m", "f.key"), postgres::QuoteIdentifier(api.names.results), map));
    json out = json::array();
    const int id = r.ColumnIndex("id"), error = r.ColumnIndex("error");
    for (int i = 0; i < r.rows(); ++i) {
      out.push_back({{"id", api.IdJson(r, i, id)},
                     {"error", r.IsNull(i, error) ? json(nullptr) : json(r.Get<std::string>(i, error))}});
    }
    return out;
  }

  const std::vector<std::unique_ptr<Api>>& apis_;
};

}  // namespace

void AddDashboardRoutes(Router& router, const std::vector<std::unique_ptr<Api>>& apis) {
  RouteOptions open;
  open.lane = Lane::kInline;  // a copy of a built-in file: never blocks
  open.open = true;
  router.Add(
      "GET", "/", [](const HttpRequest&, HttpResponse& res, const PathParams&) { ServeAsset("index.html", res); },
      open);
  router.Add(
      "GET", "/dashboard/{file}",
      [](const HttpRequest&, HttpResponse& res, const PathParams& m) { ServeAsset(m[0], res); }, open);
  auto resource = std::make_shared<DashboardResource>(apis);
  const auto read = RouteOptions::For(Scope::kRead);
  router.Add("GET", "/v1/dashboard", Bind(resource, &DashboardResource::Overview), read);
  for (const auto& api : apis) {
    Api* one = api.get();
    router.AddForPipeline(
        api->config.name, "GET", "/v1/pipelines/{p}/dashboard",
        [resource, one](const HttpRequest& req, HttpResponse& res, const PathParams&) {
          resource->Pipeline(*one, req, res);
        },
        read);
  }
}

}  // namespace runnel::server
