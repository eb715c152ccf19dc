// Registry authentication: what a host asked for (Bearer tokens or Basic), tokens cached per
// (host, scope) until they expire or the credentials they were obtained with change, and the
// answer to a 401 or 403: a new token, or a credential helper asked again. Used by the
// transport; the CLI never needs it directly.
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

// What one request has tried already, so that each remedy is tried once per request
// (Transport::send keeps one per request).
struct AuthAttempt {
  bool token_refetched = false;      // a refused token was replaced by a new one
  bool credentials_reasked = false;  // the credentials were looked up again after a refusal
};

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
  // Bearer and none is cached for the scope with the credentials lookup gives now (a token
  // obtained with other credentials is dropped).
  Result<std::string> authorization(const std::string& host, const std::string& scope,
                                    AuthAttempt& attempt);
  Result<std::string> authorization(const std::string& host, const std::string& scope) {
    AuthAttempt attempt;
    return authorization(host, scope, attempt);
  }

  // Answers a 401 from `host` whose request carried `used` (maybe ""). Returns the header to retry
  // with, or nullopt when there is nothing better to try. In order, once each per attempt: a
  // refused token (invalid_token, insufficient_scope, or simply a 401) is dropped and a new one
  // fetched; then, when a token fetched for this very request or the Basic credentials were
  // refused, the credentials are looked up again if DockerCredentials::refused() says that may
  // give others (a credential helper's answer); nullopt if they are the same. A token service
  // that refuses a helper's credentials gets the helper asked again the same way. Errors: the
  // token service's refusal (EACCES) or failure (EIO), unsupported schemes (EACCES).
  Result<std::optional<std::string>> on_unauthorized(const std::string& host,
                                                     const std::string& scope,
                                                     const std::vector<Challenge>& challenges,
                                                     const std::string& used, AuthAttempt& attempt);
  Result<std::optional<std::string>> on_unauthorized(const std::string& host,
                                                     const std::string& scope,
                                                     const std::vector<Challenge>& challenges,
                                                     const std::string& used) {
    AuthAttempt attempt;
    return on_unauthorized(host, scope, challenges, used, attempt);
  }

  // Answers a 403 from `host` to a request that carried `used` (not ""): registries such as ECR
  // answer an expired credential with 403. Returns a header built from new credentials when
  // a credential helper, asked again, gives other ones; else nullopt (a 403 stands).
  Result<std::optional<std::string>> on_forbidden(const std::string& host, const std::string& scope,
                                                  const std::string& used, AuthAttempt& attempt);

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
    std::string credential;  // credential_key() of what it was obtained with
  };

  Result<std::optional<Credential>> credential(const std::string& host);
  // The token service's answer; `refused` tells a 401/403 of the service from other errors.
  Result<std::string> fetch_token(const std::string& host, const HostAuth& how,
                                  const std::vector<std::string>& scopes,
                                  const std::optional<Credential>& found, bool& refused);
  // "Bearer TOKEN" for the scopes with `found` (what lookup gave): a cached token obtained with
  // the same credentials, else a new one (never `refused`, the token just turned down).
  Result<std::string> bearer(const std::string& host, const HostAuth& how,
                             const std::vector<std::string>& scopes,
                             std::optional<Credential> found, const std::string& refused,
                             AuthAttempt& attempt);
  // After `found` was refused: looks the credentials up again, once per attempt, when
  // DockerCredentials::refused() says they may differ. True (and `found` replaced) when they do.
  Result<bool> reask(const std::string& host, std::optional<Credential>& found,
                     AuthAttempt& attempt);
  void remember_secret(const std::string& secret);

  std::shared_ptr<DockerCredentials> credentials_;
  std::shared_ptr<Clock> clock_;
  Fetch fetch_;
  MaySendSecrets may_send_secrets_;
  std::string client_id_;

  Mutex hosts_mu_;
  std::map<std::string, HostAuth> hosts_ GUARDED_BY(hosts_mu_);
  Mutex tokens_mu_;
  // By (host, scope); at most kMaxTokens (expired ones, then the soonest to expire, go first).
  std::map<std::pair<std::string, std::string>, Token> tokens_ GUARDED_BY(tokens_mu_);
  mutable Mutex secrets_mu_;
  // The most recently seen secrets, at most kMaxSecrets (tokens come and go for weeks).
  std::vector<std::string> secrets_ GUARDED_BY(secrets_mu_);
};

// Percent-encodes `text` for a URL query or form body.
std::string url_encode(std::string_view text);

}  // namespace imagefs::registry
