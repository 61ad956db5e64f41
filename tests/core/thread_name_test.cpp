#include "runnel/core/thread_name.hpp"

#include <gtest/gtest.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <string>
#include <thread>

namespace runnel {
namespace {

// What `top -H` and `ps -L` read.
std::string CommOf(pid_t tid) {
  std::ifstream in("/proc/self/task/" + std::to_string(tid) + "/comm");
  std::string comm;
  std::getline(in, comm);
  return comm;
}

TEST(ThreadName, NamesTheCallingThreadOnlyAndCutsAtFifteenBytes) {
  const std::string before = ThisThreadName();
  std::string named, cut, comm;
  std::thread([&] {
    NameThisThread("w0:needs");
    named = ThisThreadName();
    comm = CommOf(static_cast<pid_t>(::syscall(SYS_gettid)));
    NameThisThread("w12:a_pipeline_with_a_long_name");
    cut = ThisThreadName();
  }).join();
  EXPECT_EQ(named, "w0:needs");
  EXPECT_EQ(comm, "w0:needs");
  EXPECT_EQ(cut, "w12:a_pipeline_");
  EXPECT_EQ(ThisThreadName(), before) << "another thread's name is not this one's";
}

}  // namespace
}  // namespace runnel
