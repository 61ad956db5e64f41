// Synthetic requests for a pipeline's source table (`runnel load`, `runnel demo`):
// the reference generator's ranges for the needs columns (age 18-90, gender 0-1,
// family 0-5, financial_education 0.036-0.903, income 1.54-365.3, wealth 1.06-2233.2,
// investments 0-1), uniform [0, 1) for other input columns; keys continue after the
// table's largest, clients cycle over 1..clients.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "runnel/pipeline/pipeline_config.hpp"
#include "runnel/postgres/connection.hpp"

namespace runnel::pipeline {

struct LoadOptions {
  int64_t rows = 1000;
  int64_t clients = 100;
  int64_t rows_per_txn = 1000;  // rows per INSERT statement (one transaction each)
  double rate = 0;              // rows per second; 0: as fast as possible
  uint64_t seed = 1;
  const std::function<bool()>* cancelled = nullptr;
};

struct LoadSummary {
  int64_t inserted = 0;
  int64_t first_key = 0;
  double seconds = 0;
};

// How many of `rows` synthetic requests over clients 1..`clients` (as
// LoadSyntheticRequests spreads them, round robin) go over `max_requests` per client,
// given what each client has used already (`used`: client -> requests).
int64_t ThrottledByLoad(int64_t rows, int64_t clients, int64_t max_requests, const std::map<int64_t, int64_t>& used);

// A warning when the pipeline's quota will throttle some of the requests `options`
// describes, reading each client's count in the current window; nullopt otherwise.
std::optional<std::string> QuotaWarning(postgres::Connection& conn, const PipelineConfig& config,
                                        const LoadOptions& options);

// Sleeps until `rows` rows are due at `rate` rows per second since `start` (no-op
// when rate is 0): how every load paces itself.
void PaceTo(std::chrono::steady_clock::time_point start, int64_t rows, double rate);

// `n` synthetic requests as JSON records — the client column (clients cycling over
// 1..clients, from (first % clients) + 1), the numeric inputs, the text columns; no key
// (the table assigns it) — for sources other than the table (`runnel load
// --jetstream`). Throws Error(InvalidInput) when the pipeline reads no such column.
std::vector<std::string> SyntheticRecords(const PipelineConfig& config, int64_t first, int64_t n, int64_t clients,
                                          uint64_t seed);

// Throws Error(InvalidInput) for non-positive sizes, DatabaseError from the inserts.
LoadSummary LoadSyntheticRequests(postgres::Connection& conn, const PipelineConfig& config, const LoadOptions& options);

// Replaying a CSV file as a stream of requests (`runnel load --input`), as the wine
// reference client does: one record per second in reverse file order, forever.
struct CsvLoadOptions {
  std::string input;  // file path
  char delimiter = ',';
  std::vector<std::string> columns;  // names of the file's columns; empty: its header row
  std::string data_type;             // non-empty: set the pipeline's [model].type_column
  double rate = 0;                   // rows per second; 0: as fast as possible
  bool loop = false;                 // start over at the end, until cancelled
  bool reverse = false;              // last row first
  int64_t rows_per_txn = 1000;       // when not rate-limited
  const std::function<bool()>* cancelled = nullptr;
  // Called after each committed insert with the rows inserted so far (the CLI shows
  // progress with it); may be empty.
  std::function<void(int64_t inserted)> progress;
};

// The rows of a CSV file for the source table: the file's columns matching a table
// column (spaces, underscores and case aside; a direct integer key is the database's
// to assign, so not taken; the others named in `ignored`), each row's fields in their
// order (empty: NULL), reversed with options.reverse. Throws as LoadCsvRequests, and
// Error(InvalidInput) for options.data_type when the pipeline has no [model].type_column.
struct CsvRows {
  std::vector<std::string> columns;  // table columns
  std::vector<std::vector<std::optional<std::string>>> rows;
};
CsvRows ReadCsvRows(const PipelineConfig& config, const std::map<std::string, std::string>& table_columns,
                    const CsvLoadOptions& options, std::vector<std::string>* ignored = nullptr);
// Row `row` as the JSON record the HTTP API and the JetStream ingest take (`runnel load
// --jetstream --input`): integers and numbers for numeric columns, true/false for
// boolean, the JSON value for json/jsonb, strings otherwise, null for NULL — a field
// that is not what its column's type needs stays a string, for the record's checks to
// name; `data_type` non-empty: the pipeline's [model].type_column set to it.
std::string CsvRecordJson(const CsvRows& rows, size_t row, const std::map<std::string, std::string>& table_columns,
                          const PipelineConfig& config, const std::string& data_type);

// Columns matching a column of the source table (spaces, underscores and case aside)
// are inserted; the others are ignored (and named in `ignored`). Empty fields are NULL.
// Throws Error(InvalidInput) naming the file and line for a malformed record or a
// file that sets no table column, Error(Io) when it cannot be read.
LoadSummary LoadCsvRequests(postgres::Connection& conn, const PipelineConfig& config, const CsvLoadOptions& options,
                            std::vector<std::string>* ignored = nullptr);

}  // namespace runnel::pipeline
