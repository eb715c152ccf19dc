// Pulling an image into the store: resolve a reference to a platform-specific manifest and its
// config (cheap: what a directory lookup needs), and fetch its layers (what rootfs and archives
// need), separately or together. Every blob is checked against its digest before it is kept.
#pragma once

#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "common/result.h"
#include "registry/clock.h"
#include "registry/http.h"
#include "registry/manifest.h"
#include "registry/options.h"
#include "registry/platform.h"
#include "registry/progress.h"
#include "registry/reference.h"
#include "store/blob_store.h"
#include "store/catalog.h"

namespace imagefs::registry {

class RegistryClient;

// How a pull treats the blobs the store holds already.
enum class StoredBlobs {
  trust,   // a stored layer is used as it is (manifests and configs are hashed as they are read)
  verify,  // every stored layer is hashed too (`imagefs pull`), and a bad one fetched again
};

// A blob whose stored copy did not match its digest and that a pull or repair() replaced with
// bytes fetched again from the registry (what was derived from it is removed: store/derived.h).
struct RepairedBlob {
  store::Digest digest;
  std::string what;  // "manifest", "index", "config", "layer 2 of 3"
};

struct ResolvedImage {
  Reference reference;                 // what was asked for
  Platform platform;                   // the platform asked for, normalized
  store::RefRecord ref;                // as written to the catalog
  store::ImageRecord image;            // as written to the catalog
  std::vector<RepairedBlob> repaired;  // bad stored copies fetched again, if any
};

// Thread-safe: any number of resolves and fetches may run at once (the daemon serves many
// lookups in parallel). Holds no lock while talking to a registry.
class Puller {
 public:
  // The real thing: libcurl, docker's config.json (options.docker_config), the system clock.
  // Errors: an invalid options.platform (EINVAL), a malformed docker config (EINVAL).
  static Result<std::unique_ptr<Puller>> create(std::shared_ptr<store::BlobStore> blobs,
                                                std::shared_ptr<store::Catalog> catalog,
                                                const RegistryOptions& options);
  // The same with the HTTP and clock seams supplied (unit tests).
  static Result<std::unique_ptr<Puller>> create(std::shared_ptr<store::BlobStore> blobs,
                                                std::shared_ptr<store::Catalog> catalog,
                                                const RegistryOptions& options,
                                                std::shared_ptr<Http> http,
                                                std::shared_ptr<Clock> clock);
  ~Puller();
  Puller(const Puller&) = delete;
  Puller& operator=(const Puller&) = delete;

  // options.platform, or the host's.
  [[nodiscard]] const Platform& default_platform() const { return platform_; }

  // Resolves `reference` for `platform` to one image manifest, and stores the index (if any),
  // the manifest and the config as served. Writes the ImageRecord and the RefRecord to the
  // catalog. Downloads no layer. A tag is always asked of the registry (a HEAD; the manifest
  // is downloaded only if the store lacks it); a digest reference whose blobs are all in the
  // store needs no network at all.
  // Errors: ENOENT unknown repository, tag or digest, or no manifest for the platform (listing
  // those the image has); EACCES denied; EIO unreachable, TLS, malformed or unsupported
  // manifests, digest mismatches, not a container image.
  Result<ResolvedImage> resolve(const Reference& reference, const Platform& platform,
                                ProgressSink* progress = nullptr);
  Result<ResolvedImage> resolve(const Reference& reference, ProgressSink* progress = nullptr) {
    return resolve(reference, platform_, progress);
  }

  // Downloads every layer of `image` that the store lacks, from `source`'s registry and
  // repository, up to options.max_parallel at a time, each streamed into the store with its
  // SHA-256 checked on the way and resumed after a dropped connection (and, through the store's
  // partial files, after a crash). On the first failure no new layer is started; those under
  // way finish. Returns the first error, naming the layer ("layer 2 of 5 sha256:...").
  Result<void> fetch_layers(const Reference& source, const store::ImageRecord& image,
                            ProgressSink* progress = nullptr);

  // resolve() then fetch_layers(). With StoredBlobs::verify every layer the store holds is hashed
  // first (progress: layer_checking), and one that does not match its digest is fetched again
  // and replaced (ResolvedImage::repaired), with the products derived from it removed. A stored
  // manifest, index or config that does not match is fetched again whatever `stored` says (they
  // are hashed whenever they are read).
  Result<ResolvedImage> pull(const Reference& reference, const Platform& platform,
                             ProgressSink* progress = nullptr,
                             StoredBlobs stored = StoredBlobs::trust);
  Result<ResolvedImage> pull(const Reference& reference, ProgressSink* progress = nullptr,
                             StoredBlobs stored = StoredBlobs::trust) {
    return pull(reference, platform_, progress, stored);
  }

  // For `imagefs verify --repair`: fetches again from `source`'s repository each blob of `bad`
  // that `image` uses (its manifest, its config, a layer, or the index `source` was resolved
  // through) and whose stored copy does not match its digest, replacing it atomically
  // (BlobStore::open_repair_writer), and removes what was derived from each. Returns those
  // replaced (a copy found good again, repaired meanwhile, is not). Errors name the blob; a blob
  // the registry no longer has is ENOENT.
  Result<std::vector<RepairedBlob>> repair(const Reference& source, const store::ImageRecord& image,
                                           const std::set<store::Digest>& bad,
                                           ProgressSink* progress = nullptr);

 private:
  Puller(std::shared_ptr<store::BlobStore> blobs, std::shared_ptr<store::Catalog> catalog,
         const RegistryOptions& options, Platform platform, std::shared_ptr<Clock> clock,
         std::shared_ptr<RegistryClient> client);
  struct Blob;
  Result<Blob> manifest_blob(const Reference& reference, const store::Digest& digest,
                             const std::string& what, ProgressSink* progress,
                             std::vector<RepairedBlob>* repaired);
  Result<std::string> config_blob(const Reference& reference, const Descriptor& config,
                                  ProgressSink* progress, std::vector<RepairedBlob>* repaired);
  Result<ResolvedImage> resolve_unscrubbed(const Reference& reference, const Platform& platform,
                                           ProgressSink* progress);
  // `only`: the layers to look at (all when null); `repaired`: where replaced layers are listed.
  Result<void> fetch_unscrubbed(const Reference& source, const store::ImageRecord& image,
                                ProgressSink* progress, StoredBlobs stored,
                                const std::set<store::Digest>* only,
                                std::vector<RepairedBlob>* repaired);
  Error scrub(Error error) const;

  std::shared_ptr<store::BlobStore> blobs_;
  std::shared_ptr<store::Catalog> catalog_;
  RegistryOptions options_;
  Platform platform_;
  std::shared_ptr<Clock> clock_;
  std::shared_ptr<RegistryClient> client_;
};

}  // namespace imagefs::registry
