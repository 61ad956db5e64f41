// Who may do what: `runnel keys create|list|revoke` (the HTTP API's keys,
// server/api_keys.hpp) and `runnel grants` (a serving role's rights, server/grants.hpp).
#include <fmt/format.h>

#include <cstdio>
#include <memory>

#include "commands.hpp"
#include "runnel/core/duration.hpp"
#include "runnel/core/error.hpp"
#include "runnel/postgres/connection.hpp"
#include "runnel/server/api_keys.hpp"
#include "runnel/server/grants.hpp"

namespace runnel::cli {

namespace {

void PrintKeys(const std::vector<server::KeyInfo>& keys) {
  fmt::print("{:<6} {:<13} {:<7} {:<16} {:<27} {:<27} {}\n", "ID", "PREFIX", "SCOPE", "CLIENT", "CREATED", "EXPIRES",
             "STATE");
  for (const auto& k : keys) {
    const std::string state = k.revoked_at ? "revoked " + *k.revoked_at : "valid";
    fmt::print("{:<6} {:<13} {:<7} {:<16} {:<27} {:<27} {}\n", k.id, k.prefix, server::ScopeName(k.scope),
               k.client.value_or("(any)"), k.created_at, k.expires_at.value_or("never"), state);
  }
}

}  // namespace

void AddKeysCommands(CLI::App& root, std::vector<Command>& commands) {
  auto* keys = root.add_subcommand("keys", "Create, list and revoke the HTTP API's keys");
  keys->require_subcommand(1);
  struct KeysArgs {
    std::string db, scope = "submit", client, expires, note;
    int64_t id = 0;
  };
  auto args = std::make_shared<KeysArgs>();
  const std::string db_help = "libpq connection string (default: RUNNEL_DB_URL, else the embedded database)";

  auto* create = keys->add_subcommand("create", "Create a key and print it once; only its SHA-256 is stored");
  create->add_option("--scope", args->scope, "read: own requests and events; submit: also submit; admin: everything")
      ->check(CLI::IsMember({"read", "submit", "admin"}));
  create->add_option("--client", args->client,
                     "Bind the key to this client: its requests count against that client's quota, whatever the body "
                     "says, and it sees only that client's requests");
  create->add_option("--expires", args->expires, "Lifetime, e.g. 3600s, 30m, 12h, 90d (default: never)");
  create->add_option("--note", args->note, "Free text shown by `keys list`, e.g. who holds it");
  create->add_option("--db", args->db, db_help);
  commands.push_back({create, [args, create](CliContext& ctx) {
                        server::KeySpec spec;
                        spec.scope = server::ParseScope(args->scope).value_or(server::Scope::kSubmit);
                        if (create->count("--client") > 0) spec.client = args->client;
                        if (!args->expires.empty()) {
                          spec.lifetime = ParseDuration(args->expires);
                          if (!spec.lifetime) {
                            throw Error(ErrorCode::InvalidInput,
                                        fmt::format("--expires '{}': expected a number and a unit, e.g. 3600s, 30m, "
                                                    "12h or 90d",
                                                    args->expires));
                          }
                        }
                        spec.note = args->note;
                        auto conn = postgres::Connection::Open(DatabaseUrl(ctx, args->db));
                        auto created = server::CreateKey(conn, spec);
                        fmt::print("{}\n", created.secret);
                        std::fflush(stdout);  // the key before the note on stderr
                        fmt::print(stderr, "key {} ({} scope{}{}): shown once, keep it secret\n", created.info.id,
                                   server::ScopeName(created.info.scope),
                                   created.info.client ? ", client " + *created.info.client : "",
                                   created.info.expires_at ? ", expires " + *created.info.expires_at : "");
                        return 0;
                      }});

  auto* list = keys->add_subcommand("list", "List the keys (never their secrets)");
  list->add_option("--db", args->db, db_help);
  commands.push_back({list, [args](CliContext& ctx) {
                        auto conn = postgres::Connection::Open(DatabaseUrl(ctx, args->db));
                        PrintKeys(server::ListKeys(conn));
                        return 0;
                      }});

  auto* revoke = keys->add_subcommand("revoke", "Revoke a key: serving processes refuse it within a second");
  revoke->add_option("id", args->id, "The key's id (`keys list`)")->required();
  revoke->add_option("--db", args->db, db_help);
  commands.push_back({revoke, [args](CliContext& ctx) {
                        auto conn = postgres::Connection::Open(DatabaseUrl(ctx, args->db));
                        if (!server::RevokeKey(conn, args->id)) {
                          throw Error(ErrorCode::NotFound, fmt::format("no unrevoked key {}", args->id));
                        }
                        fmt::print("revoked key {}\n", args->id);
                        return 0;
                      }});
}

void AddGrantsCommand(CLI::App& root, std::vector<Command>& commands) {
  auto* grants = root.add_subcommand(
      "grants", "Print (or --apply) the GRANTs a non-superuser role needs to serve a migrated pipeline");
  struct GrantsArgs {
    std::string pipeline, role, db;
    bool apply = false;
  };
  auto args = std::make_shared<GrantsArgs>();
  grants->add_option("--pipeline", args->pipeline, "Pipeline file (TOML)")->required()->check(CLI::ExistingFile);
  grants->add_option("--role", args->role, "The role `runnel run` connects as")->required();
  grants->add_flag("--apply", args->apply, "Run the statements (as the tables' owner) instead of printing them");
  grants->add_option("--db", args->db, "libpq connection string (default: RUNNEL_DB_URL, else the embedded database)");
  commands.push_back({grants, [args](CliContext& ctx) {
                        auto config = pipeline::LoadPipelineConfig(args->pipeline);
                        auto conn = postgres::Connection::Open(DatabaseUrl(ctx, args->db));
                        if (args->apply) {
                          server::ApplyGrants(conn, config, args->role);
                          fmt::print("granted role {} what serving pipeline '{}' needs\n", args->role, config.name);
                          return 0;
                        }
                        for (const auto& statement : server::GrantStatements(conn, config, args->role)) {
                          fmt::print("{}\n", statement);
                        }
                        return 0;
                      }});
}

}  // namespace runnel::cli
