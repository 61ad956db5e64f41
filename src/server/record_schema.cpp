#include "runnel/server/record_schema.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <optional>

#include "runnel/core/error.hpp"

namespace runnel::server {

using nlohmann::json;
using postgres::Params;
using postgres::QuoteIdentifier;

ColumnKind KindOf(const std::string& type) {
  if (type == "integer" || type == "bigint" || type == "smallint") return ColumnKind::kInteger;
  if (type == "double precision" || type == "real" || type.starts_with("numeric")) return ColumnKind::kNumber;
  if (type == "text" || type.starts_with("character")) return ColumnKind::kText;
  if (type == "boolean") return ColumnKind::kBool;
  if (type == "json" || type == "jsonb") return ColumnKind::kJson;  // any JSON value, documents included
  return ColumnKind::kOther;
}

namespace {

// The source table's columns: name, type, NOT NULL, has a default (or is an identity
// or serial), attidentity ('a' always, 'd' by default), attgenerated ('s' stored).
constexpr std::string_view kColumnsSql =
    "SELECT a.attname::text AS name, format_type(a.atttypid, a.atttypmod) AS type, "
    "format_type(a.atttypid, NULL) AS base_type, a.attnotnull AS not_null, "
    "a.atthasdef OR a.attidentity <> '' AS has_default, a.attidentity::text AS identity, "
    "a.attgenerated::text AS generated FROM pg_attribute a "
    "WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped";

// A value for an integer column: whole, and within the column's range. 40.0 is
// rewritten to 40 (integer text for COPY).
std::optional<std::string> CheckInteger(json& value, const std::string& type) {
  const bool whole_float = value.is_number_float() && std::trunc(value.get<double>()) == value.get<double>() &&
                           std::abs(value.get<double>()) < 9.2e18;
  if (!value.is_number_integer() && !whole_float) return fmt::format("must be an integer ({})", type);
  const double v = value.get<double>();
  if (type == "integer" && (v > 2147483647.0 || v < -2147483648.0)) return "out of range for integer";
  if (type == "smallint" && (v > 32767 || v < -32768)) return "out of range for smallint";
  if (value.is_number_float()) value = static_cast<int64_t>(v);
  return std::nullopt;
}

std::optional<std::string> CheckValue(json& value, const ColumnInfo& column) {
  switch (column.kind) {
    case ColumnKind::kInteger: return CheckInteger(value, column.type);
    case ColumnKind::kNumber:
      if (!value.is_number()) return fmt::format("must be a number ({})", column.type);
      break;
    case ColumnKind::kText:
      if (!value.is_string() && !value.is_number()) return fmt::format("must be a string ({})", column.type);
      break;
    case ColumnKind::kBool:
      if (!value.is_boolean()) return "must be true or false";
      break;
    case ColumnKind::kJson: break;
    case ColumnKind::kOther:
      if (value.is_object() || value.is_array()) return fmt::format("must be a scalar ({})", column.type);
      break;
  }
  return std::nullopt;
}

}  // namespace

RecordSchema RecordSchema::Load(postgres::Connection& conn, const pipeline::PipelineConfig& config) {
  RecordSchema schema;
  schema.table = config.table;
  auto& columns = schema.columns;
  auto& required = schema.required;
  auto& keys = schema.keys;
  auto r = conn.Exec(std::string(kColumnsSql), Params().Add(QuoteIdentifier(config.table)));
  if (r.rows() == 0) throw Error(ErrorCode::NotFound, fmt::format("table '{}' does not exist", config.table));
  const int name_col = r.ColumnIndex("name"), type_col = r.ColumnIndex("type"), base_col = r.ColumnIndex("base_type"),
            not_null_col = r.ColumnIndex("not_null"), default_col = r.ColumnIndex("has_default"),
            identity_col = r.ColumnIndex("identity"), generated_col = r.ColumnIndex("generated");
  std::map<std::string, std::string> types;
  for (int i = 0; i < r.rows(); ++i) types[r.Get<std::string>(i, name_col)] = r.Get<std::string>(i, type_col);
  keys = pipeline::RequestKeys::Resolve(config, types);
  for (int i = 0; i < r.rows(); ++i) {
    ColumnInfo info;
    info.type = r.Get<std::string>(i, type_col);
    info.base_type = r.Get<std::string>(i, base_col);
    info.kind = KindOf(info.type);
    info.not_null = r.Get<bool>(i, not_null_col);
    info.has_default = r.Get<bool>(i, default_col);
    const auto name = r.Get<std::string>(i, name_col);
    if (!r.Get<std::string>(i, generated_col).empty()) {
      info.refused = "a generated column: the database computes it";
    } else if (r.Get<std::string>(i, identity_col) == "a") {
      info.refused = "an identity column (GENERATED ALWAYS): the database assigns it";
    } else if (keys.mapped() && name == keys.id_column()) {
      info.refused = "Runnel's request id: the database assigns it";
    } else if (!keys.mapped() && name == config.key_columns.front() && info.has_default && !config.clients_set_keys) {
      info.refused = "the key: the database assigns it ([source] clients_set_keys = true allows it)";
    } else if (std::find(config.write_back.begin(), config.write_back.end(), name) != config.write_back.end()) {
      info.refused = "written by Runnel";
    }
    info.key_part = std::find(config.key_columns.begin(), config.key_columns.end(), name) != config.key_columns.end();
    // A key part the database does not fill in must be given (else the row is no request).
    if (info.refused.empty() && (info.not_null || info.key_part) && !info.has_default) required.insert(name);
    columns[name] = info;
  }
  for (const auto& c : config.features.input_columns) required.insert(c);
  if (config.quota_max_requests) required.insert(config.client_column);
  return schema;
}

std::optional<std::string> RecordSchema::FieldProblem(std::string_view field, const ColumnInfo* column,
                                                      json& value) const {
  if (column == nullptr) return fmt::format("unknown column: table '{}' has no column '{}'", table, field);
  if (!column->refused.empty()) return fmt::format("cannot be submitted: {}", column->refused);
  if (!value.is_null()) return CheckValue(value, *column);
  if (column->key_part) return "must not be null: part of the request's key";
  if (column->not_null || required.contains(field)) return "must not be null";
  return std::nullopt;
}

const ColumnInfo* RecordSchema::Column(std::string_view name) const {
  auto it = columns.find(name);
  return it == columns.end() ? nullptr : &it->second;
}

// Checks a record against the source table; appends one entry per problem.
void RecordSchema::Validate(json& record, size_t index, json& problems) const {
  auto problem = [&](const std::string& field, const std::string& message) {
    problems.push_back({{"record", index}, {"field", field}, {"error", message}});
  };
  if (!record.is_object()) {
    problem("", "a record must be a JSON object");
    return;
  }
  for (auto& [field, value] : record.items()) {
    if (auto error = FieldProblem(field, Column(field), value)) problem(field, *error);
  }
  for (const auto& field : required) {
    if (!record.contains(field)) problem(field, "is required");
  }
}

RecordWriter::RecordWriter(const pipeline::PipelineConfig& config, const RecordSchema& schema)
    : config_(config), keys_(schema.keys) {
  for (const auto& [name, column] : schema.columns) cast_types_[name] = column.base_type;
}

const std::string& RecordWriter::KeySequence(postgres::Connection& conn) {
  std::call_once(sequence_once_, [&] {
    auto r = conn.Exec("SELECT pg_get_serial_sequence($1, $2)",
                       postgres::Params().Add(QuoteIdentifier(config_.table)).Add(keys_.id_column()));
    if (!r.IsNull(0, 0)) sequence_ = r.Get<std::string>(0, 0);
  });
  return sequence_;
}

namespace {

// COPY's text format escapes backslash and the characters that end a field or row.
void AppendCopyText(std::string& out, std::string_view text) {
  while (!text.empty()) {
    const size_t special = text.find_first_of("\\\n\r\t");
    out.append(text.substr(0, special));
    if (special == std::string_view::npos) return;
    switch (text[special]) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      default: out += "\\t"; break;
    }
    text.remove_prefix(special + 1);
  }
}

template <class Number>
void AppendNumber(std::string& out, Number number) {
  char buf[32];
  const auto end = std::to_chars(buf, buf + sizeof(buf), number).ptr;  // shortest form that reads back
  out.append(buf, end);
}

// Record `row` of `rows` as a line of COPY's text format (tab-separated, \N for null).
void AppendCopyRow(std::string& out, const RecordRows& rows, size_t row) {
  for (size_t c = 0; c < rows.width(); ++c) {
    if (c > 0) out += '\t';
    if (auto text = rows.At(row, c)) {
      AppendCopyText(out, *text);
    } else {
      out += "\\N";
    }
  }
  out += '\n';
}

// The columns' values as text[] parameters, one per column.
void AddColumnArrays(postgres::Params& params, const RecordWriter::Parts& parts, size_t width, size_t total) {
  std::vector<std::optional<std::string_view>> column;
  column.reserve(total);
  for (size_t c = 0; c < width; ++c) {
    column.clear();
    for (const RecordRows* part : parts) {
      for (size_t r = 0; r < part->rows(); ++r) column.push_back(part->At(r, c));
    }
    params.AddArray(column);
  }
}

// "unnest($k::text[], ...) WITH ORDINALITY AS g(c0, ..., n)" for arrays from $`first`;
// with no columns, `total` rows of nothing.
std::string UnnestSource(size_t width, int first) {
  if (width == 0) return fmt::format("generate_series(1, ${}) AS g(n)", first);
  std::string given, names;
  for (size_t i = 0; i < width; ++i) {
    given += fmt::format("{}${}::text[]", i == 0 ? "" : ", ", first + static_cast<int>(i));
    names += fmt::format("c{}, ", i);
  }
  return fmt::format("unnest({}) WITH ORDINALITY AS g({}n)", given, names);
}

// "COPY table (first, columns...) FROM STDIN"; `first` may be empty.
std::string CopyInSql(const std::string& table, const std::string& first, const std::vector<std::string>& columns) {
  std::string list = first.empty() ? std::string() : QuoteIdentifier(first);
  for (const auto& c : columns) list += (list.empty() ? "" : ", ") + QuoteIdentifier(c);
  return fmt::format("COPY {} ({}) FROM STDIN", QuoteIdentifier(table), list);
}

}  // namespace

