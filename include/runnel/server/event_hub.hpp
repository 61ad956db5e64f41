// Result subscriptions: Server-Sent Events of served requests
// (GET /v1/pipelines/{p}/events). Every process's workers append each committed
// batch's served keys to the pipeline's events table (schema v5) and NOTIFY them on
// `runnel_<p>_served`. One pump thread per process reads new events for all of its
// subscribers at once and hands each the ones of its client.
//
// Order and resumption: events are ordered by (txid, id, position in the batch). The
// pump reads only events of transactions older than every running one
// (pg_snapshot_xmin), which no later commit can precede, so a subscriber that resumes
// after the last id it saw (Last-Event-ID) gets every later event exactly once.
// A subscriber that resumes is caught up from the table by the pump before it joins
// the live ones; one that reads too slowly is dropped by the transport (bounded
// backlog) and resumes the same way.
//
// Thread safety: every member may be called from any thread.
#pragma once

#include <chrono>
#include <compare>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/server/http_message.hpp"

namespace runnel::server {

// Where an event stands in the order; its SSE id is "txid-id-ord".
struct EventPosition {
  uint64_t txid = 0;
  int64_t id = 0;
  int64_t ord = 0;  // 1-based index of the request in its batch

  auto operator<=>(const EventPosition&) const = default;
  std::string ToString() const;
  // Nullopt unless `text` is three non-negative integers joined by '-'.
  static std::optional<EventPosition> Parse(std::string_view text);
};

struct EventHubOptions {
  std::chrono::milliseconds heartbeat{15000};  // a comment line to every subscriber
  std::chrono::milliseconds poll{250};         // reads without a notification
  size_t max_subscribers = 10000;
  int64_t read_rows = 10000;  // events per read
};

class EventHub {
 public:
  EventHub(const pipeline::PipelineConfig& config, std::string conninfo, EventHubOptions options = {});
  ~EventHub();
  EventHub(const EventHub&) = delete;
  EventHub& operator=(const EventHub&) = delete;

  // Starts the pump (its own connection). Throws DatabaseError when it cannot read
  // the events table.
  void Start();
  // Stops the pump and closes every subscriber's stream. Idempotent.
  void Stop();

  // Adds a subscriber: events after `after` (caught up from the table first), or from
  // now on when nullopt; only those of `client` when set. False when the hub is full.
  // Does no database work (safe on an I/O thread).
  bool Subscribe(std::shared_ptr<StreamSink> sink, std::optional<std::string> client,
                 std::optional<EventPosition> after);
  size_t subscribers() const;
  size_t max_subscribers() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace runnel::server
