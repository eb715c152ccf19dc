// Platform normalization (containerd's spelling rules) and choosing a manifest from an index.
#include "registry/platform.h"

#include <gtest/gtest.h>

namespace imagefs::registry {
namespace {

TEST(Platform, ParsesAndNormalizes) {
  struct Case {
    const char* in;
    const char* out;
  };
  for (Case c : {Case{"linux/amd64", "linux/amd64"}, Case{"linux/x86_64", "linux/amd64"},
                 Case{"Linux/X86-64", "linux/amd64"}, Case{"linux/amd64/v1", "linux/amd64"},
                 Case{"linux/amd64/v3", "linux/amd64/v3"}, Case{"linux/arm64", "linux/arm64/v8"},
                 Case{"linux/aarch64", "linux/arm64/v8"}, Case{"linux/arm64/8", "linux/arm64/v8"},
                 Case{"linux/armhf", "linux/arm/v7"}, Case{"linux/armel", "linux/arm/v6"},
                 Case{"linux/arm", "linux/arm/v7"}, Case{"linux/arm/6", "linux/arm/v6"},
                 Case{"linux/armv7l", "linux/arm/v7"}, Case{"linux/i686", "linux/386"},
                 Case{"linux/ppc64le", "linux/ppc64le"}, Case{"linux/s390x", "linux/s390x"},
                 Case{"windows/amd64", "windows/amd64"}, Case{"macos/arm64", "darwin/arm64/v8"}}) {
    Result<Platform> p = parse_platform(c.in);
    ASSERT_TRUE(p.ok()) << c.in << ": " << p.error().message;
    EXPECT_EQ(p->str(), c.out) << c.in;
  }
}

TEST(Platform, SingleComponentIsCompletedFromTheHost) {
  Platform host = host_platform();
  Result<Platform> os = parse_platform("linux");
  ASSERT_TRUE(os.ok());
  EXPECT_EQ(os->architecture, host.architecture);
  Result<Platform> arch = parse_platform("arm64");
  ASSERT_TRUE(arch.ok());
  EXPECT_EQ(arch->str(), "linux/arm64/v8");
}

TEST(Platform, RejectsNonsense) {
  for (const char* bad :
       {"", "/", "linux/", "linux/amd64/v2/x", "linux amd64", "plan10", "linux/amd64/"}) {
    Result<Platform> p = parse_platform(bad);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.error().code, EINVAL);
    EXPECT_NE(p.error().message.find("invalid platform"), std::string::npos);
  }
}

TEST(Platform, HostIsNormalized) {
  Platform host = host_platform();
  EXPECT_EQ(host.os, "linux");
  EXPECT_EQ(normalize(host), host);
#if defined(__x86_64__)
  EXPECT_EQ(host.str(), "linux/amd64");
#endif
}

std::vector<Platform> index_platforms() {
  return {{"linux", "amd64", ""},
          {"linux", "arm64", "v8"},
          {"linux", "arm", "v6"},
          {"linux", "arm", "v7"},
          {"unknown", "unknown", ""}};
}

TEST(ChoosePlatform, ExactMatchFirst) {
  auto all = index_platforms();
  EXPECT_EQ(choose_platform(all, {"linux", "amd64", ""}).value(), 0u);
  EXPECT_EQ(choose_platform(all, {"linux", "arm", "v7"}).value(), 3u);
  EXPECT_EQ(choose_platform(all, {"linux", "arm", "v6"}).value(), 2u);
}

TEST(ChoosePlatform, Arm64WithoutVariantMatchesV8) {
  std::vector<Platform> plain{{"linux", "amd64", ""}, {"linux", "arm64", ""}};
  EXPECT_EQ(choose_platform(plain, parse_platform("linux/arm64").value()).value(), 1u);
  EXPECT_EQ(choose_platform(plain, parse_platform("linux/aarch64/v8").value()).value(), 1u);
  EXPECT_EQ(choose_platform(index_platforms(), {"linux", "aarch64", ""}).value(), 1u);
}

TEST(ChoosePlatform, NewerVariantRunsOlderOnes) {
  std::vector<Platform> older{{"linux", "arm", "v5"}, {"linux", "arm", "v6"}};
  EXPECT_EQ(choose_platform(older, {"linux", "arm", "v7"}).value(), 1u);  // best: v6
  std::vector<Platform> amd{{"linux", "amd64", "v2"}, {"linux", "amd64", ""}};
  EXPECT_EQ(choose_platform(amd, {"linux", "amd64", "v3"}).value(), 0u);
  EXPECT_EQ(choose_platform(amd, {"linux", "amd64", ""}).value(), 1u);
  // An older machine never gets a newer variant.
  std::vector<Platform> v3only{{"linux", "amd64", "v3"}};
  EXPECT_FALSE(choose_platform(v3only, {"linux", "amd64", ""}).ok());
}

TEST(ChoosePlatform, NoMatchListsWhatTheImageHas) {
  Result<size_t> r = choose_platform(index_platforms(), {"linux", "s390x", ""});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, ENOENT);
  EXPECT_EQ(r.error().message,
            "no image for platform linux/s390x; the image has: linux/amd64, linux/arm64/v8, "
            "linux/arm/v6, linux/arm/v7");
}

}  // namespace
}  // namespace imagefs::registry
