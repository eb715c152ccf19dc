// docker's config.json and credential helpers: where credentials come from, in docker's order,
// that a secret never shows up in an error, and how they stay current in a long-running process
// (the file re-read when it changes, helper answers aged out or asked again after a refusal,
// refusals remembered no longer than the refusal TTL).
#include "registry/credentials.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <fstream>
#include <thread>
#include <vector>

#include "tests/unit/registry/fakes.h"

namespace imagefs::registry {
namespace {

using testing::TempDir;

void write_file(const std::filesystem::path& p, const std::string& text, mode_t mode = 0644) {
  std::ofstream(p) << text;
  ::chmod(p.c_str(), mode);
}

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

TEST(Base64, RoundTrips) {
  EXPECT_EQ(base64_encode("alice:s3cret"), "YWxpY2U6czNjcmV0");
  EXPECT_EQ(base64_decode("YWxpY2U6czNjcmV0").value(), "alice:s3cret");
  EXPECT_EQ(base64_decode("YQ==").value(), "a");
  EXPECT_EQ(base64_decode("YQ").value(), "a");  // padding may be missing
  EXPECT_EQ(base64_decode("YWI=").value(), "ab");
  EXPECT_FALSE(base64_decode("!!!!").has_value());
}

TEST(ConfigKeys, NormalizeLikeDocker) {
  EXPECT_EQ(host_of_config_key("https://index.docker.io/v1/"), "docker.io");
  EXPECT_EQ(host_of_config_key("index.docker.io"), "docker.io");
  EXPECT_EQ(host_of_config_key("registry-1.docker.io"), "docker.io");
  EXPECT_EQ(host_of_config_key("https://ghcr.io"), "ghcr.io");
  EXPECT_EQ(host_of_config_key("http://127.0.0.1:5000/v2/"), "127.0.0.1:5000");
  EXPECT_EQ(host_of_config_key("Registry.Example:443"), "registry.example:443");
  EXPECT_EQ(docker_server_url("docker.io"), "https://index.docker.io/v1/");
  EXPECT_EQ(docker_server_url("ghcr.io"), "ghcr.io");
}

TEST(DockerConfig, MissingFileMeansNoCredentials) {
  TempDir dir;
  auto creds = DockerCredentials::load(dir.path() / "config.json");
  ASSERT_TRUE(creds.ok()) << creds.error().message;
  auto found = creds.value()->lookup("docker.io");
  ASSERT_TRUE(found.ok());
  EXPECT_FALSE(found->has_value());
  EXPECT_EQ(creds.value()->describe(), (dir.path() / "config.json").string());
}

TEST(DockerConfig, AuthsEntries) {
  TempDir dir;
  write_file(dir.path() / "config.json", R"({"auths":{
    "https://index.docker.io/v1/": {"auth": ")" +
                                             base64_encode("hubuser:hub:pass") + R"("},
    "127.0.0.1:5000": {"username": "alice", "password": "pw-127"},
    "https://ghcr.io": {"auth": "", "identitytoken": "idtoken-ghcr"},
    "helper-only.example": {}
  }})");
  auto creds = DockerCredentials::load(dir.path() / "config.json");
  ASSERT_TRUE(creds.ok()) << creds.error().message;
  auto hub = creds.value()->lookup("docker.io").value();
  ASSERT_TRUE(hub.has_value());
  EXPECT_EQ(hub->username, "hubuser");
  EXPECT_EQ(hub->password, "hub:pass");  // only the first colon separates
  EXPECT_EQ(hub->source, (dir.path() / "config.json").string());
  auto local = creds.value()->lookup("127.0.0.1:5000").value();
  ASSERT_TRUE(local.has_value());
  EXPECT_EQ(local->username, "alice");
  EXPECT_EQ(local->password, "pw-127");
  auto ghcr = creds.value()->lookup("ghcr.io").value();
  ASSERT_TRUE(ghcr.has_value());
  EXPECT_EQ(ghcr->identity_token, "idtoken-ghcr");
  EXPECT_FALSE(ghcr->has_password());
  EXPECT_FALSE(creds.value()->lookup("helper-only.example").value().has_value());
  EXPECT_FALSE(creds.value()->lookup("quay.io").value().has_value());
}

