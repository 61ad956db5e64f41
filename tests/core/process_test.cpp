#include "runnel/core/process.hpp"

#include <gtest/gtest.h>
#include <pwd.h>
#include <unistd.h>

#include "runnel/core/error.hpp"

namespace runnel {
namespace {

TEST(Process, CapturesOutputAndExitCode) {
  auto ok = RunProcess({"/bin/sh", "-c", "echo out; echo err >&2; exit 3"});
  EXPECT_EQ(ok.exit_code, 3);
  EXPECT_NE(ok.output.find("out"), std::string::npos);
  EXPECT_NE(ok.output.find("err"), std::string::npos);
}

TEST(Process, PassesEnvironmentAndWorkingDirectory) {
  ProcessOptions options;
  options.extra_env = {"RUNNEL_PROBE=42"};
  options.working_dir = "/tmp";
  auto result = RunProcess({"/bin/sh", "-c", "echo $RUNNEL_PROBE $(pwd)"}, options);
  EXPECT_EQ(result.output, "42 /tmp\n");
}

TEST(Process, SignalsBecome128PlusSignal) {
  EXPECT_EQ(RunProcess({"/bin/sh", "-c", "kill -9 $$"}).exit_code, 128 + 9);
}

TEST(Process, MissingProgramIsNamed) {
  try {
    RunProcess({"/nonexistent/tool", "--flag"});
    ADD_FAILURE() << "must throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Io);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/tool"), std::string::npos) << e.what();
  }
  EXPECT_THROW(RunProcess({}), Error);
}

TEST(Process, RunsAsAnotherUserWhenRoot) {
  if (::geteuid() != 0) GTEST_SKIP() << "switching users needs root";
  passwd* nobody = ::getpwnam("nobody");
  ASSERT_NE(nobody, nullptr);
  ProcessOptions options;
  options.run_as = RunAs{nobody->pw_uid, nobody->pw_gid};
  auto result = RunProcess({"/usr/bin/id", "-u"}, options);
  EXPECT_EQ(result.output, std::to_string(nobody->pw_uid) + "\n");
}

TEST(Process, AliveChecks) {
  EXPECT_TRUE(ProcessAlive(::getpid()));
  EXPECT_FALSE(ProcessAlive(0));
  EXPECT_FALSE(ProcessAlive(-5));
}

}  // namespace
}  // namespace runnel
