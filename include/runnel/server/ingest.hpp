// Inserting API records into the pipeline's source table with group commit: HTTP
// threads hand over validated records and block; ingest threads insert everything
// waiting (grouped by column set, one INSERT ... jsonb_populate_recordset per group)
// in one transaction and one commit, then hand back each submission's keys. The
// inserted rows take the same durable path as any other insert (capture trigger,
// queue, workers).
//
// A submission that makes the group's statement fail (a constraint) is retried on its
// own so that only it fails. Thread safety: Insert may be called from any thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <future>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/postgres/connection.hpp"

namespace runnel::server {

class Ingestor {
 public:
  Ingestor(const pipeline::PipelineConfig& config, std::string conninfo, size_t threads = 2,
           size_t max_group_records = 20000);
  ~Ingestor();
  Ingestor(const Ingestor&) = delete;
  Ingestor& operator=(const Ingestor&) = delete;

  // `columns`: the columns every record sets, sorted; `records`: one JSON object text
  // per record with exactly those keys. Returns the new rows' keys, in order, once
  // committed. Throws DatabaseError (the submission was not inserted, or for a lost
  // connection during commit, possibly was), Error(Unavailable) after Stop().
  std::vector<int64_t> Insert(std::vector<std::string> columns, std::vector<std::string> records);

  void Stop();

 private:
  struct Submission {
    std::vector<std::string> columns;
    std::vector<std::string> records;
    std::promise<std::vector<int64_t>> done;
  };
  void Run();
  std::vector<int64_t> InsertGroup(postgres::Connection& conn, const std::vector<std::string>& columns,
                                   const std::vector<Submission*>& group);

  pipeline::PipelineConfig config_;
  std::string conninfo_;
  size_t max_group_records_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Submission>> waiting_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace runnel::server
