#include "runnel/core/csv.hpp"

#include <gtest/gtest.h>

#include <sstream>

namespace runnel {
namespace {

std::vector<std::vector<std::string>> ReadAll(const std::string& text, char delimiter = ',') {
  std::istringstream in(text);
  CsvReader reader(in, delimiter);
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> fields;
  while (reader.Next(fields)) rows.push_back(fields);
  return rows;
}

TEST(Csv, QuotesBomLineEndingsAndDelimiters) {
  auto rows = ReadAll("\xEF\xBB\xBFid,name\r\n1,\"a, \"\"b\"\"\"\n2,\"multi\nline\"\n3,");
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"id", "name"}));
  EXPECT_EQ(rows[1], (std::vector<std::string>{"1", "a, \"b\""}));
  EXPECT_EQ(rows[2], (std::vector<std::string>{"2", "multi\nline"}));
  EXPECT_EQ(rows[3], (std::vector<std::string>{"3", ""}));
  EXPECT_EQ(ReadAll("7.4;0.7;5", ';')[0].size(), 3u);
}

TEST(Csv, UnterminatedQuoteIsReported) {
  std::istringstream in("1,\"open\n2,3\n");
  CsvReader reader(in, ',');
  std::vector<std::string> fields;
  ASSERT_TRUE(reader.Next(fields));
  EXPECT_TRUE(reader.malformed());
  EXPECT_FALSE(reader.Next(fields));
}

TEST(Csv, WriterQuotesOnlyWhenNeeded) {
  std::string out;
  AppendCsvField(out, "plain", ',');
  out += '|';
  AppendCsvField(out, "a,b \"c\"", ',');
  EXPECT_EQ(out, "plain|\"a,b \"\"c\"\"\"");
}

TEST(Csv, ColumnNamesNormalise) {
  EXPECT_EQ(NormalizeColumnName("FamilyMembers"), "familymembers");
  EXPECT_EQ(NormalizeColumnName("family_members"), "familymembers");
  EXPECT_EQ(NormalizeColumnName("Family-Members "), "familymembers");
}

TEST(SplitAtTest, KeepsEveryFieldAsWritten) {
  EXPECT_EQ(SplitAt("age,,wealth", ','), (std::vector<std::string>{"age", "", "wealth"}));
  EXPECT_EQ(SplitAt("", ','), (std::vector<std::string>{""}));
  EXPECT_EQ(SplitAt("v1/requests/", '/'), (std::vector<std::string>{"v1", "requests", ""}));
  EXPECT_EQ(SplitAt("a \"b,c\"", ','), (std::vector<std::string>{"a \"b", "c\""})) << "no quoting";
}

}  // namespace
}  // namespace runnel
