// Running helper programs (initdb, pg_ctl, useradd) and collecting what they print.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace runnel {

struct RunAs {
  uid_t uid;
  gid_t gid;
};

struct ProcessOptions {
  std::optional<RunAs> run_as;              // switch user in the child (needs root)
  std::filesystem::path working_dir = "/";  // the child's working directory
  std::vector<std::string> extra_env;       // "NAME=value" added to the environment
};

struct ProcessResult {
  int exit_code = 0;   // 128 + signal number when killed by a signal
  std::string output;  // stdout and stderr, interleaved
};

// Runs argv[0] (a path, not searched on PATH) to completion. File descriptors other
// than stdin/stdout/stderr are not inherited. Throws Error(Io) naming the program when
// it cannot be started. Thread safety: safe to call from several threads.
ProcessResult RunProcess(const std::vector<std::string>& argv, const ProcessOptions& options = {});

// Whether a process with this pid exists (it may belong to another user).
bool ProcessAlive(pid_t pid);

}  // namespace runnel
