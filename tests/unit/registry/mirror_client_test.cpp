// The client over a registry's hosts (registry/hosts.h): a mirror first, then the upstream, each
// a fake registry of its own behind one Http; fallback on 404, 5xx, refusals, unreachable hosts
// and bytes that do not match their digest; each host given only its own credentials.
#include <gtest/gtest.h>

#include "registry/client.h"
#include "tests/unit/registry/fakes.h"

namespace imagefs::registry {
namespace {

using testing::FakeRegistry;
using testing::TestEnv;

std::string b64(const std::string& s) {
  static const char* kChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  size_t i = 0;
  for (; i + 2 < s.size(); i += 3) {
    unsigned v = (static_cast<unsigned char>(s[i]) << 16) |
                 (static_cast<unsigned char>(s[i + 1]) << 8) | static_cast<unsigned char>(s[i + 2]);
    for (int k = 18; k >= 0; k -= 6) out += kChars[(v >> k) & 63];
  }
  if (i + 1 == s.size()) {
    unsigned v = static_cast<unsigned char>(s[i]) << 16;
    out += kChars[(v >> 18) & 63];
    out += kChars[(v >> 12) & 63];
    out += "==";
  } else if (i + 2 == s.size()) {
    unsigned v =
        (static_cast<unsigned char>(s[i]) << 16) | (static_cast<unsigned char>(s[i + 1]) << 8);
    out += kChars[(v >> 18) & 63];
    out += kChars[(v >> 12) & 63];
    out += kChars[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

// Sends each request to the fake whose host it names; everything else to the upstream fake
// (which answers its token service and "unreachable" for the rest).
class Routing final : public Http {
 public:
  Routing(std::shared_ptr<FakeRegistry> upstream, std::shared_ptr<FakeRegistry> mirror)
      : upstream_(std::move(upstream)), mirror_(std::move(mirror)) {}
  HttpResponse perform(const HttpRequest& request, BodySink* sink) override {
    std::optional<UrlParts> parts = parse_url(request.url);
    if (parts && parts->authority() == mirror_->host) return mirror_->perform(request, sink);
    return upstream_->perform(request, sink);
  }

 private:
  std::shared_ptr<FakeRegistry> upstream_;
  std::shared_ptr<FakeRegistry> mirror_;
};

class MirrorClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    image = testing::make_image("amd64", {std::string(20000, 'a'), "second layer"});
    // The upstream takes tokens for alice; the mirror Basic for bob.
    env.registry->auth = FakeRegistry::Auth::token;
    testing::push(*env.registry, "app", "1.0", image);
    mirror = std::make_shared<FakeRegistry>(env.clock);
    mirror->host = "mirror.example:5000";
    mirror->auth = FakeRegistry::Auth::basic;
    mirror->user = "bob";
    mirror->password = "mirror-pass-77";
    env.write_docker_config(
        R"({"auths": {"registry.example": {"auth": ")" + b64("alice:s3cret-passw0rd") +
        R"("}, "mirror.example:5000": {"auth": ")" + b64("bob:mirror-pass-77") + R"("}}})");
    env.options.mirrors = {"registry.example=https://mirror.example:5000"};
    env.options.hosts_dir = env.dir.path() / "no-hosts";
  }
  Result<ResolvedImage> pull() {
    auto puller = Puller::create(env.blobs, env.catalog, env.options,
                                 std::make_shared<Routing>(env.registry, mirror), env.clock);
    if (!puller.ok()) return puller.error();
    return (*puller)->pull(TestEnv::ref("registry.example/app:1.0"),
                           parse_platform("linux/amd64").value(), &progress);
  }
  // Authorized GETs of blobs that reached `r` at its own host (a 401 before a token does not
  // count; nor a request the routing sent to `r` for a host nobody serves).
  size_t blob_gets(const FakeRegistry& r, const std::string& blob = "/blobs/") const {
    size_t n = 0;
    for (const auto& req : r.requests()) {
      std::optional<UrlParts> parts = parse_url(req.url);
      bool own = parts && parts->authority() == r.host;
      n += own && req.method == "GET" && req.url.find(blob) != std::string::npos &&
                   req.headers.has("Authorization")
               ? 1
               : 0;
    }
    return n;
  }
  // No request to `r` carried the other host's secret.
  void expect_no_secret(const FakeRegistry& r, const std::string& secret) const {
    for (const auto& req : r.requests()) {
      for (const auto& [name, value] : req.headers.fields())
        EXPECT_EQ(value.find(secret), std::string::npos) << req.url << " " << name << ": " << value;
    }
  }
  TestEnv env;
  std::shared_ptr<FakeRegistry> mirror;
  testing::TestImage image;
  testing::RecordingProgress progress;
};

