// The transport policy: schemes, authentication rounds, redirects and retries, over the Http seam.
#include "registry/transport.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <fstream>
#include <iterator>
#include <utility>

#include "registry/www_authenticate.h"

namespace imagefs::registry {
namespace {

constexpr int kMaxRedirects = 10;
// Resumes that made progress do not count against max_attempts; this bounds them anyway.
constexpr unsigned kMaxTotalAttempts = 1000;

struct CurlUrlDeleter {
  void operator()(CURLU* url) const { curl_url_cleanup(url); }
};
using CurlUrl = std::unique_ptr<CURLU, CurlUrlDeleter>;

struct CurlFreeDeleter {
  void operator()(char* p) const { curl_free(p); }
};
using CurlString = std::unique_ptr<char, CurlFreeDeleter>;

std::optional<std::string> url_part(CURLU* url, CURLUPart part, unsigned flags) {
  char* out = nullptr;
  if (curl_url_get(url, part, &out, flags) != CURLUE_OK || out == nullptr) return std::nullopt;
  CurlString owned(out);
  return std::string(owned.get());
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// "host:port" / "[v6]:port" / "host" -> the host part.
std::string strip_port(const std::string& host) {
  if (host.starts_with("[")) {
    size_t close = host.find(']');
    return close == std::string::npos ? host : host.substr(1, close - 1);
  }
  size_t colon = host.find(':');
  if (colon != std::string::npos && host.find(':', colon + 1) == std::string::npos)
    return host.substr(0, colon);
  return host;
}

std::string seconds(std::chrono::milliseconds d) {
  int64_t tenths = (d.count() + 50) / 100;
  return std::to_string(tenths / 10) + "." + std::to_string(tenths % 10) + " s";
}

bool is_redirect(int status) {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

bool is_retryable_status(int status) {
  return status == 429 || (status >= 500 && status <= 599 && status != 501 && status != 505);
}

// A request that ran out of its total time: the one sentence a person needs.
Error out_of_time(const std::string& host, std::chrono::seconds limit, unsigned attempts) {
  std::string tries = attempts > 1 ? " (" + std::to_string(attempts) + " attempts)" : std::string();
  return make_error(EIO, "registry " + host + " did not answer within " +
                             std::to_string(limit.count()) + " s" + tries);
}

Error transport_error(const std::string& host, const HttpResponse& r, unsigned attempts) {
  std::string detail = r.failure_detail.empty() ? "no details" : r.failure_detail;
  std::string tries =
      attempts > 1 ? " (gave up after " + std::to_string(attempts) + " attempts)" : std::string();
  switch (r.failure) {
    case HttpFailure::unreachable:
      return make_error(EIO, "registry " + host + " is unreachable: " + detail);
    case HttpFailure::certificate:
      return make_error(EIO, "the TLS certificate of registry " + host + " is not trusted (" +
                                 detail + "): give its CA certificate with --ca-file, or list " +
                                 host + " as an insecure registry");
    case HttpFailure::tls:
      return make_error(EIO, "TLS connection to registry " + host + " failed: " + detail);
    case HttpFailure::timeout:
      return make_error(EIO, "registry " + host + " timed out: " + detail + tries);
    case HttpFailure::interrupted:
      return make_error(EIO, "the connection to registry " + host + " dropped: " + detail + tries);
    case HttpFailure::too_large:
      return make_error(EIO, "registry " + host + " sent a " + detail);
    case HttpFailure::aborted:
      if (r.sink_error) return *r.sink_error;
      return make_error(EIO, "download from registry " + host + " aborted: " + detail);
    case HttpFailure::none:
    case HttpFailure::other:
      break;
  }
  return make_error(EIO, "request to registry " + host + " failed: " + detail + tries);
}

}  // namespace

std::string UrlParts::authority() const {
  bool default_port = (scheme == "https" && port == "443") || (scheme == "http" && port == "80");
  return default_port ? host : host + ":" + port;
}

std::optional<UrlParts> parse_url(const std::string& text) {
  CurlUrl url(curl_url());
  if (!url || curl_url_set(url.get(), CURLUPART_URL, text.c_str(), 0) != CURLUE_OK)
    return std::nullopt;
  auto scheme = url_part(url.get(), CURLUPART_SCHEME, 0);
  auto host = url_part(url.get(), CURLUPART_HOST, 0);
  auto port = url_part(url.get(), CURLUPART_PORT, CURLU_DEFAULT_PORT);
  if (!scheme || !host || !port) return std::nullopt;
  return UrlParts{lower(*scheme), lower(*host), *port};
}

std::optional<std::string> resolve_url(const std::string& base, const std::string& location) {
  CurlUrl url(curl_url());
  if (!url || curl_url_set(url.get(), CURLUPART_URL, base.c_str(), 0) != CURLUE_OK)
    return std::nullopt;
  // With a base set, libcurl resolves a relative URL against it (as a browser would).
  if (curl_url_set(url.get(), CURLUPART_URL, location.c_str(), 0) != CURLUE_OK) return std::nullopt;
  return url_part(url.get(), CURLUPART_URL, 0);
}

Transport::Transport(std::shared_ptr<Http> http, std::shared_ptr<Clock> clock,
                     std::shared_ptr<DockerCredentials> credentials, RegistryOptions options)
    : http_(std::move(http)), clock_(std::move(clock)), options_(std::move(options)) {
  if (options_.max_attempts == 0) options_.max_attempts = 1;
  for (std::string& h : options_.insecure_registries) {
    h = lower(h);
    if (h.starts_with("https://")) h = h.substr(8);
    if (h.starts_with("http://")) h = h.substr(7);
    while (h.ends_with("/")) h.pop_back();
  }
  auto fetch = [this](const HttpRequest& request) -> Result<HttpResponse> {
    std::optional<UrlParts> parts = parse_url(request.url);
    if (!parts) return make_error(EIO, "invalid token service URL " + request.url);
    HttpRequest base = request;
    std::string authorization = base.headers.get("Authorization").value_or("");
    base.headers.remove("Authorization");
    HttpRedirects redirects =
        allows_http(parts->authority()) ? HttpRedirects::follow : HttpRedirects::refuse;
    Deadline deadline = deadline_for(nullptr);
    IMAGEFS_TRY(reply, with_retries(parts->authority(), nullptr, {}, deadline, 0, [&] {
                  return follow(request.url, base, authorization, parts->origin(), nullptr,
                                redirects, deadline);
                }));
    return std::move(reply.response);
  };
  auto may_send_secrets = [this](const std::string& url) {
    std::optional<UrlParts> parts = parse_url(url);
    if (!parts) return false;
    if (parts->scheme == "https") return true;
    return parts->scheme == "http" && allows_http(parts->authority());
  };
  auth_ = std::make_unique<Authenticator>(std::move(credentials), clock_, fetch, may_send_secrets,
                                          options_.user_agent);
}

std::string Transport::api_host(const std::string& host) {
  return host == "docker.io" ? "registry-1.docker.io" : host;
}

bool Transport::is_loopback(const std::string& host_in) {
  std::string host = lower(strip_port(host_in));
  if (host == "localhost" || host == "::1") return true;
  if (!host.starts_with("127.")) return false;
  int dots = 0;
  for (char c : host) {
    if (c == '.') {
      ++dots;
    } else if (c < '0' || c > '9') {
      return false;
    }
  }
  return dots == 3;
}

bool Transport::is_insecure(const std::string& host_in) const {
  std::string host = lower(host_in);
  std::string bare = strip_port(host);
  for (const std::string& entry : options_.insecure_registries) {
    if (entry == host || entry == bare) return true;
  }
  return false;
}

bool Transport::allows_http(const std::string& host) const {
  return is_loopback(host) || is_insecure(host);
}

std::chrono::milliseconds Transport::backoff(unsigned attempt) const {
  auto delay = options_.backoff_initial;
  for (unsigned i = 0; i < attempt && delay < options_.backoff_max; ++i) delay *= 2;
  return std::min(delay, options_.backoff_max);
}

std::optional<std::chrono::milliseconds> Transport::retry_delay(const HttpResponse& response,
                                                                unsigned attempt) const {
  if (std::optional<std::string> after = response.headers.get("Retry-After")) {
    int64_t seconds = -1;
    if (!after->empty() &&
        std::all_of(after->begin(), after->end(), [](char c) { return c >= '0' && c <= '9'; })) {
      seconds = after->size() > 9 ? INT64_MAX : std::stoll(*after);
    } else {
      time_t when = curl_getdate(after->c_str(), nullptr);
      if (when >= 0)
        seconds = std::max<int64_t>(0, static_cast<int64_t>(when) - clock_->unix_now());
    }
    if (seconds >= 0) {
      if (seconds > options_.retry_after_max.count()) return std::nullopt;
      return std::chrono::milliseconds(seconds * 1000);
    }
  }
  // Docker Hub's pull limit: with nothing left in the window, waiting seconds does not help.
  if (response.status == 429) {
    std::optional<std::string> remaining = response.headers.get("RateLimit-Remaining");
    if (remaining && remaining->starts_with("0")) return std::nullopt;
  }
  return backoff(attempt);
}

Transport::Deadline Transport::deadline_for(const ResumableSink* sink) const {
  if (sink != nullptr || options_.request_timeout.count() <= 0) return std::nullopt;
  return clock_->steady_now() + options_.request_timeout;
}

template <typename Exchange>
Result<Reply> Transport::with_retries(const std::string& host, ResumableSink* sink,
                                      const Notice& notice, const Deadline& deadline,
                                      unsigned max_attempts_in, Exchange&& exchange) {
  const unsigned max_attempts = max_attempts_in == 0 ? options_.max_attempts : max_attempts_in;
  unsigned failures = 0;  // since the last progress
  unsigned total = 0;
  uint64_t offset = sink != nullptr ? sink->offset() : 0;
  // Time left before the deadline (a large value without one).
  auto left = [&]() -> std::chrono::milliseconds {
    if (!deadline) return std::chrono::milliseconds::max();
    return std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - clock_->steady_now());
  };
  // A stalled blob attempt must have moved this much to count as progress: a registry that
  // trickles a few bytes per attempt is not retried for ever.
  const uint64_t stall_progress = options_.stall_min_rate * static_cast<uint64_t>(std::max<int64_t>(
                                                                1, options_.stall_window.count()));
  for (;;) {
    ++total;
    if (deadline && left().count() <= 0)
      return out_of_time(host, options_.request_timeout, total - 1);
    HttpResponse response = exchange();
    if (!response.ok()) {
      if (response.failure == HttpFailure::aborted && response.sink_error)
        return *response.sink_error;
      if (sink != nullptr && sink->offset() > offset) {
        bool moved =
            response.failure != HttpFailure::timeout || sink->offset() - offset >= stall_progress;
        offset = sink->offset();
        if (moved) failures = 0;
      }
      ++failures;
      bool retryable =
          response.failure == HttpFailure::timeout || response.failure == HttpFailure::interrupted;
      // Out of time: a timeout then says so plainly; another failure as it is.
      if (deadline && retryable && left() <= backoff(failures - 1)) {
        if (response.failure == HttpFailure::timeout)
          return out_of_time(host, options_.request_timeout, total);
        return transport_error(host, response, total);
      }
      if (retryable && failures < max_attempts && total < kMaxTotalAttempts) {
        std::chrono::milliseconds delay = backoff(failures - 1);
        if (notice) {
          std::string text = "the connection to " + host;
          text += response.failure == HttpFailure::timeout ? " timed out" : " dropped";
          if (sink != nullptr && sink->offset() > 0)
            text += "; resuming at byte " + std::to_string(sink->offset());
          text += " in " + seconds(delay) + " (attempt " + std::to_string(failures + 1) + " of " +
                  std::to_string(max_attempts) + ")";
          notice(text);
        }
        clock_->sleep_for(delay);
        continue;
      }
      return transport_error(host, response, total);
    }
    if (is_retryable_status(response.status) && ++failures < max_attempts) {
      std::optional<std::chrono::milliseconds> delay = retry_delay(response, failures - 1);
      // A wait that would end past the deadline is not begun: the answer stands.
      if (delay && *delay < left()) {
        if (notice) {
          notice(host + " answered HTTP " + std::to_string(response.status) + "; retrying in " +
                 seconds(*delay) + " (attempt " + std::to_string(failures + 1) + " of " +
                 std::to_string(max_attempts) + ")");
        }
        clock_->sleep_for(*delay);
        continue;
      }
    }
    return Reply{std::move(response), total};
  }
}

HttpResponse Transport::follow(std::string url, const HttpRequest& base,
                               const std::string& authorization, const std::string& origin,
                               ResumableSink* sink, HttpRedirects http, const Deadline& deadline) {
  HttpRequest request = base;
  request.url = std::move(url);
  for (int hop = 0; hop <= kMaxRedirects; ++hop) {
    std::optional<UrlParts> parts = parse_url(request.url);
    if (!parts || (parts->scheme != "https" && parts->scheme != "http")) {
      HttpResponse bad;
      bad.failure = HttpFailure::other;
      bad.failure_detail = "cannot follow the URL " + request.url;
      return bad;
    }
    request.headers.remove("Authorization");
    // The registry's credentials go to the registry only: same scheme, host and port.
    if (!authorization.empty() && parts->origin() == origin)
      request.headers.add("Authorization", authorization);
    // A host's own TLS settings (hosts.toml) hold for its origin only, not where it redirects.
    bool same_origin = !origin.empty() && parts->origin() == origin;
    request.tls_verify =
        is_insecure(parts->authority()) || (same_origin && base.tls_verify == TlsVerify::no)
            ? TlsVerify::no
            : TlsVerify::yes;
    request.ca_pem = same_origin ? base.ca_pem : std::string();
    request.client_cert = same_origin ? base.client_cert : std::filesystem::path();
    request.client_key = same_origin ? base.client_key : std::filesystem::path();
    request.range_start.reset();
    if (sink != nullptr && sink->offset() > 0) request.range_start = sink->offset();
    if (deadline) {
      // Each attempt (and each redirect) gets what is left of the request's time.
      auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(*deadline - clock_->steady_now());
      if (left.count() <= 0) {
        HttpResponse late;
        late.failure = HttpFailure::timeout;
        late.failure_detail = "no time left";
        return late;
      }
      request.timeout = left;
    }

    HttpResponse response = http_->perform(request, sink);
    if (!response.ok() || !is_redirect(response.status)) return response;
    std::optional<std::string> location = response.headers.get("Location");
    if (!location) return response;
    std::optional<std::string> next = resolve_url(request.url, *location);
    if (!next) {
      HttpResponse bad;
      bad.failure = HttpFailure::other;
      bad.failure_detail = "redirected to an invalid URL";
      return bad;
    }
    std::optional<UrlParts> next_parts = parse_url(*next);
    if (next_parts && next_parts->scheme == "http" && http == HttpRedirects::refuse) {
      HttpResponse bad;
      bad.failure = HttpFailure::other;
      bad.failure_detail = "redirected to plain HTTP (" + next_parts->authority() +
                           "), which is followed only for registries allowed plain HTTP "
                           "(loopback, --insecure-registry)";
      return bad;
    }
    if (response.status == 303 && request.method == "POST") {
      request.method = "GET";
      request.body.clear();
    }
    request.url = std::move(*next);
  }
  HttpResponse loop;
  loop.failure = HttpFailure::other;
  loop.failure_detail = "more than " + std::to_string(kMaxRedirects) + " redirects";
  return loop;
}

HttpResponse Transport::exchange(const std::string& host, const RegistryRequest& request,
                                 const std::string& authorization, ResumableSink* sink,
                                 const Deadline& deadline) {
  std::vector<std::string> schemes;
  {
    MutexLock lock(schemes_mu_);
    if (auto it = schemes_.find(host); it != schemes_.end()) schemes.push_back(it->second);
  }
  // A loopback registry is nearly always plain HTTP (a test or local registry): trying it first
  // saves the failed TLS handshake (and the CA bundle load, ~20 ms) on every first contact. One
  // that speaks TLS answers plain HTTP with a protocol error or a 400, and gets HTTPS next.
  bool http_first = is_loopback(host) && !is_insecure(host);
  if (schemes.empty()) {
    if (http_first) schemes.emplace_back("http");
    schemes.emplace_back("https");
    if (allows_http(host) && !http_first) schemes.emplace_back("http");
  }
  HttpRequest base;
  base.method = request.method;
  base.headers = request.headers;
  base.max_body_bytes = request.max_body_bytes;
  std::string api = api_host(host);
  HttpResponse response;
  HttpResponse answered;  // the last attempt that got an HTTP answer, if a later one got none
  for (size_t i = 0; i < schemes.size(); ++i) {
    std::string origin_url = schemes[i] + "://" + api;
    std::optional<UrlParts> parts = parse_url(origin_url);
    std::string origin = parts ? parts->origin() : origin_url;
    response = follow(origin_url + request.path, base, authorization, origin, sink,
                      allows_http(host) ? HttpRedirects::follow : HttpRedirects::refuse, deadline);
    bool fall_back =
        response.failure == HttpFailure::tls || response.failure == HttpFailure::unreachable ||
        response.failure == HttpFailure::other || (schemes[i] == "http" && response.status == 400);
    if (fall_back && i + 1 < schemes.size()) {
      if (response.status != 0) answered = response;
      continue;
    }
    // A plain-HTTP 400 that HTTPS could not better (the server does not speak TLS either) was
    // the registry's real answer.
    if (response.status == 0 && answered.status != 0 && response.failure == HttpFailure::tls) {
      response = std::move(answered);
      MutexLock lock(schemes_mu_);
      schemes_[host] = "http";
      break;
    }
    if (response.status != 0) {
      MutexLock lock(schemes_mu_);
      schemes_[host] = schemes[i];
    }
    break;
  }
  return response;
}

HttpResponse Transport::exchange_at(const RegistryHost& host, const RegistryRequest& request,
                                    const std::string& authorization, ResumableSink* sink,
                                    const Deadline& deadline) {
  HttpRequest base;
  base.method = request.method;
  base.headers = request.headers;
  for (const auto& [name, value] : host.headers) base.headers.add(name, value);
  base.max_body_bytes = request.max_body_bytes;
  base.tls_verify = host.tls.skip_verify ? TlsVerify::no : TlsVerify::yes;
  if (!host.tls.ca.empty()) {
    // The host's CAs replace --ca-file in libcurl (CAINFO_BLOB): so it goes in too.
    std::vector<std::filesystem::path> files = host.tls.ca;
    if (!options_.ca_file.empty()) files.push_back(options_.ca_file);
    for (const std::filesystem::path& file : files) {
      std::ifstream in(file, std::ios::binary);
      std::string pem((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
      if (!in.good() && !in.eof()) pem.clear();
      if (pem.empty()) {
        HttpResponse bad;
        bad.failure = HttpFailure::other;
        bad.failure_detail = "cannot read CA file " + file.string() + " (" + host.origin + ")";
        return bad;
      }
      base.ca_pem += pem;
      base.ca_pem += "\n";
    }
  }
  if (!host.tls.client.empty()) {
    base.client_cert = host.tls.client.front().first;
    base.client_key = host.tls.client.front().second;
  }
  std::string path = request.path;
  if (path.starts_with("/v2")) path = path.substr(3);
  std::string origin_url = host.scheme + "://" + api_host(host.name);
  std::optional<UrlParts> parts = parse_url(origin_url);
  std::string origin = parts ? parts->origin() : origin_url;
  // The scheme is what the host's URL says (no fallback); a redirect to plain HTTP is followed
  // for a host that is itself plain HTTP.
  HttpRedirects http = host.scheme == "http" || allows_http(host.name) ? HttpRedirects::follow
                                                                       : HttpRedirects::refuse;
  return follow(origin_url + host.api_root + path, base, authorization, origin, sink, http,
                deadline);
}

Result<Reply> Transport::send(const std::string& host, const RegistryRequest& request,
                              ResumableSink* sink) {
  return send_to(host, nullptr, request, sink);
}

Result<Reply> Transport::send(const RegistryHost& host, const RegistryRequest& request,
                              ResumableSink* sink) {
  if (host.implicit && host.headers.empty() && host.tls.empty())
    return send_to(host.name, nullptr, request, sink);
  return send_to(host.name, &host, request, sink);
}

Result<Reply> Transport::send_to(const std::string& host, const RegistryHost* at,
                                 const RegistryRequest& request, ResumableSink* sink) {
  AuthAttempt attempt;
  IMAGEFS_TRY(authorization, auth_->authorization(host, request.scope, attempt));
  // Each remedy is tried once (AuthAttempt): authenticate, replace a refused token, ask a
  // credential helper again. Four exchanges are the most that makes.
  int exchanges_left = 4;
  // One deadline for the whole request, authentication rounds included (a token request has
  // its own).
  Deadline deadline = deadline_for(sink);
  for (;;) {
    IMAGEFS_TRY(reply,
                with_retries(host, sink, request.notice, deadline, request.max_attempts, [&] {
                  if (at != nullptr)
                    return exchange_at(*at, request, authorization, sink, deadline);
                  return exchange(host, request, authorization, sink, deadline);
                }));
    if (--exchanges_left == 0) return reply;
    Result<std::optional<std::string>> next = std::optional<std::string>();
    if (reply.response.status == 401) {
      std::vector<Challenge> challenges =
          parse_www_authenticate(reply.response.headers.get_all("WWW-Authenticate"));
      next = auth_->on_unauthorized(host, request.scope, challenges, authorization, attempt);
    } else if (reply.response.status == 403 && !authorization.empty()) {
      next = auth_->on_forbidden(host, request.scope, authorization, attempt);
    } else {
      return reply;
    }
    IMAGEFS_TRY(header, std::move(next));
    if (!header) return reply;
    authorization = std::move(*header);
  }
}

Result<Reply> Transport::get_url(const std::string& url, ResumableSink* sink,
                                 const Notice& notice) {
  std::optional<UrlParts> parts = parse_url(url);
  if (!parts || (parts->scheme != "https" && parts->scheme != "http"))
    return make_error(EIO, "cannot download from \"" + url + "\": not an http(s) URL");
  // A foreign layer's URL comes from the manifest: plain HTTP only where a registry could use it.
  HttpRedirects http =
      allows_http(parts->authority()) ? HttpRedirects::follow : HttpRedirects::refuse;
  if (parts->scheme == "http" && http == HttpRedirects::refuse)
    return make_error(EIO, "cannot download from \"" + url +
                               "\": plain HTTP is used only for loopback hosts and "
                               "--insecure-registry ones");
  HttpRequest base;
  Deadline deadline = deadline_for(sink);
  return with_retries(parts->authority(), sink, notice, deadline, 0,
                      [&] { return follow(url, base, "", "", sink, http, deadline); });
}

}  // namespace imagefs::registry
