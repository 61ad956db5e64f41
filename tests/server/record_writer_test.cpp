// RecordWriter against a real PostgreSQL: a small group goes in one INSERT ... FROM
// unnest, a large one by COPY, records with their own keys by INSERT ... RETURNING.
// All must store the same values, refuse the same values with the same SQLSTATE, and
// give each record the id of its own row.
#include <gtest/gtest.h>

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include "../support/pg_environment.hpp"
#include "runnel/server/record_schema.hpp"

namespace runnel::server {
namespace {

using nlohmann::json;
using postgres::Params;

// GENERATED ALWAYS: the writer must insert the sequence's ids as COPY does.
constexpr const char* kTable = R"sql(
CREATE TABLE t (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, label text, note varchar(5), amount numeric(6,2),
                doc jsonb, tags text[], at timestamptz, flag boolean, n integer, x double precision, letter "char",
                mood mood)
)sql";

const char* const kRecords[] = {
    R"({"label": "a", "note": "tab\t", "amount": 12.345, "doc": {"k": [1, "x\ny"], "q": "\"\\"}, "tags": "{a,\"b c\"}",
        "at": "2026-12-06 10:00:00+00", "flag": true, "n": -2147483648, "x": 0.1, "letter": "z", "mood": "sad"})",
    R"({"label": "b\\N", "note": null, "amount": -0.005, "doc": "just text", "tags": "{}", "at": null, "flag": false,
        "n": 2147483647, "x": 1e300, "letter": null, "mood": null})",
    R"({"label": "c\r\n\\", "note": "äöü€x", "amount": 9999.99, "doc": null, "tags": null, "at": "epoch",
        "flag": null, "n": 0, "x": -2.5e-308, "letter": "\\", "mood": "ok"})",
    R"({"label": "d,{}\"", "note": "", "amount": 0, "doc": [null, true, 1.5], "tags": "{NULL,\"\\\\\"}",
        "at": "2026-01-01T00:00:00.123456Z", "flag": true, "n": 7, "x": 3, "letter": "'", "mood": "sad"})",
};

constexpr const char* kColumnsRead =
    "label, note, amount::text, doc::text, tags::text, at::text, flag::text, n::text, x::text, letter::text, "
    "mood::text";

class RecordWriterTest : public runnel::testing::PostgresTest {
 protected:
  void SetUp() override {
    PostgresTest::SetUp();
    conn_ = std::make_unique<postgres::Connection>(Connect());
    conn_->Exec("SET TIME ZONE 'UTC'");
    conn_->Exec("CREATE TYPE mood AS ENUM ('sad', 'ok')");
    conn_->Exec(kTable);
    config_.name = "t";
    config_.table = "t";
    config_.key_columns = {"id"};
    schema_ = RecordSchema::Load(*conn_, config_);
    writer_ = std::make_unique<RecordWriter>(config_, schema_);
  }

  // `records` each `times` over, inserted as one group (in two parts); their ids.
  std::vector<int64_t> Insert(const std::vector<json>& records, size_t times = 1) {
    return InsertWith(*writer_, schema_, records, times);
  }

  std::vector<int64_t> InsertWith(RecordWriter& writer, const RecordSchema& schema, const std::vector<json>& records,
                                  size_t times) {
    std::vector<json> all;
    for (size_t i = 0; i < times; ++i) all.insert(all.end(), records.begin(), records.end());
    std::vector<std::string> columns;
    for (const auto& [column, value] : all.front().items()) columns.push_back(column);
    std::vector<const json*> pointers;
    for (const auto& record : all) pointers.push_back(&record);
    const size_t half = all.size() / 2;
    const RecordRows first = schema.Render(columns, std::span<const json* const>(pointers).first(half));
    const RecordRows second = schema.Render(columns, std::span<const json* const>(pointers).subspan(half));
    return writer.Insert(*conn_, columns, {&first, &second});
  }

  // A table like t whose ids clients give (no sequence): the RETURNING path.
  void MakeKeyedTable() {
    conn_->Exec("CREATE TABLE k (LIKE t)");
    conn_->Exec("ALTER TABLE k ADD PRIMARY KEY (id)");
    keyed_config_ = config_;
    keyed_config_.name = keyed_config_.table = "k";
    keyed_config_.clients_set_keys = true;
    keyed_schema_ = RecordSchema::Load(*conn_, keyed_config_);
    keyed_writer_ = std::make_unique<RecordWriter>(keyed_config_, keyed_schema_);
  }

  // The row of `id` (in `table`) as text, column by column.
  std::vector<std::string> Row(int64_t id, const char* table = "t") {
    auto r = conn_->Exec(fmt::format("SELECT {} FROM {} WHERE id = $1", kColumnsRead, table), Params().Add(id));
    EXPECT_EQ(r.rows(), 1) << id;
    std::vector<std::string> row;
    for (int c = 0; c < r.columns(); ++c) row.push_back(r.IsNull(0, c) ? "<null>" : r.Get<std::string>(0, c));
    return row;
  }

  // The SQLSTATE with which inserting `record` `times` over is refused; "" if it is not.
  std::string Refusal(const json& record, size_t times, bool keyed = false) {
    try {
      if (keyed) {
        std::vector<json> records(times, record);
        for (size_t i = 0; i < times; ++i) records[i]["id"] = 1000000 + i;
        InsertWith(*keyed_writer_, keyed_schema_, records, 1);
      } else {
        Insert({record}, times);
      }
    } catch (const postgres::DatabaseError& e) {
      return e.sqlstate();
    }
    return "";
  }

