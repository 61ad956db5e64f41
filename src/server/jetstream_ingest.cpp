#include "runnel/server/jetstream_ingest.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cassert>
#include <future>
#include <map>
#include <optional>
#include <set>

#include "runnel/core/backoff.hpp"
#include "runnel/core/error.hpp"
#include "runnel/core/thread_name.hpp"
#include "runnel/postgres/sqlstate.hpp"
#include "runnel/server/http_message.hpp"
#include "runnel/server/jetstream_results.hpp"
#include "runnel/server/request_body.hpp"

namespace runnel::server {

using nlohmann::json;
using postgres::Params;
using postgres::QuoteIdentifier;

// One fetched message and what became of it: its records (a batch — NDJSON or a JSON
// array — has several; a message refused whole has one item with the reason).
struct JetStreamIngest::Taken {
  struct Item {
    std::optional<json> record;  // a valid record, not yet taken in
    std::string error;           // why it is refused (a dead letter), when not empty
    std::optional<int64_t> request_id;
    bool scored = false;  // mode "direct": its result is stored
    std::string where;  // "record N of the message: " in a batch, before its reason
  };
  nats::Message message;
  std::vector<Item> items;
  bool batch = false;      // its items are the records of a batch (dead letters one per record)
  bool duplicate = false;  // taken in by an earlier delivery

