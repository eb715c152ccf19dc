// FakeRegistry: just enough of the distribution API, token service and a CDN to exercise the
// client's policies without a network.
#include "tests/unit/registry/fakes.h"

#include <stdlib.h>
#include <zlib.h>

#include <fstream>
#include <thread>

#include "registry/credentials.h"

namespace imagefs::registry::testing {

using nlohmann::json;

namespace {

std::string url_decode(std::string_view s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      out.push_back(static_cast<char>(std::stoi(std::string(s.substr(i + 1, 2)), nullptr, 16)));
      i += 2;
    } else if (s[i] == '+') {
      out.push_back(' ');
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::multimap<std::string, std::string> parse_form(std::string_view s) {
  std::multimap<std::string, std::string> out;
  size_t start = 0;
  while (start <= s.size()) {
    size_t end = s.find('&', start);
    if (end == std::string_view::npos) end = s.size();
    std::string_view kv = s.substr(start, end - start);
    size_t eq = kv.find('=');
    if (!kv.empty())
      out.emplace(url_decode(kv.substr(0, eq)),
                  eq == std::string_view::npos ? "" : url_decode(kv.substr(eq + 1)));
    start = end + 1;
  }
  return out;
}

HttpResponse failure(HttpFailure kind, const std::string& detail) {
  HttpResponse r;
  r.failure = kind;
  r.failure_detail = detail;
  return r;
}

}  // namespace

HttpResponse FakeRegistry::error_response(int status, const std::string& code,
                                          const std::string& message) {
  HttpResponse r;
  r.status = status;
  r.headers.add("Content-Type", "application/json");
  r.body = json{{"errors", json::array({{{"code", code}, {"message", message}}})}}.dump();
  return r;
}

HttpResponse FakeRegistry::unauthorized(const std::string& repo, const std::string& error) {
  HttpResponse r = error_response(401, "UNAUTHORIZED", "authentication required");
  if (auth == Auth::basic) {
    r.headers.add("WWW-Authenticate", "Basic realm=\"fake registry\"");
  } else {
    std::string challenge = "Bearer realm=\"https://auth.example/token\",service=\"fake-registry\"";
    if (!repo.empty()) challenge += ",scope=\"repository:" + repo + ":pull\"";
    if (!error.empty()) challenge += ",error=\"" + error + "\"";
    r.headers.add("WWW-Authenticate", challenge);
  }
  return r;
}

HttpResponse FakeRegistry::perform(const HttpRequest& request, BodySink* sink) {
  HttpResponse response = route(request, sink);
  if (request.method == "HEAD") response.body.clear();  // as any HTTP server does
  return response;
}

HttpResponse FakeRegistry::route(const HttpRequest& request, BodySink* sink) {
  SeenRequest seen{request.method, request.url,        request.headers, request.range_start,
                   request.body,   request.tls_verify, request.timeout};
  {
    std::lock_guard lock(mu_);
    seen_.push_back(seen);
  }
  if (intercept) {
    if (std::optional<HttpResponse> r = intercept(seen)) {
      if (!r->ok()) return *r;
      return deliver(seen, r->status, r->headers, r->body, sink, request, false);
    }
  }
  std::optional<UrlParts> parts = parse_url(request.url);
  if (!parts) return failure(HttpFailure::other, "bad URL");
  size_t path_at = request.url.find('/', request.url.find("://") + 3);
  std::string path = path_at == std::string::npos ? "/" : request.url.substr(path_at);
  std::string authority = parts->authority();

  if (parts->origin() == parse_url(cdn)->origin() && path.starts_with("/cdn-blobs/")) {
    std::string file;
    {
      std::lock_guard lock(mu_);
      auto it = cdn_files_.find(path.substr(0, path.find('?')));
      if (it == cdn_files_.end()) return error_response(404, "NOT_FOUND", "no such file");
      file = it->second;
    }
    return deliver(seen, 200, {}, file, sink, request, true);
  }
  if (authority == host) {
    if (plain_http && parts->scheme == "https")
      return failure(HttpFailure::tls, "error:0A00010B:SSL routines::wrong version number");
    if (!plain_http && parts->scheme == "http") {
      HttpResponse r;
      r.status = 400;
      r.body = "Client sent an HTTP request to an HTTPS server.";
      return r;
    }
    if (!plain_http && untrusted_certificate && request.tls_verify == TlsVerify::yes)
      return failure(HttpFailure::certificate,
                     "SSL certificate problem: unable to get local issuer certificate");
    return registry(seen, path, sink, request);
  }
  if (authority == "auth.example") return token_service(seen, path);
  return failure(HttpFailure::unreachable, "Could not resolve host: " + parts->host);
}

HttpResponse FakeRegistry::registry(const SeenRequest& r, const std::string& path, BodySink* sink,
                                    const HttpRequest& request) {
  if (path == "/v2/" || path == "/v2") {
    HttpResponse ok;
    ok.status = 200;
    return ok;
  }
  size_t m = path.rfind("/manifests/");
  size_t b = path.rfind("/blobs/");
  bool is_manifest = m != std::string::npos;
  size_t cut = is_manifest ? m : b;
  if (!path.starts_with("/v2/") || cut == std::string::npos)
    return error_response(404, "NOT_FOUND", "not found");
  std::string repo = path.substr(4, cut - 4);
  std::string ref = path.substr(cut + (is_manifest ? 11 : 7));

  std::string authorization = r.headers.get("Authorization").value_or("");
  if (auth == Auth::basic) {
    if (authorization != "Basic " + base64_encode(user + ":" + password))
      return unauthorized(repo, "");
  } else if (auth == Auth::token) {
    if (!authorization.starts_with("Bearer ")) return unauthorized(repo, "");
    std::string problem;
    {
      std::lock_guard lock(mu_);
      auto it = tokens_.find(authorization.substr(7));
      if (it == tokens_.end() || clock->steady_now() >= it->second.expires) {
        problem = "invalid_token";
      } else if (it->second.repos.count(repo) == 0) {
        problem = "insufficient_scope";
      }
    }
    if (!problem.empty()) return unauthorized(repo, problem);
  }

  Repo found;
  {
    std::lock_guard lock(mu_);
    auto it = repos_.find(repo);
    if (it == repos_.end())
      return error_response(404, "NAME_UNKNOWN", "repository name not known to registry");
    found = it->second;
  }
  if (is_manifest) {
    std::string digest = ref;
    if (!ref.starts_with("sha256:")) {
      auto t = found.tags.find(ref);
      if (t == found.tags.end()) return error_response(404, "MANIFEST_UNKNOWN", "manifest unknown");
      digest = t->second;
    }
    auto it = found.manifests.find(digest);
    if (it == found.manifests.end())
      return error_response(404, "MANIFEST_UNKNOWN", "manifest unknown");
    // Like distribution 2.8: an index is "unknown" to a client that does not accept indexes.
    std::string accept = r.headers.get("Accept").value_or("");
    if (accept.find(it->second.type) == std::string::npos)
      return error_response(404, "MANIFEST_UNKNOWN", "manifest unknown");
    Headers h;
    h.add("Content-Type", it->second.type);
    h.add("Docker-Content-Digest", digest);
    h.add("Content-Length", std::to_string(it->second.bytes.size()));
    return deliver(r, 200, h, it->second.bytes, sink, request, false);
  }
  auto blob = found.blobs.find(ref);
  if (blob == found.blobs.end()) return error_response(404, "BLOB_UNKNOWN", "blob unknown");
  if (redirect_blobs) {
    std::string file = "/cdn-blobs/" + ref;
    put_cdn(file, blob->second);
    HttpResponse redirect;
    redirect.status = 307;
    redirect.headers.add("Location", cdn + file + "?signature=abc");
    return redirect;
  }
  return deliver(r, 200, {}, blob->second, sink, request, true);
}

HttpResponse FakeRegistry::deliver(const SeenRequest& r, int status, Headers headers,
                                   const std::string& body_in, BodySink* sink,
                                   const HttpRequest& request, bool is_blob) {
  std::string body = body_in;
  if (is_blob && r.range_start && !ignore_range && status == 200) {
    uint64_t start = *r.range_start;
    if (start >= body.size()) return error_response(416, "RANGE", "range not satisfiable");
    headers.add("Content-Range", "bytes " + std::to_string(start) + "-" +
                                     std::to_string(body.size() - 1) + "/" +
                                     std::to_string(body.size()));
    body = body.substr(start);
    status = 206;
  }
  HttpResponse response;
  response.status = status;
  response.headers = headers;
  if (r.method == "HEAD") return response;
  if (status < 200 || status >= 300 || sink == nullptr) {
    if (body.size() > request.max_body_bytes && request.max_body_bytes != 0 && sink == nullptr &&
        status >= 200 && status < 300)
      return failure(HttpFailure::too_large, "response too large");
    response.body = body;
    return response;
  }
  int now = ++concurrent_;
  int seen_max = max_concurrent_;
  while (now > seen_max && !max_concurrent_.compare_exchange_weak(seen_max, now)) {
  }
  struct Leave {
    std::atomic<int>& n;
    ~Leave() { --n; }
  } leave{concurrent_};
  if (is_blob && blob_delay.count() > 0) std::this_thread::sleep_for(blob_delay);

  if (Result<void> began = sink->begin(status, headers); !began.ok()) {
    HttpResponse aborted = failure(HttpFailure::aborted, began.error().message);
    aborted.status = status;
    aborted.sink_error = began.error();
    return aborted;
  }
  uint64_t limit = body.size();
  bool drop = false;
  {
    std::lock_guard lock(mu_);
    if (is_blob && drop_count > 0 && drop_after <= body.size()) {
      --drop_count;
      limit = drop_after;
      drop = true;
    }
  }
  for (uint64_t at = 0; at < limit;) {
    uint64_t n = std::min<uint64_t>(1000, limit - at);
    Result<void> wrote =
        sink->write({reinterpret_cast<const uint8_t*>(body.data()) + at, static_cast<size_t>(n)});
    if (!wrote.ok()) {
      HttpResponse aborted = failure(HttpFailure::aborted, wrote.error().message);
      aborted.status = status;
      aborted.sink_error = wrote.error();
      return aborted;
    }
    at += n;
  }
  if (is_blob && endless_blobs && !drop) {
    std::string more(16384, 'x');
    for (uint64_t sent = 0; sent < kEndlessCap; sent += more.size()) {
      Result<void> wrote =
          sink->write({reinterpret_cast<const uint8_t*>(more.data()), more.size()});
      if (!wrote.ok()) {
        HttpResponse aborted = failure(HttpFailure::aborted, wrote.error().message);
        aborted.status = status;
        aborted.sink_error = wrote.error();
        return aborted;
      }
      endless_sent += more.size();
    }
  }
  if (drop) {
    HttpResponse dropped =
        drop_failure == HttpFailure::timeout
            ? failure(HttpFailure::timeout, "Operation too slow")
            : failure(drop_failure, "transfer closed with bytes remaining to read");
    dropped.status = status;
    return dropped;
  }
  return response;
}

HttpResponse FakeRegistry::token_service(const SeenRequest& r, const std::string& path) {
  size_t q = path.find('?');
  auto params = parse_form(
      r.method == "POST"
          ? std::string_view(r.body)
          : (q == std::string::npos ? std::string_view() : std::string_view(path).substr(q + 1)));
  auto first = [&](const std::string& k) {
    auto it = params.find(k);
    return it == params.end() ? std::string() : it->second;
  };
  if (first("service") != "fake-registry")
    return error_response(400, "BAD_SERVICE", "unknown service");
  bool authenticated = false;
  if (r.method == "POST") {
    if (first("grant_type") != "refresh_token" || first("refresh_token") != refresh_token) {
      HttpResponse denied;
      denied.status = 401;
      denied.body = R"({"details":"invalid refresh token"})";
      return denied;
    }
    authenticated = true;
  } else if (std::optional<std::string> a = r.headers.get("Authorization")) {
    if (*a != "Basic " + base64_encode(user + ":" + password)) {
      HttpResponse denied;
      denied.status = 401;
      denied.body = R"({"details":"incorrect username or password"})";
      return denied;
    }
    authenticated = true;
  }
  std::vector<std::string> scopes;
  for (auto [it, end] = params.equal_range("scope"); it != end; ++it) {
    size_t start = 0;
    const std::string& s = it->second;
    while (start < s.size()) {
      size_t sp = s.find(' ', start);
      if (sp == std::string::npos) sp = s.size();
      scopes.push_back(s.substr(start, sp - start));
      start = sp + 1;
    }
  }
  Token token;
  for (const std::string& scope : scopes) {
    if (!scope.starts_with("repository:") || !scope.ends_with(":pull")) continue;
    std::string repo = scope.substr(11, scope.size() - 11 - 5);
    if (authenticated || !repo.starts_with("private/")) token.repos.insert(repo);
  }
  token.expires = clock->steady_now() + std::chrono::seconds(token_ttl == 0 ? 60 : token_ttl);
  std::string value;
  {
    std::lock_guard lock(mu_);
    value = "tok-" + std::to_string(++next_token_) + "-" + (authenticated ? "user" : "anon");
    tokens_[value] = token;
  }
  json answer{{"token", value}};
  if (token_ttl != 0) answer["expires_in"] = token_ttl;
  HttpResponse ok;
  ok.status = 200;
  ok.body = answer.dump();
  return ok;
}

TempDir::TempDir() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "imagefs-registry.XXXXXX").string();
  if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  if (!path_.empty()) std::filesystem::remove_all(path_, ec);
}

