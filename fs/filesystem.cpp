// The mount's file system without FUSE (fs/filesystem.h): names to references, references to
// images, images to their files and rootfs.
#include "fs/filesystem.h"

#include <fcntl.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <nlohmann/json.hpp>
#include <optional>
#include <system_error>
#include <unordered_map>

#include "common/errno_error.h"
#include "common/mutex.h"
#include "common/text.h"
#include "erofs/erofs.h"
#include "fs/namespace.h"

namespace imagefs::fs {
namespace {

// Immutable things: the kernel keeps them as long as it likes (squashfuse_ll uses DBL_MAX; a
// year is as good and stays clear of overflow in the kernel's conversion).
constexpr double kForever = 365.0 * 24 * 3600;
// The entry timeout of a name directory that leads to nothing known (no stored reference at or
// below it, not an image that resolved): "a.b/<random>". Zero: every path walk through it asks
// again (cheap: no registry is asked for a level), so it becomes known as soon as the store
// knows it. The kernel still keeps such dentries until memory pressure (only virtiofs deletes
// expired ones at their last dput), so they are also queued for invalidation (stale_names()).
constexpr double kUnknownNameTimeout = 0;

constexpr int kSlotShift = 40;
constexpr Ino kLocalMask = (Ino{1} << kSlotShift) - 1;
constexpr Ino kStatusLocal = kLocalMask;       // in slot 0
constexpr Ino kMetricsLocal = kLocalMask - 1;  // in slot 0

// An image's fixed files, in kImageFiles order after rootfs.
enum Local : Ino {
  kGzLocal = 1,
  kZstLocal = 2,
  kCpioLocal = 3,
  kConfigLocal = 4,
  kManifestLocal = 5,
  kDigestLocal = 6,
  kErofsLocal = 7,
  kTreeBase = 16,  // rootfs: tree inode T is kTreeBase + T
};

uint32_t slot_of(Ino ino) { return static_cast<uint32_t>(ino >> kSlotShift); }
Ino local_of(Ino ino) { return ino & kLocalMask; }
Ino make_ino(uint32_t slot, Ino local) { return (Ino{slot} << kSlotShift) | local; }

std::optional<cpio::Format> archive_format(Ino local) {
  switch (local) {
    case kGzLocal:
      return cpio::Format::gzip;
    case kZstLocal:
      return cpio::Format::zstd;
    case kCpioLocal:
      return cpio::Format::none;
    default:
      return std::nullopt;
  }
}

// What an inode is, for the metrics' `file` label.
FileKind file_kind(Ino ino) {
  if (slot_of(ino) == 0) {
    if (ino == kStatusLocal) return FileKind::status;
    if (ino == kMetricsLocal) return FileKind::metrics;
    return FileKind::directory;
  }
  switch (local_of(ino)) {
    case kGzLocal:
      return FileKind::gzip;
    case kZstLocal:
      return FileKind::zstd;
    case kCpioLocal:
      return FileKind::cpio;
    case kConfigLocal:
      return FileKind::config;
    case kManifestLocal:
      return FileKind::manifest;
    case kDigestLocal:
      return FileKind::digest;
    case kErofsLocal:
      return FileKind::erofs;
    default:
      return FileKind::rootfs;  // kTreeBase and above
  }
}
// The image file served like an archive at `local`: an initramfs, or rootfs.erofs.
Result<std::shared_ptr<const cpio::Archive>> archive_file(Image& image, Ino local,
                                                          bool* changed = nullptr) {
  if (local == kErofsLocal) return image.erofs_image(changed);
  return image.archive(*archive_format(local), changed);
}
bool is_archive_file(Ino local) { return local == kErofsLocal || archive_format(local); }

// A directory of names: the top level, ".platform", a platform's top, or a reference path.
struct NameDir {
  enum class Kind { top, platforms, path } kind = Kind::path;
  registry::Platform platform;
  std::string path;  // for Kind::path
  PathInfo info;     // for Kind::path
};

std::string dir_key(const NameDir& d) {
  return std::to_string(static_cast<int>(d.kind)) + " " + d.platform.str() + " " + d.path;
}

// The name directories (slot 0), following the kernel's references (fs/filesystem.h,
// "References"): a directory stays while the kernel holds a lookup of it or an open listing
// holds it, and is dropped when both are gone. Numbers come from a counter and are never reused.
// The top level (1) and ".platform" (2) are fixed and never dropped. Thread-safe.
class NameTable {
 public:
  explicit NameTable(const registry::Platform& platform)
      : top_{NameDir::Kind::top, platform, "", {}},
        platforms_{NameDir::Kind::platforms, platform, "", {}} {}

