#include "http_transport.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <latch>
#include <limits>
#include <memory>
#include <thread>
#include <vector>

#include "runnel/core/error.hpp"
#include "runnel/core/thread_name.hpp"

namespace runnel::server {

namespace beast = boost::beast;
namespace http = beast::http;
namespace net = boost::asio;
namespace ssl = net::ssl;
using tcp = net::ip::tcp;
using TlsStream = beast::ssl_stream<beast::tcp_stream>;
using Clock = std::chrono::steady_clock;

namespace {

// A reservation of request memory, returned when destroyed.
class MemoryBudget {
 public:
  explicit MemoryBudget(size_t limit) : limit_(limit) {}

  bool TryReserve(size_t bytes) {
    size_t used = used_.load();
    do {
      if (used + bytes > limit_) return false;
    } while (!used_.compare_exchange_weak(used, used + bytes));
    return true;
  }
  void Release(size_t bytes) { used_.fetch_sub(bytes); }
  size_t used() const { return used_.load(); }

 private:
  const size_t limit_;
  std::atomic<size_t> used_{0};
};

// A counter of things in use (connections, wait slots) with a cap.
class Slots {
 public:
  explicit Slots(size_t limit) : limit_(limit) {}
  bool TryTake() {
    if (used_.fetch_add(1) < limit_) return true;
    used_.fetch_sub(1);
    return false;
  }
  void Give() { used_.fetch_sub(1); }
  size_t used() const { return used_.load(); }

 private:
  const size_t limit_;
  std::atomic<size_t> used_{0};
};

std::string SpoolDir(const std::string& configured) {
  if (!configured.empty()) return configured;
  const char* tmp = std::getenv("TMPDIR");
  return tmp != nullptr && *tmp != '\0' ? tmp : "/tmp";
}

std::string Message(int status, const std::string& text) {
  HttpResponse res;
  ReplyError(res, {status, text});
  return res.body;
}

// Names each of a pool's `threads` threads: one task per thread, each held until all
// have started, so that no thread takes two. (Asio's pools have no per-thread start
// hook.)
void NameThreads(net::thread_pool& pool, size_t threads, std::string_view name) {
  auto started = std::make_shared<std::latch>(static_cast<std::ptrdiff_t>(threads));
  for (size_t i = 0; i < threads; ++i) {
    net::post(pool, [started, name] {
      NameThisThread(name);
      started->arrive_and_wait();
    });
  }
  started->wait();
}

}  // namespace

struct HttpTransport::Impl {
  Impl(TransportLimits l, const Router& r, Metrics* m, Authorizer a, std::shared_ptr<spdlog::logger> log)
      : limits(l),
        router(r),
        metrics(m),
        authorize(std::move(a)),
        access_log(std::move(log)),
        memory(l.max_request_memory),
        spool(l.max_spool_bytes),
        spool_dir(SpoolDir(l.spool_dir)),
        connections(l.max_connections),
        waits(l.wait_slots),
        handler_pool(l.handler_threads),
        wait_pool(l.wait_slots) {
    NameThreads(handler_pool, l.handler_threads, "http-handler");
    NameThreads(wait_pool, l.wait_slots, "http-wait");
  }

  TransportLimits limits;
  const Router& router;
  Metrics* metrics;
  Authorizer authorize;
  std::shared_ptr<spdlog::logger> access_log;
  MemoryBudget memory;
  MemoryBudget spool;  // bytes in spooled bodies (disk)
  const std::string spool_dir;
  Slots connections;
  Slots waits;
  // Sessions hold a plain pointer to this object: the io_context below destroys the
  // sessions it still holds when it is destroyed, while the members above still live.
  net::io_context ioc{static_cast<int>(limits.io_threads)};
  std::optional<tcp::acceptor> acceptor;
  std::optional<ssl::context> tls;  // set: every connection speaks HTTPS
  net::thread_pool handler_pool;
  net::thread_pool wait_pool;
  std::vector<std::thread> io_threads;
  std::atomic<size_t> in_flight{0};  // requests read and not yet answered
  std::atomic<bool> stopping{false};

