#include "pg_environment.hpp"

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>

#include <fmt/format.h>

namespace runnel::testing {
namespace {

PostgresEnvironment* g_environment = nullptr;

// Runs in the reaper: waits for EOF on stdin (the test binary is gone or done), then
// shuts the cluster down immediately (SIGQUIT) and removes its directory. pg_ctl is
// not used because it refuses to run as root.
constexpr const char* kReaperScript = R"sh(
read -r _
pidfile="$1/pg/data/postmaster.pid"
if [ -f "$pidfile" ]; then
  kill -QUIT "$(head -n 1 "$pidfile")" 2>/dev/null
  i=0
  while [ -f "$pidfile" ] && [ "$i" -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
fi
rm -rf "$1"
)sh";

}  // namespace

PostgresEnvironment& PostgresEnvironment::Get() {
  if (g_environment == nullptr) {
    std::fprintf(stderr, "PostgresEnvironment is not registered: link pg_main.cpp\n");
    std::abort();
  }
  return *g_environment;
}

void PostgresEnvironment::StartReaper() {
  int fds[2];
  ASSERT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  const std::string dir = dir_->path().string();
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::dup2(fds[0], 0);  // dup2 clears close-on-exec on the copy
    ::setpgid(0, 0);    // outlive a Ctrl-C sent to the test's process group
    ::execl("/bin/sh", "sh", "-c", kReaperScript, "runnel-test-reaper", dir.c_str(), nullptr);
    ::_exit(127);
  }
  ::close(fds[0]);
  reaper_pipe_ = fds[1];
  reaper_pid_ = pid;
}

void PostgresEnvironment::SetUp() {
  g_environment = this;
  dir_ = std::make_unique<TempDir>("runnel-pg");
  dir_->OpenToAll();
  StartReaper();
  postgres::ClusterOptions options;
  options.dir = dir_->path() / "pg";
  cluster_ = std::make_unique<postgres::EmbeddedCluster>(options);
  cluster_->Start();
}

void PostgresEnvironment::TearDown() {
  if (cluster_) {
    try {
      cluster_->Stop();
    } catch (const Error& e) {
      std::fprintf(stderr, "stopping the test cluster failed: %s\n", e.what());
    }
  }
  cluster_.reset();
  dir_.reset();
  if (reaper_pipe_ >= 0) {
    ::close(reaper_pipe_);
    int status = 0;
    ::waitpid(reaper_pid_, &status, 0);
  }
}

void PostgresTest::SetUp() {
  static std::atomic<int> counter{0};
  dbname_ = fmt::format("t{}_{}", ::getpid(), counter++);
  auto admin = postgres::Connection::Open(PostgresEnvironment::Get().ConnectionString("postgres"));
  admin.Exec(fmt::format("CREATE DATABASE {} STRATEGY = FILE_COPY", dbname_));
  conninfo_ = PostgresEnvironment::Get().ConnectionString(dbname_);
}

void PostgresTest::TearDown() {
  try {
    auto admin = postgres::Connection::Open(PostgresEnvironment::Get().ConnectionString("postgres"));
    admin.Exec(fmt::format("DROP DATABASE IF EXISTS {} WITH (FORCE)", dbname_));
  } catch (const Error& e) {
    ADD_FAILURE() << "dropping test database " << dbname_ << ": " << e.what();
  }
}

}  // namespace runnel::testing
