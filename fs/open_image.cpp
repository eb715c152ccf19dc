// The one sequence that opens an image: reference -> manifest -> lease -> record -> layers -> tree.
#include "fs/open_image.h"

#include <ctime>
#include <optional>
#include <utility>
#include <vector>

namespace imagefs::fs {

namespace {

// Last use is an fsynced catalog write: skipped when the record is at most this old (the unit
// `imagefs images` shows), so opening an image often costs no write.
constexpr int64_t kTouchInterval = 60;

}  // namespace

ImageOpener::ImageOpener(std::shared_ptr<store::BlobStore> blobs,
                         std::shared_ptr<store::Catalog> catalog,
                         std::shared_ptr<registry::Puller> puller,
                         std::shared_ptr<overlay::LayerCache> layers)
    : blobs_(std::move(blobs)),
      catalog_(std::move(catalog)),
      puller_(std::move(puller)),
      layers_(std::move(layers)) {}

Result<std::optional<LeasedImage>> ImageOpener::lease_if_recorded(const store::Digest& manifest) {
  // The lease first, then the record: gc cannot remove the image between the two.
  IMAGEFS_TRY(lease, store::Lease::image(blobs_->root(), manifest));
  IMAGEFS_TRY(record, catalog_->image(manifest));
  if (!record) return std::optional<LeasedImage>();  // the lease goes with `lease`
  return std::optional<LeasedImage>(LeasedImage{std::move(*record), std::move(lease)});
}

void ImageOpener::mark_used(const store::ImageRecord& image) {
  const auto now = static_cast<int64_t>(::time(nullptr));
  if (image.last_used + kTouchInterval <= now) (void)catalog_->touch(image.manifest, now);
}

Result<LeasedImage> ImageOpener::open(const registry::Reference& reference,
                                      const registry::Platform& platform, Resolve resolve,
                                      registry::ProgressSink* progress) {
  if (resolve == Resolve::stored && reference.digest.empty()) {
    IMAGEFS_TRY(known, catalog_->ref(reference.str(), platform.str()));
    if (known) {
      IMAGEFS_TRY(leased, lease_if_recorded(known->manifest));
      // Without its config the image cannot be served (config.json, the default /init): ask the
      // registry, which stores it again. The lease on this manifest is dropped first: the
      // registry may name another one now.
      if (leased && blobs_->contains(leased->record.config)) {
        mark_used(leased->record);
        return std::move(*leased);
      }
    }
  }
  // Twice at most: gc may remove the image between the resolve, which records it, and the lease
  // (it was unused); the second resolve records it again.
  for (int attempt = 0;; ++attempt) {
    IMAGEFS_TRY(resolved, puller_->resolve(reference, platform, progress));
    IMAGEFS_TRY(leased, lease_if_recorded(resolved.image.manifest));
    if (leased) {
      mark_used(leased->record);
      return std::move(*leased);
    }
    if (attempt == 1)
      return make_error(EIO, "the image " + resolved.image.manifest.str() + " of " +
                                 reference.familiar() +
                                 " left the store while it was being opened (gc?): try again");
  }
}

Result<LeasedImage> ImageOpener::lease(const store::Digest& manifest) {
  IMAGEFS_TRY(leased, lease_if_recorded(manifest));
  if (!leased)
    return make_error(EIO, "the image " + manifest.str() +
                               " left the store while it was being opened (gc?); look again");
  mark_used(leased->record);
  return std::move(*leased);
}

bool ImageOpener::has_layers(const store::ImageRecord& image) const {
  for (const store::LayerRecord& layer : image.layers)
    if (!blobs_->contains(layer.digest)) return false;
  return true;
}

Result<void> ImageOpener::fetch_layers(const store::ImageRecord& image,
                                       const registry::Reference& source,
                                       registry::ProgressSink* progress) {
  if (has_layers(image)) return {};
  return puller_->fetch_layers(source, image, progress);
}

Result<std::shared_ptr<overlay::Tree>> ImageOpener::open_tree(const store::ImageRecord& image) {
  std::vector<std::shared_ptr<const overlay::LayerIndex>> layers;
  layers.reserve(image.layers.size());
  for (const store::LayerRecord& layer : image.layers) {
    IMAGEFS_TRY(index, layers_->get(layer));
    layers.push_back(std::move(index));
  }
  return overlay::Tree::open(std::move(layers));
}

Result<std::shared_ptr<overlay::Tree>> ImageOpener::tree(const store::ImageRecord& image,
                                                         const registry::Reference& source,
                                                         registry::ProgressSink* progress) {
  IMAGEFS_CHECK(fetch_layers(image, source, progress));
  return open_tree(image);
}

}  // namespace imagefs::fs
