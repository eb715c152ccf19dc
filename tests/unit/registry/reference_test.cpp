// Reference parsing against docker's normalization rules (distribution/reference).
#include "registry/reference.h"

#include <gtest/gtest.h>

namespace imagefs::registry {
namespace {

struct Case {
  const char* input;
  const char* canonical;
  const char* familiar;
};

class ValidReference : public ::testing::TestWithParam<Case> {};

TEST_P(ValidReference, NormalizesLikeDocker) {
  const Case& c = GetParam();
  Result<Reference> ref = parse_reference(c.input);
  ASSERT_TRUE(ref.ok()) << ref.error().message;
  EXPECT_EQ(ref->str(), c.canonical);
  EXPECT_EQ(ref->familiar(), c.familiar);
  // The canonical form parses back to the same reference.
  Result<Reference> again = parse_reference(ref->str());
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(*again, *ref);
}

constexpr const char* kDigest =
    "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";

INSTANTIATE_TEST_SUITE_P(
    Docker, ValidReference,
    ::testing::Values(
        Case{"python", "docker.io/library/python:latest", "python:latest"},
        Case{"python:3.12-alpine", "docker.io/library/python:3.12-alpine", "python:3.12-alpine"},
        Case{"user/app:1", "docker.io/user/app:1", "user/app:1"},
        Case{"docker.io/library/busybox", "docker.io/library/busybox:latest", "busybox:latest"},
        Case{"index.docker.io/user/app", "docker.io/user/app:latest", "user/app:latest"},
        Case{"localhost:5000/app", "localhost:5000/app:latest", "localhost:5000/app:latest"},
        Case{"localhost/app:v2", "localhost/app:v2", "localhost/app:v2"},
        Case{"127.0.0.1:5000/a/b/c:x", "127.0.0.1:5000/a/b/c:x", "127.0.0.1:5000/a/b/c:x"},
        Case{"[::1]:5000/app:1", "[::1]:5000/app:1", "[::1]:5000/app:1"},
        Case{"ghcr.io/org/team/app:v1", "ghcr.io/org/team/app:v1", "ghcr.io/org/team/app:v1"},
        Case{"my-registry.example.com:443/a_b/c__d/e-f/g.h:T_1.x-y",
             "my-registry.example.com:443/a_b/c__d/e-f/g.h:T_1.x-y",
             "my-registry.example.com:443/a_b/c__d/e-f/g.h:T_1.x-y"},
        Case{"a---b/c", "docker.io/a---b/c:latest", "a---b/c:latest"},
        Case{"localhost", "docker.io/library/localhost:latest", "localhost:latest"},
        // Found by fuzzing: dropping docker.io/ here would make a.b read as a registry.
        Case{"index.docker.io/a.b/c:1", "docker.io/a.b/c:1", "docker.io/a.b/c:1"},
        // Found by fuzzing: without "library/" this would read as an image ID.
        Case{"library/2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
             "docker.io/library/2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae:"
             "latest",
             "library/2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae:latest"},
        Case{"docker.io/localhost/c", "docker.io/localhost/c:latest",
             "docker.io/localhost/c:latest"}));

TEST(Reference, DigestOnlyHasNoTag) {
  std::string text = std::string("app@") + kDigest;
  Result<Reference> ref = parse_reference(text);
  ASSERT_TRUE(ref.ok()) << ref.error().message;
  EXPECT_EQ(ref->tag, "");
  EXPECT_EQ(ref->digest, kDigest);
  EXPECT_EQ(ref->str(), std::string("docker.io/library/app@") + kDigest);
}

TEST(Reference, TagAndDigestKeepsBoth) {
  std::string text = std::string("ghcr.io/o/app:1.0@") + kDigest;
  Result<Reference> ref = parse_reference(text);
  ASSERT_TRUE(ref.ok()) << ref.error().message;
  EXPECT_EQ(ref->domain, "ghcr.io");
  EXPECT_EQ(ref->repository, "o/app");
  EXPECT_EQ(ref->tag, "1.0");
  EXPECT_EQ(ref->digest, kDigest);
}

TEST(Reference, UppercaseFirstComponentIsARegistry) {
  // Docker treats a first component with an uppercase letter as a domain.
  Result<Reference> ref = parse_reference("Registry/app");
  ASSERT_TRUE(ref.ok()) << ref.error().message;
  EXPECT_EQ(ref->domain, "Registry");
  EXPECT_EQ(ref->repository, "app");
}

struct Invalid {
  const char* input;
  const char* reason;  // a fragment the message must contain
};

class InvalidReference : public ::testing::TestWithParam<Invalid> {};

TEST_P(InvalidReference, SaysWhatIsWrong) {
  const Invalid& c = GetParam();
  Result<Reference> ref = parse_reference(c.input);
  ASSERT_FALSE(ref.ok()) << c.input << " parsed as " << ref->str();
  EXPECT_EQ(ref.error().code, EINVAL);
  EXPECT_NE(ref.error().message.find(c.reason), std::string::npos) << ref.error().message;
  EXPECT_NE(ref.error().message.find("invalid reference"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(
    Docker, InvalidReference,
    ::testing::Values(
        Invalid{"", "empty reference"}, Invalid{"Python", "must be lowercase"},
        Invalid{"user/App:1", "must be lowercase"}, Invalid{"app:", "empty tag"},
        Invalid{"app:-x", "must start with"}, Invalid{"app:a+b", "invalid character '+'"},
        Invalid{"app@sha256:abc", "64 lowercase hex"},
        Invalid{"app@md5:d41d8cd98f00b204e9800998ecf8427e", "unsupported digest"},
        Invalid{"app@", "no algorithm"}, Invalid{"a//b", "empty path component"},
        Invalid{"/app", "empty path component"}, Invalid{"app/", "empty path component"},
        Invalid{"-app", "must start and end"}, Invalid{"a..b", "invalid character sequence"},
        Invalid{"a___b", "invalid character sequence"}, Invalid{"a b", "whitespace"},
        Invalid{"localhost:abc/app", "invalid port"},
        Invalid{"-bad.example/app", "invalid registry host"}, Invalid{":tag", "missing repository"},
        Invalid{"0123456789012345678901234567890123456789012345678901234567890123", "image ID"}));

TEST(Reference, TooLongTagAndName) {
  EXPECT_FALSE(parse_reference("app:" + std::string(129, 'a')).ok());
  EXPECT_TRUE(parse_reference("app:" + std::string(128, 'a')).ok());
  Result<Reference> long_name = parse_reference("example.com/" + std::string(250, 'a'));
  ASSERT_FALSE(long_name.ok());
  EXPECT_NE(long_name.error().message.find("longer than 255"), std::string::npos);
}

}  // namespace
}  // namespace imagefs::registry