  void Accept();
  void RefuseConnection(tcp::socket socket);
};

namespace {

using ImplPtr = HttpTransport::Impl*;

// One connection: reads a head, then (if the route and the limits allow) the body,
// hands the request to a pool, writes the reply, and again while kept alive.
// `Stream` is beast::tcp_stream (HTTP) or TlsStream (HTTPS: a handshake first, under
// the head's deadline).
template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
 public:
  static constexpr bool kTls = std::is_same_v<Stream, TlsStream>;

  Session(tcp::socket socket, ImplPtr transport)
      : stream_(MakeStream(std::move(socket), transport)),
        t_(transport),
        buffer_(t_->limits.max_header_bytes + (256 << 10)) {
    beast::error_code ec;
    const auto peer = Tcp().socket().remote_endpoint(ec);
    client_ = ec ? "?" : peer.address().to_string();
  }
  ~Session() { t_->connections.Give(); }

  void Start() {
    if constexpr (kTls) {
      Tcp().expires_after(t_->limits.head_timeout);
      stream_.async_handshake(ssl::stream_base::server, [self = this->shared_from_this()](beast::error_code ec) {
        if (ec) return self->Close();  // not TLS, or too slow: nothing to answer
        self->ReadHead();
      });
    } else {
      ReadHead();
    }
  }

 private:
  // What one request holds between its head and its reply.
  struct Exchange {
    HttpRequest request;
    HttpResponse response;
    const Route* route = nullptr;
    PathParams params;
    std::string route_name = "unmatched";
    std::string target;
    Clock::time_point started;
    size_t reserved = 0;  // request memory
    size_t spooled = 0;   // spool space
    bool wait_slot = false;
    bool keep_alive = false;
  };

  static Stream MakeStream(tcp::socket socket, ImplPtr transport) {
    if constexpr (kTls) {
      return Stream(std::move(socket), *transport->tls);
    } else {
      return Stream(std::move(socket));
    }
  }

  beast::tcp_stream& Tcp() { return beast::get_lowest_layer(stream_); }

  void ReadHead() {
    spool_parser_.reset();
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(t_->limits.max_header_bytes));
    // The route's limit is set once the head names the route (AdmitBody); until then
    // a declared length is not judged by the parser's 1 MB default.
    parser_->body_limit(std::numeric_limits<std::uint64_t>::max());
    Tcp().expires_after(t_->limits.head_timeout);
    http::async_read_header(stream_, buffer_, *parser_,
                            beast::bind_front_handler(&Session::OnHead, this->shared_from_this()));
  }

  void OnHead(beast::error_code ec, size_t) {
    if (ec) return OnHeadError(ec);
    BeginExchange();
    const auto& head = parser_->get();
    ex_->keep_alive = head.keep_alive();
    ex_->request.method = std::string(head.method_string());
    ex_->target = std::string(head.target());
    size_t count = 0;
    for (const auto& field : head) {
      if (++count > t_->limits.max_header_count) {
        return Fail(431, fmt::format("more than {} header fields", t_->limits.max_header_count));
      }
      ex_->request.headers.emplace_back(std::string(field.name_string()), std::string(field.value()));
    }
    try {
      ParseTarget(ex_->target, ex_->request);
    } catch (const HttpError& e) {
      return Finish(e);
    }
    std::string allow;
    ex_->route = t_->router.Find(ex_->request, ex_->params, allow);
    if (ex_->route == nullptr) return Finish(NoRouteError(ex_->request, allow, ex_->response));
    ex_->route_name = ex_->route->name;
    if (t_->authorize) {
      if (auto refused = t_->authorize(ex_->request, *ex_->route)) {
        ex_->route_name = refused->status == 401 ? "unauthorized" : "forbidden";
        if (refused->status == 401) ex_->response.SetHeader("WWW-Authenticate", "Bearer");
        return Finish(*refused);
      }
    }
    AdmitBody();
  }

  void BeginExchange() {
    ex_ = std::make_unique<Exchange>();
    ex_->started = Clock::now();
    ex_->request.client = client_;
    t_->in_flight.fetch_add(1);
  }

