// BlobStore: put/read/verify, streaming writes and their resume (across writers and across a
// killed process), digest and size checks, concurrent writers of one blob, and a full disk.
#include "store/blob_store.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <fstream>
#include <thread>

#include "common/mutex.h"
#include "common/unique_fd.h"
#include "tests/unit/store/store_test_util.h"

namespace imagefs::store {
namespace {

namespace fs = std::filesystem;
using testing::as_bytes;
using testing::fork_child;
using testing::pattern;
using testing::Pipe;
using testing::TempDir;
using testing::wait_child;

size_t count_files(const fs::path& dir) {
  size_t n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir)) ++n;
  return n;
}

std::shared_ptr<BlobStore> open_store(const fs::path& root) {
  auto store = BlobStore::open(root);
  if (!store.ok()) ADD_FAILURE() << store.error().message;
  return store.ok() ? *store : nullptr;
}

// Writes `data` in chunks of `chunk` bytes.
Result<void> write_chunks(BlobWriter& w, std::string_view data, size_t chunk = 65536) {
  for (size_t off = 0; off < data.size(); off += chunk)
    IMAGEFS_CHECK(w.write(as_bytes(data.substr(off, chunk))));
  return {};
}

TEST(BlobStore, PutReadListVerify) {
  TempDir dir;
  auto store = open_store(dir.path());
  ASSERT_TRUE(store);
  std::string data = R"({"schemaVersion":2})";
  Digest d = Digest::of(data);
  EXPECT_FALSE(store->contains(d));
  ASSERT_TRUE(store->put(d, data).ok());
  EXPECT_TRUE(store->contains(d));
  EXPECT_EQ(store->path(d), dir.path() / "blobs" / "sha256" / std::string(d.hex()));
  auto read = store->read(d);
  ASSERT_TRUE(read.ok()) << read.error().message;
  EXPECT_EQ(*read, data);
  ASSERT_TRUE(store->put(d, data).ok()) << "a second put of the same blob is a no-op";

  auto list = store->list();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 1u);
  EXPECT_EQ((*list)[0].digest, d);
  EXPECT_EQ((*list)[0].size, data.size());
  auto bad = store->verify();
  ASSERT_TRUE(bad.ok());
  EXPECT_TRUE(bad->empty());
  EXPECT_EQ(count_files(dir.path() / "tmp"), 0u);
  EXPECT_EQ(count_files(dir.path() / "locks"), 0u) << "lock files are removed after use";
  struct stat st {};
  ASSERT_EQ(::stat(store->path(d).c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0444u) << "blobs are read-only";
}

// A layer ingest does not hash again a blob this store object's writer verified a moment ago, if
// the file it opened is that same file, unchanged; anything else is not vouched for.
TEST(BlobStore, VerifiedJustNowOnlyForTheWritersOwnUnchangedFile) {
  TempDir dir;
  auto store = open_store(dir.path());
  ASSERT_TRUE(store);
  std::string data = pattern(5000);
  Digest d = Digest::of(data);
  ASSERT_TRUE(store->put(d, data).ok());
  UniqueFd fd(::open(store->path(d).c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(fd);
  EXPECT_TRUE(store->verified_just_now(d, fd.get()));
  EXPECT_FALSE(store->verified_just_now(Digest::of(std::string_view("other")), fd.get()));
  auto other = open_store(dir.path());  // another process, in effect: it verified nothing
  ASSERT_TRUE(other);
  EXPECT_FALSE(other->verified_just_now(d, fd.get()));

  // Changed after its writer verified it: hashed again, whatever the clock's granularity.
  ASSERT_EQ(::chmod(store->path(d).c_str(), 0644), 0);
  std::ofstream(store->path(d), std::ios::binary | std::ios::app) << "x";
  EXPECT_FALSE(store->verified_just_now(d, fd.get()));

  // Stored again by the other store's writer: that one vouches for it.
  ASSERT_TRUE(store->remove(d).ok());
  ASSERT_TRUE(other->put(d, data).ok());
  UniqueFd again(::open(store->path(d).c_str(), O_RDONLY | O_CLOEXEC));
  ASSERT_TRUE(again);
  EXPECT_TRUE(other->verified_just_now(d, again.get()));
}

TEST(BlobStore, ReadOfAbsentBlobIsEnoent) {
  TempDir dir;
  auto store = open_store(dir.path());
  auto read = store->read(Digest::of(std::string_view("nothing")));
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.error().code, ENOENT);
}

TEST(BlobStore, PutRefusesWrongBytes) {
  TempDir dir;
  auto store = open_store(dir.path());
  Digest expected = Digest::of(std::string_view("right"));
  Digest actual = Digest::of(std::string_view("wrong"));
  auto r = store->put(expected, "wrong");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EIO);
  EXPECT_NE(r.error().message.find(expected.str()), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find(actual.str()), std::string::npos) << r.error().message;
  EXPECT_FALSE(store->contains(expected));
  EXPECT_FALSE(store->contains(actual));
  EXPECT_EQ(count_files(dir.path() / "tmp"), 0u);
}

