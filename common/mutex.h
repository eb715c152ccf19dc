// A std::mutex that clang's -Wthread-safety understands, and the annotations for the data it
// guards. libstdc++'s std::mutex carries no capability attributes, so GUARDED_BY on a plain
// std::mutex would check nothing; this wrapper makes the analysis real under clang.
// Shared by every module that guards mutable state (conventions: one mutex per mutable map).
#pragma once

#include <mutex>

#if defined(__clang__)
#define IMAGEFS_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define IMAGEFS_THREAD_ANNOTATION(x)
#endif

#define CAPABILITY(x) IMAGEFS_THREAD_ANNOTATION(capability(x))
#define SCOPED_CAPABILITY IMAGEFS_THREAD_ANNOTATION(scoped_lockable)
#define GUARDED_BY(x) IMAGEFS_THREAD_ANNOTATION(guarded_by(x))
#define ACQUIRE(...) IMAGEFS_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#define RELEASE(...) IMAGEFS_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#define REQUIRES(...) IMAGEFS_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#define EXCLUDES(...) IMAGEFS_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))

namespace imagefs {

class CAPABILITY("mutex") Mutex {
 public:
  void lock() ACQUIRE() { mu_.lock(); }
  void unlock() RELEASE() { mu_.unlock(); }

 private:
  std::mutex mu_;
};

// Holds a Mutex for the lifetime of the scope.
class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~MutexLock() RELEASE() { mu_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& mu_;
};

}  // namespace imagefs