TEST(DockerConfig, DefaultLocationFollowsDockerConfigVariable) {
  TempDir dir;
  write_file(dir.path() / "config.json",
             R"({"auths":{"r.example":{"username":"u","password":"p"}}})");
  const char* old = std::getenv("DOCKER_CONFIG");
  std::string saved = old != nullptr ? old : "";
  ::setenv("DOCKER_CONFIG", dir.path().c_str(), 1);
  EXPECT_EQ(default_docker_config(), dir.path() / "config.json");
  auto creds = DockerCredentials::load();
  if (old != nullptr) {
    ::setenv("DOCKER_CONFIG", saved.c_str(), 1);
  } else {
    ::unsetenv("DOCKER_CONFIG");
  }
  ASSERT_TRUE(creds.ok());
  EXPECT_TRUE(creds.value()->lookup("r.example").value().has_value());
}

TEST(DockerConfig, MalformedConfigIsAnErrorWithoutSecrets) {
  TempDir dir;
  write_file(dir.path() / "bad.json", "{not json");
  auto bad = DockerCredentials::load(dir.path() / "bad.json");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code, EINVAL);
  EXPECT_NE(bad.error().message.find("bad.json: not valid JSON"), std::string::npos);

  write_file(dir.path() / "auth.json",
             R"({"auths":{"r.example":{"auth":"c2VjcmV0LW5vLWNvbG9u"}}})");
  auto no_colon = DockerCredentials::load(dir.path() / "auth.json");
  ASSERT_FALSE(no_colon.ok());
  EXPECT_EQ(no_colon.error().message.find("c2VjcmV0LW5vLWNvbG9u"), std::string::npos);
  EXPECT_EQ(no_colon.error().message.find("secret-no-colon"), std::string::npos);
  EXPECT_NE(no_colon.error().message.find("r.example"), std::string::npos);
}

// A docker-credential-test helper that knows one server and logs what it was asked.
void write_helper(const std::filesystem::path& dir, const std::string& name,
                  const std::string& body) {
  write_file(dir / ("docker-credential-" + name), "#!/bin/sh\n" + body, 0755);
}

TEST(CredentialHelpers, CredHelpersAndCredsStore) {
  TempDir dir;
  write_helper(dir.path(), "test",
               R"(
[ "$1" = get ] || exit 2
read server
echo "$server" >> ")" +
                   (dir.path() / "asked").string() + R"("
case "$server" in
  helped.example) echo '{"ServerURL":"helped.example","Username":"hu","Secret":"helper-secret"}' ;;
  https://index.docker.io/v1/) echo '{"ServerURL":"x","Username":"<token>","Secret":"hub-identity"}' ;;
  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
)");
  write_file(dir.path() / "config.json", R"({
    "auths": {"inline.example": {"username": "iu", "password": "inline-pw"}},
    "credHelpers": {"helped.example": "test"},
    "credsStore": "test"})");
  PathPrefix path(dir.path());
  auto creds = DockerCredentials::load(dir.path() / "config.json");
  ASSERT_TRUE(creds.ok()) << creds.error().message;

  auto helped = creds.value()->lookup("helped.example");
  ASSERT_TRUE(helped.ok()) << helped.error().message;
  ASSERT_TRUE(helped->has_value());
  EXPECT_EQ(helped.value()->username, "hu");
  EXPECT_EQ(helped.value()->password, "helper-secret");
  EXPECT_EQ(helped.value()->source, "docker-credential-test");

  auto hub = creds.value()->lookup("docker.io");
  ASSERT_TRUE(hub.ok()) << hub.error().message;
  ASSERT_TRUE(hub->has_value());
  EXPECT_EQ(hub.value()->identity_token, "hub-identity");

  // The store says "not found": the inline entry is used.
  auto inline_entry = creds.value()->lookup("inline.example");
  ASSERT_TRUE(inline_entry.ok());
  ASSERT_TRUE(inline_entry->has_value());
  EXPECT_EQ(inline_entry.value()->password, "inline-pw");
  auto none = creds.value()->lookup("nobody.example");
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());

  // Cached: asking again does not run the helper again.
  ASSERT_TRUE(creds.value()->lookup("helped.example").ok());
  std::ifstream asked(dir.path() / "asked");
  std::string all((std::istreambuf_iterator<char>(asked)), std::istreambuf_iterator<char>());
  EXPECT_EQ(all, "helped.example\nhttps://index.docker.io/v1/\ninline.example\nnobody.example\n");
}

