// The mount's file system, without FUSE: every operation a read-only FUSE file system needs, as a
// function from inode numbers and names to a Result. fs/ops.cpp adapts it to libfuse's low-level
// API; unit tests call it directly.
//
// Inode numbers: the top 24 bits are a slot, the low 40 bits a number inside it.
//  - slot 0: the directories of names (the top level, ".platform", "ghcr.io", "python:3.12",
//    ...), numbered from a counter as they are first looked up (1 is the top level, as FUSE
//    wants; 2 is ".platform"), and the hidden status file. A name directory lives in the table
//    while the kernel holds a reference to it (see "References" below) or an open listing names
//    it; then it is dropped, and the same name looked up again gets a new number. Numbers are
//    never reused while the mount lives.
//  - slot N > 0: image N (Images::by_slot): its files (config.json, manifest.json, digest, the
//    three archives, rootfs.erofs) by fixed numbers, and its rootfs, whose tree inode T is 16 + T.
// The kernel keeps the dentries (and so the inodes) of names even after their entry timeout has
// passed, until memory pressure; names that lead to nothing known ("a.b/<random>") are therefore
// handed to the adapter (stale_names()) to invalidate, after which the kernel forgets them.
//
// References (the FUSE protocol's lookup count): every successful lookup() of a name directory
// counts one, and so does every entry with attributes that readdirplus actually sends (the
// adapter calls remember() for each; "." and ".." never carry attributes); forget() takes them
// back. Name directories need this (their numbers are allocated); for rootfs inodes the counts
// are kept per image, which is not closed when idle while the kernel holds any of them (a tree
// opened again numbers its inodes anew). Other inode numbers are computed and fixed.
// So everything under one image is immutable for the life of the mount (its archives too, unless
// host files go into them), and a tag that moves to another image gets new inode numbers, with
// no stale page cache.
#pragma once

#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.h"
#include "fs/images.h"
#include "fs/metrics.h"

namespace imagefs::fs {

using Ino = uint64_t;
inline constexpr Ino kRootIno = 1;

struct Entry {
  Ino ino = 0;
  struct stat attr {};
  double entry_timeout = 0;  // seconds the kernel may keep the name -> inode mapping
  double attr_timeout = 0;   // seconds it may keep `attr`
};

struct DirItem {
  std::string name;
  Entry entry;
  // False when looking the entry up costs real work (an image's archives need their exact size,
  // rootfs its layers): readdirplus then gives the name only, and `ls` without -l stays cheap.
  bool has_attr = true;
  // Keeps a name directory's number while the listing lives (between opendir and releasedir),
  // so that readdir's numbers are the ones lookups give; empty for other entries.
  std::shared_ptr<const void> hold;
};

// An open file: what read() serves from. Either bytes held in memory, an archive, or a range of
// a file descriptor (a rootfs file's content in its layer's data file).
struct OpenFile {
  std::string bytes;
  std::shared_ptr<const cpio::Archive> archive;
  int fd = -1;
  uint64_t fd_offset = 0;
  uint64_t size = 0;
  std::shared_ptr<const void> keep_alive;  // what owns `fd`; for an archive, its image
  bool keep_cache = true;                  // the kernel may keep pages from an earlier open
  bool direct_io = false;                  // the size is not known in advance (status)
  // For the metrics (fs/metrics.h): what the file is, when open() began, and whether a read of
  // it has been served (the first-byte latency of generated archives).
  FileKind kind = FileKind::directory;
  std::chrono::steady_clock::time_point opened{};
  mutable std::atomic<bool> served{false};
};

// Counts a read of `bytes` served from `file` (fs/ops.cpp calls it just before the reply, after
// which `file` may be freed; the rootfs path replies without Filesystem::read). Thread-safe.
void count_served(const OpenFile& file, size_t bytes);

struct MountInfo {
  std::string mountpoint;
  std::string cache_dir;
  std::string log_file;
  int64_t started = 0;  // unix seconds
};

// Who may make the daemon do what (see Caller).
struct Access {
  // The user the daemon serves (its own uid): it and root are trusted callers.
  uid_t owner = ::getuid();
  // The registries other users may make the daemon contact (--allow-registry): reference
  // domains as written in references ("docker.io", "ghcr.io", "127.0.0.1:5000"), or "*" for any.
  // Others reach the mount only with --allow-other.
  std::vector<std::string> allowed_registries;
};

// Who asks, from FUSE's request context (fuse_req_ctx). The mount's owner and root are trusted.
// Another user (with --allow-other) is held to Access::allowed_registries: any other name is
// ENOENT, with no network traffic (and hidden from listings), and .status shows it each failure's
// image and errno class but not the text, which may quote a registry's answer it could not fetch.
struct Caller {
  std::optional<uid_t> uid;  // nullopt: the owner (callers outside FUSE, such as tests)
};

enum class FsOp { lookup, getattr, opendir };

class Filesystem {
 public:
  static std::unique_ptr<Filesystem> create(std::shared_ptr<Images> images, MountInfo info,
                                            Access access = {});
  virtual ~Filesystem() = default;

