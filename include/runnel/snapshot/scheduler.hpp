// Snapshots on a schedule: `runnel run` takes a new version of each pipeline whose
// [snapshots] every is set once the newest is that old, then prunes to `keep`.
// Several processes serving one pipeline take turns: a PostgreSQL advisory lock per
// pipeline lets one of them write, and the newest version's age tells the others it
// is not due yet.
//
// Thread safety: constructed and destroyed on one thread; works on its own thread and
// its own connection. Errors are logged and retried at the next check, never thrown.
#pragma once

#include <condition_variable>
#include <string>
#include <thread>
#include <vector>

#include "runnel/core/mutex.hpp"
#include "runnel/pipeline/pipeline_config.hpp"

namespace runnel::postgres {
class Connection;
}

namespace runnel::snapshot {

class Scheduler {
 public:
  // `pipelines`: those with snapshots.every > 0 are taken; the others are ignored.
  Scheduler(std::string conninfo, std::vector<pipeline::PipelineConfig> pipelines);
  ~Scheduler();  // stops; a snapshot being written is finished first
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // Whether any pipeline has a schedule (else the scheduler has nothing to do).
  static bool AnyScheduled(const std::vector<pipeline::PipelineConfig>& pipelines);

 private:
  void Run();
  void TakeDue(postgres::Connection& conn);

  std::string conninfo_;
  std::vector<pipeline::PipelineConfig> pipelines_;
  Mutex mutex_;
  std::condition_variable_any wake_;
  bool stop_ GUARDED_BY(mutex_) = false;
  std::thread thread_;
};

}  // namespace runnel::snapshot