TEST(BlobStore, DamagedBlobIsFoundByReadAndVerify) {
  TempDir dir;
  auto store = open_store(dir.path());
  std::string data = pattern(1000);
  Digest d = Digest::of(data);
  ASSERT_TRUE(store->put(d, data).ok());
  ASSERT_EQ(::chmod(store->path(d).c_str(), 0644), 0);
  std::ofstream(store->path(d), std::ios::binary | std::ios::trunc) << "bit rot";
  auto read = store->read(d);
  ASSERT_FALSE(read.ok());
  EXPECT_EQ(read.error().code, EUCLEAN) << "the store's copy is damaged, not the registry's";
  EXPECT_NE(
      read.error().message.find("blob " + d.str() + " in the store does not match its digest"),
      std::string::npos)
      << read.error().message;
  auto bad = store->verify();
  ASSERT_TRUE(bad.ok());
  EXPECT_EQ(*bad, std::vector<Digest>{d});
  EXPECT_EQ(store->check(d).value(), BlobState::bad);
  EXPECT_EQ(store->check(Digest::of(std::string_view("absent"))).value(), BlobState::missing);
}

// A byte of a stored layer flipped: check() finds it, with progress; open_writer() still trusts
// the copy (it is what every reader does), open_repair_writer() replaces it, whole, at commit,
// and leaves the bad copy in place until then; on a good copy it has nothing to do.
TEST(BlobStore, RepairWriterReplacesABadCopyAtCommit) {
  TempDir dir;
  auto store = open_store(dir.path());
  std::string data = pattern(3 << 20, 5);
  Digest d = Digest::of(data);
  ASSERT_TRUE(store->put(d, data).ok());
  uint64_t last = 0;
  EXPECT_EQ(store->check(d, [&](uint64_t n) { last = n; }).value(), BlobState::good);
  EXPECT_EQ(last, data.size()) << "progress reaches the whole blob";

  ASSERT_EQ(::chmod(store->path(d).c_str(), 0644), 0);
  {
    std::fstream f(store->path(d), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(data.size() / 2));
    f.put(static_cast<char>(data[data.size() / 2] ^ 1));
  }
  EXPECT_EQ(store->check(d).value(), BlobState::bad);
  EXPECT_TRUE(store->open_writer(d, data.size()).value()->done()) << "a plain writer trusts it";

  auto writer = store->open_repair_writer(d, data.size());
  ASSERT_TRUE(writer.ok()) << writer.error().message;
  ASSERT_FALSE((*writer)->done());
  ASSERT_TRUE(write_chunks(**writer, data.substr(0, data.size() / 2)).ok());
  EXPECT_EQ(store->check(d).value(), BlobState::bad) << "the bad copy stays until the commit";
  ASSERT_TRUE(write_chunks(**writer, data.substr(data.size() / 2)).ok());
  ASSERT_TRUE((*writer)->commit(data.size()).ok());
  EXPECT_EQ(store->check(d).value(), BlobState::good);
  EXPECT_EQ(store->read(d).value(), data);
  EXPECT_TRUE(store->verify()->empty());
  EXPECT_TRUE(store->open_repair_writer(d, data.size()).value()->done()) << "nothing to repair";
  EXPECT_EQ(count_files(dir.path() / "tmp"), 0u);

  // Small blobs (manifests, configs): repair() replaces a bad copy; put() would keep it.
  std::string small = pattern(500, 6);
  Digest s = Digest::of(small);
  ASSERT_TRUE(store->put(s, small).ok());
  ASSERT_EQ(::chmod(store->path(s).c_str(), 0644), 0);
  std::ofstream(store->path(s), std::ios::binary | std::ios::trunc) << "rot";
  ASSERT_TRUE(store->put(s, small).ok());
  EXPECT_EQ(store->check(s).value(), BlobState::bad);
  EXPECT_EQ(store->repair(s, "other bytes").error().code, EIO) << "bytes that are not the blob";
  ASSERT_TRUE(store->repair(s, small).ok());
  EXPECT_EQ(store->read(s).value(), small);
}

