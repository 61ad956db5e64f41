// The reference reading of a POST's records, which ParseValidRecords must agree with
// whenever it answers: ParseRecords into JSON values, RecordSchema::Validate, then
// GroupRecords. Shared by tests/server/record_parser_test.cpp and
// fuzz/record_parser_fuzzer.cpp.
#pragma once

#include <optional>
#include <string_view>

#include "runnel/server/http_message.hpp"
#include "runnel/server/record_parser.hpp"
#include "runnel/server/request_body.hpp"

namespace runnel::testing {

// nullopt when the reference refuses the body (an HttpError) or finds a problem.
inline std::optional<server::RecordGroups> ReferenceRecords(std::string_view body, std::string_view content_type,
                                                            const server::RecordSchema& schema) {
  try {
    auto records = server::ParseRecords(body, content_type);
    auto problems = nlohmann::json::array();
    for (size_t i = 0; i < records.size(); ++i) schema.Validate(records[i], i, problems);
    if (!problems.empty()) return std::nullopt;
    return server::GroupRecords(schema, records);
  } catch (const server::HttpError&) {
    return std::nullopt;
  }
}

// A table with a column of each kind, as RecordSchema::Load would describe it: id
// (bigint, the database's), client (integer, required), note (varchar(5)), amount
// (numeric), flag (boolean), doc (jsonb), at (timestamptz), label (text, NOT NULL with
// a default), made (generated).
inline server::RecordSchema ExampleSchema() {
  server::RecordSchema schema;
  schema.table = "t";
  auto column = [&](const char* name, const char* type, const char* base) -> server::ColumnInfo& {
    auto& c = schema.columns[name];
    c.type = type;
    c.base_type = base;
    c.kind = server::KindOf(type);
    return c;
  };
  column("id", "bigint", "bigint").refused = "the key: the database assigns it";
  column("id", "bigint", "bigint").has_default = true;
  column("client", "integer", "integer").not_null = true;
  column("note", "character varying(5)", "character varying");
  column("amount", "numeric(6,2)", "numeric");
  column("flag", "boolean", "boolean");
  column("doc", "jsonb", "jsonb");
  column("at", "timestamp with time zone", "timestamp with time zone");
  auto& label = column("label", "text", "text");
  label.not_null = true;
  label.has_default = true;
  column("made", "integer", "integer").refused = "a generated column: the database computes it";
  schema.required = {"client"};
  return schema;
}

}  // namespace runnel::testing