TestEnv::TestEnv() {
  options.docker_config = dir.path() / "config.json";
  reset_store();
}

void TestEnv::reset_store() {
  std::filesystem::path root = dir.path() / ("store" + std::to_string(++stores_));
  auto b = store::BlobStore::open(root);
  auto c = store::Catalog::open(store::Catalog::file_in(root));
  if (!b.ok()) throw std::runtime_error(b.error().message);
  if (!c.ok()) throw std::runtime_error(c.error().message);
  blobs = std::move(b).value();
  catalog = std::move(c).value();
}

void TestEnv::write_partial(const store::Digest& digest, const std::string& bytes) const {
  auto writer = blobs->open_writer(digest);
  if (!writer.ok()) throw std::runtime_error(writer.error().message);
  auto wrote =
      writer.value()->write({reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()});
  if (!wrote.ok()) throw std::runtime_error(wrote.error().message);
}

uint64_t TestEnv::partial_size(const store::Digest& digest) const {
  auto writer = blobs->open_writer(digest);
  if (!writer.ok()) throw std::runtime_error(writer.error().message);
  return writer.value()->done() ? 0 : writer.value()->offset();
}

void TestEnv::write_docker_config(const std::string& text) const {
  std::ofstream(dir.path() / "config.json") << text;
}

