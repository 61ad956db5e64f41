// Work on untrusted input in a child process: its result comes back whole, its errors
// keep their code and message, and a crash or a hang is an error in the caller, never a
// crash or a hang of the caller.
#include "runnel/core/isolation.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <stdexcept>

#include "runnel/core/error.hpp"

namespace runnel {
namespace {

const IsolatedCall kCall{"bad.bin", "the reader"};

Error ErrorOf(const std::function<std::string()>& work) {
  try {
    RunIsolated(kCall, work);
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "no error";
  return Error(ErrorCode::Io, "");
}

TEST(Isolation, ReturnsTheChildsBytesWhole) {
  // Larger than a pipe's buffer, with every byte value: read until the child is done.
  std::string big(3 << 20, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 7919 % 251);
  EXPECT_EQ(RunIsolated(kCall, [&] { return big; }), big);
  EXPECT_EQ(RunIsolated(kCall, [] { return std::string(); }), "");
}

TEST(Isolation, TheChildSeesTheCallersMemory) {
  int value = 41;
  ++value;
  EXPECT_EQ(RunIsolated(kCall, [&] { return std::to_string(value); }), "42");
}

TEST(Isolation, ErrorsKeepTheirCodeAndMessage) {
  const Error e = ErrorOf([]() -> std::string { throw Error(ErrorCode::InvalidInput, "bad.bin: field 'x' missing"); });
  EXPECT_EQ(e.code(), ErrorCode::InvalidInput);
  EXPECT_STREQ(e.what(), "bad.bin: field 'x' missing");
  const Error other = ErrorOf([]() -> std::string { throw std::runtime_error("vector too long"); });
  EXPECT_EQ(other.code(), ErrorCode::Model);
  EXPECT_STREQ(other.what(), "bad.bin: vector too long");
}

// The child dies of the signal itself: the handlers the sanitizers (or a fuzzer)
// installed in this process do not report the crash from there.
TEST(Isolation, ACrashIsAnErrorNamingTheFileAndTheWork) {
  const Error e = ErrorOf([]() -> std::string {
    ::raise(SIGSEGV);
    return "";
  });
  EXPECT_EQ(e.code(), ErrorCode::Model);
  EXPECT_NE(std::string(e.what()).find("bad.bin: the reader failed on this file (signal 11)"), std::string::npos)
      << e.what();
  const Error exited = ErrorOf([]() -> std::string { ::_exit(3); });
  EXPECT_NE(std::string(exited.what()).find("(exit status 3)"), std::string::npos) << exited.what();
}

TEST(Isolation, AHangIsAnErrorAfterThreeTries) {
  ::setenv("RUNNEL_MODEL_LOAD_TIMEOUT_MS", "300", 1);
  const Error e = ErrorOf([]() -> std::string {
    ::sleep(30);
    return "";
  });
  ::unsetenv("RUNNEL_MODEL_LOAD_TIMEOUT_MS");
  EXPECT_EQ(e.code(), ErrorCode::Model);
  EXPECT_NE(std::string(e.what()).find("bad.bin: the reader took longer than 300 ms, 3 times"), std::string::npos)
      << e.what();
}

}  // namespace
}  // namespace runnel