TEST_F(MirrorClientTest, TheMirrorServesWithItsOwnCredentialsOnly) {
  testing::push(*mirror, "app", "1.0", image);
  auto pulled = pull();
  ASSERT_TRUE(pulled.ok()) << pulled.error().message;
  EXPECT_EQ(pulled->image.manifest, image.manifest_digest());
  EXPECT_EQ(blob_gets(*env.registry), 0u) << "the upstream served no blob";
  EXPECT_EQ(env.registry->count("/manifests/"), 0u) << "nor a manifest";
  EXPECT_EQ(blob_gets(*mirror), 3u);  // config and two layers
  expect_no_secret(*mirror, b64("alice:s3cret-passw0rd"));
  bool bob_seen = false;
  for (const auto& req : mirror->requests())
    bob_seen |= req.headers.get("Authorization") == "Basic " + b64("bob:mirror-pass-77");
  EXPECT_TRUE(bob_seen);
}

TEST_F(MirrorClientTest, AMirrorWithoutTheImageHandsOnToTheUpstream) {
  auto pulled = pull();  // the mirror holds nothing: 404 for everything
  ASSERT_TRUE(pulled.ok()) << pulled.error().message;
  EXPECT_EQ(blob_gets(*env.registry), 3u);
  EXPECT_GE(progress.count("message tag 1.0: mirror.example:5000 failed"), 1u);
  // The upstream got alice's token flow, never bob's password; the mirror never alice's.
  expect_no_secret(*env.registry, b64("bob:mirror-pass-77"));
  expect_no_secret(*mirror, b64("alice:s3cret-passw0rd"));
}

TEST_F(MirrorClientTest, WrongBytesFromTheMirrorCostARetryAndStoreNothingBad) {
  testing::push(*mirror, "app", "1.0", image);
  store::Digest layer = store::Digest::of(image.layers[0]);
  mirror->intercept = [&](const testing::SeenRequest& r) -> std::optional<HttpResponse> {
    if (r.url.find("/blobs/" + layer.str()) == std::string::npos) return std::nullopt;
    HttpResponse bad;
    bad.status = 200;
    bad.body = std::string(image.layers[0].size(), 'Z');
    return bad;
  };
  auto pulled = pull();
  ASSERT_TRUE(pulled.ok()) << pulled.error().message;
  EXPECT_EQ(blob_gets(*env.registry, "/blobs/" + layer.str()), 1u)
      << "the layer came from upstream";
  EXPECT_EQ(blob_gets(*env.registry, "/blobs/" + store::Digest::of(image.layers[1]).str()), 0u);
  auto stored = env.blobs->read(layer);
  ASSERT_TRUE(stored.ok()) << stored.error().message;
  EXPECT_EQ(*stored, image.layers[0]);
  EXPECT_EQ(env.partial_size(layer), 0u);
}

TEST_F(MirrorClientTest, AFailingMirrorIsAskedTwiceThenTheUpstream) {
  testing::push(*mirror, "app", "1.0", image);
  int failures = 0;
  mirror->intercept = [&](const testing::SeenRequest&) -> std::optional<HttpResponse> {
    ++failures;
    HttpResponse r;
    r.status = 503;
    return r;
  };
  auto pulled = pull();
  ASSERT_TRUE(pulled.ok()) << pulled.error().message;
  EXPECT_EQ(blob_gets(*env.registry), 3u);
  // HEAD and GET of the tag, the config and two layers: two attempts each.
  EXPECT_EQ(failures, 2 * 5);
}

TEST_F(MirrorClientTest, AllHostsFailingGivesTheUpstreamsErrorAndTheMirrors) {
  env.registry->intercept = [&](const testing::SeenRequest& r) -> std::optional<HttpResponse> {
    if (r.url.find("/manifests/") == std::string::npos) return std::nullopt;
    HttpResponse nf;
    nf.status = 404;
    nf.body = R"({"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]})";
    return nf;
  };
  auto pulled = pull();
  ASSERT_FALSE(pulled.ok());
  EXPECT_EQ(pulled.error().code, ENOENT) << pulled.error().message;
  EXPECT_NE(pulled.error().message.find("registry.example"), std::string::npos);
  EXPECT_NE(pulled.error().message.find("after 1 mirror failed: mirror.example:5000"),
            std::string::npos)
      << pulled.error().message;
}

TEST_F(MirrorClientTest, AnUnreachableMirrorIsSkipped) {
  env.options.mirrors = {"registry.example=https://nowhere.example:5000"};
  auto pulled = pull();
  ASSERT_TRUE(pulled.ok()) << pulled.error().message;
  EXPECT_EQ(blob_gets(*env.registry), 3u);
  // Asked once (the tag's HEAD), then left to rest: the other requests did not wait on it.
  EXPECT_EQ(env.registry->count("nowhere.example"), 1u);
}

}  // namespace
}  // namespace imagefs::registry
