// /v1/pipelines/{p}/requests: submit records (optionally waiting for their results),
// read one request, list and filter them, retry a failed one.
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <future>
#include <map>
#include <mutex>

#include "api.hpp"
#include "outputs_json.hpp"
#include "runnel/core/mutex.hpp"
#include "runnel/pipeline/replay.hpp"
#include "runnel/pipeline/request_status.hpp"
#include "runnel/postgres/arrays.hpp"
#include "runnel/server/record_parser.hpp"
#include "runnel/server/request_body.hpp"

namespace runnel::server {

using nlohmann::json;
using postgres::ArrayLiteral;
using postgres::Params;
using postgres::QuoteIdentifier;

namespace {

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

// What RequestJson reads of a request (r: its result, if any), by these names; the
// id as clients see it is `id_json` (JSON text). The output columns come right after.
std::string RequestColumns(const std::string& id_json) {
  return fmt::format(
      "{} AS id, coalesce(r.status, 'queued') AS status, r.error AS error, r.model_version AS model_version, "
      "{} AS enqueued_at, {} AS finished_at, "
      "(extract(epoch FROM r.finished_at - r.enqueued_at) * 1000)::float8 AS latency_ms",
      id_json, postgres::IsoTimestampSql("r.enqueued_at"), postgres::IsoTimestampSql("r.finished_at"));
}

// One problem with one field of one record.
using Problems = json;  // array of {"record", "field", "error"}

class RequestsResource {
 public:
  explicit RequestsResource(Api& api) : api_(api), config_(api.config) {}

  void Post(const HttpRequest& req, HttpResponse& res, const PathParams& m);
  void Get(const HttpRequest& req, HttpResponse& res, const PathParams& m);
  void Retry(const HttpRequest& req, HttpResponse& res, const PathParams& m);
  void List(const HttpRequest& req, HttpResponse& res, const PathParams& m);

 private:
  using KeysDone = std::function<void(std::vector<int64_t> ids, std::exception_ptr error)>;
  void BindClient(json& record, size_t index, const std::string& client, Problems& problems) const;
  void CheckReadable(postgres::Connection& conn, const HttpRequest& req, int64_t id) const;
  RecordGroups ReadRecords(const HttpRequest& req) const;
  void Submit(RecordGroups records, KeysDone done);
  std::vector<int64_t> Insert(RecordGroups records);
  void SubmitLater(RecordGroups records, bool single, const HttpRequest& req, HttpResponse& res);
  bool WaitFor(const std::vector<int64_t>& ids, std::chrono::milliseconds wait);
  // The 202 of a POST without ?wait: {"id", "status"} for one record, {"ids", "status"}.
  json QueuedAnswer(const std::vector<int64_t>& ids, bool single) const;
  std::string OutputSelect() const;
  std::string InputsSql() const;
  std::map<int64_t, json> Fetch(postgres::Connection& conn, const std::vector<int64_t>& keys,
                                bool with_recommendations) const;
  void AddRecommendations(postgres::Connection& conn, const std::vector<int64_t>& keys,
                          std::map<int64_t, json>& out) const;
  // Row i of a statement selecting RequestColumns() then the output columns.
  json RequestJson(const postgres::Result& r, int i) const;

