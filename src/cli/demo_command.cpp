// `runnel demo` (what `make demo` runs). Today it shows only what exists: the embedded
// database and the needs schema. It never prints results it did not compute.
#include <fmt/format.h>

#include "commands.hpp"
#include "runnel/postgres/connection.hpp"

namespace runnel::cli {
namespace {

constexpr const char* kNeedsSchema = R"sql(
CREATE TABLE IF NOT EXISTS needs (
    id                      integer PRIMARY KEY,
    age                     integer,
    gender                  integer,
    family_members          integer,
    financial_education     real,
    risk_propensity         real,
    income                  real,
    wealth                  real,
    income_investment       integer,
    accumulation_investment integer,
    financial_status        real,
    client_id               integer
);
CREATE TABLE IF NOT EXISTS products (
    id_product   integer PRIMARY KEY,
    income       integer,
    accumulation integer,
    risk         real,
    description  text
);
)sql";

}  // namespace

void AddDemoCommand(CLI::App& root, std::vector<Command>& commands) {
  auto* demo = root.add_subcommand("demo", "Start the embedded database and set up the needs demo");
  commands.push_back(
      {demo, [](CliContext& ctx) {
         std::string url = ctx.config.db_url;
         if (url.empty()) {
           postgres::EmbeddedCluster cluster(EmbeddedClusterOptions(ctx.config));
           auto outcome = cluster.Start();
           fmt::print("1. embedded PostgreSQL in {}: {}\n", cluster.dir().string(),
                      outcome == postgres::StartOutcome::Initialized ? "created and started"
                      : outcome == postgres::StartOutcome::Started   ? "started"
                                                                     : "already running");
           url = cluster.ConnectionString();
         } else {
           fmt::print("1. using the database at RUNNEL_DB_URL\n");
         }
         auto conn = postgres::Connection::Open(url);
         auto version = conn.Exec("SELECT current_setting('server_version')");
         fmt::print("   connected: {} (PostgreSQL {})\n", conn.Describe(), version.Get<std::string>(0, 0));
         conn.Exec(kNeedsSchema);
         auto rows = conn.Exec("SELECT count(*) FROM needs");
         fmt::print("2. tables needs and products are in place (needs holds {} rows)\n", rows.Get<int64_t>(0, 0));
         fmt::print(
             "3. not yet available: serving requests, predictions and recommendations\n"
             "   (the real-time pipeline, issue #4). Nothing was scored.\n"
             "connect with: psql \"{}\"\n",
             url);
         return 0;
       }});
}

}  // namespace runnel::cli
