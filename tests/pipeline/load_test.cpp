// The quota arithmetic `runnel load` warns with (no database).
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

}  // namespace
}  // namespace runnel::pipeline
