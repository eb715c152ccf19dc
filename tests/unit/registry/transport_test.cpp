// Transport policy against the fake registry: retries and backoff (without sleeping), Retry-After,
// redirects that must not leak the Authorization header, scheme fallback, TLS trust, resume.
#include "registry/transport.h"

#include <gtest/gtest.h>

#include <ctime>

#include "registry/client.h"
#include "tests/unit/registry/fakes.h"

namespace imagefs::registry {
namespace {

using namespace std::chrono_literals;
using testing::FakeRegistry;
using testing::TestEnv;

HttpResponse status_response(int status, std::vector<std::pair<std::string, std::string>> h = {}) {
  HttpResponse r;
  r.status = status;
  for (auto& [k, v] : h) r.headers.add(k, v);
  r.body = R"({"errors":[{"code":"UNAVAILABLE","message":"try later"}]})";
  return r;
}

class TransportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    image = testing::make_image("amd64", {std::string(10000, 'x'), "second layer"});
    testing::push(*env.registry, "app", "1.0", image);
  }
  Result<ResolvedImage> resolve(const std::string& ref = "registry.example/app:1.0") {
    return env.puller()->resolve(TestEnv::ref(ref), parse_platform("linux/amd64").value());
  }
  Result<ResolvedImage> pull(const std::string& ref = "registry.example/app:1.0") {
    return env.puller()->pull(TestEnv::ref(ref), parse_platform("linux/amd64").value(), &progress);
  }
  TestEnv env;
  testing::TestImage image;
  testing::RecordingProgress progress;
};

TEST_F(TransportTest, RetriesServerErrorsWithExponentialBackoff) {
  int failures = 3;
  env.registry->intercept = [&](const testing::SeenRequest& r) -> std::optional<HttpResponse> {
    if (r.url.find("/manifests/") != std::string::npos && failures > 0) {
      --failures;
      return status_response(503);
    }
    return std::nullopt;
  };
  auto resolved = resolve();
  ASSERT_TRUE(resolved.ok()) << resolved.error().message;
  EXPECT_EQ(env.clock->sleeps(), (std::vector<std::chrono::milliseconds>{500ms, 1000ms, 2000ms}));
}

TEST_F(TransportTest, GivesUpAfterMaxAttemptsNamingTheRegistry) {
  env.registry->intercept = [&](const testing::SeenRequest&) -> std::optional<HttpResponse> {
    return status_response(502);
  };
  env.options.backoff_max = 1500ms;
  auto resolved = resolve();
  ASSERT_FALSE(resolved.ok());
  EXPECT_EQ(resolved.error().code, EIO);
  EXPECT_EQ(resolved.error().message,
            "registry registry.example failed with HTTP 502 for tag 1.0 in repository app "
            "(gave up after 5 attempts)");
  EXPECT_EQ(env.clock->sleeps(),
            (std::vector<std::chrono::milliseconds>{500ms, 1000ms, 1500ms, 1500ms}));
}

TEST_F(TransportTest, HonoursRetryAfterInSecondsAndAsADate) {
  int calls = 0;
  env.registry->intercept = [&](const testing::SeenRequest& r) -> std::optional<HttpResponse> {
    if (r.url.find("/manifests/") == std::string::npos) return std::nullopt;
    ++calls;
    if (calls == 1) return status_response(429, {{"Retry-After", "7"}});
    if (calls == 2) {
      std::time_t when = env.clock->unix_now() + 3;
      char date[64];
      std::tm tm{};
      gmtime_r(&when, &tm);
      std::strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
      return status_response(503, {{"Retry-After", date}});
    }
    return std::nullopt;
  };
  auto resolved = resolve();
  ASSERT_TRUE(resolved.ok()) << resolved.error().message;
  EXPECT_EQ(env.clock->sleeps(), (std::vector<std::chrono::milliseconds>{7000ms, 3000ms}));
}

