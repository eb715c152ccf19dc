// Authentication against the fake registry and token service: the Bearer flow anonymously, with a
// password and with an identity token; token caching and expiry; refreshing a refused token once;
// Basic auth; that no secret ever reaches an error message; and credentials that rotate under a
// puller that lives on (config.json changed, a credential helper whose answer changes, tokens of
// old credentials dropped, refusals remembered no longer than the refusal TTL).
#include "registry/auth.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>

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

// --- Credentials that rotate -------------------------------------------------------------------

// Puts a directory first on PATH for the test's lifetime.
class PathPrefix {
 public:
  explicit PathPrefix(const std::filesystem::path& dir) {
    const char* old = std::getenv("PATH");
    old_ = old != nullptr ? old : "";
    ::setenv("PATH", (dir.string() + ":" + old_).c_str(), 1);
  }
  ~PathPrefix() { ::setenv("PATH", old_.c_str(), 1); }
  PathPrefix(const PathPrefix&) = delete;
  PathPrefix& operator=(const PathPrefix&) = delete;

 private:
  std::string old_;
};

// A puller that lives on (as the daemon's does) while credentials change under it.
class RotationTest : public AuthTest {
 protected:
  void SetUp() override {
    AuthTest::SetUp();
    env.options.refusal_ttl = 5s;
    env.options.credential_helper_max_age = 15min;
    helper_dir = env.dir.path() / "bin";
    std::filesystem::create_directories(helper_dir);
    path = std::make_unique<PathPrefix>(helper_dir);
  }
  // docker-credential-rotating answers user alice with the password in bin/password, and counts
  // its calls in bin/calls.
  void use_helper(const std::string& first_password) {
    set_helper_password(first_password);
    std::ofstream(helper_dir / "docker-credential-rotating")
        << "#!/bin/sh\nread server\nd='" << helper_dir.string() << "'\n"
        << "n=$(cat \"$d/calls\" 2>/dev/null || echo 0); echo $((n + 1)) > \"$d/calls\"\n"
        << "printf '{\"Username\":\"alice\",\"Secret\":\"%s\"}' \"$(cat \"$d/password\")\"\n";
    ::chmod((helper_dir / "docker-credential-rotating").c_str(), 0755);
    env.write_docker_config(R"({"credHelpers":{"registry.example":"rotating"}})");
  }
  void set_helper_password(const std::string& password) const {
    std::ofstream(helper_dir / "password") << password;
  }
  int helper_calls() const {
    std::ifstream in(helper_dir / "calls");
    int n = 0;
    in >> n;
    return n;
  }
  void write_password(const std::string& password) {
    env.write_docker_config(R"({"auths":{"registry.example":{"username":"alice","password":")" +
                            password + R"("}}})");
  }
  std::filesystem::path helper_dir;
  std::unique_ptr<PathPrefix> path;
};

TEST_F(RotationTest, FixedConfigIsUsedWithoutANewPuller_Basic) {
  env.registry->auth = FakeRegistry::Auth::basic;
  write_password("wrong-password-1");
  auto p = puller();
  auto denied = resolve(*p, "registry.example/app:1.0");
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.error().code, EACCES);
  write_password(env.registry->password);
  auto resolved = resolve(*p, "registry.example/app:1.0");
  ASSERT_TRUE(resolved.ok()) << resolved.error().message;
}

TEST_F(RotationTest, FixedConfigIsUsedWithoutANewPuller_Token) {
  write_password("wrong-password-1");
  auto p = puller();
  auto denied = resolve(*p, "registry.example/private/app:1.0");
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.error().code, EACCES);
  EXPECT_NE(denied.error().message.find("refused the credentials"), std::string::npos)
      << denied.error().message;
  write_password(env.registry->password);
  auto resolved = resolve(*p, "registry.example/private/app:1.0");
  ASSERT_TRUE(resolved.ok()) << resolved.error().message;
}

TEST_F(RotationTest, TokensOfOldCredentialsAreDropped) {
  env.registry->token_ttl = 3600;
  login();
  auto p = puller();
  ASSERT_TRUE(resolve(*p, "registry.example/private/app:1.0").ok());
  ASSERT_EQ(token_requests().size(), 1u);
  // Logged in another way: the cached token (valid for an hour) is not used any more.
  env.write_docker_config(R"({"auths":{"registry.example":{"identitytoken":")" +
                          env.registry->refresh_token + R"("}}})");
  env.reset_store();
  ASSERT_TRUE(resolve(*p, "registry.example/private/app:1.0").ok());
  auto tokens = token_requests();
  ASSERT_EQ(tokens.size(), 2u);
  EXPECT_EQ(tokens[1].method, "POST");
  // Logged out: no token of the old login is sent; the anonymous one cannot read private/.
  env.write_docker_config("{}");
  env.reset_store();
  size_t before = env.registry->requests().size();
  auto denied = resolve(*p, "registry.example/private/app:1.0");
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.error().code, EACCES);
  auto all = env.registry->requests();
  for (size_t i = before; i < all.size(); ++i) {
    EXPECT_FALSE(all[i].headers.get("Authorization").value_or("").ends_with("-user"))
        << "a token of the old login went to " << all[i].url;
  }
}

