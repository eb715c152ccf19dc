// The default cache directory for root and for users, per the XDG base directory spec; a store's
// directories are private to its user (0700), new or existing.
#include "store/cache_dir.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <filesystem>
#include <fstream>

#include "store/blob_store.h"
#include "store/catalog.h"
#include "store/derived.h"
#include "store/lease.h"
#include "tests/unit/store/store_test_util.h"

namespace imagefs::store {
namespace {

TEST(CacheDir, RootUsesVarLib) {
  auto dir = default_cache_dir(CacheDirInputs{0, "/home/x/.cache", "/root"});
  ASSERT_TRUE(dir.ok());
  EXPECT_EQ(*dir, "/var/lib/imagefs");
}

TEST(CacheDir, UsersUseXdgCacheHome) {
  auto dir = default_cache_dir(CacheDirInputs{1000, "/tmp/cache", "/home/u"});
  ASSERT_TRUE(dir.ok());
  EXPECT_EQ(*dir, "/tmp/cache/imagefs");
}

TEST(CacheDir, UsersFallBackToHome) {
  for (std::optional<std::string> xdg :
       {std::optional<std::string>(), std::optional<std::string>(""),
        std::optional<std::string>("relative/cache")}) {
    auto dir = default_cache_dir(CacheDirInputs{1000, xdg, "/home/u"});
    ASSERT_TRUE(dir.ok());
    EXPECT_EQ(*dir, "/home/u/.cache/imagefs");
  }
}

TEST(CacheDir, NoHomeIsAnError) {
  auto dir = default_cache_dir(CacheDirInputs{1000, std::nullopt, std::nullopt});
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(dir.error().code, ENOENT);
  EXPECT_NE(dir.error().message.find("--cache-dir"), std::string::npos);
}

TEST(CacheDir, ThisProcess) {
  auto dir = default_cache_dir();
  ASSERT_TRUE(dir.ok()) << dir.error().message;
  EXPECT_TRUE(dir->is_absolute());
}

mode_t mode_of(const std::filesystem::path& p) {
  struct stat st {};
  EXPECT_EQ(::stat(p.c_str(), &st), 0) << p;
  return st.st_mode & 07777;
}

// Every directory under `root` (and `root`), with its mode if it is not 0700.
std::vector<std::string> open_dirs(const std::filesystem::path& root) {
  std::vector<std::string> open;
  if (mode_of(root) != 0700) open.push_back(root.string());
  for (const auto& e : std::filesystem::recursive_directory_iterator(root))
    if (e.is_directory() && !e.is_symlink() && mode_of(e.path()) != 0700)
      open.push_back(e.path().string());
  return open;
}

TEST(PrivateStore, NewStoreAndItsParentsAre0700WhateverTheUmask) {
  testing::TempDir tmp;
  mode_t old = ::umask(0);
  auto made = make_private_store_dir(tmp.path() / "home/.cache/imagefs");
  ::umask(old);
  ASSERT_TRUE(made.ok()) << made.error().message;
  EXPECT_EQ(mode_of(tmp.path() / "home/.cache/imagefs"), 0700);
  EXPECT_EQ(mode_of(tmp.path() / "home/.cache"), 0700);
}

TEST(PrivateStore, EveryDirectoryTheStoreMakesIs0700) {
  testing::TempDir tmp;
  mode_t old = ::umask(0);
  const std::filesystem::path root = tmp.path() / "store";
  auto blobs = BlobStore::open(root);
  ASSERT_TRUE(blobs.ok()) << blobs.error().message;
  auto catalog = Catalog::open(Catalog::file_in(root));
  ASSERT_TRUE(catalog.ok()) << catalog.error().message;
  const Digest blob = Digest::of("layer");
  ASSERT_TRUE((*blobs)->put(blob, "layer").ok());
  auto build = DerivedBuild::begin(**blobs, blob, "index", IfPresent::keep);
  ASSERT_TRUE(build.ok()) << build.error().message;
  ASSERT_TRUE((*build)->commit().ok());
  auto shared = build_shared(
      root, "gzip", std::string(blob.hex()), Sync::no, [](int fd, const std::filesystem::path&) {
        return ::write(fd, "x", 1) == 1 ? Result<void>() : make_error(EIO, "write");
      });
  ASSERT_TRUE(shared.ok()) << shared.error().message;
  auto lease = Lease::image(root, blob);
  ASSERT_TRUE(lease.ok()) << lease.error().message;
  ::umask(old);
  EXPECT_TRUE(std::filesystem::exists(shared_path(root, "gzip", blob.hex())));
  EXPECT_EQ(open_dirs(root), std::vector<std::string>{});
}

TEST(PrivateStore, AnExistingOpenStoreIsClosedOnOpen) {
  testing::TempDir tmp;
  const std::filesystem::path root = tmp.path() / "store";
  std::filesystem::create_directories(root / "blobs/sha256");
  ASSERT_EQ(::chmod(root.c_str(), 0755), 0);
  std::ofstream(root / "blobs/sha256/secret") << "a 0600 file of an image";
  auto blobs = BlobStore::open(root);
  ASSERT_TRUE(blobs.ok()) << blobs.error().message;
  EXPECT_EQ(mode_of(root), 0700);
  // Through a symlinked root too: the directory it leads to.
  std::filesystem::create_directory(tmp.path() / "real");
  ASSERT_EQ(::chmod((tmp.path() / "real").c_str(), 0777), 0);
  std::filesystem::create_directory_symlink(tmp.path() / "real", tmp.path() / "link");
  ASSERT_TRUE(make_private_store_dir(tmp.path() / "link").ok());
  EXPECT_EQ(mode_of(tmp.path() / "real"), 0700);
}

TEST(PrivateStore, AFileWhereTheStoreShouldBeIsAnError) {
  testing::TempDir tmp;
  std::ofstream(tmp.path() / "file") << "x";
  auto made = make_private_store_dir(tmp.path() / "file");
  ASSERT_FALSE(made.ok());
  EXPECT_EQ(made.error().code, ENOTDIR);
  EXPECT_NE(made.error().message.find((tmp.path() / "file").string()), std::string::npos);
}

}  // namespace
}  // namespace imagefs::store