std::unique_ptr<Puller> TestEnv::puller() const {
  auto p = Puller::create(blobs, catalog, options, registry, clock);
  if (!p.ok()) throw std::runtime_error(p.error().message);
  return std::move(p).value();
}

Reference TestEnv::ref(const std::string& text) {
  auto r = parse_reference(text);
  if (!r.ok()) throw std::runtime_error(r.error().message);
  return std::move(r).value();
}

namespace {

// The diff_id of a test layer: the SHA-256 of its uncompressed bytes when it is a gzip (the fs
// tests' real layers: imagefs checks them against the config), else a made-up one (the registry
// tests' layers are arbitrary bytes nobody unpacks).
std::string diff_id_of(const std::string& layer) {
  if (layer.size() < 2 || static_cast<uint8_t>(layer[0]) != 0x1f ||
      static_cast<uint8_t>(layer[1]) != 0x8b)
    return store::Digest::of("diff:" + layer).str();
  z_stream z{};
  if (inflateInit2(&z, 16 + MAX_WBITS) != Z_OK) throw std::runtime_error("inflateInit2");
  std::string out;
  std::string buffer(1 << 16, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(layer.data()));
  z.avail_in = static_cast<uInt>(layer.size());
  int r = Z_OK;
  while (r == Z_OK) {
    z.next_out = reinterpret_cast<Bytef*>(buffer.data());
    z.avail_out = static_cast<uInt>(buffer.size());
    r = inflate(&z, Z_NO_FLUSH);
    out.append(buffer.data(), buffer.size() - z.avail_out);
  }
  inflateEnd(&z);
  if (r != Z_STREAM_END) return store::Digest::of("diff:" + layer).str();
  return store::Digest::of(out).str();
}

}  // namespace

