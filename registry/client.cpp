// Manifests and blobs over the transport, with digests checked and errors worded for people.
#include "registry/client.h"

#include <algorithm>
#include <nlohmann/json.hpp>

namespace imagefs::registry {

using nlohmann::json;

namespace {

constexpr uint64_t kMaxManifestBytes = 8u << 20;
constexpr uint64_t kMaxConfigBytes = 64u << 20;

struct RegistryErrorBody {
  std::string code;     // "MANIFEST_UNKNOWN"
  std::string message;  // "manifest unknown"
};

// The first entry of a distribution-spec error body {"errors":[{"code","message","detail"}]}.
RegistryErrorBody registry_error(const std::string& body) {
  RegistryErrorBody out;
  json doc = json::parse(body, nullptr, false);
  if (doc.is_discarded() || !doc.is_object()) return out;
  auto errors = doc.find("errors");
  if (errors == doc.end() || !errors->is_array() || errors->empty() || !(*errors)[0].is_object())
    return out;
  const json& first = (*errors)[0];
  if (auto c = first.find("code"); c != first.end() && c->is_string()) out.code = *c;
  if (auto m = first.find("message"); m != first.end() && m->is_string()) out.message = *m;
  if (out.message.size() > 200) out.message = out.message.substr(0, 200) + "...";
  return out;
}

// "21600" -> "6 hours"
std::string human_window(const std::string& seconds_text) {
  int64_t s = 0;
  for (char c : seconds_text) {
    if (c < '0' || c > '9' || s > 1000000000) return seconds_text + " seconds";
    s = s * 10 + (c - '0');
  }
  if (s % 3600 == 0 && s >= 3600)
    return std::to_string(s / 3600) + (s == 3600 ? " hour" : " hours");
  if (s % 60 == 0 && s >= 60) return std::to_string(s / 60) + (s == 60 ? " minute" : " minutes");
  return std::to_string(s) + " seconds";
}

// "100;w=21600" -> {"100", "21600"}
std::pair<std::string, std::string> split_limit(const std::string& value) {
  size_t semi = value.find(';');
  std::string count = value.substr(0, semi);
  std::string window;
  if (semi != std::string::npos) {
    size_t w = value.find("w=", semi);
    if (w != std::string::npos) {
      size_t end = value.find_first_not_of("0123456789", w + 2);
      window = value.substr(w + 2, end == std::string::npos ? end : end - (w + 2));
    }
  }
  return {count, window};
}

std::string rate_limit_message(const std::string& host, const Reply& reply,
                               const std::string& credential_note) {
  const Headers& h = reply.response.headers;
  std::string message = "too many requests: registry " + host + " is rate limiting pulls";
  if (std::optional<std::string> limit = h.get("RateLimit-Limit")) {
    auto [count, window] = split_limit(*limit);
    message += " (limit " + count + " pulls" +
               (window.empty() ? std::string() : " per " + human_window(window));
    if (std::optional<std::string> source = h.get("Docker-RateLimit-Source"))
      message += " for " + *source;
    if (std::optional<std::string> remaining = h.get("RateLimit-Remaining"))
      message += ", " + split_limit(*remaining).first + " left";
    message += ")";
  }
  if (std::optional<std::string> after = h.get("Retry-After")) {
    message += "; try again after " + *after +
               (after->find_first_not_of("0123456789") == std::string::npos ? " seconds" : "");
  }
  if (host == "docker.io") {
    message +=
        "; Docker Hub gives anonymous pulls the lowest limit: log in (docker login) for "
        "a higher one, or use a mirror (" +
        credential_note + ")";
  }
  return message;
}

// Sends a blob's body to a BlobWriter, resuming where it stopped. Never more than the blob's
// declared size reaches the writer: the first byte past it ends the transfer (whatever the
// framing: a Content-Length, chunks without end), so a registry that keeps sending cannot fill
// the disk, and the partial file never holds more than the blob.
class WriterSink final : public ResumableSink {
 public:
  // `source` names who sends the body in messages ("registry HOST", "URL").
  WriterSink(store::BlobWriter& writer, const RegistryClient::Progress& progress, uint64_t size,
             std::string source)
      : writer_(writer), progress_(progress), size_(size), source_(std::move(source)) {}

