// WWW-Authenticate parsing: the forms registries send (Docker Hub, distribution, ghcr, ECR) and
// the corners of RFC 9110's grammar (quoted strings, several challenges, token68).
#include "registry/www_authenticate.h"

#include <gtest/gtest.h>

namespace imagefs::registry {
namespace {

TEST(WwwAuthenticate, DockerHubBearer) {
  auto c = parse_www_authenticate(
      R"(Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/python:pull")");
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].scheme, "bearer");
  EXPECT_EQ(c[0].param("realm"), "https://auth.docker.io/token");
  EXPECT_EQ(c[0].param("service"), "registry.docker.io");
  EXPECT_EQ(c[0].param("scope"), "repository:library/python:pull");
  EXPECT_EQ(c[0].param("error"), "");
}

TEST(WwwAuthenticate, ErrorParameterAndSpaces) {
  auto c = parse_www_authenticate(
      R"(Bearer realm = "https://r/token" , service="svc", scope="repository:a:pull repository:b:pull", error="insufficient_scope")");
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].param("realm"), "https://r/token");
  EXPECT_EQ(c[0].param("scope"), "repository:a:pull repository:b:pull");
  EXPECT_EQ(c[0].param("error"), "insufficient_scope");
}

TEST(WwwAuthenticate, CaseInsensitiveNamesKeepValues) {
  auto c = parse_www_authenticate(R"(BEARER Realm="https://R/Token",SERVICE=Svc)");
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].scheme, "bearer");
  EXPECT_EQ(c[0].param("realm"), "https://R/Token");
  EXPECT_EQ(c[0].param("service"), "Svc");  // unquoted token value
}

TEST(WwwAuthenticate, QuotedStringsWithEscapesAndCommas) {
  auto c = parse_www_authenticate(R"(Basic realm="a \"quoted\", realm\\x", charset="UTF-8")");
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].scheme, "basic");
  EXPECT_EQ(c[0].param("realm"), R"(a "quoted", realm\x)");
  EXPECT_EQ(c[0].param("charset"), "UTF-8");
}

TEST(WwwAuthenticate, SeveralChallengesInOneHeader) {
  auto c = parse_www_authenticate(
      R"(Newauth realm="apps", type=1, title="Login to \"apps\"", Basic realm="simple", Bearer realm="https://t",service=s)");
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0].scheme, "newauth");
  EXPECT_EQ(c[0].param("type"), "1");
  EXPECT_EQ(c[0].param("title"), R"(Login to "apps")");
  EXPECT_EQ(c[1].scheme, "basic");
  EXPECT_EQ(c[1].param("realm"), "simple");
  EXPECT_EQ(c[2].scheme, "bearer");
  EXPECT_EQ(c[2].param("service"), "s");
}

TEST(WwwAuthenticate, ChallengesWithoutParameters) {
  auto c = parse_www_authenticate("Negotiate, Basic realm=x, NTLM");
  ASSERT_EQ(c.size(), 3u);
  EXPECT_EQ(c[0].scheme, "negotiate");
  EXPECT_TRUE(c[0].params.empty());
  EXPECT_EQ(c[1].param("realm"), "x");
  EXPECT_EQ(c[2].scheme, "ntlm");
}

TEST(WwwAuthenticate, Token68) {
  auto c = parse_www_authenticate("Negotiate YIIBhgYGKwYBBQUCoIIBejCCAXag==, Basic realm=\"r\"");
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].token68, "YIIBhgYGKwYBBQUCoIIBejCCAXag==");
  EXPECT_TRUE(c[0].params.empty());
  EXPECT_EQ(c[1].param("realm"), "r");
}

TEST(WwwAuthenticate, SeveralHeaderFields) {
  auto c = parse_www_authenticate(
      std::vector<std::string>{R"(Basic realm="one")", R"(Bearer realm="https://two")"});
  ASSERT_EQ(c.size(), 2u);
  EXPECT_EQ(c[0].scheme, "basic");
  EXPECT_EQ(c[1].param("realm"), "https://two");
}

TEST(WwwAuthenticate, DuplicateParameterKeepsFirst) {
  auto c = parse_www_authenticate(R"(Bearer realm="first", realm="second")");
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].param("realm"), "first");
}

TEST(WwwAuthenticate, JunkIsSkippedNotFatal) {
  EXPECT_TRUE(parse_www_authenticate("").empty());
  EXPECT_TRUE(parse_www_authenticate(" , ,, ").empty());
  auto c = parse_www_authenticate(R"(=== "x", Bearer realm="https://ok")");
  ASSERT_FALSE(c.empty());
  EXPECT_EQ(c.back().param("realm"), "https://ok");
  // Unterminated quoted string: runs to the end.
  c = parse_www_authenticate(R"(Bearer realm="https://unterminated)");
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].param("realm"), "https://unterminated");
  // Junk after a value is skipped up to the next comma.
  c = parse_www_authenticate(R"(Bearer realm="a"junk, service="s")");
  ASSERT_EQ(c.size(), 1u);
  EXPECT_EQ(c[0].param("service"), "s");
}

}  // namespace
}  // namespace imagefs::registry
