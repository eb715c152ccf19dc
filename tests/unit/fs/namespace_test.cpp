// The mount's names as references (fs/namespace.h): which paths are images, levels or both, the
// names a level lists, and the platform directories' names. Pure logic: no store, no registry.
#include "fs/namespace.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace imagefs::fs {
namespace {

const std::string kDigest =
    "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

PathInfo must_classify(std::string_view path) {
  auto info = classify(path);
  EXPECT_TRUE(info.ok()) << path << ": " << (info.ok() ? "" : info.error().message);
  return info.ok() ? *info : PathInfo{};
}

int classify_error(std::string_view path) {
  auto info = classify(path);
  return info.ok() ? 0 : info.error().code;
}

// --- classify -----------------------------------------------------------------------------------

TEST(Classify, TaggedNameIsAnImageOnly) {
  PathInfo info = must_classify("python:3.12");
  EXPECT_EQ(info.kind, DirKind::image);
  ASSERT_TRUE(info.reference.has_value());
  EXPECT_EQ(info.reference->str(), "docker.io/library/python:3.12");
}

TEST(Classify, UntaggedNameIsBothTheLatestImageAndALevel) {
  PathInfo alpine = must_classify("alpine");
  EXPECT_EQ(alpine.kind, DirKind::both);
  ASSERT_TRUE(alpine.reference.has_value());
  EXPECT_EQ(alpine.reference->str(), "docker.io/library/alpine:latest");

  PathInfo app = must_classify("org/app");
  EXPECT_EQ(app.kind, DirKind::both);
  ASSERT_TRUE(app.reference.has_value());
  EXPECT_EQ(app.reference->str(), "docker.io/org/app:latest");
}

TEST(Classify, RegistryHostsAloneAreLevelsOnly) {
  for (std::string_view host :
       {"ghcr.io", "localhost", "localhost:5000", "127.0.0.1:5000", "[::1]:5000", "[::1]"}) {
    PathInfo info = must_classify(host);
    EXPECT_EQ(info.kind, DirKind::level) << host;
    EXPECT_FALSE(info.reference.has_value()) << host;
  }
}

TEST(Classify, NameUnderARegistryIsBoth) {
  // Not a host by itself any more: "ghcr.io/org" is the image ghcr.io/org:latest and the level
  // above ghcr.io/org/app.
  PathInfo info = must_classify("ghcr.io/org");
  EXPECT_EQ(info.kind, DirKind::both);
  ASSERT_TRUE(info.reference.has_value());
  EXPECT_EQ(info.reference->str(), "ghcr.io/org:latest");

  PathInfo demo = must_classify("localhost:5000/demo");
  EXPECT_EQ(demo.kind, DirKind::both);
  EXPECT_EQ(demo.reference->str(), "localhost:5000/demo:latest");
}

TEST(Classify, FullNamesAndDigestsAreImages) {
  PathInfo full = must_classify("docker.io/library/python:3.12");
  EXPECT_EQ(full.kind, DirKind::image);
  EXPECT_EQ(full.reference->str(), "docker.io/library/python:3.12");

  PathInfo pinned = must_classify("alpine@" + kDigest);
  EXPECT_EQ(pinned.kind, DirKind::image);
  ASSERT_TRUE(pinned.reference.has_value());
  EXPECT_EQ(pinned.reference->digest, kDigest);
  EXPECT_EQ(pinned.reference->str(), "docker.io/library/alpine@" + kDigest);

  PathInfo deep = must_classify("ghcr.io/org/app:1.0");
  EXPECT_EQ(deep.kind, DirKind::image);
  EXPECT_EQ(deep.reference->str(), "ghcr.io/org/app:1.0");

  PathInfo local = must_classify("localhost:5000/demo/app:1");
  EXPECT_EQ(local.kind, DirKind::image);
  EXPECT_EQ(local.reference->str(), "localhost:5000/demo/app:1");
}

TEST(Classify, NumericTagIsNotAPort) {
  // One component with a numeric tag but no '.' before the ':' is an image, not a registry.
  PathInfo info = must_classify("python:312");
  EXPECT_EQ(info.kind, DirKind::image);
  EXPECT_EQ(info.reference->str(), "docker.io/library/python:312");
}

TEST(Classify, InvalidNamesAreENOENT) {
  for (std::string_view bad :
       {"a:b:c", "x@y", "alpine@sha256:short", "-lead", "a//b", "org/app:1/x", ".."}) {
    EXPECT_EQ(classify_error(bad), ENOENT) << bad;
  }
  auto r = classify("x@y");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("\"x@y\" is not an image reference"), std::string::npos)
      << r.error().message;
}

