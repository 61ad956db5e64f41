// The libpq RAII layer against a real server: values in binary and text format, and
// every error path (bad URL, unreachable server, SQL errors, server gone mid-query).
#include "runnel/postgres/connection.hpp"

#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <cmath>
#include <future>
#include <limits>
#include <thread>

#include "../support/pg_environment.hpp"
#include "runnel/core/thread_name.hpp"

namespace runnel::postgres {
namespace {

using runnel::testing::PostgresTest;

std::string Message(const std::exception& e) {
  return e.what();
}

TEST(ConnectionErrors, MalformedUrlIsRejectedWithLibpqReason) {
  try {
    Connection::Open("postgresql://[not-a-host");
    ADD_FAILURE() << "must throw";
  } catch (const DatabaseError& e) {
    EXPECT_EQ(e.sqlstate(), "08001");
    EXPECT_TRUE(e.IsConnectionLost());
    EXPECT_NE(Message(e).find("invalid connection string"), std::string::npos) << e.what();
  }
  EXPECT_THROW(Connection::Open("host=localhost port"), DatabaseError);
}

TEST(ConnectionErrors, UnreachableServerNamesTargetButNotPassword) {
  try {
    // Port 1 on loopback: nothing listens there.
    Connection::Open("host=127.0.0.1 port=1 dbname=nowhere user=someone password=s3cret connect_timeout=2");
    ADD_FAILURE() << "must throw";
  } catch (const DatabaseError& e) {
    EXPECT_EQ(e.sqlstate(), "08001");
    EXPECT_NE(Message(e).find("port=1"), std::string::npos) << e.what();
    EXPECT_NE(Message(e).find("dbname=nowhere"), std::string::npos) << e.what();
    EXPECT_EQ(Message(e).find("s3cret"), std::string::npos) << e.what();
  }
}

class ConnectionTest : public PostgresTest {};

TEST_F(ConnectionTest, SqlErrorsCarrySqlstateAndKeepTheConnection) {
  auto conn = Connect();
  try {
    conn.Exec("SELECT * FROM missing_table");
    ADD_FAILURE() << "must throw";
  } catch (const DatabaseError& e) {
    EXPECT_EQ(e.sqlstate(), "42P01");
    EXPECT_FALSE(e.IsConnectionLost());
    EXPECT_NE(Message(e).find("missing_table"), std::string::npos) << e.what();
    EXPECT_NE(Message(e).find("42P01"), std::string::npos) << e.what();
  }
  try {
    conn.Exec("SELECT 1 / $1", Params().Add(int32_t{0}));
    ADD_FAILURE() << "must throw";
  } catch (const DatabaseError& e) {
    EXPECT_EQ(e.sqlstate(), "22012");
  }
  conn.Exec("CREATE TABLE u (id int PRIMARY KEY)");
  conn.Exec("INSERT INTO u VALUES (1)");
  try {
    conn.Exec("INSERT INTO u VALUES (1)");
    ADD_FAILURE() << "must throw";
  } catch (const DatabaseError& e) {
    EXPECT_EQ(e.sqlstate(), "23505");
    EXPECT_NE(Message(e).find("Key (id)=(1) already exists"), std::string::npos) << "detail is kept: " << e.what();
  }
  EXPECT_TRUE(conn.IsOpen());
  EXPECT_EQ(conn.Exec("SELECT count(*) FROM u").Get<int64_t>(0, 0), 1);
}

TEST_F(ConnectionTest, ServerGoneMidQuery) {
  auto victim = Connect();
  auto killer = Connect();
  const int victim_pid = victim.BackendPid();
  std::thread terminate([&] {
    // Wait until the victim is inside pg_sleep, then end its backend.
    for (int i = 0; i < 500; ++i) {
      auto active = killer.Exec("SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'",
                                Params().Add(int32_t{victim_pid}));
      if (active.Get<int64_t>(0, 0) == 1) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    killer.Exec("SELECT pg_terminate_backend($1)", Params().Add(int32_t{victim_pid}));
  });
  try {
    victim.Exec("SELECT pg_sleep(60)");
    ADD_FAILURE() << "must throw";
  } catch (const DatabaseError& e) {
    // libpq reports the server's 57P01 when it reads the FATAL message before the
    // socket closes, else its own 08006: both mean "reconnect".
    EXPECT_TRUE(e.IsConnectionLost()) << e.sqlstate() << " " << e.what();
    EXPECT_TRUE(e.sqlstate() == "57P01" || e.sqlstate() == "08006") << e.what();
  }
  terminate.join();
  EXPECT_FALSE(victim.IsOpen());
  try {
    victim.Exec("SELECT 1");
    ADD_FAILURE() << "a dead connection must throw";
  } catch (const DatabaseError& e) {
    EXPECT_TRUE(e.IsConnectionLost()) << e.sqlstate() << " " << e.what();
  }
}

// pg_stat_activity and the server's log name each session for the thread that opened
// it; an application_name the connection string gives wins.
TEST_F(ConnectionTest, SessionsAreNamedForTheThreadThatOpensThem) {
  auto application_name = [](Connection conn) {
    return conn.Exec("SELECT current_setting('application_name')").Get<std::string>(0, 0);
  };
  const std::string named = std::async(std::launch::async, [&] {
                              NameThisThread("w0:needs");
                              return application_name(Connect());
                            }).get();
  EXPECT_EQ(named, "runnel w0:needs");
  std::string own = conninfo();
  if (own.find("://") == std::string::npos) {
    own += " application_name=mine";
  } else {
    own += own.find('?') == std::string::npos ? "?application_name=mine" : "&application_name=mine";
  }
  EXPECT_EQ(application_name(Connection::Open(own)), "mine");
}

TEST_F(ConnectionTest, BinaryParametersRoundTrip) {
  auto conn = Connect();
  Params params;
  params.Add(true)
      .Add(int16_t{-12})
      .Add(int32_t{2147483647})
      .Add(int64_t{-9007199254740993})
      .Add(1.5f)
      .Add(-2.25)
      .Add("héllo 'quoted'")
      .AddNull()
      .AddBytes(std::string("a\0b", 3));
  auto r = conn.Exec(
      "SELECT $1::bool, $2::int2, $3::int4, $4::int8, $5::float4, $6::float8, $7::text, "
      "$8::int4 AS nothing, $9::bytea",
      params);
  ASSERT_EQ(r.rows(), 1);
  EXPECT_TRUE(r.Get<bool>(0, 0));
  EXPECT_EQ(r.Get<int16_t>(0, 1), -12);
  EXPECT_EQ(r.Get<int32_t>(0, 2), 2147483647);
  EXPECT_EQ(r.Get<int64_t>(0, 3), -9007199254740993);
  EXPECT_EQ(r.Get<float>(0, 4), 1.5f);
  EXPECT_EQ(r.Get<double>(0, 5), -2.25);
  EXPECT_EQ(r.Get<std::string>(0, 6), "héllo 'quoted'");
  EXPECT_TRUE(r.IsNull(0, 7));
  EXPECT_FALSE(r.GetOptional<int32_t>(0, 7).has_value());
  EXPECT_EQ(r.Get<std::string>(0, 8), std::string("a\0b", 3));
  // Widening reads are allowed.
  EXPECT_EQ(r.Get<int64_t>(0, 1), -12);
  EXPECT_EQ(r.Get<double>(0, 2), 2147483647.0);
}

TEST_F(ConnectionTest, BinaryArrayParametersRoundTrip) {
  auto conn = Connect();
  const std::vector<int64_t> keys = {INT64_MIN, -1, 0, 42, INT64_MAX};
  const std::vector<std::optional<double>> values = {1.5, std::nullopt, -0.0, std::numeric_limits<double>::infinity(),
                                                     1e-310};
  const std::vector<std::optional<std::string>> texts = {"a", std::nullopt, "", "héllo, {\"quoted\"} NULL", "x"};
  auto r = conn.Exec(
      "SELECT k, v, t, v IS NULL, t IS NULL, ord FROM unnest($1::bigint[], $2::float8[], $3::text[]) "
      "WITH ORDINALITY AS u(k, v, t, ord) ORDER BY ord",
      Params().AddArray(keys).AddArray(values).AddArray(texts));
  ASSERT_EQ(r.rows(), 5);
  for (int i = 0; i < 5; ++i) {
    const auto at = static_cast<size_t>(i);
    EXPECT_EQ(r.Get<int64_t>(i, 0), keys[at]);
    EXPECT_EQ(r.Get<bool>(i, 3), !values[at].has_value());
    if (values[at]) {
      EXPECT_EQ(r.Get<double>(i, 1), *values[at]);
    }
    EXPECT_EQ(r.Get<bool>(i, 4), !texts[at].has_value());
    if (texts[at]) {
      EXPECT_EQ(r.Get<std::string>(i, 2), *texts[at]);
    }
  }
  EXPECT_TRUE(std::signbit(r.Get<double>(2, 1))) << "-0.0 travels as itself";
  // Empty arrays are zero-dimensional, as PostgreSQL's own.
  auto empty = conn.Exec("SELECT cardinality($1::bigint[]), $2::float8[] = '{}', cardinality($3::text[])",
                         Params()
                             .AddArray(std::vector<int64_t>{})
                             .AddArray(std::vector<std::optional<double>>{})
                             .AddArray(std::vector<std::optional<std::string>>{}));
  EXPECT_EQ(empty.Get<int64_t>(0, 0), 0);
  EXPECT_TRUE(empty.Get<bool>(0, 1));
  EXPECT_EQ(empty.Get<int64_t>(0, 2), 0);
}

TEST_F(ConnectionTest, PreparedStatementsArePreparedOncePerConnection) {
  auto conn = Connect();
  const std::string sql = "SELECT $1::bigint + 1, cardinality($2::float8[])";
  for (int64_t i = 0; i < 8; ++i) {  // past the server's five custom plans
    auto r = conn.ExecPrepared(
        sql, Params().Add(i).AddArray(std::vector<std::optional<double>>(static_cast<size_t>(i), 1.0)));
    EXPECT_EQ(r.Get<int64_t>(0, 0), i + 1);
    EXPECT_EQ(r.Get<int64_t>(0, 1), i);
  }
  conn.ExecPrepared("SELECT $1::text", Params().Add("x"));
  EXPECT_EQ(conn.Exec("SELECT count(*) FROM pg_prepared_statements", Params()).Get<int64_t>(0, 0), 2);
  try {
    conn.ExecPrepared("SELECT * FROM no_such_table WHERE a = $1", Params().Add(int64_t{1}));
    ADD_FAILURE() << "expected an error";
  } catch (const DatabaseError& e) {
    EXPECT_EQ(e.sqlstate(), "42P01");
  }
  EXPECT_EQ(conn.ExecPrepared(sql, Params().Add(int64_t{41}).AddArray(std::vector<std::optional<double>>{}))
                .Get<int64_t>(0, 0),
            42)
      << "a failed prepare leaves the connection and the other statements usable";
}

TEST_F(ConnectionTest, PreparedStatementsAreBoundedPerConnection) {
  auto conn = Connect();
  const size_t n = Connection::kMaxPrepared + 20;
  for (size_t i = 0; i < n; ++i) {
    EXPECT_EQ(conn.ExecPrepared(fmt::format("SELECT $1::bigint + {}", i), Params().Add(int64_t{1})).Get<int64_t>(0, 0),
              static_cast<int64_t>(i) + 1);
  }
  EXPECT_EQ(conn.Exec("SELECT count(*) FROM pg_prepared_statements", Params()).Get<int64_t>(0, 0),
            static_cast<int64_t>(Connection::kMaxPrepared))
      << "statements past the bound ran unprepared";
  EXPECT_EQ(conn.ExecPrepared("SELECT $1::bigint + 1", Params().Add(int64_t{5})).Get<int64_t>(0, 0), 6)
      << "those prepared before still are";
}

TEST_F(ConnectionTest, NumericAndSpecialFloatsDecode) {
  auto conn = Connect();
  auto r = conn.Exec(
      "SELECT 12345.678::numeric, -0.0005::numeric, 0::numeric, 'NaN'::numeric, "
      "'Infinity'::float8, 100000000::numeric",
      Params());
  EXPECT_DOUBLE_EQ(r.Get<double>(0, 0), 12345.678);
  EXPECT_DOUBLE_EQ(r.Get<double>(0, 1), -0.0005);
  EXPECT_EQ(r.Get<double>(0, 2), 0.0);
  EXPECT_TRUE(std::isnan(r.Get<double>(0, 3)));
  EXPECT_TRUE(std::isinf(r.Get<double>(0, 4)));
  EXPECT_EQ(r.Get<double>(0, 5), 1e8);
}

TEST_F(ConnectionTest, TextResultsDecodeToo) {
  auto conn = Connect();
  auto r = conn.Exec("SELECT 42 AS a, 1.5::float8 AS b, true AS c, 'x' AS d, 'NaN'::float8 AS e");
  EXPECT_EQ(r.Get<int32_t>(0, r.ColumnIndex("a")), 42);
  EXPECT_EQ(r.Get<double>(0, r.ColumnIndex("b")), 1.5);
  EXPECT_TRUE(r.Get<bool>(0, r.ColumnIndex("c")));
  EXPECT_EQ(r.Get<std::string>(0, r.ColumnIndex("d")), "x");
  EXPECT_TRUE(std::isnan(r.Get<double>(0, r.ColumnIndex("e"))));
}

TEST_F(ConnectionTest, ValuesAreReadByColumnName) {
  auto conn = Connect();
  auto r = conn.Exec("SELECT 7::int8 AS id, NULL::text AS error, 'done' AS \"State\", 2.5::float8 AS at", Params());
  EXPECT_EQ(r.Get<int64_t>(0, "id"), 7);
  EXPECT_EQ(r.Get<double>(0, "at"), 2.5);
  EXPECT_TRUE(r.IsNull(0, "error"));
  EXPECT_EQ(r.GetOptional<std::string>(0, "error"), std::nullopt);
  EXPECT_EQ(r.GetOptional<double>(0, "at"), 2.5);
  EXPECT_EQ(r.Get<std::string>(0, "State"), "done") << "the name as the statement spells it";
  try {
    r.Get<int64_t>(0, "state");
    ADD_FAILURE() << "must throw";
  } catch (const DatabaseError& e) {
    EXPECT_EQ(e.sqlstate(), "42703");
    EXPECT_NE(Message(e).find("no column 'state'"), std::string::npos) << e.what();
  }
}

TEST_F(ConnectionTest, DecodingErrorsNameTheColumn) {
  auto conn = Connect();
  auto r = conn.Exec("SELECT 'abc'::text AS label, NULL::int4 AS empty, 70000::int4 AS big", Params());
  try {
    r.Get<int32_t>(0, 0);
    ADD_FAILURE() << "must throw";
  } catch (const DatabaseError& e) {
    EXPECT_NE(Message(e).find("'label'"), std::string::npos) << e.what();
  }
  try {
    r.Get<double>(0, 1);
    ADD_FAILURE() << "must throw";
  } catch (const DatabaseError& e) {
    EXPECT_NE(Message(e).find("'empty' is NULL"), std::string::npos) << e.what();
  }
  try {
    r.Get<int16_t>(0, 2);
    ADD_FAILURE() << "must throw";
  } catch (const DatabaseError& e) {
    EXPECT_EQ(e.sqlstate(), "22003");
    EXPECT_NE(Message(e).find("70000"), std::string::npos) << e.what();
  }
  EXPECT_THROW(r.ColumnIndex("nope"), DatabaseError);
  EXPECT_THROW(r.Get<bool>(0, 2), DatabaseError);
}

TEST_F(ConnectionTest, TransactionsCommitOrRollBack) {
  auto conn = Connect();
  conn.Exec("CREATE TABLE t (x int)");
  {
    Transaction tx(conn);
    conn.Exec("INSERT INTO t VALUES (1)");
    // destroyed without Commit: rolled back
  }
  EXPECT_EQ(conn.Exec("SELECT count(*) FROM t").Get<int64_t>(0, 0), 0);
  {
    Transaction tx(conn);
    conn.Exec("INSERT INTO t VALUES (2)");
    tx.Commit();
  }
  EXPECT_EQ(conn.Exec("SELECT count(*) FROM t").Get<int64_t>(0, 0), 1);
  try {
    Transaction tx(conn);
    conn.Exec("INSERT INTO t VALUES (3)");
    conn.Exec("INSERT INTO t VALUES ('not a number')");
    tx.Commit();
    ADD_FAILURE() << "must throw";
  } catch (const DatabaseError& e) {
    EXPECT_EQ(e.sqlstate(), "22P02");
  }
  EXPECT_EQ(conn.Exec("SELECT count(*) FROM t").Get<int64_t>(0, 0), 1) << "the failed transaction left nothing";
  EXPECT_EQ(conn.Exec("INSERT INTO t VALUES (4), (5)").AffectedRows(), 2);
}

TEST_F(ConnectionTest, QuotingSurvivesHostileNames) {
  auto conn = Connect();
  const std::string table = "we\"ird; DROP TABLE x; --";
  const std::string value = "it's";
  conn.Exec("CREATE TABLE " + QuoteIdentifier(table) + " (v text)");
  conn.Exec("INSERT INTO " + QuoteIdentifier(table) + " VALUES (" + QuoteLiteral(value) + ")");
  EXPECT_EQ(conn.Exec("SELECT v FROM " + QuoteIdentifier(table)).Get<std::string>(0, 0), value);
}

}  // namespace
}  // namespace runnel::postgres
