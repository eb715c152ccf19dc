// The images a mount serves (fs/images.h), over a store filled by a real pull from the fake
// registry: references to images without the network within the TTL, slots, one tree and one
// archive however many callers wait, and status.
#include "fs/images.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <vector>

#include "store/gc.h"
#include "store/lease.h"
#include "tests/unit/fs/fs_test_env.h"

namespace imagefs::fs {
namespace {

using testing::kAmd64;
using testing::kArm64;

registry::Reference ref(const std::string& text) { return registry::parse_reference(text).value(); }

class ImagesTest : public testing::FsEnv {
 protected:
  void SetUp() override {
    FsEnv::SetUp();
    pull_standard();
    images = mount().images;
  }
  std::shared_ptr<Image> must_image(const std::string& reference,
                                    const registry::Platform& platform = kAmd64) {
    auto image = images->image(ref(reference), platform);
    EXPECT_TRUE(image.ok()) << reference << ": " << image.error().message;
    return image.ok() ? *image : nullptr;
  }
  std::shared_ptr<Images> images;
};

TEST_F(ImagesTest, TagsWithinTheTtlComeFromTheStore) {
  auto py = must_image("python:3.12");
  ASSERT_NE(py, nullptr);
  EXPECT_EQ(py->record().manifest, python.manifest_digest());
  EXPECT_EQ(py->record().platform, "linux/amd64");
  EXPECT_EQ(py->manifest_json().value(), python.manifest);
  EXPECT_EQ(py->config_json().value(), python.config);
  EXPECT_FALSE(py->archives_mutable());
  EXPECT_EQ(images->default_platform(), kAmd64);

  auto arm = must_image("python:3.12", kArm64);
  ASSERT_NE(arm, nullptr);
  EXPECT_EQ(arm->record().manifest, python_arm.manifest_digest());
  EXPECT_TRUE(logged().empty());
}

TEST_F(ImagesTest, OneImageOneSlotHoweverItIsNamed) {
  auto a = must_image("python:3.12");
  auto b = must_image("docker.io/library/python:3.12");
  auto c = must_image("python@" + python.manifest_digest().str());
  auto alp = must_image("alpine");
  ASSERT_TRUE(a && b && c && alp);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, c);
  EXPECT_NE(a->slot(), alp->slot());
  EXPECT_NE(a->slot(), 0u);
  EXPECT_EQ(images->by_slot(a->slot()), a);
  EXPECT_EQ(images->by_slot(alp->slot()), alp);
  EXPECT_EQ(images->by_slot(0), nullptr);
  EXPECT_EQ(images->by_slot(1000), nullptr);
  auto status = nlohmann::json::parse(images->status_json(), nullptr, false);
  ASSERT_FALSE(status.is_discarded());
  EXPECT_EQ(status["images_open"], 2);
}

TEST_F(ImagesTest, RefsAreTheCatalogs) {
  auto refs = images->refs();
  ASSERT_TRUE(refs.ok());
  std::set<std::string> seen;
  for (const store::RefRecord& r : *refs) seen.insert(r.platform + " " + r.reference);
  EXPECT_EQ(seen, (std::set<std::string>{"linux/amd64 docker.io/library/alpine:latest",
                                         "linux/amd64 docker.io/library/python:3.12",
                                         "linux/arm64/v8 docker.io/library/python:3.12",
                                         "linux/amd64 localhost:5000/demo/app:1"}));
}

TEST_F(ImagesTest, ConcurrentCallersShareOneTreeAndOneArchive) {
  auto py = must_image("python:3.12");
  ASSERT_NE(py, nullptr);
  constexpr int kThreads = 8;
  std::vector<std::shared_ptr<overlay::Tree>> trees(kThreads);
  std::vector<std::shared_ptr<const cpio::Archive>> archives(kThreads);
  std::vector<std::thread> threads;
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&, i] {
      auto tree = py->tree();
      if (tree.ok()) trees[i] = *tree;
      auto archive = py->archive(cpio::Format::zstd);
      if (archive.ok()) archives[i] = *archive;
    });
  }
  for (std::thread& t : threads) t.join();
  for (int i = 0; i < kThreads; ++i) {
    ASSERT_NE(trees[i], nullptr) << i;
    ASSERT_NE(archives[i], nullptr) << i;
    EXPECT_EQ(trees[i], trees[0]);
    EXPECT_EQ(archives[i], archives[0]);
  }
  bool changed = true;
  auto again = py->archive(cpio::Format::zstd, &changed);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, archives[0]);
  EXPECT_FALSE(changed);
  EXPECT_EQ(trees[0]->resolve("etc/os-release").value().size, 29u);
}

