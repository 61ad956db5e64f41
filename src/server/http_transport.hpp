// The HTTP/1.1 transport of the API: an event-driven server (Boost.Beast over Asio)
// whose few I/O threads only read and write sockets; handlers run on a fixed pool,
// requests that wait (?wait=, model pushes) on a pool of their own. Every limit holds
// whatever the transfer encoding, so slow or hostile clients cost memory and a socket,
// never a thread:
//   - one deadline for the idle time plus the whole request head, one for the body;
//   - the head's size and header count; each route's body size (chunked included,
//     refused before it is exceeded in memory); all bodies in flight together (the
//     bodies of spooling routes, model pushes, go to a temporary file instead, under a
//     budget of their own);
//   - connections (the excess are answered 503 and closed at once) and concurrent
//     waits (the excess 503 with Retry-After).
// Authorization and routing happen once the head is read, before any body is read.
//
// Thread safety: Listen and Stop from one thread; the router and the authorizer are
// called from I/O threads and must be thread-safe; handlers from the pools.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include <spdlog/logger.h>

#include "runnel/server/http_message.hpp"
#include "runnel/server/metrics.hpp"
#include "runnel/server/router.hpp"

namespace runnel::server {

struct TransportLimits {
  size_t io_threads = 2;
  size_t handler_threads = 16;
  size_t wait_slots = 64;  // requests waiting at once (each holds a thread of the wait pool)
  size_t max_connections = 4096;
  std::chrono::milliseconds head_timeout{10000};  // idle keep-alive time plus the whole head
  std::chrono::milliseconds body_timeout{60000};  // the whole body
  std::chrono::milliseconds write_timeout{30000};
  size_t max_header_bytes = 64 << 10;
  size_t max_header_count = 100;
  size_t max_body_bytes = 64 << 20;        // per request, unless the route says otherwise
  size_t max_request_memory = 1ull << 30;  // all bodies being read or handled
  // Bodies of spooling routes (RouteOptions::spool_body) go to unnamed files in this
  // directory (empty: $TMPDIR, else /tmp), at most this many bytes together.
  std::string spool_dir;
  size_t max_spool_bytes = 4ull << 30;
};

// Sets `req.access`, or returns the error to answer instead of running the route
// (401, 403). Runs on an I/O thread: it must not block.
using Authorizer = std::function<std::optional<HttpError>(HttpRequest&, const Route&)>;

class HttpTransport {
 public:
  // `router` and `metrics` (nullable) must outlive the transport; `access_log`
  // (nullable) gets one line per response.
  HttpTransport(TransportLimits limits, const Router& router, Metrics* metrics, Authorizer authorize,
                std::shared_ptr<spdlog::logger> access_log);
  ~HttpTransport();
  HttpTransport(const HttpTransport&) = delete;
  HttpTransport& operator=(const HttpTransport&) = delete;

  // Serves HTTPS with this PEM certificate chain and private key (before Listen;
  // TLS 1.2 and later). Throws Error(Config) naming the file that cannot be used.
  void UseTls(const std::string& cert_file, const std::string& key_file);
  // Binds (SO_REUSEADDR, never SO_REUSEPORT: a second server on the port fails here)
  // and starts the threads. Returns the bound port. Throws Error(Unavailable).
  int Listen(const std::string& host, int port);
  // Stops accepting, lets handlers in flight finish and their replies go out (up to a
  // second), then closes everything. Idempotent.
  void Stop();

  // Current counts, for tests and /metrics.
  size_t connections() const;
  size_t request_memory() const;

  struct Impl;  // defined in the .cpp (its sessions use it)

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace runnel::server
