// What the store holds on disk: every byte under its root by kind, counted as `du -sb ROOT`
// counts them, and each image's share of it. For `imagefs images`, `gc` and `status`.
//
// An image's share is what it uses: its blobs (manifest, config, layers, and the index a ref that
// names it was resolved through), what was derived from each (derived/<hex>/: a layer's index and
// data), and the shared files its archives use (plans and the segments they name, which only
// cpio/ can tell: the caller passes them as SharedUse). A file that several images use counts in
// the size of each, and in each one's `shared`; it counts once in the store's total.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <set>
#include <vector>

#include "common/result.h"
#include "store/blob_store.h"
#include "store/catalog.h"
#include "store/digest.h"

namespace imagefs::store {

// For each image (its manifest digest), the shared derived files (store/derived.h) its archives
// use: cpio::shared_files_by_image() says which. Paths as list_shared() gives them.
using SharedUse = std::map<Digest, std::set<std::filesystem::path>>;

// The files of `by_image` that an image in use (store/lease.h: a lease is held on it) needs:
// what gc must keep of a module's shared files.
[[nodiscard]] std::set<std::filesystem::path> files_in_use(const std::filesystem::path& store_root,
                                                           const SharedUse& by_image);

// Bytes under the store's root by kind: apparent sizes (st_size) of every file, directory and
// symlink, each once, as `du -sb` adds them up. The kinds count files; every directory counts in
// `other` (so an empty tmp/ is 0 B of partial downloads).
struct DiskUsage {
  uint64_t blobs = 0;     // files under blobs/
  uint64_t derived = 0;   // files under derived/: layer indexes and layer data
  uint64_t segments = 0;  // files under segments/ but segments/plans/: archive segments
  uint64_t plans = 0;     // files under segments/plans/: archive plans
  uint64_t partials = 0;  // files under tmp/: partial downloads
  uint64_t catalog = 0;   // catalog.lmdb and its lock file
  uint64_t other = 0;     // directories, locks/, leases/, mount.log, files not ours

  [[nodiscard]] uint64_t total() const {
    return blobs + derived + segments + plans + partials + catalog + other;
  }
};

// Walks the store's root. Files that vanish during the walk are left out; other errors (EACCES)
// name the path.
Result<DiskUsage> disk_usage(const std::filesystem::path& root);

struct ImageUsage {
  Digest manifest;
  uint64_t size = 0;    // everything the image uses (see above)
  uint64_t shared = 0;  // the part of `size` that another image uses too
};

struct StoreUsage {
  DiskUsage disk;
  std::vector<ImageUsage> images;  // every image record, by manifest digest
  uint64_t used_by_images = 0;     // bytes some image uses, each once (<= disk.total())
};

// The disk usage and each image's share. Bytes no image uses (partial downloads, the catalog,
// blobs and shared files of no image) are in `disk` only.
Result<StoreUsage> store_usage(const BlobStore& blobs, const Catalog& catalog,
                               const SharedUse& shared_use);

// Bytes of everything under `dir` (files, directories, symlinks; `dir` itself included), as
// `du -sb DIR`; 0 when it does not exist.
uint64_t tree_bytes(const std::filesystem::path& dir);

}  // namespace imagefs::store
