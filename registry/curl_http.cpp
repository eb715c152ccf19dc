// Http over libcurl: one easy handle per request in flight, taken from a pool so that each
// handle's connection cache (keep-alive, TLS sessions, DNS) is reused by later requests.
#include <curl/curl.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include "common/mutex.h"
#include "registry/http.h"

namespace imagefs::registry {
namespace {

struct CurlEasyDeleter {
  void operator()(CURL* curl) const { curl_easy_cleanup(curl); }
};
using CurlEasy = std::unique_ptr<CURL, CurlEasyDeleter>;

struct CurlSlistDeleter {
  void operator()(curl_slist* list) const { curl_slist_free_all(list); }
};
using CurlSlist = std::unique_ptr<curl_slist, CurlSlistDeleter>;

// State shared with libcurl's callbacks for one transfer.
struct Transfer {
  const HttpRequest* request = nullptr;
  BodySink* sink = nullptr;
  HttpResponse* response = nullptr;
  int header_status = 0;  // from the last status line seen
  bool sink_begun = false;
  bool too_large = false;

  bool to_sink() const { return sink != nullptr && header_status >= 200 && header_status < 300; }

  Result<void> begin_sink() {
    if (sink_begun) return {};
    sink_begun = true;
    return sink->begin(header_status, response->headers);
  }
};

std::string trim(std::string_view s) {
  size_t b = 0;
  size_t e = s.size();
  while (b < e && (s[b] == ' ' || s[b] == '\t' || s[b] == '\r' || s[b] == '\n')) ++b;
  while (e > b && (s[e - 1] == ' ' || s[e - 1] == '\t' || s[e - 1] == '\r' || s[e - 1] == '\n'))
    --e;
  return std::string(s.substr(b, e - b));
}

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  std::string_view line(data, size * count);
  if (line.starts_with("HTTP/")) {
    // A new response (after a 1xx, or the first): forget earlier header fields.
    t->response->headers.clear();
    size_t sp = line.find(' ');
    t->header_status = 0;
    if (sp != std::string_view::npos) {
      for (size_t i = sp + 1; i < line.size() && line[i] >= '0' && line[i] <= '9'; ++i)
        t->header_status = t->header_status * 10 + (line[i] - '0');
    }
    return line.size();
  }
  size_t colon = line.find(':');
  if (colon != std::string_view::npos && colon > 0) {
    t->response->headers.add(trim(line.substr(0, colon)), trim(line.substr(colon + 1)));
  }
  return line.size();
}

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* t = static_cast<Transfer*>(user);
  size_t n = size * count;
  if (t->to_sink()) {
    Result<void> r = t->begin_sink();
    if (r.ok()) r = t->sink->write({reinterpret_cast<const uint8_t*>(data), n});
    if (!r.ok()) {
      t->response->sink_error = r.error();
      return 0;  // CURLE_WRITE_ERROR
    }
    return n;
  }
  if (t->header_status < 200 || t->header_status >= 300) {
    // An error page or a redirect: keep enough to explain it, ignore the rest.
    constexpr size_t kMaxErrorBody = 64u << 10;
    size_t room = kMaxErrorBody - std::min(kMaxErrorBody, t->response->body.size());
    t->response->body.append(data, std::min(n, room));
    return n;
  }
  if (t->response->body.size() + n > t->request->max_body_bytes) {
    t->too_large = true;
    return 0;
  }
  t->response->body.append(data, n);
  return n;
}

HttpFailure classify(CURLcode code) {
  switch (code) {
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
    case CURLE_COULDNT_CONNECT:
      return HttpFailure::unreachable;
    case CURLE_OPERATION_TIMEDOUT:
      return HttpFailure::timeout;
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
      return HttpFailure::certificate;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_SSL_CERTPROBLEM:
    case CURLE_SSL_CIPHER:
    case CURLE_SSL_ISSUER_ERROR:
    case CURLE_SSL_SHUTDOWN_FAILED:
    case CURLE_USE_SSL_FAILED:
      return HttpFailure::tls;
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
      return HttpFailure::interrupted;
    default:
      return HttpFailure::other;
  }
}

class CurlHttp final : public Http {
 public:
  explicit CurlHttp(HttpOptions options) : options_(std::move(options)) {}

  HttpResponse perform(const HttpRequest& request, BodySink* sink) override {
    CurlEasy curl = acquire();
    HttpResponse response;
    if (!curl) {
      response.failure = HttpFailure::other;
      response.failure_detail = "libcurl could not create a handle";
      return response;
    }
    run(curl.get(), request, sink, response);
    release(std::move(curl));
    return response;
  }

 private:
  CurlEasy acquire() {
    {
      MutexLock lock(mu_);
      if (!idle_.empty()) {
        CurlEasy curl = std::move(idle_.back());
        idle_.pop_back();
        return curl;
      }
    }
    return CurlEasy(curl_easy_init());
  }

  void release(CurlEasy curl) {
    // Keep a handful: enough for the parallel layer downloads, each with its connection.
    constexpr size_t kMaxIdle = 16;
    MutexLock lock(mu_);
    if (idle_.size() < kMaxIdle) idle_.push_back(std::move(curl));
  }

