// The pure stages of serving one batch (worker.cpp runs them between its statements):
// expanding claimed key ranges into requests, quota decisions, whether an output fits
// its write-back column, and isolating the requests whose write fails. None of them
// touches PostgreSQL; each is unit-tested on its own (tests/pipeline/serving_stages_test.cpp).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace runnel::pipeline {

// One key range of one claimed queue row: keys first..last inclusive.
struct ClaimedRange {
  int64_t first = 0;
  int64_t last = 0;
  double enqueued = 0;  // epoch seconds
  std::optional<int64_t> job;
  int32_t attempts = 0;        // times a request of this row was deferred before
  std::optional<int64_t> seq;  // the queue row, for messages
};

// One request of a batch: a distinct key.
struct ClaimedKey {
  int64_t key = 0;
  double enqueued = 0;
  std::optional<int64_t> job;
  int32_t attempts = 0;
};

// The distinct keys of `ranges` in key order: a key queued twice is one request, a
// batch job's tag wins, the most attempts win. Throws Error(InvalidInput) naming the
// `queue` row when the ranges hold more than `max_keys` keys (a queue row written by
// hand: expanding it could exhaust memory).
std::vector<ClaimedKey> ExpandClaim(std::span<const ClaimedRange> ranges, uint64_t max_keys, std::string_view queue);

// Whether each request is over its client's quota: requests that count (`counted`)
// take the next ordinal of their client after `before[client]` and are throttled past
// `max_requests`. `clients[i]` must be set where counted[i].
std::vector<bool> Throttle(const std::vector<std::optional<std::string>>& clients, const std::vector<bool>& counted,
                           std::map<std::string, int64_t> before, int64_t max_requests);

// What a write-back column accepts, from its SQL type as format_type() spells it.
struct ColumnLimit {
  enum class Kind { kAny, kReal, kDouble, kSmallint, kInteger, kBigint, kNumeric };
  Kind kind = Kind::kAny;
  int precision = 0;  // kNumeric with a typmod: numeric(precision, scale)
  int scale = 0;
};
ColumnLimit ColumnLimitFor(std::string_view sql_type);
// Why PostgreSQL would refuse to store `value` (float8) in such a column, as its own
// message says it ("value out of range: overflow", "numeric field overflow"), or
// nullopt when it fits.
std::optional<std::string> RefusalFor(const ColumnLimit& limit, double value);

// Whether an input column's SQL type is one the features can read as a number.
bool IsNumericInputType(std::string_view sql_type);

// A request whose own write failed, with the database's reason.
struct RowFailure {
  size_t index = 0;  // into the batch
  std::string sqlstate;
  std::string message;
  // The member the database named as the one being written when it refused (a mark
  // the write leaves per row); a hint, checked by trying that member alone.
  std::optional<size_t> blamed;
};
// Finds the requests among `members` that fail on their own: writes them in chunks of
// `chunk` members (all at once when chunk >= their number) by calling `attempt`. In a
// chunk that fails, the member the failure blames is tried alone (recorded when it
// fails, written when it does not) and the rest tried again; without a usable blame
// the chunk is bisected. `attempt` writes the subset (and keeps it written)
// and returns the failure, or nullopt on success. Every member not returned has been
// written by some successful attempt; failures come in member order. Exceptions from
// `attempt` pass.
std::vector<RowFailure> IsolateFailures(
    const std::vector<size_t>& members, size_t chunk,
    const std::function<std::optional<RowFailure>(std::span<const size_t>)>& attempt);

// The chunk size that makes isolating failures cheapest for a batch of `n` requests
// when a fraction `failure_rate` of them fails at write-back: n when fewer than half a
// failure is expected; else about sqrt(kStatementRows / rate), balancing a statement's
// fixed cost (worth ~kStatementRows rows) against the rows a failed chunk wastes.
inline constexpr double kStatementRows = 50;
size_t IsolationChunk(double failure_rate, size_t n);

}  // namespace runnel::pipeline
