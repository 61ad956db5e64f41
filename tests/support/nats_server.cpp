#include "nats_server.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <thread>
#include <vector>

namespace runnel::testing {

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    throw std::runtime_error("no free port");
  }
  close(fd);
  return ntohs(addr.sin_port);
}

namespace {

bool Accepts(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return ok;
}

}  // namespace

bool NatsServer::Available() {
  return access(kBinary, X_OK) == 0;
}

NatsServer::NatsServer() : port_(FreePort()) {
  Start();
}

NatsServer::NatsServer(ClusterNode node) : port_(FreePort()), node_(std::move(node)) {
  Start();
}

NatsServer::NatsServer(Tls tls) : port_(FreePort()), tls_(std::move(tls)) {
  Start();
}

NatsServer::NatsServer(Operator op) : port_(FreePort()), operator_(std::move(op)) {
  Start();
}

NatsServer::~NatsServer() {
  Kill();
}

void NatsServer::Start() {
  const std::string store = (dir_.path() / "store").string();
  const std::string log = (dir_.path() / "server.log").string();
  std::vector<std::string> argv = {kBinary, "-js", "-a", "127.0.0.1", "-p", std::to_string(port_), "-sd", store};
  if (!operator_.config.empty()) argv.insert(argv.end(), {"-c", operator_.config.string()});
  if (!tls_.cert.empty()) {
    argv.insert(argv.end(), {"--tls", "--tlscert", tls_.cert.string(), "--tlskey", tls_.key.string()});
    if (!tls_.ca.empty()) argv.insert(argv.end(), {"--tlsverify", "--tlscacert", tls_.ca.string()});
  }
  if (node_.name.empty()) {
    argv.insert(argv.end(), {"--server_name", "runnel-test"});
  } else {
    std::string routes;
    for (const int p : node_.routes) routes += (routes.empty() ? "" : ",") + fmt::format("nats://127.0.0.1:{}", p);
    argv.insert(argv.end(), {"--server_name", node_.name, "--cluster_name", "runnel-test", "--cluster",
                             fmt::format("nats://127.0.0.1:{}", node_.route_port), "--routes", routes});
  }
  process_ = ChildProcess(argv, log);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (!Accepts(port_)) {
    if (!process_.Running()) throw std::runtime_error("nats-server exited at start (see " + log + ")");
    if (std::chrono::steady_clock::now() > deadline) throw std::runtime_error("nats-server did not start in 10 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

void NatsServer::Kill() {
  process_.Stop(SIGKILL);
}

NatsCluster::NatsCluster(int size) {
  std::vector<int> route_ports;
  for (int i = 0; i < size; ++i) route_ports.push_back(FreePort());
  for (int i = 0; i < size; ++i) {
    NatsServer::ClusterNode node{fmt::format("n{}", i + 1), route_ports[static_cast<size_t>(i)], {}};
    for (int j = 0; j < size; ++j)
      if (j != i) node.routes.push_back(route_ports[static_cast<size_t>(j)]);
    nodes_.push_back(std::make_unique<NatsServer>(std::move(node)));
  }
}

std::vector<std::string> NatsCluster::urls() const {
  std::vector<std::string> out;
  for (const auto& n : nodes_) out.push_back(n->url());
  return out;
}

namespace {

void Openssl(const std::filesystem::path& dir, const std::string& arguments) {
  const std::string command = fmt::format("cd '{}' && openssl {} >> openssl.log 2>&1", dir.string(), arguments);
  if (std::system(command.c_str()) != 0)
    throw std::runtime_error("openssl failed: " + arguments + " (see " + (dir / "openssl.log").string() + ")");
}

}  // namespace

TestCertificates::TestCertificates(const std::filesystem::path& dir)
    : ca(dir / "ca.pem"),
      ca_key(dir / "ca.key"),
      server_cert(dir / "server.pem"),
      server_key(dir / "server.key"),
      client_cert(dir / "client.pem"),
      client_key(dir / "client.key") {
  const std::string key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  Openssl(dir, fmt::format("req -x509 {} -keyout ca.key -out ca.pem -days 2 -subj /CN=runnel-test-ca", key));
  std::FILE* ext = std::fopen((dir / "server.ext").c_str(), "w");
  if (ext == nullptr) throw std::runtime_error("cannot write server.ext");
  std::fputs("subjectAltName=IP:127.0.0.1,DNS:localhost\n", ext);
  std::fclose(ext);
  for (const std::string who : {"server", "client"}) {
    Openssl(dir, fmt::format("req {} -keyout {}.key -out {}.csr -subj /CN=runnel-test-{}", key, who, who, who));
    Openssl(dir, fmt::format("x509 -req -in {0}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out {0}.pem -days 2{1}",
                             who, who == "server" ? " -extfile server.ext" : ""));
  }
}

TestCredentials::TestCredentials(const std::filesystem::path& dir)
    : server_config(dir / "server.conf"), user_creds(dir / "user.creds"), stranger_creds(dir / "stranger.creds") {
  const std::string command = fmt::format("/usr/bin/python3 '{}/tests/support/nats_credentials.py' '{}' > '{}' 2>&1",
                                          RUNNEL_SOURCE_DIR, dir.string(), (dir / "credentials.log").string());
  if (std::system(command.c_str()) != 0)
    throw std::runtime_error("nats_credentials.py failed (see " + (dir / "credentials.log").string() + ")");
}

}  // namespace runnel::testing
