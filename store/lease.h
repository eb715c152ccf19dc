// Leases: what keeps gc (store/gc.h) away from the images and blobs that a process is using.
//
// A lease is a flock on a file under ROOT/leases/, so it lasts exactly as long as its holder: the
// kernel drops it when the process exits or is killed, and no stale state is left to clean up.
//  - Lease::image(), shared, on ROOT/leases/<manifest hex>.lock: held by whatever reads an
//    image's blobs (a mount serving it, `imagefs build`). gc never removes an image with a holder.
//  - Lease::pull(), shared, on ROOT/leases/pull.lock: held by a pull from before its first blob
//    is written until its image and refs are in the catalog. gc holds it exclusively, so gc and
//    pulls never overlap; otherwise gc could remove a layer that a running pull had found present
//    (and skipped) because no image record referenced it yet.
// Exclusive holders (gc) remove the lock file before releasing it; store/file_util.h says why
// that is safe.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>

#include "common/result.h"
#include "store/digest.h"

namespace imagefs::store {

namespace detail {
class FileLock;
}

// One held lease; released on destruction. Movable, not copyable. Thread-compatible: any thread
// may take, hold and release its own leases (each is a separate open file, so leases conflict
// with each other inside one process exactly as across processes).
class Lease {
 public:
  // A shared lease on an image. Waits while gc is removing that image (briefly: gc holds it only
  // while it deletes the image's records and blobs). Then look the image up in the catalog: if
  // gc removed it just before, pull it again, under this lease. `store_root` is BlobStore::root().
  static Result<Lease> image(const std::filesystem::path& store_root, const Digest& manifest);
  // A shared lease for one pull. Waits while gc runs.
  static Result<Lease> pull(const std::filesystem::path& store_root);

  // For gc: an exclusive claim on an image, taken without waiting; nullopt while anyone holds an
  // image lease on it.
  static Result<std::optional<Lease>> try_image_exclusive(const std::filesystem::path& store_root,
                                                          const Digest& manifest);
  // For gc: waits until no pull holds a pull lease, and keeps new pulls waiting while held.
  static Result<Lease> pull_exclusive(const std::filesystem::path& store_root);

  Lease(Lease&& other) noexcept;
  Lease& operator=(Lease&& other) noexcept;
  ~Lease();

 private:
  explicit Lease(std::unique_ptr<detail::FileLock> lock);
  std::unique_ptr<detail::FileLock> lock_;
};

// True when some process (this one included) holds an image lease on `manifest`. Does not wait.
// When it cannot tell (the lease directory is unreadable), it answers true: the safe answer for gc.
[[nodiscard]] bool in_use(const std::filesystem::path& store_root, const Digest& manifest);

}  // namespace imagefs::store
