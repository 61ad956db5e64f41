#include "runnel/server/ingest.hpp"

#include <spdlog/spdlog.h>

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <map>
#include <optional>

#include "runnel/core/error.hpp"
#include "runnel/core/thread_name.hpp"

namespace runnel::server {

Ingestor::Ingestor(const pipeline::PipelineConfig& config, const RecordSchema& schema, std::string conninfo,
                   size_t threads, size_t max_group_records)
    : config_(config),
      writer_(config_, schema),
      conninfo_(std::move(conninfo)),
      direct_(conninfo_),
      max_group_records_(max_group_records) {
  completion_ = std::thread([this] {
    NameThisThread("done:" + config_.name);
    RunCompletion();
  });
  for (size_t i = 0; i < std::max<size_t>(1, threads); ++i) {
    threads_.emplace_back([this] {
      NameThisThread("ingest:" + config_.name);
      Run();
    });
  }
  for (size_t i = 0; i < kDirectThreads; ++i) {
    threads_.emplace_back([this] {
      NameThisThread("copy:" + config_.name);
      RunDirect();
    });
  }
}

Ingestor::~Ingestor() {
  Stop();
}

void Ingestor::Stop() {
  {
    MutexLock lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  direct_cv_.notify_all();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
  {
    MutexLock lock(completion_mutex_);
    completion_stopping_ = true;
  }
  completion_cv_.notify_all();
  if (completion_.joinable()) completion_.join();
}

// Answers committed groups in order, off the ingest thread, which meanwhile inserts
// the next group: the submissions of a group waited for one cycle, not for one cycle
// and the answering of the group before.
void Ingestor::RunCompletion() {
  while (true) {
    std::deque<Committed> ready;
    {
      MutexLock lock(completion_mutex_);
      while (!completion_stopping_ && committed_.empty()) lock.Wait(completion_cv_);
      if (committed_.empty()) return;  // stopping, nothing left
      ready.swap(committed_);
    }
    for (auto& c : ready) {
      for (auto& s : c.batch) s->done(std::move(c.keys[s.get()]), nullptr);
    }
  }
}

void Ingestor::Submit(std::vector<std::string> columns, RecordRows records, Done done) {
  auto submission = std::make_unique<Submission>();
  const bool direct = records.rows() >= kDirectRecords;
  submission->columns = std::move(columns);
  submission->records = std::move(records);
  submission->done = std::move(done);
  {
    MutexLock lock(mutex_);
    if (stopping_) throw Error(ErrorCode::Unavailable, "the server is shutting down");
    (direct ? direct_waiting_ : waiting_).push_back(std::move(submission));
  }
  (direct ? direct_cv_ : cv_).notify_one();
}

// Large submissions, one at a time per thread, each in its own transaction.
void Ingestor::RunDirect() {
  while (true) {
    std::unique_ptr<Submission> s;
    {
      MutexLock lock(mutex_);
      while (!stopping_ && direct_waiting_.empty()) lock.Wait(direct_cv_);
      if (direct_waiting_.empty()) return;  // stopping, nothing left
      s = std::move(direct_waiting_.front());
      direct_waiting_.pop_front();
    }
    std::vector<int64_t> keys;
    std::exception_ptr error;
    try {
      // Not retried on a lost connection: the commit may have happened.
      auto lease = direct_.Acquire();
      try {
        postgres::Transaction tx(*lease);
        keys = InsertGroup(*lease, s->columns, {s.get()});
        tx.Commit();
      } catch (...) {
        error = Explain(*lease, *s, std::current_exception());
      }
    } catch (...) {
      error = std::current_exception();
    }
    s->done(std::move(keys), error);
  }
}

// A row's refusal placed on its record and column (RecordRefused) when a COPY of the
// submission, rolled back, says where; else `error` as it is.
std::exception_ptr Ingestor::Explain(postgres::Connection& conn, const Submission& s, std::exception_ptr error) {
  try {
    std::rethrow_exception(error);
  } catch (const postgres::DatabaseError& e) {
    if (e.IsConnectionLost() || e.failure_class() != postgres::FailureClass::kRow) return error;
  } catch (...) {
    return error;
  }
  try {
    postgres::Transaction tx(conn);  // rolled back: only the error is wanted
    if (auto refused = writer_.Locate(conn, s.columns, s.records)) return std::make_exception_ptr(*refused);
  } catch (const std::exception& e) {
    spdlog::debug("ingest: could not place a refused record: {}", e.what());
  }
  return error;
}

std::vector<int64_t> Ingestor::InsertGroup(postgres::Connection& conn, const std::vector<std::string>& columns,
                                           const std::vector<Submission*>& group) {
  RecordWriter::Parts parts;
  parts.reserve(group.size());
  for (const Submission* s : group) parts.push_back(&s->records);
  return writer_.Insert(conn, columns, parts);
}

void Ingestor::Run() {
  std::unique_ptr<postgres::Connection> conn;
  while (true) {
    std::vector<std::unique_ptr<Submission>> batch;
    {
      MutexLock lock(mutex_);
      while (!stopping_ && waiting_.empty()) lock.Wait(cv_);
      if (waiting_.empty()) return;  // stopping, nothing left
      size_t records = 0;
      while (!waiting_.empty() && (batch.empty() || records + waiting_.front()->records.rows() <= max_group_records_)) {
        records += waiting_.front()->records.rows();
        batch.push_back(std::move(waiting_.front()));
        waiting_.pop_front();
      }
    }
    std::map<std::vector<std::string>, std::vector<Submission*>> groups;
    for (auto& s : batch) groups[s->columns].push_back(s.get());
    try {
      if (!conn || !conn->IsAlive())
        conn = std::make_unique<postgres::Connection>(postgres::Connection::Open(conninfo_));
    } catch (...) {
      for (auto& s : batch) s->done({}, std::current_exception());
      continue;
    }
    std::map<Submission*, std::vector<int64_t>> keys;
    bool grouped_ok = false;
    try {
      // One column set (nearly always): its one statement commits by itself, without
      // the round trips of BEGIN and COMMIT (the group commit's cycle is its latency).
      std::optional<postgres::Transaction> tx;
      if (groups.size() > 1) tx.emplace(*conn);
      for (const auto& [columns, group] : groups) {
        auto all = InsertGroup(*conn, columns, group);
        size_t at = 0;
        for (Submission* s : group) {
          const size_t n = std::min(s->records.rows(), all.size() - at);
          keys[s].assign(all.begin() + static_cast<std::ptrdiff_t>(at),
                         all.begin() + static_cast<std::ptrdiff_t>(at + n));
          at += n;
        }
      }
      if (tx) tx->Commit();
      grouped_ok = true;
    } catch (const postgres::DatabaseError& e) {
      if (e.IsConnectionLost()) {
        conn.reset();
        for (auto& s : batch) s->done({}, std::current_exception());
        continue;
      }
    } catch (...) {
      for (auto& s : batch) s->done({}, std::current_exception());
      continue;
    }
    if (grouped_ok) {
      {
        MutexLock lock(completion_mutex_);
        committed_.push_back({std::move(batch), std::move(keys)});
      }
      completion_cv_.notify_one();
      continue;
    }
    // Someone's records broke the shared statement: each submission on its own.
    for (auto& s : batch) {
      try {
        if (!conn || !conn->IsAlive())
          conn = std::make_unique<postgres::Connection>(postgres::Connection::Open(conninfo_));
        std::vector<int64_t> own;
        try {
          postgres::Transaction tx(*conn);
          own = InsertGroup(*conn, s->columns, {s.get()});
          tx.Commit();
        } catch (...) {
          s->done({}, Explain(*conn, *s, std::current_exception()));
          continue;
        }
        s->done(std::move(own), nullptr);
      } catch (...) {
        s->done({}, std::current_exception());
      }
    }
  }
}

}  // namespace runnel::server
