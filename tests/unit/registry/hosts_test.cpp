// hosts.toml parsing (containerd's format) and the order in which a registry's hosts are tried.
#include "registry/hosts.h"

#include <gtest/gtest.h>

#include <fstream>

namespace imagefs::registry {
namespace {

const std::filesystem::path kFile = "/etc/imagefs/certs.d/docker.io/hosts.toml";

HostsFile parse(const std::string& text, const std::string& registry = "docker.io") {
  Result<HostsFile> r = parse_hosts_toml(text, kFile, registry);
  EXPECT_TRUE(r.ok()) << r.error().message;
  return r.ok() ? std::move(r).value() : HostsFile{};
}

std::string parse_error(const std::string& text) {
  Result<HostsFile> r = parse_hosts_toml(text, kFile, "docker.io");
  EXPECT_FALSE(r.ok());
  if (r.ok()) return "";
  EXPECT_EQ(r.error().code, EINVAL);
  return r.error().message;
}

std::vector<std::string> names(const std::vector<RegistryHost>& hosts) {
  std::vector<std::string> out;
  for (const RegistryHost& h : hosts) out.push_back(h.name);
  return out;
}

TEST(HostsToml, ContainerdExampleInFileOrder) {
  HostsFile f = parse(R"(
server = "https://registry-1.docker.io"

[host."https://zmirror.example:5000"]
  capabilities = ["pull", "resolve"]
  ca = "mirror-ca.pem"
  client = [["client.pem", "client.key"]]
  skip_verify = false
  [host."https://zmirror.example:5000".header]
    x-custom = "a"
    x-two = ["b", "c"]

[host."http://amirror.example/prefix"]
  capabilities = ["pull"]
  override_path = true
)");
  ASSERT_EQ(f.hosts.size(), 2u);
  // Written order, not toml++'s sorted key order.
  EXPECT_EQ(f.hosts[0].name, "zmirror.example:5000");
  EXPECT_EQ(f.hosts[0].url(), "https://zmirror.example:5000/v2");
  EXPECT_TRUE(f.hosts[0].can(Capability::pull));
  EXPECT_TRUE(f.hosts[0].can(Capability::resolve));
  ASSERT_EQ(f.hosts[0].tls.ca.size(), 1u);
  EXPECT_EQ(f.hosts[0].tls.ca[0], "/etc/imagefs/certs.d/docker.io/mirror-ca.pem");
  ASSERT_EQ(f.hosts[0].tls.client.size(), 1u);
  EXPECT_EQ(f.hosts[0].tls.client[0].first, "/etc/imagefs/certs.d/docker.io/client.pem");
  EXPECT_EQ(f.hosts[0].tls.client[0].second, "/etc/imagefs/certs.d/docker.io/client.key");
  EXPECT_EQ(f.hosts[0].headers, (std::vector<std::pair<std::string, std::string>>{
                                    {"x-custom", "a"}, {"x-two", "b"}, {"x-two", "c"}}));
  EXPECT_EQ(f.hosts[1].url(), "http://amirror.example/prefix");
  EXPECT_TRUE(f.hosts[1].can(Capability::pull));
  EXPECT_FALSE(f.hosts[1].can(Capability::resolve));
  // The server that is the registry itself keeps the transport's usual handling.
  ASSERT_TRUE(f.server.has_value());
  EXPECT_TRUE(f.server->implicit);
  EXPECT_TRUE(f.server->upstream);
  EXPECT_EQ(f.server->name, "docker.io");
}

TEST(HostsToml, PathGetsV2UnlessOverridden) {
  HostsFile f = parse(R"(
[host."mirror.example"]
[host."https://b.example/cache/"]
[host."https://c.example/v2"]
[host."https://d.example/api/v2/x"]
  override_path = true
)");
  ASSERT_EQ(f.hosts.size(), 4u);
  EXPECT_EQ(f.hosts[0].url(), "https://mirror.example/v2");  // no scheme: https
  EXPECT_EQ(f.hosts[1].url(), "https://b.example/cache/v2");
  EXPECT_EQ(f.hosts[2].url(), "https://c.example/v2");
  EXPECT_EQ(f.hosts[3].url(), "https://d.example/api/v2/x");
  // No capabilities: all of them (containerd's default).
  EXPECT_TRUE(f.hosts[0].can(Capability::resolve));
  EXPECT_TRUE(f.hosts[0].can(Capability::push));
  EXPECT_FALSE(f.server.has_value());
}

TEST(HostsToml, CaAndClientForms) {
  HostsFile f = parse(R"(
[host."https://a.example"]
  ca = ["/abs/one.pem", "two.pem"]
  client = "/abs/both.pem"
[host."https://b.example"]
  client = ["cert.pem", "key.pem"]
)");
  ASSERT_EQ(f.hosts.size(), 2u);
  EXPECT_EQ(f.hosts[0].tls.ca, (std::vector<std::filesystem::path>{
                                   "/abs/one.pem", "/etc/imagefs/certs.d/docker.io/two.pem"}));
  ASSERT_EQ(f.hosts[0].tls.client.size(), 1u);
  EXPECT_EQ(f.hosts[0].tls.client[0].first, "/abs/both.pem");
  EXPECT_TRUE(f.hosts[0].tls.client[0].second.empty());
  ASSERT_EQ(f.hosts[1].tls.client.size(), 1u);
  EXPECT_EQ(f.hosts[1].tls.client[0].second, "/etc/imagefs/certs.d/docker.io/key.pem");
}

TEST(HostsToml, ServerElsewhereIsExplicitWithTopLevelKeys) {
  HostsFile f = parse(R"(
server = "http://upstream.internal:8080"
skip_verify = true
[header]
  x-tenant = "blue"
)",
                      "registry.example");
  ASSERT_TRUE(f.server.has_value());
  EXPECT_FALSE(f.server->implicit);
  EXPECT_EQ(f.server->url(), "http://upstream.internal:8080/v2");
  EXPECT_EQ(f.server->name, "upstream.internal:8080");
  EXPECT_TRUE(f.server->tls.skip_verify);
  EXPECT_EQ(f.server->headers.size(), 1u);
}

TEST(HostsToml, ErrorsNameTheFileAndKey) {
  std::string syntax = parse_error("[host.\"https://a\"\ncapabilities = [");
  EXPECT_NE(syntax.find(kFile.string()), std::string::npos) << syntax;
  EXPECT_NE(syntax.find("not valid TOML"), std::string::npos) << syntax;

  std::string cap = parse_error("[host.\"https://a.example\"]\ncapabilities = [\"pul\"]\n");
  EXPECT_NE(cap.find(kFile.string()), std::string::npos) << cap;
  EXPECT_NE(cap.find("host.\"https://a.example\".capabilities"), std::string::npos) << cap;
  EXPECT_NE(cap.find("\"pul\""), std::string::npos) << cap;

  std::string skip = parse_error("[host.\"https://a.example\"]\nskip_verify = \"yes\"\n");
  EXPECT_NE(skip.find("skip_verify"), std::string::npos) << skip;

  std::string scheme = parse_error("[host.\"ftp://a.example\"]\n");
  EXPECT_NE(scheme.find("not an http:// or https:// URL"), std::string::npos) << scheme;

  std::string unknown = parse_error("sever = \"https://x\"\n");
  EXPECT_NE(unknown.find("sever: unknown key"), std::string::npos) << unknown;

  std::string auth = parse_error("[host.\"https://a.example\".header]\nAuthorization = \"x\"\n");
  EXPECT_NE(auth.find("Authorization is not settable"), std::string::npos) << auth;

  std::string client = parse_error("[host.\"https://a.example\"]\nclient = [1, 2]\n");
  EXPECT_NE(client.find("client"), std::string::npos) << client;
}

TEST(MirrorOption, ShorthandIsPullAndResolve) {
  auto parsed = parse_mirror_option("docker.io=https://mirror.example:5000");
  ASSERT_TRUE(parsed.ok()) << parsed.error().message;
  EXPECT_EQ(parsed->first, "docker.io");
  EXPECT_EQ(parsed->second.url(), "https://mirror.example:5000/v2");
  EXPECT_TRUE(parsed->second.can(Capability::pull));
  EXPECT_TRUE(parsed->second.can(Capability::resolve));
  EXPECT_FALSE(parsed->second.can(Capability::push));
  for (const char* bad :
       {"docker.io", "=https://m", "docker.io=", "docker.io=mirror:5000", "docker.io=ftp://m"}) {
    auto r = parse_mirror_option(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_NE(r.error().message.find("--mirror"), std::string::npos);
    }
  }
}

TEST(HostOrder, MirrorsByCapabilityThenUpstream) {
  std::map<std::string, HostsFile> files;
  HostsFile f = parse(R"(
[host."https://pull-only.example"]
  capabilities = ["pull"]
[host."https://both.example"]
  capabilities = ["pull", "resolve"]
[host."https://push-only.example"]
  capabilities = ["push"]
)");
  files["docker.io"] = f;
  auto hosts = RegistryHosts::from(files, std::nullopt);
  auto pull = hosts->hosts_for("docker.io", Capability::pull);
  EXPECT_EQ(names(pull),
            (std::vector<std::string>{"pull-only.example", "both.example", "docker.io"}));
  EXPECT_TRUE(pull.back().implicit);
  EXPECT_TRUE(pull.back().upstream);
  EXPECT_FALSE(pull.front().upstream);
  EXPECT_EQ(names(hosts->hosts_for("docker.io", Capability::resolve)),
            (std::vector<std::string>{"both.example", "docker.io"}));
  // Another registry: only itself.
  auto other = hosts->hosts_for("ghcr.io", Capability::pull);
  EXPECT_EQ(names(other), (std::vector<std::string>{"ghcr.io"}));
  EXPECT_TRUE(other[0].implicit);
}

TEST(HostOrder, DefaultDirectoryAppliesToOthers) {
  HostsFile fallback = parse("[host.\"https://cache.example\"]\n", "_default");
  HostsFile own = parse("[host.\"https://own.example\"]\n");
  auto hosts = RegistryHosts::from({{"docker.io", own}}, fallback);
  EXPECT_EQ(names(hosts->hosts_for("docker.io", Capability::pull)),
            (std::vector<std::string>{"own.example", "docker.io"}));
  EXPECT_EQ(names(hosts->hosts_for("quay.io", Capability::pull)),
            (std::vector<std::string>{"cache.example", "quay.io"}));
}

class HostsDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir = std::filesystem::temp_directory_path() /
          ("imagefs-hosts-" + std::to_string(::getpid()) + "-" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir);
    std::filesystem::create_directories(dir);
  }
  void TearDown() override { std::filesystem::remove_all(dir); }
  void write(const std::string& registry, const std::string& text) {
    std::filesystem::create_directories(dir / registry);
    std::ofstream(dir / registry / "hosts.toml") << text;
  }
  std::filesystem::path dir;
};

