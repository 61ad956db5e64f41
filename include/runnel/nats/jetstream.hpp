// NATS JetStream through the NATS C client (Debian's libnats-dev): a connection with
// reconnects, durable pull consumers shared by every process that binds them (a work
// queue), messages acknowledged one by one, and publishing with a message id that
// JetStream's duplicate window recognises.
//
// Errors: Error(Unavailable) naming the servers or the stream when NATS cannot be
// reached, does not answer in time or refuses a request; Error(NotFound) when the
// stream or consumer does not exist; a fetch that finds nothing is not an error.
// Thread safety: a JetStream may be shared by threads (the C client locks); a
// PullConsumer and its Messages belong to one thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "runnel/core/mutex.hpp"

struct __natsConnection;
struct __natsSubscription;
struct __natsMsg;
struct __jsCtx;
struct jsPubAckErr;

namespace runnel::nats {

struct ConnectOptions {
  std::vector<std::string> servers;               // nats://host:port, tls://host:port
  std::string name;                               // shown by the server (monitoring)
  std::string credentials_file;                   // a .creds file (JWT and seed), optional
  std::string ca_file;                            // TLS: trusted certificates, optional
  std::string cert_file, key_file;                // TLS: a client certificate, optional
  std::chrono::milliseconds timeout{2000};        // connecting and each request
  std::chrono::milliseconds reconnect_wait{250};  // between attempts, forever
};

// One fetched message. Acknowledge it only once what it asked for is durable.
class Message {
 public:
  explicit Message(__natsMsg* msg);
  ~Message();
  Message(Message&& other) noexcept;
  Message& operator=(Message&& other) noexcept;
  Message(const Message&) = delete;
  Message& operator=(const Message&) = delete;

  std::string_view data() const;
  std::string_view subject() const;
  uint64_t stream_sequence() const { return sequence_; }
  uint64_t deliveries() const { return deliveries_; }  // 1 on the first delivery
  int64_t stored_at_ns() const { return stored_at_ns_; }  // when the stream stored it, ns since the epoch
  // The value of header `key`, or "" when the message has none.
  std::string Header(const std::string& key) const;

  void Ack();   // done: never delivered again
  void Nak();   // deliver again (another process may take it)
  void Term();  // never deliver again (a dead letter)

 private:
  __natsMsg* msg_;
  uint64_t sequence_ = 0;
  uint64_t deliveries_ = 0;
  int64_t stored_at_ns_ = 0;
};

// A message to publish: its subject, body and headers ("Nats-Msg-Id" lets the
// stream drop a copy it stored within its duplicate window).
struct OutgoingMessage {
  std::string subject;
  std::string data;
  std::vector<std::pair<std::string, std::string>> headers;
};

struct ConsumerInfo {
  uint64_t pending = 0;     // in the stream, not yet delivered to the consumer
  int64_t ack_pending = 0;  // delivered, not yet acknowledged
  int64_t redelivered = 0;  // delivered more than once, not yet acknowledged
};

class PullConsumer;

class JetStream {
 public:
  // Connects (retrying until options.timeout has passed).
  explicit JetStream(ConnectOptions options);
  ~JetStream();
  JetStream(const JetStream&) = delete;
  JetStream& operator=(const JetStream&) = delete;

  // Creates stream `name` on `subjects` (file storage, `replicas` copies) unless it
  // exists.
  void EnsureStream(const std::string& name, const std::vector<std::string>& subjects, int replicas = 1);
  // Publishes and waits for the stream's acknowledgement; returns the message's
  // stream sequence. A non-empty `msg_id` that the stream saw within its duplicate
  // window is not stored twice (the sequence is the first one's).
  uint64_t Publish(const std::string& subject, std::string_view data, const std::string& msg_id = "");
  // Publishes every message without waiting for each, then waits (up to the
  // timeout) until a stream has acknowledged storing each one. Throws
  // Error(Unavailable) naming a refusal or the missing acknowledgements; then some
  // may have been stored: publish them again with the same Nats-Msg-Id headers and
  // the stream drops the copies. Error(NotFound) when every refused message was one
  // no stream captures. Thread safety: one PublishAll at a time per JetStream.
  void PublishAll(std::span<const OutgoingMessage> messages);
  // Messages a consumer has delivered and not yet had acknowledged, at most.
  static constexpr int64_t kMaxAckPending = 10'000'000;
  // Binds (creating when absent) the durable pull consumer `durable` of `stream` on
  // `filter`. A message not acknowledged within `ack_wait` is delivered again; at most
  // kMaxAckPending are delivered and not yet acknowledged.
  std::unique_ptr<PullConsumer> Consume(const std::string& stream, const std::string& durable,
                                        const std::string& filter, std::chrono::milliseconds ack_wait);
  ConsumerInfo Info(const std::string& stream, const std::string& durable);
  // The stream capturing `subject`, if one does (the JetStream API's stream names
  // filtered by subject). Throws Error(Unavailable) when JetStream does not answer.
  std::optional<std::string> StreamFor(const std::string& subject);

  const std::string& servers() const { return servers_; }

 private:
  friend class PullConsumer;
  static void OnPublishError(__jsCtx* js, ::jsPubAckErr* error, void* self);
  void DropPending();

  ConnectOptions options_;
  std::string servers_;  // for messages
  __natsConnection* conn_ = nullptr;
  __jsCtx* js_ = nullptr;
  // Refused or unacknowledged asynchronous publishes (the client's thread counts
  // them), and the newest one's reason.
  std::atomic<uint64_t> publish_failures_{0};
  std::atomic<uint64_t> no_stream_failures_{0};  // of which: no stream captures the subject
  Mutex error_mutex_;
  std::string publish_error_ GUARDED_BY(error_mutex_);
  std::string no_stream_subject_ GUARDED_BY(error_mutex_);  // the newest with no responder
};

class PullConsumer {
 public:
  ~PullConsumer();
  PullConsumer(const PullConsumer&) = delete;
  PullConsumer& operator=(const PullConsumer&) = delete;

  // What one fetch holds at most: a batch of large messages is cut there (a message
  // is never larger: NATS caps max_payload at 64 MB).
  static constexpr int64_t kMaxFetchBytes = int64_t{64} << 20;

  // Up to `max` messages and `max_bytes` of them, waiting at most `wait` for the
  // first; empty when none came.
  std::vector<Message> Fetch(size_t max, std::chrono::milliseconds wait, int64_t max_bytes = kMaxFetchBytes);

 private:
  friend class JetStream;
  PullConsumer(__natsSubscription* sub, std::string stream) : sub_(sub), stream_(std::move(stream)) {}
  __natsSubscription* sub_;
  std::string stream_;
};

}  // namespace runnel::nats
