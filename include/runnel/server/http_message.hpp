// An HTTP request and response as the API's handlers see them, independent of the
// transport that read them off a socket (http_transport.hpp): the router and every
// resource are tested with these values alone.
//
// Thread safety: plain values; one thread at a time.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

namespace runnel::server {

using Fields = std::vector<std::pair<std::string, std::string>>;

// What a caller may do, each level including the ones before: read its requests and
// events; also submit them; everything (models, jobs, keys, every client).
enum class Scope { kRead, kSubmit, kAdmin };

// Who sent a request, as the authorizer established it (api_keys.hpp). Without
// authentication (a loopback server with neither a token nor keys) everyone is admin.
struct Access {
  Scope scope = Scope::kAdmin;
  // The one client whose requests the caller may submit and see; nullopt: any.
  std::optional<std::string> client;
  std::string key_id;  // for the access log; empty for the token or no authentication
};

// A request body the transport wrote to an unnamed temporary file as it arrived
// (routes with RouteOptions::spool_body: model pushes), mapped read-only: its pages
// are the file's, not the process's heap. Owns the descriptor and the mapping.
// Thread safety: immutable after construction.
class BodyFile {
 public:
  // Takes `fd` (open for reading, `size` bytes long). Throws Error(Io) when it
  // cannot be mapped.
  BodyFile(int fd, size_t size);
  ~BodyFile();
  BodyFile(const BodyFile&) = delete;
  BodyFile& operator=(const BodyFile&) = delete;

  // An unnamed read-write file in `dir` (O_TMPFILE; else created and unlinked at once).
  // Returns its descriptor, or -1 with errno set.
  static int OpenSpool(const std::string& dir);

  std::string_view View() const { return {static_cast<const char*>(data_), size_}; }

 private:
  int fd_;
  size_t size_;
  void* data_ = nullptr;
};

struct HttpRequest {
  std::string method;  // "GET", "POST", ...
  std::string path;    // percent-decoded, without the query
  Fields query;        // decoded, in order
  Fields headers;      // names as sent
  std::string body;    // empty when spooled
  std::shared_ptr<const BodyFile> body_file;  // set instead of `body` on a spooling route
  std::string client;  // the peer's address, for the access log
  Access access;       // set by the authorizer before the handler runs

  // The first header of that name (case-insensitive), if any.
  std::optional<std::string_view> Header(std::string_view name) const;
  std::string_view HeaderOr(std::string_view name, std::string_view fallback = "") const;
  // The first query parameter of that name, if any.
  std::optional<std::string_view> Query(std::string_view name) const;
  // The body, wherever it is.
  std::string_view Body() const { return body_file ? body_file->View() : std::string_view(body); }
};

// Where a streamed response's body goes (Server-Sent Events): the transport's end of
// one client connection. Thread safety: every member may be called from any thread.
class StreamSink {
 public:
  virtual ~StreamSink() = default;
  // Queues bytes for the client. False once the connection is gone, or when the client
  // reads too slowly (its backlog passed the transport's cap: the connection is then
  // closed); the stream should stop writing.
  virtual bool Write(std::string bytes) = 0;
  // Ends the response (after what is queued) and closes the connection.
  virtual void Close() = 0;
  // Bytes queued and not yet written: a stream paces itself by it.
  virtual size_t backlog() const = 0;
};

// A response body written over time. The transport writes the head, then calls Start
// once, on an I/O thread (it must not block), with the sink for the body.
class ResponseStream {
 public:
  virtual ~ResponseStream() = default;
  virtual void Start(std::shared_ptr<StreamSink> sink) = 0;
};

struct HttpResponse;

// The transport's end of a reply that a handler gives later, after an asynchronous
// step (a group commit). Send once, from any thread; a responder dropped without
// sending answers 500.
class Responder {
 public:
  virtual ~Responder() = default;
  virtual void Send(HttpResponse response) = 0;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  Fields headers;  // besides Content-Type and Content-Length
  // Set by a handler to stream the body instead (no Content-Length; the connection
  // closes when the stream ends).
  std::shared_ptr<ResponseStream> stream;
  // Set by a handler that answers later: the transport calls it (once, on the
  // handler's thread, after the handler returned) with the responder to answer by.
  std::function<void(std::shared_ptr<Responder>)> deferred;

  void SetHeader(std::string name, std::string value) { headers.emplace_back(std::move(name), std::move(value)); }
};

// An error with its HTTP status; the body is {"error": message, ...details}.
struct HttpError {
  int status;
  std::string message;
  nlohmann::json details = nlohmann::json::object();
};

// A JSON reply, one line ending in a newline. A message may quote a client's bytes:
// invalid UTF-8 becomes U+FFFD.
void Reply(HttpResponse& res, int status, const nlohmann::json& body);
void ReplyError(HttpResponse& res, const HttpError& error);

// Where `text` stops being UTF-8 (overlong forms, surrogates and values past U+10FFFF
// included), or nullopt when it is valid.
std::optional<size_t> InvalidUtf8At(std::string_view text);

// Percent-decoding of a path (`plus_is_space` false) or of a query component (true).
// Returns nullopt for a malformed escape ("%4", "%zz").
std::optional<std::string> PercentDecode(std::string_view text, bool plus_is_space);

// Splits a request target ("/a/b?x=1&y") into a decoded path and query. Throws
// HttpError(400) for a malformed escape or invalid UTF-8, naming where.
void ParseTarget(std::string_view target, HttpRequest& req);

// Case-insensitive ASCII comparison (header names, the auth scheme).
bool EqualsIgnoreCase(std::string_view a, std::string_view b);

}  // namespace runnel::server
