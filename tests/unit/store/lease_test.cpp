// Leases: in_use() sees holders in this and other processes, a dead holder's lease is gone, and
// gc's exclusive claims wait for, or are refused by, the shared ones.
#include "store/lease.h"

#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <thread>

#include "tests/unit/store/store_test_util.h"

namespace imagefs::store {
namespace {

namespace fs = std::filesystem;
using testing::fork_child;
using testing::Pipe;
using testing::TempDir;
using testing::wait_child;

size_t lease_files(const fs::path& root) {
  if (!fs::exists(root / "leases")) return 0;
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(root / "leases")) ++n;
  return n;
}

TEST(Lease, InUseWhileHeld) {
  TempDir dir;
  Digest image = Digest::of(std::string_view("image"));
  Digest other = Digest::of(std::string_view("other"));
  EXPECT_FALSE(in_use(dir.path(), image));
  {
    auto lease = Lease::image(dir.path(), image);
    ASSERT_TRUE(lease.ok()) << lease.error().message;
    auto second = Lease::image(dir.path(), image);  // shared: any number of holders
    ASSERT_TRUE(second.ok());
    EXPECT_TRUE(in_use(dir.path(), image));
    EXPECT_FALSE(in_use(dir.path(), other));
    auto claim = Lease::try_image_exclusive(dir.path(), image);
    ASSERT_TRUE(claim.ok());
    EXPECT_FALSE(claim->has_value()) << "gc cannot claim an image in use";
  }
  EXPECT_FALSE(in_use(dir.path(), image));
  EXPECT_EQ(lease_files(dir.path()), 0u) << "probing a free lease removes its file";
}

TEST(Lease, MovedLeaseStaysHeld) {
  TempDir dir;
  Digest image = Digest::of(std::string_view("image"));
  auto lease = Lease::image(dir.path(), image);
  ASSERT_TRUE(lease.ok());
  Lease moved = std::move(*lease);
  EXPECT_TRUE(in_use(dir.path(), image));
}

TEST(Lease, DiesWithItsProcess) {
  TempDir dir;
  Digest image = Digest::of(std::string_view("image"));
  Pipe ready;
  pid_t child = fork_child([&] {
    auto lease = Lease::image(dir.path(), image);
    if (!lease.ok()) return 1;
    ready.send();
    ::pause();
    return 0;
  });
  ASSERT_EQ(ready.receive(), 'x');
  EXPECT_TRUE(in_use(dir.path(), image));
  ::kill(child, SIGKILL);
  EXPECT_EQ(wait_child(child), 128 + SIGKILL);
  EXPECT_FALSE(in_use(dir.path(), image));
}

TEST(Lease, ImageLeaseWaitsWhileGcRemovesTheImage) {
  TempDir dir;
  Digest image = Digest::of(std::string_view("image"));
  auto claim = Lease::try_image_exclusive(dir.path(), image);
  ASSERT_TRUE(claim.ok());
  ASSERT_TRUE(claim->has_value());
  std::atomic<bool> leased{false};
  std::thread mount([&] {
    auto lease = Lease::image(dir.path(), image);
    EXPECT_TRUE(lease.ok());
    leased = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(leased);
  claim->reset();  // gc is done: the lease file is removed and the waiter starts over
  mount.join();
  EXPECT_TRUE(leased);
}

TEST(Lease, GcWaitsForPulls) {
  TempDir dir;
  auto pull = Lease::pull(dir.path());
  ASSERT_TRUE(pull.ok());
  auto another_pull = Lease::pull(dir.path());
  ASSERT_TRUE(another_pull.ok()) << "pulls do not wait for each other";
  std::atomic<bool> collecting{false};
  std::thread gc([&] {
    auto exclusive = Lease::pull_exclusive(dir.path());
    EXPECT_TRUE(exclusive.ok());
    collecting = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(collecting);
  { Lease done = std::move(*pull); }
  { Lease done = std::move(*another_pull); }
  gc.join();
  EXPECT_TRUE(collecting);
}

}  // namespace
}  // namespace imagefs::store
