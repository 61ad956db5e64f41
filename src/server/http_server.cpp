#include "runnel/server/http_server.hpp"

#include <arpa/inet.h>
#include <httplib.h>
#include <sys/socket.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cassert>
#include <charconv>
#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>

#include "runnel/core/csv.hpp"
#include "runnel/core/error.hpp"
#include "runnel/pipeline/jobs.hpp"
#include "runnel/pipeline/replay.hpp"
#include "runnel/pipeline/request_status.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/postgres/arrays.hpp"
#include "runnel/postgres/pool.hpp"
#include "runnel/registry/registry.hpp"
#include "runnel/server/ingest.hpp"

namespace runnel::server {

using nlohmann::json;
using postgres::ArrayLiteral;
using postgres::Params;
using postgres::QuoteIdentifier;

namespace {

using PathParams = std::vector<std::string>;  // the {name} segments of a route, in order

constexpr size_t kMaxRecordsPerRequest = 100000;

// An error with its HTTP status; the body is {"error": message, ...details}.
struct HttpError {
  int status;
  std::string message;
  json details = json::object();
};

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

std::optional<int64_t> ParseInt(std::string_view text) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

std::optional<double> ParseDouble(const std::string& text) {
  try {
    size_t used = 0;
    double value = std::stod(text, &used);
    if (used != text.size()) return std::nullopt;
    return value;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::string Iso(const std::string& column) {
  return fmt::format("to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')", column);
}

std::string IsoFromEpoch(double seconds) {
  if (seconds <= 0) return "";
  const auto whole = static_cast<time_t>(seconds);
  std::tm tm{};
  gmtime_r(&whole, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  return fmt::format("{}.{:06d}Z", buf, static_cast<int>((seconds - static_cast<double>(whole)) * 1e6));
}

enum class ColumnKind { Integer, Number, Text, Bool, Other };

struct ColumnInfo {
  ColumnKind kind = ColumnKind::Other;
  std::string type;
  bool not_null = false;
  bool has_default = false;
};

ColumnKind KindOf(const std::string& type) {
  if (type == "integer" || type == "bigint" || type == "smallint") return ColumnKind::Integer;
  if (type == "double precision" || type == "real" || type.starts_with("numeric")) return ColumnKind::Number;
  if (type == "text" || type.starts_with("character")) return ColumnKind::Text;
  if (type == "boolean") return ColumnKind::Bool;
  return ColumnKind::Other;
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
  HttpOptions options;
  ServingContext ctx;
  const pipeline::PipelineConfig& config;
  pipeline::SchemaNames names;
  postgres::ConnectionPool pool;
  std::unique_ptr<Ingestor> ingestor;
  httplib::Server server;
  std::thread thread;
  std::map<std::string, ColumnInfo> columns;  // of the source table
  std::set<std::string> required;             // must be present and non-null in a record

  // Routes match segment by segment ("{name}" takes one segment): std::regex per
  // route per request cost more than the rest of a small POST.
  struct Route {
    std::string method;
    std::vector<std::string> segments;
    std::string name;  // the template, for metrics
    std::function<void(const httplib::Request&, httplib::Response&, const PathParams&)> handler;
  };
  std::vector<Route> routes;

  Impl(HttpOptions o, ServingContext c)
      : options(std::move(o)),
        ctx(std::move(c)),
        config(*ctx.config),
        names(pipeline::NamesFor(config)),
        pool(ctx.conninfo, options.threads) {}

  // ---- responses ----

  static void Reply(httplib::Response& res, int status, const json& body) {
    res.status = status;
    // A message may quote a client's bytes: invalid UTF-8 becomes U+FFFD, never a throw.
    res.set_content(body.dump(-1, ' ', false, json::error_handler_t::replace), "application/json");
  }

  // Where `text` stops being UTF-8 (overlong forms, surrogates and values past
  // U+10FFFF included), or nullopt when it is valid.
  static std::optional<size_t> InvalidUtf8At(std::string_view text) {
    size_t i = 0;
    while (i < text.size()) {
      const auto c = static_cast<unsigned char>(text[i]);
      size_t n = 0;
      uint32_t cp = 0, min = 0;
      if (c < 0x80) {
        ++i;
        continue;
      } else if ((c & 0xE0) == 0xC0) {
        n = 1, cp = c & 0x1F, min = 0x80;
      } else if ((c & 0xF0) == 0xE0) {
        n = 2, cp = c & 0x0F, min = 0x800;
      } else if ((c & 0xF8) == 0xF0) {
        n = 3, cp = c & 0x07, min = 0x10000;
      } else {
        return i;
      }
      if (i + n >= text.size()) return i;  // truncated sequence
      for (size_t k = 1; k <= n; ++k) {
        const auto d = static_cast<unsigned char>(text[i + k]);
        if ((d & 0xC0) != 0x80) return i;
        cp = (cp << 6) | (d & 0x3F);
      }
      if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return i;
      i += n + 1;
    }
    return std::nullopt;
  }

  // Paths and query parameters must be UTF-8: 400 naming the place. (JSON bodies:
  // ParseJson.)
  static void CheckUtf8(const httplib::Request& req) {
    if (auto at = InvalidUtf8At(req.path))
      throw HttpError{400, fmt::format("invalid UTF-8 in the path at byte {}", *at)};
    for (const auto& [name, value] : req.params) {
      if (auto at = InvalidUtf8At(name)) {
        throw HttpError{400, fmt::format("invalid UTF-8 in a query parameter's name at byte {}", *at)};
      }
      if (auto at = InvalidUtf8At(value)) {
        throw HttpError{400, fmt::format("invalid UTF-8 in query parameter '{}' at byte {}", name, *at)};
      }
    }
  }

  static void ReplyError(httplib::Response& res, const HttpError& e) {
    json body = e.details;
    body["error"] = e.message;
    Reply(res, e.status, body);
  }

  // Maps Runnel's errors to statuses: the client's mistakes are 4xx, never 500.
  static HttpError FromError(const Error& e) {
    if (const auto* db = dynamic_cast<const postgres::DatabaseError*>(&e)) {
      switch (db->failure_class()) {
        case postgres::FailureClass::kTransient: return {503, fmt::format("database unavailable: {}", e.what())};
        case postgres::FailureClass::kRow: return {422, e.what()};
        case postgres::FailureClass::kSetup: return {500, fmt::format("database error: {}", e.what())};
      }
    }
    switch (e.code()) {
      case ErrorCode::InvalidInput:
      case ErrorCode::Model: return {422, e.what()};
      case ErrorCode::NotFound: return {404, e.what()};
      case ErrorCode::Unavailable: return {409, e.what()};
      default: return {500, e.what()};
    }
  }

  // ---- routing ----

  static std::vector<std::string> Split(std::string_view path) {
    if (path.empty()) return {};
    return SplitAt(path.substr(1), '/');  // after the leading '/'
  }

  static bool Match(const Route& route, const std::vector<std::string>& segments, PathParams& params) {
    if (route.segments.size() != segments.size()) return false;
    params.clear();
    for (size_t i = 0; i < segments.size(); ++i) {
      const auto& want = route.segments[i];
      if (want.starts_with('{')) {
        if (segments[i].empty()) return false;
        params.push_back(segments[i]);
      } else if (want != segments[i]) {
        return false;
      }
    }
    return true;
  }

  void Add(std::string method, const std::string& pattern,
           std::function<void(const httplib::Request&, httplib::Response&, const PathParams&)> handler) {
    routes.push_back({std::move(method), Split(pattern), pattern, std::move(handler)});
  }

  void Dispatch(const httplib::Request& req, httplib::Response& res) {
    const auto started = std::chrono::steady_clock::now();
    std::string route_name = "unmatched";
    std::set<std::string> allowed;
    try {
      const auto segments = Split(req.path);
      PathParams match;
      const Route* found = nullptr;
      for (const auto& route : routes) {
        if (!Match(route, segments, match)) continue;
        if (route.method == req.method || (req.method == "HEAD" && route.method == "GET")) {
          found = &route;
          break;
        }
        allowed.insert(route.method);
      }
      if (found != nullptr) {
        route_name = found->name;
        CheckUtf8(req);
        Match(*found, segments, match);
        found->handler(req, res, match);
      } else if (!allowed.empty()) {
        std::string allow;
        for (const auto& m : allowed) allow += (allow.empty() ? "" : ", ") + m;
        res.set_header("Allow", allow);
        ReplyError(res, {405, fmt::format("{} is not allowed on {} (allowed: {})", req.method, req.path, allow)});
      } else {
        ReplyError(res, {404, fmt::format("no such endpoint: {}", req.path)});
      }
    } catch (const HttpError& e) {
      ReplyError(res, e);
    } catch (const Error& e) {
      ReplyError(res, FromError(e));
    } catch (const std::exception& e) {
      spdlog::error("http {} {}: {}", req.method, req.path, e.what());
      ReplyError(res, {500, fmt::format("internal error: {}", e.what())});
    }
    if (ctx.metrics != nullptr) {
      ctx.metrics->RecordHttp(route_name, res.status,
                              std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    }
  }

  void CheckPipeline(const PathParams& m) const {
    if (m[0] != config.name) throw HttpError{404, fmt::format("unknown pipeline '{}'", m[0])};
  }

  static int64_t KeyParam(const std::string& text, const char* what) {
    auto value = ParseInt(text);
    if (!value) throw HttpError{404, fmt::format("{} '{}' is not an integer id", what, text)};
    return *value;
  }

  // ---- request bodies ----

  // The parser refuses any byte that is not UTF-8, so the text is scanned for one
  // only when parsing failed, to name it when it came first.
  static json ParseJson(std::string_view text, size_t offset_base) {
    try {
      return json::parse(text);
    } catch (const json::parse_error& e) {
      const size_t at_error = e.byte > 0 ? e.byte - 1 : 0;
      if (auto at = InvalidUtf8At(text); at && *at <= at_error) {
        throw HttpError{400,
                        fmt::format("invalid UTF-8 in the body at byte {}", offset_base + *at),
                        {{"offset", offset_base + *at}}};
      }
      const size_t offset = offset_base + at_error;
      throw HttpError{400, fmt::format("malformed JSON at byte {}: {}", offset, e.what()), {{"offset", offset}}};
    }
  }

  // The records of a POST body: one object, an array of objects, or NDJSON.
  static std::vector<json> Records(const httplib::Request& req) {
    std::vector<json> records;
    const std::string type = req.get_header_value("Content-Type");
    if (type.starts_with("application/x-ndjson") || type.starts_with("application/jsonl")) {
      size_t start = 0;
      while (start < req.body.size()) {
        size_t end = req.body.find('\n', start);
        if (end == std::string::npos) end = req.body.size();
        std::string_view line(req.body.data() + start, end - start);
        if (line.find_first_not_of(" \t\r") != std::string_view::npos) records.push_back(ParseJson(line, start));
        start = end + 1;
        if (records.size() > kMaxRecordsPerRequest) break;
      }
    } else {
      json body = ParseJson(req.body, 0);
      if (body.is_array()) {
        records = std::move(body.get_ref<json::array_t&>());
      } else {
        records.push_back(std::move(body));
      }
    }
    if (records.empty()) throw HttpError{422, "the body holds no records"};
    if (records.size() > kMaxRecordsPerRequest)
      throw HttpError{413, fmt::format("more than {} records in one request", kMaxRecordsPerRequest)};
    return records;
  }

  // Checks a record against the source table; appends one entry per problem.
  void Validate(json& record, size_t index, json& errors) const {
    auto problem = [&](const std::string& field, const std::string& message) {
      errors.push_back({{"record", index}, {"field", field}, {"error", message}});
    };
    if (!record.is_object()) {
      problem("", "a record must be a JSON object");
      return;
    }
    for (auto& [field, value] : record.items()) {
      auto it = columns.find(field);
      if (it == columns.end()) {
        problem(field, fmt::format("unknown column: table '{}' has no column '{}'", config.table, field));
        continue;
      }
      if (std::find(config.write_back.begin(), config.write_back.end(), field) != config.write_back.end()) {
        problem(field, "written by Runnel: it cannot be submitted");
        continue;
      }
      if (value.is_null()) {
        if (required.contains(field) || it->second.not_null) problem(field, "must not be null");
        continue;
      }
      switch (it->second.kind) {
        case ColumnKind::Integer:
          if (!value.is_number_integer() &&
              !(value.is_number_float() && std::trunc(value.get<double>()) == value.get<double>() &&
                std::abs(value.get<double>()) < 9.2e18)) {
            problem(field, fmt::format("must be an integer ({})", it->second.type));
          } else if (it->second.type == "integer" &&
                     (value.get<double>() > 2147483647.0 || value.get<double>() < -2147483648.0)) {
            problem(field, "out of range for integer");
          } else if (it->second.type == "smallint" && (value.get<double>() > 32767 || value.get<double>() < -32768)) {
            problem(field, "out of range for smallint");
          } else if (value.is_number_float()) {
            value = static_cast<int64_t>(value.get<double>());  // 40.0 -> 40: integer text for COPY
          }
          break;
        case ColumnKind::Number:
          if (!value.is_number()) problem(field, fmt::format("must be a number ({})", it->second.type));
          break;
        case ColumnKind::Text:
          if (!value.is_string() && !value.is_number())
            problem(field, fmt::format("must be a string ({})", it->second.type));
          break;
        case ColumnKind::Bool:
          if (!value.is_boolean()) problem(field, "must be true or false");
          break;
        case ColumnKind::Other:
          if (value.is_object() || value.is_array())
            problem(field, fmt::format("must be a scalar ({})", it->second.type));
          break;
      }
    }
    for (const auto& field : required) {
      if (!record.contains(field)) problem(field, "is required");
    }
  }

  // ---- reading requests back ----

  std::string OutputSelect() const {
    std::string select;
    for (const auto& column : config.output_columns) select += ", r." + QuoteIdentifier(column);
    return select;
  }

  // One JSON object per key (absent when neither the row nor a result exists).
  std::map<int64_t, json> FetchRequests(postgres::Connection& conn, const std::vector<int64_t>& keys,
                                        bool with_recommendations) {
    std::map<int64_t, json> out;
    if (keys.empty()) return out;
    auto r = conn.Exec(
        fmt::format("SELECT k.key, s.{key} IS NOT NULL, r.key IS NOT NULL, coalesce(r.status, 'queued'), r.error, "
                    "r.model_version, {enq}, {fin}, "
                    "(extract(epoch FROM r.finished_at - r.enqueued_at) * 1000)::float8 {outs} "
                    "FROM unnest($1::bigint[]) AS k(key) LEFT JOIN {table} s ON s.{key} = k.key "
                    "LEFT JOIN {results} r ON r.key = k.key",
                    fmt::arg("key", QuoteIdentifier(config.key_column)), fmt::arg("enq", Iso("r.enqueued_at")),
                    fmt::arg("fin", Iso("r.finished_at")), fmt::arg("outs", OutputSelect()),
                    fmt::arg("table", QuoteIdentifier(config.table)),
                    fmt::arg("results", QuoteIdentifier(names.results))),
        Params().Add(ArrayLiteral(keys)));
    for (int i = 0; i < r.rows(); ++i) {
      if (!r.Get<bool>(i, 1) && !r.Get<bool>(i, 2)) continue;
      const auto key = r.Get<int64_t>(i, 0);
      out[key] = RequestJson(r, i, 0, 3);
    }
    if (with_recommendations && config.recommend) {
      auto recs = conn.Exec(fmt::format("SELECT request_key, product_key FROM {} WHERE request_key = ANY($1::bigint[]) "
                                        "ORDER BY request_key, product_key",
                                        QuoteIdentifier(names.recommendations)),
                            Params().Add(ArrayLiteral(keys)));
      for (auto& [key, request] : out) {
        if (request["status"] == pipeline::RequestStatusName(pipeline::RequestStatus::kDone))
          request["recommendations"] = json::array();
      }
      for (int i = 0; i < recs.rows(); ++i) {
        auto it = out.find(recs.Get<int64_t>(i, 0));
        if (it != out.end()) it->second["recommendations"].push_back(recs.Get<int64_t>(i, 1));
      }
    }
    return out;
  }

  // Column `key_column` is the key; from `first`: status, error, model_version,
  // enqueued, finished, latency, then the output columns.
  json RequestJson(const postgres::Result& r, int i, int key_column, int first) const {
    json request;
    request["id"] = r.Get<int64_t>(i, key_column);
    request["status"] = r.Get<std::string>(i, first);
    request["error"] = r.IsNull(i, first + 1) ? json(nullptr) : json(r.Get<std::string>(i, first + 1));
    request["model_version"] = r.IsNull(i, first + 2) ? json(nullptr) : json(r.Get<std::string>(i, first + 2));
    json outputs = json::object();
    for (size_t o = 0; o < config.output_columns.size(); ++o) {
      const int c = first + 6 + static_cast<int>(o);
      outputs[config.output_columns[o]] = r.IsNull(i, c) ? json(nullptr) : json(r.Get<double>(i, c));
    }
    request["outputs"] = outputs;
    json timings = json::object();
    timings["enqueued_at"] = r.IsNull(i, first + 3) ? json(nullptr) : json(r.Get<std::string>(i, first + 3));
    timings["finished_at"] = r.IsNull(i, first + 4) ? json(nullptr) : json(r.Get<std::string>(i, first + 4));
    timings["latency_ms"] = r.IsNull(i, first + 5) ? json(nullptr) : json(r.Get<double>(i, first + 5));
    request["timings"] = timings;
    return request;
  }

  // ---- handlers ----

  void PostRequests(const httplib::Request& req, httplib::Response& res, const PathParams& m) {
    CheckPipeline(m);
    std::optional<int64_t> wait_ms;
    if (req.has_param("wait")) {
      wait_ms = ParseInt(req.get_param_value("wait"));
      if (!wait_ms || *wait_ms < 0) throw HttpError{422, "'wait' must be a non-negative number of milliseconds"};
      wait_ms = std::min<int64_t>(*wait_ms, options.max_wait_ms);
    }
    const bool single = !req.body.empty() && req.body.find_first_not_of(" \t\r\n") != std::string::npos &&
                        req.body[req.body.find_first_not_of(" \t\r\n")] == '{' &&
                        !req.get_header_value("Content-Type").starts_with("application/x-ndjson");
    auto records = Records(req);
    json errors = json::array();
    for (size_t i = 0; i < records.size() && errors.size() < 100; ++i) Validate(records[i], i, errors);
    if (!errors.empty()) {
      throw HttpError{
          422, fmt::format("{} invalid field(s); nothing was inserted", errors.size()), {{"errors", errors}}};
    }
    // One submission per column set (omitted columns take their defaults).
    std::map<std::vector<std::string>, std::vector<size_t>> by_columns;
    for (size_t i = 0; i < records.size(); ++i) {
      std::vector<std::string> cols;
      for (const auto& [field, value] : records[i].items()) cols.push_back(field);
      by_columns[cols].push_back(i);
    }
    std::vector<int64_t> ids(records.size());
    for (auto& [cols, members] : by_columns) {
      std::vector<json> group;
      group.reserve(members.size());
      for (size_t i : members) group.push_back(std::move(records[i]));
      auto keys = ingestor->Insert(cols, std::move(group));
      if (keys.size() != members.size()) throw HttpError{500, "the database returned fewer keys than records"};
      for (size_t j = 0; j < members.size(); ++j) ids[members[j]] = keys[j];
    }
    if (ctx.metrics != nullptr) ctx.metrics->RecordIngested(records.size());
    json body;
    body["ids"] = ids;
    if (single) body["id"] = ids.front();
    if (!wait_ms) {
      body["status"] = "queued";
      Reply(res, 202, body);
      return;
    }
    const bool complete = WaitFor(ids, std::chrono::milliseconds(*wait_ms));
    auto lease = pool.Acquire();
    auto found = FetchRequests(*lease, ids, true);
    json results = json::array();
    for (int64_t id : ids) {
      results.push_back(found.contains(id) ? found[id] : json{{"id", id}, {"status", "queued"}});
    }
    body["results"] = results;
    if (single) body["result"] = results.front();
    Reply(res, complete ? 200 : 202, body);
  }

  // Waits for every key's result: woken by this process's workers, re-checking the
  // database every 50 ms for requests another process serves.
  bool WaitFor(const std::vector<int64_t>& ids, std::chrono::milliseconds wait) {
    const auto deadline = std::chrono::steady_clock::now() + wait;
    auto waiter = ctx.completions->Watch(ids);
    bool complete = false;
    auto check_database = [&] {
      auto lease = pool.Acquire();
      auto r =
          lease->Exec(fmt::format("SELECT key FROM {} WHERE key = ANY($1::bigint[])", QuoteIdentifier(names.results)),
                      Params().Add(ArrayLiteral(waiter->Pending())));
      std::vector<int64_t> done;
      for (int i = 0; i < r.rows(); ++i) done.push_back(r.Get<int64_t>(i, 0));
      waiter->Satisfy(done);
    };
    try {
      check_database();
      while (true) {
        const auto slice = std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(50));
        if (waiter->WaitUntil(slice)) {
          complete = true;
          break;
        }
        if (std::chrono::steady_clock::now() >= deadline) break;
        check_database();
      }
    } catch (...) {
      ctx.completions->Forget(waiter, ids);
      throw;
    }
    ctx.completions->Forget(waiter, ids);
    return complete;
  }

  void GetRequest(const httplib::Request&, httplib::Response& res, const PathParams& m) {
    CheckPipeline(m);
    const int64_t id = KeyParam(m[1], "request id");
    auto lease = pool.Acquire();
    auto found = FetchRequests(*lease, {id}, true);
    if (!found.contains(id)) {
      throw HttpError{404, fmt::format("no request {} in pipeline '{}'", id, config.name)};
    }
    Reply(res, 200, found[id]);
  }

  // Re-queues one failed request (exactly once: a second call finds it queued).
  void RetryRequest(const httplib::Request&, httplib::Response& res, const PathParams& m) {
    CheckPipeline(m);
    const int64_t id = KeyParam(m[1], "request id");
    auto lease = pool.Acquire();
    pipeline::RetryFilter filter;
    filter.key = id;
    auto outcome = pipeline::RetryFailed(*lease, config, filter);
    if (outcome.requeued == 0) {
      auto found = FetchRequests(*lease, {id}, false);
      if (!found.contains(id)) throw HttpError{404, fmt::format("no request {} in pipeline '{}'", id, config.name)};
      throw HttpError{409, fmt::format("request {} is {}, not failed: only failed requests are retried", id,
                                       found[id]["status"].get<std::string>())};
    }
    Reply(res, 202, {{"id", id}, {"status", "queued"}, {"job", *outcome.job}});
  }

  void ListRequests(const httplib::Request& req, httplib::Response& res, const PathParams& m) {
    CheckPipeline(m);
    int64_t limit = 100;
    std::optional<int64_t> after;
    std::vector<std::string> where;
    Params params;
    int next = 1;
    auto param = [&](const std::string& value) {
      params.Add(value);
      return fmt::format("${}", next++);
    };
    for (const auto& [name, value] : req.params) {
      if (name == "limit") {
        auto v = ParseInt(value);
        if (!v || *v < 1 || *v > 1000) throw HttpError{422, "'limit' must be 1..1000"};
        limit = *v;
      } else if (name == "after") {
        after = ParseInt(value);
        if (!after) throw HttpError{422, "'after' must be an id (the previous page's 'next')"};
      } else if (name == "status") {
        if (!pipeline::ParseRequestStatus(value))
          throw HttpError{422, fmt::format("unknown status '{}': queued, done, throttled or failed", value)};
        // Queued: never served, or re-queued by a retry (its result row says 'queued').
        where.push_back(value == "queued" ? "(r.key IS NULL OR r.status = 'queued')"
                                          : fmt::format("r.status = {}", param(value)));
      } else if (!config.client_column.empty() && name == config.client_column) {
        where.push_back(fmt::format("s.{}::text = {}", QuoteIdentifier(config.client_column), param(value)));
      } else {
        // <output>, <output>.gte/.gt/.lte/.lt
        const auto dot = name.rfind('.');
        const std::string column = dot == std::string::npos ? name : name.substr(0, dot);
        const std::string op_name = dot == std::string::npos ? "" : name.substr(dot + 1);
        static const std::map<std::string, std::string> kOps = {
            {"", "="}, {"gte", ">="}, {"gt", ">"}, {"lte", "<="}, {"lt", "<"}};
        const bool is_output = std::find(config.output_columns.begin(), config.output_columns.end(), column) !=
                               config.output_columns.end();
        if (!is_output || !kOps.contains(op_name)) {
          throw HttpError{422, fmt::format("unknown query parameter '{}': use status, {}limit, after, or an output "
                                           "column ({}) with an optional .gte/.gt/.lte/.lt",
                                           name, config.client_column.empty() ? "" : config.client_column + ", ",
                                           fmt::join(config.output_columns, ", "))};
        }
        if (!ParseDouble(value)) throw HttpError{422, fmt::format("'{}' must be a number", name)};
        where.push_back(fmt::format("r.{} {} {}::float8", QuoteIdentifier(column), kOps.at(op_name), param(value)));
      }
    }
    const std::string key = "s." + QuoteIdentifier(config.key_column);
    if (after) {
      params.Add(*after);
      where.push_back(fmt::format("{} > ${}", key, next++));
    }
    params.Add(limit);
    const int limit_param = next++;
    std::string condition = where.empty() ? "true" : fmt::format("{}", fmt::join(where, " AND "));
    // Keyset pagination on the key: new rows get larger keys (or land in a page not
    // yet read), so no page repeats or skips a row under concurrent inserts.
    auto lease = pool.Acquire();
    auto r = lease->Exec(
        fmt::format("SELECT {key}, coalesce(r.status, 'queued'), r.error, r.model_version, {enq}, {fin}, "
                    "(extract(epoch FROM r.finished_at - r.enqueued_at) * 1000)::float8 {outs} "
                    "FROM {table} s LEFT JOIN {results} r ON r.key = {key} WHERE {cond} ORDER BY {key} LIMIT ${lim}",
                    fmt::arg("key", key), fmt::arg("enq", Iso("r.enqueued_at")), fmt::arg("fin", Iso("r.finished_at")),
                    fmt::arg("outs", OutputSelect()), fmt::arg("table", QuoteIdentifier(config.table)),
                    fmt::arg("results", QuoteIdentifier(names.results)), fmt::arg("cond", condition),
                    fmt::arg("lim", limit_param)),
        params);
    json items = json::array();
    for (int i = 0; i < r.rows(); ++i) items.push_back(RequestJson(r, i, 0, 1));
    json body;
    body["requests"] = items;
    body["next"] = r.rows() == limit ? json(r.Get<int64_t>(r.rows() - 1, 0)) : json(nullptr);
    Reply(res, 200, body);
  }

  static json JobJson(const pipeline::JobInfo& job) {
    return {{"id", job.id},
            {"pipeline", job.pipeline},
            {"where", job.filter},
            {"batch_size", job.batch_size},
            {"state", job.state},
            {"total", job.total},
            {"enqueued", job.enqueued},
            {"served", job.served},
            {"progress", job.total > 0 ? static_cast<double>(job.served) / static_cast<double>(job.total) : 1.0},
            {"error", job.error ? json(*job.error) : json(nullptr)},
            {"created_at", IsoFromEpoch(job.created_at)},
            {"updated_at", IsoFromEpoch(job.updated_at)},
            {"finished_at", job.finished_at ? json(IsoFromEpoch(*job.finished_at)) : json(nullptr)}};
  }

  void PostJob(const httplib::Request& req, httplib::Response& res, const PathParams& m) {
    CheckPipeline(m);
    json body = req.body.empty() ? json::object() : ParseJson(req.body, 0);
    if (!body.is_object())
      throw HttpError{422, "the body must be a JSON object {\"batch_size\": N, \"where\": \"...\"}"};
    json errors = json::array();
    int64_t batch_size = 1000;
    std::string where;
    for (const auto& [field, value] : body.items()) {
      if (field == "batch_size") {
        if (!value.is_number_integer() || value.get<int64_t>() < 1 || value.get<int64_t>() > 100000) {
          errors.push_back({{"field", field}, {"error", "must be an integer 1..100000"}});
        } else {
          batch_size = value.get<int64_t>();
        }
      } else if (field == "where") {
        if (!value.is_string()) {
          errors.push_back({{"field", field}, {"error", "must be a string, e.g. \"status is null\""}});
        } else {
          where = value.get<std::string>();
        }
      } else {
        errors.push_back({{"field", field}, {"error", "unknown field: batch_size or where"}});
      }
    }
    if (!errors.empty()) throw HttpError{422, "invalid job", {{"errors", errors}}};
    auto lease = pool.Acquire();
    auto job = pipeline::CreateJob(*lease, config, where, batch_size);
    res.set_header("Location", fmt::format("/v1/jobs/{}", job.id));
    Reply(res, 201, JobJson(job));
  }

  void GetJob(const httplib::Request&, httplib::Response& res, const PathParams& m) {
    const int64_t id = KeyParam(m[0], "job id");
    auto lease = pool.Acquire();
    ReplyJob(res, id, pipeline::GetJob(*lease, id));
  }

  void ListJobs(const httplib::Request&, httplib::Response& res, const PathParams& m) {
    CheckPipeline(m);
    auto lease = pool.Acquire();
    json jobs = json::array();
    for (const auto& job : pipeline::ListJobs(*lease, config.name)) jobs.push_back(JobJson(job));
    Reply(res, 200, {{"jobs", jobs}});
  }

  void DeleteJob(const httplib::Request&, httplib::Response& res, const PathParams& m) {
    const int64_t id = KeyParam(m[0], "job id");
    auto lease = pool.Acquire();
    ReplyJob(res, id, pipeline::CancelJob(*lease, id));
  }

  // 200 with the job, or 404 when there is no job `id`.
  void ReplyJob(httplib::Response& res, int64_t id, const std::optional<pipeline::JobInfo>& job) {
    if (!job) throw HttpError{404, fmt::format("no job {}", id)};
    Reply(res, 200, JobJson(*job));
  }

  void GetClient(const httplib::Request&, httplib::Response& res, const PathParams& m) {
    const std::string& client = m[0];
    if (!config.quota_max_requests) {
      throw HttpError{404, fmt::format("pipeline '{}' keeps no per-client state (no [quota])", config.name)};
    }
    auto lease = pool.Acquire();
    auto r = lease->Exec(fmt::format("SELECT requests FROM {} WHERE client = $1", QuoteIdentifier(names.quota)),
                         Params().Add(client));
    const int64_t requests = r.rows() > 0 ? r.Get<int64_t>(0, 0) : 0;
    const int64_t max = *config.quota_max_requests;
    Reply(res, 200,
          {{"client_id", client},
           {"pipelines",
            {{config.name,
              {{"requests", requests},
               {"max_requests", max},
               {"remaining", std::max<int64_t>(0, max - requests)},
               {"throttled", std::max<int64_t>(0, requests - max)}}}}}});
  }

  json ModelJson(postgres::Connection& conn, const std::string& name, bool with_versions) {
    auto versions = registry::Versions(conn, name);
    if (versions.empty()) throw HttpError{404, fmt::format("no model named '{}'", name)};
    auto states = registry::ReadState(conn, name, 10.0);
    // Current: newest ready version per data type.
    std::map<std::optional<std::string>, const registry::ModelVersion*> current;
    for (const auto& v : versions) {
      if (v.status == "ready" && !current.contains(v.data_type)) current[v.data_type] = &v;
    }
    auto version_json = [](const registry::ModelVersion& v) {
      return json{{"version", v.version},
                  {"status", v.status},
                  {"error", v.error ? json(*v.error) : json(nullptr)},
                  {"format", v.format},
                  {"description", v.description},
                  {"data_type", v.data_type ? json(*v.data_type) : json(nullptr)},
                  {"size_bytes", v.size},
                  {"created_at", IsoFromEpoch(v.created_at)}};
    };
    json out;
    out["name"] = name;
    json serving = json::array();
    for (const auto& [type, v] : current) {
      json entry = version_json(*v);
      int64_t invocations = 0, rows = 0;
      double total = 0, min = 0, max = 0, since = 0;
      json processes = json::array();
      for (const auto& s : states) {
        if (s.version != v->version) continue;
        processes.push_back({{"process", s.process},
                             {"pipeline", s.pipeline},
                             {"loaded_since", IsoFromEpoch(s.loaded_at)},
                             {"invocations", s.invocations}});
        if (s.invocations > 0) {
          min = invocations == 0 ? s.min_ms : std::min(min, s.min_ms);
          max = std::max(max, s.max_ms);
        }
        invocations += s.invocations;
        rows += s.rows;
        total += s.total_ms;
        since = since == 0 ? s.loaded_at : std::min(since, s.loaded_at);
      }
      entry["loaded_since"] = since > 0 ? json(IsoFromEpoch(since)) : json(nullptr);
      entry["invocations"] = invocations;
      entry["rows"] = rows;
      entry["inference_ms"] = {{"total", total},
                               {"min", min},
                               {"max", max},
                               {"mean", invocations > 0 ? total / static_cast<double>(invocations) : 0.0}};
      entry["processes"] = processes;
      serving.push_back(entry);
    }
    out["serving"] = serving;
    // The default model's fields at top level, for the common one-model case.
    if (auto it = current.find(std::nullopt); it != current.end()) {
      for (const auto& key :
           {"version", "description", "format", "loaded_since", "invocations", "inference_ms", "processes"}) {
        for (const auto& entry : serving) {
          if (entry["data_type"].is_null()) out[key] = entry[key];
        }
      }
    } else {
      out["version"] = nullptr;
    }
    if (with_versions) {
      json all = json::array();
      for (const auto& v : versions) all.push_back(version_json(v));
      out["versions"] = all;
    }
    return out;
  }

  void ListModels(const httplib::Request&, httplib::Response& res, const PathParams&) {
    auto lease = pool.Acquire();
    json models = json::array();
    for (const auto& name : registry::Names(*lease)) models.push_back(ModelJson(*lease, name, false));
    Reply(res, 200, {{"models", models}});
  }

  void GetModel(const httplib::Request&, httplib::Response& res, const PathParams& m) {
    auto lease = pool.Acquire();
    Reply(res, 200, ModelJson(*lease, m[0], true));
  }

  void PutModel(const httplib::Request& req, httplib::Response& res, const PathParams& m) {
    registry::PushRequest push;
    push.name = m[0];
    if (req.is_multipart_form_data()) {
      if (!req.has_file("file")) throw HttpError{422, "multipart upload without a 'file' part"};
      push.bytes = req.get_file_value("file").content;
      if (req.has_file("description")) push.description = req.get_file_value("description").content;
      if (req.has_file("data_type")) push.data_type = req.get_file_value("data_type").content;
    } else {
      push.bytes = req.body;
      push.description = req.get_header_value("X-Model-Description");
      if (req.has_header("X-Model-Data-Type")) push.data_type = req.get_header_value("X-Model-Data-Type");
    }
    int64_t wait_ms = 5000;
    if (req.has_param("wait")) {
      auto v = ParseInt(req.get_param_value("wait"));
      if (!v || *v < 0) throw HttpError{422, "'wait' must be a non-negative number of milliseconds"};
      wait_ms = std::min<int64_t>(*v, options.max_wait_ms);
    }
    auto lease = pool.Acquire();
    auto added = registry::Push(*lease, push);
    // The model stream of each serving process validates it; report its verdict.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
    std::string status = added.status;
    while (status == "pending" && std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      for (const auto& v : registry::Versions(*lease, push.name)) {
        if (v.version == added.version) {
          status = v.status;
          added = v;
        }
      }
    }
    json body = {{"name", added.name},     {"version", added.version},
                 {"status", added.status}, {"error", added.error ? json(*added.error) : json(nullptr)},
                 {"format", added.format}, {"size_bytes", added.size}};
    res.set_header("Location", fmt::format("/v1/models/{}", added.name));
    if (added.status == "rejected") {
      body["error"] =
          fmt::format("model '{}' v{} was rejected: {}", added.name, added.version, added.error.value_or("?"));
      Reply(res, 422, body);
    } else {
      Reply(res, added.status == "ready" ? 201 : 202, body);
    }
  }

  void RollbackModel(const httplib::Request& req, httplib::Response& res, const PathParams& m) {
    std::optional<std::string> data_type;
    if (req.has_param("data_type")) data_type = req.get_param_value("data_type");
    auto lease = pool.Acquire();
    auto current = registry::Rollback(*lease, m[0], data_type);
    Reply(res, 200,
          {{"name", current.name},
           {"version", current.version},
           {"data_type", current.data_type ? json(*current.data_type) : json(nullptr)},
           {"status", current.status}});
  }

  void Metrics(const httplib::Request&, httplib::Response& res, const PathParams&) {
    std::vector<std::pair<std::string, double>> gauges;
    const std::string p = fmt::format("pipeline=\"{}\"", config.name);
    try {
      auto lease = pool.Acquire();
      const auto queue = pipeline::ReadQueueState(*lease, config);
      gauges.emplace_back(fmt::format("runnel_queue_depth{{{}}}", p), static_cast<double>(queue.requests));
      gauges.emplace_back(fmt::format("runnel_queue_oldest_seconds{{{}}}", p), queue.oldest_seconds);
    } catch (const Error& e) {
      spdlog::debug("metrics: queue depth: {}", e.what());
    }
    for (const auto& serving : ctx.models->Current()->All()) {
      const std::string labels = fmt::format("{},model=\"{}\",version=\"{}\"", p, serving->name, serving->label());
      const auto& stats = *serving->stats;
      gauges.emplace_back(fmt::format("runnel_model_invocations_total{{{}}}", labels),
                          static_cast<double>(stats.invocations.load()));
      gauges.emplace_back(fmt::format("runnel_model_rows_total{{{}}}", labels), static_cast<double>(stats.rows.load()));
      gauges.emplace_back(fmt::format("runnel_model_inference_seconds_total{{{}}}", labels),
                          static_cast<double>(stats.total_ns.load()) / 1e9);
    }
    res.status = 200;
    res.set_content(ctx.metrics->Render(gauges), "text/plain; version=0.0.4");
  }

  void Ready(const httplib::Request&, httplib::Response& res, const PathParams&) {
    std::vector<std::string> problems;
    if (ctx.models->Current()->empty()) problems.push_back("no model loaded yet");
    if (ctx.workers_running && !ctx.workers_running()) problems.push_back("workers are not running");
    if (ctx.pauses) {
      for (const auto& reason : ctx.pauses()) problems.push_back(fmt::format("paused: {}", reason));
    }
    try {
      auto lease = pool.Acquire();
      lease->Exec("SELECT 1");
    } catch (const Error& e) {
      problems.push_back(fmt::format("database: {}", e.what()));
    }
    if (problems.empty()) {
      Reply(res, 200, {{"status", "ready"}});
    } else {
      Reply(res, 503, {{"status", "not ready"}, {"problems", problems}});
    }
  }

  void Routes() {
    using namespace std::placeholders;
    auto bind = [this](auto method) { return std::bind(method, this, _1, _2, _3); };
    Add("GET", "/healthz", [](const httplib::Request&, httplib::Response& res, const PathParams&) {
      Reply(res, 200, {{"status", "ok"}});
    });
    Add("GET", "/readyz", bind(&Impl::Ready));
    Add("GET", "/metrics", bind(&Impl::Metrics));
    Add("POST", "/v1/pipelines/{p}/requests", bind(&Impl::PostRequests));
    Add("GET", "/v1/pipelines/{p}/requests", bind(&Impl::ListRequests));
    Add("GET", "/v1/pipelines/{p}/requests/{id}", bind(&Impl::GetRequest));
    Add("POST", "/v1/pipelines/{p}/requests/{id}/retry", bind(&Impl::RetryRequest));
    Add("POST", "/v1/pipelines/{p}/jobs", bind(&Impl::PostJob));
    Add("GET", "/v1/pipelines/{p}/jobs", bind(&Impl::ListJobs));
    Add("GET", "/v1/jobs/{id}", bind(&Impl::GetJob));
    Add("DELETE", "/v1/jobs/{id}", bind(&Impl::DeleteJob));
    Add("GET", "/v1/state/clients/{client_id}", bind(&Impl::GetClient));
    Add("GET", "/v1/models", bind(&Impl::ListModels));
    Add("GET", "/v1/models/{name}", bind(&Impl::GetModel));
    Add("PUT", "/v1/models/{name}", bind(&Impl::PutModel));
    Add("POST", "/v1/models/{name}/rollback", bind(&Impl::RollbackModel));
  }

  void LoadColumns() {
    auto lease = pool.Acquire();
    auto r = lease->Exec(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.atthasdef OR "
        "a.attidentity <> '' FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT "
        "a.attisdropped",
        Params().Add(QuoteIdentifier(config.table)));
    if (r.rows() == 0) throw Error(ErrorCode::NotFound, fmt::format("table '{}' does not exist", config.table));
    for (int i = 0; i < r.rows(); ++i) {
      ColumnInfo info;
      info.type = r.Get<std::string>(i, 1);
      info.kind = KindOf(info.type);
      info.not_null = r.Get<bool>(i, 2);
      info.has_default = r.Get<bool>(i, 3);
      const auto name = r.Get<std::string>(i, 0);
      if (info.not_null && !info.has_default) required.insert(name);
      columns[name] = info;
    }
    for (const auto& c : config.features.input_columns) required.insert(c);
    if (config.quota_max_requests) required.insert(config.client_column);
  }
};

void CheckAccess(const HttpOptions& options) {
  if (!IsLoopback(options.host) && options.token.empty() && !options.insecure) {
    throw Error(ErrorCode::Config,
                fmt::format("refusing to serve HTTP on {} without a token: set --http-token (or RUNNEL_HTTP_TOKEN), "
                            "or pass --insecure to accept unauthenticated requests from the network",
                            options.host));
  }
}

HttpServer::HttpServer(HttpOptions options, ServingContext context) {
  assert(context.config != nullptr);
  CheckAccess(options);
  impl_ = std::make_unique<Impl>(std::move(options), std::move(context));
}

HttpServer::~HttpServer() {
  Stop();
}

int HttpServer::Start() {
  auto& s = *impl_;
  s.LoadColumns();
  s.ingestor = std::make_unique<Ingestor>(s.config, s.ctx.conninfo, s.options.ingest_threads);
  s.Routes();
  const size_t threads = s.options.threads;
  // httplib owns and deletes the task queue it is given.
  s.server.new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  s.server.set_payload_max_length(s.options.max_body_bytes);
  s.server.set_tcp_nodelay(true);  // small JSON replies: no 40 ms Nagle/delayed-ACK stalls
  s.server.set_keep_alive_max_count(1000000);
  s.server.set_keep_alive_timeout(10);
  s.server.set_read_timeout(s.options.io_timeout_seconds, 0);
  s.server.set_write_timeout(s.options.io_timeout_seconds, 0);
  s.server.set_pre_routing_handler([&s](const httplib::Request& req, httplib::Response& res) {
    if (s.options.token.empty() || req.path == "/healthz") return httplib::Server::HandlerResponse::Unhandled;
    // "Bearer" is case-insensitive (RFC 9110 section 11.1), followed by one or more spaces.
    const std::string header = req.get_header_value("Authorization");
    constexpr std::string_view kBearer = "bearer";
    std::string_view credentials(header);
    const bool bearer = credentials.size() > kBearer.size() &&
                        std::equal(kBearer.begin(), kBearer.end(), credentials.begin(),
                                   [](char a, char b) { return a == std::tolower(static_cast<unsigned char>(b)); }) &&
                        credentials[kBearer.size()] == ' ';
    if (bearer) {
      credentials.remove_prefix(kBearer.size());
      while (!credentials.empty() && credentials.front() == ' ') credentials.remove_prefix(1);
      if (ConstantTimeEquals(credentials, s.options.token)) return httplib::Server::HandlerResponse::Unhandled;
    }
    res.set_header("WWW-Authenticate", "Bearer");
    Impl::ReplyError(res, {401, "missing or wrong bearer token (Authorization: Bearer <token>)"});
    if (s.ctx.metrics != nullptr) s.ctx.metrics->RecordHttp("unauthorized", 401, 0);
    return httplib::Server::HandlerResponse::Handled;
  });
  auto dispatch = [&s](const httplib::Request& req, httplib::Response& res) { s.Dispatch(req, res); };
  s.server.Get(".*", dispatch);
  s.server.Post(".*", dispatch);
  s.server.Put(".*", dispatch);
  s.server.Delete(".*", dispatch);
  s.server.Patch(".*", dispatch);
  s.server.Options(".*", dispatch);
  // Errors httplib produces itself (413, 400 on a broken request line) get a JSON body.
  s.server.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    // httplib caps form-encoded bodies at 8 KiB before any handler sees them; curl -d
    // and --data-binary send that type unless told otherwise.
    if (res.status == 413 && req.get_header_value("Content-Type").starts_with("application/x-www-form-urlencoded")) {
      Impl::ReplyError(res, {415,
                             "form-encoded bodies are not accepted: send Content-Type: application/json "
                             "(or application/x-ndjson), or application/octet-stream for a model "
                             "(curl -H 'Content-Type: ...' or -T FILE)"});
      return;
    }
    std::string message = res.status == 413   ? "the request body is larger than the limit"
                          : res.status == 400 ? "malformed HTTP request"
                                              : fmt::format("HTTP error {}", res.status);
    Impl::ReplyError(res, {res.status, message});
  });
  // Debian's libcpp-httplib listens with a backlog of 5: 64 clients connecting at
  // once lose SYNs and wait a second to retry. Keep the listening socket's fd (the
  // hook sees only it) and listen again with a real backlog once bound.
  int listen_fd = -1;
  s.server.set_socket_options([&listen_fd](socket_t fd) {
    // SO_REUSEADDR (a restart binds at once) but not httplib's default SO_REUSEPORT,
    // with which a second server would share the port and get half of the calls.
    int yes = 1;
    ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
    listen_fd = fd;
  });
  int port = s.options.port;
  if (port == 0) {
    port = s.server.bind_to_any_port(s.options.host);
    if (port < 0) port = 0;
  } else if (!s.server.bind_to_port(s.options.host, port)) {
    port = 0;
  }
  if (port == 0) {
    throw Error(ErrorCode::Unavailable, fmt::format("cannot listen on {}:{}: the address is in use or not local",
                                                    s.options.host, s.options.port));
  }
  if (listen_fd >= 0) ::listen(listen_fd, SOMAXCONN);
  s.thread = std::thread([&s] { s.server.listen_after_bind(); });
  return port;
}

void HttpServer::Stop() {
  if (!impl_) return;
  auto& s = *impl_;
  if (s.thread.joinable()) {
    s.server.stop();
    s.thread.join();
  }
  if (s.ingestor) s.ingestor->Stop();
}

}  // namespace runnel::server