TestImage make_image(const std::string& arch, const std::vector<std::string>& layers,
                     const std::string& variant, const std::string& manifest_type) {
  bool docker = manifest_type == "application/vnd.docker.distribution.manifest.v2+json";
  TestImage image;
  image.layers = layers;
  json diff_ids = json::array();
  json layer_descs = json::array();
  for (const std::string& l : layers) {
    diff_ids.push_back(diff_id_of(l));
    layer_descs.push_back(
        {{"mediaType", docker ? "application/vnd.docker.image.rootfs.diff.tar.gzip"
                              : "application/vnd.oci.image.layer.v1.tar+gzip"},
         {"digest", store::Digest::of(l).str()},
         {"size", l.size()}});
  }
  json config{{"architecture", arch},
              {"os", "linux"},
              {"config", json::object()},
              {"rootfs", {{"type", "layers"}, {"diff_ids", diff_ids}}}};
  if (!variant.empty()) config["variant"] = variant;
  image.config = config.dump();
  json manifest{{"schemaVersion", 2},
                {"mediaType", manifest_type},
                {"config",
                 {{"mediaType", docker ? "application/vnd.docker.container.image.v1+json"
                                       : "application/vnd.oci.image.config.v1+json"},
                  {"digest", store::Digest::of(image.config).str()},
                  {"size", image.config.size()}}},
                {"layers", layer_descs}};
  image.manifest = manifest.dump();
  return image;
}