  Api& api_;
  const pipeline::PipelineConfig& config_;
};

// A key bound to a client submits for that client only: its client column is filled
// in, and a record naming another client is refused, so rotating the value in the
// body cannot escape the quota.
void RequestsResource::BindClient(json& record, size_t index, const std::string& client, Problems& problems) const {
  const std::string& column = config_.client_column;
  if (column.empty() || !record.is_object()) return;
  auto it = record.find(column);
  if (it == record.end()) {
    auto info = api_.schema.columns.find(column);
    const bool integer = info != api_.schema.columns.end() && info->second.kind == ColumnKind::kInteger;
    auto number = integer ? ParseInt(client) : std::nullopt;
    record[column] = number ? json(*number) : json(client);
    return;
  }
  const std::string given = it->is_string() ? it->get<std::string>() : it->dump();
  if (given != client) {
    problems.push_back({{"record", index},
                        {"field", column},
                        {"error", fmt::format("must be '{}' (the API key's client) or omitted", client)}});
  }
}

// Throws 404, as for a missing request, when the caller's key may not read `id`.
void RequestsResource::CheckReadable(postgres::Connection& conn, const HttpRequest& req, int64_t id) const {
  auto client = api_.ReadableClient(req);
  if (!client) return;
  auto r = conn.Exec(fmt::format("SELECT 1 FROM (SELECT $1::bigint AS id) k{} WHERE s.{}::text = $2",
                                 api_.schema.keys.JoinSourceById("k.id", QuoteIdentifier(config_.table), "s", "m"),
                                 QuoteIdentifier(config_.client_column)),
                     Params().Add(id).Add(*client));
  if (r.rows() == 0) throw HttpError{404, fmt::format("no request {} in pipeline '{}'", id, config_.name)};
}

// A record the table refused, named by its place in the body (`members`: the group's
// records' indices there) as validation names a problem; any other error as it is.
std::exception_ptr PlacedInBody(std::exception_ptr error, const std::vector<size_t>& members) {
  try {
    std::rethrow_exception(error);
  } catch (const RecordRefused& e) {
    if (e.row() >= members.size()) return error;
    const size_t record = members[e.row()];
    const std::string reason = fmt::format("{} (SQLSTATE {})", e.primary(), e.sqlstate());
    return std::make_exception_ptr(
        HttpError{422,
                  fmt::format("the database refused record {}{}: {}", record,
                              e.column().empty() ? "" : fmt::format(", field '{}'", e.column()), reason),
                  {{"errors", json::array({{{"record", record}, {"field", e.column()}, {"error", reason}}})}}});
  } catch (...) {
    return error;
  }
}

// One submission per column set (omitted columns take their defaults); `done` gets
// the keys in the records' order, or the first error, once every group committed.
void RequestsResource::Submit(RecordGroups records, KeysDone done) {
  struct Join {
    Mutex mutex;
    std::vector<int64_t> ids GUARDED_BY(mutex);
    size_t remaining GUARDED_BY(mutex);
    std::exception_ptr error GUARDED_BY(mutex);
    KeysDone done;  // called once, by the last group's callback
  };
  auto join = std::make_shared<Join>();
  {
    MutexLock lock(join->mutex);
    join->ids.resize(records.records);
    join->remaining = records.groups.size();
  }
  join->done = std::move(done);
  for (auto& group : records.groups) {
    api_.ingestor->Submit(
        std::move(group.columns), std::move(group.rows),
        [join, members = std::move(group.members)](std::vector<int64_t> keys, std::exception_ptr error) {
          std::vector<int64_t> ids;
          std::exception_ptr first_error;
          {
            if (error) error = PlacedInBody(error, members);
            MutexLock lock(join->mutex);
            if (!error && keys.size() != members.size())
              error = std::make_exception_ptr(HttpError{500, "the database returned fewer keys than records"});
            if (error && !join->error) join->error = error;
            for (size_t j = 0; !error && j < members.size(); ++j) join->ids[members[j]] = keys[j];
            if (--join->remaining > 0) return;
            ids = std::move(join->ids);
            first_error = join->error;
          }
          join->done(std::move(ids), first_error);
        });
  }
}

std::vector<int64_t> RequestsResource::Insert(RecordGroups records) {
  std::promise<std::vector<int64_t>> promise;
  auto future = promise.get_future();
  Submit(std::move(records), [&promise](std::vector<int64_t> ids, std::exception_ptr error) {
    if (error) {
      promise.set_exception(error);
    } else {
      promise.set_value(std::move(ids));
    }
  });
  return future.get();
}

// The body's records, validated and grouped: straight from the body when they are
// plain (ParseValidRecords), else through JSON values, which names every problem (and
// fills in the client column of a key bound to a client).
// Throws HttpError: 400 malformed, 413, 415, 422 (no records, or invalid fields).
RecordGroups RequestsResource::ReadRecords(const HttpRequest& req) const {
  const std::string_view content_type = req.HeaderOr("Content-Type");
  if (!req.access.client) {
    if (auto groups = ParseValidRecords(req.body, content_type, api_.schema)) return std::move(*groups);
  }
  auto records = ParseRecords(req.body, content_type);
  Problems problems = json::array();
  if (req.access.client) {
    for (size_t i = 0; i < records.size() && problems.size() < 100; ++i)
      BindClient(records[i], i, *req.access.client, problems);
  }
  for (size_t i = 0; i < records.size() && problems.size() < 100; ++i) api_.schema.Validate(records[i], i, problems);
  if (!problems.empty()) {
    throw HttpError{
        422, fmt::format("{} invalid field(s); nothing was inserted", problems.size()), {{"errors", problems}}};
  }
  return GroupRecords(api_.schema, records);
}

void RequestsResource::Post(const HttpRequest& req, HttpResponse& res, const PathParams&) {
  const auto wait_ms = api_.WaitParam(req);
  const bool single = IsSingleRecord(req.body, req.HeaderOr("Content-Type"));
  auto records = ReadRecords(req);
  const size_t count = records.records;
  if (!wait_ms) return SubmitLater(std::move(records), single, req, res);
  const auto ids = Insert(std::move(records));
  if (api_.ctx.metrics != nullptr) api_.ctx.metrics->RecordIngested(count);
  const bool complete = WaitFor(ids, std::chrono::milliseconds(*wait_ms));
  auto found = api_.pool.Run([&](postgres::Connection& conn) { return Fetch(conn, ids, true); });
  json requests = json::array();
  for (int64_t id : ids) requests.push_back(found.contains(id) ? found[id] : json{{"id", id}, {"status", "queued"}});
  // One record: the request as GET .../requests/{id} shows it; several: as the listing.
  Reply(res, complete ? 200 : 202, single ? requests.front() : json{{"requests", std::move(requests)}});
}

json RequestsResource::QueuedAnswer(const std::vector<int64_t>& ids, bool single) const {
  json shown = json::array();
  if (api_.schema.keys.mapped()) {
    // Request ids are Runnel's: clients see their keys. (One query, on the ingest thread.)
    auto keys = api_.pool.Run([&](postgres::Connection& conn) {
      return conn.Exec(fmt::format("SELECT {} FROM unnest($1::bigint[]) WITH ORDINALITY AS k(id, ord) JOIN {} m ON "
                                   "m.{} = k.id ORDER BY k.ord",
                                   api_.schema.keys.IdJsonSql("m", "k.id"), api_.schema.keys.map_table(),
                                   pipeline::RequestKeys::kIdColumn),
                       Params().Add(ArrayLiteral(ids)));
    });
    for (int i = 0; i < keys.rows(); ++i) shown.push_back(api_.IdJson(keys, i, 0));
  } else {
    shown = ids;
  }
  if (single) return {{"id", shown.empty() ? json(nullptr) : shown.front()}, {"status", "queued"}};
  return {{"ids", shown}, {"status", "queued"}};
}

// Without ?wait: answered once the group commit has the keys, no thread waiting.
void RequestsResource::SubmitLater(RecordGroups records, bool single, const HttpRequest& req, HttpResponse& res) {
  auto shared = std::make_shared<RecordGroups>(std::move(records));
  HttpRequest named;  // for the log
  named.method = req.method;
  named.path = req.path;
  res.deferred = [this, shared, single, named](std::shared_ptr<Responder> responder) {
    const size_t count = shared->records;
    Submit(std::move(*shared),
           [this, responder, single, count, named](std::vector<int64_t> ids, std::exception_ptr error) {
             HttpResponse reply;
             if (error) {
               ReplyException(reply, error, named);
             } else {
               if (api_.ctx.metrics != nullptr) api_.ctx.metrics->RecordIngested(count);
               Reply(reply, 202, QueuedAnswer(ids, single));
             }
             responder->Send(std::move(reply));
           });
  };
}

// Waits for every key's result: woken by this process's workers, re-checking the
// database every 50 ms for requests another process serves.
bool RequestsResource::WaitFor(const std::vector<int64_t>& ids, std::chrono::milliseconds wait) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  auto* hub = api_.ctx.completions;
  auto waiter = hub->Watch(ids);
  auto check_database = [&] {
    const auto pending = waiter->Pending();
    auto r = api_.pool.Run([&](postgres::Connection& conn) {
      return conn.Exec(
          fmt::format("SELECT key FROM {} WHERE key = ANY($1::bigint[])", QuoteIdentifier(api_.names.results)),
          Params().Add(ArrayLiteral(pending)));
    });
    std::vector<int64_t> done;
    for (int i = 0; i < r.rows(); ++i) done.push_back(r.Get<int64_t>(i, 0));
    waiter->Satisfy(done);
  };
  bool complete = false;
  try {
    check_database();
    while (true) {
      const auto slice = std::min(deadline, std::chrono::steady_clock::now() + std::chrono::milliseconds(50));
      if (waiter->WaitUntil(slice)) {
        complete = true;
        break;
      }
      if (std::chrono::steady_clock::now() >= deadline || api_.stopping.load()) break;
      check_database();
    }
  } catch (...) {
    hub->Forget(waiter, ids);
    throw;
  }
  hub->Forget(waiter, ids);
  return complete;
}

// The request's input columns (numeric and text) as its row `s` holds them now, as
// JSON text; NULL when the row is gone.
std::string RequestsResource::InputsSql() const {
  std::string pairs;
  for (const auto* columns : {&config_.features.input_columns, &config_.features.text_columns}) {
    for (const auto& c : *columns) {
      pairs += fmt::format("{}{}, s.{}", pairs.empty() ? "" : ", ", postgres::QuoteLiteral(c), QuoteIdentifier(c));
    }
  }
  return fmt::format("CASE WHEN s.{} IS NOT NULL THEN json_build_object({})::text END AS inputs",
                     QuoteIdentifier(config_.key_columns.front()), pairs);
}

std::string RequestsResource::OutputSelect() const {
  std::string select;
  for (const auto& column : config_.output_columns) select += ", r." + QuoteIdentifier(column);
  return select;
}

// One JSON object per key (absent when neither the row nor a result exists).
std::map<int64_t, json> RequestsResource::Fetch(postgres::Connection& conn, const std::vector<int64_t>& keys,
                                                bool with_recommendations) const {
  std::map<int64_t, json> out;
  if (keys.empty()) return out;
  auto r = conn.Exec(
      fmt::format(
          "SELECT k.key AS key, s.{key} IS NOT NULL AS has_row, r.key IS NOT NULL AS has_result, {inputs}, "
          "{columns}{outs} FROM unnest($1::bigint[]) AS k(key){source} "
          "LEFT JOIN {results} r ON r.key = k.key",
          fmt::arg("key", QuoteIdentifier(config_.key_columns.front())),
          fmt::arg("columns", RequestColumns(api_.schema.keys.IdJsonSql("m", "k.key"))),
          fmt::arg("source", api_.schema.keys.JoinSourceById("k.key", QuoteIdentifier(config_.table), "s", "m")),
          fmt::arg("outs", OutputSelect()), fmt::arg("inputs", InputsSql()),
          fmt::arg("table", QuoteIdentifier(config_.table)), fmt::arg("results", QuoteIdentifier(api_.names.results))),
      Params().Add(ArrayLiteral(keys)));
  const int key = r.ColumnIndex("key"), has_row = r.ColumnIndex("has_row"), has_result = r.ColumnIndex("has_result");
  const int inputs = r.ColumnIndex("inputs");
  for (int i = 0; i < r.rows(); ++i) {
    if (!r.Get<bool>(i, has_row) && !r.Get<bool>(i, has_result)) continue;
    json request = RequestJson(r, i);
    request["inputs"] = r.IsNull(i, inputs) ? json(nullptr) : json::parse(r.Get<std::string>(i, inputs));
    out[r.Get<int64_t>(i, key)] = std::move(request);
  }
  if (with_recommendations && config_.recommend) AddRecommendations(conn, keys, out);
  return out;
}

void RequestsResource::AddRecommendations(postgres::Connection& conn, const std::vector<int64_t>& keys,
                                          std::map<int64_t, json>& out) const {
  auto recs = conn.Exec(fmt::format("SELECT request_key, product_key FROM {} WHERE request_key = ANY($1::bigint[]) "
                                    "ORDER BY request_key, product_key",
                                    QuoteIdentifier(api_.names.recommendations)),
                        Params().Add(ArrayLiteral(keys)));
  for (auto& [key, request] : out) {
    if (request["status"] == pipeline::RequestStatusName(pipeline::RequestStatus::kDone))
      request["recommendations"] = json::array();
  }
  for (int i = 0; i < recs.rows(); ++i) {
    auto it = out.find(recs.Get<int64_t>(i, "request_key"));
    if (it != out.end()) it->second["recommendations"].push_back(recs.Get<int64_t>(i, "product_key"));
  }
}

// Column `id_column` is the id as JSON text (RequestKeys::IdJsonSql); from `first`: status, error, model_version,
// enqueued, finished, latency, then the output columns.
json RequestsResource::RequestJson(const postgres::Result& r, int i) const {
  auto text_or_null = [&](std::string_view c) {
    return r.IsNull(i, c) ? json(nullptr) : json(r.Get<std::string>(i, c));
  };
  json request;
  request["id"] = api_.IdJson(r, i, r.ColumnIndex("id"));
  request["status"] = r.Get<std::string>(i, "status");
  request["error"] = text_or_null("error");
  request["model_version"] = text_or_null("model_version");
  // The outputs follow RequestColumns' last (their names are the pipeline's).
  request["outputs"] = OutputsJson(config_, r, i, r.ColumnIndex("latency_ms") + 1);
  json timings = json::object();
  timings["enqueued_at"] = text_or_null("enqueued_at");
  timings["finished_at"] = text_or_null("finished_at");
  const auto latency = r.GetOptional<double>(i, "latency_ms");
  timings["latency_ms"] = latency ? json(*latency) : json(nullptr);
  request["timings"] = timings;
  return request;
}

void RequestsResource::Get(const HttpRequest& req, HttpResponse& res, const PathParams& m) {
  int64_t id = 0;
  auto found = api_.pool.Run([&](postgres::Connection& conn) {
    id = api_.RequestIdOf(conn, m[1]);
    CheckReadable(conn, req, id);
    return Fetch(conn, {id}, true);
  });
  if (!found.contains(id)) throw HttpError{404, fmt::format("no request {} in pipeline '{}'", m[1], config_.name)};
  Reply(res, 200, found[id]);
}

// Re-queues one failed request (exactly once: a second call finds it queued).
void RequestsResource::Retry(const HttpRequest& req, HttpResponse& res, const PathParams& m) {
  auto lease = api_.pool.Acquire();
  const int64_t id = api_.RequestIdOf(*lease, m[1]);
  CheckReadable(*lease, req, id);
  pipeline::RetryFilter filter;
  filter.key = id;
  auto outcome = pipeline::RetryFailed(*lease, config_, filter);
  if (outcome.requeued == 0) {
    auto found = Fetch(*lease, {id}, false);
    if (!found.contains(id)) throw HttpError{404, fmt::format("no request {} in pipeline '{}'", m[1], config_.name)};
    throw HttpError{409, fmt::format("request {} is {}, not failed: only failed requests are retried", m[1],
                                     found[id]["status"].get<std::string>())};
  }
  auto shown = Fetch(*lease, {id}, false);
  Reply(res, 202,
        {{"id", shown.contains(id) ? shown[id]["id"] : json(id)}, {"status", "queued"}, {"job", *outcome.job}});
}

// The WHERE conditions and parameters of a listing, from its query parameters.
struct ListQuery {
  int64_t limit = 100;
  std::optional<std::string> after;  // the previous page's last key, as in a path
  std::vector<std::string> where;
  Params params;
  int next = 1;
  bool needs_result = false;  // a status only a result row has (not queued)

