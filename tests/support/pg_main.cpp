// main() for test binaries that need PostgreSQL: registers the per-binary cluster.
#include <gtest/gtest.h>

#include <cstdlib>

#include "pg_environment.hpp"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  // A model reader that hangs (model/isolation.cpp) is killed and tried again after
  // this long, not after the minute a user gets: these binaries fork it from many
  // threads under the sanitizers, which can, rarely, hang a child.
  ::setenv("RUNNEL_MODEL_LOAD_TIMEOUT_MS", "10000", 0);
  ::testing::AddGlobalTestEnvironment(new runnel::testing::PostgresEnvironment);  // gtest owns it
  return RUN_ALL_TESTS();
}