  void OnHeadError(beast::error_code ec) {
    if (ec == http::error::header_limit) {
      BeginExchange();
      return Fail(431, fmt::format("the request head is larger than {} bytes", t_->limits.max_header_bytes));
    }
    if (ec == beast::error::timeout && parser_->got_some()) {
      spdlog::debug("http {}: the request head took longer than {} ms: closed", client_,
                    t_->limits.head_timeout.count());
    }
    // A head that is not HTTP is answered; end of stream, an idle keep-alive timeout,
    // a slow head's deadline or a reset close the connection.
    const bool malformed = ec.category() == make_error_code(http::error::bad_target).category() &&
                           ec != http::error::end_of_stream && ec != http::error::partial_message;
    if (!malformed) return Close();
    BeginExchange();
    Fail(400, fmt::format("malformed HTTP request: {}", ec.message()));
  }

  // Limits that can be checked before the body: its declared size, request memory,
  // wait slots. Then 100 Continue when asked, then the body.
  size_t BodyLimit() const {
    return ex_->route->options.max_body_bytes > 0 ? ex_->route->options.max_body_bytes : t_->limits.max_body_bytes;
  }

  void AdmitBody() {
    const size_t limit = BodyLimit();
    const auto length = parser_->content_length();
    if (length && *length > limit) {
      return Fail(413, fmt::format("the body ({} bytes) is larger than the {} bytes {} accepts", *length, limit,
                                   ex_->route->name));
    }
    const bool spool = ex_->route->options.spool_body;
    if (length && spool && !ReserveSpool(*length)) return Busy("bodies being spooled");
    if (length && !spool && !Reserve(*length)) return Busy("request memory");
    const Lane lane = ex_->route->LaneFor(ex_->request);
    if (lane == Lane::kWait) {
      if (!t_->waits.TryTake()) return Busy("requests waiting for results");
      ex_->wait_slot = true;
    }
    parser_->body_limit(limit);
    if (parser_->is_done()) return Dispatch();
    if (spool && !StartSpool(limit)) return;
    const auto expect = ex_->request.Header("Expect");
    if (expect && EqualsIgnoreCase(*expect, "100-continue")) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      Tcp().expires_after(t_->limits.write_timeout);
      net::async_write(stream_, net::buffer(kContinue.data(), kContinue.size()),
                       [self = this->shared_from_this()](beast::error_code ec, size_t) {
                         if (ec) return self->Abandon();
                         self->ReadBody();
                       });
      return;
    }
    ReadBody();
  }

  bool Reserve(size_t bytes) {
    if (!t_->memory.TryReserve(bytes)) return false;
    ex_->reserved += bytes;
    return true;
  }

  bool ReserveSpool(size_t bytes) {
    if (!t_->spool.TryReserve(bytes)) return false;
    ex_->spooled += bytes;
    return true;
  }

  // Moves the body's parsing to a parser that writes it to an unnamed temporary file.
  // False when that file cannot be made (answered 500).
  bool StartSpool(uint64_t limit) {
    const int fd = BodyFile::OpenSpool(t_->spool_dir);
    if (fd < 0) {
      spdlog::error("http: cannot create a temporary file in {} for a {} body: {}", t_->spool_dir, ex_->route->name,
                    std::strerror(errno));
      Fail(500, "cannot store the body: no temporary file");
      return false;
    }
    beast::file file;
    file.native_handle(fd);
    spool_parser_.emplace(std::move(*parser_));
    beast::error_code ec;
    spool_parser_->get().body().reset(std::move(file), ec);
    spool_parser_->body_limit(limit);
    return true;
  }

  bool BodyDone() const { return spool_parser_ ? spool_parser_->is_done() : parser_->is_done(); }

  void ReadBody() {
    if (body_deadline_ == Clock::time_point{}) {
      body_deadline_ = Clock::now() + t_->limits.body_timeout;
      Tcp().expires_at(body_deadline_);
    }
    auto on_body = beast::bind_front_handler(&Session::OnBody, this->shared_from_this());
    if (spool_parser_) return http::async_read_some(stream_, buffer_, *spool_parser_, std::move(on_body));
    http::async_read_some(stream_, buffer_, *parser_, std::move(on_body));
  }

  // Bytes of body read so far.
  size_t BodySize() {
    if (!spool_parser_) return parser_->get().body().size();
    beast::error_code ec;
    const auto size = spool_parser_->get().body().file().size(ec);
    return ec ? 0 : static_cast<size_t>(size);
  }

  void OnBody(beast::error_code ec, size_t) {
    if (ec == http::error::body_limit) {
      return Fail(413, fmt::format("the body is larger than the {} bytes {} accepts", BodyLimit(), ex_->route->name));
    }
    if (ec == beast::error::timeout) return Fail(408, "the body was not received in time");
    if (ec) return Abandon();
    // Chunked bodies grow with no size declared: reserve as they grow.
    const size_t size = BodySize();
    if (spool_parser_) {
      if (size > ex_->spooled && !ReserveSpool(size - ex_->spooled)) return Busy("bodies being spooled");
    } else if (size > ex_->reserved && !Reserve(size - ex_->reserved)) {
      return Busy("request memory");
    }
    if (!BodyDone()) return ReadBody();
    Dispatch();
  }

  // The spooled body as a mapped file, or false (answered) when it cannot be.
  bool TakeSpooledBody() {
    auto& file = spool_parser_->get().body().file();
    const size_t size = BodySize();
    const int fd = ::dup(file.native_handle());
    try {
      if (fd < 0) throw Error(ErrorCode::Io, fmt::format("dup: {}", std::strerror(errno)));
      ex_->request.body_file = std::make_shared<const BodyFile>(fd, size);
    } catch (const Error& e) {
      spdlog::error("http: a spooled {} body: {}", ex_->route->name, e.what());
      Fail(500, "cannot read the stored body");
      return false;
    }
    return true;  // spool_parser_ stays (BodyDone) until the next head; its descriptor is closed then
  }

  void Dispatch() {
    body_deadline_ = {};
    if (spool_parser_) {
      if (!TakeSpooledBody()) return;
    } else {
      ex_->request.body = std::move(parser_->get().body());
    }
    Tcp().expires_never();  // the handler may take long (?wait): no socket deadline meanwhile
    const Lane lane = ex_->route->LaneFor(ex_->request);
    auto run = [self = this->shared_from_this()] {
      Router::Run(*self->ex_->route, self->ex_->request, self->ex_->response, self->ex_->params);
      self->AfterHandler(false);
    };
    switch (lane) {
      case Lane::kInline: Router::Run(*ex_->route, ex_->request, ex_->response, ex_->params); return AfterHandler(true);
      case Lane::kHandler: return net::post(t_->handler_pool, std::move(run));
      case Lane::kWait: return net::post(t_->wait_pool, std::move(run));
    }
  }

  // The reply a handler deferred, given later from any thread.
  class Deferred final : public Responder {
   public:
    explicit Deferred(std::shared_ptr<Session> session) : session_(std::move(session)) {}
    ~Deferred() override {
      HttpResponse res;
      ReplyError(res, {500, "internal error: the handler gave no reply"});
      Give(std::move(res));
    }
    void Send(HttpResponse response) override { Give(std::move(response)); }

   private:
    void Give(HttpResponse response) {
      if (sent_.exchange(true)) return;
      net::post(session_->stream_.get_executor(), [s = session_, r = std::move(response)]() mutable {
        s->ex_->response = std::move(r);
        s->Write();
      });
    }
    std::shared_ptr<Session> session_;
    std::atomic<bool> sent_{false};
  };

  // After the handler ran (on the strand when `on_strand`): reply now, or hand the
  // deferred step its responder (ex_ is not touched once it has it).
  void AfterHandler(bool on_strand) {
    if (auto deferred = std::move(ex_->response.deferred)) {
      ex_->response.deferred = nullptr;
      HttpRequest named;  // for the log: ex_ may be gone once the responder answered
      named.method = ex_->request.method;
      named.path = ex_->request.path;
      auto responder = std::make_shared<Deferred>(this->shared_from_this());
      try {
        deferred(responder);
      } catch (...) {
        HttpResponse error;
        ReplyException(error, std::current_exception(), named);
        responder->Send(std::move(error));  // ignored when it had answered
      }
      return;
    }
    if (on_strand) return Write();
    net::post(stream_.get_executor(), [self = this->shared_from_this()] { self->Write(); });
  }

  // 503 with Retry-After: a limit shared by all clients is reached.
  void Busy(const std::string& what) {
    ex_->response.SetHeader("Retry-After", "1");
    Fail(503, fmt::format("too many {}: retry later", what));
  }

  // An answer before or instead of reading the whole body: the connection closes.
  void Fail(int status, const std::string& message) {
    ex_->keep_alive = false;
    Finish({status, message});
  }

  void Finish(const HttpError& error) {
    if (!BodyDone()) ex_->keep_alive = false;  // an unread body: close after the reply
    ReplyError(ex_->response, error);
    Write();
  }

  void Write() {
    if (ex_->response.stream) return StartStream();
    auto& res = ex_->response;
    response_.emplace(static_cast<http::status>(res.status), 11);
    response_->set(http::field::content_type, res.content_type);
    for (const auto& [name, value] : res.headers) response_->set(name, value);
    const bool keep_alive = ex_->keep_alive && !t_->stopping.load();
    response_->keep_alive(keep_alive);
    response_->body() = std::move(res.body);
    response_->prepare_payload();
    if (ex_->request.method == "HEAD") response_->body().clear();  // Content-Length stays that of GET
    Record();
    Tcp().expires_after(t_->limits.write_timeout);
    http::async_write(stream_, *response_, [self = this->shared_from_this(), keep_alive](beast::error_code ec, size_t) {
      self->Done();
      if (ec) return self->Close();
      if (!keep_alive) return self->Linger();
      self->ReadHead();
    });
  }

  void Record() {
    const double seconds = std::chrono::duration<double>(Clock::now() - ex_->started).count();
    const int status = ex_->response.status;
    if (t_->metrics != nullptr) t_->metrics->RecordHttp(ex_->route_name, status, seconds);
    if (t_->access_log) {
      const std::string& key = ex_->request.access.key_id;
      t_->access_log->info("{} \"{} {}\" {} {} {:.3f}{}{}", client_, ex_->request.method, ex_->target, status,
                           response_->body().size(), seconds * 1000, key.empty() ? "" : " key=", key);
    }
  }

  // The exchange is over: give back what it held.
  void Done() {
    if (!ex_) return;
    t_->memory.Release(ex_->reserved);
    t_->spool.Release(ex_->spooled);
    if (ex_->wait_slot) t_->waits.Give();
    t_->in_flight.fetch_sub(1);
    ex_.reset();
    response_.reset();
  }

  // A read failed mid-body: nothing can be answered.
  void Abandon() {
    Done();
    Close();
  }

  // After a reply that closes the connection while the client may still be sending:
  // stop sending, read and drop what comes for up to a second, then close, so that
  // the reply is not lost to a reset.
  void Linger() {
    beast::error_code ec;
    Tcp().socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return Close();
    if (linger_deadline_ == Clock::time_point{}) {
      linger_deadline_ = Clock::now() + std::chrono::seconds(1);
      Tcp().expires_at(linger_deadline_);
    }
    stream_.async_read_some(net::buffer(drain_),
                            [self = this->shared_from_this()](beast::error_code read_error, size_t) {
                              if (read_error) return self->Close();
                              self->Linger();
                            });
  }

  void Close() {
    if (ex_) Done();
    beast::error_code ec;
    Tcp().socket().shutdown(tcp::socket::shutdown_both, ec);
    Tcp().close();
  }

  // ---- streamed responses (Server-Sent Events) ----

  class Sink : public StreamSink {
   public:
    Sink(std::weak_ptr<Session> session, net::any_io_executor executor)
        : session_(std::move(session)), executor_(std::move(executor)) {}

    bool Write(std::string bytes) override {
      if (closed_.load()) return false;
      if (backlog_.fetch_add(bytes.size()) + bytes.size() > kMaxBacklog) {
        Close();
        return false;
      }
      net::post(executor_, [session = session_, bytes = std::move(bytes)]() mutable {
        if (auto s = session.lock()) s->QueueOut(std::move(bytes));
      });
      return true;
    }
    void Close() override {
      if (closed_.exchange(true)) return;
      net::post(executor_, [session = session_] {
        if (auto s = session.lock()) s->EndStream();
      });
    }
    size_t backlog() const override { return backlog_.load(); }
    void Sent(size_t bytes) { backlog_.fetch_sub(bytes); }
    void MarkClosed() { closed_ = true; }

   private:
    // The hard cap: streams pace themselves by backlog() well below it; a client
    // whose stream does not is dropped rather than buffered without bound.
    static constexpr size_t kMaxBacklog = 16 << 20;
    std::weak_ptr<Session> session_;
    net::any_io_executor executor_;
    std::atomic<size_t> backlog_{0};
    std::atomic<bool> closed_{false};
  };

  void StartStream() {
    auto stream = std::move(ex_->response.stream);
    std::string head = fmt::format(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nCache-Control: no-cache\r\nConnection: close\r\n", ex_->response.status,
        std::string(http::obsolete_reason(static_cast<http::status>(ex_->response.status))),
        ex_->response.content_type);
    for (const auto& [name, value] : ex_->response.headers) head += fmt::format("{}: {}\r\n", name, value);
    head += "\r\n";
    response_.emplace();  // for Record's byte count
    Record();
    Done();
    // The read that notices the client leaving starts first, with no deadline: a
    // pending read keeps the expiry it started with (the writes' deadlines below must
    // not become its own).
    Tcp().expires_never();
    sink_ = std::make_shared<Sink>(this->weak_from_this(), stream_.get_executor());
    WatchClose();
    QueueOut(std::move(head), /*counted=*/false);
    stream->Start(sink_);
  }

  // A streamed response's client sends nothing more: a read ends when it closes.
  void WatchClose() {
    stream_.async_read_some(net::buffer(drain_), [self = this->shared_from_this()](beast::error_code ec, size_t) {
      if (!ec) return self->WatchClose();
      self->sink_->MarkClosed();
      self->Close();
    });
  }

  void QueueOut(std::string bytes, bool counted = true) {
    out_.push_back({std::move(bytes), counted});
    if (out_.size() == 1) WriteNext();
  }

  void WriteNext() {
    Tcp().expires_after(t_->limits.write_timeout);
    net::async_write(stream_, net::buffer(out_.front().first),
                     [self = this->shared_from_this()](beast::error_code ec, size_t) {
                       if (self->out_.front().second) self->sink_->Sent(self->out_.front().first.size());
                       self->out_.pop_front();
                       if (ec) {
                         self->sink_->MarkClosed();
                         return self->Close();
                       }
                       if (!self->out_.empty()) return self->WriteNext();
                       if (self->ending_) return self->Close();
                       self->Tcp().expires_never();
                     });
  }

  void EndStream() {
    ending_ = true;
    if (out_.empty()) Close();
  }

  Stream stream_;
  ImplPtr t_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  std::optional<http::request_parser<http::file_body>> spool_parser_;  // set while a body is spooled
  std::optional<http::response<http::string_body>> response_;
  std::unique_ptr<Exchange> ex_;
  std::string client_;
  Clock::time_point body_deadline_{};
  Clock::time_point linger_deadline_{};
  std::array<char, 4096> drain_{};
  std::shared_ptr<Sink> sink_;                    // a streamed response's
  std::deque<std::pair<std::string, bool>> out_;  // its pending writes (bytes, counted in the backlog)
  bool ending_ = false;
};

}  // namespace

