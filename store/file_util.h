// Internal to store/ (not part of its interface): owned file descriptors, directory helpers, and
// flock(2) locks that stay correct when their lock file is removed.
//
// Why flock: the kernel drops a flock when its holder dies, so a crashed pull or mount leaves no
// stale lock behind, and two open() calls of one file conflict even inside one process, so the
// same lock serializes threads and processes alike.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/errno_error.h"
#include "common/result.h"
#include "common/unique_fd.h"

namespace imagefs::store::detail {

using imagefs::UniqueFd;

// The names in `dir` (without "." and ".."), in no particular order. A missing `dir` is ENOENT.
Result<std::vector<std::string>> list_dir(const std::filesystem::path& dir);
// Creates `dir` and its parents if missing, each mode 0700 (the store is private to its user:
// other users see images only through a mount). Existing directories are left as they are.
Result<void> make_dirs(const std::filesystem::path& dir);
// fsync(2) of a directory, so that a rename or create in it survives a power loss.
Result<void> fsync_dir(const std::filesystem::path& dir);
// Writes all of `bytes` at the file's current offset, retrying short writes and EINTR. On error,
// `*written` holds how many bytes did reach the file (so a caller can keep its hash in step).
Result<void> write_all(int fd, const void* bytes, size_t size, const std::filesystem::path& path,
                       size_t* written);

enum class LockMode { shared, exclusive };
enum class IfMissing { create, fail };

// A flock on a lock file, released (by closing) on destruction.
//
// Lock files are removed by exclusive holders just before they release (so lock directories do
// not fill up with one file per blob ever written). That is safe because every acquirer checks,
// after locking, that the path still names the file it locked, and starts over if not: a lock on
// a removed file is worth nothing, and only a lock on the file the path names counts.
class FileLock {
 public:
  // Waits for the lock. IfMissing::create creates the file (mode 0644).
  static Result<FileLock> acquire(const std::filesystem::path& path, LockMode mode);
  // Does not wait: nullopt when another holder conflicts. With IfMissing::fail a missing file is
  // an ENOENT error (nobody can hold a lock on a file that does not exist).
  static Result<std::optional<FileLock>> try_acquire(const std::filesystem::path& path,
                                                     LockMode mode, IfMissing if_missing);

  FileLock(FileLock&& other) noexcept = default;
  FileLock& operator=(FileLock&& other) noexcept;
  FileLock(const FileLock&) = delete;
  FileLock& operator=(const FileLock&) = delete;
  // An exclusive holder removes the lock file, then releases.
  ~FileLock();

 private:
  FileLock(std::filesystem::path path, UniqueFd fd, LockMode mode)
      : path_(std::move(path)), fd_(std::move(fd)), mode_(mode) {}
  void release();

  std::filesystem::path path_;
  UniqueFd fd_;
  LockMode mode_ = LockMode::shared;
};

// Removes every `*.lock` file in `dir` that nobody holds (left behind by processes that died while
// holding a shared lock). Missing `dir` is fine.
Result<void> sweep_lock_dir(const std::filesystem::path& dir);

// Seconds since the epoch of a stat(2) mtime.
int64_t mtime_seconds(const struct stat& st);

}  // namespace imagefs::store::detail
