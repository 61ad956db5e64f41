// The HTTP API of `runnel run --http` (JSON, versioned under /v1): submit requests,
// follow and search them, run batch jobs, read quota state, manage the model registry;
// plus /metrics (Prometheus), /healthz and /readyz. docs/http-api.md is the reference.
//
// Requests posted here are inserted into the pipeline's source table (group commit,
// see ingest.hpp), so they take the same durable path as rows inserted by anyone.
//
// The pieces: http_transport (sockets and limits, src/server), router.hpp (routes),
// request_body.hpp (body parsers), one file per resource under src/server.
//
// Thread safety: Start/Stop from one thread; handlers run on the server's pools.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "runnel/pipeline/model_provider.hpp"
#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/server/completion.hpp"
#include "runnel/server/event_hub.hpp"
#include "runnel/server/metrics.hpp"

namespace runnel::server {

struct HttpOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                // 0: any free port (Start returns it)
  // Non-empty: an admin key ("Bearer <token>"); API keys (api_keys.hpp) work besides.
  // Every endpoint but /healthz needs a key once a token or a key exists, and always
  // on a non-loopback address unless `insecure`.
  std::string token;
  bool insecure = false;          // a non-loopback address without a token or key is open
  size_t io_threads = 2;          // socket reading and writing only
  size_t handler_threads = 16;    // handlers (database work)
  size_t wait_slots = 64;         // requests waiting for results at once (?wait=, model pushes)
  size_t max_connections = 4096;  // beyond: 503 and closed at once
  int head_timeout_ms = 10000;    // idle keep-alive time plus the whole request head
  int body_timeout_ms = 60000;    // the whole body
  size_t max_header_bytes = 64 << 10;
  size_t max_header_count = 100;
  size_t max_body_bytes = 64 << 20;        // a request's body (model pushes: max_model_bytes)
  size_t max_model_bytes = 0;              // 0: model::MaxModelBytes() (RUNNEL_MAX_MODEL_BYTES)
  size_t max_request_memory = 1ull << 30;  // all bodies in flight together
  // Model pushes are written to unnamed files here as they arrive (empty: $TMPDIR,
  // else /tmp), at most this many bytes together.
  std::string spool_dir;
  size_t max_spool_bytes = 4ull << 30;
  int max_wait_ms = 60000;                 // cap on ?wait=
  size_t ingest_threads = 1;               // group-commit inserters
  std::string access_log;                  // a file to append one line per response to; "-": stderr
  // Both set: HTTPS only, with this PEM certificate chain and private key.
  std::string https_cert;
  std::string https_key;
};

// "host:port" or ":port" (loopback). Throws Error(InvalidInput).
void ParseListenAddress(const std::string& address, HttpOptions& options);

// What the API serves of one pipeline. The pointed-to objects must outlive the server.
struct ServingContext {
  const pipeline::PipelineConfig* config = nullptr;  // non-owning
  std::string conninfo;
  std::shared_ptr<pipeline::ModelProvider> models;
  PipelineMetrics* metrics = nullptr;     // non-owning; null: not counted
  CompletionHub* completions = nullptr;   // non-owning
  EventHub* events = nullptr;             // non-owning; null: no /events
  std::function<bool()> workers_running;  // for /readyz
  // Why this process's workers are paused (one entry per paused worker), for /readyz.
  std::function<std::vector<std::string>()> pauses;
};

class HttpServer {
 public:
  // Serves the API of every pipeline in `pipelines` (at least one, named apart; each
  // under /v1/pipelines/<name>), and the routes they share (models, keys, jobs by id,
  // health, /metrics). `metrics` (non-owning, may be null) counts HTTP responses and
  // renders /metrics; the pipelines' ServingContext::metrics should be its own.
  // Throws Error(Config) when only one of https_cert and https_key is set,
  // Error(InvalidInput) for no pipeline or a name given twice.
  HttpServer(HttpOptions options, std::vector<ServingContext> pipelines, Metrics* metrics = nullptr);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Reads the source table's columns and the API keys, binds and starts serving on a
  // background thread. Returns the bound port. Throws Error(Unavailable) when the
  // address cannot be bound, Error(Config) for a certificate or key that cannot be
  // used, DatabaseError when the database cannot be read.
  int Start();
  // Stops accepting, finishes requests in flight, closes. Idempotent.
  void Stop();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace runnel::server
