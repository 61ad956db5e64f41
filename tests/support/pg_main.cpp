// main() for test binaries that need PostgreSQL: registers the per-binary cluster.
#include <gtest/gtest.h>

#include "pg_environment.hpp"

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  ::testing::AddGlobalTestEnvironment(new runnel::testing::PostgresEnvironment);  // gtest owns it
  return RUN_ALL_TESTS();
}
