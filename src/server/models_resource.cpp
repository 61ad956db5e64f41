// /v1/models: the model registry: list, read, push (raw bytes or multipart), roll back.
#include <fmt/format.h>

#include <chrono>
#include <map>

#include "api.hpp"
#include "runnel/registry/registry.hpp"
#include "runnel/server/request_body.hpp"

namespace runnel::server {

using nlohmann::json;

namespace {

json VersionJson(const registry::ModelVersion& v) {
  return json{{"version", v.version},
              {"status", registry::ModelStatusName(v.status)},
              {"error", v.error ? json(*v.error) : json(nullptr)},
              {"format", v.format},
              {"description", v.description},
              {"data_type", v.data_type ? json(*v.data_type) : json(nullptr)},
              {"size_bytes", v.size},
              {"created_at", IsoFromEpoch(v.created_at)}};
}

// A serving version with what the processes serving it report.
json ServingJson(const registry::ModelVersion& v, const std::vector<registry::LoadedState>& states) {
  json entry = VersionJson(v);
  int64_t invocations = 0, rows = 0;
  double total = 0, min = 0, max = 0, since = 0;
  json processes = json::array();
  for (const auto& s : states) {
    if (s.version != v.version) continue;
    processes.push_back({{"process", s.process},
                         {"pipeline", s.pipeline},
                         {"loaded_since", IsoFromEpoch(s.loaded_at)},
                         {"invocations", s.invocations}});
    if (s.invocations > 0) {
      min = invocations == 0 ? s.min_ms : std::min(min, s.min_ms);
      max = std::max(max, s.max_ms);
    }
    invocations += s.invocations;
    rows += s.rows;
    total += s.total_ms;
    since = since == 0 ? s.loaded_at : std::min(since, s.loaded_at);
  }
  entry["loaded_since"] = since > 0 ? json(IsoFromEpoch(since)) : json(nullptr);
  entry["invocations"] = invocations;
  entry["rows"] = rows;
  entry["inference_ms"] = {{"total", total},
                           {"min", min},
                           {"max", max},
                           {"mean", invocations > 0 ? total / static_cast<double>(invocations) : 0.0}};
  entry["processes"] = processes;
  return entry;
}

json ModelJson(postgres::Connection& conn, const std::string& name, bool with_versions) {
  auto versions = registry::Versions(conn, name);
  if (versions.empty()) throw HttpError{404, fmt::format("no model named '{}'", name)};
  auto states = registry::ReadState(conn, name, 10.0);
  // Current: newest ready version per data type.
  std::map<std::optional<std::string>, const registry::ModelVersion*> current;
  for (const auto& v : versions) {
    if (v.status == registry::ModelStatus::kReady && !current.contains(v.data_type)) current[v.data_type] = &v;
  }
  json out;
  out["name"] = name;
  json serving = json::array();
  for (const auto& [type, v] : current) serving.push_back(ServingJson(*v, states));
  out["serving"] = serving;
  // The default model's fields at top level, for the common one-model case.
  if (current.contains(std::nullopt)) {
    for (const auto& entry : serving) {
      if (!entry["data_type"].is_null()) continue;
      for (const auto& key :
           {"version", "description", "format", "loaded_since", "invocations", "inference_ms", "processes"}) {
        out[key] = entry[key];
      }
    }
  } else {
    out["version"] = nullptr;
  }
  if (with_versions) {
    json all = json::array();
    for (const auto& v : versions) all.push_back(VersionJson(v));
    out["versions"] = all;
  }
  return out;
}

// The model and its metadata from a raw body (headers) or multipart/form-data; the
// bytes are views into the request's body (a mapped file when the transport spooled it).
registry::PushRequest ReadPush(const HttpRequest& req, const std::string& name) {
  registry::PushRequest push;
  push.name = name;
  const std::string_view type = req.HeaderOr("Content-Type");
  if (type.starts_with("multipart/form-data")) {
    bool has_file = false;
    for (const auto& part : ParseMultipart(req.Body(), type)) {
      if (part.name == "file") {
        push.bytes = part.content;
        has_file = true;
      } else if (part.name == "description") {
        push.description = std::string(part.content);
      } else if (part.name == "data_type") {
        push.data_type = std::string(part.content);
      }
    }
    if (!has_file) throw HttpError{422, "multipart upload without a 'file' part"};
  } else {
    push.bytes = req.Body();
    push.description = std::string(req.HeaderOr("X-Model-Description"));
    if (auto data_type = req.Header("X-Model-Data-Type")) push.data_type = std::string(*data_type);
  }
  return push;
}

class ModelsResource {
 public:
  explicit ModelsResource(Api& api) : api_(api) {}

