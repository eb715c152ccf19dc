// registry/ against real registries: Debian's docker-registry started by scripts/registry in each
// mode (open, basic, token, tls), the fixture images pushed by skopeo, the fault proxy in front
// for dropped connections and 503s, and the real store and catalog. Exit status 77 (skip) when a
// tool is missing, except under CI=true, where that is a failure.
#include <gtest/gtest.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "registry/credentials.h"
#include "registry/puller.h"
#include "registry/reference.h"
#include "store/blob_store.h"
#include "store/catalog.h"

namespace imagefs::registry {
namespace {

namespace fs = std::filesystem;

fs::path source_dir() {
  const char* s = std::getenv("IMAGEFS_SOURCE_DIR");
  return s != nullptr ? fs::path(s) : fs::path(IMAGEFS_SOURCE_DIR_DEFAULT);
}

fs::path fixtures_dir() {
  const char* b = std::getenv("IMAGEFS_BUILD_DIR");
  return (b != nullptr ? fs::path(b) : source_dir() / "build") / "fixtures";
}

struct Ran {
  int status = -1;
  std::string out;
};

// Runs a shell command; stdout (and stderr, if asked) collected.
Ran run(const std::string& command, bool with_stderr = true) {
  Ran r;
  FILE* pipe = ::popen((command + (with_stderr ? " 2>&1" : "")).c_str(), "r");
  if (pipe == nullptr) return r;
  char buffer[4096];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) r.out.append(buffer, n);
  int status = ::pclose(pipe);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

bool has_command(const std::string& name) {
  return run("command -v " + name + " >/dev/null", false).status == 0;
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "imagefs-registry-it.XXXXXX").string();
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty() && std::getenv("IMAGEFS_KEEP_TMP") == nullptr) fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// A registry from scripts/registry, stopped on destruction.
class Registry {
 public:
  Registry(const std::string& mode, const fs::path& dir, const std::string& extra = "")
      : dir_(dir) {
    Ran r = run((source_dir() / "scripts/registry").string() + " start --mode " + mode + " --dir " +
                    dir.string() + " " + extra,
                true);
    if (r.status != 0) {
      error_ = "scripts/registry start --mode " + mode + " failed:\n" + r.out;
      return;
    }
    std::ifstream env(dir / "env");
    std::string line;
    while (std::getline(env, line)) {
      size_t eq = line.find('=');
      if (eq != std::string::npos) vars_[line.substr(0, eq)] = line.substr(eq + 1);
    }
  }
  ~Registry() {
    if (vars_.empty()) return;
    (void)run((source_dir() / "scripts/registry").string() + " stop " + dir_.string());
  }
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  [[nodiscard]] const std::string& error() const { return error_; }
  [[nodiscard]] std::string var(const std::string& name) const {
    auto it = vars_.find(name);
    return it == vars_.end() ? "" : it->second;
  }
  [[nodiscard]] std::string host() const { return var("IMAGEFS_REGISTRY"); }
  [[nodiscard]] std::string creds() const {
    return var("IMAGEFS_REGISTRY_USER") + ":" + var("IMAGEFS_REGISTRY_PASSWORD");
  }

  // Pushes fixture NAME as REPO:latest (skopeo, digests preserved); returns the digest pushed.
  std::string push(const std::string& name, const std::string& repo) const {
    Ran built = run((source_dir() / "scripts/fixtures").string() + " build --out " +
                    fixtures_dir().string() + " " + name);
    if (built.status != 0) {
      ADD_FAILURE() << "scripts/fixtures build " << name << " failed: " << built.out;
      return "";
    }
    std::string flags = "--all --preserve-digests";
    if (var("IMAGEFS_REGISTRY_MODE") == "tls") {
      flags += " --dest-cert-dir " + var("IMAGEFS_REGISTRY_CERT_DIR");
    } else {
      flags += " --dest-tls-verify=false";
    }
    if (!var("IMAGEFS_REGISTRY_USER").empty()) flags += " --dest-creds " + creds();
    fs::path layout = fixtures_dir() / "oci" / name;
    Ran pushed = run("skopeo copy -q " + flags + " oci:" + layout.string() + ":latest docker://" +
                     host() + "/" + repo + ":latest");
    if (pushed.status != 0) {
      ADD_FAILURE() << "push of " << name << " failed: " << pushed.out;
      return "";
    }
    Ran digest = run("skopeo inspect --raw " +
                         std::string(var("IMAGEFS_REGISTRY_MODE") == "tls"
                                         ? "--cert-dir " + var("IMAGEFS_REGISTRY_CERT_DIR")
                                         : "--tls-verify=false") +
                         (var("IMAGEFS_REGISTRY_USER").empty() ? "" : " --creds " + creds()) +
                         " docker://" + host() + "/" + repo + ":latest | sha256sum",
                     false);
    return "sha256:" + digest.out.substr(0, 64);
  }

