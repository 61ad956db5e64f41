// Routes of the HTTP API: which handler answers a method and path, how large its body
// may be, and on which thread it may run. The transport asks Find() once the request
// head is read (to pick the body limit and the lane) and Dispatch() once the body is
// in; neither touches a socket, so routing is tested with plain values.
//
// Thread safety: Add before the transport starts; Find and Dispatch from any thread.
#pragma once

#include <cstddef>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "runnel/core/error.hpp"
#include "runnel/server/http_message.hpp"
#include "runnel/server/metrics.hpp"

namespace runnel::server {

using PathParams = std::vector<std::string>;  // the {name} segments of a route, in order
using Handler = std::function<void(const HttpRequest&, HttpResponse&, const PathParams&)>;

// Where a handler runs. Inline handlers run on the I/O thread (they must not block:
// /healthz); the others on the handler pool; kWait handlers on a pool of their own
// whose size caps the requests that wait at once (the excess get 503).
enum class Lane { kInline, kHandler, kWait };

struct RouteOptions {
  size_t max_body_bytes = 0;  // 0: the transport's default
  // The body goes to a temporary file as it arrives (HttpRequest::body_file), never
  // whole into memory: for bodies larger than request memory should hold (models).
  bool spool_body = false;
  Lane lane = Lane::kHandler;
  bool wait_on_query = false;  // kWait when the request has ?wait=
  // Otherwise kInline when the body is at most this long (0: never): the handler only
  // parses and hands over (it must not block), cheaper than a thread hop.
  size_t inline_max_body = 0;
  // The least scope a caller needs (http_message.hpp); admin unless a route says less.
  Scope scope = Scope::kAdmin;
  bool open = false;  // answered without authentication (/healthz)

  static RouteOptions For(Scope scope) {
    RouteOptions options;
    options.scope = scope;
    return options;
  }
};

struct Route {
  std::string method;
  std::vector<std::string> segments;
  std::string name;  // the template, for metrics and the access log
  Handler handler;
  RouteOptions options;

  Lane LaneFor(const HttpRequest& req) const;
};

// Maps Runnel's errors to statuses: the client's mistakes are 4xx, never 500;
// transient database failures are 503.
HttpError FromError(const Error& error);
// The error for a request Find did not route: 405 with an Allow header on `res`
// when the path has other methods (`allow`), else 404.
HttpError NoRouteError(const HttpRequest& req, const std::string& allow, HttpResponse& res);
// The error reply for an exception a handler threw (HttpError as thrown, Error by
// FromError, anything else 500 and logged).
void ReplyException(HttpResponse& res, std::exception_ptr error, const HttpRequest& req);

class Router {
 public:
  void Add(std::string method, const std::string& pattern, Handler handler, RouteOptions options = {});
  // A route of one pipeline (`pattern` starts /v1/pipelines/{p}/): each pipeline a
  // process serves adds its handler; one route per method and pattern then picks the
  // handler by the path's first parameter, and a name no pipeline has gets 404 naming
  // the ones served. The options are the first registration's.
  void AddForPipeline(const std::string& pipeline, std::string method, const std::string& pattern, Handler handler,
                      RouteOptions options = {});

  // The route for `req.method` and `req.path` (HEAD finds GET), or nullptr; `allow`
  // then lists the methods the path has (empty: no such path).
  const Route* Find(const HttpRequest& req, PathParams& params, std::string& allow) const;

  // Finds the route and runs it: every exception becomes an error response (HttpError
  // as thrown, Error by FromError, anything else 500 and logged). Returns the route's
  // name ("unmatched" when none). Records the response in `metrics` when not null.
  std::string Dispatch(const HttpRequest& req, HttpResponse& res, Metrics* metrics) const;

  // Runs an already found route, mapping exceptions as Dispatch does.
  static void Run(const Route& route, const HttpRequest& req, HttpResponse& res, const PathParams& params);

 private:
  using PipelineHandlers = std::map<std::string, Handler>;  // pipeline -> its handler

  std::vector<Route> routes_;
  std::map<std::string, std::shared_ptr<PipelineHandlers>> pipeline_routes_;  // "METHOD pattern" ->
};

}  // namespace runnel::server
