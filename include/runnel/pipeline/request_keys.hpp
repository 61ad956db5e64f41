// How a pipeline's source rows are identified as requests.
//
// The queue, results, events and jobs hold one bigint per request: its request id. A
// key that is one integer column (smallint, integer, bigint) is its own request id
// (direct: queue rows hold ranges of key values, the fast path). Any other key — uuid,
// text, varchar, char, or a composite of up to 4 such or integer columns — is mapped:
// the source table gets a column runnel_<p>_id (bigint, defaulting to its own sequence,
// indexed) that is the row's request id, so that capture, claim and write-back are
// those of an integer key. runnel_<p>_keys is a view of every request id with its key
// (runnel_id and the key columns): the source rows', and those of rows deleted since
// (runnel_<p>_gone_keys, written by a delete trigger), so key values are shown wherever
// users see a request, also after the row is gone. A row is one request: a key deleted
// and inserted again is a new request; a key updated keeps the row's request.
//
// All SQL fragments below quote identifiers; aliases are the caller's.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runnel/pipeline/pipeline_config.hpp"

namespace runnel::pipeline {

struct KeyColumn {
  std::string name;
  std::string type;  // as format_type writes it: "uuid", "character varying(40)", ...
};

class RequestKeys {
 public:
  // The column of the view runnel_<p>_keys that holds the request id.
  static constexpr const char* kIdColumn = "runnel_id";

  // `types`: the source table's columns and their types (SourceColumns). Throws
  // Error(InvalidInput) naming the pipeline file and the column when a key column is
  // missing or of a type that cannot key requests (only the types above can).
  static RequestKeys Resolve(const PipelineConfig& config, const std::map<std::string, std::string>& types);

  bool mapped() const { return mapped_; }
  const std::vector<KeyColumn>& columns() const { return columns_; }
  // runnel_<p>_keys, quoted (meaningful when mapped): the view of request ids and keys.
  const std::string& map_table() const { return map_table_; }
  // The source table's column that is the request id, unquoted: the key column
  // (direct) or runnel_<p>_id (mapped).
  const std::string& id_column() const { return id_column_; }

  // `alias.c1, alias.c2` (alias empty: bare column names).
  std::string ColumnList(std::string_view alias) const;
  // `(a.c1, a.c2) = (b.c1, b.c2)`: the same key in two relations.
  std::string SameKey(std::string_view a, std::string_view b) const;
  // The key's values as parameters from $first on, each cast to its column's type:
  // `$1::uuid` or `$3::text, $4::integer` (arrays: `$1::text[]::uuid[]`, one text
  // array per column). Throws nothing; a value not of its type fails in PostgreSQL
  // with SQLSTATE class 22.
  std::string TypedParams(int first, bool arrays = false) const;
  // `a.c1 IS NOT NULL AND ...`: rows whose key is complete (only those are requests).
  std::string KeyComplete(std::string_view alias) const;
  // The request id of the source row `source` (an alias, or "" for bare column
  // names), as a bigint expression: the key column cast (direct), or its id column.
  std::string IdOf(std::string_view source) const;
  // ` LEFT JOIN` of the source table (as `source`) to the request id `id`: the row
  // (NULL when gone) of each request; when mapped, the view of keys (as `map`) too,
  // which has the key of a deleted row.
  std::string JoinSourceById(std::string_view id, std::string_view table, std::string_view source,
                             std::string_view map) const;
  // The key as JSON text, as clients see it: the request id (direct), the key value
  // (one column), or the array of its values (composite), taken from the relation
  // `alias` that has the key columns (the source table or the map).
  std::string IdJsonSql(std::string_view alias, std::string_view id) const;
  // A text expression naming the row's key for messages: `format('id = %L', t.id)`.
  std::string LabelSql(std::string_view alias) const;
  // The message form of a direct key: "id = 5".
  std::string Label(int64_t id) const;
  // The key columns and types as one line: recorded on the map table, compared by
  // migrate so that a changed key is noticed.
  std::string Signature() const;

 private:
  bool mapped_ = false;
  std::vector<KeyColumn> columns_;
  std::string map_table_;
  std::string id_column_;
};

// Whether a column of this type (format_type's spelling) can be one of a key's columns;
// integer types alone key requests directly.
bool IsKeyType(std::string_view type);
bool IsIntegerKeyType(std::string_view type);

}  // namespace runnel::pipeline