 private:
  fs::path dir_;
  std::string error_;
  std::map<std::string, std::string> vars_;
};

// tests/harness/faultproxy.py in front of a registry, killed on destruction.
class FaultProxy {
 public:
  FaultProxy(const std::string& target, const std::string& args, const fs::path& dir) {
    fs::path port_file = dir / ("proxy-" + std::to_string(++count_) + ".addr");
    log_ = dir / ("proxy-" + std::to_string(count_) + ".log");
    std::string command = "python3 " + (source_dir() / "tests/harness/faultproxy.py").string() +
                          " --target " + target + " --port-file " + port_file.string() + " " +
                          args + " </dev/null >/dev/null 2>" + log_.string() + " & echo $!";
    Ran r = run(command, false);
    pid_ = std::atoi(r.out.c_str());
    for (int i = 0; i < 100 && !fs::exists(port_file); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::ifstream in(port_file);
    std::getline(in, address_);
  }
  ~FaultProxy() {
    if (pid_ > 0) (void)::kill(pid_, SIGTERM);
  }
  FaultProxy(const FaultProxy&) = delete;
  FaultProxy& operator=(const FaultProxy&) = delete;
  [[nodiscard]] const std::string& address() const { return address_; }
  [[nodiscard]] std::string log() const {
    std::ifstream in(log_);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  static inline int count_ = 0;
  pid_t pid_ = -1;
  std::string address_;
  fs::path log_;
};

class Messages final : public ProgressSink {
 public:
  void message(const std::string& text) override { lines.push_back(text); }
  void layer_finished(const LayerId&) override { ++finished; }
  void layer_cached(const LayerId&) override { ++cached; }
  [[nodiscard]] std::string all() const {
    std::string s;
    for (const auto& l : lines) s += l + "\n";
    return s;
  }
  std::vector<std::string> lines;
  int finished = 0;
  int cached = 0;
};

// A store, a catalog and a docker config of our own (never the user's).
class Env {
 public:
  Env() {
    store_root_ = tmp_.path() / "store";
    blobs = store::BlobStore::open(store_root_).value();
    catalog = store::Catalog::open(store::Catalog::file_in(store_root_)).value();
    options.docker_config = tmp_.path() / "config.json";
  }
  void write_config(const std::string& text) const {
    std::ofstream(tmp_.path() / "config.json") << text;
  }
  [[nodiscard]] std::unique_ptr<Puller> puller() const {
    auto p = Puller::create(blobs, catalog, options);
    EXPECT_TRUE(p.ok()) << p.error().message;
    return p.ok() ? std::move(p).value() : nullptr;
  }
  [[nodiscard]] const fs::path& dir() const { return tmp_.path(); }

  TempDir tmp_;
  fs::path store_root_;
  std::shared_ptr<store::BlobStore> blobs;
  std::shared_ptr<store::Catalog> catalog;
  RegistryOptions options;
};

Reference parse_ref(const std::string& text) { return parse_reference(text).value(); }

void expect_verified(const Env& env, const store::ImageRecord& image) {
  for (const auto& layer : image.layers)
    EXPECT_TRUE(env.blobs->contains(layer.digest)) << layer.digest.str();
  auto bad = env.blobs->verify();
  ASSERT_TRUE(bad.ok()) << bad.error().message;
  EXPECT_TRUE(bad->empty());
}

// One registry per mode for the whole run (starting one takes a second or two).
class Registries : public ::testing::Environment {
 public:
  void SetUp() override {}
  void TearDown() override {
    open.reset();
    basic.reset();
    token.reset();
    tls.reset();
  }
  Registry& get(std::unique_ptr<Registry>& slot, const std::string& mode,
                const std::string& extra = "") {
    if (!slot) {
      slot = std::make_unique<Registry>(mode, dir.path() / mode, extra);
      if (!slot->error().empty()) ADD_FAILURE() << slot->error();
    }
    return *slot;
  }
  TempDir dir;
  std::unique_ptr<Registry> open, basic, token, tls;
};
Registries* registries = nullptr;

class RealRegistry : public ::testing::Test {
 protected:
  Registry& open() { return registries->get(registries->open, "open"); }
  Registry& basic() { return registries->get(registries->basic, "basic"); }
  Registry& token() { return registries->get(registries->token, "token", "--token-ttl 3"); }
  Registry& tls() { return registries->get(registries->tls, "tls"); }
  Env env;
};

TEST_F(RealRegistry, OpenRegistryPullsAndVerifiesEveryLayer) {
  Registry& r = open();
  std::string pushed = r.push("edge", "edge");  // tar, tar+gzip and tar+zstd layers
  ASSERT_FALSE(pushed.empty());
  Messages progress;
  auto pulled = env.puller()->pull(parse_ref(r.host() + "/edge"), &progress);
  ASSERT_TRUE(pulled.ok()) << pulled.error().message;
  EXPECT_EQ(pulled->image.manifest.str(), pushed);
  EXPECT_EQ(pulled->image.layers.size(), 4u);
  EXPECT_EQ(progress.finished, 4);
  expect_verified(env, pulled->image);
  auto record = env.catalog->ref(r.host() + "/edge:latest", pulled->platform.str());
  ASSERT_TRUE(record.ok() && record->has_value());
  EXPECT_EQ(record.value()->manifest.str(), pushed);

  // Again: everything cached, and the tag costs one HEAD.
  Messages again;
  ASSERT_TRUE(env.puller()->pull(parse_ref(r.host() + "/edge"), &again).ok());
  EXPECT_EQ(again.cached, 4);
}

TEST_F(RealRegistry, MultiarchIndexChoosesThePlatform) {
  Registry& r = open();
  std::string index = r.push("multiarch", "multiarch");
  ASSERT_FALSE(index.empty());
  auto p = env.puller();
  auto arm = p->pull(parse_ref(r.host() + "/multiarch"), parse_platform("linux/arm64").value());
  ASSERT_TRUE(arm.ok()) << arm.error().message;
  auto amd = p->pull(parse_ref(r.host() + "/multiarch"), parse_platform("linux/amd64").value());
  ASSERT_TRUE(amd.ok()) << amd.error().message;
  EXPECT_NE(arm->image.manifest, amd->image.manifest);
  EXPECT_EQ(arm->image.platform, "linux/arm64/v8");
  EXPECT_EQ(amd->image.platform, "linux/amd64");
  ASSERT_TRUE(arm->ref.index.has_value());
  EXPECT_EQ(arm->ref.index->str(), index);
  // The shared base layer is one blob.
  EXPECT_EQ(arm->image.layers[0].digest, amd->image.layers[0].digest);

  auto none =
      p->resolve(parse_ref(r.host() + "/multiarch"), parse_platform("linux/riscv64").value());
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code, ENOENT);
  EXPECT_NE(none.error().message.find("the image has: linux/amd64, linux/arm64/v8"),
            std::string::npos)
      << none.error().message;
}

TEST_F(RealRegistry, UnknownTagAndRepository) {
  Registry& r = open();
  ASSERT_FALSE(r.push("tiny", "tiny").empty());
  auto p = env.puller();
  auto tag = p->resolve(parse_ref(r.host() + "/tiny:9.9"));
  ASSERT_FALSE(tag.ok());
  EXPECT_EQ(tag.error().code, ENOENT);
  EXPECT_EQ(tag.error().message,
            "manifest unknown: tag 9.9 not found in repository tiny on " + r.host());
  auto repo = p->resolve(parse_ref(r.host() + "/no/such/image:1"));
  ASSERT_FALSE(repo.ok());
  EXPECT_EQ(repo.error().code, ENOENT);
  // distribution 2.8 answers MANIFEST_UNKNOWN (not NAME_UNKNOWN) for a repository it lacks.
  EXPECT_EQ(repo.error().message,
            "manifest unknown: tag 1 not found in repository no/such/image on " + r.host());
}

TEST_F(RealRegistry, BasicAuthNeedsCredentialsFromDockerConfig) {
  Registry& r = basic();
  ASSERT_FALSE(r.push("tiny", "tiny").empty());
  auto denied = env.puller()->pull(parse_ref(r.host() + "/tiny"));
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.error().code, EACCES);
  EXPECT_NE(denied.error().message.find("(no credentials for " + r.host() + " in " +
                                        env.options.docker_config.string() + ")"),
            std::string::npos)
      << denied.error().message;

