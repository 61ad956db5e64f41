// The pure parts of API keys: scopes, hashing (no database).
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

TEST(ApiKeys, HashIsSha256Hex) {
  // FIPS 180-2 test vector.
  EXPECT_EQ(HashKey("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_NE(HashKey("rnl_a"), HashKey("rnl_b"));
}

}  // namespace
}  // namespace runnel::server
