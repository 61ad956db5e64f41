// A mutex whose contract clang checks: members say which mutex guards them
// (GUARDED_BY), functions which mutex they need held (REQUIRES) or must not hold
// (EXCLUDES), and the clang build (-Wthread-safety, cmake/RunnelWarnings.cmake) refuses
// code that touches guarded state without it. Other compilers ignore the annotations.
// As in Abseil and LevelDB: std::mutex itself carries no annotations, hence the wrapper.
//
// Thread safety: Mutex is a mutex; MutexLock is used by one thread.
#pragma once

#include <condition_variable>
#include <mutex>

#if defined(__clang__)
#define RUNNEL_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define RUNNEL_THREAD_ANNOTATION(x)
#endif

#define CAPABILITY(x) RUNNEL_THREAD_ANNOTATION(capability(x))
#define SCOPED_CAPABILITY RUNNEL_THREAD_ANNOTATION(scoped_lockable)
#define GUARDED_BY(x) RUNNEL_THREAD_ANNOTATION(guarded_by(x))
#define PT_GUARDED_BY(x) RUNNEL_THREAD_ANNOTATION(pt_guarded_by(x))
#define REQUIRES(...) RUNNEL_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define EXCLUDES(...) RUNNEL_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#define ACQUIRE(...) RUNNEL_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define RELEASE(...) RUNNEL_THREAD_ANNOTATION(release_capability(__VA_ARGS__))

namespace runnel {

class CAPABILITY("mutex") Mutex {
 public:
  void Lock() ACQUIRE() { mutex_.lock(); }
  void Unlock() RELEASE() { mutex_.unlock(); }
  // For std::condition_variable_any (BasicLockable).
  void lock() ACQUIRE() { mutex_.lock(); }
  void unlock() RELEASE() { mutex_.unlock(); }

 private:
  std::mutex mutex_;
};

// Holds `mutex` for its scope. Wait() releases it while blocked, as a condition
// variable does, and holds it again on return.
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mutex) ACQUIRE(mutex) : mutex_(mutex) { mutex_.Lock(); }
  ~MutexLock() RELEASE() { mutex_.Unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

  // Blocks on `cv` (releasing the mutex meanwhile) until notified or `deadline`;
  // callers re-check their condition in a loop. Returns false on the deadline.
  template <class Clock, class Duration>
  bool WaitUntil(std::condition_variable_any& cv, const std::chrono::time_point<Clock, Duration>& deadline) {
    return cv.wait_until(mutex_, deadline) == std::cv_status::no_timeout;
  }
  void Wait(std::condition_variable_any& cv) { cv.wait(mutex_); }

 private:
  Mutex& mutex_;
};

}  // namespace runnel