TEST(CredentialHelpers, FailuresNameTheHelperNotTheSecret) {
  TempDir dir;
  write_helper(dir.path(), "broken", "echo 'keyring locked' >&2; exit 3\n");
  write_helper(dir.path(), "garbage", "cat >/dev/null; echo 'top-secret-value'\n");
  write_file(dir.path() / "config.json", R"({"credHelpers": {
    "broken.example": "broken", "garbage.example": "garbage", "missing.example": "nonexistent"}})");
  PathPrefix path(dir.path());
  auto creds = DockerCredentials::load(dir.path() / "config.json");
  ASSERT_TRUE(creds.ok());

  auto broken = creds.value()->lookup("broken.example");
  ASSERT_FALSE(broken.ok());
  EXPECT_NE(broken.error().message.find("docker-credential-broken"), std::string::npos);
  EXPECT_NE(broken.error().message.find("exit status 3: keyring locked"), std::string::npos)
      << broken.error().message;

  auto garbage = creds.value()->lookup("garbage.example");
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.error().message.find("top-secret-value"), std::string::npos);
  EXPECT_NE(garbage.error().message.find("not a JSON object"), std::string::npos);

  auto missing = creds.value()->lookup("missing.example");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.error().message.find("docker-credential-nonexistent"), std::string::npos);
  EXPECT_NE(missing.error().message.find("not found in PATH"), std::string::npos)
      << missing.error().message;
}

TEST(CredentialHelpers, HangingHelperIsKilled) {
  TempDir dir;
  write_helper(dir.path(), "slow", "exec sleep 30\n");
  write_file(dir.path() / "config.json", R"({"credsStore": "slow"})");
  PathPrefix path(dir.path());
  auto creds = DockerCredentials::load(dir.path() / "config.json");
  ASSERT_TRUE(creds.ok());
  creds.value()->set_helper_timeout(std::chrono::milliseconds(300));
  auto started = std::chrono::steady_clock::now();
  auto r = creds.value()->lookup("any.example");
  ASSERT_FALSE(r.ok());
  EXPECT_LT(std::chrono::steady_clock::now() - started, std::chrono::seconds(5));
  EXPECT_NE(r.error().message.find("did not answer"), std::string::npos) << r.error().message;
}

TEST(CredentialHelpers, HelperThatIgnoresStdinDoesNotKillUs) {
  // Writing the server URL to a helper that already exited must not raise SIGPIPE.
  TempDir dir;
  write_helper(dir.path(), "early",
               R"(exec 0<&-; echo '{"Username":"u","Secret":"early-secret"}')"
               "\n");
  write_file(dir.path() / "config.json", R"({"credsStore": "early"})");
  PathPrefix path(dir.path());
  auto creds = DockerCredentials::load(dir.path() / "config.json");
  ASSERT_TRUE(creds.ok());
  auto r = creds.value()->lookup("e.example");
  ASSERT_TRUE(r.ok()) << r.error().message;
  ASSERT_TRUE(r->has_value());
  EXPECT_EQ(r.value()->password, "early-secret");
}

// --- Credentials that rotate -------------------------------------------------------------------

using namespace std::chrono_literals;
using testing::FakeClock;