std::string make_index(const std::vector<std::pair<std::string, const TestImage*>>& entries) {
  json manifests = json::array();
  for (const auto& [platform, image] : entries) {
    json p;
    size_t a = platform.find('/');
    size_t v = platform.find('/', a + 1);
    p["os"] = platform.substr(0, a);
    p["architecture"] = platform.substr(a + 1, v == std::string::npos ? v : v - a - 1);
    if (v != std::string::npos) p["variant"] = platform.substr(v + 1);
    manifests.push_back({{"mediaType", "application/vnd.oci.image.manifest.v1+json"},
                         {"digest", image->manifest_digest().str()},
                         {"size", image->manifest.size()},
                         {"platform", p}});
  }
  return json{{"schemaVersion", 2},
              {"mediaType", "application/vnd.oci.image.index.v1+json"},
              {"manifests", manifests}}
      .dump();
}

store::Digest push(FakeRegistry& registry, const std::string& repo, const std::string& tag,
                   const TestImage& image) {
  registry.put_blob(repo, image.config);
  for (const std::string& l : image.layers) registry.put_blob(repo, l);
  json m = json::parse(image.manifest);
  return registry.put_manifest(repo, tag, image.manifest, m["mediaType"].get<std::string>());
}

}  // namespace imagefs::registry::testing
