#include "runnel/snapshot/scheduler.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>

#include "runnel/core/error.hpp"
#include "runnel/core/thread_name.hpp"
#include "runnel/postgres/connection.hpp"
#include "runnel/snapshot/snapshot.hpp"

namespace runnel::snapshot {

namespace {

constexpr auto kCheckEvery = std::chrono::seconds(1);

// Whether the newest version is at least `every` old (or there is none).
bool Due(const SnapshotStore& store, std::chrono::seconds every) {
  const auto versions = store.List();
  return versions.empty() || std::chrono::system_clock::now() - versions.back().created >= every;
}

}  // namespace

bool Scheduler::AnyScheduled(const std::vector<pipeline::PipelineConfig>& pipelines) {
  return std::any_of(pipelines.begin(), pipelines.end(), [](const auto& p) { return p.snapshots.every.count() > 0; });
}

Scheduler::Scheduler(std::string conninfo, std::vector<pipeline::PipelineConfig> pipelines)
    : conninfo_(std::move(conninfo)) {
  for (auto& p : pipelines) {
    if (p.snapshots.every.count() > 0) pipelines_.push_back(std::move(p));
  }
  thread_ = std::thread([this] {
    NameThisThread("snapshots");
    Run();
  });
}

Scheduler::~Scheduler() {
  {
    MutexLock lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Scheduler::TakeDue(postgres::Connection& conn) {
  for (const auto& config : pipelines_) {
    const SnapshotStore store(config.snapshots.dir, config.name);
    if (!Due(store, config.snapshots.every)) continue;
    const std::string lock = postgres::QuoteLiteral("runnel_snapshot:" + config.name);
    auto held = conn.Exec(fmt::format("SELECT pg_try_advisory_lock(hashtext({}))", lock));
    if (held.Get<std::string>(0, 0) != "t") continue;  // another process is taking it
    try {
      // Looked at again under the lock: another process may have just published one.
      if (Due(store, config.snapshots.every)) {
        const auto outcome = store.Create(conn, config);
        spdlog::info("snapshot {} v{}: {} results, {:.1f} MB in {} ms", config.name, outcome.info.version,
                     outcome.rows.count("results") ? outcome.rows.at("results") : 0,
                     static_cast<double>(outcome.info.bytes) / 1e6, outcome.took.count());
        for (int64_t removed : store.Prune(config.snapshots.keep)) {
          spdlog::info("snapshot {} v{}: removed (keeping {})", config.name, removed, config.snapshots.keep);
        }
      }
    } catch (...) {
      try {
        conn.Exec(fmt::format("SELECT pg_advisory_unlock(hashtext({}))", lock));
      } catch (const Error&) {  // the connection broke: the session's lock went with it
      }
      throw;
    }
    conn.Exec(fmt::format("SELECT pg_advisory_unlock(hashtext({}))", lock));
  }
}

void Scheduler::Run() {
  std::unique_ptr<postgres::Connection> conn;
  auto backoff = kCheckEvery;
  for (;;) {
    {
      MutexLock lock(mutex_);
      const auto until = std::chrono::steady_clock::now() + backoff;
      while (!stop_ && lock.WaitUntil(wake_, until)) {
      }
      if (stop_) return;
    }
    try {
      if (!conn || !conn->IsAlive()) {
        conn = std::make_unique<postgres::Connection>(postgres::Connection::Open(conninfo_));
      }
      TakeDue(*conn);
      backoff = kCheckEvery;
    } catch (const Error& e) {
      // A full disk or a broken connection: said once per attempt, tried again later.
      spdlog::warn("snapshots: {}", e.what());
      conn.reset();
      backoff = std::min<std::chrono::seconds>(backoff * 2, std::chrono::seconds(60));
    }
  }
}

}  // namespace runnel::snapshot
