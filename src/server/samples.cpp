#include "runnel/server/samples.hpp"

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>
#include <map>

#include "runnel/core/error.hpp"
#include "runnel/core/thread_name.hpp"
#include "runnel/postgres/sqlstate.hpp"

namespace runnel::server {

using postgres::Params;

void Sample::Add(const Sample& other) {
  done += other.done;
  throttled += other.throttled;
  failed += other.failed;
  batches += other.batches;
  if (latency.size() < other.latency.size()) latency.resize(other.latency.size());
  for (size_t i = 0; i < other.latency.size(); ++i) latency[i] += other.latency[i];
  for (size_t k = 0; k < stage_seconds.size(); ++k) stage_seconds[k] += other.stage_seconds[k];
}

Sample Difference(const MetricsSnapshot& now, const MetricsSnapshot& before, int64_t at) {
  Sample s;
  s.at = at;
  s.done = now.done - before.done;
  s.throttled = now.throttled - before.throttled;
  s.failed = now.failed - before.failed;
  s.batches = now.batches - before.batches;
  s.latency = now.latency;
  for (size_t i = 0; i < s.latency.size() && i < before.latency.size(); ++i) s.latency[i] -= before.latency[i];
  for (size_t k = 0; k < s.stage_seconds.size(); ++k)
    s.stage_seconds[k] = now.stage_seconds[k] - before.stage_seconds[k];
  return s;
}

std::vector<Sample> MergeByTime(std::vector<Sample> samples) {
  std::map<int64_t, Sample> by_second;
  for (auto& s : samples) {
    auto [it, added] = by_second.try_emplace(s.at, std::move(s));
    if (!added) it->second.Add(s);
  }
  std::vector<Sample> out;
  out.reserve(by_second.size());
  for (auto& [at, s] : by_second) out.push_back(std::move(s));
  return out;
}

std::optional<double> Quantile(const std::vector<double>& bounds, const std::vector<int64_t>& counts, double q) {
  int64_t total = 0;
  for (const int64_t c : counts) total += c;
  if (total <= 0 || counts.size() != bounds.size() + 1) return std::nullopt;
  const double rank = std::clamp(q, 0.0, 1.0) * static_cast<double>(total);
  int64_t below = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] > 0 && static_cast<double>(below + counts[i]) >= rank) {
      const double lower = i == 0 ? 0.0 : bounds[i - 1];
      if (i == bounds.size()) return lower;  // +Inf: nothing to interpolate towards
      const double within = (rank - static_cast<double>(below)) / static_cast<double>(counts[i]);
      return lower + (bounds[i] - lower) * within;
    }
    below += counts[i];
  }
  return bounds.empty() ? 0.0 : bounds.back();
}

bool MigrateSamples(postgres::Connection& conn) {
  try {
    // Processes starting together: CREATE ... IF NOT EXISTS alone races (one of them
    // fails on the table's type), so they take the migration lock in turn.
    postgres::Transaction tx(conn);
    postgres::LockMigrations(conn);
    conn.Exec(
        "CREATE TABLE IF NOT EXISTS runnel_samples (pipeline text NOT NULL, process text NOT NULL, "
        "at timestamptz NOT NULL, done bigint NOT NULL, throttled bigint NOT NULL, failed bigint NOT NULL, "
        "batches bigint NOT NULL, latency bigint[] NOT NULL, stage_seconds float8[] NOT NULL, "
        "PRIMARY KEY (pipeline, at, process))");
    tx.Commit();
    return true;
  } catch (const postgres::DatabaseError& e) {
    // A serving role without the right to create uses the table its owner set up, if any.
    if (e.sqlstate() != postgres::kInsufficientPrivilege) throw;
    return postgres::TableExists(conn, "runnel_samples");
  }
}

void WriteSample(postgres::Connection& conn, std::string_view pipeline, std::string_view process, const Sample& s) {
  std::vector<std::optional<double>> stages(s.stage_seconds.begin(), s.stage_seconds.end());
  // The same second twice (a clock step back): added up, element by element.
  conn.Exec(
      "INSERT INTO runnel_samples AS o VALUES ($1, $2, to_timestamp($3::float8), $4, $5, $6, $7, $8, $9) "
      "ON CONFLICT (pipeline, at, process) DO UPDATE SET done = o.done + EXCLUDED.done, "
      "throttled = o.throttled + EXCLUDED.throttled, failed = o.failed + EXCLUDED.failed, "
      "batches = o.batches + EXCLUDED.batches, "
      "latency = ARRAY(SELECT coalesce(a, 0) + coalesce(b, 0) FROM unnest(o.latency, EXCLUDED.latency) AS u(a, b)), "
      "stage_seconds = ARRAY(SELECT coalesce(a, 0) + coalesce(b, 0) "
      "FROM unnest(o.stage_seconds, EXCLUDED.stage_seconds) AS u(a, b))",
      Params()
          .Add(std::string(pipeline))
          .Add(std::string(process))
          .Add(s.at)
          .Add(s.done)
          .Add(s.throttled)
          .Add(s.failed)
          .Add(s.batches)
          .AddArray(s.latency)
          .AddArray(stages));
}

