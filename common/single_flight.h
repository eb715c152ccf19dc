// SingleFlight: concurrent callers asking for one key share one execution and its one outcome,
// failure included; a failure may be remembered for a short time so that a storm of calls for a
// key that just failed makes no new attempt.
//
// Used where many readers may wait on one slow thing (a registry lookup, a download, an archive
// build): N waiters of an unreachable registry wait through one timeout together, not N in turn.
//
// Contract:
// - run(key, fn) calls fn() unless a call for `key` is under way (then it waits for that call's
//   Result and returns a copy of it) or a failure of `key` ended less than `negative_ttl` ago
//   (then it returns that Error at once, without calling fn).
// - fn runs on the calling thread with no lock held; it may call run() for other keys (not for
//   its own key: that would wait for itself).
// - Bounded: an entry for a flight lives only while it runs; remembered failures are dropped when
//   they expire and capped at `max_remembered` (the oldest go first). Successes are not kept: the
//   caller caches values where it wants to.
// - An exception from fn ends the flight with an EIO error for the waiters, then propagates to
//   the caller that ran fn.
// Thread-safe. T must be copyable (waiters each get a copy).
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <utility>

#include "common/mutex.h"
#include "common/result.h"

namespace imagefs {

template <typename Key, typename T>
class SingleFlight {
 public:
  using Clock = std::chrono::steady_clock;

  struct Options {
    // How long a failure is returned to later callers without a new attempt; 0: not at all.
    std::chrono::milliseconds negative_ttl{0};
    // Most failures remembered at once.
    size_t max_remembered = 1024;
    // The clock (tests substitute one); empty: std::chrono::steady_clock.
    std::function<Clock::time_point()> now;
  };

  SingleFlight() : SingleFlight(Options{}) {}
  explicit SingleFlight(Options options) : options_(std::move(options)) {
    if (!options_.now) options_.now = [] { return Clock::now(); };
  }
  SingleFlight(const SingleFlight&) = delete;
  SingleFlight& operator=(const SingleFlight&) = delete;

  Result<T> run(const Key& key, const std::function<Result<T>()>& fn) EXCLUDES(mu_) {
    std::shared_ptr<Flight> flight;
    {
      MutexLock lock(mu_);
      if (auto it = failures_.find(key); it != failures_.end()) {
        if (options_.now() < it->second.until) return it->second.error;
        failures_.erase(it);
      }
      if (auto it = flights_.find(key); it != flights_.end()) {
        std::shared_ptr<Flight> shared = it->second;  // outlives the map entry
        ++shared->waiters;
        while (!shared->result) done_.wait(mu_);
        return *shared->result;
      }
      flight = std::make_shared<Flight>();
      flights_.emplace(key, flight);
    }
    std::optional<Result<T>> result;
    try {
      result.emplace(fn());
    } catch (...) {
      finish(key, flight, Result<T>(make_error(EIO, "unexpected internal error")));
      throw;
    }
    finish(key, flight, *result);
    return std::move(*result);
  }

  // Drops a remembered failure of `key` (the next run() tries again).
  void forget(const Key& key) EXCLUDES(mu_) {
    MutexLock lock(mu_);
    failures_.erase(key);
  }

  // For tests and status: calls under way, failures remembered (expired ones included until the
  // next insertion or lookup drops them).
  size_t in_flight() const EXCLUDES(mu_) {
    MutexLock lock(mu_);
    return flights_.size();
  }
  size_t remembered() const EXCLUDES(mu_) {
    MutexLock lock(mu_);
    return failures_.size();
  }
  // Callers waiting for the call under way for `key` (0 when none runs).
  size_t waiting(const Key& key) const EXCLUDES(mu_) {
    MutexLock lock(mu_);
    auto it = flights_.find(key);
    return it == flights_.end() ? 0 : it->second->waiters;
  }

 private:
  struct Flight {
    std::optional<Result<T>> result;  // set once, when the call ends
    size_t waiters = 0;
  };
  struct Failure {
    Clock::time_point until;
    Error error;
  };

  void finish(const Key& key, const std::shared_ptr<Flight>& flight, const Result<T>& result)
      EXCLUDES(mu_) {
    MutexLock lock(mu_);
    flight->result.emplace(result);
    flights_.erase(key);
    if (!result.ok() && options_.negative_ttl.count() > 0 && options_.max_remembered > 0)
      remember(key, result.error());
    done_.notify_all();
  }

  void remember(const Key& key, const Error& error) REQUIRES(mu_) {
    Clock::time_point now = options_.now();
    if (failures_.size() >= options_.max_remembered && !failures_.contains(key)) {
      for (auto it = failures_.begin(); it != failures_.end();)
        it = it->second.until <= now ? failures_.erase(it) : std::next(it);
      while (failures_.size() >= options_.max_remembered) {
        auto oldest = failures_.begin();
        for (auto it = failures_.begin(); it != failures_.end(); ++it)
          if (it->second.until < oldest->second.until) oldest = it;
        failures_.erase(oldest);
      }
    }
    failures_.insert_or_assign(key, Failure{now + options_.negative_ttl, error});
  }

  Options options_;
  mutable Mutex mu_;
  std::condition_variable_any done_;
  std::map<Key, std::shared_ptr<Flight>> flights_ GUARDED_BY(mu_);
  std::map<Key, Failure> failures_ GUARDED_BY(mu_);
};

}  // namespace imagefs
