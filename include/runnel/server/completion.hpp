// Wakes HTTP requests that wait (?wait=MS) for their results: workers of this process
// report each committed batch's keys; waiters sleep until all of theirs came by or
// their deadline passes. Keys served by another process never come by here, so
// waiters also re-check the database now and then (see the API's wait loop).
//
// Thread safety: every member may be called from any thread.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <span>
#include <unordered_map>
#include <vector>

#include "runnel/core/mutex.hpp"

namespace runnel::server {

class CompletionHub {
 public:
  class Waiter;

  // Registers interest in `keys`; call before checking the database, so that a
  // completion between the check and the wait is not missed.
  std::shared_ptr<Waiter> Watch(std::span<const int64_t> keys);
  // Workers: these keys' results are committed.
  void Complete(std::span<const int64_t> keys);

  class Waiter {
   public:
    // Marks keys done that the caller found complete in the database.
    void Satisfy(std::span<const int64_t> keys);
    // Waits until every key is done or `until`; returns whether all are done.
    bool WaitUntil(std::chrono::steady_clock::time_point until);
    std::vector<int64_t> Pending();

   private:
    friend class CompletionHub;
    Mutex mutex_;
    std::condition_variable_any cv_;
    std::set<int64_t> pending_ GUARDED_BY(mutex_);
  };

  // Stops watching (the waiter's destructor does not: call this when done).
  void Forget(const std::shared_ptr<Waiter>& waiter, std::span<const int64_t> keys);

 private:
  Mutex mutex_;
  std::unordered_multimap<int64_t, std::shared_ptr<Waiter>> waiting_ GUARDED_BY(mutex_);
};

}  // namespace runnel::server
