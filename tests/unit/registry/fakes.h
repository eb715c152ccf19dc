// Test doubles for the registry module's seams: a clock that never sleeps and FakeRegistry, an
// in-memory distribution server (with a token service and a CDN host for redirects) behind the
// Http interface, with fault injection. The store and catalog are the real ones, in a temporary
// directory.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "registry/clock.h"
#include "registry/http.h"
#include "registry/progress.h"
#include "registry/puller.h"
#include "registry/reference.h"
#include "registry/transport.h"
#include "store/blob_store.h"
#include "store/catalog.h"
#include "store/digest.h"

namespace imagefs::registry::testing {

// Time moves only when someone sleeps or the test advances it.
class FakeClock final : public Clock {
 public:
  [[nodiscard]] std::chrono::steady_clock::time_point steady_now() const override {
    std::lock_guard lock(mu_);
    return std::chrono::steady_clock::time_point(elapsed_);
  }
  [[nodiscard]] int64_t unix_now() const override {
    std::lock_guard lock(mu_);
    return 1700000000 + std::chrono::duration_cast<std::chrono::seconds>(elapsed_).count();
  }
  void sleep_for(std::chrono::milliseconds d) override {
    std::lock_guard lock(mu_);
    sleeps_.push_back(d);
    elapsed_ += d;
  }
  void advance(std::chrono::milliseconds d) {
    std::lock_guard lock(mu_);
    elapsed_ += d;
  }
  std::vector<std::chrono::milliseconds> sleeps() const {
    std::lock_guard lock(mu_);
    return sleeps_;
  }

 private:
  mutable std::mutex mu_;
  std::chrono::milliseconds elapsed_{1000000};
  std::vector<std::chrono::milliseconds> sleeps_;
};

// One request as the fake saw it.
struct SeenRequest {
  std::string method;
  std::string url;
  Headers headers;
  std::optional<uint64_t> range_start;
  std::string body;
  TlsVerify tls_verify = TlsVerify::yes;
  std::optional<std::chrono::milliseconds> timeout;
};

// An in-memory registry at https://registry.example (or plain http), a token service at
// https://auth.example/token and a CDN at https://cdn.example/ for redirected blobs.
class FakeRegistry final : public Http {
 public:
  enum class Auth { none, basic, token };

  std::string host = "registry.example";  // authority ("host" or "host:port")
  bool plain_http = false;                // speaks HTTP only (HTTPS attempts fail in TLS)
  bool untrusted_certificate = false;     // HTTPS with a certificate the client must reject
  Auth auth = Auth::none;
  std::string user = "alice";
  std::string password = "s3cret-passw0rd";
  std::string refresh_token = "refresh-t0ken-xyz";
  int64_t token_ttl = 300;      // seconds; 0 leaves expires_in out
  bool redirect_blobs = false;  // 307 to the CDN
  std::string cdn = "https://cdn.example";
  bool ignore_range = false;
  std::chrono::milliseconds blob_delay{0};  // real sleep per blob body, to overlap downloads
  std::shared_ptr<FakeClock> clock;

  // Faults: checked before routing; returning a response answers the request with it.
  std::function<std::optional<HttpResponse>(const SeenRequest&)> intercept;
  // Blob bodies are cut after this many bytes (then HttpFailure::interrupted), this many times;
  // drop_after equal to the body's size cuts the connection right after its last byte.
  uint64_t drop_after = 0;
  int drop_count = 0;
  // How a cut body ends: interrupted (a dropped connection) or timeout (the stall rule fired).
  HttpFailure drop_failure = HttpFailure::interrupted;
  // Blob bodies streamed to a sink (layers) go on after the blob with bytes without end, as a
  // chunked answer would, until the sink refuses them (or kEndlessCap bytes, when the test has
  // failed). endless_sent counts the extra bytes the sink took.
  bool endless_blobs = false;
  static constexpr uint64_t kEndlessCap = 64u << 20;
  std::atomic<uint64_t> endless_sent{0};

  explicit FakeRegistry(std::shared_ptr<FakeClock> c) : clock(std::move(c)) {}

  // Content.
  void put_blob(const std::string& repo, const std::string& bytes) {
    std::lock_guard lock(mu_);
    repos_[repo].blobs[store::Digest::of(bytes).str()] = bytes;
  }
  store::Digest put_manifest(const std::string& repo, const std::string& tag,
                             const std::string& bytes, const std::string& type) {
    store::Digest d = store::Digest::of(bytes);
    std::lock_guard lock(mu_);
    Repo& r = repos_[repo];
    r.manifests[d.str()] = {bytes, type};
    if (!tag.empty()) r.tags[tag] = d.str();
    return d;
  }
  void put_cdn(const std::string& path, const std::string& bytes) {
    std::lock_guard lock(mu_);
    cdn_files_[path] = bytes;
  }

