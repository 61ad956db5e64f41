// Per-client request quotas: `[quota] max_requests = N` requests per client, counted
// over all time or per `window` ("1h", "1d"). Windows are aligned to the Unix epoch
// in UTC (an hour window starts on the hour, a day window at 00:00 UTC) and follow
// the database's clock, so every process counts into the same window.
//
// A request counts into the window in which the batch serving it began (its
// transaction's now()); counters live in runnel_<name>_quota (client, requests,
// window_start) and move in the serving transaction, so a count is exact across
// processes and a request is never counted twice. A counter whose window has passed
// reads as 0 and restarts at the next request; a batch that began just before a
// boundary that another process has already crossed counts into the newer window.
//
// The SQL and the readers of its rows live here; the worker advances counters with
// Advance (and reads them with Counted), the API and the CLI read them with ReadQuota.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/postgres/connection.hpp"

namespace runnel::pipeline::quota {

// Advances the counters of `per_client` by its counts (negative ones take counts back
// in the same transaction), in client order (two transactions lock counters in the
// same order and cannot deadlock), in the caller's transaction, locking them until it
// ends (a statement prepared once per connection); returns what each held before in
// the current window. Throws DatabaseError.
std::map<std::string, int64_t> Advance(postgres::Connection& conn, const PipelineConfig& config,
                                       const std::map<std::string, int64_t>& per_client);
// Why a throttled request of `client` was not served, as its result says it.
std::string OverQuotaMessage(const PipelineConfig& config, const std::string& client);
// The current window's counts of the clients of `per_client` (its keys), read without
// locking (a statement prepared once per connection); a client without a counter is
// absent. Throws DatabaseError.
std::map<std::string, int64_t> Counted(postgres::Connection& conn, const PipelineConfig& config,
                                       const std::map<std::string, int64_t>& per_client);

// The current window and the clients' counts in it.
struct Snapshot {
  std::string window_start;  // ISO 8601 UTC; empty when counting over all time
  std::string resets_at;     // ISO 8601 UTC; empty when counting over all time
  struct Client {
    std::string client;
    int64_t requests = 0;  // counted in the current window
  };
  std::vector<Client> clients;  // ordered by client
};

// Each of `clients` (0 requests for one without a counter), or every client with a
// counter when `clients` is empty. Precondition: the pipeline has a [quota] and is
// migrated. Throws DatabaseError.
Snapshot Read(postgres::Connection& conn, const PipelineConfig& config, const std::vector<std::string>& clients);

// The `limit` clients with the most requests in the current window, most first (ties
// by client). Precondition as Read. Throws DatabaseError.
Snapshot Top(postgres::Connection& conn, const PipelineConfig& config, int64_t limit);

// The current window and how many clients have a count in it, and how many of those
// reached max_requests: one row read, whatever the number of clients.
struct Summary {
  std::string window_start, resets_at;  // as in Snapshot
  int64_t clients = 0, at_limit = 0;
};
Summary Summarize(postgres::Connection& conn, const PipelineConfig& config);

// Forgets the counters of `clients` (every client when empty): their next request
// starts a new count. Returns how many counters there were.
int64_t Reset(postgres::Connection& conn, const PipelineConfig& config, const std::vector<std::string>& clients);

// "1000 requests per client per 1h" / "... over all time", for messages.
std::string Describe(const PipelineConfig& config);

}  // namespace runnel::pipeline::quota
