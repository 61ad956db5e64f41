#include "runnel/core/process.hpp"

#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string_view>

#include <fmt/format.h>

#include "runnel/core/error.hpp"

extern char** environ;

namespace runnel {
namespace {

struct Fd {
  int fd = -1;
  ~Fd() { Close(); }
  void Close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

[[noreturn]] void ChildFail(int error_fd, int err) {
  // Only async-signal-safe calls between fork and exec.
  (void)!::write(error_fd, &err, sizeof(err));
  ::_exit(127);
}

}  // namespace

ProcessResult RunProcess(const std::vector<std::string>& argv, const ProcessOptions& options) {
  if (argv.empty()) throw Error(ErrorCode::InvalidInput, "RunProcess: empty argument list");

  // Everything the child needs is prepared before fork.
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  // extra_env replaces variables of the same name (getenv would take the first).
  std::vector<std::string> env_storage;
  for (char** e = environ; *e != nullptr; ++e) env_storage.emplace_back(*e);
  for (const auto& extra : options.extra_env) {
    const std::string_view name = std::string_view(extra).substr(0, extra.find('=') + 1);
    std::erase_if(env_storage, [&](const std::string& e) { return e.starts_with(name); });
    env_storage.push_back(extra);
  }
  std::vector<char*> envp;
  for (auto& e : env_storage) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string cwd = options.working_dir.string();

  int out_pipe[2];
  int err_pipe[2];
  if (::pipe2(out_pipe, O_CLOEXEC) != 0) {
    throw Error(ErrorCode::Io, fmt::format("cannot create a pipe: {}", std::strerror(errno)));
  }
  Fd out_read{out_pipe[0]}, out_write{out_pipe[1]};
  if (::pipe2(err_pipe, O_CLOEXEC) != 0) {
    throw Error(ErrorCode::Io, fmt::format("cannot create a pipe: {}", std::strerror(errno)));
  }
  Fd err_read{err_pipe[0]}, err_write{err_pipe[1]};

  pid_t pid = ::fork();
  if (pid < 0) throw Error(ErrorCode::Io, fmt::format("cannot fork: {}", std::strerror(errno)));
  if (pid == 0) {
    int devnull = ::open("/dev/null", O_RDONLY);
    if (devnull < 0 || ::dup2(devnull, 0) < 0 || ::dup2(out_write.fd, 1) < 0 || ::dup2(out_write.fd, 2) < 0) {
      ChildFail(err_write.fd, errno);
    }
    if (options.run_as) {
      gid_t gid = options.run_as->gid;
      if (::setgroups(1, &gid) != 0 || ::setgid(gid) != 0 || ::setuid(options.run_as->uid) != 0) {
        ChildFail(err_write.fd, errno);
      }
    }
    if (::chdir(cwd.c_str()) != 0) ChildFail(err_write.fd, errno);
    ::execve(args[0], args.data(), envp.data());
    ChildFail(err_write.fd, errno);
  }
  out_write.Close();
  err_write.Close();

  ProcessResult result;
  char buffer[4096];
  for (;;) {
    ssize_t n = ::read(out_read.fd, buffer, sizeof(buffer));
    if (n > 0) {
      result.output.append(buffer, static_cast<size_t>(n));
    } else if (n == 0 || errno != EINTR) {
      break;
    }
  }
  int child_errno = 0;
  ssize_t got;
  do {
    got = ::read(err_read.fd, &child_errno, sizeof(child_errno));
  } while (got < 0 && errno == EINTR);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (got == static_cast<ssize_t>(sizeof(child_errno))) {
    throw Error(ErrorCode::Io, fmt::format("cannot run {}: {}", argv[0], std::strerror(child_errno)));
  }
  if (WIFEXITED(status)) {
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.exit_code = 128 + WTERMSIG(status);
  }
  return result;
}

bool ProcessAlive(pid_t pid) {
  if (pid <= 0) return false;
  return ::kill(pid, 0) == 0 || errno == EPERM;
}

}  // namespace runnel