  env.write_config(R"({"auths":{"http://)" + r.host() + R"(":{"auth":")" +
                   base64_encode(r.creds()) + R"("}}})");
  auto pulled = env.puller()->pull(parse_ref(r.host() + "/tiny"));
  ASSERT_TRUE(pulled.ok()) << pulled.error().message;
  expect_verified(env, pulled->image);

  env.write_config(R"({"auths":{")" + r.host() +
                   R"(":{"username":"imagefs","password":"wrong-pw-42"}}})");
  auto wrong = env.puller()->resolve(parse_ref(r.host() + "/tiny"));
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code, EACCES);
  EXPECT_EQ(wrong.error().message.find("wrong-pw-42"), std::string::npos);
  EXPECT_NE(wrong.error().message.find("were not accepted"), std::string::npos)
      << wrong.error().message;
}

TEST_F(RealRegistry, BearerTokensAnonymousWithCredentialsAndAfterExpiry) {
  Registry& r = token();
  ASSERT_FALSE(r.push("tiny", "tiny").empty());
  ASSERT_FALSE(r.push("tiny", "private/tiny").empty());

  auto anonymous = env.puller()->pull(parse_ref(r.host() + "/tiny"));
  ASSERT_TRUE(anonymous.ok()) << anonymous.error().message;

  auto denied = env.puller()->resolve(parse_ref(r.host() + "/private/tiny"));
  ASSERT_FALSE(denied.ok());
  EXPECT_EQ(denied.error().code, EACCES);
  EXPECT_NE(denied.error().message.find("access to repository private/tiny on " + r.host() +
                                        " was denied"),
            std::string::npos)
      << denied.error().message;

  // A credential helper supplies the password (docker-credential-imagefstest on PATH).
  fs::path bin = env.dir() / "bin";
  fs::create_directories(bin);
  std::string user = r.var("IMAGEFS_REGISTRY_USER");
  std::string password = r.var("IMAGEFS_REGISTRY_PASSWORD");
  {
    std::ofstream helper(bin / "docker-credential-imagefstest");
    helper << "#!/bin/sh\nread server\n[ \"$server\" = \"" << r.host()
           << "\" ] || { echo 'credentials not found in native keychain'; exit 1; }\n"
           << "echo '{\"ServerURL\":\"" << r.host() << "\",\"Username\":\"" << user
           << "\",\"Secret\":\"" << password << "\"}'\n";
  }
  ::chmod((bin / "docker-credential-imagefstest").c_str(), 0755);
  std::string old_path = std::getenv("PATH") != nullptr ? std::getenv("PATH") : "";
  ::setenv("PATH", (bin.string() + ":" + old_path).c_str(), 1);
  env.write_config(R"({"credsStore":"imagefstest"})");
  auto p = env.puller();
  Messages progress;
  auto pulled = p->pull(parse_ref(r.host() + "/private/tiny"), &progress);
  ASSERT_TRUE(pulled.ok()) << pulled.error().message;
  expect_verified(env, pulled->image);

  // Tokens live 3 s here: after 4 s the same puller must get a new one, and the pull works.
  std::this_thread::sleep_for(std::chrono::seconds(4));
  for (const auto& layer : pulled->image.layers) ASSERT_TRUE(env.blobs->remove(layer.digest).ok());
  auto again = p->pull(parse_ref(r.host() + "/private/tiny"), &progress);
  ::setenv("PATH", old_path.c_str(), 1);
  ASSERT_TRUE(again.ok()) << again.error().message;
  EXPECT_EQ(progress.all().find(password), std::string::npos);
}

