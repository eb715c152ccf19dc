// How requests reach a registry: which scheme and host (docker.io is registry-1.docker.io; HTTPS,
// with a plain-HTTP fallback only for loopback and insecure registries), authentication (401 ->
// token or Basic, once more on a refused token, and a credential helper asked again when what
// it gave is refused with 401 or 403), redirects followed here without leaking the
// Authorization header to another origin (nor to plain HTTP unless the registry asked is allowed
// plain HTTP), and retries with backoff (429, 5xx, timeouts, dropped
// connections, resuming a body with Range). Internal to registry/; the client builds on it.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "common/mutex.h"
#include "common/result.h"
#include "registry/auth.h"
#include "registry/clock.h"
#include "registry/credentials.h"
#include "registry/hosts.h"
#include "registry/http.h"
#include "registry/options.h"

namespace imagefs::registry {

// A body sink that can continue a body after a dropped connection: it holds offset() bytes, and
// a retry asks for the rest with "Range: bytes=offset-". begin() sees 206 for a resumed body and
// 200 when the server sent everything again (the sink must then start over).
class ResumableSink : public BodySink {
 public:
  [[nodiscard]] virtual uint64_t offset() const = 0;
};

// Receives one-line notes on what the transport does about trouble ("retrying in 2 s").
using Notice = std::function<void(const std::string& text)>;

struct RegistryRequest {
  std::string method = "GET";
  std::string path;   // "/v2/library/python/manifests/3.12"
  std::string scope;  // "repository:library/python:pull"
  Headers headers;    // Accept and the like; never Authorization
  uint64_t max_body_bytes = 16u << 20;
  Notice notice;  // may be empty
  // Attempts for 5xx, 429, timeouts and dropped connections; 0: RegistryOptions::max_attempts.
  // A mirror gets fewer: the next host is a better retry than the same one.
  unsigned max_attempts = 0;
};

// The final answer to a request, after retries, redirects and authentication.
struct Reply {
  HttpResponse response;
  unsigned attempts = 1;
};

class Transport {
 public:
  Transport(std::shared_ptr<Http> http, std::shared_ptr<Clock> clock,
            std::shared_ptr<DockerCredentials> credentials, RegistryOptions options);

  // Sends `request` to the registry of reference domain `host` ("docker.io", "127.0.0.1:5000").
  // Returns the final answer whatever its status; Error for what produced no answer: the
  // registry unreachable, TLS failures, dropped connections after every attempt (EIO), the
  // sink's own errors, the token service's refusal (EACCES).
  Result<Reply> send(const std::string& host, const RegistryRequest& request,
                     ResumableSink* sink = nullptr);
  // The same to one host of a registry's list (registry/hosts.h): an implicit host is the call
  // above; another gets its own URL (scheme, API root), TLS settings and headers, and its own
  // credentials and tokens, kept under its name: nothing of one host is sent to another.
  // `request.path` starts with "/v2", which the host's API root replaces.
  Result<Reply> send(const RegistryHost& host, const RegistryRequest& request,
                     ResumableSink* sink = nullptr);

  // GET of an absolute http(s) URL outside any registry (a foreign layer's urls): retries and
  // redirects, no credentials.
  Result<Reply> get_url(const std::string& url, ResumableSink* sink = nullptr,
                        const Notice& notice = {});

  Authenticator& auth() { return *auth_; }

  // The host that serves `host`'s API ("registry-1.docker.io" for "docker.io").
  static std::string api_host(const std::string& host);
  // Loopback registries: localhost, 127.0.0.0/8, ::1 (with or without a port).
  static bool is_loopback(const std::string& host);
  // May talk plain HTTP to `host` (loopback or listed insecure).
  [[nodiscard]] bool allows_http(const std::string& host) const;
  [[nodiscard]] bool is_insecure(const std::string& host) const;

 private:
  // Whether a redirect may lead to a plain-HTTP URL: only for a registry (or foreign-layer or
  // token host) that is itself allowed plain HTTP (loopback or --insecure-registry), so an
  // HTTPS registry cannot downgrade a download or point the daemon at plain-HTTP hosts.
  enum class HttpRedirects { refuse, follow };
  using Deadline = std::optional<std::chrono::steady_clock::time_point>;
  // When a request started now must be over: requests without a sink (manifests, configs,
  // tokens) get options_.request_timeout; blob downloads none (the stall rule bounds them).
  Deadline deadline_for(const ResumableSink* sink) const;
  HttpResponse follow(std::string url, const HttpRequest& base, const std::string& authorization,
                      const std::string& origin, ResumableSink* sink, HttpRedirects http,
                      const Deadline& deadline);
  HttpResponse exchange(const std::string& host, const RegistryRequest& request,
                        const std::string& authorization, ResumableSink* sink,
                        const Deadline& deadline);
  // exchange() for a host with an explicit URL (hosts.toml, --mirror).
  HttpResponse exchange_at(const RegistryHost& host, const RegistryRequest& request,
                           const std::string& authorization, ResumableSink* sink,
                           const Deadline& deadline);
  // send() for either kind of host; `at` null: the implicit host `host`.
  Result<Reply> send_to(const std::string& host, const RegistryHost* at,
                        const RegistryRequest& request, ResumableSink* sink);
  template <typename Exchange>
  Result<Reply> with_retries(const std::string& host, ResumableSink* sink, const Notice& notice,
                             const Deadline& deadline, unsigned max_attempts, Exchange&& exchange);
  std::optional<std::chrono::milliseconds> retry_delay(const HttpResponse& response,
                                                       unsigned attempt) const;
  std::chrono::milliseconds backoff(unsigned attempt) const;

  std::shared_ptr<Http> http_;
  std::shared_ptr<Clock> clock_;
  RegistryOptions options_;
  std::unique_ptr<Authenticator> auth_;

  Mutex schemes_mu_;
  std::map<std::string, std::string> schemes_ GUARDED_BY(schemes_mu_);  // host -> working scheme
};

// Parts of an absolute URL, via libcurl's URL parser.
struct UrlParts {
  std::string scheme;  // lowercase
  std::string host;    // lowercase, IPv6 in brackets
  std::string port;    // always set (the scheme's default if absent)
  [[nodiscard]] std::string origin() const { return scheme + "://" + host + ":" + port; }
  // "host" or "host:port" when the port is not the scheme's default.
  [[nodiscard]] std::string authority() const;
};
std::optional<UrlParts> parse_url(const std::string& url);
// `location` (absolute or relative) resolved against `base`.
std::optional<std::string> resolve_url(const std::string& base, const std::string& location);

}  // namespace imagefs::registry
