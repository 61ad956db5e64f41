// Inserting API records into the pipeline's source table. Small submissions use group
// commit: handlers hand over validated records without waiting; an ingest thread
// inserts everything waiting in one commit (one statement, or a transaction when the
// records have several column sets), and a completion thread hands each submission its
// keys (a callback) while the ingest thread inserts the next group. Large submissions
// (bulk NDJSON) are inserted by direct threads, each on a connection of its own, so
// several run in parallel. Either way the rows take the same durable path as any other
// insert (capture trigger, queue, workers).
//
// How rows are written is RecordWriter's (record_schema.hpp): when the key column has
// a sequence, up to 128 records in one INSERT that draws their ids, more by COPY after
// drawing them; otherwise INSERT ... RETURNING the key. A submission that makes a
// shared statement fail (a constraint) is retried on its own so that only it fails.
// Thread safety: Submit may be called from any thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "runnel/core/mutex.hpp"
#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/pipeline/request_keys.hpp"
#include "runnel/server/record_schema.hpp"

#include "runnel/postgres/connection.hpp"
#include "runnel/postgres/pool.hpp"

namespace runnel::server {

class Ingestor {
 public:
  // `schema`: the source table's columns and keys (json and jsonb columns take any
  // JSON value, documents included, written as JSON text).
  Ingestor(const pipeline::PipelineConfig& config, const RecordSchema& schema, std::string conninfo, size_t threads = 2,
           size_t max_group_records = 20000);
  ~Ingestor();
  Ingestor(const Ingestor&) = delete;
  Ingestor& operator=(const Ingestor&) = delete;

  // Called once with the new rows' request ids in order (error null), or with the error:
  // DatabaseError (the submission was not inserted, or for a lost connection during
  // commit, possibly was); RecordRefused when the table refused one of its records and
  // a COPY could say which. Runs on an ingest thread or on the completion thread, which
  // answers a committed group while the next one is inserted: it must be quick.
  using Done = std::function<void(std::vector<int64_t> keys, std::exception_ptr error)>;

  // `columns`: the columns every record sets, sorted; `records`: their values,
  // validated against the table. Never blocks; `done` runs once committed. Throws
  // Error(Unavailable) after Stop() (`done` is then not called).
  void Submit(std::vector<std::string> columns, RecordRows records, Done done);

  // Submissions of at least this many records skip the group and insert directly,
  // on this many threads.
  static constexpr size_t kDirectRecords = 256;
  static constexpr size_t kDirectThreads = 8;

  void Stop();

 private:
  struct Submission {
    std::vector<std::string> columns;
    RecordRows records;
    Done done;
  };
  // A committed group, its submissions and their request ids, to be answered.
  struct Committed {
    std::vector<std::unique_ptr<Submission>> batch;
    std::map<Submission*, std::vector<int64_t>> keys;
  };
  void Run();
  void RunDirect();
  void RunCompletion();
  std::vector<int64_t> InsertGroup(postgres::Connection& conn, const std::vector<std::string>& columns,
                                   const std::vector<Submission*>& group);
  std::exception_ptr Explain(postgres::Connection& conn, const Submission& s, std::exception_ptr error);

  pipeline::PipelineConfig config_;
  RecordWriter writer_;
  std::string conninfo_;
  postgres::ConnectionPool direct_;  // for large submissions
  size_t max_group_records_;
  Mutex mutex_;
  std::condition_variable_any cv_;
  std::deque<std::unique_ptr<Submission>> waiting_ GUARDED_BY(mutex_);         // grouped
  std::deque<std::unique_ptr<Submission>> direct_waiting_ GUARDED_BY(mutex_);  // large
  std::condition_variable_any direct_cv_;
  bool stopping_ GUARDED_BY(mutex_) = false;
  std::vector<std::thread> threads_;
  Mutex completion_mutex_;  // never held with mutex_
  std::condition_variable_any completion_cv_;
  std::deque<Committed> committed_ GUARDED_BY(completion_mutex_);
  bool completion_stopping_ GUARDED_BY(completion_mutex_) = false;
  std::thread completion_;  // started before threads_, stopped after them
};

}  // namespace runnel::server