std::string read_text(const std::filesystem::path& p) {
  std::ifstream in(p);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Shell lines that count calls in DIR/calls and leave the count in $n.
std::string count_calls(const std::filesystem::path& dir) {
  std::string file = (dir / "calls").string();
  return "n=$(cat '" + file + "' 2>/dev/null || echo 0); n=$((n + 1)); echo $n > '" + file + "'\n";
}

// A helper that answers "secret-N" on its Nth call for every server.
void write_counting_helper(const std::filesystem::path& dir, const std::string& name) {
  write_helper(dir, name,
               "read server\n" + count_calls(dir) +
                   R"(echo "{\"Username\":\"hu\",\"Secret\":\"secret-$n\"}")"
                   "\n");
}

int calls(const std::filesystem::path& dir) {
  std::string text = read_text(dir / "calls");
  return text.empty() ? 0 : std::stoi(text);
}

std::string password_of(DockerCredentials& creds, const std::string& host) {
  auto found = creds.lookup(host);
  if (!found.ok()) return "error: " + found.error().message;
  if (!found->has_value()) return "none";
  return found.value()->password;
}

TEST(CredentialRotation, ConfigIsReadAgainWhenItChanges) {
  TempDir dir;
  auto config = dir.path() / "config.json";
  write_file(config, R"({"auths":{"r.example":{"username":"u","password":"first-pw"}}})");
  auto creds = DockerCredentials::load(config);
  ASSERT_TRUE(creds.ok()) << creds.error().message;
  EXPECT_EQ(password_of(*creds.value(), "r.example"), "first-pw");

  // The same size, written in place at once: the mtime may not move, the bytes did.
  write_file(config, R"({"auths":{"r.example":{"username":"u","password":"other-pw"}}})");
  EXPECT_EQ(password_of(*creds.value(), "r.example"), "other-pw");

  // Replaced by rename, as editors and `docker login` do: another inode.
  write_file(dir.path() / "new.json",
             R"({"auths":{"r.example":{"auth":")" + base64_encode("u:renamed-pw") + R"("}}})");
  std::filesystem::rename(dir.path() / "new.json", config);
  EXPECT_EQ(password_of(*creds.value(), "r.example"), "renamed-pw");

  // Removed: no credentials; back again: used again.
  std::filesystem::remove(config);
  EXPECT_EQ(password_of(*creds.value(), "r.example"), "none");
  write_file(config, R"({"auths":{"r.example":{"username":"u","password":"back-pw"}}})");
  EXPECT_EQ(password_of(*creds.value(), "r.example"), "back-pw");
}

TEST(CredentialRotation, ARewriteThatKeepsSizeAndMtimeIsSeen) {
  // As `cp -p` or a restore from backup leaves it: same inode, same size, an old mtime.
  TempDir dir;
  auto config = dir.path() / "config.json";
  struct timespec old_times[2] = {{1600000000, 0}, {1600000000, 0}};
  write_file(config, R"({"auths":{"r.example":{"username":"u","password":"old-pw"}}})");
  ASSERT_EQ(::utimensat(AT_FDCWD, config.c_str(), old_times, 0), 0);
  auto creds = DockerCredentials::load(config);
  ASSERT_TRUE(creds.ok());
  EXPECT_EQ(password_of(*creds.value(), "r.example"), "old-pw");
  write_file(config, R"({"auths":{"r.example":{"username":"u","password":"new-pw"}}})");
  ASSERT_EQ(::utimensat(AT_FDCWD, config.c_str(), old_times, 0), 0);
  EXPECT_EQ(password_of(*creds.value(), "r.example"), "new-pw");
}

TEST(CredentialRotation, AFileThatTurnsMalformedFailsLookupsUntilFixed) {
  TempDir dir;
  auto config = dir.path() / "config.json";
  write_file(config, R"({"auths":{"r.example":{"username":"u","password":"good-pw"}}})");
  auto creds = DockerCredentials::load(config);
  ASSERT_TRUE(creds.ok());
  EXPECT_EQ(password_of(*creds.value(), "r.example"), "good-pw");
  write_file(config, R"({"auths":{"r.example":{"username":"u","password":"half-writ)");
  auto broken = creds.value()->lookup("r.example");
  ASSERT_FALSE(broken.ok());
  EXPECT_EQ(broken.error().code, EINVAL);
  EXPECT_NE(broken.error().message.find(config.string() + ": not valid JSON"), std::string::npos)
      << broken.error().message;
  EXPECT_EQ(broken.error().message.find("half-writ"), std::string::npos);
  write_file(config, R"({"auths":{"r.example":{"username":"u","password":"fixed-pw"}}})");
  EXPECT_EQ(password_of(*creds.value(), "r.example"), "fixed-pw");
}

class HelperRotation : public ::testing::Test {
 protected:
  void SetUp() override {
    write_counting_helper(dir.path(), "count");
    write_file(config(), R"({"credHelpers": {"helped.example": "count"}})");
  }
  std::filesystem::path config() const { return dir.path() / "config.json"; }
  std::shared_ptr<DockerCredentials> load() {
    CredentialPolicy policy;
    policy.helper_max_age = 15min;
    policy.refusal_ttl = 5s;
    auto creds = DockerCredentials::load(config(), clock, policy);
    if (!creds.ok()) throw std::runtime_error(creds.error().message);
    return creds.value();
  }
  std::optional<Credential> with_password(const std::string& password) const {
    Credential c;
    c.username = "hu";
    c.password = password;
    return c;
  }

  TempDir dir;
  PathPrefix path{dir.path()};
  std::shared_ptr<FakeClock> clock = std::make_shared<FakeClock>();
};

TEST_F(HelperRotation, AnswersAreKeptForTheMaxAgeThenAskedForAgain) {
  auto creds = load();
  EXPECT_EQ(password_of(*creds, "helped.example"), "secret-1");
  clock->advance(14min);
  EXPECT_EQ(password_of(*creds, "helped.example"), "secret-1");
  EXPECT_EQ(calls(dir.path()), 1);
  clock->advance(1min);
  EXPECT_EQ(password_of(*creds, "helped.example"), "secret-2");
  EXPECT_EQ(calls(dir.path()), 2);
}

TEST_F(HelperRotation, ARefusedAnswerIsAskedForAgainOnce) {
  auto creds = load();
  EXPECT_EQ(password_of(*creds, "helped.example"), "secret-1");
  EXPECT_TRUE(creds->refused("helped.example", with_password("secret-1")));
  EXPECT_EQ(password_of(*creds, "helped.example"), "secret-2");
  EXPECT_EQ(calls(dir.path()), 2);

  // The new answer refused too, at once: not asked again within the refusal TTL.
  EXPECT_FALSE(creds->refused("helped.example", with_password("secret-2")));
  EXPECT_EQ(password_of(*creds, "helped.example"), "secret-2");
  clock->advance(4s);
  EXPECT_FALSE(creds->refused("helped.example", with_password("secret-2")));
  EXPECT_EQ(calls(dir.path()), 2);
  // ...and no longer than that.
  clock->advance(1s);
  EXPECT_TRUE(creds->refused("helped.example", with_password("secret-2")));
  EXPECT_EQ(password_of(*creds, "helped.example"), "secret-3");
  EXPECT_EQ(calls(dir.path()), 3);
}

TEST_F(HelperRotation, ALateRefusalOfAnOldAnswerAsksNothing) {
  auto creds = load();
  EXPECT_EQ(password_of(*creds, "helped.example"), "secret-1");
  EXPECT_TRUE(creds->refused("helped.example", with_password("secret-1")));
  EXPECT_EQ(password_of(*creds, "helped.example"), "secret-2");
  // Another request that had sent secret-1 comes back refused: there is a newer answer already.
  EXPECT_TRUE(creds->refused("helped.example", with_password("secret-1")));
  EXPECT_EQ(password_of(*creds, "helped.example"), "secret-2");
  EXPECT_EQ(calls(dir.path()), 2);
}

TEST_F(HelperRotation, CredentialsFromTheFileItselfAreNotAskedForAgain) {
  write_file(config(), R"({"auths":{"inline.example":{"username":"iu","password":"inline-pw"}},
                           "credHelpers": {"helped.example": "count"}})");
  auto creds = load();
  EXPECT_EQ(password_of(*creds, "inline.example"), "inline-pw");
  Credential used;
  used.username = "iu";
  used.password = "inline-pw";
  EXPECT_FALSE(creds->refused("inline.example", used));
  EXPECT_EQ(calls(dir.path()), 0);
}

