#include "runnel/server/jetstream_direct.hpp"

#include <fmt/format.h>

#include <chrono>
#include <map>

#include "runnel/core/error.hpp"
#include "runnel/pipeline/quota.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/pipeline/serving_stages.hpp"

namespace runnel::server {

using nlohmann::json;
using pipeline::RequestStatus;
using postgres::Params;

namespace {

// A JSON value as a text input, client or data type: a string as it is, a number as
// its JSON text; nullopt for anything else.
std::optional<std::string> TextOf(const json& record, const std::string& column) {
  const auto it = record.find(column);
  if (it == record.end()) return std::nullopt;
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number()) return it->dump();
  return std::nullopt;
}

// The columns of a stored result, its message body built by PostgreSQL (one form for
// the results served now and those published again). finished_at is taken_at: the
// time the result was written (clock_timestamp(), as the workers' results take it).
std::string ResultColumnsSql() {
  return fmt::format(
      "client, seq, item, json_build_object('stream', stream, 'seq', seq, 'item', item, 'status', status, 'error', "
      "error, 'model_version', model_version, 'outputs', outputs, 'finished_at', {}, 'client', client)::text AS body",
      postgres::IsoTimestampSql("taken_at"));
}

}  // namespace

DirectInputs ReadDirectInputs(const pipeline::PipelineConfig& config, std::span<const DirectRecord> records,
                              ColumnBatch& batch) {
  const auto& numeric = config.features.input_columns;
  const auto& text = config.features.text_columns;
  batch.Reset(numeric, records.size(), text);
  DirectInputs out;
  out.clients.resize(records.size());
  out.data_types.resize(records.size());
  for (size_t r = 0; r < records.size(); ++r) {
    const json& record = *records[r].record;
    for (size_t c = 0; c < numeric.size(); ++c) {
      const auto it = record.find(numeric[c]);
      if (it != record.end() && it->is_number()) batch.Set(c, r, it->get<double>());
    }
    for (size_t c = 0; c < text.size(); ++c) {
      if (auto value = TextOf(record, text[c])) {
        batch.texts[c][r] = std::move(*value);
        batch.text_nulls[c][r] = 0;
      }
    }
    if (!config.client_column.empty()) out.clients[r] = TextOf(record, config.client_column);
    if (!config.model_type_column.empty()) out.data_types[r] = TextOf(record, config.model_type_column);
  }
  return out;
}

std::vector<std::optional<std::string>> ScoredOutputsJson(const pipeline::PipelineConfig& config,
                                                          const pipeline::Verdicts& verdicts,
                                                          const pipeline::ScoredOutputs& outputs) {
  std::vector<std::optional<std::string>> out(verdicts.status.size());
  for (size_t i = 0; i < out.size(); ++i) {
    if (verdicts.status[i] != RequestStatus::kDone) continue;
    json object = json::object();
    for (size_t o = 0; o < config.output_columns.size(); ++o) {
      const auto& column = config.output_columns[o];
      object[column] = nullptr;
      if (!outputs.labels[o].empty()) {
        if (outputs.labels[o][i]) object[column] = *outputs.labels[o][i];
      } else if (outputs.values[o][i]) {
        object[column] = *outputs.values[o][i];
      }
    }
    out[i] = object.dump(-1, ' ', false, json::error_handler_t::replace);
  }
  return out;
}

DirectCounts ReadDirectCounts(postgres::Connection& conn, const pipeline::PipelineConfig& config) {
  auto r =
      conn.Exec(fmt::format("SELECT count(*) FILTER (WHERE status = 'done') AS done, count(*) FILTER (WHERE "
                            "status = 'throttled') AS throttled, count(*) FILTER (WHERE status = 'failed') AS "
                            "failed FROM {} WHERE status IS NOT NULL",
                            postgres::QuoteIdentifier(pipeline::NamesFor(config).jetstream)));
  return {r.Get<int64_t>(0, r.ColumnIndex("done")), r.Get<int64_t>(0, r.ColumnIndex("throttled")),
          r.Get<int64_t>(0, r.ColumnIndex("failed"))};
}

DirectScoring::DirectScoring(const pipeline::PipelineConfig& config, std::shared_ptr<pipeline::ModelProvider> models)
    : config_(config),
      table_(postgres::QuoteIdentifier(pipeline::NamesFor(config).jetstream)),
      scorer_(config, std::move(models)) {}

std::vector<DirectResult> DirectScoring::Serve(postgres::Connection& conn, const std::string& stream,
                                               std::span<const DirectRecord> records, pipeline::BatchResult& tally) {
  scorer_.Sync();  // between batches only: one batch, one model snapshot
  if (scorer_.empty())
    throw Error(ErrorCode::Unavailable,
                fmt::format("no model of pipeline '{}' is ready yet: the messages wait in the stream", config_.name));
  const DirectInputs inputs = ReadDirectInputs(config_, records, scorer_.inputs());
  pipeline::Verdicts verdicts;
  verdicts.Resize(records.size());
  const auto label = [&](size_t i) {
    return fmt::format("stream {} sequence {} record {}", stream, records[i].seq, records[i].item + 1);
  };
  if (config_.quota_max_requests) {
    for (size_t i = 0; i < records.size(); ++i) {
      if (!inputs.clients[i])
        verdicts.Fail(i, pipeline::kNullClientState,
                      fmt::format("{}: field '{}' is missing or null", label(i), config_.client_column));
    }
    ApplyQuota(verdicts, inputs, conn);
  }
  const auto outputs = scorer_.Score(verdicts, inputs.data_types, label);
  auto stored = Store(conn, stream, records, verdicts, inputs, outputs);
  Tally(verdicts, records, tally);
  return stored;
}

