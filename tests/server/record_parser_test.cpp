// ParseValidRecords, the On-Demand reading of a POST's records, against the reference
// (ParseRecords, Validate, GroupRecords): where it answers it must give the same groups
// and values; where it declines, the reference names the problem. Pure: no database
// (RecordWriter's trip into PostgreSQL is in record_writer_test.cpp).
#include "runnel/server/record_parser.hpp"

#include <gtest/gtest.h>

#include <string>

#include "../support/records_reference.hpp"
#include "runnel/server/request_body.hpp"

namespace runnel::server {
namespace {

using runnel::testing::ExampleSchema;
using runnel::testing::ReferenceRecords;

constexpr std::string_view kJson = "application/json";
constexpr std::string_view kNdjson = "application/x-ndjson";

class RecordParserTest : public ::testing::Test {
 protected:
  // The fast reading of `body`, checked equal to the reference's.
  std::optional<RecordGroups> Fast(std::string_view body, std::string_view content_type = kJson) {
    auto fast = ParseValidRecords(body, content_type, schema_);
    if (fast) {
      auto reference = ReferenceRecords(body, content_type, schema_);
      EXPECT_TRUE(reference.has_value()) << "the fast path took what the reference refuses: " << body;
      if (reference) {
        EXPECT_EQ(*fast, *reference) << body;
      }
    }
    return fast;
  }

  // Declined by the fast path; `reference_takes`: whether the reference takes it.
  void ExpectDeclined(std::string_view body, bool reference_takes, std::string_view content_type = kJson) {
    EXPECT_FALSE(Fast(body, content_type).has_value()) << body;
    EXPECT_EQ(ReferenceRecords(body, content_type, schema_).has_value(), reference_takes) << body;
  }

