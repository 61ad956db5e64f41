#include "runnel/core/isolation.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "runnel/core/error.hpp"

namespace runnel {
namespace {

std::atomic<uint64_t> children_forked{0};

// The child's answer: 'R' and the result's bytes, or 'E', the error code (an int in
// this machine's byte order: same binary, same machine) and the message.
constexpr char kResult = 'R';
constexpr char kError = 'E';

std::string ErrorMessage(ErrorCode code, const std::string& message) {
  const int value = static_cast<int>(code);
  std::string out(1, kError);
  out.append(reinterpret_cast<const char*>(&value), sizeof value);
  return out + message;
}

// What the child writes to the pipe: work's result or the error it threw.
std::string Answer(const IsolatedCall& call, const std::function<std::string()>& work) {
  try {
    return kResult + work();
  } catch (const Error& e) {
    return ErrorMessage(e.code(), e.what());
  } catch (const std::exception& e) {
    return ErrorMessage(ErrorCode::Model, fmt::format("{}: {}", call.source, e.what()));
  }
}

void WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

int DeadlineMs() {
  if (const char* env = std::getenv("RUNNEL_MODEL_LOAD_TIMEOUT_MS"); env != nullptr && std::atoi(env) > 0) {
    return std::atoi(env);
  }
  return 60000;
}

[[noreturn]] void RunChild(const IsolatedCall& call, const std::function<std::string()>& work, int fd) {
  // Never outlive the parent: an orphan would hold its pipes (and a test runner's)
  // open. The parent may already be gone.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() == 1) ::_exit(1);
  // A crash here is the expected failure, reported by the parent: not handled by
  // handlers this process inherited (a sanitizer's report, a fuzzer's crash file).
  for (int signal : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT}) ::signal(signal, SIG_DFL);
  WriteAll(fd, Answer(call, work));
  ::_exit(0);
}

// Reads the child's answer until it closes the pipe; nullopt at the deadline.
std::optional<std::string> ReadAnswer(int fd) {
  std::string data;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(DeadlineMs());
  char buffer[1 << 16];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    pollfd p{fd, POLLIN, 0};
    int ready = ::poll(&p, 1, static_cast<int>(left.count()));
    if (ready < 0 && errno == EINTR) continue;
    if (ready == 0) return std::nullopt;
    ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return data;
    data.append(buffer, static_cast<size_t>(n));
  }
}

// The result of a child that answered and exited: its bytes, or its error thrown.
std::string Result(const IsolatedCall& call, const std::string& data, int status) {
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || data.empty()) {
    throw Error(ErrorCode::Model,
                fmt::format("{}: {} failed on this file ({}): the file is corrupt", call.source, call.what,
                            WIFSIGNALED(status) ? fmt::format("signal {}", WTERMSIG(status))
                                                : fmt::format("exit status {}", WEXITSTATUS(status))));
  }
  if (data[0] == kResult) return data.substr(1);
  int code = 0;
  if (data[0] != kError || data.size() < 1 + sizeof code) {
    throw Error(ErrorCode::Model, fmt::format("{}: {} answered garbage", call.source, call.what));
  }
  std::memcpy(&code, data.data() + 1, sizeof code);
  throw Error(static_cast<ErrorCode>(code), data.substr(1 + sizeof code));
}

// One run in a child process; nullopt when it timed out (the child is killed).
std::optional<std::string> RunInChild(const IsolatedCall& call, const std::function<std::string()>& work) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) throw Error(ErrorCode::Io, fmt::format("{}: cannot create a pipe", call.source));
  pid_t pid;
  if (call.fork_lock != nullptr) {
    std::lock_guard lock(*call.fork_lock);
    pid = ::fork();
  } else {
    pid = ::fork();
  }
  if (pid > 0) children_forked.fetch_add(1, std::memory_order_relaxed);
  if (pid < 0) {
    ::close(fds[0]);
    ::close(fds[1]);
    throw Error(ErrorCode::Io, fmt::format("{}: cannot fork for {}", call.source, call.what));
  }
  if (pid == 0) {
    ::close(fds[0]);
    RunChild(call, work, fds[1]);
  }
  ::close(fds[1]);
  auto data = ReadAnswer(fds[0]);
  ::close(fds[0]);
  if (!data) ::kill(pid, SIGKILL);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!data) return std::nullopt;
  return Result(call, *data, status);
}

}  // namespace

std::string RunIsolated(const IsolatedCall& call, const std::function<std::string()>& work) {
  constexpr int kAttempts = 3;
  for (int attempt = 1; attempt <= kAttempts; ++attempt) {
    if (auto result = RunInChild(call, work)) return std::move(*result);
    if (attempt < kAttempts)
      spdlog::warn("{}: {} did not answer within {} ms; trying again", call.source, call.what, DeadlineMs());
  }
  throw Error(ErrorCode::Model, fmt::format("{}: {} took longer than {} ms, {} times (a corrupt file?)", call.source,
                                            call.what, DeadlineMs(), kAttempts));
}

uint64_t IsolatedChildrenForked() {
  return children_forked.load(std::memory_order_relaxed);
}

}  // namespace runnel