TEST_F(TransportTest, ALongRetryAfterIsReportedNotWaitedFor) {
  env.registry->intercept = [&](const testing::SeenRequest&) -> std::optional<HttpResponse> {
    return status_response(429, {{"Retry-After", "3600"}});
  };
  auto resolved = resolve();
  ASSERT_FALSE(resolved.ok());
  EXPECT_TRUE(env.clock->sleeps().empty());
  EXPECT_NE(resolved.error().message.find("try again after 3600 seconds"), std::string::npos)
      << resolved.error().message;
}

TEST_F(TransportTest, DockerHubRateLimitIsExplained) {
  env.registry->host = "registry-1.docker.io";
  testing::push(*env.registry, "library/python", "3.12", image);
  env.registry->intercept = [&](const testing::SeenRequest&) -> std::optional<HttpResponse> {
    return status_response(429, {{"RateLimit-Limit", "100;w=21600"},
                                 {"RateLimit-Remaining", "0;w=21600"},
                                 {"Docker-RateLimit-Source", "203.0.113.9"}});
  };
  auto resolved = resolve("python:3.12");
  ASSERT_FALSE(resolved.ok());
  EXPECT_EQ(resolved.error().code, EIO);
  EXPECT_TRUE(env.clock->sleeps().empty());  // nothing left in the window: no point waiting
  const std::string& m = resolved.error().message;
  EXPECT_NE(m.find("too many requests: registry docker.io is rate limiting pulls (limit 100 "
                   "pulls per 6 hours for 203.0.113.9, 0 left)"),
            std::string::npos)
      << m;
  EXPECT_NE(m.find("log in (docker login)"), std::string::npos) << m;
  EXPECT_NE(m.find("no credentials for docker.io in"), std::string::npos) << m;
  // The request went to Docker Hub's API host.
  EXPECT_EQ(env.registry->requests()[0].url.find("https://registry-1.docker.io/v2/library/python/"),
            0u);
}

TEST_F(TransportTest, DroppedBlobResumesWithRange) {
  env.registry->drop_after = 3000;
  env.registry->drop_count = 2;
  auto pulled = pull();
  ASSERT_TRUE(pulled.ok()) << pulled.error().message;
  std::string layer = env.blobs->read(store::Digest::of(image.layers[0])).value();
  EXPECT_EQ(layer, image.layers[0]);
  std::vector<uint64_t> ranges;
  for (const auto& r : env.registry->requests()) {
    if (r.url.find("/blobs/" + store::Digest::of(image.layers[0]).str()) != std::string::npos)
      ranges.push_back(r.range_start.value_or(0));
  }
  EXPECT_EQ(ranges, (std::vector<uint64_t>{0, 3000, 6000}));
  // Progress was made each time, so no attempt was used up: the first delay each time.
  EXPECT_EQ(env.clock->sleeps(), (std::vector<std::chrono::milliseconds>{500ms, 500ms}));
  EXPECT_EQ(
      progress.count("message the connection to registry.example dropped; resuming at byte 3000"),
      1u);
}

TEST_F(TransportTest, ServerIgnoringRangeRestartsTheBlob) {
  env.registry->drop_after = 4000;
  env.registry->drop_count = 1;
  env.registry->ignore_range = true;
  auto pulled = pull();
  ASSERT_TRUE(pulled.ok()) << pulled.error().message;
  EXPECT_EQ(env.blobs->read(store::Digest::of(image.layers[0])).value(), image.layers[0]);
}

TEST_F(TransportTest, ConnectionThatDropsWithoutProgressGivesUp) {
  env.registry->drop_after = 0;
  env.registry->drop_count = 100;
  auto pulled = pull();
  ASSERT_FALSE(pulled.ok());
  EXPECT_EQ(pulled.error().code, EIO);
  EXPECT_NE(pulled.error().message.find("the connection to registry registry.example dropped"),
            std::string::npos)
      << pulled.error().message;
  EXPECT_NE(pulled.error().message.find("gave up after 5 attempts"), std::string::npos);
  EXPECT_NE(pulled.error().message.find(" of 2 sha256:"), std::string::npos);
  EXPECT_NE(pulled.error().message.find("from registry.example/app: "), std::string::npos);
}