  RecordSchema schema_ = ExampleSchema();
};

std::vector<std::optional<std::string>> Values(const RecordRows& rows, size_t row) {
  std::vector<std::optional<std::string>> out;
  for (size_t c = 0; c < rows.width(); ++c) {
    auto v = rows.At(row, c);
    out.push_back(v ? std::optional<std::string>(*v) : std::nullopt);
  }
  return out;
}

TEST_F(RecordParserTest, NdjsonRecordsAreRenderedAsTheReferenceRendersThem) {
  const std::string body =
      "{\"client\": 7, \"note\": \"tab\\t\", \"amount\": 12.345, \"flag\": true, \"at\": \"2026-12-06\"}\n"
      "\r\n"
      "  {\"note\": null, \"client\": 40.0, \"amount\": -1e-3, \"flag\": false, \"at\": \"epoch\"}  \r\n"
      "{\"at\": \"x\", \"flag\": true, \"amount\": 18446744073709551615, \"note\": \"\\u00e4\\ud83d\\ude00\", "
      "\"client\": -3}";
  auto groups = Fast(body, kNdjson);
  ASSERT_TRUE(groups.has_value());
  ASSERT_EQ(groups->groups.size(), 1u) << "one column set, whatever the keys' order";
  const auto& g = groups->groups[0];
  EXPECT_EQ(g.columns, (std::vector<std::string>{"amount", "at", "client", "flag", "note"}));
  EXPECT_EQ(g.members, (std::vector<size_t>{0, 1, 2}));
  using V = std::vector<std::optional<std::string>>;
  EXPECT_EQ(Values(g.rows, 0), (V{"12.345", "2026-12-06", "7", "t", "tab\t"}));
  EXPECT_EQ(Values(g.rows, 1), (V{"-0.001", "epoch", "40", "f", std::nullopt})) << "40.0 for an integer is 40";
  EXPECT_EQ(Values(g.rows, 2), (V{"18446744073709551615", "x", "-3", "t", "\xc3\xa4\xf0\x9f\x98\x80"}));
}

TEST_F(RecordParserTest, ColumnSetsAreGroupedInTheOrderTheyFirstCome) {
  auto groups = Fast(R"([{"client": 1}, {"client": 2, "flag": true}, {"flag": false, "client": 3}, {"client": 4},
                         {"client": 5, "doc": 1.5}, {"doc": "s", "client": 6}, {"doc": null, "client": 7}])");
  ASSERT_TRUE(groups.has_value());
  ASSERT_EQ(groups->groups.size(), 3u);
  EXPECT_EQ(groups->records, 7u);
  EXPECT_EQ(groups->groups[0].members, (std::vector<size_t>{0, 3}));
  EXPECT_EQ(groups->groups[1].members, (std::vector<size_t>{1, 2}));
  EXPECT_EQ(groups->groups[2].members, (std::vector<size_t>{4, 5, 6}));
  // A jsonb column's value is JSON text: a string keeps its quotes.
  EXPECT_EQ(groups->groups[2].rows.At(1, 1), "\"s\"");
  EXPECT_EQ(groups->groups[2].rows.At(0, 1), "1.5");
  EXPECT_EQ(groups->groups[2].rows.At(2, 1), std::nullopt);
}

TEST_F(RecordParserTest, OneObjectAndPrettyPrintedBodiesAreRead) {
  EXPECT_TRUE(Fast(R"({"client": 1, "note": "x"})").has_value());
  EXPECT_TRUE(Fast("{\n  \"note\": \"x\"\n,\n  \"client\": 1\n}\n").has_value()) << "whitespace after a string";
  EXPECT_TRUE(Fast("[\n {\"client\": 1}\n ,\n {\"client\": 2}\n]\n").has_value());
  EXPECT_TRUE(Fast(R"({"client": 1})", "application/x-www-form-urlencoded").has_value()) << "curl -d";
  EXPECT_TRUE(Fast(R"({"\u0063lient": 1})").has_value()) << "an escaped key";
}

TEST_F(RecordParserTest, WhatTheReferenceRefusesIsDeclined) {
  ExpectDeclined("", false);
  ExpectDeclined("[]", false);
  ExpectDeclined("\n \r\n", false, kNdjson);
  ExpectDeclined(R"({"client": 1)", false);
  ExpectDeclined(R"({"client": 1}})", false);                        // trailing content
  ExpectDeclined(R"({"client": 1} {"client": 2})", false, kNdjson);  // two records on one line
  ExpectDeclined(R"([{"client": 1}, 2])", false);                    // a record that is no object
  ExpectDeclined(R"("text")", false);
  ExpectDeclined(R"({"client": 1, "nope": 2})", false);  // unknown column
  ExpectDeclined(R"({"client": 1, "id": 2})", false);    // the database's key
  ExpectDeclined(R"({"client": 1, "made": 2})", false);  // generated
  ExpectDeclined(R"({"note": "x"})", false);             // required client missing
  ExpectDeclined(R"({"client": null})", false);
  ExpectDeclined(R"({"client": 1, "label": null})", false);  // NOT NULL
  ExpectDeclined(R"({"client": 1.5})", false);
  ExpectDeclined(R"({"client": 3000000000})", false);  // beyond integer
  ExpectDeclined(R"({"client": "1"})", false);
  ExpectDeclined(R"({"client": 1, "flag": 1})", false);
  ExpectDeclined(R"({"client": 1, "amount": "12"})", false);
  ExpectDeclined(R"({"client": 1, "amount": 1e400})", false);
  ExpectDeclined("{\"client\": 1, \"note\": \"a\x01\"}", false);  // a control character
  ExpectDeclined(R"({"client": 1, "note": "\ud800"})", false);    // a lone surrogate
  ExpectDeclined(R"({"client": 1, "note": "\udc00x"})", false);
  ExpectDeclined("{\"client\": 1, \"note\": \"\xff\"}", false);  // invalid UTF-8
  ExpectDeclined(R"({"client": 1, "flag": tru})", false);
  ExpectDeclined(R"({"client": 1, "flag": nul})", false);
  ExpectDeclined(R"({"client": 01})", false);
}

TEST_F(RecordParserTest, WhatOnlyTheReferenceReadsIsDeclinedToIt) {
  ExpectDeclined(R"({"client": 1, "doc": {"a": [1, 2]}})", true);  // a JSON document
  ExpectDeclined(R"({"client": 1, "doc": [1]})", true);
  ExpectDeclined(R"({"client": 1, "client": 2})", true);  // a repeated key: the last one counts
  ExpectDeclined(R"({"client": 1, "amount": 123456789012345678901234567890})", true);  // beyond 64 bits
  EXPECT_TRUE(Fast(R"({"client": 1, "amount": 1e2, "note": "\n"})").has_value());
  EXPECT_TRUE(Fast(R"({"client": -0, "amount": -0.0})").has_value()) << "0 and -0 as the reference has them";
  // simdjson 3.0.1 reads these wrongly (found by fuzz/record_parser_fuzzer.cpp).
  auto long_float = Fast(R"({"client": 1, "amount": -0.53333333333333333333333333333333333333333333333})");
  ASSERT_TRUE(long_float.has_value());
  EXPECT_EQ(long_float->groups[0].rows.At(0, 0), "-0.5333333333333333");
  auto long_mantissa = Fast(R"({"client": 1, "amount": 1888888888888888888888888888888888888e4})");
  ASSERT_TRUE(long_mantissa.has_value());
  EXPECT_EQ(long_mantissa->groups[0].rows.At(0, 0), "1.888888888888889e+40");
}

TEST_F(RecordParserTest, MoreRecordsThanOneRequestTakesAreDeclined) {
  std::string body;
  for (size_t i = 0; i <= kMaxRecordsPerRequest; ++i) body += "{\"client\": 1}\n";
  EXPECT_FALSE(ParseValidRecords(body, kNdjson, schema_).has_value());
  EXPECT_THROW(ParseRecords(body, kNdjson), HttpError);
  body.erase(body.size() - std::string_view("{\"client\": 1}\n").size());
  auto groups = ParseValidRecords(body, kNdjson, schema_);
  ASSERT_TRUE(groups.has_value());
  EXPECT_EQ(groups->records, kMaxRecordsPerRequest);
}

TEST(CopyErrorPlaceTest, TheLineAndColumnOfACopysContextAreRead) {
  const std::vector<std::string> columns = {"a", "ab", "note"};
  auto place = CopyErrorPlace("COPY t, line 3, column note: \"toolong\"", columns);
  ASSERT_TRUE(place.has_value());
  EXPECT_EQ(place->line, 3u);
  EXPECT_EQ(place->column, "note");
  place = CopyErrorPlace("COPY t, line 12, column ab: null input", columns);
  ASSERT_TRUE(place.has_value());
  EXPECT_EQ(place->line, 12u);
  EXPECT_EQ(place->column, "ab") << "not its prefix a";
  // A trigger's lines come first; the COPY's is the last.
  place = CopyErrorPlace("PL/pgSQL function f() line 3 at RAISE\nCOPY t, line 7: \"1\t2\"", columns);
  ASSERT_TRUE(place.has_value());
  EXPECT_EQ(place->line, 7u);
  EXPECT_EQ(place->column, "") << "a row's fault, no column's";
  EXPECT_FALSE(CopyErrorPlace("", columns).has_value());
  EXPECT_FALSE(CopyErrorPlace("SQL function \"f\" statement 1", columns).has_value());
  EXPECT_FALSE(CopyErrorPlace("COPY t, line x", columns).has_value());
  EXPECT_EQ(CopyErrorPlace("COPY t, line 2, column other: \"x\"", columns)->column, "") << "not a given column";
}

}  // namespace
}  // namespace runnel::server