TEST_F(RotationTest, AHelperRefusedIsAskedAgainInTheSameRequest_Basic) {
  env.registry->auth = FakeRegistry::Auth::basic;
  use_helper("stale-password-1");
  auto p = puller();
  // The helper's password changes after its first answer (it had a stale one cached).
  env.registry->intercept = [&](const testing::SeenRequest&) -> std::optional<HttpResponse> {
    if (helper_calls() == 1) set_helper_password(env.registry->password);
    return std::nullopt;
  };
  auto resolved = resolve(*p, "registry.example/app:1.0");
  ASSERT_TRUE(resolved.ok()) << resolved.error().message;
  EXPECT_EQ(helper_calls(), 2);
  // Then the good answer is kept: no more helper runs.
  env.reset_store();
  ASSERT_TRUE(resolve(*p, "registry.example/app:1.0").ok());
  EXPECT_EQ(helper_calls(), 2);
}

TEST_F(RotationTest, AHelperRefusedByTheTokenServiceIsAskedAgain) {
  use_helper("stale-password-1");
  env.registry->intercept = [&](const testing::SeenRequest&) -> std::optional<HttpResponse> {
    if (helper_calls() == 1) set_helper_password(env.registry->password);
    return std::nullopt;
  };
  auto p = puller();
  auto resolved = resolve(*p, "registry.example/private/app:1.0");
  ASSERT_TRUE(resolved.ok()) << resolved.error().message;
  EXPECT_EQ(helper_calls(), 2);
  auto tokens = token_requests();
  ASSERT_EQ(tokens.size(), 2u);  // refused with the stale password, issued with the new one
}

TEST_F(RotationTest, AHelperAnswerOlderThanTheMaxAgeIsReplacedBeforeTheRegistryRefusesIt) {
  env.registry->auth = FakeRegistry::Auth::basic;
  use_helper(env.registry->password);
  auto p = puller();
  ASSERT_TRUE(resolve(*p, "registry.example/app:1.0").ok());
  EXPECT_EQ(helper_calls(), 1);
  // The password rotates on both sides, as a cloud registry's tokens do.
  env.registry->password = "rotated-password-2";
  set_helper_password("rotated-password-2");
  env.clock->advance(15min);
  env.reset_store();
  size_t before = env.registry->requests().size();
  ASSERT_TRUE(resolve(*p, "registry.example/app:1.0").ok());
  EXPECT_EQ(helper_calls(), 2);
  // Asked before use: no request was refused.
  auto all = env.registry->requests();
  ASSERT_GT(all.size(), before);
  EXPECT_EQ(all[before].headers.get("Authorization").value_or(""),
            "Basic " + base64_encode("alice:rotated-password-2"));
}

TEST_F(RotationTest, A403ToAHelperCredentialAsksTheHelperAgain) {
  // ECR answers an expired credential with 403, not 401.
  env.registry->auth = FakeRegistry::Auth::basic;
  use_helper(env.registry->password);
  auto p = puller();
  ASSERT_TRUE(resolve(*p, "registry.example/app:1.0").ok());
  std::string expired = "Basic " + base64_encode("alice:" + env.registry->password);
  env.registry->password = "renewed-password-3";
  set_helper_password("renewed-password-3");
  env.registry->intercept = [&](const testing::SeenRequest& r) -> std::optional<HttpResponse> {
    if (r.headers.get("Authorization").value_or("") != expired) return std::nullopt;
    HttpResponse forbidden;
    forbidden.status = 403;
    forbidden.body = R"({"errors":[{"code":"DENIED","message":"token has expired"}]})";
    return forbidden;
  };
  env.reset_store();
  auto resolved = resolve(*p, "registry.example/app:1.0");
  ASSERT_TRUE(resolved.ok()) << resolved.error().message;
  EXPECT_EQ(helper_calls(), 2);
}

