// The NATS C client's JetStream calls behind RAII (include/runnel/nats/jetstream.hpp).
#include "runnel/nats/jetstream.hpp"

#include <fmt/format.h>
#include <nats/nats.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <memory>
#include <utility>

#include "runnel/core/error.hpp"

namespace runnel::nats {

namespace {

// Throws Error(Unavailable, or NotFound for a stream or consumer that does not exist):
// what failed, the client's status text and, from JetStream, its error code.
void Check(natsStatus s, std::string_view what, jsErrCode js_error = static_cast<jsErrCode>(0)) {
  if (s == NATS_OK) return;
  const char* detail = nats_GetLastError(nullptr);
  std::string message = fmt::format("NATS: {}: {}", what, natsStatus_GetText(s));
  if (detail != nullptr && *detail != '\0' && std::string_view(detail) != natsStatus_GetText(s))
    message += fmt::format(" ({})", detail);
  if (js_error != 0) message += fmt::format(" (JetStream error {})", static_cast<int>(js_error));
  // What does not exist is not a passing failure (a node away, a leader being elected).
  const bool missing = s == NATS_NOT_FOUND || js_error == JSStreamNotFoundErr || js_error == JSConsumerNotFoundErr;
  throw Error(missing ? ErrorCode::NotFound : ErrorCode::Unavailable, message);
}

struct OptionsDeleter {
  void operator()(natsOptions* o) const { natsOptions_Destroy(o); }
};
struct MsgDeleter {
  void operator()(natsMsg* m) const { natsMsg_Destroy(m); }
};

std::string Join(const std::vector<std::string>& items) {
  return fmt::format("{}", fmt::join(items, ","));
}

}  // namespace

// ---- Message ----

Message::Message(natsMsg* msg) : msg_(msg) {
  jsMsgMetaData* meta = nullptr;
  if (natsMsg_GetMetaData(&meta, msg_) == NATS_OK && meta != nullptr) {
    sequence_ = meta->Sequence.Stream;
    deliveries_ = meta->NumDelivered;
    stored_at_ns_ = meta->Timestamp;
    jsMsgMetaData_Destroy(meta);
  }
}

Message::~Message() {
  if (msg_ != nullptr) natsMsg_Destroy(msg_);
}

Message::Message(Message&& other) noexcept
    : msg_(std::exchange(other.msg_, nullptr)),
      sequence_(other.sequence_),
      deliveries_(other.deliveries_),
      stored_at_ns_(other.stored_at_ns_) {}

Message& Message::operator=(Message&& other) noexcept {
  if (this != &other) {
    if (msg_ != nullptr) natsMsg_Destroy(msg_);
    msg_ = std::exchange(other.msg_, nullptr);
    sequence_ = other.sequence_;
    deliveries_ = other.deliveries_;
    stored_at_ns_ = other.stored_at_ns_;
  }
  return *this;
}

std::string_view Message::data() const {
  return {natsMsg_GetData(msg_), static_cast<size_t>(natsMsg_GetDataLength(msg_))};
}

std::string_view Message::subject() const {
  return natsMsg_GetSubject(msg_);
}

std::string Message::Header(const std::string& key) const {
  const char* value = nullptr;
  if (natsMsgHeader_Get(msg_, key.c_str(), &value) != NATS_OK || value == nullptr) return {};
  return value;
}

void Message::Ack() {
  Check(natsMsg_Ack(msg_, nullptr), fmt::format("acknowledging stream sequence {}", sequence_));
}

void Message::Nak() {
  Check(natsMsg_Nak(msg_, nullptr), fmt::format("returning stream sequence {}", sequence_));
}

void Message::Term() {
  Check(natsMsg_Term(msg_, nullptr), fmt::format("terminating stream sequence {}", sequence_));
}

// ---- JetStream ----

JetStream::JetStream(ConnectOptions options) : options_(std::move(options)), servers_(Join(options_.servers)) {
  if (options_.servers.empty()) throw Error(ErrorCode::Config, "NATS: no server URL given");
  natsOptions* raw = nullptr;
  Check(natsOptions_Create(&raw), "creating options");
  std::unique_ptr<natsOptions, OptionsDeleter> opts(raw);
  std::vector<const char*> urls;
  for (const auto& s : options_.servers) urls.push_back(s.c_str());
  Check(natsOptions_SetServers(opts.get(), urls.data(), static_cast<int>(urls.size())), "server URLs " + servers_);
  if (!options_.name.empty()) Check(natsOptions_SetName(opts.get(), options_.name.c_str()), "the name");
  Check(natsOptions_SetTimeout(opts.get(), options_.timeout.count()), "the timeout");
  Check(natsOptions_SetMaxReconnect(opts.get(), -1), "reconnects");
  Check(natsOptions_SetReconnectWait(opts.get(), options_.reconnect_wait.count()), "the reconnect wait");
  if (!options_.credentials_file.empty()) {
    Check(natsOptions_SetUserCredentialsFromFiles(opts.get(), options_.credentials_file.c_str(), nullptr),
          "credentials file " + options_.credentials_file);
  }
  const bool tls = !options_.ca_file.empty() || !options_.cert_file.empty();
  if (tls) Check(natsOptions_SetSecure(opts.get(), true), "TLS");
  if (!options_.ca_file.empty())
    Check(natsOptions_LoadCATrustedCertificates(opts.get(), options_.ca_file.c_str()), "CA file " + options_.ca_file);
  if (!options_.cert_file.empty()) {
    Check(natsOptions_LoadCertificatesChain(opts.get(), options_.cert_file.c_str(), options_.key_file.c_str()),
          "certificate " + options_.cert_file);
  }
  Check(natsConnection_Connect(&conn_, opts.get()), "connecting to " + servers_);
  jsOptions js_options;
  jsOptions_Init(&js_options);
  js_options.PublishAsync.ErrHandler = &JetStream::OnPublishError;
  js_options.PublishAsync.ErrHandlerClosure = this;
  const natsStatus s = natsConnection_JetStream(&js_, conn_, &js_options);
  if (s != NATS_OK) {
    natsConnection_Destroy(conn_);
    Check(s, "JetStream at " + servers_);
  }
}

JetStream::~JetStream() {
  if (js_ != nullptr) jsCtx_Destroy(js_);
  if (conn_ != nullptr) natsConnection_Destroy(conn_);
}

void JetStream::EnsureStream(const std::string& name, const std::vector<std::string>& subjects, int replicas) {
  jsStreamInfo* info = nullptr;
  jsErrCode error = static_cast<jsErrCode>(0);
  natsStatus s = js_GetStreamInfo(&info, js_, name.c_str(), nullptr, &error);
  if (s == NATS_OK) {
    jsStreamInfo_Destroy(info);
    return;
  }
  if (s != NATS_NOT_FOUND) Check(s, fmt::format("stream '{}' at {}", name, servers_), error);
  jsStreamConfig config;
  jsStreamConfig_Init(&config);
  config.Name = name.c_str();
  std::vector<const char*> subs;
  for (const auto& subject : subjects) subs.push_back(subject.c_str());
  config.Subjects = subs.data();
  config.SubjectsLen = static_cast<int>(subs.size());
  config.Storage = js_FileStorage;
  config.Replicas = replicas;
  s = js_AddStream(&info, js_, &config, nullptr, &error);
  Check(s, fmt::format("creating stream '{}' at {}", name, servers_), error);
  jsStreamInfo_Destroy(info);
}

uint64_t JetStream::Publish(const std::string& subject, std::string_view data, const std::string& msg_id) {
  jsPubOptions options;
  jsPubOptions_Init(&options);
  if (!msg_id.empty()) options.MsgId = msg_id.c_str();
  options.MaxWait = options_.timeout.count();
  jsPubAck* ack = nullptr;
  jsErrCode error = static_cast<jsErrCode>(0);
  Check(js_Publish(&ack, js_, subject.c_str(), data.data(), static_cast<int>(data.size()), &options, &error),
        fmt::format("publishing to '{}'", subject), error);
  const uint64_t sequence = ack->Sequence;
  jsPubAck_Destroy(ack);
  return sequence;
}

void JetStream::OnPublishError(jsCtx* /*js*/, jsPubAckErr* error, void* self) {
  auto* js = static_cast<JetStream*>(self);
  const char* subject = error->Msg != nullptr ? natsMsg_GetSubject(error->Msg) : "?";
  std::string reason = error->Err == NATS_NO_RESPONDERS
                           ? fmt::format("no stream captures '{}'", subject)
                           : fmt::format("publishing to '{}': {}", subject,
                                         error->ErrText != nullptr ? error->ErrText : natsStatus_GetText(error->Err));
  {
    MutexLock lock(js->error_mutex_);
    js->publish_error_ = std::move(reason);
    if (error->Err == NATS_NO_RESPONDERS) js->no_stream_subject_ = subject;
  }
  if (error->Err == NATS_NO_RESPONDERS) js->no_stream_failures_.fetch_add(1);
  js->publish_failures_.fetch_add(1);
}

// Forgets the publishes still waiting for acknowledgements (theirs, arriving later,
// are dropped by the client).
void JetStream::DropPending() {
  natsMsgList pending{};
  if (js_PublishAsyncGetPendingList(&pending, js_) == NATS_OK) natsMsgList_Destroy(&pending);
}

void JetStream::PublishAll(std::span<const OutgoingMessage> messages) {
  const uint64_t failures_before = publish_failures_.load();
  const uint64_t no_stream_before = no_stream_failures_.load();
  for (const auto& m : messages) {
    natsMsg* msg = nullptr;
    Check(natsMsg_Create(&msg, m.subject.c_str(), nullptr, m.data.data(), static_cast<int>(m.data.size())),
          fmt::format("a message to '{}'", m.subject));
    std::unique_ptr<natsMsg, MsgDeleter> owned(msg);
    for (const auto& [key, value] : m.headers)
      Check(natsMsgHeader_Set(msg, key.c_str(), value.c_str()), fmt::format("header {}", key));
    natsMsg* handed = owned.release();
    const natsStatus s = js_PublishMsgAsync(js_, &handed, nullptr);
    natsMsg_Destroy(handed);  // null once the client took it
    if (s != NATS_OK) {
      DropPending();
      Check(s, fmt::format("publishing to '{}'", m.subject));
    }
  }
  jsPubOptions options;
  jsPubOptions_Init(&options);
  options.MaxWait = options_.timeout.count();
  const natsStatus s = js_PublishAsyncComplete(js_, &options);
  if (s != NATS_OK) {
    DropPending();
    Check(s, fmt::format("waiting for a stream to acknowledge {} message(s) at {}", messages.size(), servers_));
  }
  const uint64_t failures = publish_failures_.load() - failures_before;
  if (failures != 0) {
    std::string subject;
    {
      MutexLock lock(error_mutex_);
      subject = no_stream_subject_;
    }
    // No responder also while a stream's replicas elect a leader: only a subject no
    // stream captures is NotFound.
    const bool no_stream = no_stream_failures_.load() - no_stream_before == failures && !StreamFor(subject);
    MutexLock lock(error_mutex_);
    throw Error(
        no_stream ? ErrorCode::NotFound : ErrorCode::Unavailable,
        fmt::format("NATS: {} of {} message(s) not stored, the last: {}", failures, messages.size(), publish_error_));
  }
}

std::optional<std::string> JetStream::StreamFor(const std::string& subject) {
  const std::string request = nlohmann::json{{"subject", subject}}.dump();
  natsMsg* reply = nullptr;
  Check(natsConnection_Request(&reply, conn_, "$JS.API.STREAM.NAMES", request.data(), static_cast<int>(request.size()),
                               options_.timeout.count()),
        fmt::format("which stream captures '{}' at {}", subject, servers_));
  const std::unique_ptr<natsMsg, MsgDeleter> owned(reply);
  const auto body = nlohmann::json::parse(
      std::string_view(natsMsg_GetData(reply), static_cast<size_t>(natsMsg_GetDataLength(reply))), nullptr, false);
  if (body.is_discarded() || !body.is_object()) {
    throw Error(ErrorCode::Unavailable,
                fmt::format("NATS: which stream captures '{}': not a JetStream answer", subject));
  }
  if (body.contains("error")) {
    throw Error(ErrorCode::Unavailable,
                fmt::format("NATS: which stream captures '{}': {}", subject, body["error"].dump()));
  }
  const auto streams = body.find("streams");
  if (streams == body.end() || !streams->is_array() || streams->empty() || !streams->front().is_string())
    return std::nullopt;
  return streams->front().get<std::string>();
}

std::unique_ptr<PullConsumer> JetStream::Consume(const std::string& stream, const std::string& durable,
                                                 const std::string& filter, std::chrono::milliseconds ack_wait) {
  jsSubOptions options;
  jsSubOptions_Init(&options);
  options.Stream = stream.c_str();
  options.Config.AckPolicy = js_AckExplicit;
  options.Config.AckWait = std::chrono::duration_cast<std::chrono::nanoseconds>(ack_wait).count();
  // Each process holds a batch until its commit: a cap far above what they hold
  // together (the server's default, 1,000, would idle processes behind each other's
  // batches; -1, unlimited, is not sent by the C client).
  options.Config.MaxAckPending = kMaxAckPending;
  natsSubscription* sub = nullptr;
  jsErrCode error = static_cast<jsErrCode>(0);
  Check(js_PullSubscribe(&sub, js_, filter.c_str(), durable.c_str(), nullptr, &options, &error),
        fmt::format("consumer '{}' of stream '{}' on '{}' at {}", durable, stream, filter, servers_), error);
  return std::unique_ptr<PullConsumer>(new PullConsumer(sub, stream));
}

ConsumerInfo JetStream::Info(const std::string& stream, const std::string& durable) {
  jsConsumerInfo* info = nullptr;
  jsErrCode error = static_cast<jsErrCode>(0);
  Check(js_GetConsumerInfo(&info, js_, stream.c_str(), durable.c_str(), nullptr, &error),
        fmt::format("consumer '{}' of stream '{}'", durable, stream), error);
  ConsumerInfo out{info->NumPending, info->NumAckPending, info->NumRedelivered};
  jsConsumerInfo_Destroy(info);
  return out;
}

// ---- PullConsumer ----

PullConsumer::~PullConsumer() {
  // Destroy, not Unsubscribe: the durable consumer stays for the other processes.
  natsSubscription_Destroy(sub_);
}

namespace {

// How long a no-wait pull request may take: the client waits for the request's end
// even when the server has sent fewer messages than asked.
constexpr int64_t kNoWaitMs = 20;

// One pull request: up to `batch` messages; `no_wait`: only those there now.
natsStatus FetchOnce(natsSubscription* sub, natsMsgList& list, int batch, int64_t max_bytes,
                     std::chrono::milliseconds wait, bool no_wait) {
  jsFetchRequest request;
  jsFetchRequest_Init(&request);
  request.Batch = batch;
  request.MaxBytes = max_bytes;
  request.NoWait = no_wait;
  request.Expires = std::chrono::duration_cast<std::chrono::nanoseconds>(wait).count();
  return natsSubscription_FetchRequest(&list, sub, &request);
}

// Moves the messages of `list` into `out`, then frees the list.
void MoveInto(natsMsgList& list, std::vector<Message>& out) {
  for (int i = 0; i < list.Count; ++i) {
    out.emplace_back(list.Msgs[i]);
    list.Msgs[i] = nullptr;  // owned by `out` now
  }
  natsMsgList_Destroy(&list);
}

// Takes messages of earlier pull requests that came after the client stopped waiting
// for them, one per call: libnats 3.4.1's fetch writes past its array when such
// leftovers fill more than half of a larger batch (fixed upstream, nats.c #749; not in
// Debian 12). A batch of one cannot overrun.
void TakeLeftovers(natsSubscription* sub, size_t max, int64_t max_bytes, std::vector<Message>& out) {
  int pending = 0;
  int bytes = 0;
  while (out.size() < max && natsSubscription_GetPending(sub, &pending, &bytes) == NATS_OK && pending > 0) {
    natsMsgList list{};
    if (FetchOnce(sub, list, 1, max_bytes, std::chrono::milliseconds(kNoWaitMs), true) != NATS_OK) break;
    MoveInto(list, out);
  }
}

}  // namespace

// Leftovers first; then what is there now, up to `max`; when nothing is, a long poll
// for one message (the next call takes what came after it). A plain fetch of `max`
// would wait until `max` messages came or the wait ended: consumers sharing a stream
// would each wait it out.
std::vector<Message> PullConsumer::Fetch(size_t max, std::chrono::milliseconds wait, int64_t max_bytes) {
  std::vector<Message> out;
  TakeLeftovers(sub_, max, max_bytes, out);
  if (out.size() >= max) return out;
  const int batch = static_cast<int>(std::min<size_t>(max - out.size(), 1'000'000));
  for (const bool poll : {false, true}) {
    if (poll && !out.empty()) break;
    natsMsgList list{};
    const natsStatus s =
        FetchOnce(sub_, list, poll ? 1 : batch, max_bytes, poll ? wait : std::chrono::milliseconds(kNoWaitMs), !poll);
    if (s == NATS_TIMEOUT || s == NATS_NOT_FOUND) continue;  // nothing there (now, or within the wait)
    Check(s, fmt::format("fetching from stream '{}'", stream_));
    MoveInto(list, out);
  }
  return out;
}

}  // namespace runnel::nats
