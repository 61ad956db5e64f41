#include "api.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <ctime>

namespace runnel::server {

using postgres::Params;
using postgres::QuoteIdentifier;

std::optional<int64_t> ParseInt(std::string_view text) {
  int64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return value;
}

int64_t IdParam(const std::string& text, const char* what) {
  auto value = ParseInt(text);
  if (!value) throw HttpError{404, fmt::format("{} '{}' is not an integer id", what, text)};
  return *value;
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

nlohmann::json QuotaCountJson(int64_t requests, int64_t max) {
  return {{"requests", requests},
          {"remaining", std::max<int64_t>(0, max - requests)},
          {"throttled", std::max<int64_t>(0, requests - max)}};
}

nlohmann::json TextOrNull(const std::string& text) {
  return text.empty() ? nlohmann::json(nullptr) : nlohmann::json(text);
}

Api::Api(HttpOptions o, ServingContext c, postgres::ConnectionPool& p)
    : options(std::move(o)), ctx(std::move(c)), config(*ctx.config), names(pipeline::NamesFor(config)), pool(p) {}

void Api::Load() {
  auto lease = pool.Acquire();
  schema = RecordSchema::Load(*lease, config);
}

std::vector<std::string> Api::SplitPathKey(const std::string& path_key) const {
  if (schema.keys.columns().size() == 1) return {path_key};
  std::vector<std::string> parts;
  for (size_t at = 0;;) {
    const size_t comma = path_key.find(',', at);
    parts.push_back(path_key.substr(at, comma == std::string::npos ? std::string::npos : comma - at));
    if (comma == std::string::npos) return parts;
    at = comma + 1;
  }
}

std::string Api::PathKey(const nlohmann::json& id) const {
  auto part = [](const nlohmann::json& v) { return v.is_string() ? v.get<std::string>() : v.dump(); };
  if (!id.is_array()) return part(id);
  std::string out;
  for (const auto& v : id) out += (out.empty() ? "" : ",") + part(v);
  return out;
}

int64_t Api::RequestIdOf(postgres::Connection& conn, const std::string& path_key) const {
  auto not_found = [&] { return HttpError{404, fmt::format("no request {} in pipeline '{}'", path_key, config.name)}; };
  if (!schema.keys.mapped()) return IdParam(path_key, "request id");
  const auto parts = SplitPathKey(path_key);
  if (parts.size() != schema.keys.columns().size()) throw not_found();
  Params params;
  for (const auto& part : parts) params.Add(part);
  try {
    // A key deleted and inserted again has had several requests: its newest is meant.
    auto r = conn.Exec(
        fmt::format("SELECT max({}) FROM {} WHERE ({}) = ({}) HAVING count(*) > 0", pipeline::RequestKeys::kIdColumn,
                    schema.keys.map_table(), schema.keys.ColumnList(""), schema.keys.TypedParams(1)),
        params);
    if (r.rows() == 0) throw not_found();
    return r.Get<int64_t>(0, 0);
  } catch (const postgres::DatabaseError& e) {
    // Class 22 (data exception): not a value of the key's type ("abc" for a uuid).
    if (e.sqlstate().starts_with("22")) throw not_found();
    throw;
  }
}

nlohmann::json Api::IdJson(const postgres::Result& r, int row, int column) const {
  if (r.IsNull(row, column)) return nullptr;
  return nlohmann::json::parse(r.Get<std::string>(row, column));
}

void CheckUnboundKey(const HttpRequest& req, std::string_view what) {
  if (req.access.client) {
    throw HttpError{403, fmt::format("{} every client's requests: a key bound to client '{}' cannot read it", what,
                                     *req.access.client)};
  }
}

void Api::CheckOwnClient(const HttpRequest& req, std::string_view client) const {
  if (req.access.client && *req.access.client != client) {
    throw HttpError{403, fmt::format("this key belongs to client '{}', not '{}'", *req.access.client, client)};
  }
}

std::optional<std::string> Api::ReadableClient(const HttpRequest& req) const {
  if (!req.access.client) return std::nullopt;
  if (config.client_column.empty()) {
    throw HttpError{403, fmt::format("pipeline '{}' has no client column: a key bound to client '{}' cannot read "
                                     "requests, which belong to no client",
                                     config.name, *req.access.client)};
  }
  return req.access.client;
}

std::optional<int64_t> Api::WaitParam(const HttpRequest& req) const {
  auto text = req.Query("wait");
  if (!text) return std::nullopt;
  auto wait_ms = ParseInt(*text);
  if (!wait_ms || *wait_ms < 0) throw HttpError{422, "'wait' must be a non-negative number of milliseconds"};
  return std::min<int64_t>(*wait_ms, options.max_wait_ms);
}

}  // namespace runnel::server
