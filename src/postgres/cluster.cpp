#include "runnel/postgres/cluster.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "runnel/core/error.hpp"
#include "runnel/core/file.hpp"
#include "runnel/core/process.hpp"
#include "runnel/core/safe_dir.hpp"
#include "runnel/postgres/connection.hpp"

namespace runnel::postgres {
namespace fs = std::filesystem;
namespace {

constexpr std::string_view kDatabase = "runnel";  // the owner's database, named after the superuser
constexpr const char* kInstallHint = "install postgresql: sudo apt-get install postgresql";

// Every file of the cluster directory is read without following links
// (core/safe_dir.hpp): the directory belongs to the server user, and a link planted
// there must not make root read (and print) a file of its own.
// The contents of `path`, a file in a directory; nullopt when absent or unreadable.
std::optional<std::string> ReadOwnFile(const fs::path& path, size_t max_bytes = 1 << 20) {
  try {
    return SafeDir::Open(path.parent_path()).Read(path.filename().string(), max_bytes);
  } catch (const Error& e) {
    spdlog::debug("{}", e.what());
    return std::nullopt;
  }
}

// The server log's contents for an error message; empty when it cannot be read.
std::string ReadLogForMessage(const fs::path& path) {
  return ReadOwnFile(path, 16 << 20).value_or("");
}

std::vector<std::string> ReadLines(const fs::path& path) {
  std::vector<std::string> lines;
  std::istringstream in(ReadOwnFile(path).value_or(""));
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

std::string LastLines(const std::string& text, size_t count) {
  if (text.empty()) return text;
  size_t pos = text.size();
  for (size_t i = 0; i <= count && pos != std::string::npos && pos > 0; ++i) {
    pos = text.rfind('\n', pos - 1);
  }
  return pos == std::string::npos ? text : text.substr(pos + 1);
}

// A value for a libpq key=value connection string, quoted only when it must be.
std::string ConninfoValue(std::string_view value) {
  if (!value.empty() && value.find_first_of(" '\\\t\n") == std::string_view::npos) return std::string(value);
  std::string out = "'";
  for (char c : value) {
    if (c == '\'' || c == '\\') out += '\\';
    out += c;
  }
  return out + "'";
}

bool PortFree(uint16_t port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(port);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(fd);
  return ok;
}

uint16_t EphemeralPort() {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw Error(ErrorCode::Io, fmt::format("cannot create a socket: {}", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = 0;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    throw Error(ErrorCode::Io, fmt::format("cannot find a free port on 127.0.0.1: {}", std::strerror(errno)));
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

// The working directory of a process, empty when it is gone or not ours to read.
fs::path ProcessCwd(pid_t pid) {
  std::error_code ec;
  auto cwd = fs::read_symlink(fmt::format("/proc/{}/cwd", pid), ec);
  return ec ? fs::path() : cwd;
}

// Processes whose working directory is `dir`: a postmaster and its backends chdir to
// the data directory, so this finds backends orphaned by a killed postmaster.
std::vector<pid_t> ProcessesIn(const fs::path& dir) {
  std::vector<pid_t> pids;
  if (dir.empty()) return pids;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator("/proc", ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || !std::all_of(name.begin(), name.end(), ::isdigit)) continue;
    auto pid = static_cast<pid_t>(std::stol(name));
    if (ProcessCwd(pid) == dir) pids.push_back(pid);
  }
  return pids;
}

std::string RandomPassword() {
  std::random_device device;
  std::string out;
  for (int i = 0; i < 6; ++i) out += fmt::format("{:08x}", device());
  return out;
}

}  // namespace

fs::path FindPostgresBinDir() {
  const fs::path root = "/usr/lib/postgresql";
  std::vector<std::pair<int, fs::path>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(root, ec)) {
    const fs::path bin = entry.path() / "bin";
    if (fs::exists(bin / "initdb") && fs::exists(bin / "pg_ctl") && fs::exists(bin / "postgres")) {
      int version = std::atoi(entry.path().filename().c_str());
      found.emplace_back(version, bin);
    }
  }
  if (found.empty()) {
    throw Error(ErrorCode::NotFound,
                fmt::format("no PostgreSQL server binaries under {}/*/bin: {}", root.string(), kInstallHint));
  }
  std::sort(found.begin(), found.end());
  return found.back().second;
}

EmbeddedCluster::EmbeddedCluster(ClusterOptions options) : options_(std::move(options)) {
  if (options_.dir.empty()) throw Error(ErrorCode::InvalidInput, "embedded cluster: no directory given");
  options_.dir = fs::absolute(options_.dir).lexically_normal();
  if (options_.bin_dir.empty()) options_.bin_dir = FindPostgresBinDir();
  for (const char* tool : {"initdb", "pg_ctl", "postgres"}) {
    const fs::path path = options_.bin_dir / tool;
    if (::access(path.c_str(), X_OK) != 0) {
      throw Error(ErrorCode::NotFound,
                  fmt::format("PostgreSQL binary {} is missing or not executable: {}", path.string(), kInstallHint));
    }
  }
  // Unix socket paths are limited to sizeof(sun_path) bytes, terminator included.
  const size_t socket_path = (options_.dir / ".s.PGSQL.65535.lock").string().size();
  if (socket_path >= sizeof(sockaddr_un{}.sun_path)) {
    throw Error(ErrorCode::InvalidInput,
                fmt::format("cluster directory {} is too long for a unix socket path ({} > {} bytes): "
                            "choose a shorter RUNNEL_HOME",
                            options_.dir.string(), socket_path, sizeof(sockaddr_un{}.sun_path) - 1));
  }
  if (::geteuid() == 0) {
    passwd* pw = ::getpwnam(options_.service_user.c_str());
    if (pw == nullptr) {
      spdlog::info("creating system user '{}' to run PostgreSQL (it refuses to run as root)", options_.service_user);
      auto result = RunProcess({"/usr/sbin/useradd", "--system", "--user-group", "--no-create-home", "--home-dir",
                                "/nonexistent", "--shell", "/usr/sbin/nologin", options_.service_user});
      pw = ::getpwnam(options_.service_user.c_str());
      if (pw == nullptr) {
        throw Error(ErrorCode::Io,
                    fmt::format("cannot create system user '{}': {}", options_.service_user, result.output));
      }
    }
    service_owner_ = Owner{pw->pw_uid, pw->pw_gid};
  }
}

void EmbeddedCluster::PrepareDirectory() {
  const fs::path& dir = options_.dir;
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
    throw Error(ErrorCode::Io, fmt::format("cluster directory {} exists and is not a directory", dir.string()));
  }
  fs::create_directories(dir, ec);
  if (ec) {
    throw Error(ErrorCode::Io, fmt::format("cannot create cluster directory {}: {}", dir.string(), ec.message()));
  }
  const SafeDir cluster = SafeDir::Open(dir);  // refuses a symbolic link
  if (service_owner_) {
    CheckRootSafe(cluster);
    cluster.Chown(FileOwner{service_owner_->uid, service_owner_->gid});
    // The server user must be able to reach the directory through every parent.
    auto probe = RunProcess({"/usr/bin/test", "-w", dir.string(), "-a", "-x", dir.string()}, AsOwner());
    if (probe.exit_code != 0) {
      throw Error(ErrorCode::Io,
                  fmt::format("the PostgreSQL server user '{}' cannot enter {}: every parent directory "
                              "must be searchable by it; set RUNNEL_HOME elsewhere (e.g. /var/lib/runnel)",
                              options_.service_user, dir.string()));
    }
  } else if (::access(dir.c_str(), W_OK | X_OK) != 0) {
    throw Error(ErrorCode::Io,
                fmt::format("cluster directory {} is not writable: {}", dir.string(), std::strerror(errno)));
  }
  cluster.Chmod(0700);
}

// As root, the cluster directory is handed to the server user; whoever can act as that
// user (any SQL superuser, through COPY ... TO PROGRAM) controls what is inside it. So
// the directory must not be someone else's, and its parent must not let anyone but
// root replace it.
void EmbeddedCluster::CheckRootSafe(const SafeDir& cluster) const {
  const uid_t owner = cluster.owner_uid();
  if (owner != 0 && owner != service_owner_->uid) {
    throw Error(ErrorCode::Io, fmt::format("cluster directory {} belongs to uid {}, neither root nor '{}': "
                                           "refusing to hand it to the server user; choose another RUNNEL_HOME",
                                           options_.dir.string(), owner, options_.service_user));
  }
  struct stat parent {};
  const fs::path above = options_.dir.parent_path().empty() ? fs::path(".") : options_.dir.parent_path();
  if (::stat(above.c_str(), &parent) != 0) {
    throw Error(ErrorCode::Io, fmt::format("{}: cannot stat: {}", above.string(), std::strerror(errno)));
  }
  const bool others_replace = (parent.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (parent.st_mode & S_ISVTX) == 0;
  if (others_replace || (parent.st_uid != 0 && parent.st_uid != ::geteuid())) {
    throw Error(ErrorCode::Io, fmt::format("{} (the cluster directory's parent) can be changed by users other than "
                                           "root (owner uid {}, mode {:o}): choose a RUNNEL_HOME only root can write",
                                           above.string(), parent.st_uid, parent.st_mode & 07777));
  }
}

void EmbeddedCluster::Initialize() {
  const fs::path data = data_dir();
  std::error_code ec;
  if (fs::exists(data, ec) && !fs::is_empty(data, ec)) {
    throw Error(ErrorCode::Io, fmt::format("{} exists but holds no PostgreSQL cluster (no PG_VERSION); "
                                           "move it away or choose another RUNNEL_HOME",
                                           data.string()));
  }
  const SafeDir cluster = SafeDir::Open(options_.dir);
  cluster.Write("password", RandomPassword() + "\n", 0600, FileOwnerOf());

  spdlog::info("initializing PostgreSQL cluster in {}", data.string());
  const fs::path password_file = options_.dir / "password";
  auto result = RunProcess({(options_.bin_dir / "initdb").string(), "-D", data.string(), "-U", std::string(kSuperuser),
                            "--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile=" + password_file.string(),
                            "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions"},
                           AsOwner());
  if (result.exit_code != 0) {
    throw Error(ErrorCode::Io, fmt::format("initdb failed for {}:\n{}", data.string(), result.output));
  }
  const SafeDir data_files = cluster.Sub("data");
  auto conf = data_files.Read("postgresql.conf", 16 << 20);
  if (!conf) throw Error(ErrorCode::Io, fmt::format("initdb left no {}", (data / "postgresql.conf").string()));
  data_files.Write("postgresql.conf",
                   *conf + "\n# Runnel's settings (port, socket, addresses)\ninclude_if_exists = 'runnel.conf'\n", 0600,
                   FileOwnerOf());
}

std::optional<FileOwner> EmbeddedCluster::FileOwnerOf() const {
  if (!service_owner_) return std::nullopt;
  return FileOwner{service_owner_->uid, service_owner_->gid};
}

void EmbeddedCluster::WriteSettings(uint16_t port) {
  const SafeDir data_files = SafeDir::Open(options_.dir).Sub("data");
  // Only from this machine. The socket's mode (0700) keeps other users out, so every
  // role is trusted there: whoever reaches it could be the superuser anyway, and the
  // serving role (kServeRole) needs no secret. Rewritten on every start, so clusters
  // created before the serving role existed get it too.
  // With TLS, TCP connections without it are refused (hostssl only).
  const bool tls = TlsEnabled();
  data_files.Write("pg_hba.conf",
                   fmt::format("# Written by Runnel on every start: any role on the socket, password on loopback "
                               "TCP{}.\nlocal all all trust\n{} all all 127.0.0.1/32 scram-sha-256\n",
                               tls ? " over TLS only" : "", tls ? "hostssl" : "host "),
                   0600, FileOwnerOf());
  data_files.Write(
      "runnel.conf",
      fmt::format("# Written by Runnel on every start.\nlisten_addresses = '127.0.0.1'\nport = {}\n"
                  "unix_socket_directories = {}\nunix_socket_permissions = 0700\nmax_connections = 200\n{}",
                  port, QuoteLiteral(options_.dir.string()),
                  tls ? "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n"
                        "ssl_min_protocol_version = 'TLSv1.2'\n"
                      : ""),
      0600, FileOwnerOf());
}

uint16_t EmbeddedCluster::ConfiguredPort() const {
  for (const auto& line : ReadLines(data_dir() / "runnel.conf")) {
    if (line.starts_with("port = ")) return static_cast<uint16_t>(std::atoi(line.c_str() + 7));
  }
  return 0;
}

uint16_t EmbeddedCluster::ChoosePort() const {
  if (options_.port != 0) {
    if (!PortFree(options_.port)) {
      throw Error(
          ErrorCode::Unavailable,
          fmt::format("port {} on 127.0.0.1 is already in use: choose another port or 0 for any", options_.port));
    }
    return options_.port;
  }
  uint16_t last = ConfiguredPort();
  if (last != 0 && PortFree(last)) return last;
  return EphemeralPort();
}

std::optional<pid_t> EmbeddedCluster::RunningPostmaster() const {
  auto lines = ReadLines(data_dir() / "postmaster.pid");
  if (lines.empty()) return std::nullopt;
  auto pid = static_cast<pid_t>(std::atol(lines[0].c_str()));
  std::error_code ec;
  const fs::path data = fs::canonical(data_dir(), ec);
  if (ec || pid <= 0 || !ProcessAlive(pid)) return std::nullopt;
  // A live postmaster has chdir'd into its data directory; a reused pid has not, and
  // a zombie has no cwd at all.
  if (ProcessCwd(pid) == data) return pid;
  return std::nullopt;
}

void EmbeddedCluster::ClearStaleLockFiles() const {
  std::error_code ec;
  const fs::path data = fs::canonical(data_dir(), ec);
  if (ec) return;
  // Backends orphaned by a killed postmaster exit once they notice; wait for them so a
  // new server never shares the data directory with old processes.
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  std::vector<pid_t> left = ProcessesIn(data);
  while (!left.empty() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    left = ProcessesIn(data);
  }
  if (!left.empty()) {
    throw Error(ErrorCode::Unavailable,
                fmt::format("processes of a crashed server still use {} (pid {}): stop them first", data.string(),
                            left.front()));
  }
  // No server of ours runs, so any lock file is stale. PostgreSQL would trust a pid in
  // them that still exists: a reused pid, or a killed postmaster left as a zombie.
  const fs::path pid_file = data_dir() / "postmaster.pid";
  if (fs::exists(pid_file, ec)) {
    spdlog::warn("removing stale {} left by a server that is no longer running", pid_file.string());
    fs::remove(pid_file, ec);
  }
  for (const auto& entry : fs::directory_iterator(options_.dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.starts_with(".s.PGSQL.")) fs::remove(entry.path(), ec);
  }
}

ProcessOptions EmbeddedCluster::AsOwner() const {
  ProcessOptions options;
  if (service_owner_) options.run_as = RunAs{service_owner_->uid, service_owner_->gid};
  return options;
}

std::string EmbeddedCluster::PgCtl(const std::vector<std::string>& args, bool check) const {
  std::vector<std::string> argv{(options_.bin_dir / "pg_ctl").string(), "-D", data_dir().string()};
  argv.insert(argv.end(), args.begin(), args.end());
  auto result = RunProcess(argv, AsOwner());
  if (check && result.exit_code != 0) {
    throw Error(ErrorCode::Unavailable,
                fmt::format("pg_ctl {} failed for {}:\n{}\nlast lines of {}:\n{}", args.front(), data_dir().string(),
                            result.output, log_file().string(), LastLines(ReadLogForMessage(log_file()), 15)));
  }
  return result.output;
}

StartOutcome EmbeddedCluster::Start() {
  PrepareDirectory();
  if (RunningPostmaster()) {
    if (options_.tls && !TlsEnabled()) {
      throw Error(ErrorCode::Config, fmt::format("the PostgreSQL cluster in {} runs without TLS: `runnel db stop`, "
                                                 "then `runnel db start --tls`",
                                                 options_.dir.string()));
    }
    return StartOutcome::AlreadyRunning;
  }
  ClearStaleLockFiles();
  const bool fresh = !fs::exists(data_dir() / "PG_VERSION");
  if (fresh) Initialize();
  if (options_.tls && !TlsEnabled()) CreateCertificate();

  // Another process may grab the port between the check and the server's bind: retry.
  for (int attempt = 1;; ++attempt) {
    const uint16_t port = ChoosePort();
    WriteSettings(port);
    try {
      PgCtl({"start", "-l", log_file().string(), "-w", "-s", "-t", std::to_string(options_.start_timeout.count())},
            /*check=*/true);
      spdlog::info("PostgreSQL running on 127.0.0.1:{} and socket {}", port, options_.dir.string());
      break;
    } catch (const Error&) {
      if (attempt >= 3 || options_.port != 0 || PortFree(port)) throw;
      spdlog::warn("port {} was taken while starting; trying another", port);
    }
  }
  // pg_ctl wrote the log as the server user; an older one of root's is handed over,
  // a link is refused.
  if (service_owner_) SafeDir::Open(options_.dir).ChownEntry(log_file().filename().string(), *FileOwnerOf());
  auto conn = Connection::Open(ConnectionString("postgres"));
  if (fresh) conn.Exec(fmt::format("CREATE DATABASE {}", QuoteIdentifier(kDatabase)));
  EnsureRoles(conn);
  auto database = Connection::Open(ConnectionString());
  HandOverToOwner(database);
  return fresh ? StartOutcome::Initialized : StartOutcome::Started;
}

bool EmbeddedCluster::Stop() {
  if (!RunningPostmaster()) return false;
  PgCtl({"stop", "-m", "fast", "-w", "-s", "-t", std::to_string(options_.start_timeout.count())},
        /*check=*/true);
  return true;
}

void EmbeddedCluster::Kill() {
  auto pid = RunningPostmaster();
  if (!pid) return;
  ::kill(*pid, SIGKILL);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (RunningPostmaster() && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
}

ClusterStatus EmbeddedCluster::Status() const {
  ClusterStatus status;
  status.initialized = fs::exists(data_dir() / "PG_VERSION");
  if (auto pid = RunningPostmaster()) {
    status.running = true;
    status.pid = *pid;
    auto lines = ReadLines(data_dir() / "postmaster.pid");
    // postmaster.pid line 4 is the port.
    if (lines.size() >= 4) status.port = static_cast<uint16_t>(std::atoi(lines[3].c_str()));
  } else if (status.initialized) {
    status.port = ConfiguredPort();
  }
  return status;
}

bool EmbeddedCluster::TlsEnabled() const {
  return fs::exists(data_dir() / "server.crt") && fs::exists(options_.dir / "ca.crt");
}

// A self-signed certificate for 127.0.0.1 and localhost, made by the openssl tool in a
// private temporary directory and written into the cluster through SafeDir (never
// through a path the server user controls): the server's key and certificate in the
// data directory, the certificate for clients to verify against as ca.crt.
void EmbeddedCluster::CreateCertificate() {
  const fs::path openssl = "/usr/bin/openssl";
  if (!fs::exists(openssl)) {
    throw Error(ErrorCode::NotFound, "TLS needs the openssl tool: apt-get install openssl");
  }
  std::string scratch = (fs::temp_directory_path() / "runnel-tls-XXXXXX").string();
  if (::mkdtemp(scratch.data()) == nullptr) {
    throw Error(ErrorCode::Io, fmt::format("cannot create a temporary directory: {}", std::strerror(errno)));
  }
  struct RemoveOnExit {
    fs::path dir;
    ~RemoveOnExit() {
      std::error_code ec;
      fs::remove_all(dir, ec);
    }
  } cleanup{scratch};
  const SafeDir made = SafeDir::Open(scratch);
  auto result = RunProcess({openssl.string(), "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "3650", "-subj", "/CN=localhost",
                            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", scratch + "/server.key",
                            "-out", scratch + "/server.crt"});
  auto key = made.Read("server.key", 64 << 10), cert = made.Read("server.crt", 64 << 10);
  if (result.exit_code != 0 || !key || !cert) {
    throw Error(ErrorCode::Io, fmt::format("openssl could not make a certificate:\n{}", result.output));
  }
  const SafeDir cluster = SafeDir::Open(options_.dir);
  const SafeDir data_files = cluster.Sub("data");
  data_files.Write("server.key", *key, 0600, FileOwnerOf());
  data_files.Write("server.crt", *cert, 0600, FileOwnerOf());
  cluster.Write("ca.crt", *cert, 0644, FileOwnerOf());
  spdlog::info("TLS on: certificate for 127.0.0.1 and localhost in {}", (options_.dir / "ca.crt").string());
}

// The roles of least privilege: kOwnerRole owns the database and what is in it (tables,
// `runnel migrate`) and logs in over TCP with the cluster's password; kServeRole serves
// (`runnel run`) with only what `runnel grants` gives it. Neither is a superuser.
void EmbeddedCluster::EnsureRoles(Connection& conn) const {
  for (const auto role : {kOwnerRole, kServeRole}) {
    conn.Exec(
        fmt::format("DO $runnel$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{0}') THEN "
                    "CREATE ROLE {0} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION; END IF; "
                    "END $runnel$",
                    role));
  }
  conn.Exec(fmt::format("ALTER ROLE {} PASSWORD {}", kOwnerRole, QuoteLiteral(ReadPassword())));
  conn.Exec(fmt::format("ALTER DATABASE {} OWNER TO {}", QuoteIdentifier(kDatabase), kOwnerRole));
}

// Clusters created before the owner role existed, and objects made since through
// `db url --superuser`: the superuser's tables, views, sequences and functions in
// schema public go to the owner (not those of extensions, nor sequences that belong
// to a table, which follow it).
void EmbeddedCluster::HandOverToOwner(Connection& conn) {
  conn.Exec(fmt::format(
      "DO $runnel$ DECLARE r record; BEGIN\n"
      "FOR r IN SELECT c.oid::regclass AS name, CASE c.relkind WHEN 'S' THEN 'SEQUENCE' WHEN 'v' THEN 'VIEW' "
      "WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END AS kind FROM pg_class c "
      "WHERE c.relnamespace = 'public'::regnamespace AND c.relowner = '{0}'::regrole "
      "AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = "
      "'pg_class'::regclass AND d.objid = c.oid AND d.deptype IN ('e', 'a', 'i')) LOOP\n"
      "  EXECUTE format('ALTER %s %s OWNER TO {1}', r.kind, r.name);\nEND LOOP;\n"
      "FOR r IN SELECT p.oid::regprocedure AS name FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace "
      "AND p.proowner = '{0}'::regrole AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.classid = "
      "'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e') LOOP\n"
      "  EXECUTE format('ALTER ROUTINE %s OWNER TO {1}', r.name);\nEND LOOP;\nEND $runnel$",
      kSuperuser, kOwnerRole));
}

uint16_t EmbeddedCluster::RunningPort() const {
  auto status = Status();
  if (!status.running) {
    throw Error(
        ErrorCode::Unavailable,
        fmt::format("the embedded PostgreSQL in {} is not running: run `runnel db start`", options_.dir.string()));
  }
  return status.port;
}

std::string EmbeddedCluster::ConnectionString(const std::string& dbname) const {
  return ConnectionStringAs(kSuperuser, dbname);
}

std::string EmbeddedCluster::ConnectionStringAs(std::string_view role, const std::string& dbname) const {
  return fmt::format("host={} port={} user={} dbname={}", ConninfoValue(options_.dir.string()), RunningPort(), role,
                     ConninfoValue(dbname));
}

std::string EmbeddedCluster::ReadPassword() const {
  std::string password = SafeDir::Open(options_.dir).Read("password", 4096).value_or("");
  while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) password.pop_back();
  if (password.empty()) {
    throw Error(ErrorCode::Io, fmt::format("cannot read {}", (options_.dir / "password").string()));
  }
  return password;
}

std::string EmbeddedCluster::TcpConnectionString(const std::string& dbname, std::string_view role) const {
  const uint16_t port = RunningPort();
  std::string tls;
  if (TlsEnabled()) {
    tls = fmt::format(" sslmode=verify-full sslrootcert={}", ConninfoValue((options_.dir / "ca.crt").string()));
  }
  return fmt::format("host=127.0.0.1 port={} user={} password={} dbname={}{}", port, role,
                     ConninfoValue(ReadPassword()), ConninfoValue(dbname), tls);
}

}  // namespace runnel::postgres