  std::optional<NameDir> get(Ino ino) EXCLUDES(mu_) {
    if (ino == kRootIno) return top_;
    if (ino == kRootIno + 1) return platforms_;
    MutexLock lock(mu_);
    auto it = nodes_.find(ino);
    if (it == nodes_.end()) return std::nullopt;
    return it->second.dir;
  }

  enum class Ref {
    lookup,  // a lookup reply: the kernel takes a reference
    hold,    // an open listing names it (released by release())
  };
  // Where a lookup found a name: for invalidating it in the kernel later (stale()).
  struct Where {
    Ino parent = 0;
    std::string_view name;
    bool unknown = false;  // leads to nothing known: queue it for invalidation
  };
  // The number of `dir`, made when it has none, with one more reference of kind `ref`.
  Result<Ino> acquire(NameDir dir, Ref ref) EXCLUDES(mu_) {
    return acquire(std::move(dir), ref, Where{});
  }
  Result<Ino> acquire(NameDir dir, Ref ref, const Where& where) EXCLUDES(mu_) {
    std::string key = dir_key(dir);
    MutexLock lock(mu_);
    auto found = inos_.find(key);
    Ino ino = 0;
    if (found != inos_.end()) {
      ino = found->second;
    } else {
      if (next_ >= kMetricsLocal)
        return make_error(ENOSPC, "out of inode numbers for name directories; remount");
      ino = next_++;
      inos_.emplace(key, ino);
      nodes_.emplace(ino, Node{std::move(dir), std::move(key), 0, 0, 0, {}, false, false});
    }
    Node& node = nodes_.at(ino);
    (ref == Ref::lookup ? node.lookups : node.holds) += 1;
    if (where.parent != 0) {
      node.parent = where.parent;
      node.name = where.name;
    }
    if (ref == Ref::lookup) node.unknown = where.unknown;
    // Only the topmost unknown name of a path: invalidating it drops the kernel's dentries below
    // it too, and each invalidation locks the parent directory in the kernel, so one per name
    // under a known directory ("a.b") rather than one per name below it ("a.b/<random>/x").
    auto parent = nodes_.find(where.parent);
    bool under_unknown = parent != nodes_.end() && parent->second.unknown;
    if (where.unknown && !under_unknown && !node.queued) {
      node.queued = true;
      stale_.emplace_back(std::chrono::steady_clock::now(), ino);
    }
    return ino;
  }

  // Queued names looked up before `before`, oldest first, at most `max`.
  std::vector<std::pair<Ino, std::string>> stale(std::chrono::steady_clock::time_point before,
                                                 size_t max) EXCLUDES(mu_) {
    std::vector<std::pair<Ino, std::string>> out;
    MutexLock lock(mu_);
    while (!stale_.empty() && stale_.front().first < before && out.size() < max) {
      Ino ino = stale_.front().second;
      stale_.pop_front();
      auto it = nodes_.find(ino);
      if (it == nodes_.end() || it->second.parent == 0) continue;  // forgotten meanwhile
      it->second.queued = false;
      out.emplace_back(it->second.parent, it->second.name);
    }
    return out;
  }

  void remember(Ino ino) EXCLUDES(mu_) {
    MutexLock lock(mu_);
    auto it = nodes_.find(ino);
    if (it != nodes_.end()) ++it->second.lookups;
  }
  void forget(Ino ino, uint64_t n) EXCLUDES(mu_) {
    MutexLock lock(mu_);
    auto it = nodes_.find(ino);
    if (it == nodes_.end()) return;
    it->second.lookups -= std::min(n, it->second.lookups);
    drop_if_unused(it);
  }
  void release(Ino ino) EXCLUDES(mu_) {
    MutexLock lock(mu_);
    auto it = nodes_.find(ino);
    if (it == nodes_.end()) return;
    it->second.holds -= std::min<uint64_t>(1, it->second.holds);
    drop_if_unused(it);
  }
  size_t size() const EXCLUDES(mu_) {
    MutexLock lock(mu_);
    return nodes_.size() + 2;
  }

 private:
  struct Node {
    NameDir dir;
    std::string key;
    uint64_t lookups = 0;  // the kernel's references
    uint64_t holds = 0;    // open listings naming it
    Ino parent = 0;        // where the last lookup found it, and under what name
    std::string name;
    bool queued = false;   // in stale_
    bool unknown = false;  // its last lookup found it leads to nothing known
  };
  void drop_if_unused(std::unordered_map<Ino, Node>::iterator it) REQUIRES(mu_) {
    if (it->second.lookups > 0 || it->second.holds > 0) return;
    inos_.erase(it->second.key);
    nodes_.erase(it);
  }