TEST_F(RotationTest, A403ToCredentialsOfTheFileStands) {
  env.registry->auth = FakeRegistry::Auth::basic;
  login();
  env.registry->intercept = [&](const testing::SeenRequest& r) -> std::optional<HttpResponse> {
    if (!r.headers.has("Authorization")) return std::nullopt;
    HttpResponse forbidden;
    forbidden.status = 403;
    forbidden.body = R"({"errors":[{"code":"DENIED","message":"no access"}]})";
    return forbidden;
  };
  auto p = puller();
  auto denied = resolve(*p, "registry.example/app:1.0");
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.error().code, EACCES);
  // The HEAD anonymously (401) and with the credentials (403), then the GET with them (403):
  // nothing new to try after a 403, so nothing is sent twice with the same credentials.
  EXPECT_EQ(env.registry->count("https://registry.example/v2/app/manifests/1.0"), 3u);
}

TEST_F(RotationTest, ARefusalIsRememberedNoLongerThanTheRefusalTtl) {
  env.registry->auth = FakeRegistry::Auth::basic;
  use_helper("bad-password-1");
  auto p = puller();
  ASSERT_FALSE(resolve(*p, "registry.example/app:1.0").ok());
  EXPECT_EQ(helper_calls(), 2);  // asked, refused, asked again, refused again
  // Within the TTL the refused answer is not asked for again...
  env.clock->advance(4s);
  ASSERT_FALSE(resolve(*p, "registry.example/app:1.0").ok());
  EXPECT_EQ(helper_calls(), 2);
  // ...after it, it is: the helper has a good one now.
  set_helper_password(env.registry->password);
  env.clock->advance(1s);
  auto resolved = resolve(*p, "registry.example/app:1.0");
  ASSERT_TRUE(resolved.ok()) << resolved.error().message;
  EXPECT_EQ(helper_calls(), 3);
}

TEST_F(RotationTest, AnAnonymousRefusalAsksAHelperThatHadNothing) {
  env.registry->auth = FakeRegistry::Auth::basic;
  use_helper("");
  // The helper knew nothing at first ("credentials not found"), then someone logs in.
  std::ofstream(helper_dir / "docker-credential-rotating")
      << "#!/bin/sh\nread server\nd='" << helper_dir.string() << "'\n"
      << "n=$(cat \"$d/calls\" 2>/dev/null || echo 0); echo $((n + 1)) > \"$d/calls\"\n"
      << "[ -s \"$d/password\" ] || { echo 'credentials not found in native keychain'; exit 1; }\n"
      << "printf '{\"Username\":\"alice\",\"Secret\":\"%s\"}' \"$(cat \"$d/password\")\"\n";
  auto p = puller();
  ASSERT_FALSE(resolve(*p, "registry.example/app:1.0").ok());
  int asked = helper_calls();
  EXPECT_EQ(asked, 2);
  set_helper_password(env.registry->password);
  env.clock->advance(5s);
  auto resolved = resolve(*p, "registry.example/app:1.0");
  ASSERT_TRUE(resolved.ok()) << resolved.error().message;
}

TEST(AuthBounds, APasswordInUseStaysRedactedWhileTokensComeAndGo) {
  // A daemon that runs for weeks sees a new token every few minutes: the secrets it remembers
  // for redaction are bounded, the oldest (expired tokens) leave, a password in use stays.
  TestEnv env;
  env.write_docker_config(
      R"({"auths":{"r.example":{"username":"alice","password":"long-lived-pw"}}})");
  auto creds = DockerCredentials::load(env.dir.path() / "config.json", env.clock);
  ASSERT_TRUE(creds.ok());
  int issued = 0;
  Authenticator auth(
      creds.value(), env.clock,
      [&](const HttpRequest&) -> Result<HttpResponse> {
        HttpResponse r;
        r.status = 200;
        r.body = R"({"token":"token-number-)" + std::to_string(++issued) + R"(","expires_in":1})";
        return r;
      },
      [](const std::string&) { return true; }, "test");
  Challenge challenge;
  challenge.scheme = "bearer";
  challenge.params = {{"realm", "https://auth.example/token"}, {"service", "s"}};
  ASSERT_TRUE(auth.on_unauthorized("r.example", "repository:a:pull", {challenge}, "").ok());
  for (int i = 0; i < 1500; ++i) {
    env.clock->advance(2s);
    ASSERT_TRUE(auth.authorization("r.example", "repository:a:pull").ok());
  }
  EXPECT_EQ(issued, 1501);
  EXPECT_EQ(auth.redact("pw long-lived-pw, token-number-1501"), "pw <redacted>, <redacted>");
  EXPECT_EQ(auth.redact("token-number-2"), "token-number-2");  // long expired, forgotten
}

TEST(UrlEncode, Reserved) {
  EXPECT_EQ(url_encode("repository:a/b:pull push"), "repository%3Aa%2Fb%3Apull%20push");
  EXPECT_EQ(url_encode("a-b_c.d~e"), "a-b_c.d~e");
}

}  // namespace
}  // namespace imagefs::registry
