// Wires the API together: the resources' routes, the bearer-token check and the
// transport with its limits.
#include "runnel/server/http_server.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cassert>

#include "api.hpp"
#include "http_transport.hpp"
#include "runnel/model/model.hpp"
#include "runnel/server/api_keys.hpp"

namespace runnel::server {

namespace {

bool IsLoopback(const std::string& host) {
  if (host == "localhost" || host == "::1") return true;
  in_addr addr{};
  return ::inet_pton(AF_INET, host.c_str(), &addr) == 1 && (ntohl(addr.s_addr) >> 24) == 127;
}

// Comparison in time independent of where the strings differ.
bool ConstantTimeEquals(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() == b.size() ? 0 : 1;
  const size_t n = std::max(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    const auto x = static_cast<unsigned char>(i < a.size() ? a[i] : 0);
    const auto y = static_cast<unsigned char>(i < b.size() ? b[i] : 0);
    diff |= static_cast<unsigned char>(x ^ y);
  }
  return diff == 0;
}

// The credentials of "Authorization: Bearer <credentials>", if sent. "Bearer" is
// case-insensitive (RFC 9110 section 11.1), followed by one or more spaces.
std::optional<std::string_view> BearerOf(const HttpRequest& req) {
  constexpr std::string_view kBearer = "bearer";
  std::string_view credentials = req.HeaderOr("Authorization");
  if (credentials.size() <= kBearer.size() || !EqualsIgnoreCase(credentials.substr(0, kBearer.size()), kBearer) ||
      credentials[kBearer.size()] != ' ') {
    return std::nullopt;
  }
  credentials.remove_prefix(kBearer.size());
  while (!credentials.empty() && credentials.front() == ' ') credentials.remove_prefix(1);
  return credentials;
}

// Who may do what: the token is an admin key; keys come from `keys`. Authentication
// is required once a token or a key exists, and always on a non-loopback address
// (unless --insecure), so revoking the last key never opens the server.
class Authorization {
 public:
  Authorization(const HttpOptions& options, const KeyStore& keys)
      : token_(options.token), keys_(keys), always_(!IsLoopback(options.host) && !options.insecure) {}

  std::optional<HttpError> operator()(HttpRequest& req, const Route& route) const {
    if (route.options.open) return std::nullopt;
    auto access = Authenticate(req);
    if (!access) return HttpError{401, "missing, unknown, revoked or expired bearer key (Authorization: Bearer <key>)"};
    if (access->scope < route.options.scope) {
      return HttpError{
          403, fmt::format("this key's scope '{}' does not allow {} {}: it needs '{}'", ScopeName(access->scope),
                           req.method, route.name, ScopeName(route.options.scope))};
    }
    req.access = std::move(*access);
    return std::nullopt;
  }

 private:
  std::optional<Access> Authenticate(const HttpRequest& req) const {
    if (auto credentials = BearerOf(req)) {
      if (!token_.empty() && ConstantTimeEquals(*credentials, token_)) return Access{};
      if (auto access = keys_.Authenticate(*credentials)) return access;
    }
    if (Open()) return Access{};  // everyone is admin, whatever they send
    return std::nullopt;
  }

  // A loopback server with neither a token nor a key (nor --insecure needed).
  bool Open() const { return !always_ && token_.empty() && keys_.empty(); }

  std::string token_;
  const KeyStore& keys_;
  bool always_;
};

std::shared_ptr<spdlog::logger> AccessLog(const std::string& target) {
  if (target.empty()) return nullptr;
  std::shared_ptr<spdlog::logger> log;
  try {
    log = target == "-" ? std::make_shared<spdlog::logger>("access", std::make_shared<spdlog::sinks::stderr_sink_mt>())
                        : std::make_shared<spdlog::logger>(
                              "access", std::make_shared<spdlog::sinks::basic_file_sink_mt>(target, false));
  } catch (const spdlog::spdlog_ex& e) {
    throw Error(ErrorCode::Io, fmt::format("access log '{}': {}", target, e.what()));
  }
  log->set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %v", spdlog::pattern_time_type::utc);
  log->flush_on(spdlog::level::info);
  return log;
}

TransportLimits LimitsOf(const HttpOptions& o) {
  TransportLimits limits;
  limits.io_threads = std::max<size_t>(1, o.io_threads);
  limits.handler_threads = std::max<size_t>(1, o.handler_threads);
  limits.wait_slots = std::max<size_t>(1, o.wait_slots);
  limits.max_connections = o.max_connections;
  limits.head_timeout = std::chrono::milliseconds(o.head_timeout_ms);
  limits.body_timeout = std::chrono::milliseconds(o.body_timeout_ms);
  limits.max_header_bytes = o.max_header_bytes;
  limits.max_header_count = o.max_header_count;
  limits.max_body_bytes = o.max_body_bytes;
  limits.max_request_memory = o.max_request_memory;
  limits.spool_dir = o.spool_dir;
  limits.max_spool_bytes = o.max_spool_bytes;
  return limits;
}

}  // namespace

void ParseListenAddress(const std::string& address, HttpOptions& options) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos) {
    throw Error(ErrorCode::InvalidInput, fmt::format("--http '{}': expected host:port, e.g. 127.0.0.1:8080", address));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  auto port = ParseInt(address.substr(colon + 1));
  if (!port || *port < 0 || *port > 65535) {
    throw Error(ErrorCode::InvalidInput, fmt::format("--http '{}': the port must be 0..65535", address));
  }
  options.host = host.empty() ? "127.0.0.1" : host;
  options.port = static_cast<int>(*port);
}

