// The embedded cluster against Debian's real PostgreSQL binaries: lifecycle, reuse,
// two clusters side by side, crash recovery and clear errors.
#include "runnel/postgres/cluster.hpp"

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>

#include <fstream>
#include <sstream>
#include <vector>

#include "../support/temp_dir.hpp"
#include "runnel/core/error.hpp"
#include "runnel/postgres/connection.hpp"

namespace runnel::postgres {
namespace {

using runnel::testing::TempDir;

ClusterOptions OptionsFor(const std::filesystem::path& dir) {
  ClusterOptions options;
  options.dir = dir;
  return options;
}

// Stops the cluster even when an assertion fails half-way.
struct StopOnExit {
  EmbeddedCluster& cluster;
  ~StopOnExit() {
    try {
      cluster.Stop();
    } catch (...) {
    }
  }
};

int64_t QueryInt(const std::string& conninfo, const std::string& sql) {
  auto conn = Connection::Open(conninfo);
  return conn.Exec(sql).Get<int64_t>(0, 0);
}

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override { dir_.OpenToAll(); }
  TempDir dir_{"runnel-cluster"};
};

TEST_F(ClusterTest, StartStopRestartAndReuse) {
  EmbeddedCluster cluster(OptionsFor(dir_ / "pg"));
  StopOnExit guard{cluster};
  EXPECT_FALSE(cluster.Status().initialized);
  ASSERT_EQ(cluster.Start(), StartOutcome::Initialized);
  auto first = cluster.Status();
  EXPECT_TRUE(first.running);
  EXPECT_GT(first.pid, 0);
  EXPECT_GT(first.port, 0);

  {
    auto conn = Connection::Open(cluster.ConnectionString());
    conn.Exec("CREATE TABLE kept (x int); INSERT INTO kept VALUES (42)");
  }
  // Idempotent start, also from a second object (another process) on the same directory.
  EXPECT_EQ(cluster.Start(), StartOutcome::AlreadyRunning);
  EmbeddedCluster same_dir(OptionsFor(dir_ / "pg"));
  EXPECT_EQ(same_dir.Start(), StartOutcome::AlreadyRunning);
  EXPECT_EQ(same_dir.Status().pid, first.pid);

  EXPECT_TRUE(cluster.Stop());
  EXPECT_FALSE(cluster.Status().running);
  EXPECT_TRUE(cluster.Status().initialized);
  EXPECT_FALSE(cluster.Stop());
  try {
    cluster.ConnectionString();
    ADD_FAILURE() << "ConnectionString on a stopped cluster must throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Unavailable);
    EXPECT_NE(std::string(e.what()).find("runnel db start"), std::string::npos) << e.what();
  }

  EXPECT_EQ(cluster.Start(), StartOutcome::Started);
  auto second = cluster.Status();
  EXPECT_NE(second.pid, first.pid);
  EXPECT_EQ(second.port, first.port) << "a restarted cluster keeps its port when it is free";
  EXPECT_EQ(QueryInt(cluster.ConnectionString(), "SELECT x FROM kept"), 42);
}

TEST_F(ClusterTest, TwoClustersSideBySide) {
  EmbeddedCluster a(OptionsFor(dir_ / "a"));
  EmbeddedCluster b(OptionsFor(dir_ / "b"));
  StopOnExit guard_a{a};
  StopOnExit guard_b{b};
  ASSERT_EQ(a.Start(), StartOutcome::Initialized);
  ASSERT_EQ(b.Start(), StartOutcome::Initialized);
  EXPECT_NE(a.Status().port, b.Status().port);
  EXPECT_NE(a.Status().pid, b.Status().pid);
  {
    auto conn = Connection::Open(a.ConnectionString());
    conn.Exec("CREATE TABLE only_in_a (x int)");
  }
  EXPECT_EQ(QueryInt(a.ConnectionString(), "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'"), 1);
  EXPECT_EQ(QueryInt(b.ConnectionString(), "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'"), 0);
  EXPECT_TRUE(a.Stop());
  EXPECT_TRUE(b.Status().running) << "stopping one cluster must not touch the other";
  EXPECT_TRUE(b.Stop());
}

TEST_F(ClusterTest, RecoversAfterTheServerIsKilled) {
  EmbeddedCluster cluster(OptionsFor(dir_ / "pg"));
  StopOnExit guard{cluster};
  ASSERT_EQ(cluster.Start(), StartOutcome::Initialized);
  {
    auto conn = Connection::Open(cluster.ConnectionString());
    conn.Exec("CREATE TABLE durable (x int); INSERT INTO durable VALUES (7)");
  }
  cluster.Kill();
  EXPECT_FALSE(cluster.Status().running);
  EXPECT_TRUE(std::filesystem::exists(cluster.data_dir() / "postmaster.pid")) << "a crash leaves the pid file";
  EXPECT_EQ(cluster.Start(), StartOutcome::Started);
  EXPECT_EQ(QueryInt(cluster.ConnectionString(), "SELECT x FROM durable"), 7);
}

TEST_F(ClusterTest, StalePidFileNamingAnUnrelatedLiveProcess) {
  EmbeddedCluster cluster(OptionsFor(dir_ / "pg"));
  StopOnExit guard{cluster};
  ASSERT_EQ(cluster.Start(), StartOutcome::Initialized);
  const auto pid_file = cluster.data_dir() / "postmaster.pid";
  std::string saved;
  {
    std::ifstream in(pid_file);
    std::getline(in, saved);  // first line: the pid
    std::stringstream rest;
    rest << in.rdbuf();
    saved = rest.str();
  }
  ASSERT_TRUE(cluster.Stop());

  // After a crash and a reboot the recorded pid may belong to some other program.
  pid_t unrelated = ::fork();
  ASSERT_GE(unrelated, 0);
  if (unrelated == 0) {
    ::pause();
    ::_exit(0);
  }
  {
    std::ofstream out(pid_file);
    out << unrelated << "\n" << saved;
  }
  EXPECT_FALSE(cluster.Status().running) << "a pid file naming another program is not a running server";
  EXPECT_EQ(cluster.Start(), StartOutcome::Started);
  EXPECT_TRUE(cluster.Status().running);
  ::kill(unrelated, SIGKILL);
  ::waitpid(unrelated, nullptr, 0);
}

TEST_F(ClusterTest, MissingBinariesGiveTheInstallCommand) {
  auto options = OptionsFor(dir_ / "pg");
  options.bin_dir = dir_ / "no-binaries-here";
  std::filesystem::create_directory(options.bin_dir);
  try {
    EmbeddedCluster cluster(options);
    ADD_FAILURE() << "constructing a cluster without binaries must throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::NotFound);
    EXPECT_NE(std::string(e.what()).find("sudo apt-get install postgresql"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("no-binaries-here/initdb"), std::string::npos) << e.what();
  }
}

TEST_F(ClusterTest, PortInUseIsNamed) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len), 0);
  const uint16_t port = ntohs(addr.sin_port);

  auto options = OptionsFor(dir_ / "pg");
  options.port = port;
  EmbeddedCluster cluster(options);
  StopOnExit guard{cluster};
  try {
    cluster.Start();
    ADD_FAILURE() << "starting on a busy port must throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Unavailable);
    EXPECT_NE(std::string(e.what()).find(std::to_string(port)), std::string::npos) << e.what();
  }
  ::close(fd);
}