std::optional<CopyPlace> CopyErrorPlace(std::string_view context, const std::vector<std::string>& columns) {
  // The context's last line is the outermost: the COPY's (a trigger's lines come first).
  size_t at = context.rfind("COPY ");
  while (at != std::string_view::npos && at > 0 && context[at - 1] != '\n') at = context.rfind("COPY ", at - 1);
  if (at == std::string_view::npos) return std::nullopt;
  std::string_view rest = context.substr(at);
  const size_t line_at = rest.find(", line ");
  if (line_at == std::string_view::npos) return std::nullopt;
  rest.remove_prefix(line_at + 7);
  CopyPlace place;
  const auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), place.line);
  if (ec != std::errc() || end == rest.data()) return std::nullopt;
  rest.remove_prefix(static_cast<size_t>(end - rest.data()));
  for (const auto& column : columns) {
    if (rest.starts_with(", column " + column + ":")) place.column = column;
  }
  return place;
}

void AddValue(RecordRows& rows, const json& value, bool as_json) {
  if (value.is_null()) {
    rows.AddNull();
    return;
  }
  if (as_json) {
    rows.Add(value.dump());
    return;
  }
  char buf[32];
  auto number = [&](auto n) { return std::string_view(buf, std::to_chars(buf, buf + sizeof(buf), n).ptr); };
  switch (value.type()) {
    case json::value_t::string: rows.Add(value.get_ref<const std::string&>()); break;
    case json::value_t::boolean: rows.Add(value.get<bool>() ? "t" : "f"); break;
    // to_chars: the shortest form that reads back
    case json::value_t::number_integer: rows.Add(number(value.get<int64_t>())); break;
    case json::value_t::number_unsigned: rows.Add(number(value.get<uint64_t>())); break;
    case json::value_t::number_float: rows.Add(number(value.get<double>())); break;
    default: rows.Add(value.dump()); break;  // objects and arrays, for json columns
  }
}