TEST_F(HostsDirTest, LoadsEachRegistryAndPutsMirrorOptionsFirst) {
  write("docker.io", "[host.\"https://file-mirror.example\"]\n");
  write("127.0.0.1:5000", "[host.\"http://127.0.0.1:5001\"]\ncapabilities = [\"pull\"]\n");
  std::filesystem::create_directories(dir / "quay.io");  // no hosts.toml: ignored
  auto hosts = RegistryHosts::load(dir, false, {"docker.io=https://flag-mirror.example"});
  ASSERT_TRUE(hosts.ok()) << hosts.error().message;
  EXPECT_EQ(names((*hosts)->hosts_for("docker.io", Capability::resolve)),
            (std::vector<std::string>{"flag-mirror.example", "file-mirror.example", "docker.io"}));
  EXPECT_EQ(names((*hosts)->hosts_for("127.0.0.1:5000", Capability::pull)),
            (std::vector<std::string>{"127.0.0.1:5001", "127.0.0.1:5000"}));
  EXPECT_EQ(names((*hosts)->hosts_for("127.0.0.1:5000", Capability::resolve)),
            (std::vector<std::string>{"127.0.0.1:5000"}));
}

TEST_F(HostsDirTest, MissingDirectoryIsAnErrorOnlyWhenGiven) {
  auto dflt = RegistryHosts::load(dir / "absent", true, {});
  ASSERT_TRUE(dflt.ok()) << dflt.error().message;
  EXPECT_FALSE((*dflt)->any());
  auto given = RegistryHosts::load(dir / "absent", false, {});
  ASSERT_FALSE(given.ok());
  EXPECT_EQ(given.error().code, ENOENT);
  EXPECT_NE(given.error().message.find("--hosts-dir"), std::string::npos);
}

TEST_F(HostsDirTest, ABadFileFailsTheLoadNamingIt) {
  write("docker.io", "[host.\"https://m.example\"]\ncapabilities = \"pull\"\n");
  auto hosts = RegistryHosts::load(dir, false, {});
  ASSERT_FALSE(hosts.ok());
  EXPECT_NE(hosts.error().message.find((dir / "docker.io" / "hosts.toml").string()),
            std::string::npos)
      << hosts.error().message;
  EXPECT_NE(hosts.error().message.find("capabilities"), std::string::npos);
}

}  // namespace
}  // namespace imagefs::registry
