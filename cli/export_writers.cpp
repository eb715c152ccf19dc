// `imagefs export`'s writers: a merged tree to a directory, every step relative to directory
// descriptors beneath it (beneath.h), or to a pax tar file through a temporary file.
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <locale.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cli/beneath.h"
#include "cli/export.h"
#include "common/errno_error.h"
#include "common/unique_fd.h"
#include "overlay/layer_index.h"

namespace imagefs::cli {
namespace {

namespace fsys = std::filesystem;

// Who writes: root restores everything and fails on any refusal; another user gets what the
// kernel lets it set (no owners, no device nodes, no trusted.* or security.* xattrs).
enum class Privilege { root, user };

class DirWriter {
 public:
  DirWriter(overlay::Tree& tree, fsys::path shown, int root_fd)
      : tree_(tree),
        shown_(std::move(shown)),
        root_fd_(root_fd),
        privilege_(::geteuid() == 0 ? Privilege::root : Privilege::user),
        chain_(root_fd, shown_) {}

  Result<void> write() {
    // Directories get their metadata after their contents, deepest first (the walk's order
    // reversed), so that writing a child does not change a directory's mtime or run into a
    // read-only mode; the root comes last of all, so it stays 0700 until the export is complete.
    std::vector<overlay::WalkEntry> dirs;
    IMAGEFS_CHECK(tree_.walk([&](const overlay::WalkEntry& e) -> Result<void> {
      if (S_ISDIR(e.attr.mode) && e.hardlink_first.empty()) dirs.push_back(e);
      return create(e);
    }));
    for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) {
      if (it->path.empty()) {
        IMAGEFS_CHECK(metadata_of_fd(root_fd_, *it));
        continue;
      }
      // The directory itself through the chain (O_NOFOLLOW at every level): a symlink put in
      // its place stops the export here.
      IMAGEFS_TRY(fd, chain_.dir(it->path));
      IMAGEFS_CHECK(metadata_of_fd(fd, *it));
    }
    chain_.reset();
    return {};
  }

 private:
  [[nodiscard]] std::string shown(const std::string& rel) const {
    return rel.empty() ? shown_.string() : (shown_ / rel).string();
  }

  // A refusal that a user (not root) may meet and go on without: owners, devices, xattrs.
  [[nodiscard]] bool tolerated(int err, bool xattr) const {
    if (privilege_ == Privilege::root) return false;
    return err == EPERM || (xattr && (err == ENOTSUP || err == EACCES));
  }

