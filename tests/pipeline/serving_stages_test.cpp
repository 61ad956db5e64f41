// The pure stages of serving a batch, without PostgreSQL: claim expansion, quota
// decisions, write-back limits and failure isolation.
#include "runnel/pipeline/serving_stages.hpp"

#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <limits>
#include <random>
#include <set>

#include "../support/random.hpp"
#include "runnel/core/error.hpp"
#include "runnel/pipeline/request_status.hpp"
#include "runnel/postgres/sqlstate.hpp"

namespace runnel::pipeline {
namespace {

TEST(ExpandClaim, DistinctKeysInOrderAJobsTagAndTheMostAttemptsWin) {
  std::vector<ClaimedRange> ranges = {
      {5, 7, 1.0, std::nullopt, 0, 1}, {1, 2, 2.0, std::nullopt, 2, 2}, {6, 6, 3.0, 42, 1, 3}};
  auto keys = ExpandClaim(ranges, 100, "q");
  ASSERT_EQ(keys.size(), 5u);
  std::vector<int64_t> order;
  for (const auto& k : keys) order.push_back(k.key);
  EXPECT_EQ(order, (std::vector<int64_t>{1, 2, 5, 6, 7}));
  EXPECT_EQ(keys[3].job, 42) << "key 6 was queued by a job too";
  EXPECT_EQ(keys[3].attempts, 1);
  EXPECT_EQ(keys[0].attempts, 2);
  EXPECT_EQ(keys[0].enqueued, 2.0);
}

TEST(ExpandClaim, RefusesMoreKeysThanTheLimitNamingTheRow) {
  std::vector<ClaimedRange> one = {{1, 100, 0, std::nullopt, 0, 7}};
  EXPECT_EQ(ExpandClaim(one, 100, "q").size(), 100u);
  try {
    ExpandClaim(one, 99, "runnel_x_queue");
    ADD_FAILURE() << "must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("runnel_x_queue row seq 7 holds keys [1, 100]"), std::string::npos)
        << e.what();
  }
  // The largest bigint: no overflow in the width computation.
  std::vector<ClaimedRange> top = {{1, std::numeric_limits<int64_t>::max(), 0, std::nullopt, 0, 1}};
  EXPECT_THROW(ExpandClaim(top, 1000000, "q"), Error);
  std::vector<ClaimedRange> last = {
      {std::numeric_limits<int64_t>::max(), std::numeric_limits<int64_t>::max(), 0, std::nullopt, 0, 1}};
  EXPECT_EQ(ExpandClaim(last, 10, "q").size(), 1u);
  std::vector<ClaimedRange> two = {{1, 60, 0, std::nullopt, 0, 1}, {100, 160, 0, std::nullopt, 0, 2}};
  EXPECT_THROW(ExpandClaim(two, 100, "q"), Error) << "the limit is on the sum";
}

TEST(Throttle, OrdinalsPerClientAgainstTheThreshold) {
  std::vector<std::optional<std::string>> clients = {"a", "b", "a", std::nullopt, "a", "b"};
  std::vector<bool> counted = {true, true, true, false, true, false};
  auto over = Throttle(clients, counted, {{"a", 1}}, 2);
  EXPECT_EQ(over, (std::vector<bool>{false, false, true, false, true, false}));
  EXPECT_EQ(Throttle(clients, counted, {}, 0), (std::vector<bool>{true, true, true, false, true, false}));
}

TEST(ColumnLimits, RefuseExactlyWhatPostgresRefuses) {
  using Kind = ColumnLimit::Kind;
  EXPECT_EQ(ColumnLimitFor("real").kind, Kind::kReal);
  EXPECT_EQ(ColumnLimitFor("text").kind, Kind::kAny);
  auto numeric = ColumnLimitFor("numeric(4,2)");
  EXPECT_EQ(numeric.kind, Kind::kNumeric);
  EXPECT_EQ(numeric.precision, 4);
  EXPECT_EQ(numeric.scale, 2);
  // real: overflow and underflow as float4(float8) raises them.
  EXPECT_FALSE(RefusalFor(ColumnLimitFor("real"), 3.4e38));
  EXPECT_TRUE(RefusalFor(ColumnLimitFor("real"), 3.5e38));
  EXPECT_TRUE(RefusalFor(ColumnLimitFor("real"), 1e-50));
  EXPECT_FALSE(RefusalFor(ColumnLimitFor("real"), 0.0));
  EXPECT_FALSE(RefusalFor(ColumnLimitFor("real"), std::numeric_limits<double>::infinity()));
  EXPECT_FALSE(RefusalFor(ColumnLimitFor("double precision"), 1e300));
  // Integers: rounded, then [min, -min).
  EXPECT_FALSE(RefusalFor(ColumnLimitFor("smallint"), 32767.4));
  EXPECT_TRUE(RefusalFor(ColumnLimitFor("smallint"), 32767.6));
  EXPECT_FALSE(RefusalFor(ColumnLimitFor("smallint"), -32768.0));
  EXPECT_TRUE(RefusalFor(ColumnLimitFor("integer"), 2147483648.0));
  EXPECT_TRUE(RefusalFor(ColumnLimitFor("bigint"), 9223372036854775808.0));
  EXPECT_TRUE(RefusalFor(ColumnLimitFor("integer"), std::nan("")));
  // numeric(4,2): below 100 once rounded to 2 digits; NaN is a numeric value.
  EXPECT_FALSE(RefusalFor(numeric, 99.994));
  EXPECT_TRUE(RefusalFor(numeric, 99.996));
  EXPECT_TRUE(RefusalFor(numeric, -175.0));
  EXPECT_FALSE(RefusalFor(numeric, std::nan("")));
  EXPECT_TRUE(RefusalFor(numeric, std::numeric_limits<double>::infinity()));
  EXPECT_FALSE(RefusalFor(ColumnLimitFor("numeric"), 1e300));
}

TEST(InputTypes, NumbersOnly) {
  for (const char* type : {"smallint", "integer", "bigint", "real", "double precision", "numeric", "numeric(10,2)"}) {
    EXPECT_TRUE(IsNumericInputType(type)) << type;
  }
  for (const char* type : {"text", "timestamp with time zone", "boolean", "character varying(10)", "numericx"}) {
    EXPECT_FALSE(IsNumericInputType(type)) << type;
  }
}

TEST(IsolateFailures, FindsExactlyTheRowsThatFailAloneAndWritesEveryOtherOnce) {
  const auto seed = runnel::testing::TestSeed();
  std::mt19937_64 rng(seed);
  for (int round = 0; round < 200; ++round) {
    const size_t n = std::uniform_int_distribution<size_t>(1, 300)(rng);
    std::set<size_t> poison;
    const size_t k = std::uniform_int_distribution<size_t>(1, std::min<size_t>(n, 6))(rng);
    while (poison.size() < k) poison.insert(std::uniform_int_distribution<size_t>(0, n - 1)(rng));
    std::vector<int> written(n, 0);
    size_t attempts = 0;
    // The database's blame: right (the first poison row written), wrong (any row), or none.
    const int blame = round % 3;
    auto attempt = [&](std::span<const size_t> rows) -> std::optional<RowFailure> {
      ++attempts;
      for (size_t i : rows) {
        if (!poison.contains(i)) continue;
        RowFailure failure{0, "23514", "check", std::nullopt};
        if (blame == 1) failure.blamed = i;
        if (blame == 2) failure.blamed = rows[std::uniform_int_distribution<size_t>(0, rows.size() - 1)(rng)];
        return failure;
      }
      for (size_t i : rows) ++written[i];
      return std::nullopt;
    };
    std::vector<size_t> members(n);
    for (size_t i = 0; i < n; ++i) members[i] = i;
    const size_t chunk = round % 2 == 0 ? n : std::uniform_int_distribution<size_t>(1, n)(rng);
    auto failed = IsolateFailures(members, chunk, attempt);
    std::set<size_t> found;
    for (const auto& f : failed) {
      EXPECT_EQ(f.sqlstate, "23514");
      found.insert(f.index);
    }
    ASSERT_EQ(found, poison) << "seed " << seed << " round " << round;
    for (size_t i = 0; i < n; ++i) ASSERT_EQ(written[i], poison.contains(i) ? 0 : 1) << "row " << i;
    // Chunks, then bisection of the failing ones (or three attempts per failure with a
    // right blame): never one attempt per row.
    const size_t chunks = (n + chunk - 1) / chunk;
    const size_t per_failure = blame == 1 ? 3 : 2 * (static_cast<size_t>(std::log2(static_cast<double>(chunk))) + 2);
    EXPECT_LE(attempts, chunks + k * per_failure + (blame == 2 ? k * 2 * per_failure : 0))
        << n << " rows in chunks of " << chunk << ", blame " << blame;
  }
}

TEST(IsolationChunk, WholeWhenNoFailureIsExpectedElseBalanced) {
  EXPECT_EQ(IsolationChunk(0, 2048), 2048u);
  EXPECT_EQ(IsolationChunk(0.0001, 2048), 2048u) << "0.2 failures expected";
  EXPECT_EQ(IsolationChunk(0.001, 2048), 223u);
  EXPECT_EQ(IsolationChunk(0.5, 2048), 16u) << "never below 16";
  EXPECT_EQ(IsolationChunk(0.5, 4), 4u);
  EXPECT_EQ(IsolationChunk(1, 0), 1u);
}

TEST(SqlStatePolicy, OneClassificationForWorkersAndTheApi) {
  using postgres::FailureClass;
  EXPECT_EQ(postgres::ClassifySqlState("22003"), FailureClass::kRow);
  EXPECT_EQ(postgres::ClassifySqlState("23514"), FailureClass::kRow);
  EXPECT_EQ(postgres::ClassifySqlState("P0001"), FailureClass::kRow);
  EXPECT_EQ(postgres::ClassifySqlState("08006"), FailureClass::kTransient);
  EXPECT_EQ(postgres::ClassifySqlState("40P01"), FailureClass::kTransient);
  EXPECT_EQ(postgres::ClassifySqlState("55P03"), FailureClass::kTransient);
  EXPECT_EQ(postgres::ClassifySqlState("57014"), FailureClass::kTransient);
  EXPECT_EQ(postgres::ClassifySqlState("42703"), FailureClass::kSetup);
  EXPECT_EQ(postgres::ClassifySqlState("42501"), FailureClass::kSetup);
  EXPECT_EQ(postgres::ClassifySqlState("0A000"), FailureClass::kSetup);
  EXPECT_EQ(postgres::ClassifySqlState(""), FailureClass::kSetup);
}

TEST(RequestStatus, NamesRoundTrip) {
  for (auto status :
       {RequestStatus::kQueued, RequestStatus::kDone, RequestStatus::kThrottled, RequestStatus::kFailed}) {
    EXPECT_EQ(ParseRequestStatus(RequestStatusName(status)), status);
  }
  EXPECT_FALSE(ParseRequestStatus("Done"));
}

}  // namespace
}  // namespace runnel::pipeline
