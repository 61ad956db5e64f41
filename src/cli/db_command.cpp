// `runnel db start|stop|status|url`: the embedded PostgreSQL cluster.
#include <fmt/format.h>

#include "commands.hpp"

namespace runnel::cli {

void AddDbCommands(CLI::App& root, std::vector<Command>& commands) {
  auto* db = root.add_subcommand("db", "Manage Runnel's embedded PostgreSQL cluster ($RUNNEL_HOME/pg)");
  db->require_subcommand(1);

  auto* start = db->add_subcommand("start", "Create the cluster if needed and start it (idempotent)");
  auto port = std::make_shared<uint16_t>(0);
  start->add_option("--port", *port, "TCP port on 127.0.0.1 (default: the last one, or any free port)");
  auto tls = std::make_shared<bool>(false);
  start->add_flag("--tls", *tls,
                  "TLS on TCP, which then refuses plain connections: a certificate for 127.0.0.1 is made once "
                  "(clients verify against $RUNNEL_HOME/pg/ca.crt; `db url --tcp` says so)");
  commands.push_back({start, [port, tls](CliContext& ctx) {
                        auto options = EmbeddedClusterOptions(ctx.config);
                        if (*port != 0) options.port = *port;
                        options.tls = *tls;
                        postgres::EmbeddedCluster cluster(options);
                        auto outcome = cluster.Start();
                        auto status = cluster.Status();
                        switch (outcome) {
                          case postgres::StartOutcome::Initialized:
                            fmt::print("created a new PostgreSQL cluster in {} and started it\n",
                                       cluster.dir().string());
                            break;
                          case postgres::StartOutcome::Started:
                            fmt::print("started the PostgreSQL cluster in {}\n", cluster.dir().string());
                            break;
                          case postgres::StartOutcome::AlreadyRunning:
                            fmt::print("the PostgreSQL cluster in {} is already running\n", cluster.dir().string());
                            break;
                        }
                        fmt::print("pid {}, 127.0.0.1:{}, log {}\nurl: {}\n", status.pid, status.port,
                                   cluster.log_file().string(), cluster.ConnectionStringAs(postgres::kOwnerRole));
                        return 0;
                      }});

  auto* stop = db->add_subcommand("stop", "Stop the cluster cleanly (fast shutdown)");
  commands.push_back({stop, [](CliContext& ctx) {
                        postgres::EmbeddedCluster cluster(EmbeddedClusterOptions(ctx.config));
                        if (cluster.Stop()) {
                          fmt::print("stopped the PostgreSQL cluster in {}\n", cluster.dir().string());
                        } else {
                          fmt::print("the PostgreSQL cluster in {} is not running\n", cluster.dir().string());
                        }
                        return 0;
                      }});

  auto* status = db->add_subcommand("status", "Show whether the cluster runs (exit status 3 when stopped)");
  commands.push_back({status, [](CliContext& ctx) {
                        postgres::EmbeddedCluster cluster(EmbeddedClusterOptions(ctx.config));
                        auto s = cluster.Status();
                        if (s.running) {
                          fmt::print("running: pid {}, 127.0.0.1:{}, directory {}\n", s.pid, s.port,
                                     cluster.dir().string());
                          return 0;
                        }
                        fmt::print("stopped: directory {} ({})\n", cluster.dir().string(),
                                   s.initialized ? "initialized" : "no cluster yet");
                        return 3;
                      }});

  auto* url = db->add_subcommand("url", "Print a libpq connection string for the running cluster");
  auto tcp = std::make_shared<bool>(false);
  auto dbname = std::make_shared<std::string>("runnel");
  url->add_flag("--tcp", *tcp, "Connect over TCP on 127.0.0.1 with the password instead of the unix socket");
  url->add_option("--dbname", *dbname, "Database name (default: runnel)");
  auto superuser = std::make_shared<bool>(false);
  url->add_flag("--superuser", *superuser,
                "As the superuser `runnel` (extensions, roles) instead of the owner role `runnel_owner`");
  commands.push_back({url, [tcp, dbname, superuser](CliContext& ctx) {
                        postgres::EmbeddedCluster cluster(EmbeddedClusterOptions(ctx.config));
                        const auto role = *superuser ? postgres::kSuperuser : postgres::kOwnerRole;
                        fmt::print("{}\n", *tcp ? cluster.TcpConnectionString(*dbname, role)
                                                : cluster.ConnectionStringAs(role, *dbname));
                        return 0;
                      }});
}

}  // namespace runnel::cli
