// What the API's resources share: the pipeline, the connection pool, the ingestor and
// the source table's columns, plus helpers every resource uses. One file per resource
// adds its routes (requests_resource.cpp, jobs_resource.cpp, models_resource.cpp,
// health_resource.cpp); http_server.cpp wires them to the transport.
//
// Thread safety: immutable after Load() and the Add*Routes calls, except the pool and
// the ingestor, which are thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/postgres/pool.hpp"
#include "runnel/server/http_server.hpp"
#include "runnel/server/ingest.hpp"
#include "runnel/server/record_schema.hpp"
#include "runnel/server/router.hpp"

namespace runnel::server {

// One pipeline's API. A process serving several pipelines has one each; they share the
// connection pool and the routes not under /v1/pipelines/{p} (http_server.cpp).
struct Api {
  Api(HttpOptions options, ServingContext context, postgres::ConnectionPool& pool);

  // Reads the source table's columns and how its rows are keyed. Throws NotFound when
  // the table is missing, InvalidInput when its key cannot key requests.
  void Load();

  // Request ids and the keys clients see (pipeline/request_keys.hpp). A direct key's
  // JSON id is the integer; a mapped one's is its value (one column) or the array of
  // its values (composite), and in a path the values joined by ',' (each part
  // decoded before the split: a composite key with a ',' in a value, or any key with
  // a '/', can be read in listings but not addressed by path).
  // The request id of a path's key. Throws HttpError(404) when it names no request.
  int64_t RequestIdOf(postgres::Connection& conn, const std::string& path_key) const;
  // A path key's values, one per key column (split at ',' when composite).
  std::vector<std::string> SplitPathKey(const std::string& path_key) const;
  // The path form of a JSON id (IdJson's): the inverse of SplitPathKey.
  std::string PathKey(const nlohmann::json& id) const;
  // A request's JSON id from its RequestKeys::IdJsonSql column.
  nlohmann::json IdJson(const postgres::Result& r, int row, int column) const;

  HttpOptions options;
  ServingContext ctx;
  const pipeline::PipelineConfig& config;
  pipeline::SchemaNames names;
  postgres::ConnectionPool& pool;  // the server's, shared by its pipelines
  std::unique_ptr<Ingestor> ingestor;
  RecordSchema schema;  // the source table's columns and keys (Load)
  // Set when the server stops: waiting handlers answer with what they know at once.
  std::atomic<bool> stopping{false};

  // Throws HttpError(403) when the caller's key is bound to a client other than `client`.
  void CheckOwnClient(const HttpRequest& req, std::string_view client) const;
  // The client whose requests the caller may read, or nullopt for any. Throws
  // HttpError(403) for a client-bound key when the pipeline has no client column.
  std::optional<std::string> ReadableClient(const HttpRequest& req) const;
  // ?wait=MS capped at options.max_wait_ms, or nullopt; 422 when malformed.
  std::optional<int64_t> WaitParam(const HttpRequest& req) const;
};

// Route registration, one function per resource file. Those taking one Api add a
// pipeline's routes (Router::AddForPipeline), once per pipeline; the others add the
// process's routes once (`any`: whichever pipeline's pool and options serve them).
void AddRequestRoutes(Router& router, Api& api);
void AddJobRoutes(Router& router, Api& api);
void AddEventRoutes(Router& router, Api& api);
void AddSnapshotRoutes(Router& router, Api& api);  // snapshots_resource.cpp
void AddJobByIdRoutes(Router& router, Api& any);
void AddModelRoutes(Router& router, Api& any);
void AddKeyRoutes(Router& router, Api& any);
void AddHealthRoutes(Router& router, const std::vector<std::unique_ptr<Api>>& apis, const Metrics& metrics);
// The dashboard's page and files (open) and its JSON (read scope, no client-bound key).
void AddDashboardRoutes(Router& router, const std::vector<std::unique_ptr<Api>>& apis);

// A handler calling `method` on a resource the routes share.
template <typename Resource>
Handler Bind(const std::shared_ptr<Resource>& resource,
             void (Resource::*method)(const HttpRequest&, HttpResponse&, const PathParams&)) {
  return [resource, method](const HttpRequest& req, HttpResponse& res, const PathParams& m) {
    ((*resource).*method)(req, res, m);
  };
}

// Shared by resources.
// Throws HttpError(403) when the caller's key is bound to a client: `what` (e.g. "the
// dashboard shows") holds every client's requests, which such a key may not read.
void CheckUnboundKey(const HttpRequest& req, std::string_view what);
std::optional<int64_t> ParseInt(std::string_view text);
int64_t IdParam(const std::string& text, const char* what);  // 404 when not an integer
std::string IsoFromEpoch(double seconds);
// A client's count against a quota of `max`: requests, remaining, throttled (the
// /v1/state and dashboard answers).
nlohmann::json QuotaCountJson(int64_t requests, int64_t max);
// `text`, or null when empty (quota window bounds over all time).
nlohmann::json TextOrNull(const std::string& text);

}  // namespace runnel::server
