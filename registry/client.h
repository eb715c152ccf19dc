// The distribution API (OCI distribution-spec) for one image at a time: manifests by tag or
// digest, blobs into memory or streamed into the store, each checked against its digest, and
// every failure put in plain words naming the registry, the repository and the reason.
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
#include "registry/hosts.h"
#include "registry/manifest.h"
#include "registry/reference.h"
#include "registry/transport.h"
#include "store/blob_store.h"
#include "store/digest.h"

namespace imagefs::registry {

struct ManifestHead {
  std::string media_type;               // from Content-Type; may be generic or empty
  std::optional<store::Digest> digest;  // Docker-Content-Digest, when sent (and sha256)
  std::optional<uint64_t> size;
};

struct FetchedManifest {
  std::string bytes;  // as served
  std::string media_type;
  store::Digest digest;  // of `bytes`, checked
};

// Every call goes to the hosts of the reference's registry (registry/hosts.h) in turn: mirrors
// with the capability needed, then the upstream. A host that fails (no connection, an HTTP error
// status, bytes that do not match their digest) hands the request to the next one; the last
// host's answer is the call's, its error noting the mirrors that failed before it. `served_by`,
// when given, is set to the name of the host that answered ("mirror.example:5000", or the
// registry's own name). A mirror that gave no answer at all to a manifest or config request
// (unreachable, timed out, TLS refused) is skipped for kMirrorRest, so that lookups do not each
// wait out a mirror that is down. Thread-safe.
class RegistryClient {
 public:
  explicit RegistryClient(std::shared_ptr<Transport> transport,
                          std::shared_ptr<const RegistryHosts> hosts = nullptr);

  // HEAD of a manifest (`ref.domain`, `ref.repository`; `tag_or_digest`): learns the digest a
  // tag points at without downloading it. nullopt when the registry answered with a 4xx other
  // than 401 and 429: a HEAD answer has no body to explain itself, so ask with get_manifest, whose
  // error says what is wrong. Errors as get_manifest's otherwise.
  Result<std::optional<ManifestHead>> head_manifest(const Reference& ref,
                                                    const std::string& tag_or_digest,
                                                    const Notice& notice = {},
                                                    std::string* served_by = nullptr);

  // GET of a manifest, with all four image types accepted. The bytes are checked against
  // `expected` if given, else against the Docker-Content-Digest header if sent. Schema 1 and
  // unknown media types are refused (EIO). Errors: ENOENT for an unknown repository, tag or
  // digest; EACCES when denied; EIO for everything else.
  Result<FetchedManifest> get_manifest(const Reference& ref, const std::string& tag_or_digest,
                                       const std::optional<store::Digest>& expected,
                                       const Notice& notice = {}, std::string* served_by = nullptr);

  // A small blob (a config) into memory, checked against its descriptor's digest and size.
  Result<std::string> get_blob(const Reference& ref, const Descriptor& blob,
                               const std::string& what, const Notice& notice = {},
                               std::string* served_by = nullptr);

  // Called with the bytes of the blob held so far (including resumed ones).
  using Progress = std::function<void(uint64_t bytes)>;

  // Streams a blob into `writer` (resuming at writer.offset()) and commits it: SHA-256 and size
  // are checked on the way and a mismatch keeps nothing (EIO naming both digests). Foreign
  // (non-distributable) layers come from their descriptor's urls; without urls they are refused.
  // `what` names the blob in messages ("layer 2 of 5").
  Result<void> fetch_blob(const Reference& ref, const Descriptor& blob, store::BlobWriter& writer,
                          const std::string& what, const Progress& progress,
                          const Notice& notice = {}, std::string* served_by = nullptr);

  // The same with a writer that can be opened again: a host whose bytes did not verify spends
  // its writer (the store discards them), and the next host gets a new one from `reopen` (the
  // old one is closed first: it holds the blob's lock). Without `reopen` such a failure is final.
  using WriterSource = std::function<Result<std::unique_ptr<store::BlobWriter>>()>;
  Result<void> fetch_blob(const Reference& ref, const Descriptor& blob,
                          std::unique_ptr<store::BlobWriter>& writer, const WriterSource& reopen,
                          const std::string& what, const Progress& progress,
                          const Notice& notice = {}, std::string* served_by = nullptr);

  Transport& transport() { return *transport_; }
  [[nodiscard]] const RegistryHosts& hosts() const { return *hosts_; }

 private:
  Error status_error(const Reference& ref, const std::string& host, const std::string& subject,
                     const Reply& reply, bool is_manifest);
  // One blob from one host into `writer` (committed on success).
  Result<void> fetch_blob_from(const RegistryHost& host, const Reference& ref,
                               const Descriptor& blob, store::BlobWriter& writer,
                               const std::string& subject, const Progress& progress,
                               const Notice& notice, bool last);
  Result<void> fetch_foreign(const Reference& ref, const Descriptor& blob,
                             store::BlobWriter& writer, const std::string& what,
                             const Progress& progress, const Notice& notice);

  // Each host in turn (a resting mirror skipped) until `attempt(host, last)` succeeds: its result,
  // the host named in `served_by`; else the last host's error with the mirrors' failures.
  template <typename T, typename Attempt>
  Result<T> first_that_serves(const std::vector<RegistryHost>& hosts, const std::string& subject,
                              const Notice& notice, std::string* served_by, Attempt attempt);
  // `request` to `host`; a mirror (not `last`) that gives no answer rests.
  Result<Reply> send_to(const RegistryHost& host, const RegistryRequest& request, bool last);

  // Mirrors that gave no answer, until when they are skipped (keyed by URL).
  bool resting(const RegistryHost& host) EXCLUDES(resting_mu_);
  void rest(const RegistryHost& host) EXCLUDES(resting_mu_);

  std::shared_ptr<Transport> transport_;
  std::shared_ptr<const RegistryHosts> hosts_;
  Mutex resting_mu_;
  std::map<std::string, std::chrono::steady_clock::time_point> resting_ GUARDED_BY(resting_mu_);
};

inline constexpr std::chrono::seconds kMirrorRest{30};

// The scope a pull needs: "repository:NAME:pull".
std::string pull_scope(const Reference& ref);

}  // namespace imagefs::registry
