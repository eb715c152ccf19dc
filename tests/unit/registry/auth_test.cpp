// Authentication against the fake registry and token service: the Bearer flow anonymously, with a
// password and with an identity token; token caching and expiry; refreshing a refused token once;
// Basic auth; and that no secret ever reaches an error message.
#include "registry/auth.h"

#include <gtest/gtest.h>

#include "registry/credentials.h"
#include "tests/unit/registry/fakes.h"

namespace imagefs::registry {
namespace {

using namespace std::chrono_literals;
using testing::FakeRegistry;
using testing::TestEnv;

class AuthTest : public ::testing::Test {
 protected:
  void SetUp() override {
    env.registry->auth = FakeRegistry::Auth::token;
    image = testing::make_image("amd64", {"layer one"});
    testing::push(*env.registry, "app", "1.0", image);
    testing::push(*env.registry, "private/app", "1.0", image);
  }
  std::unique_ptr<Puller> puller() { return env.puller(); }
  Result<ResolvedImage> resolve(Puller& p, const std::string& ref) {
    return p.resolve(TestEnv::ref(ref), parse_platform("linux/amd64").value());
  }
  std::vector<testing::SeenRequest> token_requests() {
    std::vector<testing::SeenRequest> out;
    for (auto& r : env.registry->requests()) {
      if (r.url.starts_with("https://auth.example/token")) out.push_back(r);
    }
    return out;
  }
  void login() {
    env.write_docker_config(R"({"auths":{"registry.example":{"auth":")" +
                            base64_encode(env.registry->user + ":" + env.registry->password) +
                            R"("}}})");
  }
  // Every secret the fake knows, and every token it issued.
  void expect_no_secrets(const std::string& text) {
    for (const std::string& secret :
         {env.registry->password, env.registry->refresh_token,
          base64_encode(env.registry->user + ":" + env.registry->password), std::string("tok-")}) {
      EXPECT_EQ(text.find(secret), std::string::npos) << "secret \"" << secret << "\" in: " << text;
    }
  }

  TestEnv env;
  testing::TestImage image;
};

TEST_F(AuthTest, AnonymousBearerFlow) {
  auto p = puller();
  auto resolved = resolve(*p, "registry.example/app:1.0");
  ASSERT_TRUE(resolved.ok()) << resolved.error().message;
  auto tokens = token_requests();
  ASSERT_EQ(tokens.size(), 1u);  // one token serves the HEAD, the GET and the config
  EXPECT_EQ(tokens[0].method, "GET");
  EXPECT_FALSE(tokens[0].headers.has("Authorization"));
  EXPECT_NE(tokens[0].url.find("service=fake-registry"), std::string::npos);
  EXPECT_NE(tokens[0].url.find("scope=repository%3Aapp%3Apull"), std::string::npos);
  // The first request had no credentials; every later one to the registry has the token.
  auto all = env.registry->requests();
  EXPECT_FALSE(all[0].headers.has("Authorization"));
  for (size_t i = 2; i < all.size(); ++i) {
    EXPECT_TRUE(all[i].headers.get("Authorization").value_or("").starts_with("Bearer tok-"))
        << all[i].url;
  }
}

TEST_F(AuthTest, PasswordGoesToTheTokenServiceOnly) {
  login();
  auto p = puller();
  auto resolved = resolve(*p, "registry.example/private/app:1.0");
  ASSERT_TRUE(resolved.ok()) << resolved.error().message;
  auto tokens = token_requests();
  ASSERT_EQ(tokens.size(), 1u);
  EXPECT_EQ(tokens[0].headers.get("Authorization").value_or(""),
            "Basic " + base64_encode("alice:s3cret-passw0rd"));
  EXPECT_NE(tokens[0].url.find("account=alice"), std::string::npos);
  for (const auto& r : env.registry->requests()) {
    if (r.url.starts_with("https://registry.example/")) {
      EXPECT_FALSE(r.headers.get("Authorization").value_or("").starts_with("Basic")) << r.url;
    }
  }
}

