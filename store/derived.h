// Products that other modules derive from a blob and keep beside it (a layer's index and data
// files): built in a temporary directory under a per-product lock, then renamed into place whole,
// so that no reader ever sees half a product and a crash leaves only a temporary directory that
// the next builder or gc removes. gc removes a blob's products with the blob.
//
// Layout (docs/STORE_FORMAT.md):
//   ROOT/derived/<hex>/<name>/       a complete product of blob <hex>; never changed in place
//   ROOT/derived/<hex>/<name>.tmp/   the product being built, by the holder of
//   ROOT/locks/derived-<hex>-<name>.lock (flock, exclusive)
// `name` is 1 to 32 of [a-z0-9_-] ("layer").
#pragma once

#include <filesystem>
#include <memory>
#include <string_view>
#include <vector>

#include "common/result.h"
#include "store/blob_store.h"
#include "store/digest.h"

namespace imagefs::store {

enum class IfPresent {
  keep,     // an existing product is used as it is
  replace,  // an existing product is removed and built again (it was found damaged)
};

// One build of one product; holds the product's lock until commit() or destruction. Not
// thread-safe; owned by one thread.
class DerivedBuild {
 public:
  // Waits for the product's lock (another thread or process may be building it; the kernel drops
  // the lock of a builder that dies). Then, if the product exists and `if_present` is keep, the
  // build is done(): nothing to build, dir() is the product. Otherwise dir() is a new, empty
  // temporary directory (a leftover of a crashed builder is removed first). EINVAL for a bad name.
  static Result<std::unique_ptr<DerivedBuild>> begin(const BlobStore& blobs, const Digest& blob,
                                                     std::string_view name, IfPresent if_present);
  virtual ~DerivedBuild() = default;  // without commit(): removes the temporary directory

  [[nodiscard]] virtual bool done() const = 0;
  // Where to write the product's files (the temporary directory), or the product once done().
  [[nodiscard]] virtual const std::filesystem::path& dir() const = 0;
  // The caller has written and fsynced its files in dir(). Fsyncs dir(), renames it to the
  // product's name, fsyncs the parent directory and releases the lock; the build is then done()
  // and dir() names the product.
  virtual Result<void> commit() = 0;
};

// Where the product `name` of `blob` is (whether or not it is there now).
std::filesystem::path derived_path(const BlobStore& blobs, const Digest& blob,
                                   std::string_view name);

// Removes everything derived from `blob`, except products being built right now (left for the
// next gc: their blob is gone, so remove_stale_derived takes them). For gc, before it removes the
// blob itself: a crash in between leaves a blob without products, never the reverse.
Result<void> remove_derived(const BlobStore& blobs, const Digest& blob);

// For gc: removes temporary directories that no builder holds, and every product of a blob that is
// no longer in the store; returns the directories removed. Names that do not fit the layout are
// left alone.
Result<std::vector<std::filesystem::path>> remove_stale_derived(const BlobStore& blobs);

}  // namespace imagefs::store
