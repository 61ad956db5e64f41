// NATS JetStream through the NATS C client (Debian's libnats-dev): a connection with
// reconnects, durable pull consumers shared by every process that binds them (a work
// queue), messages acknowledged one by one, and publishing with a message id that
// JetStream's duplicate window recognises.
//
// Errors: Error(Unavailable) naming the servers or the stream when NATS cannot be
// reached or refuses a request; a fetch that finds nothing is not an error.
// Thread safety: a JetStream may be shared by threads (the C client locks); a
// PullConsumer and its Messages belong to one thread.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

struct __natsConnection;
struct __natsSubscription;
struct __natsMsg;
struct __jsCtx;

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
  // The value of header `key`, or "" when the message has none.
  std::string Header(const std::string& key) const;

  void Ack();   // done: never delivered again
  void Nak();   // deliver again (another process may take it)
  void Term();  // never deliver again (a dead letter)

 private:
  __natsMsg* msg_;
  uint64_t sequence_ = 0;
  uint64_t deliveries_ = 0;
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
  // Publishes without waiting for a stream's acknowledgement (Flush to know the
  // server has it). `header`/`value`: one header, when not empty ("Nats-Msg-Id" lets a
  // stream capturing the subject drop a duplicate).
  void PublishCore(const std::string& subject, std::string_view data, const std::string& header = "",
                   const std::string& value = "");
  // Returns once the server has received everything published before.
  void Flush();
  // Binds (creating when absent) the durable pull consumer `durable` of `stream` on
  // `filter`. A message not acknowledged within `ack_wait` is delivered again; there is
  // no cap on the messages delivered and not yet acknowledged.
  std::unique_ptr<PullConsumer> Consume(const std::string& stream, const std::string& durable,
                                        const std::string& filter, std::chrono::milliseconds ack_wait);
  ConsumerInfo Info(const std::string& stream, const std::string& durable);

  const std::string& servers() const { return servers_; }

 private:
  friend class PullConsumer;
  ConnectOptions options_;
  std::string servers_;  // for messages
  __natsConnection* conn_ = nullptr;
  __jsCtx* js_ = nullptr;
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