  void List(const HttpRequest&, HttpResponse& res, const PathParams&) {
    json models = api_.pool.Run([&](postgres::Connection& conn) {
      json list = json::array();
      for (const auto& name : registry::Names(conn)) list.push_back(ModelJson(conn, name, false));
      return list;
    });
    Reply(res, 200, {{"models", models}});
  }

  void Get(const HttpRequest&, HttpResponse& res, const PathParams& m) {
    Reply(res, 200, api_.pool.Run([&](postgres::Connection& conn) { return ModelJson(conn, m[0], true); }));
  }

  // Stores the version; each serving process's model stream validates it: the reply
  // reports their verdict when it comes within ?wait= (default 5 s).
  void Put(const HttpRequest& req, HttpResponse& res, const PathParams& m) {
    const auto push = ReadPush(req, m[0]);
    const int64_t wait_ms = api_.WaitParam(req).value_or(std::min(5000, api_.options.max_wait_ms));
    auto lease = api_.pool.Acquire();
    const auto added = registry::AwaitVerdict(*lease, registry::Push(*lease, push), std::chrono::milliseconds(wait_ms),
                                              &api_.stopping);
    json body = {{"name", added.name},
                 {"version", added.version},
                 {"status", registry::ModelStatusName(added.status)},
                 {"error", added.error ? json(*added.error) : json(nullptr)},
                 {"format", added.format},
                 {"size_bytes", added.size}};
    res.SetHeader("Location", fmt::format("/v1/models/{}", added.name));
    if (added.status == registry::ModelStatus::kRejected) {
      body["error"] =
          fmt::format("model '{}' v{} was rejected: {}", added.name, added.version, added.error.value_or("?"));
      Reply(res, 422, body);
    } else {
      Reply(res, added.status == registry::ModelStatus::kReady ? 201 : 202, body);
    }
  }

  void Rollback(const HttpRequest& req, HttpResponse& res, const PathParams& m) {
    std::optional<std::string> data_type;
    if (auto value = req.Query("data_type")) data_type = std::string(*value);
    auto lease = api_.pool.Acquire();
    auto current = registry::Rollback(*lease, m[0], data_type);
    Reply(res, 200,
          {{"name", current.name},
           {"version", current.version},
           {"data_type", current.data_type ? json(*current.data_type) : json(nullptr)},
           {"status", registry::ModelStatusName(current.status)}});
  }

 private:
  Api& api_;
};

}  // namespace

void AddModelRoutes(Router& router, Api& any) {
  auto resource = std::make_shared<ModelsResource>(any);
  router.Add("GET", "/v1/models", Bind(resource, &ModelsResource::List));
  router.Add("GET", "/v1/models/{name}", Bind(resource, &ModelsResource::Get));
  // A push always waits for the serving processes' verdict: the wait lane.
  RouteOptions put;
  put.max_body_bytes = any.options.max_model_bytes;
  put.spool_body = true;  // models may be large: never held whole in memory here
  put.lane = Lane::kWait;
  router.Add("PUT", "/v1/models/{name}", Bind(resource, &ModelsResource::Put), put);
  router.Add("POST", "/v1/models/{name}/rollback", Bind(resource, &ModelsResource::Rollback));
}

}  // namespace runnel::server
