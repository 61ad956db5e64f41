#include "runnel/pipeline/jobs.hpp"

#include <fmt/format.h>

#include <chrono>

#include "runnel/core/error.hpp"
#include "runnel/core/thread_name.hpp"
#include "runnel/pipeline/filter.hpp"
#include "runnel/pipeline/request_keys.hpp"
#include "runnel/pipeline/schema.hpp"

namespace runnel::pipeline {

using postgres::Params;
using postgres::QuoteIdentifier;

namespace {

constexpr const char* kJobColumns =
    "id, pipeline, filter, batch_size::bigint AS batch_size, state, total, enqueued, served, error, "
    "extract(epoch FROM created_at)::float8 AS created_at, extract(epoch FROM updated_at)::float8 AS updated_at, "
    "extract(epoch FROM finished_at)::float8 AS finished_at";

JobInfo ReadJob(const postgres::Result& r, int row) {
  JobInfo j;
  j.id = r.Get<int64_t>(row, "id");
  j.pipeline = r.Get<std::string>(row, "pipeline");
  j.filter = r.Get<std::string>(row, "filter");
  j.batch_size = r.Get<int64_t>(row, "batch_size");
  j.state = r.Get<std::string>(row, "state");
  j.total = r.Get<int64_t>(row, "total");
  j.enqueued = r.Get<int64_t>(row, "enqueued");
  j.served = r.Get<int64_t>(row, "served");
  j.error = r.GetOptional<std::string>(row, "error");
  j.created_at = r.Get<double>(row, "created_at");
  j.updated_at = r.Get<double>(row, "updated_at");
  j.finished_at = r.GetOptional<double>(row, "finished_at");
  return j;
}

// FROM clause shared by counting and enqueueing: source rows s with their result r.
std::string SourceWithResults(const PipelineConfig& config, const RequestKeys& keys) {
  return fmt::format("{} s LEFT JOIN {} r ON r.key = {}", QuoteIdentifier(config.table),
                     QuoteIdentifier(NamesFor(config).results), keys.IdOf("s"));
}

}  // namespace

JobInfo CreateJob(postgres::Connection& conn, const PipelineConfig& config, const std::string& filter,
                  int64_t batch_size) {
  if (config.capture != CaptureMode::Queue) {
    throw Error(ErrorCode::InvalidInput,
                fmt::format("pipeline '{}' captures with notify: batch jobs need the queue", config.name));
  }
  if (batch_size < 1 || batch_size > 100000) {
    throw Error(ErrorCode::InvalidInput, "batch_size must be 1..100000");
  }
  const auto columns = SourceColumns(conn, config);
  const auto compiled = CompileFilter(filter, columns, 1);
  const auto keys = RequestKeys::Resolve(config, columns);
  const std::string key = keys.IdOf("s");
  postgres::Transaction tx(conn);
  Params params;
  for (const auto& p : compiled.params) params.Add(p);
  auto counted = conn.Exec(fmt::format("SELECT count(*) AS n, max({}) AS last FROM {} WHERE {}", key,
                                       SourceWithResults(config, keys), compiled.sql),
                           params);
  Params insert;
  insert.Add(config.name).Add(filter).Add(batch_size).Add(counted.Get<int64_t>(0, "n"));
  insert.Add(counted.GetOptional<int64_t>(0, "last"));
  const bool empty = counted.Get<int64_t>(0, "n") == 0;
  auto r = conn.Exec(
      fmt::format("INSERT INTO runnel_jobs (pipeline, filter, batch_size, total, until_key, enqueue_done, state, "
                  "finished_at) VALUES ($1, $2, $3, $4, $5::bigint, {}, {}, {}) RETURNING {}",
                  empty ? "true" : "false", empty ? "'done'" : "'running'", empty ? "clock_timestamp()" : "NULL",
                  kJobColumns),
      insert);
  auto job = ReadJob(r, 0);
  tx.Commit();
  return job;
}

std::optional<JobInfo> GetJob(postgres::Connection& conn, int64_t id) {
  auto r = conn.Exec(fmt::format("SELECT {} FROM runnel_jobs WHERE id = $1", kJobColumns), Params().Add(id));
  if (r.rows() == 0) return std::nullopt;
  return ReadJob(r, 0);
}

std::vector<JobInfo> ListJobs(postgres::Connection& conn, const std::string& pipeline) {
  auto r =
      conn.Exec(fmt::format("SELECT {} FROM runnel_jobs WHERE pipeline = $1 ORDER BY id DESC LIMIT 100", kJobColumns),
                Params().Add(pipeline));
  std::vector<JobInfo> jobs;
  jobs.reserve(static_cast<size_t>(r.rows()));
  for (int i = 0; i < r.rows(); ++i) jobs.push_back(ReadJob(r, i));
  return jobs;
}

std::optional<JobInfo> CancelJob(postgres::Connection& conn, int64_t id) {
  postgres::Transaction tx(conn);
  auto r = conn.Exec("SELECT pipeline, state FROM runnel_jobs WHERE id = $1 FOR UPDATE", Params().Add(id));
  if (r.rows() == 0) return std::nullopt;
  if (r.Get<std::string>(0, "state") == "running") {
    const std::string queue = "runnel_" + r.Get<std::string>(0, "pipeline") + "_queue";
    // Requests a worker holds right now stay claimed and finish; the rest go.
    auto withdrawn = conn.Exec(fmt::format("WITH gone AS (DELETE FROM {} WHERE seq IN (SELECT seq FROM {} WHERE "
                                           "job = $1 FOR UPDATE SKIP LOCKED) RETURNING n) "
                                           "SELECT coalesce(sum(n), 0)::bigint FROM gone",
                                           QuoteIdentifier(queue), QuoteIdentifier(queue)),
                               Params().Add(id));
    conn.Exec(
        "UPDATE runnel_jobs SET state = 'cancelled', enqueue_done = true, enqueued = enqueued - $2, "
        "finished_at = clock_timestamp(), updated_at = clock_timestamp() WHERE id = $1",
        Params().Add(id).Add(withdrawn.Get<int64_t>(0, 0)));
  }
  auto job = GetJob(conn, id);
  tx.Commit();
  return job;
}

bool AdvanceJobs(postgres::Connection& conn, const PipelineConfig& config) {
  postgres::Transaction tx(conn);
  auto job = conn.Exec(
      "SELECT id, filter, batch_size::bigint AS batch_size, cursor, until_key FROM runnel_jobs WHERE pipeline = $1 AND "
      "state = 'running' AND NOT enqueue_done ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
      Params().Add(config.name));
  if (job.rows() == 0) return false;
  const auto id = job.Get<int64_t>(0, "id");
  const auto batch_size = job.Get<int64_t>(0, "batch_size");
  CompiledFilter compiled;
  std::optional<RequestKeys> keys;
  try {
    const auto columns = SourceColumns(conn, config);
    compiled = CompileFilter(job.Get<std::string>(0, "filter"), columns, 5);
    keys = RequestKeys::Resolve(config, columns);
  } catch (const Error& e) {
    conn.Exec(
        "UPDATE runnel_jobs SET state = 'failed', error = $2, finished_at = clock_timestamp(), "
        "updated_at = clock_timestamp() WHERE id = $1",
        Params().Add(id).Add(std::string(e.what())));
    tx.Commit();
    return true;
  }
  const auto names = NamesFor(config);
  const std::string key = keys->IdOf("s");
  Params params;
  params.Add(id)
      .Add(batch_size)
      .Add(job.GetOptional<int64_t>(0, "cursor"))
      .Add(job.GetOptional<int64_t>(0, "until_key"));
  for (const auto& p : compiled.params) params.Add(p);
  // Queue rows like the capture trigger's, tagged with the job.
  auto enqueued = conn.Exec(
      fmt::format("WITH picked AS (SELECT {k}::bigint AS key FROM {from} WHERE ($3::bigint IS NULL OR {k} > $3) AND "
                  "{k} <= $4::bigint AND {filter} ORDER BY {k} LIMIT $2), "
                  "queued AS ({insert} RETURNING n) "
                  "SELECT (SELECT coalesce(sum(n), 0)::bigint FROM queued) AS n, (SELECT max(key) FROM picked) AS last",
                  fmt::arg("k", key), fmt::arg("from", SourceWithResults(config, *keys)),
                  fmt::arg("filter", compiled.sql),
                  fmt::arg("insert", QueueInsertSql(config, "SELECT key FROM picked", "$1"))),
      params);
  const int64_t n = enqueued.Get<int64_t>(0, "n");
  std::optional<int64_t> cursor = job.GetOptional<int64_t>(0, "cursor");
  if (const auto last = enqueued.GetOptional<int64_t>(0, "last")) cursor = std::max(cursor.value_or(INT64_MIN), *last);
  const bool last = n < batch_size;
  conn.Exec(
      "UPDATE runnel_jobs SET cursor = $2, enqueued = enqueued + $3, enqueue_done = $4, "
      "state = CASE WHEN $4 AND served >= enqueued + $3 THEN 'done' ELSE state END, "
      "finished_at = CASE WHEN $4 AND served >= enqueued + $3 THEN clock_timestamp() END, "
      "updated_at = clock_timestamp() WHERE id = $1",
      Params().Add(id).Add(cursor).Add(n).Add(last));
  if (n > 0) conn.Exec(fmt::format("SELECT pg_notify({}, '')", postgres::QuoteLiteral(names.channel)));
  tx.Commit();
  return true;
}

JobRunner::JobRunner(const PipelineConfig& config, std::string conninfo, std::function<void(const std::string&)> log)
    : config_(config), conninfo_(std::move(conninfo)), log_(std::move(log)) {}

int64_t PruneEvents(postgres::Connection& conn, const PipelineConfig& config) {
  auto r = conn.Exec(fmt::format("WITH d AS (DELETE FROM {} WHERE created_at < now() - make_interval(secs => $1) "
                                 "RETURNING 1) SELECT count(*) FROM d",
                                 postgres::QuoteIdentifier(NamesFor(config).events)),
                     postgres::Params().Add(static_cast<double>(config.event_retention_s)));
  return r.Get<int64_t>(0, 0);
}

JobRunner::~JobRunner() {
  Stop();
}

void JobRunner::Start(std::chrono::milliseconds idle) {
  if (thread_.joinable()) return;
  stop_.store(false);
  thread_ = std::thread([this, idle] {
    NameThisThread("jobs:" + config_.name);
    std::unique_ptr<postgres::Connection> conn;
    auto pruned_at = std::chrono::steady_clock::time_point{};
    while (!stop_.load()) {
      bool worked = false;
      try {
        if (!conn || !conn->IsAlive())
          conn = std::make_unique<postgres::Connection>(postgres::Connection::Open(conninfo_));
        worked = AdvanceJobs(*conn, config_);
        if (std::chrono::steady_clock::now() - pruned_at > std::chrono::minutes(1)) {
          PruneEvents(*conn, config_);
          pruned_at = std::chrono::steady_clock::now();
        }
      } catch (const Error& e) {
        if (log_) log_(fmt::format("batch jobs: {}", e.what()));
        conn.reset();
      }
      if (!worked) {
        for (auto waited = std::chrono::milliseconds(0); waited < idle && !stop_.load();
             waited += std::chrono::milliseconds(20)) {
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }
      }
    }
  });
}

void JobRunner::Stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

}  // namespace runnel::pipeline
