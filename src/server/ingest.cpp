#include "runnel/server/ingest.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <map>

#include "runnel/core/error.hpp"

namespace runnel::server {

using postgres::QuoteIdentifier;

Ingestor::Ingestor(const pipeline::PipelineConfig& config, pipeline::RequestKeys keys, std::string conninfo,
                   std::set<std::string> json_columns, size_t threads, size_t max_group_records)
    : config_(config),
      keys_(std::move(keys)),
      json_columns_(std::move(json_columns)),
      conninfo_(std::move(conninfo)),
      direct_(conninfo_),
      max_group_records_(max_group_records) {
  for (size_t i = 0; i < std::max<size_t>(1, threads); ++i) threads_.emplace_back([this] { Run(); });
  for (size_t i = 0; i < kDirectThreads; ++i) threads_.emplace_back([this] { RunDirect(); });
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
}

void Ingestor::Submit(std::vector<std::string> columns, std::vector<nlohmann::json> records, Done done) {
  auto submission = std::make_unique<Submission>();
  const bool direct = records.size() >= kDirectRecords;
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
    if (keys_.mapped()) return;
    auto r = conn.Exec("SELECT pg_get_serial_sequence($1, $2)",
                       postgres::Params().Add(QuoteIdentifier(config_.table)).Add(keys_.columns().front().name));
    if (!r.IsNull(0, 0)) sequence_ = r.Get<std::string>(0, 0);
  });
  return sequence_;
}

namespace {

// COPY's text format escapes backslash and the characters that end a field or row.
void AppendCopyText(std::string& out, std::string_view text) {
  while (!text.empty()) {
    const size_t special = text.find_first_of("\\\n\r\t");
    out.append(text.substr(0, special));
    if (special == std::string_view::npos) return;
    switch (text[special]) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      default: out += "\\t"; break;
    }
    text.remove_prefix(special + 1);
  }
}

template <class Number>
void AppendNumber(std::string& out, Number number) {
  char buf[32];
  const auto end = std::to_chars(buf, buf + sizeof(buf), number).ptr;  // shortest form that reads back
  out.append(buf, end);
}

// One value in COPY's text format; a json column's as JSON text.
void AppendCopyValue(std::string& out, const nlohmann::json& value, bool as_json) {
  if (as_json && !value.is_null()) return AppendCopyText(out, value.dump());
  switch (value.type()) {
    case nlohmann::json::value_t::null: out += "\\N"; break;
    case nlohmann::json::value_t::string: AppendCopyText(out, value.get_ref<const std::string&>()); break;
    case nlohmann::json::value_t::boolean: out += value.get<bool>() ? 't' : 'f'; break;
    case nlohmann::json::value_t::number_integer: AppendNumber(out, value.get<int64_t>()); break;
    case nlohmann::json::value_t::number_unsigned: AppendNumber(out, value.get<uint64_t>()); break;
    case nlohmann::json::value_t::number_float: AppendNumber(out, value.get<double>()); break;
    default: AppendCopyText(out, value.dump()); break;  // objects and arrays, for json columns
  }
}

}  // namespace

std::vector<int64_t> Ingestor::InsertGroup(postgres::Connection& conn, const std::vector<std::string>& columns,
                                           const std::vector<Submission*>& group) {
  size_t total = 0;
  for (const Submission* s : group) total += s->records.size();
  const std::string table = QuoteIdentifier(config_.table);
  const std::string& key_column = keys_.columns().front().name;
  const std::string key = QuoteIdentifier(key_column);
  std::string list;
  for (const auto& c : columns) list += (list.empty() ? "" : ", ") + QuoteIdentifier(c);
  const bool key_given = std::find(columns.begin(), columns.end(), key_column) != columns.end();
  std::vector<int64_t> keys;
  keys.reserve(total);
  if (!key_given && !KeySequence(conn).empty()) {
    // Keys first, from the column's own sequence; then COPY, the fastest way in.
    auto r = conn.Exec("SELECT nextval($1::regclass) FROM generate_series(1, $2)",
                       postgres::Params().Add(KeySequence(conn)).Add(static_cast<int64_t>(total)));
    for (int i = 0; i < r.rows(); ++i) keys.push_back(r.Get<int64_t>(i, 0));
    std::vector<bool> as_json;
    for (const auto& c : columns) as_json.push_back(json_columns_.contains(c));
    std::string data;
    data.reserve(total * (columns.size() + 1) * 8);
    size_t k = 0;
    for (const Submission* s : group) {
      for (const auto& record : s->records) {
        AppendNumber(data, keys[k++]);
        // A group's records have exactly `columns`, in the same (sorted) order.
        size_t i = 0;
        for (const auto& [column, value] : record.items()) {
          data += '\t';
          AppendCopyValue(data, value, as_json[i++]);
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
  std::string returning = key;
  if (keys_.mapped()) {
    returning.clear();
    for (const auto& c : keys_.columns())
      returning += (returning.empty() ? "" : ", ") + QuoteIdentifier(c.name) + "::text";
  }
  auto r = conn.Exec(fmt::format("INSERT INTO {t} ({cols}) SELECT {cols} FROM jsonb_populate_recordset(NULL::{t}, "
                                 "$1::jsonb) RETURNING {returning}",
                                 fmt::arg("t", table), fmt::arg("cols", list), fmt::arg("returning", returning)),
                     postgres::Params().Add(json));
  if (keys_.mapped()) return MappedIds(conn, r);
  for (int i = 0; i < r.rows(); ++i) keys.push_back(r.Get<int64_t>(i, 0));
  return keys;
}

std::vector<int64_t> Ingestor::MappedIds(postgres::Connection& conn, const postgres::Result& inserted) const {
  // The capture trigger gave each key its id at the end of the INSERT; a key with a
  // NULL part is no request and has none (the caller then reports fewer ids).
  postgres::Params params;
  for (size_t c = 0; c < keys_.columns().size(); ++c) {
    std::vector<std::optional<std::string>> values;
    for (int i = 0; i < inserted.rows(); ++i)
      values.push_back(inserted.GetOptional<std::string>(i, static_cast<int>(c)));
    params.AddArray(values);
  }
  // u's columns take the key columns' names: the map joins it like any keyed relation.
  auto r = conn.Exec(
      fmt::format("SELECT m.{id} FROM unnest({arrays}) WITH ORDINALITY AS u({columns}, runnel_ord) JOIN {map} m "
                  "ON {same} ORDER BY u.runnel_ord",
                  fmt::arg("id", pipeline::RequestKeys::kIdColumn), fmt::arg("arrays", keys_.TypedParams(1, true)),
                  fmt::arg("columns", keys_.ColumnList("")), fmt::arg("map", keys_.map_table()),
                  fmt::arg("same", keys_.SameKey("m", "u"))),
      params);
  std::vector<int64_t> ids;
  ids.reserve(static_cast<size_t>(r.rows()));
  for (int i = 0; i < r.rows(); ++i) ids.push_back(r.Get<int64_t>(i, 0));
  return ids;
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
