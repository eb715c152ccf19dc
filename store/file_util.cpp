// File descriptors, errno errors and flock-based lock files for the store's implementation.
#include "store/file_util.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <system_error>

namespace imagefs::store::detail {

namespace fs = std::filesystem;

Result<std::vector<std::string>> list_dir(const fs::path& dir) {
  // directory_iterator's operator++ throws on a read error, and no exception may leave the store.
  std::error_code ec;
  fs::directory_iterator it(dir, ec);
  std::vector<std::string> names;
  for (; !ec && it != fs::directory_iterator(); it.increment(ec))
    names.push_back(it->path().filename().string());
  if (ec) return errno_error(ec.value(), "cannot list", dir);
  return names;
}

namespace {

// mkdir(dir, 0700); an existing directory (or a symlink to one) is fine. errno-like, 0 on success.
int make_dir(const fs::path& dir) {
  if (::mkdir(dir.c_str(), 0700) == 0) return 0;
  if (errno != EEXIST) return errno;
  struct stat st {};
  return ::stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
}

}  // namespace

Result<void> make_dirs(const fs::path& dir) {
  // Not std::filesystem::create_directories: it makes directories 0777 less the umask, which
  // would let every user read the store.
  int err = make_dir(dir);
  fs::path parent = dir.parent_path();
  if (err == ENOENT && !parent.empty() && parent != dir) {
    IMAGEFS_CHECK(make_dirs(parent));
    err = make_dir(dir);
  }
  if (err != 0) return errno_error(err, "cannot create directory", dir);
  return {};
}

Result<void> fsync_dir(const fs::path& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return errno_error(errno, "cannot open directory", dir);
  if (::fsync(fd.get()) != 0) return errno_error(errno, "cannot fsync directory", dir);
  return {};
}

Result<void> write_all(int fd, const void* bytes, size_t size, const fs::path& path,
                       size_t* written) {
  const auto* p = static_cast<const uint8_t*>(bytes);
  size_t done = 0;
  while (done < size) {
    ssize_t n = ::write(fd, p + done, size - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      int err = errno;
      *written = done;
      if (err == ENOSPC || err == EDQUOT)
        return make_error(
            err, std::string(err == ENOSPC ? "no space left on device" : "disk quota exceeded") +
                     " while writing " + path.string());
      return errno_error(err, "cannot write", path);
    }
    done += static_cast<size_t>(n);
  }
  *written = done;
  return {};
}

namespace {

Result<std::optional<FileLock>> lock_file(const fs::path& path, LockMode mode, bool wait,
                                          IfMissing if_missing,
                                          const auto& make /* (path, fd) -> FileLock */) {
  for (;;) {
    int flags = O_RDONLY | O_CLOEXEC | (if_missing == IfMissing::create ? O_CREAT : 0);
    UniqueFd fd(::open(path.c_str(), flags, 0644));
    if (!fd) return errno_error(errno, "cannot open lock file", path);
    int op = (mode == LockMode::shared ? LOCK_SH : LOCK_EX) | (wait ? 0 : LOCK_NB);
    int rc = 0;
    do {
      rc = ::flock(fd.get(), op);
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
      if (errno == EWOULDBLOCK) return std::optional<FileLock>();
      return errno_error(errno, "cannot lock", path);
    }
    struct stat held {};
    struct stat named {};
    if (::fstat(fd.get(), &held) != 0) return errno_error(errno, "cannot stat lock file", path);
    if (::stat(path.c_str(), &named) != 0) {
      if (errno != ENOENT) return errno_error(errno, "cannot stat lock file", path);
      // Removed by an exclusive holder after we opened it.
      if (if_missing == IfMissing::fail) return errno_error(ENOENT, "no lock file", path);
      continue;
    }
    if (held.st_ino != named.st_ino || held.st_dev != named.st_dev) continue;  // replaced
    return std::optional<FileLock>(make(path, std::move(fd)));
  }
}

}  // namespace

Result<FileLock> FileLock::acquire(const fs::path& path, LockMode mode) {
  auto make = [mode](const fs::path& p, UniqueFd fd) { return FileLock(p, std::move(fd), mode); };
  IMAGEFS_TRY(lock, lock_file(path, mode, /*wait=*/true, IfMissing::create, make));
  return std::move(*lock);
}

Result<std::optional<FileLock>> FileLock::try_acquire(const fs::path& path, LockMode mode,
                                                      IfMissing if_missing) {
  auto make = [mode](const fs::path& p, UniqueFd fd) { return FileLock(p, std::move(fd), mode); };
  return lock_file(path, mode, /*wait=*/false, if_missing, make);
}

FileLock& FileLock::operator=(FileLock&& other) noexcept {
  if (this != &other) {
    release();
    path_ = std::move(other.path_);
    fd_ = std::move(other.fd_);
    mode_ = other.mode_;
  }
  return *this;
}

FileLock::~FileLock() { release(); }

void FileLock::release() {
  if (!fd_) return;
  // Removing while still holding the lock: see the class comment. A failure only leaves a file
  // behind, which the next exclusive holder or sweep_lock_dir removes.
  if (mode_ == LockMode::exclusive) (void)::unlink(path_.c_str());
  fd_.reset();
}

Result<void> sweep_lock_dir(const fs::path& dir) {
  auto names = list_dir(dir);
  if (!names.ok()) return names.error().code == ENOENT ? Result<void>() : names.error();
  for (const std::string& name : *names) {
    if (!name.ends_with(".lock")) continue;
    auto lock = FileLock::try_acquire(dir / name, LockMode::exclusive, IfMissing::fail);
    if (!lock.ok() && lock.error().code != ENOENT) return lock.error();
    // An acquired exclusive lock removes the file as it goes out of scope here.
  }
  return {};
}

int64_t mtime_seconds(const struct stat& st) { return static_cast<int64_t>(st.st_mtim.tv_sec); }

}  // namespace imagefs::store::detail
