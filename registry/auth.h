// Registry authentication: what a host asked for (Bearer tokens or Basic), tokens cached per
// (host, scope) until they expire, and the answer to a 401. Used by the transport; the CLI never
// needs it directly.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "common/mutex.h"
#include "common/result.h"
#include "registry/clock.h"
#include "registry/credentials.h"
#include "registry/http.h"
#include "registry/www_authenticate.h"

namespace imagefs::registry {

class Authenticator {
 public:
  // Sends a request to a token service (retries and redirects are the caller's business).
  using Fetch = std::function<Result<HttpResponse>(const HttpRequest&)>;
  // Whether credentials may travel to `url` (a token realm): https, or http to a host the
  // transport allows plain HTTP for.
  using MaySendSecrets = std::function<bool(const std::string& url)>;

  Authenticator(std::shared_ptr<DockerCredentials> credentials, std::shared_ptr<Clock> clock,
                Fetch fetch, MaySendSecrets may_send_secrets, std::string client_id);

  // The Authorization header value to send to `host` for `scope` ("repository:NAME:pull"), or ""
  // before the host has asked for anything. Fetches a token when the host is known to want
  // Bearer and none is cached for the scope.
  Result<std::string> authorization(const std::string& host, const std::string& scope);

  // Answers a 401 from `host` whose request carried `used` (maybe ""). Returns the header to retry
  // with, or nullopt when there is nothing better to try (no credentials for Basic, credentials
  // already rejected). A cached token that was refused (invalid_token, insufficient_scope, or
  // simply a 401) is dropped and a new one fetched. Errors: the token service's refusal
  // (EACCES) or failure (EIO), unsupported schemes (EACCES).
  Result<std::optional<std::string>> on_unauthorized(const std::string& host,
                                                     const std::string& scope,
                                                     const std::vector<Challenge>& challenges,
                                                     const std::string& used);

  // For messages about a refusal: "no credentials for HOST in /root/.docker/config.json" or
  // "the credentials for HOST from docker-credential-x were not accepted".
  std::string credential_note(const std::string& host);

  // `text` with every secret seen so far (passwords, identity and access tokens, Basic header
  // values) replaced by "<redacted>". Belt and braces: messages are built without secrets.
  [[nodiscard]] std::string redact(std::string text) const;

 private:
  struct HostAuth {
    std::string scheme;  // "bearer" or "basic"
    std::string realm;
    std::string service;
  };
  struct Token {
    std::string value;
    std::chrono::steady_clock::time_point expires;
  };

  Result<std::optional<Credential>> credential(const std::string& host);
  Result<std::string> fetch_token(const std::string& host, const HostAuth& how,
                                  const std::vector<std::string>& scopes);
  Result<std::string> bearer(const std::string& host, const HostAuth& how,
                             const std::vector<std::string>& scopes, const std::string& refused);
  void remember_secret(const std::string& secret);

  std::shared_ptr<DockerCredentials> credentials_;
  std::shared_ptr<Clock> clock_;
  Fetch fetch_;
  MaySendSecrets may_send_secrets_;
  std::string client_id_;

  Mutex hosts_mu_;
  std::map<std::string, HostAuth> hosts_ GUARDED_BY(hosts_mu_);
  Mutex tokens_mu_;
  std::map<std::pair<std::string, std::string>, Token> tokens_ GUARDED_BY(tokens_mu_);
  mutable Mutex secrets_mu_;
  std::vector<std::string> secrets_ GUARDED_BY(secrets_mu_);
};

// Percent-encodes `text` for a URL query or form body.
std::string url_encode(std::string_view text);

}  // namespace imagefs::registry