  const NameDir top_;
  const NameDir platforms_;
  mutable Mutex mu_;
  std::unordered_map<Ino, Node> nodes_ GUARDED_BY(mu_);
  std::unordered_map<std::string, Ino> inos_ GUARDED_BY(mu_);  // by dir_key
  // Unknown names to invalidate, by lookup time. Bounded by what is looked up between two calls
  // of stale(): a node is queued once until stale() takes it.
  std::deque<std::pair<std::chrono::steady_clock::time_point, Ino>> stale_ GUARDED_BY(mu_);
  Ino next_ GUARDED_BY(mu_) = kRootIno + 2;
};

// What a listing holds in the name table, released when the listing goes (DirItem::hold).
struct ListingHold {
  std::weak_ptr<NameTable> table;
  std::vector<Ino> inos;
  ListingHold(const ListingHold&) = delete;
  ListingHold& operator=(const ListingHold&) = delete;
  explicit ListingHold(std::weak_ptr<NameTable> t) : table(std::move(t)) {}
  ~ListingHold() {
    if (auto t = table.lock())
      for (Ino ino : inos) t->release(ino);
  }
};

bool is_image_file(std::string_view name) {
  return std::find(std::begin(kImageFiles), std::end(kImageFiles), name) != std::end(kImageFiles);
}
// The local inode number of an image file by its name (one of kImageFiles).
Ino image_file_local(std::string_view name);

class FilesystemImpl : public Filesystem {
 public:
  FilesystemImpl(std::shared_ptr<Images> images, MountInfo info, Access access)
      : images_(std::move(images)),
        info_(std::move(info)),
        access_(std::move(access)),
        uid_(::getuid()),
        gid_(::getgid()),
        names_(std::make_shared<NameTable>(images_->default_platform())) {}

  bool answers_at_once(FsOp op, Ino ino) override {
    if (slot_of(ino) == 0) return op == FsOp::getattr;  // names: from memory
    if (local_of(ino) < kTreeBase) return false;        // archives may be made first
    std::shared_ptr<Image> image = images_->by_slot(slot_of(ino));
    return image != nullptr && image->tree_ready();
  }
  Result<Entry> getattr(Ino ino) override { return counted("getattr", getattr_entry(ino)); }
  Result<std::vector<DirItem>> readdir(Ino ino, const Caller& caller) override {
    return counted("readdir", list(ino, caller));
  }
  bool listing_immutable(Ino ino) override { return slot_of(ino) != 0; }
  Result<std::string> readlink(Ino ino) override;
  Result<std::shared_ptr<OpenFile>> open(Ino ino, int flags, const Caller& caller) override {
    auto started = std::chrono::steady_clock::now();
    auto file = counted("open", open_file(ino, flags, caller));
    if (file.ok()) {
      (*file)->kind = file_kind(ino);
      (*file)->opened = started;
      daemon_metrics().opens((*file)->kind).inc();
    }
    return file;
  }
  Result<size_t> read(const OpenFile& file, uint64_t offset, std::span<uint8_t> out) override {
    return counted("read", read_file(file, offset, out));
  }
  Result<std::vector<std::string>> listxattr(Ino ino) override;
  Result<std::string> getxattr(Ino ino, std::string_view name) override;
  Result<Entry> lookup(Ino parent, std::string_view name, const Caller& caller) override {
    auto started = std::chrono::steady_clock::now();
    auto e = counted("lookup", lookup_entry(parent, name, caller));
    if (e.ok()) count_tree(e->ino, 1);
    // The kind of a name that failed: by its parent and the name alone.
    FileKind kind = e.ok()                 ? file_kind(e->ino)
                    : slot_of(parent) != 0 ? FileKind::rootfs
                    : is_image_file(name)  ? file_kind(make_ino(1, image_file_local(name)))
                                           : FileKind::directory;
    DaemonMetrics& m = daemon_metrics();
    m.lookups(kind).inc();
    m.lookup_seconds(kind).observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
    return e;
  }
  void remember(Ino ino) override {
    if (slot_of(ino) == 0)
      names_->remember(ino);
    else
      count_tree(ino, 1);
  }
  std::vector<std::pair<Ino, std::string>> stale_names(
      std::chrono::steady_clock::time_point looked_up_before, size_t max) override {
    return names_->stale(looked_up_before, max);
  }
  void forget(Ino ino, uint64_t nlookup) override {
    if (slot_of(ino) == 0)
      names_->forget(ino, nlookup);
    else
      count_tree(ino, -static_cast<int64_t>(std::min<uint64_t>(nlookup, INT64_MAX)));
  }

