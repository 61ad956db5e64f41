#include "runnel/server/router.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <set>

#include "runnel/core/csv.hpp"
#include "runnel/postgres/connection.hpp"
#include "runnel/postgres/sqlstate.hpp"

namespace runnel::server {

namespace {

std::vector<std::string> Split(std::string_view path) {
  if (path.empty()) return {};
  return SplitAt(path.substr(1), '/');  // after the leading '/'
}

bool Match(const Route& route, const std::vector<std::string>& segments, PathParams& params) {
  if (route.segments.size() != segments.size()) return false;
  params.clear();
  for (size_t i = 0; i < segments.size(); ++i) {
    const auto& want = route.segments[i];
    if (want.starts_with('{')) {
      if (segments[i].empty()) return false;
      params.push_back(segments[i]);
    } else if (want != segments[i]) {
      return false;
    }
  }
  return true;
}

}  // namespace

Lane Route::LaneFor(const HttpRequest& req) const {
  if (options.wait_on_query && req.Query("wait")) return Lane::kWait;
  if (options.inline_max_body > 0 && req.body.size() <= options.inline_max_body) return Lane::kInline;
  return options.lane;
}

HttpError FromError(const Error& e) {
  if (const auto* db = dynamic_cast<const postgres::DatabaseError*>(&e)) {
    switch (db->failure_class()) {
      case postgres::FailureClass::kTransient: return {503, fmt::format("database unavailable: {}", e.what())};
      case postgres::FailureClass::kRow: return {422, e.what()};
      case postgres::FailureClass::kSetup: return {500, fmt::format("database error: {}", e.what())};
    }
  }
  switch (e.code()) {
    case ErrorCode::InvalidInput:
    case ErrorCode::Model: return {422, e.what()};
    case ErrorCode::NotFound: return {404, e.what()};
    case ErrorCode::Unavailable: return {409, e.what()};
    default: return {500, e.what()};
  }
}

void Router::Add(std::string method, const std::string& pattern, Handler handler, RouteOptions options) {
  routes_.push_back({std::move(method), Split(pattern), pattern, std::move(handler), options});
}

void Router::AddForPipeline(const std::string& pipeline, std::string method, const std::string& pattern,
                            Handler handler, RouteOptions options) {
  auto& handlers = pipeline_routes_[method + " " + pattern];
  if (!handlers) {
    handlers = std::make_shared<PipelineHandlers>();
    Add(
        std::move(method), pattern,
        [handlers](const HttpRequest& req, HttpResponse& res, const PathParams& params) {
          const auto it = handlers->find(params.at(0));
          if (it == handlers->end()) {
            std::string served;
            for (const auto& [name, _] : *handlers) served += (served.empty() ? "" : ", ") + name;
            throw HttpError{404, fmt::format("unknown pipeline '{}' (this process serves: {})", params[0], served)};
          }
          it->second(req, res, params);
        },
        options);
  }
  handlers->emplace(pipeline, std::move(handler));
}

const Route* Router::Find(const HttpRequest& req, PathParams& params, std::string& allow) const {
  const auto segments = Split(req.path);
  std::set<std::string> allowed;
  for (const auto& route : routes_) {
    if (!Match(route, segments, params)) continue;
    if (route.method == req.method || (req.method == "HEAD" && route.method == "GET")) return &route;
    allowed.insert(route.method);
  }
  allow.clear();
  for (const auto& m : allowed) allow += (allow.empty() ? "" : ", ") + m;
  params.clear();
  return nullptr;
}

HttpError NoRouteError(const HttpRequest& req, const std::string& allow, HttpResponse& res) {
  if (allow.empty()) return {404, fmt::format("no such endpoint: {}", req.path)};
  res.SetHeader("Allow", allow);
  return {405, fmt::format("{} is not allowed on {} (allowed: {})", req.method, req.path, allow)};
}

void ReplyException(HttpResponse& res, std::exception_ptr error, const HttpRequest& req) {
  res.deferred = nullptr;
  res.stream = nullptr;
  try {
    std::rethrow_exception(error);
  } catch (const HttpError& e) {
    ReplyError(res, e);
  } catch (const Error& e) {
    const HttpError mapped = FromError(e);
    if (mapped.status >= 500) spdlog::warn("http {} {}: {}", req.method, req.path, e.what());
    ReplyError(res, mapped);
  } catch (const std::exception& e) {
    spdlog::error("http {} {}: {}", req.method, req.path, e.what());
    ReplyError(res, {500, fmt::format("internal error: {}", e.what())});
  }
}

void Router::Run(const Route& route, const HttpRequest& req, HttpResponse& res, const PathParams& params) {
  try {
    route.handler(req, res, params);
  } catch (...) {
    ReplyException(res, std::current_exception(), req);
  }
}

std::string Router::Dispatch(const HttpRequest& req, HttpResponse& res, Metrics* metrics) const {
  const auto started = std::chrono::steady_clock::now();
  PathParams params;
  std::string allow;
  std::string name = "unmatched";
  if (const Route* route = Find(req, params, allow)) {
    name = route->name;
    Run(*route, req, res, params);
  } else {
    ReplyError(res, NoRouteError(req, allow, res));
  }
  if (metrics != nullptr) {
    metrics->RecordHttp(name, res.status,
                        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  }
  return name;
}

}  // namespace runnel::server