RecordRows RecordSchema::Render(const std::vector<std::string>& names, std::span<const json* const> records) const {
  std::vector<bool> as_json;
  for (const auto& name : names) {
    const ColumnInfo* column = Column(name);
    as_json.push_back(column != nullptr && column->kind == ColumnKind::kJson);
  }
  RecordRows rows(names.size());
  for (const json* record : records) {
    // A group's records have exactly `names`, in the same (sorted) order.
    size_t i = 0;
    for (const auto& value : *record) AddValue(rows, value, as_json[i++]);
    rows.EndRecord();
  }
  return rows;
}

std::string UnnestInsertSql(const std::string& table, const std::string& id_column,
                            const std::vector<std::string>& columns, const std::vector<std::string>& cast_types) {
  std::string casts, list;
  for (size_t i = 0; i < columns.size(); ++i) {
    casts += fmt::format(", c{}::{}", i, cast_types[i]);
    list += ", " + QuoteIdentifier(columns[i]);
  }
  // `given` is read twice, so PostgreSQL computes it once: each record's id is the one
  // inserted with it. OVERRIDING SYSTEM VALUE: an identity id column takes the
  // sequence's value as COPY would.
  return fmt::format(
      "WITH given AS (SELECT nextval($1::regclass) AS id, g.* FROM {source}), inserted AS (INSERT INTO {table} "
      "({id}{list}) OVERRIDING SYSTEM VALUE SELECT id{casts} FROM given) SELECT id FROM given ORDER BY n",
      fmt::arg("source", UnnestSource(columns.size(), 2)), fmt::arg("table", QuoteIdentifier(table)),
      fmt::arg("id", QuoteIdentifier(id_column)), fmt::arg("list", list), fmt::arg("casts", casts));
}

