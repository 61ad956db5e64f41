// A program a test starts in the background (a server, a `runnel run` process), its
// output appended to a log file; signalled, waited for, killed when the object dies.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <vector>

namespace runnel::testing {

class ChildProcess {
 public:
  ChildProcess() = default;
  // Starts argv[0] (a path) with stdout and stderr appended to `log`. Throws
  // std::runtime_error when it cannot fork.
  ChildProcess(const std::vector<std::string>& argv, std::filesystem::path log);
  ~ChildProcess();  // SIGKILL, when still running
  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  bool Running();
  // Sends `signal` and waits up to `wait` for the process to end; returns its exit
  // code (128 + signal when killed), or -1 when it still runs (then it is SIGKILLed).
  int Stop(int signal, std::chrono::milliseconds wait = std::chrono::seconds(10));
  pid_t pid() const { return pid_; }
  const std::filesystem::path& log() const { return log_; }
  std::string Log() const;  // what it printed so far

 private:
  pid_t pid_ = -1;
  std::filesystem::path log_;
};

}  // namespace runnel::testing
