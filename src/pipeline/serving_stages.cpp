#include "runnel/pipeline/serving_stages.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "runnel/core/error.hpp"
#include "runnel/pipeline/request_status.hpp"

namespace runnel::pipeline {

std::string_view RequestStatusName(RequestStatus status) {
  switch (status) {
    case RequestStatus::kQueued: return "queued";
    case RequestStatus::kDone: return "done";
    case RequestStatus::kThrottled: return "throttled";
    case RequestStatus::kFailed: return "failed";
    case RequestStatus::kGone: return "gone";
    case RequestStatus::kSuperseded: return "superseded";
  }
  return "failed";
}

std::optional<RequestStatus> ParseRequestStatus(std::string_view name) {
  for (auto status : {RequestStatus::kQueued, RequestStatus::kDone, RequestStatus::kThrottled, RequestStatus::kFailed,
                      RequestStatus::kGone, RequestStatus::kSuperseded}) {
    if (RequestStatusName(status) == name) return status;
  }
  return std::nullopt;
}

std::vector<ClaimedKey> ExpandClaim(std::span<const ClaimedRange> ranges, uint64_t max_keys, std::string_view queue) {
  uint64_t total = 0;
  for (const auto& range : ranges) {
    const uint64_t width_less_one = static_cast<uint64_t>(range.last) - static_cast<uint64_t>(range.first);
    if (range.last < range.first || width_less_one >= max_keys || total + width_less_one + 1 > max_keys) {
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("{} row seq {} holds keys [{}, {}]: a claim of more than {} keys; Runnel's capture "
                              "writes fewer per row (delete or fix the row)",
                              queue, range.seq.value_or(0), range.first, range.last, max_keys));
    }
    total += width_less_one + 1;
  }
  std::vector<ClaimedKey> keys;
  keys.reserve(total);
  for (const auto& range : ranges) {
    for (int64_t k = range.first;; ++k) {
      keys.push_back({k, range.enqueued, range.job, range.attempts});
      if (k == range.last) break;
    }
  }
  std::stable_sort(keys.begin(), keys.end(), [](const ClaimedKey& a, const ClaimedKey& b) { return a.key < b.key; });
  std::vector<ClaimedKey> distinct;
  distinct.reserve(keys.size());
  for (const auto& key : keys) {
    if (!distinct.empty() && distinct.back().key == key.key) {
      if (!distinct.back().job) distinct.back().job = key.job;
      distinct.back().attempts = std::max(distinct.back().attempts, key.attempts);
      continue;
    }
    distinct.push_back(key);
  }
  return distinct;
}

std::vector<bool> Throttle(const std::vector<std::optional<std::string>>& clients, const std::vector<bool>& counted,
                           std::map<std::string, int64_t> before, int64_t max_requests) {
  std::vector<bool> over(clients.size(), false);
  for (size_t i = 0; i < clients.size(); ++i) {
    if (counted[i]) over[i] = ++before[*clients[i]] > max_requests;
  }
  return over;
}

ColumnLimit ColumnLimitFor(std::string_view sql_type) {
  using Kind = ColumnLimit::Kind;
  if (sql_type == "real") return {Kind::kReal};
  if (sql_type == "double precision") return {Kind::kDouble};
  if (sql_type == "smallint") return {Kind::kSmallint};
  if (sql_type == "integer") return {Kind::kInteger};
  if (sql_type == "bigint") return {Kind::kBigint};
  if (sql_type == "numeric") return {Kind::kNumeric};
  int precision = 0, scale = 0;
  if (std::sscanf(std::string(sql_type).c_str(), "numeric(%d,%d)", &precision, &scale) == 2) {
    return {Kind::kNumeric, precision, scale};
  }
  return {Kind::kAny};
}