TEST(BlobStore, StreamingWriteResumesInANewWriter) {
  TempDir dir;
  auto store = open_store(dir.path());
  std::string data = pattern(700'000);
  Digest d = Digest::of(data);
  {
    auto w = store->open_writer(d);
    ASSERT_TRUE(w.ok()) << w.error().message;
    EXPECT_FALSE((*w)->done());
    EXPECT_EQ((*w)->offset(), 0u);
    ASSERT_TRUE(write_chunks(**w, std::string_view(data).substr(0, 300'001)).ok());
    EXPECT_EQ((*w)->offset(), 300'001u);
  }  // dropped without commit: the bytes stay for a resume
  EXPECT_FALSE(store->contains(d));
  auto w = store->open_writer(d);
  ASSERT_TRUE(w.ok());
  ASSERT_EQ((*w)->offset(), 300'001u);
  ASSERT_TRUE(write_chunks(**w, std::string_view(data).substr(300'001)).ok());
  auto c = (*w)->commit(data.size());
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_TRUE((*w)->done());
  EXPECT_EQ(*store->read(d), data);
  EXPECT_EQ(count_files(dir.path() / "tmp"), 0u);
}

TEST(BlobStore, ResumesAfterTheWriterWasKilled) {
  TempDir dir;
  std::string data = pattern(2'000'000, 7);
  Digest d = Digest::of(data);
  const size_t half = 1'000'003;
  Pipe ready;
  pid_t child = fork_child([&] {
    auto store = BlobStore::open(dir.path());
    if (!store.ok()) return 1;
    auto w = (*store)->open_writer(d);
    if (!w.ok() || !write_chunks(**w, std::string_view(data).substr(0, half), 4096).ok()) return 2;
    ready.send();
    ::pause();  // killed here, mid-download, with the blob's lock held
    return 3;
  });
  ASSERT_EQ(ready.receive(), 'x');
  ASSERT_EQ(::kill(child, SIGKILL), 0);
  ASSERT_EQ(wait_child(child), 128 + SIGKILL);

  auto store = open_store(dir.path());
  auto w = store->open_writer(d);  // the lock died with the child: this does not wait
  ASSERT_TRUE(w.ok()) << w.error().message;
  // A killed writer loses what it had buffered (up to 1 MiB), never more, never wrong bytes.
  uint64_t resumed = (*w)->offset();
  ASSERT_LE(resumed, half);
  ASSERT_GE(resumed + (1u << 20), half);
  ASSERT_TRUE(write_chunks(**w, std::string_view(data).substr(resumed)).ok());
  auto c = (*w)->commit(data.size());
  ASSERT_TRUE(c.ok()) << c.error().message;
  EXPECT_EQ(*store->read(d), data);
  EXPECT_TRUE(store->verify()->empty());
}

TEST(BlobStore, DigestMismatchLeavesNothing) {
  TempDir dir;
  auto store = open_store(dir.path());
  std::string data = pattern(100'000);
  Digest d = Digest::of(data);
  std::string other = pattern(100'000, 2);
  auto w = store->open_writer(d);
  ASSERT_TRUE(w.ok());
  ASSERT_TRUE(write_chunks(**w, other).ok());
  auto c = (*w)->commit(other.size());
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code, EIO);
  EXPECT_NE(c.error().message.find("expected " + d.str()), std::string::npos) << c.error().message;
  EXPECT_NE(c.error().message.find("got " + Digest::of(other).str()), std::string::npos)
      << c.error().message;
  EXPECT_FALSE((*w)->done());
  EXPECT_FALSE((*w)->write(as_bytes("more")).ok()) << "a failed writer refuses more bytes";
  w->reset();
  EXPECT_FALSE(store->contains(d));
  EXPECT_EQ(count_files(dir.path() / "tmp"), 0u);
  EXPECT_EQ(count_files(dir.path() / "blobs" / "sha256"), 0u);
  auto again = store->open_writer(d);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->offset(), 0u);
}

TEST(BlobStore, ShortCommitKeepsThePartialAndLongCommitDropsIt) {
  TempDir dir;
  auto store = open_store(dir.path());
  std::string data = pattern(10'000);
  Digest d = Digest::of(data);
  {
    auto w = store->open_writer(d);
    ASSERT_TRUE((*w)->write(as_bytes(std::string_view(data).substr(0, 4000))).ok());
    auto c = (*w)->commit(data.size());
    ASSERT_FALSE(c.ok());
    EXPECT_EQ(c.error().code, EIO);
    EXPECT_NE(c.error().message.find("got 4000 of 10000 bytes"), std::string::npos)
        << c.error().message;
  }
  {
    auto w = store->open_writer(d);
    EXPECT_EQ((*w)->offset(), 4000u);
    ASSERT_TRUE((*w)->write(as_bytes(std::string_view(data).substr(4000))).ok());
    ASSERT_TRUE((*w)->write(as_bytes("extra")).ok());
    auto c = (*w)->commit(data.size());
    ASSERT_FALSE(c.ok());
    EXPECT_NE(c.error().message.find("expected 10000 bytes, got 10005"), std::string::npos)
        << c.error().message;
  }
  EXPECT_EQ(count_files(dir.path() / "tmp"), 0u);
  EXPECT_FALSE(store->contains(d));
}

TEST(BlobStore, RestartDiscardsWhatWasWritten) {
  TempDir dir;
  auto store = open_store(dir.path());
  std::string data = pattern(50'000);
  Digest d = Digest::of(data);
  auto w = store->open_writer(d);
  ASSERT_TRUE((*w)->write(as_bytes("a server that ignored Range sent the start again")).ok());
  ASSERT_TRUE((*w)->restart().ok());
  EXPECT_EQ((*w)->offset(), 0u);
  ASSERT_TRUE(write_chunks(**w, data).ok());
  ASSERT_TRUE((*w)->commit(std::nullopt).ok());
  EXPECT_EQ(*store->read(d), data);
}

TEST(BlobStore, WriterOfAPresentBlobIsDone) {
  TempDir dir;
  auto store = open_store(dir.path());
  std::string data = pattern(5000);
  Digest d = Digest::of(data);
  ASSERT_TRUE(store->put(d, data).ok());
  auto w = store->open_writer(d);
  ASSERT_TRUE(w.ok());
  EXPECT_TRUE((*w)->done());
  EXPECT_EQ((*w)->offset(), data.size());
  EXPECT_EQ((*w)->write(as_bytes("x")).error().code, EINVAL);
  EXPECT_TRUE((*w)->commit(data.size()).ok());
  EXPECT_FALSE((*w)->commit(data.size() + 1).ok()) << "a descriptor with the wrong size is refused";
}

// Several processes pull the same blob at once: all succeed, and its bytes are written once.
TEST(BlobStore, ConcurrentProcessesWriteABlobOnce) {
  TempDir dir;
  std::string data = pattern(3'000'000, 3);
  Digest d = Digest::of(data);
  constexpr int kWriters = 4;
  Pipe start;
  Pipe bytes_written;
  std::vector<pid_t> children;
  for (int i = 0; i < kWriters; ++i) {
    children.push_back(fork_child([&] {
      start.close_write();
      if (start.receive() != 0) return 1;  // all start when the parent closes the pipe
      auto store = BlobStore::open(dir.path());
      if (!store.ok()) return 2;
      auto w = (*store)->open_writer(d);
      if (!w.ok()) return 3;
      uint64_t wrote = 0;
      if (!(*w)->done()) {
        if (!write_chunks(**w, data, 8192).ok() || !(*w)->commit(data.size()).ok()) return 4;
        wrote = data.size();
      }
      bytes_written.send_u64(wrote);
      return 0;
    }));
  }
  start.close_write();
  for (pid_t child : children) EXPECT_EQ(wait_child(child), 0);
  uint64_t total = 0;
  for (int i = 0; i < kWriters; ++i) total += bytes_written.receive_u64();
  EXPECT_EQ(total, data.size()) << "exactly one writer wrote the blob";
  auto store = open_store(dir.path());
  EXPECT_EQ(*store->read(d), data);
  EXPECT_EQ(count_files(dir.path() / "tmp"), 0u);
}

// A second writer waits for the first and then finds the blob committed.
TEST(BlobStore, WaitingWriterSeesTheBlobCommitted) {
  TempDir dir;
  std::string data = pattern(400'000, 4);
  Digest d = Digest::of(data);
  Pipe locked;
  Pipe go;
  pid_t child = fork_child([&] {
    auto store = BlobStore::open(dir.path());
    if (!store.ok()) return 1;
    auto w = (*store)->open_writer(d);
    if (!w.ok() || (*w)->done()) return 2;
    locked.send();
    if (go.receive() != 'x') return 3;
    if (!write_chunks(**w, data).ok() || !(*w)->commit(data.size()).ok()) return 4;
    return 0;
  });
  ASSERT_EQ(locked.receive(), 'x');
  auto store = open_store(dir.path());
  std::atomic<bool> opened{false};
  std::thread waiter([&] {
    auto w = store->open_writer(d);
    EXPECT_TRUE(w.ok());
    EXPECT_TRUE(w.ok() && (*w)->done()) << "the waiter finds the child's blob";
    opened = true;
  });
  // The child holds the lock until it commits, which it does only after "go".
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_FALSE(opened) << "open_writer waits for the writer holding the blob";
  go.send();
  waiter.join();
  EXPECT_EQ(wait_child(child), 0);
  EXPECT_TRUE(opened);
}

// With a WaitReport the wait is told as it goes, with the bytes the other writer holds.
TEST(BlobStore, AWaitIsReportedWithTheOtherWritersBytes) {
  TempDir dir;
  auto store = open_store(dir.path());
  std::string data = pattern(300'000, 6);
  Digest d = Digest::of(data);
  auto first = store->open_writer(d, data.size());
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE((*first)->write(std::span(reinterpret_cast<const uint8_t*>(data.data()), 1000)).ok());
  Mutex mu;
  std::vector<uint64_t> reports;
  std::thread waiter([&] {
    auto w = store->open_writer(d, data.size(), [&](uint64_t bytes) {
      MutexLock lock(mu);
      reports.push_back(bytes);
    });
    EXPECT_TRUE(w.ok() && (*w)->done()) << "the waiter finds the first writer's blob";
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ASSERT_TRUE((*first)
                  ->write(std::span(reinterpret_cast<const uint8_t*>(data.data()) + 1000,
                                    data.size() - 1000))
                  .ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  ASSERT_TRUE((*first)->commit(data.size()).ok());
  first->reset();
  waiter.join();
  MutexLock lock(mu);
  ASSERT_GE(reports.size(), 3u) << "reported as the wait began and then about five times a second";
  EXPECT_LE(reports.front(), 1000u) << "what the writer has on disk (it may buffer)";
  EXPECT_EQ(reports.back(), data.size());
  EXPECT_TRUE(std::is_sorted(reports.begin(), reports.end()));
}

TEST(BlobStore, ThreadsOfOneProcessWriteABlobOnce) {
  TempDir dir;
  auto store = open_store(dir.path());
  std::string data = pattern(1'000'000, 5);
  Digest d = Digest::of(data);
  std::atomic<int> writers{0};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&] {
      auto w = store->open_writer(d);
      ASSERT_TRUE(w.ok());
      if ((*w)->done()) return;
      ++writers;
      EXPECT_TRUE(write_chunks(**w, data).ok());
      EXPECT_TRUE((*w)->commit(data.size()).ok());
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(writers, 1);
  EXPECT_EQ(*store->read(d), data);
}

TEST(BlobStore, RemoveTakesTheBlobAndItsPartial) {
  TempDir dir;
  auto store = open_store(dir.path());
  std::string data = pattern(3000);
  Digest d = Digest::of(data);
  ASSERT_TRUE(store->put(d, data).ok());
  Digest partial = Digest::of(std::string_view("partial"));
  {
    auto w = store->open_writer(partial);
    ASSERT_TRUE((*w)->write(as_bytes("par")).ok());
  }
  ASSERT_EQ(count_files(dir.path() / "tmp"), 1u);
  EXPECT_TRUE(store->remove(d).ok());
  EXPECT_TRUE(store->remove(partial).ok());
  EXPECT_TRUE(store->remove(d).ok()) << "removing an absent blob succeeds";
  EXPECT_FALSE(store->contains(d));
  EXPECT_EQ(count_files(dir.path() / "tmp"), 0u);
  EXPECT_EQ(count_files(dir.path() / "locks"), 0u);
}

TEST(BlobStore, StalePartialsGoUnlessBeingWritten) {
  TempDir dir;
  auto store = open_store(dir.path());
  Digest old_one = Digest::of(std::string_view("old"));
  Digest young = Digest::of(std::string_view("young"));
  Digest busy = Digest::of(std::string_view("busy"));
  for (const Digest& d : {old_one, young}) {
    auto w = store->open_writer(d);
    ASSERT_TRUE((*w)->write(as_bytes("some")).ok());
  }
  auto busy_writer = store->open_writer(busy);
  ASSERT_TRUE((*busy_writer)->write(as_bytes("busy")).ok());
  // Age two of them by a day.
  for (const Digest& d : {old_one, busy}) {
    fs::path p = dir.path() / "tmp" / (std::string(d.hex()) + ".partial");
    struct timespec times[2] = {{1000, 0}, {1000, 0}};
    ASSERT_EQ(::utimensat(AT_FDCWD, p.c_str(), times, 0), 0);
  }
  // A stray lock file, as a killed process would leave.
  std::ofstream(dir.path() / "locks" / "stray.lock") << "";

  auto removed = store->remove_stale_partials(2000);
  ASSERT_TRUE(removed.ok()) << removed.error().message;
  ASSERT_EQ(removed->size(), 1u);
  EXPECT_EQ((*removed)[0].digest, old_one);
  EXPECT_EQ((*removed)[0].size, 4u);
  EXPECT_EQ((*removed)[0].modified, 1000);
  EXPECT_EQ(count_files(dir.path() / "tmp"), 2u) << "the young and the busy partials stay";
  EXPECT_EQ(count_files(dir.path() / "locks"), 1u) << "only the busy writer's lock remains";
}

TEST(BlobStore, ListSkipsStrayFiles) {
  TempDir dir;
  auto store = open_store(dir.path());
  std::ofstream(dir.path() / "blobs" / "sha256" / "README") << "not a blob";
  auto list = store->list();
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->empty());
}

// A full disk: a clear error, a store that verifies clean, and a writer that resumes once there
// is room again.
TEST(BlobStore, FullDiskIsAClearErrorAndBreaksNothing) {
  testing::SmallTmpfs tmpfs("1m");
  IMAGEFS_REQUIRE_TMPFS(tmpfs);
  auto store = open_store(tmpfs.path());
  ASSERT_TRUE(store);
  std::string small = "a small config";
  ASSERT_TRUE(store->put(Digest::of(small), small).ok());

  std::string big = pattern(1'500'000, 9);
  Digest d = Digest::of(big);
  auto w = store->open_writer(d);
  ASSERT_TRUE(w.ok());
  Result<void> r = write_chunks(**w, big);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ENOSPC);
  std::string where = (tmpfs.path() / "tmp" / (std::string(d.hex()) + ".partial")).string();
  EXPECT_EQ(r.error().message, "no space left on device while writing " + where);
  uint64_t kept = (*w)->offset();
  EXPECT_GT(kept, 0u);
  EXPECT_EQ(fs::file_size(where), kept) << "offset() counts exactly what reached the file";
  w->reset();

  auto bad = store->verify();
  ASSERT_TRUE(bad.ok());
  EXPECT_TRUE(bad->empty());
  EXPECT_FALSE(store->contains(d));
  EXPECT_EQ(*store->read(Digest::of(small)), small);

  // put() of bytes in memory leaves no partial behind on a full disk.
  std::string medium = pattern(200'000, 10);
  auto put = store->put(Digest::of(medium), medium);
  ASSERT_FALSE(put.ok());
  EXPECT_EQ(put.error().code, ENOSPC);
  EXPECT_EQ(count_files(tmpfs.path() / "tmp"), 1u);

  // Room again (the small blob goes): the big writer cannot finish in 1 MiB, but a resume
  // starts from the kept bytes, and the store still verifies.
  ASSERT_TRUE(store->remove(Digest::of(small)).ok());
  auto again = store->open_writer(d);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ((*again)->offset(), kept);
  again->reset();
  ASSERT_TRUE(store->remove(d).ok());
  ASSERT_TRUE(store->put(Digest::of(medium), medium).ok());
  EXPECT_TRUE(store->verify()->empty());
}

// Leaves `bytes` as the partial download of `d`, as a killed writer would.
void leave_partial(BlobStore& store, const Digest& d, std::string_view bytes) {
  auto w = store.open_writer(d);
  ASSERT_TRUE(w.ok()) << w.error().message;
  ASSERT_TRUE(write_chunks(**w, bytes).ok());
}

uint64_t partial_bytes(const fs::path& root, const Digest& d) {
  std::error_code ec;
  auto n = fs::file_size(root / "tmp" / (std::string(d.hex()) + ".partial"), ec);
  return ec ? 0 : n;
}

TEST(BlobStore, PartialLongerThanTheBlobIsDiscardedNotResumed) {
  TempDir dir;
  auto store = open_store(dir.path());
  std::string data = pattern(100'000);
  Digest d = Digest::of(data);
  // What a registry sending endless bytes left before a bound existed.
  leave_partial(*store, d, data + pattern(300'000, 3));
  ASSERT_EQ(partial_bytes(dir.path(), d), 400'000u);
  auto w = store->open_writer(d, data.size());
  ASSERT_TRUE(w.ok()) << w.error().message;
  EXPECT_FALSE((*w)->done());
  EXPECT_EQ((*w)->offset(), 0u) << "never resume past the blob's size";
  EXPECT_EQ(partial_bytes(dir.path(), d), 0u);
  ASSERT_TRUE(write_chunks(**w, data).ok());
  ASSERT_TRUE((*w)->commit(data.size()).ok());
  EXPECT_EQ(store->read(d).value(), data);
}

TEST(BlobStore, CompletePartialIsVerifiedAndCommittedOnOpen) {
  TempDir dir;
  auto store = open_store(dir.path());
  std::string data = pattern(100'000);
  Digest d = Digest::of(data);
  leave_partial(*store, d, data);  // killed after the last byte, before the rename
  auto w = store->open_writer(d, data.size());
  ASSERT_TRUE(w.ok()) << w.error().message;
  EXPECT_TRUE((*w)->done());
  EXPECT_EQ((*w)->offset(), data.size());
  w->reset();
  EXPECT_TRUE(store->contains(d));
  EXPECT_EQ(store->read(d).value(), data);
  EXPECT_EQ(count_files(dir.path() / "tmp"), 0u);
}

TEST(BlobStore, CompletePartialThatDoesNotVerifyStartsOver) {
  TempDir dir;
  auto store = open_store(dir.path());
  std::string data = pattern(100'000);
  Digest d = Digest::of(data);
  leave_partial(*store, d, pattern(100'000, 5));  // the right length, the wrong bytes
  auto w = store->open_writer(d, data.size());
  ASSERT_TRUE(w.ok()) << w.error().message;
  EXPECT_FALSE((*w)->done());
  EXPECT_EQ((*w)->offset(), 0u);
  EXPECT_FALSE(store->contains(d));
  ASSERT_TRUE(write_chunks(**w, data).ok());
  ASSERT_TRUE((*w)->commit(data.size()).ok());
  EXPECT_EQ(store->read(d).value(), data);
}

TEST(BlobStore, ShorterPartialIsResumedWithAnExpectedSize) {
  TempDir dir;
  auto store = open_store(dir.path());
  std::string data = pattern(100'000);
  Digest d = Digest::of(data);
  leave_partial(*store, d, data.substr(0, 40'000));
  auto w = store->open_writer(d, data.size());
  ASSERT_TRUE(w.ok()) << w.error().message;
  EXPECT_EQ((*w)->offset(), 40'000u);
  ASSERT_TRUE(write_chunks(**w, data.substr(40'000)).ok());
  ASSERT_TRUE((*w)->commit(data.size()).ok());
  EXPECT_EQ(store->read(d).value(), data);
}

TEST(BlobStore, ListAndRemovePartials) {
  TempDir dir;
  auto store = open_store(dir.path());
  Digest a = Digest::of(std::string_view("a blob"));
  Digest b = Digest::of(std::string_view("b blob"));
  leave_partial(*store, a, "a bl");
  auto busy = store->open_writer(b);
  ASSERT_TRUE(busy.ok());
  ASSERT_TRUE((*busy)->write(as_bytes("b")).ok());
  auto listed = store->list_partials();
  ASSERT_TRUE(listed.ok()) << listed.error().message;
  ASSERT_EQ(listed->size(), 2u);
  uint64_t total = 0;
  for (const PartialInfo& p : *listed) total += p.size;
  EXPECT_EQ(total, 4u) << "the busy writer's byte is still in its buffer";
  auto removed_busy = store->remove_partial(b);
  ASSERT_TRUE(removed_busy.ok());
  EXPECT_FALSE(*removed_busy) << "a writer holds it";
  auto removed = store->remove_partial(a);
  ASSERT_TRUE(removed.ok()) << removed.error().message;
  EXPECT_TRUE(*removed);
  EXPECT_EQ(partial_bytes(dir.path(), a), 0u);
  auto again = store->remove_partial(a);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(*again) << "nothing left to remove";
}

}  // namespace
}  // namespace imagefs::store
