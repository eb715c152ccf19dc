// Opening an image for reading, in one place for every command and the daemon: reference ->
// manifest -> lease -> record -> layers -> tree. No FUSE here (nor anything of cli/): `imagefs
// build` and `export` use it directly, the daemon (fs/images.cpp) around its own single-flight.
//
// The order is the contract that keeps gc away: the image lease is taken on the manifest whose
// record is then read, so gc cannot remove the image between the two; when the registry's answer
// moves a tag to another manifest, the lease moves with it (a lease on the old image would leave
// the new one, whose layers are being fetched, to gc).
#pragma once

#include <memory>

#include "common/result.h"
#include "overlay/layer_index.h"
#include "overlay/tree.h"
#include "registry/platform.h"
#include "registry/progress.h"
#include "registry/puller.h"
#include "registry/reference.h"
#include "store/blob_store.h"
#include "store/catalog.h"
#include "store/digest.h"
#include "store/lease.h"

namespace imagefs::fs {

// An image open for reading: its catalog record, and the image lease that keeps gc from removing
// it (or its blobs) while this lives. Movable.
struct LeasedImage {
  store::ImageRecord record;
  store::Lease lease;
};

// Where a tag's manifest comes from.
enum class Resolve {
  // A tag the catalog has already resolved for the platform, whose config is in the store, is
  // used as it is, without the registry (as `docker run` uses a local image).
  stored,
  // The registry is asked (`--pull`; and every tag the store does not know).
  registry,
};

// Thread-safe (its parts are), holds no lock of its own: callers that must open an image once
// however many threads ask (the daemon) keep their own single-flight around it.
class ImageOpener {
 public:
  ImageOpener(std::shared_ptr<store::BlobStore> blobs, std::shared_ptr<store::Catalog> catalog,
              std::shared_ptr<registry::Puller> puller,
              std::shared_ptr<overlay::LayerCache> layers);

  // reference -> manifest -> lease -> record, for `platform`. With Resolve::stored, a tag the
  // catalog knows needs no network; otherwise (and always for a digest reference, which needs no
  // network once its blobs are stored) Puller::resolve() stores the manifest and config, not the
  // layers (tree() fetches those). Marks the image used (for gc's order) when its last use is
  // more than a minute old. Errors: those of Puller::resolve(), of the lease and the catalog; EIO
  // when gc removes the image twice in a row while it is being opened.
  Result<LeasedImage> open(const registry::Reference& reference, const registry::Platform& platform,
                           Resolve resolve, registry::ProgressSink* progress = nullptr);

  // manifest -> lease -> record, for a manifest the caller resolved (the daemon keeps its own tag
  // cache). EIO when the catalog has no record of it (gc removed it after it was resolved: resolve
  // again). Marks it used as open() does.
  Result<LeasedImage> lease(const store::Digest& manifest);

  // The layers of `image` that the store lacks, downloaded from `source`'s repository (progress:
  // per layer, as Puller::fetch_layers() reports). Does nothing when every layer is stored.
  // Errors: those of Puller::fetch_layers().
  Result<void> fetch_layers(const store::ImageRecord& image, const registry::Reference& source,
                            registry::ProgressSink* progress = nullptr);
  // Whether every layer of `image` is in the store (fetch_layers() would not download).
  [[nodiscard]] bool has_layers(const store::ImageRecord& image) const;

  // Ingests the layers (LayerCache: once per store) and opens the merged tree. Every layer must
  // be stored (fetch_layers()). Every path to an image's contents (rootfs/, export, --tar,
  // archives, build) comes through here, so this is where the layers are checked against the
  // image config's rootfs.diff_ids: as many diff_ids as layers, and each layer's uncompressed
  // stream hashing to its own (EIO naming the layer, its digest, the expected and the actual
  // diff_id, as docker and umoci refuse such an image).
  // A layer blob the ingest finds rotten (EUCLEAN: its bytes no longer hash to its digest; the
  // layer cache has removed it) is fetched again once, from `source` or else from the references
  // the catalog has for the image, and read again; what happened goes to `progress->message()`.
  // Without a registry that serves it, the EUCLEAN error stands. Errors: those of the layer cache,
  // of Puller::fetch_layers() and of Tree::open().
  Result<std::shared_ptr<overlay::Tree>> open_tree(const store::ImageRecord& image,
                                                   const registry::Reference* source = nullptr,
                                                   registry::ProgressSink* progress = nullptr);

  // fetch_layers() then open_tree().
  Result<std::shared_ptr<overlay::Tree>> tree(const store::ImageRecord& image,
                                              const registry::Reference& source,
                                              registry::ProgressSink* progress = nullptr);

  [[nodiscard]] const std::shared_ptr<store::BlobStore>& blobs() const { return blobs_; }
  [[nodiscard]] const std::shared_ptr<store::Catalog>& catalog() const { return catalog_; }
  [[nodiscard]] registry::Puller& puller() const { return *puller_; }

 private:
  // `got`, the layer cache's answer for layer `i`; when that says the blob is rotten (the cache
  // removed it), the blob fetched once more and the cache's new answer.
  Result<std::shared_ptr<const overlay::LayerIndex>> layer(
      const store::ImageRecord& image, size_t i,
      Result<std::shared_ptr<const overlay::LayerIndex>> got, const registry::Reference* source,
      registry::ProgressSink* progress);
  // Lease on `manifest`, then its record; nullopt (and no lease) when the catalog has none.
  Result<std::optional<LeasedImage>> lease_if_recorded(const store::Digest& manifest);
  void mark_used(const store::ImageRecord& image);

  std::shared_ptr<store::BlobStore> blobs_;
  std::shared_ptr<store::Catalog> catalog_;
  std::shared_ptr<registry::Puller> puller_;
  std::shared_ptr<overlay::LayerCache> layers_;
};

}  // namespace imagefs::fs