std::optional<std::string> RefusalFor(const ColumnLimit& limit, double value) {
  using Kind = ColumnLimit::Kind;
  // As PostgreSQL's float8 -> int casts: rint, then the range [min, -min).
  auto integer = [&](double min, const char* type) -> std::optional<std::string> {
    const double r = std::rint(value);
    if (std::isnan(r) || !(r >= min && r < -min)) return fmt::format("{} out of range", type);
    return std::nullopt;
  };
  switch (limit.kind) {
    case Kind::kAny:
    case Kind::kDouble: return std::nullopt;
    case Kind::kReal: {
      const auto f = static_cast<float>(value);
      if (std::isinf(f) && !std::isinf(value)) return "value out of range: overflow";
      if (f == 0.0f && value != 0.0) return "value out of range: underflow";
      return std::nullopt;
    }
    case Kind::kSmallint: return integer(-32768.0, "smallint");
    case Kind::kInteger: return integer(-2147483648.0, "integer");
    case Kind::kBigint: return integer(-9223372036854775808.0, "bigint");
    case Kind::kNumeric: {
      if (limit.precision == 0 || std::isnan(value)) return std::nullopt;
      if (std::isinf(value)) return "numeric field overflow";
      // numeric(p, s) holds |v| rounded to s digits below 10^(p - s).
      const double scaled = std::nearbyint(std::fabs(value) * std::pow(10.0, limit.scale));
      if (scaled >= std::pow(10.0, limit.precision)) return "numeric field overflow";
      return std::nullopt;
    }
  }
  return std::nullopt;
}

bool IsNumericInputType(std::string_view sql_type) {
  if (sql_type == "smallint" || sql_type == "integer" || sql_type == "bigint" || sql_type == "real" ||
      sql_type == "double precision" || sql_type == "numeric") {
    return true;
  }
  return sql_type.starts_with("numeric(");
}

namespace {

using Attempt = std::function<std::optional<RowFailure>(std::span<const size_t>)>;

void Isolate(std::vector<size_t> part, RowFailure failure, const Attempt& attempt, std::vector<RowFailure>& failed);

// `members` is not known to succeed: attempt each half, isolating within a failing one.
void Bisect(std::span<const size_t> members, const Attempt& attempt, std::vector<RowFailure>& failed) {
  const size_t half = members.size() / 2;
  for (auto part : {members.first(half), members.subspan(half)}) {
    if (part.empty()) continue;
    if (auto failure = attempt(part)) Isolate({part.begin(), part.end()}, std::move(*failure), attempt, failed);
  }
}

// `part` failed as a whole with `failure`.
void Isolate(std::vector<size_t> part, RowFailure failure, const Attempt& attempt, std::vector<RowFailure>& failed) {
  while (true) {
    if (part.size() == 1) {
      failure.index = part[0];
      failure.blamed.reset();
      failed.push_back(std::move(failure));
      return;
    }
    const auto culprit = failure.blamed ? std::find(part.begin(), part.end(), *failure.blamed) : part.end();
    if (culprit == part.end()) {
      Bisect(part, attempt, failed);
      return;
    }
    const size_t blamed = *culprit;
    part.erase(culprit);
    auto alone = attempt(std::span<const size_t>(&blamed, 1));
    if (!alone) {
      // The blame was wrong (written now); nothing is known of the rest.
      Bisect(part, attempt, failed);
      return;
    }
    alone->index = blamed;
    alone->blamed.reset();
    failed.push_back(std::move(*alone));
    auto rest = attempt(part);
    if (!rest) return;
    failure = std::move(*rest);
  }
}

}  // namespace

std::vector<RowFailure> IsolateFailures(
    const std::vector<size_t>& members, size_t chunk,
    const std::function<std::optional<RowFailure>(std::span<const size_t>)>& attempt) {
  std::vector<RowFailure> failed;
  const std::span<const size_t> all(members);
  chunk = std::max<size_t>(chunk, 1);
  for (size_t at = 0; at < all.size(); at += chunk) {
    const auto part = all.subspan(at, std::min(chunk, all.size() - at));
    if (auto failure = attempt(part)) Isolate({part.begin(), part.end()}, std::move(*failure), attempt, failed);
  }
  std::sort(failed.begin(), failed.end(), [](const RowFailure& a, const RowFailure& b) { return a.index < b.index; });
  return failed;
}

size_t IsolationChunk(double failure_rate, size_t n) {
  if (n == 0 || failure_rate * static_cast<double>(n) < 0.5) return std::max<size_t>(n, 1);
  const double best = std::sqrt(kStatementRows / failure_rate);
  return std::clamp<size_t>(static_cast<size_t>(best), std::min<size_t>(16, n), n);
}

}  // namespace runnel::pipeline