  [[nodiscard]] uint64_t offset() const override { return writer_.offset(); }

  Result<void> begin(int status, const Headers& headers) override {
    if (status == 206) {
      // "bytes START-END/TOTAL": the server must continue exactly where we are.
      std::string range = headers.get("Content-Range").value_or("");
      uint64_t start = 0;
      size_t i = range.find_first_of("0123456789");
      bool ok = range.starts_with("bytes ") && i != std::string::npos;
      for (; ok && i < range.size() && range[i] >= '0' && range[i] <= '9'; ++i)
        start = start * 10 + static_cast<uint64_t>(range[i] - '0');
      if (!ok || start != writer_.offset())
        return make_error(EIO, "the registry resumed at a different offset (Content-Range \"" +
                                   range + "\", expected " + std::to_string(writer_.offset()) +
                                   ")");
    } else if (writer_.offset() > 0) {
      // The server ignored Range and sends the whole blob again.
      IMAGEFS_CHECK(writer_.restart());
    }
    // A declared length past the blob's end is refused before its first byte.
    if (std::optional<std::string> length = headers.get("Content-Length")) {
      uint64_t declared = 0;
      bool number = !length->empty() && length->size() < 19 &&
                    length->find_first_not_of("0123456789") == std::string::npos;
      if (number) declared = std::stoull(*length);
      uint64_t left = size_ - std::min(size_, writer_.offset());
      if (number && declared > left)
        return make_error(
            EIO, source_ + " sent more than the " + std::to_string(size_) +
                     " bytes its manifest declares (Content-Length " + *length +
                     (writer_.offset() > 0 ? " from byte " + std::to_string(writer_.offset())
                                           : std::string()) +
                     ")");
    }
    if (progress_) progress_(writer_.offset());
    return {};
  }

  Result<void> write(std::span<const uint8_t> bytes) override {
    uint64_t room = size_ - std::min(size_, writer_.offset());
    bool over = bytes.size() > room;
    if (over) bytes = bytes.first(static_cast<size_t>(room));
    if (!bytes.empty()) IMAGEFS_CHECK(writer_.write(bytes));
    if (progress_ && !bytes.empty()) progress_(writer_.offset());
    if (over)
      return make_error(EIO, source_ + " sent more than the " + std::to_string(size_) +
                                 " bytes its manifest declares");
    return {};
  }

 private:
  store::BlobWriter& writer_;
  const RegistryClient::Progress& progress_;
  uint64_t size_;
  std::string source_;
};

}  // namespace

std::string pull_scope(const Reference& ref) { return "repository:" + ref.repository + ":pull"; }

RegistryClient::RegistryClient(std::shared_ptr<Transport> transport,
                               std::shared_ptr<const RegistryHosts> hosts)
    : transport_(std::move(transport)),
      hosts_(hosts ? std::move(hosts) : std::make_shared<const RegistryHosts>()) {}

namespace {

// Attempts at a mirror: one more after a 5xx or a dropped connection, then the next host.
constexpr unsigned kMirrorAttempts = 2;

// Errors of the store (not of the host): no other host can do better.
bool local_failure(const Error& error) {
  return error.code == ENOSPC || error.code == EDQUOT || error.code == EROFS;
}

// Collects what the hosts before the last said, for the last one's error.
class HostFailures {
 public:
  void add(const RegistryHost& host, const Error& error) {
    if (count_++ < 3) {
      notes_ += notes_.empty() ? "" : "; ";
      notes_ += host.name + ": " + error.message;
    }
  }
  Error finish(Error error) const {
    if (count_ == 0) return error;
    error.message += " (after " + std::to_string(count_) + (count_ == 1 ? " mirror" : " mirrors") +
                     " failed: " + notes_ + ")";
    return error;
  }
  // A note for the progress display / log when a host failed and the next is tried.
  static void tell(const Notice& notice, const RegistryHost& host, const std::string& subject,
                   const Error& error) {
    if (notice)
      notice(subject + ": " + host.name + " failed (" + error.message + "); trying the next host");
  }

