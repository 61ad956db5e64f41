// Runnel's process configuration: defaults, then a TOML file, then the environment,
// then command-line flags (applied by the CLI). Pipelines have their own file format,
// see pipeline/; this is only what every command shares.
//
// File format (all keys optional):
//   log_level = "info"                 # trace|debug|info|warn|error|critical|off
//   home      = "/var/lib/runnel"      # RUNNEL_HOME: state, embedded cluster
//   db_url    = "postgresql://..."     # RUNNEL_DB_URL: empty means the embedded cluster
//   [embedded]
//   port      = 0                      # 0: keep the last port or pick a free one
//   bin_dir   = "/usr/lib/postgresql/15/bin"   # RUNNEL_PG_BIN: empty means discover
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace runnel {

// Looks up an environment variable; injectable so tests need not touch the real one.
using EnvLookup = std::function<std::optional<std::string>(std::string_view name)>;

// The process environment (std::getenv). Empty values count as unset.
std::optional<std::string> ProcessEnv(std::string_view name);

struct Config {
  std::string log_level = "info";
  std::filesystem::path home;  // never empty after LoadConfig
  std::string db_url;          // empty: use the embedded cluster under home/pg
  uint16_t embedded_port = 0;
  std::filesystem::path pg_bin_dir;  // empty: discover /usr/lib/postgresql/*/bin
  std::filesystem::path source;      // the file read, empty when none

  std::filesystem::path EmbeddedClusterDir() const { return home / "pg"; }
};

// Default RUNNEL_HOME: $XDG_DATA_HOME/runnel, else ~/.local/share/runnel. For root it
// is /var/lib/runnel, because the embedded server then runs as an unprivileged user
// that cannot enter /root.
std::filesystem::path DefaultHome(const EnvLookup& env, bool is_root);

// Builds the configuration. `file` (from --config) wins over $RUNNEL_CONFIG; with
// neither, no file is read. Throws Error(Config) naming the file, line and key for a
// syntax error, an unknown key or a value of the wrong type; Error(Io) when the file
// cannot be read.
Config LoadConfig(const std::optional<std::filesystem::path>& file, const EnvLookup& env, bool is_root);

}  // namespace runnel
