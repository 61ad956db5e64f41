#include "runnel/server/event_hub.hpp"

#include "result_events.hpp"
#include "runnel/core/mutex.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <charconv>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <vector>

#include "runnel/core/thread_name.hpp"
#include "runnel/pipeline/request_keys.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/postgres/connection.hpp"

namespace runnel::server {

using nlohmann::json;
using postgres::Params;
using postgres::QuoteIdentifier;
using Clock = std::chrono::steady_clock;

std::string EventPosition::ToString() const {
  return fmt::format("{}-{}-{}", txid, id, ord);
}

std::optional<EventPosition> EventPosition::Parse(std::string_view text) {
  EventPosition pos;
  const char* at = text.data();
  const char* end = text.data() + text.size();
  auto number = [&](auto& value, bool last) {
    auto [next, ec] = std::from_chars(at, end, value);
    if (ec != std::errc() || value < 0 || (last ? next != end : (next == end || *next != '-'))) return false;
    at = last ? next : next + 1;
    return true;
  };
  if (!number(pos.txid, false) || !number(pos.id, false) || !number(pos.ord, true)) return std::nullopt;
  return pos;
}

namespace {

// One event: its position, the client of its request, and its SSE frame.
struct Event {
  EventPosition pos;
  std::optional<std::string> client;
  std::string frame;
};

struct Subscriber {
  std::shared_ptr<StreamSink> sink;
  std::optional<std::string> client;
  EventPosition pos;  // the last event it was given (catching up)
  bool live = false;
};

// A subscriber with more than this queued gets no more until it has read it.
constexpr size_t kPaceBytes = 256 << 10;
// While nobody subscribes, the head moves at most this often (one query each).
constexpr std::chrono::milliseconds kIdleHeadEvery{100};

constexpr EventPosition kEnd{std::numeric_limits<uint64_t>::max(), std::numeric_limits<int64_t>::max(),
                             std::numeric_limits<int64_t>::max()};

}  // namespace

struct EventHub::Impl {
  Impl(const pipeline::PipelineConfig& c, std::string info, EventHubOptions o)
      : config(c), names(pipeline::NamesFor(c)), conninfo(std::move(info)), options(o) {}

  const pipeline::PipelineConfig& config;
  const pipeline::SchemaNames names;
  const std::string conninfo;
  const EventHubOptions options;
  std::unique_ptr<ResultEventReader> reader;  // set by Start, which learns how rows are keyed

  mutable Mutex mutex;
  std::vector<std::shared_ptr<Subscriber>> subscribers GUARDED_BY(mutex);
  EventPosition head;                                    // the last event read (pump thread only)
  std::atomic<bool> stop{false};
  std::thread thread;
  int64_t pending_keys = 0;  // notified but not yet read (behind the xmin horizon)
  bool head_stale = false;   // notified while nobody listened; head not yet moved
  Clock::time_point last_head;
  Clock::time_point last_progress;
  Clock::time_point last_heartbeat;

