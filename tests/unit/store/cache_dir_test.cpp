// The default cache directory for root and for users, per the XDG base directory spec.
#include "store/cache_dir.h"

#include <gtest/gtest.h>

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

}  // namespace
}  // namespace imagefs::store
