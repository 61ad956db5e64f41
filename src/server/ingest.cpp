#include "runnel/server/ingest.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>

#include "runnel/core/error.hpp"

namespace runnel::server {

using postgres::QuoteIdentifier;

Ingestor::Ingestor(const pipeline::PipelineConfig& config, std::string conninfo, size_t threads,
                   size_t max_group_records)
    : config_(config), conninfo_(std::move(conninfo)), direct_(conninfo_), max_group_records_(max_group_records) {
  for (size_t i = 0; i < std::max<size_t>(1, threads); ++i) threads_.emplace_back([this] { Run(); });
  for (size_t i = 0; i < kDirectThreads; ++i) threads_.emplace_back([this] { RunDirect(); });
}

Ingestor::~Ingestor() {
  Stop();
}

void Ingestor::Stop() {
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
  }
  cv_.notify_all();
  direct_cv_.notify_all();
  for (auto& t : threads_) {
    if (t.joinable()) t.join();
  }
}

void Ingestor::Submit(std::vector<std::string> columns, std::vector<nlohmann::json> records, Done done) {
  auto submission = std::make_unique<Submission>();
  const bool direct = records.size() >= kDirectRecords;
  submission->columns = std::move(columns);
  submission->records = std::move(records);
  submission->done = std::move(done);
  {
    std::lock_guard lock(mutex_);
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
      std::unique_lock lock(mutex_);
      direct_cv_.wait(lock, [&] { return stopping_ || !direct_waiting_.empty(); });
      if (direct_waiting_.empty()) return;  // stopping, nothing left
      s = std::move(direct_waiting_.front());
      direct_waiting_.pop_front();
    }
    std::vector<int64_t> keys;
    std::exception_ptr error;
    try {
      // Not retried on a lost connection: the commit may have happened.
      auto lease = direct_.Acquire();
      postgres::Transaction tx(*lease);
      keys = InsertGroup(*lease, s->columns, {s.get()});
      tx.Commit();
    } catch (...) {
      error = std::current_exception();
    }
    s->done(std::move(keys), error);
  }
}

const std::string& Ingestor::KeySequence(postgres::Connection& conn) {
  std::call_once(sequence_once_, [&] {
    auto r = conn.Exec("SELECT pg_get_serial_sequence($1, $2)",
                       postgres::Params().Add(QuoteIdentifier(config_.table)).Add(config_.key_column));
    if (!r.IsNull(0, 0)) sequence_ = r.Get<std::string>(0, 0);
  });
  return sequence_;
}

namespace {

// One value in COPY's text format.
void AppendCopyValue(std::string& out, const nlohmann::json& value) {
  if (value.is_null()) {
    out += "\\N";
  } else if (value.is_string()) {
    for (char c : value.get_ref<const std::string&>()) {
      switch (c) {
        case '\\': out += "\\\\"; break;
        case '\n': out += "\\n"; break;
        case '\r': out += "\\r"; break;
        case '\t': out += "\\t"; break;
        default: out += c;
      }
    }
  } else if (value.is_boolean()) {
    out += value.get<bool>() ? 't' : 'f';
  } else {
    out += value.dump();
  }
}

}  // namespace

std::vector<int64_t> Ingestor::InsertGroup(postgres::Connection& conn, const std::vector<std::string>& columns,
                                           const std::vector<Submission*>& group) {
  size_t total = 0;
  for (const Submission* s : group) total += s->records.size();
  const std::string table = QuoteIdentifier(config_.table);
  const std::string key = QuoteIdentifier(config_.key_column);
  std::string list;
  for (const auto& c : columns) list += (list.empty() ? "" : ", ") + QuoteIdentifier(c);
  const bool key_given = std::find(columns.begin(), columns.end(), config_.key_column) != columns.end();
  std::vector<int64_t> keys;
  keys.reserve(total);
  if (!key_given && !KeySequence(conn).empty()) {
    // Keys first, from the column's own sequence; then COPY, the fastest way in.
    auto r = conn.Exec("SELECT nextval($1::regclass) FROM generate_series(1, $2)",
                       postgres::Params().Add(KeySequence(conn)).Add(static_cast<int64_t>(total)));
    for (int i = 0; i < r.rows(); ++i) keys.push_back(r.Get<int64_t>(i, 0));
    std::string data;
    data.reserve(total * (columns.size() + 1) * 8);
    size_t k = 0;
    for (const Submission* s : group) {
      for (const auto& record : s->records) {
        data += std::to_string(keys[k++]);
        for (const auto& c : columns) {
          data += '\t';
          AppendCopyValue(data, record.at(c));
        }
        data += '\n';
      }
    }
    conn.CopyIn(fmt::format("COPY {} ({}{}{}) FROM STDIN", table, key, list.empty() ? "" : ", ", list), data);
    return keys;
  }
  std::string json = "[";
  for (const Submission* s : group) {
    for (const auto& record : s->records) {
      if (json.size() > 1) json += ',';
      json += record.dump();
    }
  }
  json += ']';
  // RETURNING follows the order rows were inserted in, which is the array's order.
  auto r = conn.Exec(fmt::format("INSERT INTO {t} ({cols}) SELECT {cols} FROM jsonb_populate_recordset(NULL::{t}, "
                                 "$1::jsonb) RETURNING {key}",
                                 fmt::arg("t", table), fmt::arg("cols", list), fmt::arg("key", key)),
                     postgres::Params().Add(json));
  for (int i = 0; i < r.rows(); ++i) keys.push_back(r.Get<int64_t>(i, 0));
  return keys;
}

void Ingestor::Run() {
  std::unique_ptr<postgres::Connection> conn;
  while (true) {
    std::vector<std::unique_ptr<Submission>> batch;
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [&] { return stopping_ || !waiting_.empty(); });
      if (waiting_.empty()) return;  // stopping, nothing left
      size_t records = 0;
      while (!waiting_.empty() && (batch.empty() || records + waiting_.front()->records.size() <= max_group_records_)) {
        records += waiting_.front()->records.size();
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
      postgres::Transaction tx(*conn);
      for (const auto& [columns, group] : groups) {
        auto all = InsertGroup(*conn, columns, group);
        size_t at = 0;
        for (Submission* s : group) {
          const size_t n = std::min(s->records.size(), all.size() - at);
          keys[s].assign(all.begin() + static_cast<std::ptrdiff_t>(at),
                         all.begin() + static_cast<std::ptrdiff_t>(at + n));
          at += n;
        }
      }
      tx.Commit();
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
      for (auto& s : batch) s->done(std::move(keys[s.get()]), nullptr);
      continue;
    }
    // Someone's records broke the shared statement: each submission on its own.
    for (auto& s : batch) {
      try {
        if (!conn || !conn->IsAlive())
          conn = std::make_unique<postgres::Connection>(postgres::Connection::Open(conninfo_));
        postgres::Transaction tx(*conn);
        auto own = InsertGroup(*conn, s->columns, {s.get()});
        tx.Commit();
        s->done(std::move(own), nullptr);
      } catch (...) {
        s->done({}, std::current_exception());
      }
    }
  }
}

}  // namespace runnel::server