TEST_F(AuthTest, IdentityTokenUsesTheRefreshGrant) {
  env.write_docker_config(R"({"auths":{"registry.example":{"identitytoken":")" +
                          env.registry->refresh_token + R"("}}})");
  auto p = puller();
  auto resolved = resolve(*p, "registry.example/private/app:1.0");
  ASSERT_TRUE(resolved.ok()) << resolved.error().message;
  auto tokens = token_requests();
  ASSERT_EQ(tokens.size(), 1u);
  EXPECT_EQ(tokens[0].method, "POST");
  EXPECT_EQ(tokens[0].headers.get("Content-Type").value_or(""),
            "application/x-www-form-urlencoded");
  EXPECT_NE(tokens[0].body.find("grant_type=refresh_token"), std::string::npos);
  EXPECT_NE(tokens[0].body.find("refresh_token=" + env.registry->refresh_token), std::string::npos);
  EXPECT_NE(tokens[0].body.find("scope=repository%3Aprivate%2Fapp%3Apull"), std::string::npos);
  EXPECT_FALSE(tokens[0].headers.has("Authorization"));
}

TEST_F(AuthTest, TokensAreCachedUntilTheyExpire) {
  env.registry->token_ttl = 120;
  auto p = puller();
  ASSERT_TRUE(resolve(*p, "registry.example/app:1.0").ok());
  ASSERT_TRUE(resolve(*p, "registry.example/app:1.0").ok());
  EXPECT_EQ(token_requests().size(), 1u);
  size_t before = env.registry->requests().size();
  env.clock->advance(121s);
  ASSERT_TRUE(resolve(*p, "registry.example/app:1.0").ok());
  EXPECT_EQ(token_requests().size(), 2u);
  // The expired token was replaced before use: no 401 round trip.
  auto all = env.registry->requests();
  EXPECT_TRUE(all[before].url.starts_with("https://auth.example/token")) << all[before].url;
}

TEST_F(AuthTest, DefaultLifetimeIsSixtySeconds) {
  env.registry->token_ttl = 0;  // no expires_in in the answer
  auto p = puller();
  ASSERT_TRUE(resolve(*p, "registry.example/app:1.0").ok());
  env.clock->advance(59s);
  ASSERT_TRUE(resolve(*p, "registry.example/app:1.0").ok());
  EXPECT_EQ(token_requests().size(), 1u);
  env.clock->advance(2s);
  ASSERT_TRUE(resolve(*p, "registry.example/app:1.0").ok());
  EXPECT_EQ(token_requests().size(), 2u);
}

TEST_F(AuthTest, TokensAreCachedPerScope) {
  login();
  auto p = puller();
  ASSERT_TRUE(resolve(*p, "registry.example/app:1.0").ok());
  ASSERT_TRUE(resolve(*p, "registry.example/private/app:1.0").ok());
  auto tokens = token_requests();
  ASSERT_EQ(tokens.size(), 2u);
  EXPECT_NE(tokens[1].url.find("private%2Fapp"), std::string::npos);
}

TEST_F(AuthTest, RevokedTokenIsRefetchedOnce) {
  auto p = puller();
  ASSERT_TRUE(resolve(*p, "registry.example/app:1.0").ok());
  env.registry->expire_tokens();  // the registry now answers invalid_token
  env.reset_store();
  auto again = resolve(*p, "registry.example/app:1.0");
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(token_requests().size(), 2u);
}

TEST_F(AuthTest, InsufficientScopeIsRetriedOnceThenDenied) {
  auto p = puller();
  auto resolved = resolve(*p, "registry.example/private/app:1.0");
  ASSERT_FALSE(resolved.ok());
  EXPECT_EQ(resolved.error().code, EACCES);
  EXPECT_EQ(token_requests().size(), 2u);
  EXPECT_EQ(resolved.error().message,
            "unauthorized: access to repository private/app on registry.example was denied; it "
            "may not exist, or may need credentials (no credentials for registry.example in " +
                (env.dir.path() / "config.json").string() + ")");
  // The second 401 said insufficient_scope: exactly two tokens, three registry requests.
  size_t registry_requests = env.registry->count("https://registry.example/");
  EXPECT_EQ(registry_requests, 3u);
}

TEST_F(AuthTest, WrongPasswordIsRefusedByTheTokenService) {
  env.write_docker_config(
      R"({"auths":{"registry.example":{"username":"alice","password":"wrong-password-123"}}})");
  auto p = puller();
  auto resolved = resolve(*p, "registry.example/private/app:1.0");
  ASSERT_FALSE(resolved.ok());
  EXPECT_EQ(resolved.error().code, EACCES);
  EXPECT_EQ(resolved.error().message,
            "unauthorized: the token service https://auth.example/token refused the credentials "
            "for registry.example from " +
                (env.dir.path() / "config.json").string() + " (incorrect username or password)");
  EXPECT_EQ(resolved.error().message.find("wrong-password-123"), std::string::npos);
}

