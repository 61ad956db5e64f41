// /healthz, /readyz, /metrics and /v1/state/clients/{id}: what operators and clients
// read about the process and its quota state.
#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "api.hpp"
#include "runnel/core/duration.hpp"
#include "runnel/pipeline/quota.hpp"
#include "runnel/pipeline/worker.hpp"

namespace runnel::server {

using nlohmann::json;

namespace {

class HealthResource {
 public:
  HealthResource(const std::vector<std::unique_ptr<Api>>& apis, const server::Metrics& metrics)
      : apis_(apis), metrics_(metrics) {}

  void Ready(const HttpRequest&, HttpResponse& res, const PathParams&) {
    std::vector<std::string> problems;
    for (const auto& api : apis_) {
      // With several pipelines, each problem names its pipeline.
      const std::string of = apis_.size() > 1 ? fmt::format("pipeline '{}': ", api->config.name) : "";
      if (api->ctx.models->Current()->empty()) problems.push_back(of + "no model loaded yet");
      if (api->ctx.workers_running && !api->ctx.workers_running()) problems.push_back(of + "workers are not running");
      if (api->ctx.pauses) {
        for (const auto& reason : api->ctx.pauses()) problems.push_back(fmt::format("{}paused: {}", of, reason));
      }
    }
    try {
      Any().pool.Run([](postgres::Connection& conn) { return conn.Exec("SELECT 1"); });
    } catch (const Error& e) {
      problems.push_back(fmt::format("database: {}", e.what()));
    }
    if (problems.empty()) {
      Reply(res, 200, {{"status", "ready"}});
    } else {
      Reply(res, 503, {{"status", "not ready"}, {"problems", problems}});
    }
  }

  void Metrics(const HttpRequest&, HttpResponse& res, const PathParams&) {
    MetricFamily depth{"runnel_queue_depth", "Requests queued and not yet served.", "gauge", {}};
    MetricFamily oldest{"runnel_queue_oldest_seconds", "Age of the oldest queued request.", "gauge", {}};
    MetricFamily subscribers{"runnel_event_subscribers", "Result subscribers connected to this process.", "gauge", {}};
    MetricFamily invocations{
        "runnel_model_invocations_total", "Model invocations (batches) by model version.", "counter", {}};
    MetricFamily rows{"runnel_model_rows_total", "Rows scored by model version.", "counter", {}};
    MetricFamily inference{
        "runnel_model_inference_seconds_total", "Time spent in the model, by model version.", "counter", {}};
    for (const auto& api : apis_) {
      const std::string p = fmt::format("pipeline=\"{}\"", api->config.name);
      try {
        const auto queue =
            api->pool.Run([&](postgres::Connection& conn) { return pipeline::ReadQueueState(conn, api->config); });
        depth.samples.emplace_back(p, static_cast<double>(queue.requests));
        oldest.samples.emplace_back(p, queue.oldest_seconds);
      } catch (const Error& e) {
        spdlog::debug("metrics: queue depth of '{}': {}", api->config.name, e.what());
      }
      if (api->ctx.events != nullptr) {
        subscribers.samples.emplace_back(p, static_cast<double>(api->ctx.events->subscribers()));
      }
      for (const auto& serving : api->ctx.models->Current()->All()) {
        const std::string labels = fmt::format("{},model=\"{}\",version=\"{}\"", p, serving->name, serving->label());
        const auto& stats = *serving->stats;
        invocations.samples.emplace_back(labels, static_cast<double>(stats.invocations.load()));
        rows.samples.emplace_back(labels, static_cast<double>(stats.rows.load()));
        inference.samples.emplace_back(labels, static_cast<double>(stats.total_ns.load()) / 1e9);
      }
    }
    std::vector<MetricFamily> families;
    for (auto* family : {&depth, &oldest, &subscribers, &invocations, &rows, &inference}) {
      families.push_back(std::move(*family));
    }
    for (auto& family : ProcessMetrics()) families.push_back(std::move(family));
    res.status = 200;
    res.content_type = "text/plain; version=0.0.4";
    res.body = metrics_.Render(families);
  }

  // The client's quota state in every pipeline that keeps one.
  void Client(const HttpRequest& req, HttpResponse& res, const PathParams& m) {
    const std::string& client = m[0];
    Any().CheckOwnClient(req, client);
    json pipelines = json::object();
    for (const auto& api : apis_) {
      if (api->config.quota_max_requests) pipelines[api->config.name] = QuotaJson(*api, client);
    }
    if (pipelines.empty()) {
      throw HttpError{404, apis_.size() > 1 ? "no pipeline of this process keeps per-client state (no [quota])"
                                            : fmt::format("pipeline '{}' keeps no per-client state (no [quota])",
                                                          Any().config.name)};
    }
    Reply(res, 200, {{"client_id", client}, {"pipelines", pipelines}});
  }

 private:
  Api& Any() const { return *apis_.front(); }

  static json QuotaJson(Api& api, const std::string& client) {
    const auto& config = api.config;
    const auto state =
        api.pool.Run([&](postgres::Connection& conn) { return pipeline::quota::Read(conn, config, {client}); });
    const int64_t requests = state.clients.at(0).requests;
    const int64_t max = *config.quota_max_requests;
    const bool windowed = config.quota_window.count() > 0;
    json out = QuotaCountJson(requests, max);
    out["max_requests"] = max;
    out["window"] = windowed ? json(FormatDuration(config.quota_window)) : json(nullptr);
    out["window_start"] = TextOrNull(state.window_start);
    out["resets_at"] = TextOrNull(state.resets_at);
    return out;
  }

  const std::vector<std::unique_ptr<Api>>& apis_;
  const server::Metrics& metrics_;
};

}  // namespace

void AddHealthRoutes(Router& router, const std::vector<std::unique_ptr<Api>>& apis, const Metrics& metrics) {
  auto resource = std::make_shared<HealthResource>(apis, metrics);
  RouteOptions on_io_thread;
  on_io_thread.lane = Lane::kInline;
  on_io_thread.open = true;
  router.Add(
      "GET", "/healthz",
      [](const HttpRequest&, HttpResponse& res, const PathParams&) {
        Reply(res, 200, {{"status", "ok"}});
      },
      on_io_thread);
  const auto read = RouteOptions::For(Scope::kRead);
  router.Add("GET", "/readyz", Bind(resource, &HealthResource::Ready), read);
  router.Add("GET", "/metrics", Bind(resource, &HealthResource::Metrics), read);
  router.Add("GET", "/v1/state/clients/{client_id}", Bind(resource, &HealthResource::Client), read);
}

}  // namespace runnel::server