void HttpTransport::Impl::Accept() {
  acceptor->async_accept(net::make_strand(ioc), [self = this](beast::error_code ec, tcp::socket socket) {
    if (ec) {
      if (ec == net::error::operation_aborted || self->stopping.load()) return;
      // Out of file descriptors and the like: keep accepting once it passes.
      spdlog::warn("http: accept: {}", ec.message());
    } else if (!self->connections.TryTake()) {
      self->RefuseConnection(std::move(socket));
    } else {
      if (self->tls) {
        std::make_shared<Session<TlsStream>>(std::move(socket), self)->Start();
      } else {
        std::make_shared<Session<beast::tcp_stream>>(std::move(socket), self)->Start();
      }
    }
    self->Accept();
  });
}

// Over the connection limit: one non-blocking write of a complete 503 and close, on
// the accepting thread, costing the server nothing more.
void HttpTransport::Impl::RefuseConnection(tcp::socket socket) {
  const std::string body = Message(503, "too many connections: retry later");
  const std::string reply = fmt::format(
      "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\n"
      "Retry-After: 1\r\nConnection: close\r\n\r\n{}",
      body.size(), body);
  beast::error_code ec;
  socket.non_blocking(true, ec);
  socket.write_some(net::buffer(reply), ec);
  socket.shutdown(tcp::socket::shutdown_both, ec);
  socket.close(ec);
  if (metrics != nullptr) metrics->RecordHttp("refused", 503, 0);
}

