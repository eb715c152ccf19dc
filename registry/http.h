// The HTTP seam: one request, one response, no redirects followed. The registry client builds its
// policy (schemes, auth, retries, redirects, resume) on top; libcurl is the one real
// implementation (curl_http.h), and unit tests substitute a fake.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"

namespace imagefs::registry {

// Header fields in the order given; names compare case-insensitively.
class Headers {
 public:
  void add(std::string name, std::string value) {
    fields_.emplace_back(std::move(name), std::move(value));
  }
  // Replaces every field called `name` by one.
  void set(std::string_view name, std::string value);
  void remove(std::string_view name);
  // The first value of `name`, or nullopt.
  [[nodiscard]] std::optional<std::string> get(std::string_view name) const;
  [[nodiscard]] std::vector<std::string> get_all(std::string_view name) const;
  [[nodiscard]] bool has(std::string_view name) const { return get(name).has_value(); }
  [[nodiscard]] const std::vector<std::pair<std::string, std::string>>& fields() const {
    return fields_;
  }
  void clear() { fields_.clear(); }

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

enum class TlsVerify { yes, no };

struct HttpRequest {
  std::string method = "GET";  // GET, HEAD or POST
  std::string url;
  Headers headers;
  std::optional<uint64_t> range_start;  // sends "Range: bytes=N-"
  std::string body;                     // POST body, sent as given
  TlsVerify tls_verify = TlsVerify::yes;
  // Per-host TLS (hosts.toml): PEM CA certificates trusted besides the system's (they replace
  // HttpOptions::ca_file, so the transport puts that file's certificates in too), and a client
  // certificate (its key in `client_key`, or in the certificate file when that is empty).
  std::string ca_pem;
  std::filesystem::path client_cert;
  std::filesystem::path client_key;
  // A 2xx body collected in HttpResponse::body (no sink) longer than this ends the transfer with
  // HttpFailure::too_large. Bodies of other answers are kept up to 64 KiB, the rest ignored.
  uint64_t max_body_bytes = 16u << 20;
  // The whole exchange (connecting included) ends with HttpFailure::timeout after this long;
  // unset: no total limit (the stall rule of HttpOptions still applies).
  std::optional<std::chrono::milliseconds> timeout;
};

// Why no complete response came back. Mapped to user-facing errors by the transport.
enum class HttpFailure {
  none,
  unreachable,  // name not resolved, connection refused or unroutable
  certificate,  // the server's TLS certificate is not trusted (or does not match the host)
  tls,          // another TLS failure, e.g. the server does not speak TLS
  timeout,      // no connection in time, or the transfer stalled
  interrupted,  // the connection dropped before the whole response arrived
  aborted,      // the body sink returned an error (it holds the reason)
  too_large,    // the collected body exceeded max_body_bytes
  other,
};

struct HttpResponse {
  int status = 0;  // 0 when failure != none and no status line arrived
  Headers headers;
  std::string body;  // the body, unless a sink took it
  HttpFailure failure = HttpFailure::none;
  std::string failure_detail;       // the library's words; never contains request headers
  std::optional<Error> sink_error;  // failure == aborted: what the sink returned

  [[nodiscard]] bool ok() const { return failure == HttpFailure::none; }
};

// Receives the body of a successful (2xx) response as it arrives. Bodies of other answers go to
// HttpResponse::body. An error returned by any method ends the transfer (HttpFailure::aborted).
class BodySink {
 public:
  virtual ~BodySink() = default;
  // Called once per response, before the first body byte (also for an empty body).
  virtual Result<void> begin(int status, const Headers& headers) = 0;
  virtual Result<void> write(std::span<const uint8_t> bytes) = 0;
};

// Performs single HTTP exchanges. Implementations are safe to call from many threads at once.
class Http {
 public:
  virtual ~Http() = default;
  // Sends `request` and waits for the whole response. Redirects are returned, not followed.
  // `sink` (may be null) takes the body of a 2xx answer.
  virtual HttpResponse perform(const HttpRequest& request, BodySink* sink) = 0;
};

struct HttpOptions {
  std::string user_agent;
  // A PEM file of extra CAs trusted in addition to the system's; empty: system CAs only.
  std::filesystem::path ca_file;
  std::chrono::milliseconds connect_timeout{15000};
  // A transfer that moves less than stall_min_rate bytes a second for stall_window is abandoned
  // (HttpFailure::timeout): libcurl's LOW_SPEED_LIMIT and LOW_SPEED_TIME.
  uint64_t stall_min_rate = 1024;
  std::chrono::seconds stall_window{30};
};

// The libcurl implementation. Keeps a pool of easy handles so connections are reused.
std::shared_ptr<Http> make_curl_http(const HttpOptions& options);

}  // namespace imagefs::registry
