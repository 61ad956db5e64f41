// How rows are keyed (no database): the config's key, which keys are direct or
// mapped, and the SQL fragments every statement builds on.
#include "runnel/pipeline/request_keys.hpp"

#include <gtest/gtest.h>

#include "../support/temp_dir.hpp"
#include "runnel/core/error.hpp"

namespace runnel::pipeline {
namespace {

using runnel::testing::TempDir;
using runnel::testing::WriteFile;

PipelineConfig WithKey(const std::string& key) {
  TempDir dir;
  WriteFile(dir / "p.toml", "name = \"t\"\n[source]\ntable = \"t\"\nkey = " + key +
                                "\ncolumns = [\"a\"]\n[model]\npath = \"m.onnx\"\noutputs = [\"y\"]\n"
                                "[features]\ninputs = [\"a\"]\n[output]\ncolumns = [\"y\"]\n");
  return LoadPipelineConfig(dir / "p.toml");
}

std::string ConfigError(const std::string& key) {
  try {
    WithKey(key);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(RequestKeys, TheKeyIsOneColumnOrUpToFourDistinctOnes) {
  EXPECT_EQ(WithKey("\"id\"").key_columns, std::vector<std::string>{"id"});
  EXPECT_EQ(WithKey("[\"tenant\", \"id\"]").key_columns, (std::vector<std::string>{"tenant", "id"}));
  EXPECT_NE(ConfigError("[]").find("1 to 4 columns"), std::string::npos) << ConfigError("[]");
  EXPECT_NE(ConfigError("[\"a\", \"b\", \"c\", \"d\", \"e\"]").find("1 to 4 columns"), std::string::npos);
  EXPECT_NE(ConfigError("[\"a\", \"a\"]").find("names column 'a' twice"), std::string::npos);
  EXPECT_NE(ConfigError("[\"a\", 3]").find("non-empty strings"), std::string::npos);
  EXPECT_NE(ConfigError("7").find("'source.key'"), std::string::npos);
}

TEST(RequestKeys, OneIntegerColumnIsDirectAnyOtherKeyIsMapped) {
  auto config = WithKey("\"id\"");
  for (const char* type : {"smallint", "integer", "bigint"}) {
    EXPECT_FALSE(RequestKeys::Resolve(config, {{"id", type}}).mapped()) << type;
  }
  for (const char* type : {"uuid", "text", "character varying(40)", "character(8)"}) {
    EXPECT_TRUE(RequestKeys::Resolve(config, {{"id", type}}).mapped()) << type;
  }
  auto composite = WithKey("[\"tenant\", \"id\"]");
  EXPECT_TRUE(RequestKeys::Resolve(composite, {{"tenant", "integer"}, {"id", "bigint"}}).mapped())
      << "two integers are still two columns";
  try {
    RequestKeys::Resolve(config, {{"id", "double precision"}});
    ADD_FAILURE() << "a float key";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("key column 'id' is double precision"), std::string::npos) << e.what();
  }
  EXPECT_THROW(RequestKeys::Resolve(composite, {{"tenant", "text"}}), Error) << "a missing key column";
}

TEST(RequestKeys, SqlFragmentsQuoteTheirColumnsAndFindRequestsByTheirIdColumn) {
  auto direct = RequestKeys::Resolve(WithKey("\"id\""), {{"id", "integer"}});
  EXPECT_EQ(direct.id_column(), "id");
  EXPECT_EQ(direct.IdOf("t"), "t.\"id\"::bigint");
  EXPECT_EQ(direct.IdOf(""), "\"id\"::bigint");
  EXPECT_EQ(direct.JoinSourceById("k.key", "\"t\"", "s", "m"), " LEFT JOIN \"t\" s ON s.\"id\" = k.key");
  EXPECT_EQ(direct.IdJsonSql("m", "k.key"), "(k.key)::text");
  EXPECT_EQ(direct.Label(42), "id = 42");

  auto composite = RequestKeys::Resolve(WithKey("[\"Tenant\", \"id\"]"), {{"Tenant", "text"}, {"id", "integer"}});
  EXPECT_EQ(composite.map_table(), "\"runnel_t_keys\"");
  EXPECT_EQ(composite.id_column(), "runnel_t_id");
  EXPECT_EQ(composite.IdOf("t"), "t.\"runnel_t_id\"");
  EXPECT_EQ(composite.SameKey("a", "b"), "(a.\"Tenant\", a.\"id\") = (b.\"Tenant\", b.\"id\")");
  EXPECT_EQ(composite.JoinSourceById("k.key", "\"t\"", "s", "m"),
            " LEFT JOIN \"runnel_t_keys\" m ON m.runnel_id = k.key LEFT JOIN \"t\" s ON s.\"runnel_t_id\" = k.key")
      << "the view of keys has the key of a deleted row";
  EXPECT_EQ(composite.KeyComplete("n"), "n.\"Tenant\" IS NOT NULL AND n.\"id\" IS NOT NULL");
  EXPECT_EQ(composite.IdJsonSql("m", "k.key"), "json_build_array(m.\"Tenant\", m.\"id\")::text");
  EXPECT_EQ(composite.LabelSql("t"), "format('Tenant = %L, id = %L', t.\"Tenant\", t.\"id\")");
  EXPECT_EQ(composite.Signature(), "Tenant text, id integer");
  EXPECT_EQ(composite.TypedParams(3), "$3::text, $4::integer");
  EXPECT_EQ(composite.TypedParams(1, true), "$1::text[]::text[], $2::text[]::integer[]");

  auto percent = RequestKeys::Resolve(WithKey("\"a%b\""), {{"a%b", "uuid"}});
  EXPECT_EQ(percent.LabelSql("t"), "format('a%%b = %L', t.\"a%b\")") << "format()'s pattern escapes %";
}

}  // namespace
}  // namespace runnel::pipeline