TEST_F(RealRegistry, TlsWithTheRunsCa) {
  Registry& r = tls();
  ASSERT_FALSE(r.push("tiny", "tiny").empty());
  auto untrusted = env.puller()->resolve(parse_ref(r.host() + "/tiny"));
  ASSERT_FALSE(untrusted.ok());
  EXPECT_EQ(untrusted.error().code, EIO);
  EXPECT_NE(untrusted.error().message.find("the TLS certificate of registry " + r.host() +
                                           " is not trusted"),
            std::string::npos)
      << untrusted.error().message;
  EXPECT_NE(untrusted.error().message.find("--ca-file"), std::string::npos);

  env.options.ca_file = r.var("IMAGEFS_REGISTRY_CA");
  auto pulled = env.puller()->pull(parse_ref(r.host() + "/tiny"));
  ASSERT_TRUE(pulled.ok()) << pulled.error().message;
  expect_verified(env, pulled->image);
}

TEST_F(RealRegistry, ResumesAfterTheConnectionDropsMidBlob) {
  Registry& r = open();
  ASSERT_FALSE(r.push("tiny", "tiny").empty());
  // The proxy drops only the big layer (each matching request uses up one drop).
  auto resolved = env.puller()->resolve(parse_ref(r.host() + "/tiny"));
  ASSERT_TRUE(resolved.ok()) << resolved.error().message;
  const store::LayerRecord* big = &resolved->image.layers[0];
  for (const auto& layer : resolved->image.layers) {
    if (layer.size > big->size) big = &layer;
  }
  ASSERT_GT(big->size, 600000u);
  FaultProxy proxy(
      r.host(),
      "--path '" + std::string(big->digest.hex()) + "' --drop-after 250000 --drop-count 2",
      env.dir());
  ASSERT_FALSE(proxy.address().empty()) << proxy.log();
  Messages progress;
  auto pulled = env.puller()->pull(parse_ref(proxy.address() + "/tiny"), &progress);
  ASSERT_TRUE(pulled.ok()) << pulled.error().message << "\n" << proxy.log();
  expect_verified(env, pulled->image);
  EXPECT_NE(progress.all().find("dropped; resuming at byte "), std::string::npos) << progress.all();
}

