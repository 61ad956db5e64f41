#include "runnel/server/completion.hpp"

namespace runnel::server {

std::shared_ptr<CompletionHub::Waiter> CompletionHub::Watch(std::span<const int64_t> keys) {
  auto waiter = std::make_shared<Waiter>();
  {
    MutexLock lock(waiter->mutex_);
    waiter->pending_.insert(keys.begin(), keys.end());
  }
  MutexLock lock(mutex_);
  for (int64_t key : keys) waiting_.emplace(key, waiter);
  return waiter;
}

void CompletionHub::Complete(std::span<const int64_t> keys) {
  std::vector<std::pair<int64_t, std::shared_ptr<Waiter>>> hits;
  {
    MutexLock lock(mutex_);
    if (waiting_.empty()) return;
    for (int64_t key : keys) {
      auto [first, last] = waiting_.equal_range(key);
      for (auto it = first; it != last; ++it) hits.emplace_back(key, it->second);
    }
  }
  for (auto& [key, waiter] : hits) waiter->Satisfy(std::span<const int64_t>(&key, 1));
}

void CompletionHub::Forget(const std::shared_ptr<Waiter>& waiter, std::span<const int64_t> keys) {
  MutexLock lock(mutex_);
  for (int64_t key : keys) {
    auto [first, last] = waiting_.equal_range(key);
    for (auto it = first; it != last; ++it) {
      if (it->second == waiter) {
        waiting_.erase(it);
        break;
      }
    }
  }
}

void CompletionHub::Waiter::Satisfy(std::span<const int64_t> keys) {
  MutexLock lock(mutex_);
  for (int64_t key : keys) pending_.erase(key);
  if (pending_.empty()) cv_.notify_all();
}

bool CompletionHub::Waiter::WaitUntil(std::chrono::steady_clock::time_point until) {
  MutexLock lock(mutex_);
  while (!pending_.empty()) {
    if (!lock.WaitUntil(cv_, until)) return pending_.empty();
  }
  return true;
}

std::vector<int64_t> CompletionHub::Waiter::Pending() {
  MutexLock lock(mutex_);
  return {pending_.begin(), pending_.end()};
}

}  // namespace runnel::server