// A registry that accepts connections and never answers: curl waits out each attempt's timeout
// (the fake moves the clock by it) and the request ends at its deadline, saying so.
std::optional<HttpResponse> hang(testing::FakeClock& clock, const testing::SeenRequest& r,
                                 std::chrono::milliseconds most) {
  clock.advance(r.timeout ? std::min(*r.timeout, most) : most);
  HttpResponse timed_out;
  timed_out.failure = HttpFailure::timeout;
  timed_out.failure_detail = "Operation timed out";
  return timed_out;
}

TEST_F(TransportTest, ARegistryThatNeverAnswersFailsAtTheDeadline) {
  env.options.request_timeout = 30s;
  std::vector<std::optional<std::chrono::milliseconds>> timeouts;
  env.registry->intercept = [&](const testing::SeenRequest& r) -> std::optional<HttpResponse> {
    timeouts.push_back(r.timeout);
    return hang(*env.clock, r, 300s);  // it would hold the socket for 5 minutes
  };
  auto started = env.clock->steady_now();
  auto resolved = resolve();
  ASSERT_FALSE(resolved.ok());
  EXPECT_EQ(resolved.error().code, EIO);
  EXPECT_EQ(resolved.error().message, "registry registry.example did not answer within 30 s");
  EXPECT_EQ(timeouts, (std::vector<std::optional<std::chrono::milliseconds>>{30000ms}))
      << "one attempt with the whole time; none after it";
  EXPECT_EQ(env.clock->steady_now() - started, 30s);
}

TEST_F(TransportTest, RetriesShareOneDeadline) {
  env.options.request_timeout = 30s;
  std::vector<std::optional<std::chrono::milliseconds>> timeouts;
  env.registry->intercept = [&](const testing::SeenRequest& r) -> std::optional<HttpResponse> {
    timeouts.push_back(r.timeout);
    return hang(*env.clock, r, 10s);  // each connection times out after 10 s
  };
  auto started = env.clock->steady_now();
  auto resolved = resolve();
  ASSERT_FALSE(resolved.ok());
  EXPECT_EQ(resolved.error().message,
            "registry registry.example did not answer within 30 s (3 attempts)");
  // 10 s, backoff 0.5 s, 10 s, backoff 1 s, then what is left: 8.5 s.
  EXPECT_EQ(timeouts,
            (std::vector<std::optional<std::chrono::milliseconds>>{30000ms, 19500ms, 8500ms}));
  EXPECT_EQ(env.clock->sleeps(), (std::vector<std::chrono::milliseconds>{500ms, 1000ms}));
  EXPECT_EQ(env.clock->steady_now() - started, 30s);
}

TEST_F(TransportTest, ABackoffPastTheDeadlineIsNotBegun) {
  env.options.request_timeout = 30s;
  env.registry->intercept = [&](const testing::SeenRequest& r) -> std::optional<HttpResponse> {
    if (r.url.find("/manifests/") == std::string::npos) return std::nullopt;
    return status_response(503, {{"Retry-After", "45"}});
  };
  auto resolved = resolve();
  ASSERT_FALSE(resolved.ok());
  EXPECT_NE(resolved.error().message.find("HTTP 503"), std::string::npos)
      << resolved.error().message;
  EXPECT_TRUE(env.clock->sleeps().empty()) << "waiting 45 s would overrun the 30 s deadline";
}

TEST_F(TransportTest, TokenRequestsHaveADeadlineToo) {
  env.registry->auth = FakeRegistry::Auth::token;
  env.options.request_timeout = 20s;
  env.registry->intercept = [&](const testing::SeenRequest& r) -> std::optional<HttpResponse> {
    if (r.url.find("auth.example/token") == std::string::npos) return std::nullopt;
    return hang(*env.clock, r, 300s);
  };
  auto resolved = resolve();
  ASSERT_FALSE(resolved.ok());
  EXPECT_NE(resolved.error().message.find("auth.example did not answer within 20 s"),
            std::string::npos)
      << resolved.error().message;
  for (const auto& r : env.registry->requests())
    if (r.url.find("auth.example/token") != std::string::npos) {
      EXPECT_EQ(r.timeout, std::optional<std::chrono::milliseconds>(20000ms));
    }
}