  Result<void> create(const overlay::WalkEntry& e) {
    if (e.path.empty()) return {};  // the root: DIR itself, metadata at the very end
    const overlay::Attr& a = e.attr;
    auto [parent_rel, name_view] = split_parent(e.path);
    const std::string name(name_view);
    if (!e.hardlink_first.empty()) {
      auto [from_parent, from_name] = split_parent(e.hardlink_first);
      // Its own descriptor: the chain holds one path at a time.
      IMAGEFS_TRY(from_fd, open_dir_beneath(root_fd_, from_parent, shown_));
      IMAGEFS_TRY(parent, chain_.dir(parent_rel));
      // No AT_SYMLINK_FOLLOW: a symlink in the group is linked itself, never what it names.
      if (::linkat(from_fd.get(), std::string(from_name).c_str(), parent, name.c_str(), 0) != 0)
        return errno_error(errno,
                           "cannot hardlink " + shown(e.path) + " to " + shown(e.hardlink_first));
      return {};
    }
    IMAGEFS_TRY(parent, chain_.dir(parent_rel));
    switch (a.mode & S_IFMT) {
      case S_IFDIR:
        // 0700 until its metadata comes, after its contents.
        if (::mkdirat(parent, name.c_str(), 0700) != 0)
          return errno_error(errno, "cannot create " + shown(e.path));
        return {};
      case S_IFREG: {
        UniqueFd fd(::openat(parent, name.c_str(),
                             O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!fd) return errno_error(errno, "cannot create " + shown(e.path));
        IMAGEFS_CHECK(copy_content(a.ino, fd.get(), e.path));
        return metadata_of_fd(fd.get(), e);
      }
      case S_IFLNK: {
        IMAGEFS_TRY(target, tree_.readlink(a.ino));
        if (::symlinkat(target.c_str(), parent, name.c_str()) != 0)
          return errno_error(errno, "cannot create " + shown(e.path));
        return metadata_at(parent, name, e);
      }
      case S_IFCHR:
      case S_IFBLK:
      case S_IFIFO:
        if (::mknodat(parent, name.c_str(), (a.mode & S_IFMT) | 0600,
                      makedev(a.rdev_major, a.rdev_minor)) != 0) {
          if (tolerated(errno, false)) return {};  // devices need root; skipped quietly
          return errno_error(errno, "cannot create " + shown(e.path));
        }
        return metadata_at(parent, name, e);
      default:
        return make_error(EINVAL, "unknown file type of /" + e.path);
    }
  }

  // Copies a regular file's content from the layer's data file without a user-space buffer.
  Result<void> copy_content(overlay::Ino ino, int out, const std::string& rel) {
    IMAGEFS_TRY(source, tree_.content(ino));
    overlay::LayerEntry entry = source.layer->entry(source.entry);
    auto in_off = static_cast<loff_t>(entry.data_offset);
    uint64_t left = source.size;
    while (left > 0) {
      ssize_t n = ::copy_file_range(source.layer->data_fd(), &in_off, out, nullptr, left, 0);
      if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL)) break;  // read below
      if (n < 0) return errno_error(errno, "cannot write " + shown(rel));
      if (n == 0) return make_error(EIO, "layer data ended early while writing " + shown(rel));
      left -= static_cast<uint64_t>(n);
    }
    std::vector<uint8_t> buf(left > 0 ? 1 << 20 : 0);
    uint64_t offset = source.size - left;
    while (left > 0) {
      IMAGEFS_TRY(
          n, tree_.read(ino, offset, std::span(buf.data(), std::min<uint64_t>(left, buf.size()))));
      if (n == 0) return make_error(EIO, "content ended early while writing " + shown(rel));
      if (::write(out, buf.data(), n) != static_cast<ssize_t>(n))
        return errno_error(errno, "cannot write " + shown(rel));
      offset += n;
      left -= n;
    }
    return {};
  }

  // Ownership, xattrs, mode and times through the entry's own descriptor (regular files,
  // directories), in the order that keeps setuid bits and capabilities (chown clears them).
  Result<void> metadata_of_fd(int fd, const overlay::WalkEntry& e) {
    const overlay::Attr& a = e.attr;
    if (::fchown(fd, a.uid, a.gid) != 0 && !tolerated(errno, false))
      return errno_error(errno, "cannot chown " + shown(e.path));
    IMAGEFS_TRY(names, tree_.listxattr(a.ino));
    for (const std::string& xname : names) {
      IMAGEFS_TRY(value, tree_.getxattr(a.ino, xname));
      if (::fsetxattr(fd, xname.c_str(), value.data(), value.size(), 0) != 0 &&
          !tolerated(errno, true))
        return errno_error(errno, "cannot set xattr " + xname + " on " + shown(e.path));
    }
    if (::fchmod(fd, a.mode & 07777) != 0)
      return errno_error(errno, "cannot chmod " + shown(e.path));
    const struct timespec times[2] = {{a.mtime_sec, a.mtime_nsec}, {a.mtime_sec, a.mtime_nsec}};
    if (::futimens(fd, times) != 0)
      return errno_error(errno, "cannot set times of " + shown(e.path));
    return {};
  }

