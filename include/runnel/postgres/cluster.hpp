// Runnel's private PostgreSQL cluster, built from Debian's server binaries (initdb,
// pg_ctl, postgres). Backs `runnel db start|stop|status|url`, `runnel demo` and the
// test harness.
//
// Layout under `dir` (e.g. $RUNNEL_HOME/pg):
//   data/         the data directory (initdb); data/runnel.conf holds Runnel's settings
//   .s.PGSQL.N    the unix socket (mode 0700: only the owner, and root, may connect)
//   server.log    the server's log
//   password      the password of role `runnel` for TCP connections (mode 0600)
// The server listens on 127.0.0.1 at a free port. The superuser role is `runnel`,
// trusted on the unix socket, password (SCRAM) on TCP; the database `runnel` exists.
//
// When the caller is root the server runs as the unprivileged system user
// `runnel-pg` (created when missing), which owns `dir`, because PostgreSQL refuses to
// run as root.
//
// Thread safety: one EmbeddedCluster per directory per process; methods are not
// synchronised. Errors: Error(NotFound) when the binaries are missing, Error(Io) or
// Error(Unavailable) for an unusable directory or port, each naming it.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "runnel/core/process.hpp"
#include "runnel/core/safe_dir.hpp"

namespace runnel::postgres {

class Connection;

struct ClusterOptions {
  std::filesystem::path dir;               // required; created when missing
  uint16_t port = 0;                       // 0: keep the last port if free, else pick one
  std::filesystem::path bin_dir;           // empty: FindPostgresBinDir()
  std::string service_user = "runnel-pg";  // used only when running as root
  std::chrono::seconds start_timeout{60};
  // Make the cluster speak TLS on TCP (and refuse TCP without it): a certificate is
  // created on the first start with it; TLS then stays on.
  bool tls = false;
};

struct ClusterStatus {
  bool running = false;
  pid_t pid = 0;      // postmaster pid when running
  uint16_t port = 0;  // the port it listens on when running, else the configured one
  bool initialized = false;
};

enum class StartOutcome {
  Initialized,     // a new cluster was created and started
  Started,         // an existing cluster was started
  AlreadyRunning,  // nothing to do
};

// Finds the newest /usr/lib/postgresql/<version>/bin holding initdb, pg_ctl and
// postgres. Throws Error(NotFound) with the install command when there is none.
std::filesystem::path FindPostgresBinDir();

// The embedded cluster's roles, created on every start. The bootstrap superuser
// (kSuperuser) only administers; kOwnerRole owns database `runnel` and its tables
// (`runnel db url`, `runnel migrate`); kServeRole serves (`runnel run` grants it what
// the pipeline needs, server/grants.hpp). Only kSuperuser is a superuser.
inline constexpr std::string_view kSuperuser = "runnel";
inline constexpr std::string_view kOwnerRole = "runnel_owner";
inline constexpr std::string_view kServeRole = "runnel_serve";

class EmbeddedCluster {
 public:
  explicit EmbeddedCluster(ClusterOptions options);

  // Creates the cluster when needed, then starts it unless it already runs. Recovers
  // from a stale postmaster.pid left by a crash. Idempotent.
  StartOutcome Start();
  // Fast shutdown (rolls back open transactions), waits for it. No-op when stopped.
  // Returns whether a server was stopped.
  bool Stop();
  // SIGKILLs the postmaster (for crash tests); the next Start() recovers.
  void Kill();
  ClusterStatus Status() const;

  // libpq connection string of the superuser over the unix socket, e.g.
  // "host=/x/pg port=5433 user=runnel dbname=runnel". Throws Error(Unavailable) when
  // the cluster is not running.
  std::string ConnectionString(const std::string& dbname = "runnel") const;
  // The same for another role, e.g. kOwnerRole.
  std::string ConnectionStringAs(std::string_view role, const std::string& dbname = "runnel") const;
  // The same over TCP on 127.0.0.1, with the password; with TLS also
  // sslmode=verify-full against the cluster's certificate (dir()/ca.crt).
  // kSuperuser and kOwnerRole have the password.
  std::string TcpConnectionString(const std::string& dbname = "runnel", std::string_view role = kSuperuser) const;

  const std::filesystem::path& dir() const { return options_.dir; }
  std::filesystem::path data_dir() const { return options_.dir / "data"; }
  std::filesystem::path log_file() const { return options_.dir / "server.log"; }

 private:
  struct Owner {
    uid_t uid;
    gid_t gid;
  };

  void PrepareDirectory();
  void Initialize();
  void WriteSettings(uint16_t port);
  void EnsureRoles(Connection& conn) const;
  static void HandOverToOwner(Connection& conn);
  bool TlsEnabled() const;
  void CreateCertificate();
  uint16_t ChoosePort() const;
  void ClearStaleLockFiles() const;
  // The port of the running server; throws Error(Unavailable) when it is not running.
  uint16_t RunningPort() const;
  std::optional<pid_t> RunningPostmaster() const;
  std::string PgCtl(const std::vector<std::string>& args, bool check) const;
  std::string ReadPassword() const;
  uint16_t ConfiguredPort() const;
  // Options that run a helper as the server's owner (the service user under root).
  ProcessOptions AsOwner() const;
  void CheckRootSafe(const SafeDir& cluster) const;
  std::optional<FileOwner> FileOwnerOf() const;  // the service user, as root

  ClusterOptions options_;
  std::optional<Owner> service_owner_;  // set when running as root
};

}  // namespace runnel::postgres
