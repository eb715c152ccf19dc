// Fuzzes what a token service answers (registry/auth.h, the Bearer flow): the first byte picks the
// HTTP status (mostly 200) and whether the host has credentials, the rest is the body. Through
// Authenticator's public API, with a fake clock and fetch: no crash and no exception; a 200 gives a
// token exactly when the body, read as the distribution spec says (an object whose "token", else
// "access_token", is a non-empty string), holds one, and then that token; the token lives
// `expires_in` seconds (an integer > 0, capped at a year), else 60 s, measured from the exchange
// whatever "issued_at" says: it is served from the cache until then, fetched again from then on;
// an error is EIO (EACCES for 401/403) with a message; no message ever holds the password, the
// Basic header or a token (a token service that echoes them back is redacted).
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "registry/auth.h"
#include "registry/credentials.h"
#include "registry/www_authenticate.h"

namespace {

using imagefs::registry::Authenticator;
using imagefs::registry::Challenge;
using imagefs::registry::HttpRequest;
using imagefs::registry::HttpResponse;
using nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kHost = "registry.example";
constexpr const char* kScope = "repository:app:pull";
constexpr const char* kPassword = "s3cret-passw0rd";

// A failed invariant names itself before the crash libFuzzer records.
[[noreturn]] void fail(int line, const char* what) {
  std::fprintf(stderr, "token_response_fuzz.cpp:%d: invariant failed: %s\n", line, what);
  std::abort();
}
#define CHECK(x) ((x) ? (void)0 : fail(__LINE__, #x))

class FuzzClock final : public imagefs::registry::Clock {
 public:
  [[nodiscard]] std::chrono::steady_clock::time_point steady_now() const override {
    return std::chrono::steady_clock::time_point(elapsed_);
  }
  [[nodiscard]] int64_t unix_now() const override {
    return 1700000000 + std::chrono::duration_cast<std::chrono::seconds>(elapsed_).count();
  }
  void sleep_for(std::chrono::milliseconds d) override { elapsed_ += d; }
  void advance(std::chrono::milliseconds d) { elapsed_ += d; }

 private:
  std::chrono::milliseconds elapsed_{1000};
};

// Credentials for kHost in a config.json of their own, written once.
std::shared_ptr<imagefs::registry::DockerCredentials> logged_in() {
  static const std::shared_ptr<imagefs::registry::DockerCredentials> creds = [] {
    std::string dir = "/tmp/imagefs-token-fuzz-XXXXXX";
    if (::mkdtemp(dir.data()) == nullptr) std::abort();
    const std::filesystem::path file = std::filesystem::path(dir) / "config.json";
    {
      std::ofstream out(file);
      out << R"({"auths":{"registry.example":{"auth":")" +
                 imagefs::registry::base64_encode(std::string("alice:") + kPassword) + R"("}}})";
    }
    auto loaded = imagefs::registry::DockerCredentials::load(file);
    CHECK(loaded.ok());
    // Kept while the process runs: the credentials follow the file (a removed config.json means
    // no credentials), so it must stay; removed at exit.
    static const struct RemoveAtExit {
      std::string dir;
      ~RemoveAtExit() {
        std::error_code ec;
        std::filesystem::remove_all(dir, ec);
      }
    } remove_at_exit{dir};
    return *loaded;
  }();
  return creds;
}

// What the distribution spec's token.md makes of a 200 body: the token, and its lifetime.
struct Expected {
  std::string token;
  std::chrono::seconds lifetime{60};
  std::string refresh_token;
};

