// The one sequence that opens an image: reference -> manifest -> lease -> record -> layers -> tree.
#include "fs/open_image.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <ctime>
#include <optional>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

#include "common/mutex.h"
#include "registry/manifest.h"

namespace imagefs::fs {

namespace {

// Last use is an fsynced catalog write: skipped when the record is at most this old (the unit
// `imagefs images` shows), so opening an image often costs no write.
constexpr int64_t kTouchInterval = 60;
// Layers of one image ingested at once (at most; no more than the machine has cores).
constexpr size_t kIngestThreads = 4;

void tell(registry::ProgressSink* progress, const std::string& line) {
  if (progress != nullptr) progress->message(line);
}

std::string layer_name(const store::ImageRecord& image, size_t i) {
  return "layer " + std::to_string(i + 1) + " of " + std::to_string(image.layers.size()) + " (" +
         image.layers[i].digest.str() + ")";
}

// The image config's rootfs.diff_ids, one per layer.
Result<std::vector<store::Digest>> diff_ids_of(const store::BlobStore& blobs,
                                               const store::ImageRecord& image) {
  auto bytes = blobs.read(image.config);
  if (!bytes.ok()) return bytes.error().context("the config of image " + image.manifest.str());
  auto config = registry::parse_image_config(*bytes);
  if (!config.ok()) return config.error().context("image " + image.manifest.str());
  if (config->diff_ids.size() != image.layers.size())
    return make_error(EIO, "image " + image.manifest.str() + ": its config lists " +
                               std::to_string(config->diff_ids.size()) +
                               " diff_ids in rootfs.diff_ids, but it has " +
                               std::to_string(image.layers.size()) +
                               " layers: refused, as docker and umoci refuse it");
  std::vector<store::Digest> out;
  out.reserve(config->diff_ids.size());
  for (size_t i = 0; i < config->diff_ids.size(); ++i) {
    auto d = store::Digest::parse(config->diff_ids[i]);
    if (!d.ok())
      return make_error(EIO, "image " + image.manifest.str() + ": rootfs.diff_ids[" +
                                 std::to_string(i) +
                                 "] is not a diff_id we can check: " + d.error().message);
    out.push_back(std::move(*d));
  }
  return out;
}

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

Result<std::shared_ptr<const overlay::LayerIndex>> ImageOpener::layer(
    const store::ImageRecord& image, size_t i,
    Result<std::shared_ptr<const overlay::LayerIndex>> got, const registry::Reference* source,
    registry::ProgressSink* progress) {
  if (got.ok() || got.error().code != EUCLEAN) return got;

  // The store's copy of the blob rotted, and the layer cache removed it: fetch it once more.
  overlay::IngestProgress notices{{}, [&](const std::string& line) { tell(progress, line); }};
  const store::LayerRecord& record = image.layers[i];
  const Error rotten = got.error();
  std::vector<registry::Reference> sources;
  if (source != nullptr) {
    sources.push_back(*source);
  } else if (auto refs = catalog_->refs(); refs.ok()) {
    for (const store::RefRecord& ref : *refs)
      if (ref.manifest == image.manifest)
        if (auto parsed = registry::parse_reference(ref.reference); parsed.ok())
          sources.push_back(std::move(*parsed));
  }
  if (sources.empty())
    return make_error(EUCLEAN, rotten.message + "; no reference of image " + image.manifest.str() +
                                   " is known to fetch it again from");
  tell(progress, rotten.message + ": fetching " + layer_name(image, i) + " again");
  Result<void> fetched = make_error(EUCLEAN, rotten.message);
  for (const registry::Reference& from : sources) {
    fetched = puller_->fetch_layers(from, image, progress);
    if (fetched.ok()) {
      tell(progress, layer_name(image, i) + " fetched again from " + from.familiar());
      break;
    }
  }
  if (!fetched.ok())
    return make_error(EUCLEAN,
                      rotten.message + "; fetching it again failed: " + fetched.error().message);
  return layers_->get(record, &notices);  // rotten again: that error stands
}

Result<std::shared_ptr<overlay::Tree>> ImageOpener::open_tree(const store::ImageRecord& image,
                                                              const registry::Reference* source,
                                                              registry::ProgressSink* progress) {
  IMAGEFS_TRY(diff_ids, diff_ids_of(*blobs_, image));
  const size_t n = image.layers.size();
  // Every layer through the layer cache at once, a few at a time: a layer not ingested yet costs
  // its decompression and hashing (CPU) and an fsync, and layers do not depend on each other, so
  // a new image's layers ingest side by side. Notices are told one at a time (a sink may assume
  // one caller). A rotten blob is fetched again afterwards, in layer order, one at a time, and
  // the error reported is the first layer's.
  std::vector<std::optional<Result<std::shared_ptr<const overlay::LayerIndex>>>> got(n);
  {
    Mutex tell_mu;
    std::atomic<size_t> next{0};
    auto work = [&] {
      overlay::IngestProgress notices{{}, [&](const std::string& line) {
                                        MutexLock lock(tell_mu);
                                        tell(progress, line);
                                      }};
      for (size_t i = next++; i < n; i = next++) got[i] = layers_->get(image.layers[i], &notices);
    };
    const size_t threads =
        std::min<size_t>({n, kIngestThreads, std::max(1U, std::thread::hardware_concurrency())});
    std::vector<std::jthread> pool;
    try {
      for (size_t t = 1; t < threads; ++t) pool.emplace_back(work);
    } catch (const std::system_error&) {
      // No more threads to be had: this one does the rest.
    }
    work();
  }  // the pool joined
  std::vector<std::shared_ptr<const overlay::LayerIndex>> layers;
  layers.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    IMAGEFS_TRY(index, layer(image, i, std::move(*got[i]), source, progress));
    std::optional<store::Digest> actual = index->diff_id();
    if (!actual || *actual != diff_ids[i])
      return make_error(EIO, "image " + image.manifest.str() + ": " + layer_name(image, i) +
                                 " does not match the image config: its uncompressed content " +
                                 "has diff_id " + (actual ? actual->str() : "(none)") +
                                 ", and rootfs.diff_ids[" + std::to_string(i) + "] says " +
                                 diff_ids[i].str());
    layers.push_back(std::move(index));
  }
  return overlay::Tree::open(std::move(layers));
}

Result<std::shared_ptr<overlay::Tree>> ImageOpener::tree(const store::ImageRecord& image,
                                                         const registry::Reference& source,
                                                         registry::ProgressSink* progress) {
  IMAGEFS_CHECK(fetch_layers(image, source, progress));
  return open_tree(image, &source, progress);
}

}  // namespace imagefs::fs
