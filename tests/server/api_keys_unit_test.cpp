// The pure parts of API keys: scopes, durations, hashing (no database).
#include <gtest/gtest.h>

#include "runnel/server/api_keys.hpp"

namespace runnel::server {
namespace {

TEST(ApiKeys, ScopesParseAndOrder) {
  for (Scope s : {Scope::kRead, Scope::kSubmit, Scope::kAdmin}) EXPECT_EQ(ParseScope(ScopeName(s)), s);
  EXPECT_FALSE(ParseScope("Admin"));
  EXPECT_FALSE(ParseScope(""));
  EXPECT_LT(Scope::kRead, Scope::kSubmit) << "each scope includes the ones before";
  EXPECT_LT(Scope::kSubmit, Scope::kAdmin);
}

TEST(ApiKeys, DurationsNeedANumberAndAUnit) {
  EXPECT_EQ(ParseDuration("45s"), std::chrono::seconds(45));
  EXPECT_EQ(ParseDuration("30m"), std::chrono::minutes(30));
  EXPECT_EQ(ParseDuration("12h"), std::chrono::hours(12));
  EXPECT_EQ(ParseDuration("90d"), std::chrono::hours(24 * 90));
  for (const char* bad : {"", "s", "10", "10x", "-5d", "0d", "1.5h", " 5m", "5m ", "99999999999d"}) {
    EXPECT_FALSE(ParseDuration(bad)) << bad;
  }
}

TEST(ApiKeys, HashIsSha256Hex) {
  // FIPS 180-2 test vector.
  EXPECT_EQ(HashKey("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_NE(HashKey("rnl_a"), HashKey("rnl_b"));
}

}  // namespace
}  // namespace runnel::server
