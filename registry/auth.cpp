// The token flow of the distribution spec (docs/spec/auth/token.md): GET realm?service=&scope=
// anonymously or with Basic credentials, or POST grant_type=refresh_token for an identity token
// (docs/spec/auth/oauth.md); tokens cached per (host, scope) for their expires_in.
#include "registry/auth.h"

#include <curl/curl.h>

#include <algorithm>
#include <nlohmann/json.hpp>

namespace imagefs::registry {

using nlohmann::json;

namespace {

constexpr std::chrono::seconds kDefaultTokenLifetime{60};
constexpr const char* kRedacted = "<redacted>";

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
  if (std::find(secrets_.begin(), secrets_.end(), secret) != secrets_.end()) return;
  // Longest first: a secret inside another (a token holding the password) must not be replaced
  // first, which would leave the rest of the longer one in the text (found by fuzzing).
  secrets_.insert(std::find_if(secrets_.begin(), secrets_.end(),
                               [&](const std::string& s) { return s.size() < secret.size(); }),
                  secret);
}

std::string Authenticator::redact(std::string text) const {
  MutexLock lock(secrets_mu_);
  for (const std::string& secret : secrets_) {
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
    if (found->has_password()) {
      std::string basic = base64_encode(found->username + ":" + found->password);
      remember_secret(basic);
    }
  }
  return found;
}

std::string Authenticator::credential_note(const std::string& host) {
  Result<std::optional<Credential>> found = credential(host);
  if (!found.ok()) return found.error().message;
  if (!found.value()) return "no credentials for " + host + " in " + credentials_->describe();
  return "the credentials for " + host + " from " + found.value()->source + " were not accepted";
}

Result<std::string> Authenticator::authorization(const std::string& host,
                                                 const std::string& scope) {
  HostAuth how;
  {
    MutexLock lock(hosts_mu_);
    auto it = hosts_.find(host);
    if (it == hosts_.end()) return std::string();
    how = it->second;
  }
  if (how.scheme == "basic") {
    IMAGEFS_TRY(found, credential(host));
    if (!found || !found->has_password()) return std::string();
    return "Basic " + base64_encode(found->username + ":" + found->password);
  }
  return bearer(host, how, {scope}, "");
}

Result<std::string> Authenticator::bearer(const std::string& host, const HostAuth& how,
                                          const std::vector<std::string>& scopes,
                                          const std::string& refused) {
  auto key = std::make_pair(host, scopes.front());
  {
    MutexLock lock(tokens_mu_);
    auto it = tokens_.find(key);
    if (it != tokens_.end()) {
      if (it->second.value == refused || clock_->steady_now() >= it->second.expires) {
        tokens_.erase(it);
      } else {
        // Possibly refreshed by another thread since `refused` was sent.
        return "Bearer " + it->second.value;
      }
    }
  }
  auto fetched_at = clock_->steady_now();
  IMAGEFS_TRY(answer, fetch_token(host, how, scopes));
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
    tokens_[key] = Token{token, fetched_at + lifetime};
  }
  return "Bearer " + token;
}

Result<std::string> Authenticator::fetch_token(const std::string& host, const HostAuth& how,
                                               const std::vector<std::string>& scopes) {
  IMAGEFS_TRY(found, credential(host));
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
  if (response.status == 401 || response.status == 403)
    return make_error(EACCES, "unauthorized: the token service " + how.realm + " refused " + who +
                                  (reason.empty() ? "" : " (" + redact(reason) + ")"));
  return make_error(EIO, "the token service " + how.realm + " for " + host + " answered " +
                             std::to_string(response.status) +
                             (reason.empty() ? "" : " (" + redact(reason) + ")"));
}

Result<std::optional<std::string>> Authenticator::on_unauthorized(
    const std::string& host, const std::string& scope, const std::vector<Challenge>& challenges,
    const std::string& used) {
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
    IMAGEFS_TRY(header, bearer(host, how, scopes, refused));
    return std::optional<std::string>(std::move(header));
  }
  if (basic_challenge != nullptr) {
    {
      MutexLock lock(hosts_mu_);
      hosts_[host] = HostAuth{"basic", "", ""};
    }
    IMAGEFS_TRY(found, credential(host));
    if (!found || !found->has_password()) return std::optional<std::string>();
    std::string header = "Basic " + base64_encode(found->username + ":" + found->password);
    if (header == used) return std::optional<std::string>();
    return std::optional<std::string>(std::move(header));
  }
  std::string schemes;
  for (const Challenge& c : challenges) schemes += (schemes.empty() ? "" : ", ") + c.scheme;
  if (schemes.empty()) return std::optional<std::string>();  // a bare 401: nothing to try
  return make_error(EACCES, "registry " + host + " asks for authentication imagefs does not " +
                                "support (" + schemes + "; imagefs speaks Bearer and Basic)");
}

}  // namespace imagefs::registry