 private:
  // lookup() without the counting of references.
  Result<Entry> lookup_entry(Ino parent, std::string_view name, const Caller& caller);
  // The operations without their metrics.
  Result<Entry> getattr_entry(Ino ino);
  Result<std::vector<DirItem>> list(Ino ino, const Caller& caller);
  Result<std::shared_ptr<OpenFile>> open_file(Ino ino, int flags, const Caller& caller);
  Result<size_t> read_file(const OpenFile& file, uint64_t offset, std::span<uint8_t> out);
  // `result`, its error counted for `op` (imagefs_request_errors_total).
  template <class T>
  static Result<T> counted(std::string_view op, Result<T> result) {
    if (!result.ok()) daemon_metrics().request_error(op, result.error().code);
    return result;
  }
  // The kernel's references to rootfs inodes, per image (Images::tree_refs): an image whose
  // rootfs the kernel holds is not closed when idle, since a new tree numbers inodes anew.
  void count_tree(Ino ino, int64_t delta) {
    if (slot_of(ino) != 0 && local_of(ino) >= kTreeBase) images_->tree_refs(slot_of(ino), delta);
  }
  Result<NameDir> name_dir(Ino ino);
  Entry dir_entry(Ino ino) const;
  Entry status_entry() const;
  Entry metrics_entry() const;
  // The directory entry for reference path `path` on `platform`, counted as a lookup: an image
  // path is resolved now, so that a name the registry does not know is ENOENT at once.
  Result<Entry> path_entry(const registry::Platform& platform, std::string path, Ino parent,
                           std::string_view name, const Caller& caller);
  // Whether the store knows a reference at or below `path` (any path when empty) on `platform`:
  // such names keep long entry timeouts; others get kUnknownNameTimeout.
  bool known(const registry::Platform& platform, const std::string& path,
             const PathInfo* info) const;
  // Whether `caller` may reach the registry of reference path `path` (see Caller).
  [[nodiscard]] bool trusted(const Caller& caller) const;
  [[nodiscard]] bool may_reach(const Caller& caller, std::string_view path,
                               const PathInfo& info) const;
  Result<std::shared_ptr<Image>> image_of(Ino ino);
  Result<std::shared_ptr<overlay::Tree>> tree_of(Ino ino, overlay::Ino* tree_ino);
  Result<Entry> image_file(Image& image, Ino local, double entry_timeout);
  Entry tree_entry(uint32_t slot, const overlay::Attr& a) const;
  std::string status(const Caller& caller) const;

  std::shared_ptr<Images> images_;
  const MountInfo info_;
  const Access access_;
  const uid_t uid_;
  const gid_t gid_;