std::string ReturningInsertSql(const std::string& table, const std::string& returning,
                               const std::vector<std::string>& columns, const std::vector<std::string>& cast_types) {
  std::string casts, list;
  for (size_t i = 0; i < columns.size(); ++i) {
    casts += fmt::format("{}c{}::{}", i == 0 ? "" : ", ", i, cast_types[i]);
    list += (i == 0 ? "" : ", ") + QuoteIdentifier(columns[i]);
  }
  // RETURNING follows the order rows were inserted in, which is the records' order.
  return fmt::format("INSERT INTO {table}{list} SELECT {casts} FROM {source} ORDER BY n RETURNING {returning}",
                     fmt::arg("table", QuoteIdentifier(table)), fmt::arg("list", list.empty() ? "" : " (" + list + ")"),
                     fmt::arg("casts", casts), fmt::arg("source", UnnestSource(columns.size(), 1)),
                     fmt::arg("returning", QuoteIdentifier(returning)));
}

std::vector<int64_t> RecordWriter::Insert(postgres::Connection& conn, const std::vector<std::string>& columns,
                                          const Parts& parts) {
  size_t total = 0;
  for (const RecordRows* part : parts) total += part->rows();
  const bool id_given = std::find(columns.begin(), columns.end(), keys_.id_column()) != columns.end();
  if (id_given || KeySequence(conn).empty()) return InsertReturning(conn, columns, parts, total);
  if (total <= kStatementRecords && !columns.empty()) return InsertUnnest(conn, columns, parts, total);
  return InsertCopy(conn, columns, parts, total);
}