  std::string Param(const std::string& value) {
    params.Add(value);
    return fmt::format("${}", next++);
  }
};

void AddOutputCondition(const pipeline::PipelineConfig& config, const std::string& name, const std::string& value,
                        ListQuery& q) {
  // <output>, <output>.gte/.gt/.lte/.lt
  const auto dot = name.rfind('.');
  const std::string column = dot == std::string::npos ? name : name.substr(0, dot);
  const std::string op_name = dot == std::string::npos ? "" : name.substr(dot + 1);
  static const std::map<std::string, std::string> kOps = {
      {"", "="}, {"gte", ">="}, {"gt", ">"}, {"lte", "<="}, {"lt", "<"}};
  const bool is_output =
      std::find(config.output_columns.begin(), config.output_columns.end(), column) != config.output_columns.end();
  if (!is_output || !kOps.contains(op_name)) {
    throw HttpError{422, fmt::format("unknown query parameter '{}': use status, {}limit, after, or an output "
                                     "column ({}) with an optional .gte/.gt/.lte/.lt",
                                     name, config.client_column.empty() ? "" : config.client_column + ", ",
                                     fmt::join(config.output_columns, ", "))};
  }
  if (pipeline::IsLabelOutput(config, column)) {  // a class label: text, compared as text
    if (!op_name.empty()) throw HttpError{422, fmt::format("'{}' is a class label: filter it by equality", name)};
    q.where.push_back(fmt::format("r.{} = {}", QuoteIdentifier(column), q.Param(value)));
    return;
  }
  if (!ParseDouble(value)) throw HttpError{422, fmt::format("'{}' must be a number", name)};
  q.where.push_back(fmt::format("r.{} {} {}::float8", QuoteIdentifier(column), kOps.at(op_name), q.Param(value)));
}

// Where a listing reads its rows from and orders them by. Usually the source table, its
// result joined. Filtered by a status only a result row has, the results themselves:
// a `gone` request's row is no more, and walking the results (through their status
// indexes) finds a rare status without reading every source row. The key to order and
// page by is then the map's (mapped keys) or the request id (direct).
struct ListSource {
  std::string from;
  std::string order;    // the key columns, in key order
  std::string id_json;  // the request's id as clients see it
};

ListSource ListSourceOf(const Api& api, bool needs_result) {
  const auto& keys = api.schema.keys;
  const std::string table = QuoteIdentifier(api.config.table), results = QuoteIdentifier(api.names.results);
  if (!needs_result) {
    return {fmt::format("{} s LEFT JOIN {} r ON r.key = {}", table, results, keys.IdOf("s")), keys.ColumnList("s"),
            keys.IdJsonSql("s", keys.IdOf("s"))};
  }
  if (!keys.mapped()) {
    return {fmt::format("{} r LEFT JOIN {} s ON s.{} = r.key", results, table, QuoteIdentifier(keys.id_column())),
            "r.key", keys.IdJsonSql("s", "r.key")};
  }
  return {fmt::format("{} r JOIN {} m ON m.{} = r.key LEFT JOIN {} s ON s.{} = r.key", results, keys.map_table(),
                      pipeline::RequestKeys::kIdColumn, table, QuoteIdentifier(keys.id_column())),
          keys.ColumnList("m"), keys.IdJsonSql("m", "r.key")};
}

ListQuery ParseListQuery(const pipeline::PipelineConfig& config, const Fields& query) {
  ListQuery q;
  for (const auto& [name, value] : query) {
    if (name == "limit") {
      auto v = ParseInt(value);
      if (!v || *v < 1 || *v > 1000) throw HttpError{422, "'limit' must be 1..1000"};
      q.limit = *v;
    } else if (name == "after") {
      q.after = value;
    } else if (name == "status") {
      if (!pipeline::ParseRequestStatus(value))
        throw HttpError{422, fmt::format("unknown status '{}': queued, done, throttled or failed", value)};
      // Queued: never served, or re-queued by a retry (its result row says 'queued').
      q.where.push_back(value == "queued" ? "(r.key IS NULL OR r.status = 'queued')"
                                          : fmt::format("r.status = {}", q.Param(value)));
      q.needs_result = q.needs_result || value != "queued";
    } else if (!config.client_column.empty() && name == config.client_column) {
      q.where.push_back(fmt::format("s.{}::text = {}", QuoteIdentifier(config.client_column), q.Param(value)));
    } else {
      AddOutputCondition(config, name, value, q);
    }
  }
  return q;
}

void RequestsResource::List(const HttpRequest& req, HttpResponse& res, const PathParams&) {
  ListQuery q = ParseListQuery(config_, req.query);
  if (auto client = api_.ReadableClient(req)) {
    q.where.push_back(fmt::format("s.{}::text = {}", QuoteIdentifier(config_.client_column), q.Param(*client)));
  }
  const auto& keys = api_.schema.keys;
  const ListSource source = ListSourceOf(api_, q.needs_result);
  if (q.after) {
    const auto parts = api_.SplitPathKey(*q.after);
    const bool integer = keys.mapped() || ParseInt(*q.after).has_value();
    if (parts.size() != keys.columns().size() || !integer)
      throw HttpError{422, "'after' must be a key (the previous page's 'next')"};
    for (const auto& part : parts) q.params.Add(part);
    q.where.push_back(fmt::format("({}) > ({})", source.order, keys.TypedParams(q.next)));
    q.next += static_cast<int>(parts.size());
  }
  q.params.Add(q.limit);
  const int limit_param = q.next++;
  const std::string condition = q.where.empty() ? "true" : fmt::format("{}", fmt::join(q.where, " AND "));
  // Keyset pagination on the key: new rows get larger keys (or land in a page not
  // yet read), so no page repeats or skips a row under concurrent inserts.
  const std::string sql =
      fmt::format("SELECT {columns}{outs} FROM {from} WHERE {cond} ORDER BY {order} LIMIT ${lim}",
                  fmt::arg("columns", RequestColumns(source.id_json)), fmt::arg("from", source.from),
                  fmt::arg("order", source.order), fmt::arg("outs", OutputSelect()), fmt::arg("cond", condition),
                  fmt::arg("lim", limit_param));
  auto r = api_.pool.Run([&](postgres::Connection& conn) {
    try {
      return conn.Exec(sql, q.params);
    } catch (const postgres::DatabaseError& e) {
      if (e.sqlstate().starts_with("22")) throw HttpError{422, "'after' is not a key of this pipeline"};
      throw;
    }
  });
  json items = json::array();
  for (int i = 0; i < r.rows(); ++i) items.push_back(RequestJson(r, i));
  json body;
  body["requests"] = items;
  body["next"] = nullptr;
  if (r.rows() == q.limit) {
    const json& last = items.back()["id"];
    body["next"] = keys.mapped() ? json(api_.PathKey(last)) : last;
  }
  Reply(res, 200, body);
}

}  // namespace

void AddRequestRoutes(Router& router, Api& api) {
  auto resource = std::make_shared<RequestsResource>(api);
  auto bind = [&resource](auto method) { return Bind(resource, method); };
  RouteOptions post;
  post.wait_on_query = true;
  // Without ?wait the handler parses, validates and hands over: small bodies on the
  // I/O thread itself; large ones (parsing takes long) on the handler pool.
  post.inline_max_body = 64 << 10;
  post.scope = Scope::kSubmit;
  const auto read = RouteOptions::For(Scope::kRead);
  router.AddForPipeline(api.config.name, "POST", "/v1/pipelines/{p}/requests", bind(&RequestsResource::Post), post);
  router.AddForPipeline(api.config.name, "GET", "/v1/pipelines/{p}/requests", bind(&RequestsResource::List), read);
  router.AddForPipeline(api.config.name, "GET", "/v1/pipelines/{p}/requests/{id}", bind(&RequestsResource::Get), read);
  router.AddForPipeline(api.config.name, "POST", "/v1/pipelines/{p}/requests/{id}/retry",
                        bind(&RequestsResource::Retry), RouteOptions::For(Scope::kSubmit));
}

}  // namespace runnel::server