  void ResetIds() {
    for (auto& item : items) {
      item.request_id.reset();
      item.scored = false;
    }
  }
  // Every item refused: the message is a dead letter as a whole (terminated).
  bool Refused() const {
    return std::all_of(items.begin(), items.end(), [](const Item& i) { return !i.error.empty(); });
  }
};

nats::ConnectOptions ConnectOptionsFor(const pipeline::JetStreamConfig& config, const std::string& name) {
  nats::ConnectOptions options;
  options.servers = config.servers;
  options.name = name;
  options.credentials_file = config.credentials.string();
  options.ca_file = config.ca_file.string();
  options.cert_file = config.cert_file.string();
  options.key_file = config.key_file.string();
  return options;
}

JetStreamIngest::JetStreamIngest(const pipeline::PipelineConfig& config, std::string conninfo,
                                 std::shared_ptr<pipeline::ModelProvider> models)
    : config_(config),
      js_config_(*config.jetstream),
      conninfo_(std::move(conninfo)),
      names_(pipeline::NamesFor(config)),
      models_(std::move(models)) {
  assert(js_config_.mode != pipeline::JetStreamMode::kDirect || models_);
}

JetStreamIngest::~JetStreamIngest() {
  Stop();
}

void JetStreamIngest::Connect() {
  conn_ = std::make_unique<postgres::Connection>(postgres::Connection::Open(conninfo_));
  schema_ = RecordSchema::Load(*conn_, config_);
  writer_ = std::make_unique<RecordWriter>(config_, schema_);
  if (js_config_.mode == pipeline::JetStreamMode::kDirect) direct_ = std::make_unique<DirectScoring>(config_, models_);
  js_ = std::make_unique<nats::JetStream>(ConnectOptionsFor(js_config_, "runnel " + config_.name));
  Bind();
}

void JetStreamIngest::Bind() {
  consumer_ = js_->Consume(js_config_.stream, js_config_.durable, js_config_.subject,
                           std::chrono::duration_cast<std::chrono::milliseconds>(js_config_.ack_wait));
}

void JetStreamIngest::Start() {
  try {
    Connect();
  } catch (const Error& e) {
    // Connected, but the cluster did not answer in time (a node away, a leader being
    // elected): the rounds bind the consumer once it does.
    if (!js_ || e.code() != ErrorCode::Unavailable) throw;
    spdlog::warn("{}: JetStream: {} (retrying)", config_.name, e.what());
  }
  stop_ = false;
  thread_ = std::thread([this] {
    NameThisThread("js-in:" + config_.name);
    Loop();
  });
}

void JetStreamIngest::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

JetStreamIngest::Counts JetStreamIngest::totals() const {
  MutexLock lock(mutex_);
  return totals_;
}

void JetStreamIngest::SetMetrics(PipelineMetrics* metrics, bool read_consumer) {
  metrics_ = metrics;
  read_consumer_ = read_consumer;
}

// The consumer's state into the metrics, at most once a second; a failure to read
// it is only logged (the rounds go on).
void JetStreamIngest::ReportConsumer(std::chrono::steady_clock::time_point& next) {
  const auto now = std::chrono::steady_clock::now();
  // (consumer_ belongs to the fetch thread: a consumer not bound yet fails to be read.)
  if (metrics_ == nullptr || !read_consumer_ || now < next) return;
  next = now + std::chrono::seconds(1);
  try {
    const auto info = js_->Info(js_config_.stream, js_config_.durable);
    metrics_->SetJetStreamConsumer(info.pending, info.ack_pending, info.redelivered);
  } catch (const Error& e) {
    spdlog::debug("{}: reading JetStream consumer '{}': {}", config_.name, js_config_.durable, e.what());
  }
}

// After an empty fetch. Messages the fetch under way holds count as delivered and
// unacknowledged, so they keep the consumer from looking drained. A failure to ask
// only leaves it undrained.
void JetStreamIngest::CheckDrained() {
  try {
    const auto info = js_->Info(js_config_.stream, js_config_.durable);
    drained_ = info.pending == 0 && info.ack_pending == 0;
  } catch (const Error& e) {
    drained_ = false;
    spdlog::debug("{}: reading JetStream consumer '{}': {}", config_.name, js_config_.durable, e.what());
  }
}

// Rounds with the next fetch under way while a batch is taken in (the consumer is used
// by one fetch at a time: each starts after the one before has returned).
void JetStreamIngest::Loop() {
  Backoff backoff;
  auto next_report = std::chrono::steady_clock::now();
  const auto fetch = [this] {
    return std::async(std::launch::async, [this] { return Fetch(std::chrono::milliseconds(500)); });
  };
  std::future<std::vector<nats::Message>> next;
  while (!stop_) {
    try {
      if (!next.valid()) next = fetch();
      auto messages = next.get();  // a failed fetch throws here, and the next starts anew
      next = fetch();
      const bool empty = messages.empty();
      if (!empty) drained_ = false;
      const auto counts = Take(std::move(messages));
      if (metrics_ != nullptr) {
        metrics_->RecordJetStreamRound(counts.inserted, counts.scored, counts.duplicates, counts.dead);
        if (counts.scored > 0) metrics_->RecordScoredDirectly(direct_tally_);
      }
      ReportConsumer(next_report);
      if (empty) CheckDrained();
      failed_rounds_ = 0;
      backoff.Reset();
    } catch (const std::exception& e) {
      ++failed_rounds_;
      const auto wait = backoff.Next();
      spdlog::warn("{}: JetStream ingest from stream '{}': {} (retrying in {} ms)", config_.name, js_config_.stream,
                   e.what(), wait.count());
      SleepUnlessStopped(wait, [this] { return stop_.load(); });
    }
  }
  // A batch fetched ahead goes back at once (not after ack_wait), to another process.
  if (!next.valid()) return;
  try {
    for (auto& m : next.get()) m.Nak();
  } catch (const std::exception&) {
    // NATS is away: they come back after ack_wait
  }
}

JetStreamIngest::Counts JetStreamIngest::RunOnce(std::chrono::milliseconds wait) {
  return Take(Fetch(wait));
}

// Up to `batch` messages, binding the consumer first when it is not bound yet.
std::vector<nats::Message> JetStreamIngest::Fetch(std::chrono::milliseconds wait) {
  if (!consumer_) Bind();
  return consumer_->Fetch(static_cast<size_t>(js_config_.batch), wait);
}

JetStreamIngest::Counts JetStreamIngest::Take(std::vector<nats::Message> messages) {
  Counts counts;
  if (messages.empty()) return counts;
  std::vector<Taken> taken;
  taken.reserve(messages.size());
  std::set<uint64_t> sequences;
  std::vector<nats::Message> again;  // delivered twice in this fetch: acknowledged after the commit
  for (auto& m : messages) {
    if (!sequences.insert(m.stream_sequence()).second) {
      again.push_back(std::move(m));
      continue;
    }
    taken.push_back({std::move(m), {}, false, false});
  }
  Classify(taken);
  try {
    if (!conn_ || !conn_->IsAlive())
      conn_ = std::make_unique<postgres::Connection>(postgres::Connection::Open(conninfo_));
    // Only a message delivered before can have been taken in before: a round of first
    // deliveries skips the lookup (a consumer made anew counts again from one: the
    // table's primary key then says so, and the round is done again with the lookup).
    bool look_up = std::any_of(taken.begin(), taken.end(), [](const Taken& t) { return t.message.deliveries() != 1; });
    const auto insert = [&](bool careful) {
      try {
        Insert(taken, careful, look_up);
      } catch (const SeenBefore&) {
        for (auto& t : taken) t.ResetIds();
        look_up = true;
        Insert(taken, careful, true);
      }
    };
    try {
      insert(false);
    } catch (const postgres::DatabaseError& e) {
      if (e.IsConnectionLost() || postgres::ClassifySqlState(e.sqlstate()) != postgres::FailureClass::kRow) throw;
      // One record's row was refused: each on its own (under a savepoint), the
      // refused ones become dead letters.
      for (auto& t : taken) t.ResetIds();
      insert(true);
    }
  } catch (...) {
    // Nothing was taken in: the messages go back at once (not after ack_wait), to
    // this process or another.
    for (auto& t : taken) {
      try {
        t.message.Nak();
      } catch (const Error&) {
        // NATS is away too: they come back after ack_wait
      }
    }
    throw;
  }
  Settle(taken, counts);
  for (auto& m : again) {
    ++counts.duplicates;
    if (acknowledge_) m.Ack();
  }
  MutexLock lock(mutex_);
  totals_.inserted += counts.inserted;
  totals_.scored += counts.scored;
  totals_.duplicates += counts.duplicates;
  totals_.dead += counts.dead;
  return counts;
}

// Parses and checks each message's records; a malformed message, or record, gets its
// reason. A message is one record (a JSON object), or a batch: a JSON array of them, or
// NDJSON under the header Content-Type: application/x-ndjson.
void JetStreamIngest::Classify(std::vector<Taken>& taken) const {
  for (Taken& t : taken) {
    std::vector<json> records;
    try {
      // names the offset of what is malformed, invalid UTF-8 too
      records = ParseRecords(t.message.data(), t.message.Header("Content-Type"));
    } catch (const HttpError& e) {
      // 400: malformed; otherwise no records, or too many ("request" is the API's word)
      t.items = {{std::nullopt, e.status == 400 ? "the message is not JSON: " + e.message : "the message: " + e.message,
                  std::nullopt, false, ""}};
      continue;
    }
    t.batch = records.size() > 1;
    t.items.resize(records.size());
    for (size_t i = 0; i < records.size(); ++i) {
      if (t.batch) t.items[i].where = fmt::format("record {} of the message: ", i + 1);
      std::string error = CheckRecord(records[i]);
      if (!error.empty()) {
        t.items[i].error = t.items[i].where + error;
      } else {
        t.items[i].record = std::move(records[i]);
      }
    }
  }
}

// Why `record` cannot be a row of the table ("" when it can).
std::string JetStreamIngest::CheckRecord(json& record) const {
  if (!record.is_object()) return "not a JSON object (one record: column -> value)";
  json problems = json::array();
  schema_.Validate(record, 0, problems);
  std::string reasons;
  for (const auto& p : problems)
    reasons += fmt::format("{}{}: {}", reasons.empty() ? "" : "; ", p["field"].get<std::string>(),
                           p["error"].get<std::string>());
  return reasons;
}

// In one transaction: finds the messages taken in before (with `look_up`), inserts the
// other valid records (each under a savepoint when `careful`), records every record,
// commits. Throws SeenBefore when, without `look_up`, a message was taken in before
// (nothing is committed then).
void JetStreamIngest::Insert(std::vector<Taken>& taken, bool careful, bool look_up) {
  postgres::Connection& conn = *conn_;
  postgres::Transaction tx(conn);
  results_.clear();
  direct_tally_ = {};
  if (look_up) LookUp(taken);
  if (!direct_) InsertRows(taken, careful);
  try {
    // The key of runnel_<p>_jetstream catches a message taken in before.
    if (direct_) ScoreRecords(taken, careful);
    Record(taken);
  } catch (const postgres::DatabaseError& e) {
    if (!look_up && e.sqlstate() == postgres::kUniqueViolation) throw SeenBefore{};
    throw;
  }
  tx.Commit();
}

// The valid records into the table (each under a savepoint when `careful`: a record
// whose row is refused for its own sake becomes a dead letter).
void JetStreamIngest::InsertRows(std::vector<Taken>& taken, bool careful) {
  postgres::Connection& conn = *conn_;
  // Records of one column set go in together, in message order.
  std::map<std::vector<std::string>, std::vector<Taken::Item*>> groups;
  for (auto& t : taken) {
    for (auto& item : t.items) {
      if (!item.record) continue;
      std::vector<std::string> columns;
      for (const auto& [field, value] : item.record->items()) columns.push_back(field);
      groups[columns].push_back(&item);
    }
  }
  for (const auto& [columns, members] : groups) {
    if (!careful) {
      std::vector<const json*> records;
      records.reserve(members.size());
      for (const Taken::Item* item : members) records.push_back(&*item->record);
      const RecordRows rows = schema_.Render(columns, records);
      const auto ids = writer_->Insert(conn, columns, {&rows});
      for (size_t j = 0; j < members.size() && j < ids.size(); ++j) members[j]->request_id = ids[j];
      continue;
    }
    for (Taken::Item* item : members) {
      const json* record = &*item->record;
      const RecordRows rows = schema_.Render(columns, {&record, 1});
      conn.Exec("SAVEPOINT runnel_record");
      try {
        const auto ids = writer_->Insert(conn, columns, {&rows});
        if (!ids.empty()) item->request_id = ids.front();
        conn.Exec("RELEASE SAVEPOINT runnel_record");
      } catch (const postgres::DatabaseError& e) {
        if (e.IsConnectionLost() || postgres::ClassifySqlState(e.sqlstate()) != postgres::FailureClass::kRow) throw;
        conn.Exec("ROLLBACK TO SAVEPOINT runnel_record");
        // Which field, when a COPY of the record (undone) names it.
        const auto refused = writer_->Locate(conn, columns, rows);
        conn.Exec("ROLLBACK TO SAVEPOINT runnel_record");
        const std::string field =
            refused && !refused->column().empty() ? fmt::format(" at field '{}'", refused->column()) : "";
        item->record.reset();
        item->error = fmt::format("{}the database refused the row{} (SQLSTATE {}): {}", item->where, field,
                                  e.sqlstate(), e.primary());
      }
    }
  }
}

// Mode "direct": the valid records scored and their results stored (DirectScoring) —
// each on its own under a savepoint when `careful`: a record whose result the database
// refuses for the record's sake (a NUL in its client's text) becomes a dead letter.
void JetStreamIngest::ScoreRecords(std::vector<Taken>& taken, bool careful) {
  std::vector<DirectRecord> records;
  std::vector<Taken::Item*> items;
  for (auto& t : taken) {
    for (size_t i = 0; i < t.items.size(); ++i) {
      if (!t.items[i].record) continue;
      records.push_back({&*t.items[i].record, static_cast<int64_t>(t.message.stream_sequence()),
                         static_cast<int64_t>(i), t.message.stored_at_ns() / 1000});
      items.push_back(&t.items[i]);
    }
  }
  if (records.empty()) return;
  const auto keep = [this](std::vector<DirectResult> results) {
    results_.insert(results_.end(), std::make_move_iterator(results.begin()), std::make_move_iterator(results.end()));
  };
  if (!careful) {
    keep(direct_->Serve(*conn_, js_config_.stream, records, direct_tally_));
    for (Taken::Item* item : items) item->scored = true;
    return;
  }
  postgres::Connection& conn = *conn_;
  for (size_t i = 0; i < records.size(); ++i) {
    conn.Exec("SAVEPOINT runnel_record");
    try {
      keep(direct_->Serve(conn, js_config_.stream, {&records[i], 1}, direct_tally_));
      items[i]->scored = true;
      conn.Exec("RELEASE SAVEPOINT runnel_record");
    } catch (const postgres::DatabaseError& e) {
      // (A unique violation is a message taken in before, not the record's fault.)
      if (e.IsConnectionLost() || e.sqlstate() == postgres::kUniqueViolation ||
          postgres::ClassifySqlState(e.sqlstate()) != postgres::FailureClass::kRow)
        throw;
      conn.Exec("ROLLBACK TO SAVEPOINT runnel_record");
      items[i]->record.reset();
      items[i]->error = fmt::format("{}the database refused its result (SQLSTATE {}): {}", items[i]->where,
                                    e.sqlstate(), e.primary());
    }
  }
}

// Marks the messages recorded in runnel_<p>_jetstream by an earlier delivery: each
// record taken in (a duplicate), or refused (a dead letter again).
void JetStreamIngest::LookUp(std::vector<Taken>& taken) {
  postgres::Connection& conn = *conn_;
  std::vector<int64_t> seqs;
  for (const auto& t : taken) seqs.push_back(static_cast<int64_t>(t.message.stream_sequence()));
  // (A direct result's error is its request's, not a dead letter's.)
  auto before = conn.Exec(fmt::format("SELECT seq, item, CASE WHEN status IS NULL THEN error END AS error FROM {} "
                                      "WHERE stream = $1 AND seq = ANY($2::bigint[])",
                                      QuoteIdentifier(names_.jetstream)),
                          Params().Add(js_config_.stream).AddArray(seqs));
  std::map<int64_t, std::map<int64_t, std::optional<std::string>>> seen;  // seq -> item -> error
  const int seq_col = before.ColumnIndex("seq"), item_col = before.ColumnIndex("item"),
            error_col = before.ColumnIndex("error");
  for (int r = 0; r < before.rows(); ++r) {
    seen[before.Get<int64_t>(r, seq_col)][before.Get<int64_t>(r, item_col)] =
        before.GetOptional<std::string>(r, error_col);
  }
  std::vector<int64_t> again;
  for (auto& t : taken) {
    auto it = seen.find(static_cast<int64_t>(t.message.stream_sequence()));
    if (it == seen.end()) continue;
    t.duplicate = true;
    again.push_back(it->first);
    for (size_t i = 0; i < t.items.size(); ++i) {
      t.items[i].record.reset();
      const auto error = it->second.find(static_cast<int64_t>(i));
      if (error != it->second.end() && error->second) t.items[i].error = *error->second;  // a dead letter again
    }
  }
  // Their results may not have reached the results stream: published again.
  if (direct_ && !again.empty()) results_ = direct_->Stored(conn, js_config_.stream, again);
}

// Every record of the messages not seen before, with its request id or its reason.
void JetStreamIngest::Record(const std::vector<Taken>& taken) {
  std::vector<int64_t> seqs, items, stored_us;
  std::vector<std::optional<std::string>> errors, id_texts;
  for (const auto& t : taken) {
    if (t.duplicate) continue;
    for (size_t i = 0; i < t.items.size(); ++i) {
      const auto& item = t.items[i];
      if (item.scored) continue;  // stored with its result
      seqs.push_back(static_cast<int64_t>(t.message.stream_sequence()));
      items.push_back(static_cast<int64_t>(i));
      stored_us.push_back(t.message.stored_at_ns() / 1000);
      id_texts.push_back(item.request_id ? std::optional<std::string>(std::to_string(*item.request_id)) : std::nullopt);
      errors.push_back(item.error.empty() ? std::nullopt : std::optional<std::string>(item.error));
    }
  }
  if (seqs.empty()) return;
  conn_->Exec(fmt::format("INSERT INTO {} (stream, seq, item, request_id, error, published_at) "
                          "SELECT $1, s, n, i::bigint, e, timestamptz 'epoch' + p * interval '1 microsecond' "
                          "FROM unnest($2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::bigint[]) "
                          "AS u(s, n, i, e, p)",
                          QuoteIdentifier(names_.jetstream)),
              Params()
                  .Add(js_config_.stream)
                  .AddArray(seqs)
                  .AddArray(items)
                  .AddArray(id_texts)
                  .AddArray(errors)
                  .AddArray(stored_us));
}

// The dead letters of a message: the message as sent when it is refused whole, else
// each refused record of its batch (its id names the record: one letter each however
// often the message comes).
void JetStreamIngest::DeadLetters(const Taken& t, std::vector<nats::OutgoingMessage>& letters) const {
  const std::string id = fmt::format("{}:dead:{}:{}", config_.name, js_config_.stream, t.message.stream_sequence());
  if (!t.batch) {
    if (!t.items.empty() && !t.items[0].error.empty())
      letters.push_back({js_config_.dead_letter,
                         std::string(t.message.data()),
                         {{"Runnel-Error", t.items[0].error}, {"Nats-Msg-Id", id}}});
    return;
  }
  const auto records = ParseRecords(t.message.data(), t.message.Header("Content-Type"));  // parsed before
  for (size_t i = 0; i < t.items.size() && i < records.size(); ++i) {
    if (t.items[i].error.empty()) continue;
    letters.push_back({js_config_.dead_letter,
                       records[i].dump(-1, ' ', false, json::error_handler_t::replace),
                       {{"Runnel-Error", t.items[i].error}, {"Nats-Msg-Id", fmt::format("{}:{}", id, i)}}});
  }
}

// Mode "direct" with `results`: the round's results (and those of messages delivered
// again), stored by the results stream before their messages are acknowledged (any
// other failure fails the round: the messages come again and their results are
// published then).
void JetStreamIngest::PublishResults() {
  if (js_config_.results.empty() || results_.empty()) return;
  std::vector<nats::OutgoingMessage> messages;
  messages.reserve(results_.size());
  for (auto& r : results_) {
    messages.push_back({js_config_.results + "." + JetStreamResults::SubjectToken(r.client),
                        std::move(r.body),
                        {{"Nats-Msg-Id", r.id}}});
  }
  results_.clear();
  try {
    js_->PublishAll(messages);
  } catch (const Error& e) {
    // No stream captures the subjects (not set up): holding the messages back would
    // stop the pipeline for good, and the results are in the table.
    if (e.code() != ErrorCode::NotFound) throw;
    spdlog::warn(
        "{}: {} result(s) not published: {} (they are in {}; `runnel jetstream setup` makes the results "
        "stream)",
        config_.name, messages.size(), e.what(), names_.jetstream);
  }
}

// After the commit: dead letters published (and stored by their stream); messages
// refused whole terminated, the rest acknowledged.
void JetStreamIngest::Settle(std::vector<Taken>& taken, Counts& counts) {
  std::vector<nats::OutgoingMessage> letters;
  for (const auto& t : taken) DeadLetters(t, letters);
  counts.dead += letters.size();
  if (!letters.empty() && acknowledge_) {
    try {
      js_->PublishAll(letters);
    } catch (const Error& e) {
      // Nothing keeps them: their reasons are in the table all the same.
      if (e.code() != ErrorCode::NotFound) throw;
      spdlog::warn("{}: {} dead letter(s) not kept: {} (their reasons are in {})", config_.name, letters.size(),
                   e.what(), names_.jetstream);
    }
  }
  if (acknowledge_) PublishResults();
  for (auto& t : taken) {
    if (t.duplicate) {
      counts.duplicates += t.Refused() ? 0 : 1;  // a refused one counts as its dead letter again
    } else {
      for (const auto& item : t.items) {
        counts.inserted += item.request_id ? 1 : 0;
        counts.scored += item.scored ? 1 : 0;
      }
    }
    if (!acknowledge_) continue;
    if (t.Refused()) {
      t.message.Term();
    } else {
      t.message.Ack();
    }
  }
}

}  // namespace runnel::server