HttpTransport::HttpTransport(TransportLimits limits, const Router& router, Metrics* metrics, Authorizer authorize,
                             std::shared_ptr<spdlog::logger> access_log)
    : impl_(std::make_unique<Impl>(limits, router, metrics, std::move(authorize), std::move(access_log))) {}

HttpTransport::~HttpTransport() {
  Stop();
}

void HttpTransport::UseTls(const std::string& cert_file, const std::string& key_file) {
  ssl::context context(ssl::context::tls_server);
  context.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 | ssl::context::no_sslv3 |
                      ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1 | ssl::context::single_dh_use);
  beast::error_code ec;
  context.use_certificate_chain_file(cert_file, ec);
  if (ec) throw Error(ErrorCode::Config, fmt::format("--https-cert '{}': {}", cert_file, ec.message()));
  context.use_private_key_file(key_file, ssl::context::pem, ec);
  if (ec) throw Error(ErrorCode::Config, fmt::format("--https-key '{}': {}", key_file, ec.message()));
  if (SSL_CTX_check_private_key(context.native_handle()) != 1) {
    throw Error(ErrorCode::Config,
                fmt::format("--https-key '{}' is not the key of the certificate in '{}'", key_file, cert_file));
  }
  impl_->tls.emplace(std::move(context));
}

