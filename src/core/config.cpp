#include "runnel/core/config.hpp"

#include <fmt/format.h>
#include <fmt/std.h>

#include <toml++/toml.h>
#include <cstdlib>

#include "runnel/core/error.hpp"

namespace runnel {
namespace {

std::string Where(const std::filesystem::path& file, const toml::node& node) {
  const auto& src = node.source();
  return fmt::format("{}:{}:{}", file.string(), src.begin.line, src.begin.column);
}

template <typename T>
T Required(const std::filesystem::path& file, std::string_view key, const toml::node& node, std::string_view expected) {
  auto value = node.value<T>();
  if (!value) {
    throw Error(ErrorCode::Config, fmt::format("{}: '{}' must be {}", Where(file, node), key, expected));
  }
  return *value;
}

void ApplyFile(const std::filesystem::path& file, Config& config) {
  toml::table root;
  try {
    root = toml::parse_file(file.string());
  } catch (const toml::parse_error& e) {
    const auto& src = e.source();
    if (src.begin.line == 0) {
      throw Error(ErrorCode::Io, fmt::format("{}: {}", file.string(), e.description()));
    }
    throw Error(ErrorCode::Config,
                fmt::format("{}:{}:{}: {}", file.string(), src.begin.line, src.begin.column, e.description()));
  }
  for (const auto& [key, node] : root) {
    if (key == "log_level") {
      config.log_level = Required<std::string>(file, key.str(), node, "a string");
    } else if (key == "home") {
      config.home = Required<std::string>(file, key.str(), node, "a string");
    } else if (key == "db_url") {
      config.db_url = Required<std::string>(file, key.str(), node, "a string");
    } else if (key == "embedded") {
      const auto* table = node.as_table();
      if (table == nullptr) {
        throw Error(ErrorCode::Config, fmt::format("{}: 'embedded' must be a table", Where(file, node)));
      }
      for (const auto& [sub, sub_node] : *table) {
        if (sub == "port") {
          auto port = Required<int64_t>(file, "embedded.port", sub_node, "an integer");
          if (port < 0 || port > 65535) {
            throw Error(ErrorCode::Config,
                        fmt::format("{}: 'embedded.port' must be 0..65535, got {}", Where(file, sub_node), port));
          }
          config.embedded_port = static_cast<uint16_t>(port);
        } else if (sub == "bin_dir") {
          config.pg_bin_dir = Required<std::string>(file, "embedded.bin_dir", sub_node, "a string");
        } else {
          throw Error(ErrorCode::Config,
                      fmt::format("{}: unknown key 'embedded.{}'", Where(file, sub_node), sub.str()));
        }
      }
    } else {
      throw Error(ErrorCode::Config, fmt::format("{}: unknown key '{}'", Where(file, node), key.str()));
    }
  }
}

}  // namespace

std::optional<std::string> ProcessEnv(std::string_view name) {
  const char* value = std::getenv(std::string(name).c_str());
  if (value == nullptr || *value == '\0') return std::nullopt;
  return std::string(value);
}

std::filesystem::path DefaultHome(const EnvLookup& env, bool is_root) {
  if (is_root) return "/var/lib/runnel";
  if (auto xdg = env("XDG_DATA_HOME")) return std::filesystem::path(*xdg) / "runnel";
  if (auto home = env("HOME")) return std::filesystem::path(*home) / ".local/share/runnel";
  throw Error(ErrorCode::Config, "cannot choose a home directory: set RUNNEL_HOME or HOME");
}

Config LoadConfig(const std::optional<std::filesystem::path>& file, const EnvLookup& env, bool is_root) {
  Config config;
  std::optional<std::filesystem::path> path = file;
  if (!path) {
    if (auto from_env = env("RUNNEL_CONFIG")) path = *from_env;
  }
  if (path) {
    ApplyFile(*path, config);
    config.source = *path;
  }
  if (auto home = env("RUNNEL_HOME")) config.home = *home;
  if (auto url = env("RUNNEL_DB_URL")) config.db_url = *url;
  if (auto bin = env("RUNNEL_PG_BIN")) config.pg_bin_dir = *bin;
  if (auto level = env("RUNNEL_LOG_LEVEL")) config.log_level = *level;
  if (config.home.empty()) config.home = DefaultHome(env, is_root);
  return config;
}

}  // namespace runnel