 private:
  unsigned count_ = 0;
  std::string notes_;
};

RegistryRequest for_host(RegistryRequest request, bool last) {
  if (!last) request.max_attempts = kMirrorAttempts;
  return request;
}

}  // namespace

bool RegistryClient::resting(const RegistryHost& host) {
  MutexLock lock(resting_mu_);
  auto it = resting_.find(host.url());
  if (it == resting_.end()) return false;
  if (std::chrono::steady_clock::now() < it->second) return true;
  resting_.erase(it);
  return false;
}

void RegistryClient::rest(const RegistryHost& host) {
  MutexLock lock(resting_mu_);
  // Keys are configured hosts (hosts.toml, --mirror): a bounded set. The bound is a belt.
  if (resting_.size() >= 1024) resting_.clear();
  resting_[host.url()] = std::chrono::steady_clock::now() + kMirrorRest;
}

Result<Reply> RegistryClient::send_to(const RegistryHost& host, const RegistryRequest& request,
                                      bool last) {
  Result<Reply> sent = transport_->send(host, for_host(request, last));
  if (!sent.ok() && !last) rest(host);
  return sent;
}

template <typename T, typename Attempt>
Result<T> RegistryClient::first_that_serves(const std::vector<RegistryHost>& hosts,
                                            const std::string& subject, const Notice& notice,
                                            std::string* served_by, Attempt attempt) {
  HostFailures failures;
  for (size_t i = 0; i < hosts.size(); ++i) {
    const RegistryHost& host = hosts[i];
    const bool last = i + 1 == hosts.size();
    if (!last && resting(host)) continue;
    Result<T> got = attempt(host, last);
    if (got.ok()) {
      if (served_by != nullptr) *served_by = host.name;
      return got;
    }
    if (last) return failures.finish(got.error());
    HostFailures::tell(notice, host, subject, got.error());
    failures.add(host, got.error());
  }
  return make_error(EIO, subject + ": no host to ask");  // not reached: the upstream is last
}

Error RegistryClient::status_error(const Reference& ref, const std::string& host,
                                   const std::string& subject, const Reply& reply,
                                   bool is_manifest) {
  const std::string& repo = ref.repository;
  int status = reply.response.status;
  RegistryErrorBody body = registry_error(reply.response.body);
  std::string said =
      body.message.empty() ? std::string() : " (registry says: " + body.message + ")";
  Error error;
  switch (status) {
    case 401: {
      std::string note = transport_->auth().credential_note(host);
      error = make_error(EACCES, "unauthorized: access to repository " + repo + " on " + host +
                                     " was denied; it may not exist, or may need credentials (" +
                                     note + ")");
      break;
    }
    case 403:
      error = make_error(
          EACCES, "denied: access to repository " + repo + " on " + host + " is forbidden" + said);
      break;
    case 404:
      if (body.code == "NAME_UNKNOWN") {
        error =
            make_error(ENOENT, "repository unknown: repository " + repo + " not found on " + host);
      } else if (is_manifest) {
        error = make_error(ENOENT, "manifest unknown: " + subject + " not found in repository " +
                                       repo + " on " + host);
      } else {
        error = make_error(EIO, "blob unknown: " + subject + " not found in repository " + repo +
                                    " on " + host + " (the image is incomplete on the registry)");
      }
      break;
    case 429:
      error = make_error(EIO,
                         rate_limit_message(host, reply, transport_->auth().credential_note(host)));
      break;
    default: {
      std::string tries = reply.attempts > 1
                              ? " (gave up after " + std::to_string(reply.attempts) + " attempts)"
                              : std::string();
      if (status >= 500) {
        error = make_error(EIO, "registry " + host + " failed with HTTP " + std::to_string(status) +
                                    " for " + subject + " in repository " + repo + said + tries);
      } else {
        error = make_error(EIO, "registry " + host + " answered HTTP " + std::to_string(status) +
                                    " for " + subject + " in repository " + repo + said);
      }
    }
  }
  error.message = transport_->auth().redact(error.message);
  return error;
}

Result<std::optional<ManifestHead>> RegistryClient::head_manifest(const Reference& ref,
                                                                  const std::string& tag_or_digest,
                                                                  const Notice& notice,
                                                                  std::string* served_by) {
  RegistryRequest request;
  request.method = "HEAD";
  request.path = "/v2/" + ref.repository + "/manifests/" + tag_or_digest;
  request.scope = pull_scope(ref);
  request.headers.add("Accept", media_type::manifest_accept());
  request.notice = notice;
  std::string subject =
      tag_or_digest.starts_with("sha256:") ? "manifest " + tag_or_digest : "tag " + tag_or_digest;
  Capability need = tag_or_digest.starts_with("sha256:") ? Capability::pull : Capability::resolve;
  std::vector<RegistryHost> hosts = hosts_->hosts_for(ref.domain, need);
  HostFailures failures;
  for (size_t i = 0; i < hosts.size(); ++i) {
    const RegistryHost& host = hosts[i];
    bool last = i + 1 == hosts.size();
    if (!last && resting(host)) continue;
    Result<Reply> sent = transport_->send(host, for_host(request, last));
    if (!sent.ok()) {
      if (last) return failures.finish(sent.error());
      rest(host);
      HostFailures::tell(notice, host, subject, sent.error());
      failures.add(host, sent.error());
      continue;
    }
    Reply& reply = sent.value();
    int status = reply.response.status;
    if (!last && status != 200) {
      Error error = status_error(ref, host.name, subject, reply, true);
      HostFailures::tell(notice, host, subject, error);
      failures.add(host, error);
      continue;
    }
    // 401 and 429 explain themselves in headers (and 401 went through the auth rounds already).
    if (status >= 400 && status < 500 && status != 401 && status != 429)
      return std::optional<ManifestHead>();
    if (status != 200) return failures.finish(status_error(ref, host.name, subject, reply, true));
    ManifestHead head;
    head.media_type = reply.response.headers.get("Content-Type").value_or("");
    if (std::optional<std::string> d = reply.response.headers.get("Docker-Content-Digest")) {
      if (Result<store::Digest> parsed = store::Digest::parse(*d); parsed.ok())
        head.digest = std::move(parsed).value();
    }
    if (std::optional<std::string> len = reply.response.headers.get("Content-Length")) {
      if (!len->empty() && len->size() < 19 &&
          len->find_first_not_of("0123456789") == std::string::npos)
        head.size = std::stoull(*len);
    }
    if (served_by != nullptr) *served_by = host.name;
    return std::optional<ManifestHead>(std::move(head));
  }
  return std::optional<ManifestHead>();  // not reached: the list is never empty
}

Result<FetchedManifest> RegistryClient::get_manifest(const Reference& ref,
                                                     const std::string& tag_or_digest,
                                                     const std::optional<store::Digest>& expected,
                                                     const Notice& notice, std::string* served_by) {
  RegistryRequest request;
  request.path = "/v2/" + ref.repository + "/manifests/" + tag_or_digest;
  request.scope = pull_scope(ref);
  request.headers.add("Accept", media_type::manifest_accept());
  request.max_body_bytes = kMaxManifestBytes;
  request.notice = notice;
  std::string subject =
      tag_or_digest.starts_with("sha256:") ? "manifest " + tag_or_digest : "tag " + tag_or_digest;
  std::string where = subject + " in " + ref.name();
  Capability need = tag_or_digest.starts_with("sha256:") ? Capability::pull : Capability::resolve;
  std::vector<RegistryHost> hosts = hosts_->hosts_for(ref.domain, need);
  return first_that_serves<FetchedManifest>(
      hosts, subject, notice, served_by,
      [&](const RegistryHost& host, bool last) -> Result<FetchedManifest> {
        Result<Reply> sent = send_to(host, request, last);
        if (!sent.ok()) return sent.error();
        Reply& reply = sent.value();
        if (reply.response.status != 200) return status_error(ref, host.name, subject, reply, true);
        std::string content_type = reply.response.headers.get("Content-Type").value_or("");
        Result<std::string> type = manifest_media_type(reply.response.body, content_type);
        if (!type.ok()) return type.error().context(where);
        store::Digest actual = store::Digest::of(reply.response.body);
        if (expected) {
          if (actual != *expected)
            return make_error(EIO, where + ": registry " + host.name +
                                       " served bytes with digest " + actual.str() +
                                       " instead of " + expected->str());
        } else if (std::optional<std::string> header =
                       reply.response.headers.get("Docker-Content-Digest")) {
          Result<store::Digest> claimed = store::Digest::parse(*header);
          if (claimed.ok() && claimed.value() != actual)
            return make_error(EIO, where + ": registry " + host.name +
                                       " served bytes with digest " + actual.str() +
                                       " but said they were " + claimed->str());
        }
        return FetchedManifest{std::move(reply.response.body), std::move(type).value(),
                               std::move(actual)};
      });
}

Result<std::string> RegistryClient::get_blob(const Reference& ref, const Descriptor& blob,
                                             const std::string& what, const Notice& notice,
                                             std::string* served_by) {
  std::string subject = what + " " + blob.digest.str();
  if (blob.size > kMaxConfigBytes)
    return make_error(EIO, subject + " in " + ref.name() + " is " + std::to_string(blob.size) +
                               " bytes, more than imagefs reads into memory");
  RegistryRequest request;
  request.path = "/v2/" + ref.repository + "/blobs/" + blob.digest.str();
  request.scope = pull_scope(ref);
  request.max_body_bytes = blob.size;
  request.notice = notice;
  std::vector<RegistryHost> hosts = hosts_->hosts_for(ref.domain, Capability::pull);
  return first_that_serves<std::string>(
      hosts, subject, notice, served_by,
      [&](const RegistryHost& host, bool last) -> Result<std::string> {
        Result<Reply> sent = send_to(host, request, last);
        if (!sent.ok()) return sent.error();
        Reply& reply = sent.value();
        if (reply.response.status != 200)
          return status_error(ref, host.name, subject, reply, false);
        store::Digest actual = store::Digest::of(reply.response.body);
        if (actual != blob.digest || reply.response.body.size() != blob.size)
          return make_error(EIO, subject + " in " + ref.name() + ": registry " + host.name +
                                     " served " + std::to_string(reply.response.body.size()) +
                                     " bytes with digest " + actual.str());
        return std::move(reply.response.body);
      });
}

Result<void> RegistryClient::fetch_blob_from(const RegistryHost& host, const Reference& ref,
                                             const Descriptor& blob, store::BlobWriter& writer,
                                             const std::string& subject, const Progress& progress,
                                             const Notice& notice, bool last) {
  RegistryRequest request;
  request.path = "/v2/" + ref.repository + "/blobs/" + blob.digest.str();
  request.scope = pull_scope(ref);
  request.notice = notice;
  WriterSink sink(writer, progress, blob.size, "registry " + host.name);
  Result<Reply> reply = transport_->send(host, for_host(request, last), &sink);
  if (!reply.ok()) return reply.error().context(subject + " from " + ref.name());
  int status = reply->response.status;
  // A resume asked for the bytes after the last one (the connection dropped right at the end).
  bool complete = status == 416 && writer.offset() == blob.size;
  if (status != 200 && status != 206 && !complete)
    return status_error(ref, host.name, subject, *reply, false);
  Result<void> committed = writer.commit(blob.size);
  if (!committed.ok()) {
    std::string where = subject + " from " + ref.name();
    if (!host.implicit) where += " via " + host.name;
    return committed.error().context(where);
  }
  return {};
}

Result<void> RegistryClient::fetch_blob(const Reference& ref, const Descriptor& blob,
                                        store::BlobWriter& writer, const std::string& what,
                                        const Progress& progress, const Notice& notice,
                                        std::string* served_by) {
  // A writer we do not own: wrapped without ownership, never reopened.
  struct Borrowed final : store::BlobWriter {
    explicit Borrowed(store::BlobWriter& w) : w_(w) {}
    [[nodiscard]] bool done() const override { return w_.done(); }
    [[nodiscard]] uint64_t offset() const override { return w_.offset(); }
    Result<void> write(std::span<const uint8_t> bytes) override { return w_.write(bytes); }
    Result<void> restart() override { return w_.restart(); }
    Result<void> commit(std::optional<uint64_t> size) override { return w_.commit(size); }
    store::BlobWriter& w_;
  };
  std::unique_ptr<store::BlobWriter> borrowed = std::make_unique<Borrowed>(writer);
  return fetch_blob(ref, blob, borrowed, WriterSource(), what, progress, notice, served_by);
}

Result<void> RegistryClient::fetch_blob(const Reference& ref, const Descriptor& blob,
                                        std::unique_ptr<store::BlobWriter>& writer,
                                        const WriterSource& reopen, const std::string& what,
                                        const Progress& progress, const Notice& notice,
                                        std::string* served_by) {
  if (writer->done()) return {};
  if (media_type::is_foreign_layer(blob.media_type))
    return fetch_foreign(ref, blob, *writer, what, progress, notice);
  std::string subject = what + " " + blob.digest.str();
  // All there already (a partial left complete): verify it without asking for bytes past the end.
  if (writer->offset() >= blob.size) {
    Result<void> committed = writer->commit(blob.size);
    if (!committed.ok()) return committed.error().context(subject + " (partial download)");
    return {};
  }
  std::vector<RegistryHost> hosts = hosts_->hosts_for(ref.domain, Capability::pull);
  HostFailures failures;
  for (size_t i = 0; i < hosts.size(); ++i) {
    const RegistryHost& host = hosts[i];
    bool last = i + 1 == hosts.size();
    if (!last && resting(host)) continue;
    const uint64_t at_start = writer->offset();
    Result<void> r = fetch_blob_from(host, ref, blob, *writer, subject, progress, notice, last);
    if (r.ok()) {
      if (served_by != nullptr) *served_by = host.name;
      return {};
    }
    if (last || local_failure(r.error())) return failures.finish(r.error());
    HostFailures::tell(notice, host, subject, r.error());
    failures.add(host, r.error());
    // The bytes of a host that failed are not trusted: the next host starts from 0 (a partial
    // of an earlier pull that this host never added to is kept). A writer whose commit refused
    // its bytes is spent (its offset back at 0): a new one is opened (the old one closed first,
    // since it holds the blob's lock).
    if (writer->offset() == at_start && at_start > 0) continue;
    Result<void> restarted = writer->restart();
    if (!restarted.ok()) {
      if (!reopen) return failures.finish(r.error());
      writer.reset();
      Result<std::unique_ptr<store::BlobWriter>> next = reopen();
      if (!next.ok()) return failures.finish(next.error().context(subject));
      writer = std::move(next).value();
      if (writer->done()) return {};  // another process stored it meanwhile
      if (writer->offset() > 0) IMAGEFS_CHECK(writer->restart());
    }
  }
  return make_error(EIO, subject + ": no host to ask");  // not reached
}

Result<void> RegistryClient::fetch_foreign(const Reference& ref, const Descriptor& blob,
                                           store::BlobWriter& writer, const std::string& what,
                                           const Progress& progress, const Notice& notice) {
  std::string subject = what + " " + blob.digest.str();
  if (blob.urls.empty())
    return make_error(EIO, subject + " of " + ref.name() + " is non-distributable (" +
                               blob.media_type +
                               ") and its manifest lists no URLs to download it from");
  if (writer.offset() >= blob.size) {
    Result<void> committed = writer.commit(blob.size);
    if (!committed.ok()) return committed.error().context(subject + " (partial download)");
    return {};
  }
  Error last = make_error(EIO, "no usable URL");
  for (const std::string& url : blob.urls) {
    WriterSink sink(writer, progress, blob.size, url);
    Result<Reply> reply = transport_->get_url(url, &sink, notice);
    if (!reply.ok()) {
      last = reply.error();
      if (writer.offset() < blob.size) continue;
      // It sent more than the blob: refused as from a registry (the partial holds the first
      // blob-size bytes; the next pull verifies them and commits or discards them).
      std::string where = subject;
      where.append(" from ").append(url);
      return last.context(where);
    }
    if (reply->response.status != 200 && reply->response.status != 206) {
      last = make_error(EIO, url + " answered HTTP " + std::to_string(reply->response.status));
      continue;
    }
    // A mismatch here is final: the writer has discarded the bytes and is spent.
    Result<void> committed = writer.commit(blob.size);
    if (!committed.ok()) {
      std::string where = subject;
      where.append(" from ").append(url);
      return committed.error().context(where);
    }
    return {};
  }
  return last.context("non-distributable " + subject + " of " + ref.name() + " (from its URLs)");
}

}  // namespace imagefs::registry