struct HttpServer::Impl {
  Impl(HttpOptions o, const std::string& conninfo, Metrics* m)
      : options(std::move(o)),
        pool(conninfo, options.handler_threads + options.wait_slots, "http"),  // each may hold one
        keys(conninfo),
        metrics(m != nullptr ? m : &own_metrics) {}

  // One pipeline's API: its columns and keys, its ingestor, its routes.
  void StartPipeline(Api& api) {
    api.Load();
    api.ingestor = std::make_unique<Ingestor>(api.config, api.schema, api.ctx.conninfo, api.options.ingest_threads);
    AddRequestRoutes(router, api);
    AddJobRoutes(router, api);
    AddEventRoutes(router, api);
    AddSnapshotRoutes(router, api);
  }

  HttpOptions options;
  postgres::ConnectionPool pool;
  std::vector<std::unique_ptr<Api>> apis;  // one per pipeline, in the order given
  KeyStore keys;
  Router router;
  Metrics own_metrics;  // when the caller keeps none
  Metrics* metrics;
  std::unique_ptr<HttpTransport> transport;
};

HttpServer::HttpServer(HttpOptions options, std::vector<ServingContext> pipelines, Metrics* metrics) {
  if (options.https_cert.empty() != options.https_key.empty()) {
    throw Error(ErrorCode::Config, "HTTPS needs both a certificate (--https-cert) and its key (--https-key)");
  }
  if (pipelines.empty()) throw Error(ErrorCode::InvalidInput, "the HTTP API needs a pipeline to serve");
  std::set<std::string> names;
  for (const auto& ctx : pipelines) {
    assert(ctx.config != nullptr);
    if (!names.insert(ctx.config->name).second) {
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("pipeline '{}' is given twice: pipelines served together need names of their own",
                              ctx.config->name));
    }
  }
  if (options.max_model_bytes == 0) options.max_model_bytes = model::MaxModelBytes();
  impl_ = std::make_unique<Impl>(options, pipelines.front().conninfo, metrics);
  for (auto& ctx : pipelines) impl_->apis.push_back(std::make_unique<Api>(options, std::move(ctx), impl_->pool));
}

HttpServer::~HttpServer() {
  Stop();
}

int HttpServer::Start() {
  auto& s = *impl_;
  for (auto& api : s.apis) s.StartPipeline(*api);
  Api& any = *s.apis.front();
  AddJobByIdRoutes(s.router, any);
  AddModelRoutes(s.router, any);
  AddKeyRoutes(s.router, any);
  AddHealthRoutes(s.router, s.apis, *s.metrics);
  AddDashboardRoutes(s.router, s.apis);
  s.keys.Start();
  const auto& options = s.options;
  if (!IsLoopback(options.host) && !options.insecure && options.token.empty() && s.keys.empty()) {
    spdlog::warn(
        "HTTP on {} has no token and no API key: every request but /healthz gets 401 until an admin key "
        "exists (`runnel keys create --scope admin`)",
        options.host);
  }
  s.transport = std::make_unique<HttpTransport>(LimitsOf(options), s.router, s.metrics, Authorization(options, s.keys),
                                                AccessLog(options.access_log));
  if (!options.https_cert.empty()) s.transport->UseTls(options.https_cert, options.https_key);
  return s.transport->Listen(options.host, options.port);
}

void HttpServer::Stop() {
  if (!impl_) return;
  auto& s = *impl_;
  for (auto& api : s.apis) api->stopping = true;
  if (s.transport) s.transport->Stop();
  for (auto& api : s.apis) {
    if (api->ingestor) api->ingestor->Stop();
  }
  s.keys.Stop();
}

}  // namespace runnel::server