TEST_F(HelperRotation, AChangedFileDropsHelperAnswersAndATouchedOneDoesNot) {
  auto creds = load();
  EXPECT_EQ(password_of(*creds, "helped.example"), "secret-1");
  // The same bytes again (a touch, a rewrite): the answer stands.
  write_file(config(), R"({"credHelpers": {"helped.example": "count"}})");
  EXPECT_EQ(password_of(*creds, "helped.example"), "secret-1");
  EXPECT_EQ(calls(dir.path()), 1);
  // Other bytes: the helper may be another now; asked again.
  write_file(config(), R"({"credHelpers": {"helped.example": "count"}, "auths": {}})");
  EXPECT_EQ(password_of(*creds, "helped.example"), "secret-2");
  EXPECT_EQ(calls(dir.path()), 2);
}

TEST_F(HelperRotation, AFailingHelperIsRememberedForTheRefusalTtlOnly) {
  write_helper(dir.path(), "flaky",
               count_calls(dir.path()) + "echo 'keyring locked' >&2; exit 3\n");
  write_file(config(), R"({"credsStore": "flaky"})");
  auto creds = load();
  EXPECT_FALSE(creds->lookup("a.example").ok());
  EXPECT_FALSE(creds->lookup("a.example").ok());
  EXPECT_EQ(calls(dir.path()), 1);
  clock->advance(5s);
  auto again = creds->lookup("a.example");
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().message.find("keyring locked"), std::string::npos);
  EXPECT_EQ(calls(dir.path()), 2);
}

