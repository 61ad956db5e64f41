#include "runnel/server/grants.hpp"

#include <fmt/format.h>

#include "runnel/core/error.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/registry/registry.hpp"
#include "runnel/server/api_keys.hpp"
#include "runnel/server/samples.hpp"

namespace runnel::server {

using postgres::Params;
using postgres::QuoteIdentifier;

namespace {

constexpr std::string_view kReadWrite = "SELECT, INSERT, UPDATE, DELETE";

// A table and the privileges the serving role gets on it.
struct TableRights {
  std::string table;
  std::string privileges;
};

std::vector<TableRights> TablesOf(const pipeline::PipelineConfig& config) {
  const auto names = pipeline::NamesFor(config);
  std::vector<TableRights> tables = {{names.queue, std::string(kReadWrite)},
                                     {names.results, std::string(kReadWrite)},
                                     {names.quota, std::string(kReadWrite)},
                                     {names.recommendations, std::string(kReadWrite)},
                                     {names.events, std::string(kReadWrite)},
                                     {"runnel_jobs", std::string(kReadWrite)},
                                     {"runnel_pauses", std::string(kReadWrite)},
                                     {"runnel_migrations", "SELECT"},
                                     {"runnel_models", "SELECT, INSERT, UPDATE"},
                                     {"runnel_model_state", std::string(kReadWrite)},
                                     {"runnel_samples", std::string(kReadWrite)},
                                     {"runnel_api_keys", "SELECT, INSERT, UPDATE"},
                                     // Mapped keys (exist only then): the view of request ids and keys; the delete
                                     // trigger, run by whoever deletes, keeps deleted rows' keys.
                                     {names.keys, "SELECT"},
                                     {names.gone_keys, "SELECT, INSERT"},
                                     // [jetstream] (exists only then): messages taken in; how far results
                                     // were published.
                                     {names.jetstream, "SELECT, INSERT"},
                                     {names.published, "SELECT, INSERT, UPDATE"}};
  if (config.recommend) tables.push_back({config.recommend->table, "SELECT"});
  return tables;
}

void CheckMigratedFor(postgres::Connection& conn, const pipeline::PipelineConfig& config) {
  if (pipeline::SchemaVersion(conn, config) < pipeline::kSchemaVersion) {
    throw Error(ErrorCode::NotFound, fmt::format("pipeline '{}' is not migrated: run `runnel migrate --pipeline {}` as "
                                                 "the table's owner first",
                                                 config.name, config.file.string()));
  }
}

// The sequences of the serial and identity columns of `table` (identity sequences need
// no grant for inserts, but listing them is harmless and keeps this one query).
std::vector<std::string> SequencesOf(postgres::Connection& conn, const std::string& table) {
  auto r = conn.Exec(
      "SELECT s::text AS sequence FROM (SELECT pg_get_serial_sequence($1, a.attname) AS s FROM pg_attribute a "
      "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped) q WHERE s IS NOT NULL",
      Params().Add(QuoteIdentifier(table)));
  std::vector<std::string> sequences;
  const int column = r.ColumnIndex("sequence");
  for (int i = 0; i < r.rows(); ++i) sequences.push_back(r.Get<std::string>(i, column));
  return sequences;
}

std::string SourceTableGrant(const pipeline::PipelineConfig& config, const std::string& role) {
  std::string grant = fmt::format("GRANT SELECT, INSERT ON {} TO {};", QuoteIdentifier(config.table), role);
  if (config.write_back.empty()) return grant;
  std::vector<std::string> columns;
  for (const auto& column : config.write_back) columns.push_back(QuoteIdentifier(column));
  return grant +
         fmt::format("\nGRANT UPDATE ({}) ON {} TO {};", fmt::join(columns, ", "), QuoteIdentifier(config.table), role);
}

}  // namespace

std::vector<std::string> GrantStatements(postgres::Connection& conn, const pipeline::PipelineConfig& config,
                                         const std::string& role_name) {
  CheckMigratedFor(conn, config);
  const std::string role = QuoteIdentifier(role_name);
  std::vector<std::string> statements = {fmt::format("GRANT USAGE ON SCHEMA public TO {};", role),
                                         SourceTableGrant(config, role)};
  std::vector<std::string> sequences = SequencesOf(conn, config.table);
  for (const auto& [table, privileges] : TablesOf(config)) {
    if (!postgres::TableExists(conn, table)) continue;
    statements.push_back(fmt::format("GRANT {} ON {} TO {};", privileges, QuoteIdentifier(table), role));
    for (auto& sequence : SequencesOf(conn, table)) sequences.push_back(std::move(sequence));
  }
  for (const auto& sequence : sequences) {
    statements.push_back(fmt::format("GRANT USAGE ON SEQUENCE {} TO {};", sequence, role));
  }
  return statements;
}

void ApplyGrants(postgres::Connection& conn, const pipeline::PipelineConfig& config, const std::string& role) {
  registry::MigrateRegistry(conn);
  MigrateSamples(conn);  // the owner may create it
  EnsureKeyTable(conn);
  postgres::Transaction tx(conn);
  for (const auto& statement : GrantStatements(conn, config, role)) conn.Exec(statement);
  tx.Commit();
}

}  // namespace runnel::server
