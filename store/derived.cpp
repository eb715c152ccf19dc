// Derived products of blobs: the per-product lock, the temporary directory and the rename that
// publishes a product whole, and their removal by gc; and shared derived files, built or replaced
// whole by rename and listed for gc (docs/STORE_FORMAT.md).
#include "store/derived.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
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

// --- Shared derived files ---

namespace imagefs::store {

namespace {

constexpr std::string_view kSharedDir = "segments";

bool valid_key(std::string_view key) {
  return key.size() == 64 && key.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}

Result<void> check_shared(std::string_view kind, std::string_view key) {
  if (!valid_name(kind))
    return make_error(EINVAL, "bad kind of shared file: '" + std::string(kind) + "'");
  if (!valid_key(key))
    return make_error(EINVAL, "bad key of shared file: '" + std::string(key) + "'");
  return {};
}

}  // namespace

fs::path shared_path(const fs::path& store_root, std::string_view kind, std::string_view key) {
  return store_root / kSharedDir / std::string(kind) / std::string(key);
}

Result<Built> build_shared(const fs::path& store_root, std::string_view kind, std::string_view key,
                           Sync sync, const SharedWriter& write) {
  IMAGEFS_CHECK(check_shared(kind, key));
  const fs::path final_path = shared_path(store_root, kind, key);
  const fs::path tmp_path = fs::path(final_path).concat(kTmpSuffix);
  struct stat st {};
  if (::stat(final_path.c_str(), &st) == 0) return Built::already;
  IMAGEFS_CHECK(detail::make_dirs(final_path.parent_path()));
  while (true) {
    // The temporary file is its own lock: a builder holds flock(LOCK_EX) on it from creation to
    // rename, so a second builder waits, then finds the file in place.
    UniqueFd fd(::open(tmp_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!fd) return errno_error(errno, "cannot create", tmp_path);
    int rc = 0;
    do {
      rc = ::flock(fd.get(), LOCK_EX);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) return errno_error(errno, "cannot lock", tmp_path);
    if (::stat(final_path.c_str(), &st) == 0) return Built::already;
    // The file we locked may have been renamed into place (and then removed by gc) or removed by
    // gc as abandoned: only a lock on the file the temporary name still names counts.
    struct stat mine {};
    if (::fstat(fd.get(), &mine) != 0) return errno_error(errno, "cannot stat", tmp_path);
    if (::stat(tmp_path.c_str(), &st) != 0 || st.st_ino != mine.st_ino || st.st_dev != mine.st_dev)
      continue;
    // A leftover of a builder that died: its content is unknown.
    if (::ftruncate(fd.get(), 0) != 0) return errno_error(errno, "cannot truncate", tmp_path);
    auto fail = [&](Error e) {
      (void)::unlink(tmp_path.c_str());
      return e;
    };
    if (Result<void> written = write(fd.get(), tmp_path); !written.ok())
      return fail(written.error());
    if (sync == Sync::yes && ::fsync(fd.get()) != 0)
      return fail(errno_error(errno, "cannot fsync", tmp_path));
    if (::rename(tmp_path.c_str(), final_path.c_str()) != 0)
      return fail(errno_error(errno, "cannot rename", tmp_path));
    return Built::now;
  }
}

Result<void> replace_shared(const fs::path& store_root, std::string_view kind, std::string_view key,
                            std::string_view bytes) {
  IMAGEFS_CHECK(check_shared(kind, key));
  const fs::path final_path = shared_path(store_root, kind, key);
  IMAGEFS_CHECK(detail::make_dirs(final_path.parent_path()));
  std::string tmp = final_path.string() + std::string(kTmpSuffix) + ".XXXXXX";
  UniqueFd fd(::mkostemp(tmp.data(), O_CLOEXEC));
  if (!fd) return errno_error(errno, "cannot create a temporary file in", final_path.parent_path());
  auto fail = [&](Error e) {
    (void)::unlink(tmp.c_str());
    return e;
  };
  size_t written = 0;
  if (auto w = detail::write_all(fd.get(), bytes.data(), bytes.size(), tmp, &written); !w.ok())
    return fail(w.error());
  // mkostemp makes 0600; shared files are readable like blobs.
  if (::fchmod(fd.get(), 0644) != 0) return fail(errno_error(errno, "cannot chmod", tmp));
  if (::close(fd.release()) != 0) return fail(errno_error(errno, "cannot write", tmp));
  if (::rename(tmp.c_str(), final_path.c_str()) != 0)
    return fail(errno_error(errno, "cannot rename", tmp));
  return {};
}

void mark_used(const fs::path& path, const struct stat& st, int64_t now) {
  if (st.st_mtim.tv_sec + kMarkUsedInterval < now)
    (void)::utimensat(AT_FDCWD, path.c_str(), nullptr, 0);
}

Result<std::vector<SharedFile>> list_shared(const fs::path& store_root, int64_t stale_before) {
  std::vector<SharedFile> out;
  const fs::path top = store_root / kSharedDir;
  auto kinds = detail::list_dir(top);
  if (!kinds.ok()) {
    if (kinds.error().code == ENOENT) return out;
    return kinds.error();
  }
  for (const std::string& kind : *kinds) {
    if (!valid_name(kind)) continue;  // not ours
    const fs::path dir = top / kind;
    auto names = detail::list_dir(dir);
    if (!names.ok()) {
      if (names.error().code == ENOENT || names.error().code == ENOTDIR) continue;
      return names.error();
    }
    for (const std::string& name : *names) {
      const fs::path path = dir / name;
      struct stat st {};
      if (::lstat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
      const std::string_view key = std::string_view(name).substr(0, 64);
      if (!valid_key(key)) continue;  // not ours
      const std::string_view rest = std::string_view(name).substr(key.size());
      bool remove = false;
      if (rest.empty()) {
        out.push_back(SharedFile{path, static_cast<uint64_t>(st.st_size), st.st_mtim.tv_sec});
        continue;
      } else if (rest == kTmpSuffix) {
        // A builder holds its temporary file locked; one nobody holds was left by a crash. A
        // builder that opened it just before the unlink finds the name gone and starts over.
        UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
        remove = fd && ::flock(fd.get(), LOCK_EX | LOCK_NB) == 0;
      } else if (rest.starts_with(std::string(kTmpSuffix) + ".")) {
        remove = st.st_mtim.tv_sec < stale_before;  // replace_shared() holds one for microseconds
      }
      if (remove && ::unlink(path.c_str()) != 0 && errno != ENOENT)
        return errno_error(errno, "cannot remove", path);
    }
  }
  return out;
}

}  // namespace imagefs::store
