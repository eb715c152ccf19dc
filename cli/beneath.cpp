// Directory descriptors opened beneath a root without following symlinks, the export's root
// directory and temporary files beside a result (see beneath.h).
#include "cli/beneath.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <fstream>
#include <random>
#include <system_error>

#include "common/errno_error.h"

namespace imagefs::cli {

namespace fsys = std::filesystem;

std::pair<std::string_view, std::string_view> split_parent(std::string_view rel) {
  size_t slash = rel.rfind('/');
  if (slash == std::string_view::npos) return {std::string_view(), rel};
  return {rel.substr(0, slash), rel.substr(slash + 1)};
}

namespace {

constexpr int kDirFlags = O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

bool bad_component(std::string_view name) {
  return name.empty() || name == "." || name == ".." || name.find('/') != std::string_view::npos;
}

std::string shown_path(const fsys::path& root, std::string_view rel) {
  return rel.empty() ? root.string() : (root / std::string(rel)).string();
}

// The error for a component that could not be opened as a directory: say when it is a symlink,
// which is what a redirection attempt looks like.
Error open_error(int err, int parent, const std::string& name, const std::string& shown) {
  struct stat st {};
  if ((err == ELOOP || err == ENOTDIR) &&
      ::fstatat(parent, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(st.st_mode))
    return make_error(ELOOP, "cannot open " + shown +
                                 ": it is a symbolic link now (changed by someone else while "
                                 "imagefs wrote beneath it?); nothing is written through it");
  return errno_error(err, "cannot open directory " + shown);
}

Result<UniqueFd> open_component(int parent, const std::string& name, const std::string& shown) {
  UniqueFd fd(::openat(parent, name.c_str(), kDirFlags));
  if (!fd) return open_error(errno, parent, name, shown);
  return fd;
}

// openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS (Linux 5.6). -1 with errno; ENOSYS (and
// EPERM from a seccomp filter that does not know the call) mean "not here", remembered.
std::atomic<bool> g_no_openat2{false};

int openat2_beneath(int root, const std::string& rel) {
  if (g_no_openat2.load(std::memory_order_relaxed)) {
    errno = ENOSYS;
    return -1;
  }
  struct open_how how {};
  how.flags = kDirFlags;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  for (int attempt = 0;; ++attempt) {
    long fd = ::syscall(SYS_openat2, root, rel.c_str(), &how, sizeof how);
    if (fd >= 0) return static_cast<int>(fd);
    // EAGAIN: a rename raced with the lookup; the kernel asks for a retry.
    if (errno == EAGAIN && attempt < 8) continue;
    if (errno == ENOSYS || errno == EPERM || errno == E2BIG) {
      g_no_openat2.store(true, std::memory_order_relaxed);
      errno = ENOSYS;
    }
    return -1;
  }
}

}  // namespace

Result<UniqueFd> open_dir_beneath(int root, std::string_view rel, const fsys::path& shown) {
  std::vector<std::string> names;
  for (size_t at = 0; !rel.empty() && at <= rel.size();) {
    size_t slash = rel.find('/', at);
    if (slash == std::string_view::npos) slash = rel.size();
    names.emplace_back(rel.substr(at, slash - at));
    if (bad_component(names.back()))
      return make_error(EINVAL, "bad path " + shown_path(shown, rel) + " (an empty, . or .. part)");
    at = slash + 1;
  }
  if (names.empty()) {
    UniqueFd fd(::openat(root, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!fd) return errno_error(errno, "cannot open directory " + shown.string());
    return fd;
  }
  int fast = openat2_beneath(root, std::string(rel));
  if (fast >= 0) return UniqueFd(fast);
  if (errno != ENOSYS && errno != ELOOP && errno != ENOTDIR && errno != EXDEV)
    return errno_error(errno, "cannot open directory " + shown_path(shown, rel));
  // Without openat2, or to say which component is the symlink: one component at a time.
  UniqueFd cur;
  std::string done;
  for (const std::string& name : names) {
    done += done.empty() ? name : "/" + name;
    IMAGEFS_TRY(next, open_component(cur ? cur.get() : root, name, shown_path(shown, done)));
    cur = std::move(next);
  }
  return cur;
}

Result<int> DirChain::dir(std::string_view rel) {
  // Split `rel` and keep the common prefix with what is open.
  std::vector<std::string_view> want;
  for (size_t at = 0; !rel.empty() && at <= rel.size();) {
    size_t slash = rel.find('/', at);
    if (slash == std::string_view::npos) slash = rel.size();
    want.push_back(rel.substr(at, slash - at));
    if (bad_component(want.back()))
      return make_error(EINVAL,
                        "bad path " + shown_path(shown_, rel) + " (an empty, . or .. part)");
    at = slash + 1;
  }
  size_t keep = 0;
  while (keep < want.size() && keep < names_.size() && names_[keep] == want[keep]) ++keep;
  names_.resize(keep);
  fds_.resize(keep);
  for (size_t i = keep; i < want.size(); ++i) {
    std::string name(want[i]);
    int parent = i == 0 ? root_ : fds_[i - 1].get();
    std::string shown(rel.substr(0, want[i].data() + want[i].size() - rel.data()));
    IMAGEFS_TRY(fd, open_component(parent, name, shown_path(shown_, shown)));
    names_.push_back(std::move(name));
    fds_.push_back(std::move(fd));
  }
  return fds_.empty() ? root_ : fds_.back().get();
}

void DirChain::reset() {
  fds_.clear();
  names_.clear();
}

namespace {

// Whether the directory `fd` has no entries.
Result<bool> is_empty_dir(int fd, const fsys::path& shown) {
  // fdopendir takes its descriptor: give it one of its own.
  int dup = ::openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dup < 0) return errno_error(errno, "cannot read directory", shown);
  DIR* d = ::fdopendir(dup);
  if (d == nullptr) {
    int err = errno;
    ::close(dup);
    return errno_error(err, "cannot read directory", shown);
  }
  bool empty = true;
  errno = 0;
  while (const dirent* e = ::readdir(d)) {  // NOLINT(concurrency-mt-unsafe): DIR of our own
    std::string_view name = e->d_name;
    if (name != "." && name != "..") {
      empty = false;
      break;
    }
  }
  int err = errno;
  ::closedir(d);
  if (err != 0) return errno_error(err, "cannot read directory", shown);
  return empty;
}

}  // namespace

Result<ExportRoot> open_export_root(const fsys::path& dir) {
  fsys::path target = dir.lexically_normal();
  if (!target.has_filename() && target.has_parent_path()) target = target.parent_path();  // "out/"
  std::string name = target.filename().string();
  fsys::path parent = target.parent_path();
  if (parent.empty()) parent = ".";
  ExportRoot out;
  UniqueFd parent_fd;
  if (name.empty() || name == "." || name == "..") {
    // "/", "." or "..": no name in a parent to create; the directory itself must do.
    out.fd = UniqueFd(::open(target.c_str(), kDirFlags));
    if (!out.fd) return errno_error(errno, "cannot open", dir);
  } else {
    std::error_code ec;
    fsys::create_directories(parent, ec);
    if (ec) return make_error(ec.value(), "cannot create " + parent.string() + ": " + ec.message());
    parent_fd = UniqueFd(::open(parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!parent_fd) return errno_error(errno, "cannot open", parent);
    if (::mkdirat(parent_fd.get(), name.c_str(), 0700) == 0)
      out.created = true;
    else if (errno != EEXIST)
      return errno_error(errno, "cannot create", dir);
    out.fd = UniqueFd(::openat(parent_fd.get(), name.c_str(), kDirFlags));
    if (!out.fd) {
      int err = errno;
      struct stat st {};
      if (::fstatat(parent_fd.get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
        if (S_ISLNK(st.st_mode))
          return make_error(ELOOP, dir.string() +
                                       " is a symbolic link: export writes into a new directory "
                                       "or an empty one, never through a link");
        if (!S_ISDIR(st.st_mode))
          return make_error(ENOTDIR, dir.string() + " exists and is not a directory");
      }
      return errno_error(err, "cannot open", dir);
    }
  }
  struct stat st {};
  if (::fstat(out.fd.get(), &st) != 0) return errno_error(errno, "cannot stat", dir);
  if (st.st_uid != ::geteuid())
    return make_error(EPERM, dir.string() + " belongs to uid " + std::to_string(st.st_uid) +
                                 ", not to the user running export (uid " +
                                 std::to_string(::geteuid()) +
                                 "): export writes into a new directory or an empty one of its "
                                 "own user");
  // 0700 first, then the emptiness check: once it is 0700 nobody else can add anything.
  if ((st.st_mode & 07777) != 0700 && ::fchmod(out.fd.get(), 0700) != 0)
    return errno_error(errno, "cannot chmod", dir);
  IMAGEFS_TRY(empty, is_empty_dir(out.fd.get(), dir));
  if (!empty) {
    (void)::fchmod(out.fd.get(), st.st_mode & 07777);  // as it was: it is not ours to change
    return make_error(EEXIST,
                      dir.string() + " is not empty: export writes into a new or empty directory");
  }
  return out;
}

Result<TempFile> TempFile::create(const fsys::path& file) {
  std::string name = file.filename().string();
  if (name.empty() || name == "." || name == "..")
    return make_error(EISDIR, file.string() + " names a directory, not a file");
  fsys::path parent = file.parent_path();
  UniqueFd dir(::open(parent.empty() ? "." : parent.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir) return errno_error(errno, "cannot open directory", parent.empty() ? "." : parent);
  std::random_device seed;
  std::mt19937_64 rng(seed());
  for (int attempt = 0; attempt < 64; ++attempt) {
    std::string tmp = name + ".tmp";
    if (attempt > 0) {
      tmp += '.';
      uint64_t bits = rng();
      for (int i = 0; i < 16; ++i, bits >>= 4) tmp += "0123456789abcdef"[bits & 15];
    }
    // O_EXCL refuses any existing name, a symlink (dangling or not) included; O_NOFOLLOW says so
    // twice.
    UniqueFd fd(::openat(dir.get(), tmp.c_str(),
                         O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (fd) return TempFile(file, std::move(dir), std::move(tmp), std::move(fd));
    if (errno != EEXIST) return errno_error(errno, "cannot create", parent / tmp);
  }
  return make_error(EEXIST, "cannot create a temporary file beside " + file.string() +
                                ": every name tried exists");
}

TempFile::~TempFile() {
  if (committed_ || !dir_ || name_.empty()) return;
  (void)::unlinkat(dir_.get(), name_.c_str(), 0);  // best effort: a leftover is only disk space
}

Result<void> TempFile::commit() {
  if (::fsync(fd_.get()) != 0) return errno_error(errno, "cannot write", path());
  if (::fchmod(fd_.get(), 0666 & ~current_umask()) != 0)
    return errno_error(errno, "cannot chmod", path());
  if (::renameat(dir_.get(), name_.c_str(), dir_.get(), file_.filename().c_str()) != 0)
    return errno_error(errno, "cannot rename to", file_);
  committed_ = true;
  return {};
}

mode_t current_umask() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("Umask:", 0) == 0) {
      try {
        return static_cast<mode_t>(std::stoul(line.substr(6), nullptr, 8) & 0777);
      } catch (const std::exception&) {
        break;
      }
    }
  }
  return 022;
}

}  // namespace imagefs::cli
