#include "runnel/server/record_parser.hpp"

#include <simdjson.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <memory>

#include "runnel/server/http_message.hpp"
#include "runnel/server/request_body.hpp"

namespace runnel::server {

using nlohmann::json;
namespace od = simdjson::ondemand;

RecordGroups GroupRecords(const RecordSchema& schema, std::span<const json> records) {
  RecordGroups out;
  out.records = records.size();
  std::vector<std::vector<size_t>> members;
  // Records of one body nearly always share their columns: each is compared with the
  // groups so far (in place, no allocation) before a new group is made.
  auto same_columns = [](const json& record, const std::vector<std::string>& columns) {
    if (record.size() != columns.size()) return false;
    size_t i = 0;
    for (const auto& [field, value] : record.items()) {
      if (field != columns[i++]) return false;
    }
    return true;
  };
  for (size_t i = 0; i < records.size(); ++i) {
    auto group = std::find_if(out.groups.begin(), out.groups.end(),
                              [&](const RecordGroup& g) { return same_columns(records[i], g.columns); });
    if (group == out.groups.end()) {
      RecordGroup made;
      for (const auto& [field, value] : records[i].items()) made.columns.push_back(field);
      group = out.groups.insert(out.groups.end(), std::move(made));
    }
    group->members.push_back(i);
  }
  std::vector<const json*> picked;
  for (auto& group : out.groups) {
    picked.clear();
    for (size_t i : group.members) picked.push_back(&records[i]);
    group.rows = schema.Render(group.columns, picked);
  }
  return out;
}

namespace {

// One order of keys as records give them, resolved against the table once.
struct Shape {
  std::vector<std::string> keys;           // as given
  std::vector<const ColumnInfo*> columns;  // per key as given
  std::vector<size_t> sorted;              // the keys' positions in sorted order
  std::vector<bool> as_json;               // per sorted position
  size_t group = 0;
};

// Reads records one at a time into groups. Any record it cannot take whole (see
// ParseValidRecords) makes Add return false; the parse is then abandoned.
class FastReader {
 public:
  explicit FastReader(const RecordSchema& schema) : schema_(schema) {}

  bool Add(od::object record);
  RecordGroups Take() { return std::move(out_); }
  size_t records() const { return out_.records; }

 private:
  bool ReadValue(od::value value, json& out);
  const Shape* ShapeOfFields();
  const Shape* MakeShape();

  const RecordSchema& schema_;
  RecordGroups out_;
  std::vector<Shape> shapes_;
  size_t last_shape_ = 0;
  std::vector<std::string_view> keys_;  // the record being read: into the parser's buffers
  std::vector<json> values_;
};

bool HasControl(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20; });
}

// A scalar as nlohmann's parser reads it, or false for what it might read otherwise.
bool FastReader::ReadValue(od::value value, json& out) {
  od::json_type type;
  if (value.type().get(type)) return false;
  switch (type) {
    case od::json_type::null: {
      bool is_null = false;
      if (value.is_null().get(is_null) || !is_null) return false;
      out = nullptr;
      return true;
    }
    case od::json_type::boolean: {
      bool b = false;
      if (value.get_bool().get(b)) return false;
      out = b;
      return true;
    }
    case od::json_type::number: {
      // By type, not get_number(), which in simdjson 3.0.1 reads a float of more than
      // 19 digits as 0.
      od::number_type number_type;
      if (value.get_number_type().get(number_type)) return false;
      const std::string_view token = value.raw_json_token();
      switch (number_type) {
        case od::number_type::signed_integer: {
          int64_t i = 0;
          if (value.get_int64().get(i)) return false;
          // nlohmann: a number without a minus sign is unsigned.
          out = i >= 0 ? json(static_cast<uint64_t>(i)) : json(i);
          return true;
        }
        case od::number_type::unsigned_integer: {
          uint64_t u = 0;
          if (value.get_uint64().get(u)) return false;
          out = u;
          return true;
        }
        case od::number_type::floating_point_number: {
          // An integer that is a float only to simdjson: nlohmann's reading may differ.
          if (token.find_first_of(".eE") == std::string_view::npos) return false;
          // simdjson checks the syntax; from_chars reads the value (simdjson 3.0.1 reads
          // some of more than 19 digits wrongly). Out of range: the reference's error.
          double checked = 0, d = 0;
          const std::string_view text = token.substr(0, token.find_last_not_of(" \t\r\n") + 1);
          const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), d);
          if (value.get_double().get(checked) || ec != std::errc() || end != text.data() + text.size() ||
              !std::isfinite(d))
            return false;
          out = d;
          return true;
        }
        default: return false;  // more than 64 bits
      }
    }
    case od::json_type::string: {
      const std::string_view token = value.raw_json_token();
      std::string_view text;
      if (value.get_string().get(text)) return false;
      // nlohmann refuses control characters and lone surrogates, which simdjson may pass.
      if (HasControl(token.substr(0, token.rfind('"'))) || InvalidUtf8At(text)) return false;
      out = std::string(text);
      return true;
    }
    default: return false;  // arrays and objects: the reference path
  }
}

// The shape of the record just read: the last one's, nearly always.
const Shape* FastReader::ShapeOfFields() {
  auto matches = [&](const Shape& shape) {
    return std::equal(keys_.begin(), keys_.end(), shape.keys.begin(), shape.keys.end());
  };
  if (last_shape_ < shapes_.size() && matches(shapes_[last_shape_])) return &shapes_[last_shape_];
  for (size_t s = 0; s < shapes_.size(); ++s) {
    if (matches(shapes_[s])) {
      last_shape_ = s;
      return &shapes_[s];
    }
  }
  // Every distinct order costs a lookup per key: a body of many orders is the
  // reference path's (it compares columns per group, too).
  if (shapes_.size() >= 64) return nullptr;
  return MakeShape();
}

