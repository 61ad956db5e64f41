// The records of a POST as the Ingestor takes them: validated, grouped by the columns
// they set, each group's values rendered (RecordRows). Two ways there:
//   - GroupRecords: the reference, from records ParseRecords read into JSON values and
//     RecordSchema::Validate passed;
//   - ParseValidRecords: straight from the body with simdjson's On-Demand parser, no
//     JSON value per record, for the common case only (objects of scalar values that
//     validate). fuzz/record_parser_fuzzer.cpp checks that whenever it answers, the
//     reference gives the same groups.
//
// Thread safety: pure functions (ParseValidRecords keeps one parser per thread).
#pragma once

#include <cstddef>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "runnel/server/record_rows.hpp"
#include "runnel/server/record_schema.hpp"

namespace runnel::server {

// The records of one column set.
struct RecordGroup {
  std::vector<std::string> columns;  // sorted
  RecordRows rows;
  std::vector<size_t> members;  // each row's index among the body's records

  bool operator==(const RecordGroup&) const = default;
};

// Groups in the order their first record comes.
struct RecordGroups {
  std::vector<RecordGroup> groups;
  size_t records = 0;

  bool operator==(const RecordGroups&) const = default;
};

// `records`: JSON objects that RecordSchema::Validate passed.
RecordGroups GroupRecords(const RecordSchema& schema, std::span<const nlohmann::json> records);

// What ParseRecords, then Validate, then GroupRecords give for `body`, when every record
// is an object whose values are null, booleans, numbers or strings and Validate finds
// no problem. nullopt otherwise (malformed, empty, too many records, a problem, a nested
// value, a repeated key, a number the reference reads differently): the caller then
// takes the reference path, which names what is wrong.
std::optional<RecordGroups> ParseValidRecords(std::string_view body, std::string_view content_type,
                                              const RecordSchema& schema);

}  // namespace runnel::server
