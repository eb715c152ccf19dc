// Garbage collection of the store: keeps the cache under a size limit by removing the least
// recently used images, and removes what nothing references. Also `imagefs rm`.
//
// Rules (docs/STORE_FORMAT.md has them too):
//  - An image with an image lease (store/lease.h) is never removed; it is reported as in use.
//  - Removing an image removes its record, every ref to it, and then each of its blobs (manifest,
//  config, layers, and the index
//    of a removed ref) that no remaining image or ref references. Catalog first, blobs after: a
//    crash in between leaves unreferenced blobs, which the next gc removes, never a record that
//    names a missing blob.
//  - Both functions run under an exclusive pull lease: they wait for running pulls to finish, and
//    pulls wait for them.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "store/blob_store.h"
#include "store/catalog.h"
#include "store/derived.h"
#include "store/usage.h"

namespace imagefs::store {

// Partial downloads and unreferenced blobs younger than this are kept: most likely a pull will
// resume them.
inline constexpr int64_t kKeepUnreferencedSeconds = 24 * 60 * 60;
// Shared derived files (archive segments and plans, store/derived.h) unused for this long are
// removed whatever the store's size: an archive still wanted rebuilds them on demand.
inline constexpr int64_t kKeepUnusedSharedSeconds = 7 * 24 * 60 * 60;

struct GcReport {
  std::vector<RefRecord> refs_removed;
  std::vector<Digest> images_removed;         // manifest digests
  std::vector<BlobInfo> blobs_removed;        // blobs of removed images, and unreferenced blobs
  std::vector<PartialInfo> partials_removed;  // stale partial downloads
  std::vector<Digest> images_in_use;          // would have been removed, but a lease holds them
  std::vector<SharedFile> shared_removed;     // archive segments and plans
  // Bytes given back by each removed image: its blobs that no other image shares, what was
  // derived from them, and the shared files (segments, plans) only its archives used.
  std::map<Digest, uint64_t> image_bytes;
  // The whole store, as `du -sb ROOT` counts it (store/usage.h), before and after.
  uint64_t size_before = 0;  // in bytes
  uint64_t size_after = 0;
  DiskUsage disk_after;
  // Shared files kept over the limit because they were used within kMarkUsedInterval.
  uint64_t recent_shared_kept = 0;

  // Bytes given back: removed blobs (with their derived products), partials and shared files.
  [[nodiscard]] uint64_t bytes_freed() const;
};

// Brings the store's size, all of it as `du -sb ROOT` counts it (store/usage.h: blobs, their
// derived products, partial downloads, the shared derived files, the catalog, locks and logs),
// down to `max_size` bytes, if the images in use allow.
// In order:
//  1. partial downloads not being written and last written before now - kKeepUnreferencedSeconds;
//     temporary shared files that no builder holds;
//  2. images that no ref names (their last name was removed while they were in use, or a pull
//     died between recording the image and its ref);
//  3. blobs that no image or ref references, last written before now - kKeepUnreferencedSeconds;
//     shared files unused since now - kKeepUnusedSharedSeconds; the shared files of images that
//     are no longer in the catalog (`shared_use` names them) that no other image uses;
//  4. while the total exceeds max_size: first every partial download (no pull runs during gc, and
//     a pull that still wants one downloads it again), then images and shared files by least
//     recent use, oldest first
//     (an image's ImageRecord::last_used, a shared file's mtime; on a tie shared files first,
//     which cost CPU to remake where images cost a download; then pulled_at, then digest or
//     path, so the order is deterministic). Shared files used within kMarkUsedInterval stay:
//     their mtime cannot tell whether an archive being built needs them.
// Removing an image (2 and 4) removes with it the shared files its archives used
// (`shared_use[manifest]`: its plans and their segments, cpio::shared_files_by_image) that no
// remaining image uses, however recently they were used: they are derived from the image.
// Shared files whose path is in `keep_shared` are never removed, whatever their last use: the
// module that names them says which are in use (cpio::shared_files_in_use: the plans and segments
// of images a mount or a build holds a lease on).
// `now` is unix seconds (a parameter so that tests and the daemon's clock decide). Errors stop the
// collection where it is; what was done is consistent (see the rules above).
Result<GcReport> collect(BlobStore& blobs, Catalog& catalog, uint64_t max_size, int64_t now,
                         const std::set<std::filesystem::path>& keep_shared = {},
                         const SharedUse& shared_use = {});

// `imagefs rm REF`: removes the ref (for one platform, or for every platform when `platform` is
// empty), and each image that no ref names any more, with its unshared blobs and the shared files
// only its archives used (as collect() does), right away: the user asked for the space back, as
// with `docker rmi`. An image in use keeps its record and blobs (reported in images_in_use); gc
// removes it once no lease holds it. ENOENT if no such ref.
Result<GcReport> remove_reference(BlobStore& blobs, Catalog& catalog, std::string_view reference,
                                  std::string_view platform,
                                  const std::set<std::filesystem::path>& keep_shared = {},
                                  const SharedUse& shared_use = {});

// Removes what was derived from blobs found bad (`imagefs verify --repair`, a pull that repaired
// them): each blob's products (derived/<hex>/), and the shared files of `images` (the images that
// use a bad blob: their plans and the segments those name) that no other image in `shared_use`
// uses and `keep_shared` does not hold. A segment made from a bad layer is named only by plans of
// images that have that layer, so the segments shared with other images are sound and stay.
// Returns the shared files removed.
Result<std::vector<SharedFile>> remove_derived_of_bad(
    const BlobStore& blobs, const std::vector<Digest>& bad, const std::set<Digest>& images,
    const SharedUse& shared_use, const std::set<std::filesystem::path>& keep_shared);

}  // namespace imagefs::store