TEST_F(TransportTest, BlobDownloadsHaveNoTotalDeadline) {
  env.options.request_timeout = 30s;
  auto pulled = pull();
  ASSERT_TRUE(pulled.ok()) << pulled.error().message;
  size_t blobs = 0;
  for (const auto& r : env.registry->requests()) {
    bool layer =
        r.url.find("/blobs/" + store::Digest::of(image.layers[0]).str()) != std::string::npos;
    if (layer) {
      ++blobs;
      EXPECT_FALSE(r.timeout.has_value()) << r.url;
    } else if (r.url.find("/manifests/") != std::string::npos) {
      EXPECT_TRUE(r.timeout.has_value()) << r.url;
    }
  }
  EXPECT_EQ(blobs, 1u);
}

TEST_F(TransportTest, ATricklingBlobIsGivenUpOn) {
  // Every attempt moves 10 bytes, then the stall rule (less than 1 KiB/s over 30 s) cuts it:
  // 10 bytes are no progress worth resuming for ever.
  env.registry->drop_after = 10;
  env.registry->drop_count = 1000;
  env.registry->drop_failure = HttpFailure::timeout;
  auto pulled = pull();
  ASSERT_FALSE(pulled.ok());
  EXPECT_NE(pulled.error().message.find("registry registry.example timed out"), std::string::npos)
      << pulled.error().message;
  EXPECT_NE(pulled.error().message.find("gave up after 5 attempts"), std::string::npos)
      << pulled.error().message;
}

TEST_F(TransportTest, AStalledBlobThatMovedEnoughResumes) {
  env.options.stall_min_rate = 100;
  env.options.stall_window = 1s;  // 100 bytes count as progress
  env.registry->drop_after = 3000;
  env.registry->drop_count = 2;
  env.registry->drop_failure = HttpFailure::timeout;
  auto pulled = pull();
  ASSERT_TRUE(pulled.ok()) << pulled.error().message;
  EXPECT_EQ(env.blobs->read(store::Digest::of(image.layers[0])).value(), image.layers[0]);
  EXPECT_EQ(env.clock->sleeps(), (std::vector<std::chrono::milliseconds>{500ms, 500ms}));
}

TEST_F(TransportTest, RedirectToAnotherHostDropsAuthorization) {
  env.registry->auth = FakeRegistry::Auth::token;
  env.registry->redirect_blobs = true;
  for (std::string cdn : {"https://cdn.example", "https://registry.example:8443"}) {
    env.registry->cdn = cdn;
    env.reset_store();
    auto pulled = pull();
    ASSERT_TRUE(pulled.ok()) << cdn << ": " << pulled.error().message;
    int to_cdn = 0;
    int to_registry_with_token = 0;
    for (const auto& r : env.registry->requests()) {
      if (r.url.starts_with(cdn + "/cdn-blobs/")) {
        ++to_cdn;
        EXPECT_FALSE(r.headers.has("Authorization")) << r.url;
      } else if (r.url.starts_with("https://registry.example/") &&
                 r.headers.get("Authorization").value_or("").starts_with("Bearer ")) {
        ++to_registry_with_token;
      }
    }
    EXPECT_EQ(to_cdn, 3) << cdn;  // config + 2 layers
    EXPECT_GE(to_registry_with_token, 3) << cdn;
  }
}

// Plain HTTP after a redirect only for registries allowed plain HTTP: an HTTPS registry cannot
// downgrade a download, nor send the daemon to plain-HTTP hosts (issue 11).
TEST_F(TransportTest, RedirectToPlainHttpIsRefusedForAnHttpsRegistry) {
  env.registry->redirect_blobs = true;
  for (std::string cdn :
       {"http://registry.example", "http://cdn.example", "http://127.0.0.1:8080"}) {
    env.registry->cdn = cdn;
    env.reset_store();
    auto pulled = pull();
    ASSERT_FALSE(pulled.ok()) << cdn;
    EXPECT_EQ(pulled.error().code, EIO);
    EXPECT_NE(pulled.error().message.find("redirected to plain HTTP"), std::string::npos)
        << pulled.error().message;
    for (const auto& r : env.registry->requests())
      EXPECT_FALSE(r.url.starts_with("http://")) << cdn << ": a request went to " << r.url;
  }
}

