#include "runnel/core/duration.hpp"

#include <gtest/gtest.h>

namespace runnel {
namespace {

TEST(Duration, NeedsANumberAndAUnit) {
  EXPECT_EQ(ParseDuration("45s"), std::chrono::seconds(45));
  EXPECT_EQ(ParseDuration("30m"), std::chrono::minutes(30));
  EXPECT_EQ(ParseDuration("12h"), std::chrono::hours(12));
  EXPECT_EQ(ParseDuration("90d"), std::chrono::hours(24 * 90));
  for (const char* bad : {"", "s", "10", "10x", "-5d", "0d", "1.5h", " 5m", "5m ", "99999999999d"}) {
    EXPECT_FALSE(ParseDuration(bad)) << bad;
  }
}

TEST(Duration, FormatsInTheLargestWholeUnitAndReadsBack) {
  EXPECT_EQ(FormatDuration(std::chrono::hours(24)), "1d");
  EXPECT_EQ(FormatDuration(std::chrono::hours(36)), "36h");
  EXPECT_EQ(FormatDuration(std::chrono::minutes(90)), "90m");
  EXPECT_EQ(FormatDuration(std::chrono::seconds(90)), "90s");
  for (int64_t s : {1, 59, 60, 61, 3600, 86400, 86401, 7 * 86400}) {
    EXPECT_EQ(ParseDuration(FormatDuration(std::chrono::seconds(s))), std::chrono::seconds(s)) << s;
  }
}

}  // namespace
}  // namespace runnel