  // Shared with the listings' holds, which may outlive this object.
  const std::shared_ptr<NameTable> names_;
};

Result<NameDir> FilesystemImpl::name_dir(Ino ino) {
  std::optional<NameDir> dir;
  if (slot_of(ino) == 0 && ino != 0) dir = names_->get(ino);
  if (!dir) return make_error(ENOENT, "no such directory");
  return std::move(*dir);
}

bool FilesystemImpl::known(const registry::Platform& platform, const std::string& path,
                           const PathInfo* info) const {
  auto refs = images_->refs();
  if (!refs.ok()) return false;  // a short timeout costs lookups only
  std::string p = platform.str();
  if (info && info->reference) {
    std::string name = info->reference->str();
    for (const store::RefRecord& r : *refs)
      if (r.platform == p && r.reference == name) return true;
  }
  if (info && info->kind == DirKind::image) return false;
  if (path.empty())
    return std::any_of(refs->begin(), refs->end(),
                       [&](const store::RefRecord& r) { return r.platform == p; });
  return !list_level(*refs, p, path).empty();
}

Entry FilesystemImpl::dir_entry(Ino ino) const {
  Entry e;
  e.ino = ino;
  e.attr.st_ino = ino;
  e.attr.st_mode = S_IFDIR | 0555;
  e.attr.st_nlink = 2;
  e.attr.st_uid = uid_;
  e.attr.st_gid = gid_;
  e.attr.st_mtim.tv_sec = info_.started;
  e.attr.st_ctim = e.attr.st_atim = e.attr.st_mtim;
  e.entry_timeout = kForever;
  e.attr_timeout = kForever;
  return e;
}

Entry FilesystemImpl::status_entry() const {
  Entry e = dir_entry(kStatusLocal);
  e.attr.st_mode = S_IFREG | 0444;
  e.attr.st_nlink = 1;
  e.attr.st_size = 0;  // made when opened; read with direct_io
  e.attr.st_mtim.tv_sec = ::time(nullptr);
  e.entry_timeout = 0;
  e.attr_timeout = 0;
  return e;
}

Entry FilesystemImpl::metrics_entry() const {
  Entry e = status_entry();  // the same rules: made when opened, read with direct_io
  e.ino = e.attr.st_ino = kMetricsLocal;
  return e;
}

Entry FilesystemImpl::tree_entry(uint32_t slot, const overlay::Attr& a) const {
  Entry e;
  e.ino = make_ino(slot, kTreeBase + a.ino);
  e.attr.st_ino = e.ino;
  e.attr.st_mode = a.mode;
  e.attr.st_nlink = S_ISDIR(a.mode) ? 1 : a.nlink;
  e.attr.st_uid = a.uid;
  e.attr.st_gid = a.gid;
  e.attr.st_size = static_cast<off_t>(a.size);
  e.attr.st_blksize = 4096;
  e.attr.st_blocks = static_cast<blkcnt_t>((a.size + 511) / 512);
  e.attr.st_rdev = makedev(a.rdev_major, a.rdev_minor);
  e.attr.st_mtim.tv_sec = a.mtime_sec;
  e.attr.st_mtim.tv_nsec = a.mtime_nsec;
  e.attr.st_ctim = e.attr.st_atim = e.attr.st_mtim;
  e.entry_timeout = kForever;
  e.attr_timeout = kForever;
  return e;
}

bool FilesystemImpl::trusted(const Caller& caller) const {
  return !caller.uid || *caller.uid == access_.owner || *caller.uid == 0;
}

bool FilesystemImpl::may_reach(const Caller& caller, std::string_view path,
                               const PathInfo& info) const {
  if (trusted(caller)) return true;
  std::string domain;
  if (info.reference) {
    domain = info.reference->domain;
  } else {
    // A level: "ghcr.io", "ghcr.io/org", "org" (docker.io): the registry of names below it.
    auto below = registry::parse_reference(std::string(path) + "/x");
    if (!below.ok()) return false;
    domain = below->domain;
  }
  for (const std::string& allowed : access_.allowed_registries)
    if (allowed == "*" || allowed == domain) return true;
  return false;
}

Result<Entry> FilesystemImpl::path_entry(const registry::Platform& platform, std::string path,
                                         Ino parent, std::string_view name, const Caller& caller) {
  IMAGEFS_TRY(info, classify(path));
  if (!may_reach(caller, path, info))
    return make_error(ENOENT, "not on a registry other users may reach (--allow-registry)");
  bool is_known = info.kind == DirKind::image;  // resolved just below, else ENOENT
  if (is_known) IMAGEFS_CHECK(images_->image(*info.reference, platform));
  if (!is_known) is_known = known(platform, path, &info);
  IMAGEFS_TRY(
      ino, names_->acquire(NameDir{NameDir::Kind::path, platform, std::move(path), std::move(info)},
                           NameTable::Ref::lookup, {parent, name, !is_known}));
  Entry e = dir_entry(ino);
  if (!is_known) e.entry_timeout = kUnknownNameTimeout;
  return e;
}

Result<std::shared_ptr<Image>> FilesystemImpl::image_of(Ino ino) {
  std::shared_ptr<Image> image = images_->by_slot(slot_of(ino));
  if (!image) return make_error(ENOENT, "no such image");
  return image;
}

Result<std::shared_ptr<overlay::Tree>> FilesystemImpl::tree_of(Ino ino, overlay::Ino* tree_ino) {
  if (local_of(ino) < kTreeBase) return make_error(ENOTDIR, "not in rootfs");
  IMAGEFS_TRY(image, image_of(ino));
  *tree_ino = local_of(ino) - kTreeBase;
  return image->tree();
}

Result<Entry> FilesystemImpl::image_file(Image& image, Ino local, double entry_timeout) {
  const store::ImageRecord& record = image.record();
  Entry e = dir_entry(make_ino(image.slot(), local));
  e.attr.st_mode = S_IFREG | 0444;
  e.attr.st_nlink = 1;
  e.attr.st_mtim.tv_sec = record.pulled_at;
  e.attr.st_ctim = e.attr.st_atim = e.attr.st_mtim;
  e.entry_timeout = entry_timeout;
  if (local == kTreeBase + overlay::kRootIno) {
    IMAGEFS_TRY(tree, image.tree());
    IMAGEFS_TRY(attr, tree->getattr(overlay::kRootIno));
    Entry root = tree_entry(image.slot(), attr);
    root.entry_timeout = entry_timeout;
    return root;
  }
  if (is_archive_file(local)) {
    IMAGEFS_TRY(archive, archive_file(image, local));
    e.attr.st_size = static_cast<off_t>(archive->size());
    if (image.archives_mutable()) {
      // Host files go into it: look again at every open, so a changed file is picked up.
      e.entry_timeout = 0;
      e.attr_timeout = 0;
    }
  } else if (local == kConfigLocal || local == kManifestLocal) {
    IMAGEFS_TRY(bytes, local == kConfigLocal ? image.config_json() : image.manifest_json());
    e.attr.st_size = static_cast<off_t>(bytes.size());
  } else if (local == kDigestLocal) {
    e.attr.st_size = static_cast<off_t>(record.manifest.str().size() + 1);
  } else {
    return make_error(ENOENT, "no such file");
  }
  e.attr.st_blocks = (e.attr.st_size + 511) / 512;
  return e;
}

Ino image_file_local(std::string_view name) {
  if (name == "rootfs") return kTreeBase + overlay::kRootIno;
  if (name == "initramfs.cpio.gz") return kGzLocal;
  if (name == "initramfs.cpio.zst") return kZstLocal;
  if (name == "initramfs.cpio") return kCpioLocal;
  if (name == erofs::kFileName) return kErofsLocal;
  if (name == "config.json") return kConfigLocal;
  if (name == "manifest.json") return kManifestLocal;
  return kDigestLocal;
}

Result<Entry> FilesystemImpl::lookup_entry(Ino parent, std::string_view name,
                                           const Caller& caller) {
  if (slot_of(parent) != 0) {
    overlay::Ino dir = 0;
    IMAGEFS_TRY(tree, tree_of(parent, &dir));
    IMAGEFS_TRY(attr, tree->lookup(dir, name));
    return tree_entry(slot_of(parent), attr);
  }
  IMAGEFS_TRY(dir, name_dir(parent));
  switch (dir.kind) {
    case NameDir::Kind::top:
      if (parent == kRootIno && name == kPlatformDir) return dir_entry(kRootIno + 1);
      if (parent == kRootIno && name == kStatusFile) return status_entry();
      if (parent == kRootIno && name == kMetricsFile) return metrics_entry();
      {
        IMAGEFS_TRY(path, child_path("", name));
        return path_entry(dir.platform, std::move(path), parent, name, caller);
      }
    case NameDir::Kind::platforms: {
      IMAGEFS_TRY(platform, parse_platform_dir(name));
      bool is_known = known(platform, "", nullptr);
      IMAGEFS_TRY(ino, names_->acquire(NameDir{NameDir::Kind::top, platform, "", {}},
                                       NameTable::Ref::lookup, {parent, name, !is_known}));
      Entry e = dir_entry(ino);
      if (!is_known) e.entry_timeout = kUnknownNameTimeout;
      return e;
    }
    case NameDir::Kind::path:
      break;
  }
  if (!may_reach(caller, dir.path, dir.info))
    return make_error(ENOENT, "not on a registry other users may reach (--allow-registry)");
  if (dir.info.kind != DirKind::level && is_image_file(name)) {
    IMAGEFS_TRY(image, images_->image(*dir.info.reference, dir.platform));
    double timeout = dir.info.reference->digest.empty()
                         ? static_cast<double>(images_->options().tag_ttl.count())
                         : kForever;
    return image_file(*image, image_file_local(name), timeout);
  }
  if (dir.info.kind == DirKind::image) return make_error(ENOENT, "no such file");
  IMAGEFS_TRY(path, child_path(dir.path, name));
  return path_entry(dir.platform, std::move(path), parent, name, caller);
}

Result<Entry> FilesystemImpl::getattr_entry(Ino ino) {
  if (slot_of(ino) == 0) {
    if (ino == kStatusLocal) return status_entry();
    if (ino == kMetricsLocal) return metrics_entry();
    IMAGEFS_TRY(dir, name_dir(ino));
    return dir_entry(ino);
  }
  IMAGEFS_TRY(image, image_of(ino));
  if (local_of(ino) < kTreeBase) return image_file(*image, local_of(ino), kForever);
  IMAGEFS_TRY(tree, image->tree());
  IMAGEFS_TRY(attr, tree->getattr(local_of(ino) - kTreeBase));
  return tree_entry(image->slot(), attr);
}

Result<std::vector<DirItem>> FilesystemImpl::list(Ino ino, const Caller& caller) {
  std::vector<DirItem> items;
  // The name directories listed stay in the table while the listing lives.
  auto hold = std::make_shared<ListingHold>(names_);
  auto held = [&](NameDir dir) -> Result<Ino> {
    IMAGEFS_TRY(child, names_->acquire(std::move(dir), NameTable::Ref::hold));
    hold->inos.push_back(child);
    return child;
  };
  Entry self = dir_entry(ino);
  items.push_back({".", self, false, nullptr});
  items.push_back({"..", self, false, nullptr});
  if (slot_of(ino) != 0) {
    overlay::Ino dir = 0;
    IMAGEFS_TRY(tree, tree_of(ino, &dir));
    IMAGEFS_TRY(children, tree->readdir(dir));
    for (overlay::DirEntry& child : children)
      items.push_back({std::move(child.name), tree_entry(slot_of(ino), child.attr), true, nullptr});
    return items;
  }
  IMAGEFS_TRY(dir, name_dir(ino));
  if (dir.kind == NameDir::Kind::platforms) {
    IMAGEFS_TRY(refs, images_->refs());
    std::vector<std::string> names;
    for (const store::RefRecord& r : refs) {
      auto platform = registry::parse_platform(r.platform);
      if (platform.ok()) names.push_back(platform_dir_name(*platform));
    }
    std::sort(names.begin(), names.end());
    names.erase(std::unique(names.begin(), names.end()), names.end());
    for (std::string& name : names) {
      IMAGEFS_TRY(platform, parse_platform_dir(name));
      IMAGEFS_TRY(child, held(NameDir{NameDir::Kind::top, platform, "", {}}));
      items.push_back({std::move(name), dir_entry(child), true, hold});
    }
    return items;
  }
  if (ino == kRootIno) {
    items.push_back({std::string(kPlatformDir), dir_entry(kRootIno + 1), true, nullptr});
    items.push_back({std::string(kStatusFile), status_entry(), false, nullptr});
    items.push_back({std::string(kMetricsFile), metrics_entry(), false, nullptr});
  }
  std::string platform = dir.platform.str();
  IMAGEFS_TRY(refs, images_->refs());
  std::string path = dir.kind == NameDir::Kind::top ? "" : dir.path;
  std::vector<std::string> below = list_level(refs, platform, path);
  if (dir.kind == NameDir::Kind::path && !may_reach(caller, dir.path, dir.info))
    return make_error(ENOENT, "not on a registry other users may reach (--allow-registry)");
  if (dir.kind == NameDir::Kind::path && dir.info.kind != DirKind::level) {
    // An image: list its files. A name that is also a level ("org", for "org/app:1") is only
    // taken for the image "org:latest" when the store knows that image or nothing lies below.
    const registry::Reference& ref = *dir.info.reference;
    bool known = false;
    for (const store::RefRecord& r : refs)
      known = known || (r.reference == ref.str() && r.platform == platform);
    if (dir.info.kind == DirKind::image || known || below.empty()) {
      IMAGEFS_TRY(image, images_->image(ref, dir.platform));
      for (std::string_view name : kImageFiles) {
        Entry e = dir_entry(make_ino(image->slot(), image_file_local(name)));
        if (name != "rootfs") e.attr.st_mode = S_IFREG | 0444;
        items.push_back({std::string(name), e, false, nullptr});
      }
    }
  }
  for (std::string& name : below) {
    auto child = child_path(path, name);
    if (!child.ok()) continue;
    auto info = classify(*child);
    if (!info.ok() || !may_reach(caller, *child, *info)) continue;
    IMAGEFS_TRY(child_ino, held(NameDir{NameDir::Kind::path, dir.platform, *child, *info}));
    items.push_back({std::move(name), dir_entry(child_ino), true, hold});
  }
  return items;
}

Result<std::string> FilesystemImpl::readlink(Ino ino) {
  overlay::Ino t = 0;
  IMAGEFS_TRY(tree, tree_of(ino, &t));
  return tree->readlink(t);
}

Result<std::shared_ptr<OpenFile>> FilesystemImpl::open_file(Ino ino, int flags,
                                                            const Caller& caller) {
  if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC) != 0)
    return make_error(EROFS, "read-only file system");
  auto file = std::make_shared<OpenFile>();
  if (slot_of(ino) == 0) {
    if (ino != kStatusLocal && ino != kMetricsLocal) return make_error(EISDIR, "a directory");
    // A snapshot per open: the size is known only now, so read with direct_io (no page cache,
    // no size promised by getattr; `cat` and Prometheus' textfile readers read to the end).
    file->bytes = ino == kStatusLocal ? status(caller) : render_metrics(info_.cache_dir);
    file->size = file->bytes.size();
    file->direct_io = true;
    file->keep_cache = false;
    return file;
  }
  IMAGEFS_TRY(image, image_of(ino));
  Ino local = local_of(ino);
  if (is_archive_file(local)) {
    bool changed = false;
    IMAGEFS_TRY(archive, archive_file(*image, local, &changed));
    file->size = archive->size();
    file->archive = std::move(archive);
    // The image (and so its lease) lives while the file is open: gc keeps the segments and plan
    // of a leased image (docs/STORE_FORMAT.md), and an idle close waits for the file's release.
    file->keep_alive = image;
    file->keep_cache = !changed;
    return file;
  }
  if (local == kConfigLocal || local == kManifestLocal) {
    IMAGEFS_TRY(bytes, local == kConfigLocal ? image->config_json() : image->manifest_json());
    file->bytes = std::move(bytes);
  } else if (local == kDigestLocal) {
    file->bytes = image->record().manifest.str() + "\n";
  } else if (local >= kTreeBase) {
    IMAGEFS_TRY(tree, image->tree());
    overlay::Ino t = local - kTreeBase;
    IMAGEFS_TRY(attr, tree->getattr(t));
    if (S_ISDIR(attr.mode)) return make_error(EISDIR, "a directory");
    if (!S_ISREG(attr.mode)) return make_error(EINVAL, "not a regular file");
    IMAGEFS_TRY(source, tree->content(t));
    file->fd = source.layer->data_fd();
    file->fd_offset = source.layer->entry(source.entry).data_offset;
    file->size = source.size;
    file->keep_alive = source.layer;
    return file;
  } else {
    return make_error(ENOENT, "no such file");
  }
  file->size = file->bytes.size();
  return file;
}

