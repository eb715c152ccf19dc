// Leases as flocks on files under ROOT/leases/.
#include "store/lease.h"

#include "store/file_util.h"

namespace imagefs::store {

namespace fs = std::filesystem;
using detail::FileLock;
using detail::IfMissing;
using detail::LockMode;

namespace {

fs::path leases_dir(const fs::path& root) { return root / "leases"; }
fs::path image_lock(const fs::path& root, const Digest& manifest) {
  return leases_dir(root) / (std::string(manifest.hex()) + ".lock");
}
fs::path pull_lock(const fs::path& root) { return leases_dir(root) / "pull.lock"; }

Result<std::unique_ptr<FileLock>> wait_for(const fs::path& path, LockMode mode) {
  IMAGEFS_CHECK(detail::make_dirs(path.parent_path()));
  IMAGEFS_TRY(lock, FileLock::acquire(path, mode));
  return std::make_unique<FileLock>(std::move(lock));
}

}  // namespace

Lease::Lease(std::unique_ptr<FileLock> lock) : lock_(std::move(lock)) {}
Lease::Lease(Lease&& other) noexcept = default;
Lease& Lease::operator=(Lease&& other) noexcept = default;
Lease::~Lease() = default;

Result<Lease> Lease::image(const fs::path& store_root, const Digest& manifest) {
  IMAGEFS_TRY(lock, wait_for(image_lock(store_root, manifest), LockMode::shared));
  return Lease(std::move(lock));
}

Result<Lease> Lease::pull(const fs::path& store_root) {
  IMAGEFS_TRY(lock, wait_for(pull_lock(store_root), LockMode::shared));
  return Lease(std::move(lock));
}

Result<Lease> Lease::pull_exclusive(const fs::path& store_root) {
  IMAGEFS_TRY(lock, wait_for(pull_lock(store_root), LockMode::exclusive));
  return Lease(std::move(lock));
}

Result<std::optional<Lease>> Lease::try_image_exclusive(const fs::path& store_root,
                                                        const Digest& manifest) {
  fs::path path = image_lock(store_root, manifest);
  IMAGEFS_CHECK(detail::make_dirs(path.parent_path()));
  IMAGEFS_TRY(lock, FileLock::try_acquire(path, LockMode::exclusive, IfMissing::create));
  if (!lock) return std::optional<Lease>();
  return std::optional<Lease>(Lease(std::make_unique<FileLock>(std::move(*lock))));
}

bool in_use(const fs::path& store_root, const Digest& manifest) {
  // Without creating the file: every holder's file exists (holders check that after locking).
  auto lock =
      FileLock::try_acquire(image_lock(store_root, manifest), LockMode::exclusive, IfMissing::fail);
  if (!lock.ok()) return lock.error().code != ENOENT;
  return !lock->has_value();
}

}  // namespace imagefs::store