  // The same for symlinks, devices and fifos, which are not opened (opening a device or a fifo
  // has effects): by name in their pinned parent, never following that name.
  Result<void> metadata_at(int parent, const std::string& name, const overlay::WalkEntry& e) {
    const overlay::Attr& a = e.attr;
    if (::fchownat(parent, name.c_str(), a.uid, a.gid, AT_SYMLINK_NOFOLLOW) != 0 &&
        !tolerated(errno, false))
      return errno_error(errno, "cannot chown " + shown(e.path));
    IMAGEFS_TRY(names, tree_.listxattr(a.ino));
    if (!names.empty()) {
      // No fd-relative call sets an xattr on a symlink (before Linux 6.13's setxattrat): name it
      // through the parent's descriptor, whose final component lsetxattr does not follow.
      const std::string at = "/proc/self/fd/" + std::to_string(parent) + "/" + name;
      for (const std::string& xname : names) {
        IMAGEFS_TRY(value, tree_.getxattr(a.ino, xname));
        if (::lsetxattr(at.c_str(), xname.c_str(), value.data(), value.size(), 0) != 0 &&
            !tolerated(errno, true))
          return errno_error(errno, "cannot set xattr " + xname + " on " + shown(e.path) +
                                        (errno == ENOENT ? " (is /proc mounted?)" : ""));
      }
    }
    // Symlinks have no mode of their own on Linux. glibc does AT_SYMLINK_NOFOLLOW through an
    // O_PATH descriptor and refuses a symlink (one put in its place) with EOPNOTSUPP.
    if (!S_ISLNK(a.mode) &&
        ::fchmodat(parent, name.c_str(), a.mode & 07777, AT_SYMLINK_NOFOLLOW) != 0)
      return errno_error(errno, "cannot chmod " + shown(e.path));
    const struct timespec times[2] = {{a.mtime_sec, a.mtime_nsec}, {a.mtime_sec, a.mtime_nsec}};
    if (::utimensat(parent, name.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0)
      return errno_error(errno, "cannot set times of " + shown(e.path));
    return {};
  }

  overlay::Tree& tree_;
  fsys::path shown_;
  int root_fd_;
  Privilege privilege_;
  DirChain chain_;
};

struct ArchiveDeleter {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct EntryDeleter {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};

// This thread in the C.UTF-8 locale while it lives (uselocale: no other thread is affected).
// libarchive's pax writer converts names from the locale's charset to UTF-8: in a UTF-8 locale a
// valid UTF-8 name is written as it is and an invalid one fails the conversion, which makes
// libarchive write that entry alone with hdrcharset=BINARY. In the "C" locale every non-ASCII
// name would fail and be marked BINARY (still the right bytes: that is the fallback where the
// C.UTF-8 locale is missing).
class Utf8Locale {
 public:
  Utf8Locale() {
    for (const char* name : {"C.UTF-8", "C.utf8", "en_US.UTF-8"}) {
      locale_ = ::newlocale(LC_CTYPE_MASK, name, static_cast<locale_t>(nullptr));
      if (locale_ != static_cast<locale_t>(nullptr)) break;
    }
    if (locale_ != static_cast<locale_t>(nullptr)) previous_ = ::uselocale(locale_);
  }
  ~Utf8Locale() {
    if (locale_ == static_cast<locale_t>(nullptr)) return;
    ::uselocale(previous_);
    ::freelocale(locale_);
  }
  Utf8Locale(const Utf8Locale&) = delete;
  Utf8Locale& operator=(const Utf8Locale&) = delete;