  std::unique_ptr<postgres::Connection> Connect() const;
  void Run();
  void Step(postgres::Connection& conn);
  std::vector<Event> Read(postgres::Connection& conn, const EventPosition& after, const EventPosition& upto) const;
  void Deliver(const std::vector<Event>& events);
  void CatchUp(postgres::Connection& conn);
  void Heartbeat();
  size_t subscribers_count() const {
    MutexLock lock(mutex);
    return subscribers.size();
  }
  static bool Send(Subscriber& s, const Event& e);
};

std::unique_ptr<postgres::Connection> EventHub::Impl::Connect() const {
  auto conn = std::make_unique<postgres::Connection>(postgres::Connection::Open(conninfo));
  conn->Exec(fmt::format("LISTEN {}", QuoteIdentifier(names.served_channel)));
  return conn;
}

std::vector<Event> EventHub::Impl::Read(postgres::Connection& conn, const EventPosition& after,
                                        const EventPosition& upto) const {
  std::vector<Event> events;
  for (auto& e : reader->Read(conn, after, upto, options.read_rows)) {
    events.push_back({e.pos, std::move(e.client),
                      fmt::format("id: {}\ndata: {}\n\n", e.pos.ToString(),
                                  e.data.dump(-1, ' ', false, json::error_handler_t::replace))});
  }
  return events;
}

bool EventHub::Impl::Send(Subscriber& s, const Event& e) {
  s.pos = e.pos;
  if (s.client && e.client != s.client) return true;
  return s.sink->Write(e.frame);
}

// New events to the live subscribers; those whose connection is gone are dropped,
// those that read slower than events come fall back to catching up from the table
// (at their own pace: memory per subscriber stays bounded).
void EventHub::Impl::Deliver(const std::vector<Event>& events) {
  MutexLock lock(mutex);
  std::erase_if(subscribers, [&](const std::shared_ptr<Subscriber>& s) {
    if (!s->live) return false;
    if (s->sink->backlog() > kPaceBytes) {
      s->live = false;
      return false;
    }
    for (const auto& e : events) {
      if (!Send(*s, e)) return true;
    }
    return false;
  });
}

// Subscribers that resumed: from their position up to the head, then live.
void EventHub::Impl::CatchUp(postgres::Connection& conn) {
  std::vector<std::shared_ptr<Subscriber>> behind;
  {
    MutexLock lock(mutex);
    for (const auto& s : subscribers) {
      if (!s->live) behind.push_back(s);
    }
  }
  for (const auto& s : behind) {
    if (s->sink->backlog() > kPaceBytes) continue;  // not yet: it is still reading
    const auto events = s->pos < head ? Read(conn, s->pos, head) : std::vector<Event>();
    bool open = true;
    for (const auto& e : events) {
      if (!(open = Send(*s, e))) break;
    }
    MutexLock lock(mutex);
    if (!open) {
      std::erase(subscribers, s);
    } else if (events.size() < static_cast<size_t>(options.read_rows)) {
      s->live = true;  // the head cannot move meanwhile: only this thread moves it
    }
  }
}

void EventHub::Impl::Heartbeat() {
  if (Clock::now() - last_heartbeat < options.heartbeat) return;
  last_heartbeat = Clock::now();
  MutexLock lock(mutex);
  std::erase_if(subscribers, [](const std::shared_ptr<Subscriber>& s) { return !s->sink->Write(":\n\n"); });
}

// One round: wait for a notification (or the poll interval; 5 ms while notified
// events are still behind the horizon), read what is new, catch up, heartbeat.
void EventHub::Impl::Step(postgres::Connection& conn) {
  const auto wait = pending_keys > 0 ? std::chrono::milliseconds(5) : options.poll;
  const auto notifications = conn.WaitForNotifications(wait);
  for (const auto& n : notifications) {
    pending_keys += 1 + static_cast<int64_t>(std::count(n.payload.begin(), n.payload.end(), ','));
  }
  // Nobody listens: only move the head (one index probe) instead of reading the
  // events (which joins results and rows), and at most every kIdleHeadEvery, not per
  // batch. A subscriber that comes is live from the head, so nothing committed after
  // it subscribed is missed; it may first get events of up to that long before it.
  if (subscribers_count() == 0) {
    pending_keys = 0;
    head_stale = head_stale || !notifications.empty();
    if (!head_stale || Clock::now() - last_head < kIdleHeadEvery) return;
    const auto newest = reader->Head(conn);
    last_head = Clock::now();
    head_stale = false;
    // Someone subscribed while it was read: keep the older head (it may see a few
    // events from before it came, never miss one) and serve it below.
    if (subscribers_count() == 0) return void(head = newest);
  }
  while (true) {
    const auto events = Read(conn, head, kEnd);
    if (events.empty()) break;
    head = events.back().pos;
    pending_keys -= static_cast<int64_t>(events.size());
    last_progress = Clock::now();
    Deliver(events);
    if (events.size() < static_cast<size_t>(options.read_rows)) break;
  }
  // Events of other processes' batches from before this one started, or counts that
  // do not add up: stop hurrying after a second without progress.
  if (pending_keys < 0 || Clock::now() - last_progress > std::chrono::seconds(1)) pending_keys = 0;
  CatchUp(conn);
  Heartbeat();
}

void EventHub::Impl::Run() {
  std::unique_ptr<postgres::Connection> conn;
  while (!stop.load()) {
    try {
      if (!conn) conn = Connect();
      Step(*conn);
    } catch (const Error& e) {
      spdlog::warn("result events: {}; reconnecting", e.what());
      conn.reset();
      for (int i = 0; i < 50 && !stop.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
}

EventHub::EventHub(const pipeline::PipelineConfig& config, std::string conninfo, EventHubOptions options)
    : impl_(std::make_unique<Impl>(config, std::move(conninfo), options)) {}

EventHub::~EventHub() {
  Stop();
}

void EventHub::Start() {
  auto& s = *impl_;
  if (s.thread.joinable()) return;
  auto conn = s.Connect();
  s.reader = std::make_unique<ResultEventReader>(
      s.config, pipeline::RequestKeys::Resolve(s.config, pipeline::SourceColumns(*conn, s.config)));
  s.head = s.reader->Head(*conn);  // fails here, not in the pump, when the events table is missing
  s.last_progress = s.last_heartbeat = Clock::now();
  s.thread = std::thread([&s] {
    NameThisThread("events:" + s.config.name);
    s.Run();
  });
}

void EventHub::Stop() {
  auto& s = *impl_;
  s.stop = true;
  if (s.thread.joinable()) s.thread.join();
  MutexLock lock(s.mutex);
  for (const auto& sub : s.subscribers) sub->sink->Close();
  s.subscribers.clear();
}

bool EventHub::Subscribe(std::shared_ptr<StreamSink> sink, std::optional<std::string> client,
                         std::optional<EventPosition> after) {
  auto& s = *impl_;
  auto sub = std::make_shared<Subscriber>();
  sub->sink = std::move(sink);
  sub->client = std::move(client);
  sub->live = !after.has_value();
  if (after) sub->pos = *after;
  MutexLock lock(s.mutex);
  if (s.subscribers.size() >= s.options.max_subscribers || s.stop.load()) return false;
  s.subscribers.push_back(std::move(sub));
  return true;
}

size_t EventHub::subscribers() const {
  MutexLock lock(impl_->mutex);
  return impl_->subscribers.size();
}

size_t EventHub::max_subscribers() const {
  return impl_->options.max_subscribers;
}

}  // namespace runnel::server