TEST_F(ClusterTest, DirectoryThatIsAFileIsNamed) {
  const auto file = dir_ / "not-a-directory";
  runnel::testing::WriteFile(file, "x");
  EmbeddedCluster cluster(OptionsFor(file));
  try {
    cluster.Start();
    ADD_FAILURE() << "a file as cluster directory must throw";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::Io);
    EXPECT_NE(std::string(e.what()).find(file.string()), std::string::npos) << e.what();
  }
}

TEST_F(ClusterTest, NonEmptyDataDirectoryWithoutClusterIsRefused) {
  std::filesystem::create_directories(dir_ / "pg" / "data");
  runnel::testing::WriteFile(dir_ / "pg" / "data" / "precious.txt", "user data");
  EmbeddedCluster cluster(OptionsFor(dir_ / "pg"));
  EXPECT_THROW(cluster.Start(), Error);
  EXPECT_TRUE(std::filesystem::exists(dir_ / "pg" / "data" / "precious.txt")) << "nothing is deleted";
}

TEST_F(ClusterTest, TcpNeedsThePassword) {
  EmbeddedCluster cluster(OptionsFor(dir_ / "pg"));
  StopOnExit guard{cluster};
  ASSERT_EQ(cluster.Start(), StartOutcome::Initialized);
  EXPECT_EQ(QueryInt(cluster.TcpConnectionString(), "SELECT 1"), 1);
  const auto port = cluster.Status().port;
  try {
    Connection::Open(fmt::format("host=127.0.0.1 port={} user=runnel dbname=runnel password=wrong", port));
    ADD_FAILURE() << "a wrong password must be refused over TCP";
  } catch (const DatabaseError& e) {
    EXPECT_EQ(e.sqlstate(), "08001");
    EXPECT_NE(std::string(e.what()).find("password authentication failed"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("wrong"), std::string::npos) << "the password never appears";
  }
}

// Only the bootstrap role is a superuser: the owner role owns the database and what is
// in it (the superuser's tables are handed over on start), the serving role nothing.
TEST_F(ClusterTest, RolesOfLeastPrivilege) {
  EmbeddedCluster cluster(OptionsFor(dir_ / "pg"));
  StopOnExit guard{cluster};
  ASSERT_EQ(cluster.Start(), StartOutcome::Initialized);
  Connection::Open(cluster.ConnectionString()).Exec("CREATE TABLE legacy (i int)");
  auto owner = Connection::Open(cluster.ConnectionStringAs(kOwnerRole));
  EXPECT_EQ(QueryInt(cluster.ConnectionStringAs(kOwnerRole),
                     "SELECT count(*) FROM pg_roles WHERE rolname = current_user AND NOT rolsuper"),
            1);
  owner.Exec("CREATE TABLE mine (i int)");
  EXPECT_EQ(QueryInt(cluster.TcpConnectionString("runnel", kOwnerRole), "SELECT count(*) FROM mine"), 0);
  for (const auto& [role, sql] :
       std::vector<std::pair<std::string_view, std::string>>{{kOwnerRole, "COPY (SELECT 1) TO PROGRAM 'true'"},
                                                             {kOwnerRole, "CREATE ROLE sneaky SUPERUSER"},
                                                             {kServeRole, "CREATE TABLE stolen (i int)"},
                                                             {kServeRole, "SELECT * FROM mine"}}) {
    try {
      Connection::Open(cluster.ConnectionStringAs(role)).Exec(sql);
      ADD_FAILURE() << role << " could: " << sql;
    } catch (const DatabaseError& e) {
      EXPECT_EQ(e.sqlstate(), "42501") << role << ": " << sql << ": " << e.what();
    }
  }
  ASSERT_TRUE(cluster.Stop());
  ASSERT_EQ(cluster.Start(), StartOutcome::Started);
  EXPECT_EQ(QueryInt(cluster.ConnectionString(),
                     "SELECT count(*) FROM pg_tables WHERE tablename = 'legacy' AND tableowner = 'runnel_owner'"),
            1)
      << "handed over to the owner";
}

// libpq verifies the server against the cluster's own certificate (verify-full: the
// chain and 127.0.0.1 in it); TCP without TLS is refused; TLS stays on across restarts.
TEST_F(ClusterTest, TlsOnTcpIsVerifiedAndRequired) {
  auto options = OptionsFor(dir_ / "pg");
  EmbeddedCluster plain(options);
  StopOnExit guard{plain};
  ASSERT_EQ(plain.Start(), StartOutcome::Initialized);
  options.tls = true;
  EmbeddedCluster cluster(options);
  EXPECT_THROW(cluster.Start(), Error) << "a running cluster without TLS is not switched silently";
  ASSERT_TRUE(cluster.Stop());
  ASSERT_EQ(cluster.Start(), StartOutcome::Started);
  const std::string tcp = cluster.TcpConnectionString();
  EXPECT_NE(tcp.find("sslmode=verify-full"), std::string::npos) << "the password stays out of this message";
  EXPECT_EQ(QueryInt(tcp, "SELECT count(*) FROM pg_stat_ssl WHERE pid = pg_backend_pid() AND ssl"), 1);
  const auto port = cluster.Status().port;
  const std::string password = [&] {
    std::ifstream in(dir_ / "pg" / "password");
    std::string line;
    std::getline(in, line);
    return line;
  }();
  try {
    Connection::Open(
        fmt::format("host=127.0.0.1 port={} user=runnel dbname=runnel password={} sslmode=disable", port, password));
    ADD_FAILURE() << "TCP without TLS must be refused";
  } catch (const DatabaseError& e) {
    EXPECT_NE(std::string(e.what()).find("no encryption"), std::string::npos) << e.what();
  }
  // A certificate that is not the cluster's fails verification.
  auto other_options = OptionsFor(dir_ / "other");
  other_options.tls = true;
  EmbeddedCluster other_tls(other_options);
  StopOnExit other_guard{other_tls};
  ASSERT_EQ(other_tls.Start(), StartOutcome::Initialized);
  try {
    Connection::Open(
        fmt::format("host=127.0.0.1 port={} user=runnel dbname=runnel password={} sslmode=verify-full "
                    "sslrootcert={}",
                    port, password, (dir_ / "other" / "ca.crt").string()));
    ADD_FAILURE() << "another cluster's certificate must not verify this one";
  } catch (const DatabaseError& e) {
    EXPECT_NE(std::string(e.what()).find("certificate verify failed"), std::string::npos) << e.what();
  }
  options.tls = false;
  EmbeddedCluster again(options);
  ASSERT_TRUE(again.Stop());
  ASSERT_EQ(again.Start(), StartOutcome::Started);
  EXPECT_NE(again.TcpConnectionString().find("sslmode=verify-full"), std::string::npos) << "TLS stays on";
  EXPECT_EQ(QueryInt(again.TcpConnectionString(), "SELECT 1"), 1);
}

TEST_F(ClusterTest, OverlongDirectoryIsRefusedUpFront) {
  EXPECT_THROW(EmbeddedCluster(OptionsFor(dir_ / std::string(120, 'x'))), Error);
}

}  // namespace
}  // namespace runnel::postgres