  pipeline::PipelineConfig config_, keyed_config_;
  RecordSchema schema_, keyed_schema_;
  std::unique_ptr<RecordWriter> writer_, keyed_writer_;
  std::unique_ptr<postgres::Connection> conn_;
};

TEST_F(RecordWriterTest, OneStatementAndCopyStoreTheSameValuesUnderEachRecordsId) {
  std::vector<json> records;
  for (const char* r : kRecords) records.push_back(json::parse(r));
  const auto small = Insert(records);
  ASSERT_EQ(small.size(), records.size());
  static_assert(RecordWriter::kStatementRecords < 50 * std::size(kRecords));
  const auto copied = Insert(records, 50);
  ASSERT_EQ(copied.size(), 50 * records.size());
  for (size_t i = 0; i < copied.size(); ++i) {
    const auto expected = Row(small[i % records.size()]);
    ASSERT_EQ(Row(copied[i]), expected) << "record " << i;
    EXPECT_EQ(expected.front(), records[i % records.size()]["label"].get<std::string>()) << "each id is its record's";
  }
  EXPECT_EQ(Row(small[0])[2], "12.35") << "numeric(6,2) rounds as its input does";
  EXPECT_EQ(Row(small[1])[3], "\"just text\"");

  MakeKeyedTable();
  std::vector<json> keyed = records;
  for (size_t i = 0; i < keyed.size(); ++i) keyed[i]["id"] = 100 - static_cast<int64_t>(i);  // not in id order
  const auto given = InsertWith(*keyed_writer_, keyed_schema_, keyed, 1);
  ASSERT_EQ(given.size(), keyed.size());
  for (size_t i = 0; i < given.size(); ++i) {
    EXPECT_EQ(given[i], 100 - static_cast<int64_t>(i)) << "RETURNING in the records' order";
    EXPECT_EQ(Row(given[i], "k"), Row(small[i])) << "record " << i << " by INSERT ... RETURNING";
  }
}

TEST_F(RecordWriterTest, RecordsOfDefaultsOnlyGetRowsOfTheirOwnOnEachPath) {
  conn_->Exec("CREATE TABLE d (id bigint PRIMARY KEY DEFAULT (random() * 1e15)::bigint, label text DEFAULT 'x')");
  pipeline::PipelineConfig config = config_;
  config.name = config.table = "d";
  const auto schema = RecordSchema::Load(*conn_, config);
  RecordWriter without_sequence(config, schema);
  EXPECT_EQ(InsertWith(without_sequence, schema, std::vector<json>(3, json::object()), 1).size(), 3u);
  EXPECT_EQ(Insert({json::object()}, 3).size(), 3u) << "with a sequence: COPY of the ids alone";
  EXPECT_EQ(conn_->Exec("SELECT count(*) FROM d WHERE label = 'x'", Params()).Get<int64_t>(0, 0), 3);
}

TEST_F(RecordWriterTest, OneStatementAndCopyRefuseTheSameValues) {
  MakeKeyedTable();
  const json good = json::parse(kRecords[0]);
  struct Case {
    const char* column;
    json value;
    const char* sqlstate;
  };
  const Case cases[] = {
      {"note", "toolong", "22001"},    // longer than varchar(5)
      {"amount", 12345.678, "22003"},  // beyond numeric(6,2)
      {"at", "not a time", "22007"},   // no timestamp
      {"tags", "{unclosed", "22P02"},  // no array literal
      {"mood", "happy", "22P02"},      // no label of the enum
      {"letter", "two", ""},           // "char" keeps the first byte, in both
  };
  for (const auto& c : cases) {
    json record = good;
    record[c.column] = c.value;
    EXPECT_EQ(Refusal(record, 1), c.sqlstate) << c.column << " in one statement";
    EXPECT_EQ(Refusal(record, 2 * RecordWriter::kStatementRecords), c.sqlstate) << c.column << " by COPY";
    EXPECT_EQ(Refusal(record, 2, true), c.sqlstate) << c.column << " by INSERT ... RETURNING";
    if (*c.sqlstate != '\0') {
      // Which record and column: record 2 of [good, good, refused].
      std::vector<const json*> three = {&good, &good, &record};
      std::vector<std::string> columns;
      for (const auto& [column, value] : record.items()) columns.push_back(column);
      const RecordRows rows = schema_.Render(columns, three);
      postgres::Transaction tx(*conn_);
      auto refused = writer_->Locate(*conn_, columns, rows);
      ASSERT_TRUE(refused.has_value()) << c.column;
      EXPECT_EQ(refused->row(), 2u) << c.column;
      EXPECT_EQ(refused->column(), c.column);
      EXPECT_EQ(refused->sqlstate(), c.sqlstate) << c.column;
    }
  }
  const int64_t rows = conn_->Exec("SELECT count(*) FROM t", Params()).Get<int64_t>(0, 0);
  EXPECT_EQ(rows, 1 + 2 * static_cast<int64_t>(RecordWriter::kStatementRecords))
      << "only the accepted \"char\" case's rows, nothing of a refused group";
}

}  // namespace
}  // namespace runnel::server