TEST_F(AuthTest, BasicAuth) {
  env.registry->auth = FakeRegistry::Auth::basic;
  auto anonymous = puller();
  auto denied = resolve(*anonymous, "registry.example/app:1.0");
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.error().code, EACCES);
  EXPECT_NE(denied.error().message.find("(no credentials for registry.example in "),
            std::string::npos);

  login();
  auto p = puller();
  auto resolved = resolve(*p, "registry.example/app:1.0");
  ASSERT_TRUE(resolved.ok()) << resolved.error().message;
  // After the first 401, Basic goes with every request without asking again.
  auto all = env.registry->requests();
  size_t with_basic = 0;
  for (const auto& r : all) {
    if (r.headers.get("Authorization").value_or("").starts_with("Basic ")) ++with_basic;
  }
  EXPECT_GE(with_basic, 3u);  // HEAD, GET manifest, config
  EXPECT_TRUE(token_requests().empty());
}

TEST_F(AuthTest, RejectedBasicCredentialsSayWhereTheyCameFrom) {
  env.registry->auth = FakeRegistry::Auth::basic;
  env.write_docker_config(
      R"({"auths":{"registry.example":{"username":"alice","password":"not-the-password"}}})");
  auto p = puller();
  auto resolved = resolve(*p, "registry.example/app:1.0");
  ASSERT_FALSE(resolved.ok());
  EXPECT_EQ(resolved.error().code, EACCES);
  EXPECT_NE(resolved.error().message.find("the credentials for registry.example from " +
                                          (env.dir.path() / "config.json").string() +
                                          " were not accepted"),
            std::string::npos)
      << resolved.error().message;
  EXPECT_EQ(resolved.error().message.find("not-the-password"), std::string::npos);
}

TEST_F(AuthTest, CredentialsNeverAppearInErrorsOrMessages) {
  testing::RecordingProgress progress;
  std::vector<std::string> texts;
  auto collect = [&](const Result<ResolvedImage>& r) {
    if (!r.ok()) texts.push_back(r.error().message);
  };
  // Token refused after being issued (with a password), a failing registry after auth, Basic
  // rejected, and an identity token refused.
  login();
  env.registry->intercept = [&](const testing::SeenRequest& r) -> std::optional<HttpResponse> {
    if (r.url.find("/blobs/") == std::string::npos) return std::nullopt;
    HttpResponse bad;
    bad.status = 500;
    // A registry that echoes the Authorization header it got back in its error.
    bad.body = R"({"errors":[{"code":"X","message":"bad header )" +
               r.headers.get("Authorization").value_or("") + R"("}]})";
    return bad;
  };
  collect(env.puller()->pull(TestEnv::ref("registry.example/private/app:1.0"), &progress));
  env.registry->intercept = nullptr;

  env.registry->auth = FakeRegistry::Auth::basic;
  env.write_docker_config(R"({"auths":{"registry.example":{"username":"alice","password":")" +
                          env.registry->password + "-typo" + R"("}}})");
  collect(env.puller()->resolve(TestEnv::ref("registry.example/app:1.0")));

  env.registry->auth = FakeRegistry::Auth::token;
  env.write_docker_config(R"({"auths":{"registry.example":{"identitytoken":")" +
                          env.registry->refresh_token + "-old" + R"("}}})");
  collect(env.puller()->resolve(TestEnv::ref("registry.example/private/app:1.0")));

  ASSERT_EQ(texts.size(), 3u);
  for (const std::string& e : progress.events()) texts.push_back(e);
  for (const std::string& t : texts) expect_no_secrets(t);
  EXPECT_NE(texts[0].find("<redacted>"), std::string::npos) << texts[0];
}

TEST(UrlEncode, Reserved) {
  EXPECT_EQ(url_encode("repository:a/b:pull push"), "repository%3Aa%2Fb%3Apull%20push");
  EXPECT_EQ(url_encode("a-b_c.d~e"), "a-b_c.d~e");
}

}  // namespace
}  // namespace imagefs::registry
