#include "runnel/core/config.hpp"

#include <gtest/gtest.h>

#include <map>

#include "../support/temp_dir.hpp"
#include "runnel/core/error.hpp"
#include "runnel/core/logging.hpp"

namespace runnel {
namespace {

using runnel::testing::TempDir;
using runnel::testing::WriteFile;

EnvLookup FakeEnv(std::map<std::string, std::string> values) {
  return [values = std::move(values)](std::string_view name) -> std::optional<std::string> {
    auto it = values.find(std::string(name));
    if (it == values.end()) return std::nullopt;
    return it->second;
  };
}

std::string ConfigErrorFor(const std::string& toml) {
  TempDir dir;
  WriteFile(dir / "runnel.toml", toml);
  try {
    LoadConfig(dir / "runnel.toml", FakeEnv({{"HOME", "/home/u"}}), false);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Config) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error for:\n" << toml;
  return "";
}

TEST(Config, DefaultsFollowXdgThenHomeAndRootGetsVarLib) {
  EXPECT_EQ(LoadConfig(std::nullopt, FakeEnv({{"HOME", "/home/u"}}), false).home, "/home/u/.local/share/runnel");
  EXPECT_EQ(LoadConfig(std::nullopt, FakeEnv({{"HOME", "/home/u"}, {"XDG_DATA_HOME", "/x"}}), false).home, "/x/runnel");
  EXPECT_EQ(LoadConfig(std::nullopt, FakeEnv({{"HOME", "/root"}}), true).home, "/var/lib/runnel");
  auto config = LoadConfig(std::nullopt, FakeEnv({{"HOME", "/home/u"}}), false);
  EXPECT_EQ(config.EmbeddedClusterDir(), "/home/u/.local/share/runnel/pg");
  EXPECT_EQ(config.log_level, "info");
  EXPECT_TRUE(config.db_url.empty());
  EXPECT_THROW(LoadConfig(std::nullopt, FakeEnv({}), false), Error);
}

TEST(Config, FileThenEnvironmentOverrides) {
  TempDir dir;
  WriteFile(dir / "runnel.toml",
            "log_level = \"debug\"\nhome = \"/srv/runnel\"\ndb_url = \"postgresql://file\"\n"
            "[embedded]\nport = 6543\nbin_dir = \"/opt/pg/bin\"\n");
  auto from_file = LoadConfig(dir / "runnel.toml", FakeEnv({{"HOME", "/home/u"}}), false);
  EXPECT_EQ(from_file.log_level, "debug");
  EXPECT_EQ(from_file.home, "/srv/runnel");
  EXPECT_EQ(from_file.db_url, "postgresql://file");
  EXPECT_EQ(from_file.embedded_port, 6543);
  EXPECT_EQ(from_file.pg_bin_dir, "/opt/pg/bin");
  EXPECT_EQ(from_file.source, dir / "runnel.toml");

  auto overridden = LoadConfig(std::nullopt,
                               FakeEnv({{"RUNNEL_CONFIG", (dir / "runnel.toml").string()},
                                        {"RUNNEL_HOME", "/env/home"},
                                        {"RUNNEL_DB_URL", "postgresql://env"},
                                        {"RUNNEL_LOG_LEVEL", "warn"}}),
                               false);
  EXPECT_EQ(overridden.home, "/env/home");
  EXPECT_EQ(overridden.db_url, "postgresql://env");
  EXPECT_EQ(overridden.log_level, "warn");
  EXPECT_EQ(overridden.embedded_port, 6543) << "keys the environment does not set come from the file";
}

TEST(Config, ErrorsNameFileLineAndKey) {
  auto unknown = ConfigErrorFor("log_level = \"info\"\ndb_ulr = \"x\"\n");
  EXPECT_NE(unknown.find("runnel.toml:2:"), std::string::npos) << unknown;
  EXPECT_NE(unknown.find("unknown key 'db_ulr'"), std::string::npos) << unknown;

  auto nested = ConfigErrorFor("[embedded]\nprot = 1\n");
  EXPECT_NE(nested.find("embedded.prot"), std::string::npos) << nested;

  auto wrong_type = ConfigErrorFor("home = 42\n");
  EXPECT_NE(wrong_type.find("'home' must be a string"), std::string::npos) << wrong_type;

  auto range = ConfigErrorFor("[embedded]\nport = 70000\n");
  EXPECT_NE(range.find("0..65535"), std::string::npos) << range;

  auto syntax = ConfigErrorFor("home = \"unterminated\n");
  EXPECT_NE(syntax.find("runnel.toml:1:"), std::string::npos) << syntax;

  auto not_table = ConfigErrorFor("embedded = 3\n");
  EXPECT_NE(not_table.find("'embedded' must be a table"), std::string::npos) << not_table;
}

TEST(Config, MissingFileIsAnIoErrorNamingIt) {
  try {
    LoadConfig("/nonexistent/runnel.toml", FakeEnv({{"HOME", "/h"}}), false);
    ADD_FAILURE() << "must throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Io);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/runnel.toml"), std::string::npos) << e.what();
  }
}

TEST(Logging, LevelsAreValidated) {
  EXPECT_NO_THROW(InitLogging("warn"));
  EXPECT_NO_THROW(InitLogging("off"));
  try {
    InitLogging("loud");
    ADD_FAILURE() << "must throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Config);
    EXPECT_NE(std::string(e.what()).find("'loud'"), std::string::npos);
  }
}

}  // namespace
}  // namespace runnel