  virtual Result<Entry> lookup(Ino parent, std::string_view name, const Caller& caller = {}) = 0;
  // Whether `op` on `ino` (lookup in it, getattr or opendir of it) answers without waiting on a
  // registry, a download or an archive build: true for the rootfs inodes of an image whose tree
  // is built, and for getattr of the directories of names. fs/ops.cpp serves the others off
  // libfuse's threads, so that hung registries cannot take every thread from readers.
  virtual bool answers_at_once(FsOp op, Ino ino) = 0;
  virtual Result<Entry> getattr(Ino ino) = 0;
  // Every entry of a directory, "." and ".." first. ENOTDIR for files.
  virtual Result<std::vector<DirItem>> readdir(Ino ino, const Caller& caller = {}) = 0;
  // Whether the kernel may cache the listing of this directory for good (cache_readdir).
  virtual bool listing_immutable(Ino ino) = 0;
  virtual Result<std::string> readlink(Ino ino) = 0;
  // EROFS for any access mode but reading; EISDIR for directories. The status file's content
  // depends on `caller` (see Caller).
  virtual Result<std::shared_ptr<OpenFile>> open(Ino ino, int flags, const Caller& caller = {}) = 0;
  // From an OpenFile made by open(): bytes into `out`; fewer only at the end.
  virtual Result<size_t> read(const OpenFile& file, uint64_t offset, std::span<uint8_t> out) = 0;
  virtual Result<std::vector<std::string>> listxattr(Ino ino) = 0;
  virtual Result<std::string> getxattr(Ino ino, std::string_view name) = 0;

  // The kernel's reference counting (see "References" above). lookup() has already counted the
  // entry it returns; the adapter calls forget(ino, 1) when that reply did not reach the
  // kernel. remember(ino) counts one readdirplus entry sent with attributes. Both ignore the
  // fixed numbers (the top, ".platform", an image's files); thread-safe; never fail.
  virtual void remember(Ino ino) = 0;
  virtual void forget(Ino ino, uint64_t nlookup) = 0;
  // Name directories that lead to nothing known, looked up (with a zero entry timeout) before
  // `looked_up_before`, as (parent, name) for the adapter to invalidate in the kernel: the kernel
  // keeps dentries of a /dev/fuse mount until memory pressure even once their timeout has passed
  // (only virtiofs deletes such dentries at their last use), and so their inodes and this table's
  // entries; invalidated, they are dropped and forgotten, with what the kernel has below them.
  // So only the topmost unknown name of a path is given ("a.b" for "a.b/<random>/x"), once per
  // lookup; at most `max`, oldest first.
  virtual std::vector<std::pair<Ino, std::string>> stale_names(
      std::chrono::steady_clock::time_point looked_up_before, size_t max) = 0;
};

// The names in an image directory.
inline constexpr std::string_view kImageFiles[] = {
    "rootfs",         "initramfs.cpio.gz", "initramfs.cpio.zst",
    "initramfs.cpio", "config.json",       "manifest.json",
    "digest",         "rootfs.erofs"};
inline constexpr std::string_view kStatusFile = ".status";
// The daemon's metrics in Prometheus' text format (fs/metrics.h), made at each open.
inline constexpr std::string_view kMetricsFile = ".metrics";

}  // namespace imagefs::fs
