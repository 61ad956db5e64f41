#include "runnel/registry/model_stream.hpp"

#include <poll.h>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "runnel/core/backoff.hpp"
#include "runnel/core/error.hpp"
#include "runnel/core/file.hpp"
#include "runnel/core/thread_name.hpp"
#include "runnel/features/features.hpp"
#include "runnel/model/model.hpp"
#include "runnel/pipeline/outputs.hpp"
#include "runnel/registry/registry.hpp"

namespace runnel::registry {

using postgres::Params;

ModelStream::ModelStream(const pipeline::PipelineConfig& config, std::string conninfo,
                         std::shared_ptr<pipeline::ModelProvider> provider, ModelStreamOptions options)
    : config_(config),
      load_options_(pipeline::ModelLoadOptions(config_)),
      conninfo_(std::move(conninfo)),
      provider_(std::move(provider)),
      options_(std::move(options)),
      process_(ProcessId()),
      program_(features::FeatureProgram::Compile(config_.features, config_.file.string())) {}

ModelStream::~ModelStream() {
  Stop();
}

// The following thread's name, and its session's.
std::string ModelStream::ThreadName() const {
  return "models:" + config_.name;
}

// Opened by Start's caller at first, then by the following thread: named for the latter.
std::unique_ptr<postgres::Connection> ModelStream::Open() const {
  return std::make_unique<postgres::Connection>(postgres::Connection::Open(conninfo_, ThreadName()));
}

void ModelStream::Start() {
  conn_ = Open();
  MigrateRegistry(*conn_);
  conn_->Exec("LISTEN runnel_models");
  if (config_.model_path) {
    const std::string bytes = ReadFileBytes(*config_.model_path, "the model file");
    PushRequest seed;
    seed.name = config_.model_name;
    seed.bytes = bytes;
    seed.description = fmt::format("seeded from {}", config_.model_path->filename().string());
    if (auto added = PushIfEmpty(*conn_, seed)) {
      if (options_.log)
        options_.log(fmt::format("registry: seeded model '{}' v{} from {}", seed.name, added->version,
                                 config_.model_path->string()));
    }
  }
  Refresh();
  ReportState();
}

void ModelStream::Follow() {
  if (thread_.joinable()) return;
  stop_.store(false);
  thread_ = std::thread([this] {
    NameThisThread(ThreadName());
    Run();
  });
}

void ModelStream::Stop() {
  stop_.store(true);
  if (!thread_.joinable()) return;
  thread_.join();
  // This process no longer serves: its model state goes (a process that dies instead
  // drops out once its heartbeat is stale).
  try {
    // The follower may have dropped its connection (a database restart) and not yet
    // made a new one.
    if (!conn_ || !conn_->IsOpen()) conn_ = Open();
    registry::ReportState(*conn_, process_, config_.name, {});
  } catch (const std::exception& e) {
    if (options_.log)
      options_.log(fmt::format("registry: could not withdraw this process's model state: {}", e.what()));
  }
}

std::shared_ptr<const pipeline::ServingModel> ModelStream::Validate(postgres::Connection& conn, ModelStatus status,
                                                                    int64_t version,
                                                                    const std::optional<std::string>& data_type,
                                                                    const std::string& description) {
  const std::string label = fmt::format("{}@v{}", config_.model_name, version);
  const std::string source = fmt::format("model '{}' v{}", config_.model_name, version);
  std::string bytes = FetchBytes(conn, config_.model_name, version);
  try {
    auto model = model::LoadModelFromBytes(bytes, source, label, load_options_);
    pipeline::OutputPlan::Resolve(config_, program_, *model);  // throws when it does not fit
    if (status == ModelStatus::kPending) {
      SetValidated(conn, config_.model_name, version, true, model::ModelFormatName(model->info().format), "");
    }
    auto serving = std::make_shared<pipeline::ServingModel>();
    serving->model = std::move(model);
    serving->name = config_.model_name;
    serving->version = version;
    serving->data_type = data_type;
    serving->description = description;
    return serving;
  } catch (const postgres::DatabaseError&) {
    throw;
  } catch (const Error& e) {
    if (status == ModelStatus::kPending) {
      SetValidated(conn, config_.model_name, version, false, "", e.what());
      // Warn level: visible with --log-level warn, like every failure.
      spdlog::warn("registry: rejected {}: {}", label, e.what());
    } else {
      // Ready elsewhere, unusable here (a different pipeline file?): skip it, loudly.
      spdlog::warn("registry: cannot serve {} here: {}", label, e.what());
    }
    return nullptr;
  }
}

bool ModelStream::Refresh() {
  if (!conn_ || !conn_->IsOpen()) {
    conn_ = Open();
    conn_->Exec("LISTEN runnel_models");
  }
  auto& conn = *conn_;
  auto rows = conn.Exec(
      "SELECT version, data_type, status, description FROM runnel_models "
      "WHERE name = $1 AND status IN ('pending', 'ready') ORDER BY version DESC",
      Params().Add(config_.model_name));
  const bool keyed = !config_.model_type_column.empty();
  // Per data type (nullopt: the default model), the newest version that loads.
  std::map<std::optional<std::string>, std::shared_ptr<const pipeline::ServingModel>> chosen;
  std::map<std::optional<std::string>, bool> settled;
  for (int r = 0; r < rows.rows(); ++r) {
    const auto version = rows.Get<int64_t>(r, "version");
    const auto data_type = rows.GetOptional<std::string>(r, "data_type");
    if (data_type && !keyed) continue;  // typed models serve keyed pipelines only
    if (settled[data_type]) continue;
    std::shared_ptr<const pipeline::ServingModel> serving;
    if (auto it = loaded_.find(version); it != loaded_.end()) {
      serving = it->second;
    } else {
      serving = Validate(conn, ParseModelStatus(rows.Get<std::string>(r, "status")), version, data_type,
                         rows.Get<std::string>(r, "description"));
    }
    if (serving) {
      chosen[data_type] = std::move(serving);
      settled[data_type] = true;
    }
  }

  std::map<int64_t, std::shared_ptr<const pipeline::ServingModel>> next;
  auto set = std::make_shared<pipeline::ModelSet>();
  for (auto& [type, serving] : chosen) {
    next[serving->version] = serving;
    if (type) {
      set->by_type[*type] = serving;
    } else {
      set->default_model = serving;
    }
  }
  bool changed = next.size() != loaded_.size();
  for (const auto& [version, serving] : next) changed = changed || !loaded_.contains(version);
  if (!changed) return false;
  loaded_ = std::move(next);
  provider_->Publish(std::move(set));
  if (options_.log) {
    std::string serving;
    for (const auto& [version, model] : loaded_) {
      serving += fmt::format("{}{}{}", serving.empty() ? "" : ", ", model->label(),
                             model->data_type ? " for data type " + *model->data_type : "");
    }
    options_.log(serving.empty() ? fmt::format("registry: model '{}' has no usable version", config_.model_name)
                                 : fmt::format("registry: serving {}", serving));
  }
  return true;
}

void ModelStream::ReportState() {
  if (!conn_ || !conn_->IsOpen()) return;
  std::vector<LoadedState> states;
  for (const auto& [version, serving] : loaded_) {
    LoadedState s;
    s.name = serving->name;
    s.version = version;
    s.data_type = serving->data_type;
    s.loaded_at = std::chrono::duration<double>(serving->loaded_at.time_since_epoch()).count();
    const auto& stats = *serving->stats;
    s.invocations = stats.invocations.load();
    s.rows = stats.rows.load();
    s.total_ms = static_cast<double>(stats.total_ns.load()) / 1e6;
    s.min_ms = s.invocations > 0 ? static_cast<double>(stats.min_ns.load()) / 1e6 : 0.0;
    s.max_ms = static_cast<double>(stats.max_ns.load()) / 1e6;
    states.push_back(std::move(s));
  }
  registry::ReportState(*conn_, process_, config_.name, states);
}

void ModelStream::Run() {
  auto last_poll = std::chrono::steady_clock::now();
  auto last_report = last_poll;
  Backoff backoff;
  while (!stop_.load()) {
    try {
      if (!conn_ || !conn_->IsOpen()) {
        Refresh();  // reconnects; a notification may have been missed meanwhile
        last_poll = std::chrono::steady_clock::now();
      }
      PGconn* raw = conn_->raw();
      pollfd p{PQsocket(raw), POLLIN, 0};
      ::poll(&p, 1, 100);
      if (PQconsumeInput(raw) == 0) throw postgres::DatabaseError(PQerrorMessage(raw), "08006");
      bool notified = false;
      while (PGnotify* n = PQnotifies(raw)) {
        notified = true;
        PQfreemem(n);
      }
      const auto now = std::chrono::steady_clock::now();
      if (notified || now - last_poll >= options_.poll) {
        Refresh();
        last_poll = now;
      }
      if (now - last_report >= options_.heartbeat) {
        ReportState();
        last_report = now;
      }
      backoff.Reset();
    } catch (const Error& e) {
      const auto wait = backoff.Next();
      spdlog::warn("model stream: {}; retrying in {} ms", e.what(), wait.count());
      conn_.reset();
      SleepUnlessStopped(wait, [this] { return stop_.load(); });
    }
  }
}

}  // namespace runnel::registry