 private:
  locale_t locale_ = static_cast<locale_t>(nullptr);
  locale_t previous_ = static_cast<locale_t>(nullptr);
};

}  // namespace

Result<void> export_to_dir(overlay::Tree& tree, const fsys::path& dir) {
  IMAGEFS_TRY(root, open_export_root(dir));
  DirWriter writer(tree, dir, root.fd.get());
  Result<void> written = writer.write();
  if (!written.ok())
    return written.error().context("export into " + dir.string() +
                                   " stopped (what was written stays there, mode 0700)");
  return {};
}

Result<void> export_to_tar(overlay::Tree& tree, const fsys::path& file) {
  Utf8Locale utf8;  // before the archive: libarchive picks its charset converter on first use
  IMAGEFS_TRY(tmp, TempFile::create(file));
  std::unique_ptr<archive, ArchiveDeleter> ar(archive_write_new());
  archive_write_set_format_pax(ar.get());
  // SCHILY.xattr records only: libarchive's own LIBARCHIVE.xattr ones (its default adds both)
  // make GNU tar warn once per entry, and both tars read SCHILY's.
  if (archive_write_set_format_option(ar.get(), "pax", "xattrheader", "SCHILY") != ARCHIVE_OK)
    return make_error(EINVAL, std::string("libarchive: ") + archive_error_string(ar.get()));
  auto fail = [&](const std::string& what) {
    return make_error(EIO, what + " " + file.string() + ": " + archive_error_string(ar.get()));
  };
  if (archive_write_open_fd(ar.get(), tmp.fd()) != ARCHIVE_OK) return fail("cannot open");
  std::vector<uint8_t> buf(1 << 20);
  IMAGEFS_CHECK(tree.walk([&](const overlay::WalkEntry& e) -> Result<void> {
    const overlay::Attr& a = e.attr;
    std::unique_ptr<archive_entry, EntryDeleter> entry(archive_entry_new());
    archive_entry_set_pathname(entry.get(), e.path.empty() ? "./" : ("./" + e.path).c_str());
    archive_entry_set_mode(entry.get(), a.mode);
    archive_entry_set_uid(entry.get(), a.uid);
    archive_entry_set_gid(entry.get(), a.gid);
    archive_entry_set_mtime(entry.get(), a.mtime_sec, a.mtime_nsec);
    IMAGEFS_TRY(names, tree.listxattr(a.ino));
    for (const std::string& name : names) {
      IMAGEFS_TRY(value, tree.getxattr(a.ino, name));
      archive_entry_xattr_add_entry(entry.get(), name.c_str(), value.data(), value.size());
    }
    bool data = false;
    if (!e.hardlink_first.empty()) {
      archive_entry_set_hardlink(entry.get(), ("./" + e.hardlink_first).c_str());
      archive_entry_set_size(entry.get(), 0);
    } else if (S_ISLNK(a.mode)) {
      IMAGEFS_TRY(target, tree.readlink(a.ino));
      archive_entry_set_symlink(entry.get(), target.c_str());
    } else if (S_ISCHR(a.mode) || S_ISBLK(a.mode)) {
      archive_entry_set_rdevmajor(entry.get(), a.rdev_major);
      archive_entry_set_rdevminor(entry.get(), a.rdev_minor);
    } else if (S_ISREG(a.mode)) {
      archive_entry_set_size(entry.get(), static_cast<la_int64_t>(a.size));
      data = true;
    }
    // ARCHIVE_WARN is libarchive's "Can't translate pathname to UTF-8": the entry was written,
    // its names as bytes under hdrcharset=BINARY, as wanted.
    if (archive_write_header(ar.get(), entry.get()) < ARCHIVE_WARN) return fail("cannot write");
    for (uint64_t off = 0; data && off < a.size;) {
      IMAGEFS_TRY(n,
                  tree.read(a.ino, off,
                            std::span(buf.data(), std::min<uint64_t>(a.size - off, buf.size()))));
      if (n == 0) return make_error(EIO, "content of /" + e.path + " ended early");
      if (archive_write_data(ar.get(), buf.data(), n) < 0) return fail("cannot write");
      off += n;
    }
    return {};
  }));
  if (archive_write_close(ar.get()) != ARCHIVE_OK) return fail("cannot finish");
  return tmp.commit();
}

}  // namespace imagefs::cli
