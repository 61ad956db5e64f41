// The pure parts of snapshots, without a database: version file names, how each
// PostgreSQL type is carried, how answers are written as JSON and CSV.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "export.hpp"
#include "runnel/snapshot/snapshot.hpp"

namespace runnel::snapshot {
namespace {

TEST(SnapshotNames, OnlyPublishedVersionFilesCount) {
  EXPECT_EQ(VersionOfFileName("v1.duckdb"), 1);
  EXPECT_EQ(VersionOfFileName("v1234.duckdb"), 1234);
  for (const char* other : {"v0.duckdb", "v01.duckdb", "v.duckdb", ".v3.duckdb.tmp", "v3.duckdb.wal", "x3.duckdb",
                            "v3.duckdbx", "v-3.duckdb", "v3a.duckdb", "v1234567890123456.duckdb", ".lock", ""}) {
    EXPECT_EQ(VersionOfFileName(other), std::nullopt) << other;
  }
}

TEST(SnapshotColumns, EachPostgresTypeIsCarriedAsTheMatchingDuckDbType) {
  struct Case {
    Oid oid;
    const char* csv;
    const char* final_type;
    const char* copy;
  };
  const Case cases[] = {
      {16, "BOOLEAN", "BOOLEAN", "s.\"c\""},
      {20, "BIGINT", "BIGINT", "s.\"c\""},
      {23, "INTEGER", "INTEGER", "s.\"c\""},
      {700, "FLOAT", "FLOAT", "s.\"c\""},
      {1700, "DOUBLE", "DOUBLE", "s.\"c\""},
      {1043, "VARCHAR", "VARCHAR", "s.\"c\""},
      {2950, "UUID", "UUID", "s.\"c\""},
      {1184, "TIMESTAMPTZ", "TIMESTAMPTZ", "s.\"c\""},
      {3802, "VARCHAR", "JSON", "s.\"c\"::text"},
      {1016, "JSON", "BIGINT[]", "to_json(s.\"c\")::text"},
      {1009, "JSON", "VARCHAR[]", "to_json(s.\"c\")::text"},
      {1186, "VARCHAR", "VARCHAR", "s.\"c\"::text"},  // interval: as its text
  };
  for (const auto& c : cases) {
    const auto plan = PlanColumn("c", c.oid);
    EXPECT_EQ(plan.csv_type, c.csv) << c.oid;
    EXPECT_EQ(plan.final_type, c.final_type) << c.oid;
    EXPECT_EQ(plan.copy_expr, c.copy) << c.oid;
  }
  EXPECT_EQ(PlanColumn("we\"ird", 25).copy_expr, "s.\"we\"\"ird\"");
}

TEST(SnapshotColumns, InputColumnsNamedAsResultColumnsAreRenamedInTheRequestsView) {
  const std::vector<ColumnPlan> results = {PlanColumn("key", 20), PlanColumn("status", 25),
                                           PlanColumn("finished_at", 1184)};
  const std::vector<ColumnPlan> inputs = {PlanColumn("request_id", 20), PlanColumn("status", 25),
                                          PlanColumn("age", 23)};
  const std::string sql = RequestsViewSql(results, inputs);
  EXPECT_NE(sql.find("i.\"status\" AS \"input_status\""), std::string::npos) << sql;
  EXPECT_NE(sql.find("i.\"age\" AS \"age\""), std::string::npos) << sql;
  EXPECT_NE(sql.find("r.key AS request_id"), std::string::npos) << sql;
}

QueryAnswer Sample() {
  QueryAnswer answer;
  answer.columns = {"n", "x", "ok", "text"};
  answer.kinds = {ValueKind::Integer, ValueKind::Real, ValueKind::Boolean, ValueKind::Text};
  answer.rows.push_back({"42", "1.5", "true", "plain"});
  answer.rows.push_back({std::nullopt, "nan", "false", "a \"quoted\", comma\nline"});
  answer.rows.push_back({"170141183460469231731687303715884105727", "inf", std::nullopt, ""});
  answer.truncated = true;
  return answer;
}

TEST(SnapshotAnswers, JsonKeepsNumbersAndBooleansAndNeverWritesNaN) {
  const auto json = nlohmann::json::parse(AnswerJson(Sample()));
  EXPECT_EQ(json["columns"], nlohmann::json({"n", "x", "ok", "text"}));
  EXPECT_EQ(json["rows"][0], nlohmann::json::parse(R"([42, 1.5, true, "plain"])"));
  EXPECT_TRUE(json["rows"][1][0].is_null());
  EXPECT_TRUE(json["rows"][1][1].is_null());  // NaN is not JSON
  EXPECT_EQ(json["rows"][1][3], "a \"quoted\", comma\nline");
  EXPECT_EQ(json["rows"][2][0], "170141183460469231731687303715884105727");  // a HUGEINT, as text
  EXPECT_TRUE(json["rows"][2][1].is_null());
  EXPECT_EQ(json["rows"][2][3], "");
  EXPECT_TRUE(json["truncated"].get<bool>());
}

TEST(SnapshotAnswers, CsvQuotesWhatNeedsItAndTellsNullFromEmpty) {
  EXPECT_EQ(AnswerCsv(Sample()),
            "n,x,ok,text\r\n"
            "42,1.5,true,plain\r\n"
            ",nan,false,\"a \"\"quoted\"\", comma\nline\"\r\n"
            "170141183460469231731687303715884105727,inf,,\"\"\r\n");
}

}  // namespace
}  // namespace runnel::snapshot