namespace runnel::postgres {
namespace {

// Issue #14: whoever can act as the server user (any SQL superuser, through COPY ...
// TO PROGRAM) controls the files inside the cluster directory. A link planted there
// must not make root's `db start` (or `db url --tcp`) write, chown or read a file of
// root's.
class RootSafetyTest : public ClusterTest {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "the server runs as another user only when started by root";
    ClusterTest::SetUp();
    target_ = dir_ / "root-secret";
    runnel::testing::WriteFile(target_, "root's own\n");
    ::chmod(target_.c_str(), 0600);
  }

  // The target as it was: root's, mode 0600, same content.
  void ExpectTargetUntouched(const std::string& what) {
    struct stat st {};
    ASSERT_EQ(::lstat(target_.c_str(), &st), 0);
    EXPECT_EQ(st.st_uid, 0u) << what << ": chowned";
    EXPECT_EQ(st.st_mode & 07777, 0600u) << what << ": chmodded";
    std::ifstream in(target_);
    std::stringstream text;
    text << in.rdbuf();
    EXPECT_EQ(text.str(), "root's own\n") << what << ": written";
  }

  void Plant(const std::filesystem::path& link) {
    std::filesystem::remove(link);
    std::filesystem::create_symlink(target_, link);
  }

  std::filesystem::path target_;
};

TEST_F(RootSafetyTest, PlantedLinksNeverRedirectRootsWritesChownsOrReads) {
  EmbeddedCluster cluster(OptionsFor(dir_ / "pg"));
  StopOnExit guard{cluster};
  ASSERT_EQ(cluster.Start(), StartOutcome::Initialized);
  ASSERT_TRUE(cluster.Stop());

  // Rewritten on every start: the link is replaced, its target untouched.
  Plant(cluster.data_dir() / "runnel.conf");
  ASSERT_EQ(cluster.Start(), StartOutcome::Started);
  ExpectTargetUntouched("runnel.conf");
  EXPECT_TRUE(std::filesystem::is_regular_file(std::filesystem::symlink_status(cluster.data_dir() / "runnel.conf")));

  // The password file is read by `db url --tcp`: a link is refused, nothing leaks.
  Plant(dir_ / "pg" / "password");
  try {
    cluster.TcpConnectionString();
    ADD_FAILURE() << "must refuse the link";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("symbolic link"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("root's own"), std::string::npos) << e.what();
  }
  ExpectTargetUntouched("password");

  // The log is chowned after a start: a link is refused, not followed.
  ASSERT_TRUE(cluster.Stop());
  Plant(dir_ / "pg" / "server.log");
  try {
    cluster.Start();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("server.log"), std::string::npos) << e.what();
  }
  ExpectTargetUntouched("server.log");
}