TEST_F(RealRegistry, RetriesServiceUnavailable) {
  Registry& r = open();
  ASSERT_FALSE(r.push("tiny", "tiny").empty());
  FaultProxy proxy(r.host(), "--path '/manifests/' --status 503 --status-count 2 --retry-after 1",
                   env.dir());
  ASSERT_FALSE(proxy.address().empty()) << proxy.log();
  Messages progress;
  auto pulled = env.puller()->pull(parse_ref(proxy.address() + "/tiny"), &progress);
  ASSERT_TRUE(pulled.ok()) << pulled.error().message;
  EXPECT_NE(progress.all().find("answered HTTP 503; retrying in 1.0 s"), std::string::npos)
      << progress.all();
}

TEST_F(RealRegistry, CorruptBlobIsRefusedAndNothingKept) {
  // A registry of its own: its storage is damaged on purpose.
  Registry r("open", env.dir() / "corrupt-registry");
  ASSERT_TRUE(r.error().empty()) << r.error();
  ASSERT_FALSE(r.push("tiny", "tiny").empty());
  auto p = env.puller();
  auto resolved = p->resolve(parse_ref(r.host() + "/tiny"));
  ASSERT_TRUE(resolved.ok()) << resolved.error().message;
  const store::LayerRecord& layer = resolved->image.layers.back();
  std::string hex(layer.digest.hex());
  fs::path data = fs::path(r.var("IMAGEFS_REGISTRY_DIR")) /
                  "storage/docker/registry/v2/blobs/sha256" / hex.substr(0, 2) / hex / "data";
  ASSERT_TRUE(fs::exists(data)) << data;
  {
    std::fstream f(data, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('\x42');
    f.put('\x24');
  }
  auto fetched = p->fetch_layers(parse_ref(r.host() + "/tiny"), resolved->image);
  ASSERT_FALSE(fetched.ok());
  EXPECT_EQ(fetched.error().code, EIO);
  EXPECT_NE(fetched.error().message.find("digest mismatch"), std::string::npos)
      << fetched.error().message;
  EXPECT_FALSE(env.blobs->contains(layer.digest));
  auto writer = env.blobs->open_writer(layer.digest);
  ASSERT_TRUE(writer.ok());
  EXPECT_EQ(writer.value()->offset(), 0u);  // no partial left to resume from
}

TEST_F(RealRegistry, UnreachableRegistry) {
  // A port nobody listens on: bind one, then close it.
  Ran port =
      run("python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\",0)); "
          "print(s.getsockname()[1])'",
          false);
  std::string host = "127.0.0.1:" + port.out.substr(0, port.out.find('\n'));
  auto r = env.puller()->resolve(parse_ref(host + "/tiny"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code, EIO);
  EXPECT_NE(r.error().message.find("registry " + host + " is unreachable"), std::string::npos)
      << r.error().message;
}

}  // namespace
}  // namespace imagefs::registry

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  std::vector<std::string> missing;
  for (const char* tool :
       {"docker-registry", "skopeo", "python3", "openssl", "htpasswd", "sha256sum"}) {
    if (!imagefs::registry::has_command(tool)) missing.emplace_back(tool);
  }
  if (!missing.empty()) {
    std::string list;
    for (const auto& m : missing) list += " " + m;
    const char* ci = std::getenv("CI");
    if (ci != nullptr && std::string(ci) == "true") {
      std::fprintf(stderr, "FAIL: missing under CI=true:%s (scripts/setup installs them)\n",
                   list.c_str());
      return 1;
    }
    std::fprintf(stderr, "SKIP: missing:%s (scripts/setup installs them)\n", list.c_str());
    return 77;
  }
  imagefs::registry::registries = new imagefs::registry::Registries();
  ::testing::AddGlobalTestEnvironment(imagefs::registry::registries);  // gtest owns it
  return RUN_ALL_TESTS();
}
