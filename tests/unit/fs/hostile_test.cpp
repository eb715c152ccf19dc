// What issue 11 fed the daemon: names and error texts that are not UTF-8 (a layer whose hardlink
// points at a missing, non-UTF-8 name; a mount point whose path is not UTF-8), a core that throws,
// and other users under --allow-other. .status must stay JSON (parsed back strictly), the guard
// must turn a throw into EIO and one log line, and another user must reach only allowed
// registries and see no registry's text.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <vector>

#include "fs/filesystem.h"
#include "fs/guard.h"
#include "tests/unit/fs/fs_test_env.h"

namespace imagefs::fs {
namespace {

using testing::error_of;
using testing::lookup_path;
using testing::Mounted;
using testing::must_lookup;
using testing::TestImage;
using Names = std::vector<std::string>;

// A strict parse: nlohmann refuses invalid UTF-8 in its input.
nlohmann::json parse_strictly(const std::string& text) {
  auto j = nlohmann::json::parse(text, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << text;
  return j;
}

std::string status_text(Filesystem& fs, const Caller& caller = {}) {
  auto status = fs.lookup(kRootIno, kStatusFile);
  EXPECT_TRUE(status.ok());
  if (!status.ok()) return {};
  auto file = fs.open(status->ino, O_RDONLY, caller);
  EXPECT_TRUE(file.ok()) << file.error().message;
  return file.ok() ? testing::read_all(fs, **file) : std::string();
}

bool contains(const std::string& s, const std::string& part) {
  return s.find(part) != std::string::npos;
}

constexpr const char* kBadName = "bad\xff\xfe-link";
constexpr const char* kBadTarget = "gone\xe9\x1b[31m";

class HostileTest : public testing::FsEnv {
 protected:
  void SetUp() override {
    FsEnv::SetUp();
    pull_standard();
    // "hostile": a hardlink to a target that is in no layer, both names not UTF-8.
    hostile = registry::testing::make_image(
        "amd64",
        {testing::make_tar({testing::File("ok", "fine\n"), testing::Hardlink(kBadName, kBadTarget)},
                           testing::Filter::gzip)});
    pull("localhost:5000", "hostile", "1", {&hostile}, "localhost:5000/hostile:1", testing::kAmd64);
  }

  Mounted mount_as(MountInfo info, Access access = {}) {
    auto images = Images::create(blobs, catalog, images_options());
    EXPECT_TRUE(images.ok()) << images.error().message;
    return Mounted{*images, Filesystem::create(*images, std::move(info), std::move(access))};
  }
  MountInfo info() const {
    return MountInfo{"/mnt/imagefs-test", store_root.string(), "log", 1700000000};
  }

  // Makes the hostile image fail (its archive cannot be made), so that its error, holding the
  // names' raw bytes, goes to the log and to status.
  void fail_hostile(Filesystem& fs) {
    auto archive = lookup_path(fs, "localhost:5000/hostile:1/initramfs.cpio");
    ASSERT_FALSE(archive.ok()) << "the archive of an image with a dangling hardlink was made";
    EXPECT_EQ(archive.error().code, EIO) << archive.error().message;
  }

  TestImage hostile;
};

TEST_F(HostileTest, StatusStaysJsonWhenAnErrorHoldsBytesThatAreNotUtf8) {
  Mounted m = mount_as(info());
  fail_hostile(*m.fs);
  nlohmann::json status = parse_strictly(status_text(*m.fs));
  ASSERT_TRUE(status["recent_errors"].is_array());
  ASSERT_FALSE(status["recent_errors"].empty()) << status.dump();
  const nlohmann::json& e = status["recent_errors"].back();
  EXPECT_EQ(e["image"], "localhost:5000/hostile:1");
  EXPECT_EQ(e["errno"], "EIO");
  std::string error = e["error"].get<std::string>();
  // The names, escaped: the bytes are named, nothing is lost or dropped.
  EXPECT_TRUE(contains(error, "bad\\xff\\xfe-link")) << error;
  EXPECT_TRUE(contains(error, "gone\\xe9\\x1b[31m")) << error;
  // Images' own JSON parses strictly too.
  parse_strictly(m.images->status_json());
  // The log got the same line, printable: one line, no escape sequence.
  std::vector<std::string> lines = logged();
  ASSERT_FALSE(lines.empty());
  for (const std::string& line : lines) {
    EXPECT_EQ(printable(line), line);
    EXPECT_FALSE(contains(line, "\n"));
  }
  // And the mount goes on: a good image is served, the bad one fails the same way again.
  EXPECT_EQ(testing::read_path(*m.fs, "alpine/rootfs/etc/alpine-release"), "3.20.0\n");
  fail_hostile(*m.fs);
  parse_strictly(status_text(*m.fs));
}

TEST_F(HostileTest, StatusStaysJsonWhenTheMountPointIsNotUtf8) {
  MountInfo odd = info();
  odd.mountpoint = "/mnt/\xff\xfeweird\n\x1b]0;title\x07";
  odd.cache_dir = "/var/cache/\xc3(";
  odd.log_file = "/var/log/\x80.log";
  Mounted m = mount_as(odd);
  nlohmann::json status = parse_strictly(status_text(*m.fs));
  EXPECT_EQ(status["mountpoint"], "/mnt/\\xff\\xfeweird\\x0a\\x1b]0;title\\x07");
  EXPECT_EQ(status["cache_dir"], "/var/cache/\\xc3(");
  EXPECT_EQ(status["log"], "/var/log/\\x80.log");
}

TEST_F(HostileTest, RootfsNamesAreServedAsTheirBytes) {
  // A name that is not UTF-8 but breaks nothing: served as it is, not escaped.
  TestImage odd = registry::testing::make_image(
      "amd64", {testing::make_tar({testing::File("caf\xe9", "latin-1\n")}, testing::Filter::gzip)});
  pull("localhost:5000", "odd", "1", {&odd}, "localhost:5000/odd:1", testing::kAmd64);
  Mounted m = mount_as(info());
  EXPECT_EQ(testing::list(*m.fs, "localhost:5000/odd:1/rootfs"), (Names{".", "..", "caf\xe9"}));
  EXPECT_EQ(testing::read_path(*m.fs, "localhost:5000/odd:1/rootfs/caf\xe9"), "latin-1\n");
}

// --- the guard ----------------------------------------------------------------------------------

TEST(GuardTest, AThrowIsAnsweredEioOnceAndLoggedEscaped) {
  std::vector<std::string> lines;
  LogSink log = [&](const std::string& line) { lines.push_back(line); };
  int answers = 0;
  int answered_errno = 0;
  bool ok = guarded(
      "lookup", 42, log, [&]() -> void { throw std::runtime_error("bad\xff byte\nforged line"); },
      [&] {
        ++answers;
        answered_errno = EIO;
      });
  EXPECT_FALSE(ok);
  EXPECT_EQ(answers, 1);
  EXPECT_EQ(answered_errno, EIO);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0],
            "internal error in lookup (inode 42): bad\\xff byte\\x0aforged line; answered EIO");
}

TEST(GuardTest, ANonStandardThrowIsCaughtToo) {
  std::vector<std::string> lines;
  int answers = 0;
  guarded(
      "read", 7, [&](const std::string& l) { lines.push_back(l); }, [] { throw 17; },
      [&] { ++answers; });
  EXPECT_EQ(answers, 1);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(contains(lines[0], "not a std::exception")) << lines[0];
}

TEST(GuardTest, ABodyThatEndsNormallyIsNotAnsweredAgain) {
  int answers = 0;
  int fails = 0;
  bool ok = guarded(
      "getattr", 1, {}, [&] { ++answers; }, [&] { ++fails; });
  EXPECT_TRUE(ok);
  EXPECT_EQ(answers, 1);
  EXPECT_EQ(fails, 0);
}

TEST(GuardTest, AThrowingLogOrAnswerDoesNotEscape) {
  EXPECT_NO_THROW(guarded(
      "open", 3, [](const std::string&) { throw std::bad_alloc(); },
      [] { throw std::logic_error("body"); }, [] { throw std::logic_error("answer"); }));
}

// A Filesystem core that throws, called the way fs/ops.cpp calls it: the request gets EIO.
class ThrowingFilesystem : public Filesystem {
 public:
  Result<Entry> lookup(Ino, std::string_view, const Caller&) override {
    throw std::length_error("vector too long");
  }
  Result<Entry> getattr(Ino) override { throw std::bad_alloc(); }
  Result<std::vector<DirItem>> readdir(Ino, const Caller&) override {
    return std::vector<DirItem>{};
  }
  bool answers_at_once(FsOp, Ino) override { return true; }
  void remember(Ino) override {}
  void forget(Ino, uint64_t) override {}
  std::vector<std::pair<Ino, std::string>> stale_names(std::chrono::steady_clock::time_point,
                                                       size_t) override {
    return {};
  }
  bool listing_immutable(Ino) override { return false; }
  Result<std::string> readlink(Ino) override { return std::string(); }
  Result<std::shared_ptr<OpenFile>> open(Ino, int, const Caller&) override {
    return make_error(ENOENT, "none");
  }
  Result<size_t> read(const OpenFile&, uint64_t, std::span<uint8_t>) override { return size_t{0}; }
  Result<std::vector<std::string>> listxattr(Ino) override { return std::vector<std::string>{}; }
  Result<std::string> getxattr(Ino, std::string_view) override { return std::string(); }
};

TEST(GuardTest, AThrowingCoreBecomesEio) {
  ThrowingFilesystem throwing;
  Filesystem& fs = throwing;
  std::vector<std::string> lines;
  std::vector<int> replies;  // what the "kernel" got: 0 for an entry, else an errno
  auto reply = [&](const Result<Entry>& e) { replies.push_back(e.ok() ? 0 : e.error().code); };
  guarded(
      "lookup", kRootIno, [&](const std::string& l) { lines.push_back(l); },
      [&] { reply(fs.lookup(kRootIno, "x")); }, [&] { replies.push_back(EIO); });
  guarded(
      "getattr", 5, [&](const std::string& l) { lines.push_back(l); },
      [&] { reply(fs.getattr(5)); }, [&] { replies.push_back(EIO); });
  EXPECT_EQ(replies, (std::vector<int>{EIO, EIO}));
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_TRUE(contains(lines[0], "lookup (inode 1): vector too long")) << lines[0];
  EXPECT_TRUE(contains(lines[1], "getattr (inode 5)")) << lines[1];
}

// --- other users (--allow-other) ----------------------------------------------------------------

class OtherUserTest : public HostileTest {
 protected:
  Caller other() const { return Caller{::getuid() + 1000}; }
};

TEST_F(OtherUserTest, OnlyAllowedRegistriesAreLookedUp) {
  Mounted m = mount_as(info(), Access{::getuid(), {"localhost:5000"}});
  Filesystem& fs = *m.fs;
  // The owner (and root) anything; another user only localhost:5000.
  EXPECT_EQ(error_of(fs.lookup(kRootIno, "alpine")), 0);
  EXPECT_EQ(error_of(fs.lookup(kRootIno, "alpine", Caller{0})), 0);
  EXPECT_EQ(error_of(fs.lookup(kRootIno, "alpine", other())), ENOENT);
  EXPECT_EQ(error_of(fs.lookup(kRootIno, "python:3.12", other())), ENOENT);
  EXPECT_EQ(error_of(fs.lookup(kRootIno, "docker.io", other())), ENOENT);
  EXPECT_EQ(error_of(fs.lookup(kRootIno, "127.0.0.1:1", other())), ENOENT);
  auto level = fs.lookup(kRootIno, "localhost:5000", other());
  ASSERT_TRUE(level.ok()) << level.error().message;
  auto image = fs.lookup(level->ino, "demo", other());
  ASSERT_TRUE(image.ok()) << image.error().message;
  image = fs.lookup(image->ino, "app:1", other());
  ASSERT_TRUE(image.ok()) << image.error().message;
  EXPECT_EQ(error_of(fs.lookup(image->ino, "digest", other())), 0);
  // A directory the owner opened, reached by another user by its inode (as the kernel's cache
  // would let it): the files of a registry not allowed are ENOENT too.
  Entry alpine_dir = must_lookup(fs, "alpine");
  EXPECT_EQ(error_of(fs.lookup(alpine_dir.ino, "digest", other())), ENOENT);
  EXPECT_FALSE(fs.readdir(alpine_dir.ino, other()).ok());
  // Listings hide what another user cannot look up.
  auto top = fs.readdir(kRootIno, other());
  ASSERT_TRUE(top.ok());
  EXPECT_EQ(testing::names_of(*top),
            (Names{".", "..", ".platform", ".status", ".metrics", "localhost:5000"}));
  auto owner_top = fs.readdir(kRootIno);
  ASSERT_TRUE(owner_top.ok());
  EXPECT_EQ(testing::names_of(*owner_top),
            (Names{".", "..", ".platform", ".status", ".metrics", "alpine:latest", "localhost:5000",
                   "python:3.12"}));
}

TEST_F(OtherUserTest, AStarAllowsEveryRegistry) {
  Mounted m = mount_as(info(), Access{::getuid(), {"*"}});
  EXPECT_EQ(error_of(m.fs->lookup(kRootIno, "alpine", other())), 0);
  EXPECT_EQ(error_of(m.fs->lookup(kRootIno, "python:3.12", other())), 0);
}

TEST_F(OtherUserTest, NoNetworkForANameNotAllowed) {
  // 127.0.0.1:1 refuses connections: a lookup that tried would fail with EIO and a log line.
  Mounted m = mount_as(info(), Access{::getuid(), {"localhost:5000"}});
  auto dead = m.fs->lookup(kRootIno, "127.0.0.1:1", Caller{::getuid()});
  ASSERT_TRUE(dead.ok());
  EXPECT_EQ(error_of(m.fs->lookup(dead->ino, "app:1", other())), ENOENT);
  EXPECT_TRUE(logged().empty()) << logged()[0];
  // The owner's lookup does go out (and fails): the check was what kept the other one home.
  EXPECT_EQ(error_of(m.fs->lookup(dead->ino, "app:1")), EIO);
  EXPECT_FALSE(logged().empty());
}

TEST_F(OtherUserTest, StatusShowsAnotherUserNoRegistryText) {
  Mounted m = mount_as(info(), Access{::getuid(), {"localhost:5000"}});
  fail_hostile(*m.fs);
  nlohmann::json mine = parse_strictly(status_text(*m.fs));
  nlohmann::json theirs = parse_strictly(status_text(*m.fs, other()));
  ASSERT_EQ(mine["recent_errors"].size(), theirs["recent_errors"].size());
  ASSERT_FALSE(theirs["recent_errors"].empty());
  std::string my_error = mine["recent_errors"].back()["error"];
  std::string their_error = theirs["recent_errors"].back()["error"];
  EXPECT_TRUE(contains(my_error, "hardlink")) << my_error;
  EXPECT_FALSE(contains(their_error, "hardlink")) << their_error;
  EXPECT_FALSE(contains(their_error, "bad")) << their_error;
  EXPECT_TRUE(contains(their_error, "localhost:5000/hostile:1")) << their_error;
  EXPECT_TRUE(contains(their_error, "EIO")) << their_error;
  // Root is trusted.
  nlohmann::json roots = parse_strictly(status_text(*m.fs, Caller{0}));
  EXPECT_EQ(roots["recent_errors"].back()["error"], my_error);
}

// --- the log's de-duplication table is bounded ------------------------------------------------

TEST_F(HostileTest, DistinctFailuresBeyondTheTableAreCountedNotLogged) {
  Mounted m = mount_as(info());
  auto dead = m.fs->lookup(kRootIno, "127.0.0.1:1");
  ASSERT_TRUE(dead.ok());
  constexpr int kLookups = 1100;  // more than the table holds (1024)
  for (int i = 0; i < kLookups; ++i)
    EXPECT_EQ(error_of(m.fs->lookup(dead->ino, "app:" + std::to_string(i))), EIO) << i;
  std::vector<std::string> lines = logged();
  EXPECT_EQ(lines.size(), 1024u);
  EXPECT_TRUE(contains(lines.back(), "127.0.0.1:1/app:1023")) << lines.back();
  // Status still answers, with the latest failures.
  nlohmann::json status = parse_strictly(status_text(*m.fs));
  EXPECT_EQ(status["recent_errors"].back()["image"],
            "127.0.0.1:1/app:" + std::to_string(kLookups - 1));
}

}  // namespace
}  // namespace imagefs::fs
