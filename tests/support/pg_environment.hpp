// The test harness's PostgreSQL: one throwaway cluster per test binary in a temporary
// directory (started by Runnel's own EmbeddedCluster), a fresh database per test, and
// everything removed at the end, also when tests fail or the binary crashes.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "runnel/postgres/cluster.hpp"
#include "runnel/postgres/connection.hpp"
#include "temp_dir.hpp"

namespace runnel::testing {

class PostgresEnvironment : public ::testing::Environment {
 public:
  void SetUp() override;
  void TearDown() override;

  // The environment registered by pg_main.cpp. Precondition: SetUp has run.
  static PostgresEnvironment& Get();

  postgres::EmbeddedCluster& cluster() { return *cluster_; }
  std::string ConnectionString(const std::string& dbname) const { return cluster_->ConnectionString(dbname); }

 private:
  void StartReaper();

  std::unique_ptr<TempDir> dir_;
  std::unique_ptr<postgres::EmbeddedCluster> cluster_;
  int reaper_pipe_ = -1;  // closing it (also by dying) makes the reaper clean up
  pid_t reaper_pid_ = 0;
};

// Fixture: each test gets its own empty database, dropped afterwards.
class PostgresTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  const std::string& conninfo() const { return conninfo_; }
  const std::string& dbname() const { return dbname_; }
  postgres::Connection Connect() const { return postgres::Connection::Open(conninfo_); }

 private:
  std::string dbname_;
  std::string conninfo_;
};

}  // namespace runnel::testing