// A registry on loopback that accepts connections, reads what comes and never answers; counts
// the connections it accepted (each request of a client that timed out is a new one).
class BlackHole {
 public:
  BlackHole() {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    EXPECT_EQ(::bind(fd_, reinterpret_cast<sockaddr*>(&addr), len), 0);
    EXPECT_EQ(::listen(fd_, 64), 0);
    EXPECT_EQ(::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len), 0);
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this] { serve(); });
  }
  ~BlackHole() {
    stop_ = true;
    thread_.join();
    for (int c : clients_) ::close(c);
    ::close(fd_);
  }
  BlackHole(const BlackHole&) = delete;
  BlackHole& operator=(const BlackHole&) = delete;
  [[nodiscard]] std::string host() const { return "127.0.0.1:" + std::to_string(port_); }
  [[nodiscard]] int connections() const { return accepted_.load(); }

 private:
  void serve() {
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) != 1) continue;
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      clients_.push_back(c);  // held open, never answered
      ++accepted_;
    }
  }
  int fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  std::vector<int> clients_;  // the serving thread's own until it is joined
  std::thread thread_;
};

TEST_F(ImagesTest, WaitersOfADeadRegistryShareOneTimeoutAndItsFailureIsRemembered) {
  BlackHole hole;
  ImagesOptions options = images_options();
  options.registry.request_timeout = std::chrono::seconds(1);
  options.registry.max_attempts = 3;
  options.negative_ttl = std::chrono::seconds(30);
  auto dead = mount(options).images;
  const registry::Reference app = registry::parse_reference(hole.host() + "/app:1").value();
  constexpr int kThreads = 8;
  std::vector<std::optional<Error>> errors(kThreads);
  std::vector<std::thread> threads;
  auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < kThreads; ++i)
    threads.emplace_back([&, i] {
      auto image = dead->image(app, kAmd64);
      if (!image.ok()) errors[i] = image.error();
    });
  for (std::thread& t : threads) t.join();
  auto took = std::chrono::steady_clock::now() - started;
  for (int i = 0; i < kThreads; ++i) {
    ASSERT_TRUE(errors[i].has_value()) << i;
    EXPECT_EQ(errors[i]->code, EIO);
    EXPECT_EQ(errors[i]->message, "registry " + hole.host() + " did not answer within 1 s");
  }
  EXPECT_EQ(hole.connections(), 1) << "eight waiters, one request";
  EXPECT_LT(took, std::chrono::seconds(5)) << "the waiters waited through one timeout together";
  // Within the negative TTL the failure is answered without a request.
  for (int i = 0; i < 50; ++i) {
    auto image = dead->image(app, kAmd64);
    ASSERT_FALSE(image.ok());
    EXPECT_EQ(image.error().code, EIO);
  }
  EXPECT_EQ(hole.connections(), 1) << "a storm of lookups within the negative TTL";
  // So is another tag of the registry that did not answer: the kernel would send such lookups
  // one at a time, each waiting a timeout.
  auto other_started = std::chrono::steady_clock::now();
  auto other = dead->image(registry::parse_reference(hole.host() + "/other:2").value(), kAmd64);
  ASSERT_FALSE(other.ok());
  EXPECT_EQ(other.error().message, "registry " + hole.host() + " did not answer within 1 s");
  EXPECT_LT(std::chrono::steady_clock::now() - other_started, std::chrono::milliseconds(500));
  EXPECT_EQ(hole.connections(), 1) << "another tag of a registry that did not answer";
  // Logged once, naming the registry.
  size_t lines = 0;
  for (const std::string& line : logged())
    lines += line.find(hole.host() + "/app:1: registry " + hole.host() + " did not answer") !=
             std::string::npos;
  EXPECT_EQ(lines, 1u);
}