  void run(CURL* curl, const HttpRequest& request, BodySink* sink, HttpResponse& response) {
    // Reset keeps the handle's live connections and caches but forgets the last request.
    curl_easy_reset(curl);
    Transfer transfer{&request, sink, &response};
    char error_buffer[CURL_ERROR_SIZE] = {};

    CurlSlist headers;
    for (const auto& [name, value] : request.headers.fields()) {
      std::string line = name;
      line.append(": ").append(value);
      curl_slist* next = curl_slist_append(headers.get(), line.c_str());
      if (next == nullptr) {
        response.failure = HttpFailure::other;
        response.failure_detail = "out of memory";
        return;
      }
      (void)headers.release();
      headers.reset(next);
    }
    std::string range;
    if (request.range_start) range = std::to_string(*request.range_start) + "-";

    // Return codes of curl_easy_setopt are ignored on purpose: every option used here exists in
    // the libcurl versions we build against, and a refused option surfaces at perform time.
    (void)curl_easy_setopt(curl, CURLOPT_URL, request.url.c_str());
    (void)curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
    (void)curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    (void)curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
    (void)curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error_buffer);
    (void)curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers.get());
    (void)curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
    (void)curl_easy_setopt(curl, CURLOPT_HEADERDATA, &transfer);
    (void)curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
    (void)curl_easy_setopt(curl, CURLOPT_WRITEDATA, &transfer);
    (void)curl_easy_setopt(curl, CURLOPT_BUFFERSIZE, 128L * 1024);
    (void)curl_easy_setopt(curl, CURLOPT_TCP_KEEPALIVE, 1L);
    (void)curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS,
                           static_cast<long>(options_.connect_timeout.count()));
    (void)curl_easy_setopt(curl, CURLOPT_LOW_SPEED_LIMIT,
                           static_cast<long>(std::max<uint64_t>(1, options_.stall_min_rate)));
    (void)curl_easy_setopt(curl, CURLOPT_LOW_SPEED_TIME,
                           static_cast<long>(std::max<int64_t>(1, options_.stall_window.count())));
    if (request.timeout)
      (void)curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS,
                             static_cast<long>(std::max<int64_t>(1, request.timeout->count())));
    if (!options_.user_agent.empty())
      (void)curl_easy_setopt(curl, CURLOPT_USERAGENT, options_.user_agent.c_str());
    // With OpenSSL, libcurl loads both CAINFO and the compiled-in CAPATH (/etc/ssl/certs on
    // Debian), so a given CA file adds to the system's CAs instead of replacing them.
    if (!options_.ca_file.empty())
      (void)curl_easy_setopt(curl, CURLOPT_CAINFO, options_.ca_file.c_str());
    curl_blob ca_blob{};
    if (!request.ca_pem.empty()) {
      // libcurl copies the blob; with a blob set it ignores CAINFO but still loads CAPATH.
      ca_blob.data = const_cast<char*>(request.ca_pem.data());
      ca_blob.len = request.ca_pem.size();
      ca_blob.flags = CURL_BLOB_COPY;
      (void)curl_easy_setopt(curl, CURLOPT_CAINFO_BLOB, &ca_blob);
    }
    if (!request.client_cert.empty()) {
      (void)curl_easy_setopt(curl, CURLOPT_SSLCERT, request.client_cert.c_str());
      if (!request.client_key.empty())
        (void)curl_easy_setopt(curl, CURLOPT_SSLKEY, request.client_key.c_str());
    }
    if (request.tls_verify == TlsVerify::no) {
      (void)curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
      (void)curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
    }
    if (!range.empty()) (void)curl_easy_setopt(curl, CURLOPT_RANGE, range.c_str());
    if (request.method == "HEAD") {
      (void)curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else if (request.method == "POST") {
      (void)curl_easy_setopt(curl, CURLOPT_POST, 1L);
      (void)curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE,
                             static_cast<curl_off_t>(request.body.size()));
      (void)curl_easy_setopt(curl, CURLOPT_POSTFIELDS, request.body.data());
    } else if (request.method != "GET") {
      (void)curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, request.method.c_str());
    }

    CURLcode code = curl_easy_perform(curl);
    long status = 0;
    (void)curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
    response.status = static_cast<int>(status);
    if (code == CURLE_OK) {
      if (transfer.to_sink()) {
        // An empty 2xx body still begins the sink, so it sees the status.
        Result<void> r = transfer.begin_sink();
        if (!r.ok()) {
          response.failure = HttpFailure::aborted;
          response.failure_detail = r.error().message;
          response.sink_error = r.error();
        }
      }
      return;
    }
    if (response.sink_error) {
      response.failure = HttpFailure::aborted;
      response.failure_detail = response.sink_error->message;
    } else if (transfer.too_large) {
      response.failure = HttpFailure::too_large;
      response.failure_detail =
          "response larger than " + std::to_string(request.max_body_bytes) + " bytes";
    } else {
      response.failure = classify(code);
      response.failure_detail = error_buffer[0] != '\0' ? error_buffer : curl_easy_strerror(code);
    }
  }

  const HttpOptions options_;
  Mutex mu_;
  std::vector<CurlEasy> idle_ GUARDED_BY(mu_);
};

}  // namespace

std::shared_ptr<Http> make_curl_http(const HttpOptions& options) {
  // libcurl's global state must be set up once, before any handle exists; it is never torn down
  // because handles may live until exit.
  static std::once_flag once;
  std::call_once(once, [] { (void)curl_global_init(CURL_GLOBAL_DEFAULT); });
  return std::make_shared<CurlHttp>(options);
}

}  // namespace imagefs::registry
