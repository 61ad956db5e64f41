#include "runnel/pipeline/request_keys.hpp"

#include <fmt/format.h>

#include "runnel/core/error.hpp"
#include "runnel/pipeline/schema.hpp"
#include "runnel/postgres/connection.hpp"

namespace runnel::pipeline {

using postgres::QuoteIdentifier;

bool IsIntegerKeyType(std::string_view type) {
  return type == "smallint" || type == "integer" || type == "bigint";
}

bool IsKeyType(std::string_view type) {
  return IsIntegerKeyType(type) || type == "uuid" || type == "text" || type.starts_with("character varying") ||
         type.starts_with("character(") || type == "character";
}

RequestKeys RequestKeys::Resolve(const PipelineConfig& config, const std::map<std::string, std::string>& types) {
  RequestKeys keys;
  for (const auto& name : config.key_columns) {
    const auto type = types.find(name);
    if (type == types.end()) {
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("{}: table '{}' has no column '{}'", config.file.string(), config.table, name));
    }
    if (!IsKeyType(type->second)) {
      throw Error(ErrorCode::InvalidInput,
                  fmt::format("{}: key column '{}' is {}; a key is made of integer, uuid, text, varchar or char "
                              "columns",
                              config.file.string(), name, type->second));
    }
    keys.columns_.push_back({name, type->second});
  }
  keys.mapped_ = keys.columns_.size() != 1 || !IsIntegerKeyType(keys.columns_.front().type);
  const SchemaNames names = NamesFor(config);
  keys.map_table_ = QuoteIdentifier(names.keys);
  keys.id_column_ = keys.mapped_ ? names.ids : keys.columns_.front().name;
  return keys;
}

namespace {

std::string Qualified(std::string_view alias, const std::string& column) {
  return alias.empty() ? QuoteIdentifier(column) : fmt::format("{}.{}", alias, QuoteIdentifier(column));
}

}  // namespace

std::string RequestKeys::ColumnList(std::string_view alias) const {
  std::string out;
  for (const auto& c : columns_) out += (out.empty() ? "" : ", ") + Qualified(alias, c.name);
  return out;
}

std::string RequestKeys::SameKey(std::string_view a, std::string_view b) const {
  if (columns_.size() == 1)
    return fmt::format("{} = {}", Qualified(a, columns_[0].name), Qualified(b, columns_[0].name));
  return fmt::format("({}) = ({})", ColumnList(a), ColumnList(b));
}

std::string RequestKeys::TypedParams(int first, bool arrays) const {
  std::string out;
  for (size_t c = 0; c < columns_.size(); ++c) {
    out += fmt::format("{}${}::{}", c ? ", " : "", first + static_cast<int>(c),
                       arrays ? fmt::format("text[]::{}[]", columns_[c].type) : columns_[c].type);
  }
  return out;
}

std::string RequestKeys::KeyComplete(std::string_view alias) const {
  std::string out;
  for (const auto& c : columns_) out += (out.empty() ? "" : " AND ") + Qualified(alias, c.name) + " IS NOT NULL";
  return out;
}

std::string RequestKeys::IdOf(std::string_view source) const {
  if (mapped_) return Qualified(source, id_column_);
  return Qualified(source, id_column_) + "::bigint";
}

std::string RequestKeys::JoinSourceById(std::string_view id, std::string_view table, std::string_view source,
                                        std::string_view map) const {
  std::string out = fmt::format(" LEFT JOIN {} {} ON {} = {}", table, source, Qualified(source, id_column_), id);
  if (!mapped_) return out;
  return fmt::format(" LEFT JOIN {} {} ON {}.{} = {}", map_table_, map, map, kIdColumn, id) + out;
}

std::string RequestKeys::IdJsonSql(std::string_view alias, std::string_view id) const {
  if (!mapped_) return fmt::format("({})::text", id);
  if (columns_.size() == 1) return fmt::format("to_json({})::text", Qualified(alias, columns_[0].name));
  return fmt::format("json_build_array({})::text", ColumnList(alias));
}

std::string RequestKeys::LabelSql(std::string_view alias) const {
  std::string format, args;
  for (const auto& c : columns_) {
    std::string name = c.name;  // literal text in format()'s pattern: % doubled
    for (size_t at = name.find('%'); at != std::string::npos; at = name.find('%', at + 2)) name.insert(at, "%");
    format += fmt::format("{}{} = %L", format.empty() ? "" : ", ", name);
    args += ", " + Qualified(alias, c.name);
  }
  return fmt::format("format({}{})", postgres::QuoteLiteral(format), args);
}

std::string RequestKeys::Label(int64_t id) const {
  return fmt::format("{} = {}", columns_[0].name, id);
}

std::string RequestKeys::Signature() const {
  std::string out;
  for (const auto& c : columns_) out += (out.empty() ? "" : ", ") + c.name + " " + c.type;
  return out;
}

}  // namespace runnel::pipeline