// Each record's result into runnel_<p>_jetstream (finished_at: when it is written);
// returns them as published.
std::vector<DirectResult> DirectScoring::Store(postgres::Connection& conn, const std::string& stream,
                                               std::span<const DirectRecord> records,
                                               const pipeline::Verdicts& verdicts, const DirectInputs& inputs,
                                               const pipeline::ScoredOutputs& outputs) const {
  std::vector<int64_t> seqs, items, stored_us;
  std::vector<std::optional<std::string>> status;
  for (size_t i = 0; i < records.size(); ++i) {
    seqs.push_back(records[i].seq);
    items.push_back(records[i].item);
    stored_us.push_back(records[i].stored_us);
    status.emplace_back(pipeline::RequestStatusName(*verdicts.status[i]));
  }
  auto rows = conn.Exec(
      fmt::format("INSERT INTO {} (stream, seq, item, taken_at, published_at, status, error, sqlstate, model_version, "
                  "client, outputs) SELECT $1, s, n, clock_timestamp(), timestamptz 'epoch' + p * interval "
                  "'1 microsecond', st, e, ss, v, c, o::jsonb FROM unnest($2::bigint[], $3::bigint[], $4::bigint[], "
                  "$5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[]) "
                  "AS u(s, n, p, st, e, ss, v, c, o) RETURNING {}",
                  table_, ResultColumnsSql()),
      Params()
          .Add(stream)
          .AddArray(seqs)
          .AddArray(items)
          .AddArray(stored_us)
          .AddArray(status)
          .AddArray(verdicts.error)
          .AddArray(verdicts.sqlstate)
          .AddArray(outputs.versions)
          .AddArray(inputs.clients)
          .AddArray(ScoredOutputsJson(config_, verdicts, outputs)));
  return ReadResults(rows, stream);
}

void DirectScoring::Tally(const pipeline::Verdicts& verdicts, std::span<const DirectRecord> records,
                          pipeline::BatchResult& tally) const {
  const auto now_us =
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count();
  for (size_t i = 0; i < records.size(); ++i) {
    pipeline::CountVerdict(verdicts, i, tally);
    tally.latencies_ms.push_back(static_cast<double>(now_us - records[i].stored_us) / 1000.0);
  }
}

// Quota: each request not decided yet counts for its client; those past max_requests
// are throttled. The counters stay locked until the transaction ends.
void DirectScoring::ApplyQuota(pipeline::Verdicts& verdicts, const DirectInputs& inputs,
                               postgres::Connection& conn) const {
  const size_t n = verdicts.status.size();
  std::vector<bool> counted(n, false);
  std::map<std::string, int64_t> per_client;
  for (size_t i = 0; i < n; ++i) {
    counted[i] = !verdicts.status[i];
    if (counted[i]) ++per_client[*inputs.clients[i]];
  }
  if (per_client.empty()) return;
  const auto over = pipeline::Throttle(inputs.clients, counted, pipeline::quota::Advance(conn, config_, per_client),
                                       *config_.quota_max_requests);
  for (size_t i = 0; i < n; ++i) {
    if (!over[i]) continue;
    verdicts.status[i] = RequestStatus::kThrottled;
    verdicts.error[i] = pipeline::quota::OverQuotaMessage(config_, *inputs.clients[i]);
  }
}

std::vector<DirectResult> DirectScoring::Stored(postgres::Connection& conn, const std::string& stream,
                                                const std::vector<int64_t>& seqs) const {
  auto rows = conn.Exec(fmt::format("SELECT {} FROM {} WHERE stream = $1 AND seq = ANY($2::bigint[]) AND status IS "
                                    "NOT NULL ORDER BY seq, item",
                                    ResultColumnsSql(), table_),
                        Params().Add(stream).AddArray(seqs));
  return ReadResults(rows, stream);
}

std::vector<DirectResult> DirectScoring::ReadResults(const postgres::Result& rows, const std::string& stream) const {
  const int client = rows.ColumnIndex("client"), seq = rows.ColumnIndex("seq"), item = rows.ColumnIndex("item"),
            body = rows.ColumnIndex("body");
  std::vector<DirectResult> out;
  out.reserve(static_cast<size_t>(rows.rows()));
  for (int r = 0; r < rows.rows(); ++r) {
    out.push_back(
        {rows.GetOptional<std::string>(r, client),
         fmt::format("{}:{}:{}:{}", config_.name, stream, rows.Get<int64_t>(r, seq), rows.Get<int64_t>(r, item)),
         rows.Get<std::string>(r, body)});
  }
  return out;
}

}  // namespace runnel::server
