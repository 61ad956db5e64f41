#include "runnel/server/jetstream_results.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <cctype>

#include "result_events.hpp"
#include "runnel/core/backoff.hpp"
#include "runnel/core/error.hpp"
#include "runnel/core/thread_name.hpp"
#include "runnel/server/jetstream_ingest.hpp"

namespace runnel::server {

using postgres::Params;
using postgres::QuoteIdentifier;

JetStreamResults::JetStreamResults(const pipeline::PipelineConfig& config, std::string conninfo)
    : config_(config),
      js_config_(*config.jetstream),
      conninfo_(std::move(conninfo)),
      names_(pipeline::NamesFor(config)) {}

JetStreamResults::~JetStreamResults() {
  Stop();
}

std::string JetStreamResults::SubjectToken(const std::optional<std::string>& client) {
  if (!client || client->empty()) return "_";
  std::string out;
  for (const char c : *client) {
    const auto b = static_cast<unsigned char>(c);
    if (std::isalnum(b) != 0 || c == '_' || c == '-') {
      out += c;
    } else {
      out += fmt::format("%{:02X}", b);
    }
  }
  return out;
}

void JetStreamResults::Connect() {
  conn_ = std::make_unique<postgres::Connection>(postgres::Connection::Open(conninfo_));
  reader_ = std::make_unique<ResultEventReader>(
      config_, pipeline::RequestKeys::Resolve(config_, pipeline::SourceColumns(*conn_, config_)));
  leading_ = false;
  if (!js_)
    js_ = std::make_unique<nats::JetStream>(ConnectOptionsFor(js_config_, "runnel " + config_.name + " results"));
}

void JetStreamResults::Start() {
  Connect();
  Anchor();
  stop_ = false;
  thread_ = std::thread([this] {
    NameThisThread("js-out:" + config_.name);
    Loop();
  });
}

void JetStreamResults::Stop() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void JetStreamResults::Finish(std::chrono::milliseconds limit) {
  finish_ = true;
  const auto until = std::chrono::steady_clock::now() + limit;
  while (thread_.joinable() && !ended_ && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  Stop();
}

void JetStreamResults::Loop() {
  Backoff backoff;
  const auto stopping = [this] { return stop_.load(); };
  while (!stop_) {
    try {
      if (!conn_ || !conn_->IsAlive()) Connect();
      const size_t n = RunOnce();
      backoff.Reset();
      if (n == 0 && finish_) break;
      // Idle, or another process leads: look again shortly (a leader's new events
      // show within this, a takeover within a second).
      if (n == 0) SleepUnlessStopped(leading_ ? std::chrono::milliseconds(50) : std::chrono::seconds(1), stopping);
    } catch (const std::exception& e) {
      const auto wait = backoff.Next();
      spdlog::warn("{}: publishing results to JetStream: {} (retrying in {} ms)", config_.name, e.what(), wait.count());
      conn_.reset();  // the lead goes with the session; it is taken again after reconnecting
      leading_ = false;
      SleepUnlessStopped(wait, stopping);
    }
  }
  ended_ = true;
}

// The first process publishing (any, not only the leader: before its workers serve)
// stores the newest event as the position to start after.
void JetStreamResults::Anchor() {
  const auto stored = conn_->Exec(fmt::format("SELECT EXISTS (SELECT 1 FROM {})", QuoteIdentifier(names_.published)));
  if (stored.Get<bool>(0, 0)) return;
  const EventPosition head = reader_->Head(*conn_);
  conn_->Exec(fmt::format("INSERT INTO {} (txid, id, ord) VALUES ($1::xid8, $2, $3) ON CONFLICT DO NOTHING",
                          QuoteIdentifier(names_.published)),
              Params().Add(std::to_string(head.txid)).Add(head.id).Add(head.ord));
}

EventPosition JetStreamResults::StoredPosition() {
  Anchor();
  auto r = conn_->Exec(fmt::format("SELECT txid::text AS txid, id, ord FROM {}", QuoteIdentifier(names_.published)));
  return {std::stoull(r.Get<std::string>(0, r.ColumnIndex("txid"))), r.Get<int64_t>(0, r.ColumnIndex("id")),
          r.Get<int64_t>(0, r.ColumnIndex("ord"))};
}

size_t JetStreamResults::RunOnce(int64_t limit) {
  if (!leading_) {
    leading_ =
        conn_->Exec("SELECT pg_try_advisory_lock(hashtext($1))", Params().Add("runnel_published_" + config_.name))
            .Get<bool>(0, 0);
    if (!leading_) return 0;
    position_ = StoredPosition();
  }
  constexpr EventPosition kEnd{UINT64_MAX, INT64_MAX, INT64_MAX};
  const auto events = reader_->Read(*conn_, position_, kEnd, limit);
  if (events.empty()) return 0;
  std::vector<nats::OutgoingMessage> messages;
  messages.reserve(events.size());
  for (const auto& e : events) {
    nlohmann::json body = e.data;
    body["client"] = e.client ? nlohmann::json(*e.client) : nlohmann::json(nullptr);
    messages.push_back({js_config_.results + "." + SubjectToken(e.client),
                        body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace),
                        {{"Nats-Msg-Id", config_.name + ":" + e.pos.ToString()}}});
  }
  // Stored by the stream before the position moves past them: a node failing under
  // them means publishing them again, and the duplicate window drops what it has.
  js_->PublishAll(messages);
  position_ = events.back().pos;
  conn_->Exec(fmt::format("UPDATE {} SET txid = $1::xid8, id = $2, ord = $3", QuoteIdentifier(names_.published)),
              Params().Add(std::to_string(position_.txid)).Add(position_.id).Add(position_.ord));
  published_ += events.size();
  return events.size();
}

}  // namespace runnel::server
