// The quota arithmetic `runnel load` warns with, and CSV rows as JSON records (no
// database).
#include <gtest/gtest.h>

#include "runnel/pipeline/load.hpp"

namespace runnel::pipeline {
namespace {

TEST(LoadQuota, RowsSpreadRoundRobinOverTheClients) {
  EXPECT_EQ(ThrottledByLoad(5000, 5, 1000, {}), 0) << "1,000 each: exactly the quota";
  EXPECT_EQ(ThrottledByLoad(5001, 5, 1000, {}), 1) << "client 1 gets the extra row";
  EXPECT_EQ(ThrottledByLoad(5000, 5, 1000, {{1, 50}, {2, 50}, {3, 50}, {4, 50}, {5, 50}}), 250);
  EXPECT_EQ(ThrottledByLoad(10, 100, 1, {}), 0) << "fewer rows than clients";
  EXPECT_EQ(ThrottledByLoad(10, 2, 3, {{1, 9}}), 5 + 2) << "client 1 is over already; client 2 keeps 3 of 5";
  EXPECT_EQ(ThrottledByLoad(0, 5, 1, {}), 0);
  EXPECT_EQ(ThrottledByLoad(500000, 100, 1000, {}), 400000) << "the issue's 500,000 rows";
}

// A CSV row as the record the JetStream ingest checks: typed by the table's columns; a
// field its column's type cannot take stays a string, for the checks to name.
TEST(LoadCsv, RowsBecomeRecordsTypedByTheTable) {
  CsvRows rows;
  rows.columns = {"n", "x", "b", "doc", "name", "late"};
  rows.rows = {{"42", "2.5", "t", R"({"a": [1]})", "007", std::nullopt}, {"4x", "inf", "maybe", "{not json", "", "1"}};
  const std::map<std::string, std::string> types{{"n", "bigint"},  {"x", "double precision"}, {"b", "boolean"},
                                                 {"doc", "jsonb"}, {"name", "text"},          {"late", "integer"}};
  PipelineConfig config;
  EXPECT_EQ(CsvRecordJson(rows, 0, types, config, ""),
            R"({"b":true,"doc":{"a":[1]},"late":null,"n":42,"name":"007","x":2.5})");
  EXPECT_EQ(CsvRecordJson(rows, 1, types, config, ""),
            R"({"b":"maybe","doc":"{not json","late":1,"n":"4x","name":"","x":"inf"})");
  config.model_type_column = "kind";
  EXPECT_EQ(CsvRecordJson(rows, 0, types, config, "red"),
            R"({"b":true,"doc":{"a":[1]},"kind":"red","late":null,"n":42,"name":"007","x":2.5})");
}

}  // namespace
}  // namespace runnel::pipeline
