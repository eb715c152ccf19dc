// `imagefs export REF DIR` and `imagefs export REF --tar FILE`: the merged root filesystem of an
// image written out as a directory tree or a tar archive. Useful to users, and the way tests
// compare our merge with `umoci unpack`.
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <ostream>
#include <system_error>
#include <vector>

#include "cli/commands.h"
#include "cli/progress.h"
#include "common/errno_error.h"
#include "common/unique_fd.h"
#include "overlay/layer_index.h"
#include "overlay/tree.h"
#include "registry/puller.h"
#include "registry/reference.h"
#include "store/lease.h"

namespace imagefs::cli {
namespace {

namespace fsys = std::filesystem;

// Copies a regular file's content from the layer's data file without a user-space buffer.
Result<void> copy_content(overlay::Tree& tree, overlay::Ino ino, int out, const fsys::path& path) {
  IMAGEFS_TRY(source, tree.content(ino));
  overlay::LayerEntry entry = source.layer->entry(source.entry);
  auto in_off = static_cast<loff_t>(entry.data_offset);
  uint64_t left = source.size;
  while (left > 0) {
    ssize_t n = ::copy_file_range(source.layer->data_fd(), &in_off, out, nullptr, left, 0);
    if (n < 0 && (errno == EXDEV || errno == ENOSYS || errno == EINVAL)) break;  // read below
    if (n < 0) return errno_error(errno, "cannot write", path);
    if (n == 0) return make_error(EIO, "layer data ended early while writing " + path.string());
    left -= static_cast<uint64_t>(n);
  }
  std::vector<uint8_t> buf(1 << 20);
  uint64_t offset = source.size - left;
  while (left > 0) {
    IMAGEFS_TRY(
        n, tree.read(ino, offset, std::span(buf.data(), std::min<uint64_t>(left, buf.size()))));
    if (n == 0) return make_error(EIO, "content ended early while writing " + path.string());
    if (::write(out, buf.data(), n) != static_cast<ssize_t>(n))
      return errno_error(errno, "cannot write", path);
    offset += n;
    left -= n;
  }
  return {};
}

// Ownership, xattrs, mode and times, in the order that keeps setuid bits (chown clears them).
Result<void> apply_metadata(overlay::Tree& tree, const overlay::WalkEntry& e, const fsys::path& p,
                            bool root) {
  const overlay::Attr& a = e.attr;
  bool link = S_ISLNK(a.mode);
  if (::lchown(p.c_str(), a.uid, a.gid) != 0 && (root || errno != EPERM))
    return errno_error(errno, "cannot chown", p);
  IMAGEFS_TRY(names, tree.listxattr(a.ino));
  for (const std::string& name : names) {
    IMAGEFS_TRY(value, tree.getxattr(a.ino, name));
    if (::lsetxattr(p.c_str(), name.c_str(), value.data(), value.size(), 0) != 0 &&
        (root || (errno != EPERM && errno != ENOTSUP)))
      return errno_error(errno, "cannot set xattr " + name + " on", p);
  }
  if (!link && ::chmod(p.c_str(), a.mode & 07777) != 0)
    return errno_error(errno, "cannot chmod", p);
  struct timespec times[2] = {{a.mtime_sec, a.mtime_nsec}, {a.mtime_sec, a.mtime_nsec}};
  if (::utimensat(AT_FDCWD, p.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0)
    return errno_error(errno, "cannot set times of", p);
  return {};
}

Result<void> export_dir(overlay::Tree& tree, const fsys::path& dir) {
  std::error_code ec;
  if (fsys::exists(dir, ec) && !fsys::is_empty(dir, ec))
    return make_error(EEXIST, dir.string() +
                                  " is not empty: export writes into a new or empty "
                                  "directory");
  fsys::create_directories(dir, ec);
  if (ec) return make_error(ec.value(), "cannot create " + dir.string() + ": " + ec.message());
  bool root = ::geteuid() == 0;
  // Directories get their metadata after their contents, deepest first, so that writing a
  // child does not change a directory's mtime or run into a read-only mode.
  std::vector<overlay::WalkEntry> dirs;
  Result<void> walked = tree.walk([&](const overlay::WalkEntry& e) -> Result<void> {
    fsys::path p = e.path.empty() ? dir : dir / e.path;
    const overlay::Attr& a = e.attr;
    if (!e.hardlink_first.empty()) {
      if (::link((dir / e.hardlink_first).c_str(), p.c_str()) != 0)
        return errno_error(errno, "cannot hardlink", p);
      return {};
    }
    switch (a.mode & S_IFMT) {
      case S_IFDIR:
        if (!e.path.empty() && ::mkdir(p.c_str(), 0700) != 0)
          return errno_error(errno, "cannot create", p);
        dirs.push_back(e);
        return {};
      case S_IFREG: {
        UniqueFd fd(::open(p.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!fd) return errno_error(errno, "cannot create", p);
        IMAGEFS_CHECK(copy_content(tree, a.ino, fd.get(), p));
        break;
      }
      case S_IFLNK: {
        IMAGEFS_TRY(target, tree.readlink(a.ino));
        if (::symlink(target.c_str(), p.c_str()) != 0)
          return errno_error(errno, "cannot create", p);
        break;
      }
      case S_IFCHR:
      case S_IFBLK:
      case S_IFIFO:
        if (::mknod(p.c_str(), (a.mode & S_IFMT) | 0600, makedev(a.rdev_major, a.rdev_minor)) !=
            0) {
          if (!root && errno == EPERM) return {};  // devices need root; skip them quietly
          return errno_error(errno, "cannot create", p);
        }
        break;
      default:
        return make_error(EINVAL, "unknown file type of /" + e.path);
    }
    return apply_metadata(tree, e, p, root);
  });
  if (!walked.ok()) return walked.error();
  for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) {
    fsys::path p = it->path.empty() ? dir : dir / it->path;
    IMAGEFS_CHECK(apply_metadata(tree, *it, p, root));
  }
  return {};
}

struct ArchiveDeleter {
  void operator()(archive* a) const { archive_write_free(a); }
};
struct EntryDeleter {
  void operator()(archive_entry* e) const { archive_entry_free(e); }
};

Result<void> export_tar(overlay::Tree& tree, const fsys::path& file) {
  std::unique_ptr<archive, ArchiveDeleter> ar(archive_write_new());
  archive_write_set_format_pax(ar.get());
  // Names are bytes, whatever the locale: write them as they are (pax "hdrcharset=BINARY").
  archive_write_set_format_option(ar.get(), "pax", "hdrcharset", "BINARY");
  fsys::path tmp = file;
  tmp += ".tmp";
  auto fail = [&](const std::string& what) {
    return make_error(EIO, what + " " + file.string() + ": " + archive_error_string(ar.get()));
  };
  if (archive_write_open_filename(ar.get(), tmp.c_str()) != ARCHIVE_OK) return fail("cannot open");
  std::vector<uint8_t> buf(1 << 20);
  Result<void> walked = tree.walk([&](const overlay::WalkEntry& e) -> Result<void> {
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
    if (archive_write_header(ar.get(), entry.get()) < ARCHIVE_OK) return fail("cannot write");
    for (uint64_t off = 0; data && off < a.size;) {
      IMAGEFS_TRY(n,
                  tree.read(a.ino, off,
                            std::span(buf.data(), std::min<uint64_t>(a.size - off, buf.size()))));
      if (n == 0) return make_error(EIO, "content of /" + e.path + " ended early");
      if (archive_write_data(ar.get(), buf.data(), n) < 0) return fail("cannot write");
      off += n;
    }
    return {};
  });
  if (!walked.ok()) {
    ::unlink(tmp.c_str());
    return walked.error();
  }
  if (archive_write_close(ar.get()) != ARCHIVE_OK) {
    ::unlink(tmp.c_str());
    return fail("cannot finish");
  }
  if (::rename(tmp.c_str(), file.c_str()) != 0) return errno_error(errno, "cannot rename to", file);
  return {};
}

}  // namespace

Result<std::shared_ptr<overlay::Tree>> open_tree(OpenImage& image) {
  if (image.tree) return image.tree;
  ProgressView view(image.io->err, image.io->err_is_terminal);
  std::unique_ptr<registry::ProgressSink> progress =
      make_pull_progress(view, image.source.familiar());
  if (!image.opener->has_layers(image.image))
    IMAGEFS_CHECK(image.opener->fetch_layers(image.image, image.source, progress.get()));
  // The progress also shows a layer fetched again because the store's copy rotted.
  IMAGEFS_TRY(tree, image.opener->open_tree(image.image, &image.source, progress.get()));
  image.tree = std::move(tree);
  return image.tree;
}

Result<OpenImage> open_image(const Args& args, const std::string& text, Io& io, TreeWhen when) {
  IMAGEFS_TRY(ref, registry::parse_reference(text));
  IMAGEFS_TRY(options, registry_options(args));
  IMAGEFS_TRY(store, open_store(args));
  IMAGEFS_TRY(puller, registry::Puller::create(store.blobs, store.catalog, options));
  const registry::Platform platform = puller->default_platform();
  IMAGEFS_TRY(layers, overlay::LayerCache::create(store.blobs));
  auto opener = std::make_shared<fs::ImageOpener>(store.blobs, store.catalog, std::move(puller),
                                                  std::move(layers));
  // A tag the store has already resolved is used as it is (no network), as `docker run` uses a
  // local image; --pull asks the registry again. Digest references never need to.
  const fs::Resolve resolve = args.has("pull") ? fs::Resolve::registry : fs::Resolve::stored;
  Result<fs::LeasedImage> leased = [&] {
    ProgressView view(io.err, io.err_is_terminal);
    std::unique_ptr<registry::ProgressSink> progress = make_pull_progress(view, ref.familiar());
    return opener->open(ref, platform, resolve, progress.get());
  }();
  if (!leased.ok()) return leased.error();
  OpenImage open{std::move(store),
                 std::move(leased->record),
                 nullptr,
                 std::make_shared<store::Lease>(std::move(leased->lease)),
                 std::move(opener),
                 std::move(ref),
                 &io};
  if (when == TreeWhen::now) {
    IMAGEFS_TRY(tree, open_tree(open));
    (void)tree;
  }
  return open;
}

int run_export(const Args& args, Io& io) {
  const auto& pos = args.positional();
  auto tar = args.get("tar");
  if (pos.empty() || pos.size() > 2 || (tar && pos.size() != 1) || (!tar && pos.size() != 2)) {
    io.err << "imagefs export: give an image and a directory (or --tar FILE)\n";
    return kExitUsage;
  }
  auto image = open_image(args, pos[0], io);
  if (!image.ok()) return report(io, "export " + pos[0], image.error());
  Result<void> done = tar ? export_tar(*image->tree, *tar) : export_dir(*image->tree, pos[1]);
  if (!done.ok()) return report(io, "export " + pos[0], done.error());
  return kExitOk;
}

}  // namespace imagefs::cli
