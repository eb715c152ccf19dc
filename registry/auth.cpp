// The token flow of the distribution spec (docs/spec/auth/token.md): GET realm?service=&scope=
// anonymously or with Basic credentials, or POST grant_type=refresh_token for an identity token
// (docs/spec/auth/oauth.md); tokens cached per (host, scope) for their expires_in, or until the
// credentials they were obtained with change; a refused helper credential asked for again.
#include "registry/auth.h"

#include <curl/curl.h>

#include <algorithm>
#include <nlohmann/json.hpp>

namespace imagefs::registry {

using nlohmann::json;

namespace {

constexpr std::chrono::seconds kDefaultTokenLifetime{60};
constexpr const char* kRedacted = "<redacted>";
constexpr size_t kMaxTokens = 1024;
constexpr size_t kMaxSecrets = 512;

// What a token remembers of the credentials it was obtained with ("" when anonymous).
std::string credential_key(const std::optional<Credential>& c) {
  if (!c) return std::string();
  return c->username + '\0' + c->password + '\0' + c->identity_token;
}

std::string basic_header(const std::optional<Credential>& c) {
  if (!c || !c->has_password()) return std::string();
  return "Basic " + base64_encode(c->username + ":" + c->password);
}

std::vector<std::string> split_scopes(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start < text.size()) {
    size_t end = text.find(' ', start);
    if (end == std::string::npos) end = text.size();
    if (end > start) out.push_back(text.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

std::string join(const std::vector<std::string>& parts, const std::string& sep) {
  std::string out;
  for (const std::string& p : parts) out += (out.empty() ? "" : sep) + p;
  return out;
}

// A short, secret-free reason from a token service's error body.
std::string service_reason(const HttpResponse& response) {
  json doc = json::parse(response.body, nullptr, false);
  std::string reason;
  if (!doc.is_discarded() && doc.is_object()) {
    for (const char* key : {"details", "error_description", "message", "error"}) {
      auto v = doc.find(key);
      if (v != doc.end() && v->is_string() && !v->get<std::string>().empty()) {
        reason = v->get<std::string>();
        break;
      }
    }
    if (reason.empty()) {
      auto errors = doc.find("errors");
      if (errors != doc.end() && errors->is_array() && !errors->empty() &&
          (*errors)[0].is_object()) {
        auto m = (*errors)[0].find("message");
        if (m != (*errors)[0].end() && m->is_string()) reason = m->get<std::string>();
      }
    }
  }
  if (reason.size() > 200) reason = reason.substr(0, 200) + "...";
  return reason;
}

}  // namespace

std::string url_encode(std::string_view text) {
  std::unique_ptr<char, decltype(&curl_free)> escaped(
      curl_easy_escape(nullptr, text.data(), static_cast<int>(text.size())), &curl_free);
  return escaped ? std::string(escaped.get()) : std::string();
}

Authenticator::Authenticator(std::shared_ptr<DockerCredentials> credentials,
                             std::shared_ptr<Clock> clock, Fetch fetch,
                             MaySendSecrets may_send_secrets, std::string client_id)
    : credentials_(std::move(credentials)),
      clock_(std::move(clock)),
      fetch_(std::move(fetch)),
      may_send_secrets_(std::move(may_send_secrets)),
      client_id_(std::move(client_id)) {}

void Authenticator::remember_secret(const std::string& secret) {
  // Very short strings would blank out ordinary words; they are not worth hiding.
  if (secret.size() < 4) return;
  MutexLock lock(secrets_mu_);
  // Most recent last: a password in use stays, tokens long expired leave.
  auto it = std::find(secrets_.begin(), secrets_.end(), secret);
  if (it != secrets_.end()) {
    if (std::next(it) != secrets_.end()) std::rotate(it, std::next(it), secrets_.end());
    return;
  }
  if (secrets_.size() >= kMaxSecrets) secrets_.erase(secrets_.begin());
  secrets_.push_back(secret);
}

std::string Authenticator::redact(std::string text) const {
  std::vector<std::string> secrets;
  {
    MutexLock lock(secrets_mu_);
    secrets = secrets_;
  }
  // Longest first: a secret inside another (a token holding the password) must not be replaced
  // first, which would leave the rest of the longer one in the text (found by fuzzing).
  std::stable_sort(secrets.begin(), secrets.end(),
                   [](const std::string& a, const std::string& b) { return a.size() > b.size(); });
  for (const std::string& secret : secrets) {
    for (size_t at = text.find(secret); at != std::string::npos;
         at = text.find(secret, at + std::char_traits<char>::length(kRedacted))) {
      text.replace(at, secret.size(), kRedacted);
    }
  }
  return text;
}

Result<std::optional<Credential>> Authenticator::credential(const std::string& host) {
  IMAGEFS_TRY(found, credentials_->lookup(host));
  if (found) {
    remember_secret(found->password);
    remember_secret(found->identity_token);
    if (found->has_password())
      remember_secret(base64_encode(found->username + ":" + found->password));
  }
  return found;
}

Result<bool> Authenticator::reask(const std::string& host, std::optional<Credential>& found,
                                  AuthAttempt& attempt) {
  if (attempt.credentials_reasked) return false;
  attempt.credentials_reasked = true;
  if (!credentials_->refused(host, found)) return false;
  IMAGEFS_TRY(again, credential(host));
  if (same_credential(again, found)) return false;
  found = std::move(again);
  return true;
}

std::string Authenticator::credential_note(const std::string& host) {
  Result<std::optional<Credential>> found = credential(host);
  if (!found.ok()) return found.error().message;
  if (!found.value()) return "no credentials for " + host + " in " + credentials_->describe();
  return "the credentials for " + host + " from " + found.value()->source + " were not accepted";
}

Result<std::string> Authenticator::authorization(const std::string& host, const std::string& scope,
                                                 AuthAttempt& attempt) {
  HostAuth how;
  {
    MutexLock lock(hosts_mu_);
    auto it = hosts_.find(host);
    if (it == hosts_.end()) return std::string();
    how = it->second;
  }
  IMAGEFS_TRY(found, credential(host));
  if (how.scheme == "basic") return basic_header(found);
  return bearer(host, how, {scope}, std::move(found), "", attempt);
}

Result<std::string> Authenticator::bearer(const std::string& host, const HostAuth& how,
                                          const std::vector<std::string>& scopes,
                                          std::optional<Credential> found,
                                          const std::string& refused, AuthAttempt& attempt) {
  auto key = std::make_pair(host, scopes.front());
  {
    MutexLock lock(tokens_mu_);
    auto it = tokens_.find(key);
    if (it != tokens_.end()) {
      if (it->second.value == refused || clock_->steady_now() >= it->second.expires ||
          it->second.credential != credential_key(found)) {
        tokens_.erase(it);
      } else {
        // Possibly refreshed by another thread since `refused` was sent.
        return "Bearer " + it->second.value;
      }
    }
  }
  auto fetched_at = clock_->steady_now();
  bool service_refused = false;
  Result<std::string> fetched = fetch_token(host, how, scopes, found, service_refused);
  if (!fetched.ok() && service_refused) {
    // The token service turned the credentials down: a credential helper may have newer ones.
    IMAGEFS_TRY(other, reask(host, found, attempt));
    if (other) {
      fetched_at = clock_->steady_now();
      fetched = fetch_token(host, how, scopes, found, service_refused);
    }
  }
  IMAGEFS_TRY(answer, std::move(fetched));
  json doc = json::parse(answer, nullptr, false);
  std::string token;
  std::chrono::seconds lifetime = kDefaultTokenLifetime;
  if (!doc.is_discarded() && doc.is_object()) {
    for (const char* k : {"token", "access_token"}) {
      auto v = doc.find(k);
      if (v != doc.end() && v->is_string() && !v->get<std::string>().empty()) {
        token = v->get<std::string>();
        break;
      }
    }
    auto e = doc.find("expires_in");
    if (e != doc.end() && e->is_number_integer() && e->get<int64_t>() > 0)
      lifetime = std::chrono::seconds(std::min<int64_t>(e->get<int64_t>(), 365LL * 24 * 3600));
    for (const char* k : {"refresh_token"}) {
      auto v = doc.find(k);
      if (v != doc.end() && v->is_string()) remember_secret(v->get<std::string>());
    }
  }
  if (token.empty())
    return make_error(
        EIO, "the token service " + how.realm + " for " + host + " answered without a token");
  remember_secret(token);
  {
    MutexLock lock(tokens_mu_);
    std::string credential = credential_key(found);
    auto now = clock_->steady_now();
    // Tokens of this host obtained with other credentials are of no more use; expired ones
    // neither, once the table is full; then the soonest to expire go.
    for (auto it = tokens_.begin(); it != tokens_.end();) {
      bool stale = it->first.first == host && it->second.credential != credential;
      bool expired = tokens_.size() >= kMaxTokens && now >= it->second.expires;
      it = stale || expired ? tokens_.erase(it) : std::next(it);
    }
    while (tokens_.size() >= kMaxTokens && !tokens_.contains(key)) {
      auto soonest = tokens_.begin();
      for (auto it = tokens_.begin(); it != tokens_.end(); ++it)
        if (it->second.expires < soonest->second.expires) soonest = it;
      tokens_.erase(soonest);
    }
    tokens_[key] = Token{token, fetched_at + lifetime, std::move(credential)};
  }
  return "Bearer " + token;
}

Result<std::string> Authenticator::fetch_token(const std::string& host, const HostAuth& how,
                                               const std::vector<std::string>& scopes,
                                               const std::optional<Credential>& found,
                                               bool& refused) {
  refused = false;
  bool with_secret = found && (found->has_password() || !found->identity_token.empty());
  if (with_secret && !may_send_secrets_(how.realm))
    return make_error(EACCES, "refusing to send the credentials for " + host +
                                  " over plain HTTP to the token service " + how.realm + " (list " +
                                  host + " as an insecure registry to allow it)");
  HttpRequest request;
  if (found && !found->identity_token.empty()) {
    request.method = "POST";
    request.url = how.realm;
    request.headers.add("Content-Type", "application/x-www-form-urlencoded");
    request.body = "grant_type=refresh_token&service=" + url_encode(how.service) +
                   "&client_id=" + url_encode(client_id_) +
                   "&scope=" + url_encode(join(scopes, " ")) +
                   "&refresh_token=" + url_encode(found->identity_token);
  } else {
    std::string query = "service=" + url_encode(how.service);
    for (const std::string& scope : scopes) query += "&scope=" + url_encode(scope);
    if (found && found->has_password()) {
      query += "&account=" + url_encode(found->username);
      request.headers.add("Authorization",
                          "Basic " + base64_encode(found->username + ":" + found->password));
    }
    request.url = how.realm + (how.realm.find('?') == std::string::npos ? "?" : "&") + query;
  }
  request.headers.add("Accept", "application/json");
  request.max_body_bytes = 1u << 20;
  IMAGEFS_TRY(response, fetch_(request));
  if (response.status == 200) return std::move(response.body);
  std::string reason = service_reason(response);
  std::string who = with_secret ? "the credentials for " + host + " from " + found->source
                                : "anonymous access to " + host;
  refused = response.status == 401 || response.status == 403;
  if (refused)
    return make_error(EACCES, "unauthorized: the token service " + how.realm + " refused " + who +
                                  (reason.empty() ? "" : " (" + redact(reason) + ")"));
  return make_error(EIO, "the token service " + how.realm + " for " + host + " answered " +
                             std::to_string(response.status) +
                             (reason.empty() ? "" : " (" + redact(reason) + ")"));
}

Result<std::optional<std::string>> Authenticator::on_unauthorized(
    const std::string& host, const std::string& scope, const std::vector<Challenge>& challenges,
    const std::string& used, AuthAttempt& attempt) {
  const Challenge* bearer_challenge = nullptr;
  const Challenge* basic_challenge = nullptr;
  for (const Challenge& c : challenges) {
    if (c.scheme == "bearer" && bearer_challenge == nullptr) bearer_challenge = &c;
    if (c.scheme == "basic" && basic_challenge == nullptr) basic_challenge = &c;
  }
  if (bearer_challenge != nullptr) {
    HostAuth how{"bearer", bearer_challenge->param("realm"), bearer_challenge->param("service")};
    if (how.realm.empty())
      return make_error(EIO, "registry " + host + " asked for a Bearer token without a realm");
    if (!how.realm.starts_with("https://") && !how.realm.starts_with("http://"))
      return make_error(EIO, "registry " + host +
                                 " named a token service that is not an http(s) "
                                 "URL: " +
                                 how.realm);
    {
      MutexLock lock(hosts_mu_);
      hosts_[host] = how;
    }
    std::vector<std::string> scopes{scope};
    for (const std::string& s : split_scopes(bearer_challenge->param("scope"))) {
      if (std::find(scopes.begin(), scopes.end(), s) == scopes.end()) scopes.push_back(s);
    }
    std::string refused = used.starts_with("Bearer ") ? used.substr(7) : std::string();
    IMAGEFS_TRY(found, credential(host));
    if (!refused.empty()) {
      if (attempt.token_refetched) {
        // A token fetched for this very request was refused: its credentials are the suspect.
        IMAGEFS_TRY(other, reask(host, found, attempt));
        if (!other) return std::optional<std::string>();
      }
      attempt.token_refetched = true;
    }
    IMAGEFS_TRY(header, bearer(host, how, scopes, std::move(found), refused, attempt));
    return std::optional<std::string>(std::move(header));
  }
  if (basic_challenge != nullptr) {
    {
      MutexLock lock(hosts_mu_);
      hosts_[host] = HostAuth{"basic", "", ""};
    }
    IMAGEFS_TRY(found, credential(host));
    std::string header = basic_header(found);
    if (header.empty() || header == used) {
      // What lookup gives was just refused (or is nothing): a credential helper may know better.
      IMAGEFS_TRY(other, reask(host, found, attempt));
      if (!other) return std::optional<std::string>();
      header = basic_header(found);
      if (header.empty() || header == used) return std::optional<std::string>();
    }
    return std::optional<std::string>(std::move(header));
  }
  std::string schemes;
  for (const Challenge& c : challenges) schemes += (schemes.empty() ? "" : ", ") + c.scheme;
  if (schemes.empty()) return std::optional<std::string>();  // a bare 401: nothing to try
  return make_error(EACCES, "registry " + host + " asks for authentication imagefs does not " +
                                "support (" + schemes + "; imagefs speaks Bearer and Basic)");
}

Result<std::optional<std::string>> Authenticator::on_forbidden(const std::string& host,
                                                               const std::string& scope,
                                                               const std::string& used,
                                                               AuthAttempt& attempt) {
  HostAuth how;
  {
    MutexLock lock(hosts_mu_);
    auto it = hosts_.find(host);
    if (it == hosts_.end() || used.empty()) return std::optional<std::string>();
    how = it->second;
  }
  IMAGEFS_TRY(found, credential(host));
  if (how.scheme == "basic") {
    std::string header = basic_header(found);
    if (header == used) {
      IMAGEFS_TRY(other, reask(host, found, attempt));
      if (!other) return std::optional<std::string>();
      header = basic_header(found);
    }
    // New credentials (from the helper, or config.json changed since the request left).
    if (header.empty() || header == used) return std::optional<std::string>();
    return std::optional<std::string>(std::move(header));
  }
  // Bearer: only a helper's newer credentials are worth a new token; a 403 to a token obtained
  // with the credentials lookup gives now is the registry's answer.
  std::string refused = used.starts_with("Bearer ") ? used.substr(7) : std::string();
  bool current = false;
  {
    MutexLock lock(tokens_mu_);
    auto it = tokens_.find(std::make_pair(host, scope));
    current = it != tokens_.end() && it->second.value == refused &&
              it->second.credential == credential_key(found);
  }
  if (current) {
    IMAGEFS_TRY(other, reask(host, found, attempt));
    if (!other) return std::optional<std::string>();
  } else if (attempt.credentials_reasked) {
    return std::optional<std::string>();
  } else {
    attempt.credentials_reasked = true;  // the credentials changed since: one try with them
  }
  IMAGEFS_TRY(header, bearer(host, how, {scope}, std::move(found), refused, attempt));
  return std::optional<std::string>(std::move(header));
}

}  // namespace imagefs::registry
