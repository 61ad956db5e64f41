// /v1/pipelines/{p}/jobs and /v1/jobs/{id}: batch jobs over rows already in the table.
#include <fmt/format.h>

#include "api.hpp"
#include "runnel/pipeline/jobs.hpp"
#include "runnel/server/request_body.hpp"

namespace runnel::server {

using nlohmann::json;

namespace {

json JobJson(const pipeline::JobInfo& job) {
  return {{"id", job.id},
          {"pipeline", job.pipeline},
          {"where", job.filter},
          {"batch_size", job.batch_size},
          {"state", job.state},
          {"total", job.total},
          {"enqueued", job.enqueued},
          {"served", job.served},
          {"progress", job.total > 0 ? static_cast<double>(job.served) / static_cast<double>(job.total) : 1.0},
          {"error", job.error ? json(*job.error) : json(nullptr)},
          {"created_at", IsoFromEpoch(job.created_at)},
          {"updated_at", IsoFromEpoch(job.updated_at)},
          {"finished_at", job.finished_at ? json(IsoFromEpoch(*job.finished_at)) : json(nullptr)}};
}

// 200 with the job, or 404 when there is no job `id`.
void ReplyJob(HttpResponse& res, int64_t id, const std::optional<pipeline::JobInfo>& job) {
  if (!job) throw HttpError{404, fmt::format("no job {}", id)};
  Reply(res, 200, JobJson(*job));
}

// A new job's fields: {"batch_size": N, "where": "..."}, both optional.
struct JobSpec {
  int64_t batch_size = 1000;
  std::string where;
};

JobSpec ParseJobSpec(std::string_view body_text) {
  const json body =
      body_text.find_first_not_of(" \t\r\n") == std::string_view::npos ? json::object() : ParseJson(body_text, 0);
  if (!body.is_object()) throw HttpError{422, "the body must be a JSON object {\"batch_size\": N, \"where\": \"...\"}"};
  JobSpec spec;
  json errors = json::array();
  for (const auto& [field, value] : body.items()) {
    if (field == "batch_size") {
      if (!value.is_number_integer() || value.get<int64_t>() < 1 || value.get<int64_t>() > 100000) {
        errors.push_back({{"field", field}, {"error", "must be an integer 1..100000"}});
      } else {
        spec.batch_size = value.get<int64_t>();
      }
    } else if (field == "where") {
      if (!value.is_string()) {
        errors.push_back({{"field", field}, {"error", "must be a string, e.g. \"status is null\""}});
      } else {
        spec.where = value.get<std::string>();
      }
    } else {
      errors.push_back({{"field", field}, {"error", "unknown field: batch_size or where"}});
    }
  }
  if (!errors.empty()) throw HttpError{422, "invalid job", {{"errors", errors}}};
  return spec;
}

class JobsResource {
 public:
  explicit JobsResource(Api& api) : api_(api) {}

  void Post(const HttpRequest& req, HttpResponse& res, const PathParams&) {
    const JobSpec spec = ParseJobSpec(req.body);
    auto lease = api_.pool.Acquire();
    auto job = pipeline::CreateJob(*lease, api_.config, spec.where, spec.batch_size);
    res.SetHeader("Location", fmt::format("/v1/jobs/{}", job.id));
    Reply(res, 201, JobJson(job));
  }

  void Get(const HttpRequest&, HttpResponse& res, const PathParams& m) {
    const int64_t id = IdParam(m[0], "job id");
    ReplyJob(res, id, api_.pool.Run([&](postgres::Connection& conn) { return pipeline::GetJob(conn, id); }));
  }

  void List(const HttpRequest&, HttpResponse& res, const PathParams&) {
    auto jobs = api_.pool.Run([&](postgres::Connection& conn) { return pipeline::ListJobs(conn, api_.config.name); });
    json list = json::array();
    for (const auto& job : jobs) list.push_back(JobJson(job));
    Reply(res, 200, {{"jobs", list}});
  }

  void Delete(const HttpRequest&, HttpResponse& res, const PathParams& m) {
    const int64_t id = IdParam(m[0], "job id");
    ReplyJob(res, id, api_.pool.Run([&](postgres::Connection& conn) { return pipeline::CancelJob(conn, id); }));
  }

 private:
  Api& api_;
};

}  // namespace

void AddJobRoutes(Router& router, Api& api) {
  auto resource = std::make_shared<JobsResource>(api);
  router.AddForPipeline(api.config.name, "POST", "/v1/pipelines/{p}/jobs", Bind(resource, &JobsResource::Post));
  router.AddForPipeline(api.config.name, "GET", "/v1/pipelines/{p}/jobs", Bind(resource, &JobsResource::List));
}

void AddJobByIdRoutes(Router& router, Api& any) {
  auto resource = std::make_shared<JobsResource>(any);
  router.Add("GET", "/v1/jobs/{id}", Bind(resource, &JobsResource::Get));
  router.Add("DELETE", "/v1/jobs/{id}", Bind(resource, &JobsResource::Delete));
}

}  // namespace runnel::server