// fs/namespace.h: a single component is a level only when it looks like a registry host ('.'
// before any ':', "localhost", or a bracketed IPv6 address); otherwise it is a valid reference
// (both) or nothing (ENOENT). "Python" is neither, though parse_reference("Python/x") would take
// an upper-case first component as a registry (docker's rule): ENOENT, as for "a:b:c".
TEST(Classify, UpperCaseSingleComponentIsENOENT) {
  EXPECT_EQ(classify_error("Python"), ENOENT);
  EXPECT_EQ(classify_error("Alpine"), ENOENT);
}

TEST(Classify, UpperCaseIsENOENTWhereItCannotBeAHost) {
  EXPECT_EQ(classify_error("Python:3.12"), ENOENT);
  EXPECT_EQ(classify_error("org/Python"), ENOENT);
  EXPECT_EQ(classify_error("ghcr.io/Org/app:1"), ENOENT);
}

TEST(Classify, TopLevelIsNotAReference) { EXPECT_EQ(classify_error(""), EINVAL); }

// --- child_path ---------------------------------------------------------------------------------

TEST(ChildPath, JoinsOneComponent) {
  EXPECT_EQ(child_path("", "python:3.12").value(), "python:3.12");
  EXPECT_EQ(child_path("ghcr.io", "org").value(), "ghcr.io/org");
  EXPECT_EQ(child_path("ghcr.io/org", "app:1").value(), "ghcr.io/org/app:1");
}

TEST(ChildPath, RejectsWhatCannotBeAComponent) {
  for (std::string_view bad : {"", ".", "..", "a/b", "/", "a/"}) {
    auto r = child_path("ghcr.io", bad);
    ASSERT_FALSE(r.ok()) << bad;
    EXPECT_EQ(r.error().code, ENOENT) << bad;
    auto top = child_path("", bad);
    ASSERT_FALSE(top.ok()) << bad;
    EXPECT_EQ(top.error().code, ENOENT) << bad;
  }
}

// --- list_level ---------------------------------------------------------------------------------

store::RefRecord ref(std::string reference, std::string platform = "linux/amd64") {
  return store::RefRecord{std::move(reference), std::move(platform), store::Digest::of(""),
                          std::nullopt, 0};
}

std::vector<store::RefRecord> sample_refs() {
  return {
      ref("docker.io/library/python:3.12"),
      ref("docker.io/library/python:3.12", "linux/arm64/v8"),
      ref("docker.io/library/python:3.11"),
      ref("docker.io/library/alpine:latest"),
      ref("docker.io/library/alpine@" + kDigest),
      ref("docker.io/org/app:1"),
      ref("localhost:5000/demo/app:1"),
      ref("localhost:5000/demo/other:2"),
      ref("ghcr.io/org/app:1.0"),
      ref("ghcr.io/org/tool:2"),
      ref("ghcr.io/solo:3", "linux/arm/v7"),
      ref("not a reference"),
  };
}

using Names = std::vector<std::string>;

TEST(ListLevel, TopListsShortNamesForThePlatformSortedOnce) {
  EXPECT_EQ(list_level(sample_refs(), "linux/amd64", ""),
            (Names{"alpine:latest", "alpine@" + kDigest, "ghcr.io", "localhost:5000", "org",
                   "python:3.11", "python:3.12"}));
  EXPECT_EQ(list_level(sample_refs(), "linux/arm64/v8", ""), (Names{"python:3.12"}));
  EXPECT_EQ(list_level(sample_refs(), "linux/arm/v7", ""), (Names{"ghcr.io"}));
  EXPECT_TRUE(list_level(sample_refs(), "linux/s390x", "").empty());
  EXPECT_TRUE(list_level({}, "linux/amd64", "").empty());
}

TEST(ListLevel, BelowARegistry) {
  EXPECT_EQ(list_level(sample_refs(), "linux/amd64", "localhost:5000"), (Names{"demo"}));
  EXPECT_EQ(list_level(sample_refs(), "linux/amd64", "localhost:5000/demo"),
            (Names{"app:1", "other:2"}));
  EXPECT_EQ(list_level(sample_refs(), "linux/amd64", "ghcr.io"), (Names{"org"}));
  EXPECT_EQ(list_level(sample_refs(), "linux/amd64", "ghcr.io/org"), (Names{"app:1.0", "tool:2"}));
  EXPECT_EQ(list_level(sample_refs(), "linux/arm/v7", "ghcr.io"), (Names{"solo:3"}));
}

