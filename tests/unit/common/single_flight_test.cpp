// SingleFlight (common/single_flight.h): one execution per key shared by concurrent callers,
// failures shared and briefly remembered, and the tables bounded.
#include "common/single_flight.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace imagefs {
namespace {

using namespace std::chrono_literals;
using Flight = SingleFlight<std::string, int>;

// A manual clock for the negative TTL.
struct TestClock {
  std::atomic<int64_t> ms{0};
  Flight::Clock::time_point now() const {
    return Flight::Clock::time_point(std::chrono::milliseconds(ms.load()));
  }
};

// Blocks the running call until released, so that other callers pile up behind it.
struct Gate {
  std::atomic<bool> open{false};
  void wait() const {
    while (!open.load()) std::this_thread::sleep_for(1ms);
  }
};

void wait_for_waiters(const Flight& flight, const std::string& key, size_t n) {
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (flight.waiting(key) < n) {
    ASSERT_LT(std::chrono::steady_clock::now(), deadline) << "waiters never arrived";
    std::this_thread::sleep_for(1ms);
  }
}

// Runs `n` callers of flight.run(key, fn) at once; the first one's fn waits on the gate until
// the others are waiting. Returns each caller's result.
std::vector<Result<int>> concurrent_calls(Flight& flight, const std::string& key, size_t n,
                                          const std::function<Result<int>()>& fn, Gate& gate) {
  std::vector<std::optional<Result<int>>> results(n);
  std::vector<std::thread> threads;
  threads.emplace_back([&] { results[0].emplace(flight.run(key, fn)); });
  while (flight.in_flight() == 0) std::this_thread::sleep_for(1ms);
  for (size_t i = 1; i < n; ++i)
    threads.emplace_back([&, i] { results[i].emplace(flight.run(key, fn)); });
  wait_for_waiters(flight, key, n - 1);
  gate.open = true;
  for (auto& t : threads) t.join();
  std::vector<Result<int>> out;
  for (auto& r : results) out.push_back(std::move(*r));
  return out;
}

TEST(SingleFlightTest, ConcurrentCallersShareOneExecutionAndItsValue) {
  Flight flight;
  Gate gate;
  std::atomic<int> calls{0};
  auto results = concurrent_calls(
      flight, "tag", 8,
      [&]() -> Result<int> {
        gate.wait();
        return 40 + ++calls;
      },
      gate);
  EXPECT_EQ(calls.load(), 1);
  for (const auto& r : results) {
    ASSERT_TRUE(r.ok());
    EXPECT_EQ(*r, 41);
  }
  EXPECT_EQ(flight.in_flight(), 0u);
  EXPECT_EQ(flight.remembered(), 0u) << "successes are not kept";
  // The flight is over: the next call runs again.
  EXPECT_EQ(*flight.run("tag", [&]() -> Result<int> { return 40 + ++calls; }), 42);
}

TEST(SingleFlightTest, ConcurrentCallersShareOneFailure) {
  Flight flight;  // no negative TTL
  Gate gate;
  std::atomic<int> calls{0};
  auto results = concurrent_calls(
      flight, "tag", 6,
      [&]() -> Result<int> {
        gate.wait();
        ++calls;
        return make_error(EIO, "registry r did not answer within 30 s");
      },
      gate);
  EXPECT_EQ(calls.load(), 1) << "six waiters of a failing call must wait through one attempt";
  for (const auto& r : results) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, EIO);
    EXPECT_EQ(r.error().message, "registry r did not answer within 30 s");
  }
  // Without a negative TTL the failure is not remembered: the next call tries again.
  EXPECT_EQ(flight.remembered(), 0u);
  EXPECT_EQ(*flight.run("tag", [&]() -> Result<int> { return ++calls; }), 2);
}

TEST(SingleFlightTest, DifferentKeysDoNotWaitForEachOther) {
  Flight flight;
  Gate gate;
  std::thread slow([&] {
    (void)flight.run("slow", [&]() -> Result<int> {
      gate.wait();
      return 1;
    });
  });
  while (flight.in_flight() == 0) std::this_thread::sleep_for(1ms);
  auto started = std::chrono::steady_clock::now();
  EXPECT_EQ(*flight.run("fast", []() -> Result<int> { return 2; }), 2);
  EXPECT_LT(std::chrono::steady_clock::now() - started, 1s);
  gate.open = true;
  slow.join();
}

