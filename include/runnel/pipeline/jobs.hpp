// Batch jobs: (re)score existing rows of a pipeline's source table.
//
// A job is a row of runnel_jobs (filter, batch size, state, counts, cursor). Any
// `runnel run` process of the pipeline advances it: in one transaction it takes the
// next `batch_size` matching keys after the cursor (up to the largest key that existed
// when the job was created), puts them in the pipeline's queue tagged with the job,
// and moves the cursor. Workers then serve them like inserts (without counting them
// against quotas) and count them as served. Because the cursor moves in the same
// transaction as the enqueue, a job survives restarts and crashes exactly once.
//
// States: running -> done (everything enqueued and served) | cancelled | failed.
// Errors: DatabaseError; Error(InvalidInput) for a bad filter or batch size;
// Error(NotFound) for an unknown job. Thread safety: the caller's connection.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/postgres/connection.hpp"

namespace runnel::pipeline {

struct JobInfo {
  int64_t id = 0;
  std::string pipeline;
  std::string filter;
  int64_t batch_size = 0;
  std::string state;
  int64_t total = 0;     // rows matching when the job was created
  int64_t enqueued = 0;  // handed to the workers so far
  int64_t served = 0;    // of those, committed by a worker
  std::optional<std::string> error;
  double created_at = 0;
  double updated_at = 0;
  std::optional<double> finished_at;
};

// Checks the filter against the source table and records a running job.
JobInfo CreateJob(postgres::Connection& conn, const PipelineConfig& config, const std::string& filter,
                  int64_t batch_size);
std::optional<JobInfo> GetJob(postgres::Connection& conn, int64_t id);
std::vector<JobInfo> ListJobs(postgres::Connection& conn, const std::string& pipeline);
// Cancels a running job and withdraws its requests not yet claimed. Returns the job
// afterwards (unchanged when it had already ended); nullopt for an unknown id.
std::optional<JobInfo> CancelJob(postgres::Connection& conn, int64_t id);

// Enqueues the next slice of one running job of the pipeline; returns false when no
// job had anything to enqueue. A job whose filter stopped compiling (a column was
// dropped) becomes `failed` with the reason.
bool AdvanceJobs(postgres::Connection& conn, const PipelineConfig& config);

// Deletes result events older than config.event_retention_s. Returns how many.
int64_t PruneEvents(postgres::Connection& conn, const PipelineConfig& config);

// A thread calling AdvanceJobs while there is work, polling every `idle` otherwise,
// and PruneEvents once a minute. Errors are logged and retried with a new connection.
class JobRunner {
 public:
  JobRunner(const PipelineConfig& config, std::string conninfo, std::function<void(const std::string&)> log);
  ~JobRunner();
  JobRunner(const JobRunner&) = delete;
  JobRunner& operator=(const JobRunner&) = delete;

  void Start(std::chrono::milliseconds idle = std::chrono::milliseconds(200));
  void Stop();

 private:
  PipelineConfig config_;
  std::string conninfo_;
  std::function<void(const std::string&)> log_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace runnel::pipeline