TEST_F(HelperRotation, ConcurrentLookupsShareOneHelperRun) {
  write_helper(dir.path(), "slow",
               "read server\nsleep 0.3\necho x >> '" + (dir.path() / "runs").string() + "'\n" +
                   R"(echo '{"Username":"u","Secret":"slow-secret"}')"
                   "\n");
  write_file(config(), R"({"credsStore": "slow"})");
  auto creds = load();
  std::vector<std::thread> threads;
  std::vector<std::string> got(8);
  for (size_t i = 0; i < got.size(); ++i)
    threads.emplace_back([&, i] { got[i] = password_of(*creds, "s.example"); });
  for (auto& t : threads) t.join();
  for (const std::string& g : got) EXPECT_EQ(g, "slow-secret");
  EXPECT_EQ(read_text(dir.path() / "runs"), "x\n");
}

TEST_F(HelperRotation, AnswersAreKeptForAtMost256Hosts) {
  write_file(config(), R"({"credsStore": "count"})");
  auto creds = load();
  EXPECT_EQ(password_of(*creds, "h0.example"), "secret-1");
  clock->advance(1s);  // h0's answer is the oldest
  for (int i = 1; i < 256; ++i) ASSERT_NE(password_of(*creds, "h" + std::to_string(i)), "none");
  EXPECT_EQ(calls(dir.path()), 256);
  // All 256 kept: the first host is not asked again.
  EXPECT_EQ(password_of(*creds, "h0.example"), "secret-1");
  EXPECT_NE(password_of(*creds, "h256"), "none");
  EXPECT_EQ(calls(dir.path()), 257);
  EXPECT_EQ(password_of(*creds, "h0.example"), "secret-258");
}

}  // namespace
}  // namespace imagefs::registry