int HttpTransport::Listen(const std::string& host, int port) {
  auto& s = *impl_;
  beast::error_code ec;
  const auto address = net::ip::make_address(host == "localhost" ? "127.0.0.1" : host, ec);
  if (ec) throw Error(ErrorCode::Unavailable, fmt::format("cannot listen on {}:{}: not an IP address", host, port));
  const tcp::endpoint endpoint(address, static_cast<unsigned short>(port));
  tcp::acceptor acceptor(s.ioc);
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) {
    throw Error(ErrorCode::Unavailable,
                fmt::format("cannot listen on {}:{}: {}{}", host, port, ec.message(),
                            ec == net::error::address_in_use ? " (another process serves this port)" : ""));
  }
  s.acceptor.emplace(std::move(acceptor));
  const int bound = s.acceptor->local_endpoint().port();
  s.Accept();
  for (size_t i = 0; i < s.limits.io_threads; ++i) {
    s.io_threads.emplace_back([&s, i] {
      NameThisThread(fmt::format("http-io-{}", i));
      s.ioc.run();
    });
  }
  return bound;
}

void HttpTransport::Stop() {
  auto& s = *impl_;
  if (s.stopping.exchange(true)) return;
  net::post(s.ioc, [&s] {
    beast::error_code ec;
    if (s.acceptor) s.acceptor->close(ec);
  });
  s.handler_pool.join();
  s.wait_pool.join();
  const auto deadline = Clock::now() + std::chrono::seconds(1);
  while (s.in_flight.load() > 0 && Clock::now() < deadline) std::this_thread::sleep_for(std::chrono::milliseconds(5));
  s.ioc.stop();
  for (auto& t : s.io_threads) {
    if (t.joinable()) t.join();
  }
}

size_t HttpTransport::connections() const {
  return impl_->connections.used();
}

size_t HttpTransport::request_memory() const {
  return impl_->memory.used();
}

}  // namespace runnel::server