void PruneSamples(postgres::Connection& conn) {
  conn.Exec(fmt::format("DELETE FROM runnel_samples WHERE at < clock_timestamp() - interval '{} seconds'",
                        kSampleHorizon.count()));
}

namespace {

constexpr std::string_view kReadSamplesSql =
    "SELECT extract(epoch FROM at)::bigint AS at, done, throttled, failed, batches, "
    "array_to_string(latency, ',') AS latency, array_to_string(stage_seconds, ',') AS stage_seconds "
    "FROM runnel_samples WHERE pipeline = $1 AND at > clock_timestamp() - make_interval(secs => $2)";

// "1,2,3" -> {1, 2, 3}; a field that does not parse is 0 (the table is ours).
template <typename T>
std::vector<T> SplitNumbers(std::string_view text) {
  std::vector<T> out;
  while (!text.empty()) {
    const size_t comma = std::min(text.find(','), text.size());
    T value{};
    std::from_chars(text.data(), text.data() + comma, value);
    out.push_back(value);
    text.remove_prefix(std::min(comma + 1, text.size()));
  }
  return out;
}

}  // namespace

std::vector<Sample> ReadSamples(postgres::Connection& conn, std::string_view pipeline, std::chrono::seconds window) {
  if (!postgres::TableExists(conn, "runnel_samples")) return {};  // not migrated yet (MigrateSamples)
  const auto seconds = std::min(window, kSampleHorizon).count();
  auto r = conn.Exec(kReadSamplesSql, Params().Add(std::string(pipeline)).Add(static_cast<int64_t>(seconds)));
  const int at = r.ColumnIndex("at"), done = r.ColumnIndex("done"), throttled = r.ColumnIndex("throttled"),
            failed = r.ColumnIndex("failed"), batches = r.ColumnIndex("batches"), latency = r.ColumnIndex("latency"),
            stages = r.ColumnIndex("stage_seconds");
  std::vector<Sample> samples;
  for (int i = 0; i < r.rows(); ++i) {
    Sample s;
    s.at = r.Get<int64_t>(i, at);
    s.done = r.Get<int64_t>(i, done);
    s.throttled = r.Get<int64_t>(i, throttled);
    s.failed = r.Get<int64_t>(i, failed);
    s.batches = r.Get<int64_t>(i, batches);
    s.latency = SplitNumbers<int64_t>(r.Get<std::string>(i, latency));
    const auto stage_seconds = SplitNumbers<double>(r.Get<std::string>(i, stages));
    for (size_t k = 0; k < s.stage_seconds.size() && k < stage_seconds.size(); ++k)
      s.stage_seconds[k] = stage_seconds[k];
    samples.push_back(std::move(s));
  }
  return MergeByTime(std::move(samples));
}

Sampler::Sampler(std::string conninfo, std::vector<const PipelineMetrics*> metrics, std::string process)
    : conninfo_(std::move(conninfo)), metrics_(std::move(metrics)), process_(std::move(process)) {
  for (const auto* m : metrics_) written_.push_back(m->Snapshot());
  thread_ = std::thread([this] {
    NameThisThread("sampler");
    Run();
  });
}

Sampler::~Sampler() {
  {
    MutexLock lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Sampler::SampleOnce(postgres::Connection& conn, int64_t at) {
  for (size_t i = 0; i < metrics_.size(); ++i) {
    const MetricsSnapshot now = metrics_[i]->Snapshot();
    const Sample s = Difference(now, written_[i], at);
    if (s.batches == 0) continue;  // a quiet second: nothing to store
    WriteSample(conn, metrics_[i]->pipeline(), process_, s);
    written_[i] = now;
  }
}

void Sampler::Run() {
  std::unique_ptr<postgres::Connection> conn;
  auto next = std::chrono::system_clock::now();
  auto last_prune = std::chrono::steady_clock::time_point{};
  for (;;) {
    next += std::chrono::seconds(1);
    {
      MutexLock lock(mutex_);
      while (!stop_ && lock.WaitUntil(wake_, next)) {
      }
      if (stop_) return;
    }
    const int64_t at = std::chrono::duration_cast<std::chrono::seconds>(next.time_since_epoch()).count() - 1;
    try {
      if (!conn) conn = std::make_unique<postgres::Connection>(postgres::Connection::Open(conninfo_));
      SampleOnce(*conn, at);
      if (std::chrono::steady_clock::now() - last_prune > std::chrono::minutes(1)) {
        PruneSamples(*conn);
        last_prune = std::chrono::steady_clock::now();
      }
    } catch (const Error& e) {
      spdlog::debug("samples: {}", e.what());
      conn.reset();  // reconnect next second
    }
    const auto now = std::chrono::system_clock::now();
    if (next < now - std::chrono::seconds(5)) next = now;  // asleep or stalled: no burst of catch-up samples
  }
}

}  // namespace runnel::server