// Resolves the keys just read; nullptr for an unknown or refused column, a repeated
// key, or a required column missing: cases the reference path reports.
const Shape* FastReader::MakeShape() {
  Shape shape;
  shape.keys.assign(keys_.begin(), keys_.end());
  shape.sorted.resize(keys_.size());
  for (size_t i = 0; i < keys_.size(); ++i) shape.sorted[i] = i;
  std::sort(shape.sorted.begin(), shape.sorted.end(), [&](size_t a, size_t b) { return keys_[a] < keys_[b]; });
  std::vector<std::string> columns;
  for (size_t i : shape.sorted) {
    if (!columns.empty() && columns.back() == keys_[i]) return nullptr;
    columns.emplace_back(keys_[i]);
  }
  for (const auto& key : shape.keys) {
    const ColumnInfo* column = schema_.Column(key);
    if (HasControl(key) || InvalidUtf8At(key)) return nullptr;  // as for values
    if (column == nullptr || !column->refused.empty()) return nullptr;
    shape.columns.push_back(column);
  }
  for (const auto& field : schema_.required) {
    if (!std::binary_search(columns.begin(), columns.end(), field)) return nullptr;
  }
  for (size_t i : shape.sorted) shape.as_json.push_back(shape.columns[i]->kind == ColumnKind::kJson);
  auto group =
      std::find_if(out_.groups.begin(), out_.groups.end(), [&](const RecordGroup& g) { return g.columns == columns; });
  if (group == out_.groups.end()) {
    RecordGroup made;
    made.rows = RecordRows(columns.size());
    made.columns = std::move(columns);
    group = out_.groups.insert(out_.groups.end(), std::move(made));
  }
  shape.group = static_cast<size_t>(group - out_.groups.begin());
  last_shape_ = shapes_.size();
  shapes_.push_back(std::move(shape));
  return &shapes_.back();
}

bool FastReader::Add(od::object record) {
  keys_.clear();
  size_t n = 0;
  for (auto item : record) {
    od::field field;
    std::string_view key;
    if (std::move(item).get(field) || field.unescaped_key().get(key)) return false;
    if (n == values_.size()) values_.emplace_back();
    if (!ReadValue(field.value(), values_[n])) return false;
    keys_.push_back(key);
    ++n;
  }
  const Shape* shape = ShapeOfFields();
  if (shape == nullptr) return false;
  for (size_t i = 0; i < n; ++i) {
    if (schema_.FieldProblem(shape->keys[i], shape->columns[i], values_[i])) return false;
  }
  RecordGroup& group = out_.groups[shape->group];
  for (size_t s = 0; s < n; ++s) AddValue(group.rows, values_[shape->sorted[s]], shape->as_json[s]);
  group.rows.EndRecord();
  group.members.push_back(out_.records++);
  return true;
}

// Whether the document was read to its end (no trailing content).
bool AtEnd(od::document& doc) {
  return doc.current_location().error() == simdjson::OUT_OF_BOUNDS;
}

bool ReadNdjson(od::parser& parser, const simdjson::padded_string& body, FastReader& reader) {
  const std::string_view text(body.data(), body.size());
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(start, end - start);
    if (line.find_first_not_of(" \t\r") != std::string_view::npos) {
      // The body's padding lies past every line: a line's capacity reaches it.
      od::document doc;
      od::object record;
      if (parser.iterate(line.data(), line.size(), body.size() + simdjson::SIMDJSON_PADDING - start).get(doc) ||
          doc.get_object().get(record) || !reader.Add(record) || !AtEnd(doc))
        return false;
      if (reader.records() > kMaxRecordsPerRequest) return false;
    }
    start = end + 1;
  }
  return true;
}

bool ReadJson(od::parser& parser, const simdjson::padded_string& body, FastReader& reader) {
  od::document doc;
  od::json_type type;
  if (parser.iterate(body).get(doc) || doc.type().get(type)) return false;
  if (type == od::json_type::object) {
    od::object record;
    return !doc.get_object().get(record) && reader.Add(record) && AtEnd(doc);
  }
  od::array array;
  if (type != od::json_type::array || doc.get_array().get(array)) return false;
  for (auto item : array) {
    od::object record;
    if (item.get_object().get(record) || !reader.Add(record) || reader.records() > kMaxRecordsPerRequest) return false;
  }
  return AtEnd(doc);
}

}  // namespace

std::optional<RecordGroups> ParseValidRecords(std::string_view body, std::string_view content_type,
                                              const RecordSchema& schema) {
  // One parser per thread: its buffers grow to the largest document read, so a large
  // one is dropped afterwards rather than kept.
  constexpr size_t kKeptCapacity = 1 << 20;
  thread_local std::unique_ptr<od::parser> parser;
  if (!parser) parser = std::make_unique<od::parser>();
  const simdjson::padded_string padded(body);
  FastReader reader(schema);
  const bool read = IsNdjson(content_type) ? ReadNdjson(*parser, padded, reader) : ReadJson(*parser, padded, reader);
  if (parser->capacity() > kKeptCapacity) parser.reset();
  if (!read || reader.records() == 0) return std::nullopt;
  return reader.Take();
}

}  // namespace runnel::server
