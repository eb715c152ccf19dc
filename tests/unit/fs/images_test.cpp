// The images a mount serves (fs/images.h), over a store filled by a real pull from the fake
// registry: references to images without the network within the TTL, slots, one tree and one
// archive however many callers wait, and status.
#include "fs/images.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <set>
#include <thread>
#include <vector>

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

}  // namespace
}  // namespace imagefs::fs