TEST_F(TransportTest, RedirectToPlainHttpIsFollowedForAnInsecureRegistry) {
  env.registry->redirect_blobs = true;
  env.registry->cdn = "http://cdn.example";
  env.options.insecure_registries = {"registry.example"};
  auto pulled = pull();
  ASSERT_TRUE(pulled.ok()) << pulled.error().message;
  EXPECT_EQ(env.registry->count("http://cdn.example/cdn-blobs/"), 3u);  // config + 2 layers
}

TEST_F(TransportTest, ForeignUrlOverPlainHttpOnlyForLoopbackOrInsecureHosts) {
  Transport transport(env.registry, env.clock, DockerCredentials::none(), env.options);
  env.registry->put_cdn("/cdn-blobs/foreign", "foreign bytes");
  auto refused = transport.get_url("http://cdn.example/cdn-blobs/foreign");
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code, EIO);
  EXPECT_NE(refused.error().message.find("plain HTTP"), std::string::npos)
      << refused.error().message;
  EXPECT_EQ(env.registry->count("cdn.example"), 0u);
}

TEST_F(TransportTest, RedirectToTheSameOriginKeepsAuthorization) {
  env.registry->auth = FakeRegistry::Auth::token;
  env.registry->redirect_blobs = true;
  env.registry->cdn = "https://registry.example";
  auto pulled = pull();
  ASSERT_TRUE(pulled.ok()) << pulled.error().message;
  for (const auto& r : env.registry->requests()) {
    if (r.url.find("/cdn-blobs/") != std::string::npos) {
      EXPECT_TRUE(r.headers.get("Authorization").value_or("").starts_with("Bearer ")) << r.url;
    }
  }
}

TEST_F(TransportTest, LoopbackTriesPlainHttpFirst) {
  env.registry->host = "127.0.0.1:5000";
  env.registry->plain_http = true;
  testing::push(*env.registry, "app", "1.0", image);
  auto pulled = pull("127.0.0.1:5000/app:1.0");
  ASSERT_TRUE(pulled.ok()) << pulled.error().message;
  auto requests = env.registry->requests();
  ASSERT_GE(requests.size(), 3u);
  // No TLS handshake (and CA bundle load) wasted on a plain-HTTP loopback registry.
  for (const auto& r : requests) EXPECT_TRUE(r.url.starts_with("http://")) << r.url;
}

TEST_F(TransportTest, LoopbackTlsRegistryGetsHttpsAfterA400) {
  env.registry->host = "127.0.0.1:5000";
  env.registry->plain_http = false;
  testing::push(*env.registry, "app", "1.0", image);
  auto pulled = pull("127.0.0.1:5000/app:1.0");
  ASSERT_TRUE(pulled.ok()) << pulled.error().message;
  auto requests = env.registry->requests();
  ASSERT_GE(requests.size(), 3u);
  EXPECT_TRUE(requests[0].url.starts_with("http://127.0.0.1:5000/v2/app/manifests/1.0"));
  EXPECT_TRUE(requests[1].url.starts_with("https://127.0.0.1:5000/v2/app/manifests/1.0"));
  // Remembered: everything after went straight to https, verified (loopback is not "insecure").
  for (size_t i = 2; i < requests.size(); ++i) {
    EXPECT_TRUE(requests[i].url.starts_with("https://")) << requests[i].url;
    EXPECT_EQ(requests[i].tls_verify, TlsVerify::yes);
  }
}

TEST_F(TransportTest, LoopbackTlsRegistryWithUntrustedCertificateSaysSo) {
  env.registry->host = "127.0.0.1:5000";
  env.registry->plain_http = false;
  env.registry->untrusted_certificate = true;
  testing::push(*env.registry, "app", "1.0", image);
  auto pulled = pull("127.0.0.1:5000/app:1.0");
  ASSERT_FALSE(pulled.ok());
  EXPECT_NE(pulled.error().message.find("not trusted"), std::string::npos)
      << pulled.error().message;
}

