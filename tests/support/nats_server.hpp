// A NATS server with JetStream (Debian's nats-server) started by a test on a free
// loopback port, storing into its own temporary directory: killed (SIGKILL, as a crash)
// and started again on the same port and store when a test asks. A NatsCluster is
// three of them routed to each other (a JetStream cluster, streams with replicas).
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "child_process.hpp"
#include "shared_paths.hpp"
#include "temp_dir.hpp"

// Use at the top of a test (or SetUp) that starts a NatsServer: skips with a message
// when Debian's nats-server is missing, fails under CI=true.
#define RUNNEL_REQUIRE_NATS_SERVER()                                                                                \
  do {                                                                                                              \
    if (!::runnel::testing::NatsServer::Available()) {                                                              \
      if (::runnel::testing::InCi()) {                                                                              \
        FAIL() << "CI=true but " << ::runnel::testing::NatsServer::kBinary << " is missing (Debian's nats-server)"; \
      }                                                                                                             \
      GTEST_SKIP() << ::runnel::testing::NatsServer::kBinary << " not found: install Debian's nats-server";         \
    }                                                                                                               \
  } while (0)

namespace runnel::testing {

class NatsServer {
 public:
  static constexpr const char* kBinary = "/usr/sbin/nats-server";
  static bool Available();

  // A node of a cluster: its name, its route port, the other nodes' route ports.
  struct ClusterNode {
    std::string name;
    int route_port = 0;
    std::vector<int> routes;
  };

  // A server that speaks only TLS, with its certificate and key, and, when `ca` is
  // given, requires clients to present a certificate that CA signed.
  struct Tls {
    std::filesystem::path cert, key, ca;
  };

  // A server that trusts an operator (decentralized auth: JWTs), its configuration
  // file as TestCredentials writes it.
  struct Operator {
    std::filesystem::path config;
  };

  // Starts the server (alone, or as `node` of a cluster, with TLS, or trusting an
  // operator) and waits until it accepts connections. Throws std::runtime_error when it
  // does not within 10 s.
  NatsServer();
  explicit NatsServer(ClusterNode node);
  explicit NatsServer(Tls tls);
  explicit NatsServer(Operator op);
  ~NatsServer();  // kills it
  NatsServer(const NatsServer&) = delete;
  NatsServer& operator=(const NatsServer&) = delete;

  std::string url() const { return "nats://127.0.0.1:" + std::to_string(port_); }
  void Kill();   // SIGKILL, waits for it to go
  void Start();  // again, same port and store

 private:
  TempDir dir_;
  int port_ = 0;
  ClusterNode node_;
  Tls tls_;
  Operator operator_;
  ChildProcess process_;
};

// A certificate authority, and a server certificate (for 127.0.0.1 and localhost) and
// a client certificate it signed, made by Debian's openssl in `dir`. Throws
// std::runtime_error when openssl fails.
struct TestCertificates {
  explicit TestCertificates(const std::filesystem::path& dir);
  std::filesystem::path ca, ca_key, server_cert, server_key, client_cert, client_key;
};

// An operator, its system account, an account with JetStream and a user of it, as
// `nsc` makes them (tests/support/nats_credentials.py, python3-cryptography): the
// server's configuration, the user's credentials file, and one of a user of an
// account the server does not know. Throws std::runtime_error when the script fails.
struct TestCredentials {
  explicit TestCredentials(const std::filesystem::path& dir);
  std::filesystem::path server_config, user_creds, stranger_creds;
};

class NatsCluster {
 public:
  // Starts `size` nodes and waits until each accepts connections (JetStream elects
  // its leader shortly after: retry the first stream's creation).
  explicit NatsCluster(int size = 3);
  NatsServer& node(size_t i) { return *nodes_.at(i); }
  std::vector<std::string> urls() const;

 private:
  std::vector<std::unique_ptr<NatsServer>> nodes_;
};

// A free TCP port on loopback (free when asked).
int FreePort();

}  // namespace runnel::testing
