// Time as the registry client sees it: a monotonic clock for token lifetimes, wall-clock seconds
// for records and HTTP dates, and sleeping between retries. A seam so tests never sleep.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>

namespace imagefs::registry {

class Clock {
 public:
  virtual ~Clock() = default;
  [[nodiscard]] virtual std::chrono::steady_clock::time_point steady_now() const = 0;
  [[nodiscard]] virtual int64_t unix_now() const = 0;  // seconds since the epoch
  virtual void sleep_for(std::chrono::milliseconds duration) = 0;
};

// The real clocks and std::this_thread::sleep_for. Thread-safe; shared by everyone.
std::shared_ptr<Clock> system_clock();

}  // namespace imagefs::registry