TEST_F(ImagesTest, ArchivesOfAFreshImagesComeFromTheStore) {
  // A second daemon over the same store finds the archive's plan and segments ready.
  auto first = must_image("python:3.12");
  ASSERT_NE(first, nullptr);
  auto made = first->archive(cpio::Format::gzip);
  ASSERT_TRUE(made.ok()) << made.error().message;
  auto other = mount().images;
  auto second = other->image(ref("python:3.12"), kAmd64);
  ASSERT_TRUE(second.ok());
  auto cached = (*second)->archive(cpio::Format::gzip);
  ASSERT_TRUE(cached.ok()) << cached.error().message;
  EXPECT_EQ((*cached)->size(), (*made)->size());
  EXPECT_EQ((*cached)->stats().segments_built, 0u);
}

// --- idle images -------------------------------------------------------------------------------

// Images with an idle time of ten minutes on a clock the test moves.
class IdleTest : public testing::FsEnv {
 protected:
  void SetUp() override {
    FsEnv::SetUp();
    pull_standard();
    ImagesOptions o = images_options();
    o.idle = std::chrono::minutes(10);
    o.clock = [this] {
      return std::chrono::steady_clock::time_point(std::chrono::milliseconds(now_ms.load()));
    };
    m = mount(std::move(o));
  }
  void advance(std::chrono::minutes d) { now_ms += std::chrono::milliseconds(d).count(); }
  bool logged_line(std::string_view part) {
    for (const std::string& line : logged())
      if (line.find(part) != std::string::npos) return true;
    return false;
  }
  std::atomic<int64_t> now_ms{1000000000};
  testing::Mounted m;
};

TEST_F(IdleTest, AnIdleImageIsClosedItsLeaseReleasedAndItsSlotReopens) {
  std::shared_ptr<Image> py = m.images->image(ref("python:3.12"), kAmd64).value();
  const uint32_t slot = py->slot();
  const store::Digest manifest = py->record().manifest;
  EXPECT_TRUE(store::in_use(store_root, manifest));

  advance(std::chrono::minutes(11));
  EXPECT_EQ(m.images->close_idle(), 0u) << "someone holds it";
  py.reset();
  EXPECT_EQ(m.images->close_idle(), 1u);
  EXPECT_FALSE(store::in_use(store_root, manifest)) << "gc may remove it now";
  EXPECT_TRUE(logged_line("closed after being idle"));

  // The slot reopens it: the same slot, a new lease.
  auto again = m.images->by_slot(slot);
  ASSERT_NE(again, nullptr);
  EXPECT_EQ(again->slot(), slot);
  EXPECT_EQ(again->record().manifest, manifest);
  EXPECT_TRUE(store::in_use(store_root, manifest));
  // And so does the name: still the same slot.
  EXPECT_EQ(m.images->image(ref("python:3.12"), kAmd64).value()->slot(), slot);
  again = nullptr;

  // Used five minutes ago: not idle yet.
  advance(std::chrono::minutes(5));
  EXPECT_EQ(m.images->close_idle(), 0u);
  advance(std::chrono::minutes(6));
  EXPECT_EQ(m.images->close_idle(), 1u);
  EXPECT_EQ(m.images->close_idle(), 0u) << "nothing open";
}