TEST_F(RootSafetyTest, AClusterDirectoryThatIsALinkOrSomeoneElsesIsRefused) {
  std::filesystem::create_directories(dir_ / "real");
  std::filesystem::create_symlink(dir_ / "real", dir_ / "pg");
  EmbeddedCluster linked(OptionsFor(dir_ / "pg"));
  try {
    linked.Start();
    ADD_FAILURE() << "must refuse a linked cluster directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("symbolic link"), std::string::npos) << e.what();
  }
  std::filesystem::create_directories(dir_ / "theirs");
  ASSERT_EQ(::chown((dir_ / "theirs").c_str(), 65534, 65534), 0);  // nobody's
  EmbeddedCluster theirs(OptionsFor(dir_ / "theirs"));
  try {
    theirs.Start();
    ADD_FAILURE() << "must refuse another user's directory";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("belongs to uid 65534"), std::string::npos) << e.what();
  }
  // A parent that others may write: they could swap the cluster directory.
  std::filesystem::create_directories(dir_ / "open");
  ::chmod((dir_ / "open").c_str(), 0777);
  EmbeddedCluster open(OptionsFor(dir_ / "open" / "pg"));
  try {
    open.Start();
    ADD_FAILURE() << "must refuse a parent others can write";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("can be changed by users other than root"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace runnel::postgres
