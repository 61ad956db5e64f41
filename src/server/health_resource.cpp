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
  explicit HealthResource(Api& api) : api_(api) {}

  void Ready(const HttpRequest&, HttpResponse& res, const PathParams&) {
    std::vector<std::string> problems;
    if (api_.ctx.models->Current()->empty()) problems.push_back("no model loaded yet");
    if (api_.ctx.workers_running && !api_.ctx.workers_running()) problems.push_back("workers are not running");
    if (api_.ctx.pauses) {
      for (const auto& reason : api_.ctx.pauses()) problems.push_back(fmt::format("paused: {}", reason));
    }
    try {
      api_.pool.Run([](postgres::Connection& conn) { return conn.Exec("SELECT 1"); });
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
    const std::string p = fmt::format("pipeline=\"{}\"", api_.config.name);
    std::vector<MetricFamily> families;
    try {
      const auto queue =
          api_.pool.Run([&](postgres::Connection& conn) { return pipeline::ReadQueueState(conn, api_.config); });
      families.push_back({"runnel_queue_depth",
                          "Requests queued and not yet served.",
                          "gauge",
                          {{p, static_cast<double>(queue.requests)}}});
      families.push_back(
          {"runnel_queue_oldest_seconds", "Age of the oldest queued request.", "gauge", {{p, queue.oldest_seconds}}});
    } catch (const Error& e) {
      spdlog::debug("metrics: queue depth: {}", e.what());
    }
    if (api_.ctx.events != nullptr) {
      families.push_back({"runnel_event_subscribers",
                          "Result subscribers connected to this process.",
                          "gauge",
                          {{p, static_cast<double>(api_.ctx.events->subscribers())}}});
    }
    MetricFamily invocations{
        "runnel_model_invocations_total", "Model invocations (batches) by model version.", "counter", {}};
    MetricFamily rows{"runnel_model_rows_total", "Rows scored by model version.", "counter", {}};
    MetricFamily inference{
        "runnel_model_inference_seconds_total", "Time spent in the model, by model version.", "counter", {}};
    for (const auto& serving : api_.ctx.models->Current()->All()) {
      const std::string labels = fmt::format("{},model=\"{}\",version=\"{}\"", p, serving->name, serving->label());
      const auto& stats = *serving->stats;
      invocations.samples.emplace_back(labels, static_cast<double>(stats.invocations.load()));
      rows.samples.emplace_back(labels, static_cast<double>(stats.rows.load()));
      inference.samples.emplace_back(labels, static_cast<double>(stats.total_ns.load()) / 1e9);
    }
    families.push_back(std::move(invocations));
    families.push_back(std::move(rows));
    families.push_back(std::move(inference));
    for (auto& family : ProcessMetrics()) families.push_back(std::move(family));
    res.status = 200;
    res.content_type = "text/plain; version=0.0.4";
    res.body = api_.ctx.metrics->Render(families);
  }

  void Client(const HttpRequest& req, HttpResponse& res, const PathParams& m) {
    const std::string& client = m[0];
    api_.CheckOwnClient(req, client);
    const auto& config = api_.config;
    if (!config.quota_max_requests) {
      throw HttpError{404, fmt::format("pipeline '{}' keeps no per-client state (no [quota])", config.name)};
    }
    const auto state =
        api_.pool.Run([&](postgres::Connection& conn) { return pipeline::quota::Read(conn, config, {client}); });
    const int64_t requests = state.clients.at(0).requests;
    const int64_t max = *config.quota_max_requests;
    const bool windowed = config.quota_window.count() > 0;
    auto optional = [](const std::string& text) { return text.empty() ? json(nullptr) : json(text); };
    Reply(res, 200,
          {{"client_id", client},
           {"pipelines",
            {{config.name,
              {{"requests", requests},
               {"max_requests", max},
               {"remaining", std::max<int64_t>(0, max - requests)},
               {"throttled", std::max<int64_t>(0, requests - max)},
               {"window", windowed ? json(FormatDuration(config.quota_window)) : json(nullptr)},
               {"window_start", optional(state.window_start)},
               {"resets_at", optional(state.resets_at)}}}}}});
  }

 private:
  Api& api_;
};

}  // namespace

void AddHealthRoutes(Router& router, Api& api) {
  auto resource = std::make_shared<HealthResource>(api);
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