TEST_F(TransportTest, OtherHostsNeverGetPlainHttp) {
  env.registry->plain_http = true;
  auto resolved = resolve();
  ASSERT_FALSE(resolved.ok());
  EXPECT_EQ(resolved.error().message,
            "TLS connection to registry registry.example failed: "
            "error:0A00010B:SSL routines::wrong version number");
  for (const auto& r : env.registry->requests()) EXPECT_TRUE(r.url.starts_with("https://"));
}

TEST_F(TransportTest, InsecureRegistryMayUsePlainHttp) {
  env.registry->plain_http = true;
  env.options.insecure_registries = {"registry.example"};
  auto pulled = pull();
  ASSERT_TRUE(pulled.ok()) << pulled.error().message;
}

TEST_F(TransportTest, UntrustedCertificateSuggestsCaFile) {
  env.registry->untrusted_certificate = true;
  auto resolved = resolve();
  ASSERT_FALSE(resolved.ok());
  EXPECT_EQ(resolved.error().code, EIO);
  EXPECT_NE(resolved.error().message.find(
                "the TLS certificate of registry registry.example is not trusted"),
            std::string::npos);
  EXPECT_NE(resolved.error().message.find("--ca-file"), std::string::npos);
  // Listed as insecure: certificates are not verified, as docker does.
  env.options.insecure_registries = {"registry.example"};
  auto insecure = resolve();
  ASSERT_TRUE(insecure.ok()) << insecure.error().message;
  EXPECT_EQ(env.registry->requests().back().tls_verify, TlsVerify::no);
}

TEST_F(TransportTest, UnreachableRegistry) {
  auto resolved = resolve("nowhere.example/app:1.0");
  ASSERT_FALSE(resolved.ok());
  EXPECT_EQ(resolved.error().code, EIO);
  EXPECT_EQ(resolved.error().message,
            "registry nowhere.example is unreachable: Could not resolve host: nowhere.example");
  EXPECT_TRUE(env.clock->sleeps().empty());
}

TEST(TransportHosts, LoopbackAndApiHost) {
  EXPECT_TRUE(Transport::is_loopback("localhost"));
  EXPECT_TRUE(Transport::is_loopback("localhost:5000"));
  EXPECT_TRUE(Transport::is_loopback("127.0.0.1:5000"));
  EXPECT_TRUE(Transport::is_loopback("127.10.0.3"));
  EXPECT_TRUE(Transport::is_loopback("[::1]:5000"));
  EXPECT_FALSE(Transport::is_loopback("127.0.0.1.example.com"));
  EXPECT_FALSE(Transport::is_loopback("10.0.0.1:5000"));
  EXPECT_FALSE(Transport::is_loopback("localhost.evil"));
  EXPECT_EQ(Transport::api_host("docker.io"), "registry-1.docker.io");
  EXPECT_EQ(Transport::api_host("ghcr.io"), "ghcr.io");
}

TEST(Urls, ParseAndResolve) {
  auto p = parse_url("https://Registry.Example/v2/");
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->origin(), "https://registry.example:443");
  EXPECT_EQ(p->authority(), "registry.example");
  EXPECT_EQ(parse_url("http://127.0.0.1:5000/x")->authority(), "127.0.0.1:5000");
  EXPECT_EQ(resolve_url("https://r.example/v2/a/blobs/x", "/store/y?sig=1").value(),
            "https://r.example/store/y?sig=1");
  EXPECT_EQ(resolve_url("https://r.example/v2/a/blobs/x", "https://cdn.example/z").value(),
            "https://cdn.example/z");
}

TEST_F(TransportTest, ForeignUrlOverPlainHttpIsUsedForAnInsecureHost) {
  env.options.insecure_registries = {"cdn.example"};
  Transport transport(env.registry, env.clock, DockerCredentials::none(), env.options);
  env.registry->put_cdn("/cdn-blobs/foreign", "foreign bytes");
  env.registry->cdn = "http://cdn.example";
  auto got = transport.get_url("http://cdn.example/cdn-blobs/foreign");
  ASSERT_TRUE(got.ok()) << got.error().message;
  EXPECT_EQ(got->response.status, 200);
  EXPECT_EQ(got->response.body, "foreign bytes");
  auto seen = env.registry->requests();
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().url, "http://cdn.example/cdn-blobs/foreign");
}