Expected read_spec(std::string_view body) {
  Expected e;
  const json doc = json::parse(body, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return e;
  for (const char* key : {"token", "access_token"}) {
    auto v = doc.find(key);
    if (v != doc.end() && v->is_string() && !v->get<std::string>().empty()) {
      e.token = v->get<std::string>();
      break;
    }
  }
  if (auto v = doc.find("expires_in"); v != doc.end()) {
    int64_t seconds = 0;
    if (v->is_number_unsigned()) {
      const uint64_t u = v->get<uint64_t>();
      seconds = u > INT64_MAX ? -1 : static_cast<int64_t>(u);
    } else if (v->is_number_integer()) {
      seconds = v->get<int64_t>();
    }
    if (seconds > 0) e.lifetime = std::chrono::seconds(std::min<int64_t>(seconds, 365LL * 86400));
  }
  if (auto v = doc.find("refresh_token"); v != doc.end() && v->is_string())
    e.refresh_token = v->get<std::string>();
  return e;
}

// No secret, nor 8 bytes of one (a message cut short must not leak a secret's start either), in
// `text`, but for those bytes found in `harmless` as well.
void check_no_secret(const std::string& text, const std::string& secret,
                     std::string_view harmless = "<redacted>") {
  if (secret.size() < 8) return;  // short secrets are not redacted (auth.cpp)
  for (size_t at = 0; at + 8 <= secret.size(); ++at) {
    const std::string window = secret.substr(at, 8);
    if (harmless.find(window) != std::string_view::npos) continue;
    if (text.find(window) != std::string::npos) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  static constexpr int kStatuses[] = {200, 200, 200, 200, 200, 401, 403, 500};
  const int status = kStatuses[data[0] & 7];
  const bool with_credentials = (data[0] & 8) != 0;
  const std::string body(reinterpret_cast<const char*>(data) + 1, size - 1);

  auto clock = std::make_shared<FuzzClock>();
  int fetches = 0;
  auto fetch = [&](const HttpRequest& request) -> imagefs::Result<HttpResponse> {
    ++fetches;
    CHECK(request.url.starts_with("https://auth.example/token"));
    HttpResponse response;
    response.status = status;
    response.body = body;
    return response;
  };
  Authenticator auth(
      with_credentials ? logged_in() : imagefs::registry::DockerCredentials::none(), clock, fetch,
      [](const std::string&) { return true; }, "imagefs-fuzz");
  Challenge challenge;
  challenge.scheme = "bearer";
  challenge.params = {{"realm", "https://auth.example/token"}, {"service", "fuzz"}};

  const Expected expected = read_spec(body);
  auto answer = auth.on_unauthorized(kHost, kScope, {challenge}, "");
  CHECK(fetches == 1);
  // The password and the Basic header are known before the exchange: no message may hold them,
  // whatever the token service sends back (it may echo them).
  std::vector<std::string> credentials;
  if (with_credentials) {
    credentials.emplace_back(kPassword);
    credentials.push_back(imagefs::registry::base64_encode(std::string("alice:") + kPassword));
  }
  if (!answer.ok()) {
    CHECK(!answer.error().message.empty());
    CHECK(answer.error().code == (status == 401 || status == 403 ? EACCES : EIO));
    CHECK(status != 200 || expected.token.empty());
    // What the service sent is its business; what it sent less the secrets is all that may show.
    std::string harmless = body;
    for (const std::string& secret : credentials) {
      for (size_t at = harmless.find(secret); at != std::string::npos;
           at = harmless.find(secret, at))
        harmless.replace(at, secret.size(), "<redacted>");
    }
    for (const std::string& secret : credentials)
      check_no_secret(answer.error().message, secret, harmless + "<redacted>");
    return 0;
  }
  CHECK(status == 200 && !expected.token.empty());
  CHECK(answer->has_value() && **answer == "Bearer " + expected.token);

  // Expiry: cached until the lifetime has passed since the exchange, then fetched again.
  clock->advance(expected.lifetime - 1ms);
  auto cached = auth.authorization(kHost, kScope);
  CHECK(cached.ok() && *cached == "Bearer " + expected.token && fetches == 1);
  clock->advance(1ms);
  auto again = auth.authorization(kHost, kScope);
  CHECK(again.ok() && *again == "Bearer " + expected.token && fetches == 2);

  // Every secret seen is redacted from text meant for people.
  for (const std::string& secret : {expected.token, expected.refresh_token})
    check_no_secret(auth.redact(secret), secret);
  return 0;
}