TEST(SingleFlightTest, AFailureIsRememberedForTheNegativeTtlOnly) {
  TestClock clock;
  Flight::Options options;
  options.negative_ttl = 5s;
  options.now = [&] { return clock.now(); };
  Flight flight(options);
  int calls = 0;
  auto missing = [&]() -> Result<int> {
    ++calls;
    return make_error(ENOENT, "no tag 9 in repository app");
  };
  for (int i = 0; i < 100; ++i) {
    auto r = flight.run("app:9", missing);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code, ENOENT);
    EXPECT_EQ(r.error().message, "no tag 9 in repository app");
    clock.ms += 40;  // 100 calls over 4 s
  }
  EXPECT_EQ(calls, 1) << "a storm of calls within the negative TTL makes one attempt";
  clock.ms += 1001;  // 5.001 s after the failure
  EXPECT_FALSE(flight.run("app:9", missing).ok());
  EXPECT_EQ(calls, 2) << "after the TTL the next call tries again";
  // forget() ends the memory early; a success is not remembered.
  flight.forget("app:9");
  EXPECT_EQ(*flight.run("app:9", [&]() -> Result<int> { return ++calls; }), 3);
  EXPECT_EQ(*flight.run("app:9", [&]() -> Result<int> { return ++calls; }), 4);
  EXPECT_EQ(flight.remembered(), 0u);
}

TEST(SingleFlightTest, RememberedFailuresAreCappedAndExpired) {
  TestClock clock;
  Flight::Options options;
  options.negative_ttl = 5s;
  options.max_remembered = 10;
  options.now = [&] { return clock.now(); };
  Flight flight(options);
  auto fail = []() -> Result<int> { return make_error(ENOENT, "missing"); };
  for (int i = 0; i < 1000; ++i) {
    (void)flight.run("tag" + std::to_string(i), fail);
    clock.ms += 1;
    ASSERT_LE(flight.remembered(), 10u);
  }
  EXPECT_EQ(flight.remembered(), 10u);
  // The newest are kept, the oldest went first.
  int calls = 0;
  auto counted = [&]() -> Result<int> {
    ++calls;
    return make_error(ENOENT, "missing");
  };
  (void)flight.run("tag999", counted);
  EXPECT_EQ(calls, 0) << "the newest failure is still remembered";
  (void)flight.run("tag0", counted);
  EXPECT_EQ(calls, 1) << "the oldest failure was dropped for newer ones";
  // Expired failures are dropped when the table fills, before any live one.
  clock.ms += 6000;
  (void)flight.run("fresh", fail);
  EXPECT_EQ(flight.remembered(), 1u);
}

TEST(SingleFlightTest, AnExceptionEndsTheFlightForEveryWaiter) {
  Flight flight;
  Gate gate;
  std::optional<Result<int>> waiter;
  std::thread runner([&] {
    EXPECT_THROW((void)flight.run("k",
                                  [&]() -> Result<int> {
                                    gate.wait();
                                    throw std::runtime_error("boom");
                                  }),
                 std::runtime_error);
  });
  while (flight.in_flight() == 0) std::this_thread::sleep_for(1ms);
  std::thread other([&] { waiter.emplace(flight.run("k", []() -> Result<int> { return 1; })); });
  wait_for_waiters(flight, "k", 1);
  gate.open = true;
  runner.join();
  other.join();
  ASSERT_FALSE(waiter->ok());
  EXPECT_EQ(waiter->error().code, EIO);
  EXPECT_EQ(flight.in_flight(), 0u);
  EXPECT_EQ(*flight.run("k", []() -> Result<int> { return 7; }), 7);
}

TEST(SingleFlightTest, ManyKeysLeaveNoEntriesBehind) {
  Flight flight;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 500; ++i)
        ok +=
            flight.run(std::to_string((t * 500 + i) % 97), [&]() -> Result<int> { return i; }).ok();
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), 4000);
  EXPECT_EQ(flight.in_flight(), 0u);
  EXPECT_EQ(flight.remembered(), 0u);
}

}  // namespace
}  // namespace imagefs