TEST_F(IdleTest, OpenFilesAndKernelReferencesToRootfsKeepAnImageOpen) {
  Entry archive = testing::must_lookup(*m.fs, "python:3.12/initramfs.cpio");
  // Three references to rootfs inodes, as the kernel would hold after `cat rootfs/etc/os-release`.
  Entry rootfs = testing::must_lookup(*m.fs, "python:3.12/rootfs");
  Entry etc = m.fs->lookup(rootfs.ino, "etc").value();
  Entry release = m.fs->lookup(etc.ino, "os-release").value();
  std::shared_ptr<OpenFile> file = m.fs->open(archive.ino, O_RDONLY).value();
  advance(std::chrono::minutes(30));
  EXPECT_EQ(m.images->close_idle(), 0u) << "an open file holds its image";
  std::string bytes = testing::read_all(*m.fs, *file);
  EXPECT_EQ(bytes.size(), static_cast<size_t>(archive.attr.st_size));
  file.reset();
  EXPECT_EQ(m.images->close_idle(), 0u) << "the kernel holds inodes of its rootfs";
  m.fs->forget(release.ino, 1);
  m.fs->forget(etc.ino, 1);
  EXPECT_EQ(m.images->close_idle(), 0u) << "the kernel holds rootfs itself";
  m.fs->forget(rootfs.ino, 1);
  EXPECT_EQ(m.images->close_idle(), 1u);
  // The kernel's fixed numbers (the archive's) reach the same image again, reopened.
  EXPECT_EQ(testing::read_ino(*m.fs, archive.ino), bytes);
  // readdirplus entries of rootfs count as references too (readdir itself does not).
  Ino root = 0;
  auto image_dir = m.fs->readdir(testing::must_lookup(*m.fs, "python:3.12").ino);
  ASSERT_TRUE(image_dir.ok());
  for (const DirItem& item : *image_dir)
    if (item.name == "rootfs") root = item.entry.ino;
  Ino bin = 0;
  auto rootfs_dir = m.fs->readdir(root);
  ASSERT_TRUE(rootfs_dir.ok());
  for (const DirItem& item : *rootfs_dir)
    if (item.name == "bin") bin = item.entry.ino;
  ASSERT_NE(bin, 0u);
  m.fs->remember(bin);  // sent by readdirplus
  advance(std::chrono::minutes(30));
  EXPECT_EQ(m.images->close_idle(), 0u) << "a readdirplus entry is a reference";
  m.fs->forget(bin, 1);
  EXPECT_EQ(m.images->close_idle(), 1u);
  // rootfs looked up anew serves the same content.
  EXPECT_EQ(testing::read_path(*m.fs, "python:3.12/rootfs/etc/os-release"),
            "NAME=imagefs-test\nARCH=amd64\n");
}

TEST_F(IdleTest, AClosedImageThatLeftTheStoreIsENOENTWithALogLine) {
  Entry digest = testing::must_lookup(*m.fs, "alpine/digest");
  const uint32_t slot = static_cast<uint32_t>(digest.ino >> 40);
  advance(std::chrono::minutes(11));
  EXPECT_GE(m.images->close_idle(), 1u);
  // gc may take it now that no lease holds it; rm removes it at once.
  auto removed = store::remove_reference(*blobs, *catalog, "docker.io/library/alpine:latest", "");
  ASSERT_TRUE(removed.ok()) << removed.error().message;
  ASSERT_EQ(removed->images_removed.size(), 1u);
  EXPECT_EQ(m.images->by_slot(slot), nullptr);
  EXPECT_EQ(testing::error_of(m.fs->getattr(digest.ino)), ENOENT);
  EXPECT_TRUE(logged_line("cannot reopen " + alpine.manifest_digest().str()));
}

TEST_F(IdleTest, ZeroIdleNeverCloses) {
  ImagesOptions o = images_options();
  o.idle = std::chrono::milliseconds(0);
  auto images = mount(std::move(o)).images;
  ASSERT_TRUE(images->image(ref("python:3.12"), kAmd64).ok());
  EXPECT_EQ(images->close_idle(), 0u);
}

}  // namespace
}  // namespace imagefs::fs
