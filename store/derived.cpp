// Derived products of blobs: the per-product lock, the temporary directory and the rename that
// publishes a product whole, and their removal by gc (docs/STORE_FORMAT.md).
#include "store/derived.h"

#include <sys/stat.h>
#include <unistd.h>

#include <optional>
#include <string>
#include <system_error>
#include <utility>

#include "common/errno_error.h"
#include "store/file_util.h"

namespace imagefs::store {

namespace fs = std::filesystem;
using detail::FileLock;

namespace {

constexpr std::string_view kTmpSuffix = ".tmp";
constexpr size_t kMaxName = 32;

bool valid_name(std::string_view name) {
  if (name.empty() || name.size() > kMaxName) return false;
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

fs::path lock_path(const BlobStore& blobs, std::string_view hex, std::string_view name) {
  return blobs.root() / "locks" /
         ("derived-" + std::string(hex) + "-" + std::string(name) + ".lock");
}

bool is_dir(const fs::path& p) {
  struct stat st {};
  return ::lstat(p.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

Result<void> remove_tree(const fs::path& p) {
  std::error_code ec;
  fs::remove_all(p, ec);
  if (ec) return errno_error(ec.value(), "cannot remove", p);
  return {};
}

class FileDerivedBuild final : public DerivedBuild {
 public:
  // A build with nothing to do: the product is at `final_dir`.
  explicit FileDerivedBuild(fs::path final_dir) : done_(true), dir_(std::move(final_dir)) {}

  FileDerivedBuild(fs::path tmp, fs::path final_dir, FileLock lock)
      : dir_(std::move(tmp)), final_(std::move(final_dir)), lock_(std::move(lock)) {}

  ~FileDerivedBuild() override {
    // Abandoned (an error while building): nothing in the temporary directory is worth keeping.
    // Best effort, under the lock; the next builder or gc removes whatever is left.
    if (!done_) (void)remove_tree(dir_);
  }

  FileDerivedBuild(const FileDerivedBuild&) = delete;
  FileDerivedBuild& operator=(const FileDerivedBuild&) = delete;

  [[nodiscard]] bool done() const override { return done_; }
  [[nodiscard]] const fs::path& dir() const override { return dir_; }

  Result<void> commit() override {
    if (done_) return {};
    // The directory's entries must be durable before the rename makes them visible: otherwise a
    // power loss could leave a product whose files are missing.
    IMAGEFS_CHECK(detail::fsync_dir(dir_));
    if (::rename(dir_.c_str(), final_.c_str()) != 0)
      return errno_error(errno, "cannot rename", dir_);
    done_ = true;
    dir_ = final_;
    Result<void> synced = detail::fsync_dir(final_.parent_path());
    lock_.reset();  // waiting builders find the product now
    return synced;
  }

 private:
  bool done_ = false;
  fs::path dir_;
  fs::path final_;
  std::optional<FileLock> lock_;
};

enum class Sweep { temporary, everything };

// Removes the temporary entries of derived/<hex>/ (or all of them), skipping any whose product is
// being built; with Sweep::everything, then the directory itself if it became empty.
Result<void> sweep(const BlobStore& blobs, const fs::path& hex_dir, std::string_view hex,
                   Sweep what, std::vector<fs::path>* removed) {
  auto names = detail::list_dir(hex_dir);
  if (!names.ok()) return names.error().code == ENOENT ? Result<void>() : names.error();
  for (const std::string& entry : *names) {
    bool tmp = entry.ends_with(kTmpSuffix);
    std::string_view name = entry;
    if (tmp) name.remove_suffix(kTmpSuffix.size());
    if (!valid_name(name)) continue;  // not ours
    if (!tmp && what != Sweep::everything) continue;
    IMAGEFS_TRY(lock,
                FileLock::try_acquire(lock_path(blobs, hex, name), detail::LockMode::exclusive,
                                      detail::IfMissing::create));
    if (!lock) continue;  // being built now
    IMAGEFS_CHECK(remove_tree(hex_dir / entry));
    if (removed != nullptr) removed->push_back(hex_dir / entry);
  }
  if (what == Sweep::everything)
    (void)::rmdir(hex_dir.c_str());  // ENOTEMPTY when something was skipped
  return {};
}

}  // namespace

fs::path derived_path(const BlobStore& blobs, const Digest& blob, std::string_view name) {
  return blobs.derived_dir(blob) / std::string(name);
}

Result<std::unique_ptr<DerivedBuild>> DerivedBuild::begin(const BlobStore& blobs,
                                                          const Digest& blob, std::string_view name,
                                                          IfPresent if_present) {
  if (!valid_name(name))
    return make_error(EINVAL, "bad name for a derived product: '" + std::string(name) + "'");
  fs::path final_dir = derived_path(blobs, blob, name);
  if (if_present == IfPresent::keep && is_dir(final_dir))
    return std::unique_ptr<DerivedBuild>(std::make_unique<FileDerivedBuild>(final_dir));
  IMAGEFS_CHECK(detail::make_dirs(blobs.root() / "locks"));
  IMAGEFS_TRY(lock,
              FileLock::acquire(lock_path(blobs, blob.hex(), name), detail::LockMode::exclusive));
  // The builder we may have waited for has published it.
  if (if_present == IfPresent::keep && is_dir(final_dir))
    return std::unique_ptr<DerivedBuild>(std::make_unique<FileDerivedBuild>(final_dir));
  if (if_present == IfPresent::replace) IMAGEFS_CHECK(remove_tree(final_dir));
  fs::path tmp = final_dir;
  tmp += kTmpSuffix;
  // A leftover of a builder that died: its content is unknown, so start again.
  IMAGEFS_CHECK(remove_tree(tmp));
  IMAGEFS_CHECK(detail::make_dirs(tmp));
  return std::unique_ptr<DerivedBuild>(
      std::make_unique<FileDerivedBuild>(std::move(tmp), std::move(final_dir), std::move(lock)));
}

Result<void> remove_derived(const BlobStore& blobs, const Digest& blob) {
  return sweep(blobs, blobs.derived_dir(blob), blob.hex(), Sweep::everything, nullptr);
}

Result<std::vector<fs::path>> remove_stale_derived(const BlobStore& blobs) {
  std::vector<fs::path> removed;
  fs::path top = blobs.root() / "derived";
  auto names = detail::list_dir(top);
  if (!names.ok()) {
    if (names.error().code == ENOENT) return removed;
    return names.error();
  }
  for (const std::string& hex : *names) {
    auto digest = Digest::parse("sha256:" + hex);
    if (!digest.ok()) continue;  // not ours
    bool orphan = !blobs.contains(*digest);
    IMAGEFS_CHECK(
        sweep(blobs, top / hex, hex, orphan ? Sweep::everything : Sweep::temporary, &removed));
  }
  return removed;
}

}  // namespace imagefs::store