std::vector<std::string> RecordWriter::CastTypes(const std::vector<std::string>& columns) const {
  std::vector<std::string> types;
  types.reserve(columns.size());
  for (const auto& c : columns) types.push_back(cast_types_.at(c));
  return types;
}

// A small group in one statement (one round trip), ids and rows together.
std::vector<int64_t> RecordWriter::InsertUnnest(postgres::Connection& conn, const std::vector<std::string>& columns,
                                                const Parts& parts, size_t total) {
  postgres::Params params;
  params.Add(KeySequence(conn));
  AddColumnArrays(params, parts, columns.size(), total);
  auto r = conn.ExecPrepared(UnnestInsertSql(config_.table, keys_.id_column(), columns, CastTypes(columns)), params);
  std::vector<int64_t> keys;
  keys.reserve(total);
  for (int i = 0; i < r.rows(); ++i) keys.push_back(r.Get<int64_t>(i, 0));
  return keys;
}

// Request ids first, from the id column's own sequence; then COPY, the fastest way in.
std::vector<int64_t> RecordWriter::InsertCopy(postgres::Connection& conn, const std::vector<std::string>& columns,
                                              const Parts& parts, size_t total) {
  std::vector<int64_t> keys;
  keys.reserve(total);
  auto r = conn.Exec("SELECT nextval($1::regclass) FROM generate_series(1, $2)",
                     postgres::Params().Add(KeySequence(conn)).Add(static_cast<int64_t>(total)));
  for (int i = 0; i < r.rows(); ++i) keys.push_back(r.Get<int64_t>(i, 0));
  std::string data;
  data.reserve(total * (columns.size() + 1) * 8);
  size_t k = 0;
  for (const RecordRows* part : parts) {
    for (size_t row = 0; row < part->rows(); ++row) {
      AppendNumber(data, keys[k++]);
      if (part->width() > 0) data += '\t';
      AppendCopyRow(data, *part, row);
    }
  }
  conn.CopyIn(CopyInSql(config_.table, keys_.id_column(), columns), data);
  return keys;
}

std::optional<RecordRefused> RecordWriter::Locate(postgres::Connection& conn, const std::vector<std::string>& columns,
                                                  const RecordRows& rows) {
  if (columns.empty()) return std::nullopt;  // records of defaults only: no value to blame
  std::string data;
  for (size_t row = 0; row < rows.rows(); ++row) AppendCopyRow(data, rows, row);
  try {
    conn.CopyIn(CopyInSql(config_.table, std::string(), columns), data);
  } catch (const postgres::DatabaseError& e) {
    if (e.IsConnectionLost()) throw;
    const auto place = CopyErrorPlace(e.context(), columns);
    if (e.failure_class() != postgres::FailureClass::kRow || !place || place->line == 0 || place->line > rows.rows())
      return std::nullopt;
    return RecordRefused(e, place->line - 1, place->column);
  }
  return std::nullopt;
}

// A client-set key or a key without a sequence: the database's RETURNING gives the ids.
std::vector<int64_t> RecordWriter::InsertReturning(postgres::Connection& conn, const std::vector<std::string>& columns,
                                                   const Parts& parts, size_t total) {
  postgres::Params params;
  if (columns.empty()) params.Add(static_cast<int64_t>(total));
  AddColumnArrays(params, parts, columns.size(), total);
  auto r = conn.Exec(ReturningInsertSql(config_.table, keys_.id_column(), columns, CastTypes(columns)), params);
  std::vector<int64_t> keys;
  keys.reserve(r.rows());
  for (int i = 0; i < r.rows(); ++i) keys.push_back(r.Get<int64_t>(i, 0));
  return keys;
}

}  // namespace runnel::server