  std::vector<SeenRequest> requests() const {
    std::lock_guard lock(mu_);
    return seen_;
  }
  size_t count(const std::string& needle) const {
    std::lock_guard lock(mu_);
    size_t n = 0;
    for (const auto& r : seen_) n += r.url.find(needle) != std::string::npos ? 1 : 0;
    return n;
  }
  void expire_tokens() {
    std::lock_guard lock(mu_);
    tokens_.clear();
  }
  int max_concurrent_blobs() const { return max_concurrent_; }

  HttpResponse perform(const HttpRequest& request, BodySink* sink) override;

 private:
  struct Manifest {
    std::string bytes;
    std::string type;
  };
  struct Repo {
    std::map<std::string, std::string> blobs;
    std::map<std::string, Manifest> manifests;
    std::map<std::string, std::string> tags;
  };
  struct Token {
    std::set<std::string> repos;  // with pull
    std::chrono::steady_clock::time_point expires;
  };

  HttpResponse route(const HttpRequest& request, BodySink* sink);
  HttpResponse registry(const SeenRequest& r, const std::string& path, BodySink* sink,
                        const HttpRequest& request);
  HttpResponse token_service(const SeenRequest& r, const std::string& path_and_query);
  HttpResponse deliver(const SeenRequest& r, int status, Headers headers, const std::string& body,
                       BodySink* sink, const HttpRequest& request, bool is_blob);
  HttpResponse unauthorized(const std::string& repo, const std::string& error);
  static HttpResponse error_response(int status, const std::string& code,
                                     const std::string& message);

  mutable std::mutex mu_;
  std::map<std::string, Repo> repos_;
  std::map<std::string, std::string> cdn_files_;
  std::map<std::string, Token> tokens_;
  std::vector<SeenRequest> seen_;
  int next_token_ = 0;
  std::atomic<int> concurrent_{0};
  std::atomic<int> max_concurrent_{0};
};

// A recording ProgressSink.
class RecordingProgress final : public ProgressSink {
 public:
  void layer_started(const LayerId& l, uint64_t offset) override {
    add("started " + std::to_string(l.index) + " at " + std::to_string(offset));
  }
  void layer_progress(const LayerId& l, uint64_t bytes) override {
    (void)l;
    (void)bytes;
    ++progress_calls;
  }
  void layer_finished(const LayerId& l) override { add("finished " + std::to_string(l.index)); }
  void layer_cached(const LayerId& l) override { add("cached " + std::to_string(l.index)); }
  void layer_failed(const LayerId& l, const Error& e) override {
    add("failed " + std::to_string(l.index) + ": " + e.message);
  }
  void message(const std::string& text) override { add("message " + text); }
  std::vector<std::string> events() const {
    std::lock_guard lock(mu_);
    return events_;
  }
  size_t count(const std::string& prefix) const {
    std::lock_guard lock(mu_);
    size_t n = 0;
    for (const auto& e : events_) n += e.starts_with(prefix) ? 1 : 0;
    return n;
  }
  int progress_calls = 0;

 private:
  void add(std::string e) {
    std::lock_guard lock(mu_);
    events_.push_back(std::move(e));
  }
  mutable std::mutex mu_;
  std::vector<std::string> events_;
};

// A temporary directory, removed with everything in it.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Everything a puller needs: the fake registry and clock, a real store and catalog under dir/,
// docker config at dir/config.json (absent until written).
struct TestEnv {
  std::shared_ptr<FakeClock> clock = std::make_shared<FakeClock>();
  std::shared_ptr<FakeRegistry> registry = std::make_shared<FakeRegistry>(clock);
  TempDir dir;
  std::shared_ptr<store::BlobStore> blobs;
  std::shared_ptr<store::Catalog> catalog;
  RegistryOptions options;

  TestEnv();
  // A new, empty store and catalog (a new directory).
  void reset_store();
  void write_docker_config(const std::string& text) const;
  std::unique_ptr<Puller> puller() const;
  static Reference ref(const std::string& text);
  // Leaves `bytes` as an interrupted download of `digest`, as a killed pull would.
  void write_partial(const store::Digest& digest, const std::string& bytes) const;
  // Bytes of `digest` held as a partial download (0 if none).
  [[nodiscard]] uint64_t partial_size(const store::Digest& digest) const;

 private:
  int stores_ = 0;
};

// Builders for test images (the layer bytes need not be tar: the registry never looks inside).
struct TestImage {
  std::string manifest;
  std::string config;
  std::vector<std::string> layers;
  store::Digest manifest_digest() const { return store::Digest::of(manifest); }
};

TestImage make_image(
    const std::string& arch, const std::vector<std::string>& layers,
    const std::string& variant = "",
    const std::string& manifest_type = "application/vnd.oci.image.manifest.v1+json");
std::string make_index(const std::vector<std::pair<std::string, const TestImage*>>& entries);
// Pushes the image's blobs and manifest; returns the manifest digest.
store::Digest push(FakeRegistry& registry, const std::string& repo, const std::string& tag,
                   const TestImage& image);

}  // namespace imagefs::registry::testing
