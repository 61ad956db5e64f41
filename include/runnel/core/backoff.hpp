// Retrying after failures: doubling waits, and sleeping that a stop request cuts short.
// Used by the loops that must ride out lost connections (workers, the model stream,
// the JetStream ingest and results publisher).
//
// Thread safety: a Backoff belongs to one loop; SleepUnlessStopped is reentrant.
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <thread>

namespace runnel {

// Doubling waits between retries, from 100 ms up to 5 s.
class Backoff {
 public:
  // The wait before the next retry; the one after is twice as long.
  std::chrono::milliseconds Next() {
    const auto now = wait_;
    wait_ = std::min(wait_ * 2, std::chrono::milliseconds(5000));
    return now;
  }
  // After a success: start again from 100 ms.
  void Reset() { wait_ = std::chrono::milliseconds(100); }

 private:
  std::chrono::milliseconds wait_{100};
};

// Sleeps up to `wait`, returning within 50 ms once `stopping` says so.
inline void SleepUnlessStopped(std::chrono::milliseconds wait, const std::function<bool()>& stopping) {
  const auto until = std::chrono::steady_clock::now() + wait;
  while (!stopping() && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::min(wait, std::chrono::milliseconds(50)));
  }
}

}  // namespace runnel