Result<size_t> FilesystemImpl::read_file(const OpenFile& file, uint64_t offset,
                                         std::span<uint8_t> out) {
  if (offset >= file.size) return size_t{0};
  size_t want = static_cast<size_t>(std::min<uint64_t>(out.size(), file.size - offset));
  out = out.first(want);
  if (file.archive) return file.archive->read(offset, out);
  if (file.fd < 0) {
    std::memcpy(out.data(), file.bytes.data() + offset, want);
    return want;
  }
  size_t done = 0;
  while (done < want) {
    ssize_t n = ::pread(file.fd, out.data() + done, want - done,
                        static_cast<off_t>(file.fd_offset + offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return errno_error(errno, "cannot read layer data");
    if (n == 0) return make_error(EIO, "layer data ended early");
    done += static_cast<size_t>(n);
  }
  return done;
}

Result<std::vector<std::string>> FilesystemImpl::listxattr(Ino ino) {
  if (slot_of(ino) == 0 || local_of(ino) < kTreeBase) return std::vector<std::string>{};
  overlay::Ino t = 0;
  IMAGEFS_TRY(tree, tree_of(ino, &t));
  return tree->listxattr(t);
}

Result<std::string> FilesystemImpl::getxattr(Ino ino, std::string_view name) {
  if (slot_of(ino) == 0 || local_of(ino) < kTreeBase) return make_error(ENODATA, "no xattr");
  overlay::Ino t = 0;
  IMAGEFS_TRY(tree, tree_of(ino, &t));
  return tree->getxattr(t, name);
}

std::string FilesystemImpl::status(const Caller& caller) const {
  nlohmann::json status = nlohmann::json::parse(images_->status_json(), nullptr, false);
  if (status.is_discarded() || !status.is_object()) status = nlohmann::json::object();
  if (!trusted(caller) && status.contains("recent_errors") && status["recent_errors"].is_array()) {
    // Another user sees that an image failed and how (the errno class), not why: the text may
    // quote a registry it was not allowed to reach, fetched with the owner's credentials.
    for (nlohmann::json& e : status["recent_errors"]) {
      if (!e.is_object()) continue;
      e["error"] = e.value("image", std::string("an image")) + ": failed (" +
                   e.value("errno", std::string("EIO")) +
                   "); the reason is in the mount's log, for its owner";
    }
  }
  // Paths are bytes: the mount point's own name need not be UTF-8.
  status["mountpoint"] = printable(info_.mountpoint);
  status["pid"] = ::getpid();
  status["cache_dir"] = printable(info_.cache_dir);
  status["log"] = printable(info_.log_file);
  status["started"] = info_.started;
  status["platform"] = printable(images_->default_platform().str());
  status["tag_ttl_seconds"] = images_->options().tag_ttl.count();
  status["name_directories"] = names_->size();
  // Every string is printable() text; `replace` only guards against a slip, and never throws.
  return status.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

}  // namespace

void count_served(const OpenFile& file, size_t bytes) {
  DaemonMetrics& m = daemon_metrics();
  m.reads(file.kind).inc();
  m.read_bytes(file.kind).inc(bytes);
  if (is_generated(file.kind) && !file.served.exchange(true, std::memory_order_relaxed))
    m.first_byte_seconds(file.kind).observe(
        std::chrono::duration<double>(std::chrono::steady_clock::now() - file.opened).count());
}

std::unique_ptr<Filesystem> Filesystem::create(std::shared_ptr<Images> images, MountInfo info,
                                               Access access) {
  return std::make_unique<FilesystemImpl>(std::move(images), std::move(info), std::move(access));
}

}  // namespace imagefs::fs