TEST_F(TransportTest, ForeignUrlOfAnInsecureHttpsHostSkipsCertificateChecks) {
  env.options.insecure_registries = {"cdn.example"};
  Transport transport(env.registry, env.clock, DockerCredentials::none(), env.options);
  env.registry->put_cdn("/cdn-blobs/foreign", "foreign bytes");
  ASSERT_TRUE(transport.get_url("https://cdn.example/cdn-blobs/foreign").ok());
  ASSERT_TRUE(transport.get_url("https://registry.example/v2/").ok());
  auto seen = env.registry->requests();
  ASSERT_EQ(seen.size(), 2u);
  EXPECT_EQ(seen[0].tls_verify, TlsVerify::no);
  EXPECT_EQ(seen[1].tls_verify, TlsVerify::yes) << "a host not listed keeps its checks";
}

TEST_F(TransportTest, ForeignUrlRedirectToPlainHttpIsRefused) {
  Transport transport(env.registry, env.clock, DockerCredentials::none(), env.options);
  env.registry->put_cdn("/cdn-blobs/foreign", "foreign bytes");
  env.registry->cdn = "http://cdn.example";
  env.registry->intercept = [](const testing::SeenRequest& r) -> std::optional<HttpResponse> {
    if (!r.url.starts_with("https://mirror.example/")) return std::nullopt;
    HttpResponse redirect;
    redirect.status = 302;
    redirect.headers.add("Location", "http://cdn.example/cdn-blobs/foreign");
    return redirect;
  };
  auto got = transport.get_url("https://mirror.example/layer");
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.error().code, EIO);
  EXPECT_NE(got.error().message.find("redirected to plain HTTP (cdn.example)"), std::string::npos)
      << got.error().message;
  EXPECT_EQ(env.registry->count("http://cdn.example"), 0u);

  // The same redirect is followed when the foreign host is an insecure one.
  env.options.insecure_registries = {"mirror.example"};
  Transport allowed(env.registry, env.clock, DockerCredentials::none(), env.options);
  auto followed = allowed.get_url("https://mirror.example/layer");
  ASSERT_TRUE(followed.ok()) << followed.error().message;
  EXPECT_EQ(followed->response.body, "foreign bytes");
}

TEST_F(TransportTest, ForeignUrlRedirectsAreBounded) {
  Transport transport(env.registry, env.clock, DockerCredentials::none(), env.options);
  env.registry->intercept = [](const testing::SeenRequest& r) -> std::optional<HttpResponse> {
    if (!r.url.starts_with("https://mirror.example/")) return std::nullopt;
    HttpResponse redirect;
    redirect.status = 302;
    redirect.headers.add("Location", "https://mirror.example/again");
    return redirect;
  };
  auto got = transport.get_url("https://mirror.example/layer");
  ASSERT_FALSE(got.ok());
  EXPECT_NE(got.error().message.find("more than 10 redirects"), std::string::npos)
      << got.error().message;
  EXPECT_LE(env.registry->count("mirror.example"), 11u);
}

TEST_F(TransportTest, ConnectionDroppedAfterTheLastByteCommitsOn416) {
  // All of the layer arrived, then the connection dropped: the resume asks for the bytes after
  // the end, the registry answers 416, and what was received is verified and committed.
  std::string layer(5000, 'L');
  auto img = testing::make_image("amd64", {layer});
  testing::push(*env.registry, "edge", "1", img);
  env.registry->drop_after = layer.size();
  env.registry->drop_count = 1;
  auto pulled = pull("registry.example/edge:1");
  ASSERT_TRUE(pulled.ok()) << pulled.error().message;
  EXPECT_EQ(env.blobs->read(store::Digest::of(layer)).value(), layer);
  std::vector<uint64_t> ranges;
  for (const auto& r : env.registry->requests()) {
    if (r.url.find("/blobs/" + store::Digest::of(layer).str()) != std::string::npos)
      ranges.push_back(r.range_start.value_or(0));
  }
  EXPECT_EQ(ranges, (std::vector<uint64_t>{0, 5000}));
}

}  // namespace
}  // namespace imagefs::registry