TEST(ListLevel, DockerHubUnderItsFullNameAndItsShortOne) {
  EXPECT_EQ(list_level(sample_refs(), "linux/amd64", "docker.io"), (Names{"library", "org"}));
  EXPECT_EQ(list_level(sample_refs(), "linux/amd64", "docker.io/library"),
            (Names{"alpine:latest", "alpine@" + kDigest, "python:3.11", "python:3.12"}));
  EXPECT_EQ(list_level(sample_refs(), "linux/amd64", "org"), (Names{"app:1"}));
  EXPECT_EQ(list_level(sample_refs(), "linux/amd64", "docker.io/org"), (Names{"app:1"}));
}

TEST(ListLevel, NothingBelowAnImageOrAPrefixThatIsNotAComponent) {
  EXPECT_TRUE(list_level(sample_refs(), "linux/amd64", "python:3.12").empty());
  EXPECT_TRUE(list_level(sample_refs(), "linux/amd64", "alpine").empty());
  // "ghcr" is a prefix of "ghcr.io" but not a component of it.
  EXPECT_TRUE(list_level(sample_refs(), "linux/amd64", "ghcr").empty());
  EXPECT_TRUE(list_level(sample_refs(), "linux/amd64", "localhost:5000/dem").empty());
}

// A name the top lists for an image must reach that image. Docker Hub's official images are
// listed by their short names, but a short name that reads as a registry host ("foo.bar:1", a
// '.' and a numeric tag; "localhost:1") is a level by the host rule: the listed directory is an
// empty level, not the image. So such names are listed by their full name (under "docker.io"):
// every listed level has something below it.
TEST(ListLevel, ListedLevelsAreNotEmpty) {
  std::vector<store::RefRecord> refs{ref("docker.io/library/foo.bar:1"),
                                     ref("docker.io/library/localhost:1")};
  for (const std::string& name : list_level(refs, "linux/amd64", "")) {
    PathInfo info = must_classify(name);
    if (info.kind == DirKind::level) {
      EXPECT_FALSE(list_level(refs, "linux/amd64", name).empty())
          << name << " is listed at the top but is an empty level";
    }
  }
}

// --- platform directories -----------------------------------------------------------------------

TEST(PlatformDir, RoundTrip) {
  auto arm64 = parse_platform_dir("linux-arm64");
  ASSERT_TRUE(arm64.ok()) << arm64.error().message;
  EXPECT_EQ(arm64->str(), "linux/arm64/v8");  // normalized as containerd does
  EXPECT_EQ(platform_dir_name(*arm64), "linux-arm64-v8");
  EXPECT_EQ(parse_platform_dir("linux-arm64-v8").value(), *arm64);

  auto arm = parse_platform_dir("linux-arm-v7");
  ASSERT_TRUE(arm.ok()) << arm.error().message;
  EXPECT_EQ(*arm, (registry::Platform{"linux", "arm", "v7"}));
  EXPECT_EQ(platform_dir_name(*arm), "linux-arm-v7");

  auto amd64 = parse_platform_dir("linux-amd64");
  ASSERT_TRUE(amd64.ok());
  EXPECT_EQ(platform_dir_name(*amd64), "linux-amd64");

  for (const registry::Platform& p :
       {registry::Platform{"linux", "amd64", ""}, registry::Platform{"linux", "arm", "v6"},
        registry::Platform{"linux", "riscv64", ""}, registry::Platform{"linux", "s390x", ""}}) {
    auto back = parse_platform_dir(platform_dir_name(p));
    ASSERT_TRUE(back.ok()) << p.str();
    EXPECT_EQ(*back, p);
  }
}

TEST(PlatformDir, BadNamesAreENOENT) {
  for (std::string_view bad : {"", "linux", "arm64", "..", ".", "linux--amd64", "linux-amd64-v8-x",
                               "linux-amd64!", "-amd64", "linux-"}) {
    auto r = parse_platform_dir(bad);
    ASSERT_FALSE(r.ok()) << bad << " -> " << r->str();
    EXPECT_EQ(r.error().code, ENOENT) << bad;
  }
  auto r = parse_platform_dir("linux");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message.find("os-arch"), std::string::npos) << r.error().message;
}

}  // namespace
}  // namespace imagefs::fs
